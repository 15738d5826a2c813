"""ibmonitor: watch neural-network training through information theory.

The information plane (I(X;T) against I(T;Y), in bits, for every layer and
recorded epoch) beside the generalization gap and the sharpness of the minimum.

>>> import ibmonitor
>>> monitor = ibmonitor.InformationMonitor(model, inputs=x, labels=y, logdir="runs/a")
... # doctest: +SKIP

Every submodule is imported on first use, so ``import ibmonitor`` loads no
torch, plotly or tensorboard (the TensorBoard plugin imports the package).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .exceptions import (
    EstimationWarning,
    IBMonitorWarning,
    InvalidParameterError,
    MonitorError,
    MonitorWarning,
)

try:
    __version__ = version("ibmonitor")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_LAZY = {
    "InformationMonitor": ("ibmonitor.monitor", "InformationMonitor"),
    "MeasureSet": ("ibmonitor.measures", "MeasureSet"),
    "ProbeSet": ("ibmonitor.probes", "ProbeSet"),
    "RunStore": ("ibmonitor.sinks", "RunStore"),
    "TensorBoard": ("ibmonitor.sinks", "TensorBoard"),
    "sinks": ("ibmonitor.sinks", None),
    "load_run": ("ibmonitor.storage", "load_run"),
    "load_runs": ("ibmonitor.storage", "load_runs"),
    "Run": ("ibmonitor.storage", "Run"),
    "measures": ("ibmonitor.measures", None),
    "plotting": ("ibmonitor.plotting", None),
    "datasets": ("ibmonitor.datasets", None),
    "estimators": ("ibmonitor.estimators", None),
    "schedules": ("ibmonitor.schedules", None),
    "analysis": ("ibmonitor.analysis", None),
    "geometry": ("ibmonitor.geometry", None),
    "explain": ("ibmonitor.explain", None),
    "inject_noise": ("ibmonitor.noise", "inject_noise"),
}

__all__ = [
    "EstimationWarning",
    "IBMonitorWarning",
    "InformationMonitor",
    "InvalidParameterError",
    "MeasureSet",
    "MonitorError",
    "MonitorWarning",
    "ProbeSet",
    "Run",
    "RunStore",
    "TensorBoard",
    "__version__",
    "analysis",
    "datasets",
    "estimators",
    "explain",
    "geometry",
    "inject_noise",
    "load_run",
    "load_runs",
    "measures",
    "plotting",
    "schedules",
    "sinks",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ibmonitor' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
