"""Intervals and permutation baselines for every registered estimator (bits).

:func:`~ibmonitor.estimators.register` wraps each estimator with
:func:`with_uncertainty`, so that every estimator, called directly or through
:func:`~ibmonitor.estimators.get`, takes four more keyword parameters:

``bootstrap`` (int, default 0 = off)
    Number of half-samples behind the intervals ``i_xt_ci`` and ``i_ty_ci``.
``confidence`` (float, default 0.9)
    Coverage of the intervals.
``seed`` (int or None, default 0)
    Seed of the half-samples and of the label permutations (shared with the
    estimator's own ``seed`` parameter where it has one).
``baseline`` (bool or int, default False)
    Permutation baseline of I(T;Y): True averages
    :data:`DEFAULT_PERMUTATIONS` label permutations, an int that many.

Method
------
The interval is a normal interval with a *half-sample* (delete-d jackknife,
``d = n/2``) standard error. Each replicate re-runs the estimator, with its
own parameters, on ``m = floor(n/2)`` rows drawn **without replacement** (the
same rows of ``t``, ``y`` and ``x``); with ``v`` the sample variance of the
``B`` replicate estimates,

``se = sqrt(m / (n - m) * v)``,  interval ``= estimate -+ t_{B-1} * se``,

``t_{B-1}`` the two-sided ``confidence`` quantile of Student's t with ``B - 1``
degrees of freedom (which accounts for the Monte-Carlo error of ``v`` with
few replicates). The interval is clipped at 0 when the estimate and every
replicate are non-negative (the estimator's mean is then non-negative too),
and an I(X;T) interval at the estimator's ceiling where it has one.

Why half-samples without replacement, not the ordinary bootstrap: resampling
*with* replacement duplicates rows, and duplicates are not like new samples
to these estimators. Two copies of a row share a bin (a plug-in entropy
drops by about ``0.6`` bit at ``log2 n``), sit at distance 0 from each other
(a kernel or nearest-neighbour estimate sees a spike), and repeat an input
(``x`` ids). A half-sample has no duplicates, so it is a probe set of size
``n/2`` drawn from the same distribution. For a statistic that is a mean to
first order, the variance of a half-sample estimate around the full one is
``sigma^2 (1/m - 1/n)``, which the factor ``m / (n - m)`` (1 for even ``n``)
turns into ``sigma^2 / n``, the variance of the estimate itself (Shao & Wu
1989). The spread is measured around the replicates' own mean, so a shift of
the estimator with the sample size (plug-in bias, a kernel width that
follows ``n``) does not enter the interval.

What the interval covers: the estimator's **mean at this probe size** ``n``,
with its parameters (for ``binned``, the plug-in MI of the binned layer
averaged over probe sets of ``n`` samples). It does not remove the
estimator's bias, so it covers the large-sample value only where the bias is
small beside the interval (the binned estimator's ``resolution`` extra is the
first-order bias of its H(T)); it never covers the continuous MI that a
discretisation or a kernel width changes. The permutation baseline is that
same estimator's mean at the same ``n`` for labels independent of the layer,
so an estimate whose interval lies above the baseline carries information
beyond the estimator's floor.

References
----------
.. [1] J. Shao and C. F. J. Wu, "A general theory for jackknife variance
   estimation", Annals of Statistics 17(3), 1989.
.. [2] J. Shao and D. Tu, "The Jackknife and Bootstrap", Springer, 1995,
   section 2.3 (the delete-d jackknife).
.. [3] D. N. Politis, J. P. Romano and M. Wolf, "Subsampling", Springer, 1999.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import warnings
from numbers import Integral
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
)

import numpy as np
import torch

from .._validation import check_param
from ..exceptions import EstimationWarning, InvalidParameterError

__all__ = [
    "DEFAULTS",
    "DEFAULT_PERMUTATIONS",
    "MIN_REPLICATES",
    "PARAMETERS",
    "UncertaintyOptions",
    "check_uncertainty",
    "half_sample_interval",
    "outside_wrapper",
    "split_uncertainty",
    "take_rows",
    "with_uncertainty",
]

#: The keyword parameters every registered estimator gains.
PARAMETERS = ("bootstrap", "confidence", "seed", "baseline")
#: Their defaults: no interval, 90 % intervals, seed 0, no baseline.
DEFAULTS: Mapping[str, Any] = {
    "bootstrap": 0,
    "confidence": 0.9,
    "seed": 0,
    "baseline": False,
}
#: Label permutations averaged by ``baseline=True``: the baseline's standard
#: error is then about a third of the estimate's (1/sqrt(10)).
DEFAULT_PERMUTATIONS = 10
#: Fewest half-samples of an interval: the tails of a 90 % interval from fewer
#: replicates are mostly Monte-Carlo noise.
MIN_REPLICATES = 10
#: Smallest probe set for half-samples (two rows in each half).
_MIN_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class UncertaintyOptions:
    """Validated uncertainty options of one estimator call.

    Attributes
    ----------
    bootstrap : int
        Number of half-samples (0: no interval).
    confidence : float
        Coverage of the intervals, in (0, 1).
    seed : int or None
        Seed of the half-samples and permutations; None draws fresh entropy.
    permutations : int
        Label permutations of the baseline (0: no baseline).
    """

    bootstrap: int = 0
    confidence: float = 0.9
    seed: Optional[int] = 0
    permutations: int = 0

    @property
    def active(self) -> bool:
        """Whether an interval or a baseline is asked for."""
        return self.bootstrap > 0 or self.permutations > 0

    def as_params(self) -> Dict[str, Any]:
        """Return the options as the estimate's ``params`` record them."""
        return {
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
            "seed": self.seed,
            "baseline": self.permutations,
        }


def check_uncertainty(
    bootstrap: Any = 0,
    confidence: Any = 0.9,
    seed: Any = 0,
    baseline: Any = False,
    *,
    owner: str,
) -> UncertaintyOptions:
    """Check the uncertainty parameters of an estimator and return them.

    Parameters
    ----------
    bootstrap : int, default=0
        0 (off) or the number of half-samples, at least :data:`MIN_REPLICATES`.
    confidence : float, default=0.9
        Coverage of the intervals, in (0, 1).
    seed : int or None, default=0
        Non-negative seed, or None for fresh entropy.
    baseline : bool or int, default=False
        True for :data:`DEFAULT_PERMUTATIONS` permutations, an int >= 0 for
        that many (0 or False: off).
    owner : str
        The estimator's name, for the messages.

    Returns
    -------
    UncertaintyOptions

    Raises
    ------
    InvalidParameterError
        ``The 'bootstrap' parameter of binned must be 0 (off) or an int in the
        range [10, inf). Got 3 instead.``
    """
    check_param(bootstrap, "bootstrap", owner, kind="int", low=0)
    if 0 < int(bootstrap) < MIN_REPLICATES:
        raise InvalidParameterError(
            f"The 'bootstrap' parameter of {owner} must be 0 (off) or an int in "
            f"the range [{MIN_REPLICATES}, inf). Got {bootstrap!r} instead; "
            "intervals from fewer half-samples are mostly Monte-Carlo noise."
        )
    check_param(
        confidence,
        "confidence",
        owner,
        low=0.0,
        high=1.0,
        low_closed=False,
        high_closed=False,
    )
    if seed is not None:
        check_param(seed, "seed", owner, kind="int", low=0)
    if isinstance(baseline, (bool, np.bool_)):
        permutations = DEFAULT_PERMUTATIONS if baseline else 0
    elif isinstance(baseline, Integral) and int(baseline) >= 0:
        permutations = int(baseline)
    else:
        raise InvalidParameterError(
            f"The 'baseline' parameter of {owner} must be a bool or an int in the "
            f"range [0, inf) (the number of label permutations). Got {baseline!r} "
            "instead."
        )
    return UncertaintyOptions(
        bootstrap=int(bootstrap),
        confidence=float(confidence),
        seed=None if seed is None else int(seed),
        permutations=permutations,
    )


def split_uncertainty(
    params: Mapping[str, Any], *, shared: Tuple[str, ...] = ()
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split keyword parameters into (uncertainty options, estimator parameters).

    Names in ``shared`` (an estimator's own ``seed``) go to both.
    """
    options = {k: v for k, v in params.items() if k in PARAMETERS}
    rest = {k: v for k, v in params.items() if k not in PARAMETERS or k in shared}
    return options, rest


def take_rows(a: Any, index: np.ndarray) -> Any:
    """Return the rows ``index`` of ``a``, keeping its type and device.

    Parameters
    ----------
    a : array-like, Tensor or None
        Activations, labels or inputs (``None`` stays None).
    index : ndarray of int64
        Row indices.

    Returns
    -------
    Tensor, ndarray or None
        A tensor's rows on its own device; anything else as a numpy array.
    """
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a[torch.from_numpy(index).to(a.device)]
    return np.asarray(a)[index]


def n_rows(a: Any) -> Optional[int]:
    """Return the number of rows of an array or tensor (None for a scalar)."""
    if isinstance(a, torch.Tensor):
        return int(a.shape[0]) if a.ndim else None
    shape = np.shape(a)
    return int(shape[0]) if len(shape) else None


def half_sample_interval(
    estimate: float,
    replicates: np.ndarray,
    n: int,
    m: int,
    confidence: float,
    *,
    ceiling: Optional[float] = None,
) -> Tuple[float, float]:
    """Interval of an estimator's mean at size ``n`` from half-sample replicates.

    Parameters
    ----------
    estimate : float
        The estimate on all ``n`` samples, in bits.
    replicates : ndarray of shape (B,)
        Estimates on ``B`` subsets of ``m`` rows drawn without replacement
        (NaN for a failed replicate).
    n, m : int
        Sample size and subset size (``0 < m < n``).
    confidence : float
        Coverage, in (0, 1).
    ceiling : float, optional
        Upper bound of every estimate (bits); the interval is clipped at it.

    Returns
    -------
    (low, high) : tuple of float
        ``estimate -+ t * sqrt(m / (n - m)) * sd(replicates)``, in bits; NaN
        for a NaN estimate or when fewer than half the replicates are finite
        (at least 2 are needed).

    Examples
    --------
    >>> import numpy as np
    >>> lo, hi = half_sample_interval(1.0, np.array([0.9, 1.1] * 10), 100, 50, 0.9)
    >>> round(hi - 1.0, 4) == round(1.0 - lo, 4)
    True
    """
    from scipy.stats import t as student_t

    reps = np.asarray(replicates, dtype=float)
    finite = reps[np.isfinite(reps)]
    if (
        not math.isfinite(estimate)
        or finite.size < 2
        or 2 * finite.size < reps.size
        or not 0 < m < n
    ):
        return math.nan, math.nan
    se = math.sqrt(m / (n - m)) * float(np.std(finite, ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, df=finite.size - 1)) * se
    low, high = estimate - half, estimate + half
    if estimate >= 0.0 and bool(np.all(finite >= 0.0)):
        low = max(low, 0.0)
    if ceiling is not None and math.isfinite(ceiling) and estimate <= ceiling:
        high = min(high, ceiling)
    return low, high


def _generators(seed: Optional[int]) -> Tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the half-samples and the permutations.

    Two children of one :class:`numpy.random.SeedSequence`, so that the
    number of permutations never changes the half-samples and vice versa.
    """
    subsets, perms = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(subsets), np.random.default_rng(perms)


def _replicates(
    call: Callable[[Any, Any, Any], Any],
    draws: Iterable[Tuple[Any, Any, Any]],
    count: int,
) -> Tuple[np.ndarray, List[BaseException]]:
    """Run ``call`` on each (t, y, x) with warnings silenced; (values, errors).

    ``draws`` is consumed lazily (one replicate's rows in memory at a time).
    ``values`` has shape (count, 2): I(X;T) and I(T;Y) in bits, NaN where the
    call failed.
    """
    values = np.full((count, 2), np.nan)
    errors: List[BaseException] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, (t, y, x) in enumerate(draws):
            try:
                r = call(t, y, x)
            except Exception as exc:  # a half-sample too small for the estimator
                errors.append(exc)
                continue
            values[b] = (float(r.i_xt), float(r.i_ty))
    return values, errors


def _warn_failures(
    owner: str, what: str, errors: List[BaseException], total: int
) -> None:
    """Say how many replicates failed (for the caller of the estimator)."""
    if errors:
        warnings.warn(
            f"{len(errors)} of {total} {what} of {owner} failed and were left out "
            f"(first error: {errors[0]}). With fewer than half left, the result is "
            "NaN.",
            EstimationWarning,
            stacklevel=4,
        )


def with_uncertainty(
    func: Callable[..., Any],
    owner: str,
    *,
    ceiling: Optional[Callable[[Any, int], float]] = None,
) -> Callable[..., Any]:
    """Wrap an estimator so that it takes the uncertainty parameters.

    Parameters
    ----------
    func : callable
        ``func(t, y, *, x=None, **params) -> InformationEstimate``.
    owner : str
        The estimator's registry name, for messages.
    ceiling : callable, optional
        ``ceiling(x, n)``: the largest I(X;T) the estimator can give on ``n``
        samples with inputs ``x`` (bits); reported as ``i_xt_ceiling`` and
        clipping the I(X;T) interval.

    Returns
    -------
    callable
        ``wrapper(t, y, *, x=None, bootstrap=0, confidence=0.9, seed=0,
        baseline=False, **params)``; with the defaults it returns exactly what
        ``func`` returns. Its ``inspect.signature`` lists the new parameters.

    Raises
    ------
    TypeError
        ``func`` already has a parameter ``bootstrap``, ``confidence`` or
        ``baseline`` (its own ``seed`` is shared: one seed drives both).
    """
    sig = inspect.signature(func)
    own = set(sig.parameters)
    clash = sorted(own & (set(PARAMETERS) - {"seed"}))
    if clash:
        raise TypeError(
            f"Estimator {owner!r} has its own parameter {clash[0]!r}, which "
            "every registered estimator takes for its intervals and baselines "
            f"({', '.join(PARAMETERS)}). Rename it."
        )
    shared = ("seed",) if "seed" in own else ()
    own_seed_default = sig.parameters["seed"].default if shared else None

    @functools.wraps(func)
    def wrapper(t: Any, y: Any, *, x: Any = None, **params: Any) -> Any:
        options, rest = split_uncertainty(params, shared=shared)
        if shared and "seed" not in options and own_seed_default is not None:
            options["seed"] = own_seed_default
        opts = check_uncertainty(**options, owner=owner)
        result = func(t, y, x=x, **rest)
        if not opts.active:
            return result
        return _add_uncertainty(func, result, t, y, x, rest, opts, owner, ceiling)

    params = list(sig.parameters.values())
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in DEFAULTS.items()
        if name not in own
    ]
    at = next(
        (i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD),
        len(params),
    )
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*params[:at], *extra, *params[at:]]
    )
    wrapper.__doc__ = (func.__doc__ or "") + _DOC_NOTE
    return wrapper


def outside_wrapper(stacklevel: int) -> int:
    """Return ``stacklevel`` for a warning, moved past this module's wrapper.

    For a function ``f`` (an estimator's helper, such as ``warn_pinned``)
    that calls ``warnings.warn(..., stacklevel=outside_wrapper(k))``: the
    frame that ``k`` names, counted from ``f``, is skipped (with any further
    ones) while it belongs to this module, so that an estimator's warning
    points at the line that called the estimator, not at the wrapper that
    :func:`with_uncertainty` puts around it. Without a wrapper, ``k`` itself.
    """
    k = stacklevel
    try:
        frame = sys._getframe(k)  # 0: this function, 1: f, k: the frame k names
        while frame is not None and frame.f_code.co_filename == __file__:
            k += 1
            frame = frame.f_back
    except ValueError:  # the stack is not that deep
        return stacklevel
    return k


_DOC_NOTE = """
    Uncertainty and baselines (every registered estimator): ``bootstrap=B``
    (0 = off) adds ``i_xt_ci`` and ``i_ty_ci``, ``(low, high)`` intervals in
    bits from ``B`` half-samples drawn without replacement, covering
    ``confidence`` (default 0.9) of the estimator's mean at this sample
    size; ``baseline=True`` adds ``i_ty_baseline``, the mean I(T;Y) over
    label permutations (same estimator, same n). ``seed`` (default 0) seeds
    both. See ``ibmonitor.estimators._uncertainty`` and docs/estimators.md.
"""


def _add_uncertainty(
    func: Callable[..., Any],
    result: Any,
    t: Any,
    y: Any,
    x: Any,
    params: Dict[str, Any],
    opts: UncertaintyOptions,
    owner: str,
    ceiling: Optional[Callable[[Any, int], float]],
) -> Any:
    """Return ``result`` with its intervals, baseline and ceiling added."""
    n = n_rows(t)
    if n is None:  # the estimator accepted it; nothing to resample
        return result
    top = None if ceiling is None else float(ceiling(x, n))

    def call(tt: Any, yy: Any, xx: Any) -> Any:
        return func(tt, yy, x=xx, **params)

    sub_rng, perm_rng = _generators(opts.seed)
    updates: Dict[str, Any] = {}
    if opts.bootstrap:
        if n < _MIN_SAMPLES:
            raise InvalidParameterError(
                f"bootstrap={opts.bootstrap} of {owner} needs at least "
                f"{_MIN_SAMPLES} samples (two in each half-sample). Got {n}."
            )
        m = n // 2

        def halves() -> Iterator[Tuple[Any, Any, Any]]:
            for _ in range(opts.bootstrap):
                index = np.sort(sub_rng.permutation(n)[:m]).astype(np.int64)
                yield take_rows(t, index), take_rows(y, index), take_rows(x, index)

        values, errors = _replicates(call, halves(), opts.bootstrap)
        _warn_failures(owner, "half-samples", errors, opts.bootstrap)
        updates["i_xt_ci"] = half_sample_interval(
            float(result.i_xt), values[:, 0], n, m, opts.confidence, ceiling=top
        )
        updates["i_ty_ci"] = half_sample_interval(
            float(result.i_ty), values[:, 1], n, m, opts.confidence
        )
    if opts.permutations:
        shuffled = (
            (t, take_rows(y, perm_rng.permutation(n).astype(np.int64)), x)
            for _ in range(opts.permutations)
        )
        values, errors = _replicates(call, shuffled, opts.permutations)
        _warn_failures(owner, "label permutations", errors, opts.permutations)
        floor = values[:, 1][np.isfinite(values[:, 1])]
        updates["i_ty_baseline"] = (
            float(floor.mean()) if 2 * floor.size >= opts.permutations else math.nan
        )
    if top is not None:
        updates["i_xt_ceiling"] = top
    updates["params"] = {**dict(result.params), **opts.as_params()}
    return dataclasses.replace(result, **updates)
