"""Probe sets of any structure (issue "Any PyTorch model").

Inputs as a tensor, a tuple of tensors (``model(*x)``), a dict of tensors
(``model(**x)``), or a DataLoader of any of these; labels from ``labels=``,
the last element of a tuple batch, or a dict batch's ``label_key``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.probes import ProbeSet, build_probes
from ibmonitor.schema import DEFAULT_PROBE


class DictDataset(Dataset):
    """Samples as dicts, as a Hugging Face dataset yields them."""

    def __init__(self, ids, mask, y=None, key="labels", text=False):
        self.ids, self.mask, self.y, self.key, self.text = ids, mask, y, key, text

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        item = {"input_ids": self.ids[i], "attention_mask": self.mask[i]}
        if self.y is not None:
            item[self.key] = self.y[i]
        if self.text:
            item["text"] = f"sample {i}"
        return item


@pytest.fixture
def tokens():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (24, 16), generator=generator)
    mask = torch.ones(24, 16, dtype=torch.int64)
    mask[::2, 12:] = 0
    y = torch.arange(24) % 3
    return ids, mask, y


def _expected_values(*tensors):
    return torch.cat([t.reshape(len(t), -1).float() for t in tensors], dim=1)


# ------------------------------------------------------------------- forms ---
def test_tensor_probe_is_unchanged():
    x, y = torch.randn(10, 2, 3), torch.arange(10) % 2
    probe = ProbeSet.from_data("p", x, y)
    assert probe.inputs is not None and torch.equal(probe.inputs, x)
    assert probe.values.shape == (10, 6)
    assert probe.describe() == {"n_samples": 10, "input_shape": [2, 3]}
    assert torch.equal(probe.head(4).inputs, x[:4])
    assert torch.equal(probe.shard(1, 2), x[5:])


def test_dict_probe_feeds_model_kwargs(tokens):
    ids, mask, y = tokens
    probe = ProbeSet.from_data("p", {"input_ids": ids, "attention_mask": mask}, y)
    assert set(probe.inputs) == {"input_ids", "attention_mask"}
    assert probe.inputs["input_ids"].dtype == torch.int64  # ids stay integers
    assert probe.n_samples == 24
    assert torch.equal(probe.values, _expected_values(ids, mask))
    assert probe.values.dtype == torch.float32
    assert probe.describe() == {
        "n_samples": 24,
        "inputs": {"input_ids": [16], "attention_mask": [16]},
    }
    json.dumps(probe.describe())
    head = probe.head(5)
    assert head.n_samples == 5 and torch.equal(head.inputs["input_ids"], ids[:5])
    shard = probe.shard(0, 2)
    assert torch.equal(shard["attention_mask"], mask[:12])


def test_dict_probe_takes_labels_from_its_label_key(tokens):
    ids, mask, y = tokens
    probe = ProbeSet.from_data(
        "p", {"input_ids": ids, "attention_mask": mask, "labels": y}
    )
    assert set(probe.inputs) == {"input_ids", "attention_mask"}
    assert torch.equal(probe.labels, y)
    custom = ProbeSet.from_data(
        "p", {"input_ids": ids, "target": y}, label_key="target"
    )
    assert set(custom.inputs) == {"input_ids"}
    assert torch.equal(custom.labels, y)
    given = ProbeSet.from_data("p", {"input_ids": ids, "labels": y}, 1 - y % 2)
    assert set(given.inputs) == {"input_ids"}  # the key goes, the given labels win
    assert torch.equal(given.labels, 1 - y % 2)


def test_tuple_probe_feeds_model_args(tokens):
    ids, mask, y = tokens
    probe = ProbeSet.from_data("p", (ids, mask), y)
    assert isinstance(probe.inputs, tuple) and len(probe.inputs) == 2
    assert torch.equal(probe.values, _expected_values(ids, mask))
    assert probe.describe() == {"n_samples": 24, "inputs": [[16], [16]]}
    assert isinstance(probe.head(3).inputs, tuple)
    listed = ProbeSet.from_data("p", [ids, mask.float()], y)
    assert isinstance(listed.inputs, list)


def test_numpy_structures_become_tensors(tokens):
    ids, _, y = tokens
    probe = ProbeSet.from_data("p", {"input_ids": ids.numpy()}, y.numpy())
    assert isinstance(probe.inputs["input_ids"], torch.Tensor)


# ------------------------------------------------------------- DataLoaders ---
def test_loader_of_dicts_equals_the_dict_probe(tokens):
    """Non-regression: 'Could not infer dtype of dict' from a raw torch error."""
    ids, mask, y = tokens
    loader = DataLoader(DictDataset(ids, mask, y), batch_size=5)
    probe = ProbeSet.from_data("p", loader)
    direct = ProbeSet.from_data("p", {"input_ids": ids, "attention_mask": mask}, y)
    assert set(probe.inputs) == {"input_ids", "attention_mask"}
    assert torch.equal(probe.labels, direct.labels)
    assert torch.equal(probe.values, direct.values)
    singular = ProbeSet.from_data("p", DataLoader(DictDataset(ids, mask, y, "label")))
    assert torch.equal(singular.labels, y)
    custom = DataLoader(DictDataset(ids, mask, y, key="target"), batch_size=7)
    assert torch.equal(ProbeSet.from_data("p", custom, label_key="target").labels, y)


def test_loader_of_dicts_without_labels_uses_given_labels(tokens):
    ids, mask, y = tokens
    loader = DataLoader(DictDataset(ids, mask), batch_size=8)
    probe = ProbeSet.from_data("p", loader, y)
    assert torch.equal(probe.labels, y)
    with pytest.raises(InvalidParameterError, match="has no labels"):
        ProbeSet.from_data("p", loader)


def test_loader_of_three_tuples_takes_the_last_as_labels(tokens):
    """Non-regression: (ids, mask, y) batches took the mask as the labels."""
    ids, mask, y = tokens
    loader = DataLoader(TensorDataset(ids, mask, y), batch_size=10)
    probe = ProbeSet.from_data("p", loader)
    assert isinstance(probe.inputs, tuple) and len(probe.inputs) == 2
    assert torch.equal(probe.inputs[1], mask)
    assert torch.equal(probe.labels, y)
    assert torch.equal(probe.values, _expected_values(ids, mask))


def test_loader_of_pairs_and_nested_inputs(tokens):
    ids, mask, y = tokens
    x = torch.randn(24, 3)
    pairs = ProbeSet.from_data("p", DataLoader(TensorDataset(x, y), batch_size=10))
    assert torch.equal(pairs.inputs, x) and torch.equal(pairs.labels, y)
    # ((ids, mask), y) batches from a list; {"input_ids": ..} paired with labels
    batches = [((ids[:12], mask[:12]), y[:12]), ((ids[12:], mask[12:]), y[12:])]
    nested = ProbeSet.from_data("p", batches)
    assert isinstance(nested.inputs, tuple) and torch.equal(nested.labels, y)
    keyed = ProbeSet.from_data("p", [({"input_ids": ids}, y)])
    assert set(keyed.inputs) == {"input_ids"}
    # a 1-tuple batch is inputs only
    only = ProbeSet.from_data("p", DataLoader(TensorDataset(x), batch_size=6), y)
    assert torch.equal(only.inputs, x)


# ----------------------------------------------------------- build_probes ---
def test_build_probes_specs_of_any_structure(tokens):
    ids, mask, y = tokens
    probes = build_probes(
        probes={
            "pair": ((ids, mask), y),
            "dict": {"input_ids": ids, "attention_mask": mask, "labels": y},
            "keyed": ({"input_ids": ids}, y),
            "loader": DataLoader(TensorDataset(ids, mask, y), batch_size=8),
        }
    )
    assert list(probes) == ["pair", "dict", "keyed", "loader"]
    assert all(torch.equal(p.labels, y) for p in probes.values())
    assert isinstance(probes["pair"].inputs, tuple)
    default = build_probes({"input_ids": ids, "target": y}, label_key="target")
    assert list(default) == [DEFAULT_PROBE]
    assert set(default[DEFAULT_PROBE].inputs) == {"input_ids"}


# ----------------------------------------------------------------- errors ---
@pytest.mark.parametrize(
    ("inputs", "labels", "match"),
    [
        ("text", None, "must be a tensor"),
        (3, None, "must be a tensor"),
        ({}, None, "empty dict"),
        ({"input_ids": torch.zeros(4, 2), "text": ["a"] * 4}, None, "key 'text'"),
        ((torch.zeros(4, 2), torch.zeros(3, 2)), torch.zeros(4), "same number of rows"),
        ({"input_ids": torch.zeros(4, 2)}, None, r"no labels \(no key 'labels'"),
        ((torch.zeros(4, 2), torch.zeros(4, 2)), None, "has no labels"),
    ],
    ids=["str", "int", "empty-dict", "text-column", "rows", "dict-no-labels", "tuple"],
)
def test_bad_inputs_name_the_probe(inputs, labels, match):
    with pytest.raises(InvalidParameterError, match=match) as info:
        ProbeSet.from_data("mine", inputs, labels)
    assert "'mine'" in str(info.value)


def test_loader_errors_name_the_probe(tokens):
    ids, mask, y = tokens
    text = DataLoader(DictDataset(ids, mask, y, text=True), batch_size=8)
    with pytest.raises(InvalidParameterError, match=r"key 'text'.*not a tensor"):
        ProbeSet.from_data("mine", text)
    ragged = [(ids[:8, :10], y[:8]), (ids[8:], y[8:])]
    with pytest.raises(InvalidParameterError, match="'mine' cannot be joined"):
        ProbeSet.from_data("mine", ragged)
    mixed = [(ids[:8], y[:8]), ({"input_ids": ids[8:]}, y[8:])]
    with pytest.raises(InvalidParameterError, match="'mine' differ in structure"):
        ProbeSet.from_data("mine", mixed)
    with pytest.raises(InvalidParameterError, match="'label_key' parameter"):
        ProbeSet.from_data("mine", text, label_key="")
    strings = [(ids[:8], np.array(["a"] * 8))]
    with pytest.raises(InvalidParameterError, match="integer class labels"):
        ProbeSet.from_data("mine", strings)
    with pytest.raises(InvalidParameterError, match="loader yielded no batch"):
        ProbeSet.from_data("mine", [])


def test_bad_probe_specs_name_the_probe(tokens):
    ids, mask, y = tokens
    with pytest.raises(InvalidParameterError, match=r"'three'.*\(\(x1, x2\), labels\)"):
        build_probes(probes={"three": (ids, mask, y)})
    with pytest.raises(InvalidParameterError, match="not both"):
        build_probes(ids, y, probes={"a": (ids, y)})
