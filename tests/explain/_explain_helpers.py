"""Helpers shared by the explanation tests (imported by name: unique module)."""

from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import torch
from torch import nn


class BNDropNet(nn.Module):
    """Conv + BatchNorm + Dropout on (n, 1, 4, 4) images, for the state tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(3)
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn2d(self.conv(x))).flatten(1)
        return self.fc2(self.drop(torch.relu(self.fc1(h))))


def prepared_bn_net() -> BNDropNet:
    """A BNDropNet in train mode with gradients on some parameters, one frozen."""
    torch.manual_seed(3)
    model = BNDropNet().double()
    x = torch.randn(16, 1, 4, 4, dtype=torch.float64)
    model.train()
    model(x).sum().backward()  # .grad everywhere, running stats moved
    model.fc1.bias.grad = None  # one None gradient
    model.conv.bias.requires_grad_(False)  # one frozen parameter
    model.drop.eval()  # mixed modes
    return model


def snapshot(model: nn.Module) -> Dict[str, Any]:
    """Everything a function must leave as it found (copies and identities)."""
    params = {}
    for name, p in model.named_parameters():
        grad = None if p.grad is None else (p.grad, p.grad.detach().clone())
        params[name] = (p, p.detach().clone(), p.requires_grad, grad)
    return {
        "params": params,
        "buffers": {n: (b, b.detach().clone()) for n, b in model.named_buffers()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),  # noqa: NPY002
        "python_rng": random.getstate(),
    }


def assert_untouched(model: nn.Module, before: Dict[str, Any]) -> None:
    """Assert the model (and the generators) are bitwise as in ``before``."""
    now = dict(model.named_parameters())
    assert list(now) == list(before["params"])
    for name, (p, value, flag, grad) in before["params"].items():
        assert now[name] is p, name
        assert torch.equal(p.detach(), value), name
        assert p.requires_grad == flag, name
        if grad is None:
            assert p.grad is None, name
        else:
            assert p.grad is grad[0], name
            assert torch.equal(p.grad, grad[1]), name
    buffers = dict(model.named_buffers())
    for name, (b, value) in before["buffers"].items():
        assert buffers[name] is b, name
        assert torch.equal(b, value), name
    assert {n: m.training for n, m in model.named_modules()} == before["modes"]
    assert torch.equal(torch.get_rng_state(), before["torch_rng"])
    assert np.array_equal(np.random.get_state()[1], before["numpy_rng"])  # noqa: NPY002
    assert random.getstate() == before["python_rng"]
