"""What the monitor does with its own errors and warnings: one policy.

A monitor problem never stops training unless ``strict=True``. An error is
raised as :class:`~ibmonitor.MonitorError` when strict, and otherwise warned
once (:class:`~ibmonitor.MonitorWarning`, the traceback at ``logging`` DEBUG)
and recorded for ``run.json``'s ``"errors"``. An error found in the background
worker is handed to the training thread (through the executor) and handled
there at the next call. Estimator warnings are said once per layer, probe and
estimator, naming them and the first epoch.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any, Dict, List, Optional

from .exceptions import MonitorError, MonitorWarning
from .executor import Executor
from .schema import DEFAULT_PROBE

__all__ = ["ErrorPolicy", "LocatedError"]

logger = logging.getLogger("ibmonitor.monitor")


class LocatedError(Exception):
    """An error found by the worker, with its epoch and where it happened."""

    def __init__(self, epoch: Optional[int], where: str, error: BaseException):
        super().__init__(f"{where}: {error}")
        self.epoch = epoch
        self.where = where
        self.error = error


class ErrorPolicy:
    """Raise, or warn once and record: the monitor's errors in one place.

    Parameters
    ----------
    strict : bool
        Raise :class:`~ibmonitor.MonitorError` instead of warning.
    executor : Executor
        Where estimation runs; errors found in its worker are deferred.

    Attributes
    ----------
    errors : list of dict
        ``{"epoch", "where", "message"}`` of every error that did not stop
        training.
    dirty : bool
        Whether :attr:`errors` changed since ``run.json`` was last written.
    """

    def __init__(self, *, strict: bool, executor: Executor) -> None:
        self.strict = bool(strict)
        self.executor = executor
        self.errors: List[Dict[str, Any]] = []
        self.dirty = False
        self._warned: set = set()

    def fail(self, epoch: Optional[int], where: str, exc: BaseException) -> None:
        """Handle an error: defer it (worker), raise it (strict) or report it."""
        if self.executor.in_worker():
            self.executor.defer_error(LocatedError(epoch, where, exc))
            return
        if self.strict:
            raise MonitorError(
                f"{where} failed at epoch {epoch}: {type(exc).__name__}: {exc}"
            ) from exc
        self.report(epoch, where, exc)

    def report(self, epoch: Optional[int], where: str, exc: BaseException) -> None:
        """Warn and record an error that does not stop training."""
        message = f"{type(exc).__name__}: {exc}"
        logger.debug("ibmonitor: %s failed at epoch %s", where, epoch, exc_info=exc)
        warnings.warn(
            f"The monitor's {where} failed at epoch {epoch} ({message}); training "
            "goes on (pass strict=True to raise).",
            MonitorWarning,
            stacklevel=5,
        )
        self.record(epoch, where, exc)

    def record(self, epoch: Optional[int], where: str, exc: BaseException) -> None:
        """Record an error for ``run.json`` (no warning)."""
        self.errors.append(
            {"epoch": epoch, "where": where, "message": f"{type(exc).__name__}: {exc}"}
        )
        self.dirty = True

    def drain(self, *, raise_strict: bool) -> None:
        """Handle the errors the background worker found since the last call."""
        pending = self.executor.take_errors()
        for i, error in enumerate(pending):
            epoch, where, err = _located(error)
            if self.strict and raise_strict:
                for later in pending[i + 1 :]:
                    self.record(*_located(later))
                self.record(epoch, where, err)
                raise MonitorError(
                    f"The monitor's {where} failed at epoch {epoch}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            self.report(epoch, where, err)

    def warn_once(self, key: str, message: str) -> None:
        """Warn ``message`` the first time ``key`` is seen."""
        if key in self._warned:
            return
        self._warned.add(key)
        logger.debug(message)
        warnings.warn(message, MonitorWarning, stacklevel=5)

    def estimator_warning(
        self, epoch: int, probe: str, layer: str, label: str, warning: Any
    ) -> None:
        """Say an estimator's warning once per layer, probe and estimator.

        The message names the layer, the probe and the first epoch; later
        epochs with the same kind of warning (numbers aside) are only logged.
        """
        text = str(warning.message)
        kind = re.sub(r"[-+]?\d[\d.eE+-]*", "#", text)
        key = f"estimator-warning|{probe}|{layer}|{label}|{warning.category}|{kind}"
        if key in self._warned:
            logger.debug("epoch %s, layer %r, %s: %s", epoch, layer, label, text)
            return
        self._warned.add(key)
        where = f"layer {layer!r}" + (
            "" if probe == DEFAULT_PROBE else f" (probe {probe!r})"
        )
        warnings.warn(
            f"{label} on {where} at epoch {epoch}: {text} (said once per layer; "
            "later epochs are not repeated)",
            warning.category,
            stacklevel=2,
        )


def _located(error: BaseException) -> tuple:
    if isinstance(error, LocatedError):
        return error.epoch, error.where, error.error
    return None, "background worker", error
