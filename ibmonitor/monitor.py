"""The training-loop callback: :class:`InformationMonitor`.

Attach it to any PyTorch training loop; on the epochs its schedule picks it
records the chosen layers' activations on fixed probe sets, estimates
I(X;T) and I(T;Y) in bits with each estimator, and writes the run store
(and TensorBoard summaries)::

    monitor = InformationMonitor(model, inputs=x_probe, labels=y_probe,
                                 logdir="runs/my-run", total_epochs=epochs)
    for epoch in range(epochs):
        train_one_epoch(model, ...)
        monitor.on_epoch_end(epoch, train_loss=..., test_acc=...)
    monitor.close()

Guarantees
----------
- Monitoring never changes training: the recording pass runs under
  ``torch.no_grad()`` in evaluation mode with hooks registered for the pass
  only; every submodule's training flag, the parameters, gradients, buffers
  and every RNG state (torch CPU and CUDA, numpy, python) are left as found.
- A monitor error never stops training unless ``strict=True``: it is logged,
  warned (:class:`~ibmonitor.MonitorWarning`) and listed under ``"errors"`` in
  ``run.json``. NaN or Inf activations give a warning naming the layer and
  epoch, and that layer's rows are stored as NaN.
- Every recorded epoch is flushed and fsynced before :meth:`on_epoch_end`
  returns (with ``background=True``, as soon as the worker has estimated it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import queue
import sys
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import estimators as _estimators
from ._validation import as_tensor, check_labels, check_param
from .exceptions import InvalidParameterError, MonitorError, MonitorWarning
from .recording import (
    activation_kind,
    layer_shapes,
    model_device,
    preserve_state,
    record_activations,
    resolve_layers,
    unwrap_model,
)
from .schedules import PlannedSchedule, make_schedule

__all__ = ["InformationMonitor"]

logger = logging.getLogger(__name__)

DEFAULT_PROBE = "default"
#: Without a measure schedule, expensive measures run on every 4th recorded epoch.
EXPENSIVE_EVERY = 4
_INPUT_KINDS = ("ids", "values", "none")


@dataclass
class _Probe:
    """A fixed probe set: inputs for the model and what the estimators get."""

    name: str
    x: torch.Tensor  # as given (any device), fed to the model in batches
    y: torch.Tensor  # int64 labels on the estimator device
    x_flat: Optional[torch.Tensor] = None  # float inputs (n, features)
    ids: Optional[torch.Tensor] = None  # unique-row ids of x, computed once

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _Job:
    """One epoch's work for the estimation step (synchronous or the worker)."""

    epoch: int
    scalars: Dict[str, float]
    activations: Optional[Dict[str, Dict[str, torch.Tensor]]] = None
    bad_layers: Dict[str, Dict[str, str]] = field(default_factory=dict)
    holds_slot: bool = False


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
    probes : dict of str to (inputs, labels) or DataLoader, optional
        Several named probe sets instead of ``inputs``/``labels``
        (``{"train": (x_tr, y_tr), "test": (x_te, y_te)}``), each estimated
        separately (``probe`` column of the information table).
    layers : None, str, type, sequence, or callable, default=None
        Layers to record; see :func:`ibmonitor.recording.resolve_layers`. By
        default the outputs of activation modules (or of Linear and Conv
        modules when there are none) plus the model's output.
    estimators : str, sequence, or dict, default=("binned", "kde")
        Estimator names, :class:`~ibmonitor.estimators.Estimator` objects
        (from :func:`ibmonitor.estimators.get`), or ``{name: params}``.
    schedule : {"log", "log:N", "all"}, int, sequence of int, or callable, \
default="log"
        When to record; see :func:`ibmonitor.schedules.make_schedule`.
        ``"log"`` is Shwartz-Ziv & Tishby's log-spaced schedule when
        ``total_epochs`` is given, else an open-ended log schedule.
    total_epochs : int, optional
        Number of epochs of training (for ``"log"`` and to always record the
        last epoch under ``overhead_budget``).
    logdir : str or Path, optional
        The run directory. Without it, results stay in memory
        (:attr:`information`, :attr:`scalars`).
    batch_size : int, default=256
        Batch size of the recording pass.
    reduce : {None, "mean", "max"}, default=None
        Pool the spatial axes of convolutional maps (``None`` flattens them).
    device : str or torch.device or None, default="cpu"
        Where activations go and the estimators run; ``None``: the model's
        device.
    background : bool, default=False
        Estimate and write in a worker thread while training continues. At
        most ``queue_size`` recorded epochs wait; training waits rather than
        memory growing. Results are written in epoch order; :meth:`close`
        (or :meth:`flush`) waits for them.
    queue_size : int, default=2
        Recorded epochs that may wait for the worker.
    store_activations : bool or {"float32", "float16"}, default=False
        Also store each recorded epoch's activations, labels and flattened
        inputs (``activations/epoch_XXXXXX.npz``); ``"float16"`` halves the
        size.
    resume : bool, default=False
        Continue the run in ``logdir``: epochs up to the stored last epoch
        are ignored, later ones appended.
    overwrite : bool, default=False
        Replace the run in ``logdir``.
    tensorboard : bool, optional
        Also write TensorBoard summaries into ``logdir``; default True when
        ``logdir`` is given. A TensorBoard failure never stops training.
    tensorboard_images : bool or "log", default="log"
        When to draw the information-plane image into TensorBoard (a
        matplotlib rendering, about a second each): ``"log"`` on the 1st,
        2nd, 4th, 8th, ... recorded epoch and at :meth:`close`; ``True`` on
        every recorded epoch; ``False`` never.
    measures : sequence of str or callable, or dict, optional
        Measures of :func:`ibmonitor.measures.compute_measures` (``"gap"``,
        ``"hessian"``, ``"sharpness"``, ``"norms"``, ``"pac_bayes"``, ...;
        a dict maps a name to its options) written to the scalars table
        (and TensorBoard). Need ``loss_fn`` and ``train_data`` (``test_data``
        for the gap).
    train_data, test_data : DataLoader or (inputs, targets), optional
        Data of the measures.
    loss_fn : callable, optional
        Loss of the measures, ``loss_fn(output, target) -> Tensor``.
    measure_schedule : same as ``schedule``, optional
        When to compute every measure. By default cheap measures (gap,
        norms) run on each epoch the information is recorded, and expensive
        ones (Hessian, sharpness, PAC-Bayes) on every 4th of those, the
        first and the last epoch.
    overhead_budget : float, optional
        Fraction of training time the monitor may cost (e.g. 0.25). The
        monitor times itself against the training between its calls and
        skips scheduled epochs while it is over budget, always keeping the
        first scheduled and the last epoch; skipped epochs and the reason
        are recorded in ``run.json`` (``skipped_epochs``, ``overhead``).
        One-time costs are paid at construction (each estimator runs once on
        16 probe samples), outside the budget.
    strict : bool, default=False
        Raise :class:`~ibmonitor.MonitorError` on any monitor error instead
        of logging and warning.
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
    Events: :meth:`on_epoch_end` after every epoch (scalars are stored for
    every call; information only on scheduled epochs), :meth:`close` at the
    end. Columns written: ``information.csv`` (epoch, probe, layer,
    estimator, quantity, value) and ``scalars.csv`` (epoch, name, value).

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
        probes: Optional[Mapping[str, Any]] = None,
        layers: Any = None,
        estimators: Any = ("binned", "kde"),
        schedule: Any = "log",
        total_epochs: Optional[int] = None,
        logdir: Union[str, Path, None] = None,
        batch_size: int = 256,
        reduce: Optional[str] = None,
        device: Union[str, torch.device, None] = "cpu",
        background: bool = False,
        queue_size: int = 2,
        store_activations: Union[bool, str] = False,
        resume: bool = False,
        overwrite: bool = False,
        tensorboard: Optional[bool] = None,
        tensorboard_images: Union[bool, str] = "log",
        measures: Optional[Sequence[Any]] = None,
        train_data: Any = None,
        test_data: Any = None,
        loss_fn: Any = None,
        measure_schedule: Any = None,
        overhead_budget: Optional[float] = None,
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
        check_param(
            reduce, "reduce", owner, kind="option", options=(None, "mean", "max")
        )
        check_param(queue_size, "queue_size", owner, kind="int", low=1)
        check_param(
            store_activations,
            "store_activations",
            owner,
            kind="option",
            options=(False, True, "float32", "float16"),
        )
        check_param(
            tensorboard_images,
            "tensorboard_images",
            owner,
            kind="option",
            options=(True, False, "log"),
        )
        if overhead_budget is not None:
            check_param(
                overhead_budget, "overhead_budget", owner, low=0.0, low_closed=False
            )
        if total_epochs is not None:
            check_param(total_epochs, "total_epochs", owner, kind="int", low=1)
        if seed is not None:
            check_param(seed, "seed", owner, kind="int")

        self.model = model
        self._module = unwrap_model(model)
        self.strict = bool(strict)
        self.verbose = bool(verbose)
        self.batch_size = int(batch_size)
        self.reduce = reduce
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.overhead_budget = (
            None if overhead_budget is None else float(overhead_budget)
        )
        self.background = bool(background)
        self._images = tensorboard_images
        self._image_epoch: Optional[int] = None
        self.logdir = None if logdir is None else Path(logdir)
        self._device = (
            model_device(self._module) if device is None else torch.device(device)
        )
        self._store = {False: None, True: "float32"}.get(
            store_activations, store_activations
        )

        self._rank, self._world = _world_info()
        self._is_writer = self._rank == 0

        with preserve_state(self._module):  # materialising a DataLoader draws RNG
            self._probes = self._build_probes(inputs, labels, probes)
            self._layers = resolve_layers(self._module, layers)
            self._layer_info = self._inspect_layers()
        self._estimators = _build_estimators(estimators)
        if self._is_writer and any(e.inputs == "ids" for _, e in self._estimators):
            for probe in self._probes.values():
                probe.ids = _estimators.input_ids(probe.x).to(self._device)

        self.schedule: PlannedSchedule = make_schedule(schedule, self.total_epochs)
        self._measures: Any = []
        self._expensive: Any = []
        if measures:
            self._measures, self._expensive = _split_measures(measures)
        self._measure_schedule: Optional[PlannedSchedule] = None
        if measure_schedule is not None:
            self._measure_schedule = make_schedule(measure_schedule, self.total_epochs)
        self._loss_fn, self._train_data, self._test_data = (
            loss_fn,
            train_data,
            test_data,
        )
        self._init_state: Optional[Dict[str, torch.Tensor]] = None
        if self._measures:
            if loss_fn is None or train_data is None:
                raise InvalidParameterError(
                    f"The 'measures' parameter of {owner} needs 'loss_fn' and "
                    "'train_data' (and 'test_data' for the generalization gap)."
                )
            self._init_state = {
                k: v.detach().clone() for k, v in self._module.state_dict().items()
            }

        # state
        self._closed = False
        self._last_seen: Optional[int] = None
        self._recorded: List[int] = []
        self._skipped: List[Dict[str, Any]] = []
        self._errors: List[Dict[str, Any]] = []
        self._pending: List[Tuple[Optional[int], BaseException]] = []
        self._pending_lock = threading.Lock()
        self._rows: List[Dict[str, Any]] = []
        self._scalar_rows: List[Tuple[int, str, float]] = []
        self._config_dirty = False
        self._warned: set = set()
        self._n_scheduled = 0
        self._n_measured = 0
        self._train_time = 0.0
        self._monitor_time = 0.0
        self._last_cost = 0.0
        self._resume_last: Optional[int] = None

        self._writer: Any = None
        self._tb: Any = None
        if self._is_writer:
            self._config = self._build_config(
                seed=seed,
                schedule=schedule,
                measure_schedule=measure_schedule,
                tensorboard=tensorboard,
                user=config,
            )
            if self.logdir is not None:
                from .storage import RunWriter

                initial = dict(self._config)
                if resume:  # keep what the run already lists
                    for key in ("overhead", "skipped_epochs", "errors"):
                        initial.pop(key, None)
                self._writer = RunWriter(
                    self.logdir, initial, resume=resume, overwrite=overwrite
                )
                if resume:
                    self._resume_last = self._writer.last_epoch
                    stored = self._writer.config
                    overhead = stored.get("overhead") or {}
                    self._skipped = list(overhead.get("skipped") or [])
                    self._errors = list(stored.get("errors") or [])
            use_tb = (self.logdir is not None) if tensorboard is None else tensorboard
            if use_tb:
                self._open_tensorboard()
        self._resume_last = _broadcast(self._resume_last, self._world)

        if self._is_writer:
            self._warm_up()

        self._queue: Optional[queue.Queue] = None
        self._worker: Optional[threading.Thread] = None
        self._slots = threading.BoundedSemaphore(int(queue_size))
        if self.background and self._is_writer:
            self._queue = queue.Queue()
            self._worker = threading.Thread(
                target=self._worker_loop, name="ibmonitor-worker", daemon=True
            )
            self._worker.start()
        self._last_exit = time.perf_counter()

    # ------------------------------------------------------------------ set-up
    def _build_probes(
        self, inputs: Any, labels: Any, probes: Optional[Mapping[str, Any]]
    ) -> Dict[str, _Probe]:
        if probes is not None and (inputs is not None or labels is not None):
            raise InvalidParameterError(
                "Give the probe set either as 'inputs' and 'labels' or as 'probes', "
                "not both."
            )
        if probes is None:
            if inputs is None:
                raise InvalidParameterError(
                    "InformationMonitor needs a probe set: pass 'inputs' and "
                    "'labels' (or a DataLoader as 'inputs'), or 'probes'."
                )
            probes = {DEFAULT_PROBE: (inputs, labels)}
        if not isinstance(probes, Mapping) or not probes:
            raise InvalidParameterError(
                "The 'probes' parameter of InformationMonitor must be a non-empty "
                "dict of name -> (inputs, labels) or DataLoader."
            )
        out: Dict[str, _Probe] = OrderedDict()
        for name, spec in probes.items():
            if not isinstance(name, str) or not name:
                raise InvalidParameterError(
                    f"Probe names must be non-empty strings. Got {name!r}."
                )
            if isinstance(spec, (tuple, list)) and len(spec) == 2:
                x, y = spec
            else:
                x, y = spec, None
            x, y = _materialise(name, x, y)
            if y is None:
                raise InvalidParameterError(
                    f"The probe set {name!r} has no labels. Pass 'labels' (or "
                    "(inputs, labels) pairs, or a DataLoader yielding them)."
                )
            n = int(x.shape[0]) if x.ndim else 0
            if n < 2:
                raise InvalidParameterError(
                    f"The probe set {name!r} is empty: it has {n} samples; at least "
                    "2 are required to estimate mutual information."
                )
            y_arr = y
            if not isinstance(y_arr, torch.Tensor):
                y_arr = np.asarray(y_arr)
                if y_arr.dtype.kind not in "iub" and y_arr.dtype.kind != "f":
                    raise InvalidParameterError(
                        f"The labels of probe set {name!r} must be integer class "
                        f"labels. Got an array of dtype {y_arr.dtype}."
                    )
            try:
                yt = check_labels(y_arr, n, name=f"labels of probe {name!r}")
            except InvalidParameterError:
                raise
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(
                    f"The labels of probe set {name!r} must be integer class labels "
                    f"({exc})."
                ) from exc
            x_flat = x.reshape(n, -1)
            if not torch.is_floating_point(x_flat):
                x_flat = x_flat.to(torch.float32)
            out[name] = _Probe(
                name=name,
                x=x,
                y=yt.to(self._device),
                x_flat=x_flat.detach().to(self._device),
            )
        return out

    def _inspect_layers(self) -> Dict[str, Dict[str, Any]]:
        """Return module types, output shapes and widths (a 2-sample pass)."""
        first = next(iter(self._probes.values()))
        info: Dict[str, Dict[str, Any]] = OrderedDict()
        lazy = any(
            getattr(m, "has_uninitialized_params", lambda: False)()
            for m in self._module.modules()
        )
        shapes: Dict[str, Dict[str, Any]] = {}
        if not lazy:
            shapes = layer_shapes(
                self._module, self._layers, first.x[:2], reduce=self.reduce
            )
        for name, module in self._layers.items():
            entry = {"module": type(module).__name__}
            entry.update(shapes.get(name, {}))
            info[name] = entry
        return info

    def _build_config(
        self,
        *,
        seed: Optional[int],
        schedule: Any,
        measure_schedule: Any,
        tensorboard: Optional[bool],
        user: Optional[Mapping[str, Any]],
    ) -> Dict[str, Any]:
        import platform

        from . import __version__

        schedule_cfg = dict(self.schedule.config)
        schedule_cfg["spec"] = _describe_spec(schedule)
        if self.schedule.planned is not None:
            schedule_cfg["epochs"] = list(self.schedule.planned)
        config: Dict[str, Any] = {
            "versions": {
                "ibmonitor": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
            },
            "seed": seed,
            "model": type(self._module).__name__,
            "layers": {k: dict(v) for k, v in self._layer_info.items()},
            "activation_kinds": {
                name: activation_kind(m) for name, m in self._layers.items()
            },
            "estimators": [
                {"name": est.name, "label": label, "params": dict(est.params)}
                for label, est in self._estimators
            ],
            "probes": {
                name: {
                    "n_samples": p.n_samples,
                    "input_shape": [int(s) for s in p.x.shape[1:]],
                }
                for name, p in self._probes.items()
            },
            "schedule": schedule_cfg,
            "total_epochs": self.total_epochs,
            "recording": {
                "batch_size": self.batch_size,
                "reduce": self.reduce,
                "device": str(self._device),
                "background": self.background,
                "store_activations": self._store,
                "world_size": self._world,
            },
            "measures": [_describe_spec(m) for m in self._measures],
            "measure_options": (
                {k: _describe_spec(v) for k, v in self._measures.items()}
                if isinstance(self._measures, Mapping)
                else None
            ),
            "measure_schedule": (
                None
                if self._measure_schedule is None
                else {
                    **self._measure_schedule.config,
                    "spec": _describe_spec(measure_schedule),
                }
            ),
            "overhead": {"budget": self.overhead_budget, "skipped": []},
            "skipped_epochs": [],
            "errors": [],
        }
        if user:
            config["user"] = dict(user)
        return config

    def _open_tensorboard(self) -> None:
        if self.logdir is None:
            self._warn_once(
                "tb-nologdir", "tensorboard=True needs a 'logdir'; TensorBoard is off."
            )
            return
        try:
            from .tensorboard.writer import TensorBoardWriter

            self._tb = TensorBoardWriter(self.logdir)
            self._tb.write_layout(
                list(self._layers),
                [label for label, _ in self._estimators],
                [],
                probes=list(self._probes),
            )
        except Exception as exc:
            self._tb = None
            self._record_error(None, "tensorboard", exc)
            self._warn_once(
                "tb-open",
                f"TensorBoard summaries are off: {type(exc).__name__}: {exc}. The run "
                "store is unaffected.",
            )

    def _warm_up(self) -> None:
        """Pay one-time costs (imports, first calls) now, outside the budget.

        Runs each estimator once on a small slice of the first probe set and
        imports what TensorBoard images need; every failure here is ignored
        (the real call reports it).
        """
        started = time.perf_counter()
        first = next(iter(self._probes.values()))
        n = min(first.n_samples, 16)
        with preserve_state(self._module), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                acts = record_activations(
                    self._module,
                    self._layers,
                    first.x[:n],
                    batch_size=n,
                    reduce=self.reduce,
                    device=self._device,
                )
                t = next(iter(acts.values()))
                part = _Probe(
                    name=first.name,
                    x=first.x[:n],
                    y=first.y[:n],
                    x_flat=first.x_flat[:n],
                    ids=None if first.ids is None else first.ids[:n],
                )
                for _, est in self._estimators:
                    with contextlib.suppress(Exception):
                        est(t, part.y, x=_x_argument(est, part))
            except Exception as exc:  # the first recording reports it
                logger.debug("warm-up failed: %r", exc)
            if self._tb is not None and self._images:
                with contextlib.suppress(Exception):
                    importlib.import_module("matplotlib.figure")
                    importlib.import_module("matplotlib.backends.backend_agg")
        logger.debug("warm-up took %.3f s", time.perf_counter() - started)

    # ---------------------------------------------------------------- public
    @property
    def layers(self) -> List[str]:
        """Recorded layers, in model order (the model output last)."""
        return list(self._layers)

    @property
    def probes(self) -> List[str]:
        """Names of the probe sets."""
        return list(self._probes)

    @property
    def estimators(self) -> List[str]:
        """Labels of the estimators (the ``estimator`` column)."""
        return [label for label, _ in self._estimators]

    @property
    def recorded_epochs(self) -> List[int]:
        """Epochs whose activations were recorded so far."""
        return list(self._recorded)

    @property
    def skipped_epochs(self) -> List[Dict[str, Any]]:
        """Scheduled epochs skipped to stay in ``overhead_budget``, with reasons."""
        return [dict(s) for s in self._skipped]

    @property
    def errors(self) -> List[Dict[str, Any]]:
        """Monitor errors that did not stop training (epoch, where, message)."""
        self._drain_pending(raise_strict=False)
        return [dict(e) for e in self._errors]

    @property
    def overhead(self) -> Dict[str, float]:
        """Seconds spent in training and in the monitor so far, and their ratio."""
        ratio = self._monitor_time / self._train_time if self._train_time else math.nan
        return {
            "train_s": self._train_time,
            "monitor_s": self._monitor_time,
            "ratio": ratio,
        }

    @property
    def information(self):
        """Information estimates so far (wide DataFrame, like ``Run.information``).

        Columns: epoch, probe, layer, estimator, i_xt, i_ty, and estimator
        extras. Waits for the background worker first.
        """
        import pandas as pd

        self.flush(raise_errors=False)
        columns = ["epoch", "probe", "layer", "estimator", "i_xt", "i_ty"]
        frame = pd.DataFrame(list(self._rows))
        if frame.empty:
            return pd.DataFrame(columns=columns)
        extras = [c for c in frame.columns if c not in columns]
        return frame[columns + extras].reset_index(drop=True)

    @property
    def scalars(self):
        """Scalars so far (long DataFrame: epoch, name, value)."""
        import pandas as pd

        self.flush(raise_errors=False)
        return pd.DataFrame(self._scalar_rows, columns=["epoch", "name", "value"])

    @property
    def run(self):
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
        """Handle the end of an epoch: store scalars, record if scheduled.

        Parameters
        ----------
        epoch : int
            The 0-based epoch that just ended; epochs must increase.
        **scalars : float
            Scalars of the epoch (``train_loss=...``, ``test_acc=...``); floats,
            numpy or 0-d tensor scalars. Stored for every call.

        Raises
        ------
        MonitorError
            Only with ``strict=True``, for any monitor error (also one of the
            background worker since the last call).
        """
        entered = time.perf_counter()
        self._train_time += entered - self._last_exit
        try:
            with preserve_state(self._module):
                self._drain_pending(raise_strict=True)
                self._epoch_end(epoch, scalars)
        except MonitorError:
            if self.strict:
                raise
            self._report(epoch, "on_epoch_end", sys.exc_info()[1])
        except Exception as exc:
            if self.strict:
                raise MonitorError(
                    f"The monitor failed at epoch {epoch}: {type(exc).__name__}: {exc}"
                ) from exc
            self._report(epoch, "on_epoch_end", exc)
        finally:
            self._last_exit = time.perf_counter()
            self._monitor_time += self._last_exit - entered

    def flush(self, *, raise_errors: bool = True) -> None:
        """Wait until the background worker has written everything queued.

        Parameters
        ----------
        raise_errors : bool, default=True
            With ``strict=True``, raise the worker's errors; otherwise warn.
        """
        worker = self._worker
        if self._queue is not None and worker is not None and worker.is_alive():
            self._queue.join()
        self._drain_pending(raise_strict=raise_errors)
        if self._config_dirty:
            self._write_config_updates()

    def close(self, status: str = "finished") -> None:
        """Flush everything, close the run (``status`` in ``run.json``) and TensorBoard.

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
        self._closed = True
        if status not in ("finished", "crashed"):
            raise InvalidParameterError(
                "The 'status' parameter of InformationMonitor.close must be one of "
                f"['crashed', 'finished']. Got {status!r} instead."
            )
        failure: Optional[BaseException] = None
        try:
            if self._queue is not None and self._worker is not None:
                self._queue.put(None)
                self._worker.join()
            try:
                self._drain_pending(raise_strict=True)
            except MonitorError as exc:
                failure = exc
                status = "crashed"
            self._write_config_updates()
        finally:
            if self._tb is not None:
                last = self._rows[-1]["epoch"] if self._rows else None
                if self._images and last is not None and last != self._image_epoch:
                    self._write_plane_image(last)
                self._tb_call("close")
            if self._writer is not None:
                self._writer.close(status=status)
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
            self._warn_once(
                "resume",
                f"Epoch {epoch} is already in the resumed run (last stored epoch "
                f"{self._resume_last}); it is ignored. Continue at epoch "
                f"{self._resume_last + 1}.",
            )
            return
        if self._last_seen is not None and epoch <= self._last_seen:
            raise InvalidParameterError(
                f"on_epoch_end got epoch {epoch} after epoch {self._last_seen}; epochs "
                "must increase. The call is ignored."
            )
        self._last_seen = epoch
        values = self._clean_scalars(epoch, scalars)

        info = bool(self.schedule(epoch))
        meas = False
        if self._measures:
            meas = (
                info
                if self._measure_schedule is None
                else bool(self._measure_schedule(epoch))
            )
        if (info or meas) and self.overhead_budget is not None:
            keep, reason = self._budget_decision(epoch)
            keep, reason = _broadcast((keep, reason), self._world)
            if not keep:
                self._skipped.append({"epoch": epoch, "reason": reason})
                self._config_dirty = True
                logger.info("epoch %d skipped: %s", epoch, reason)
                info = meas = False
        if info or meas:
            self._n_scheduled += 1

        started = time.perf_counter()
        job = _Job(epoch=epoch, scalars=values)
        if info:
            job.activations, job.bad_layers = self._record(epoch)
            self._recorded.append(epoch)
        if meas and self._is_writer:
            job.scalars.update(self._compute_measures(epoch))
        if meas:
            self._n_measured += 1
        if self._is_writer:
            self._submit(job)
            if info and self._config_dirty:
                self._write_config_updates()
        if info or meas:
            self._last_cost = time.perf_counter() - started
            self._say(
                f"epoch {epoch}: recorded {len(self._layers)} layers"
                + (" (estimating in background)" if self.background else "")
                + f" in {self._last_cost:.3g} s"
            )

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
                self._fail(epoch, "scalars", error, in_worker=False)
        return values

    def _budget_decision(self, epoch: int) -> Tuple[bool, str]:
        if self._n_scheduled == 0:
            return True, "first scheduled epoch"
        last = None
        if self.total_epochs is not None:
            last = self.total_epochs - 1
        elif self.schedule.planned:
            last = self.schedule.planned[-1]
        if last is not None and epoch >= last:
            return True, "last epoch"
        allowed = self.overhead_budget * self._train_time
        expected = self._monitor_time + self._last_cost
        if expected > allowed:
            return False, (
                f"overhead budget: monitor time {self._monitor_time:.3g} s + expected "
                f"{self._last_cost:.3g} s > {self.overhead_budget:g} x training time "
                f"{self._train_time:.3g} s"
            )
        return True, "within budget"

    def _record(
        self, epoch: int
    ) -> Tuple[Optional[Dict[str, Dict[str, torch.Tensor]]], Dict[str, Dict[str, str]]]:
        """Record every probe; on rank 0 return the activations and bad layers."""
        result: Dict[str, Dict[str, torch.Tensor]] = OrderedDict()
        bad: Dict[str, Dict[str, str]] = {}
        for name, probe in self._probes.items():
            x = probe.x
            if self._world > 1:
                from .distributed import gather_to_rank_zero, shard_slice

                x = x[shard_slice(probe.n_samples, self._rank, self._world)]
            if x.shape[0] > 0:
                acts = record_activations(
                    self._module,
                    self._layers,
                    x,
                    batch_size=self.batch_size,
                    reduce=self.reduce,
                    device=self._device,
                )
            else:
                acts = self._empty_activations()
            if self._world > 1:
                acts = gather_to_rank_zero(dict(acts))
                if acts is None:
                    continue
            probe_bad: Dict[str, str] = {}
            for layer, t in acts.items():
                finite = torch.isfinite(t)
                if not bool(finite.all()):
                    n_bad = int((~finite).sum())
                    n_nan = int(torch.isnan(t).sum())
                    what = (
                        "NaN" if n_nan == n_bad else ("Inf" if not n_nan else "NaN/Inf")
                    )
                    message = (
                        f"Activations of layer {layer!r} at epoch {epoch} (probe "
                        f"{name!r}) contain {what} ({n_bad} of {t.numel()} values). "
                        "Training may have diverged; this layer's information rows "
                        "for this epoch are stored as NaN."
                    )
                    probe_bad[layer] = message
                    logger.warning(message)
                    warnings.warn(message, MonitorWarning, stacklevel=4)
            result[name] = acts
            bad[name] = probe_bad
        if not self._is_writer:
            return None, {}
        return result, bad

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

    def _compute_measures(self, epoch: int) -> Dict[str, float]:
        from .measures import compute_measures

        spec = self._measures
        if self._measure_schedule is None and self._expensive:
            last = self.total_epochs is not None and epoch >= self.total_epochs - 1
            if not (self._n_measured % EXPENSIVE_EVERY == 0 or last):
                spec = self._expensive[0]  # the cheap ones only
        if not spec:
            return {}
        try:
            with preserve_state(self._module):
                values = compute_measures(
                    spec,
                    self._module,
                    self._loss_fn,
                    self._train_data,
                    self._test_data,
                    self._init_state,
                    on_error="raise" if self.strict else "warn",
                )
        except Exception as exc:
            if self.strict:
                raise
            self._report(epoch, "measures", exc)
            return {}
        out: Dict[str, float] = {}
        for name, value in dict(values).items():
            try:
                out[str(name)] = _scalar(value)
            except (TypeError, ValueError):
                logger.warning("measure %r gave a non-numeric value %r", name, value)
        return out

    # ----------------------------------------------------------- estimation
    def _submit(self, job: _Job) -> None:
        if self._queue is None:
            self._run_job(job, in_worker=False)
            return
        if self._worker is None or not self._worker.is_alive():
            raise MonitorError("The background worker is not running.")
        if job.activations is not None:
            self._slots.acquire()  # training waits rather than memory growing
            job.holds_slot = True
        self._queue.put(job)

    def _worker_loop(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._run_job(job, in_worker=True)
            except BaseException as exc:  # reported at the next call
                logger.error("ibmonitor worker failed at epoch %s: %r", job.epoch, exc)
                with self._pending_lock:
                    self._pending.append((job.epoch, exc))
            finally:
                if job is not None and job.holds_slot:
                    self._slots.release()
                self._queue.task_done()

    def _run_job(self, job: _Job, *, in_worker: bool) -> None:
        epoch = job.epoch
        rows: List[Dict[str, Any]] = []
        if job.activations is not None:
            for probe_name, acts in job.activations.items():
                probe = self._probes[probe_name]
                bad = job.bad_layers.get(probe_name, {})
                for layer, t in acts.items():
                    for label, est in self._estimators:
                        base = {
                            "epoch": epoch,
                            "probe": probe_name,
                            "layer": layer,
                            "estimator": label,
                        }
                        if layer in bad:
                            rows.append({**base, "i_xt": math.nan, "i_ty": math.nan})
                            continue
                        try:
                            res = est(t, probe.y, x=_x_argument(est, probe))
                            values = res.as_dict()
                            values.pop("estimator", None)
                        except Exception as exc:
                            self._fail(
                                epoch,
                                f"estimator {label!r} on layer {layer!r}",
                                exc,
                                in_worker,
                            )
                            values = {"i_xt": math.nan, "i_ty": math.nan}
                        rows.append({**base, **values})
        if self._writer is not None:
            try:
                if rows:
                    self._writer.append_information(rows)
                if job.scalars:
                    self._writer.append_scalars(epoch, job.scalars)
                if job.activations is not None and self._store is not None:
                    self._save_activations(epoch, job.activations)
            except Exception as exc:
                self._fail(epoch, "run store", exc, in_worker)
        self._rows.extend(rows)
        self._scalar_rows.extend((epoch, k, v) for k, v in job.scalars.items())
        if self._tb is not None:
            if rows:
                self._tb_call("write_information", epoch, rows)
            if job.scalars:
                self._tb_call("write_scalars", epoch, job.scalars)
            if job.activations is not None:
                for probe_name, acts in job.activations.items():
                    for layer, t in acts.items():
                        kind = activation_kind(self._layers[layer])
                        self._tb_call(
                            "write_activations",
                            epoch,
                            layer,
                            t.cpu().numpy(),
                            kind,
                            probe=probe_name,
                        )
            if rows and self._image_due():
                self._write_plane_image(epoch)

    def _image_due(self) -> bool:
        if self._images is True:
            return True
        if self._images == "log":
            count = len({row["epoch"] for row in self._rows})
            return count & (count - 1) == 0  # 1, 2, 4, 8, ...
        return False

    def _write_plane_image(self, epoch: int) -> None:
        import pandas as pd

        self._image_epoch = epoch
        self._tb_call("write_plane_image", epoch, pd.DataFrame(self._rows))

    def _save_activations(
        self, epoch: int, activations: Dict[str, Dict[str, torch.Tensor]]
    ) -> None:
        arrays = {
            probe: {layer: t.cpu().numpy() for layer, t in acts.items()}
            for probe, acts in activations.items()
        }
        labels = {name: self._probes[name].y.cpu().numpy() for name in activations}
        inputs = {name: self._probes[name].x_flat.cpu().numpy() for name in activations}
        self._writer.save_activations(
            epoch,
            arrays,
            labels=labels,
            inputs=inputs,
            float16=self._store == "float16",
        )

    # --------------------------------------------------------------- errors
    def _fail(
        self, epoch: Optional[int], where: str, exc: BaseException, in_worker: bool
    ):
        """Handle an error of estimation: raise (strict, synchronous) or report."""
        if in_worker:
            logger.error("ibmonitor: %s failed at epoch %s: %r", where, epoch, exc)
            with self._pending_lock:
                self._pending.append((epoch, _Located(where, exc)))
            return
        if self.strict:
            raise MonitorError(
                f"{where} failed at epoch {epoch}: {type(exc).__name__}: {exc}"
            ) from exc
        self._report(epoch, where, exc)

    def _report(self, epoch: Optional[int], where: str, exc: BaseException) -> None:
        """Log, warn and remember an error that does not stop training."""
        if isinstance(exc, _Located):
            where, exc = exc.where, exc.error
        message = f"{type(exc).__name__}: {exc}"
        logger.error(
            "ibmonitor: %s failed at epoch %s: %s",
            where,
            epoch,
            message,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        warnings.warn(
            f"The monitor's {where} failed at epoch {epoch} ({message}); training "
            "goes on (pass strict=True to raise).",
            MonitorWarning,
            stacklevel=4,
        )
        self._record_error(epoch, where, exc)

    def _record_error(
        self, epoch: Optional[int], where: str, exc: BaseException
    ) -> None:
        self._errors.append(
            {"epoch": epoch, "where": where, "message": f"{type(exc).__name__}: {exc}"}
        )
        self._config_dirty = True

    def _drain_pending(self, *, raise_strict: bool) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for i, (epoch, exc) in enumerate(pending):
            if self.strict and raise_strict:
                for later_epoch, later in pending[i + 1 :]:
                    self._record_error(later_epoch, "background worker", later)
                where, err = (
                    (exc.where, exc.error)
                    if isinstance(exc, _Located)
                    else ("background worker", exc)
                )
                self._record_error(epoch, where, err)
                raise MonitorError(
                    f"The monitor's {where} failed at epoch {epoch}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            self._report(
                epoch,
                exc.where if isinstance(exc, _Located) else "background worker",
                exc,
            )

    def _write_config_updates(self) -> None:
        self._config_dirty = False
        if self._writer is None or self._writer.closed:
            return
        try:
            overhead = {
                "budget": self.overhead_budget,
                "skipped": list(self._skipped),
                "train_s": round(self._train_time, 6),
                "monitor_s": round(self._monitor_time, 6),
            }
            self._writer.update_config(
                skipped_epochs=[s["epoch"] for s in self._skipped],
                overhead=overhead,
                errors=list(self._errors),
            )
        except Exception as exc:  # pragma: no cover - disk failures
            logger.error("ibmonitor: could not update run.json: %r", exc)

    def _tb_call(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self._tb, method)(*args, **kwargs)
        except Exception as exc:
            logger.error("ibmonitor: TensorBoard %s failed: %r", method, exc)
            self._errors.append(
                {
                    "epoch": args[0] if args and isinstance(args[0], int) else None,
                    "where": f"tensorboard.{method}",
                    "message": f"{type(exc).__name__}: {exc}",
                }
            )
            self._config_dirty = True
            self._warn_once(
                f"tb-{method}",
                f"TensorBoard {method} failed ({type(exc).__name__}: {exc}); the run "
                "store is unaffected and training goes on.",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(message)
        warnings.warn(message, MonitorWarning, stacklevel=4)

    def _say(self, message: str) -> None:
        logger.info(message)
        if self.verbose:
            sys.stderr.write(f"[ibmonitor] {message}\n")
            sys.stderr.flush()


class _Located(Exception):
    """An error of the worker, with where it happened."""

    def __init__(self, where: str, error: BaseException):
        super().__init__(f"{where}: {error}")
        self.where = where
        self.error = error


# ------------------------------------------------------------------- helpers
def _world_info() -> Tuple[int, int]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0, 1
    from .distributed import world_info

    return world_info()


def _broadcast(obj: Any, world: int) -> Any:
    if world <= 1:
        return obj
    from .distributed import broadcast_object

    return broadcast_object(obj)


def _materialise(name: str, x: Any, y: Any) -> Tuple[torch.Tensor, Any]:
    """Turn a probe's inputs (tensor, array, DataLoader) into one tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach(), y
    if isinstance(x, np.ndarray):
        return as_tensor(x, name=f"inputs of probe {name!r}"), y
    if x is None:
        raise InvalidParameterError(f"The probe set {name!r} has no inputs.")
    if hasattr(x, "__iter__") and not isinstance(x, (str, bytes, Mapping)):
        xs: List[torch.Tensor] = []
        ys: List[torch.Tensor] = []
        for batch in x:
            if isinstance(batch, (tuple, list)):
                if len(batch) >= 2 and y is None:
                    ys.append(torch.as_tensor(batch[1]))
                batch = batch[0]
            xs.append(torch.as_tensor(batch).detach())
        if not xs:
            raise InvalidParameterError(
                f"The probe set {name!r} is empty: its loader yielded no batch."
            )
        if y is None and ys:
            if len(ys) != len(xs):
                raise InvalidParameterError(
                    f"Some batches of probe set {name!r} have labels and some not."
                )
            y = torch.cat(ys)
        return torch.cat(xs), y
    raise InvalidParameterError(
        f"The inputs of probe set {name!r} must be a tensor, an array or a "
        f"DataLoader. Got {type(x).__name__} instead."
    )


def _build_estimators(spec: Any) -> List[Tuple[str, Any]]:
    """Turn ``estimators=`` into ``[(label, Estimator), ...]``."""
    if isinstance(spec, (str, _estimators.Estimator)):
        spec = [spec]
    items: List[Any] = []
    if isinstance(spec, Mapping):
        for name, params in spec.items():
            if params is not None and not isinstance(params, Mapping):
                raise InvalidParameterError(
                    "The 'estimators' parameter of InformationMonitor must map "
                    f"estimator names to dicts of parameters. Got {params!r} for "
                    f"{name!r}."
                )
            items.append(_estimators.get(name, **dict(params or {})))
    else:
        try:
            entries = list(spec)
        except TypeError:
            entries = [spec]
        for entry in entries:
            if isinstance(entry, str):
                items.append(_estimators.get(entry))
            elif isinstance(entry, _estimators.Estimator) or (
                callable(entry) and hasattr(entry, "name")
            ):
                items.append(entry)
            else:
                raise InvalidParameterError(
                    "The 'estimators' parameter of InformationMonitor must hold "
                    "estimator names, Estimator objects (ibmonitor.estimators.get) "
                    f"or a dict of name -> params. Got {entry!r}."
                )
    if not items:
        raise InvalidParameterError(
            "The 'estimators' parameter of InformationMonitor is empty; give at "
            f"least one of {_estimators.available()}."
        )
    names = [e.name for e in items]
    labels = []
    for est in items:
        if names.count(est.name) > 1:
            describe = getattr(est, "describe", None)
            labels.append(describe() if callable(describe) else repr(est))
        else:
            labels.append(est.name)
    if len(set(labels)) != len(labels):
        raise InvalidParameterError(
            f"The 'estimators' parameter of InformationMonitor lists the same "
            f"estimator twice: {labels}."
        )
    for est in items:
        if getattr(est, "inputs", "ids") not in _INPUT_KINDS:
            raise InvalidParameterError(
                f"Estimator {est.name!r} has inputs={est.inputs!r}; expected one of "
                f"{list(_INPUT_KINDS)}."
            )
    return list(zip(labels, items))


def _x_argument(est: Any, probe: _Probe) -> Optional[torch.Tensor]:
    kind = getattr(est, "inputs", "ids")
    if kind == "ids":
        if probe.ids is None:
            probe.ids = _estimators.input_ids(probe.x)
        return probe.ids
    if kind == "values":
        return probe.x_flat
    return None


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError("not a scalar")
        value = value.detach().cpu().item()
    elif isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError("not a scalar")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError("not a real number")
    return float(value)


def _split_measures(measures: Any) -> Tuple[Any, Any]:
    """Return ``(all measures, [cheap measures])`` in the form given."""
    from .measures import measure_cost

    if isinstance(measures, (str, Mapping)) or callable(measures):
        measures = measures if isinstance(measures, Mapping) else [measures]
    if isinstance(measures, Mapping):
        full = dict(measures)
        cheap: Any = {
            k: v
            for k, v in full.items()
            if measure_cost(v if callable(v) else k) == "cheap"
        }
    else:
        full = list(measures)
        cheap = [m for m in full if measure_cost(m) == "cheap"]
    expensive = len(cheap) < len(full)
    return full, ([cheap] if expensive else [])


def _describe_spec(spec: Any) -> Any:
    """Describe a schedule or measure argument in JSON-friendly terms."""
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
