"""The measure registry: a name, a cost class, default options and one function.

A measure is a function ``fn(context, **options) -> {flat_name: float}`` that
reads the model, loss and data from a :class:`MeasureContext` and returns its
scalars already flat (``"gap/loss"``, ``"hessian/top_eigenvalue"``...).
:func:`register_measure` files it under a name with a cost class; from then on
the name works in :func:`~ibmonitor.measures.compute_measures` and
:class:`~ibmonitor.measures.MeasureSet` like the built-ins (``gap``, ``norms``,
``hessian``, ``sharpness``, ``expected_sharpness``, ``pac_bayes``), which are
registered the same way, each next to its function.

>>> from ibmonitor.measures import register_measure
>>> @register_measure("weight_norm", cost="cheap")  # doctest: +SKIP
... def weight_norm(context, *, squared=False):
...     total = sum(float((p.detach() ** 2).sum()) for p in context.model.parameters())
...     return {"weight_norm": total if squared else total**0.5}

Cost classes: ``"cheap"`` measures take at most a pass over the data (``gap``)
or none (``norms``) and run at every measured epoch; ``"expensive"`` ones take
tens to hundreds of passes or Hessian-vector products, and a
:class:`~ibmonitor.measures.MeasureSet` without a schedule thins them.
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import torch
from torch import nn

from .._device import autocast_disabled, model_device
from .._state import preserve_state
from .._validation import as_real_scalar
from ..exceptions import InvalidParameterError
from ..structures import OutputKey

__all__ = [
    "COSTS",
    "Measure",
    "MeasureContext",
    "available_measures",
    "get_measure",
    "measure_cost",
    "measure_name",
    "register_measure",
    "resolve_measures",
    "scalar_values",
]

logger = logging.getLogger(__name__)

#: The cost classes of a measure.
COSTS: Tuple[str, ...] = ("cheap", "expensive")

#: Context fields a measure may require (``requires=``).
_CONTEXT_FIELDS = ("loss_fn", "train_data", "test_data", "init")

#: Context fields handed to every measure that takes them as options.
_CONTEXT_OPTIONS = ("output_key", "label_key")

#: Positional data parameters of the measure functions: never options.
_DATA_PARAMETERS = frozenset(
    {"model", "loss_fn", "data", "train_data", "test_data", "context"}
)

_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


@dataclass(frozen=True)
class MeasureContext:
    """What a measure function reads: the model, its loss and data.

    Attributes
    ----------
    model : Module
        The model, to be left exactly as found (the registry runs every measure
        inside :func:`~ibmonitor._state.preserve_state` with
        ``parameters=True``).
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    train_data : tuple (inputs, targets) or iterable of batches
        Training data.
    test_data : tuple (inputs, targets) or iterable of batches, optional
        Held-out data (the ``gap`` measure needs it).
    init : dict or Module, optional
        Parameters at initialization (a copy of ``model.state_dict()``).
    output_key : None, int or str, optional
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`); given to every measure
        that takes an ``output_key`` option and was not given one.
    label_key : str, optional
        Key of the targets in dict batches; given like ``output_key``.
    activations : dict, optional
        On an epoch the monitor recorded: ``{probe: {layer: Tensor of shape
        (n_samples, n_units)}}``, the activations just recorded (the geometry
        measures read them); None otherwise.
    labels : dict, optional
        ``{probe: Tensor of shape (n_samples,)}``, with ``activations``.
    """

    model: nn.Module
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    train_data: Any = None
    test_data: Any = None
    init: Union[Mapping[str, torch.Tensor], nn.Module, None] = None
    output_key: OutputKey = None
    label_key: Optional[str] = None
    activations: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None
    labels: Optional[Mapping[str, torch.Tensor]] = None


def _keyword_names(func: Callable[..., Any], *, skip_first: bool) -> Optional[set]:
    """Option names a function takes; None when it takes ``**options``."""
    params = list(inspect.signature(func).parameters.values())
    if (
        skip_first
        and params
        and params[0].kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
    ):
        params = params[1:]
    names = set()
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            return None
        if p.kind == p.KEYWORD_ONLY or (
            p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in _DATA_PARAMETERS
        ):
            names.add(p.name)
    return names


@dataclass(frozen=True)
class Measure:
    """A registered measure (see :func:`register_measure`).

    Attributes
    ----------
    name : str
        Registry name; also the prefix its scalars usually carry.
    fn : callable
        ``fn(context, **options) -> {flat_name: float}``.
    cost : {"cheap", "expensive"}
        Cost class.
    defaults : dict
        Options used unless given (``{"n_samples": 20}`` for ``hessian``).
    option_names : frozenset of str or None
        Accepted option names; None accepts any.
    requires : tuple of str
        Context fields that must be given (``("test_data",)`` for ``gap``).
    """

    name: str
    fn: Callable[..., Mapping[str, Any]]
    cost: str = "cheap"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    option_names: Optional[FrozenSet[str]] = None
    requires: Tuple[str, ...] = ()

    def check_options(self, options: Optional[Mapping[str, Any]] = None) -> dict:
        """Return ``defaults`` updated with ``options``; reject unknown names.

        Raises
        ------
        InvalidParameterError
            An option the measure does not take.
        """
        merged = dict(self.defaults)
        merged.update(dict(options or {}))
        if self.option_names is not None:
            unknown = sorted(set(merged) - self.option_names)
            if unknown:
                raise InvalidParameterError(
                    f"Unknown option(s) {unknown} for measure {self.name!r}. Valid "
                    f"options: {sorted(self.option_names)}."
                )
        return merged

    def __call__(self, context: MeasureContext, **options: Any) -> Dict[str, Any]:
        """Run the measure; return its ``{flat_name: value}`` dict.

        The model is restored exactly afterwards (parameters, gradients,
        buffers, modes and random generators), even when the function raises.
        The context's ``output_key`` and ``label_key``, when not None, are
        passed to a measure whose accepted options name them (unless given).
        """
        merged = self.check_options(options)
        for name in _CONTEXT_OPTIONS:
            value = getattr(context, name)
            if (
                value is not None
                and name not in merged
                and self.option_names is not None
                and name in self.option_names
            ):
                merged[name] = value
        for name in self.requires:
            if getattr(context, name) is None:
                raise InvalidParameterError(f"The {self.name!r} measure needs {name}.")
        with (
            preserve_state(context.model, parameters=True),
            autocast_disabled(model_device(context.model)),
        ):
            values = self.fn(context, **merged)
        if not isinstance(values, Mapping):
            raise InvalidParameterError(
                f"Measure {self.name!r} must return a dict {{name: float}}. Got "
                f"{type(values).__name__} instead."
            )
        return dict(values)


_REGISTRY: Dict[str, Measure] = {}


def _option_names(
    fn: Callable[..., Any], spec: Optional[Iterable[Union[str, Callable[..., Any]]]]
) -> Optional[FrozenSet[str]]:
    if spec is None:
        names = _keyword_names(fn, skip_first=True)
        return None if names is None else frozenset(names)
    if isinstance(spec, str) or callable(spec):
        spec = [spec]
    out: set = set()
    for item in spec:
        if isinstance(item, str):
            out.add(item)
        elif callable(item):
            names = _keyword_names(item, skip_first=False)
            if names is None:
                return None
            out |= names
        else:
            raise InvalidParameterError(
                "The 'option_names' parameter of register_measure must hold option "
                f"names or functions. Got {type(item).__name__} instead."
            )
    return frozenset(out)


def register_measure(
    name: str,
    fn: Optional[Callable[..., Mapping[str, Any]]] = None,
    *,
    cost: str,
    defaults: Optional[Mapping[str, Any]] = None,
    option_names: Optional[Iterable[Union[str, Callable[..., Any]]]] = None,
    requires: Iterable[str] = (),
    replace: bool = False,
) -> Any:
    """Register a measure function under ``name`` (a decorator, or a call).

    Parameters
    ----------
    name : str
        The measure's name (letters, digits, ``_ . - /``).
    fn : callable, optional
        ``fn(context, **options) -> {flat_name: float}``, ``context`` a
        :class:`MeasureContext`. Without it, ``register_measure`` returns a
        decorator.
    cost : {"cheap", "expensive"}
        Cost class: cheap measures run at every measured epoch; expensive ones
        are thinned by a :class:`~ibmonitor.measures.MeasureSet` without a
        schedule.
    defaults : dict, optional
        Options used unless the caller gives them.
    option_names : iterable of str or callable, optional
        Accepted options: names, or functions whose keyword parameters are
        accepted (their data parameters ``model``, ``loss_fn``, ``data``,
        ``train_data``, ``test_data`` excepted). Default: the keyword parameters
        of ``fn`` after ``context``; any option when ``fn`` takes
        ``**options``.
    requires : iterable of str, default=()
        Context fields that must not be None: ``"loss_fn"``, ``"train_data"``,
        ``"test_data"``, ``"init"``.
    replace : bool, default=False
        Replace a measure registered under the same name (else an error).

    Returns
    -------
    fn or decorator
        ``fn`` itself when given, else a decorator that registers and returns
        the function.

    Raises
    ------
    InvalidParameterError
        A bad name, cost, default or required field, or a name already taken.

    Examples
    --------
    >>> @register_measure("param_count", cost="cheap")  # doctest: +SKIP
    ... def param_count(context):
    ...     return {"param_count": sum(p.numel() for p in context.model.parameters())}
    """
    owner = "register_measure"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParameterError(
            f"The 'name' parameter of {owner} must be a non-empty string of letters, "
            f"digits, '_', '.', '-' or '/'. Got {name!r} instead."
        )
    if cost not in COSTS:
        raise InvalidParameterError(
            f"The 'cost' parameter of {owner} must be one of {list(COSTS)}. Got "
            f"{cost!r} instead."
        )
    if defaults is not None and not isinstance(defaults, Mapping):
        raise InvalidParameterError(
            f"The 'defaults' parameter of {owner} must be a dict of options. Got "
            f"{type(defaults).__name__} instead."
        )
    required = tuple([requires] if isinstance(requires, str) else requires)
    bad = [r for r in required if r not in _CONTEXT_FIELDS]
    if bad:
        raise InvalidParameterError(
            f"The 'requires' parameter of {owner} must name context fields "
            f"{list(_CONTEXT_FIELDS)}. Got {bad} instead."
        )

    def deco(func: Callable[..., Mapping[str, Any]]) -> Callable[..., Any]:
        if not callable(func):
            raise InvalidParameterError(
                f"The 'fn' parameter of {owner} must be callable. Got "
                f"{type(func).__name__} instead."
            )
        if name in _REGISTRY and not replace:
            raise InvalidParameterError(
                f"A measure named {name!r} is already registered; pass replace=True "
                "to replace it."
            )
        measure = Measure(
            name=name,
            fn=func,
            cost=cost,
            defaults=dict(defaults or {}),
            option_names=_option_names(func, option_names),
            requires=required,
        )
        measure.check_options()  # the defaults must be accepted options
        _REGISTRY[name] = measure
        return func

    return deco if fn is None else deco(fn)


def available_measures() -> List[str]:
    """Names of the registered measures, sorted."""
    return sorted(_REGISTRY)


def get_measure(name: str) -> Measure:
    """Return the registered measure called ``name``.

    Raises
    ------
    InvalidParameterError
        When no measure has that name.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InvalidParameterError(
            f"Unknown measure {name!r}. Available measures: "
            f"{available_measures()}, or a function "
            "f(model, loss_fn, train_data, test_data) -> dict or float."
        )
    return _REGISTRY[name]


# ---------------------------------------------------------- plain functions ---
def measure_name(measure: Any) -> str:
    """Return the name of a measure: a registry name, or a function's name.

    A function's ``name`` attribute, else its ``__name__``; ``"custom"`` when
    neither is a valid name (a :func:`functools.partial`, a lambda).
    """
    if isinstance(measure, str):
        return measure
    if isinstance(measure, Measure):
        return measure.name
    name = getattr(measure, "name", None) or getattr(measure, "__name__", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        name = "custom"
    return name


def measure_cost(measure: Any) -> str:
    """Return ``"cheap"`` or ``"expensive"`` for a measure name or function.

    A plain function is cheap unless it has an attribute ``cost = "expensive"``.

    Raises
    ------
    InvalidParameterError
        An unknown measure name.
    """
    if isinstance(measure, str):
        return get_measure(measure).cost
    if isinstance(measure, Measure):
        return measure.cost
    cost = getattr(measure, "cost", "cheap")
    return cost if cost in COSTS else "cheap"


def _scalar_or_none(value: Any) -> Optional[float]:
    """Return ``value`` as a float, or None for a non-numeric value."""
    try:
        return as_real_scalar(value)
    except (TypeError, ValueError):
        return None


def _from_function(func: Callable[..., Any], name: str) -> Measure:
    """Wrap ``f(model, loss_fn, train_data, test_data)`` as a :class:`Measure`."""

    def run(context: MeasureContext) -> Dict[str, Any]:
        value = func(
            context.model, context.loss_fn, context.train_data, context.test_data
        )
        if isinstance(value, Mapping):
            return {f"{name}/{k}": v for k, v in value.items()}
        if _scalar_or_none(value) is None:
            raise InvalidParameterError(
                f"Measure function {name!r} must return a float or a dict of floats. "
                f"Got {type(value).__name__} instead."
            )
        return {name: value}

    return Measure(name=name, fn=run, cost=measure_cost(func), option_names=frozenset())


def resolve_measures(
    measures: Any, options: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> List[Tuple[Measure, Dict[str, Any]]]:
    """Turn a ``measures=`` argument into ``(measure, options)`` pairs.

    Parameters
    ----------
    measures : str, callable, Measure, sequence of them, or dict
        Registry names, :class:`Measure` objects and/or plain functions
        ``f(model, loss_fn, train_data, test_data) -> float or dict`` (named
        by :func:`measure_name`). A dict maps a name to its options
        (``{"hessian": {"k": 3}}``) or to a function (named by the key).
    options : dict of str to dict, optional
        More options per measure name; they win over those in ``measures``.

    Returns
    -------
    pairs : list of (Measure, dict)
        In the order given; each dict holds the measure's defaults updated with
        the options given (already checked).

    Raises
    ------
    InvalidParameterError
        An unknown name or option, a measure listed twice, options for a plain
        function, or options for a measure not listed.
    """
    options = dict(options or {})
    items: List[Tuple[str, Any, Dict[str, Any]]] = []
    if isinstance(measures, (str, Measure)) or callable(measures):
        measures = [measures]
    if isinstance(measures, Mapping):
        for key, value in measures.items():
            if isinstance(value, Measure) or callable(value):
                items.append((str(key), value, {}))
            elif value is None or isinstance(value, Mapping):
                items.append((str(key), str(key), dict(value or {})))
            else:
                raise InvalidParameterError(
                    f"The options of measure {key!r} must be a dict. Got "
                    f"{type(value).__name__} instead."
                )
    elif isinstance(measures, Iterable):
        for m in measures:
            if isinstance(m, (str, Measure)) or callable(m):
                items.append((measure_name(m), m, {}))
            else:
                raise InvalidParameterError(
                    "Each measure must be a name from "
                    f"{available_measures()} or a function "
                    "f(model, loss_fn, train_data, test_data). Got "
                    f"{type(m).__name__} instead."
                )
    else:
        raise InvalidParameterError(
            "The 'measures' parameter must be a measure name, a function, a list of "
            f"them or a dict. Got {type(measures).__name__} instead."
        )
    out: List[Tuple[Measure, Dict[str, Any]]] = []
    seen = set()
    for name, spec, opts in items:
        if isinstance(spec, str):
            measure = get_measure(spec)
        elif isinstance(spec, Measure):
            measure = spec
        else:
            measure = _from_function(spec, name)
        if name in seen:
            raise InvalidParameterError(f"Measure {name!r} is listed twice.")
        seen.add(name)
        opts.update(dict(options.pop(name, {}) or {}))
        if opts and not isinstance(spec, (str, Measure)):
            raise InvalidParameterError(
                f"Options were given for the measure function {name!r}; bind them "
                "with functools.partial instead."
            )
        out.append((measure, measure.check_options(opts)))
    if options:
        raise InvalidParameterError(
            f"Options were given for measures that are not computed: "
            f"{sorted(options)}. Computed measures: {[m.name for m, _ in out]}."
        )
    return out


def scalar_values(values: Mapping[str, Any], *, owner: str) -> Dict[str, float]:
    """Return ``values`` as floats, leaving out NaN and non-numeric values.

    Numbers, numpy scalars and one-element tensors count as numeric; ``bool``
    does not. A non-numeric value is left out with a log warning naming the
    measure ``owner``.
    """
    out: Dict[str, float] = {}
    for key, value in values.items():
        number = _scalar_or_none(value)
        if number is None:
            logger.warning(
                "measure %r gave a non-numeric value %r for %r; it is left out",
                owner,
                value,
                key,
            )
            continue
        if number == number:  # not NaN
            out[str(key)] = number
    return out
