"""Run named measures (and user functions) and flatten them into scalars.

:func:`compute_measures` is what the monitor calls at a scheduled epoch: it
turns ``["gap", "hessian", ...]`` into one flat ``{name: float}`` dict for the
run's scalars table and TensorBoard. :data:`MEASURE_COSTS` tells the monitor
which measures are expensive, so it can thin them.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._validation import check_param
from ..exceptions import InvalidParameterError, MonitorWarning
from ._data import iter_batches, model_device, model_dtype
from ._state import preserved_rng, preserved_state
from .generalization import generalization_gap
from .hessian import hessian_eigenvalues, hessian_trace
from .norms import norms
from .pac_bayes import pac_bayes
from .sharpness import _expected_sharpness, expected_sharpness, worst_case_sharpness

__all__ = [
    "AVAILABLE_MEASURES",
    "MEASURE_COSTS",
    "TIMELINE_DEFAULTS",
    "compute_measures",
    "measure_cost",
    "measure_name",
]

logger = logging.getLogger(__name__)

#: Relative cost class of each named measure. "cheap": at most a pass over the
#: data (gap) or none (norms); "expensive": tens to hundreds of passes or
#: Hessian-vector products. The monitor thins the expensive ones.
MEASURE_COSTS: Dict[str, str] = {
    "gap": "cheap",
    "norms": "cheap",
    "hessian": "expensive",
    "sharpness": "expensive",
    "expected_sharpness": "expensive",
    "pac_bayes": "expensive",
}

#: Names accepted by :func:`compute_measures`.
AVAILABLE_MEASURES: Tuple[str, ...] = tuple(MEASURE_COSTS)

#: Options that differ from the functions' own defaults on the timeline (to keep
#: a recorded epoch cheap); any option passed by the user wins.
TIMELINE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "hessian": {"n_samples": 20},
}

MeasureSpec = Union[str, Callable[..., Any]]


def measure_name(measure: MeasureSpec) -> str:
    """Return the scalar prefix of a measure: its name, or a function's name."""
    if isinstance(measure, str):
        return measure
    name = getattr(measure, "name", None) or getattr(measure, "__name__", None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", name):
        name = "custom"
    return name


def measure_cost(measure: MeasureSpec) -> str:
    """Return ``"cheap"`` or ``"expensive"`` for a measure name or function.

    A user function is cheap unless it has an attribute ``cost = "expensive"``.
    """
    if isinstance(measure, str):
        if measure not in MEASURE_COSTS:
            raise InvalidParameterError(
                f"Unknown measure {measure!r}. Available measures: "
                f"{list(AVAILABLE_MEASURES)}, or a function "
                "f(model, loss_fn, train_data, test_data) -> dict or float."
            )
        return MEASURE_COSTS[measure]
    cost = getattr(measure, "cost", "cheap")
    return cost if cost in ("cheap", "expensive") else "cheap"


# ---------------------------------------------------------------- adapters ---
def _split(options: Dict[str, Any], keys: Sequence[str]) -> Dict[str, Any]:
    return {k: options.pop(k) for k in list(options) if k in keys}


def _check_options(name: str, options: Mapping[str, Any], funcs: Sequence[Any]) -> None:
    allowed = set()
    for f in funcs:
        params = inspect.signature(f).parameters
        allowed |= {
            p
            for p, spec in params.items()
            if spec.kind == spec.KEYWORD_ONLY
            or (
                spec.kind == spec.POSITIONAL_OR_KEYWORD
                and p not in ("model", "loss_fn", "data", "train_data", "test_data")
            )
        }
    allowed |= _EXTRA_OPTIONS.get(name, set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidParameterError(
            f"Unknown option(s) {unknown} for measure {name!r}. Valid options: "
            f"{sorted(allowed)}."
        )


_EXTRA_OPTIONS = {"hessian": {"trace", "n_samples"}}


def _gap(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    if test is None:
        raise InvalidParameterError("The 'gap' measure needs test_data.")
    g = generalization_gap(model, loss_fn, train, test, **opts)
    return {
        "gap/loss": g.loss_gap,
        "gap/acc": g.acc_gap,
        "gap/train_loss": g.train_loss,
        "gap/test_loss": g.test_loss,
        "gap/train_acc": g.train_acc,
        "gap/test_acc": g.test_acc,
    }


def _hessian(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    opts = dict(opts)
    do_trace = opts.pop("trace", True)
    trace_opts = _split(opts, ("n_samples",))
    shared = {
        k: opts[k]
        for k in ("params", "per_layer", "seed", "batch_size", "max_batches")
        if k in opts
    }
    eig = hessian_eigenvalues(model, loss_fn, train, **opts)
    tr = (
        hessian_trace(model, loss_fn, train, **shared, **trace_opts)
        if do_trace
        else None
    )
    per_layer = bool(opts.get("per_layer", False))
    eig_groups = eig if per_layer else {"": eig}
    tr_groups = (tr if per_layer else {"": tr}) if tr is not None else {}
    out: Dict[str, float] = {}
    for group, values in eig_groups.items():
        prefix = f"hessian/{group}/" if group else "hessian/"
        out[prefix + "top_eigenvalue"] = values[0]
        for i, v in enumerate(values[1:], start=2):
            out[prefix + f"eigenvalue_{i}"] = v
        if group in tr_groups:
            out[prefix + "trace"] = tr_groups[group].mean
            out[prefix + "trace_stderr"] = tr_groups[group].stderr
    return out


def _sharpness(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    return {"sharpness/worst_case": worst_case_sharpness(model, loss_fn, train, **opts)}


def _expected(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    defaults = inspect.signature(expected_sharpness).parameters
    kwargs = {
        k: opts.get(k, defaults[k].default)
        for k in defaults
        if k not in ("model", "loss_fn", "data")
    }
    mean, stderr = _expected_sharpness(model, loss_fn, train, **kwargs)
    return {"sharpness/expected": mean, "sharpness/expected_stderr": stderr}


def _pac(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    opts = dict(opts)
    opts.setdefault("init", init)
    r = pac_bayes(model, loss_fn, train, **opts)
    return {
        "pac_bayes/sigma": r.sigma,
        "pac_bayes/flatness": r.flatness,
        "pac_bayes/bound": r.bound,
        "pac_bayes/kl": r.kl,
    }


def _first_input(model: nn.Module, data: Any) -> Optional[torch.Tensor]:
    try:
        with preserved_rng():  # a shuffling DataLoader draws from the global RNG
            for x, _ in iter_batches(
                data,
                device=model_device(model),
                dtype=model_dtype(model),
                batch_size=1,
                max_batches=1,
                owner="compute_measures",
            ):
                return x[:1]
    except (InvalidParameterError, TypeError, ValueError):
        return None
    return None


def _norms(model, loss_fn, train, test, init, opts) -> Dict[str, float]:
    opts = dict(opts)
    opts.setdefault("init", init)
    if "input_shape" not in opts and "example_input" not in opts:
        opts["example_input"] = _first_input(model, train)
    frame = norms(model, **opts)
    out: Dict[str, float] = {}
    for row in frame.to_dict("records"):
        layer = row["layer"]
        cols = (
            ("frobenius", "distance_to_init", "log_spectral_sum", "path", "n_params")
            if layer == "total"
            else ("frobenius", "spectral", "spectral_fft", "distance_to_init")
        )
        for col in cols:
            out[f"norms/{layer}/{col}"] = float(row[col])
    return out


_ADAPTERS: Dict[str, Tuple[Callable[..., Dict[str, float]], Tuple[Any, ...]]] = {
    "gap": (_gap, (generalization_gap,)),
    "hessian": (_hessian, (hessian_eigenvalues,)),
    "sharpness": (_sharpness, (worst_case_sharpness,)),
    "expected_sharpness": (_expected, (expected_sharpness,)),
    "pac_bayes": (_pac, (pac_bayes,)),
    "norms": (_norms, (norms,)),
}


def _run_callable(
    f: Callable[..., Any], name: str, model, loss_fn, train, test
) -> Dict[str, float]:
    with preserved_state(model):
        value = f(model, loss_fn, train, test)
    if isinstance(value, Mapping):
        return {f"{name}/{k}": float(v) for k, v in value.items()}
    try:
        return {name: float(value)}
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"Measure function {name!r} must return a float or a dict of floats. "
            f"Got {type(value).__name__} instead."
        ) from None


def _normalize(
    measures: Any, options: Optional[Mapping[str, Mapping[str, Any]]]
) -> List[Tuple[str, MeasureSpec, Dict[str, Any]]]:
    """Return ``(name, spec, options)`` triples."""
    options = dict(options or {})
    items: List[Tuple[str, MeasureSpec, Dict[str, Any]]] = []
    if isinstance(measures, (str,)) or callable(measures):
        measures = [measures]
    if isinstance(measures, Mapping):
        for key, value in measures.items():
            if callable(value):
                items.append((str(key), value, {}))
            else:
                items.append((str(key), str(key), dict(value or {})))
    else:
        for m in measures:
            if isinstance(m, str) or callable(m):
                items.append((measure_name(m), m, {}))
            else:
                raise InvalidParameterError(
                    "Each measure must be a name from "
                    f"{list(AVAILABLE_MEASURES)} or a function "
                    "f(model, loss_fn, train_data, test_data). Got "
                    f"{type(m).__name__} instead."
                )
    out = []
    seen = set()
    for name, spec, opts in items:
        if isinstance(spec, str):
            measure_cost(spec)  # raises for an unknown name
        if name in seen:
            raise InvalidParameterError(f"Measure {name!r} is listed twice.")
        seen.add(name)
        merged = dict(TIMELINE_DEFAULTS.get(name, {})) if isinstance(spec, str) else {}
        merged.update(opts)
        merged.update(dict(options.pop(name, {}) or {}))
        if isinstance(spec, str):
            _check_options(name, merged, _ADAPTERS[spec][1])
        elif merged:
            raise InvalidParameterError(
                f"Options were given for the measure function {name!r}; bind them "
                "with functools.partial instead."
            )
        out.append((name, spec, merged))
    if options:
        raise InvalidParameterError(
            f"Options were given for measures that are not computed: "
            f"{sorted(options)}. Computed measures: {[n for n, _, _ in out]}."
        )
    return out


def compute_measures(
    measures: Union[MeasureSpec, Sequence[MeasureSpec], Mapping[str, Any]],
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_data: Any,
    test_data: Any = None,
    init_state: Union[Mapping[str, torch.Tensor], nn.Module, None] = None,
    *,
    options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    on_error: str = "raise",
) -> Dict[str, float]:
    """Compute measures and return them as one flat dict of scalars.

    Parameters
    ----------
    measures : str, callable, sequence of them, or dict
        Names from :data:`AVAILABLE_MEASURES` and/or functions
        ``f(model, loss_fn, train_data, test_data) -> float or dict``. A dict
        maps a name to its options (``{"hessian": {"k": 3}}``) or to a function.
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
        ``init_state``) are left out.

    Notes
    -----
    Every measure leaves the model exactly as found (user functions too: they
    run inside :func:`preserved_state`). Cost classes: :data:`MEASURE_COSTS`;
    measured costs: the README section on measures.

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
    result: Dict[str, float] = {}
    for name, spec, opts in _normalize(measures, options):
        start = time.perf_counter()
        try:
            if isinstance(spec, str):
                values = _ADAPTERS[spec][0](
                    model, loss_fn, train_data, test_data, init_state, opts
                )
            else:
                values = _run_callable(
                    spec, name, model, loss_fn, train_data, test_data
                )
        except Exception as exc:
            if on_error == "raise":
                raise
            warnings.warn(
                f"Measure {name!r} failed and is left out: {type(exc).__name__}: {exc}",
                MonitorWarning,
                stacklevel=2,
            )
            logger.warning("measure %r failed", name, exc_info=True)
            continue
        for key, value in values.items():
            value = float(value)
            if not math.isnan(value):
                result[key] = value
        logger.debug("measure %r took %.3f s", name, time.perf_counter() - start)
    return result
