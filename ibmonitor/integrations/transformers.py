"""Hugging Face adapter: :class:`InformationMonitorCallback` for ``Trainer``.

Attach the information-plane monitor to a ``Trainer``::

    from ibmonitor.integrations.transformers import InformationMonitorCallback

    batch = tokenizer(texts, padding="max_length", max_length=64,
                      truncation=True, return_tensors="pt")
    callback = InformationMonitorCallback(
        inputs={"input_ids": batch["input_ids"],
                "attention_mask": batch["attention_mask"]},
        labels=labels,
        layers=["bert.encoder.layer.5.output", "classifier"],
        estimators=("binned",), logdir="runs/bert",
    )
    trainer = transformers.Trainer(model=model, args=args,
                                   train_dataset=train, callbacks=[callback])
    trainer.train()
    run = ibmonitor.load_run("runs/bert")

The callback takes the keyword arguments of :class:`~ibmonitor.InformationMonitor`
except ``model`` (the monitored model is the Trainer's), plus ``timeline``.
The probe inputs may be a dict of tensors (fed as ``model(**inputs)``); a
model that returns a ``ModelOutput`` with ``logits`` needs no ``output_key``.

Needs ``transformers`` (``pip install ibmonitor[transformers]``), whose
``Trainer`` needs ``accelerate``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional

from .._imports import require
from ..exceptions import InvalidParameterError
from ._common import check_monitor_kwargs, close_monitor, numeric_scalars

__all__ = ["InformationMonitorCallback"]

logger = logging.getLogger(__name__)

_transformers = require(
    "transformers",
    feature="ibmonitor.integrations.transformers.InformationMonitorCallback",
    extra="transformers",
)

#: The timelines the callback records on.
TIMELINES = ("epochs", "steps")

#: Keys of the Trainer's logs that are not scalars of an epoch or step.
_NOT_SCALARS = ("epoch", "step", "total_flos")

#: A key only the Trainer's final summary log holds (``train_runtime``...).
_SUMMARY_KEY = "train_runtime"


class InformationMonitorCallback(_transformers.TrainerCallback):
    """Run :class:`~ibmonitor.InformationMonitor` from a Hugging Face ``Trainer``.

    Parameters
    ----------
    timeline : {"epochs", "steps"}, default="epochs"
        What the monitor's ``epoch`` index counts. ``"epochs"``: training
        epochs (0-based), recorded at the end of each. ``"steps"``: the global
        optimizer step (``state.global_step``, 1-based), recorded at every
        logging step (every ``args.logging_steps`` with
        ``logging_strategy="steps"``); the schedule then picks among steps.
    **monitor_kwargs
        Keyword arguments of :class:`~ibmonitor.InformationMonitor` (``inputs``,
        ``labels`` or ``probes``, ``layers``, ``estimators``, ``schedule``,
        ``logdir``, ``output_key``, ...), all except ``model``. When
        ``total_epochs`` is not given it is the Trainer's number of epochs
        (``"epochs"``) or of steps (``"steps"``), so ``schedule="log"`` works
        without repeating it.

    Attributes
    ----------
    monitor : InformationMonitor or None
        The monitor of the current (or last) training; ``None`` before the
        first.

    Raises
    ------
    InvalidParameterError
        If ``model``, an argument the monitor does not take, or a bad
        ``timeline`` is given.

    Notes
    -----
    Events handled:

    - ``on_train_begin``: creates the monitor on the Trainer's model (already
      on its device; on every process under ``torchrun``, where the monitor
      shards the probe set and rank 0 writes the run).
    - ``on_log``: every numeric entry of the Trainer's logs (``loss``,
      ``grad_norm``, ``learning_rate``, ``eval_loss``, ``eval_accuracy``...,
      not ``epoch``) is kept, the latest value per name, and stored in the
      run's ``scalars`` table with the next recorded epoch or step, under the
      name the Trainer logged it with. The final summary log
      (``train_runtime``, the mean ``train_loss``...) is not stored.
    - ``on_epoch_end`` (``"epochs"``) or ``on_step_end`` at a logging step
      (``"steps"``): marks the epoch or step to record. The Trainer logs and
      evaluates *after* these events, so the recording waits for the next
      ``on_epoch_begin`` or ``on_step_begin`` (or the final summary log, or
      ``on_train_end``), before the weights change: the activations are those
      of the model at the end of the epoch or step, and its scalars include
      that epoch's training and evaluation logs.
    - ``on_train_end``: records what is pending and closes the monitor (run
      status ``finished``).

    The Trainer tells its callbacks nothing when training raises; call
    :meth:`close` with ``status="crashed"`` in your ``except`` to mark the run
    (otherwise its status stays ``running``). Each ``train()`` creates a new
    monitor from the same arguments: to continue a run, pass ``resume=True``.
    """

    def __init__(self, *, timeline: str = "epochs", **monitor_kwargs: Any) -> None:
        super().__init__()
        owner = "InformationMonitorCallback"
        if timeline not in TIMELINES:
            raise InvalidParameterError(
                f"The 'timeline' parameter of {owner} must be one of "
                f"{list(TIMELINES)}. Got {timeline!r} instead."
            )
        self._monitor_cls, self._takes_total_epochs = check_monitor_kwargs(
            monitor_kwargs, owner, "the Trainer's model"
        )
        self.timeline = timeline
        self.monitor_kwargs: Dict[str, Any] = dict(monitor_kwargs)
        self.monitor: Optional[Any] = None
        self._open = False
        self._pending: Optional[int] = None
        self._scalars: Dict[str, float] = {}
        self._last: Optional[int] = None

    # -- Trainer events ----------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Create the monitor on the Trainer's model."""
        model = kwargs.get("model")
        if model is None:
            raise InvalidParameterError(
                "InformationMonitorCallback got no model at on_train_begin; use it "
                "as a callback of transformers.Trainer(model=..., callbacks=[...])."
            )
        if self._open:
            self._close("finished")
        options = dict(self.monitor_kwargs)
        total = self._total(args, state)
        if self._takes_total_epochs and "total_epochs" not in options and total:
            options["total_epochs"] = total
        self.monitor = self._monitor_cls(model, **options)
        self._open = True
        self._pending = None
        self._scalars = {}
        self._last = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Record the epoch or step that ended before this one began."""
        self._flush()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Record the epoch or step that ended before this step began."""
        self._flush()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Mark the epoch to record (``timeline="epochs"``)."""
        if self.timeline == "epochs" and self._open:
            epoch = max(0, math.ceil(float(state.epoch) - 1e-6) - 1)
            self._mark(epoch)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Mark a logging step to record (``timeline="steps"``)."""
        if self.timeline == "steps" and self._open and control.should_log:
            self._mark(int(state.global_step))

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ):
        """Keep the numeric entries of the Trainer's logs as scalars."""
        if not self._open or not logs:
            return
        if _SUMMARY_KEY in logs:  # the final summary: record what is pending
            self._flush()
            return
        self._scalars.update(numeric_scalars(logs, skip=_NOT_SCALARS))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Record what is pending and close the monitor: the run is finished."""
        self._flush()
        self._close("finished")

    # -- public helpers ------------------------------------------------------
    def close(self, status: str = "finished") -> None:
        """Close the monitor now (``status="crashed"`` after a failed training).

        Calling it again, or after training ended, does nothing.
        """
        self._close(status)

    # -- helpers -------------------------------------------------------------
    def _total(self, args: Any, state: Any) -> Optional[int]:
        if self.timeline == "steps":
            total = getattr(state, "max_steps", 0) or getattr(args, "max_steps", 0)
        else:
            total = getattr(state, "num_train_epochs", 0) or getattr(
                args, "num_train_epochs", 0
            )
        try:
            total = math.ceil(float(total))
        except (TypeError, ValueError):
            return None
        return total if total > 0 else None

    def _mark(self, index: int) -> None:
        if self._pending is not None and self._pending != index:
            self._flush()
        if self._last is None or index > self._last:
            self._pending = index

    def _flush(self) -> None:
        if self._pending is None or self.monitor is None or not self._open:
            return
        index, scalars = self._pending, self._scalars
        self._pending, self._scalars, self._last = None, {}, index
        self.monitor.on_epoch_end(index, **scalars)

    def _close(self, status: str) -> None:
        if self.monitor is None or not self._open:
            return
        self._open = False
        self._pending = None
        close_monitor(self.monitor, status)
