"""Measures on models of any structure (issue "Any PyTorch model").

Inputs given as a tuple of tensors (``model(*x)``) or a dict of tensors
(``model(**x)``), DataLoaders yielding ``(x1, x2, y)`` tuples or dicts with a
labels key, outputs that are tuples, dicts or objects with ``logits``
(``output_key``), and the errors for what cannot work.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.measures import (
    MeasureSet,
    compute_measures,
    expected_sharpness,
    generalization_gap,
    hessian_eigenvalues,
    hessian_trace,
    pac_bayes,
    worst_case_sharpness,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::ibmonitor.exceptions.EstimationWarning"
)


# ---------------------------------------------------------------- models ---
class TwoInputs(nn.Module):
    """``forward(a, b) -> (logits, hidden)``: two inputs, a tuple output."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, a, b):
        hidden = torch.tanh(self.fc1(torch.cat([a, b], dim=1)))
        return self.fc2(hidden), hidden


class OneInput(nn.Module):
    """The same function of one input ``x = cat(a, b)`` returning a tensor."""

    def __init__(self, inner: TwoInputs):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x[:, :2], x[:, 2:])[0]


class Output:
    """Like a Hugging Face ``ModelOutput`` seen as an object: ``.logits``."""

    def __init__(self, logits, hidden):
        self.logits = logits
        self.hidden = hidden


class TokenModel(nn.Module):
    """``forward(input_ids, attention_mask)``, HF style: a dict with ``logits``."""

    def __init__(self, as_object: bool = False):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 2)
        self.as_object = as_object

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        logits = self.head(torch.tanh(pooled))
        if self.as_object:
            return Output(logits, pooled)
        return {"hidden": pooled, "logits": logits}


class TokenReference(nn.Module):
    """``TokenModel`` on one tensor ``[ids | mask]`` returning the logits."""

    def __init__(self, inner: TokenModel, length: int):
        super().__init__()
        self.inner, self.length = inner, length

    def forward(self, x):
        out = self.inner(x[:, : self.length], x[:, self.length :])
        return out.logits if self.inner.as_object else out["logits"]


class DictDataset(Dataset):
    """Samples as dicts, the way a Hugging Face dataset yields them."""

    def __init__(self, ids, mask, y, key="labels"):
        self.ids, self.mask, self.y, self.key = ids, mask, y, key

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": self.mask[i],
            self.key: self.y[i],
        }


@pytest.fixture
def two_inputs():
    torch.manual_seed(3)
    model = TwoInputs().double()
    a = torch.randn(40, 2, dtype=torch.float64)
    b = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, a, b, y


@pytest.fixture
def tokens():
    torch.manual_seed(4)
    ids = torch.randint(0, 20, (32, 7))
    mask = torch.ones(32, 7, dtype=torch.int64)
    mask[::3, 5:] = 0
    y = torch.randint(0, 2, (32,))
    return ids, mask, y


LOSS = nn.CrossEntropyLoss()


# ------------------------------------------------- tuple inputs and outputs ---
def test_gap_on_tuple_inputs_and_tuple_output_matches_a_plain_model(two_inputs):
    model, a, b, y = two_inputs
    x = torch.cat([a, b], dim=1)
    expected = generalization_gap(OneInput(model), LOSS, (x, y), (x[:20], y[:20]))
    pair = generalization_gap(
        model, LOSS, ((a, b), y), ((a[:20], b[:20]), y[:20]), output_key=0
    )
    assert pair == expected
    loader = DataLoader(TensorDataset(a, b, y), batch_size=16)
    from_loader = generalization_gap(
        model, LOSS, loader, ((a[:20], b[:20]), y[:20]), output_key=0
    )
    assert from_loader.train_loss == pytest.approx(expected.train_loss, rel=1e-12)
    assert from_loader.train_acc == expected.train_acc


def test_gap_without_output_key_on_a_tuple_output_names_output_key(two_inputs):
    """Non-regression: a raw AttributeError ('tuple' has no attribute 'ndim')."""
    model, a, b, y = two_inputs
    with pytest.raises(InvalidParameterError, match="'output_key' parameter"):
        generalization_gap(model, LOSS, ((a, b), y), ((a, b), y))
    with pytest.raises(InvalidParameterError, match=r"'output_key' parameter.* 5"):
        generalization_gap(model, LOSS, ((a, b), y), ((a, b), y), output_key=5)


def test_hessian_on_tuple_inputs_matches_a_plain_model(two_inputs):
    model, a, b, y = two_inputs
    x = torch.cat([a, b], dim=1)
    plain = OneInput(model)
    expected = hessian_eigenvalues(plain, LOSS, (x, y), k=2, tol=1e-8)
    got = hessian_eigenvalues(model, LOSS, ((a, b), y), k=2, tol=1e-8, output_key=0)
    assert list(got) == pytest.approx(list(expected), rel=1e-8)
    loader = DataLoader(TensorDataset(a, b, y), batch_size=13)
    trace = hessian_trace(model, LOSS, loader, 5, output_key=0)
    assert trace.mean == pytest.approx(
        hessian_trace(plain, LOSS, (x, y), 5).mean, rel=1e-8
    )


def test_sharpness_on_tuple_inputs_matches_a_plain_model(two_inputs):
    model, a, b, y = two_inputs
    x = torch.cat([a, b], dim=1)
    plain = OneInput(model)
    worst = worst_case_sharpness(model, LOSS, ((a, b), y), n_steps=3, output_key=0)
    assert worst == pytest.approx(
        worst_case_sharpness(plain, LOSS, (x, y), n_steps=3), rel=1e-8
    )
    expected = expected_sharpness(model, LOSS, ((a, b), y), n_samples=3, output_key=0)
    assert expected == pytest.approx(
        expected_sharpness(plain, LOSS, (x, y), n_samples=3), rel=1e-8
    )


def test_pac_bayes_on_tuple_inputs_matches_a_plain_model(two_inputs):
    model, a, b, y = two_inputs
    x = torch.cat([a, b], dim=1)
    kwargs = {"n_samples": 2, "max_iter": 3}
    got = pac_bayes(model, LOSS, ((a, b), y), output_key=0, **kwargs)
    expected = pac_bayes(OneInput(model), LOSS, (x, y), **kwargs)
    assert got.sigma == expected.sigma
    assert got.train_acc == expected.train_acc


# ------------------------------------------------------- dict (HF) models ---
@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "object"])
def test_dict_model_measures_take_its_logits(tokens, as_object):
    ids, mask, y = tokens
    model = TokenModel(as_object=as_object).double()
    reference = TokenReference(model, ids.shape[1])
    joined = torch.cat([ids, mask], dim=1)
    loader = DataLoader(DictDataset(ids, mask, y), batch_size=10)
    pair = ({"input_ids": ids, "attention_mask": mask}, y)

    expected = generalization_gap(reference, LOSS, (joined, y), (joined, y))
    for data in (loader, pair):
        gap = generalization_gap(model, LOSS, data, pair)
        assert gap.train_loss == pytest.approx(expected.train_loss, rel=1e-12)
        assert gap.train_acc == expected.train_acc

    top = hessian_eigenvalues(model, LOSS, loader, tol=1e-8)
    assert top[0] == pytest.approx(
        hessian_eigenvalues(reference, LOSS, (joined, y), tol=1e-8)[0], rel=1e-6
    )
    worst = worst_case_sharpness(model, LOSS, pair, n_steps=2)
    assert worst == pytest.approx(
        worst_case_sharpness(reference, LOSS, (joined, y), n_steps=2), rel=1e-8
    )


def test_output_key_picks_another_element_of_a_dict_output(tokens):
    ids, mask, y = tokens
    model = TokenModel().double()
    pair = ({"input_ids": ids, "attention_mask": mask}, y)
    regression = generalization_gap(
        model, lambda out, target: out.pow(2).mean(), pair, pair, output_key="hidden"
    )
    with torch.no_grad():
        hidden = model(ids, mask)["hidden"]
    assert regression.train_loss == pytest.approx(float(hidden.pow(2).mean()))
    with pytest.raises(InvalidParameterError, match=r"'output_key'.*'nope'"):
        generalization_gap(model, LOSS, pair, pair, output_key="nope")


def test_dict_batches_take_their_labels_from_label_key(tokens):
    ids, mask, y = tokens
    model = TokenModel().double()
    pair = ({"input_ids": ids, "attention_mask": mask}, y)
    expected = generalization_gap(model, LOSS, pair, pair)
    custom = DataLoader(DictDataset(ids, mask, y, key="target"), batch_size=8)
    gap = generalization_gap(model, LOSS, custom, pair, label_key="target")
    assert gap.train_loss == pytest.approx(expected.train_loss, rel=1e-12)
    singular = DataLoader(DictDataset(ids, mask, y, key="label"), batch_size=8)
    assert generalization_gap(model, LOSS, singular, pair).n_train == 32
    with pytest.raises(InvalidParameterError, match="'labels' or 'label'"):
        generalization_gap(model, LOSS, custom, pair)
    with pytest.raises(InvalidParameterError, match="'label_key' parameter"):
        generalization_gap(model, LOSS, custom, pair, label_key=3)


def test_bad_structures_are_errors(two_inputs):
    model, a, b, y = two_inputs
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        generalization_gap(model, LOSS, ((a, b), y[:-1]), ((a, b), y), output_key=0)
    with pytest.raises(InvalidParameterError, match="share their first"):
        generalization_gap(model, LOSS, ((a, b[:-1]), y), ((a, b), y), output_key=0)
    with pytest.raises(InvalidParameterError, match="not a tensor"):
        generalization_gap(
            model, LOSS, ({"a": a, "text": ["x"] * 40}, y), ((a, b), y), output_key=0
        )


# ----------------------------------------------- registry and MeasureSet ---
def test_compute_measures_and_measure_set_pass_output_key(two_inputs):
    model, a, b, y = two_inputs
    x = torch.cat([a, b], dim=1)
    names = ["gap", "norms", "hessian", "sharpness", "expected_sharpness"]
    options = {
        "hessian": {"n_samples": 2, "max_iter": 10},
        "sharpness": {"n_steps": 2},
        "expected_sharpness": {"n_samples": 2},
    }
    expected = compute_measures(
        names, OneInput(model), LOSS, (x, y), (x, y), options=options
    )
    got = compute_measures(
        names, model, LOSS, ((a, b), y), ((a, b), y), options=options, output_key=0
    )
    for key in (
        "gap/loss",
        "gap/train_acc",
        "hessian/top_eigenvalue",
        "hessian/trace",
        "sharpness/worst_case",
        "sharpness/expected",
    ):
        assert got[key] == pytest.approx(expected[key], rel=1e-8), key
    assert "norms/total/path" not in got  # no all-ones input for two tensors
    assert got["norms/fc1/frobenius"] == expected["norms/inner.fc1/frobenius"]

    ms = MeasureSet(
        ["gap", "hessian"],
        loss_fn=LOSS,
        train_data=DataLoader(TensorDataset(a, b, y), batch_size=20),
        test_data=((a, b), y),
        output_key=0,
    )
    ms.bind(model)
    values = ms.compute(model, 0, strict=True)
    assert values["gap/train_acc"] == pytest.approx(expected["gap/train_acc"])
    assert ms.describe()["output_key"] == 0
    # an explicit option wins over the set's output_key
    explicit = MeasureSet(
        {"gap": {"output_key": 1}},
        loss_fn=lambda o, t: o.mean(),
        train_data=((a, b), y),
        test_data=((a, b), y),
        output_key=0,
    )
    explicit.bind(model)
    with torch.no_grad():
        hidden_mean = float(model(a, b)[1].mean())
    got = explicit.compute(model, 0, strict=True)
    assert got["gap/train_loss"] == pytest.approx(hidden_mean)


def test_measure_set_without_output_key_warns_with_a_clear_message(two_inputs):
    model, a, b, y = two_inputs
    ms = MeasureSet("gap", loss_fn=LOSS, train_data=((a, b), y), test_data=((a, b), y))
    ms.bind(model)
    with pytest.warns(UserWarning, match="output_key"):
        assert ms.compute(model, 0) == {}
    with pytest.raises(
        InvalidParameterError, match="'output_key' parameter of MeasureSet"
    ):
        MeasureSet("gap", loss_fn=LOSS, train_data=((a, b), y), output_key=1.5)


# -------------------------------------------------------------- grad mode ---
@pytest.mark.parametrize(
    ("measure", "call"),
    [
        ("hessian_eigenvalues", lambda m, d: hessian_eigenvalues(m, LOSS, d)),
        ("hessian_trace", lambda m, d: hessian_trace(m, LOSS, d, 2)),
        ("worst_case_sharpness", lambda m, d: worst_case_sharpness(m, LOSS, d)),
    ],
)
def test_gradient_measures_in_inference_mode_name_the_measure(
    two_inputs, measure, call
):
    """Non-regression: a raw autograd error inside torch.inference_mode()."""
    model, a, b, y = two_inputs
    plain = OneInput(model)
    x = torch.cat([a, b], dim=1)
    with (
        torch.inference_mode(),
        pytest.raises(RuntimeError, match=measure + ".*inference_mode"),
    ):
        call(plain, (x, y))
    with torch.no_grad():  # the measures turn gradients on themselves
        call(plain, (x, y))


def test_forward_only_measures_work_in_inference_mode(two_inputs):
    model, a, b, y = two_inputs
    data = ((a, b), y)
    expected = generalization_gap(model, LOSS, data, data, output_key=0)
    with torch.inference_mode():
        assert generalization_gap(model, LOSS, data, data, output_key=0) == expected
        expected_sharpness(model, LOSS, data, n_samples=2, output_key=0)
    assert not any(p.is_inference() for p in model.parameters())
