from __future__ import annotations

import math

import pytest
import torch
from _measures_helpers import Quadratic, dummy_data, full_hessian, quadratic_loss
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.measures import (
    HessianEigenvalues,
    HessianTrace,
    counting,
    hessian_eigenvalues,
    hessian_trace,
)


@pytest.fixture
def reference(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    h = full_hessian(model, loss_fn, x, y)
    return mlp_problem, h, torch.linalg.eigvalsh(h)


def test_hessian_eigenvalues_lanczos_matches_eigvalsh(reference):
    (model, loss_fn, x, y), _, ev = reference
    result = hessian_eigenvalues(model, loss_fn, (x, y), k=3, tol=1e-6)
    assert isinstance(result, HessianEigenvalues)
    assert isinstance(result, tuple)
    assert all(isinstance(v, float) for v in result)
    expected = ev.flip(0)[:3].tolist()
    assert list(result) == pytest.approx(expected, rel=1e-6)
    assert result[0] >= result[1] >= result[2]
    assert result.converged
    assert result.n_hvp == result.n_iter


def test_hessian_eigenvalues_default_tolerance(reference):
    (model, loss_fn, x, y), _, ev = reference
    result = hessian_eigenvalues(model, loss_fn, (x, y))
    assert len(result) == 1
    assert result[0] == pytest.approx(float(ev[-1]), rel=1e-3)


def test_hessian_eigenvalues_power_matches_eigvalsh(reference):
    (model, loss_fn, x, y), _, ev = reference
    result = hessian_eigenvalues(
        model, loss_fn, (x, y), k=2, method="power", tol=1e-7, max_iter=1000
    )
    assert result.n_hvp > 2
    assert result.method == "power"
    assert list(result) == pytest.approx(ev.flip(0)[:2].tolist(), rel=1e-3)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_hessian_eigenvalues_algebraic_top_with_dominant_negative(method):
    """A saddle: the eigenvalue of largest magnitude is negative (-5)."""
    a = torch.diag(torch.tensor([-5.0, 1.0, 2.0, 0.5], dtype=torch.float64))
    c = torch.zeros(4, dtype=torch.float64)
    model = Quadratic(torch.ones(4, dtype=torch.float64))
    result = hessian_eigenvalues(
        model,
        quadratic_loss(a, c),
        dummy_data(),
        k=2,
        method=method,
        tol=1e-8,
        max_iter=500,
    )
    assert list(result) == pytest.approx([2.0, 1.0], rel=1e-4)


def test_hessian_eigenvectors_satisfy_eigen_equation(reference):
    (model, loss_fn, x, y), h, _ = reference
    result = hessian_eigenvalues(
        model, loss_fn, (x, y), k=2, tol=1e-8, return_eigenvectors=True
    )
    for value, vec in zip(result, result.eigenvectors):
        flat = torch.cat([v.reshape(-1) for v in vec])
        assert float(flat.norm()) == pytest.approx(1.0, rel=1e-6)
        assert torch.allclose(h @ flat, value * flat, atol=1e-5)


def test_hessian_trace_matches_exact_trace_within_stderr(reference):
    (model, loss_fn, x, y), h, _ = reference
    result = hessian_trace(model, loss_fn, (x, y), n_samples=150, seed=3)
    assert isinstance(result, HessianTrace)
    assert result.n_samples == 150
    assert result.stderr > 0
    exact = float(h.trace())
    assert abs(result.mean - exact) < 4 * result.stderr
    # The Rademacher variance 2 sum_{i != j} H_ij^2 sets the standard error.
    off = h - torch.diag(torch.diag(h))
    expected_stderr = math.sqrt(2 * float((off**2).sum()) / 150)
    assert result.stderr == pytest.approx(expected_stderr, rel=0.4)


def test_hessian_trace_exact_for_diagonal_hessian():
    a = torch.diag(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64))
    model = Quadratic(torch.zeros(3, dtype=torch.float64))
    result = hessian_trace(model, quadratic_loss(a, torch.ones(3)), dummy_data(), 5)
    assert result.mean == pytest.approx(6.0)
    assert result.stderr == pytest.approx(0.0, abs=1e-12)


def test_hessian_per_layer_matches_diagonal_blocks(reference):
    (model, loss_fn, x, y), _, _ = reference
    eig = hessian_eigenvalues(model, loss_fn, (x, y), per_layer=True, tol=1e-8)
    tr = hessian_trace(model, loss_fn, (x, y), n_samples=2, per_layer=True)
    assert list(eig) == ["0", "2"]
    assert list(tr) == ["0", "2"]
    for layer in ("0", "2"):
        names = [f"{layer}.weight", f"{layer}.bias"]
        block = full_hessian(model, loss_fn, x, y, names=names)
        assert eig[layer][0] == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]))


def test_hessian_params_selects_a_block(reference):
    (model, loss_fn, x, y), _, _ = reference
    block = full_hessian(model, loss_fn, x, y, names=["2.weight"])
    by_name = hessian_eigenvalues(model, loss_fn, (x, y), params="2.weight", tol=1e-8)
    by_tensor = hessian_eigenvalues(
        model, loss_fn, (x, y), params=[model[2].weight], tol=1e-8
    )
    expected = float(torch.linalg.eigvalsh(block)[-1])
    assert by_name[0] == pytest.approx(expected)
    assert by_tensor[0] == pytest.approx(expected)
    with pytest.raises(InvalidParameterError, match="Unknown parameter or module"):
        hessian_eigenvalues(model, loss_fn, (x, y), params="fc9")


def test_hessian_dataloader_matches_tensor_pair(reference):
    """Uneven batches are weighted by their size: the loss is the sample mean."""
    (model, loss_fn, x, y), _, ev = reference
    loader = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=True)
    result = hessian_eigenvalues(model, loss_fn, loader, tol=1e-8)
    pair = hessian_eigenvalues(model, loss_fn, (x, y), batch_size=33, tol=1e-8)
    assert result[0] == pytest.approx(float(ev[-1]), rel=1e-6)
    assert pair[0] == pytest.approx(float(ev[-1]), rel=1e-6)


def test_hessian_max_batches_uses_first_batches(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    h = full_hessian(model, loss_fn, x[:40], y[:40])
    result = hessian_eigenvalues(
        model, loss_fn, (x, y), batch_size=20, max_batches=2, tol=1e-8
    )
    assert result[0] == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)


def test_hessian_counts_hvps(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with counting() as counts:
        result = hessian_eigenvalues(model, loss_fn, (x, y), batch_size=40)
    assert counts.hvp == result.n_hvp > 0
    assert counts.forward == 3 * result.n_hvp
    with counting() as counts:
        hessian_trace(model, loss_fn, (x, y), n_samples=4)
    assert counts.hvp == 4


def test_hessian_seed_reproducible(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    a = hessian_trace(model, loss_fn, (x, y), n_samples=3, seed=5)
    b = hessian_trace(model, loss_fn, (x, y), n_samples=3, seed=5)
    c = hessian_trace(model, loss_fn, (x, y), n_samples=3, seed=6)
    assert a == b
    assert a != c


def test_hessian_warns_when_not_converged(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with pytest.warns(EstimationWarning, match="did not reach tol"):
        result = hessian_eigenvalues(model, loss_fn, (x, y), k=2, max_iter=3, tol=1e-12)
    assert not result.converged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "'k' parameter of hessian_eigenvalues"),
        ({"method": "qr"}, "'method' parameter"),
        ({"tol": 0.0}, "'tol' parameter"),
        ({"max_batches": 0}, "'max_batches' parameter"),
    ],
)
def test_hessian_eigenvalues_rejects_bad_parameters(mlp_problem, kwargs, match):
    model, loss_fn, x, y = mlp_problem
    with pytest.raises(InvalidParameterError, match=match):
        hessian_eigenvalues(model, loss_fn, (x, y), **kwargs)


def test_hessian_rejects_bad_data(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with pytest.raises(
        InvalidParameterError, match="'data' parameter of hessian_trace"
    ):
        hessian_trace(model, loss_fn, x)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        hessian_trace(model, loss_fn, (x, y[:-1]))
