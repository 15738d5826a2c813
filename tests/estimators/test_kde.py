"""Tests of the KDE (Gaussian-mixture) bounds against a slow reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ibmonitor import estimators
from ibmonitor.estimators import kde
from ibmonitor.estimators.kde import kde_bounds
from ibmonitor.exceptions import InvalidParameterError

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "reference-activations"


def _slow_mixture_term(rows, var, scale):
    """-mean_i log2((1/n) sum_j exp(-||t_i - t_j||^2 / (scale * var))), loops."""
    n = len(rows)
    total = 0.0
    for i in range(n):
        exps = []
        for j in range(n):
            d2 = sum((a - b) ** 2 for a, b in zip(rows[i], rows[j]))
            exps.append(-d2 / (scale * var))
        top = max(exps)
        lse = top + math.log(sum(math.exp(e - top) for e in exps))
        total += lse - math.log(n)
    return -total / n / math.log(2)


def _slow_kde(t, y, var, bound):
    """Kolchinsky & Tracey bounds by double loops: (i_xt, i_ty, h_t_given_y)."""
    scale = 2.0 if bound == "upper" else 8.0
    rows = [list(map(float, r)) for r in t]
    labels = [int(v) for v in y]
    n = len(rows)
    i_xt = _slow_mixture_term(rows, var, scale)
    h_given = 0.0
    for c in sorted(set(labels)):
        members = [r for r, lab in zip(rows, labels) if lab == c]
        h_given += len(members) / n * _slow_mixture_term(members, var, scale)
    return i_xt, i_xt - h_given, h_given


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=45)
    t = rng.standard_normal((45, 3)) * 0.3 + y[:, None] * 0.4
    return t, y


@pytest.mark.parametrize("bound", ["upper", "lower"])
@pytest.mark.parametrize("var", [0.01, 0.1, 2.0])
def test_kde_matches_double_loop(blobs, bound, var):
    t, y = blobs
    want = _slow_kde(t, y, var, bound)
    r = kde(t, y, noise_variance=var, bound=bound)
    got = (r.i_xt, r.i_ty, r.extras["h_t_given_y"])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert r.estimator == "kde"
    assert r.params["bound"] == bound
    assert r.params["noise_variance"] == var


def test_kde_many_classes_per_block_matches_double_loop():
    # 12 classes in one block exercise the masked class sums.
    rng = np.random.default_rng(1)
    t = rng.standard_normal((60, 2))
    y = rng.integers(0, 12, size=60)
    for bound in ("upper", "lower"):
        want = _slow_kde(t, y, 0.2, bound)
        r = kde(t, y, noise_variance=0.2, bound=bound, chunk_size=64)
        np.testing.assert_allclose((r.i_xt, r.i_ty), want[:2], rtol=1e-10)


def test_kde_bounds_one_pass_equals_separate_calls(blobs):
    t, y = blobs
    upper, lower = kde_bounds(t, y, noise_variance=0.05)
    for est, bound in ((upper, "upper"), (lower, "lower")):
        single = kde(t, y, noise_variance=0.05, bound=bound)
        assert est.i_xt == pytest.approx(single.i_xt, rel=1e-12)
        assert est.i_ty == pytest.approx(single.i_ty, rel=1e-12, abs=1e-13)
        assert est.params["bound"] == bound
    both = kde(t, y, noise_variance=0.05, bound="both")
    assert both.i_xt == pytest.approx(upper.i_xt, rel=1e-12)
    assert both.i_ty == pytest.approx(upper.i_ty, rel=1e-12)
    assert both.extras["i_xt_lower"] == pytest.approx(lower.i_xt, rel=1e-12)
    assert both.extras["i_ty_lower"] == pytest.approx(lower.i_ty, rel=1e-12)
    assert set(both.as_dict()) >= {"i_xt", "i_ty", "i_xt_lower", "i_ty_lower"}
    assert both.extras["h_t"] == both.i_xt
    assert both.extras["h_t_lower"] == lower.i_xt
    assert both.i_ty == pytest.approx(both.i_xt - both.extras["h_t_given_y"])


def test_kde_lower_below_upper_and_below_log_n():
    rng = np.random.default_rng(2)
    t = rng.standard_normal((300, 4))
    y = (t[:, 0] > 0).astype(int)
    upper, lower = kde_bounds(t, y, noise_variance=0.1)
    assert 0 < lower.i_xt <= upper.i_xt <= math.log2(300)
    # Tiny noise: every sample its own component, I(X;T) -> log2 n, and
    # I(T;Y) -> H(Y) since the classes are then told apart perfectly.
    tiny = kde(t, y, noise_variance=1e-8)
    h_y = -sum(p * math.log2(p) for p in np.bincount(y) / 300)
    assert tiny.i_xt == pytest.approx(math.log2(300), abs=1e-9)
    assert tiny.i_ty == pytest.approx(h_y, abs=1e-9)
    # Huge noise: everything blurs into one Gaussian.
    assert kde(t, y, noise_variance=1e6).i_xt == pytest.approx(0.0, abs=1e-5)


def test_kde_float32_agrees_with_float64():
    rng = np.random.default_rng(3)
    t = np.tanh(rng.standard_normal((500, 6)) * 2)
    y = rng.integers(0, 2, size=500)
    for bound in ("upper", "lower"):
        r64 = kde(t, y, noise_variance=1e-2, bound=bound)
        r32 = kde(t.astype(np.float32), y, noise_variance=1e-2, bound=bound)
        # float32 distances: ~1e-7 relative error per term, averaged out.
        assert r32.i_xt == pytest.approx(r64.i_xt, rel=1e-5)
        assert r32.i_ty == pytest.approx(r64.i_ty, rel=1e-4, abs=1e-5)
    t16 = torch.as_tensor(t, dtype=torch.float16)
    r16 = kde(t16, y, noise_variance=1e-2)
    r_ref = kde(t16.to(torch.float64), y, noise_variance=1e-2)
    assert r16.i_xt == pytest.approx(r_ref.i_xt, rel=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 1000])
def test_kde_chunked_equals_unchunked(blobs, chunk_size):
    t, y = blobs
    full = kde(t, y, noise_variance=0.05, bound="both", chunk_size=len(t))
    part = kde(t, y, noise_variance=0.05, bound="both", chunk_size=chunk_size)
    for key, value in full.as_dict().items():
        if key != "estimator":
            assert part.as_dict()[key] == pytest.approx(value, rel=1e-12, abs=1e-14)


def test_kde_permutation_invariant(blobs):
    t, y = blobs
    perm = np.random.default_rng(4).permutation(len(t))
    a = kde(t, y, noise_variance=0.05, bound="both").as_dict()
    b = kde(t[perm], y[perm], noise_variance=0.05, bound="both").as_dict()
    for key in ("i_xt", "i_ty", "i_xt_lower", "i_ty_lower", "h_t_given_y"):
        assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-14)


def test_kde_label_values_do_not_matter(blobs):
    t, y = blobs
    a = kde(t, y, noise_variance=0.05)
    b = kde(t, np.array([10, -4, 7])[y], noise_variance=0.05)
    assert b.i_ty == pytest.approx(a.i_ty, rel=1e-12)


def test_kde_constant_activations_give_zero():
    t = np.full((50, 4), 0.7)
    y = np.arange(50) % 2
    for bound in ("upper", "lower", "both"):
        r = kde(t, y, bound=bound)
        assert r.i_xt == 0.0
        assert r.i_ty == 0.0
        assert all(v == 0.0 for v in r.extras.values())


def test_kde_torch_input_label_dtypes_and_ignored_x(blobs):
    t, y = blobs
    a = kde(t, y, noise_variance=0.05)
    b = kde(
        torch.as_tensor(t),
        torch.as_tensor(y, dtype=torch.float32),
        x=t[:, 0],
        noise_variance=0.05,
    )
    assert b.i_xt == a.i_xt
    assert b.i_ty == a.i_ty
    one_unit = kde(t[:, 0], y, noise_variance=0.05)  # 1-D t is one unit
    assert one_unit.i_xt == kde(t[:, :1], y, noise_variance=0.05).i_xt


def test_kde_registry():
    est = estimators.get("kde", noise_variance=0.1, bound="lower")
    assert est.inputs == "none"
    assert "kde" in estimators.available()
    t = np.random.default_rng(5).standard_normal((40, 2))
    y = np.arange(40) % 2
    assert est(t, y).i_xt == kde(t, y, noise_variance=0.1, bound="lower").i_xt


@pytest.mark.parametrize("var", [0, -1e-3, 0.0, float("nan")])
def test_kde_rejects_bad_noise_variance(var):
    with pytest.raises(
        InvalidParameterError, match="'noise_variance' parameter of kde"
    ):
        kde(np.zeros((5, 2)), np.zeros(5), noise_variance=var)
    with pytest.raises(ValueError, match="noise_variance"):
        kde_bounds(np.zeros((5, 2)), np.zeros(5), noise_variance=var)


def test_kde_rejects_bad_inputs():
    t = np.random.default_rng(6).standard_normal((10, 2))
    y = np.arange(10) % 2
    with pytest.raises(InvalidParameterError, match="'bound' parameter"):
        kde(t, y, bound="middle")
    with pytest.raises(InvalidParameterError, match="'chunk_size' parameter"):
        kde(t, y, chunk_size=0)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        kde(t, y[:9])
    bad = t.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN \(1 of 20"):
        kde(bad, y)
    with pytest.raises(ValueError, match="at least 2"):
        kde(t[:1], y[:1])
    with pytest.raises(ValueError, match="integer class labels"):
        kde(t, y + 0.5)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")
def test_kde_on_reference_activations():
    ref = np.load(DATA / "act_epoch8000.npz")
    y = ref["y"]
    h_y = -sum(p * math.log2(p) for p in np.bincount(y) / len(y))
    upper, lower = kde_bounds(ref["T_6"], y, noise_variance=1e-3)
    assert 0 < lower.i_xt <= upper.i_xt <= 12
    for r in (upper, lower):
        assert 0 <= r.i_ty <= h_y + 1e-9
