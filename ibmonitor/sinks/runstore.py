"""The run-store sink: a crash-safe run directory (:mod:`ibmonitor.storage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .._validation import check_param
from ..exceptions import InvalidParameterError
from .base import Sink, register_sink

__all__ = ["RunStore"]

#: Keys of run.json that a resumed run keeps from its stored configuration.
_KEPT_ON_RESUME = ("overhead", "skipped_epochs", "errors")


@register_sink("runstore")
class RunStore(Sink):
    """Write the run directory: ``run.json``, ``information.csv``, ``scalars.csv``.

    Parameters
    ----------
    path : str or Path, optional
        The run directory; by default the monitor's ``logdir``.
    store_activations : bool or {"float32", "float16"}, default=False
        Also store each recorded epoch's activations, labels and flattened
        inputs (``activations/epoch_XXXXXX.npz``); ``"float16"`` halves the
        size.
    resume : bool, default=False
        Continue the run in ``path``: the monitor ignores epochs up to the
        stored last epoch and appends later ones.
    overwrite : bool, default=False
        Replace the run in ``path``.

    Notes
    -----
    Scalars are on disk when the monitor's ``on_epoch_end`` returns (flushed
    to the operating system: they survive the process being killed; fsynced
    on recorded epochs, others with the next recorded epoch or at close).
    A recorded epoch's information rows and archive are fsynced before
    ``on_epoch_end`` returns; with a background worker its activations are
    spooled to ``pending/`` instead, and the rows follow when the worker
    estimates them. A recorded epoch's writes are bracketed in the journal
    ``epochs.csv``, so that resuming a killed run removes the rows of an
    epoch cut mid-write and estimates the spooled ones (see
    docs/storage.md).
    """

    name = "runstore"
    title = "run store"
    essential = True
    spools = True

    def __init__(
        self,
        path: Union[str, Path, None] = None,
        *,
        store_activations: Union[bool, str] = False,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        check_param(
            store_activations,
            "store_activations",
            "RunStore",
            kind="option",
            options=(False, True, "float32", "float16"),
        )
        if resume and overwrite:
            raise InvalidParameterError(
                "The 'resume' and 'overwrite' parameters of RunStore cannot both "
                "be true."
            )
        self.path = None if path is None else Path(path)
        self.store = {False: None, True: "float32"}.get(
            store_activations, store_activations
        )
        self.resume = bool(resume)
        self.overwrite = bool(overwrite)
        self.wants_activations = self.store is not None
        self.writer: Any = None
        self._failed: set = set()  # epochs whose rows or archive failed

    def open(
        self, config: Mapping[str, Any], *, logdir: Optional[Path]
    ) -> Optional[Mapping[str, Any]]:
        """Create (or resume) the run directory."""
        from ..storage import RunWriter

        self.path = self.directory(self.path, logdir)
        initial = dict(config)
        initial.setdefault("recording", {})
        initial["recording"] = {
            **initial["recording"],
            "store_activations": self.store,
        }
        if self.resume:  # keep what the run already lists
            for key in _KEPT_ON_RESUME:
                initial.pop(key, None)
        self.writer = RunWriter(
            self.path, initial, resume=self.resume, overwrite=self.overwrite
        )
        if self.resume:
            return {
                "last_epoch": self.writer.last_epoch,
                "config": self.writer.config,
                "pending": self.writer.pending,
                "read_pending": self.writer.read_pending,
            }
        return None

    def begin_epoch(self, epoch: int) -> None:
        """Journal that the epoch's writes begin."""
        self._failed.discard(epoch)
        self.writer.begin_epoch(epoch)

    def write_pending(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, np.ndarray],
        inputs: Mapping[str, np.ndarray],
    ) -> None:
        """Spool the activations to ``pending/`` until the epoch is estimated."""
        self.writer.save_pending(epoch, activations, labels=labels, inputs=inputs)

    def end_epoch(self, epoch: int) -> None:
        """Journal the epoch done and drop its spool, unless a write failed.

        After a failed write the epoch stays begun (and spooled), so that a
        resumed run estimates it again.
        """
        if epoch in self._failed:
            self._failed.discard(epoch)
            return
        self.writer.end_epoch(epoch)

    def write_scalars(
        self, epoch: int, values: Mapping[str, float], *, recorded: bool
    ) -> None:
        """Append the scalars (fsynced on recorded epochs)."""
        if values:
            self.writer.append_scalars(epoch, values, sync=recorded)
        elif recorded:
            self.writer.sync()

    def write_information(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append the rows (flushed and fsynced)."""
        if rows:
            try:
                self.writer.append_information(rows)
            except BaseException:
                self._failed.add(epoch)
                raise

    def write_activations(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, np.ndarray],
        inputs: Mapping[str, np.ndarray],
    ) -> None:
        """Save the epoch's activations archive (written atomically)."""
        try:
            self.writer.save_activations(
                epoch,
                activations,
                labels=labels,
                inputs=inputs,
                float16=self.store == "float16",
            )
        except BaseException:
            self._failed.add(epoch)
            raise

    def write_explanations(self, epoch: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Save the epoch's explanations (``explanations/epoch_XXXXXX.npz``)."""
        if arrays:
            self.writer.save_explanations(epoch, arrays)

    def update_config(self, **keys: Any) -> None:
        """Rewrite run.json with ``keys`` (atomically)."""
        if self.writer is not None and not self.writer.closed:
            self.writer.update_config(**keys)

    def close(self, status: str) -> None:
        """Close the tables and mark the run's status."""
        if self.writer is not None:
            self.writer.close(status=status)
