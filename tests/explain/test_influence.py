"""Influence functions (issue 14): closed forms, Captum, leave-one-out retraining."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _explain_helpers import assert_untouched, prepared_bn_net, snapshot
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.explain import influence
from ibmonitor.explain.influence_functions import (
    _conjugate_gradients,
    _exact_hessian,
)
from ibmonitor.measures._data import load_batches

LAM = 5e-3


# ------------------------------------------------ logistic regression, closed form
def _features(x: torch.Tensor) -> torch.Tensor:
    """[x, 1]: the order of nn.Linear's flattened (weight, bias)."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)


def _newton(xf, y, n, w0, lam=LAM, tol=1e-12):
    """Minimize (1/n) sum_i BCE(x_i w, y_i) + lam ||w||^2 over the given rows."""
    w = w0.clone()
    eye = torch.eye(len(w), dtype=w.dtype)
    for _ in range(100):
        p = torch.sigmoid(xf @ w)
        g = xf.T @ (p - y) / n + 2 * lam * w
        if float(g.norm()) < tol:
            return w
        h = (xf * (p * (1 - p))[:, None]).T @ xf / n + 2 * lam * eye
        w = w - torch.linalg.solve(h, g)
    raise AssertionError("Newton did not converge")


@pytest.fixture(scope="module")
def logreg():
    """Binary logistic regression (digits 3 vs 5) trained to its exact optimum."""
    digits = load_digits()
    keep = np.isin(digits.target, (3, 5))
    x = torch.tensor(digits.data[keep] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[keep] == 5, dtype=torch.float64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:300], perm[300:]
    xtr, ytr, xte, yte = x[train], y[train], x[test], y[test]
    w = _newton(_features(xtr), ytr, len(xtr), torch.zeros(65, dtype=torch.float64))
    model = nn.Linear(64, 1).double()
    with torch.no_grad():
        model.weight.copy_(w[:64][None])
        model.bias.copy_(w[64:])
    return model, w, xtr, ytr, xte, yte


def _bce():
    return nn.BCEWithLogitsLoss()


def test_influence_of_logistic_regression_equals_the_closed_form(logreg):
    model, w, xtr, ytr, xte, yte = logreg
    n = len(xtr)
    xf, xtf = _features(xtr), _features(xte[:4])
    p = torch.sigmoid(xf @ w)
    hessian = (xf * (p * (1 - p))[:, None]).T @ xf / n
    # The Hessian the exact method forms.
    batches = load_batches((xtr, ytr[:, None]), model, batch_size=128)
    named = list(model.named_parameters())
    formed = _exact_hessian(model, _bce(), named, batches, None)
    assert torch.allclose(formed, hessian, atol=1e-12)
    # The influences: (1/n) g_test^T (H + 2 lam I)^{-1} g_train.
    g_train = (p - ytr)[:, None] * xf
    g_test = (torch.sigmoid(xtf @ w) - yte[:4])[:, None] * xtf
    damped = hessian + 2 * LAM * torch.eye(65, dtype=torch.float64)
    expected = g_test @ torch.linalg.solve(damped, g_train.T) / n  # (4, n)
    table = influence(
        model, _bce(), (xtr, ytr[:, None]), (xte[:4], yte[:4, None]), damping=2 * LAM,
        batch_size=128,
    )  # fmt: skip
    assert table.attrs["method"] == "exact"
    assert table.attrs["n_train"] == n and table.attrs["n_params"] == 65
    got = table.pivot(index="test_index", columns="train_index", values="influence")
    np.testing.assert_allclose(got.to_numpy(), expected.numpy(), rtol=1e-9, atol=1e-14)
    assert table.attrs["min_eigenvalue"] == pytest.approx(
        float(torch.linalg.eigvalsh(damped)[0]), rel=1e-8
    )


def test_influence_predicts_leave_one_out_retraining_on_logistic_regression(logreg):
    """Koh & Liang's figure 2 (convex case): Pearson >= 0.9 over the top 50."""
    start = time.perf_counter()
    model, w, xtr, ytr, xte, yte = logreg
    n = len(xtr)
    xf = _features(xtr)
    test_losses = nn.functional.binary_cross_entropy_with_logits(
        _features(xte) @ w, yte, reduction="none"
    )
    j = int(test_losses.argmax())
    xt, yt = xte[j : j + 1], yte[j : j + 1]
    table = influence(model, _bce(), (xtr, ytr[:, None]), (xt, yt[:, None]),
                      damping=2 * LAM)  # fmt: skip
    predicted = table["influence"].to_numpy()
    top = np.argsort(-np.abs(predicted), kind="stable")[:50]

    def test_loss(weights):
        logit = _features(xt) @ weights
        return float(nn.functional.binary_cross_entropy_with_logits(logit, yt))

    base = test_loss(w)
    actual = []
    for i in top:
        keep = torch.ones(n, dtype=torch.bool)
        keep[int(i)] = False
        # Leave-one-out from the optimum; the L2 term keeps its weight (1/n).
        w_loo = _newton(xf[keep], ytr[keep], n, w)
        actual.append(test_loss(w_loo) - base)
    actual = np.asarray(actual)
    pearson = np.corrcoef(predicted[top], actual)[0, 1]
    assert pearson >= 0.9, pearson
    # The convention: positive = removing the point raises the test loss.
    slope = np.polyfit(predicted[top], actual, 1)[0]
    assert 0.7 < slope < 1.4, slope
    assert time.perf_counter() - start < 20


def test_influence_sign_of_a_training_copy_of_the_test_point(logreg):
    model, _, xtr, ytr, _, _ = logreg
    table = influence(model, _bce(), (xtr, ytr[:, None]), (xtr[7:8], ytr[7:8, None]),
                      damping=2 * LAM)  # fmt: skip
    values = table["influence"].to_numpy()
    # Removing the test point itself from training raises its loss.
    assert values[7] > 0
    assert values[7] >= np.quantile(values, 0.9)


# ---------------------------------------------------- against a reference ---
def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _mlp_data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _reference(model, loss_fn, x, y, xt, yt, damping, names=None):
    """Dense Hessian by torch.autograd.functional.hessian, gradients by a loop."""
    named = [(k, p) for k, p in model.named_parameters() if names is None or k in names]
    fixed = {k: p.detach() for k, p in model.named_parameters()}
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def as_dict(v):
        out, i = dict(fixed), 0
        for k, p in named:
            out[k] = v[i : i + p.numel()].view_as(p)
            i += p.numel()
        return out

    def loss_at(v, xs, ys):
        return loss_fn(torch.func.functional_call(model, as_dict(v), (xs,)), ys)

    hessian = torch.autograd.functional.hessian(lambda v: loss_at(v, x, y), flat)

    def grads(xs, ys):
        rows = []
        for i in range(len(xs)):
            v = flat.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(loss_at(v, xs[i : i + 1], ys[i : i + 1]), v)
            rows.append(g)
        return torch.stack(rows)

    a = hessian + damping * torch.eye(len(flat), dtype=flat.dtype)
    return grads(xt, yt) @ torch.linalg.solve(a, grads(x, y).T) / len(x)


def _matrix(table):
    return table.pivot(index="test_index", columns="train_index", values="influence")


@pytest.mark.parametrize("names", [None, ["2.weight", "2.bias"]], ids=["all", "last"])
def test_influence_of_an_mlp_equals_a_dense_reference(names):
    model = _mlp().eval()
    x, y = _mlp_data()
    loss_fn = nn.CrossEntropyLoss()
    expected = _reference(model, loss_fn, x, y, x[:3], y[:3], 1.0, names)
    params = None if names is None else "2"
    table = influence(model, loss_fn, (x, y), (x[:3], y[:3]), damping=1.0,
                      params=params, batch_size=16)  # fmt: skip
    np.testing.assert_allclose(_matrix(table).to_numpy(), expected.numpy(), atol=1e-10)


def test_influence_equals_captums_naive_influence_function():
    """Captum's explicit-Hessian influence, set up for the same number.

    Captum differentiates the summed loss and adds ``hessian_reg`` to that
    Hessian, so ``hessian_reg = n * damping`` and a projection of full rank
    give ``g_test^T (n H + n d I)^{-1} g_train``, which is our influence.
    """
    captum_influence = pytest.importorskip("captum.influence")
    model = _mlp()
    x, y = _mlp_data()
    n, damping = len(x), 0.3
    n_params = sum(p.numel() for p in model.parameters())
    ours = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:5], y[:5]),
                     damping=damping)  # fmt: skip
    reference = captum_influence.NaiveInfluenceFunction(
        model,
        TensorDataset(x, y),
        checkpoint="in memory",
        checkpoints_load_func=lambda m, path: 1.0,
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        batch_size=n,
        projection_dim=n_params,
        hessian_reg=n * damping,
        hessian_inverse_tol=1e-12,
    )
    scores = reference.influence((x[:5], y[:5]))
    np.testing.assert_allclose(_matrix(ours).to_numpy(), scores.numpy(), atol=1e-8)


def test_influence_by_conjugate_gradients_equals_the_exact_solve():
    model = _mlp()
    x, y = _mlp_data()
    exact = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                      damping=1.0, method="exact")  # fmt: skip
    cg = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                   damping=1.0, method="cg", cg_tol=1e-12)  # fmt: skip
    assert cg.attrs["method"] == "cg" and len(cg.attrs["cg_iterations"]) == 2
    np.testing.assert_allclose(cg["influence"], exact["influence"], atol=1e-10)
    auto = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                     damping=1.0, exact_max_params=10)  # fmt: skip
    assert auto.attrs["method"] == "cg"


def test_conjugate_gradients_on_a_known_system():
    a = torch.tensor(
        [[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64
    )
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x, its, status = _conjugate_gradients(lambda v: a @ v, b, 1e-14, 50)
    assert status == "converged" and its <= 4
    assert torch.allclose(x, torch.linalg.solve(a, b))
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    _, _, status = _conjugate_gradients(
        lambda v: indefinite @ v, torch.ones(2, dtype=torch.float64), 1e-12, 10
    )
    assert status == "negative curvature"


# ------------------------------------------------------- inputs and output ---
def test_influence_top_keeps_the_most_helpful_and_most_harmful():
    model = _mlp()
    x, y = _mlp_data()
    full = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0)
    top = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                    damping=1.0, top=3)  # fmt: skip
    assert list(top.columns) == ["test_index", "train_index", "influence"]
    assert len(top) == 2 * 6
    for t in (0, 1):
        values = full[full.test_index == t].set_index("train_index")["influence"]
        ranked = values.sort_values(ascending=False, kind="stable")
        expected = [*ranked.index[:3], *ranked.index[-3:]]
        rows = top[top.test_index == t]
        assert rows["train_index"].tolist() == expected
        assert rows["influence"].is_monotonic_decreasing
    everything = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:1], y[:1]),
                           damping=1.0, top=30)  # fmt: skip
    assert sorted(everything["train_index"]) == list(range(40))
    assert everything["influence"].is_monotonic_decreasing


def test_influence_of_a_dataloader_and_of_dict_inputs():
    class DictMLP(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, features):
            return self.inner(features)

    model = _mlp()
    x, y = _mlp_data()
    pair = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    from_loader = influence(model, nn.CrossEntropyLoss(), loader, (x[:2], y[:2]),
                            damping=1.0)  # fmt: skip
    pd.testing.assert_frame_equal(pair, from_loader, check_exact=False, atol=1e-12)
    wrapped = DictMLP(model)
    from_dict = influence(wrapped, nn.CrossEntropyLoss(), ({"features": x}, y),
                          ({"features": x[:2]}, y[:2]), damping=1.0)  # fmt: skip
    np.testing.assert_allclose(from_dict["influence"], pair["influence"], atol=1e-12)


def test_influence_of_a_model_vmap_cannot_trace():
    class Branchy(nn.Module):
        """Data-dependent Python control flow: torch.func cannot trace .item()."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.abs().max().item() > 1e6:  # never true
                return self.inner(2 * x)
            return self.inner(x)

    model = _mlp()
    x, y = _mlp_data(n=15)
    plain = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0)
    branchy = influence(Branchy(model), nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                        damping=1.0)  # fmt: skip
    np.testing.assert_allclose(branchy["influence"], plain["influence"], atol=1e-10)


def test_influence_leaves_the_model_as_found():
    model = prepared_bn_net()
    x = torch.randn(20, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    before = snapshot(model)
    table = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]),
                      damping=1.0)  # fmt: skip
    assert_untouched(model, before)
    assert table.attrs["n_params"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    cg = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0,
                   method="cg", cg_tol=1e-12)  # fmt: skip
    assert_untouched(model, before)
    np.testing.assert_allclose(cg["influence"], table["influence"], atol=1e-9)


# -------------------------------------------------------------- warnings ---
def test_influence_warns_when_the_hessian_is_not_positive_definite():
    model = _mlp(seed=4)  # at its random start: not a minimum
    x, y = _mlp_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        influence(model, nn.CrossEntropyLoss(), (x, y), (x[:1], y[:1]))
    messages = [str(w.message) for w in caught if w.category is EstimationWarning]
    assert any("not positive definite" in m for m in messages), messages
    # Softmax's shift invariance: 7 null directions of the last layer.
    assert any("singular (7 of 51" in m for m in messages), messages
    with pytest.warns(EstimationWarning, match="did not converge"):
        influence(model, nn.CrossEntropyLoss(), (x, y), (x[:1], y[:1]), method="cg")


def test_influence_warns_when_the_hessian_is_singular():
    # Softmax logits are invariant to a common shift: H has null directions.
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    with pytest.warns(EstimationWarning, match="singular"):
        table = influence(model, nn.CrossEntropyLoss(), (x, y), (x[:1], y[:1]))
    assert np.isfinite(table["influence"]).all()


# ---------------------------------------------------------------- errors ---
def test_influence_bad_parameters():
    model = _mlp()
    x, y = _mlp_data(n=6)
    ce = nn.CrossEntropyLoss()
    data = (x, y)
    cases = [
        ({"damping": -1.0}, "'damping'"),
        ({"damping": "a"}, "'damping'"),
        ({"method": "lissa"}, "'method'"),
        ({"top": 0}, "'top'"),
        ({"batch_size": 0}, "'batch_size'"),
        ({"cg_tol": 0.0}, "'cg_tol'"),
        ({"params": "fc9"}, "Unknown parameter or module 'fc9'"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InvalidParameterError, match=match):
            influence(model, ce, data, data, **kwargs)
    with pytest.raises(InvalidParameterError, match="'loss_fn'"):
        influence(model, "ce", data, data)
    with pytest.raises(InvalidParameterError, match="scalar tensor"):
        influence(model, nn.CrossEntropyLoss(reduction="none"), data, data)
    with pytest.raises(InvalidParameterError, match="inconsistent numbers"):
        influence(model, ce, (x, y[:3]), data)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        influence(model, ce, data, data)
