"""What the framework adapters share: argument checks, scalars, closing a run."""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Mapping, Tuple

from .._validation import as_real_scalar
from ..exceptions import InvalidParameterError

__all__ = ["check_monitor_kwargs", "close_monitor", "numeric_scalars"]


def check_monitor_kwargs(
    monitor_kwargs: Mapping[str, Any], owner: str, model_source: str
) -> Tuple[type, bool]:
    """Check an adapter's keyword arguments against the monitor's signature.

    Parameters
    ----------
    monitor_kwargs : dict
        The keyword arguments given to the adapter.
    owner : str
        The adapter's name, for messages.
    model_source : str
        Where the monitored model comes from, for the message when ``model``
        is given (``"the LightningModule passed to Trainer.fit"``).

    Returns
    -------
    monitor_cls : type
        :class:`~ibmonitor.InformationMonitor`.
    takes_total_epochs : bool
        Whether the monitor takes ``total_epochs``.

    Raises
    ------
    InvalidParameterError
        ``model`` is given, or an argument the monitor does not take.
    """
    if "model" in monitor_kwargs:
        raise InvalidParameterError(
            f"{owner} got a 'model' argument; the monitored model is "
            f"{model_source}. Remove 'model' (and select its submodules with "
            "'layers')."
        )
    from ..monitor import InformationMonitor

    parameters = inspect.signature(InformationMonitor).parameters
    takes_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    unknown = sorted(set(monitor_kwargs) - set(parameters))
    if unknown and not takes_any:
        accepted = sorted(name for name in parameters if name != "model")
        raise InvalidParameterError(
            f"{owner} got unknown argument(s) {unknown}. It accepts the arguments "
            f"of InformationMonitor: {accepted}."
        )
    return InformationMonitor, "total_epochs" in parameters


def numeric_scalars(
    metrics: Mapping[str, Any], skip: Iterable[str] = ()
) -> Dict[str, float]:
    """Return the entries of ``metrics`` that convert to one float.

    Numbers (not ``bool``) and one-element tensors count; strings, lists and
    the names in ``skip`` are left out.
    """
    skipped = set(skip)
    scalars: Dict[str, float] = {}
    for name, value in metrics.items():
        if name in skipped or isinstance(value, bool):
            continue
        try:
            scalars[str(name)] = as_real_scalar(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return scalars


def close_monitor(monitor: Any, status: str) -> None:
    """Close ``monitor`` with run status ``status`` where its ``close`` takes one."""
    close = monitor.close
    try:
        takes_status = "status" in inspect.signature(close).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        takes_status = False
    if takes_status:
        close(status=status)
    else:
        close()
