"""Where a model lives: its device and floating dtype (one helper for the package)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["model_device", "model_dtype", "model_float_dtype"]


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (else CPU)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_float_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """Return the dtype of the model's first floating parameter, or None.

    None means the model has no floating parameter (an activation module, an
    integer-only model): callers then leave their inputs' dtype alone.
    """
    for tensor in model.parameters():
        if torch.is_floating_point(tensor):
            return tensor.dtype
    return None


def model_dtype(model: nn.Module) -> torch.dtype:
    """Return :func:`model_float_dtype`, or torch's default dtype when None."""
    dtype = model_float_dtype(model)
    return torch.get_default_dtype() if dtype is None else dtype
