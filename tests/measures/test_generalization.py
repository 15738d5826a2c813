from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.measures import GeneralizationGap, generalization_gap


def _identity_classifier():
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model


def _ce(logit_true: float, logit_other: float) -> float:
    return math.log(1 + math.exp(logit_other - logit_true))


def test_generalization_gap_by_hand():
    """Logits equal the inputs: losses and accuracies follow by hand."""
    model = _identity_classifier()
    x_train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y_train = torch.tensor([0, 1, 1])  # the last one is wrong
    x_test = np.array([[2.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # numpy works too
    y_test = np.array([1, 0])  # both wrong
    train_loss = (_ce(1, 0) + _ce(1, 0) + _ce(0, 1)) / 3
    test_loss = (_ce(0, 2) + _ce(0, 1)) / 2
    # batch_size=2 makes uneven batches (2 + 1): the mean is over samples.
    gap = generalization_gap(
        model, nn.CrossEntropyLoss(), (x_train, y_train), (x_test, y_test), batch_size=2
    )
    assert isinstance(gap, GeneralizationGap)
    assert gap.train_loss == pytest.approx(train_loss)
    assert gap.test_loss == pytest.approx(test_loss)
    assert gap.train_acc == pytest.approx(2 / 3)
    assert gap.test_acc == 0.0
    assert gap.loss_gap == pytest.approx(test_loss - train_loss)
    assert gap.acc_gap == pytest.approx(2 / 3)
    assert (gap.n_train, gap.n_test) == (3, 2)
    assert gap.as_dict()["acc_gap"] == gap.acc_gap


def test_generalization_gap_dataloader_equals_pair(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    a = generalization_gap(model, loss_fn, loader, (x[:50], y[:50]))
    b = generalization_gap(model, loss_fn, (x, y), (x[:50], y[:50]))
    assert a.train_loss == pytest.approx(b.train_loss)
    assert a.train_acc == b.train_acc
    assert a.test_loss == b.test_loss


def test_generalization_gap_evaluates_in_eval_mode():
    """Dropout is off: two calls agree although the model is in train mode."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    a = generalization_gap(model, nn.CrossEntropyLoss(), (x, y), (x, y))
    b = generalization_gap(model, nn.CrossEntropyLoss(), (x, y), (x, y))
    assert a == b
    assert a.loss_gap == 0.0
    assert model.training


def test_generalization_gap_single_logit_and_one_hot():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.tensor([[1.0], [-1.0], [2.0]])
    y = torch.tensor([1, 1, 1])

    def bce(out, t):
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t.float())

    gap = generalization_gap(model, bce, (x, y), (x, y))
    assert gap.train_acc == pytest.approx(2 / 3)
    clf = _identity_classifier()
    xs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    one_hot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])

    def soft_ce(out, t):
        return -(t * out.log_softmax(1)).sum(1).mean()

    assert (
        generalization_gap(clf, soft_ce, (xs, one_hot), (xs, one_hot)).train_acc == 0.5
    )


def test_generalization_gap_regression_accuracy_is_nan():
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randn(10, 2) * 3
    gap = generalization_gap(model, nn.MSELoss(), (x, y), (x, y))
    assert math.isnan(gap.train_acc)
    assert math.isnan(gap.acc_gap)
    assert gap.train_loss > 0


def test_generalization_gap_max_batches():
    model = _identity_classifier()
    x = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    y = torch.zeros(8, dtype=torch.int64)
    gap = generalization_gap(
        model, nn.CrossEntropyLoss(), (x, y), (x, y), batch_size=4, max_batches=1
    )
    assert gap.train_acc == 1.0
    assert gap.n_train == 4


def test_generalization_gap_rejects_bad_input():
    model = _identity_classifier()
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(InvalidParameterError, match="'data' parameter"):
        generalization_gap(model, nn.CrossEntropyLoss(), (x, y), 5)
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter"):
        generalization_gap(model, nn.CrossEntropyLoss(), (x, y), (x, y), batch_size=0)
    with pytest.raises(InvalidParameterError, match="scalar tensor"):
        generalization_gap(model, nn.CrossEntropyLoss(reduction="none"), (x, y), (x, y))
    with pytest.raises(InvalidParameterError, match="Each batch"):
        generalization_gap(model, nn.CrossEntropyLoss(), [x, y, y], (x, y))
