from __future__ import annotations

import random
import re
import warnings

# Makes torchvision (and timm) importable beside the CPU build of torch, as
# tests/conftest.py does before any test module is imported.
import _models  # noqa: F401
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

from ibmonitor._state import preserve_state
from ibmonitor.activations import activation_kind
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.recording import (
    LayerSelection,
    is_activation,
    is_block,
    record_activations,
    resolve_layers,
    select_layers,
    unwrap_model,
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
    # The model's output is the tensor 'out' returns: recorded once, as 'out'.
    assert {k: tuple(v.shape) for k, v in acts.items()} == {
        "conv": (6, 3 * 4 * 4),
        "block.0": (6, 4 * 4 * 4),
        "head": (6, 5),
        "out": (6, 2),
    }
    with torch.no_grad():
        torch.testing.assert_close(acts["out"], model(x))


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


@pytest.mark.parametrize("reduce", ["sum", None])
def test_reduce_rejects_unknown_mode(tiny_mlp, reduce):
    with pytest.raises(InvalidParameterError, match="'reduce' parameter"):
        record_activations(tiny_mlp.model, None, tiny_mlp.x, reduce=reduce)


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


def test_recurrent_layer_records_its_sequence_output():
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

    acts = record_activations(Net(), ["gru"], torch.randn(6, 2, 3), reduce="flatten")
    assert tuple(acts["gru"].shape) == (6, 2 * 5)


def test_select_layers_reports_shape_and_width():
    model = MixedNet()
    shapes = select_layers(model, None, torch.randn(2, 1, 4, 4), reduce="mean").shapes
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


# --------------------------------------------------------------------------
# Any PyTorch model: default selection, structured inputs and outputs, reduce
# (issue "Any PyTorch model: torchvision, timm, Hugging Face, nn.Transformer,
# RNNs, with planes that mean something").


def _assert_no_hooks(model):
    assert _all_hooks(model) == []


def _check_selection(selection, model):
    assert isinstance(selection, LayerSelection)
    line = selection.summary()
    assert "\n" not in line
    assert line.startswith(f"recording {len(selection.layers)} layer")
    assert set(selection.shapes) == set(selection.layers)
    assert not set(selection.skipped) & set(selection.layers)
    _assert_no_hooks(model)
    return line


def test_default_selection_on_torchvision_resnet18():
    """Non-regression: BasicBlock calls its ReLU twice; that crashed."""
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(3, 3, 32, 32)
    selection = select_layers(model, None, x[:2])
    _check_selection(selection, model)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert selection.names == ["relu", *blocks, "output"]
    assert selection.skipped["layer1.0.relu"] == "inside block 'layer1.0'"
    assert selection.shapes["layer4.1"] == {"shape": [512, 1, 1], "n_units": 512}
    acts = record_activations(model, None, x)
    assert list(acts) == selection.names
    with torch.no_grad():
        model.eval()
        expected = model(x)
    torch.testing.assert_close(acts["output"], expected)
    assert tuple(acts["layer1.0"].shape) == (3, 64 * 8 * 8)  # "auto" flattens maps
    pooled = record_activations(model, selection, x, reduce="mean")
    assert tuple(pooled["layer1.0"].shape) == (3, 64)
    _assert_no_hooks(model)


def test_default_selection_on_timm_models():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    selection = select_layers(model, None, torch.randn(2, 3, 32, 32))
    _check_selection(selection, model)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert selection.names == ["act1", *blocks, "output"]
    assert selection.skipped["layer2.1.act2"] == "inside block 'layer2.1'"

    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=32,
        patch_size=8,
        depth=2,
    )
    selection = select_layers(vit, None, torch.randn(2, 3, 32, 32))
    _check_selection(selection, vit)
    assert selection.names == ["blocks.0", "blocks.1", "output"]
    # (batch, tokens, hidden) blocks: "auto" averages the tokens away.
    assert selection.shapes["blocks.0"] == {"shape": [17, 192], "n_units": 192}
    assert is_activation(vit.blocks[0].mlp.act)


def _tiny_bert():
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
        max_position_embeddings=16,
    )
    return BertForSequenceClassification(config).eval()


def _bert_batch(n=5, tokens=7):
    ids = torch.randint(0, 100, (n, tokens))
    mask = torch.ones(n, tokens, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_default_selection_on_hugging_face_bert_with_mask_aware_pooling():
    model = _tiny_bert()
    batch = _bert_batch()
    selection = select_layers(model, None, {k: v[:2] for k, v in batch.items()})
    _check_selection(selection, model)
    assert selection.names == [
        "bert.encoder.layer.0",
        "bert.encoder.layer.1",
        "bert.pooler.activation",
        "output",
    ]
    act = "bert.encoder.layer.0.intermediate.intermediate_act_fn"
    assert selection.skipped[act] == "inside block 'bert.encoder.layer.0'"
    assert is_activation(model.bert.encoder.layer[0].intermediate.intermediate_act_fn)
    assert is_block(model.bert.encoder.layer[0])

    acts = record_activations(model, None, batch, batch_size=2)
    assert list(acts) == selection.names
    captured = {}
    handle = model.bert.encoder.layer[1].register_forward_hook(
        lambda m, a, out: captured.setdefault(
            "h", out[0] if isinstance(out, tuple) else out
        )
    )
    with torch.no_grad():
        logits = model(**batch).logits
    handle.remove()
    hidden = captured["h"]  # (batch, tokens, hidden)
    mask = batch["attention_mask"].bool()
    by_hand = torch.stack(
        [hidden[i][mask[i]].mean(dim=0) for i in range(hidden.shape[0])]
    )
    torch.testing.assert_close(acts["bert.encoder.layer.1"], by_hand)
    torch.testing.assert_close(acts["output"], logits)
    assert not torch.allclose(acts["bert.encoder.layer.1"][1], hidden[1].mean(dim=0))

    first = record_activations(model, ["bert.encoder.layer.1"], batch, reduce="first")
    torch.testing.assert_close(first["bert.encoder.layer.1"], hidden[:, 0])
    top = record_activations(model, ["bert.encoder.layer.1"], batch, reduce="max")
    by_hand = torch.stack([hidden[i][mask[i]].amax(dim=0) for i in range(5)])
    torch.testing.assert_close(top["bert.encoder.layer.1"], by_hand)
    flat = record_activations(model, ["bert.encoder.layer.1"], batch, reduce="flatten")
    assert tuple(flat["bert.encoder.layer.1"].shape) == (5, 7 * 32)
    _assert_no_hooks(model)


def test_default_selection_on_hugging_face_vit():
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=16,
        patch_size=8,
        num_channels=3,
        num_labels=3,
    )
    model = ViTForImageClassification(config)
    x = torch.randn(4, 3, 16, 16)
    selection = select_layers(model, None, x[:2])
    _check_selection(selection, model)
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "ViTLayer"]
    assert selection.names == [*blocks, "output"]
    assert not any(
        re.search(r"(query|key|value|q_proj|k_proj)", n) for n in selection.names
    )
    acts = record_activations(model, selection, x)
    assert tuple(acts[blocks[0]].shape) == (4, 32)
    assert tuple(acts["output"].shape) == (4, 3)  # the ModelOutput's logits


class EncoderClassifier(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(50, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=batch_first)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = self.emb(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.enc(h)
        return self.fc(h.mean(dim=1 if self.batch_first else 0))


@pytest.mark.parametrize(
    "batch_first", [True, False], ids=["batch_first", "time_first"]
)
def test_default_selection_on_a_transformer_encoder_classifier(batch_first):
    """Non-regression: the default used to choose the functional out_proj."""
    model = EncoderClassifier(batch_first)
    x = torch.randint(0, 50, (5, 6))
    selection = select_layers(model, None, x[:2])
    _check_selection(selection, model)
    assert selection.names == ["enc.layers.0", "enc.layers.1", "output"]
    acts = record_activations(model, None, x)
    captured = {}
    handle = model.enc.layers[1].register_forward_hook(
        lambda m, a, out: captured.setdefault("h", out)
    )
    with torch.no_grad():
        model.eval()
        model(x)
    handle.remove()
    hidden = captured["h"] if batch_first else captured["h"].transpose(0, 1)
    torch.testing.assert_close(acts["enc.layers.1"], hidden.mean(dim=1))
    with pytest.raises(InvalidParameterError, match="out_proj' produced no output"):
        record_activations(model, ["enc.layers.0.self_attn.out_proj"], x)
    _assert_no_hooks(model)


def test_padding_of_nested_sequences_is_left_out_of_the_mean():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 1)
            self.fc = nn.Linear(16, 3)

        def forward(self, x, pad):
            return self.fc(self.enc(self.emb(x), src_key_padding_mask=pad)[:, 0])

    model = Padded()
    x = torch.randint(0, 50, (4, 6))
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[1, 3:] = True
    with warnings.catch_warnings():  # the fast path nests: a prototype warning
        warnings.simplefilter("ignore", UserWarning)
        acts = record_activations(model, ["enc.layers.0"], {"x": x, "pad": pad})
    model.train()  # the slow path: padded tensors, no nesting
    layer = model.enc.layers[0]
    with torch.no_grad():
        layer.eval()
        hidden = layer(model.emb(x), src_key_padding_mask=pad)
    keep = ~pad
    by_hand = torch.stack([hidden[i][keep[i]].mean(dim=0) for i in range(4)])
    torch.testing.assert_close(acts["enc.layers.0"], by_hand, rtol=1e-4, atol=1e-5)


class LSTMClassifier(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(50, 8)
        self.lstm = nn.LSTM(8, 12, batch_first=batch_first)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        h = self.emb(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, _ = self.lstm(h)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize(
    "batch_first", [True, False], ids=["batch_first", "time_first"]
)
def test_default_selection_on_an_lstm_classifier(batch_first):
    """Non-regression: 'fc' and 'output' were the same tensor recorded twice."""
    model = LSTMClassifier(batch_first)
    x = torch.randint(0, 50, (5, 7))
    selection = select_layers(model, None, x[:2])
    _check_selection(selection, model)
    assert selection.names == ["lstm", "output"]
    assert selection.shapes["lstm"] == {"shape": [7, 12], "n_units": 12}
    acts = record_activations(model, None, x)
    with torch.no_grad():
        model.eval()
        h = model.emb(x)
        out, _ = model.lstm(h if batch_first else h.transpose(0, 1))
        out = out if batch_first else out.transpose(0, 1)
    torch.testing.assert_close(acts["lstm"], out.mean(dim=1))
    last = record_activations(model, ["lstm"], x, reduce="flatten")["lstm"]
    torch.testing.assert_close(last, out.reshape(5, -1))


def test_batch_first_hint_is_not_given_to_a_batch_first_module():
    class Confused(nn.Module):  # feeds (time, batch, ...) to a batch_first LSTM
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            out, _ = self.lstm(x.transpose(0, 1))
            return out.sum()

    with pytest.raises(InvalidParameterError, match="returned 6 rows") as info:
        record_activations(Confused(), ["lstm"], torch.randn(4, 6, 3))
    assert "batch_first" not in str(info.value)


class AuxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.aux = nn.Linear(8, 5)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.aux(h), self.head(h)


def test_tuple_output_needs_output_key():
    """Non-regression: (aux, logits) recorded aux as the output, silently."""
    model = AuxNet()
    x = torch.randn(6, 4)
    with pytest.raises(InvalidParameterError, match="'output_key'"):
        select_layers(model, None, x[:2])
    with pytest.raises(InvalidParameterError, match="'output_key'"):
        record_activations(model, None, x)
    _assert_no_hooks(model)
    acts = record_activations(model, None, x, output_key=1)
    assert list(acts) == ["act", "output"]
    with torch.no_grad():
        torch.testing.assert_close(acts["output"], model(x)[1])
    with pytest.raises(InvalidParameterError, match=r"output_key' parameter .* is 2"):
        record_activations(model, None, x, output_key=2)


def test_dict_output_uses_logits_or_output_key():
    class DictNet(AuxNet):
        def forward(self, x):
            aux, logits = super().forward(x)
            return {"aux": aux, "logits": logits}

    model = DictNet()
    x = torch.randn(6, 4)
    acts = record_activations(model, None, x)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(acts["output"], out["logits"])
    acts = record_activations(model, ["output"], x, output_key="aux")
    torch.testing.assert_close(acts["output"], out["aux"])


def test_tuple_and_list_inputs_are_fed_as_arguments():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.act = nn.Tanh()

        def forward(self, a, b):
            return self.act(self.fc(a)) * b

    model = TwoInputs()
    a, b = torch.randn(7, 3), torch.randn(7, 2)
    for inputs in ((a, b), [a, b]):
        acts = record_activations(model, None, inputs, batch_size=3)
        with torch.no_grad():
            torch.testing.assert_close(acts["output"], model(a, b))
        assert list(acts) == ["act", "output"]


def test_integer_inputs_keep_their_dtype_and_floats_are_cast():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.act = nn.Tanh()

        def forward(self, ids, scale):
            assert ids.dtype == torch.int64
            assert scale.dtype == torch.float64
            return self.act(self.emb(ids).sum(1) * scale)

    model = Mixed().double()
    batch = {"ids": torch.randint(0, 10, (5, 3)), "scale": torch.rand(5, 1)}
    acts = record_activations(model, None, batch)
    assert acts["act"].dtype == torch.float64


def test_reused_and_unused_modules_are_skipped_with_reasons():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 5)
            self.fc3 = nn.Linear(5, 2)
            self.relu = nn.ReLU()
            self.spare = nn.Tanh()

        def forward(self, x):
            return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))

    model = Reuse()
    selection = select_layers(model, None, torch.randn(2, 4))
    line = _check_selection(selection, model)
    assert selection.skipped["relu"] == "called 2 times per pass"
    assert selection.skipped["spare"] == "not called in the pass"
    # Nothing else to record: Linear modules, and the output is fc3's tensor.
    assert selection.names == ["fc1", "fc2", "fc3"]
    assert selection.skipped["output"] == "same tensor as 'fc3'"
    assert "relu (called 2 times per pass)" in line
    # An explicit choice stays strict.
    with pytest.raises(InvalidParameterError, match="'relu' was called 2 times"):
        select_layers(model, ["relu"], torch.randn(2, 4))
    with pytest.raises(InvalidParameterError, match="'spare' produced no output"):
        record_activations(model, ["spare"], torch.randn(3, 4))
    _assert_no_hooks(model)


def test_output_equal_to_the_last_activation_is_recorded_once():
    class EndsInSoftmax(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.act = nn.Tanh()
            self.fc2 = nn.Linear(6, 3)
            self.prob = nn.Softmax(dim=1)

        def forward(self, x):
            return self.prob(self.fc2(self.act(self.fc1(x))))

    selection = select_layers(EndsInSoftmax(), None, torch.randn(2, 4))
    assert selection.names == ["act", "prob"]
    assert selection.skipped == {"output": "same tensor as 'prob'"}


def test_in_place_activation_after_a_linear_is_not_a_duplicate():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.relu = nn.ReLU(inplace=True)
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.relu(self.fc(x)))

    model = InPlace()
    selection = select_layers(model, [nn.Linear, nn.ReLU], torch.randn(2, 4))
    assert selection.names == ["fc", "relu", "out"]
    acts = record_activations(model, selection, torch.randn(8, 4))
    assert (acts["fc"] < 0).any()
    assert (acts["relu"] >= 0).all()


def test_summary_is_one_line_and_cut():
    model = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(3, 3), nn.Tanh())])
    selection = select_layers(model, None, torch.randn(2, 3))
    line = selection.summary()
    assert line.startswith("recording 12 layers: 1, 3, 5, 7, 9, 11, ... (5 more), 23")
    assert "\n" not in line
    assert selection.skipped == {"output": "same tensor as '23'"}


def test_selection_without_example_inputs_uses_the_module_tree():
    model = torchvision.models.resnet18(num_classes=10)
    selection = select_layers(model)
    assert selection.shapes == {}
    assert list(selection.layers)[:2] == ["relu", "layer1.0"]
    assert selection.skipped["layer1.0.relu"] == "inside block 'layer1.0'"
    assert list(resolve_layers(model)) == selection.names


def test_lazy_model_is_selected_without_a_pass():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    selection = select_layers(model, None, torch.randn(2, 3))
    assert selection.names == ["1", "output"]
    assert selection.shapes == {}
    assert model[0].has_uninitialized_params()  # the pass would initialise it


def test_compiled_model_uses_eager_names():
    model = LSTMClassifier()
    compiled = torch.compile(model, backend="eager")
    assert unwrap_model(compiled) is model
    x = torch.randint(0, 50, (4, 5))
    selection = select_layers(compiled, None, x[:2])
    assert selection.names == ["lstm", "output"]
    acts = record_activations(compiled, ["lstm", "fc"], x)
    assert list(acts) == ["lstm", "fc"]
    prefixed = record_activations(compiled, ["_orig_mod.fc"], x)
    torch.testing.assert_close(prefixed["fc"], acts["fc"])
    assert list(resolve_layers(compiled, nn.Linear)) == ["fc"]
    _assert_no_hooks(model)


def test_recording_inside_autocast_equals_float32_eager():
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=4,
        img_size=16,
        patch_size=8,
        depth=1,
    )
    x = torch.randn(3, 3, 16, 16)
    plain = record_activations(model, None, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = record_activations(model, None, x)
        assert torch.is_autocast_enabled("cpu")  # the caller's region is intact
    assert list(plain) == list(mixed)
    for name in plain:
        assert mixed[name].dtype == torch.float32
        torch.testing.assert_close(mixed[name], plain[name], rtol=0, atol=0)


def test_reduce_by_rank():
    class Shapes(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Identity()
            self.conv = nn.Conv1d(3, 2, 1)
            self.maps = nn.Identity()

        def forward(self, x):
            self.seq(x)  # (batch, tokens=3, hidden=4)
            self.conv(x)  # (batch, channels=2, length=4)
            self.maps(x[:, :, :, None].expand(-1, -1, -1, 2))  # rank 4
            return x.sum(dim=(1, 2))

    model = Shapes()
    x = torch.randn(5, 3, 4)
    layers = ["seq", "conv", "maps"]
    with torch.no_grad():
        conv = model.conv(x)
    maps = x[:, :, :, None].expand(-1, -1, -1, 2)
    expected = {
        "auto": {"seq": x.mean(1), "conv": conv.flatten(1), "maps": maps.flatten(1)},
        "flatten": {
            "seq": x.flatten(1),
            "conv": conv.flatten(1),
            "maps": maps.flatten(1),
        },
        "mean": {"seq": x.mean(1), "conv": conv.mean(2), "maps": maps.mean((2, 3))},
        "max": {"seq": x.amax(1), "conv": conv.amax(2), "maps": maps.amax((2, 3))},
    }
    for reduce, want in expected.items():
        acts = record_activations(model, layers, x, reduce=reduce)
        for name in layers:
            torch.testing.assert_close(acts[name], want[name], msg=f"{reduce} {name}")
    first = record_activations(model, ["seq"], x, reduce="first")
    torch.testing.assert_close(first["seq"], x[:, 0])
    with pytest.raises(InvalidParameterError, match=r"Layer 'maps' returns .*'first'"):
        record_activations(model, ["maps"], x, reduce="first")
    with pytest.raises(InvalidParameterError, match=r"Layer 'conv' returns .*'first'"):
        select_layers(model, ["conv"], x[:2], reduce="first")
    resnet = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(InvalidParameterError, match=r"Layer 'relu' returns .*'first'"):
        select_layers(resnet, None, torch.randn(2, 3, 32, 32), reduce="first")
    _assert_no_hooks(model)
