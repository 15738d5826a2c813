"""Turn one epoch's activations into information rows: the one place that does.

The monitor (during training) and :func:`ibmonitor.analysis.estimate_from_activations`
(offline, from stored activations) both call :func:`information_rows`, so a
row looks the same whichever made it.

>>> import torch
>>> from ibmonitor import estimators
>>> t = {"fc1": torch.randn(64, 3)}
>>> y = torch.randint(0, 2, (64,))
>>> rows = information_rows(0, "default", t, y, [("binned", estimators.get("binned"))])
>>> [rows[0][k] for k in ("epoch", "probe", "layer", "estimator")]
[0, 'default', 'fc1', 'binned']
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .estimators import input_ids

__all__ = [
    "ESTIMATOR_INPUT_KINDS",
    "InputsForEstimators",
    "estimator_list",
    "information_rows",
]

#: What an estimator takes as ``x``: unique-row ids, the input values, or nothing.
ESTIMATOR_INPUT_KINDS = ("ids", "values", "none")

#: ``on_error(layer, estimator_label, exception)`` is told of a failed estimate.
OnError = Callable[[str, str, BaseException], None]
#: ``on_warning(layer, estimator_label, warning)`` receives an estimator's
#: warnings (a ``warnings.WarningMessage``) instead of their being shown.
OnWarning = Callable[[str, str, Any], None]


class InputsForEstimators:
    """A probe set's inputs in the forms estimators ask for (ids computed once).

    Parameters
    ----------
    values : array-like or Tensor of shape (n_samples, n_features) or None
        The inputs, flattened (``None`` when not known: then ``x`` is None).
    ids : array-like or Tensor of shape (n_samples,), optional
        Precomputed unique-row ids of ``values``.
    """

    def __init__(self, values: Any, ids: Any = None) -> None:
        self.values = values
        self._ids = ids

    @property
    def ids(self) -> Any:
        """Unique-row ids of the inputs (computed on first use)."""
        if self._ids is None and self.values is not None:
            self._ids = input_ids(self.values)
        return self._ids

    def for_estimator(self, estimator: Any) -> Any:
        """Return the ``x`` argument ``estimator`` wants (by its ``inputs`` kind)."""
        kind = getattr(estimator, "inputs", "ids")
        if kind == "ids":
            return self.ids
        if kind == "values":
            return self.values
        return None


def information_rows(
    epoch: int,
    probe: str,
    activations: Mapping[str, Any],
    labels: Any,
    estimators: Sequence[Tuple[str, Any]],
    *,
    inputs: Optional[InputsForEstimators] = None,
    skip: Mapping[str, str] = {},
    on_error: Optional[OnError] = None,
    on_warning: Optional[OnWarning] = None,
) -> List[Dict[str, Any]]:
    """Estimate every (layer, estimator) pair of one probe set at one epoch.

    Parameters
    ----------
    epoch : int
    probe : str
        Name of the probe set.
    activations : dict of str to array or Tensor of shape (n_samples, n_units)
        Each recorded layer's activations, in layer order.
    labels : array or Tensor of shape (n_samples,)
        Integer class labels.
    estimators : sequence of (label, Estimator)
        The ``estimator`` column value and the estimator.
    inputs : InputsForEstimators, optional
        The probe's inputs (ids or values are passed as the estimators ask).
    skip : dict of str to str, optional
        Layers whose rows are NaN without estimating (value: the reason).
    on_error : callable, optional
        ``on_error(layer, label, exc)`` when an estimator raises; the row is
        then NaN. Without it the exception propagates.
    on_warning : callable, optional
        ``on_warning(layer, label, warning)`` for each warning an estimator
        gives (so that the caller can name the layer, probe and epoch and say
        it once); without it warnings are shown as usual.

    Returns
    -------
    list of dict
        One wide row per layer and estimator: ``epoch, probe, layer,
        estimator, i_xt, i_ty`` and the estimator's extras, in bits.
    """
    rows: List[Dict[str, Any]] = []
    for layer, t in activations.items():
        for label, est in estimators:
            base: Dict[str, Any] = {
                "epoch": int(epoch),
                "probe": probe,
                "layer": layer,
                "estimator": label,
            }
            if layer in skip:
                rows.append({**base, "i_xt": math.nan, "i_ty": math.nan})
                continue
            caught: List[Any] = []
            try:
                x = None if inputs is None else inputs.for_estimator(est)
                if on_warning is None:
                    result = est(t, labels, x=x)
                else:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        result = est(t, labels, x=x)
                values = result.as_dict()
                values.pop("estimator", None)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(layer, label, exc)
                values = {"i_xt": math.nan, "i_ty": math.nan}
            for warning in caught:
                on_warning(layer, label, warning)  # type: ignore[misc]
            rows.append({**base, **values})
    return rows


def estimator_list(
    spec: Any, *, owner: str = "InformationMonitor"
) -> List[Tuple[str, Any]]:
    """Turn an ``estimators=`` argument into ``[(label, Estimator), ...]``.

    Parameters
    ----------
    spec : str, Estimator, sequence of them, or dict of name to params
        Estimator names (:func:`ibmonitor.estimators.available`), objects from
        :func:`ibmonitor.estimators.get`, or ``{name: params}``.
    owner : str
        Who asks, for error messages.

    Returns
    -------
    list of (str, Estimator)
        The label is the estimator's name, or its description (``kde(...)``)
        where one name appears twice.
    """
    from . import estimators as registry
    from .exceptions import InvalidParameterError

    if isinstance(spec, (str, registry.Estimator)):
        spec = [spec]
    items: List[Any] = []
    if isinstance(spec, Mapping):
        for name, params in spec.items():
            if params is not None and not isinstance(params, Mapping):
                raise InvalidParameterError(
                    f"The 'estimators' parameter of {owner} must map estimator "
                    f"names to dicts of parameters. Got {params!r} for {name!r}."
                )
            items.append(registry.get(name, **dict(params or {})))
    else:
        try:
            entries = list(spec)
        except TypeError:
            entries = [spec]
        for entry in entries:
            if isinstance(entry, str):
                items.append(registry.get(entry))
            elif isinstance(entry, registry.Estimator) or (
                callable(entry) and hasattr(entry, "name")
            ):
                items.append(entry)
            else:
                raise InvalidParameterError(
                    f"The 'estimators' parameter of {owner} must hold estimator "
                    "names, Estimator objects (ibmonitor.estimators.get) or a dict "
                    f"of name -> params. Got {entry!r}."
                )
    if not items:
        raise InvalidParameterError(
            f"The 'estimators' parameter of {owner} is empty; give at least one "
            f"of {registry.available()}."
        )
    names = [e.name for e in items]
    labels = []
    for est in items:
        if names.count(est.name) > 1:
            describe = getattr(est, "describe", None)
            labels.append(describe() if callable(describe) else repr(est))
        else:
            labels.append(est.name)
    if len(set(labels)) != len(labels):
        raise InvalidParameterError(
            f"The 'estimators' parameter of {owner} lists the same estimator "
            f"twice: {labels}."
        )
    for est in items:
        if getattr(est, "inputs", "ids") not in ESTIMATOR_INPUT_KINDS:
            raise InvalidParameterError(
                f"Estimator {est.name!r} has inputs={est.inputs!r}; expected one of "
                f"{list(ESTIMATOR_INPUT_KINDS)}."
            )
    return list(zip(labels, items))
