"""Batches of any structure: their inputs and their labels.

A batch of a probe set or of the measures' data is one of

- a tensor (inputs only);
- a tuple or list: its **last** element is the labels (targets), the rest
  the inputs (``(x, y)`` gives ``x``; ``(ids, mask, y)`` gives ``(ids,
  mask)``); a 1-tuple ``(x,)`` is inputs only;
- a mapping: the labels are the value under ``label_key`` (by default
  ``"labels"``, else ``"label"``), removed from the inputs, which stay a
  mapping (``model(**inputs)``).

The inputs themselves may be a tensor, a tuple or list of tensors or a mapping
of tensors (see :mod:`ibmonitor.structures`). Numpy arrays are turned into
tensors.

>>> import torch
>>> x, y = split_batch((torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)))
>>> len(x), tuple(y.shape)
(2, (2,))
>>> x, y = split_batch({"input_ids": torch.zeros(2, 4), "labels": torch.ones(2)})
>>> sorted(x), y.tolist()
(['input_ids'], [1.0, 1.0])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch

from .exceptions import InvalidParameterError
from .structures import describe_structure

__all__ = [
    "DEFAULT_LABEL_KEYS",
    "check_label_key",
    "label_key_phrase",
    "split_batch",
    "structure_signature",
    "to_structure",
]

#: The keys tried, in order, for the labels of a mapping batch without ``label_key``.
DEFAULT_LABEL_KEYS: Tuple[str, ...] = ("labels", "label")


def check_label_key(label_key: Any, owner: str) -> None:
    """Raise unless ``label_key`` is None or a non-empty str."""
    if label_key is not None and (not isinstance(label_key, str) or not label_key):
        raise InvalidParameterError(
            f"The 'label_key' parameter of {owner} must be None or a non-empty "
            f"str (the key of the labels in dict batches). Got {label_key!r} "
            "instead."
        )


def label_key_phrase(label_key: Optional[str]) -> str:
    """Return ``"'labels' or 'label'"`` (the default keys) or ``"'y'"``."""
    keys = DEFAULT_LABEL_KEYS if label_key is None else (label_key,)
    return " or ".join(repr(k) for k in keys)


def _leaf(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise InvalidParameterError(
                f"{what} must hold numeric arrays or tensors. Got an array of "
                f"dtype {value.dtype} instead."
            )
        return torch.from_numpy(np.ascontiguousarray(value))
    raise InvalidParameterError(
        f"{what} must be a tensor, a tuple or list of tensors, or a dict of "
        f"tensors. Got {describe_structure(value)} instead."
    )


def to_structure(x: Any, *, what: str) -> Any:
    """Return ``x`` with every array made a detached tensor; check its kind.

    Parameters
    ----------
    x : Tensor, ndarray, tuple or list of them, or mapping of them
    what : str
        What ``x`` is, for the message (``"The inputs of probe set 'train'"``).

    Raises
    ------
    InvalidParameterError
        ``x`` is none of these, is empty, or holds something else (a list of
        strings in a dict batch, a nested tuple).
    """
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return _leaf(x, what)
    if isinstance(x, Mapping):
        if not x:
            raise InvalidParameterError(f"{what} is an empty dict.")
        out = {}
        for key, value in x.items():
            try:
                out[key] = _leaf(value, what)
            except InvalidParameterError:
                raise InvalidParameterError(
                    f"{what} is a dict whose value under key {key!r} is "
                    f"{describe_structure(value)}, not a tensor. Every value of "
                    "a dict of inputs must be a tensor with one row per sample; "
                    "remove other columns (e.g. raw text) from the data."
                ) from None
        return out
    if isinstance(x, (tuple, list)):
        if not x:
            raise InvalidParameterError(f"{what} is an empty {type(x).__name__}.")
        leaves = []
        for i, value in enumerate(x):
            try:
                leaves.append(_leaf(value, what))
            except InvalidParameterError:
                raise InvalidParameterError(
                    f"{what} is a {type(x).__name__} whose element {i} is "
                    f"{describe_structure(value)}, not a tensor. A tuple or list "
                    "of inputs must hold tensors (passed as model(*inputs))."
                ) from None
        return tuple(leaves) if isinstance(x, tuple) else leaves
    raise InvalidParameterError(
        f"{what} must be a tensor, an array, a tuple or list of tensors "
        f"(model(*inputs)) or a dict of tensors (model(**inputs)). Got "
        f"{type(x).__name__} instead."
    )


def structure_signature(x: Any) -> Any:
    """Return what the batches of one data set must share: kind, keys, length."""
    if isinstance(x, torch.Tensor):
        return ("tensor",)
    if isinstance(x, Mapping):
        return ("mapping", tuple(x))
    return (type(x).__name__, len(x))


def split_batch(
    batch: Any, *, label_key: Optional[str] = None
) -> Tuple[Any, Optional[Any]]:
    """Split one batch into ``(inputs, labels)``; labels None when it has none.

    See the module docstring for the rule. Nothing is converted or checked
    here beyond the batch's kind.
    """
    if isinstance(batch, Mapping):
        keys = DEFAULT_LABEL_KEYS if label_key is None else (label_key,)
        found = next((k for k in keys if k in batch), None)
        if found is None:
            return dict(batch), None
        inputs = {k: v for k, v in batch.items() if k != found}
        return inputs, batch[found]
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) >= 2:
            rest = tuple(batch[:-1])  # a DataLoader collates tuples to lists
            return (rest[0] if len(rest) == 1 else rest), batch[-1]
    return batch, None
