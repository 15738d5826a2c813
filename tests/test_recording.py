from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor._state import preserve_state
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.recording import (
    activation_kind,
    layer_shapes,
    record_activations,
    resolve_layers,
)


class MixedNet(nn.Module):
    """Conv2d, a Sequential block and functional activations (no activation module)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 2 * 2, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = F.relu(self.block(h))
        h = torch.tanh(self.head(h.flatten(1)))
        return self.out(h)


class Exploding(nn.Module):
    """Identity that raises when ``armed`` (to fail mid-pass)."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return x


def _all_hooks(model):
    return [h for m in model.modules() for h in m._forward_hooks.values()]


def test_resolve_layers_default_picks_activations_and_output(tiny_mlp):
    layers = resolve_layers(tiny_mlp.model)
    assert list(layers) == ["1", "3", "output"]
    assert layers["output"] is tiny_mlp.model


def test_resolve_layers_default_falls_back_to_linear_and_conv():
    model = MixedNet()
    assert list(resolve_layers(model)) == ["conv", "block.0", "head", "out", "output"]


def test_resolve_layers_sequential_ending_in_activation_has_no_duplicate_output():
    model = nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=1))
    assert list(resolve_layers(model)) == ["1"]
    linear_only = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert list(resolve_layers(linear_only)) == ["0", "1"]


def test_resolve_layers_by_name_type_and_callable(tiny_mlp):
    model = tiny_mlp.model
    assert list(resolve_layers(model, ["4", "0"])) == ["0", "4"]  # model order
    assert list(resolve_layers(model, "2")) == ["2"]
    assert list(resolve_layers(model, ["0", "output"])) == ["0", "output"]
    assert list(resolve_layers(model, nn.Linear)) == ["0", "2", "4"]
    assert list(resolve_layers(model, [nn.Tanh, "4"])) == ["1", "4"]
    chosen = resolve_layers(model, lambda name, m: isinstance(m, nn.ReLU))
    assert list(chosen) == ["3"]


def test_resolve_layers_unknown_name_lists_available(tiny_mlp):
    with pytest.raises(InvalidParameterError, match="Unknown layer 'fc9'") as info:
        resolve_layers(tiny_mlp.model, ["fc9"])
    assert "Available layers: ['0', '1', '2', '3', '4', 'output']" in str(info.value)


def test_resolve_layers_lists_at_most_20_names():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(30)])
    with pytest.raises(InvalidParameterError, match=r"\.\.\. \(11 more\)"):
        resolve_layers(model, "nope")


def test_resolve_layers_rejects_empty_and_bad_selections(tiny_mlp):
    with pytest.raises(InvalidParameterError, match="'layers' is empty"):
        resolve_layers(tiny_mlp.model, [])
    with pytest.raises(InvalidParameterError, match="No module of type Conv2d"):
        resolve_layers(tiny_mlp.model, nn.Conv2d)
    with pytest.raises(InvalidParameterError, match="selected no module"):
        resolve_layers(tiny_mlp.model, lambda name, m: False)
    with pytest.raises(InvalidParameterError, match="must be None, a module name"):
        resolve_layers(tiny_mlp.model, [3])


def test_record_activations_shapes_and_values(tiny_mlp):
    model, x = tiny_mlp.model, tiny_mlp.x
    acts = record_activations(model, None, x, batch_size=10)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "1": (64, 8),
        "3": (64, 4),
        "output": (64, 2),
    }
    with torch.no_grad():
        expected_tanh = model[1](model[0](x))
        expected_out = model(x)
    # Batches of 10 against one batch of 64: BLAS may sum in another order, so
    # the values agree to float32 rounding (a few 1e-8), not bit for bit.
    torch.testing.assert_close(acts["1"], expected_tanh, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(acts["output"], expected_out, rtol=1e-6, atol=1e-7)
    assert all(not t.requires_grad for t in acts.values())


def test_record_activations_does_not_depend_on_batch_size(tiny_mlp):
    a = record_activations(tiny_mlp.model, None, tiny_mlp.x, batch_size=7)
    b = record_activations(tiny_mlp.model, None, tiny_mlp.x, batch_size=64)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_hooks_removed_after_normal_run(tiny_mlp):
    record_activations(tiny_mlp.model, None, tiny_mlp.x)
    assert _all_hooks(tiny_mlp.model) == []


def test_hooks_removed_and_modes_restored_when_the_model_raises():
    boom = Exploding()
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), boom, nn.Linear(3, 2))
    model.train()
    model[3].eval()
    boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        record_activations(model, None, torch.randn(8, 4))
    assert _all_hooks(model) == []
    assert model.training
    assert model[0].training
    assert not model[3].training


def test_training_flags_and_rng_states_restored():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))
    model.train()
    model[3].eval()
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002
    py_state = random.getstate()
    data = TensorDataset(torch.randn(20, 4), torch.zeros(20))
    loader = DataLoader(data, batch_size=6, shuffle=True)  # iterating draws RNG
    torch_state = torch.get_rng_state()
    record_activations(model, None, loader)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
    assert random.getstate() == py_state
    assert [m.training for m in model.modules()] == [True, True, True, True, False]


def test_preserve_state_restores_after_rng_use():
    model = nn.Sequential(nn.Linear(2, 2))
    before = torch.get_rng_state()
    with preserve_state(model):
        torch.rand(5)
        np.random.rand(3)  # noqa: NPY002
        random.random()
        model.eval()
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training


def test_dataloader_probe_equals_tensor_probe(tiny_mlp):
    loader = DataLoader(TensorDataset(tiny_mlp.x, tiny_mlp.y), batch_size=10)
    a = record_activations(tiny_mlp.model, None, loader)
    b = record_activations(tiny_mlp.model, None, tiny_mlp.x)
    for name in b:
        torch.testing.assert_close(a[name], b[name])
    c = record_activations(tiny_mlp.model, None, tiny_mlp.x.numpy())
    torch.testing.assert_close(c["1"], b["1"])


def test_custom_model_with_conv_sequential_and_functional_activations():
    model = MixedNet()
    x = torch.randn(6, 1, 4, 4)
    acts = record_activations(model, None, x)
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "conv": (6, 3 * 4 * 4),
        "block.0": (6, 4 * 4 * 4),
        "head": (6, 5),
        "out": (6, 2),
        "output": (6, 2),
    }
    torch.testing.assert_close(acts["out"], acts["output"])


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_reduce_pools_spatial_axes(reduce):
    model = MixedNet()
    x = torch.randn(5, 1, 4, 4)
    acts = record_activations(model, ["conv", "head"], x, reduce=reduce)
    with torch.no_grad():
        maps = model.conv(x)
    expected = maps.mean(dim=(2, 3)) if reduce == "mean" else maps.amax(dim=(2, 3))
    torch.testing.assert_close(acts["conv"], expected)
    assert tuple(acts["head"].shape) == (5, 5)  # 2-D outputs are left alone


def test_reduce_rejects_unknown_mode(tiny_mlp):
    with pytest.raises(InvalidParameterError, match="'reduce' parameter"):
        record_activations(tiny_mlp.model, None, tiny_mlp.x, reduce="sum")


def test_inputs_are_cast_and_moved_to_the_model(tiny_mlp):
    model = tiny_mlp.model.double()
    acts = record_activations(model, None, tiny_mlp.x.float(), device=None)
    assert acts["1"].dtype == torch.float64
    assert acts["1"].device == next(model.parameters()).device
    acts = record_activations(model.float(), None, tiny_mlp.x.double(), device="cpu")
    assert acts["1"].dtype == torch.float32


def test_half_activations_become_float32():
    model = nn.Sequential(nn.Linear(3, 2)).to(torch.bfloat16)
    acts = record_activations(model, ["0"], torch.randn(4, 3))
    assert acts["0"].dtype == torch.float32


def test_inplace_activation_does_not_change_the_recorded_linear():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.randn(16, 3)
    acts = record_activations(model, ["0"], x)
    with torch.no_grad():
        expected = model[0](x)
    torch.testing.assert_close(acts["0"], expected)
    assert (acts["0"] < 0).any()


def test_layer_producing_no_output_is_named_with_a_hint():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.spare = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(InvalidParameterError, match="'spare' produced no output") as e:
        record_activations(Unused(), ["fc", "spare"], torch.randn(4, 3))
    assert "used in forward()" in str(e.value)


def test_layer_called_twice_is_an_error():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(self.fc(x))

    with pytest.raises(InvalidParameterError, match="called 2 times"):
        record_activations(Twice(), ["fc"], torch.randn(4, 3))


def test_layer_with_batch_not_first_is_an_error():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Identity()

        def forward(self, x):
            return self.t(x.T)

    with pytest.raises(InvalidParameterError, match="returned 3 rows for a batch of 4"):
        record_activations(Transposed(), ["t"], torch.randn(4, 3))


def test_empty_probe_set_is_an_error(tiny_mlp):
    with pytest.raises(InvalidParameterError, match="probe set is empty"):
        record_activations(tiny_mlp.model, None, tiny_mlp.x[:0])
    assert _all_hooks(tiny_mlp.model) == []


def test_tuple_outputs_use_the_first_tensor():
    model = nn.Sequential(nn.Linear(3, 4))
    gru = nn.GRU(4, 5, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model
            self.gru = gru

        def forward(self, x):
            out, _ = self.gru(self.lin(x))
            return out[:, -1]

    acts = record_activations(Net(), ["gru"], torch.randn(6, 2, 3))
    assert tuple(acts["gru"].shape) == (6, 2 * 5)


def test_layer_shapes_reports_shape_and_width():
    model = MixedNet()
    layers = resolve_layers(model)
    shapes = layer_shapes(model, layers, torch.randn(2, 1, 4, 4), reduce="mean")
    assert shapes["conv"] == {"shape": [3, 4, 4], "n_units": 3}
    assert shapes["head"] == {"shape": [5], "n_units": 5}


def test_activation_kind():
    assert activation_kind(nn.Tanh()) == "tanh"
    assert activation_kind(nn.Sigmoid()) == "sigmoid"
    assert activation_kind(nn.ReLU()) == "relu"
    assert activation_kind(nn.GELU()) == "relu"
    assert activation_kind(nn.Linear(2, 2)) is None


def test_layer_changing_width_between_batches_is_an_error():
    class Ragged(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Identity()

        def forward(self, x):
            return self.t(x[:, : x.shape[0]])

    with pytest.raises(InvalidParameterError, match="different widths"):
        record_activations(Ragged(), ["t"], torch.randn(10, 8), batch_size=4)


def test_layer_returning_no_tensor_is_an_error():
    class NoTensor(nn.Module):
        def forward(self, x):
            return {"n": 3}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd = NoTensor()

        def forward(self, x):
            self.odd(x)
            return x

    with pytest.raises(InvalidParameterError, match="'odd' returned dict"):
        record_activations(Net(), ["odd"], torch.randn(4, 3))
