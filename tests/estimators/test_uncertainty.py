"""Intervals and permutation baselines of every registered estimator (issue 12).

The mechanism lives in ``ibmonitor/estimators/_uncertainty.py`` and is applied
by ``register``, so every test that loops over ``estimators.available()``
also covers estimators added later.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

import ibmonitor
from ibmonitor import estimators
from ibmonitor.estimators import InformationEstimate, input_ids
from ibmonitor.estimators import _common as common
from ibmonitor.estimators._uncertainty import (
    DEFAULT_PERMUTATIONS,
    half_sample_interval,
    take_rows,
    with_uncertainty,
)
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.monitor import InformationMonitor
from ibmonitor.sinks import RunStore

NEW_PARAMETERS = ("bootstrap", "confidence", "seed", "baseline")
NEW_COLUMNS = (
    "i_xt_low",
    "i_xt_high",
    "i_ty_low",
    "i_ty_high",
    "i_ty_baseline",
    "i_xt_ceiling",
)
#: Parameters that keep each built-in estimator away from its ceiling on the
#: two-unit, unit-variance layers below (estimators added later: defaults).
UNPINNED = {
    "binned": {"n_bins": 6},
    "kde": {"noise_variance": 0.2},
    "knn": {},
    "renyi": {},
    "noisy": {"noise_std": 0.5, "n_mc": 8},
}


def _params(name):
    return dict(UNPINNED.get(name, {}))


def _x_for(name, t, ids):
    """The x each estimator kind takes (the monitor's rule)."""
    kind = estimators.get(name).inputs
    return {"ids": ids, "values": t, "none": None}[kind]


def _call(name, t, y, x=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        return estimators.get(name, **{**_params(name), **kw})(t, y, x=x)


@pytest.fixture
def temporary_estimator():
    """Register test estimators under fresh names; remove them afterwards."""
    names = []

    def add(name, func, **kw):
        names.append(name)
        return common.register(name, **kw)(func)

    yield add
    for name in names:
        common._REGISTRY.pop(name, None)
        common._CHECKS.pop(name, None)
        common._SHARED.pop(name, None)


def _independent(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), rng.integers(0, 2, n)


# ------------------------------------------------------------------ signatures


@pytest.mark.parametrize("name", estimators.available())
def test_every_estimator_exposes_the_uncertainty_parameters(name):
    func = getattr(estimators, name, None) or common._REGISTRY[name][0]
    sig = inspect.signature(func)
    for p in NEW_PARAMETERS:
        assert p in sig.parameters, (name, p)
        assert sig.parameters[p].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["bootstrap"].default == 0
    assert sig.parameters["confidence"].default == 0.9
    assert sig.parameters["baseline"].default is False
    assert func.__name__ == name  # functools.wraps kept the name and docs
    assert "bootstrap=B" in func.__doc__
    est = estimators.get(name, bootstrap=10, confidence=0.8, seed=1, baseline=2)
    assert est.params["bootstrap"] == 10
    with pytest.raises(InvalidParameterError, match=r"Valid parameters: .*bootstrap"):
        estimators.get(name, bootstraps=10)


@pytest.mark.parametrize("name", estimators.available())
def test_defaults_return_exactly_what_the_estimator_returns(name):
    """bootstrap=0 and baseline=False leave every result as it was."""
    t, y = _independent(60)
    ids = np.arange(60)
    x = _x_for(name, t, ids)
    func = common._REGISTRY[name][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        plain = func.__wrapped__(t, y, x=x, **_params(name))
        wrapped = func(t, y, x=x, **_params(name))
        off = func(t, y, x=x, bootstrap=0, baseline=False, **_params(name))
    for r in (wrapped, off):
        assert r == plain  # dataclass equality: every field, params included
        assert r.i_xt_ci is None and r.i_ty_baseline is None
        assert set(r.as_dict()) == set(plain.as_dict())
        assert not set(NEW_COLUMNS) & set(r.as_dict())


def test_estimator_warnings_point_at_the_callers_line_and_are_shown_once():
    """The wrapper is skipped: a pinned estimate's warning names this file,
    and the default filter still shows a repeated warning once."""
    t, y = np.arange(40.0)[:, None], np.arange(40) % 2
    with pytest.warns(EstimationWarning, match="pinned|within") as caught:
        estimators.binned(t, y, n_bins=200)
    assert [w.filename for w in caught] == [__file__]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        for _ in range(3):
            estimators.binned(t, y, n_bins=200)  # one line: one warning
    assert len(shown) == 1 and shown[0].filename == __file__


def test_as_dict_adds_the_columns_only_where_computed():
    plain = InformationEstimate("e", 1.0, 0.5, {}, {"h_t": 1.0})
    assert list(plain.as_dict()) == ["estimator", "i_xt", "i_ty", "h_t", "pinned"]
    full = InformationEstimate(
        "e",
        1.0,
        0.5,
        {},
        {},
        i_xt_ci=(0.8, 1.2),
        i_ty_ci=(0.4, 0.6),
        i_ty_baseline=0.1,
        i_xt_ceiling=6.0,
    )
    d = full.as_dict()
    assert [d[c] for c in NEW_COLUMNS] == [0.8, 1.2, 0.4, 0.6, 0.1, 6.0]
    only_baseline = InformationEstimate("e", 1.0, 0.5, i_ty_baseline=0.2).as_dict()
    assert "i_ty_baseline" in only_baseline and "i_ty_low" not in only_baseline


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bootstrap": 5}, r"'bootstrap' parameter of binned must be 0 \(off\)"),
        ({"bootstrap": -1}, "'bootstrap' parameter of binned"),
        ({"bootstrap": 20.0}, "'bootstrap' parameter of binned must be an int"),
        ({"bootstrap": True}, "'bootstrap' parameter of binned"),
        ({"confidence": 1.0}, r"'confidence' parameter of binned .*\(0, 1\)"),
        ({"confidence": 0}, "'confidence' parameter of binned"),
        ({"confidence": "high"}, "'confidence' parameter of binned"),
        ({"seed": -1}, "'seed' parameter of binned"),
        ({"seed": 1.5}, "'seed' parameter of binned"),
        ({"baseline": -2}, "'baseline' parameter of binned must be a bool or an int"),
        ({"baseline": 0.5}, "'baseline' parameter of binned"),
        ({"baseline": "yes"}, "'baseline' parameter of binned"),
    ],
)
def test_bad_uncertainty_parameters_fail_in_get_and_on_call(kw, match):
    t, y = _independent(40)
    with pytest.raises(InvalidParameterError, match=match):
        estimators.get("binned", **kw)
    with pytest.raises(InvalidParameterError, match=match):
        estimators.binned(t, y, **kw)


def test_get_still_checks_the_estimators_own_parameters_beside_them():
    with pytest.raises(InvalidParameterError, match="'n_bins' parameter of binned"):
        estimators.get("binned", n_bins=1, bootstrap=20)
    with pytest.raises(InvalidParameterError, match="'noise_variance'"):
        estimators.get("kde", noise_variance=-1.0, baseline=True)


def test_bootstrap_needs_four_samples():
    t = np.array([[0.0], [0.0], [2.0]])
    with pytest.raises(InvalidParameterError, match="at least 4 samples"):
        estimators.binned(t, np.array([0, 1, 0]), bootstrap=10)


def test_an_estimators_own_bootstrap_parameter_is_refused(temporary_estimator):
    def clash(t, y, *, x=None, bootstrap=3):
        return InformationEstimate("clash", 0.0, 0.0)

    with pytest.raises(TypeError, match="own parameter 'bootstrap'"):
        temporary_estimator("_test_clash", clash)


def test_register_rejects_an_unknown_ceiling():
    with pytest.raises(InvalidParameterError, match="'ceiling' parameter of register"):
        common.register("_test_bad_ceiling", ceiling="log n")


# ------------------------------------------------------------------ mechanism


def test_half_samples_and_permutations_keep_rows_together(temporary_estimator):
    """t, y and x rows travel together; halves have no duplicates; permutations
    shuffle y only. The probe encodes the row number in t, y and x."""
    calls = []

    def spy(t, y, *, x=None, scale=1.0):
        calls.append((np.asarray(t).copy(), np.asarray(y).copy(), np.asarray(x)))
        return InformationEstimate("spy", float(len(t)), float(np.mean(y)))

    temporary_estimator("_test_spy", spy, inputs="ids")
    n = 41
    rows = np.arange(n)
    t = torch.arange(n, dtype=torch.float64)[:, None] * 2.0
    y = rows.tolist()  # a plain list works too
    x = torch.arange(n) + 100
    r = estimators.get("_test_spy", bootstrap=12, baseline=3, seed=5)(t, y, x=x)
    assert len(calls) == 1 + 12 + 3
    halves, perms = calls[1:13], calls[13:]
    for tt, yy, xx in halves:
        assert len(tt) == n // 2 == 20
        assert len(set(yy.tolist())) == 20  # drawn without replacement
        np.testing.assert_array_equal(tt[:, 0], 2.0 * yy)
        np.testing.assert_array_equal(xx, yy + 100)
    for tt, yy, xx in perms:
        np.testing.assert_array_equal(tt[:, 0], 2.0 * rows)
        np.testing.assert_array_equal(xx, rows + 100)
        assert sorted(yy.tolist()) == y and yy.tolist() != y
    assert r.params == {
        "bootstrap": 12,
        "confidence": 0.9,
        "seed": 5,
        "baseline": 3,
    }
    assert r.i_ty_baseline == pytest.approx(np.mean([np.mean(p[1]) for p in perms]))
    # I(X;T) of the spy is the sample size: every half gives 20, so no spread
    assert r.i_xt_ci == (41.0, 41.0)


def test_take_rows_keeps_type_and_device():
    index = np.array([2, 0], dtype=np.int64)
    out = take_rows(torch.arange(6.0).reshape(3, 2), index)
    assert isinstance(out, torch.Tensor) and out.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert take_rows([5, 6, 7], index).tolist() == [7, 5]
    assert take_rows(None, index) is None


def test_half_sample_interval_is_the_normal_interval_of_the_delete_half_jackknife():
    reps = np.array([0.9, 1.3, 1.0, 1.1, 0.8, 1.2, 1.05, 0.95, 1.15, 0.85])
    n, m = 101, 50
    se = math.sqrt(m / (n - m)) * reps.std(ddof=1)
    q = student_t.ppf(0.95, df=len(reps) - 1)
    lo, hi = half_sample_interval(2.0, reps, n, m, 0.9)
    assert lo == pytest.approx(2.0 - q * se) and hi == pytest.approx(2.0 + q * se)
    # clipped at 0 for a non-negative estimator, and at a ceiling
    assert half_sample_interval(0.01, reps - 0.8, n, m, 0.9)[0] == 0.0
    assert half_sample_interval(2.0, reps, n, m, 0.9, ceiling=2.1)[1] == 2.1
    # not clipped where the estimator itself goes below 0
    assert half_sample_interval(0.01, reps - 1.0, n, m, 0.9)[0] < 0.0
    # NaN: a NaN estimate, or fewer than half the replicates finite
    assert all(map(math.isnan, half_sample_interval(math.nan, reps, n, m, 0.9)))
    broken = np.where(np.arange(10) < 6, np.nan, reps)
    assert all(map(math.isnan, half_sample_interval(1.0, broken, n, m, 0.9)))


def test_failed_half_samples_are_left_out_with_a_warning(temporary_estimator):
    def fragile(t, y, *, x=None):
        if len(t) < 10:
            raise InvalidParameterError("needs at least 10 samples")
        return InformationEstimate("fragile", 1.0, 0.5)

    temporary_estimator("_test_fragile", fragile)
    t, y = _independent(12)
    with pytest.warns(
        EstimationWarning, match="10 of 10 half-samples of _test_fragile"
    ):
        r = estimators.get("_test_fragile", bootstrap=10)(t, y)
    assert r.i_xt == 1.0 and all(map(math.isnan, r.i_ty_ci))


def test_a_shared_seed_drives_the_estimator_and_the_resampling(temporary_estimator):
    seen = []

    def seeded(t, y, *, x=None, seed=7):
        seen.append(seed)
        return InformationEstimate("seeded", float(np.mean(t)), 0.0)

    func = temporary_estimator("_test_seeded", seeded)
    assert list(inspect.signature(func).parameters).count("seed") == 1
    t, y = _independent(20)
    a = estimators.get("_test_seeded", bootstrap=10)(t, y)
    assert set(seen) == {7} and a.params["seed"] == 7
    seen.clear()
    b = estimators.get("_test_seeded", bootstrap=10, seed=3)(t, y)
    assert set(seen) == {3} and a.i_xt_ci != b.i_xt_ci


def test_same_seed_same_interval_other_seed_other_interval():
    t, y = _independent(200)
    a = estimators.binned(t, y, n_bins=6, bootstrap=20, baseline=True, seed=1)
    b = estimators.binned(t, y, n_bins=6, bootstrap=20, baseline=True, seed=1)
    c = estimators.binned(t, y, n_bins=6, bootstrap=20, baseline=True, seed=2)
    assert a == b
    assert a.i_ty_ci != c.i_ty_ci and a.i_ty_baseline != c.i_ty_baseline
    # the number of permutations does not move the half-samples
    d = estimators.binned(t, y, n_bins=6, bootstrap=20, baseline=5, seed=1)
    assert d.i_ty_ci == a.i_ty_ci
    fresh = estimators.binned(t, y, n_bins=6, bootstrap=20, seed=None)
    assert fresh.i_ty_ci[0] <= fresh.i_ty <= fresh.i_ty_ci[1]


def test_torch_inputs_give_the_numpy_result():
    t, y = _independent(150)
    kw = {"n_bins": 6, "bootstrap": 15, "baseline": True}
    a = estimators.binned(t, y, x=np.arange(150), **kw)
    b = estimators.binned(
        torch.from_numpy(t), torch.from_numpy(y), x=torch.arange(150), **kw
    )
    assert a == b


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_stay_on_the_device_and_give_the_cpu_result():
    t, y = _independent(200)
    kw = {"n_bins": 6, "bootstrap": 12, "baseline": 3}
    cpu = estimators.binned(torch.from_numpy(t), torch.from_numpy(y), **kw)
    seen = []
    func = common._REGISTRY["binned"][0].__wrapped__

    def spy(tt, yy, *, x=None, **params):
        seen.append((tt.device.type, yy.device.type))
        return func(tt, yy, x=x, **params)

    cuda_t, cuda_y = torch.from_numpy(t).cuda(), torch.from_numpy(y).cuda()
    gpu = with_uncertainty(spy, "binned")(cuda_t, cuda_y, **kw)
    assert set(seen) == {("cuda", "cuda")} and len(seen) == 1 + 12 + 3
    assert gpu.i_ty_ci == pytest.approx(cpu.i_ty_ci)
    assert gpu.i_ty_baseline == pytest.approx(cpu.i_ty_baseline)


# ------------------------------------------------------------------ ceilings


def test_ceilings_of_binned_and_kde():
    t, y = _independent(64)
    r = _call("binned", t, y, baseline=1)
    assert r.i_xt_ceiling == 6.0  # log2 64, every sample a distinct input
    ids = np.repeat(np.arange(16), 4)  # 16 inputs seen 4 times each
    r = _call("binned", t, y, x=ids, bootstrap=10)
    assert r.i_xt_ceiling == pytest.approx(4.0)  # H(X) of the grouped inputs
    assert r.i_xt <= r.i_xt_ci[1] <= 4.0
    assert _call("kde", t, y, x=ids, baseline=1).i_xt_ceiling == 6.0  # x ignored
    assert _call("knn", t, y, x=t, baseline=1).i_xt_ceiling is None
    assert "i_xt_ceiling" not in _call("binned", t, y).as_dict()


def test_a_pinned_estimate_has_a_point_interval_at_its_ceiling():
    """Every sample in its own bin: at any n the estimate is log2 n, so the
    estimator's mean at this n has no spread."""
    t = np.arange(80.0)[:, None]
    r = _call("binned", t, np.arange(80) % 2, n_bins=1000, bootstrap=10)
    assert r.i_xt == pytest.approx(math.log2(80))
    assert r.i_xt_ci == pytest.approx((math.log2(80), math.log2(80)))


# ------------------------------------------------------------------ baselines


@pytest.mark.parametrize("name", estimators.available())
def test_permutation_baseline_of_an_independent_layer_lies_in_the_interval(name):
    """The issue's criterion, for every registered estimator."""
    t, y = _independent(160, seed=1)
    r = _call(name, t, y, bootstrap=20, baseline=True)  # I(T;Y) needs no x
    lo, hi = r.i_ty_ci
    assert lo <= r.i_ty <= hi
    assert lo <= r.i_ty_baseline <= hi, (name, r.i_ty, r.i_ty_ci, r.i_ty_baseline)


@pytest.mark.parametrize("name", estimators.available())
def test_permutation_baseline_of_a_label_carrying_layer_lies_below(name):
    """The same baseline is far below the interval of a layer that carries y,
    so the previous test is not passed by a baseline equal to the estimate."""
    t, y = _independent(160, seed=1)
    t[:, 0] += 3.0 * y
    r = _call(name, t, y, bootstrap=20, baseline=True)
    assert r.i_ty_baseline < r.i_ty_ci[0], (name, r.i_ty_ci, r.i_ty_baseline)


def test_binned_baseline_is_the_mean_under_independence():
    """Against a slow reference: the mean plug-in I(T;Y) over many label
    permutations. The baseline averages 10, so it lies within 3 standard
    errors (sd / sqrt(10)) of it."""
    t, y = _independent(200, seed=2)
    r = _call("binned", t, y, baseline=True)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)
        floor = np.array(
            [
                estimators.binned(t, rng.permutation(y), n_bins=6).i_ty
                for _ in range(400)
            ]
        )
    se = floor.std(ddof=1) / math.sqrt(DEFAULT_PERMUTATIONS)
    assert abs(r.i_ty_baseline - floor.mean()) < 3 * se
    # the floor is the plug-in bias, far above 0 with 36 cells for 200 samples
    assert floor.mean() > 5 * floor.std() / math.sqrt(400)


# ------------------------------------------------------------------ coverage

#: A discrete layer T with four values and binary labels Y, joint known:
#: p(t) = (0.4, 0.3, 0.2, 0.1), p(y=1 | t) = (0.9, 0.6, 0.3, 0.1).
P_T = np.array([0.4, 0.3, 0.2, 0.1])
P_Y1 = np.array([0.9, 0.6, 0.3, 0.1])
JOINT = np.stack([P_T * (1 - P_Y1), P_T * P_Y1], axis=1)


def _plug_in(counts):
    """Plug-in (I(T;Y), H(T)) in bits of count tables of shape (..., 4, 2)."""
    p = counts / counts.sum(axis=(-1, -2), keepdims=True)
    pt, py = p.sum(-1, keepdims=True), p.sum(-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.where(p > 0, p * np.log2(p / (pt * py)), 0.0).sum(axis=(-1, -2))
        h = np.where(pt > 0, -pt * np.log2(pt), 0.0).sum(axis=(-1, -2))
    return mi, h


def _coverage(n, bootstrap, trials, confidence=0.9):
    """Fraction of trials whose interval covers (E_n I, E_n H, I, H).

    E_n, the binned estimator's mean at n samples (what the interval is for),
    is computed exactly enough by 200,000 multinomial draws (its Monte-Carlo
    error, under 2e-4 bit, is a hundredth of the interval's half-width).
    """
    draws = np.random.default_rng(0).multinomial(n, JOINT.ravel(), size=200_000)
    mean_mi, mean_h = (v.mean() for v in _plug_in(draws.reshape(-1, 4, 2)))
    true_mi, true_h = (float(v) for v in _plug_in(JOINT))
    targets = np.array([mean_mi, mean_h, true_mi, true_h])
    hits = np.zeros(4)
    for trial in range(trials):
        cell = np.random.default_rng(10_000 + trial).choice(8, n, p=JOINT.ravel())
        t, y = (cell // 2).astype(float)[:, None], cell % 2
        r = estimators.binned(
            t, y, bootstrap=bootstrap, confidence=confidence, seed=trial
        )
        lo = np.array([r.i_ty_ci[0], r.i_xt_ci[0]] * 2)
        hi = np.array([r.i_ty_ci[1], r.i_xt_ci[1]] * 2)
        hits += (lo <= targets) & (targets <= hi)
    return hits / trials


def test_90_percent_intervals_cover_the_known_value_in_90_percent_of_200_trials():
    """The issue's criterion. Binned on a discrete layer: its target is known.

    I(T;Y) = 0.263 bits and H(T) = I(X;T) = 1.846 bits; with n = 200 the
    plug-in bias (+0.011 and -0.011 bits) is a fifth of the standard error
    (0.054 and 0.045 bits), so the intervals cover both the estimator's mean
    at n (their documented target) and the true values.

    Tolerance: 200 trials of a 90 % interval give a coverage with binomial
    standard deviation sqrt(0.9 * 0.1 / 200) = 2.1 %; 1000-trial runs of the
    method (the slow test) measure 88-90 %, i.e. 0-2 % below nominal from the
    normal approximation and the Monte-Carlo error of 50 half-samples.
    [0.83, 0.96] is the nominal 0.90, minus 2 % method error, +- 2.5 binomial
    standard deviations (a correct method fails about 1 time in 80; a method
    10 % off, e.g. intervals a third too narrow, fails nearly always).
    """
    coverage = _coverage(n=200, bootstrap=50, trials=200)
    assert np.all(coverage >= 0.83), coverage
    assert np.all(coverage <= 0.96), coverage


@pytest.mark.slow
@pytest.mark.parametrize("confidence", [0.9, 0.5])
def test_coverage_in_1000_trials_at_two_levels(confidence):
    """1000 trials (binomial sd 0.95 % at 90 %, 1.6 % at 50 %), 100 half-samples."""
    coverage = _coverage(n=400, bootstrap=100, trials=1000, confidence=confidence)
    assert np.all(np.abs(coverage - confidence) <= 0.04), coverage


@pytest.mark.slow
def test_knn_intervals_cover_the_gaussian_channel():
    """KSG's I(X;T) on a Gaussian channel, T = X + N(0, 0.75^2): 1 bit exactly
    (0.5 log2(1 + 1/0.5625) = 0.7296... bits; KSG's bias at n = 300 is under a
    tenth of its sd). 200 trials, same tolerance as the binned test."""
    truth = 0.5 * math.log2(1 + 1 / 0.5625)
    hits = 0
    for trial in range(200):
        rng = np.random.default_rng(trial)
        x = rng.standard_normal((300, 1))
        t = x + 0.75 * rng.standard_normal((300, 1))
        r = _call("knn", t, (x[:, 0] > 0).astype(int), x=x, bootstrap=50, seed=trial)
        hits += r.i_xt_ci[0] <= truth <= r.i_xt_ci[1]
    assert 0.83 <= hits / 200 <= 0.97


# ------------------------------------------------------------------ the monitor


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_a_monitored_run_stores_intervals_baselines_and_ceilings(tiny_mlp, tmp_path):
    """Passed through ``estimators={...}`` with no change to the monitor; the
    store round-trips the new columns; the stored values are a direct call's."""
    spec = {
        "binned": {"n_bins": 4, "bootstrap": 20, "baseline": 3},
        "kde": {"noise_variance": 0.05},
    }
    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=spec,
        schedule=[0, 1],
        logdir=tmp_path / "r",
        sinks=[RunStore(store_activations=True)],
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0)
        monitor.on_epoch_end(1)
        memory = monitor.information
    run = ibmonitor.load_run(tmp_path / "r")
    info = run.information
    for column in NEW_COLUMNS:
        assert column in info.columns and column in memory.columns
    binned = info[info["estimator"] == "binned"]
    kde = info[info["estimator"] == "kde"]
    assert binned[list(NEW_COLUMNS)].notna().all().all()
    assert kde[list(NEW_COLUMNS)].isna().all().all()  # not asked for
    assert (binned["i_xt_low"] <= binned["i_xt"]).all()
    assert (binned["i_ty"] <= binned["i_ty_high"]).all()
    assert (binned["i_xt_ceiling"] == 6.0).all()  # 64 distinct six-bit inputs
    config = {e["name"]: e["params"] for e in run.config["estimators"]}
    assert config["binned"]["bootstrap"] == 20
    # the stored row is what a direct call gives on the stored activations
    acts = run.activations(1)["default"]
    ids = input_ids(run.inputs(1)["default"])
    y = run.labels(1)["default"]
    row = binned[binned["epoch"] == 1].set_index("layer")
    for layer, t in acts.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EstimationWarning)
            direct = estimators.get("binned", **spec["binned"])(t, y, x=ids).as_dict()
        for column in ("i_xt", "i_ty", *NEW_COLUMNS):
            assert row.loc[layer, column] == pytest.approx(direct[column]), column
