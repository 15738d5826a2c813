"""Regularized activation maximization (issue 14): it raises the unit, within limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _explain_helpers import assert_untouched, prepared_bn_net, snapshot
from scipy.ndimage import gaussian_filter
from torch import nn

from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.explain import YOSINSKI_SETTINGS, feature_visualization, gaussian_blur
from ibmonitor.recording import record_activations
from ibmonitor.zoo import DigitsCNN


def _cnn():
    torch.manual_seed(0)
    return DigitsCNN(channels=4, hidden=8).double()


def _pooled(model, layer, x, unit):
    """The unit's activation as top_activations ranks it (record_activations)."""
    acts = record_activations(model, [layer], x[None], reduce="mean")
    return float(next(iter(acts.values()))[0, unit])


@pytest.mark.parametrize(("layer", "unit"), [("conv2", 1), ("fc1", 2), ("output", 3)])
def test_feature_visualization_raises_the_unit_from_its_start(layer, unit):
    model = _cnn()
    start = torch.rand(
        1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    x = feature_visualization(
        model, layer, unit, shape=(1, 8, 8), steps=40, init=start, value_range=(0, 1)
    )
    assert _pooled(model, layer, x, unit) > _pooled(model, layer, start, unit) + 0.01
    # From the default noise too (the start is that noise, clipped).
    x = feature_visualization(model, layer, unit, shape=(1, 8, 8), steps=40)
    noise = 0.01 * torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)  # fmt: skip
    assert _pooled(model, layer, x, unit) > _pooled(model, layer, noise, unit)


def test_feature_visualization_of_a_linear_unit_on_a_ball_is_its_weight_direction():
    # max w.x subject to ||x|| <= r is x = r w / ||w||.
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    x = feature_visualization(
        model, "output", 1, shape=(6,), steps=300, decay=0.0, blur_sigma=0.0,
        max_norm=2.0,
    )  # fmt: skip
    w = model.weight.detach()[1]
    assert torch.allclose(x, 2.0 * w / w.norm(), atol=1e-4)


def test_feature_visualization_respects_its_constraints():
    model = _cnn()
    x = feature_visualization(
        model, "conv2", 0, shape=(1, 8, 8), steps=30, value_range=(-0.5, 0.25),
        max_norm=1.5, lr=0.5,
    )  # fmt: skip
    assert x.shape == (1, 8, 8)
    assert float(x.min()) >= -0.5 and float(x.max()) <= 0.25
    assert float(x.norm()) <= 1.5 + 1e-9
    x = feature_visualization(model, "conv2", 0, shape=(1, 8, 8), steps=30, lr=0.5)
    assert float(x.norm()) > 1.5  # the ball did bind above


def test_feature_visualization_is_deterministic_and_leaves_the_model_alone():
    model = prepared_bn_net()
    before = snapshot(model)
    a = feature_visualization(
        model, "fc1", 2, shape=(1, 4, 4), steps=10, random_state=5
    )
    assert_untouched(model, before)
    b = feature_visualization(
        model, "fc1", 2, shape=(1, 4, 4), steps=10, random_state=5
    )
    c = feature_visualization(
        model, "fc1", 2, shape=(1, 4, 4), steps=10, random_state=6
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_feature_visualization_clipping_of_small_norm_and_small_contribution():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh()).double()
    x = feature_visualization(
        model, "1", 0, shape=(2, 6, 6), steps=5, blur_sigma=0.0, norm_percentile=50
    )
    zero_pixels = (x == 0).all(dim=0)
    assert float(zero_pixels.double().mean()) == pytest.approx(0.5)
    x = feature_visualization(
        model, "1", 0, shape=(2, 6, 6), steps=5, blur_sigma=0.0,
        contribution_percentile=90,
    )  # fmt: skip
    zero_pixels = (x == 0).all(dim=0)
    assert float(zero_pixels.double().mean()) >= 0.85


def test_feature_visualization_of_one_spatial_position():
    model = _cnn()
    x = feature_visualization(model, "conv1", (2, 4, 4), shape=(1, 8, 8), steps=30)
    with torch.no_grad():
        after = model.conv1(x[None])[0, 2, 4, 4]
        start = 0.01 * torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64)  # fmt: skip
        before = model.conv1(start[None])[0, 2, 4, 4]
    assert float(after) > float(before) + 0.1


def test_yosinski_settings_run():
    model = _cnn()
    for decay, sigma, every, norm_pct, contrib_pct in YOSINSKI_SETTINGS:
        x = feature_visualization(
            model, "conv2", 1, shape=(1, 8, 8), steps=8, decay=decay,
            blur_sigma=sigma, blur_every=every, norm_percentile=norm_pct,
            contribution_percentile=contrib_pct,
        )  # fmt: skip
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("shape", [(3, 12, 12), (2, 15), (1, 9, 10, 11)])
def test_gaussian_blur_matches_scipy(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape)
    sigma = 1.3 if len(shape) < 4 else 0.8
    got = gaussian_blur(torch.from_numpy(image), sigma).numpy()
    spatial = (0.0,) + (sigma,) * (len(shape) - 1)
    expected = gaussian_filter(image, sigma=spatial, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": ()}, "'shape'"),
        ({"shape": (1, 0)}, "'shape'"),
        ({"shape": (1, 8, 8), "steps": 0}, "'steps'"),
        ({"shape": (1, 8, 8), "decay": 1.0}, "'decay'"),
        ({"shape": (1, 8, 8), "lr": 0.0}, "'lr'"),
        ({"shape": (1, 8, 8), "norm_percentile": 101}, "'norm_percentile'"),
        ({"shape": (1, 8, 8), "value_range": (1, 0)}, "'value_range'"),
        ({"shape": (1, 8, 8), "max_norm": 0}, "'max_norm'"),
        ({"shape": (1, 8, 8), "init": torch.zeros(8, 8)}, "'init'"),
    ],
)
def test_feature_visualization_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        feature_visualization(_cnn(), "conv2", 0, **kwargs)


def test_feature_visualization_warns_when_the_unit_is_dead():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU()).double()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # both units off everywhere near 0
    with pytest.warns(EstimationWarning, match="was 0 at every step"):
        feature_visualization(model, "1", 0, shape=(3,), steps=5)


def test_feature_visualization_bad_units_and_inference_mode():
    model = _cnn()
    with pytest.raises(InvalidParameterError, match="Unit 4 is out of range"):
        feature_visualization(model, "conv2", 4, shape=(1, 8, 8), steps=1)
    with pytest.raises(InvalidParameterError, match="outputs shape"):
        feature_visualization(model, "conv2", (0, 9, 0), shape=(1, 8, 8), steps=1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        feature_visualization(model, "conv2", 0, shape=(1, 8, 8), steps=1)
