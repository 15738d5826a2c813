"""Probe sets: the fixed inputs the monitor feeds the model, with their labels.

A :class:`ProbeSet` holds what to feed the model (``inputs``, fed in batches
by the recording pass) and what the estimators get (integer ``labels``, the
inputs flattened to ``(n_samples, n_features)`` and, computed once, the ids
of identical input rows). :func:`build_probes` turns the monitor's
``inputs``/``labels``/``probes`` arguments into named probe sets.

The inputs may have any structure a model takes: one tensor (``model(x)``),
a tuple or list of tensors (``model(*x)``) or a dict of tensors
(``model(**x)``, e.g. ``input_ids`` and ``attention_mask``), or a DataLoader
yielding batches of any of these (see :func:`ProbeSet.from_data` for where
the labels come from).

>>> import torch
>>> probe = ProbeSet.from_data("train", torch.randn(8, 3), torch.arange(8) % 2)
>>> probe.n_samples, tuple(probe.values.shape)
(8, (8, 3))
>>> ids = torch.randint(0, 100, (8, 5))
>>> text = ProbeSet.from_data(
...     "text", {"input_ids": ids, "attention_mask": torch.ones(8, 5),
...              "labels": torch.arange(8) % 2})
>>> sorted(text.inputs), tuple(text.values.shape)
(['attention_mask', 'input_ids'], (8, 10))
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._batches import (
    check_label_key,
    label_key_phrase,
    split_batch,
    structure_signature,
    to_structure,
)
from ._validation import check_labels
from .estimation import InputsForEstimators
from .estimators import input_ids
from .exceptions import InvalidParameterError
from .schema import DEFAULT_PROBE
from .structures import cat_rows, describe_structure, flatten_rows, n_rows, slice_rows

__all__ = ["ProbeSet", "build_probes"]

#: What a probe set's inputs may be, for messages.
_INPUT_KINDS = (
    "a tensor or array, a tuple or list of tensors (model(*inputs)), a dict of "
    "tensors (model(**inputs)), or a DataLoader/iterable yielding any of these"
)


@dataclass
class ProbeSet:
    """A fixed, named probe set.

    Attributes
    ----------
    name : str
        The ``probe`` column of the information table.
    inputs : Tensor, tuple or list of Tensor, or dict of str to Tensor
        Fed to the model in batches (any device; moved per batch): a tensor
        as ``model(x)``, a tuple or list as ``model(*x)``, a dict as
        ``model(**x)``. Every tensor has ``n_samples`` rows.
    labels : Tensor of shape (n_samples,)
        int64 class labels, on the estimators' device.
    values : Tensor of shape (n_samples, n_features)
        The inputs flattened (every tensor of the structure flattened per
        sample and concatenated, see
        :func:`ibmonitor.structures.flatten_rows`), float, on the estimators'
        device.
    ids : Tensor of shape (n_samples,) or None
        Ids of identical input rows (computed on first use).
    """

    name: str
    inputs: Any
    labels: torch.Tensor
    values: torch.Tensor
    ids: Optional[torch.Tensor] = None

    @classmethod
    def from_data(
        cls,
        name: str,
        inputs: Any,
        labels: Any = None,
        *,
        device: Union[str, torch.device] = "cpu",
        label_key: Optional[str] = None,
    ) -> ProbeSet:
        """Build a probe set from tensors, arrays, a dict or a DataLoader.

        Parameters
        ----------
        name : str
            Name of the probe set.
        inputs : Tensor, ndarray, tuple or list of Tensor, dict, or iterable
            The inputs: a tensor or array; a tuple or list of tensors (fed as
            ``model(*inputs)``); a dict of tensors (fed as
            ``model(**inputs)``); or a DataLoader (any iterable) yielding
            batches of these, iterated once and kept in memory.
        labels : Tensor or ndarray of shape (n_samples,), optional
            Integer class labels. When not given they are taken from the
            data: from a batch that is a tuple or list, its **last** element
            (``(x, y)`` gives inputs ``x``; ``(ids, mask, y)`` gives inputs
            ``(ids, mask)``; a 1-tuple ``(x,)`` has no labels); from a dict
            (given directly or as a batch), the value under ``label_key``.
        device : str or torch.device, default="cpu"
            Where labels and flattened inputs live (the estimators' device).
        label_key : str, optional
            The key of the labels in dict inputs or dict batches; default
            ``"labels"``, else ``"label"``. The key is removed from the inputs
            (also when ``labels`` is given).

        Returns
        -------
        ProbeSet

        Raises
        ------
        InvalidParameterError
            No inputs, inputs of another kind, batches of different
            structures, no labels, fewer than 2 samples, tensors with
            different numbers of rows, or labels that are not integer class
            labels. The message names the probe set.

        Notes
        -----
        A tuple or list of tensors given directly as ``inputs`` is one
        structured input (``model(*inputs)``), never a list of batches: pass
        batches as a DataLoader, or concatenate them.
        """
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(
                f"Probe names must be non-empty strings. Got {name!r}."
            )
        check_label_key(label_key, f"ProbeSet.from_data (probe set {name!r})")
        x, y = _materialise(name, inputs, labels, label_key)
        if y is None:
            hint = (
                f" (no key {label_key_phrase(label_key)} in its dict inputs; set "
                "'label_key')"
                if isinstance(x, Mapping)
                else ""
            )
            raise InvalidParameterError(
                f"The probe set {name!r} has no labels{hint}. Pass 'labels', or "
                "a DataLoader yielding (inputs, labels) batches (labels last), "
                "or dicts with a labels key."
            )
        n = _rows(name, x)
        if n < 2:
            raise InvalidParameterError(
                f"The probe set {name!r} is empty: it has {n} samples; at least "
                "2 are required to estimate mutual information."
            )
        if not isinstance(y, torch.Tensor):
            y = np.asarray(y)
            if y.dtype.kind not in "iubf":
                raise InvalidParameterError(
                    f"The labels of probe set {name!r} must be integer class "
                    f"labels. Got an array of dtype {y.dtype}."
                )
        try:
            yt = check_labels(y, n, name=f"labels of probe {name!r}")
        except InvalidParameterError:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"The labels of probe set {name!r} must be integer class labels "
                f"({exc})."
            ) from exc
        values = flatten_rows(x)
        device = torch.device(device)
        return cls(
            name=name,
            inputs=x,
            labels=yt.to(device),
            values=values.detach().to(device),
        )

    @property
    def n_samples(self) -> int:
        """Number of probe samples."""
        return n_rows(self.inputs)

    def head(self, n: int) -> ProbeSet:
        """Return the first ``n`` samples as a probe set (ids sliced when known)."""
        return replace(
            self,
            inputs=slice_rows(self.inputs, slice(0, n)),
            labels=self.labels[:n],
            values=self.values[:n],
            ids=None if self.ids is None else self.ids[:n],
        )

    def shard(self, rank: int, world: int) -> Any:
        """Return the contiguous share of the inputs that process ``rank`` records.

        The share has the structure of :attr:`inputs` (every tensor sliced
        along its rows).
        """
        if world <= 1:
            return self.inputs
        from .distributed import shard_slice

        return slice_rows(self.inputs, shard_slice(self.n_samples, rank, world))

    def compute_ids(self) -> None:
        """Compute the ids of identical input rows now (once)."""
        if self.ids is None:
            self.ids = input_ids(self.values).to(self.labels.device)

    def estimator_inputs(self) -> InputsForEstimators:
        """Return the inputs as estimators take them (ids computed once)."""
        self.compute_ids()
        return InputsForEstimators(self.values, self.ids)

    def describe(self) -> Dict[str, Any]:
        """JSON-ready description for ``run.json``.

        A tensor: ``{"n_samples": n, "input_shape": [...]}`` (the shape of
        one sample). A structure: ``{"n_samples": n, "inputs": shapes}``, with
        ``shapes`` a dict ``{key: shape}`` for dict inputs and a list of
        shapes for tuple or list inputs.
        """
        x = self.inputs
        if isinstance(x, torch.Tensor):
            return {
                "n_samples": self.n_samples,
                "input_shape": [int(s) for s in x.shape[1:]],
            }
        if isinstance(x, Mapping):
            shapes: Any = {str(k): [int(s) for s in v.shape[1:]] for k, v in x.items()}
        else:
            shapes = [[int(s) for s in v.shape[1:]] for v in x]
        return {"n_samples": self.n_samples, "inputs": shapes}


def build_probes(
    inputs: Any = None,
    labels: Any = None,
    probes: Union[Mapping[str, Any], Sequence[ProbeSet], None] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    label_key: Optional[str] = None,
) -> Dict[str, ProbeSet]:
    """Turn a monitor's probe arguments into named probe sets.

    Parameters
    ----------
    inputs, labels : optional
        One probe set, named :data:`ibmonitor.schema.DEFAULT_PROBE`; see
        :meth:`ProbeSet.from_data` (``inputs`` may be a tensor, a tuple or
        list of tensors, a dict of tensors or a DataLoader).
    probes : dict or sequence of ProbeSet, optional
        Several: ``{name: spec}`` or ProbeSet objects. A ``spec`` is a 2-tuple
        ``(inputs, labels)`` (``inputs`` itself of any structure, e.g.
        ``((ids, mask), y)`` or ``({"input_ids": ids}, y)``), or inputs alone
        (a dict with a labels key, a DataLoader), or a ProbeSet. Not together
        with ``inputs``/``labels``.
    device : str or torch.device, default="cpu"
        The estimators' device.
    label_key : str, optional
        The key of the labels in dict inputs or batches (default
        ``"labels"``, else ``"label"``).

    Returns
    -------
    dict of str to ProbeSet
        In the order given.

    Raises
    ------
    InvalidParameterError
        Both or neither of ``inputs`` and ``probes``, a bad ``probes``, or a
        probe set that :meth:`ProbeSet.from_data` refuses.
    """
    if probes is not None and (inputs is not None or labels is not None):
        raise InvalidParameterError(
            "Give the probe set either as 'inputs' and 'labels' or as 'probes', "
            "not both."
        )
    check_label_key(label_key, "InformationMonitor")
    if probes is None:
        if inputs is None:
            raise InvalidParameterError(
                "InformationMonitor needs a probe set: pass 'inputs' and "
                "'labels' (or a DataLoader as 'inputs'), or 'probes'."
            )
        probes = {DEFAULT_PROBE: (inputs, labels)}
    if isinstance(probes, (list, tuple)) and all(
        isinstance(p, ProbeSet) for p in probes
    ):
        probes = {p.name: p for p in probes}
    if not isinstance(probes, Mapping) or not probes:
        raise InvalidParameterError(
            "The 'probes' parameter of InformationMonitor must be a non-empty "
            "dict of name -> (inputs, labels) or DataLoader, or a list of "
            "ProbeSet."
        )
    out: Dict[str, ProbeSet] = OrderedDict()
    for name, spec in probes.items():
        if isinstance(spec, ProbeSet):
            out[spec.name] = spec
            continue
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            x, y = spec
        elif isinstance(spec, (tuple, list)):
            raise InvalidParameterError(
                f"The probe set {name!r} of the 'probes' parameter must be a pair "
                "(inputs, labels), a dict of inputs with a labels key, a "
                f"DataLoader or a ProbeSet. Got a {type(spec).__name__} of "
                f"{len(spec)} elements; for several input tensors pass "
                "((x1, x2), labels)."
            )
        else:
            x, y = spec, None
        out[name] = ProbeSet.from_data(name, x, y, device=device, label_key=label_key)
    return out


def _rows(name: str, x: Any) -> int:
    """Return the number of samples of the inputs ``x`` (0 for a 0-d tensor)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.ndim else 0
    try:
        return n_rows(x)
    except InvalidParameterError:
        raise InvalidParameterError(
            f"The tensors of the inputs of probe set {name!r} must have the same "
            f"number of rows (samples). Got {describe_structure(x)}. A list of "
            "batches is not accepted: pass a DataLoader or concatenate them."
        ) from None


def _is_array(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def _labels_tensor(name: str, index: int, y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y.detach()
    try:
        return torch.as_tensor(np.asarray(y))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidParameterError(
            f"The labels in batch {index} of probe set {name!r} must be integer "
            f"class labels. Got {type(y).__name__} ({exc})."
        ) from exc


def _materialise(
    name: str, x: Any, y: Any, label_key: Optional[str]
) -> Tuple[Any, Any]:
    """Turn a probe's inputs (structure, dict, DataLoader) into one structure."""
    what = f"The inputs of probe set {name!r}"
    if x is None:
        raise InvalidParameterError(f"The probe set {name!r} has no inputs.")
    if _is_array(x):
        return to_structure(x, what=what), y
    if isinstance(x, Mapping):
        inputs, found = split_batch(x, label_key=label_key)
        return to_structure(inputs, what=what), (found if y is None else y)
    if isinstance(x, (tuple, list)) and x and all(_is_array(v) for v in x):
        return to_structure(x, what=what), y
    if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
        raise InvalidParameterError(
            f"{what} must be {_INPUT_KINDS}. Got {type(x).__name__} instead."
        )
    xs: List[Any] = []
    ys: List[torch.Tensor] = []
    first_sig = None
    for i, batch in enumerate(x):
        bx, by = split_batch(batch, label_key=label_key)
        bx = to_structure(bx, what=f"The inputs in batch {i} of probe set {name!r}")
        sig = structure_signature(bx)
        if first_sig is None:
            first_sig = sig
        elif sig != first_sig:
            raise InvalidParameterError(
                f"The batches of probe set {name!r} differ in structure: batch 0 "
                f"holds {describe_structure(xs[0])}, batch {i} holds "
                f"{describe_structure(bx)}."
            )
        xs.append(bx)
        if by is not None and y is None:
            ys.append(_labels_tensor(name, i, by))
    if not xs:
        raise InvalidParameterError(
            f"The probe set {name!r} is empty: its loader yielded no batch."
        )
    if y is None and ys:
        if len(ys) != len(xs):
            raise InvalidParameterError(
                f"Some batches of probe set {name!r} have labels and some not."
            )
        try:
            y = torch.cat([t.reshape(-1) if t.ndim == 0 else t for t in ys])
        except RuntimeError as exc:
            raise InvalidParameterError(
                f"The labels of the batches of probe set {name!r} cannot be "
                f"joined ({exc})."
            ) from exc
    try:
        joined = xs[0] if len(xs) == 1 else cat_rows(xs)
    except RuntimeError as exc:
        raise InvalidParameterError(
            f"The batches of probe set {name!r} cannot be joined into one set: "
            f"batch 0 holds {describe_structure(xs[0])}; every tensor must have "
            "the same shape after its first (sample) dimension in every batch "
            "(pad sequences to one length, e.g. padding='max_length')."
        ) from exc
    return joined, y
