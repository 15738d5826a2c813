"""Top-activating inputs (issue 14): checked against a sort of hand-made activations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _explain_helpers import assert_untouched, prepared_bn_net, snapshot
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.explain import top_activations
from ibmonitor.explain.top_inputs import TOP_ACTIVATIONS_COLUMNS


def _expected(acts: np.ndarray, k: int) -> pd.DataFrame:
    """The reference: for every unit, a stable sort of -activation, first k."""
    rows = []
    for unit in range(acts.shape[1]):
        order = np.argsort(-acts[:, unit], kind="stable")[:k]
        for rank, i in enumerate(order, start=1):
            rows.append((unit, rank, int(i), float(acts[i, unit])))
    return pd.DataFrame(rows, columns=list(TOP_ACTIVATIONS_COLUMNS))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def test_top_activations_of_a_dense_layer_against_a_sort():
    model = _mlp()
    x = torch.randn(50, 4, dtype=torch.float64)
    table = top_activations(model, "1", x, k=5, batch_size=7)
    with torch.no_grad():
        acts = model[1](model[0](x)).numpy()
    pd.testing.assert_frame_equal(table, _expected(acts, 5))
    assert list(table.columns) == ["unit", "rank", "index", "activation"]


def test_top_activations_of_a_conv_layer_pools_the_mean_over_space():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()).double()
    x = torch.randn(20, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        maps = model(x)
    table = top_activations(model, "0", x, k=3)
    expected = _expected(model[0](x).detach().mean(dim=(2, 3)).numpy(), 3)
    pd.testing.assert_frame_equal(table, expected)
    # Zeiler & Fergus's ranking: the strongest position of the map.
    table = top_activations(model, "1", x, k=3, reduce="max")
    pd.testing.assert_frame_equal(table, _expected(maps.amax(dim=(2, 3)).numpy(), 3))


def test_top_activations_ties_keep_the_earlier_input_and_k_is_capped():
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0]])
    table = top_activations(model, "0", x, k=10)
    assert table["index"].tolist() == [1, 2, 4, 3, 0]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]


def test_top_activations_units_subset_and_output_layer():
    model = _mlp()
    x = torch.randn(30, 4, dtype=torch.float64)
    with torch.no_grad():
        out = model(x).numpy()
    table = top_activations(model, "output", x, k=4, units=[2, 0])
    ref = _expected(out, 4)
    expected = pd.concat([ref[ref.unit == 2], ref[ref.unit == 0]], ignore_index=True)
    pd.testing.assert_frame_equal(table, expected)
    single = top_activations(model, model[2], x, k=2, units=1)
    assert single["unit"].tolist() == [1, 1]
    assert single["index"].tolist() == ref[ref.unit == 1]["index"].tolist()[:2]


def test_top_activations_with_a_dataloader_and_a_dict_model():
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, features):
            return self.fc(features)

    torch.manual_seed(0)
    model = DictModel().double()
    x = torch.randn(25, 3, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, torch.zeros(25)), batch_size=8)
    from_loader = top_activations(model, "fc", loader, k=4)
    from_dict = top_activations(model, "fc", {"features": x}, k=4)
    with torch.no_grad():
        acts = model.fc(x).numpy()
    pd.testing.assert_frame_equal(from_loader, _expected(acts, 4))
    pd.testing.assert_frame_equal(from_dict, _expected(acts, 4))


def test_top_activations_leaves_the_model_as_found():
    model = prepared_bn_net()
    x = torch.randn(12, 1, 4, 4, dtype=torch.float64)
    before = snapshot(model)
    table = top_activations(model, "bn2d", x, k=2)
    assert_untouched(model, before)
    model.eval()
    with torch.no_grad():
        acts = model.bn2d(model.conv(x)).mean(dim=(2, 3)).numpy()
    pd.testing.assert_frame_equal(table, _expected(acts, 2))


def test_top_activations_bad_parameters():
    model, x = _mlp(), torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="'k'"):
        top_activations(model, "1", x, k=0)
    with pytest.raises(InvalidParameterError, match="'reduce'"):
        top_activations(model, "1", x, reduce="flatten")
    with pytest.raises(InvalidParameterError, match="Unknown layer 'fc9'"):
        top_activations(model, "fc9", x)
    with pytest.raises(InvalidParameterError, match="Unit 6 is out of range"):
        top_activations(model, "1", x, units=[6])
    with pytest.raises(InvalidParameterError, match="'units'"):
        top_activations(model, "1", x, units=[])
    with pytest.raises(InvalidParameterError, match="'layer'"):
        top_activations(model, ["0", "1"], x)
    with pytest.raises(InvalidParameterError, match="not part of the model"):
        top_activations(model, nn.ReLU(), x)
