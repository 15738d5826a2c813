"""The training-loop callback: :class:`InformationMonitor`.

Attach it to any PyTorch training loop; on the epochs its schedule picks it
records the chosen layers' activations on fixed probe sets, estimates
I(X;T) and I(T;Y) in bits with each estimator, and writes every sink (the
run store and TensorBoard by default)::

    monitor = InformationMonitor(model, inputs=x_probe, labels=y_probe,
                                 logdir="runs/my-run", total_epochs=epochs)
    for epoch in range(epochs):
        train_one_epoch(model, ...)
        monitor.on_epoch_end(epoch, train_loss=..., test_acc=...)
    monitor.close()

The monitor composes parts that each have one job: probe sets
(:mod:`ibmonitor.probes`), the recording pass (:mod:`ibmonitor.recording`),
estimation (:mod:`ibmonitor.estimation`), a measure set
(:class:`ibmonitor.measures.MeasureSet`), sinks (:mod:`ibmonitor.sinks`) and
an executor (:mod:`ibmonitor.executor`). It keeps only the schedule and the
order of events.

Guarantees
----------
- Monitoring never changes training: the recording pass runs under
  ``torch.no_grad()`` in evaluation mode with hooks registered for the pass
  only; every submodule's training flag, the parameters, gradients, buffers
  and every RNG state (torch CPU and CUDA, numpy, python) are left as found.
- A monitor error never stops training unless ``strict=True``: it is warned
  once (:class:`~ibmonitor.MonitorWarning`) and listed under ``"errors"`` in
  ``run.json``. NaN or Inf activations give a warning naming the layer and
  epoch, and that layer's rows are stored as NaN.
- Every recorded epoch is flushed and fsynced before :meth:`on_epoch_end`
  returns (with ``background=True``, as soon as the worker has estimated it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import sys
import time
import warnings
from collections import OrderedDict
from numbers import Integral
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import schema
from ._device import model_device
from ._state import preserve_state
from ._validation import as_real_scalar, check_param
from .activations import activation_kind, saturated_fraction
from .budget import OverheadBudget
from .distributed import broadcast_object, world_info
from .estimation import estimator_list, information_rows
from .exceptions import InvalidParameterError, MonitorError, MonitorWarning
from .executor import ExecutorBusy, make_executor
from .probes import build_probes
from .recording import (
    REDUCE_OPTIONS,
    LayerSelection,
    record_activations,
    select_layers,
    unwrap_model,
)
from .reporting import ErrorPolicy, LocatedError
from .schedules import PlannedSchedule, make_schedule
from .sinks import MemorySink, Sink, make_sink
from .sinks.fanout import SinkSet
from .structures import OutputKey, n_rows, slice_rows

__all__ = ["InformationMonitor"]

logger = logging.getLogger(__name__)

Activations = Dict[str, Dict[str, torch.Tensor]]

#: Default share of training time the monitor may cost (``overhead_budget``).
DEFAULT_OVERHEAD_BUDGET = 0.25
#: ``estimators="auto"``: these for every model ...
AUTO_ESTIMATORS = ("binned", "kde")
#: ... and matrix-based Renyi too when a recorded layer is wider than this
#: (binning and KDE are pinned at log2 n there; Yu et al. 2019, Wickstrom et
#: al. 2019 use the matrix-based estimator for such layers).
WIDE_LAYER_UNITS = 64


class InformationMonitor:
    """Record information-plane coordinates of a model's layers during training.

    Parameters
    ----------
    model : nn.Module
        The model being trained (``DistributedDataParallel`` is unwrapped for
        the recording pass).
    inputs : Tensor, ndarray or DataLoader, optional
        A fixed probe set of inputs. A DataLoader is iterated once, at
        construction (its ``(inputs, labels)`` batches are kept in memory).
    labels : Tensor or ndarray of shape (n_samples,), optional
        Integer class labels of the probe set (taken from a DataLoader's
        batches when not given).
    probes : dict of str to (inputs, labels) or DataLoader, or list of \
:class:`~ibmonitor.probes.ProbeSet`, optional
        Several named probe sets instead of ``inputs``/``labels``
        (``{"train": (x_tr, y_tr), "test": (x_te, y_te)}``), each estimated
        separately (``probe`` column of the information table).
    layers : None, str, type, sequence, or callable, default=None
        Layers to record; see :func:`ibmonitor.recording.select_layers`. By
        default the outputs of residual, transformer and recurrent blocks (as
        units) and of activation modules outside them, plus the model's
        output; modules called more than once or never, and tensors already
        recorded under another name, are skipped. One line at construction
        (logged, and on stderr with ``verbose``) says what was chosen and
        skipped and why; :attr:`skipped_layers` holds the reasons.
    estimators : "auto", str, sequence, or dict, default="auto"
        Estimator names, :class:`~ibmonitor.estimators.Estimator` objects
        (from :func:`ibmonitor.estimators.get`), or ``{name: params}``.
        ``"auto"``: binned and KDE, plus matrix-based Renyi when a recorded
        layer has more than :data:`WIDE_LAYER_UNITS` units (where binning and
        KDE are pinned at log2 of the probe size).
    schedule : {"log", "log:N", "all"}, int, sequence of int, or callable, \
default="log"
        When to record; see :func:`ibmonitor.schedules.make_schedule`.
        ``"log"`` is Shwartz-Ziv & Tishby's log-spaced schedule when
        ``total_epochs`` is given, else an open-ended log schedule.
    total_epochs : int, optional
        Number of epochs of training (for ``"log"`` and to always record the
        last epoch under ``overhead_budget``).
    logdir : str or Path, optional
        The run directory. With it and no ``sinks``, the run goes to a
        :class:`~ibmonitor.sinks.RunStore` and a
        :class:`~ibmonitor.sinks.TensorBoard` sink there. Without either,
        results stay in memory (:attr:`information`, :attr:`scalars`).
    sinks : sequence of Sink or str, optional
        Where the run goes, e.g. ``[RunStore(store_activations=True),
        TensorBoard(images=False)]`` or ``["runstore"]``; sinks given no path
        use ``logdir``. Memory is always kept.
    measures : :class:`~ibmonitor.measures.MeasureSet`, optional
        Measures (gap, Hessian, sharpness, ...) with their loss, data and
        schedule, written to the scalars.
    explain : ExplainSet, optional
        Explanations over training (:class:`ibmonitor.explain.ExplainSet`):
        saliency maps, top-activating probe inputs, feature visualizations and
        influence, computed at recorded epochs and written to every sink
        (docs/explain.md). Nothing is computed without it.
    batch_size : int, default=256
        Batch size of the recording pass.
    reduce : {"auto", "flatten", "mean", "max", "first"}, default="auto"
        How a layer's output becomes one row per sample, by its rank (see
        :func:`ibmonitor.recording.record_activations`): ``"auto"`` averages
        the tokens of (batch, tokens, hidden) outputs (the positions an
        ``attention_mask`` of the probe keeps) and flattens convolutional
        maps; ``"mean"``/``"max"`` pool tokens or spatial axes; ``"first"``
        takes the first token; ``"flatten"`` flattens everything.
    recording_noise : float, optional
        Make the recording pass a *noisy network* (Goldfeld et al. 2019): add
        Gaussian noise of this standard deviation to the output of every
        recorded layer, so that later layers see ``S + Z`` while each layer's
        clean output ``S`` is recorded (:func:`ibmonitor.noise.inject_noise`,
        seeded per epoch from ``seed``). Only the recording pass: training,
        the measures and the model's RNG are untouched. Pair it with the
        ``noisy`` estimator and the same ``noise_std``.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (``"output"``
        layer): ``None`` takes a tensor as is and a mapping's or Hugging Face
        ``ModelOutput``'s ``logits``; an int indexes a tuple; a str is a key
        or an attribute.
    label_key : str, optional
        For probe sets given as a DataLoader of dict batches: the key of the
        labels (default: ``"labels"``, then ``"label"``).
    device : str or torch.device or None, default="cpu"
        Where activations go and the estimators run; ``None``: the model's
        device.
    background : bool or :class:`~ibmonitor.executor.Executor`, default=False
        ``True``: estimate and write in a worker thread while training
        continues (:class:`~ibmonitor.executor.BackgroundExecutor`; at most 2
        recorded epochs wait, training waits rather than memory growing).
        Results are written in epoch order; :meth:`close` (or :meth:`flush`)
        waits for them. ``BackgroundExecutor(timeout=60)`` bounds every wait:
        an estimator that never returns then costs a recorded epoch (an
        error in ``run.json``), never a blocked training loop or ``close()``.
    overhead_budget : float or None, default=0.25
        Fraction of training time the monitor may cost. The monitor times
        itself against the training between its calls and skips scheduled
        epochs while it is over budget, always keeping the first scheduled and
        the last epoch (``total_epochs - 1``); skipped epochs and the reason
        are recorded in ``run.json`` (``skipped_epochs``, ``overhead``). With
        a fast training step and a large probe set this records fewer epochs
        than the schedule names: pass ``None`` to record every scheduled
        epoch whatever it costs (what the paper reproductions do). One-time
        costs are paid at construction (each estimator runs once on 16 probe
        samples), outside the budget.
    strict : bool, default=False
        Raise :class:`~ibmonitor.MonitorError` on any monitor error instead
        of warning.
    verbose : bool, default=False
        Report each recorded epoch on stderr (otherwise only logged).
    seed : int, optional
        Seed of the training run, stored in ``run.json``.
    config : dict, optional
        Extra user configuration (hyperparameters), stored under ``"user"``
        in ``run.json``.

    Attributes
    ----------
    layers : list of str
        Recorded layers, in model order.
    recorded_epochs : list of int
        Epochs recorded so far.
    skipped_epochs : list of dict
        Scheduled epochs skipped by ``overhead_budget``, with the reason.
    errors : list of dict
        Monitor errors that did not stop training.

    Notes
    -----
    Events: :meth:`on_epoch_end` after every epoch (scalars are written for
    every call; information only on scheduled epochs), :meth:`close` at the
    end. Each recorded layer of a bounded activation (tanh, sigmoid) also
    gets the scalar ``saturation/<layer>``, its saturated fraction
    (:func:`ibmonitor.activations.saturated_fraction`).

    Under ``torch.distributed`` every rank records its contiguous shard of
    each probe set; rank 0 gathers the shards, estimates and writes, and the
    other ranks return.

    Examples
    --------
    >>> monitor = InformationMonitor(model, inputs=x, labels=y)  # doctest: +SKIP
    >>> monitor.on_epoch_end(0, train_loss=0.7)  # doctest: +SKIP
    >>> monitor.information.head()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any = None,
        labels: Any = None,
        *,
        probes: Any = None,
        layers: Any = None,
        estimators: Any = "auto",
        schedule: Any = "log",
        total_epochs: Optional[int] = None,
        logdir: Union[str, Path, None] = None,
        sinks: Optional[Sequence[Any]] = None,
        measures: Any = None,
        explain: Any = None,
        batch_size: int = 256,
        reduce: str = "auto",
        recording_noise: Optional[float] = None,
        output_key: OutputKey = None,
        label_key: Optional[str] = None,
        device: Union[str, torch.device, None] = "cpu",
        background: Any = False,
        overhead_budget: Optional[float] = DEFAULT_OVERHEAD_BUDGET,
        strict: bool = False,
        verbose: bool = False,
        seed: Optional[int] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        owner = "InformationMonitor"
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(
                f"The 'model' parameter of {owner} must be a torch.nn.Module. "
                f"Got {type(model).__name__} instead."
            )
        check_param(batch_size, "batch_size", owner, kind="int", low=1)
        check_param(reduce, "reduce", owner, kind="option", options=REDUCE_OPTIONS)
        if recording_noise is not None:
            check_param(
                recording_noise,
                "recording_noise",
                owner,
                kind="real",
                low=0.0,
                low_closed=False,
            )
        if overhead_budget is not None:
            check_param(
                overhead_budget, "overhead_budget", owner, low=0.0, low_closed=False
            )
        if total_epochs is not None:
            check_param(total_epochs, "total_epochs", owner, kind="int", low=1)
        if seed is not None:
            check_param(seed, "seed", owner, kind="int")
        self._seed = seed
        if measures is not None:
            from .measures import MeasureSet

            if not isinstance(measures, MeasureSet):
                raise InvalidParameterError(
                    f"The 'measures' parameter of {owner} must be a MeasureSet, "
                    "e.g. MeasureSet(['gap', 'norms'], loss_fn=..., "
                    f"train_data=..., test_data=...). Got {measures!r}."
                )

        self.model = model
        self._module = unwrap_model(model)
        self.strict = bool(strict)
        self.verbose = bool(verbose)
        self.batch_size = int(batch_size)
        self.reduce = reduce
        self.recording_noise = (
            None if recording_noise is None else float(recording_noise)
        )
        self.output_key = output_key
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.overhead_budget = (
            None if overhead_budget is None else float(overhead_budget)
        )
        self.logdir = None if logdir is None else Path(logdir)
        self._device = (
            model_device(self._module) if device is None else torch.device(device)
        )
        self._rank, self._world = world_info()
        self._is_writer = self._rank == 0

        with preserve_state(self._module):  # materialising a DataLoader draws RNG
            self._probes = build_probes(
                inputs, labels, probes, device=self._device, label_key=label_key
            )
            self._selection = self._select_layers(layers)
        self._layers = self._selection.layers
        self._layer_info = {
            name: {
                "module": type(module).__name__,
                **self._selection.shapes.get(name, {}),
            }
            for name, module in self._layers.items()
        }
        self._kinds = {name: activation_kind(m) for name, m in self._layers.items()}
        if isinstance(estimators, str) and estimators == "auto":
            widest = max(
                (int(i.get("n_units") or 0) for i in self._layer_info.values()),
                default=0,
            )
            estimators = AUTO_ESTIMATORS + (
                ("renyi",) if widest > WIDE_LAYER_UNITS else ()
            )
        self._estimators = estimator_list(estimators, owner=owner)
        if self._is_writer and any(e.inputs == "ids" for _, e in self._estimators):
            for probe in self._probes.values():
                probe.compute_ids()

        self.schedule: PlannedSchedule = make_schedule(schedule, self.total_epochs)
        self._measures = measures
        if explain is not None:
            from .explain import ExplainSet

            if not isinstance(explain, ExplainSet):
                raise InvalidParameterError(
                    f"The 'explain' parameter of {owner} must be an "
                    f"ibmonitor.explain.ExplainSet or None. Got "
                    f"{type(explain).__name__} instead."
                )
            explain.bind(self.total_epochs)
        self._explain = explain
        if measures is not None:
            measures.bind(self._module, total_epochs=self.total_epochs)

        # state
        self._closed = False
        self._last_seen: Optional[int] = None
        self._recorded: List[int] = []
        self._budget = OverheadBudget(self.overhead_budget, self._last_epoch())
        self._resume_last: Optional[int] = None

        self._executor = make_executor(background if self._is_writer else False)
        self._policy = ErrorPolicy(strict=self.strict, executor=self._executor)
        self._memory = MemorySink()
        self._sinks = SinkSet([self._memory], self._sink_failed)
        if self._is_writer:
            if sinks is None:
                sinks = ["runstore", "tensorboard"] if self.logdir is not None else []
            elif isinstance(sinks, (str, Sink)):
                sinks = [sinks]
            chosen = [make_sink(s) for s in sinks]
            self._open_sinks(chosen, self._build_config(schedule, seed, config, chosen))
        self._resume_last = broadcast_object(self._resume_last)

        if self._is_writer:
            self._warm_up()
        self._executor.start()
        self._last_exit = time.perf_counter()

    # ------------------------------------------------------------------ set-up
    def _select_layers(self, layers: Any) -> LayerSelection:
        """Choose the layers on 2 rows of the first probe set; say what and why."""
        first = next(iter(self._probes.values()))
        selection = select_layers(
            self._module,
            layers,
            slice_rows(first.inputs, slice(0, 2)),
            reduce=self.reduce,
            output_key=self.output_key,
        )
        logger.info("ibmonitor: %s", selection.summary())
        if self.verbose:
            sys.stderr.write(f"[ibmonitor] {selection.summary()}\n")
        return selection

    def _build_config(
        self,
        schedule: Any,
        seed: Optional[int],
        user: Optional[Mapping[str, Any]],
        sinks: Sequence[Sink],
    ) -> Dict[str, Any]:
        from . import __version__

        schedule_cfg = dict(self.schedule.config)
        schedule_cfg["spec"] = _describe_spec(schedule)
        if self.schedule.planned is not None:
            schedule_cfg["epochs"] = list(self.schedule.planned)
        return schema.build_run_config(
            versions={
                "ibmonitor": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
            },
            model=type(self._module).__name__,
            layers=self._layer_info,
            activation_kinds=self._kinds,
            estimators=[
                {"name": est.name, "label": label, "params": dict(est.params)}
                for label, est in self._estimators
            ],
            probes={name: p.describe() for name, p in self._probes.items()},
            schedule=schedule_cfg,
            total_epochs=self.total_epochs,
            recording={
                "batch_size": self.batch_size,
                "reduce": self.reduce,
                "recording_noise": self.recording_noise,
                "output_key": self.output_key,
                "skipped_layers": dict(self._selection.skipped),
                "device": str(self._device),
                "background": self._executor.background,
                "world_size": self._world,
            },
            measures=None if self._measures is None else self._measures.describe(),
            explain=None if self._explain is None else self._explain.describe(),
            sinks=[s.describe() for s in sinks],
            overhead_budget=self.overhead_budget,
            seed=seed,
            user=user,
        )

    def _open_sinks(self, sinks: Sequence[Sink], config: Dict[str, Any]) -> None:
        """Open every sink; an essential sink's failure stops the construction."""
        self._sinks = SinkSet([self._memory, *sinks], self._sink_failed)
        resumed = self._sinks.open(config, logdir=self.logdir)
        for sink in self._sinks:
            if self.logdir is None and getattr(sink, "path", None) is not None:
                self.logdir = Path(sink.path)
        if resumed:
            self._resume_last = resumed.get("last_epoch")
            stored = resumed.get("config") or {}
            overhead = stored.get("overhead") or {}
            self._budget.skipped = list(overhead.get("skipped") or [])
            self._policy.errors = list(stored.get("errors") or [])
            if resumed.get("pending"):
                self._complete_pending(resumed["pending"], resumed["read_pending"])

    def _warm_up(self) -> None:
        """Pay one-time costs (imports, first calls) now, outside the budget.

        Runs each estimator once on a small slice of the first probe set;
        every failure here is ignored (the real call reports it).
        """
        started = time.perf_counter()
        first = next(iter(self._probes.values()))
        part = first.head(min(first.n_samples, 16))
        with preserve_state(self._module), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                acts = record_activations(
                    self._module,
                    self._layers,
                    part.inputs,
                    batch_size=part.n_samples,
                    reduce=self.reduce,
                    device=self._device,
                    output_key=self.output_key,
                )
                t = next(iter(acts.values()))
                x = part.estimator_inputs()
                for _, est in self._estimators:
                    with contextlib.suppress(Exception):
                        est(t, part.labels, x=x.for_estimator(est))
            except Exception as exc:  # the first recording reports it
                logger.debug("warm-up failed: %r", exc)
        logger.debug("warm-up took %.3f s", time.perf_counter() - started)

    # ---------------------------------------------------------------- public
    @property
    def layers(self) -> List[str]:
        """Recorded layers, in model order (the model output last)."""
        return list(self._layers)

    @property
    def skipped_layers(self) -> Dict[str, str]:
        """Modules the default selection left out, with the reason."""
        return dict(self._selection.skipped)

    @property
    def probes(self) -> List[str]:
        """Names of the probe sets."""
        return list(self._probes)

    @property
    def estimators(self) -> List[str]:
        """Labels of the estimators (the ``estimator`` column)."""
        return [label for label, _ in self._estimators]

    @property
    def sinks(self) -> List[Sink]:
        """The open sinks (memory first)."""
        return list(self._sinks.sinks)

    @property
    def recorded_epochs(self) -> List[int]:
        """Epochs whose activations were recorded so far."""
        return list(self._recorded)

    @property
    def skipped_epochs(self) -> List[Dict[str, Any]]:
        """Scheduled epochs skipped to stay in ``overhead_budget``, with reasons."""
        return [dict(s) for s in self._budget.skipped]

    @property
    def errors(self) -> List[Dict[str, Any]]:
        """Monitor errors that did not stop training (epoch, where, message)."""
        self._policy.drain(raise_strict=False)
        return [dict(e) for e in self._policy.errors]

    @property
    def overhead(self) -> Dict[str, float]:
        """Seconds spent in training and in the monitor so far, and their ratio."""
        return {
            "train_s": self._budget.train_time,
            "monitor_s": self._budget.monitor_time,
            "ratio": self._budget.ratio,
        }

    @property
    def information(self) -> Any:
        """Information estimates so far (wide DataFrame, like ``Run.information``).

        Columns: epoch, probe, layer, estimator, i_xt, i_ty, and estimator
        extras. Waits for the background worker first.
        """
        self.flush(raise_errors=False)
        return self._memory.information

    @property
    def scalars(self) -> Any:
        """Scalars so far (long DataFrame: epoch, name, value)."""
        self.flush(raise_errors=False)
        return self._memory.scalars

    @property
    def run(self) -> Any:
        """The run store read back (:func:`ibmonitor.load_run`); needs ``logdir``."""
        if self.logdir is None:
            raise MonitorError("This monitor has no 'logdir'; there is no run to load.")
        from .storage import load_run

        self.flush(raise_errors=False)
        return load_run(self.logdir)

    def should_record(self, epoch: int) -> bool:
        """Whether the schedule picks ``epoch`` (before any overhead-budget skip)."""
        return bool(self.schedule(epoch))

    def on_epoch_end(self, epoch: int, **scalars: Any) -> None:
        """Handle the end of an epoch: write scalars, record if scheduled.

        Parameters
        ----------
        epoch : int
            The 0-based epoch that just ended; epochs must increase.
        **scalars : float
            Scalars of the epoch (``train_loss=...``, ``test_acc=...``); floats,
            numpy or 0-d tensor scalars. Written for every call.

        Raises
        ------
        MonitorError
            Only with ``strict=True``, for any monitor error (also one of the
            background worker since the last call).
        """
        entered = time.perf_counter()
        self._budget.add_training(entered - self._last_exit)
        try:
            with preserve_state(self._module):
                self._policy.drain(raise_strict=True)
                self._epoch_end(epoch, scalars)
        except MonitorError:
            if self.strict:
                raise
            self._policy.report(epoch, "on_epoch_end", sys.exc_info()[1])
        except Exception as exc:
            if self.strict:
                raise MonitorError(
                    f"The monitor failed at epoch {epoch}: {type(exc).__name__}: {exc}"
                ) from exc
            self._policy.report(epoch, "on_epoch_end", exc)
        finally:
            self._last_exit = time.perf_counter()
            self._budget.add_monitor(self._last_exit - entered)

    def flush(self, *, raise_errors: bool = True) -> None:
        """Wait until the background worker has written everything queued.

        Parameters
        ----------
        raise_errors : bool, default=True
            With ``strict=True``, raise the worker's errors; otherwise warn.
        """
        try:
            self._executor.join()
        except ExecutorBusy as exc:
            if self.strict and raise_errors:
                raise MonitorError(f"flush failed: {exc}") from exc
            self._policy.report(None, "background worker", exc)
        self._policy.drain(raise_strict=raise_errors)
        if self._policy.dirty:
            self._write_config_updates()

    def close(self, status: str = "finished") -> None:
        """Flush everything and close every sink (``status`` in ``run.json``).

        Calling it again does nothing.

        Parameters
        ----------
        status : {"finished", "crashed"}, default="finished"

        Raises
        ------
        MonitorError
            With ``strict=True``, when the worker failed since the last call.
        """
        if self._closed:
            return
        if status not in ("finished", "crashed"):
            raise InvalidParameterError(
                "The 'status' parameter of InformationMonitor.close must be one of "
                f"['crashed', 'finished']. Got {status!r} instead."
            )
        self._closed = True
        failure: Optional[BaseException] = None
        try:
            try:
                self._executor.shutdown()
            except ExecutorBusy as exc:  # a stuck estimator: close all the same
                if self.strict:
                    failure = MonitorError(f"close: {exc}")
                    status = "crashed"
                    self._policy.record(None, "background worker", exc)
                else:
                    self._policy.report(None, "background worker", exc)
            try:
                self._policy.drain(raise_strict=True)
            except MonitorError as exc:
                failure = exc
                status = "crashed"
            self._write_config_updates()
            if self._budget.skipped:
                self._say(
                    f"the overhead budget ({self.overhead_budget:g} of training "
                    f"time) skipped {len(self._budget.skipped)} scheduled epochs "
                    "(run.json: skipped_epochs); overhead_budget=None records "
                    "every scheduled epoch"
                )
        finally:
            self._sinks.close(status)
        if failure is not None:
            raise failure

    def __enter__(self) -> InformationMonitor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("finished")
            return
        try:
            self.close("crashed")
        except MonitorError:  # the user's exception takes precedence
            logger.exception("Monitor error while closing after an exception")

    def __repr__(self) -> str:
        where = str(self.logdir) if self.logdir is not None else "memory"
        return (
            f"InformationMonitor(layers={self.layers}, estimators={self.estimators}, "
            f"probes={self.probes}, run={where!r})"
        )

    # ----------------------------------------------------------------- epoch
    def _epoch_end(self, epoch: Any, scalars: Mapping[str, Any]) -> None:
        if self._closed:
            raise MonitorError("on_epoch_end was called after close().")
        epoch = self._check_epoch(epoch)
        if epoch is None:
            return
        values = self._clean_scalars(epoch, scalars)

        info = bool(self.schedule(epoch))
        meas = self._measures is not None and self._measures.due(epoch, info)
        if (info or meas) and self.overhead_budget is not None:
            keep, reason = self._budget.decide(epoch)
            keep, reason = broadcast_object((keep, reason))
            if not keep:
                self._budget.skip(epoch, reason)
                self._policy.dirty = True
                logger.info("epoch %d skipped: %s", epoch, reason)
                info = meas = False
        if info or meas:
            self._budget.note_scheduled()

        started = time.perf_counter()
        activations: Optional[Activations] = None
        bad: Dict[str, Dict[str, str]] = {}
        if info:
            activations, bad = self._record(epoch)
            self._recorded.append(epoch)
        if self._is_writer:
            if meas:
                values.update(self._compute_measures(epoch, activations))
            if activations is not None:
                values.update(self._saturation(activations))
                self._sinks.emit("begin_epoch", epoch)
            self._sinks.emit("write_scalars", epoch, values, recorded=info)
            if info and self._explain is not None:
                self._explanations(epoch)
            if activations is not None:
                spooled = self._spool(epoch, activations)
                self._submit(epoch, activations, bad, spooled)
            if info and self._policy.dirty:
                self._write_config_updates()
        if info or meas:
            cost = time.perf_counter() - started
            self._budget.note_recording(cost)
            self._say(
                f"epoch {epoch}: recorded {len(self._layers)} layers"
                + (" (estimating in background)" if self._executor.background else "")
                + f" in {cost:.3g} s"
            )

    def _check_epoch(self, epoch: Any) -> Optional[int]:
        """Validate ``epoch``; None when a resumed run already holds it."""
        if isinstance(epoch, bool) or not isinstance(epoch, (Integral, np.integer)):
            raise InvalidParameterError(
                "The 'epoch' parameter of on_epoch_end must be an int in the range "
                f"[0, inf). Got {epoch!r} instead."
            )
        epoch = int(epoch)
        if epoch < 0:
            raise InvalidParameterError(
                "The 'epoch' parameter of on_epoch_end must be an int in the range "
                f"[0, inf). Got {epoch!r} instead."
            )
        if self._resume_last is not None and epoch <= self._resume_last:
            self._policy.warn_once(
                "resume",
                f"Epoch {epoch} is already in the resumed run (last stored epoch "
                f"{self._resume_last}); it is ignored. Continue at epoch "
                f"{self._resume_last + 1}.",
            )
            return None
        if self._last_seen is not None and epoch <= self._last_seen:
            raise InvalidParameterError(
                f"on_epoch_end got epoch {epoch} after epoch {self._last_seen}; epochs "
                "must increase. The call is ignored."
            )
        self._last_seen = epoch
        return epoch

    def _clean_scalars(
        self, epoch: int, scalars: Mapping[str, Any]
    ) -> Dict[str, float]:
        values: Dict[str, float] = {}
        for name, value in scalars.items():
            try:
                values[str(name)] = _scalar(value)
            except (TypeError, ValueError):
                error = InvalidParameterError(
                    f"The scalar {name!r} given to on_epoch_end at epoch {epoch} "
                    f"must be a real number. Got {value!r}; it is not stored."
                )
                self._policy.fail(epoch, "scalars", error)
        return values

    def _last_epoch(self) -> Optional[int]:
        """Return the last epoch of training, when known (always recorded)."""
        if self.total_epochs is not None:
            return self.total_epochs - 1
        return self.schedule.planned[-1] if self.schedule.planned else None

    def _record(self, epoch: int) -> Tuple[Optional[Activations], Dict[str, Dict]]:
        """Record every probe; on rank 0 return the activations and bad layers."""
        result: Activations = OrderedDict()
        bad: Dict[str, Dict[str, str]] = {}
        for name, probe in self._probes.items():
            x = probe.shard(self._rank, self._world)
            if n_rows(x) > 0:
                with self._recording_noise(epoch):
                    acts = record_activations(
                        self._module,
                        self._layers,
                        x,
                        batch_size=self.batch_size,
                        reduce=self.reduce,
                        device=self._device,
                        output_key=self.output_key,
                    )
            else:
                acts = self._empty_activations()
            if self._world > 1:
                from .distributed import gather_to_rank_zero

                acts = gather_to_rank_zero(dict(acts))
                if acts is None:
                    continue
            result[name] = acts
            bad[name] = self._non_finite_layers(epoch, name, acts)
        if not self._is_writer:
            return None, {}
        return result, bad

    def _recording_noise(self, epoch: int) -> Any:
        """Return the noise of a noisy-network recording pass (a no-op without)."""
        if self.recording_noise is None:
            return contextlib.nullcontext()
        from .noise import inject_noise

        entropy = [abs(self._seed or 0), epoch, self._rank]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0]) % 2**31
        return inject_noise(self._module, self._layers, self.recording_noise, seed=seed)

    def _non_finite_layers(
        self, epoch: int, probe: str, acts: Mapping[str, torch.Tensor]
    ) -> Dict[str, str]:
        """Warn of layers with NaN or Inf activations; return them with the reason."""
        found: Dict[str, str] = {}
        for layer, t in acts.items():
            finite = torch.isfinite(t)
            if bool(finite.all()):
                continue
            n_bad = int((~finite).sum())
            n_nan = int(torch.isnan(t).sum())
            what = "NaN" if n_nan == n_bad else ("Inf" if not n_nan else "NaN/Inf")
            message = (
                f"Activations of layer {layer!r} at epoch {epoch} (probe {probe!r}) "
                f"contain {what} ({n_bad} of {t.numel()} values). Training may have "
                "diverged; this layer's information rows for this epoch are stored "
                "as NaN."
            )
            found[layer] = message
            logger.debug(message)
            warnings.warn(message, MonitorWarning, stacklevel=5)
        return found

    def _empty_activations(self) -> Dict[str, torch.Tensor]:
        dtype = next(
            (p.dtype for p in self._module.parameters() if torch.is_floating_point(p)),
            torch.float32,
        )
        if dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32
        return OrderedDict(
            (
                name,
                torch.zeros(
                    (0, int(info.get("n_units", 0))), dtype=dtype, device=self._device
                ),
            )
            for name, info in self._layer_info.items()
        )

    def _saturation(self, activations: Activations) -> Dict[str, float]:
        """Saturated fraction of each bounded layer, as scalars."""
        out: Dict[str, float] = {}
        for probe, acts in activations.items():
            for layer, t in acts.items():
                fraction = saturated_fraction(t, self._kinds.get(layer))
                if fraction is not None:
                    out[schema.saturation_name(layer, probe)] = fraction
        return out

    def _compute_measures(
        self, epoch: int, activations: Optional[Activations]
    ) -> Dict[str, float]:
        last = self.total_epochs is not None and epoch >= self.total_epochs - 1
        labels = (
            None
            if activations is None
            else {name: self._probes[name].labels for name in activations}
        )
        try:
            values = self._measures.compute(
                self._module,
                epoch,
                strict=self.strict,
                last=last,
                activations=activations,
                labels=labels,
            )
        except Exception as exc:
            if self.strict:
                raise
            self._policy.report(epoch, "measures", exc)
            return {}
        for name, exc in self._measures.last_errors:  # warned by the measure set
            self._policy.record(epoch, f"measure {name!r}", exc)
        if self._measures.last_histograms:
            self._sinks.emit("write_histograms", epoch, self._measures.last_histograms)
        return values

    def _explanations(self, epoch: int) -> None:
        """Compute the epoch's explanations and send them to the sinks."""
        first = next(iter(self._probes.values()))
        try:
            arrays = self._explain.compute(
                self._module,
                epoch,
                probe_inputs=first.inputs,
                output_key=self.output_key,
            )
        except Exception as exc:
            if self.strict:
                raise
            self._policy.report(epoch, "explanations", exc)
            return
        self._sinks.emit("write_explanations", epoch, arrays)

    # ----------------------------------------------------------- estimation
    def _arrays(
        self, activations: Activations
    ) -> Tuple[Dict[str, Dict[str, np.ndarray]], Dict[str, Any], Dict[str, Any]]:
        """Return the activations, labels and flattened inputs as numpy, by probe."""
        arrays = {
            probe: {layer: t.detach().cpu().numpy() for layer, t in acts.items()}
            for probe, acts in activations.items()
        }
        labels = {n: self._probes[n].labels.cpu().numpy() for n in activations}
        inputs = {n: self._probes[n].values.cpu().numpy() for n in activations}
        return arrays, labels, inputs

    def _spool(self, epoch: int, activations: Activations) -> Optional[tuple]:
        """Spool a queued epoch's activations so that a killed process keeps it.

        Only with a background worker and a sink that spools; returns the numpy
        arrays written (``_arrays``'s triple) so that the worker reuses them.
        """
        spooling = [s for s in self._sinks if s.spools]
        if not (self._executor.background and spooling):
            return None
        converted = self._arrays(activations)
        self._sinks.emit("write_pending", epoch, *converted, only=spooling)
        return converted

    def _complete_pending(self, pending: Sequence[int], read: Any) -> None:
        """Estimate the spooled epochs of a resumed run (killed before estimating).

        Each epoch's scalars are stored already; its information rows (and
        archive) are written now, with this monitor's estimators.
        """
        for epoch in pending:
            try:
                stored = read(epoch)
                unknown = sorted(set(stored) - set(self._probes))
                if unknown:
                    raise InvalidParameterError(
                        f"The spooled activations of epoch {epoch} hold probe sets "
                        f"{unknown} that this monitor does not have "
                        f"({sorted(self._probes)}); pass the same probes to resume."
                    )
                activations: Activations = OrderedDict()
                bad: Dict[str, Dict[str, str]] = {}
                for probe, layers in stored.items():
                    n = self._probes[probe].n_samples
                    acts = OrderedDict(
                        (layer, torch.from_numpy(a))
                        for layer, a in layers.items()
                        if layer not in ("__y__", "__x__")
                    )
                    if any(t.shape[0] != n for t in acts.values()):
                        raise InvalidParameterError(
                            f"The spooled activations of epoch {epoch}, probe "
                            f"{probe!r}, do not have the probe's {n} samples; "
                            "pass the same probes to resume."
                        )
                    activations[probe] = acts
                    bad[probe] = self._non_finite_layers(epoch, probe, acts)
                self._estimate(epoch, activations, bad)
                self._say(f"epoch {epoch}: estimated from its spooled activations")
            except Exception as exc:
                self._policy.fail(epoch, "completing a spooled epoch", exc)

    def _submit(
        self,
        epoch: int,
        activations: Activations,
        bad: Dict,
        converted: Optional[tuple] = None,
    ) -> None:
        def job() -> None:
            try:
                self._estimate(epoch, activations, bad, converted)
            except BaseException as exc:
                if not self._executor.in_worker():
                    raise
                self._executor.defer_error(
                    LocatedError(epoch, "background worker", exc)
                )

        try:
            self._executor.submit(job, bounded=True)
        except ExecutorBusy as exc:  # scalars written; activations spooled
            if self._executor.background and any(s.spools for s in self._sinks):
                exc = ExecutorBusy(
                    f"{exc}; its activations stay spooled in the run's pending/ "
                    "folder, and resuming the run (RunStore(resume=True)) "
                    "estimates them"
                )
            self._policy.fail(epoch, "estimation", exc)

    def _estimate(
        self,
        epoch: int,
        activations: Activations,
        bad: Dict,
        converted: Optional[tuple] = None,
    ) -> None:
        """Estimate one recorded epoch and write it to the sinks.

        The epoch ends (``end_epoch``) even when an estimate fails, so that a
        resumed run keeps its scalars; a sink whose own write failed keeps
        the epoch open itself.
        """
        try:
            self._write_estimates(epoch, activations, bad, converted)
        finally:
            self._sinks.emit("end_epoch", epoch)

    def _write_estimates(
        self,
        epoch: int,
        activations: Activations,
        bad: Dict,
        converted: Optional[tuple] = None,
    ) -> None:
        rows: List[Dict[str, Any]] = []
        for probe_name, acts in activations.items():
            probe = self._probes[probe_name]

            def failed(layer: str, label: str, exc: BaseException) -> None:
                self._policy.fail(epoch, f"estimator {label!r} on layer {layer!r}", exc)

            def warned(
                layer: str, label: str, warning: Any, probe: str = probe_name
            ) -> None:
                self._policy.estimator_warning(epoch, probe, layer, label, warning)

            rows += information_rows(
                epoch,
                probe_name,
                acts,
                probe.labels,
                self._estimators,
                inputs=probe.estimator_inputs(),
                skip=bad.get(probe_name, {}),
                on_error=failed,
                # Capturing warnings is process-wide in Python: in a worker
                # thread it would also take the training thread's warnings.
                on_warning=None if self._executor.in_worker() else warned,
            )
        self._sinks.emit("write_information", epoch, rows)
        wanting = self._sinks.wanting_activations()
        if wanting:
            converted = converted or self._arrays(activations)
            self._sinks.emit("write_activations", epoch, *converted, only=wanting)

    def _sink_failed(
        self, sink: Sink, event: str, epoch: Optional[int], exc: BaseException
    ) -> None:
        """Apply the policy for a sink's failure (the sink set calls it)."""
        if event == "update_config":  # run.json is rewritten at the next change
            logger.error("ibmonitor: could not update %s's config: %r", sink.title, exc)
            return
        if sink.essential and event.startswith("write_"):
            self._policy.fail(epoch, sink.title, exc)
            return
        logger.debug("ibmonitor: %s %s failed", sink.title, event, exc_info=exc)
        self._policy.record(epoch, f"{sink.name}.{event}", exc)
        what = {
            "open": f"{sink.title} is off: {type(exc).__name__}: {exc}. The other "
            "sinks are unaffected.",
            "close": f"{sink.title} failed to close ({type(exc).__name__}: {exc}).",
        }.get(
            event,
            f"{sink.title} {event} failed ({type(exc).__name__}: {exc}); the other "
            "sinks are unaffected and training goes on.",
        )
        self._policy.warn_once(f"{sink.name}-{event}", what)

    def _write_config_updates(self) -> None:
        self._policy.dirty = False
        self._sinks.update_config(
            skipped_epochs=[s["epoch"] for s in self._budget.skipped],
            overhead=self._budget.describe(),
            errors=list(self._policy.errors),
        )

    def _say(self, message: str) -> None:
        logger.info(message)
        if self.verbose:
            sys.stderr.write(f"[ibmonitor] {message}\n")
            sys.stderr.flush()


def _scalar(value: Any) -> float:
    """Return a user's scalar as a float (None is NaN); else TypeError or ValueError."""
    return math.nan if value is None else as_real_scalar(value)


def _describe_spec(spec: Any) -> Any:
    """Describe a schedule argument in JSON-friendly terms."""
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return spec
    if isinstance(spec, Mapping):
        return {str(k): _describe_spec(v) for k, v in spec.items()}
    if callable(spec):
        return getattr(spec, "__name__", type(spec).__name__)
    try:
        return [int(e) for e in spec]
    except (TypeError, ValueError):
        return repr(spec)
