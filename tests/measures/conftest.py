"""Fixtures for the measures tests: tiny seeded models, data and references."""

from __future__ import annotations

import pytest
import torch
from _fixtures import one_thread_and_seeded  # noqa: F401 (autouse)
from torch import nn


@pytest.fixture
def mlp_problem():
    """A float64 tanh MLP (5-16-3, 147 parameters) trained a little, with data."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(120, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (120,))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(30):
        model.zero_grad()
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.5 * p.grad)
    model.zero_grad(set_to_none=True)
    return model, loss_fn, x, y
