"""The noisy-network estimator (Goldfeld et al. 2019) against exact references.

Three kinds of ground truth (issue 12, item 4):

* closed forms: Gaussian inputs through a linear layer plus Gaussian noise,
  ``I(X;T) = 1/2 log2 det(I + A Sigma A^T / sigma^2)``; and population values
  of a two-class and a repeated-input Gaussian model, by quadrature;
* the mixture entropy of a *fixed* set of points, an exact number, computed
  by ``scipy.integrate.quad`` (1-D) and on a fine grid (2-D) independently of
  the Monte Carlo, and the Monte Carlo reproduced draw for draw by a slow
  numpy reference;
* the Monte-Carlo standard error against the spread over seeds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from scipy.stats import qmc

from ibmonitor import estimators
from ibmonitor.estimators import PINNED_MARGIN, input_ids, noisy
from ibmonitor.estimators.noisy import _generator
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError

LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these small products only contend with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        return noisy(*args, **kwargs)


def _gaussian_mi(cov, sigma):
    """I(X; AX + Z) = 1/2 log2 det(I + A Sigma A^T / sigma^2), in bits."""
    d = cov.shape[0]
    return 0.5 * np.linalg.slogdet(np.eye(d) + cov / sigma**2)[1] / LN2


def _log_mixture(v, centres, sigma):
    """log of (1/k) sum_j N(v; c_j, sigma^2) in nats, v of shape (..., d)."""
    centres = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    d = centres.shape[1]
    sq = ((v[..., None, :] - centres) ** 2).sum(-1)
    log_norm = 0.5 * d * math.log(2 * math.pi * sigma**2)
    return (
        special.logsumexp(-sq / (2 * sigma**2), axis=-1)
        - math.log(len(centres))
        - log_norm
    )


def _entropy_1d(centres, sigma, scale=None):
    """h of the 1-D mixture (1/k) sum N(c_j, scale^2) in bits, by quadrature."""
    scale = sigma if scale is None else scale
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 1)

    def integrand(v):
        lg = _log_mixture(np.array([[v]]), c, scale)[0]
        return -math.exp(lg) * lg

    lo, hi = c.min() - 12 * scale, c.max() + 12 * scale
    value, err = integrate.quad(
        integrand, lo, hi, points=sorted(set(c[:, 0])), limit=500, epsabs=1e-12
    )
    assert err < 1e-6
    return value / LN2


def _entropy_2d_grid(centres, sigma, step=0.03):
    """h of a 2-D mixture in bits: a Riemann sum on a fine grid (the integrand
    is smooth and decays like a Gaussian, so the sum converges spectrally: steps
    of 0.01 to 0.05 agree to 1e-13 bits for sigma = 0.6)."""
    c = np.asarray(centres, dtype=np.float64)
    lo, hi = c.min(axis=0) - 9 * sigma, c.max(axis=0) + 9 * sigma
    gx = np.arange(lo[0], hi[0], step)
    gy = np.arange(lo[1], hi[1], step)
    total = 0.0
    for row in np.array_split(gx, 20):  # bounded memory
        pts = np.stack(np.meshgrid(row, gy, indexing="ij"), axis=-1)
        lg = _log_mixture(pts, c, sigma)
        total += float(-(np.exp(lg) * lg).sum())
    return total * step * step / LN2


def _reference_draws(t, y, x, sigma, m, seed):
    """The estimator's Monte Carlo redone in numpy, draw for draw (slow).

    Uses the same noise as :func:`noisy` (its CPU generator for ``seed``,
    float64, ``n * m`` rows, row ``k`` drawn from sample ``k % n``)
    and plain ``logsumexp`` over every sample: returns (i_xt, i_ty, h_t) in
    bits.
    """
    t = np.asarray(t, dtype=np.float64)
    n, d = t.shape
    gen = _generator(seed)
    z = torch.randn((n * m, d), generator=gen, dtype=torch.float64).numpy()
    centre = np.arange(n * m) % n
    v = t[centre] + sigma * z
    sq = ((v[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    log_phi = -sq / (2 * sigma**2) - 0.5 * d * math.log(2 * math.pi * sigma**2)

    def log_group(groups):
        same = groups[None, :] == groups[centre][:, None]
        counts = np.bincount(np.unique(groups, return_inverse=True)[1])
        sizes = counts[np.unique(groups, return_inverse=True)[1]][centre]
        return special.logsumexp(np.where(same, log_phi, -np.inf), axis=1) - np.log(
            sizes
        )

    log_g = special.logsumexp(log_phi, axis=1) - math.log(n)
    ids = np.arange(n) if x is None else input_ids(x).numpy()
    log_x = log_group(ids)
    log_y = log_group(np.asarray(y))
    return (
        float(np.mean(log_x - log_g)) / LN2,
        float(np.mean(log_y - log_g)) / LN2,
        float(-np.mean(log_g)) / LN2,
    )


# ------------------------------------------------------------ simple exact cases
def test_noisy_two_far_apart_inputs_carry_one_bit_and_are_pinned():
    t = np.array([[0.0], [5.0]])
    with pytest.warns(EstimationWarning, match=r"within 0.1 bit of log2\(2\)"):
        r = noisy(t, [0, 1], noise_std=0.5)
    assert r.i_xt == pytest.approx(1.0, abs=1e-6)
    assert r.i_ty == pytest.approx(1.0, abs=1e-6)
    assert r.pinned is not None and r.as_dict()["pinned"] == 1.0


def test_noisy_constant_layer_carries_nothing():
    t = np.full((300, 3), 0.7)
    y = np.arange(300) % 2
    r = noisy(t, y, noise_std=0.1)
    assert r.pinned is None
    assert r.i_xt == pytest.approx(0.0, abs=1e-9)
    assert r.i_ty == pytest.approx(0.0, abs=1e-9)
    # T = constant + Z: h(T) = h(Z), up to the Monte Carlo of h(T)
    assert r.extras["h_t"] == pytest.approx(
        r.extras["h_noise"], abs=5 * r.extras["h_t_mc_se"]
    )


def test_noisy_h_t_given_x_is_the_noise_entropy_without_repeats():
    rng = np.random.default_rng(3)
    t = rng.standard_normal((500, 4))
    r = noisy(t, rng.integers(0, 2, 500), noise_std=0.3)
    d = 4
    h_noise = 0.5 * d * math.log2(2 * math.pi * math.e * 0.3**2)
    assert r.extras["h_noise"] == pytest.approx(h_noise, rel=1e-12)
    # h(T|X) is the Monte Carlo of h(Z) on the same draws: -log2 phi(z) has
    # standard deviation sqrt(d/2) nats per draw.
    se = math.sqrt(d / 2) / math.sqrt(r.extras["mc_draws"]) / LN2
    assert r.extras["h_t_given_x"] == pytest.approx(h_noise, abs=4 * se)
    assert r.i_xt == pytest.approx(r.extras["h_t"] - r.extras["h_t_given_x"])
    assert r.i_ty == pytest.approx(r.extras["h_t"] - r.extras["h_t_given_y"])


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize(
    ("a", "sigma"),
    [
        (np.array([[1.0, 0.5], [0.0, 1.5]]), 1.0),
        (np.array([[1.0, 0.5], [0.0, 1.5]]), 0.5),
        (np.random.default_rng(1).standard_normal((4, 3)), 1.0),
    ],
    ids=["2d-sigma1", "2d-sigma0.5", "3to4d"],
)
def test_noisy_matches_gaussian_linear_layer_closed_form(a, sigma):
    """X ~ N(0, I) through S = A X, T = S + Z: I(X;T) in closed form.

    The inputs are a scrambled Sobol sample mapped through the normal quantile
    function, so that the empirical measure of S is close to Gaussian and the
    plug-in error (Goldfeld et al.: O((log n)^(d/4) / sqrt n) for i.i.d.
    samples, 0.03-0.04 bits here at n = 2048, see the slow test) stays below
    0.01 bits: measured over 20 scrambles, the bias is -0.002 to -0.005 bits
    and the spread equals the Monte-Carlo standard error. So the estimate must
    lie within 4 standard errors plus 0.01 bits of the truth.
    """
    n = 2048
    u = qmc.Sobol(a.shape[1], scramble=True, seed=7).random(n)
    x = stats.norm.ppf(u)
    s = x @ a.T
    truth = _gaussian_mi(a @ a.T, sigma)
    r = noisy(s, np.zeros(n, dtype=int), noise_std=sigma, n_mc=8, seed=1)
    se = r.extras["i_xt_mc_se"]
    assert 0 < se < 0.02
    assert r.i_xt == pytest.approx(truth, abs=4 * se + 0.01)
    # h(T) itself converges to the Gaussian entropy of A A^T + sigma^2 I
    cov = a @ a.T + sigma**2 * np.eye(a.shape[0])
    h_true = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov)[1] / LN2
    assert r.extras["h_t"] == pytest.approx(
        h_true, abs=4 * r.extras["h_t_mc_se"] + 0.01
    )


@pytest.mark.slow
def test_noisy_plug_in_error_shrinks_at_the_papers_rate():
    """With i.i.d. Gaussian inputs the error shrinks like (log n)^(d/4)/sqrt(n).

    Root-mean-square error over 10 seeds at n = 250 and n = 4000 (d = 2, one
    draw per sample so that the Monte Carlo shrinks with n too): the rate
    predicts a ratio of sqrt(16) * (log 250 / log 4000)^(1/2) = 3.3; we ask
    for at least 2.
    """
    a = np.array([[1.0, 0.5], [0.0, 1.5]])
    truth = _gaussian_mi(a @ a.T, 1.0)
    rmse = {}
    for n in (250, 4000):
        errors = []
        for seed in range(10):
            s = np.random.default_rng(seed).standard_normal((n, 2)) @ a.T
            r = noisy(s, np.zeros(n, dtype=int), noise_std=1.0, n_mc=1, seed=seed)
            errors.append(r.i_xt - truth)
        rmse[n] = math.sqrt(np.mean(np.square(errors)))
    assert rmse[4000] < 0.04
    assert rmse[250] / rmse[4000] > 2.0, rmse


def test_noisy_i_ty_of_two_gaussian_classes_matches_quadrature():
    """S | Y=y ~ N(+-1, 1), T = S + Z (sigma 0.5): I(T;Y) = h(T) - h(T|Y).

    T | Y is N(+-1, 1.25) (closed form entropy) and h(T) is the entropy of
    their equal mixture (quadrature). S of each class is its 1000-point
    quantile grid (near-exact empirical measure); tolerance as above.
    """
    sigma, per = 0.5, 1000
    grid = stats.norm.ppf((np.arange(per) + 0.5) / per)
    s = np.concatenate([grid - 1.0, grid + 1.0])[:, None]
    y = np.repeat([0, 1], per)
    scale = math.sqrt(1.0 + sigma**2)
    h_t = _entropy_1d([-1.0, 1.0], sigma, scale=scale)
    h_t_given_y = 0.5 * math.log2(2 * math.pi * math.e * scale**2)
    truth = h_t - h_t_given_y
    r = noisy(s, y, noise_std=sigma, n_mc=4, seed=2)
    assert r.i_ty == pytest.approx(truth, abs=4 * r.extras["i_ty_mc_se"] + 0.01)
    assert r.extras["h_t_given_y"] == pytest.approx(h_t_given_y, abs=0.02)


def test_noisy_repeated_inputs_match_quadrature():
    """Noise in an earlier layer: S | X=x ~ N(mu_x, tau^2), T = S + Z.

    X is uniform on three points; 400 rows per input (a quantile grid of
    N(mu_x, tau^2)) share the input's id, as a recording pass with injected
    noise gives. T | X=x is N(mu_x, tau^2 + sigma^2), so I(X;T) = h(mixture)
    - 1/2 log2(2 pi e (tau^2 + sigma^2)), the mixture entropy by quadrature.
    """
    mus, tau, sigma, per = [-2.0, 0.0, 1.5], 0.5, 0.5, 400
    grid = stats.norm.ppf((np.arange(per) + 0.5) / per) * tau
    s = np.concatenate([mu + grid for mu in mus])[:, None]
    x = np.repeat(np.arange(3), per)
    y = (x > 0).astype(int)
    scale = math.sqrt(tau**2 + sigma**2)
    truth = _entropy_1d(mus, sigma, scale=scale) - 0.5 * math.log2(
        2 * math.pi * math.e * scale**2
    )
    r = noisy(s, y, x=x, noise_std=sigma, n_mc=8, seed=3)
    assert r.i_xt == pytest.approx(truth, abs=4 * r.extras["i_xt_mc_se"] + 0.01)
    assert r.i_xt <= math.log2(3) + 1e-12


@pytest.mark.parametrize(
    ("forward", "inverse"),
    [
        (np.arcsinh, np.sinh),
        (stats.norm.cdf, stats.norm.ppf),  # uniform margins
    ],
    ids=["asinh", "uniform-margins"],
)
def test_noisy_invariant_to_a_monotone_change_of_the_inputs(forward, inverse):
    """I(X;T) does not change when X = g(U) for a monotone g (Beyond Normal).

    The layer undoes g (S = A g^-1(X)) and the estimator groups inputs by
    identity only, so it gives the closed form of U's Gaussian layer; the ids
    come from the values of X, as the monitor passes them.
    """
    a = np.array([[1.0, 0.5], [0.0, 1.5]])
    n = 2048
    u = stats.norm.ppf(qmc.Sobol(2, scramble=True, seed=7).random(n))
    x = forward(u)
    s_direct = u @ a.T
    s_through = inverse(x) @ a.T
    y = np.zeros(n, dtype=int)
    direct = noisy(s_direct, y, noise_std=1.0, n_mc=8, seed=1)
    through = noisy(s_through, y, x=input_ids(x), noise_std=1.0, n_mc=8, seed=1)
    assert through.i_xt == pytest.approx(direct.i_xt, abs=1e-6)
    truth = _gaussian_mi(a @ a.T, 1.0)
    assert through.i_xt == pytest.approx(
        truth, abs=4 * through.extras["i_xt_mc_se"] + 0.01
    )


# ----------------------------------------------- fixed points: exact mixtures
def test_noisy_fixed_points_match_quadrature_in_1d():
    """For fixed samples every quantity is an exact integral: quad agrees."""
    s = np.array([-1.0, -0.8, 0.0, 0.3, 2.0, 2.2])
    y = np.array([0, 0, 1, 1, 1, 0])
    x = np.array([0, 0, 1, 2, 3, 3])  # rows 0-1 and 4-5 are repeats of one input
    sigma = 0.5
    h_t = _entropy_1d(s, sigma)
    h_y = sum(np.mean(y == c) * _entropy_1d(s[y == c], sigma) for c in (0, 1))
    h_x = sum(np.mean(x == g) * _entropy_1d(s[x == g], sigma) for g in range(4))
    r = noisy(s[:, None], y, x=x, noise_std=sigma, n_mc=4000, seed=0)
    ex = r.extras
    assert ex["h_t"] == pytest.approx(h_t, abs=4 * ex["h_t_mc_se"])
    assert r.i_xt == pytest.approx(h_t - h_x, abs=4 * ex["i_xt_mc_se"])
    assert r.i_ty == pytest.approx(h_t - h_y, abs=4 * ex["i_ty_mc_se"])
    assert ex["i_xt_mc_se"] < 0.01 and ex["i_ty_mc_se"] < 0.01
    # and the errors are small in absolute terms
    assert r.i_xt == pytest.approx(h_t - h_x, abs=0.03)


def test_noisy_fixed_points_match_a_fine_grid_in_2d():
    rng = np.random.default_rng(5)
    s = rng.uniform(-1, 1, (5, 2))
    y = np.array([0, 1, 0, 1, 1])
    sigma = 0.6
    h_t = _entropy_2d_grid(s, sigma)
    h_y = sum(np.mean(y == c) * _entropy_2d_grid(s[y == c], sigma) for c in (0, 1))
    h_noise = math.log2(2 * math.pi * math.e * sigma**2)
    r = noisy(s, y, noise_std=sigma, n_mc=4000, seed=0)
    ex = r.extras
    assert ex["h_t"] == pytest.approx(h_t, abs=4 * ex["h_t_mc_se"])
    assert r.i_xt == pytest.approx(h_t - h_noise, abs=4 * ex["i_xt_mc_se"])
    assert r.i_ty == pytest.approx(h_t - h_y, abs=4 * ex["i_ty_mc_se"])


@pytest.mark.parametrize(
    ("n_classes", "repeats"),
    [(2, 1), (3, 2), (100, 1), (5, 3)],
    ids=["2-classes", "repeats-one-hot", "100-classes", "100-inputs-gathered"],
)
def test_noisy_reproduces_a_slow_reference_draw_for_draw(n_classes, repeats):
    """The chunked, shifted, float64 computation equals a plain numpy one.

    Covers both ways of summing a group (one matrix product with the one-hot
    groups when there are at most 64, a gather of each group's members
    above), with and without repeated inputs, and several chunk sizes.
    """
    rng = np.random.default_rng(n_classes)
    n = 300
    t = rng.standard_normal((n, 3))
    y = rng.integers(0, n_classes, n)
    x = None if repeats == 1 else np.arange(n) // repeats
    if repeats > 1:  # repeats of one input are near each other
        t = t[np.arange(n) // repeats * repeats] + 0.3 * rng.standard_normal((n, 3))
    want = _reference_draws(t, y, x, 0.4, 3, 11)
    for chunk in (None, 97):
        r = _quiet(t, y, x=x, noise_std=0.4, n_mc=3, seed=11, chunk_size=chunk)
        got = (r.i_xt, r.i_ty, r.extras["h_t"])
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), chunk


# ------------------------------------------------------------ Monte-Carlo error
@pytest.mark.parametrize("n_mc", [1, 2])
def test_noisy_standard_error_matches_the_spread_over_seeds(n_mc):
    """The reported standard error is the spread of the estimate over seeds.

    40 seeds: the sample standard deviation is within about 11 % of the true
    one, so the ratio to the mean standard error lies in [0.65, 1.45] (over 3
    standard deviations either way); measured 0.85-1.26. With n_mc = 1 the
    error comes from the spread of all draws, an overestimate that is close
    here (small between-sample spread).
    """
    rng = np.random.default_rng(0)
    t = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40)
    x = np.repeat(np.arange(20), 2)
    runs = [noisy(t, y, x=x, noise_std=0.5, n_mc=n_mc, seed=seed) for seed in range(40)]
    for key, value in (
        ("i_xt", lambda r: r.i_xt),
        ("i_ty", lambda r: r.i_ty),
        ("h_t", lambda r: r.extras["h_t"]),
    ):
        spread = np.std([value(r) for r in runs], ddof=1)
        se = np.mean([r.extras[f"{key}_mc_se"] for r in runs])
        assert 0.65 < spread / se < 1.45, (key, spread, se)


# ------------------------------------------------------------- numerics and API
def test_noisy_float32_equals_float64_on_tanh_activations():
    gen = torch.Generator().manual_seed(0)
    t = torch.tanh(0.5 * torch.randn(2000, 10, generator=gen))
    y = (t[:, 0] > 0).long()
    r32 = noisy(t, y, noise_std=0.3, seed=4)
    r64 = noisy(t.double(), y, noise_std=0.3, seed=4)
    assert r32.pinned is None
    assert r32.i_xt == pytest.approx(r64.i_xt, abs=1e-4)
    assert r32.i_ty == pytest.approx(r64.i_ty, abs=1e-4)


def test_noisy_float32_falls_back_to_float64_for_a_draw_on_another_sample():
    """A draw that lands on another sample, far from its own, would underflow
    its own group's terms in float32: the chunk is redone in float64."""
    d, n, m, seed, sigma = 200, 8, 2, 0, 0.05
    z = torch.randn((n * m, d), generator=_generator(seed), dtype=torch.float64)
    t = torch.zeros(n, d, dtype=torch.float64)
    t[:4] = torch.randn(4, d, generator=torch.Generator().manual_seed(9))
    t[4] = t[0] + sigma * z[0]  # the first draw (of sample 0) hits sample 4
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        r32 = noisy(t.float(), y, noise_std=sigma, n_mc=m, seed=seed)
        r64 = noisy(t, y, noise_std=sigma, n_mc=m, seed=seed)
    assert math.isfinite(r32.i_ty) and math.isfinite(r32.i_xt)
    assert r32.i_ty == pytest.approx(r64.i_ty, abs=1e-3)
    assert r32.i_xt == pytest.approx(r64.i_xt, abs=1e-3)


def test_noisy_is_translation_invariant_and_reproducible():
    rng = np.random.default_rng(1)
    t = rng.standard_normal((400, 3))
    y = rng.integers(0, 2, 400)
    a = noisy(t, y, noise_std=0.3, seed=5)
    b = noisy(t + 100.0, y, noise_std=0.3, seed=5)
    c = noisy(t, y, noise_std=0.3, seed=5)
    assert (a.i_xt, a.i_ty) == (c.i_xt, c.i_ty)
    assert b.i_xt == pytest.approx(a.i_xt, abs=1e-8)
    assert b.i_ty == pytest.approx(a.i_ty, abs=1e-8)
    other = noisy(t, y, noise_std=0.3, seed=6)
    assert other.i_xt != a.i_xt  # another seed, other draws


def test_noisy_leaves_the_global_random_state_alone():
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002
    noisy(np.random.default_rng(0).standard_normal((100, 2)), np.zeros(100, int))
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002


def test_noisy_information_falls_as_the_noise_grows():
    """More noise, less information (with the same seed, the same draws)."""
    rng = np.random.default_rng(2)
    t = np.tanh(rng.standard_normal((1000, 5)))
    y = (t[:, 0] > 0).astype(int)
    values = [_quiet(t, y, noise_std=s, seed=0) for s in (0.05, 0.1, 0.2, 0.4, 0.8)]
    i_xt = [r.i_xt for r in values]
    i_ty = [r.i_ty for r in values]
    assert all(np.diff(i_xt) < 0), i_xt
    assert all(np.diff(i_ty) < 0), i_ty
    assert i_xt[0] <= math.log2(1000) + 1e-9


def test_noisy_default_draws_and_params():
    from ibmonitor.estimators.noisy import default_draws_per_sample

    assert default_draws_per_sample(4096) == 2
    assert default_draws_per_sample(100) == 82
    r = noisy(np.random.default_rng(0).standard_normal((100, 2)), np.zeros(100, int))
    assert r.extras["mc_draws"] == 8200
    assert r.params == {"noise_std": 0.1, "n_mc": None, "seed": 0, "chunk_size": None}
    assert r.estimator == "noisy"
    row = r.as_dict()
    for key in ("i_xt_mc_se", "i_ty_mc_se", "h_t", "h_t_given_x", "h_noise"):
        assert math.isfinite(row[key])


def test_noisy_is_registered_and_groups_inputs_by_id():
    assert "noisy" in estimators.available()
    est = estimators.get("noisy", noise_std=0.2, n_mc=2)
    assert est.inputs == "ids"
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((50, 4)), 3, axis=0)  # each input 3 times
    t = np.tanh(x[:, :2] + 0.3 * rng.standard_normal((150, 2)))
    y = (x[:, 0] > 0).astype(int)
    by_values = est(t, y, x=x)
    by_ids = est(t, y, x=input_ids(x))
    assert by_values.i_xt == by_ids.i_xt
    # grouped: I(X;T) <= H(X) = log2 50; and less than with every row distinct
    alone = est(t, y)
    assert by_ids.i_xt <= math.log2(50) + 1e-9
    assert by_ids.i_xt < alone.i_xt


def test_noisy_wide_random_layer_is_pinned_with_a_warning():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((256, 256)).astype(np.float32)
    y = rng.integers(0, 4, 256)
    with pytest.warns(EstimationWarning, match=r"within 0.1 bit of log2\(256\)"):
        r = noisy(t, y, noise_std=0.1)
    assert r.pinned is not None and "own" in r.pinned
    assert r.i_xt == pytest.approx(8.0, abs=PINNED_MARGIN)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"noise_std": 0.0}, "'noise_std' parameter of noisy"),
        ({"noise_std": -1.0}, "'noise_std' parameter of noisy"),
        ({"noise_std": math.inf}, "'noise_std' parameter of noisy"),
        ({"noise_std": math.nan}, "'noise_std' parameter of noisy"),
        ({"noise_std": "0.1"}, "'noise_std' parameter of noisy"),
        ({"noise_std": True}, "'noise_std' parameter of noisy"),
        ({"n_mc": 0}, "'n_mc' parameter of noisy"),
        ({"n_mc": 1.5}, "'n_mc' parameter of noisy"),
        ({"seed": -1}, "'seed' parameter of noisy"),
        ({"chunk_size": 0}, "'chunk_size' parameter of noisy"),
    ],
)
def test_noisy_rejects_bad_parameters(params, phrase):
    t = np.zeros((10, 2))
    y = np.zeros(10, dtype=int)
    with pytest.raises(InvalidParameterError, match=phrase):
        noisy(t, y, **params)
    with pytest.raises(InvalidParameterError, match=phrase):
        estimators.get("noisy", **params)


def test_noisy_rejects_bad_data():
    t = np.zeros((10, 2))
    y = np.zeros(10, dtype=int)
    with pytest.raises(InvalidParameterError, match="inconsistent numbers of samples"):
        noisy(t, y, x=np.arange(9))
    with pytest.raises(InvalidParameterError, match="inconsistent numbers of samples"):
        noisy(t, y[:9])
    with pytest.raises(InvalidParameterError, match="contain NaN"):
        noisy(np.full((10, 2), np.nan), y)
    with pytest.raises(InvalidParameterError, match="at least 2"):
        noisy(t[:1], y[:1])
    with pytest.raises(InvalidParameterError, match="are complex"):
        noisy(t.astype(np.complex128), y)


def test_noisy_tiny_noise_on_huge_activations_raises_clearly():
    t = np.array([[0.0], [1e200]])
    with pytest.raises(InvalidParameterError, match="larger noise_std"):
        noisy(t, [0, 1], noise_std=1e-200)
