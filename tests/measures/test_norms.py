from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.measures import (
    NORM_COLUMNS,
    conv_operator_norm,
    norms,
    path_norm,
    spectral_norm,
)

F64 = torch.float64


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


def test_norms_match_direct_computation():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    init = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    frame = norms(model, init, input_shape=(6,), tol=1e-10, n_iter=500)
    assert isinstance(frame, pd.DataFrame)
    assert tuple(frame.columns) == NORM_COLUMNS
    assert list(frame["layer"]) == ["0", "2", "total"]
    assert list(frame["module"]) == ["Linear", "Linear", "Sequential"]
    assert list(frame["n_params"]) == [35, 18, 53]
    fro2 = dist2 = log_spec = 0.0
    for row, layer in zip(frame.itertuples(), (model[0], model[2])):
        w = layer.weight.detach()
        key = "0" if layer is model[0] else "2"
        w0 = init[f"{key}.weight"]
        spec = float(torch.linalg.matrix_norm(w, ord=2))
        assert row.frobenius == pytest.approx(float(torch.linalg.matrix_norm(w)))
        assert row.spectral == pytest.approx(spec, rel=1e-8)
        assert row.distance_to_init == pytest.approx(float((w - w0).norm()))
        assert math.isnan(row.spectral_fft)
        assert math.isnan(row.path)
        fro2 += row.frobenius**2
        dist2 += row.distance_to_init**2
        log_spec += math.log(spec)
    total = frame.iloc[-1]
    assert total["frobenius"] == pytest.approx(math.sqrt(fro2))
    assert total["distance_to_init"] == pytest.approx(math.sqrt(dist2))
    assert total["log_spectral_sum"] == pytest.approx(log_spec, rel=1e-8)
    assert math.isnan(total["spectral"])
    assert total["path"] > 0


def test_norms_without_init_or_shape_give_nan():
    frame = norms(nn.Sequential(nn.Linear(3, 2)))
    assert frame["distance_to_init"].isna().all()
    assert frame["path"].isna().all()


def test_path_norm_two_layer_network_by_hand():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    w1 = model[0].weight.detach()
    b1 = model[0].bias.detach()
    w2 = model[2].weight.detach()
    b2 = model[2].bias.detach()
    # Sum over paths input i -> hidden j -> output of w1[j,i]^2 w2[0,j]^2, plus
    # the paths from the constant unit through the biases.
    by_hand = 0.0
    for j in range(3):
        for i in range(2):
            by_hand += float(w1[j, i] ** 2 * w2[0, j] ** 2)
        by_hand += float(b1[j] ** 2 * w2[0, j] ** 2)
    by_hand += float(b2[0] ** 2)
    assert path_norm(model, (2,)) == pytest.approx(by_hand, rel=1e-12)
    frame = norms(model, input_shape=(2,))
    assert frame.iloc[-1]["path"] == pytest.approx(by_hand, rel=1e-12)


def test_path_norm_leaves_model_untouched():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    before = [p.detach().clone() for p in model.parameters()]
    path_norm(model, (2,))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_spectral_norm_power_iteration_matches_svd():
    gen = torch.Generator().manual_seed(0)
    mat = torch.randn(7, 4, generator=gen, dtype=F64)
    exact = float(torch.linalg.matrix_norm(mat, ord=2))
    assert spectral_norm(mat, tol=1e-12, n_iter=1000) == pytest.approx(exact, rel=1e-8)
    kernel = torch.randn(3, 2, 3, 3, generator=gen, dtype=F64)
    reshaped = float(torch.linalg.matrix_norm(kernel.reshape(3, -1), ord=2))
    assert spectral_norm(kernel, tol=1e-12, n_iter=1000) == pytest.approx(
        reshaped, rel=1e-8
    )
    assert spectral_norm(torch.zeros(3, 3)) == 0.0


def _circular_conv_matrix(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """The dense matrix of x -> conv2d(circular_pad(x), kernel) on size x size."""
    in_ch = kernel.shape[1]
    n = in_ch * size * size
    basis = torch.eye(n, dtype=kernel.dtype).reshape(n, in_ch, size, size)
    pad = kernel.shape[-1] // 2
    out = F.conv2d(F.pad(basis, (pad, pad, pad, pad), mode="circular"), kernel)
    return out.reshape(n, -1).T


def test_conv_operator_norm_matches_explicit_circular_operator():
    gen = torch.Generator().manual_seed(1)
    kernel = torch.randn(3, 2, 3, 3, generator=gen, dtype=F64)
    exact = float(torch.linalg.matrix_norm(_circular_conv_matrix(kernel, 5), ord=2))
    assert conv_operator_norm(kernel, (5, 5)) == pytest.approx(exact, rel=1e-10)
    # groups: block diagonal over the two groups
    grouped = torch.randn(4, 1, 3, 3, generator=gen, dtype=F64)
    blocks = [
        float(
            torch.linalg.matrix_norm(
                _circular_conv_matrix(grouped[2 * g : 2 * g + 2], 5), ord=2
            )
        )
        for g in range(2)
    ]
    assert conv_operator_norm(grouped, (5, 5), groups=2) == pytest.approx(max(blocks))
    with pytest.raises(InvalidParameterError, match="smaller than the kernel"):
        conv_operator_norm(kernel, (2, 2))


def test_norms_exact_conv_from_example_input():
    model = SmallCNN().double()
    x = torch.randn(4, 2, 6, 6, dtype=F64)
    frame = norms(model, example_input=x, exact_conv=True).set_index("layer")
    expected = conv_operator_norm(model.conv1.weight, (6, 6))
    assert frame.loc["conv1", "spectral_fft"] == pytest.approx(expected)
    assert math.isnan(frame.loc["conv2", "spectral_fft"])  # stride 2: not exact
    assert math.isnan(frame.loc["fc", "spectral_fft"])
    assert frame.loc["total", "path"] > 0  # input shape taken from example_input
    fixed = norms(model, conv_input_sizes=(6, 6)).set_index("layer")
    assert fixed.loc["conv1", "spectral_fft"] == pytest.approx(expected)
    per_layer = norms(model, conv_input_sizes={"conv1": (8, 8)}).set_index("layer")
    assert per_layer.loc["conv1", "spectral_fft"] == pytest.approx(
        conv_operator_norm(model.conv1.weight, (8, 8))
    )
    with pytest.raises(InvalidParameterError, match="needs conv_input_sizes"):
        norms(model, exact_conv=True)


def test_norms_on_digits_cnn_rows():
    from ibmonitor.zoo import DigitsCNN

    model = DigitsCNN(channels=4, hidden=8)
    frame = norms(model, input_shape=(1, 8, 8))
    assert list(frame["layer"]) == ["conv1", "conv2", "fc1", "fc2", "total"]
    assert frame.iloc[-1]["n_params"] == sum(p.numel() for p in model.parameters())
    assert np.isfinite(frame.iloc[-1]["log_spectral_sum"])


def test_norms_rejects_incomplete_init():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with pytest.raises(InvalidParameterError, match=r"lacks '1\.weight'"):
        norms(model, {"0.weight": torch.zeros(2, 3)})
    with pytest.raises(InvalidParameterError, match="'init' parameter of norms"):
        norms(model, 3)
