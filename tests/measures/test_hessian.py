from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from _measures_helpers import Quadratic, dummy_data, full_hessian, quadratic_loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.measures import (
    HessianEigenvalues,
    HessianSpectralDensity,
    HessianTrace,
    counting,
    hessian_eigenvalues,
    hessian_spectral_density,
    hessian_trace,
)

METHODS = ["lanczos", "power"]
DIAG = [10.0, 5.0, 4.0] + [0.1] * 47


def diag_problem():
    """Bias-free Linear(50, 1) with MSE whose Hessian is exactly diag(DIAG).

    ``L(w) = mean((w.x - y)^2)`` has ``H = 2/n X^T X``; orthonormal columns of
    ``X`` scaled by ``sqrt(n d / 2)`` make that ``diag(d)``.
    """
    d = torch.tensor(DIAG, dtype=torch.float64)
    n = 60
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, 50, dtype=torch.float64, generator=gen))
    x = q * torch.sqrt(n * d / 2)
    y = torch.randn(n, 1, dtype=torch.float64, generator=gen)
    torch.manual_seed(0)
    model = nn.Linear(50, 1, bias=False).double()
    return model, nn.MSELoss(), x, y


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


# ----------------------------------------------------- known spectra, every method ---
def test_diag_problem_has_the_stated_hessian():
    model, loss_fn, x, y = diag_problem()
    h = full_hessian(model, loss_fn, x, y)
    assert torch.allclose(h, torch.diag(torch.tensor(DIAG, dtype=h.dtype)), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_hessian_eigenvalues_diag_spectrum(method, k, tol):
    """Non-regression test for "Nothing lost, nothing hangs ... and right Hessians".

    Power iteration with k >= 2 returned [9.9987, 4.8888, 0.1072] for
    diag(10, 5, 4, 0.1 x 47) at tol=1e-3 while reporting converged=True.
    """
    model, loss_fn, x, y = diag_problem()
    result = hessian_eigenvalues(
        model, loss_fn, (x, y), k=k, method=method, tol=tol, max_iter=1000
    )
    assert result.converged
    assert list(result) == pytest.approx(DIAG[:k], rel=tol)


@pytest.mark.parametrize("method", METHODS)
def test_hessian_eigenvalues_random_psd_spectrum(method):
    gen = torch.Generator().manual_seed(4)
    b = torch.randn(12, 12, dtype=torch.float64, generator=gen)
    a = b @ b.T / 12
    ev = torch.linalg.eigvalsh(a).flip(0)
    model = Quadratic(torch.randn(12, dtype=torch.float64, generator=gen))
    result = hessian_eigenvalues(
        model,
        quadratic_loss(a, torch.zeros(12, dtype=torch.float64)),
        dummy_data(),
        k=3,
        method=method,
        tol=1e-4,
        max_iter=2000,
    )
    assert result.converged
    assert list(result) == pytest.approx(ev[:3].tolist(), rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_hessian_eigenvalues_indefinite_model_hessian(reference, method, k):
    """The MLP's Hessian (autograd + eigvalsh) has negative eigenvalues too."""
    (model, loss_fn, x, y), _, ev = reference
    assert float(ev[0]) < 0 < float(ev[-1])
    result = hessian_eigenvalues(
        model, loss_fn, (x, y), k=k, method=method, tol=1e-4, max_iter=5000
    )
    assert result.converged
    assert list(result) == pytest.approx(ev.flip(0)[:k].tolist(), rel=1e-4)


# ------------------------------------------------------------ one-batch graph ---
def test_hessian_one_batch_reuses_the_gradient_graph(mlp_problem):
    """One batch: one forward pass for all products; same values as many batches."""
    model, loss_fn, x, y = mlp_problem
    with counting() as counts:
        one = hessian_eigenvalues(model, loss_fn, (x, y), k=2, tol=1e-8)
    assert counts.forward == 1
    assert counts.hvp == one.n_hvp > 2
    many = hessian_eigenvalues(model, loss_fn, (x, y), k=2, tol=1e-8, batch_size=50)
    assert list(one) == pytest.approx(list(many), rel=1e-8)
    a = hessian_trace(model, loss_fn, (x, y), n_samples=5, seed=2)
    b = hessian_trace(model, loss_fn, (x, y), n_samples=5, seed=2, batch_size=50)
    assert a.mean == pytest.approx(b.mean, rel=1e-8)


def test_hessian_one_batch_leaves_model_unchanged(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hessian_eigenvalues(model, loss_fn, (x, y), k=2, method="power")
    hessian_trace(model, loss_fn, (x, y), n_samples=3)
    hessian_spectral_density(model, loss_fn, (x, y), n_steps=10)
    assert model.training
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
        assert p.grad is None


# ----------------------------------------------------------- spectral density ---
def test_hessian_spectral_density_exact_moments_for_diagonal_hessian():
    """Rademacher quadratic forms are exact for a diagonal H: v^T H^m v = tr(H^m)."""
    model, loss_fn, x, y = diag_problem()
    result = hessian_spectral_density(model, loss_fn, (x, y), n_vectors=2, n_steps=20)
    assert isinstance(result, HessianSpectralDensity)
    # Four distinct eigenvalues: Lanczos stops after 4 steps, quadrature exact.
    assert result.n_steps == (4, 4)
    assert result.n_hvp == 8
    d = np.asarray(DIAG)
    for m in range(6):
        assert result.moment(m) == pytest.approx(np.mean(d**m), rel=1e-10)
    assert sorted(set(np.round(result.nodes, 8))) == [0.1, 4.0, 5.0, 10.0]


def test_hessian_spectral_density_matches_dense_spectrum(reference):
    """Moments m = 0, 1, 2 match tr(H^m)/p within the probes' standard error."""
    (model, loss_fn, x, y), h, ev = reference
    p = h.shape[0]
    n_vectors = 40
    result = hessian_spectral_density(
        model, loss_fn, (x, y), n_vectors=n_vectors, n_steps=30, seed=1
    )
    assert result.n_hvp == n_vectors * 30
    assert result.weights.sum() == pytest.approx(1.0, rel=1e-12)
    assert result.moment(0) == pytest.approx(1.0, rel=1e-12)
    for m in (1, 2):
        hm = torch.linalg.matrix_power(h, m)
        exact = float(hm.trace()) / p
        # Var(v^T A v) = 2 sum_{i != j} A_ij^2 for Rademacher v; divided by p^2.
        off = hm - torch.diag(torch.diag(hm))
        stderr = math.sqrt(2 * float((off**2).sum()) / n_vectors) / p
        assert abs(result.moment(m) - exact) < 4 * stderr + 1e-12
    # The extreme Ritz values converge first: the support covers the spectrum.
    span = float(ev[-1] - ev[0])
    assert result.nodes.min() == pytest.approx(float(ev[0]), abs=1e-3 * span)
    assert result.nodes.max() == pytest.approx(float(ev[-1]), abs=1e-6 * span)
    assert result.nodes.min() >= float(ev[0]) - 1e-8 * span
    assert result.nodes.max() <= float(ev[-1]) + 1e-8 * span


def test_hessian_spectral_density_full_steps_recovers_every_eigenvalue(reference):
    (model, loss_fn, x, y), h, ev = reference
    p = h.shape[0]
    result = hessian_spectral_density(model, loss_fn, (x, y), n_steps=p)
    heavy = np.sort(result.nodes[result.weights > 1e-8])
    # Every node is an eigenvalue of H (exact Lanczos over the whole space).
    gaps = np.abs(heavy[:, None] - ev.numpy()[None, :]).min(axis=1)
    assert gaps.max() < 1e-6 * float(ev.abs().max())


def test_hessian_spectral_density_smoothed_density(reference):
    (model, loss_fn, x, y), _, ev = reference
    result = hessian_spectral_density(model, loss_fn, (x, y), n_steps=20)
    lo, hi = float(ev[0]), float(ev[-1])
    pad = 0.5 * (hi - lo)
    grid = np.linspace(lo - pad, hi + pad, 4001)
    phi = result.density(grid)
    assert phi.shape == grid.shape
    assert (phi >= 0).all()
    assert phi.sum() * (grid[1] - grid[0]) == pytest.approx(1.0, rel=1e-3)
    wide = result.density(grid, sigma=0.1 * (hi - lo))
    assert wide.sum() * (grid[1] - grid[0]) == pytest.approx(1.0, rel=2e-2)
    with pytest.raises(InvalidParameterError, match="'sigma' parameter"):
        result.density(grid, sigma=0.0)


def test_hessian_spectral_density_seed_and_parameters(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    a = hessian_spectral_density(model, loss_fn, (x, y), n_steps=5, seed=3)
    b = hessian_spectral_density(model, loss_fn, (x, y), n_steps=5, seed=3)
    c = hessian_spectral_density(model, loss_fn, (x, y), n_steps=5, seed=4)
    assert np.array_equal(a.nodes, b.nodes)
    assert not np.array_equal(a.nodes, c.nodes)
    block = full_hessian(model, loss_fn, x, y, names=["2.weight"])
    sub = hessian_spectral_density(
        model, loss_fn, (x, y), params="2.weight", n_steps=block.shape[0]
    )
    assert sub.moment(1) == pytest.approx(
        float(block.trace()) / block.shape[0], abs=0.5 * float(block.trace().abs())
    )
    for kwargs, match in [
        ({"n_vectors": 0}, "'n_vectors' parameter of hessian_spectral_density"),
        ({"n_steps": 0}, "'n_steps' parameter"),
        ({"seed": -1}, "'seed' parameter"),
    ]:
        with pytest.raises(InvalidParameterError, match=match):
            hessian_spectral_density(model, loss_fn, (x, y), **kwargs)


def test_hessian_eigenvalues_power_never_claims_a_stagnant_quotient():
    """+-3 both dominant: the Rayleigh quotient stays put while v oscillates."""
    a = torch.diag(torch.tensor([-3.0, 3.0, 1.0], dtype=torch.float64))
    model = Quadratic(torch.ones(3, dtype=torch.float64))
    loss_fn = quadratic_loss(a, torch.zeros(3, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        result = hessian_eigenvalues(
            model, loss_fn, dummy_data(), method="power", tol=1e-6, max_iter=50
        )
    if result.converged:
        assert result[0] == pytest.approx(3.0, rel=1e-6)


def test_hessian_density_measure_round_trips_through_scalars(tmp_path):
    """The registered measure stores nodes and weights; the report draws them."""
    from ibmonitor.measures import DENSITY_PREFIX, MeasureSet, density_from_scalars
    from ibmonitor.report import write_report
    from ibmonitor.storage import RunWriter, load_run

    model, loss_fn, x, y = diag_problem()
    direct = hessian_spectral_density(model, loss_fn, (x, y), n_steps=30)
    measures = MeasureSet(["hessian_density"], loss_fn=loss_fn, train_data=(x, y))
    measures.bind(model, total_epochs=1)
    values = measures.compute(model, 0, strict=True, last=True)
    names = sorted(values)
    assert all(n.startswith(DENSITY_PREFIX) for n in names)
    assert len(names) == 2 * len(direct.nodes)  # 4 distinct eigenvalues: 4 steps
    rebuilt = density_from_scalars(values)
    np.testing.assert_allclose(rebuilt.nodes, direct.nodes)
    np.testing.assert_allclose(rebuilt.weights, direct.weights)
    for m in range(4):
        assert rebuilt.moment(m) == pytest.approx(np.mean(np.asarray(DIAG) ** m))
    with pytest.raises(InvalidParameterError, match="hessian_density/node_i"):
        density_from_scalars({"train_loss": 1.0})

    with RunWriter(tmp_path / "run", {"seed": 0}) as writer:
        writer.append_scalars(0, {"train_loss": 1.0, **values})
    page = write_report(load_run(tmp_path / "run"), tmp_path / "r.html").read_text()
    assert "Hessian eigenvalue density" in page
    # the nodes are not drawn as curves over epochs in the "Other" panel
    assert "Other scalars" not in page
