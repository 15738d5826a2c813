"""The run's sinks as one: every event to every sink, one at a time.

:class:`SinkSet` is how the monitor talks to its sinks. It opens them (an
essential sink that cannot open stops everything, the others are dropped),
sends each event to every sink under one lock (the monitor's background
worker and the training thread never interleave inside a sink), and hands each
sink's failure to a callback, so that one sink's failure never stops the
others. What a failure means (raise, warn once, record in ``run.json``) is the
caller's policy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

from .base import Sink

__all__ = ["SinkSet"]

#: ``on_failure(sink, event, epoch, exception)``.
OnFailure = Callable[[Sink, str, Optional[int], BaseException], None]


class SinkSet:
    """Several sinks behind one set of events.

    Parameters
    ----------
    sinks : sequence of Sink
        In the order events reach them.
    on_failure : callable
        ``on_failure(sink, event, epoch, exc)`` for every failure (``event``
        is the method name: ``"open"``, ``"write_scalars"``, ...).
    """

    def __init__(self, sinks: Sequence[Sink], on_failure: OnFailure) -> None:
        self.sinks: List[Sink] = list(sinks)
        self._on_failure = on_failure
        self._lock = threading.RLock()

    def open(
        self, config: Mapping[str, Any], *, logdir: Optional[Path]
    ) -> Optional[Mapping[str, Any]]:
        """Open every sink; keep those that opened.

        Returns
        -------
        dict or None
            The first sink's answer that it continues a stored run
            (``{"last_epoch", "config"}``), else None.

        Raises
        ------
        Exception
            An essential sink's error (the sinks opened so far are closed
            with status ``"crashed"`` first).
        """
        opened: List[Sink] = []
        resumed: Optional[Mapping[str, Any]] = None
        for sink in self.sinks:
            try:
                answer = sink.open(config, logdir=logdir)
            except Exception as exc:
                if sink.essential:
                    SinkSet(opened, self._on_failure).close("crashed")
                    raise
                self._on_failure(sink, "open", None, exc)
                continue
            opened.append(sink)
            resumed = resumed or answer
        self.sinks = opened
        return resumed

    def emit(
        self,
        event: str,
        epoch: Optional[int],
        *args: Any,
        only: Optional[Sequence[Sink]] = None,
        **kwargs: Any,
    ) -> None:
        """Send ``event(epoch, *args, **kwargs)`` to every sink (or to ``only``)."""
        with self._lock:
            for sink in self.sinks if only is None else only:
                try:
                    getattr(sink, event)(epoch, *args, **kwargs)
                except Exception as exc:
                    self._on_failure(sink, event, epoch, exc)

    def wanting_activations(self) -> List[Sink]:
        """Return the sinks that want :meth:`Sink.write_activations`."""
        return [s for s in self.sinks if s.wants_activations]

    def update_config(self, **keys: Any) -> None:
        """Send ``update_config(**keys)`` to every sink."""
        with self._lock:
            for sink in self.sinks:
                try:
                    sink.update_config(**keys)
                except Exception as exc:
                    self._on_failure(sink, "update_config", None, exc)

    def close(self, status: str) -> None:
        """Close every sink with ``status``; a failing one never stops the others."""
        with self._lock:
            for sink in self.sinks:
                try:
                    sink.close(status)
                except Exception as exc:
                    self._on_failure(sink, "close", None, exc)

    def __iter__(self):
        return iter(self.sinks)
