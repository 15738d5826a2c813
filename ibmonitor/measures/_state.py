"""Snapshot a model (and every random-number generator) and restore it exactly.

Every measure runs inside :func:`preserved_state`, so that measuring never
changes training: after the block, the model has

- the same parameter objects, holding bitwise the same values;
- the same ``.grad`` of every parameter: ``None`` where it was ``None``, else
  the same tensor object with bitwise the same values;
- the same train/eval flag on every submodule;
- the same buffer objects (batch-norm running statistics, ``num_batches_tracked``)
  with bitwise the same values, ``None`` buffers included;
- the same ``requires_grad`` flag on every parameter;

and the torch CPU generator, every initialised CUDA generator, numpy's global
generator and Python's ``random`` are back in their former states. The state is
restored also when the block raises.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["ModelSnapshot", "preserved_rng", "preserved_state"]


def _rng_state() -> Dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state
        "python": random.getstate(),
        "cuda": (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        ),
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU, initialised CUDA), numpy and Python generators."""
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


class ModelSnapshot:
    """The exact state of a model and of the global random-number generators.

    Parameters
    ----------
    model : Module
        The model to snapshot (parameters, gradients, modes, buffers).
    rng : bool, default=True
        Also snapshot the torch (CPU and initialised CUDA), numpy and Python
        generators.

    Notes
    -----
    Memory: one copy of every parameter, gradient and buffer.
    """

    def __init__(self, model: nn.Module, *, rng: bool = True) -> None:
        self.model = model
        modules = list(model.named_modules(remove_duplicate=False))
        self._modes: List[Tuple[nn.Module, bool]] = [
            (m, m.training) for _, m in modules
        ]
        # Which object sits in each slot (tied weights appear in several slots).
        self._param_slots: List[Tuple[nn.Module, str, Any]] = []
        self._buffer_slots: List[Tuple[nn.Module, str, Any]] = []
        values: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        grads: Dict[int, Tuple[torch.Tensor, Optional[torch.Tensor], Any]] = {}
        flags: Dict[int, Tuple[torch.Tensor, bool]] = {}
        with torch.no_grad():
            for _, m in modules:
                for name, p in m._parameters.items():
                    self._param_slots.append((m, name, p))
                    if p is None or id(p) in values:
                        continue
                    values[id(p)] = (p, p.detach().clone())
                    g = p.grad
                    grads[id(p)] = (p, g, None if g is None else g.detach().clone())
                    flags[id(p)] = (p, p.requires_grad)
                for name, b in m._buffers.items():
                    self._buffer_slots.append((m, name, b))
                    if b is None or id(b) in values:
                        continue
                    values[id(b)] = (b, b.detach().clone())
        self._values = list(values.values())
        self._grads = list(grads.values())
        self._flags = list(flags.values())
        self._rng: Optional[Dict[str, Any]] = _rng_state() if rng else None

    def restore(self) -> None:
        """Put the model and the generators back as they were at the snapshot."""
        for m, name, obj in self._param_slots:
            if name not in m._parameters or m._parameters[name] is not obj:
                m._parameters[name] = obj
        for m, name, obj in self._buffer_slots:
            if name not in m._buffers or m._buffers[name] is not obj:
                m._buffers[name] = obj
        with torch.no_grad():
            for t, saved in self._values:
                if t.shape != saved.shape:  # resized in place (rare): undo the resize
                    t.resize_(saved.shape)
                t.copy_(saved)
            for p, g, saved in self._grads:
                if g is None:
                    p.grad = None
                else:
                    if g.shape != saved.shape:
                        g.resize_(saved.shape)
                    g.copy_(saved)
                    p.grad = g
        for p, flag in self._flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, mode in self._modes:
            m.training = mode
        if self._rng is not None:
            _set_rng_state(self._rng)


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, rng: bool = True) -> Iterator[nn.Module]:
    """Run a block that may change ``model``; restore the model exactly after it.

    Parameters
    ----------
    model : Module
    rng : bool, default=True
        Also restore the torch CPU and CUDA, numpy and Python generators.

    Yields
    ------
    model : Module
        The same model, free to be perturbed, switched to eval mode or have its
        gradients overwritten inside the block.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> before = model.weight.clone()
    >>> with preserved_state(model):
    ...     with torch.no_grad():
    ...         _ = model.weight.add_(1.0)
    >>> bool(torch.equal(model.weight, before))
    True
    """
    snapshot = ModelSnapshot(model, rng=rng)
    try:
        yield model
    finally:
        snapshot.restore()
