"""The memory sink: the run's rows kept in the process (``monitor.information``)."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .. import schema
from .base import Sink, register_sink

__all__ = ["MemorySink"]


@register_sink("memory")
class MemorySink(Sink):
    """Keep information rows and scalars in memory.

    The monitor always has one (its :attr:`information` and :attr:`scalars`).
    """

    name = "memory"
    title = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: List[Dict[str, Any]] = []
        self.scalar_rows: List[Tuple[int, str, float]] = []

    def write_scalars(
        self, epoch: int, values: Mapping[str, float], *, recorded: bool
    ) -> None:
        """Append ``(epoch, name, value)`` rows."""
        with self._lock:
            self.scalar_rows.extend((epoch, k, v) for k, v in values.items())

    def write_information(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append the wide rows."""
        with self._lock:
            self.rows.extend(dict(r) for r in rows)

    @property
    def information(self) -> Any:
        """Wide information DataFrame (columns as ``Run.information``)."""
        with self._lock:
            return schema.rows_frame(list(self.rows))

    @property
    def scalars(self) -> Any:
        """Long scalars DataFrame: epoch, name, value."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame(
                list(self.scalar_rows), columns=list(schema.SCALARS_COLUMNS)
            )
