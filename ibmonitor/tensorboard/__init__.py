"""TensorBoard for ibmonitor: summaries, the Information Plane plugin, a launcher.

- :class:`~ibmonitor.tensorboard.writer.TensorBoardWriter` writes what the
  monitor records (scalars, saturation among them, activation histograms,
  information-plane images and the plugin's tensors) into a run directory.
- :class:`~ibmonitor.tensorboard.plugin.InformationPlanePlugin` is the dynamic
  TensorBoard plugin ``ibmonitor`` (tab "Information Plane"), found by
  TensorBoard through the ``tensorboard_plugins`` entry point.
- :func:`ibmonitor.tensorboard.launch.launch` (import it from its module)
  starts TensorBoard on a run directory (``ibmonitor tensorboard RUN_DIR``).

Nothing here imports tensorboard, matplotlib or torch until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "InformationPlanePlugin",
    "TensorBoardWriter",
    "information_plane_png",
]

_LAZY = {
    "TensorBoardWriter": "ibmonitor.tensorboard.writer",
    "information_plane_png": "ibmonitor.tensorboard.writer",
    "InformationPlanePlugin": "ibmonitor.tensorboard.plugin",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ibmonitor.tensorboard' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
