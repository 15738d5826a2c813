"""Helpers shared by the explanation functions: inputs, pooling, layer hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .._batches import to_structure
from ..exceptions import InvalidParameterError
from ..recording import CHANNELS_FIRST_TYPES, layer_output_name, resolve_layers
from ..structures import n_rows, select_output

__all__ = [
    "LayerProbe",
    "Leaves",
    "check_int",
    "leaves_of",
    "pool_unit",
    "prepare_structure",
    "resolve_one_layer",
]


def check_int(value: Any, name: str, owner: str, *, low: int = 1) -> int:
    """Return ``value`` if it is an int (not bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be an int in the range "
            f"[{low}, inf). Got {value!r} instead."
        )
    return value


def prepare_structure(x: Any, owner: str, name: str = "x") -> Any:
    """Return ``x`` as a detached tensor or tuple/list/dict of tensors with rows."""
    structure = to_structure(x, what=f"The {name!r} parameter of {owner}")
    if n_rows(structure) == 0:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} has 0 rows; give at least one example."
        )
    return structure


class Leaves:
    """The tensors of a structure in a fixed order, and how to rebuild it.

    ``keys`` are the positions (tuple/list) or keys (mapping) of the leaves;
    ``rebuild(values)`` puts values (in ``keys`` order) back into the kind of
    structure given.
    """

    def __init__(self, structure: Any) -> None:
        self.kind = (
            "tensor"
            if isinstance(structure, torch.Tensor)
            else "mapping"
            if isinstance(structure, Mapping)
            else type(structure).__name__
        )
        if isinstance(structure, torch.Tensor):
            self.keys: List[Any] = [0]
            self.values: List[torch.Tensor] = [structure]
        elif isinstance(structure, Mapping):
            self.keys = list(structure)
            self.values = [structure[k] for k in self.keys]
        else:
            self.keys = list(range(len(structure)))
            self.values = list(structure)

    def rebuild(self, values: List[Any], keys: Optional[List[Any]] = None) -> Any:
        """Return the structure with ``values`` (for ``keys``, default all)."""
        keys = self.keys if keys is None else keys
        by_key = dict(zip(keys, values))
        ordered = [by_key[k] for k in self.keys]
        if self.kind == "tensor":
            return ordered[0]
        if self.kind == "mapping":
            return dict(zip(self.keys, ordered))
        return tuple(ordered) if self.kind == "tuple" else list(ordered)


def leaves_of(structure: Any) -> Leaves:
    """Return the :class:`Leaves` of a tensor, tuple/list or mapping."""
    return Leaves(structure)


def resolve_one_layer(
    model: nn.Module, layer: Any, owner: str
) -> Tuple[str, nn.Module]:
    """Return ``(name, module)`` for one module name (or ``"output"``)."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return (name or layer_output_name(model)), module
        raise InvalidParameterError(
            f"The 'layer' parameter of {owner} is a module that is not part of the "
            "model. Pass a name from model.named_modules()."
        )
    if not isinstance(layer, str):
        raise InvalidParameterError(
            f"The 'layer' parameter of {owner} must be one module name from "
            f"model.named_modules() (or 'output'). Got {layer!r} instead."
        )
    found = resolve_layers(model, [layer])
    if len(found) != 1:  # pragma: no cover - one name resolves to one module
        raise InvalidParameterError(
            f"The 'layer' parameter of {owner} must name one module. Got {layer!r}."
        )
    return next(iter(found.items()))


def pool_unit(output: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Pool a layer's batch-first output to ``(batch, units)`` by its mean.

    The rule of :func:`ibmonitor.recording.record_activations` with
    ``reduce="mean"``: ``(batch, units)`` as is; ``(batch, channels,
    *spatial)`` (rank 4 or more, or rank 3 from a convolution, normalisation
    or pooling module) averaged over the spatial axes; ``(batch, tokens,
    hidden)`` averaged over the tokens (no padding mask here).
    """
    if output.ndim == 1:
        return output[:, None]
    if output.ndim == 2:
        return output
    if output.ndim >= 4 or isinstance(module, CHANNELS_FIRST_TYPES):
        return output.flatten(2).mean(dim=2)
    if output.ndim == 3:
        return output.mean(dim=1)
    raise InvalidParameterError(  # pragma: no cover - every rank handled above
        f"Cannot pool an output of shape {tuple(output.shape)}."
    )


class LayerProbe:
    """A forward hook that keeps the (differentiable) output of one module.

    Used as a context manager; the hook is removed on exit, also on error.
    ``module`` may be the model itself (its output is then taken from what
    the call returns, with ``output_key``).
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        *,
        output_key: Any = None,
        owner: str = "",
    ) -> None:
        self.model, self.module = model, module
        self.output_key, self.owner = output_key, owner
        self.outputs: List[Any] = []

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.outputs.append(output)

    @contextlib.contextmanager
    def attached(self) -> Iterator[LayerProbe]:
        """Register the hook for the block; remove it in ``finally``."""
        handle = None
        if self.module is not self.model:
            handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            if handle is not None:
                handle.remove()

    def take(self, model_output: Any, name: str) -> torch.Tensor:
        """Return the module's output of the last call (one call expected)."""
        if self.module is self.model:
            return select_output(model_output, self.output_key, owner=self.owner)
        outputs, self.outputs = self.outputs, []
        if len(outputs) != 1:
            raise InvalidParameterError(
                f"Layer {name!r} was called {len(outputs)} times in one forward "
                f"pass; {self.owner} needs a module called exactly once."
            )
        out = outputs[0]
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]  # recurrent modules: the sequence output
        if not isinstance(out, torch.Tensor):
            raise InvalidParameterError(
                f"Layer {name!r} returned {type(out).__name__}, not a tensor; "
                f"{self.owner} needs a tensor output."
            )
        return out
