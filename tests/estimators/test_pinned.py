"""Estimates pinned by the sample size or the estimator's scale are marked.

Non-regression tests for the issue "Any PyTorch model ... with planes that mean
something", point 5: on wide layers every binned and KDE estimate sat at
(log2 n, H(Y)) without a word.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _inputs import entropy_bits, load_reference, reference_files, subsample

from ibmonitor import estimators
from ibmonitor.estimators import PINNED_MARGIN, InformationEstimate, input_ids
from ibmonitor.exceptions import EstimationWarning

N = 512


@pytest.fixture
def wide():
    """A random 512-unit layer on 512 samples, its labels independent of it."""
    rng = np.random.default_rng(0)
    t = rng.standard_normal((N, 512)).astype(np.float32)
    y = rng.integers(0, 10, N)
    return t, y


@pytest.mark.parametrize("name", ["binned", "kde"])
def test_wide_random_layer_is_pinned_with_a_warning(wide, name):
    t, y = wide
    with pytest.warns(EstimationWarning, match=r"within 0.1 bit of log2\(512\)"):
        r = estimators.get(name)(t, y)
    assert r.pinned is not None and "own" in r.pinned
    assert r.as_dict()["pinned"] == 1.0
    assert r.i_xt == pytest.approx(math.log2(N), abs=PINNED_MARGIN)
    # Pinned: I(T;Y) is H(Y) although t is independent of y.
    assert r.i_ty == pytest.approx(entropy_bits(y), abs=PINNED_MARGIN)


def test_kde_of_a_layer_independent_of_the_labels_is_flagged(wide):
    """kde(t, y) with t independent of y gave I(T;Y) = H(Y) without a warning."""
    t, y = wide
    with pytest.warns(EstimationWarning, match="every sample is its own kernel"):
        r = estimators.kde(t[:, :16], y)
    assert r.pinned is not None
    assert r.i_ty > entropy_bits(y) - PINNED_MARGIN


def test_kde_both_bounds_carry_the_upper_bounds_flag(wide):
    t, y = wide
    with pytest.warns(EstimationWarning, match="its own kernel"):
        r = estimators.kde(t, y, bound="both")
    assert r.pinned is not None and r.as_dict()["pinned"] == 1.0


def test_kde_with_a_kernel_scaled_to_the_layer_is_not_pinned(wide):
    t, y = wide
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        r = estimators.kde(t, y, noise_variance=float(t.var()) * t.shape[1])
    assert r.pinned is None and r.as_dict()["pinned"] == 0.0
    assert r.i_xt < math.log2(N) - 1


def test_binned_with_one_unit_is_not_pinned():
    rng = np.random.default_rng(1)
    t = rng.standard_normal((N, 1))
    y = (t[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        r = estimators.binned(t, y)
    assert r.pinned is None and r.as_dict()["pinned"] == 0.0


def test_binned_pinned_with_repeated_inputs_uses_h_x_as_ceiling():
    """With x, the ceiling of I(X;T) is H(X): 256 inputs, each seen twice."""
    rng = np.random.default_rng(2)
    x = np.repeat(np.arange(256), 2)
    t = rng.standard_normal((256, 64))[x]
    y = x % 4
    with pytest.warns(EstimationWarning, match=r"of H\(X\) = 8.00 bits"):
        r = estimators.binned(t, y, x=x)
    assert r.i_xt == pytest.approx(8.0)
    assert r.pinned is not None


def test_binned_resolution_is_the_miller_madow_bias():
    t = np.array([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0]])
    r = estimators.binned(t, [0, 0, 1, 1, 2, 2])
    assert r.extras["resolution"] == pytest.approx((3 - 1) / (2 * 6 * math.log(2)))


def test_renyi_is_not_pinned_on_the_wide_layer_but_is_with_a_tiny_width(wide):
    t, y = wide
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        r = estimators.renyi(t, y)
    assert r.pinned is None
    assert r.i_xt < math.log2(N) - 1  # the default width leaves room to move
    with pytest.warns(EstimationWarning, match="its own kernel"):
        tiny = estimators.renyi(t, y, sigma=1e-3)
    assert tiny.pinned is not None
    assert tiny.i_xt == pytest.approx(math.log2(N))
    assert tiny.i_ty == pytest.approx(tiny.extras["s_y"], abs=1e-6)


def test_knn_never_pins(wide):
    t, y = wide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)  # no x: i_xt is NaN
        r = estimators.knn(t[:, :8], y)
    assert r.pinned is None and r.as_dict()["pinned"] == 0.0


def test_as_dict_pinned_column_defaults_to_zero():
    r = InformationEstimate("custom", 1.0, 0.5)
    assert r.as_dict() == {
        "estimator": "custom",
        "i_xt": 1.0,
        "i_ty": 0.5,
        "pinned": 0.0,
    }


NARROW = ("T_4", "T_5", "T_6")


@pytest.mark.skipif(not reference_files(), reason="no reference activations")
@pytest.mark.parametrize("file", ["act_epoch5", "act_epoch8000"])
def test_narrow_layers_of_the_12_bit_network_are_not_pinned(file):
    """The 4-, 3- and 2-unit tanh layers move in the plane: never pinned."""
    data = load_reference(file)
    y = data["y"]
    ids = input_ids(data["X"])
    idx = subsample(len(y), 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimationWarning)
        for layer in NARROW:
            assert estimators.binned(data[layer], y, x=ids).pinned is None
            assert estimators.kde(data[layer][idx], y[idx]).pinned is None
    # The 10-unit first layer, in contrast, is pinned at 12 bits by binning.
    with pytest.warns(EstimationWarning, match="own bin"):
        first = estimators.binned(data["T_1"], y, x=ids)
    assert first.pinned is not None
