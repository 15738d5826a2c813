"""Small reference networks used by the reproductions, benchmarks and examples."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

__all__ = ["DigitsCNN", "tishby_mlp"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def tishby_mlp(
    widths: Sequence[int] = (12, 10, 7, 5, 4, 3, 2),
    activation: str = "tanh",
    *,
    softmax_output: bool = False,
) -> nn.Sequential:
    """Return Shwartz-Ziv & Tishby's fully connected network (12-10-7-5-4-3-2).

    Modules are named ``fc1, tanh1, fc2, tanh2, ..., fc6`` (``relu1``, ... with
    ``activation="relu"``), so monitored layers read as ``tanh3`` rather than
    ``5``. Hidden layers use ``activation``; the last linear layer gives logits.
    Weights are drawn from a normal truncated at two standard deviations with
    std ``1/sqrt(fan_in)``, biases are zero, as in the original code.

    Parameters
    ----------
    widths : sequence of int, default=(12, 10, 7, 5, 4, 3, 2)
        Layer widths, input first.
    activation : {"tanh", "relu", "sigmoid"}, default="tanh"
        Hidden-layer activation.
    softmax_output : bool, default=False
        Append a ``softmax`` module (the original's output layer), so that a
        monitor records the output probabilities; train on ``model[:-1]``
        (the logits, same parameters) with a cross-entropy loss.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"The 'activation' parameter of tishby_mlp must be one of "
            f"{sorted(_ACTIVATIONS)}. Got {activation!r} instead."
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        linear = nn.Linear(fan_in, fan_out)
        std = 1.0 / math.sqrt(fan_in)
        nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(linear.bias)
        layers[f"fc{i}"] = linear
        if i < len(widths) - 1:
            layers[f"{activation}{i}"] = _ACTIVATIONS[activation]()
    if softmax_output:
        layers["softmax"] = nn.Softmax(dim=1)
    return nn.Sequential(layers)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits (two conv layers, two linear)."""

    def __init__(self, channels: int = 16, hidden: int = 64, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * 16, hidden)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for images of shape (n, 1, 8, 8)."""
        h = self.act1(self.conv1(x))
        h = self.pool(self.act2(self.conv2(h)))
        h = self.act3(self.fc1(h.flatten(1)))
        return self.fc2(h)
