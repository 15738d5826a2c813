"""Every measure leaves the model exactly as it found it (issue 4, section 1)."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from _measures_helpers import BNDropNet
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor import measures
from ibmonitor.measures import ModelSnapshot, preserve_state


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).clone()


def fingerprint(model: nn.Module) -> dict:
    """Everything the issue asks to keep: compared with ``assert_same``."""
    return {
        "params": [(n, id(p), _bits(p)) for n, p in model.named_parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [
            (n, None if p.grad is None else (id(p.grad), _bits(p.grad)))
            for n, p in model.named_parameters()
        ],
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "buffers": [
            (n, None if b is None else (id(b), _bits(b)))
            for n, b in model.named_buffers()
        ],
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state(),  # noqa: NPY002
        "python_rng": random.getstate(),
    }


def assert_same(before: dict, after: dict) -> None:
    for (n, i, b), (n2, i2, b2) in zip(before["params"], after["params"]):
        assert n == n2
        assert i == i2, f"parameter {n} was replaced"
        assert torch.equal(b, b2), f"parameter {n} changed"
    assert len(before["params"]) == len(after["params"])
    assert before["requires_grad"] == after["requires_grad"]
    for (n, g), (_, g2) in zip(before["grads"], after["grads"]):
        if g is None:
            assert g2 is None, f".grad of {n} was None and is now set"
        else:
            assert g2 is not None, f".grad of {n} was cleared"
            assert g[0] == g2[0], f".grad of {n} was replaced"
            assert torch.equal(g[1], g2[1]), f".grad of {n} changed"
    assert before["modes"] == after["modes"]
    assert len(before["buffers"]) == len(after["buffers"])
    for (n, b), (_, b2) in zip(before["buffers"], after["buffers"]):
        assert (b is None) == (b2 is None)
        if b is not None:
            assert b[0] == b2[0], f"buffer {n} was replaced"
            assert torch.equal(b[1], b2[1]), f"buffer {n} changed"
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    np_a, np_b = before["numpy_rng"], after["numpy_rng"]
    assert np_a[0] == np_b[0]
    assert np.array_equal(np_a[1], np_b[1])
    assert np_a[2:] == np_b[2:]
    assert before["python_rng"] == after["python_rng"]


@pytest.fixture
def bn_problem():
    """A batch-norm + dropout network, mid-training, in mixed modes."""
    torch.manual_seed(0)
    model = BNDropNet()
    x = torch.randn(48, 1, 4, 4)
    y = torch.randint(0, 3, (48,))
    loss_fn = nn.CrossEntropyLoss()
    init = copy.deepcopy(model.state_dict())
    model.train()
    for _ in range(3):  # moves the batch-norm statistics and the weights
        model.zero_grad()
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.1 * p.grad)
    model.conv.weight.grad = None  # some .grad are None, others are set
    model.bn2d.eval()  # mixed modes must come back as they were
    return model, loss_fn, x, y, init


def _cases():
    def gap(m, lf, d, init):
        measures.generalization_gap(m, lf, d, d)

    def eig(m, lf, d, init):
        measures.hessian_eigenvalues(m, lf, d, k=2, max_iter=8, tol=1e-2)

    def eig_power_layers(m, lf, d, init):
        measures.hessian_eigenvalues(
            m,
            lf,
            d,
            method="power",
            per_layer=True,
            max_iter=3,
            tol=1e-1,
            return_eigenvectors=True,
        )

    def trace(m, lf, d, init):
        measures.hessian_trace(m, lf, d, n_samples=2)

    def worst(m, lf, d, init):
        measures.worst_case_sharpness(m, lf, d, n_steps=2)

    def worst_sub(m, lf, d, init):
        measures.worst_case_sharpness(m, lf, d, n_steps=2, subspace_dim=3)

    def expected(m, lf, d, init):
        measures.expected_sharpness(m, lf, d, n_samples=2)

    def expected_mag(m, lf, d, init):
        measures.expected_sharpness(m, lf, d, n_samples=2, magnitude_aware=True)

    def pac(m, lf, d, init):
        measures.pac_bayes(m, lf, d, init=init, n_samples=2, max_iter=3)

    def norms(m, lf, d, init):
        measures.norms(m, init, example_input=d[0], exact_conv=True)

    def timeline(m, lf, d, init):
        measures.compute_measures(
            measures.available_measures(),
            m,
            lf,
            d,
            d,
            init,
            options={
                "hessian": {"max_iter": 3, "tol": 1e-1, "n_samples": 2},
                "sharpness": {"n_steps": 1},
                "expected_sharpness": {"n_samples": 1},
                "pac_bayes": {"n_samples": 1, "max_iter": 2},
            },
        )

    return [
        gap,
        eig,
        eig_power_layers,
        trace,
        worst,
        worst_sub,
        expected,
        expected_mag,
        pac,
        norms,
        timeline,
    ]


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
@pytest.mark.parametrize("measure", _cases(), ids=lambda f: f.__name__)
def test_measure_leaves_model_unchanged(bn_problem, measure):
    model, loss_fn, x, y, init = bn_problem
    before = fingerprint(model)
    measure(model, loss_fn, (x, y), init)
    assert_same(before, fingerprint(model))


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_measure_with_shuffling_dataloader_keeps_rng(bn_problem):
    """A shuffling DataLoader draws from the global generator; it is restored."""
    model, loss_fn, x, y, _ = bn_problem
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    before = fingerprint(model)
    measures.generalization_gap(model, loss_fn, loader, loader)
    measures.hessian_trace(model, loss_fn, loader, n_samples=1)
    assert_same(before, fingerprint(model))


def test_preserve_state_restores_after_mangling_and_raising(bn_problem):
    model, loss_fn, x, y, _ = bn_problem
    before = fingerprint(model)
    old_weight = model.fc1.weight
    with (
        pytest.raises(RuntimeError, match="boom"),
        preserve_state(model, parameters=True),
    ):
        model.train()
        model(x)  # updates batch-norm statistics
        loss_fn(model(x), y).backward()  # sets and accumulates .grad
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-3.0)
        model.fc2.weight.grad = None
        model.fc1.weight = nn.Parameter(torch.zeros_like(old_weight))
        model.fc1.weight.requires_grad_(False)
        model.bn.running_mean = torch.ones(8)
        torch.rand(5)
        np.random.rand(3)  # noqa: NPY002
        random.random()
        raise RuntimeError("boom")
    assert model.fc1.weight is old_weight
    assert_same(before, fingerprint(model))


def test_model_snapshot_handles_tied_weights_and_none_buffers():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(
        lin, nn.Tanh(), lin, nn.BatchNorm1d(3, track_running_stats=False)
    )
    assert model[3].running_mean is None
    before = fingerprint(model)
    snap = ModelSnapshot(model)
    with torch.no_grad():
        lin.weight.add_(1)
    lin.weight.grad = torch.ones(3, 3)
    snap.restore()
    assert_same(before, fingerprint(model))


def test_preserve_state_without_rng_keeps_generator_moving():
    model = nn.Linear(2, 2)
    state = torch.get_rng_state()
    with preserve_state(model, parameters=True, rng=False):
        torch.rand(1)
    assert not torch.equal(state, torch.get_rng_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measures_on_cuda_leave_model_and_cuda_rng_unchanged(bn_problem):
    model, loss_fn, x, y, init = bn_problem
    model = model.cuda()
    for p in model.parameters():
        if p.grad is not None:
            p.grad = p.grad.cuda()
    cuda_rng = torch.cuda.get_rng_state_all()
    before = fingerprint(model)
    measures.compute_measures(
        ["gap", "hessian", "expected_sharpness", "norms"],
        model,
        loss_fn,
        (x, y),
        (x, y),
        {k: v.cuda() for k, v in init.items()},
        options={"hessian": {"max_iter": 5, "n_samples": 2}},
    )
    assert_same(before, fingerprint(model))
    assert all(
        torch.equal(a, b) for a, b in zip(cuda_rng, torch.cuda.get_rng_state_all())
    )
