"""Saliency maps (issue 14): closed forms, autograd, structured and token inputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _explain_helpers import assert_untouched, prepared_bn_net, snapshot
from torch import nn

from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.explain import saliency


def _linear(n_in=5, n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


# ------------------------------------------------------------ closed forms ---
def test_saliency_linear_model_is_the_target_row_of_the_weights():
    model = _linear()
    x = torch.randn(7, 5, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    grads = saliency(model, x, targets)
    assert grads.shape == x.shape
    assert torch.allclose(grads, model.weight.detach()[targets], atol=1e-12)
    # One class for every sample.
    grads = saliency(model, x, 2)
    assert torch.allclose(grads, model.weight.detach()[2].expand(7, 5), atol=1e-12)


def test_saliency_default_target_is_the_predicted_class():
    model = _linear()
    x = torch.randn(30, 5, dtype=torch.float64)
    predicted = model(x).argmax(dim=1)
    grads = saliency(model, x)
    assert torch.allclose(grads, model.weight.detach()[predicted], atol=1e-12)


def test_saliency_quadratic_model_closed_form():
    # S_c(x) = x^T A_c x: gradient (A_c + A_c^T) x.
    torch.manual_seed(1)
    a = torch.randn(3, 4, 4, dtype=torch.float64)

    class Quadratic(nn.Module):
        def forward(self, x):
            return torch.einsum("ni,cij,nj->nc", x, a, x)

    model = Quadratic()
    x = torch.randn(6, 4, dtype=torch.float64)
    targets = [0, 2, 1, 1, 0, 2]
    grads = saliency(model, x, targets)
    expected = torch.stack([(a[c] + a[c].T) @ x[i] for i, c in enumerate(targets)]).to(
        grads.dtype
    )
    assert torch.allclose(grads, expected, atol=1e-6)


def test_saliency_matches_autograd_on_a_cnn_and_is_batched():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    ).double()
    x = torch.randn(9, 1, 5, 5, dtype=torch.float64)
    targets = torch.randint(0, 3, (9,))
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    (expected,) = torch.autograd.grad(out[torch.arange(9), targets].sum(), leaf)
    grads = saliency(model, x, targets, batch_size=4)
    assert torch.allclose(grads, expected, atol=1e-12)


def test_saliency_of_one_score_per_sample():
    torch.manual_seed(0)
    w = torch.randn(4, dtype=torch.float64)

    class Score(nn.Module):
        def forward(self, x):
            return torch.tanh(x @ w)

    x = torch.randn(5, 4, dtype=torch.float64)
    expected = (1 - torch.tanh(x @ w) ** 2)[:, None] * w
    assert torch.allclose(saliency(Score(), x), expected, atol=1e-12)
    with pytest.raises(InvalidParameterError, match="one score per sample"):
        saliency(Score(), x, 1)


# ----------------------------------------------------------- structured x ---
class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(4, 2)

    def forward(self, u, v):
        return self.a(u) + self.b(v)


class DictInputs(TwoInputs):
    def forward(self, u, v):  # called as model(**x)
        return super().forward(u, v)


def test_saliency_tuple_and_dict_inputs_keep_their_structure():
    torch.manual_seed(0)
    model = TwoInputs().double()
    u = torch.randn(4, 3, dtype=torch.float64)
    v = torch.randn(4, 4, dtype=torch.float64)
    gu, gv = saliency(model, (u, v), 1)
    assert torch.allclose(gu, model.a.weight.detach()[1].expand(4, 3))
    assert torch.allclose(gv, model.b.weight.detach()[1].expand(4, 4))
    as_list = saliency(model, [u, v], 1)
    assert isinstance(as_list, list) and torch.equal(as_list[0], gu)
    dict_model = DictInputs().double()
    dict_model.load_state_dict(model.state_dict())
    grads = saliency(dict_model, {"u": u, "v": v}, 1)
    assert set(grads) == {"u", "v"}
    assert torch.allclose(grads["v"], gv)


class TokenModel(nn.Module):
    """Masked mean of token embeddings, then a linear layer."""

    def __init__(self, vocab=11, dim=4, n_classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        if attention_mask is None:
            return self.head(h.mean(dim=1))
        m = attention_mask.to(h.dtype)[..., None]
        return self.head((h * m).sum(dim=1) / m.sum(dim=1))


def test_saliency_of_token_ids_is_the_gradient_at_the_embedding_output():
    # d S_c / d h[i, l, :] = W[c] / L for a plain mean over L tokens.
    torch.manual_seed(0)
    model = TokenModel().double()
    ids = torch.randint(0, 11, (5, 6))
    targets = torch.tensor([0, 1, 2, 0, 1])
    w = model.head.weight.detach()
    per_token = saliency(model, ids, targets)
    assert per_token.shape == ids.shape
    expected = (w[targets].sum(dim=1) / 6)[:, None].expand(5, 6)
    assert torch.allclose(per_token, expected, atol=1e-12)
    whole = saliency(model, ids, targets, embedding_reduce=None)
    assert whole.shape == (5, 6, 4)
    assert torch.allclose(whole, (w[targets] / 6)[:, None, :].expand(5, 6, 4))
    norms = saliency(model, ids, targets, embedding_reduce="norm")
    assert torch.allclose(norms, whole.norm(dim=-1))


def test_saliency_of_a_dict_of_token_ids_and_mask():
    torch.manual_seed(0)
    model = TokenModel().double()
    ids = torch.randint(0, 11, (4, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1] * 5])
    out = saliency(model, {"input_ids": ids, "attention_mask": mask}, 2)
    assert out["attention_mask"] is None
    w2 = model.head.weight.detach()[2].sum()
    expected = mask.double() * w2 / mask.sum(dim=1, keepdim=True)
    assert torch.allclose(out["input_ids"], expected, atol=1e-12)


def test_saliency_of_mixed_float_and_token_inputs():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(7, 3)
            self.fc = nn.Linear(3 + 2, 2)

        def forward(self, ids, extra):
            return self.fc(torch.cat([self.embed(ids).mean(1), extra], dim=1))

    torch.manual_seed(0)
    model = Mixed().double()
    ids = torch.randint(0, 7, (3, 4))
    extra = torch.randn(3, 2, dtype=torch.float64)
    g_ids, g_extra = saliency(model, (ids, extra), 1)
    w = model.fc.weight.detach()[1]
    assert torch.allclose(g_extra, w[3:].expand(3, 2))
    assert torch.allclose(g_ids, (w[:3].sum() / 4).expand(3, 4))


def test_saliency_named_embedding_layer():
    class TwoEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Embedding(3, 2)
            self.tokens = nn.Embedding(9, 2)
            self.fc = nn.Linear(2, 2)

        def forward(self, ids):
            return self.fc(self.tokens(ids).sum(1))

    torch.manual_seed(0)
    model = TwoEmbeddings().double()
    ids = torch.randint(0, 9, (3, 4))
    grads = saliency(model, ids, 0, embedding_layer="tokens")
    assert torch.allclose(grads, model.fc.weight.detach()[0].sum().expand(3, 4))


# ----------------------------------------------------------------- state ---
def test_saliency_leaves_the_model_as_found_and_uses_eval_mode():
    model = prepared_bn_net()
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    before = snapshot(model)
    grads = saliency(model, x, 1)
    assert_untouched(model, before)
    # The same as autograd in eval mode (dropout off, running statistics).
    model.eval()
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    assert torch.allclose(grads, expected, atol=1e-12)


def test_saliency_float32_model_on_float64_inputs_and_numpy():
    model = nn.Linear(3, 2)
    x = np.random.default_rng(0).normal(size=(4, 3))
    grads = saliency(model, x, 0)
    assert grads.dtype == torch.float32
    assert torch.allclose(grads, model.weight.detach()[0].expand(4, 3))


# ---------------------------------------------------------------- errors ---
@pytest.mark.parametrize(
    ("target", "match"),
    [
        (3, "holds class 3"),
        (-1, "holds class -1"),
        ([0, 1], "has 2 entries"),
        (True, "must be None, an int"),
        ([0.5, 1, 1, 1], "integer class indices"),
        ("a", "must be None, an int"),
    ],
)
def test_saliency_bad_targets(target, match):
    with pytest.raises(InvalidParameterError, match=match):
        saliency(_linear(), torch.randn(4, 5), target)


def test_saliency_bad_parameters():
    model, x = _linear(), torch.randn(4, 5)
    with pytest.raises(InvalidParameterError, match="'batch_size'"):
        saliency(model, x, 0, batch_size=0)
    with pytest.raises(InvalidParameterError, match="'embedding_reduce'"):
        saliency(model, x, 0, embedding_reduce="mean")
    with pytest.raises(InvalidParameterError, match="0 rows"):
        saliency(model, torch.zeros(0, 5), 0)
    with pytest.raises(InvalidParameterError, match=r"no nn\.Embedding"):
        saliency(model, torch.zeros(4, 5, dtype=torch.int64), 0)

    class Seq(nn.Module):
        def forward(self, x):
            return x[:, :, None].expand(-1, -1, 2)

    with pytest.raises(InvalidParameterError, match=r"\(n,\) or \(n, n_classes\)"):
        saliency(Seq(), torch.randn(4, 5), 0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        saliency(model, x, 0)


def test_saliency_without_captum_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ModuleNotFoundError, match=r"ibmonitor\[explain\]"):
        saliency(_linear(), torch.randn(2, 5), 0)


@pytest.mark.gpu
def test_saliency_on_cuda_returns_on_the_input_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _linear().cuda()
    x = torch.randn(4, 5, dtype=torch.float64)
    grads = saliency(model, x, 1)
    assert grads.device == x.device
    assert torch.allclose(grads, model.weight.detach()[1].cpu().expand(4, 5))
