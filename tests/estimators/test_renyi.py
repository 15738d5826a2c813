"""Tests of the matrix-based Renyi estimator: hand-worked spectra and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _inputs import tanh_layer

from ibmonitor import estimators
from ibmonitor.estimators.renyi import kernel_width
from ibmonitor.exceptions import InvalidParameterError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small eigenproblems run fastest on one thread (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def renyi_of(p, alpha):
    """Renyi alpha-entropy (bits) of a probability vector, worked out directly."""
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    if alpha == 1.0:
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p**alpha).sum()) / (1.0 - alpha))


def slow_renyi(t, y, x, alpha, sigma, sigma_x):
    """Gram matrices by explicit loops, eigenvalues with numpy: the definitions."""
    n = len(t)

    def gram(z, s):
        k = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                k[i, j] = math.exp(-np.sum((z[i] - z[j]) ** 2) / (2 * s * s))
        return k

    def s_of(a):
        lam = np.clip(np.linalg.eigvalsh(a / np.trace(a)), 0, None)
        return renyi_of(lam / lam.sum(), alpha)

    k_t, k_x = gram(t, sigma), gram(x, sigma_x)
    k_y = (y[:, None] == y[None, :]).astype(float)
    s_t, s_x, s_y = s_of(k_t), s_of(k_x), s_of(k_y)
    return {
        "i_ty": s_t + s_y - s_of(k_t * k_y),
        "i_xt": s_x + s_t - s_of(k_x * k_t),
        "s_t": s_t,
        "s_y": s_y,
    }


# -------------------------------------------------------------- hand-worked values


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2.0])
def test_renyi_identical_points_have_zero_entropy(alpha):
    t = np.full((30, 4), 0.3)
    y = np.arange(30) % 3
    r = estimators.renyi(t, y, alpha=alpha)
    assert r.extras["s_t"] == pytest.approx(0.0, abs=1e-9)
    assert r.i_xt == pytest.approx(0.0, abs=1e-9)
    assert r.i_ty == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2.0])
def test_renyi_distant_points_with_a_narrow_kernel_give_log2_n(alpha):
    n = 40
    t = np.arange(n, dtype=float)[:, None] * 10.0
    y = np.arange(n) % 2
    r = estimators.renyi(t, y, alpha=alpha, sigma=0.1)
    assert r.extras["s_t"] == pytest.approx(math.log2(n), abs=1e-9)
    assert r.i_xt == pytest.approx(math.log2(n), abs=1e-9)  # x None: I(X;T) = S(T)
    # T identifies every sample, hence Y: I(T;Y) = S(Y) = H(Y) = 1 bit
    assert r.i_ty == pytest.approx(renyi_of([0.5, 0.5], alpha), abs=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 3.0])
def test_renyi_tight_clusters_give_the_entropy_of_their_sizes(alpha):
    sizes = [5, 10, 25]
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    t = np.concatenate(
        [c + 1e-9 * rng.standard_normal((k, 2)) for c, k in zip(centres, sizes)]
    )
    y = np.zeros(40, dtype=int)
    r = estimators.renyi(t, y, alpha=alpha, sigma=1.0)
    p = np.array(sizes) / 40
    assert r.extras["s_t"] == pytest.approx(renyi_of(p, alpha), abs=1e-6)
    assert r.extras["s_y"] == pytest.approx(0.0, abs=1e-12)
    assert r.i_ty == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_renyi_one_hot_labels_as_t_give_s_y(alpha):
    rng = np.random.default_rng(1)
    y = rng.choice(3, size=90, p=[0.2, 0.3, 0.5])
    t = np.eye(3)[y]
    r = estimators.renyi(t, y, alpha=alpha, sigma=0.05)  # exp(-1/0.0025) = 0
    p = np.bincount(y) / len(y)
    assert r.extras["s_y"] == pytest.approx(renyi_of(p, alpha), abs=1e-12)
    assert r.i_ty == pytest.approx(renyi_of(p, alpha), abs=1e-9)


def test_renyi_alpha_to_one_approaches_the_shannon_entropy_of_the_spectrum():
    t, y = tanh_layer(60, 3, seed=2)
    sigma = 0.5
    d2 = ((t[:, None, :].astype(float) - t[None, :, :]) ** 2).sum(-1)
    lam = np.clip(np.linalg.eigvalsh(np.exp(-d2 / (2 * sigma**2)) / 60), 0, None)
    shannon = renyi_of(lam / lam.sum(), 1.0)
    gaps = []
    for alpha in (1.1, 1.01, 1.001, 1.0001):
        s = estimators.renyi(t, y, alpha=alpha, sigma=sigma).extras["s_t"]
        gaps.append(abs(s - shannon))
    assert estimators.renyi(t, y, alpha=1.0, sigma=sigma).extras[
        "s_t"
    ] == pytest.approx(shannon, abs=1e-9)
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-3


def test_renyi_matches_a_slow_reference_with_x():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 5))
    t = np.tanh(x @ rng.standard_normal((5, 3)))
    y = rng.integers(0, 3, 40)
    ref = slow_renyi(t, y, x, 1.01, 0.7, 1.3)
    r = estimators.renyi(t, y, x=x, alpha=1.01, sigma=0.7, sigma_x=1.3)
    assert r.i_ty == pytest.approx(ref["i_ty"], abs=1e-9)
    assert r.i_xt == pytest.approx(ref["i_xt"], abs=1e-9)
    assert r.extras["s_t"] == pytest.approx(ref["s_t"], abs=1e-9)
    assert r.extras["s_y"] == pytest.approx(ref["s_y"], abs=1e-9)


def test_renyi_without_x_equals_distinct_far_apart_inputs():
    t, y = tanh_layer(50, 4, seed=4)
    x = np.eye(50) * 100.0  # every input distinct and far from the others
    a = estimators.renyi(t, y)
    b = estimators.renyi(t, y, x=x, sigma_x=1.0)
    assert b.extras["s_x"] == pytest.approx(math.log2(50), abs=1e-9)
    assert a.i_xt == pytest.approx(b.i_xt, abs=1e-9)


# --------------------------------------------------------------- invariances, bounds


def test_renyi_is_invariant_to_permutation_translation_and_rotation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((80, 6))
    t = np.tanh(x @ rng.standard_normal((6, 4)))
    y = rng.integers(0, 2, 80)
    base = estimators.renyi(t, y, x=x)
    perm = rng.permutation(80)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    variants = [
        estimators.renyi(t[perm], y[perm], x=x[perm]),
        estimators.renyi(t + 3.0, y, x=x - 7.0),
        estimators.renyi(t @ q, y, x=x),
        estimators.renyi(t, y + 10, x=x),  # label values do not matter
    ]
    for r in variants:
        assert r.i_xt == pytest.approx(base.i_xt, abs=1e-9)
        assert r.i_ty == pytest.approx(base.i_ty, abs=1e-9)


def test_renyi_width_rule_is_scale_invariant():
    t, y = tanh_layer(100, 5, seed=6)
    a = estimators.renyi(t, y)
    b = estimators.renyi(t * 1000.0, y)
    assert b.extras["sigma"] == pytest.approx(1000.0 * a.extras["sigma"])
    assert (b.i_xt, b.i_ty) == pytest.approx((a.i_xt, a.i_ty), abs=1e-7)


def test_renyi_estimates_respect_their_bounds():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 8))
    t = np.tanh(x @ rng.standard_normal((8, 5)))
    y = rng.integers(0, 4, 120)
    r = estimators.renyi(t, y, x=x)
    e = r.extras
    assert 0.0 <= r.i_ty <= min(e["s_t"], e["s_y"]) + 1e-9
    assert 0.0 <= r.i_xt <= min(e["s_t"], e["s_x"]) + 1e-9
    assert e["s_y"] <= renyi_of(np.bincount(y) / 120, 1.0) + 1e-12  # alpha > 1
    assert e["s_t"] <= math.log2(120) + 1e-9


def test_kernel_width_follows_the_documented_rule():
    z = np.random.default_rng(8).standard_normal((200, 3)) * [1.0, 2.0, 3.0]
    spread = math.sqrt(z.var(axis=0).sum())
    assert kernel_width(z, gamma=0.5) == pytest.approx(0.5 * spread * 200 ** (-1 / 7))
    assert kernel_width(np.ones((10, 2))) == 1.0


def test_renyi_subsamples_large_sets_reproducibly():
    t, y = tanh_layer(700, 3, seed=9)
    a = estimators.renyi(t, y, n_max=200)
    b = estimators.renyi(t, y, n_max=200)
    c = estimators.renyi(t, y, n_max=200, random_state=1)
    assert a.extras["n_used"] == 200
    assert (a.i_xt, a.i_ty) == (b.i_xt, b.i_ty)
    assert a.i_xt != c.i_xt
    assert estimators.renyi(t[:150], y[:150], n_max=200).extras["n_used"] == 150


def test_renyi_float32_float64_and_tensors_agree():
    t, y = tanh_layer(100, 4, seed=10)
    a = estimators.renyi(t, y, x=t)
    b = estimators.renyi(
        torch.from_numpy(t.astype(np.float64)), torch.from_numpy(y), x=t
    )
    assert (a.i_xt, a.i_ty) == pytest.approx((b.i_xt, b.i_ty), abs=1e-9)


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "'alpha' parameter of renyi must be a float in the range"),
        ({"alpha": -1}, "'alpha' parameter of renyi"),
        ({"sigma": 0.0}, "'sigma' parameter of renyi"),
        ({"sigma_x": -2.0}, "'sigma_x' parameter of renyi"),
        ({"gamma": 0}, "'gamma' parameter of renyi"),
        ({"n_max": 1}, r"'n_max' parameter of renyi must be an int in the range \[2"),
        ({"random_state": 0.5}, "'random_state' parameter of renyi"),
    ],
)
def test_renyi_rejects_bad_parameters(kwargs, match):
    t, y = tanh_layer(20, 2)
    with pytest.raises(InvalidParameterError, match=match):
        estimators.renyi(t, y, **kwargs)


def test_renyi_rejects_bad_data():
    t, y = tanh_layer(20, 2)
    bad = t.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimators.renyi(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        estimators.renyi(t, y, x=t[:10])
    with pytest.raises(ValueError, match="integer class labels"):
        estimators.renyi(t, y * 0.3)


def test_renyi_is_registered():
    est = estimators.get("renyi", alpha=2.0)
    assert est.inputs == "values"
    t, y = tanh_layer(50, 3)
    assert est(t, y).i_ty == estimators.renyi(t, y, alpha=2.0).i_ty


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renyi_on_cuda_matches_cpu():
    t, y = tanh_layer(300, 6, seed=11)
    cpu = estimators.renyi(t, y, x=t[:, :3])
    gpu = estimators.renyi(
        torch.from_numpy(t).cuda(),
        torch.from_numpy(y).cuda(),
        x=torch.from_numpy(t[:, :3]).cuda(),
    )
    assert (gpu.i_xt, gpu.i_ty) == pytest.approx((cpu.i_xt, cpu.i_ty), abs=1e-8)
