"""Helpers shared by the measures tests (imported by name: unique module)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class Quadratic(nn.Module):
    """``forward`` returns the parameter vector; the loss makes it a quadratic."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], -1)


def quadratic_loss(a: torch.Tensor, c: torch.Tensor):
    """``L(w) = (w - c)^T A (w - c) / 2`` as a loss_fn(output, target)."""

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = out - c
        return 0.5 * ((d @ a) * d).sum(dim=1).mean()

    return loss_fn


def dummy_data():
    return torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1)


def full_hessian(model, loss_fn, x, y, names=None):
    """The dense Hessian of the mean loss w.r.t. the named parameters (in order)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if names is not None:
        named = [(n, p) for n, p in named if n in names]
    fixed = {n: p.detach() for n, p in model.named_parameters()}
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(v):
        params, i = dict(fixed), 0
        for n, p in named:
            params[n] = v[i : i + p.numel()].view_as(p)
            i += p.numel()
        return loss_fn(functional_call(model, params, (x,)), y)

    was = model.training
    model.eval()
    try:
        return torch.autograd.functional.hessian(f, flat, vectorize=True)
    finally:
        model.train(was)


class BNDropNet(nn.Module):
    """Conv + BatchNorm + Dropout network for the leaves-unchanged tests."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(3)
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.bn2d(self.conv(x))).flatten(1)
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(h)))))
