"""inject_noise: Gaussian noise in chosen layers for one block only (issue 12, item 4).

The noise must reach every later layer, leave the recorded (noiseless) output
of the noisy layer itself alone, vanish on exit (also on error), and never
touch the parameters, the training or the global random state. End to end,
the recorded noisy network must give the closed-form I(X;T) of a Gaussian
linear network with noise after its first layer.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.stats import qmc
from torch import nn

from ibmonitor.estimators import input_ids, noisy
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.noise import NoiseInjection, inject_noise
from ibmonitor.recording import record_activations


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these small products only contend with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)
    )


def _hook_count(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )


def test_downstream_layers_see_the_noise_and_the_noisy_layer_records_clean():
    model = _mlp()
    x = torch.randn(64, 4)
    clean = record_activations(model, ["1", "3", "4"], x)
    with inject_noise(model, ["1"], std=0.2) as noise:
        rec = record_activations(model, ["1", "3", "4"], x)
    assert isinstance(noise, NoiseInjection)
    assert noise.layers == ["1"] and noise.calls == {"1": 1}
    # the hooked layer's own recording is its noiseless output S ...
    assert torch.equal(rec["1"], clean["1"])
    # ... and every later layer sees S + Z
    assert not torch.allclose(rec["3"], clean["3"], atol=1e-3)
    assert not torch.allclose(rec["4"], clean["4"], atol=1e-3)
    # what fc2 receives is S + Z: its output moves by W Z, of variance
    # 0.2^2 * sum_k W_jk^2 per unit (2000 rows: within 15 %)
    x = torch.randn(2000, 4)
    with torch.no_grad():
        expected = model[2](model[1](model[0](x)))
    with inject_noise(model, ["1"], std=0.2):
        moved = record_activations(model, ["2"], x)["2"] - expected
    want = 0.04 * (model[2].weight.detach() ** 2).sum(dim=1)
    assert torch.allclose(moved.var(dim=0), want, rtol=0.15)
    assert float(moved.mean(dim=0).abs().max()) < 0.05


def test_noise_has_the_requested_distribution():
    """Zero weights: the output is the bias; outputs minus bias are the noise."""
    lin = nn.Linear(3, 50)
    nn.init.zeros_(lin.weight)
    model = nn.Sequential(lin, nn.Identity())
    x = torch.zeros(400, 3)
    with torch.no_grad(), inject_noise(model, ["0"], std=0.3, seed=1):
        out = model(x)
    z = (out - lin.bias).detach().flatten().numpy()
    assert z.mean() == pytest.approx(0.0, abs=4 * 0.3 / math.sqrt(z.size))
    assert z.std() == pytest.approx(0.3, rel=0.03)  # 20000 values: 0.5 % sd
    # normal, not just the right variance
    assert stats.kstest(z / 0.3, "norm").pvalue > 1e-3


def test_noise_is_reproducible_by_seed_and_generator():
    model = _mlp()
    x = torch.randn(16, 4)

    def run(**kwargs):
        with torch.no_grad(), inject_noise(model, [nn.Tanh], std=0.1, **kwargs):
            return model(x)

    assert torch.equal(run(seed=3), run(seed=3))
    assert not torch.equal(run(seed=3), run(seed=4))
    a = run(generator=torch.Generator().manual_seed(7))
    b = run(generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    # the given generator is the one drawn from: it advances
    gen = torch.Generator().manual_seed(7)
    before = gen.get_state()
    run(generator=gen)
    assert not torch.equal(gen.get_state(), before)


def test_noise_never_touches_parameters_buffers_or_global_rng():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Tanh())
    model.eval()
    x = torch.randn(32, 4)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    py_state = random.getstate()
    with torch.no_grad(), inject_noise(model, ["0", "2"], std=0.5):
        model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert random.getstate() == py_state
    assert model.training is False


def test_training_with_noisy_recordings_equals_training_without():
    """Training steps interleaved with noisy recording passes are bitwise the
    steps of a run that never recorded: the noise stays in the block."""

    def train(record):
        model = _mlp(seed=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            x = torch.randn(32, 4, generator=gen)
            y = torch.randint(0, 2, (32,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if record:
                with inject_noise(model, [nn.Tanh], std=0.3):
                    record_activations(model, ["1", "3"], x)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(True), train(False)):
        assert torch.equal(a, b)


def test_hooks_are_removed_on_exit_and_on_error():
    model = _mlp()
    x = torch.randn(8, 4)
    with torch.no_grad():
        clean = model(x)
    before = _hook_count(model)
    with inject_noise(model, [nn.Tanh], std=1.0):
        assert _hook_count(model) > before
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"), inject_noise(model, ["1"], std=1.0):
        with torch.no_grad():
            model(x)
        raise RuntimeError("boom")
    assert _hook_count(model) == before
    with torch.no_grad():
        assert torch.equal(model(x), clean)


class _TupleOut(nn.Module):
    def forward(self, x):
        return x, x


def test_a_layer_returning_no_tensor_raises_and_cleans_up():
    model = nn.Sequential(nn.Linear(2, 2), _TupleOut())
    with (
        pytest.raises(InvalidParameterError, match="returned tuple"),
        inject_noise(model, ["1"], std=0.1),
    ):
        model(torch.zeros(3, 2))
    assert _hook_count(model) == 0


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"layers": ["1"], "std": 0.0}, "'std' parameter of inject_noise"),
        ({"layers": ["1"], "std": -1.0}, "'std' parameter of inject_noise"),
        ({"layers": ["1"], "std": math.inf}, "'std' parameter of inject_noise"),
        ({"layers": ["1"], "std": math.nan}, "'std' parameter of inject_noise"),
        ({"layers": ["1"], "std": 0.1, "seed": -2}, "'seed' parameter"),
        ({"layers": ["1"], "std": 0.1, "generator": 3}, "torch.Generator"),
        ({"layers": None, "std": 0.1}, "'layers' parameter of inject_noise"),
        ({"layers": ["fc9"], "std": 0.1}, "Unknown layer 'fc9'"),
        ({"layers": ["output"], "std": 0.1}, "model's own output"),
    ],
)
def test_bad_arguments_are_refused(kwargs, phrase):
    model = _mlp()
    with (
        pytest.raises(InvalidParameterError, match=phrase),
        inject_noise(model, **kwargs),
    ):
        pass
    assert _hook_count(model) == 0


def test_recorded_noisy_network_matches_the_closed_form():
    """X through S1 = A X, T1 = S1 + Z1 (injected), S2 = B T1, T2 = S2 + Z2.

    X is uniform on 16 points (a normal Sobol sample); each is fed 128 times,
    so the rows of one input are samples of S2 given X. T2 | X=x is exactly
    N(B A x, tau^2 B B^T + sigma^2 I), so I(X;T2) is the entropy of a
    16-component Gaussian mixture (a fine 2-D grid) minus that Gaussian's
    entropy. Measured over 10 noise seeds: bias +0.010 bits, spread 0.015 bits
    (the mixture of 128 repeats standing for each conditional Gaussian, and
    the Monte Carlo, 0.011 bits); tolerance 0.08 bits.
    """
    a = np.array([[1.0, 0.5], [0.0, 1.5]])
    b = np.array([[0.8, -0.3], [0.4, 1.0]])
    tau, sigma, k, r = 0.5, 0.5, 16, 128
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    model = model.double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(a))
        model[1].weight.copy_(torch.from_numpy(b))
    xs = stats.norm.ppf(qmc.Sobol(2, scramble=True, seed=3).random(k))
    means = xs @ a.T @ b.T
    cov = tau**2 * b @ b.T + sigma**2 * np.eye(2)
    truth = _mixture_entropy_2d(means, cov) - 0.5 * np.linalg.slogdet(
        2 * math.pi * math.e * cov
    )[1] / math.log(2)

    x = torch.from_numpy(np.repeat(xs, r, axis=0))
    with inject_noise(model, ["0"], std=tau):
        s2 = record_activations(model, ["1"], x, batch_size=1024)["1"]
    r_est = noisy(
        s2, torch.zeros(k * r, dtype=torch.long), x=input_ids(x), noise_std=sigma
    )
    assert r_est.i_xt == pytest.approx(truth, abs=0.08)
    # Without the injected noise the same recording would be deterministic
    # given X and carry more: the noise upstream is what lowers I(X;T2).
    clean = record_activations(model, ["1"], x, batch_size=1024)["1"]
    r_clean = noisy(
        clean, torch.zeros(k * r, dtype=torch.long), x=input_ids(x), noise_std=sigma
    )
    assert r_clean.i_xt > r_est.i_xt + 0.3


def _mixture_entropy_2d(means, cov, step=0.03):
    """Entropy in bits of (1/k) sum_i N(means_i, cov) in 2-D, on a fine grid."""
    inv_chol = np.linalg.inv(np.linalg.cholesky(cov))
    log_det = np.linalg.slogdet(2 * math.pi * cov)[1]
    pad = 9 * math.sqrt(float(np.max(np.diag(cov))))
    lo, hi = means.min(axis=0) - pad, means.max(axis=0) + pad
    gx, gy = np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step)
    total = 0.0
    for row in np.array_split(gx, 20):
        pts = np.stack(np.meshgrid(row, gy, indexing="ij"), axis=-1)
        white = (pts[..., None, :] - means) @ inv_chol.T
        lg = special.logsumexp(-0.5 * (white**2).sum(-1), axis=-1)
        lg = lg - math.log(len(means)) - 0.5 * log_det
        total += float(-(np.exp(lg) * lg).sum())
    return total * step * step / math.log(2)


# -- the monitor's recording_noise --------------------------------------------------


def _noise_run(recording_noise, seed=0):
    from ibmonitor import InformationMonitor
    from ibmonitor.sinks import MemorySink

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Tanh())
    x = torch.randn(128, 4)
    y = (x[:, 0] > 0).long()
    seen = []
    model[3].register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    monitor = InformationMonitor(
        model,
        x,
        y,
        layers=["1", "3"],
        estimators={"noisy": {"noise_std": 0.2}},
        schedule=lambda e: True,
        overhead_budget=None,
        sinks=[MemorySink()],
        recording_noise=recording_noise,
        seed=seed,
    )
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor.on_epoch_end(0)
    after = [p.detach().clone() for p in model.parameters()]
    info = monitor.information
    monitor.close()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(torch.get_rng_state(), state)
    return info, seen, model, x


def test_monitor_recording_noise_reaches_later_layers_only_while_recording():
    clean_info, clean_seen, _, _ = _noise_run(None)
    noisy_info, noisy_seen, _, _ = _noise_run(0.5)
    # the tanh 3 input during recording: the clean tanh 1 output plus noise
    # through Linear 2, so it differs; without the option it does not
    assert not torch.allclose(noisy_seen[0], clean_seen[0])
    diff = (noisy_seen[0] - clean_seen[0]).std()
    assert 0.1 < float(diff) < 2.0
    # the recorded first layer is clean in both (noise after its hooks)
    layer1 = lambda info: info[info.layer == "1"].i_xt.item()  # noqa: E731
    assert layer1(noisy_info) == pytest.approx(layer1(clean_info))
    # the same seed gives the same noise, another seed another
    again, _, _, _ = _noise_run(0.5)
    other, _, _, _ = _noise_run(0.5, seed=1)
    layer3 = lambda info: info[info.layer == "3"].i_xt.item()  # noqa: E731
    assert layer3(again) == layer3(noisy_info)
    assert layer3(other) != layer3(noisy_info)


def test_monitor_recording_noise_is_checked():
    from ibmonitor import InformationMonitor

    with pytest.raises(InvalidParameterError, match="recording_noise"):
        InformationMonitor(
            nn.Linear(2, 2),
            torch.zeros(4, 2),
            torch.zeros(4).long(),
            recording_noise=-1.0,
        )
