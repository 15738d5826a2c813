"""Shared fixtures: seeding, and a tiny MLP on all 64 six-bit inputs.

Also makes PyPI's torchvision importable on a CPU-only torch build (see
``_models.define_torchvision_ops``), before any test imports torchvision or
timm.
"""

from __future__ import annotations

import random
from typing import NamedTuple

# Before any test imports torchvision or timm (see _models.define_torchvision_ops).
import _models  # noqa: F401
import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed python, numpy and torch before every test."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global generator is what we seed
    torch.manual_seed(0)
    yield


class TinyProblem(NamedTuple):
    """A model and a 64-sample probe set (inputs float32, labels int64)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor


def six_bit_inputs() -> torch.Tensor:
    """Every 6-bit pattern once, as a (64, 6) float32 tensor of 0/1."""
    codes = torch.arange(64)
    return ((codes[:, None] >> torch.arange(6)) & 1).to(torch.float32)


def six_bit_labels(x: torch.Tensor) -> torch.Tensor:
    """A fixed binary rule of the six bits (balanced: 32 of each class)."""
    return ((x[:, 0] + x[:, 1] + x[:, 2] * x[:, 3] + x[:, 5]) % 2).to(torch.int64)


def make_tiny_mlp(seed: int = 0, *, dropout: float = 0.0) -> nn.Sequential:
    """A 6-8-4-2 network: Linear, Tanh, [Dropout], Linear, ReLU, Linear."""
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)]
    return nn.Sequential(*layers)


@pytest.fixture
def tiny_mlp() -> TinyProblem:
    """A seeded 6-8-4-2 tanh/relu MLP and its 64 six-bit inputs and labels."""
    x = six_bit_inputs()
    return TinyProblem(make_tiny_mlp(0), x, six_bit_labels(x))


@pytest.fixture(name="make_tiny_mlp")
def _make_tiny_mlp_fixture():
    """The factory :func:`make_tiny_mlp` (seed, dropout) for tests that need two."""
    return make_tiny_mlp
