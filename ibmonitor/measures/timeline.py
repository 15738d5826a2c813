"""Measures on the training timeline: :func:`compute_measures` and :class:`MeasureSet`.

:func:`compute_measures` runs named measures (see :mod:`.registry`) and plain
functions once and returns one flat ``{name: float}`` dict for the run's
scalars table and TensorBoard. :class:`MeasureSet` is the part an
:class:`~ibmonitor.InformationMonitor` composes: the measures of a run with
their loss, data and schedule, computed at the epochs it picks.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .._batches import check_label_key
from .._state import preserve_state
from .._validation import check_param
from ..exceptions import InvalidParameterError, MonitorWarning
from ..schedules import PlannedSchedule, make_schedule
from ..structures import OutputKey
from .registry import Measure, MeasureContext, resolve_measures, scalar_values

__all__ = ["MeasureSet", "compute_measures"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Without a schedule, a MeasureSet runs its expensive measures on every 4th call.
EXPENSIVE_EVERY = 4


def _run(
    pairs: Sequence[Tuple[Measure, Dict[str, Any]]],
    context: MeasureContext,
    *,
    on_error: str,
    epoch: Optional[int] = None,
    errors: Optional[List[Tuple[str, BaseException]]] = None,
    histograms: Optional[Dict[str, np.ndarray]] = None,
) -> Dict[str, float]:
    """Run each measure; merge their float values (NaN and non-numbers left out).

    A measure's numpy arrays (``pairing/<layer>/mu``: a distribution, not a
    scalar) go to ``histograms`` when given, else they are left out.
    """
    result: Dict[str, float] = {}
    for measure, opts in pairs:
        start = time.perf_counter()
        try:
            raw = dict(measure(context, **opts))
            arrays = {k: v for k, v in raw.items() if isinstance(v, np.ndarray)}
            if histograms is not None:
                histograms.update(arrays)
            values = scalar_values(
                {k: v for k, v in raw.items() if k not in arrays}, owner=measure.name
            )
        except Exception as exc:
            if on_error == "raise":
                raise
            when = "" if epoch is None else f" at epoch {epoch}"
            warnings.warn(
                f"Measure {measure.name!r} failed{when} and is left out: "
                f"{type(exc).__name__}: {exc}",
                MonitorWarning,
                stacklevel=3,
            )
            logger.warning("measure %r failed%s", measure.name, when, exc_info=True)
            if errors is not None:
                errors.append((measure.name, exc))
            continue
        result.update(values)
        logger.debug(
            "measure %r took %.3f s", measure.name, time.perf_counter() - start
        )
    return result


def _check_keys(output_key: Any, label_key: Any, owner: str) -> None:
    if output_key is not None and (
        isinstance(output_key, bool) or not isinstance(output_key, (int, str))
    ):
        raise InvalidParameterError(
            f"The 'output_key' parameter of {owner} must be None, an int or a str. "
            f"Got {output_key!r} instead."
        )
    check_label_key(label_key, owner)


def compute_measures(
    measures: Any,
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Any,
    test_data: Any = None,
    init_state: Any = None,
    *,
    options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    on_error: str = "raise",
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> Dict[str, float]:
    """Compute measures and return them as one flat dict of scalars.

    Parameters
    ----------
    measures : str, callable, Measure, sequence of them, or dict
        Names from :func:`~ibmonitor.measures.available_measures` and/or
        functions ``f(model, loss_fn, train_data, test_data) -> float or
        dict``. A dict maps a name to its options (``{"hessian": {"k": 3}}``)
        or to a function.
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    train_data : tuple (inputs, targets) or iterable of batches
        Training data: the Hessian, sharpness and PAC-Bayes measures use it.
    test_data : tuple (inputs, targets) or iterable of batches, optional
        Needed by ``"gap"``.
    init_state : dict or Module, optional
        Parameters at initialization (``copy.deepcopy(model.state_dict())``):
        distance to init in ``"norms"``, the prior's mean in ``"pac_bayes"``.
    options : dict of str to dict, optional
        Per-measure keyword options, passed to the function behind the name
        (e.g. ``{"hessian": {"k": 1, "max_batches": 2}, "sharpness": {"eps":
        5e-4}}``). ``"hessian"`` takes :func:`hessian_eigenvalues`'s options
        plus ``n_samples`` (trace, default 20 here) and ``trace`` (bool).
    on_error : {"raise", "warn"}, default="raise"
        With ``"warn"``, a failing measure emits a :class:`MonitorWarning` and
        is left out; the others still run.
    output_key : None, int or str, default=None
        Which element of the model's output is the output, for every measure
        that evaluates the model (see
        :func:`ibmonitor.structures.select_output`): ``None`` takes a tensor
        as is and the ``logits`` of a dict or Hugging Face ``ModelOutput``;
        an int indexes a tuple; a str names a key or attribute. Plain
        functions do not get it.
    label_key : str, optional
        Key of the targets in dict batches of the data; default ``"labels"``,
        else ``"label"``.

    Returns
    -------
    scalars : dict of str to float
        Flat names. ``gap``: ``gap/loss`` (test - train loss), ``gap/acc``
        (train - test accuracy), ``gap/train_loss``, ``gap/test_loss``,
        ``gap/train_acc``, ``gap/test_acc``. ``hessian``:
        ``hessian/top_eigenvalue`` (``hessian/eigenvalue_2``... for ``k > 1``),
        ``hessian/trace``, ``hessian/trace_stderr``; with ``per_layer``
        ``hessian/<layer>/...``. ``sharpness``: ``sharpness/worst_case``.
        ``expected_sharpness``: ``sharpness/expected``,
        ``sharpness/expected_stderr``. ``pac_bayes``: ``pac_bayes/sigma``,
        ``pac_bayes/flatness``, ``pac_bayes/bound``, ``pac_bayes/kl``.
        ``norms``: ``norms/<layer>/frobenius``, ``.../spectral``,
        ``.../distance_to_init`` (with ``init_state``), ``.../spectral_fft``
        (with ``exact_conv``), ``norms/total/frobenius``,
        ``norms/total/distance_to_init``, ``norms/total/log_spectral_sum``,
        ``norms/total/path``, ``norms/total/n_params``. A function ``f``:
        ``<f.__name__>`` for a float, ``<f.__name__>/<key>`` for a dict. NaN
        values (accuracy of a regression model, a distance without
        ``init_state``) and non-numeric values are left out.

    Raises
    ------
    InvalidParameterError
        An unknown measure or option, a measure listed twice, options for a
        measure not listed; with ``on_error="raise"``, whatever a measure
        raises.

    Notes
    -----
    Every measure leaves the model exactly as found (user functions too: they
    run inside :func:`~ibmonitor.measures.preserve_state` with
    ``parameters=True``). Cost classes: :func:`~ibmonitor.measures.measure_cost`;
    measured costs: docs/measures.md.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> values = compute_measures(["gap", "norms"], model,
    ...                           torch.nn.CrossEntropyLoss(), (x, y), (x, y))
    >>> values["gap/loss"]
    0.0
    """
    check_param(
        on_error,
        "on_error",
        "compute_measures",
        kind="option",
        options=("raise", "warn"),
    )
    _check_keys(output_key, label_key, "compute_measures")
    pairs = resolve_measures(measures, options)
    context = MeasureContext(
        model, loss_fn, train_data, test_data, init_state, output_key, label_key
    )
    return _run(pairs, context, on_error=on_error)


# ---------------------------------------------------------------- MeasureSet ---
def _describe(value: Any) -> Any:
    """Describe an option, schedule or measure argument in JSON-ready terms."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)})"
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, nn.Module):
        return type(value).__name__
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        return repr(value)


class MeasureSet:
    """The measures of a monitored run, with their loss, data and schedule.

    Parameters
    ----------
    measures : str, callable, Measure, sequence of them, or dict
        As in :func:`compute_measures`: registry names (``"gap"``,
        ``"norms"``, ``"hessian"``, ``"sharpness"``, ``"expected_sharpness"``,
        ``"pac_bayes"``, or one added with
        :func:`~ibmonitor.measures.register_measure`), plain functions
        ``f(model, loss_fn, train_data, test_data) -> float or dict``, or a dict
        ``{name: options}`` (``{name: function}`` names a function).
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    train_data : tuple (inputs, targets) or iterable of batches
        Training data of the measures.
    test_data : tuple (inputs, targets) or iterable of batches, optional
        Held-out data; required by ``"gap"``.
    schedule : same as the monitor's ``schedule``, optional
        When to measure (see :func:`ibmonitor.schedules.make_schedule`); then
        every measure runs at each scheduled epoch. Default: at the epochs the
        information is recorded, expensive measures thinned (below).
    expensive_every : int, default=4
        Without a schedule, expensive measures run on the 1st call of
        :meth:`compute`, then on every ``expensive_every``-th, and on the last
        (``last=True``); cheap ones on every call.
    output_key : None, int or str, default=None
        Which element of the model's output is the output, for every measure
        that evaluates the model (see
        :func:`ibmonitor.structures.select_output`): ``None`` takes a tensor
        as is and the ``logits`` of a dict or Hugging Face ``ModelOutput``;
        an int indexes a tuple; a str names a key or attribute. Plain
        functions do not get it.
    label_key : str, optional
        Key of the targets in dict batches of the data; default ``"labels"``,
        else ``"label"``.

    Attributes
    ----------
    names : list of str
        The measures, in the order given.
    last_errors : list of (str, Exception)
        The measures that failed in the last :meth:`compute` (``strict=False``).

    Raises
    ------
    InvalidParameterError
        No measures, an unknown measure or option, a missing ``loss_fn`` or
        ``train_data``, ``test_data`` missing for a measure that needs it, a
        bad ``schedule`` or ``expensive_every``.

    Notes
    -----
    Events: :meth:`bind` once before training (validates the model, takes the
    initial parameters that ``norms`` and ``pac_bayes`` compare with, plans the
    schedule); :meth:`due` at each epoch end; :meth:`compute` when due.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> ms = MeasureSet(["gap", "norms"], loss_fn=torch.nn.CrossEntropyLoss(),
    ...                 train_data=(x, y), test_data=(x, y))
    >>> ms.bind(model, total_epochs=10)
    >>> ms.due(0, recorded=True), ms.due(1, recorded=False)
    (True, False)
    >>> ms.compute(model, 0)["gap/loss"]
    0.0
    """

    def __init__(
        self,
        measures: Any,
        *,
        loss_fn: Optional[LossFn],
        train_data: Any,
        test_data: Any = None,
        schedule: Any = None,
        expensive_every: int = EXPENSIVE_EVERY,
        output_key: OutputKey = None,
        label_key: Optional[str] = None,
    ) -> None:
        owner = "MeasureSet"
        _check_keys(output_key, label_key, owner)
        self._pairs = [] if measures is None else resolve_measures(measures)
        if not self._pairs:
            raise InvalidParameterError(
                f"No measures: the 'measures' parameter of {owner} is empty. Pass "
                "names such as ['gap', 'norms'] or functions."
            )
        if loss_fn is None or not callable(loss_fn):
            raise InvalidParameterError(
                f"The 'loss_fn' parameter of {owner} must be a function "
                "loss_fn(output, target) -> scalar tensor; the measures evaluate "
                f"it. Got {type(loss_fn).__name__} instead."
            )
        if train_data is None:
            raise InvalidParameterError(
                f"The 'train_data' parameter of {owner} is required: a pair "
                "(inputs, targets) or a DataLoader of the training data."
            )
        given = {"loss_fn": loss_fn, "train_data": train_data, "test_data": test_data}
        for field_name, value in given.items():
            needing = [m.name for m, _ in self._pairs if field_name in m.requires]
            if value is None and needing:
                raise InvalidParameterError(
                    f"The {needing} measure(s) of {owner} need the '{field_name}' "
                    "parameter, which is None."
                )
        check_param(expensive_every, "expensive_every", owner, kind="int", low=1)
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.test_data = test_data
        self.expensive_every = int(expensive_every)
        self.output_key = output_key
        self.label_key = label_key
        self._schedule_spec = schedule
        self._schedule: Optional[PlannedSchedule] = (
            None if schedule is None else make_schedule(schedule)  # validates it
        )
        self._init: Optional[Dict[str, torch.Tensor]] = None
        self._bound = False
        self._n_calls = 0
        self.last_errors: List[Tuple[str, BaseException]] = []
        #: Distributions the last :meth:`compute` gave (``{name: ndarray}``,
        #: e.g. ``pairing/<layer>/mu``), which the monitor draws as histograms.
        self.last_histograms: Dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ properties
    @property
    def names(self) -> List[str]:
        """The measures' names, in the order given."""
        return [m.name for m, _ in self._pairs]

    @property
    def schedule(self) -> Optional[PlannedSchedule]:
        """The measure schedule (planned by :meth:`bind`), or None."""
        return self._schedule

    @property
    def init_state(self) -> Optional[Dict[str, torch.Tensor]]:
        """The state dict taken by :meth:`bind` (None before)."""
        return self._init

    # ----------------------------------------------------------------- events
    def bind(self, model: nn.Module, total_epochs: Optional[int] = None) -> None:
        """Attach to ``model`` before training.

        Takes a copy of ``model.state_dict()`` (the initial parameters of
        ``norms`` and ``pac_bayes``), plans the schedule over ``total_epochs``
        and restarts the count of :meth:`compute` calls.

        Parameters
        ----------
        model : Module
        total_epochs : int, optional
            Number of epochs of the run, when known.

        Raises
        ------
        InvalidParameterError
            ``model`` is not a Module or ``total_epochs`` not a positive int.
        """
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(
                "The 'model' parameter of MeasureSet.bind must be a torch.nn.Module. "
                f"Got {type(model).__name__} instead."
            )
        if self._schedule_spec is not None:
            self._schedule = make_schedule(self._schedule_spec, total_epochs)
        elif total_epochs is not None:
            check_param(
                total_epochs, "total_epochs", "MeasureSet.bind", kind="int", low=1
            )
        self._init = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._bound = True
        self._n_calls = 0

    def due(self, epoch: int, recorded: bool) -> bool:
        """Whether to measure at ``epoch``.

        ``schedule(epoch)`` when a schedule was given, else ``recorded``
        (whether the information schedule picked the epoch).
        """
        if self._schedule is not None:
            return bool(self._schedule(epoch))
        return bool(recorded)

    def compute(
        self,
        model: nn.Module,
        epoch: int,
        *,
        strict: bool = False,
        last: bool = False,
        activations: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
        labels: Optional[Mapping[str, torch.Tensor]] = None,
    ) -> Dict[str, float]:
        """Compute the measures due at this call; return flat float scalars.

        Without a schedule, cheap measures run on every call and expensive ones
        on the 1st, every ``expensive_every``-th and the ``last`` call; with a
        schedule every measure runs on every call. The model is left exactly
        as found.

        Parameters
        ----------
        model : Module
            The model given to :meth:`bind`.
        epoch : int
            The epoch, for messages.
        strict : bool, default=False
            Raise a measure's error; else warn (:class:`MonitorWarning` naming
            the measure and the epoch), leave it out and keep the others.
        last : bool, default=False
            The last epoch of the run: run the expensive measures too.
        activations, labels : dict, optional
            The epoch's recorded activations ``{probe: {layer: Tensor}}`` and
            probe labels ``{probe: Tensor}``, for the measures that read them
            (``separation``, ``geometry``); they return nothing without.

        Returns
        -------
        scalars : dict of str to float
            See :func:`compute_measures`; NaN and non-numeric values left out.

        Raises
        ------
        RuntimeError
            Called before :meth:`bind`.
        """
        if not self._bound:
            raise RuntimeError(
                "MeasureSet.compute was called before MeasureSet.bind(model); bind "
                "it before training so the initial parameters are known."
            )
        thin = self._schedule is None
        expensive = (not thin) or last or self._n_calls % self.expensive_every == 0
        self._n_calls += 1
        pairs = [(m, o) for m, o in self._pairs if expensive or m.cost != "expensive"]
        self.last_errors = []
        self.last_histograms = {}
        context = MeasureContext(
            model,
            self.loss_fn,
            self.train_data,
            self.test_data,
            self._init,
            self.output_key,
            self.label_key,
            activations,
            labels,
        )
        with preserve_state(model):
            return _run(
                pairs,
                context,
                on_error="raise" if strict else "warn",
                epoch=epoch,
                errors=self.last_errors,
                histograms=self.last_histograms,
            )

    def describe(self) -> Dict[str, Any]:
        """Return a JSON-ready description (for ``run.json``).

        Keys: ``names``, ``options`` (per measure, with defaults), ``costs``,
        ``schedule`` (the schedule's config and ``spec``, or None),
        ``expensive_every``, ``output_key`` and ``label_key``.
        """
        schedule = None
        if self._schedule is not None:
            schedule = {
                **self._schedule.config,
                "spec": _describe(self._schedule_spec),
            }
        return {
            "names": self.names,
            "options": {m.name: _describe(o) for m, o in self._pairs},
            "costs": {m.name: m.cost for m, _ in self._pairs},
            "schedule": schedule,
            "expensive_every": self.expensive_every,
            "output_key": self.output_key,
            "label_key": self.label_key,
        }

    def __repr__(self) -> str:
        return f"MeasureSet({self.names!r}, expensive_every={self.expensive_every})"
