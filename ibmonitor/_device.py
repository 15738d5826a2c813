"""Where a model lives: its device and floating dtype (one helper for the package)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

__all__ = ["autocast_disabled", "model_device", "model_dtype", "model_float_dtype"]


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


@contextlib.contextmanager
def autocast_disabled(device: Optional[torch.device] = None) -> Iterator[None]:
    """Run the body in float32 eager mode: autocast off on CPU, CUDA and ``device``.

    Recording and every measure run inside it, so that a monitor called from
    within a ``torch.autocast(...)`` region computes what it computes outside.
    """
    kinds = ["cpu"] + ([device.type] if device is not None else [])
    if torch.cuda.is_available():
        kinds.append("cuda")
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys(kinds):
            with contextlib.suppress(RuntimeError, ValueError):
                stack.enter_context(torch.autocast(kind, enabled=False))
        yield
