"""Tests of the binned estimator against exact values and slow numpy references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from _inputs import entropy_bits, slow_binned, tanh_layer
from sklearn.metrics import mutual_info_score

from ibmonitor import estimators
from ibmonitor.estimators import binning
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small eigenproblems run fastest on one thread (and the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(*args, **kwargs):
    """Call binned with the every-sample-in-its-own-bin warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        return estimators.binned(*args, **kwargs)


def _digitize(t, n_bins=30, value_range="auto"):
    t = np.asarray(t)
    if value_range == "auto":
        lo, hi = float(t.min()), float(t.max())
    else:
        lo, hi = value_range
    return np.digitize(t, np.linspace(lo, hi, n_bins))


def _same_partition(a, b):
    """True when the two id vectors group the samples identically."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def _check_against(r, ref, n_symbols=None):
    assert r.extras["h_t"] == pytest.approx(ref["h_t"], abs=1e-9)
    assert r.extras["h_t_given_y"] == pytest.approx(ref["h_t_given_y"], abs=1e-9)
    assert r.i_ty == pytest.approx(ref["i_ty"], abs=1e-9)
    assert r.i_xt == pytest.approx(ref["i_xt"], abs=1e-9)
    if n_symbols is not None:
        assert r.extras["n_symbols"] == n_symbols


# ------------------------------------------------------------------ exact values


@pytest.mark.parametrize("value_range", ["auto", (-1.0, 1.0)])
def test_binned_one_hot_of_labels_gives_h_y(value_range):
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=1000, p=[0.1, 0.2, 0.3, 0.4])
    t = np.eye(4)[y]
    r = estimators.binned(t, y, value_range=value_range)
    h_y = entropy_bits(y)
    assert r.i_ty == pytest.approx(h_y, abs=1e-12)
    assert r.i_xt == pytest.approx(h_y, abs=1e-12)  # T is a function of Y here
    assert r.extras["h_t_given_y"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_binned_k_equally_populated_symbols_give_log2_k(k):
    values = np.linspace(-0.9, 0.9, k) if k > 1 else np.array([0.3])
    t = np.repeat(values, 50)[:, None]
    y = np.arange(t.shape[0]) % 2
    r = estimators.binned(t, y, value_range=(-1.0, 1.0), n_bins=30)
    assert r.i_xt == pytest.approx(math.log2(k), abs=1e-12)
    assert r.extras["n_symbols"] == k


def test_binned_agrees_with_sklearn_mutual_info_score():
    t, y = tanh_layer(2000, 3, n_classes=4, seed=1)
    symbols = _digitize(t, n_bins=8)
    _, ids = np.unique(symbols, axis=0, return_inverse=True)
    expected = mutual_info_score(ids.ravel(), y) / math.log(2)
    r = estimators.binned(t, y, n_bins=8)
    assert r.i_ty == pytest.approx(expected, abs=1e-10)


def test_binned_values_outside_the_range_get_the_outer_symbols():
    t = np.array([[-5.0], [-1.5], [1.0], [3.0], [-1.0], [0.99]])
    y = np.array([0, 0, 1, 1, 0, 1])
    r = _quiet(t, y, value_range=(-1.0, 1.0), n_bins=3)
    # edges -1, 0, 1: symbols 0, 0, 3, 3, 1, 2 -> counts 2, 2, 1, 1
    p = np.array([2, 2, 1, 1]) / 6
    assert r.extras["n_symbols"] == 4
    assert r.i_xt == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12)


# --------------------------------------------------------- slow reference (exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "value_range", ["auto", (-1.0, 1.0), (-0.3, 0.8)], ids=["auto", "pm1", "odd"]
)
@pytest.mark.parametrize("n_bins", [2, 7, 30, 31])
@pytest.mark.parametrize("n_units", [1, 5, 40], ids=["u1", "u5", "u40"])
def test_binned_matches_digitize_and_unique_rows(dtype, value_range, n_bins, n_units):
    t, y = tanh_layer(600, n_units, n_classes=3, seed=n_units + n_bins)
    t = t.astype(dtype)
    symbols = _digitize(t, n_bins, value_range)
    r = _quiet(t, y, n_bins=n_bins, value_range=value_range)
    n_sym = len(np.unique(symbols, axis=0))
    _check_against(r, slow_binned(symbols, y), n_symbols=n_sym)


@pytest.mark.parametrize("n_bins", [30, 31, 101])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_binned_is_exact_for_values_on_and_next_to_the_edges(n_bins, dtype):
    """Values equal to an edge (or one ulp off) go where numpy.digitize puts them."""
    rng = np.random.default_rng(n_bins)
    edges = np.linspace(-1.0, 1.0, n_bins)
    e = edges.astype(dtype)
    pool = np.concatenate(
        [
            e,
            np.nextafter(e, dtype(np.inf)),
            np.nextafter(e, dtype(-np.inf)),
            np.array([0.0, -0.0, 1.0, -1.0, 2.0, -2.0], dtype=dtype),
        ]
    )
    t = rng.choice(pool, size=(3000, 2)).astype(dtype)
    y = rng.integers(0, 2, 3000)
    symbols = _digitize(t, n_bins, (-1.0, 1.0))
    r = _quiet(t, y, n_bins=n_bins, value_range=(-1.0, 1.0))
    _check_against(r, slow_binned(symbols, y))
    # and the symbol partition itself is the same as numpy's
    tt = torch.from_numpy(t)
    ids = binning._row_ids(binning._uniform_codes(tt, -1.0, 1.0, n_bins)).numpy()
    _, ref = np.unique(symbols, axis=0, return_inverse=True)
    assert _same_partition(ids, ref.ravel())


def test_binned_auto_range_puts_the_maximum_in_the_top_symbol():
    t = np.array([[0.0], [1.0], [2.0], [4.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    assert np.digitize(t, np.linspace(0.0, 4.0, 3)).ravel().tolist() == [1, 1, 2, 3]
    r = _quiet(t, y, n_bins=3)
    assert r.extras["n_symbols"] == 3
    assert r.i_xt == pytest.approx(1.5, abs=1e-12)


def test_binned_hash_collisions_fall_back_to_exact_ids(monkeypatch):
    t, y = tanh_layer(500, 60, seed=3)
    expected = _quiet(t, y, n_bins=4)
    # every row hashes to 0: the collision check must notice and re-index exactly
    monkeypatch.setattr(
        binning,
        "_hash_multipliers",
        lambda n_codes, device: torch.zeros(n_codes, dtype=torch.int64),
    )
    r = _quiet(t, y, n_bins=4)
    assert r.i_xt == pytest.approx(expected.i_xt, abs=1e-12)
    assert r.i_ty == pytest.approx(expected.i_ty, abs=1e-12)
    _check_against(r, slow_binned(_digitize(t, 4), y))


def test_binned_device_and_numpy_counting_paths_agree():
    """The torch counting path (used on CUDA) equals the numpy one (CPU)."""
    rng = np.random.default_rng(16)
    codes = torch.from_numpy(rng.integers(0, 50, 900))
    _, sym, t_counts = torch.unique(codes, return_inverse=True, return_counts=True)
    y = torch.from_numpy(rng.integers(0, 4, 900))
    for xids in (None, torch.from_numpy(rng.integers(0, 300, 900))):
        for yy in (y, y * 1000 - 7):  # small non-negative labels, and any labels
            a = binning._count_sums_torch(
                sym, t_counts.numel(), t_counts, yy, xids, 900
            )
            b = binning._count_sums_numpy(
                sym.numpy(),
                t_counts.numel(),
                t_counts.numpy(),
                yy.numpy(),
                None if xids is None else xids.numpy(),
                900,
            )
            assert a[0] == pytest.approx(b[0], rel=1e-12)
            assert a[1] == b[1]


# ------------------------------------------------------------------ the x path


def test_binned_groups_duplicated_inputs():
    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((200, 3)), 3, axis=0)  # each input 3 times
    y = np.repeat(rng.integers(0, 2, 200), 3)
    t_det = np.tanh(x @ rng.standard_normal((3, 4)))  # deterministic layer
    r = _quiet(t_det, y, x=x, n_bins=10)
    assert r.i_xt == pytest.approx(r.extras["h_t"], abs=1e-12)  # H(T|X) = 0

    t_noisy = t_det + 0.2 * rng.standard_normal(t_det.shape)  # a noisy layer
    symbols = _digitize(t_noisy, 10)
    _, x_ids = np.unique(x, axis=0, return_inverse=True)
    ref = slow_binned(symbols, y, x_ids=x_ids.ravel())
    r_x = _quiet(t_noisy, y, x=x, n_bins=10)
    r_ids = _quiet(t_noisy, y, x=x_ids.ravel() * 7 + 3, n_bins=10)  # ids, any values
    _check_against(r_x, ref)
    assert r_ids.i_xt == pytest.approx(ref["i_xt"], abs=1e-9)
    assert r_x.i_xt < r_x.extras["h_t"] - 0.5


def test_binned_distinct_inputs_give_h_t():
    t, y = tanh_layer(300, 3, seed=4)
    r_none = estimators.binned(t, y, n_bins=6)
    r_ids = estimators.binned(t, y, x=np.arange(300)[::-1], n_bins=6)
    assert r_ids.i_xt == pytest.approx(r_none.i_xt, abs=1e-12)
    assert r_none.i_xt == pytest.approx(r_none.extras["h_t"], abs=1e-12)


# ------------------------------------------------------------------ properties


def test_binned_is_invariant_to_sample_permutation():
    t, y = tanh_layer(1000, 6, seed=5)
    perm = np.random.default_rng(1).permutation(1000)
    a = _quiet(t, y, n_bins=12, x=np.arange(1000) // 2)
    b = _quiet(t[perm], y[perm], n_bins=12, x=(np.arange(1000) // 2)[perm])
    assert (a.i_xt, a.i_ty) == pytest.approx((b.i_xt, b.i_ty), abs=1e-12)


def test_binned_information_is_bounded_and_warns_when_every_sample_is_alone():
    t, y = tanh_layer(256, 12, seed=6)
    with pytest.warns(EstimationWarning, match="its own bin"):
        r = estimators.binned(t, y, n_bins=30)
    assert r.i_xt == pytest.approx(math.log2(256), abs=1e-12)
    for n_bins in (2, 3, 5):
        r = _quiet(t, y, n_bins=n_bins)
        assert 0.0 <= r.i_ty <= r.i_xt <= math.log2(256) + 1e-12
        assert r.i_ty <= entropy_bits(y) + 1e-12


def test_binned_float32_float64_float16_and_tensors_agree():
    t, y = tanh_layer(800, 5, seed=7)
    ref = _quiet(t, y)
    for variant in (
        t.astype(np.float64),
        torch.from_numpy(t),
        torch.from_numpy(t).double(),
        torch.from_numpy(t.copy()).T.contiguous().T,  # non-contiguous view
    ):
        r = _quiet(variant, torch.as_tensor(y))
        assert (r.i_xt, r.i_ty) == pytest.approx((ref.i_xt, ref.i_ty), abs=1e-12)
    t16 = t.astype(np.float16)
    r16 = _quiet(torch.from_numpy(t16), y)
    ref16 = slow_binned(_digitize(t16.astype(np.float32)), y)
    _check_against(r16, ref16)


def test_binned_constant_activations_give_zero_bits():
    y = np.array([0, 1] * 50)
    for t in (np.zeros((100, 3)), np.full((100, 2), 0.7, dtype=np.float32)):
        for kwargs in (
            {},
            {"value_range": (-1.0, 1.0)},
            {"bin_size": 0.1},
            {"strategy": "quantile"},
        ):
            r = estimators.binned(t, y, **kwargs)
            assert r.i_xt == 0.0
            assert r.i_ty == 0.0
            assert r.extras["n_symbols"] == 1


def test_binned_a_constant_unit_among_others_changes_nothing():
    t, y = tanh_layer(500, 3, seed=8)
    widened = np.concatenate([t, np.full((500, 1), 0.5, dtype=np.float32)], axis=1)
    for kwargs in ({"bin_size": 0.2}, {"strategy": "quantile", "n_bins": 4}):
        a = _quiet(t, y, **kwargs)
        b = _quiet(widened, y, **kwargs)
        assert (a.i_xt, a.i_ty) == pytest.approx((b.i_xt, b.i_ty), abs=1e-12)


# ------------------------------------------------------------ other strategies


@pytest.mark.parametrize("n_bins", [2, 4, 10])
def test_binned_quantile_matches_numpy_quantile_edges(n_bins):
    t, y = tanh_layer(997, 4, seed=9)
    t[:100, 0] = 1.0  # ties and saturation
    t[:, 1] = np.round(t[:, 1], 1)  # many values exactly on edges
    symbols = np.stack(
        [
            np.digitize(
                col,
                np.quantile(
                    col.astype(np.float64), np.linspace(0, 1, n_bins + 1)[1:-1]
                ),
            )
            for col in t.T
        ],
        axis=1,
    )
    r = _quiet(t, y, strategy="quantile", n_bins=n_bins)
    _check_against(r, slow_binned(symbols, y))


def test_binned_quantile_bins_hold_equal_mass():
    t = np.random.default_rng(10).standard_normal((1200, 1))
    y = np.zeros(1200, dtype=int)
    r = estimators.binned(t, y, strategy="quantile", n_bins=8)
    assert r.i_xt == pytest.approx(3.0, abs=1e-12)


@pytest.mark.parametrize("bin_size", [0.07, 0.5, 3.0])
def test_binned_bin_size_matches_floor(bin_size):
    t, y = tanh_layer(700, 6, seed=11)
    t = t * 4.0  # values well beyond (-1, 1): no range limit
    symbols = np.floor(t.astype(np.float64) / bin_size)
    r = _quiet(t, y, bin_size=bin_size)
    _check_against(
        r, slow_binned(symbols, y), n_symbols=len(np.unique(symbols, axis=0))
    )


def test_binned_bin_size_packs_wide_layers_exactly():
    t, y = tanh_layer(400, 300, seed=12)
    symbols = np.floor(t.astype(np.float64) / 0.01)  # ~200 values per unit
    r = _quiet(t, y, bin_size=0.01)
    _check_against(r, slow_binned(symbols, y))


# ----------------------------------------------------------------- Miller-Madow


def test_binned_miller_madow_matches_a_hand_computation():
    # symbols a a a b | a b b c  (labels 0 | 1), n = 8
    t = np.array([0, 0, 0, 1, 0, 1, 1, 2], dtype=float)[:, None] / 2 - 0.5
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    plug = estimators.binned(t, y, value_range=(-1.0, 1.0), n_bins=5)
    mm = estimators.binned(t, y, value_range=(-1.0, 1.0), n_bins=5, miller_madow=True)

    def h(counts):
        p = np.asarray(counts) / sum(counts)
        return float(-(p * np.log2(p)).sum())

    n, ln2 = 8, math.log(2)
    h_t = h([4, 3, 1]) + (3 - 1) / (2 * n * ln2)
    h_t0 = h([3, 1]) + (2 - 1) / (2 * 4 * ln2)
    h_t1 = h([1, 2, 1]) + (3 - 1) / (2 * 4 * ln2)
    h_t_y = 0.5 * h_t0 + 0.5 * h_t1
    assert mm.extras["h_t"] == pytest.approx(h_t, abs=1e-12)
    assert mm.extras["h_t_given_y"] == pytest.approx(h_t_y, abs=1e-12)
    assert mm.i_ty == pytest.approx(max(h_t - h_t_y, 0.0), abs=1e-12)
    assert mm.i_xt == pytest.approx(h_t, abs=1e-12)  # H(T|X) = 0 without x
    assert plug.i_ty == pytest.approx(
        h([4, 3, 1]) - 0.5 * h([3, 1]) - 0.5 * h([1, 2, 1])
    )


def test_binned_miller_madow_is_clipped_at_zero_for_independent_variables():
    # 4 symbols x 2 classes, every cell holding 5 samples: plug-in I(T;Y) = 0 and
    # the correction (3 - (8 - 2)) / (2 n ln 2) is negative, so the result is 0.
    t = np.tile(np.repeat([-0.75, -0.25, 0.25, 0.75], 5), 2)[:, None]
    y = np.repeat([0, 1], 20)
    plug = estimators.binned(t, y, value_range=(-1.0, 1.0), n_bins=5)
    r = estimators.binned(t, y, value_range=(-1.0, 1.0), n_bins=5, miller_madow=True)
    assert plug.i_ty == pytest.approx(0.0, abs=1e-12)
    assert r.i_ty == 0.0
    correction = (4 - 1) / (2 * 40 * math.log(2))
    assert r.extras["h_t"] == pytest.approx(2.0 + correction, abs=1e-12)


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"n_bins": 1},
            r"'n_bins' parameter of binned must be an int in the range \[2",
        ),
        ({"n_bins": 2.5}, "'n_bins' parameter of binned must be an int"),
        ({"strategy": "kmeans"}, "'strategy' parameter of binned must be one of"),
        ({"bin_size": 0.0}, "'bin_size' parameter of binned must be a float"),
        ({"bin_size": -0.1}, r"Got -0.1 instead"),
        ({"bin_size": 0.1, "strategy": "quantile"}, "cannot be combined"),
        ({"value_range": (1.0, -1.0)}, "'value_range' parameter of binned"),
        ({"value_range": "minmax"}, "'value_range' parameter of binned"),
        ({"value_range": (0.0, float("inf"))}, "finite floats"),
        ({"miller_madow": "yes"}, "'miller_madow' parameter of binned must be a bool"),
    ],
)
def test_binned_rejects_bad_parameters(kwargs, match):
    t, y = tanh_layer(20, 2)
    with pytest.raises(InvalidParameterError, match=match):
        estimators.binned(t, y, **kwargs)


def test_binned_rejects_bad_data():
    t, y = tanh_layer(20, 2)
    bad = t.copy()
    bad[3, 1] = np.nan
    bad[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"contain NaN \(2 of 40 values\)"):
        estimators.binned(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        estimators.binned(torch.from_numpy(bad), y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        estimators.binned(t, y[:-1])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        estimators.binned(t, y, x=np.arange(19))
    with pytest.raises(ValueError, match="integer class labels"):
        estimators.binned(t, y + 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        estimators.binned(t[:1], y[:1])
    with pytest.raises(ValueError, match=r"shape \(n_samples, n_units\)"):
        estimators.binned(t[:, :, None], y)


# ------------------------------------------------------------ registry, device


def test_binned_is_registered_with_its_parameters():
    assert "binned" in estimators.available()
    est = estimators.get("binned", n_bins=10, value_range=(-1.0, 1.0))
    assert est.inputs == "ids"
    t, y = tanh_layer(300, 3, seed=14)
    r = est(t, y, x=np.arange(300))
    direct = estimators.binned(t, y, n_bins=10, value_range=(-1.0, 1.0))
    assert (r.i_xt, r.i_ty) == (direct.i_xt, direct.i_ty)
    assert r.params["n_bins"] == 10
    assert r.params["value_range"] == [-1.0, 1.0]
    assert set(r.as_dict()) >= {"i_xt", "i_ty", "h_t", "h_t_given_y", "n_symbols"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_binned_on_cuda_matches_cpu():
    t, y = tanh_layer(3000, 40, seed=15)
    for kwargs in (
        {},
        {"n_bins": 31, "value_range": (-1.0, 1.0)},
        {"bin_size": 0.1},
        {"strategy": "quantile", "n_bins": 5},
    ):
        cpu = _quiet(t, y, x=np.arange(3000) // 3, **kwargs)
        gpu = _quiet(
            torch.from_numpy(t).cuda(),
            torch.from_numpy(y).cuda(),
            x=torch.arange(3000).cuda() // 3,
            **kwargs,
        )
        assert (gpu.i_xt, gpu.i_ty) == pytest.approx((cpu.i_xt, cpu.i_ty), abs=1e-9)
