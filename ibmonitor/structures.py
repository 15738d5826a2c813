"""Inputs and outputs of any structure: tensors, tuples of tensors, mappings.

A model's inputs may be one tensor (``model(x)``), a tuple or list of
tensors (``model(*x)``) or a mapping of tensors (``model(**x)``, as Hugging
Face models take ``input_ids`` and ``attention_mask``). Its output may be a
tensor, a tuple, a mapping or a Hugging Face ``ModelOutput``. The helpers here
let the recording pass, the probe sets and the measures treat every one of
them the same way: count and slice rows, move to a device, call the model,
flatten the rows for the estimators, and pick the element that is the
model's output (``output_key``).

>>> import torch
>>> batch = {"input_ids": torch.arange(6).reshape(3, 2), "mask": torch.ones(3, 2)}
>>> n_rows(batch), n_rows(slice_rows(batch, slice(0, 2)))
(3, 2)
>>> select_output((torch.zeros(2), torch.ones(2)), 1).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import torch

from .exceptions import InvalidParameterError

__all__ = [
    "OutputKey",
    "call_model",
    "cat_rows",
    "describe_structure",
    "flatten_rows",
    "is_structure",
    "move",
    "n_rows",
    "select_output",
    "slice_rows",
]

#: Which element of a model's output is "the output": None (a tensor as is,
#: else ``logits``), an int index, or a str key or attribute.
OutputKey = Union[None, int, str]


def is_structure(x: Any) -> bool:
    """Whether ``x`` is a tensor, or a tuple/list/mapping of tensors (non-empty)."""
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, Mapping):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x.values())
    if isinstance(x, (tuple, list)):
        return bool(x) and all(isinstance(v, torch.Tensor) for v in x)
    return False


def _leaves(x: Any) -> List[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        return list(x.values())
    return list(x)


def n_rows(x: Any) -> int:
    """Return the number of samples (first dimension, equal across tensors).

    Raises
    ------
    InvalidParameterError
        The tensors disagree on their first dimension, or one is 0-d.
    """
    sizes = {int(t.shape[0]) if t.ndim else -1 for t in _leaves(x)}
    if len(sizes) != 1 or -1 in sizes:
        raise InvalidParameterError(
            "The tensors of a structured input must share their first (sample) "
            f"dimension. Got {describe_structure(x)}."
        )
    return sizes.pop()


def _map(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: fn(v) for k, v in x.items()}
    return type(x)(fn(v) for v in x) if isinstance(x, tuple) else [fn(v) for v in x]


def slice_rows(x: Any, index: Any) -> Any:
    """Select rows (a slice or an index tensor) of every tensor of ``x``."""
    return _map(x, lambda t: t[index])


def cat_rows(parts: Sequence[Any]) -> Any:
    """Concatenate structures of the same shape along the rows."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts))
    if isinstance(first, Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    joined = [torch.cat([p[i] for p in parts]) for i in range(len(first))]
    return tuple(joined) if isinstance(first, tuple) else joined


def move(x: Any, device: torch.device, dtype: Optional[torch.dtype] = None) -> Any:
    """Move every tensor to ``device``; cast floating tensors to ``dtype``.

    Integer tensors (token ids, masks) keep their dtype.
    """

    def one(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and torch.is_floating_point(t) and t.dtype != dtype:
            return t.to(device=device, dtype=dtype)
        return t.to(device)

    return _map(x, one)


def call_model(model: Callable[..., Any], x: Any) -> Any:
    """Call ``model(x)``, ``model(*x)`` or ``model(**x)`` by the structure of ``x``."""
    if isinstance(x, torch.Tensor):
        return model(x)
    if isinstance(x, Mapping):
        return model(**x)
    return model(*x)


def flatten_rows(x: Any) -> torch.Tensor:
    """One float row per sample: every tensor flattened and concatenated.

    What the estimators take as the inputs ``X`` (identical rows are the same
    input).
    """
    leaves = [t.reshape(t.shape[0], -1) for t in _leaves(x)]
    leaves = [t if torch.is_floating_point(t) else t.to(torch.float32) for t in leaves]
    if len(leaves) == 1:
        return leaves[0]
    dtype = torch.promote_types(*(t.dtype for t in leaves[:2]))
    for t in leaves[2:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.cat([t.to(dtype) for t in leaves], dim=1)


def describe_structure(x: Any) -> str:
    """Describe a structure for messages: kinds and shapes."""
    if isinstance(x, torch.Tensor):
        return f"Tensor{tuple(x.shape)}"
    if isinstance(x, Mapping):
        inner = ", ".join(f"{k!r}: {describe_structure(v)}" for k, v in x.items())
        return "{" + inner + "}"
    if isinstance(x, (tuple, list)):
        inner = ", ".join(describe_structure(v) for v in x)
        return ("(" + inner + ")") if isinstance(x, tuple) else ("[" + inner + "]")
    return type(x).__name__


def select_output(output: Any, output_key: OutputKey = None, *, owner: str = "") -> Any:
    """Pick the model's output tensor from whatever ``forward`` returned.

    Parameters
    ----------
    output : Tensor, tuple, list, mapping or object with attributes
        What the model returned (a Hugging Face ``ModelOutput`` is a mapping).
    output_key : None, int or str, default=None
        ``None``: a tensor as is; a mapping or ``ModelOutput`` with ``logits``
        gives ``logits``; anything else is an error. An int indexes a tuple or
        list; a str is a key of a mapping or an attribute.
    owner : str, optional
        Who asks (for the message).

    Returns
    -------
    Tensor

    Raises
    ------
    InvalidParameterError
        The output has no such element, or the element is not a tensor;
        the message names ``output_key`` and describes the output.
    """
    where = f" of {owner}" if owner else ""
    if output_key is None:
        if isinstance(output, torch.Tensor):
            return output
        logits = None
        if isinstance(output, Mapping) and "logits" in output:
            logits = output["logits"]
        elif hasattr(output, "logits") and not isinstance(output, (tuple, list)):
            logits = output.logits
        if isinstance(logits, torch.Tensor):
            return logits
        raise InvalidParameterError(
            f"The model returned {describe_structure(output)}, not a tensor; pass "
            f"the 'output_key' parameter{where} to say which element is the "
            "output (an int index of a tuple, or a key or attribute name, e.g. "
            "output_key=1 or output_key='logits')."
        )
    if isinstance(output_key, bool) or not isinstance(output_key, (int, str)):
        raise InvalidParameterError(
            f"The 'output_key' parameter{where} must be None, an int or a str. "
            f"Got {output_key!r} instead."
        )
    found: Any = None
    try:
        if isinstance(output_key, int) or isinstance(output, Mapping):
            found = output[output_key]
        else:
            found = getattr(output, output_key)
    except (IndexError, KeyError, AttributeError, TypeError):
        found = None
    if not isinstance(found, torch.Tensor):
        raise InvalidParameterError(
            f"The 'output_key' parameter{where} is {output_key!r}, but the model "
            f"returned {describe_structure(output)}, which has no tensor there."
        )
    return found
