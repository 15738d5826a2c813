"""Pieces shared by every estimator: the result type, the registry, entropies.

All information quantities are in bits (log base 2) unless a function says
otherwise.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from .._validation import as_tensor, check_consistent_samples, check_param
from ..exceptions import EstimationWarning, InvalidParameterError
from ._uncertainty import (
    PARAMETERS as UNCERTAINTY_PARAMETERS,
)
from ._uncertainty import (
    check_uncertainty,
    outside_wrapper,
    split_uncertainty,
    with_uncertainty,
)

__all__ = [
    "CEILINGS",
    "PINNED_MARGIN",
    "UNCERTAINTY_PARAMETERS",
    "Estimator",
    "InformationEstimate",
    "available",
    "entropy_from_counts",
    "get",
    "input_ids",
    "register",
    "warn_estimation",
]

LOG2E = 1.0 / math.log(2.0)

#: An I(X;T) within this many bits of its ceiling (``log2 n`` with every sample
#: a distinct input) is *pinned*: the estimate measures the sample size, not
#: the layer. 0.1 bit is where the sample size takes over. For a plug-in
#: entropy, each pair of samples sharing a bin lowers H(T) by ``2 / n`` bits
#: below ``log2 n``, so a margin of 0.1 bit means that fewer than one sample in
#: twenty shares its bin (at any n). For the kernel estimators it means that
#: the other samples add on average less than 7 % (``2**0.1 - 1``) to each
#: sample's own kernel. Either way I(T;Y) is then H(Y) up to the same margin,
#: whatever the layer does.
PINNED_MARGIN = 0.1


@dataclass(frozen=True)
class InformationEstimate:
    """What every estimator returns: the two coordinates of the information plane.

    Attributes
    ----------
    estimator : str
        Registry name of the estimator (``"binned"``, ``"kde"``, ...).
    i_xt : float
        Estimate of I(X;T) in bits (NaN where the estimator cannot give one).
    i_ty : float
        Estimate of I(T;Y) in bits.
    params : dict
        The parameters the estimate was made with (after defaults were applied).
    extras : dict
        Estimator-specific quantities in bits (``h_t``, ``h_t_given_y``, ...),
        stored by the monitor as extra columns.
    pinned : str or None, default=None
        Why the estimate is *pinned* by the sample size or the estimator's
        scale rather than by the layer (e.g. every sample in its own bin, so
        I(X;T) = log2 n and I(T;Y) = H(Y)); None when it is not. Estimators
        that set it also issue an :class:`~ibmonitor.exceptions.EstimationWarning`
        with the same text. See :data:`PINNED_MARGIN`.
    i_xt_ci, i_ty_ci : (float, float) or None, default=None
        ``(low, high)`` intervals of I(X;T) and I(T;Y) in bits, present when
        the estimator was called with ``bootstrap=B`` (see
        ``docs/estimators.md``, "Uncertainty and baselines"): they cover the
        estimator's mean at this sample size with probability ``confidence``.
    i_ty_baseline : float or None, default=None
        With ``baseline=True``: the mean I(T;Y) in bits over label
        permutations (same estimator, same samples), the estimator's floor.
    i_xt_ceiling : float or None, default=None
        With ``bootstrap`` or ``baseline``, for estimators registered with a
        ceiling (``binned``, ``kde``): the largest I(X;T) they can give on
        these samples (``log2 n``, or H(X) of the grouped inputs), in bits.
    """

    estimator: str
    i_xt: float
    i_ty: float
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, float] = field(default_factory=dict)
    pinned: Optional[str] = None
    i_xt_ci: Optional[Tuple[float, float]] = None
    i_ty_ci: Optional[Tuple[float, float]] = None
    i_ty_baseline: Optional[float] = None
    i_xt_ceiling: Optional[float] = None

    def as_dict(self) -> Dict[str, Any]:
        """Return ``{"estimator", "i_xt", "i_ty", **extras, "pinned", ...}``.

        Values are floats. ``pinned`` is 1.0 for a pinned estimate and 0.0
        otherwise, so that it lands in the information table as one more
        numeric quantity. Then, only where computed: ``i_xt_low``,
        ``i_xt_high``, ``i_ty_low``, ``i_ty_high`` (the intervals),
        ``i_ty_baseline`` and ``i_xt_ceiling`` (bits), so that the rows of an
        estimate made without them are what they always were.
        """
        out: Dict[str, Any] = {
            "estimator": self.estimator,
            "i_xt": float(self.i_xt),
            "i_ty": float(self.i_ty),
        }
        out.update({k: float(v) for k, v in self.extras.items()})
        out["pinned"] = 1.0 if self.pinned else 0.0
        for name, ci in (("i_xt", self.i_xt_ci), ("i_ty", self.i_ty_ci)):
            if ci is not None:
                out[f"{name}_low"], out[f"{name}_high"] = float(ci[0]), float(ci[1])
        if self.i_ty_baseline is not None:
            out["i_ty_baseline"] = float(self.i_ty_baseline)
        if self.i_xt_ceiling is not None:
            out["i_xt_ceiling"] = float(self.i_xt_ceiling)
        return out


def pinned_at_ceiling(
    value: float, ceiling: float, *, margin: float = PINNED_MARGIN
) -> bool:
    """Whether ``value`` (bits) lies within ``margin`` bits of ``ceiling``.

    False for a non-finite value or a ceiling below ``margin`` (two samples,
    a constant layer: nothing to pin).
    """
    return (
        math.isfinite(value)
        and math.isfinite(ceiling)
        and ceiling > margin
        and value >= ceiling - margin
    )


def warn_pinned(reason: str, *, stacklevel: int = 3) -> None:
    """Issue the :class:`EstimationWarning` of a pinned estimate.

    ``stacklevel`` counts from this function (3: the caller of the estimator
    that calls it); the wrapper :func:`register` puts around every estimator
    is skipped, so the warning points at the user's line.
    """
    warn_estimation(reason, stacklevel=stacklevel)


def warn_estimation(message: str, *, stacklevel: int = 2) -> None:
    """Issue an :class:`EstimationWarning`, skipping the registry's wrapper.

    Like ``warnings.warn(message, EstimationWarning, stacklevel=stacklevel)``
    called in the caller of this function (2: that caller's caller, e.g. the
    line that called an estimator), with the wrapper of :func:`register`
    skipped.
    """
    warnings.warn(
        message, EstimationWarning, stacklevel=outside_wrapper(stacklevel + 1)
    )


def entropy_from_counts(counts: Any) -> float:
    """Plug-in Shannon entropy, in bits, of a histogram of counts.

    Parameters
    ----------
    counts : array-like or Tensor of shape (n_symbols,)
        Non-negative counts; zeros are ignored.

    Returns
    -------
    h : float
        ``-sum p log2 p`` with ``p = counts / counts.sum()``, in bits.
    """
    c = as_tensor(counts, name="counts").to(torch.float64)
    c = c[c > 0]
    n = c.sum()
    if c.numel() <= 1:
        return 0.0
    h = torch.log2(n) - (c * torch.log2(c)).sum() / n
    return max(float(h), 0.0)


def input_ids(x: Any, n_samples: Optional[int] = None) -> torch.Tensor:
    """Group identical inputs: return an int64 id per sample (CPU tensor).

    Parameters
    ----------
    x : array-like or Tensor of shape (n_samples,) or (n_samples, ...)
        Input ids (1-D) or inputs; rows that are equal get the same id.
    n_samples : int, optional
        Expected number of samples, checked when given.

    Returns
    -------
    ids : Tensor of shape (n_samples,)
        Ids in ``0 .. n_distinct - 1``.
    """
    xt = as_tensor(x, name="x")
    if n_samples is not None:
        check_consistent_samples(x=xt.shape[0], t=n_samples)
    arr = xt.reshape(xt.shape[0], -1).cpu().numpy()
    if arr.shape[1] == 1:
        _, inv = np.unique(arr[:, 0], return_inverse=True)
    else:
        arr = np.ascontiguousarray(arr)
        view = arr.view(np.dtype((np.void, arr.dtype.itemsize * arr.shape[1])))
        _, inv = np.unique(view.ravel(), return_inverse=True)
    return torch.from_numpy(inv.reshape(-1).astype(np.int64))


@dataclass(frozen=True)
class Estimator:
    """A registered estimator with bound parameters; call it like the function.

    ``Estimator(t, y, x=None)`` returns an :class:`InformationEstimate`.

    Attributes
    ----------
    name : str
        Registry name.
    params : dict
        Keyword parameters passed to the function on every call.
    inputs : {"ids", "values", "none"}
        What the estimator does with ``x``: groups identical rows (``"ids"``,
        so a caller may pass precomputed :func:`input_ids`), uses the values
        (``"values"``), or ignores it (``"none"``).

    ``params`` may hold the uncertainty options every registered estimator
    takes (``bootstrap``, ``confidence``, ``seed``, ``baseline``); see
    :func:`register`.
    """

    name: str
    function: Callable[..., InformationEstimate]
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: str = "ids"

    def __call__(self, t: Any, y: Any, x: Any = None) -> InformationEstimate:
        """Estimate (I(X;T), I(T;Y)) in bits."""
        return self.function(t, y, x=x, **dict(self.params))

    def describe(self) -> str:
        """Return ``name(k=v, ...)`` for tables and logs."""
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{self.name}({args})"


_REGISTRY: Dict[str, Tuple[Callable[..., InformationEstimate], str]] = {}
#: Per-estimator parameter checks run by :func:`get` (``check(**params)``).
_CHECKS: Dict[str, Callable[..., None]] = {}
#: Parameters an estimator shares with the uncertainty options (its own ``seed``).
_SHARED: Dict[str, Tuple[str, ...]] = {}

#: Kinds of I(X;T) ceiling an estimator may declare with ``register(ceiling=)``:
#: ``"samples"``: ``log2 n`` (every sample a distinct input, ``x`` ignored);
#: ``"inputs"``: H(X) of the rows of ``x`` grouped by identity (``log2 n``
#: without ``x``), the bound of a plug-in I(X;T) = H(T) - H(T|X).
CEILINGS = ("samples", "inputs")


def _ceiling_function(kind: Optional[str]) -> Optional[Callable[[Any, int], float]]:
    """Return ``f(x, n)``, the I(X;T) ceiling in bits of a ceiling kind."""
    if kind is None:
        return None

    def ceiling(x: Any, n: int) -> float:
        if kind == "samples" or x is None or n < 2:
            return math.log2(n) if n > 0 else 0.0
        return entropy_from_counts(
            torch.unique(input_ids(x, n_samples=n), return_counts=True)[1]
        )

    return ceiling


def register(
    name: str,
    *,
    inputs: str = "ids",
    check: Optional[Callable[..., None]] = None,
    ceiling: Optional[str] = None,
) -> Callable[[Callable[..., InformationEstimate]], Callable[..., InformationEstimate]]:
    """Register an estimator function under ``name`` (a decorator).

    The function must have the signature ``f(t, y, *, x=None, **params)`` and
    return an :class:`InformationEstimate`. ``check``, when given, is called
    as ``check(**params)`` by :func:`get` and raises
    :class:`~ibmonitor.exceptions.InvalidParameterError` for bad values, so
    that a bad parameter fails when the estimator is built rather than on
    every call.

    The decorator returns the function wrapped so that it also takes the
    uncertainty options (``functools.wraps`` keeps its name and docstring;
    its ``inspect.signature`` lists them):

    - ``bootstrap=B`` (default 0, off; else at least 10): ``B`` half-samples
      (``n // 2`` rows without replacement) give the result's ``i_xt_ci`` and
      ``i_ty_ci``, ``(low, high)`` in bits;
    - ``confidence=0.9``: the coverage of the intervals;
    - ``seed=0``: seeds the half-samples and permutations (an estimator's own
      ``seed`` parameter is shared: one seed drives both);
    - ``baseline=False``: True (10 permutations) or an int adds
      ``i_ty_baseline``, the mean I(T;Y) with the labels permuted (same
      estimator, same samples).

    With the defaults the wrapped function returns exactly what the function
    returns. See ``ibmonitor.estimators._uncertainty`` for the method.

    Parameters
    ----------
    name : str
        Registry name.
    inputs : {"ids", "values", "none"}, default="ids"
        What the estimator does with ``x`` (see :class:`Estimator`).
    check : callable, optional
        Check of the estimator's own parameters.
    ceiling : {"samples", "inputs"}, optional
        The estimator's largest possible I(X;T) (see :data:`CEILINGS`),
        reported as ``i_xt_ceiling`` with intervals or baselines and used to
        clip the I(X;T) interval (``binned`` declares ``"inputs"``, ``kde``
        ``"samples"``).

    Raises
    ------
    InvalidParameterError
        An unknown ``ceiling`` kind.
    TypeError
        The function has its own parameter ``bootstrap``, ``confidence`` or
        ``baseline``.
    """
    if ceiling is not None:
        check_param(ceiling, "ceiling", "register", kind="option", options=CEILINGS)
    kind = ceiling

    def deco(func: Callable[..., InformationEstimate]):
        wrapped = with_uncertainty(func, name, ceiling=_ceiling_function(kind))
        _REGISTRY[name] = (wrapped, inputs)
        _SHARED[name] = tuple(
            p for p in UNCERTAINTY_PARAMETERS if p in inspect.signature(func).parameters
        )
        if check is not None:
            _CHECKS[name] = check
        else:
            _CHECKS.pop(name, None)
        return wrapped

    return deco


def get(name: str, **params: Any) -> Estimator:
    """Build a registered estimator from its name and parameters.

    Every registered estimator also takes the uncertainty options
    ``bootstrap``, ``confidence``, ``seed`` and ``baseline`` (see
    :func:`register`); they are checked here, with the estimator's own
    parameters.

    Examples
    --------
    >>> from ibmonitor import estimators
    >>> est = estimators.get("binned", n_bins=30)
    >>> est.name
    'binned'
    >>> estimators.get("binned", bootstrap=100, baseline=True).params["bootstrap"]
    100
    """
    if name not in _REGISTRY:
        raise InvalidParameterError(
            f"Unknown estimator {name!r}. Available estimators: {available()}."
        )
    func, inputs = _REGISTRY[name]
    valid = _parameter_names(func)
    if valid is not None:
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise InvalidParameterError(
                f"Unknown parameter {unknown[0]!r} of estimator {name!r}. Valid "
                f"parameters: {valid}. Got {name}({', '.join(sorted(params))})."
            )
    shared = _SHARED.get(name, ())
    options, own = split_uncertainty(params, shared=shared)
    if "seed" in shared and "seed" not in options:
        options["seed"] = _own_default(func, "seed", 0)
    check_uncertainty(**options, owner=name)
    check = _CHECKS.get(name)
    if check is not None:
        check(**own)
    return Estimator(name=name, function=func, params=dict(params), inputs=inputs)


def _own_default(func: Callable[..., Any], param: str, fallback: Any) -> Any:
    """Return the default of ``func``'s parameter ``param`` (else ``fallback``)."""
    p = inspect.signature(func).parameters.get(param)
    if p is None or p.default is inspect.Parameter.empty or p.default is None:
        return fallback
    return p.default


def _parameter_names(func: Callable[..., Any]) -> Optional[list]:
    """Keyword parameters of an estimator function (not ``t``, ``y``, ``x``).

    None when the function takes ``**kwargs`` (any name is accepted).
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.name in ("t", "y", "x") or p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        names.append(p.name)
    return names


def available() -> list:
    """Names of the registered estimators, sorted."""
    return sorted(_REGISTRY)
