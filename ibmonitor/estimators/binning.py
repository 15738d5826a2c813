"""Binned (plug-in) mutual information: a sample's binned activations form a symbol.

The estimator discretises every unit of a layer, treats the tuple of a sample's
bin indices as one discrete symbol, and computes plug-in Shannon entropies of
those symbols (in bits). It is the estimator of Shwartz-Ziv & Tishby (2017),
with the fixed bin size of Saxe et al. (2018) and the equal-mass bins of
Chelombiev et al. (2019) as options.

Implementation
--------------
Everything runs on the device of ``t``. Bin indices are computed in row
blocks (so the intermediate arrays stay in cache), each row's indices are
packed into integers by an exact mixed-radix code (several units per code),
and rows needing more than one code are identified by a 64-bit hash whose
collisions are *checked* (equal hashes of unequal rows send the call to an
exact, collision-free path). The class-conditional entropies come from a
single count of joint ``(symbol, label)`` codes, without a loop over classes.
The uniform grid's indices come from ``floor((v - lo) * scale)`` rather than a
search among the edges; :func:`_uniform_plan` proves, per grid, that this
equals ``numpy.digitize`` for float32 values, and the other cases compare each
value with its bin's edges.
The result equals ``numpy.digitize`` followed by ``numpy.unique(axis=0)``
exactly; ``tests/estimators/test_binning.py`` checks this against such a slow
reference.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch

from .._validation import (
    as_tensor,
    check_activations,
    check_consistent_samples,
    check_labels,
    check_param,
)
from ..exceptions import InvalidParameterError
from ._common import (
    PINNED_MARGIN,
    InformationEstimate,
    entropy_from_counts,
    input_ids,
    pinned_at_ceiling,
    register,
    warn_pinned,
)

__all__ = ["binned"]

logger = logging.getLogger(__name__)

_OWNER = "binned"
_LN2 = math.log(2.0)
# Rows of t processed at once when computing bin indices: big enough to amortise
# the per-operation overhead, small enough for the float64 block to stay in cache.
_BLOCK_ELEMENTS = 1 << 17
# Largest code a float64 holds exactly (mixed-radix digits packed by a matmul).
_FLOAT_CODE_LIMIT = 2**52
# Largest code packed into one int64 on the integer path.
_INT_CODE_LIMIT = 2**62


def _check_params(
    n_bins: Any = 30,
    value_range: Any = "auto",
    bin_size: Any = None,
    strategy: Any = "uniform",
    miller_madow: Any = False,
) -> Optional[Tuple[float, float]]:
    """Check the parameters of :func:`binned`; return the fixed range or None."""
    check_param(n_bins, "n_bins", _OWNER, kind="int", low=2)
    check_param(
        strategy, "strategy", _OWNER, kind="option", options=("uniform", "quantile")
    )
    if bin_size is not None:
        check_param(bin_size, "bin_size", _OWNER, low=0.0, low_closed=False)
        if strategy != "uniform":
            raise InvalidParameterError(
                f"The 'bin_size' parameter of {_OWNER} cannot be combined with "
                f"strategy={strategy!r}; pass one or the other. "
                f"Got bin_size={bin_size!r}."
            )
    if not isinstance(miller_madow, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The 'miller_madow' parameter of {_OWNER} must be a bool. "
            f"Got {miller_madow!r} instead."
        )
    return _check_value_range(value_range)


@register("binned", inputs="ids", check=_check_params, ceiling="inputs")
def binned(
    t: Any,
    y: Any,
    *,
    x: Any = None,
    n_bins: int = 30,
    value_range: Union[str, Tuple[float, float]] = "auto",
    bin_size: Optional[float] = None,
    strategy: str = "uniform",
    miller_madow: bool = False,
) -> InformationEstimate:
    """Estimate I(X;T) and I(T;Y) of a layer by binning its activations.

    Each unit is discretised, a sample's symbol is the tuple of its units' bin
    indices, and plug-in entropies of these symbols give

    * I(X;T) = H(T) when ``x`` is None (every sample counts as a distinct input),
      or H(T) - H(T|X) when ``x`` groups samples with identical inputs;
    * I(T;Y) = H(T) - sum_y p(y) H(T | Y=y).

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer, numpy or torch (CPU or CUDA), any floating
        dtype. A 1-D array is read as one unit. The computation runs on the
        device of ``t``.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels of the same samples.
    x : array-like or Tensor of shape (n_samples,) or (n_samples, n_features), \
default=None
        Input ids (1-D) or the inputs themselves; samples with equal rows of
        ``x`` are the same input. None means every sample is a distinct input.
    n_bins : int, default=30
        Number of bin edges of the uniform strategy (``n_bins - 1`` intervals,
        ``n_bins + 1`` symbols per unit counting the two outer ones), or number
        of equal-mass bins of the quantile strategy. At least 2. Ignored when
        ``bin_size`` is given.
    value_range : "auto" or (float, float), default="auto"
        ``(lo, hi)`` of the uniform edges. ``"auto"`` takes the minimum and
        maximum of ``t`` (over all units of the layer, recomputed at each
        call). ``(-1.0, 1.0)`` reproduces Shwartz-Ziv & Tishby's setting for
        tanh layers. Ignored by the quantile strategy and by ``bin_size``.
    bin_size : float, default=None
        If given, each value becomes ``floor(v / bin_size)`` (computed in
        float64), without a range limit (Saxe et al. 2018). Must be > 0.
        Only with ``strategy="uniform"``.
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"uniform"``: edges ``numpy.linspace(lo, hi, n_bins)`` and the index
        ``numpy.digitize(v, edges)``, so values below ``lo`` form symbol 0 and
        values at or above ``hi`` symbol ``n_bins``. ``"quantile"``: per unit,
        ``n_bins`` bins of equal mass, with the ``n_bins - 1`` inner edges at
        ``numpy.quantile(t[:, j], linspace(0, 1, n_bins + 1)[1:-1])`` (linear
        interpolation) and the same ``digitize`` rule (Chelombiev et al. 2019).
    miller_madow : bool, default=False
        Add the Miller-Madow bias correction ``(m - 1) / (2 n ln 2)`` bits to
        every plug-in entropy (``m`` occupied symbols among ``n`` samples).

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits, ``params`` as used, and ``extras``:
        ``h_t`` (H(T) in bits), ``h_t_given_y`` (H(T|Y) in bits) and
        ``n_symbols`` (number of distinct symbols) and ``resolution``, the
        first-order bias of the plug-in H(T), ``(m - 1) / (2 n ln 2)`` bits
        (the Miller-Madow term, ``m`` symbols among ``n`` samples): changes
        smaller than this are within the estimator's own bias. ``pinned`` (see
        Notes) says whether the estimate sits at its ceiling.

    Raises
    ------
    InvalidParameterError
        Bad parameters (``n_bins < 2``, an unknown ``strategy``, a
        non-positive ``bin_size``, ``value_range`` with ``lo >= hi``), fewer
        than 2 samples, NaN or Inf activations, non-integer labels,
        inconsistent numbers of samples.

    Warns
    -----
    EstimationWarning
        When the estimate is pinned: (almost) every sample falls in its own
        bin, so I(X;T) sits at log2(n_samples) (at H(X) with ``x``) whatever
        the layer does.

    Notes
    -----
    Plug-in entropies are in bits: ``H = log2 n - sum_s c_s log2 c_s / n``.
    H(T|Y) and H(T|X) are computed from the counts of joint (symbol, label)
    and (symbol, input) codes: ``H(T|Y) = (sum_y n_y log2 n_y - sum_{s,y}
    c_{sy} log2 c_{sy}) / n``. With the plug-in estimator
    0 <= I(T;Y) <= min(H(T), H(Y)) and I(X;T) <= log2(n_samples) hold exactly.

    With ``miller_madow=True`` each entropy gets ``(m - 1) / (2 n ln 2)``
    bits (Miller 1955); a conditional entropy sum_y p(y) H(T|Y=y) thereby gets
    ``(m_TY - K) / (2 n ln 2)``, with ``m_TY`` the number of occupied joint
    cells and ``K`` the number of classes. The corrected mutual informations
    can be negative when T carries almost no information; they are clipped at
    0. Plug-in estimates are clipped at 0 too, against rounding only.

    Binned estimates of a deterministic network measure the discretisation as
    much as the network: with enough bins every input gets its own symbol and
    I(X;T) = log2(n); with few bins, the numbers change with ``n_bins``, the
    range, and the scale of the activations (Saxe et al. 2018; Goldfeld et al.
    2019). Compare estimates only across epochs and layers binned the same way.
    ``value_range="auto"`` adapts the grid to each layer and epoch, which keeps
    unbounded (ReLU) layers from piling into the outer symbol but makes the
    grid change over training; a fixed ``value_range`` or ``bin_size`` keeps
    one grid for the whole run.

    **Pinned estimates.** When I(X;T) is within
    :data:`~ibmonitor.estimators.PINNED_MARGIN` (0.1 bit) of its ceiling,
    ``log2(n_samples)`` (or H(X) when ``x`` groups samples), fewer than about
    one sample in twenty shares its bin (each pair that does lowers H(T) by
    ``2 / n`` bits), and I(T;Y) is then H(Y) up to the same margin. Such an
    estimate describes the sample size, not the layer: the result's
    ``pinned`` field holds the reason, ``as_dict()`` reports ``pinned=1.0``,
    and an ``EstimationWarning`` says so. Wide layers (hundreds of units)
    are pinned at any usual ``n_bins``; estimate them with ``"renyi"``.

    References
    ----------
    .. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
       networks via information", arXiv:1703.00810, 2017.
    .. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
       learning", ICLR 2018.
    .. [3] I. Chelombiev, C. Houghton and C. O'Donnell, "Adaptive estimators
       show information compression in deep neural networks", ICLR 2019.
    .. [4] G. A. Miller, "Note on the bias of information estimates", in
       Information Theory in Psychology, 1955.
    .. [5] Z. Goldfeld et al., "Estimating information flow in deep neural
       networks", ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from ibmonitor import estimators
    >>> y = np.array([0, 0, 1, 1])
    >>> t = np.array([[-0.9], [-0.9], [0.9], [0.9]])
    >>> r = estimators.binned(t, y, value_range=(-1.0, 1.0))
    >>> r.i_xt, r.i_ty
    (1.0, 1.0)
    """
    fixed_range = _check_params(
        n_bins=n_bins,
        value_range=value_range,
        bin_size=bin_size,
        strategy=strategy,
        miller_madow=miller_madow,
    )

    tt, lo_t, hi_t = _activations(t)
    n = tt.shape[0]
    yt = check_labels(y, n).to(tt.device)
    xids = None
    if x is not None:
        xt = x if isinstance(x, torch.Tensor) else np.asarray(x)
        check_consistent_samples(x=xt.shape[0], t=n)
        xids = input_ids(xt, n_samples=n).to(tt.device)

    if tt.shape[1] == 0 or lo_t == hi_t:  # no units, or a constant layer
        codes = torch.zeros((n, 1), dtype=torch.int64, device=tt.device)
    elif bin_size is not None:
        digits, radices = _size_digits(tt, float(bin_size))
        codes = _pack_int(digits, radices)
    elif strategy == "quantile":
        digits = _quantile_digits(tt, n_bins)
        codes = _pack_int(digits, [n_bins] * tt.shape[1])
    else:
        lo, hi = (lo_t, hi_t) if fixed_range is None else fixed_range
        codes = _uniform_codes(tt, lo, hi, n_bins)
    sym = _row_ids(codes)

    res = _information(sym, yt, xids, n, bool(miller_madow))
    pinned = _pinned_reason(res, xids, n)
    if pinned is not None:
        warn_pinned(pinned)
    params = {
        "n_bins": int(n_bins),
        "value_range": value_range if fixed_range is None else list(fixed_range),
        "bin_size": None if bin_size is None else float(bin_size),
        "strategy": strategy,
        "miller_madow": bool(miller_madow),
    }
    return InformationEstimate(
        estimator="binned",
        i_xt=res["i_xt"],
        i_ty=res["i_ty"],
        params=params,
        extras={
            "h_t": res["h_t"],
            "h_t_given_y": res["h_t_given_y"],
            "n_symbols": float(res["n_symbols"]),
            "resolution": (res["n_symbols"] - 1) / (2.0 * n * _LN2),
        },
        pinned=pinned,
    )


def _pinned_reason(res: dict, xids: Optional[torch.Tensor], n: int) -> Optional[str]:
    """Why the estimate is pinned at its ceiling, or None (see :func:`binned`)."""
    if xids is None:
        ceiling, what = math.log2(n), f"log2({n})"
    else:
        ceiling = entropy_from_counts(torch.unique(xids, return_counts=True)[1])
        what = "H(X)"
    if not pinned_at_ceiling(res["i_xt"], ceiling):
        return None
    m = res["n_symbols"]
    alone = "every sample is" if m == n else "almost every sample is"
    return (
        f"I(X;T) = {res['i_xt']:.2f} bits is within {PINNED_MARGIN} bit of "
        f"{what} = {ceiling:.2f} bits: {m} symbols for {n} samples, {alone} in "
        "its own bin, so I(X;T) measures the sample size and I(T;Y) = H(Y) "
        "whatever the layer does. Use fewer bins or a larger bin_size, more "
        "samples, or the 'renyi' estimator for wide layers."
    )


# --------------------------------------------------------------------------- checks


def _check_value_range(value_range: Any) -> Optional[Tuple[float, float]]:
    """Return ``(lo, hi)`` as floats, or None for ``"auto"``."""
    if isinstance(value_range, str):
        if value_range == "auto":
            return None
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            pass
        else:
            if math.isfinite(hi - lo) and lo < hi:
                return lo, hi
    raise InvalidParameterError(
        f"The 'value_range' parameter of {_OWNER} must be 'auto' or a pair "
        f"(lo, hi) of finite floats with lo < hi. Got {value_range!r} instead."
    )


def _activations(t: Any) -> Tuple[torch.Tensor, float, float]:
    """Validate ``t`` and return it as a 2-D float tensor with its min and max.

    A finite minimum and maximum prove that there is no NaN or Inf, at the cost
    of one reduction; only when that quick test fails (or the shape or dtype
    is unusual) does :func:`check_activations` run, to convert or to raise its
    standard message.
    """
    tt = as_tensor(t, name="t")
    if tt.ndim == 1:
        tt = tt[:, None]
    if (
        tt.ndim != 2
        or tt.shape[0] < 2
        or tt.shape[1] == 0
        or not torch.is_floating_point(tt)
    ):
        tt = check_activations(t, name="t")
        if tt.shape[1] == 0:
            return tt, 0.0, 0.0
    lo, hi = (float(v) for v in torch.aminmax(tt))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_activations(tt, name="t")  # raises, naming the NaN or Inf count
    return tt, lo, hi


# ------------------------------------------------------------------ uniform strategy


def _uniform_codes(tt: torch.Tensor, lo: float, hi: float, n_bins: int) -> torch.Tensor:
    """Row codes (int64, shape (n, n_codes)) of ``numpy.digitize(t, linspace(...))``.

    Each unit's index ``i`` in ``0..n_bins`` is stored as the digit ``i - 1``
    of a mixed-radix number in base ``n_bins + 1``; groups of units share one
    code, packed by a float64 matrix-vector product that is exact because every
    partial sum is an integer below 2**52.
    """
    n, u = tt.shape
    device = tt.device
    radix = n_bins + 1
    per_code = max(1, math.floor(math.log(_FLOAT_CODE_LIMIT) / math.log(radix)))
    n_codes = -(-u // per_code)
    per_code = -(-u // n_codes)  # spread the units evenly over the codes
    width = n_codes * per_code  # >= u; the padding columns stay 0
    place = _place_values(radix, per_code, str(device))
    scale = _scale(lo, hi, n_bins)
    edges, fast_ok = _uniform_plan(lo, hi, n_bins)
    exact_fast = fast_ok and tt.dtype in (torch.float32, torch.float16, torch.bfloat16)
    table = None if exact_fast else _edge_table(edges, device)
    out = torch.empty((n, n_codes), dtype=torch.float64, device=device)
    rows = max(1, min(n, _BLOCK_ELEMENTS // width))
    alloc = torch.empty if width == u else torch.zeros  # padding columns must be 0
    buf = alloc((rows, width), dtype=torch.float64, device=device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        blk = buf[: stop - start]
        b = blk if width == u else blk[:, :u]
        b.copy_(tt[start:stop])
        _position_(b, lo, scale, n_bins)
        if table is not None:
            _correct_(b, tt[start:stop], table)
        torch.mv(blk.view(-1, per_code), place, out=out[start:stop].view(-1))
    return out.to(torch.int64)


def _scale(lo: float, hi: float, n_bins: int) -> float:
    """``(n_bins - 1) / (hi - lo)``, nudged up so that ``hi`` maps to ``n_bins - 1``.

    Without the nudge, ``(hi - lo) * scale`` may round to just below
    ``n_bins - 1`` and put the values equal to ``hi`` one symbol too low.
    """
    d = hi - lo
    scale = (n_bins - 1) / d
    while d * scale < n_bins - 1:
        scale = math.nextafter(scale, math.inf)
    return scale


def _position_(b: torch.Tensor, lo: float, scale: float, n_bins: int) -> torch.Tensor:
    """In place: ``clamp(floor((v - lo) * scale), -1, n_bins - 1)`` (float64).

    This is the estimated ``digitize`` index minus one. Only a subtraction and
    a multiplication are rounded (both exactly as IEEE prescribes, on any
    device); :func:`_uniform_plan` applies the same operations to probe
    values, so it sees the same rounding.
    """
    b.sub_(lo).mul_(scale).floor_().clamp_(-1, n_bins - 1)
    return b


def _correct_(d: torch.Tensor, v: torch.Tensor, table: torch.Tensor) -> None:
    """Make estimated digits exact by comparing the values with their bin's edges.

    ``table`` holds ``[-inf, edges..., +inf, +inf]`` in float64; with the
    estimate ``i = d + 1`` off by at most one, the exact index is
    ``i - (v < table[i]) + (v >= table[i + 1])``.
    """
    v64 = v.to(torch.float64)
    idx = (d + 1).to(torch.int64)
    d.sub_(torch.lt(v64, table[idx]).to(d.dtype))
    d.add_(torch.ge(v64, table[idx + 1]).to(d.dtype))


@functools.lru_cache(maxsize=64)
def _place_values(radix: int, per_code: int, device: str) -> torch.Tensor:
    """Float64 place values ``radix**k`` for ``k < per_code``."""
    return torch.tensor(
        [float(radix) ** k for k in range(per_code)], dtype=torch.float64
    ).to(device)


def _edge_table(edges: np.ndarray, device: torch.device) -> torch.Tensor:
    table = np.concatenate([[-np.inf], edges, [np.inf, np.inf]])
    return torch.from_numpy(table).to(device)


#: Grids of at most this many bins are cached (256 of them: at most 32 MiB of
#: edges, plus the check). Larger grids, whose edges alone take 8 bytes per
#: bin (7.6 MiB at n_bins=10**6), are planned on every call: with
#: value_range="auto" each epoch has its own range, so caching them would keep
#: gigabytes alive for nothing.
_PLAN_CACHE_MAX_BINS = 16384


def _uniform_plan(lo: float, hi: float, n_bins: int) -> Tuple[np.ndarray, bool]:
    """:func:`_plan_uniform`, cached for grids of at most 16384 bins."""
    if n_bins <= _PLAN_CACHE_MAX_BINS:
        return _cached_uniform_plan(lo, hi, n_bins)
    return _plan_uniform(lo, hi, n_bins)


def _plan_uniform(lo: float, hi: float, n_bins: int) -> Tuple[np.ndarray, bool]:
    """Edges ``numpy.linspace(lo, hi, n_bins)`` and whether the fast path is exact.

    The fast path computes ``floor((v - lo) * scale)`` in float64 without
    looking at the edges. For float32 values this equals the ``digitize``
    index except possibly for values within a rounding window
    ``W = 2**-40 (|lo| + |hi|)`` of an edge (the true error is below
    ``2**-48 (|lo| + |hi|)``; the window has a wide margin). A float32 value can
    only be that close to an edge if it is one of the few float32 numbers
    inside the window, so those are enumerated and checked here, once per
    ``(lo, hi, n_bins)``, with the operations the fast path runs (IEEE
    subtraction and multiplication, which round identically in numpy and in
    torch on any device). The edge ``lo`` itself is always exact (the sign of
    ``v - lo`` survives rounding). An edge next to which float32 numbers are too
    dense to enumerate (an edge at or near 0 inside the range) makes the call
    use the exact path, which compares each value with its bin's edges.
    """
    edges = np.linspace(lo, hi, n_bins)
    window = 2.0**-40 * (abs(lo) + abs(hi))
    inner = edges[edges != lo]
    if inner.size == 0:
        return edges, True
    with np.errstate(over="ignore", invalid="ignore"):
        near = inner.astype(np.float32)  # the float32 number nearest each edge
        # float32 numbers around an edge are at least spacing/2 apart, so the 17
        # numbers near +- 8 steps away cover the window when spacing >= window
        if not np.all(np.spacing(np.abs(near)) >= window):
            return edges, False
    steps = np.arange(-8, 9, dtype=np.int32)
    values = (near.view(np.int32)[:, None] + steps).view(np.float32)
    values = values.astype(np.float64).ravel()
    exact = np.searchsorted(edges, values, side="right") - 1
    # the operations of _position_, in numpy: IEEE subtraction and multiplication
    # round the same way in numpy and in torch, on the CPU and on CUDA
    est = np.floor((values - lo) * _scale(lo, hi, n_bins))
    est = np.minimum(np.maximum(est, -1.0), n_bins - 1.0)
    return edges, bool((est == exact).all())


_cached_uniform_plan = functools.lru_cache(maxsize=256)(_plan_uniform)


# --------------------------------------------------------------- other strategies


def _size_digits(tt: torch.Tensor, size: float) -> Tuple[torch.Tensor, List[int]]:
    """Digits ``floor(v / size) - min`` (int64) and their per-unit radices."""
    k = torch.floor(tt.to(torch.float64) / size)
    kmin = k.amin(dim=0)
    kmax = k.amax(dim=0)
    digits = (k - kmin).to(torch.int64)
    radices = [int(r) for r in (kmax - kmin + 1).tolist()]
    return digits, radices


def _quantile_digits(tt: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Per-unit equal-mass bin indices ``0..n_bins-1`` (int64, shape (n, u)).

    Inner edges are ``numpy.quantile(t[:, j], q)`` with the default linear
    method, reproduced operation by operation (virtual index ``(n - 1) q`` and
    numpy's two-sided lerp), so that values lying exactly on an edge go where
    numpy puts them.
    """
    n = tt.shape[0]
    device = tt.device
    v = tt.to(torch.float64)
    s = torch.sort(v, dim=0).values  # (n, u)
    q = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev_i = np.where(above, n - 1, prev).astype(np.int64)
    next_i = np.where(above, n - 1, prev + 1).astype(np.int64)
    gamma = torch.from_numpy(virtual - prev).to(device)[:, None]  # (nb-1, 1)
    a = s[torch.from_numpy(prev_i).to(device)]  # (nb-1, u)
    b = s[torch.from_numpy(next_i).to(device)]
    diff = b - a
    edges = torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    edges = edges.T.contiguous()  # (u, nb-1)
    idx = torch.searchsorted(edges, v.T.contiguous(), right=True)  # (u, n)
    return idx.T


def _pack_int(digits: torch.Tensor, radices: List[int]) -> torch.Tensor:
    """Pack int64 digits with per-unit radices into codes (n, n_chunks), exactly."""
    n = digits.shape[0]
    cols = []
    for j, r in enumerate(radices):
        if r >= _INT_CODE_LIMIT:  # absurdly many distinct values: re-index them
            _, inv = torch.unique(digits[:, j], return_inverse=True)
            cols.append((inv, int(inv.max()) + 1 if n else 1))
        else:
            cols.append((digits[:, j], max(int(r), 1)))
    codes = []
    cur: Optional[torch.Tensor] = None
    place = 1
    for col, r in cols:
        if r == 1:
            continue  # a constant unit carries no information
        if cur is None or place * r >= _INT_CODE_LIMIT:
            if cur is not None:
                codes.append(cur)
            cur = col.clone()
            place = r
        else:
            cur = cur + col * place
            place *= r
    if cur is not None:
        codes.append(cur)
    if not codes:
        return torch.zeros((n, 1), dtype=torch.int64, device=digits.device)
    return torch.stack(codes, dim=1)


# ------------------------------------------------------------------ symbol counting


def _row_ids(codes: torch.Tensor) -> torch.Tensor:
    """One int64 per row, equal exactly when the rows of ``codes`` are equal.

    A single column is returned as is. Wider rows get the hash
    ``sum_j codes_j * r_j`` (int64 arithmetic, wrapping modulo 2**64, with
    fixed random odd multipliers ``r_j``). Equal rows always get equal hashes;
    unequal rows with equal hashes are detected by comparing the rows that
    share a hash, and then the exact (slower) re-indexing is used instead.
    """
    if codes.shape[1] == 1:
        return codes[:, 0]
    h = (codes * _hash_multipliers(codes.shape[1], str(codes.device))).sum(1)
    hs, order = torch.sort(h)
    same = hs[1:] == hs[:-1]
    if bool(same.any()):
        rows = codes[order]
        if bool((same & (rows[1:] != rows[:-1]).any(1)).any()):
            logger.debug("row hash collision; using the exact re-indexing path")
            return _row_ids_exact(codes)
    return h


@functools.lru_cache(maxsize=64)
def _hash_multipliers(n_codes: int, device: str) -> torch.Tensor:
    g = np.random.default_rng(20170303)
    r = g.integers(-(2**62), 2**62, size=n_codes, dtype=np.int64) * 2 + 1
    return torch.from_numpy(r).to(device)


def _row_ids_exact(codes: torch.Tensor) -> torch.Tensor:
    """Collision-free row ids: fold the columns one at a time through ``unique``."""
    _, ids = torch.unique(codes[:, 0], return_inverse=True)
    for j in range(1, codes.shape[1]):
        _, col = torch.unique(codes[:, j], return_inverse=True)
        _, ids = torch.unique(ids * (int(col.max()) + 1) + col, return_inverse=True)
    return ids


def _joint_counts(
    sym: torch.Tensor, m: int, other: torch.Tensor, n_other: int
) -> torch.Tensor:
    """Return the counts of the (symbol, other) pairs (``sym`` in 0..m-1).

    Empty pairs may be included as zeros; they contribute nothing.
    """
    key = sym * n_other + other
    if m * n_other <= 4 * sym.numel() + 1024:
        return torch.bincount(key, minlength=m * n_other)
    return torch.unique(key, return_counts=True)[1]


def _labels(yt: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Labels as ``0..K-1`` codes, the per-code counts (zeros allowed), and K."""
    lo, hi = (int(v) for v in torch.aminmax(yt))
    if lo >= 0 and hi < 4 * n + 1024:
        return yt, torch.bincount(yt, minlength=hi + 1), hi + 1
    _, yi, counts = torch.unique(yt, return_inverse=True, return_counts=True)
    return yi, counts, counts.numel()


def _information(
    codes: torch.Tensor,
    yt: torch.Tensor,
    xids: Optional[torch.Tensor],
    n: int,
    miller_madow: bool,
) -> dict:
    """Plug-in (optionally Miller-Madow) entropies and informations, in bits."""
    _, sym, t_counts = torch.unique(
        codes, sorted=False, return_inverse=True, return_counts=True
    )  # unsorted: a hash table on the CPU, cheaper than sorting
    m_t = t_counts.numel()
    if codes.device.type == "cpu":  # small arrays: numpy's per-call cost is lower
        sums, occupied = _count_sums_numpy(
            sym.numpy(),
            m_t,
            t_counts.numpy(),
            yt.numpy(),
            None if xids is None else xids.cpu().numpy(),
            n,
        )
    else:
        sums, occupied = _count_sums_torch(sym, m_t, t_counts, yt, xids, n)
    c = 1.0 / (n * _LN2)  # converts sum c ln c into bits per sample
    h_t = math.log2(n) - sums[0] * c
    h_t_y = (sums[1] - sums[2]) * c
    h_t_x = (sums[3] - sums[4]) * c if xids is not None else 0.0
    if miller_madow:  # occupied: t, y, ty (, x, tx)
        h_t += (occupied[0] - 1) * c / 2
        h_t_y += (occupied[2] - occupied[1]) * c / 2
        if xids is not None:
            h_t_x += (occupied[4] - occupied[3]) * c / 2
    h_t = max(h_t, 0.0)
    h_t_y = max(h_t_y, 0.0)
    return {
        "i_xt": max(h_t - h_t_x, 0.0),
        "i_ty": max(h_t - h_t_y, 0.0),
        "h_t": h_t,
        "h_t_given_y": h_t_y,
        "n_symbols": m_t,
    }


def _count_sums_torch(
    sym: torch.Tensor,
    m_t: int,
    t_counts: torch.Tensor,
    yt: torch.Tensor,
    xids: Optional[torch.Tensor],
    n: int,
) -> Tuple[List[float], List[int]]:
    """``sum c ln c`` and occupied cells of the count groups, on the device."""
    yi, y_counts, k = _labels(yt, n)
    groups = [t_counts, y_counts, _joint_counts(sym, m_t, yi, k)]
    if xids is not None:
        xi, x_counts, kx = _labels(xids, n)
        groups += [x_counts, _joint_counts(sym, m_t, xi, kx)]
    allc = torch.cat(groups).to(torch.float64)
    clogc = torch.special.xlogy(allc, allc)  # c ln c, 0 for c = 0
    parts = [p.sum() for p in torch.split(clogc, [g.numel() for g in groups])]
    parts += [(g > 0).sum() for g in groups]
    vals = torch.stack(parts).tolist()
    k_groups = len(groups)
    return vals[:k_groups], [int(v) for v in vals[k_groups:]]


def _count_sums_numpy(
    sym: np.ndarray,
    m_t: int,
    t_counts: np.ndarray,
    y: np.ndarray,
    xids: Optional[np.ndarray],
    n: int,
) -> Tuple[List[float], List[int]]:
    """Compute what :func:`_count_sums_torch` does, with numpy on the CPU."""

    def labels(v: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
        lo, hi = int(v.min()), int(v.max())
        if lo >= 0 and hi < 4 * n + 1024:
            return v, np.bincount(v, minlength=hi + 1), hi + 1
        _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        return inv.reshape(-1), counts, counts.size

    def joint(other: np.ndarray, k: int) -> np.ndarray:
        key = sym * k + other
        if m_t * k <= 4 * n + 1024:
            return np.bincount(key, minlength=m_t * k)
        return np.unique(key, return_counts=True)[1]

    yi, y_counts, k = labels(y)
    groups = [t_counts, y_counts, joint(yi, k)]
    if xids is not None:
        xi, x_counts, kx = labels(xids)
        groups += [x_counts, joint(xi, kx)]
    allc = np.concatenate(groups).astype(np.float64)
    clogc = allc * np.log(np.maximum(allc, 1.0))  # c ln c, 0 for c = 0
    starts = np.cumsum([0] + [g.size for g in groups[:-1]])
    sums = np.add.reduceat(clogc, starts).tolist()  # no group is empty
    return sums, [int(np.count_nonzero(g)) for g in groups]
