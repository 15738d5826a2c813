"""Record the activations of chosen layers in one no-grad pass over a probe set.

:func:`record_activations` registers forward hooks for the pass only and
removes them in ``finally`` (also when the model raises), runs the model in
evaluation mode under ``torch.no_grad()``, then puts back the training flag
of every submodule and every random-number generator state (torch CPU and
CUDA, numpy, python) exactly as it found them, so that monitoring never
changes training.

:func:`resolve_layers` turns a ``layers=`` argument into an ordered mapping
``{name: module}``. The model's own output is available under the name
``"output"`` (or ``"model_output"`` if the model has a submodule called
``output``).

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
>>> list(resolve_layers(model))
['1', 'output']
>>> acts = record_activations(model, None, torch.randn(10, 4))
>>> {name: tuple(t.shape) for name, t in acts.items()}
{'1': (10, 3), 'output': (10, 2)}
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ._device import model_device, model_float_dtype
from ._state import preserve_state
from .exceptions import InvalidParameterError

__all__ = [
    "ACTIVATION_TYPES",
    "LINEAR_TYPES",
    "activation_kind",
    "layer_output_name",
    "layer_shapes",
    "record_activations",
    "resolve_layers",
    "unwrap_model",
]

logger = logging.getLogger(__name__)

#: Module types whose outputs the default selection records.
ACTIVATION_TYPES: Tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Threshold,
    nn.GLU,
)
#: Module types recorded by default when the model has no activation modules.
LINEAR_TYPES: Tuple[type, ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
)

_KINDS: Tuple[Tuple[Tuple[type, ...], str], ...] = (
    ((nn.Tanh, nn.Hardtanh), "tanh"),
    ((nn.Sigmoid, nn.Hardsigmoid), "sigmoid"),
    (
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.PReLU,
            nn.RReLU,
            nn.ELU,
            nn.CELU,
            nn.SELU,
            nn.GELU,
            nn.SiLU,
            nn.Mish,
            nn.Softplus,
            nn.Hardswish,
        ),
        "relu",
    ),
)

_MAX_LISTED = 20

LayerSpec = Union[
    None, str, type, Sequence[Union[str, type]], Callable[[str, nn.Module], bool]
]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside ``DistributedDataParallel``/``DataParallel``.

    Recording goes through the wrapped module, so that a pass on one rank's
    shard runs no collective operation and layer names carry no ``module.``
    prefix.
    """
    wrappers: Tuple[type, ...] = (nn.DataParallel,)
    with contextlib.suppress(Exception):  # pragma: no cover - distributed builds
        from torch.nn.parallel import DistributedDataParallel

        wrappers = (*wrappers, DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def layer_output_name(model: nn.Module) -> str:
    """Name under which the model's own output is recorded (``"output"``)."""
    names = {name for name, _ in model.named_modules()}
    return "model_output" if "output" in names else "output"


def activation_kind(module: nn.Module) -> Optional[str]:
    """Return ``"tanh"``, ``"sigmoid"``, ``"relu"`` or None for a module.

    Used to decide whether saturation (|t| near the activation's bound) is
    meaningful for a layer.
    """
    for types, kind in _KINDS:
        if isinstance(module, types):
            return kind
    return None


def resolve_layers(model: nn.Module, layers: LayerSpec = None) -> Dict[str, nn.Module]:
    """Choose the layers to record; return ``{name: module}`` in model order.

    Parameters
    ----------
    model : nn.Module
        The model (``DistributedDataParallel`` is unwrapped).
    layers : None, str, type, sequence of str or type, or callable, default=None
        ``None``: the outputs of activation modules (:data:`ACTIVATION_TYPES`)
        where the model has any, otherwise of every Linear and Conv module, in
        both cases plus the model's output (``"output"``). A name or a list of
        names from ``model.named_modules()`` (``"output"`` or ``""`` is the
        model's own output). A module type or a list of types (every module of
        those types). A callable ``f(name, module) -> bool``.

    Returns
    -------
    layers : dict of str to nn.Module
        Ordered as in ``model.named_modules()``, the model output last.

    Raises
    ------
    InvalidParameterError
        An unknown name (the message lists the available names), a type that
        matches no module, an empty selection.
    """
    model = unwrap_model(model)
    out_name = layer_output_name(model)
    named = [(name, module) for name, module in model.named_modules() if name]
    available = [name for name, _ in named]

    if layers is None:
        chosen = [(n, m) for n, m in named if isinstance(m, ACTIVATION_TYPES)]
        if not chosen:
            chosen = [(n, m) for n, m in named if isinstance(m, LINEAR_TYPES)]
        # A Sequential whose last leaf is selected already records its output.
        leaves = [n for n, m in named if not list(m.children())]
        last_is_output = (
            isinstance(model, nn.Sequential)
            and leaves
            and chosen
            and chosen[-1][0] == leaves[-1]
        )
        result = OrderedDict(chosen)
        if not last_is_output:
            result[out_name] = model
        return result

    if callable(layers) and not isinstance(layers, type):
        result = OrderedDict((n, m) for n, m in named if layers(n, m))
        if bool(layers("", model)):
            result[out_name] = model
        if not result:
            raise InvalidParameterError(
                "No layers to monitor: the 'layers' callable selected no module. "
                "It is called as f(name, module) for every entry of "
                "model.named_modules()."
            )
        return result

    if isinstance(layers, (str, type)):
        layers = [layers]
    items = list(layers)
    if not items:
        raise InvalidParameterError(
            "No layers to monitor: 'layers' is empty. Pass module names from "
            f"model.named_modules(), e.g. {_listing(available[:2])}."
        )
    wanted: set = set()
    want_output = False
    by_name = dict(named)
    for item in items:
        if isinstance(item, type):
            if issubclass(item, nn.Module):
                hits = [n for n, m in named if isinstance(m, item)]
                if isinstance(model, item):
                    want_output = True
                if not hits and not isinstance(model, item):
                    raise InvalidParameterError(
                        f"No module of type {item.__name__} in the model. Module "
                        f"types present: {_listing(_types(named))}."
                    )
                wanted.update(hits)
                continue
        elif isinstance(item, str):
            if item in by_name:
                wanted.add(item)
                continue
            if item in ("", out_name):
                want_output = True
                continue
            raise InvalidParameterError(
                f"Unknown layer {item!r}. Available layers: "
                f"{_listing([*available, out_name])}."
            )
        raise InvalidParameterError(
            "The 'layers' parameter must be None, a module name, a module type, a "
            f"list of those, or a callable. Got {item!r} instead."
        )
    result = OrderedDict((n, m) for n, m in named if n in wanted)
    if want_output:
        result[out_name] = model
    return result


def _types(named: List[Tuple[str, nn.Module]]) -> List[str]:
    seen: Dict[str, None] = {}
    for _, module in named:
        seen.setdefault(type(module).__name__, None)
    return list(seen)


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= _MAX_LISTED:
        return repr(names)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return f"[{shown}, ... ({len(names) - _MAX_LISTED} more)]"


def _batches(
    inputs: Any, batch_size: int
) -> Iterator[Union[torch.Tensor, Tuple[Any, ...]]]:
    if isinstance(inputs, torch.Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start : start + batch_size]
        return
    if isinstance(inputs, np.ndarray):
        yield from _batches(torch.from_numpy(inputs), batch_size)
        return
    for batch in inputs:  # a DataLoader or any iterable of batches
        if isinstance(batch, (tuple, list)):
            if not batch:
                raise InvalidParameterError("A batch of the probe set is empty.")
            batch = batch[0]
        elif isinstance(batch, dict):
            raise InvalidParameterError(
                "Batches of the probe set must be tensors or (inputs, labels, ...) "
                "tuples; got a dict. Wrap the loader to yield tuples."
            )
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        yield batch


def _first_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _to_model(batch: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype]):
    if torch.is_floating_point(batch) and dtype is not None and batch.dtype != dtype:
        return batch.to(device=device, dtype=dtype, non_blocking=True)
    if batch.device != device:
        return batch.to(device=device, non_blocking=True)
    return batch


class _Recorder:
    """Forward hook of one layer: copies each batch's (batch, units) output.

    With the number of samples known in advance, each batch is copied once
    into a preallocated ``(n_samples, n_units)`` buffer on the layer's device;
    otherwise each batch is copied and the copies are concatenated at the end.
    A copy is needed either way: a later module may modify the output in
    place (``ReLU(inplace=True)``).
    """

    def __init__(self, name: str, reduce: Optional[str], total: Optional[int]):
        self.name = name
        self.reduce = reduce
        self.total = total
        self.buffer: Optional[torch.Tensor] = None
        self.pos = 0
        self.chunks: List[torch.Tensor] = []
        self.calls = 0
        self.rows = 0
        self.width: Optional[int] = None
        self.shape: Optional[Tuple[int, ...]] = None
        self.error: Optional[str] = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls += 1
        out = _first_tensor(output)
        if out is None:
            self.error = (
                f"returned {type(output).__name__}, which holds no tensor; choose "
                "a layer that returns a tensor"
            )
            return
        out = out.detach()
        if out.ndim == 0:
            out = out.reshape(1, 1)
        self.shape = tuple(out.shape[1:])
        if self.reduce is not None and out.ndim > 2:
            axes = tuple(range(2, out.ndim))
            t = out.mean(dim=axes) if self.reduce == "mean" else out.amax(dim=axes)
        else:
            t = out.reshape(out.shape[0], -1)
        self.rows = int(t.shape[0])
        width = int(t.shape[1])
        if self.width is None:
            self.width = width
        elif width != self.width:
            self.error = (
                f"produced outputs of different widths in different batches "
                f"({self.width} and {width} units); choose another layer or use "
                "reduce='mean'"
            )
            return
        dtype = t.dtype
        if dtype in (torch.float16, torch.bfloat16) or not torch.is_floating_point(t):
            dtype = torch.float32
        if self.total is None:
            self.chunks.append(t.to(dtype=dtype, copy=True))
            return
        if self.buffer is None:
            self.buffer = torch.empty((self.total, width), dtype=dtype, device=t.device)
        if self.pos + self.rows <= self.total:
            self.buffer[self.pos : self.pos + self.rows].copy_(t)
        self.pos += self.rows

    def result(self) -> torch.Tensor:
        if self.buffer is not None:
            return self.buffer[: self.pos]
        return torch.cat(self.chunks, dim=0) if len(self.chunks) > 1 else self.chunks[0]


def record_activations(
    model: nn.Module,
    layers: Union[LayerSpec, Dict[str, nn.Module]],
    inputs: Any,
    *,
    batch_size: int = 256,
    reduce: Optional[str] = None,
    device: Union[str, torch.device, None] = "cpu",
) -> Dict[str, torch.Tensor]:
    """Run the model over a probe set and return each chosen layer's activations.

    One pass under ``torch.no_grad()`` in evaluation mode, in batches, with a
    forward hook on each chosen layer registered for the pass only. The hooks
    are removed, the training flag of every submodule restored and the RNG
    states (torch CPU and CUDA, numpy, python) put back in ``finally``, also
    when the model raises.

    Parameters
    ----------
    model : nn.Module
        The model; ``DistributedDataParallel`` is unwrapped.
    layers : see :func:`resolve_layers`, or a dict ``{name: module}``
        The layers to record.
    inputs : Tensor, ndarray, or iterable of batches (e.g. a DataLoader)
        The probe set. Batches may be tensors or ``(inputs, labels, ...)``
        tuples (the first element is fed to the model). Inputs are moved to
        the model's device, and floating inputs cast to its parameter dtype.
    batch_size : int, default=256
        Batch size when ``inputs`` is a tensor or array.
    reduce : {None, "mean", "max"}, default=None
        ``None`` flattens each output to ``(n_samples, n_units)``; ``"mean"``
        and ``"max"`` pool every axis after the second (the spatial axes of a
        convolutional map, channels first) so each channel is one unit.
    device : str or torch.device or None, default="cpu"
        Where the returned activations live; ``None`` keeps them on the
        model's device.

    Returns
    -------
    activations : dict of str to Tensor of shape (n_samples, n_units)
        Detached copies, float32 (or float64 for a float64 model), in the
        order of the layers.

    Raises
    ------
    InvalidParameterError
        Bad ``reduce`` or ``batch_size``, an empty probe set, a layer that
        produced no output during the pass, was called more than once per
        batch, or returned a first dimension other than the batch size.
    """
    if reduce not in (None, "mean", "max"):
        raise InvalidParameterError(
            "The 'reduce' parameter of record_activations must be one of "
            f"[None, 'mean', 'max']. Got {reduce!r} instead."
        )
    if (
        not isinstance(batch_size, (int, np.integer))
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise InvalidParameterError(
            "The 'batch_size' parameter of record_activations must be an int in "
            f"the range [1, inf). Got {batch_size!r} instead."
        )
    model = unwrap_model(model)
    if isinstance(layers, dict) and all(
        isinstance(m, nn.Module) for m in layers.values()
    ):
        modules = OrderedDict(layers)
    else:
        modules = resolve_layers(model, layers)
    if not modules:
        raise InvalidParameterError("No layers to monitor: the selection is empty.")
    recorders = _run_pass(model, modules, inputs, int(batch_size), reduce)
    dev = model_device(model)
    out_device = dev if device is None else torch.device(device)
    result: Dict[str, torch.Tensor] = OrderedDict()
    for name, rec in recorders.items():
        result[name] = rec.result().to(out_device)
    return result


def layer_shapes(
    model: nn.Module,
    layers: Dict[str, nn.Module],
    inputs: torch.Tensor,
    *,
    reduce: Optional[str] = None,
) -> Dict[str, Dict[str, Any]]:
    """Return ``{name: {"shape": [...], "n_units": int}}`` from a short pass.

    ``shape`` is the layer's output shape without the batch axis; ``n_units``
    the width after flattening (or pooling with ``reduce``). Runs the same
    pass as :func:`record_activations` (with the same guarantees) on
    ``inputs``; two samples or so are enough.
    """
    recorders = _run_pass(
        unwrap_model(model), layers, inputs, max(int(inputs.shape[0]), 1), reduce
    )
    return {
        name: {
            "shape": [int(s) for s in (rec.shape or ())],
            "n_units": int(rec.width or 0),
        }
        for name, rec in recorders.items()
    }


def _run_pass(
    model: nn.Module,
    modules: Dict[str, nn.Module],
    inputs: Any,
    batch_size: int,
    reduce: Optional[str],
) -> Dict[str, _Recorder]:
    dev = model_device(model)
    dtype = model_float_dtype(model)
    total = (
        int(inputs.shape[0]) if isinstance(inputs, (torch.Tensor, np.ndarray)) else None
    )
    recorders = OrderedDict((name, _Recorder(name, reduce, total)) for name in modules)
    handles = []
    n_samples = 0
    try:
        with preserve_state(model), torch.no_grad():
            model.eval()
            for name, module in modules.items():
                handles.append(module.register_forward_hook(recorders[name]))
            for batch in _batches(inputs, int(batch_size)):
                if not isinstance(batch, torch.Tensor):
                    raise InvalidParameterError(
                        "The probe inputs must be tensors or arrays. Got a batch of "
                        f"type {type(batch).__name__}."
                    )
                size = int(batch.shape[0]) if batch.ndim else 1
                if size == 0:
                    continue
                calls_before = {n: r.calls for n, r in recorders.items()}
                model(_to_model(batch, dev, dtype))
                for name, rec in recorders.items():
                    _check_batch(name, rec, calls_before[name], size)
                n_samples += size
    finally:
        for handle in handles:
            handle.remove()
    if n_samples == 0:
        raise InvalidParameterError(
            "The probe set is empty: the pass over 'inputs' saw 0 samples. Give at "
            "least 2 examples."
        )
    return recorders


def _check_batch(name: str, rec: _Recorder, calls_before: int, size: int) -> None:
    calls = rec.calls - calls_before
    if rec.error is not None:
        raise InvalidParameterError(f"Layer {name!r} {rec.error}.")
    if calls == 0:
        raise InvalidParameterError(
            f"Layer {name!r} produced no output during the forward pass. Is it "
            "used in forward()? A module that is defined but not called, or an "
            "activation applied functionally (F.relu), cannot be hooked; choose "
            "another layer from model.named_modules() or use the default selection."
        )
    if calls > 1:
        raise InvalidParameterError(
            f"Layer {name!r} was called {calls} times in one forward pass; its "
            "activations are ambiguous. Choose a module that is called once per "
            "forward pass."
        )
    got = rec.rows
    if got != size:
        raise InvalidParameterError(
            f"Layer {name!r} returned {got} rows for a batch of {size} samples; "
            "its first dimension must be the batch (for recurrent modules use "
            "batch_first=True)."
        )
