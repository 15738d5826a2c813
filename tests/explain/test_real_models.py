"""The explanations on models nobody here wrote (tests/_models.py), issue 14.

Token-id models get saliency at their embedding output, checked against
autograd through a hook; models returning tuples or dicts get their output
picked with ``output_key``; influence over the last layer agrees between the
exact and the conjugate-gradient solves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import CASES
from torch import nn

from ibmonitor.explain import influence, saliency, top_activations
from ibmonitor.recording import record_activations
from ibmonitor.structures import call_model, select_output, slice_rows

FAST = ["lstm", "tuple_output", "dict_output", "compiled"]
SLOW = ["transformer", "bert", "vit", "resnet18", "timm"]


def _case(name):
    try:
        return CASES[name](n=8)
    except ImportError as error:  # torchvision/timm/transformers not installed
        pytest.skip(f"{name}: {error}")


def _embedding_gradient(model, inputs, targets, output_key):
    """d score / d (first nn.Embedding output), by a hook and autograd."""
    embedding = next(m for m in model.modules() if isinstance(m, nn.Embedding))
    kept = []

    def hook(module, args, output):
        output = output.detach().requires_grad_(True)
        kept.append(output)
        return output

    handle = embedding.register_forward_hook(hook)
    try:
        model.eval()
        out = select_output(call_model(model, inputs), output_key)
        (grad,) = torch.autograd.grad(
            out[torch.arange(len(targets)), targets].sum(), kept
        )
    finally:
        handle.remove()
        model.train()
    return grad.sum(dim=-1)


def _check(name):
    case = _case(name)
    model, x, y = case.model, case.inputs, case.labels
    output_key = case.options.get("output_key")
    model.train()
    modes = {n: m.training for n, m in model.named_modules()}
    # Saliency: shaped like x; token ids through the embedding.
    grads = saliency(model, x, y, output_key=output_key)
    assert {n: m.training for n, m in model.named_modules()} == modes
    ids = x["input_ids"] if isinstance(x, dict) else x
    if not torch.is_floating_point(ids):
        per_token = grads["input_ids"] if isinstance(x, dict) else grads
        assert per_token.shape == ids.shape
        expected = _embedding_gradient(model, x, y, output_key)
        torch.testing.assert_close(per_token, expected, atol=1e-5, rtol=1e-4)
        if isinstance(x, dict):
            assert grads["attention_mask"] is None
    else:
        leaf = x.clone().requires_grad_(True)
        model.eval()
        out = select_output(call_model(model, leaf), output_key)
        (expected,) = torch.autograd.grad(out[torch.arange(len(y)), y].sum(), leaf)
        model.train()
        torch.testing.assert_close(grads, expected, atol=1e-5, rtol=1e-4)
    # Top activations of the last linear layer: a sort of the recording.
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    table = top_activations(model, last, x, k=3, output_key=output_key)
    acts = next(iter(record_activations(model, [last], x, reduce="mean").values()))
    for unit, rows in table.groupby("unit"):
        order = np.argsort(-acts[:, unit].numpy(), kind="stable")[:3]
        assert rows["index"].tolist() == order.tolist()
    # Influence on the last layer: exact and CG agree.
    params = last.replace("_orig_mod.", "")
    test = (slice_rows(x, slice(0, 2)), y[:2])
    common = {"params": params, "damping": 1.0, "output_key": output_key}
    exact = influence(model, nn.CrossEntropyLoss(), (x, y), test, **common)
    cg = influence(
        model, nn.CrossEntropyLoss(), (x, y), test, method="cg", cg_tol=1e-10, **common
    )
    assert exact.shape == (16, 3) and np.isfinite(exact["influence"]).all()
    np.testing.assert_allclose(cg["influence"], exact["influence"], atol=1e-5)
    assert {n: m.training for n, m in model.named_modules()} == modes


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("name", FAST)
def test_explanations_on_real_models(name):
    _check(name)


@pytest.mark.slow
# torch.func lacks some batching rules (the fused encoder layer): a slow fallback.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("name", SLOW)
def test_explanations_on_real_models_slow(name):
    _check(name)
