"""Tests of the kNN estimators (Ross for I(T;Y), KSG for I(X;T))."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

from ibmonitor import estimators
from ibmonitor.estimators import knn
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError

LN2 = math.log(2)
#: The module (``ibmonitor.estimators.knn`` is also the name of the function).
KNN_MODULE = importlib.import_module("ibmonitor.estimators.knn")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "reference-activations"


def _knn(*args, **kwargs):
    """knn without the NaN warning of a missing x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        return knn(*args, **kwargs)


def _correlated(n, rho, dims=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dims))
    t = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, dims))
    return x, t


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_knn_i_xt_correlated_gaussians_closed_form(rho):
    x, t = _correlated(2000, rho, seed=1)
    y = np.zeros(2000, dtype=int)
    exact = -0.5 * math.log2(1 - rho**2)
    r = knn(t, y, x=x, k=3)
    # KSG at n=2000, k=3: standard deviation ~0.01 bits, small bias; theory
    # and estimate won't be very close, hence the loose tolerance.
    assert r.i_xt == pytest.approx(exact, abs=0.05)


def test_knn_i_xt_multivariate_gaussians():
    # Two independent correlated pairs: I adds up. Max-norm in 4-D joint space.
    x, t = _correlated(2000, 0.8, dims=2, seed=2)
    exact = 2 * -0.5 * math.log2(1 - 0.8**2)
    r = knn(t, np.zeros(2000, dtype=int), x=x, k=3)
    assert r.i_xt == pytest.approx(exact, abs=0.1)


def test_knn_i_xt_matches_sklearn_regression_on_1d():
    x, t = _correlated(600, 0.7, seed=3)
    y = np.zeros(600, dtype=int)
    # mutual_info_regression(X=t, y=x) draws t's noise first, then x's: the
    # order knn uses, so the same random_state gives the same noise.
    want = mutual_info_regression(t, x[:, 0], n_neighbors=4, random_state=7)[0] / LN2
    for algorithm in ("brute", "kd_tree"):
        r = knn(t, y, x=x, k=4, random_state=7, algorithm=algorithm)
        assert r.i_xt == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_i_ty_matches_mutual_info_classif_on_1d(algorithm, k):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=500)
    t = rng.standard_normal(500) + 0.7 * y
    # Same k, same random_state: identical standardisation and tie-breaking
    # noise, so the estimates agree to rounding (sklearn works in nats).
    want = mutual_info_classif(t[:, None], y, n_neighbors=k, random_state=3)[0]
    r = _knn(t, y, k=k, random_state=3, algorithm=algorithm)
    assert r.i_ty == pytest.approx(want / LN2, rel=1e-10)
    # Without the noise the estimate barely moves (no ties in this data).
    r0 = _knn(t, y, k=k, jitter=0.0, algorithm=algorithm)
    assert r0.i_ty == pytest.approx(want / LN2, rel=1e-6)


def _mixture_mi(separation, p1=0.5):
    """I(T;Y) in bits of T|Y=y ~ N(+-separation/2, 1), by numerical integration."""
    priors = (1 - p1, p1)
    means = (-separation / 2, separation / 2)

    def integrand(v):
        dens = [p * stats.norm.pdf(v, m) for p, m in zip(priors, means)]
        total = sum(dens)
        return sum(d * math.log2(d / (p * total)) for d, p in zip(dens, priors) if d)

    lo, hi = -separation / 2 - 12, separation / 2 + 12
    value, _ = integrate.quad(integrand, lo, hi, limit=200)
    return value


@pytest.mark.parametrize(("separation", "p1", "dims"), [(2.0, 0.5, 1), (1.0, 0.3, 2)])
def test_knn_i_ty_two_class_gaussian_mixture(separation, p1, dims):
    rng = np.random.default_rng(5)
    n = 4000
    y = (rng.random(n) < p1).astype(int)
    direction = np.ones(dims) / math.sqrt(dims)
    t = rng.standard_normal((n, dims)) + np.outer(y - 0.5, direction) * separation
    exact = _mixture_mi(separation, p1)
    r = _knn(t, y, k=3)
    # Estimator spread at n=4000 is ~0.01 bits; allow 0.03.
    assert r.i_ty == pytest.approx(exact, abs=0.03)


def test_knn_without_x_returns_nan_with_warning():
    rng = np.random.default_rng(6)
    t = rng.standard_normal((100, 2))
    y = (t[:, 0] > 0).astype(int)
    with pytest.warns(EstimationWarning, match="ill-posed"):
        r = knn(t, y)
    assert math.isnan(r.i_xt)
    assert r.i_ty > 0
    assert estimators.get("knn").inputs == "values"


def test_knn_brute_equals_tree_and_chunking():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, size=(300, 5)).astype(np.float32)  # discrete inputs
    t = np.tanh(x @ rng.standard_normal((5, 3)))
    y = rng.integers(0, 4, size=300)
    ref = knn(t, y, x=x, algorithm="kd_tree")
    for chunk_size in (None, 1, 37):
        r = knn(t, y, x=x, algorithm="brute", chunk_size=chunk_size)
        assert r.i_xt == pytest.approx(ref.i_xt, rel=1e-12)
        assert r.i_ty == pytest.approx(ref.i_ty, rel=1e-12)


def test_knn_auto_mixes_search_methods_consistently():
    # x of 25 dims sends KSG to brute force (Ross rides along) while a 2-unit t
    # alone would use the tree: same numbers as all-tree.
    rng = np.random.default_rng(16)
    x = rng.standard_normal((250, 25))
    t = np.tanh(x[:, :2] + 0.3 * rng.standard_normal((250, 2)))
    y = rng.integers(0, 3, size=250)
    auto = knn(t, y, x=x)
    tree = knn(t, y, x=x, algorithm="kd_tree")
    assert auto.i_xt == pytest.approx(tree.i_xt, rel=1e-12)
    assert auto.i_ty == pytest.approx(tree.i_ty, rel=1e-12)


def test_knn_deterministic_with_duplicates():
    rng = np.random.default_rng(8)
    t = np.round(rng.standard_normal((400, 2)), 1)  # many repeated rows
    x = rng.standard_normal((400, 3))
    y = rng.integers(0, 2, size=400)
    a = knn(t, y, x=x, random_state=1)
    b = knn(
        torch.as_tensor(t), torch.as_tensor(y), x=torch.as_tensor(x), random_state=1
    )
    assert (a.i_xt, a.i_ty) == (b.i_xt, b.i_ty)
    assert all(np.isfinite([a.i_xt, a.i_ty]))
    # Without tie-breaking noise the estimates stay finite.
    c = knn(t, y, x=x, jitter=0.0)
    assert all(np.isfinite([c.i_xt, c.i_ty]))


def test_knn_float32_input_equals_its_float64_copy():
    x, t = _correlated(300, 0.6, dims=2, seed=9)
    t32 = t.astype(np.float32)
    y = (t[:, 0] > 0).astype(int)
    a = knn(t32, y, x=x)
    b = knn(t32.astype(np.float64), y, x=x)
    assert (a.i_xt, a.i_ty) == (b.i_xt, b.i_ty)


def test_knn_permutation_invariant_without_jitter():
    x, t = _correlated(300, 0.6, dims=2, seed=10)
    y = (t[:, 0] + x[:, 1] > 0).astype(int)
    perm = np.random.default_rng(0).permutation(300)
    a = knn(t, y, x=x, jitter=0.0)
    b = knn(t[perm], y[perm], x=x[perm], jitter=0.0)
    assert b.i_xt == pytest.approx(a.i_xt, rel=1e-12)
    assert b.i_ty == pytest.approx(a.i_ty, rel=1e-12)


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree"])
def test_knn_ignores_singleton_classes(algorithm):
    rng = np.random.default_rng(11)
    t = rng.standard_normal((200, 2))
    y = (t[:, 0] > 0).astype(int)
    y_extra = y.copy()
    y_extra[:3] = [7, 8, 9]  # three classes of one sample each
    keep = np.arange(200) >= 3
    opts = {"jitter": 0.0, "standardize": False, "algorithm": algorithm}
    a = _knn(t, y_extra, **opts)
    b = _knn(t[keep], y[keep], **opts)
    assert a.i_ty == pytest.approx(b.i_ty, rel=1e-12)
    # With x, KSG still uses every sample; Ross the same kept ones.
    c = knn(t, y_extra, x=t[:, ::-1], **opts)
    assert c.i_ty == pytest.approx(b.i_ty, rel=1e-12)
    assert c.i_xt == pytest.approx(knn(t, y, x=t[:, ::-1], **opts).i_xt, rel=1e-12)
    with pytest.warns(EstimationWarning, match="single sample"):
        r = knn(t, np.arange(200), x=t)
    assert math.isnan(r.i_ty)


def test_knn_independent_is_near_zero_and_clipped():
    rng = np.random.default_rng(12)
    t = rng.standard_normal((1000, 2))
    x = rng.standard_normal((1000, 2))
    y = rng.integers(0, 2, size=1000)
    r = knn(t, y, x=x)
    assert 0.0 <= r.i_xt < 0.05
    assert 0.0 <= r.i_ty < 0.05


def test_knn_constant_activations_give_zero():
    t = np.ones((50, 3))
    r = knn(t, np.arange(50) % 2)  # no warning: I(X;T) = 0 for a constant
    assert (r.i_xt, r.i_ty) == (0.0, 0.0)


def test_knn_x_of_any_shape_is_flattened():
    rng = np.random.default_rng(13)
    images = rng.standard_normal((120, 2, 3, 3))
    t = images.reshape(120, -1)[:, :2]
    y = np.arange(120) % 2
    a = knn(t, y, x=images)
    b = knn(t, y, x=images.reshape(120, -1))
    assert a.i_xt == b.i_xt


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "'k' parameter of knn"),
        ({"k": 2.5}, "'k' parameter of knn"),
        ({"k": 30}, "smaller than the number of samples"),
        ({"jitter": -1.0}, "'jitter' parameter"),
        ({"algorithm": "ball_tree"}, "'algorithm' parameter"),
        ({"random_state": -1}, "'random_state' parameter"),
        ({"random_state": "seed"}, "'random_state' parameter"),
        ({"standardize": "yes"}, "'standardize' parameter"),
        ({"chunk_size": 0}, "'chunk_size' parameter"),
        ({"metric": "l1"}, "'metric' parameter of knn"),
        ({"metric": "Euclidean"}, "'metric' parameter of knn"),
        ({"metric": None}, "'metric' parameter of knn"),
    ],
)
def test_knn_rejects_bad_parameters(kwargs, match):
    rng = np.random.default_rng(14)
    t = rng.standard_normal((30, 2))
    with pytest.raises(InvalidParameterError, match=match):
        knn(t, np.arange(30) % 2, x=t, **kwargs)


def test_knn_rejects_bad_data():
    rng = np.random.default_rng(15)
    t = rng.standard_normal((30, 2))
    y = np.arange(30) % 2
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        knn(t, y, x=t[:29])
    bad = t.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"\(x\) contain Inf"):
        knn(t, y, x=bad)
    with pytest.raises(ValueError, match="integer class labels"):
        knn(t, y * 0.3, x=t)
    with pytest.raises(ValueError, match="at least 2"):
        knn(t[:1], y[:1], x=t[:1])


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")
def test_knn_on_reference_activations():
    ref = np.load(DATA / "act_epoch8000.npz")
    y = ref["y"]
    h_y = -sum(p * math.log2(p) for p in np.bincount(y) / len(y))
    r = knn(ref["T_6"], y, x=ref["X"], k=3)
    assert 0 <= r.i_xt <= 12
    # Estimates, not bounds: allow a little above H(Y).
    assert 0.5 < r.i_ty <= h_y + 0.05


# --------------------------------------------------------------------------
# Issue 12: one-pass brute force, Euclidean marginals.


def _pairwise_reference(a, metric):
    """Full distance matrix by coordinate differences: max-norm, or squared L2."""
    diff = a[:, None, :] - a[None, :, :]
    if metric == "max":
        return np.abs(diff).max(axis=-1)
    return (diff * diff).sum(axis=-1)


def _reference_knn_bits(t, y, x, k, metric):
    """KSG (algorithm 1) and Ross written out with full n x n matrices, in bits.

    Euclidean distances are compared squared (the same order); "closer than
    r" is ``d <= nextafter(r, 0)``, as in scikit-learn. Estimates clipped at 0.
    """
    n = len(t)
    dt = _pairwise_reference(t, metric)
    i_xt = math.nan
    if x is not None:
        dx = _pairwise_reference(x, metric)
        eps = np.sort(np.maximum(dx, dt), axis=1)[:, k]  # itself at 0 included
        thr = np.nextafter(eps, 0)[:, None]
        n_x = (dx <= thr).sum(axis=1) - 1
        n_t = (dt <= thr).sum(axis=1) - 1
        nats = (
            special.digamma(k)
            + special.digamma(n)
            - special.digamma(n_x + 1).mean()
            - special.digamma(n_t + 1).mean()
        )
        i_xt = max(nats, 0.0) / LN2
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n_c = counts[inverse]
    k_c = np.minimum(k, n_c - 1)
    keep = k_c > 0
    m = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(keep):
        r = np.sort(dt[i, y == y[i]])[k_c[i]]
        m[i] = (dt[i, keep] <= np.nextafter(r, 0)).sum()
    nats = (
        special.digamma(keep.sum())
        + special.digamma(k_c[keep]).mean()
        - special.digamma(n_c[keep]).mean()
        - special.digamma(m[keep]).mean()
    )
    return i_xt, max(nats, 0.0) / LN2


def _with_jitter(a, rng, jitter=1e-10):
    """knn's tie-breaking noise without standardising (same draws, same scale)."""
    a = np.array(a, dtype=np.float64).reshape(len(a), -1)
    scale = np.maximum(np.abs(a).mean(axis=0), 1.0) * jitter
    return a + rng.standard_normal(a.shape) * scale


def _mixed_data(seed, n=240, dx=5, dt=3):
    """Inputs with many repeated rows, a layer with repeats, 4 classes + a singleton."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, dx)).astype(np.float64)
    t = np.round(np.tanh(x @ rng.standard_normal((dx, dt)) * 0.7), 1)
    t[: n // 2] += 0.3 * rng.standard_normal((n // 2, dt))  # half continuous
    y = rng.integers(0, 4, size=n)
    y[0] = 9  # a one-sample class
    return x, t, y


@pytest.mark.parametrize("metric", ["max", "euclidean"])
@pytest.mark.parametrize(
    ("algorithm", "chunk_size", "tile"),
    [
        ("brute", None, None),
        ("brute", 7, None),
        ("brute", 16, 16 * 37),  # column tiles of 37: merged top-k, counts
        ("kd_tree", None, None),
    ],
)
def test_knn_matches_direct_reference(metric, algorithm, chunk_size, tile, monkeypatch):
    """Issue 12: the one-pass search gives the numbers of the written-out sums.

    The data has repeated rows (discrete inputs, a rounded layer), so the
    tie-breaking noise decides the neighbours: the Euclidean search must
    recompute those comparisons exactly, as matrix products cannot see 1e-10.
    """
    if tile is not None:
        monkeypatch.setattr(KNN_MODULE, "_TILE_ELEMENTS", tile)
    x, t, y = _mixed_data(seed=21)
    for k in (1, 4):
        rs = np.random.RandomState(5)
        t_j = _with_jitter(t, rs)
        x_j = _with_jitter(x, rs)  # knn draws t's noise, then x's
        want = _reference_knn_bits(t_j, y, x_j, k, metric)
        opts = {"k": k, "standardize": False, "random_state": 5, "metric": metric}
        r = knn(t, y, x=x, algorithm=algorithm, chunk_size=chunk_size, **opts)
        assert r.i_xt == pytest.approx(want[0], rel=1e-9, abs=1e-12)
        assert r.i_ty == pytest.approx(want[1], rel=1e-9, abs=1e-12)
        # Ross alone (no x): its own pass over t.
        alone = _knn(t, y, algorithm=algorithm, chunk_size=chunk_size, **opts)
        assert alone.i_ty == pytest.approx(want[1], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("metric", ["max", "euclidean"])
def test_knn_matches_direct_reference_on_continuous_data(metric):
    """No ties, no noise, every class size: exact agreement with the sums."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((300, 6))
    t = np.tanh(
        x[:, :4] @ rng.standard_normal((4, 4)) + 0.5 * rng.standard_normal((300, 4))
    )
    y = rng.integers(0, 3, size=300)
    want = _reference_knn_bits(t, y, x, 3, metric)
    for algorithm in ("brute", "kd_tree"):
        r = knn(
            t, y, x=x, jitter=0.0, standardize=False, metric=metric, algorithm=algorithm
        )
        assert r.i_xt == pytest.approx(want[0], rel=1e-12)
        assert r.i_ty == pytest.approx(want[1], rel=1e-12)


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree"])
def test_knn_euclidean_equals_max_norm_and_sklearn_in_one_dimension(algorithm):
    # In one dimension every norm is |a - b|: both metrics, and scikit-learn.
    x, t = _correlated(500, 0.8, seed=23)
    y = (x[:, 0] > 0.3).astype(int)
    want_xt = mutual_info_regression(t, x[:, 0], n_neighbors=3, random_state=2)[0]
    want_ty = mutual_info_classif(t, y, n_neighbors=3, random_state=2)[0]
    r = knn(t, y, x=x, random_state=2, metric="euclidean", algorithm=algorithm)
    assert r.i_xt == pytest.approx(want_xt / LN2, rel=1e-10)
    assert r.i_ty == pytest.approx(want_ty / LN2, rel=1e-10)
    m = knn(t, y, x=x, random_state=2, metric="max", algorithm=algorithm)
    assert (m.i_xt, m.i_ty) == pytest.approx((r.i_xt, r.i_ty), rel=1e-12)


@pytest.mark.parametrize(("dx", "dt"), [(1, 3), (4, 4), (9, 2)])
def test_knn_euclidean_tree_equals_brute(dx, dt):
    # The tree finds joint candidates with the Euclidean norm of [x, t] (a
    # factor sqrt(2) from the joint norm) and compares them exactly.
    rng = np.random.default_rng(24 + dx)
    x = rng.standard_normal((400, dx))
    t = np.tanh(x[:, :1] + 0.4 * rng.standard_normal((400, dt)))
    y = rng.integers(0, 5, size=400)
    tree = knn(t, y, x=x, metric="euclidean", algorithm="kd_tree")
    brute = knn(t, y, x=x, metric="euclidean", algorithm="brute", chunk_size=64)
    assert tree.i_xt == pytest.approx(brute.i_xt, rel=1e-12)
    assert tree.i_ty == pytest.approx(brute.i_ty, rel=1e-12)


def test_knn_euclidean_gaussian_closed_form():
    # Two independent correlated pairs (4-D joint space): I adds up.
    x, t = _correlated(3000, 0.8, dims=2, seed=25)
    exact = 2 * -0.5 * math.log2(1 - 0.8**2)
    for algorithm in ("brute", "kd_tree"):
        r = knn(
            t, np.zeros(3000, dtype=int), x=x, metric="euclidean", algorithm=algorithm
        )
        assert r.i_xt == pytest.approx(exact, abs=0.08)


@pytest.mark.parametrize("scale", [2.0**600, 2.0**-600, 1e160])
def test_knn_euclidean_without_standardising_survives_extreme_scales(scale):
    # Squared distances of values at 1e160 overflow float64; knn rescales
    # both spaces by one power of two (exact), so the result is unchanged.
    x, t = _correlated(200, 0.7, dims=2, seed=26)
    y = (x[:, 0] > 0).astype(int)
    opts = {"standardize": False, "jitter": 0.0, "metric": "euclidean"}
    for algorithm in ("brute", "kd_tree"):
        ref = knn(t, y, x=x, algorithm=algorithm, **opts)
        big = knn(t * scale, y, x=x * scale, algorithm=algorithm, **opts)
        assert big.i_xt == pytest.approx(ref.i_xt, rel=1e-12)
        assert big.i_ty == pytest.approx(ref.i_ty, rel=1e-12)


def test_knn_euclidean_exact_duplicates_without_jitter_stay_finite():
    x, t, y = _mixed_data(seed=27)
    opts = {"jitter": 0.0, "standardize": False}
    for metric in ("max", "euclidean"):
        want = _reference_knn_bits(t, y, x, 3, metric)
        for algorithm in ("brute", "kd_tree"):
            r = knn(t, y, x=x, metric=metric, algorithm=algorithm, **opts)
            assert r.i_xt == pytest.approx(want[0], rel=1e-9, abs=1e-12)
            assert r.i_ty == pytest.approx(want[1], rel=1e-9, abs=1e-12)


def test_knn_metric_is_recorded_and_checked_when_built():
    rng = np.random.default_rng(28)
    t = rng.standard_normal((60, 2))
    r = knn(t, np.arange(60) % 2, x=t, metric="euclidean")
    assert r.params["metric"] == "euclidean"
    with pytest.raises(InvalidParameterError, match="'metric' parameter of knn"):
        estimators.get("knn", metric="manhattan")


def test_bench_knn_script_times_every_variant(tmp_path, capsys):
    """scripts/bench_knn.py on a tiny workload, its 'before' being this very file."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_knn.py"
    spec = importlib.util.spec_from_file_location("_bench_knn", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    out_json = tmp_path / "bench.json"
    argv = ["--sizes", "300", "--dim", "4", "--threads", "1", "--json", str(out_json)]
    try:
        rows = bench.main([*argv, "--before", KNN_MODULE.__file__])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    variants = ["pass: cdist(p=inf) + topk", "before (max)", "after (max)"]
    variants.append("after (euclidean)")
    assert [r["variant"] for r in rows] == variants
    for name in variants:
        assert f"| 300 | {name} |" in printed
    assert "largest |before - after| (max-norm): 0.00e+00 bits" in printed
    saved = json.loads(out_json.read_text())
    assert saved[0]["passes"] == 1.0 and all(r["wall_s"] > 0 for r in saved)
    x, t, y = bench.make_data(300, 4)
    assert saved[2]["i_xt"] == knn(t, y, x=x, k=3).i_xt
    assert saved[3]["i_xt"] == knn(t, y, x=x, k=3, metric="euclidean").i_xt
