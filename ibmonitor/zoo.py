"""Small reference networks used by the reproductions, benchmarks and examples."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "DigitsCNN", "ResNet", "resnet18", "tishby_mlp"]

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


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convolutions and a shortcut (He et al.)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem, no max-pooling, four stages of blocks.

    Modules: ``conv1, bn1, relu`` (stem), ``layer1 .. layer4`` (each an
    ``nn.Sequential`` of :class:`BasicBlock`, named ``layer1.0``,
    ``layer1.1``, ...), ``avgpool`` (global average pooling) and ``fc``.
    Stage ``k`` has ``width * 2**(k-1)`` channels; stages 2-4 halve the
    spatial size.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        planes = width
        self._in = width
        self.layer1 = self._stage(planes, blocks[0], 1)
        self.layer2 = self._stage(planes * 2, blocks[1], 2)
        self.layer3 = self._stage(planes * 4, blocks[2], 2)
        self.layer4 = self._stage(planes * 8, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes * 8, num_classes)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self._in, planes, s))
            self._in = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for images of shape (n, in_channels, H, W)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def resnet18(num_classes: int = 10, in_channels: int = 1, width: int = 64) -> ResNet:
    """Return a CIFAR-style ResNet-18 (BasicBlocks [2, 2, 2, 2], 3x3 stem, no maxpool).

    The network of He et al. (2016) as commonly adapted to 32x32 images: a
    3x3 stride-1 stem without max-pooling, stages of 64, 128, 256 and 512
    channels (with ``width=64``), global average pooling and a linear layer:
    11.2 million parameters for 10 classes. ``width`` scales every stage
    (``width=16`` gives 0.7 million parameters and runs on a laptop CPU).

    Written here rather than taken from ``torchvision.models.resnet18``:
    torchvision's wheels are built against one torch version, and importing
    it beside the CPU-only torch this project pins fails without a matching
    build; the ImageNet stem (7x7 stride 2 plus max-pooling) would also
    shrink 32x32 inputs to 8x8 before the first block.

    Parameters
    ----------
    num_classes : int, default=10
        Output classes.
    in_channels : int, default=1
        Input channels (1 for grey-scale digits, 3 for CIFAR).
    width : int, default=64
        Channels of the first stage.

    Returns
    -------
    model : ResNet
        Block outputs are ``layer1.0, layer1.1, ..., layer4.1``.

    Examples
    --------
    >>> import torch
    >>> from ibmonitor.zoo import resnet18
    >>> model = resnet18(width=8)
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    """
    return ResNet(
        (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, width=width
    )
