"""Kernel-density (Gaussian-mixture) bounds on the information plane.

The estimator of Kolchinsky & Tracey (2017) as used by Saxe et al. (2018) for
information planes: every sample of a layer becomes a Gaussian of covariance
``noise_variance * I``, and the mutual information between the input and that
noisy layer is bounded from above (pairwise KL divergences) and from below
(pairwise Bhattacharyya distances). All results are in bits.

One matrix of pairwise distances serves both bounds and every class: it is
walked once, in square blocks, exploiting its symmetry, on the device of the
activations, and never held whole in memory.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .._validation import check_activations, check_labels, check_param
from ..exceptions import InvalidParameterError
from ._common import (
    LOG2E,
    PINNED_MARGIN,
    InformationEstimate,
    pinned_at_ceiling,
    register,
    warn_pinned,
)
from ._pairwise import (
    blocks,
    class_ranges,
    compute_dtype,
    default_block_size,
    gaussian_kernel_,
    overlap,
    sq_dist_factors,
)

__all__ = ["kde", "kde_bounds"]

logger = logging.getLogger(__name__)

_BOUNDS = ("upper", "lower", "both")
#: Kernel exponents below -_EXP_FLOOR are raised to it: exp(-80) ~ 1.8e-35 is
#: negligible beside the sample's own term exp(0) = 1 (float32 exp is also far
#: slower once its result underflows). float64 keeps almost its full range.
_EXP_FLOOR = {torch.float32: 80.0, torch.float64: 700.0}
#: Largest squared norm of a scaled sample for which the expansion
#: |a|^2 + |b|^2 - 2ab stays finite in each dtype (with a wide margin).
_MAX_SQ_NORM = {torch.float32: 1e36, torch.float64: 1e300}
#: Above this many classes meeting in one block, class sums use a mask
#: instead of a loop over contiguous sub-blocks.
_MAX_CLASS_LOOP = 8


def _check_kde_inputs(
    t: Any,
    y: Any,
    noise_variance: Any,
    chunk_size: Any,
    owner: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    t = check_activations(t)
    y = check_labels(y, t.shape[0]).to(t.device)
    check_param(noise_variance, "noise_variance", owner, low=0.0, low_closed=False)
    if chunk_size is not None:
        check_param(chunk_size, "chunk_size", owner, kind="int", low=1)
    return t, y


def _kde_terms(
    t: torch.Tensor,
    y: torch.Tensor,
    noise_variance: float,
    bounds: Sequence[str],
    chunk_size: Optional[int],
) -> Dict[str, Tuple[float, float]]:
    """Return ``{bound: (i_xt, h_t_given_y)}`` in bits for the requested bounds.

    ``i_xt = -mean_i log2((1/n) sum_j exp(-D_ij / (s var)))`` with ``s = 2``
    (upper) or ``8`` (lower), and ``h_t_given_y = sum_c p_c * (the same on the
    rows of class c only)``.
    """
    device = t.device
    dtype = compute_dtype(t)
    n = t.shape[0]
    block = int(chunk_size) if chunk_size is not None else default_block_size(device)
    logger.debug(
        "kde: %d samples, %d units, bounds %s, blocks of %d on %s (%s)",
        n,
        t.shape[1],
        tuple(bounds),
        block,
        device,
        dtype,
    )

    # Sort samples by class so that every class is one contiguous range.
    _, y_idx, counts = torch.unique(y, return_inverse=True, return_counts=True)
    order = torch.argsort(y_idx, stable=True)
    counts_list = [int(c) for c in counts.tolist()]
    ranges = class_ranges(counts_list)
    cls_sorted = y_idx[order]

    # Centre in float64 (the expansion |a|^2 + |b|^2 - 2ab loses less to
    # cancellation near the origin), then scale so that the kernel of the
    # base bound is exp(-||u_i - u_j||^2). The lower bound (8 var) is the base
    # when asked for, and the upper one (2 var) is its 4th power:
    # exp(-D / 2v) = exp(-D / 8v) ** 4, two multiplications instead of an exp.
    t64 = t.to(torch.float64)
    z = t64 - t64.mean(dim=0, keepdim=True)
    base = "lower" if "lower" in bounds else "upper"
    factor = 8.0 if base == "lower" else 2.0
    w = z[order] * (1.0 / math.sqrt(factor * noise_variance))
    del t64, z
    dtype = _safe_dtype(w, dtype, noise_variance, factor)
    u = w.to(dtype).contiguous()
    del w
    lhs, rhs = sq_dist_factors(u)
    del u
    floor = _EXP_FLOOR[dtype]

    nb = len(bounds)
    s_all = torch.zeros(nb, n, dtype=torch.float64, device=device)
    s_cls = torch.zeros(nb, n, dtype=torch.float64, device=device)
    side = min(block, n)
    # One slab per bound; the base bound's kernel is written into its slab,
    # the other (if any) is computed from it.
    buf = torch.empty(nb, side * side, dtype=dtype, device=device)
    k_base = list(bounds).index(base)
    pieces = blocks(n, side)
    # Classes meeting each block: [first, last] class index (ranges are sorted).
    starts = [r[0] for r in ranges]
    piece_classes = [
        (bisect_right(starts, i0) - 1, bisect_right(starts, i1 - 1) - 1)
        for i0, i1 in pieces
    ]

    for bi, (i0, i1) in enumerate(pieces):
        lhs_i = lhs[i0:i1]
        for bj in range(bi, len(pieces)):
            j0, j1 = pieces[bj]
            size = (i1 - i0) * (j1 - j0)
            stack = buf[:, :size].view(nb, i1 - i0, j1 - j0)
            e = stack[k_base]
            gaussian_kernel_(e, lhs_i, rhs[j0:j1], floor=floor)
            diagonal = bi == bj
            if diagonal:
                e.fill_diagonal_(1.0)  # the sample's own term, exactly exp(0)
            if nb == 2:
                m = stack[1 - k_base]
                torch.mul(e, e, out=m)
                m.mul_(m)
            c_lo = max(piece_classes[bi][0], piece_classes[bj][0])
            c_hi = min(piece_classes[bi][1], piece_classes[bj][1])
            _accumulate(
                stack,
                s_all,
                s_cls,
                (i0, i1),
                (j0, j1),
                diagonal,
                ranges,
                range(c_lo, c_hi + 1),
                cls_sorted,
            )

    # Every sum holds its own exp(0) = 1, so logs are finite and >= 0.
    counts64 = counts.to(device=device, dtype=torch.float64)
    mean_log_count = float((counts64 * torch.log(counts64)).sum()) / n
    log_all = torch.log(s_all).mean(dim=1)
    log_cls = torch.log(s_cls).mean(dim=1)
    out: Dict[str, Tuple[float, float]] = {}
    for k, b in enumerate(bounds):
        i_xt = (math.log(n) - float(log_all[k])) * LOG2E
        h_ty = (mean_log_count - float(log_cls[k])) * LOG2E
        out[b] = (max(i_xt, 0.0), max(h_ty, 0.0))
    return out


def _safe_dtype(
    w: torch.Tensor, dtype: torch.dtype, noise_variance: float, factor: float
) -> torch.dtype:
    """Return the dtype in which the scaled samples ``w`` give finite distances.

    float32 distances of samples scaled by ``1/sqrt(factor * noise_variance)``
    overflow (and turn every sum into NaN) once squared norms pass ~1e38: such
    layers (activations of 1e18, or a tiny ``noise_variance``) are computed in
    float64. Beyond float64's range the kernel cannot be evaluated and the
    call raises.
    """
    sq_max = float((w * w).sum(dim=1).max())
    if math.isfinite(sq_max) and sq_max <= _MAX_SQ_NORM[torch.float64]:
        if dtype == torch.float32 and sq_max > _MAX_SQ_NORM[torch.float32]:
            logger.debug("kde: squared norms up to %g, computing in float64", sq_max)
            return torch.float64
        return dtype
    raise InvalidParameterError(
        f"kde cannot evaluate its kernel on these activations with "
        f"noise_variance={noise_variance:g}: the squared distances divided by "
        f"{factor:g} * noise_variance reach {sq_max:g}, beyond the float64 range "
        f"(at most {_MAX_SQ_NORM[torch.float64]:g}). Use a larger noise_variance, "
        "scaled to the layer (its squared distances are then a few units)."
    )


def _accumulate(
    m: torch.Tensor,
    s_all: torch.Tensor,
    s_cls: torch.Tensor,
    rows: Tuple[int, int],
    cols: Tuple[int, int],
    diagonal: bool,
    ranges: List[Tuple[int, int]],
    shared_classes: range,
    cls_sorted: torch.Tensor,
) -> None:
    """Add one block's kernel sums to the per-sample totals (float64).

    Off-diagonal blocks stand for themselves and their mirror image, so their
    column sums go to the column samples; diagonal blocks count rows only.
    """
    i0, i1 = rows
    j0, j1 = cols
    row_sums = m.sum(dim=2)
    s_all[:, i0:i1] += row_sums
    if not diagonal:
        col_sums = m.sum(dim=1)
        s_all[:, j0:j1] += col_sums
    if len(shared_classes) == 0:
        return
    if len(shared_classes) <= _MAX_CLASS_LOOP:
        for c in shared_classes:
            ri = overlap(ranges[c], rows)
            rj = overlap(ranges[c], cols)
            if ri is None or rj is None:
                continue
            sub = m[:, ri[0] - i0 : ri[1] - i0, rj[0] - j0 : rj[1] - j0]
            # A class spanning all the block's columns (rows) has the block's
            # row (column) sums already computed.
            if rj == cols:
                s_cls[:, ri[0] : ri[1]] += row_sums[:, ri[0] - i0 : ri[1] - i0]
            else:
                s_cls[:, ri[0] : ri[1]] += sub.sum(dim=2)
            if diagonal:
                continue
            if ri == rows:
                s_cls[:, rj[0] : rj[1]] += col_sums[:, rj[0] - j0 : rj[1] - j0]
            else:
                s_cls[:, rj[0] : rj[1]] += sub.sum(dim=1)
        return
    same = cls_sorted[i0:i1].unsqueeze(1) == cls_sorted[j0:j1].unsqueeze(0)
    masked = m * same
    s_cls[:, i0:i1] += masked.sum(dim=2)
    if not diagonal:
        s_cls[:, j0:j1] += masked.sum(dim=1)


def _pinned_reason(i_xt: float, n: int, noise_variance: float) -> Optional[str]:
    """Why a KDE estimate is pinned at ``log2 n``, or None (see :func:`kde`)."""
    ceiling = math.log2(n)
    if not pinned_at_ceiling(i_xt, ceiling):
        return None
    return (
        f"I(X;T) = {i_xt:.2f} bits is within {PINNED_MARGIN} bit of "
        f"log2({n}) = {ceiling:.2f} bits: the kernel (noise_variance="
        f"{noise_variance:g}) is narrower than the distances between samples, "
        "so every sample is its own kernel, I(X;T) = log2 n and I(T;Y) = H(Y) "
        "whatever the layer does. Use a larger noise_variance (scaled to the "
        "layer), more samples, or the 'renyi' estimator for wide layers."
    )


def _estimate(
    bound: str,
    terms: Dict[str, Tuple[float, float]],
    params: Dict[str, Any],
    n: int,
) -> InformationEstimate:
    i_xt, h_ty = terms[bound]
    return InformationEstimate(
        estimator="kde",
        i_xt=i_xt,
        i_ty=i_xt - h_ty,
        params=params,
        extras={"h_t": i_xt, "h_t_given_y": h_ty},
        pinned=_pinned_reason(i_xt, n, params["noise_variance"]),
    )


def _check_params(
    noise_variance: Any = 1e-3, bound: Any = "upper", chunk_size: Any = None
) -> None:
    """Check the parameters of :func:`kde` (run by ``estimators.get``)."""
    check_param(bound, "bound", "kde", kind="option", options=_BOUNDS)
    check_param(noise_variance, "noise_variance", "kde", low=0.0, low_closed=False)
    if chunk_size is not None:
        check_param(chunk_size, "chunk_size", "kde", kind="int", low=1)


@register("kde", inputs="none", check=_check_params, ceiling="samples")
def kde(
    t: Any,
    y: Any,
    *,
    x: Any = None,
    noise_variance: float = 1e-3,
    bound: str = "upper",
    chunk_size: Optional[int] = None,
) -> InformationEstimate:
    """Estimate I(X;T) and I(T;Y) by Gaussian-mixture (KDE) bounds, in bits.

    The layer's output is treated as ``T + noise`` with Gaussian noise of
    covariance ``noise_variance * I`` (Kolchinsky & Tracey 2017; Saxe et al.
    2018), so that ``p(t)`` is a mixture of ``n`` Gaussians centred on the
    activations. With ``D_ij`` the squared Euclidean distance between samples
    ``i`` and ``j``, the pairwise-distance bounds on the mixture's entropy,
    minus the noise entropy ``H(T|X)``, give

    - upper bound (pairwise KL):
      ``I(X;T) = -mean_i log2((1/n) sum_j exp(-D_ij / (2 noise_variance)))``;
    - lower bound (pairwise Bhattacharyya): the same with ``8 noise_variance``
      in place of ``2 noise_variance``.

    ``I(T;Y) = H(T) - sum_y p(y) H(T|Y=y)``, where each class's entropy uses
    the same bound on that class's rows only; the noise entropy cancels.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer (numpy array or torch tensor, CPU or CUDA,
        any float dtype). The computation runs on ``t``'s device.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels.
    x : object, default=None
        Ignored: every sample counts as a distinct input (the registry lists
        this estimator with ``inputs="none"``). Accepted so that all
        estimators share one signature.
    noise_variance : float, default=1e-3
        Variance of the Gaussian noise added to each unit; must be > 0. The
        bounds grow as it shrinks, up to ``log2 n_samples`` once every pair
        of distinct samples is far apart on that scale.
    bound : {"upper", "lower", "both"}, default="upper"
        Which bound ``i_xt`` and ``i_ty`` report. ``"both"`` reports the upper
        bound as ``i_xt``/``i_ty`` and adds the lower bound as the extras
        ``i_xt_lower``, ``i_ty_lower``, ``h_t_lower`` and ``h_t_given_y_lower``,
        computed from the same distances at little extra cost (see
        :func:`kde_bounds`).
    chunk_size : int, optional
        Side of the square blocks the distance matrix is walked in (default
        2048 on the CPU, 4096 on CUDA). Memory grows with its square, never
        with ``n_samples ** 2``; the result does not depend on it.

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits, and two extras in bits, entropies
        measured relative to the noise entropy ``H(T|X)`` (the differential
        entropies themselves depend on the units): ``h_t``, the bound on
        ``H(T) - H(T|X)``, which equals ``i_xt``; and ``h_t_given_y``,
        ``sum_y p(y) H(T|Y=y) - H(T|X)``, the bound's estimate of ``I(X;T|Y)``,
        so that ``i_ty = h_t - h_t_given_y``. (Binned estimators report plain
        entropies under the same names; with every input distinct they agree
        in meaning.) ``pinned`` holds the reason when the estimate is pinned
        at ``log2 n_samples`` (see Notes), else None.

    Warns
    -----
    EstimationWarning
        When the estimate is pinned: every sample is its own kernel.

    Raises
    ------
    InvalidParameterError
        ``noise_variance <= 0``, an unknown ``bound``, a ``chunk_size`` below
        1, mismatched sample counts, non-integer labels, fewer than 2
        samples, or NaN/Inf activations.

    Notes
    -----
    ``I(X;T)`` is a true upper (lower) bound on the mutual information between
    the input and the noisy layer, because the noise entropy ``H(T|X)`` is
    known exactly. ``I(T;Y)`` is a *difference* of two bounds (the mixture
    entropy minus the class-conditional mixture entropies), so it is neither
    an upper nor a lower bound; it may even fall slightly below 0 on samples
    where the classes overlap completely. Only ``i_xt`` and ``h_t_given_y``
    are clipped at 0 (against rounding; both are non-negative in exact
    arithmetic since each kernel sum contains its own term ``exp(0) = 1``).

    **Pinned estimates.** When ``noise_variance`` is small beside the
    squared distances between samples (always so for wide layers at the
    default ``1e-3``: the distances grow with the number of units), each
    sample's kernel sum is its own ``exp(0) = 1`` and the bound is
    ``log2 n_samples``; I(T;Y) is then ``H(Y)`` even for a layer independent
    of the labels. An upper bound within
    :data:`~ibmonitor.estimators.PINNED_MARGIN` (0.1 bit) of ``log2
    n_samples``, where the other samples add on average less than 7 % to
    each sample's own kernel, sets the result's ``pinned`` field (the
    reason; ``pinned=1.0`` in ``as_dict()``) and issues an
    ``EstimationWarning``.

    Identical activations (saturated units) give ``D_ij = 0``; a constant
    layer gives exactly 0 bits for both quantities.

    The distances come from ``|a|^2 + |b|^2 - 2 a.b`` after centring the
    activations, computed in float32 for float32 (and half) inputs and in
    float64 for float64 inputs, clamped at 0; the kernel sums are accumulated
    in float64. On CUDA, enabling TF32 matrix products
    (``torch.backends.cuda.matmul.allow_tf32``) degrades the distances of
    float32 inputs; it is off by default.

    Cost: ``n_samples ** 2 / 2`` kernel evaluations and one ``n_units``-long
    dot product per pair, for both bounds and all classes together; memory
    ``O(chunk_size ** 2 + n_samples * n_units)``.

    References
    ----------
    .. [1] A. Kolchinsky and B. D. Tracey, "Estimating mixture entropy with
       pairwise distances", Entropy 19(7), 361, 2017.
    .. [2] A. M. Saxe, Y. Bansal, J. Dapello, M. Advani, A. Kolchinsky, B. D.
       Tracey and D. D. Cox, "On the information bottleneck theory of deep
       learning", ICLR 2018.

    Examples
    --------
    >>> import math
    >>> import numpy as np
    >>> from ibmonitor import estimators
    >>> rng = np.random.default_rng(0)
    >>> t = rng.standard_normal((200, 3))
    >>> y = (t[:, 0] > 0).astype(int)
    >>> r = estimators.kde(t, y, noise_variance=0.1)
    >>> 0 < r.i_ty < 1 < r.i_xt < math.log2(200)
    True
    """
    check_param(bound, "bound", "kde", kind="option", options=_BOUNDS)
    t, y = _check_kde_inputs(t, y, noise_variance, chunk_size, "kde")
    params = {
        "noise_variance": float(noise_variance),
        "bound": bound,
        "chunk_size": chunk_size,
    }
    n = t.shape[0]
    if bound != "both":
        terms = _kde_terms(t, y, float(noise_variance), (bound,), chunk_size)
        result = _estimate(bound, terms, params, n)
        if result.pinned is not None:
            warn_pinned(result.pinned)
        return result
    terms = _kde_terms(t, y, float(noise_variance), ("upper", "lower"), chunk_size)
    upper = _estimate("upper", terms, params, n)
    lower = _estimate("lower", terms, params, n)
    if upper.pinned is not None:
        warn_pinned(upper.pinned)
    extras = dict(upper.extras)
    extras.update(
        i_xt_lower=lower.i_xt,
        i_ty_lower=lower.i_ty,
        h_t_lower=lower.extras["h_t"],
        h_t_given_y_lower=lower.extras["h_t_given_y"],
    )
    return InformationEstimate(
        estimator="kde",
        i_xt=upper.i_xt,
        i_ty=upper.i_ty,
        params=params,
        extras=extras,
        pinned=upper.pinned,
    )


def kde_bounds(
    t: Any,
    y: Any,
    *,
    noise_variance: float = 1e-3,
    chunk_size: Optional[int] = None,
) -> Tuple[InformationEstimate, InformationEstimate]:
    """Both KDE bounds from one pass over the pairwise distances, in bits.

    Equivalent to ``(kde(t, y, bound="upper"), kde(t, y, bound="lower"))``
    but computes each distance once: the Bhattacharyya kernel
    ``exp(-D / (8 var))`` is evaluated, and the KL kernel
    ``exp(-D / (2 var))`` is its fourth power.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels.
    noise_variance : float, default=1e-3
        Variance of the Gaussian noise; must be > 0.
    chunk_size : int, optional
        Block side, as in :func:`kde`.

    Returns
    -------
    upper, lower : InformationEstimate
        The estimates :func:`kde` returns with ``bound="upper"`` and
        ``bound="lower"`` (``i_xt``, ``i_ty`` and ``h_t_given_y`` in bits).

    Examples
    --------
    >>> import numpy as np
    >>> from ibmonitor.estimators.kde import kde_bounds
    >>> t = np.random.default_rng(0).standard_normal((100, 2))
    >>> upper, lower = kde_bounds(t, t[:, 0] > 0, noise_variance=0.1)
    >>> lower.i_xt <= upper.i_xt
    True
    """
    t, y = _check_kde_inputs(t, y, noise_variance, chunk_size, "kde_bounds")
    terms = _kde_terms(t, y, float(noise_variance), ("upper", "lower"), chunk_size)
    out = []
    for b in ("upper", "lower"):
        params = {
            "noise_variance": float(noise_variance),
            "bound": b,
            "chunk_size": chunk_size,
        }
        out.append(_estimate(b, terms, params, t.shape[0]))
    if out[0].pinned is not None:
        warn_pinned(out[0].pinned)
    return out[0], out[1]
