"""Exceptions and warnings raised by ibmonitor."""

__all__ = [
    "EstimationWarning",
    "IBMonitorWarning",
    "InvalidParameterError",
    "MonitorError",
    "MonitorWarning",
]


class IBMonitorWarning(UserWarning):
    """Base class of every warning ibmonitor emits."""


class EstimationWarning(IBMonitorWarning):
    """An estimate is valid but degenerate (every sample in its own bin, ...)."""


class MonitorWarning(IBMonitorWarning):
    """A problem while monitoring that did not stop training (NaN activations, ...)."""


class InvalidParameterError(ValueError, TypeError):
    """A parameter has a bad value or type.

    Subclasses both :class:`ValueError` and :class:`TypeError` (as scikit-learn's
    error of the same name does), so callers may catch either.
    """


class MonitorError(RuntimeError):
    """The monitor failed; raised only with ``strict=True``, logged otherwise."""
