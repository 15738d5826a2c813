"""Snapshot a model (and every random-number generator) and restore it exactly.

One helper for the whole package. :func:`preserve_state` puts back, on exit
(also when the block raises):

- always: the torch CPU generator, every initialised CUDA generator, numpy's
  global generator and Python's :mod:`random` (unless ``rng=False``), and the
  train/eval flag of every submodule of ``model``;
- with ``parameters=True``, also: the same parameter objects holding bitwise
  the same values, the same ``.grad`` of every parameter (``None`` where it was
  ``None``, else the same tensor object with bitwise the same values), the same
  ``requires_grad`` flags, and the same buffer objects (batch-norm running
  statistics, ``num_batches_tracked``, ``None`` buffers included) with bitwise
  the same values.

The cheap form (``parameters=False``) is what recording and the monitor use
around a forward pass; the full form is what every measure runs inside, so
that measuring never changes training.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .exceptions import InvalidParameterError

__all__ = ["ModelSnapshot", "preserve_state", "preserved_rng"]


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
    """Restore the torch (CPU, initialised CUDA), numpy and Python generators.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_rng_state()
    >>> with preserved_rng():
    ...     _ = torch.rand(3)
    >>> bool(torch.equal(torch.get_rng_state(), before))
    True
    """
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


class ModelSnapshot:
    """The state of a model (and of the global random-number generators).

    Parameters
    ----------
    model : Module
        The model to snapshot.
    parameters : bool, default=True
        Snapshot parameters, gradients, ``requires_grad`` flags and buffers
        (one copy of each); else only the train/eval flag of every submodule.
    rng : bool, default=True
        Also snapshot the torch (CPU and initialised CUDA), numpy and Python
        generators.

    Notes
    -----
    Memory with ``parameters=True``: one copy of every parameter, gradient and
    buffer. Tied weights (one parameter in several modules) are copied once and
    restored in every slot.
    """

    def __init__(
        self, model: nn.Module, *, parameters: bool = True, rng: bool = True
    ) -> None:
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
        if parameters:
            with torch.no_grad():
                for _, m in modules:
                    for name, p in m._parameters.items():
                        self._param_slots.append((m, name, p))
                        if p is None or id(p) in values:
                            continue
                        values[id(p)] = (p, p.detach().clone())
                        g = p.grad
                        grads[id(p)] = (
                            p,
                            g,
                            None if g is None else g.detach().clone(),
                        )
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
def preserve_state(
    model: Optional[nn.Module] = None,
    *,
    parameters: bool = False,
    rng: bool = True,
) -> Iterator[Optional[nn.Module]]:
    """Run a block that may change ``model``; put its state back after it.

    Parameters
    ----------
    model : Module, optional
        The model whose submodules' train/eval flags (and, with
        ``parameters=True``, parameters, gradients and buffers) are restored.
        Without a model only the generators are restored.
    parameters : bool, default=False
        Also restore parameters (same objects, bitwise values,
        ``requires_grad``), their ``.grad`` and the buffers. Costs one copy of
        each; the default restores only the modes and the generators.
    rng : bool, default=True
        Restore the torch CPU and CUDA, numpy and Python generators.

    Yields
    ------
    model : Module or None
        The same model, free to be switched to eval mode (and, with
        ``parameters=True``, perturbed or have its gradients overwritten)
        inside the block.

    Raises
    ------
    InvalidParameterError
        ``parameters=True`` without a model.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> before = model.weight.clone()
    >>> with preserve_state(model, parameters=True):
    ...     with torch.no_grad():
    ...         _ = model.weight.add_(1.0)
    ...     _ = model.eval()
    >>> bool(torch.equal(model.weight, before)), model.training
    (True, True)
    """
    if model is None:
        if parameters:
            raise InvalidParameterError(
                "The 'parameters' parameter of preserve_state needs a model; got "
                "parameters=True with model=None."
            )
        if rng:
            with preserved_rng():
                yield None
        else:
            yield None
        return
    snapshot = ModelSnapshot(model, parameters=parameters, rng=rng)
    try:
        yield model
    finally:
        snapshot.restore()
