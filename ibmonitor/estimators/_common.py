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

from .._validation import as_tensor, check_consistent_samples
from ..exceptions import EstimationWarning, InvalidParameterError

__all__ = [
    "PINNED_MARGIN",
    "Estimator",
    "InformationEstimate",
    "available",
    "entropy_from_counts",
    "get",
    "input_ids",
    "register",
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
    """

    estimator: str
    i_xt: float
    i_ty: float
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, float] = field(default_factory=dict)
    pinned: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        """Return ``{"estimator", "i_xt", "i_ty", **extras, "pinned"}``, as floats.

        ``pinned`` is 1.0 for a pinned estimate and 0.0 otherwise, so that it
        lands in the information table as one more numeric quantity.
        """
        out: Dict[str, Any] = {
            "estimator": self.estimator,
            "i_xt": float(self.i_xt),
            "i_ty": float(self.i_ty),
        }
        out.update({k: float(v) for k, v in self.extras.items()})
        out["pinned"] = 1.0 if self.pinned else 0.0
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
    """Issue the :class:`EstimationWarning` of a pinned estimate."""
    warnings.warn(reason, EstimationWarning, stacklevel=stacklevel)


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


def register(
    name: str,
    *,
    inputs: str = "ids",
    check: Optional[Callable[..., None]] = None,
) -> Callable[[Callable[..., InformationEstimate]], Callable[..., InformationEstimate]]:
    """Register an estimator function under ``name`` (a decorator).

    The function must have the signature ``f(t, y, *, x=None, **params)`` and
    return an :class:`InformationEstimate`. ``check``, when given, is called
    as ``check(**params)`` by :func:`get` and raises
    :class:`~ibmonitor.exceptions.InvalidParameterError` for bad values, so
    that a bad parameter fails when the estimator is built rather than on
    every call.
    """

    def deco(func: Callable[..., InformationEstimate]):
        _REGISTRY[name] = (func, inputs)
        if check is not None:
            _CHECKS[name] = check
        else:
            _CHECKS.pop(name, None)
        return func

    return deco


def get(name: str, **params: Any) -> Estimator:
    """Build a registered estimator from its name and parameters.

    Examples
    --------
    >>> from ibmonitor import estimators
    >>> est = estimators.get("binned", n_bins=30)
    >>> est.name
    'binned'
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
    check = _CHECKS.get(name)
    if check is not None:
        check(**params)
    return Estimator(name=name, function=func, params=dict(params), inputs=inputs)


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
