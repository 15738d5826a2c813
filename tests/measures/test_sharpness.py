from __future__ import annotations

import pytest
import torch
from _measures_helpers import Quadratic, dummy_data, quadratic_loss
from torch import nn

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.measures import counting, expected_sharpness, worst_case_sharpness
from ibmonitor.measures.sharpness import _subspace_matrix

F64 = torch.float64


def _diag_problem(n=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=gen, dtype=F64) + 0.5
    c = torch.randn(n, generator=gen, dtype=F64)
    w = torch.randn(n, generator=gen, dtype=F64)
    w[3] = c[3]  # a coordinate where the gradient vanishes: needs the random start
    return a, c, w


@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_worst_case_sharpness_diagonal_quadratic_closed_form(eps):
    """max over the box of a separable convex quadratic is at the far vertex."""
    a, c, w = _diag_problem()
    loss_fn = quadratic_loss(torch.diag(a), c)
    model = Quadratic(w)
    b = eps * (w.abs() + 1)
    loss0 = float(0.5 * (a * (w - c) ** 2).sum())
    best = float(0.5 * (a * ((w - c).abs() + b) ** 2).sum())
    expected = 100 * (best - loss0) / (1 + loss0)
    value = worst_case_sharpness(model, loss_fn, dummy_data(), eps=eps)
    assert value == pytest.approx(expected, rel=1e-10)


def test_worst_case_sharpness_zero_start_at_minimum_is_zero():
    """At the minimum the gradient vanishes: from z = 0 nothing moves (why the
    default starts at a random point of the box)."""
    a, c, _ = _diag_problem()
    model = Quadratic(c)
    loss_fn = quadratic_loss(torch.diag(a), c)
    assert worst_case_sharpness(
        model, loss_fn, dummy_data(), eps=0.1, random_start=False
    ) == pytest.approx(0.0)
    assert worst_case_sharpness(model, loss_fn, dummy_data(), eps=0.1) > 0


def test_worst_case_sharpness_subspace_linear_closed_form():
    """Linear loss g.w: the max over the y-box of g.(A y) is sum |A^T g|_i b_i."""
    n, p, eps, seed = 12, 4, 0.01, 3
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(n, generator=gen, dtype=F64)
    w = torch.randn(n, generator=gen, dtype=F64)
    model = Quadratic(w)

    def loss_fn(out, target):
        return (out @ g).mean() + 10.0  # positive, so 1 + L(w) > 0

    a_mat = _subspace_matrix(n, p, seed + 1, torch.device("cpu"), F64)
    b = eps * (torch.linalg.pinv(a_mat) @ w).abs() + eps
    loss0 = float(w @ g) + 10.0
    gain = float(((a_mat.T @ g).abs() * b).sum())
    expected = 100 * gain / (1 + loss0)
    value = worst_case_sharpness(
        model, loss_fn, dummy_data(), eps=eps, subspace_dim=p, seed=seed
    )
    assert value == pytest.approx(expected, rel=1e-8)


def test_worst_case_sharpness_on_network_is_small_and_counts(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with counting() as counts:
        small = worst_case_sharpness(model, loss_fn, (x, y), eps=1e-4, n_steps=5)
    large = worst_case_sharpness(model, loss_fn, (x, y), eps=1e-2, n_steps=5)
    assert 0 <= small < large
    assert counts.grad == 5
    assert counts.hvp == 0
    sub = worst_case_sharpness(model, loss_fn, (x, y), eps=1e-2, subspace_dim=8)
    assert sub >= 0


def test_worst_case_sharpness_rejects_bad_parameters(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with pytest.raises(InvalidParameterError, match="'eps' parameter"):
        worst_case_sharpness(model, loss_fn, (x, y), eps=0)
    with pytest.raises(InvalidParameterError, match="'subspace_dim' parameter"):
        worst_case_sharpness(model, loss_fn, (x, y), subspace_dim=0)


# ------------------------------------------------------------------ expected ---
def _quadratic_for_expected(n=50):
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(n, generator=gen, dtype=F64) + 0.5
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    a_mat = q @ torch.diag(a) @ q.T  # not diagonal: tr(A) = sum(a)
    c = torch.randn(n, generator=gen, dtype=F64)
    w = c + 0.3 * torch.randn(n, generator=gen, dtype=F64)  # off the minimum
    return a_mat, c, w


@pytest.mark.parametrize("antithetic", [True, False])
def test_expected_sharpness_quadratic_is_sigma_squared_trace_over_two(antithetic):
    """E[L(w + nu)] - L(w) = sigma^2 tr(A) / 2 with sigma the std of nu.

    Mixing up variance and standard deviation would give sigma^4 tr(A)/2 (sigma^2
    used as the std) or sigma tr(A)/2 (sigma used as the variance): with
    sigma = 0.1 both are a factor 10 or more away.
    """
    a_mat, c, w = _quadratic_for_expected()
    sigma = 0.1
    expected = sigma**2 * float(torch.trace(a_mat)) / 2
    value = expected_sharpness(
        Quadratic(w),
        quadratic_loss(a_mat, c),
        dummy_data(),
        sigma=sigma,
        n_samples=400,
        antithetic=antithetic,
    )
    # Relative std of one draw's curvature term: sqrt(2 tr(A^2)) / tr(A) ~ 0.2;
    # without antithetic pairs the linear term adds noise. 400 draws: few %.
    assert value == pytest.approx(expected, rel=0.1 if antithetic else 0.25)
    assert value == pytest.approx(expected, rel=0.5)  # far from 10x errors


def test_expected_sharpness_magnitude_aware_closed_form():
    """Variance sigma^2 w_i^2 + eps^2: E = sum_i A_ii (sigma^2 w_i^2 + eps^2) / 2."""
    a_mat, c, w = _quadratic_for_expected()
    sigma, eps = 0.2, 0.05
    expected = float((torch.diag(a_mat) * (sigma**2 * w**2 + eps**2)).sum()) / 2
    value = expected_sharpness(
        Quadratic(w),
        quadratic_loss(a_mat, c),
        dummy_data(),
        sigma=sigma,
        magnitude_aware=True,
        magnitude_eps=eps,
        n_samples=400,
    )
    assert value == pytest.approx(expected, rel=0.1)


def test_expected_sharpness_zero_sigma_is_zero_and_counts(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with counting() as counts:
        value = expected_sharpness(model, loss_fn, (x, y), sigma=0.0, n_samples=3)
    assert value == 0.0
    assert counts.forward == 1 + 2 * 3  # L(w), then w + nu and w - nu per draw
    assert counts.grad == counts.hvp == 0


def test_expected_sharpness_seeded(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    kw = {"sigma": 0.05, "n_samples": 2}
    assert expected_sharpness(model, loss_fn, (x, y), seed=1, **kw) == (
        expected_sharpness(model, loss_fn, (x, y), seed=1, **kw)
    )
    assert expected_sharpness(model, loss_fn, (x, y), seed=1, **kw) != (
        expected_sharpness(model, loss_fn, (x, y), seed=2, **kw)
    )


def test_expected_sharpness_params_subset_perturbs_only_those():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1)).double()
    x = torch.randn(10, 3, dtype=F64)
    y = torch.randn(10, 1, dtype=F64)
    loss_fn = nn.MSELoss()
    value = expected_sharpness(
        model, loss_fn, (x, y), sigma=0.5, params="1.bias", n_samples=500
    )
    # L(b + nu) - L(b) = 2 nu mean(residual) + nu^2: E = sigma^2 = 0.25 (the
    # estimate is the mean of nu^2 over 500 draws: relative sd 6%). Perturbing
    # every parameter would give about 0.25 * (1 + |x|^2 + |hidden|^2) instead.
    assert value == pytest.approx(0.25, rel=0.2)


def test_expected_sharpness_rejects_negative_sigma(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with pytest.raises(InvalidParameterError, match="'sigma' parameter"):
        expected_sharpness(model, loss_fn, (x, y), sigma=-1.0)


def test_measures_run_outside_autocast():
    """Issue 10: under torch.autocast(bfloat16) worst-case sharpness was 0.0."""
    from ibmonitor.measures import generalization_gap, hessian_eigenvalues

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loss_fn = nn.CrossEntropyLoss()

    def measure():
        return (
            worst_case_sharpness(model, loss_fn, (x, y), eps=1e-3, seed=0),
            hessian_eigenvalues(model, loss_fn, (x, y), k=1, seed=0)[0],
            generalization_gap(model, loss_fn, (x, y), (x, y)).train_loss,
        )

    plain = measure()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = measure()
    assert plain[0] > 0
    for a, b in zip(plain, under):
        assert a == pytest.approx(b, rel=1e-5)
