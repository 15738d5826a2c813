"""Probe sets: the fixed inputs the monitor feeds the model, with their labels.

A :class:`ProbeSet` holds what to feed the model (``inputs``, fed in batches
by the recording pass) and what the estimators get (integer ``labels``, the
inputs flattened to ``(n_samples, n_features)`` and, computed once, the ids
of identical input rows). :func:`build_probes` turns the monitor's
``inputs``/``labels``/``probes`` arguments into named probe sets.

>>> import torch
>>> probe = ProbeSet.from_data("train", torch.randn(8, 3), torch.arange(8) % 2)
>>> probe.n_samples, tuple(probe.values.shape)
(8, (8, 3))
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._validation import as_tensor, check_labels
from .estimation import InputsForEstimators
from .estimators import input_ids
from .exceptions import InvalidParameterError
from .schema import DEFAULT_PROBE

__all__ = ["ProbeSet", "build_probes"]


@dataclass
class ProbeSet:
    """A fixed, named probe set.

    Attributes
    ----------
    name : str
        The ``probe`` column of the information table.
    inputs : Tensor of shape (n_samples, ...)
        Fed to the model in batches (any device; moved per batch).
    labels : Tensor of shape (n_samples,)
        int64 class labels, on the estimators' device.
    values : Tensor of shape (n_samples, n_features)
        The inputs flattened, float, on the estimators' device.
    ids : Tensor of shape (n_samples,) or None
        Ids of identical input rows (computed on first use).
    """

    name: str
    inputs: torch.Tensor
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
    ) -> ProbeSet:
        """Build a probe set from a tensor, an array or a DataLoader.

        Parameters
        ----------
        name : str
            Name of the probe set.
        inputs : Tensor, ndarray or iterable of batches
            The inputs; a DataLoader is iterated once (its ``(inputs,
            labels)`` batches are kept in memory).
        labels : Tensor or ndarray of shape (n_samples,), optional
            Integer class labels (taken from the batches when not given).
        device : str or torch.device, default="cpu"
            Where labels and flattened inputs live (the estimators' device).

        Returns
        -------
        ProbeSet

        Raises
        ------
        InvalidParameterError
            No inputs, no labels, fewer than 2 samples, or labels that are
            not integer class labels.
        """
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(
                f"Probe names must be non-empty strings. Got {name!r}."
            )
        x, y = _materialise(name, inputs, labels)
        if y is None:
            raise InvalidParameterError(
                f"The probe set {name!r} has no labels. Pass 'labels' (or "
                "(inputs, labels) pairs, or a DataLoader yielding them)."
            )
        n = int(x.shape[0]) if x.ndim else 0
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
        values = x.reshape(n, -1)
        if not torch.is_floating_point(values):
            values = values.to(torch.float32)
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
        return int(self.inputs.shape[0])

    def head(self, n: int) -> ProbeSet:
        """Return the first ``n`` samples as a probe set (ids sliced when known)."""
        return replace(
            self,
            inputs=self.inputs[:n],
            labels=self.labels[:n],
            values=self.values[:n],
            ids=None if self.ids is None else self.ids[:n],
        )

    def shard(self, rank: int, world: int) -> torch.Tensor:
        """Return the contiguous share of the inputs that process ``rank`` records."""
        if world <= 1:
            return self.inputs
        from .distributed import shard_slice

        return self.inputs[shard_slice(self.n_samples, rank, world)]

    def compute_ids(self) -> None:
        """Compute the ids of identical input rows now (once)."""
        if self.ids is None:
            self.ids = input_ids(self.values).to(self.labels.device)

    def estimator_inputs(self) -> InputsForEstimators:
        """Return the inputs as estimators take them (ids computed once)."""
        self.compute_ids()
        return InputsForEstimators(self.values, self.ids)

    def describe(self) -> Dict[str, Any]:
        """JSON-ready description for ``run.json``."""
        return {
            "n_samples": self.n_samples,
            "input_shape": [int(s) for s in self.inputs.shape[1:]],
        }


def build_probes(
    inputs: Any = None,
    labels: Any = None,
    probes: Union[Mapping[str, Any], Sequence[ProbeSet], None] = None,
    *,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, ProbeSet]:
    """Turn a monitor's probe arguments into named probe sets.

    Parameters
    ----------
    inputs, labels : optional
        One probe set, named :data:`ibmonitor.schema.DEFAULT_PROBE`.
    probes : dict or sequence of ProbeSet, optional
        Several: ``{name: (inputs, labels) or DataLoader}`` or ProbeSet
        objects. Not together with ``inputs``/``labels``.
    device : str or torch.device, default="cpu"
        The estimators' device.

    Returns
    -------
    dict of str to ProbeSet
        In the order given.
    """
    if probes is not None and (inputs is not None or labels is not None):
        raise InvalidParameterError(
            "Give the probe set either as 'inputs' and 'labels' or as 'probes', "
            "not both."
        )
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
        else:
            x, y = spec, None
        out[name] = ProbeSet.from_data(name, x, y, device=device)
    return out


def _materialise(name: str, x: Any, y: Any) -> Tuple[torch.Tensor, Any]:
    """Turn a probe's inputs (tensor, array, DataLoader) into one tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach(), y
    if isinstance(x, np.ndarray):
        return as_tensor(x, name=f"inputs of probe {name!r}"), y
    if x is None:
        raise InvalidParameterError(f"The probe set {name!r} has no inputs.")
    if hasattr(x, "__iter__") and not isinstance(x, (str, bytes, Mapping)):
        xs: List[torch.Tensor] = []
        ys: List[torch.Tensor] = []
        for batch in x:
            if isinstance(batch, (tuple, list)):
                if len(batch) >= 2 and y is None:
                    ys.append(torch.as_tensor(batch[1]))
                batch = batch[0]
            xs.append(torch.as_tensor(batch).detach())
        if not xs:
            raise InvalidParameterError(
                f"The probe set {name!r} is empty: its loader yielded no batch."
            )
        if y is None and ys:
            if len(ys) != len(xs):
                raise InvalidParameterError(
                    f"Some batches of probe set {name!r} have labels and some not."
                )
            y = torch.cat(ys)
        return torch.cat(xs), y
    raise InvalidParameterError(
        f"The inputs of probe set {name!r} must be a tensor, an array or a "
        f"DataLoader. Got {type(x).__name__} instead."
    )
