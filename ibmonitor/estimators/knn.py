"""k-nearest-neighbour estimators of the information plane (Ross; KSG).

I(T;Y) with discrete labels by the mixed continuous/discrete estimator of
Ross (2014), the one scikit-learn's ``mutual_info_classif`` uses, generalised
to multivariate ``t``; I(X;T) by the estimator of Kraskov, Stoegbauer &
Grassberger (2004, algorithm 1) between the inputs and the layer. All results
are in bits.

Two metrics: ``"max"`` (the default: the max-norm in every space, as in
Kraskov et al. and scikit-learn) and ``"euclidean"`` (the Euclidean norm in
each marginal space, the larger of the two in the joint space; Kraskov et al.
note that any norms may be used in the marginal spaces).

Neighbour searches run on the activations' device, brute force in blocks of
rows (bounded memory; max-norm distances with ``torch.cdist``, Euclidean ones
from matrix products with exact recomputation wherever rounding could change
a comparison), or with scikit-learn's KD-tree for low-dimensional data on the
CPU. The search is written here rather than taken from scikit-learn because
it runs on CUDA too, serves both estimators from one set of distances, and
(for the Euclidean metric) uses the matrix-product form that is an order of
magnitude faster than any max-norm search at 64 dimensions.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from numbers import Integral
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .._validation import (
    as_tensor,
    check_activations,
    check_consistent_samples,
    check_labels,
    check_param,
)
from ..exceptions import EstimationWarning, InvalidParameterError
from ._common import LOG2E, InformationEstimate, register
from ._pairwise import (
    blocks,
    chebyshev_block,
    class_ranges,
    default_row_chunk,
    next_below,
    sq_dist_factors,
    sq_dist_pairs,
)

__all__ = ["knn"]

logger = logging.getLogger(__name__)

_ALGORITHMS = ("auto", "brute", "kd_tree")
_METRICS = ("max", "euclidean")
#: With ``algorithm="auto"``, a search space of at most this many dimensions
#: on the CPU goes to scikit-learn's KD-tree; above it, trees degrade towards
#: brute force and the chunked torch search is faster.
_KD_TREE_MAX_DIM = 20
#: The same for the joint space of the Euclidean KSG, whose brute-force
#: search (matrix products) is much faster than the max-norm one and whose
#: tree search looks at more candidates (see _tree_ksg_counts_euclidean).
_KD_TREE_MAX_DIM_EUCLIDEAN = 6
#: Candidates beyond the ``k + 1`` needed that are recomputed exactly when
#: distances are approximate (Euclidean matrix products, KD-tree radii).
_MARGIN = 4
#: Relative slack around a radius within which KD-tree distances (computed
#: by scikit-learn, in another order) are recomputed exactly.
_TREE_SLACK = 1e-9
#: Elements of one ``(rows, n)`` block of the Euclidean search: larger blocks
#: than the max-norm search's keep the matrix products efficient (a block of
#: a few rows rereads all the data for little arithmetic). 2**22 float64
#: values are 32 MiB; four such buffers live at once.
_EUCLIDEAN_ELEMENTS = 1 << 22
_EUCLIDEAN_CUDA_ELEMENTS = 1 << 24
#: Elements of one tile (rows times columns) of the elementwise work that
#: follows the distances: the joint maximum is formed one tile at a time (so
#: it never needs a block-sized buffer) and every count of a tile is taken
#: while the tile is in cache. 2**21 float64 values are 16 MiB; smaller
#: tiles were not faster on the CPU (measured at n = 20,000 and 50,000,
#: d = 64), as each tile costs a few torch calls.
_TILE_ELEMENTS = 1 << 21
_CUDA_TILE_ELEMENTS = 1 << 22
#: Rows of one tile on the CPU (its columns: ``_TILE_ELEMENTS`` over this).
_TILE_ROWS = 256


def _check_random_state(random_state: Any) -> np.random.RandomState:
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return np.random.RandomState(random_state)
    if (
        isinstance(random_state, Integral)
        and not isinstance(random_state, bool)
        and 0 <= int(random_state) < 2**32
    ):
        return np.random.RandomState(int(random_state))
    raise InvalidParameterError(
        "The 'random_state' parameter of knn must be an int in the range "
        f"[0, 2**32), a numpy RandomState or None. Got {random_state!r} instead."
    )


def _prepare(
    a: torch.Tensor,
    *,
    device: torch.device,
    standardize: bool,
    jitter: float,
    rng: np.random.RandomState,
) -> torch.Tensor:
    """float64 copy on ``device``, scaled to unit variance, plus tiny noise.

    The same steps as scikit-learn's ``_estimate_mi``: divide each column by
    its standard deviation (columns with none are left alone), then add
    ``jitter * max(1, mean |column|) * N(0, 1)`` noise drawn from ``rng``.
    """
    out = a.to(device=device, dtype=torch.float64, copy=True)
    if standardize:
        # Divide by each column's largest magnitude first: the variance of
        # values near 1e160 overflows float64 (std = inf would zero the column),
        # and the result, out / std, does not depend on this step.
        peak = out.abs().amax(dim=0)
        peak = torch.where(
            (peak > 0) & torch.isfinite(peak), peak, torch.ones_like(peak)
        )
        out /= peak
        std = out.std(dim=0, unbiased=False)
        tiny = 10 * torch.finfo(torch.float64).eps
        std = torch.where(std < tiny, torch.ones_like(std), std)
        out /= std
    if jitter > 0:
        scale = out.abs().mean(dim=0).clamp_(min=1.0) * jitter
        noise = torch.from_numpy(rng.standard_normal(size=tuple(out.shape)))
        out += noise.to(device) * scale
    return out


def _use_tree(algorithm: str, device: torch.device, dim: int) -> bool:
    if algorithm == "auto":
        return device.type == "cpu" and dim <= _KD_TREE_MAX_DIM
    return algorithm == "kd_tree"


def _power_of_two_scale(*arrays: Optional[torch.Tensor]) -> float:
    """Return the power of two bringing the peak magnitude of ``arrays`` to [0.5, 1).

    Multiplying by it is exact (no rounding), changes no comparison between
    distances, and keeps squared Euclidean distances far from float64
    overflow and underflow (data at 1e160 or 1e-160 without standardising).
    One factor serves every space: the joint distance compares x- and
    t-distances, so they must share their scale.
    """
    peak = max(float(a.abs().max()) for a in arrays if a is not None)
    if not (peak > 0 and math.isfinite(peak)):
        return 1.0
    return math.ldexp(1.0, -math.frexp(peak)[1])


class _Space:
    """One space (``x`` or ``t``) of the brute-force search.

    ``metric="max"``: :meth:`block` gives exact max-norm distances (one
    ``torch.cdist(p=inf)``) and ``err`` is None.

    ``metric="euclidean"``: :meth:`block` gives *squared* Euclidean distances
    from one float64 matrix product, ``|a|^2 + |b|^2 - 2 a.b`` on the centred
    data, and ``err[i]`` bounds their error for row ``i``; :meth:`pair` gives
    the exact values (from coordinate differences), which decide every
    comparison the bound leaves open. The bound is the textbook worst case of
    a length-``d + 2`` dot product, ``gamma * (|a|^2 + |b|^2)`` with ``gamma
    = (8 d + 64) * 2**-52`` (a generous multiple of ``(3 d + 4) * 2**-53``,
    covering the centring and the exact values' own rounding), so the result
    does not depend on how the BLAS orders its sums.
    """

    def __init__(self, u: torch.Tensor, metric: str) -> None:
        self.u = u
        self.err: Optional[torch.Tensor] = None
        if metric == "max":
            return
        c = u - u.mean(dim=0)
        lhs, rhs = sq_dist_factors(c)  # lhs . rhs = -||c_i - c_j||^2
        self.lhs = lhs.neg_()
        self.rhs_t = rhs.T.contiguous()
        sq = (c * c).sum(dim=1)
        gamma = (8 * u.shape[1] + 64) * torch.finfo(torch.float64).eps
        self.err = gamma * (sq + sq.max())

    def block(self, rows: slice, out: Optional[torch.Tensor]) -> torch.Tensor:
        """Distances from ``rows`` to every sample: exact, or squared within err."""
        if self.err is None:
            return chebyshev_block(self.u[rows], self.u)
        return torch.mm(self.lhs[rows], self.rhs_t, out=out)

    def pair(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Exact squared Euclidean distances between samples ``i`` and ``j``."""
        return sq_dist_pairs(self.u, i, j)


_Pair = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Candidate columns of each row and their exact distances in each space.
_Known = Tuple[torch.Tensor, List[torch.Tensor]]


def _joint_pair(pair_x: _Pair, pair_t: _Pair) -> _Pair:
    """Exact joint (squared) distance: the larger of the two marginal ones."""

    def pair(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.maximum(pair_x(i, j), pair_t(i, j))

    return pair


def _smallest(
    parts: List[torch.Tensor], size: int, tile: int, work: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return the ``size`` smallest entries of each row of ``max(*parts)``.

    The elementwise maximum of the ``(rows, n)`` matrices ``parts`` (one
    part: the part itself) is formed one column tile at a time in ``work``
    (so it is never held whole), each tile gives its ``size`` smallest
    entries, and one last ``topk`` picks among those.

    Returns
    -------
    values, cols : Tensor of shape (n_rows, min(size, n_cols))
        Ascending.
    """
    n_cols = parts[0].shape[1]
    size = min(size, n_cols)
    values, cols = [], []
    for c0, c1 in blocks(n_cols, tile):
        entries = parts[0][:, c0:c1]
        for other in parts[1:]:
            entries = torch.maximum(entries, other[:, c0:c1], out=work[:, : c1 - c0])
        v, c = torch.topk(entries, min(size, c1 - c0), dim=1, largest=False)
        values.append(v)
        cols.append(c + c0)
    if len(values) == 1:
        return values[0], cols[0]
    v, pos = torch.topk(torch.cat(values, dim=1), size, dim=1, largest=False)
    return v, torch.cat(cols, dim=1).gather(1, pos)


def _exact_kth(
    approx: torch.Tensor,
    cols: torch.Tensor,
    kk: int,
    err: Optional[torch.Tensor],
    pairs: List[_Pair],
    rows: torch.Tensor,
    span: Tuple[int, int],
) -> Tuple[torch.Tensor, Optional[_Known]]:
    """Exact ``(kk + 1)``-th smallest distance of each row from its smallest entries.

    ``approx`` (ascending) and ``cols`` are the smallest entries of the rows
    ``rows`` of a distance block over the samples ``span = (start, stop)``
    (max-norm, or squared Euclidean within ``err[r]`` of the exact values;
    in one space, or in the joint space, the larger of the spaces'
    distances, ``pairs`` holding one exact distance function per space).
    The row's own sample is among the columns, at distance 0, so this is the
    distance to the ``kk``-th neighbour.

    With ``err`` None the entries are exact: the answer is ``approx[:, kk]``.
    Otherwise the candidates are recomputed exactly; every other column is
    at least the largest candidate entry minus ``err``, and where that does
    not clear the candidate answer (ties closer than ``err``, e.g. duplicated
    points separated only by the tie-breaking noise) the whole row is
    recomputed exactly.

    Returns
    -------
    kth : Tensor of shape (n_rows,)
    known : (cols, exact) or None
        The candidates and their exact distances in each space, for
        :func:`_counts`.
    """
    if err is None:
        return approx[:, kk], None
    exact = [pair(rows.unsqueeze(1), cols) for pair in pairs]
    joint = functools.reduce(torch.maximum, exact)
    kth = torch.kthvalue(joint, kk + 1, dim=1).values
    if approx.shape[1] < span[1] - span[0]:
        bad = torch.nonzero(approx[:, -1] - err < kth).flatten()
        if bad.numel():
            every = torch.arange(span[0], span[1], device=cols.device)
            i, j = rows[bad].unsqueeze(1), every.unsqueeze(0)
            full = functools.reduce(torch.maximum, [pair(i, j) for pair in pairs])
            kth[bad] = torch.kthvalue(full, kk + 1, dim=1).values
    return kth, (cols, exact)


class _Query(NamedTuple):
    """One count of :func:`_counts`: columns within ``radius`` of each row.

    ``dist``: the block's distances in one space (exact, or squared Euclidean
    within ``err``); ``pair``: that space's exact distances; ``weights``: 0/1
    per column; ``known``: candidate columns with their exact distances.
    """

    dist: torch.Tensor
    radius: torch.Tensor
    err: Optional[torch.Tensor]
    pair: _Pair
    weights: torch.Tensor
    known: Optional[Tuple[torch.Tensor, torch.Tensor]]


def _counts(
    queries: List[_Query], rows: torch.Tensor, tile: int, small: torch.Tensor
) -> List[torch.Tensor]:
    """Weighted number of columns with ``dist <= radius``, for each query and row.

    One walk over column tiles serves every query: each tile is compared
    with the thresholds while it is in cache (a float mask in ``small``
    summed by a matrix-vector product). Exact distances need one comparison.
    Approximate ones need two: entries below ``radius - err`` surely count
    and those above ``radius + err`` surely do not. Columns whose exact
    distances are ``known`` (the candidates of :func:`_exact_kth`, among
    them the neighbour that set the radius, always in that band) are counted
    exactly; a row with any other column in the band (a coincidence within
    ``err``, or duplicated points) has its band recomputed exactly with
    ``pair``. Returns int64 counts.
    """
    n_rows, n_cols = queries[0].dist.shape
    lows = [q.radius if q.err is None else q.radius - q.err for q in queries]
    highs = [None if q.err is None else q.radius + q.err for q in queries]
    dtype = queries[0].dist.dtype
    below = [torch.zeros(n_rows, dtype=dtype, device=rows.device) for _ in queries]
    upper = [None if h is None else torch.zeros_like(below[0]) for h in highs]
    for c0, c1 in blocks(n_cols, tile):
        mask = small[:, : c1 - c0]
        for q, low, high, b, u in zip(queries, lows, highs, below, upper):
            part, w = q.dist[:, c0:c1], q.weights[c0:c1]
            b.addmv_(torch.le(part, low.unsqueeze(1), out=mask), w)
            if high is not None and u is not None:
                u.addmv_(torch.le(part, high.unsqueeze(1), out=mask), w)
    out = []
    for q, low, high, b, u in zip(queries, lows, highs, below, upper):
        if high is None or u is None:
            out.append(b.round_().to(torch.int64))
            continue
        count, rest_below, rest_upper = b, b, u
        if q.known is not None:
            cols, exact = q.known
            w = q.weights[cols]
            approx = q.dist.gather(1, cols)
            rest_below = b - ((approx <= low.unsqueeze(1)) * w).sum(dim=1)
            rest_upper = u - ((approx <= high.unsqueeze(1)) * w).sum(dim=1)
            count = rest_below + ((exact <= q.radius.unsqueeze(1)) * w).sum(dim=1)
        unsure = torch.nonzero(rest_upper > rest_below).flatten()
        if unsure.numel():
            sub = q.dist[unsure]
            band = (sub > low[unsure].unsqueeze(1)) & (sub <= high[unsure].unsqueeze(1))
            band &= (q.weights > 0).unsqueeze(0)
            r_i, c_j = torch.nonzero(band, as_tuple=True)
            hit = q.pair(rows[unsure][r_i], c_j) <= q.radius[unsure][r_i]
            count = count.clone()
            count[unsure] = b[unsure].index_add(0, r_i, hit.to(dtype) * q.weights[c_j])
        out.append(count.round_().to(torch.int64))
    return out


def _brute_counts(
    t: torch.Tensor,
    x: Optional[torch.Tensor],
    ranges: List[Tuple[int, int]],
    k_of_class: List[int],
    k: int,
    chunk_size: Optional[int],
    *,
    ross: bool = True,
    metric: str = "max",
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Neighbour counts of both estimators in one pass over blocks of rows.

    Samples must be sorted by class, ``ranges[c]`` being class ``c``'s rows
    and ``k_of_class[c]`` its ``k_c`` (0 for a class of one sample). Each
    block of rows (within one class) gets its distances to every sample once
    in t-space and once in x-space (when ``x`` is given); everything else is
    elementwise work on those two ``(rows, n)`` matrices, tile by tile:

    - KSG: the joint distance (their maximum, one tile at a time), its
      ``k + 1`` smallest entries per row (``eps_i``), and the counts
      ``n_x(i)``, ``n_t(i)`` of samples closer than ``eps_i``;
    - Ross: the within-class radius ``r_i`` (the class's columns are one
      contiguous slice of the t-block) and ``m_i``, the samples of kept
      classes closer than ``r_i`` (``i`` included).

    Passes over the data: the distance matrices are computed once, so the
    whole search costs two ``O(n^2 d)`` passes with ``x`` (one per space)
    and one without, plus ``O(n^2)`` elementwise work: the joint maximum and
    its ``topk``, then one walk over the column tiles for all the counts
    (``scripts/bench_knn.py`` measures the total against one distance pass).
    With ``metric="euclidean"`` each distance pass is one matrix product, and
    counts against approximate distances take two comparisons each (below and
    above the error band) instead of one.

    Returns
    -------
    m, n_x, n_t : Tensor of shape (n_samples,)
        int64 counts on ``t``'s device (``n_x``, ``n_t`` None without ``x``;
        ``m`` is 0 for samples of one-sample classes).
    """
    n = t.shape[0]
    device = t.device
    exact = metric == "max"
    if chunk_size:
        chunk = chunk_size
    elif exact:
        chunk = default_row_chunk(n, device)
    else:
        cuda = device.type == "cuda"
        budget = _EUCLIDEAN_CUDA_ELEMENTS if cuda else _EUCLIDEAN_ELEMENTS
        chunk = default_row_chunk(n, device, elements=budget)
    st = _Space(t, metric)
    sx = None if x is None else _Space(x, metric)
    ones = torch.ones(n, dtype=torch.float64, device=device)
    weights = ones
    if ross and min(k_of_class) == 0:
        weights = ones.clone()
        for (s, e), k_c in zip(ranges, k_of_class):
            if k_c == 0:
                weights[s:e] = 0.0
    m = torch.zeros(n, dtype=torch.int64, device=device)
    n_x = n_t = None
    if x is not None:
        n_x = torch.empty(n, dtype=torch.int64, device=device)
        n_t = torch.empty(n, dtype=torch.int64, device=device)

    rows_max = min(chunk, max(e - s for s, e in ranges))
    cuda = device.type == "cuda"
    sub_rows = rows_max if cuda else min(rows_max, _TILE_ROWS)
    tile = max(1, min(n, (_CUDA_TILE_ELEMENTS if cuda else _TILE_ELEMENTS) // sub_rows))
    small = torch.empty((sub_rows, tile), dtype=torch.float64, device=device)
    dt_buf = dx_buf = None
    if not exact:
        dt_buf = torch.empty((rows_max, n), dtype=torch.float64, device=device)
        dx_buf = torch.empty_like(dt_buf) if x is not None else None
    margin = 0 if exact else _MARGIN

    for (s, e), k_c in zip(ranges, k_of_class):
        if x is None and (k_c == 0 or not ross):
            continue
        for r0 in range(s, e, chunk):
            r1 = min(e, r0 + chunk)
            rows = slice(r0, r1)
            dt_all = st.block(rows, None if dt_buf is None else dt_buf[: r1 - r0])
            dx_all = None
            if sx is not None:
                dx_all = sx.block(rows, None if dx_buf is None else dx_buf[: r1 - r0])
            # The elementwise work goes by sub-blocks of rows, whose column
            # tiles stay in cache (the distances come in larger blocks: matrix
            # products are more efficient on many rows).
            for q0 in range(r0, r1, sub_rows):
                q1 = min(r1, q0 + sub_rows)
                sub = slice(q0, q1)
                idx = torch.arange(q0, q1, device=device)
                work = small[: q1 - q0]
                dt = dt_all[q0 - r0 : q1 - r0]
                t_err = None if st.err is None else st.err[sub]
                queries: List[_Query] = []
                if sx is not None and dx_all is not None:
                    dx = dx_all[q0 - r0 : q1 - r0]
                    x_err = None if sx.err is None else sx.err[sub]
                    z_err = None
                    if x_err is not None and t_err is not None:
                        z_err = torch.maximum(x_err, t_err)
                    approx, cols = _smallest([dx, dt], k + 1 + margin, tile, work)
                    pairs = [sx.pair, st.pair]
                    eps, known = _exact_kth(approx, cols, k, z_err, pairs, idx, (0, n))
                    radius = next_below(eps)
                    kx = kt = None
                    if known is not None:
                        kx, kt = (known[0], known[1][0]), (known[0], known[1][1])
                    queries.append(_Query(dx, radius, x_err, sx.pair, ones, kx))
                    queries.append(_Query(dt, radius, t_err, st.pair, ones, kt))
                if ross and k_c > 0:
                    own = [dt[:, s:e]]
                    approx, cols = _smallest(own, k_c + 1 + margin, tile, work)
                    r, known = _exact_kth(
                        approx, cols + s, k_c, t_err, [st.pair], idx, (s, e)
                    )
                    kr = None if known is None else (known[0], known[1][0])
                    queries.append(
                        _Query(dt, next_below(r), t_err, st.pair, weights, kr)
                    )
                counts = _counts(queries, idx, tile, work)
                if sx is not None:
                    n_x[sub] = counts[0] - 1  # the sample itself
                    n_t[sub] = counts[1] - 1
                if ross and k_c > 0:
                    m[sub] = counts[-1]
    return m, n_x, n_t


def _tree_ross_counts(
    t: torch.Tensor, y_idx: torch.Tensor, k_row: torch.Tensor
) -> torch.Tensor:
    """``m_i`` of Ross's estimator with scikit-learn's KD-trees (CPU, max-norm)."""
    from sklearn.neighbors import KDTree

    ta = t.cpu().numpy()
    yi = y_idx.cpu().numpy()
    kr = k_row.cpu().numpy()
    keep = kr > 0
    radius = np.zeros(len(ta))
    for c in np.unique(yi[keep]):
        idx = np.flatnonzero(yi == c)
        k_c = int(kr[idx[0]])
        dist, _ = KDTree(ta[idx], metric="chebyshev").query(ta[idx], k=k_c + 1)
        radius[idx] = dist[:, -1]
    m = np.zeros(len(ta), dtype=np.int64)
    kept = ta[keep]
    m[keep] = KDTree(kept, metric="chebyshev").query_radius(
        kept, np.nextafter(radius[keep], 0), count_only=True
    )
    return torch.from_numpy(m)


def _tree_ksg_counts(
    x: torch.Tensor, t: torch.Tensor, k: int
) -> Tuple[torch.Tensor, ...]:
    """``n_x``, ``n_t`` of KSG algorithm 1, max-norm, with KD-trees (CPU)."""
    from sklearn.neighbors import KDTree

    xa, ta = x.cpu().numpy(), t.cpu().numpy()
    za = np.hstack([xa, ta])
    dist, _ = KDTree(za, metric="chebyshev").query(za, k=k + 1)
    radius = np.nextafter(dist[:, -1], 0)
    n_x = KDTree(xa, metric="chebyshev").query_radius(xa, radius, count_only=True)
    n_t = KDTree(ta, metric="chebyshev").query_radius(ta, radius, count_only=True)
    return (
        torch.from_numpy(np.asarray(n_x, dtype=np.int64) - 1),
        torch.from_numpy(np.asarray(n_t, dtype=np.int64) - 1),
    )


def _unit_ball_log_volume(dim: int) -> float:
    return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1)


def _tree_kth_sq(
    points: np.ndarray,
    kk: int,
    pair: _Pair,
    index: np.ndarray,
    *,
    lower: float = 1.0,
    size: Optional[int] = None,
) -> torch.Tensor:
    """Exact squared distance from each point to its ``kk``-th neighbour (KD-tree).

    ``points`` are the tree's points, each also a query, and ``index`` their
    sample numbers for ``pair`` (exact squared distances). The tree searches
    with the Euclidean norm of ``points``, of which ``lower`` times the square
    is a lower bound of ``pair`` (1 for one space; 1/2 when ``points`` are the
    joint ``[x, t]`` and ``pair`` the larger of the two squared marginal
    distances). The ``size`` nearest points are the candidates; rows that
    they do not settle are searched again within the radius that must hold
    every closer point.
    """
    from sklearn.neighbors import KDTree

    m = len(points)
    tree = KDTree(points)
    size = min(m, size or kk + 1 + _MARGIN)
    dist, ind = tree.query(points, k=size)
    g = torch.from_numpy(index)
    kth = torch.kthvalue(pair(g.unsqueeze(1), g[torch.from_numpy(ind)]), kk + 1, dim=1)
    kth = kth.values
    if size < m:
        bound = torch.from_numpy(dist[:, -1]) ** 2 * (lower * (1 - _TREE_SLACK))
        bad = torch.nonzero(bound < kth).flatten().numpy()
        if len(bad):
            radius = np.sqrt(kth.numpy()[bad] / lower) * (1 + _TREE_SLACK)
            hits = tree.query_radius(points[bad], radius)
            lengths = np.array([len(h) for h in hits])
            owner = np.repeat(np.arange(len(bad)), lengths)
            cols = np.concatenate(list(hits))
            vals = pair(g[torch.from_numpy(bad[owner])], g[torch.from_numpy(cols)])
            vals = vals.numpy()
            order = np.lexsort((vals, owner))
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            kth[torch.from_numpy(bad)] = torch.from_numpy(vals[order][starts + kk])
    return kth


def _tree_count_sq(
    points: np.ndarray,
    radius: torch.Tensor,
    pair: _Pair,
    index: np.ndarray,
) -> torch.Tensor:
    """Count the ``points`` within squared distance ``radius`` of each (KD-tree).

    Counts ``pair(i, j) <= radius[i]`` over the points ``j`` (each point
    counts itself). The tree counts at ``sqrt(radius)`` times ``1 -+ 1e-9``:
    points in between are compared exactly.
    """
    from sklearn.neighbors import KDTree

    tree = KDTree(points)
    r = np.sqrt(radius.numpy())
    count = tree.query_radius(points, r * (1 - _TREE_SLACK), count_only=True)
    upper = tree.query_radius(points, r * (1 + _TREE_SLACK), count_only=True)
    count = np.asarray(count, dtype=np.int64)
    unsure = np.flatnonzero(upper > count)
    if len(unsure):
        hits = tree.query_radius(points[unsure], r[unsure] * (1 + _TREE_SLACK))
        lengths = np.array([len(h) for h in hits])
        owner = np.repeat(unsure, lengths)
        cols = np.concatenate(list(hits))
        g = torch.from_numpy(index)
        own = torch.from_numpy(owner)
        inside = (pair(g[own], g[torch.from_numpy(cols)]) <= radius[own]).numpy()
        count[unsure] = np.bincount(owner[inside], minlength=len(points))[unsure]
    return torch.from_numpy(count)


def _tree_ksg_counts_euclidean(
    x: torch.Tensor, t: torch.Tensor, k: int
) -> Tuple[torch.Tensor, ...]:
    """``n_x``, ``n_t`` of KSG with Euclidean marginals, with KD-trees (CPU).

    The joint distance ``max(|dx|, |dt|)`` is no scikit-learn metric; the
    Euclidean norm of ``[dx, dt]`` bounds it within a factor ``sqrt(2)``, so
    a Euclidean tree on ``[x, t]`` finds candidates, as many as the ratio of
    the two balls' volumes calls for, which are then compared exactly.
    """
    x, t = x.cpu(), t.cpu()
    pair_x = functools.partial(sq_dist_pairs, x)
    pair_t = functools.partial(sq_dist_pairs, t)
    index = np.arange(x.shape[0])
    dx, dt = x.shape[1], t.shape[1]
    log_ratio = (
        _unit_ball_log_volume(dx + dt)
        + 0.5 * (dx + dt) * math.log(2.0)
        - _unit_ball_log_volume(dx)
        - _unit_ball_log_volume(dt)
    )
    size = math.ceil(2 * (k + 1) * math.exp(log_ratio)) + _MARGIN
    z = np.hstack([x.numpy(), t.numpy()])
    joint = _joint_pair(pair_x, pair_t)
    eps = _tree_kth_sq(z, k, joint, index, lower=0.5, size=size)
    radius = next_below(eps)
    n_x = _tree_count_sq(x.numpy(), radius, pair_x, index) - 1
    n_t = _tree_count_sq(t.numpy(), radius, pair_t, index) - 1
    return n_x, n_t


def _tree_ross_counts_euclidean(
    t: torch.Tensor, y_idx: torch.Tensor, k_row: torch.Tensor
) -> torch.Tensor:
    """``m_i`` of Ross's estimator with the Euclidean norm, with KD-trees (CPU)."""
    t = t.cpu()
    pair_t = functools.partial(sq_dist_pairs, t)
    ta = t.numpy()
    yi = y_idx.cpu().numpy()
    kr = k_row.cpu().numpy()
    keep = kr > 0
    radius = torch.zeros(len(ta), dtype=torch.float64)
    for c in np.unique(yi[keep]):
        idx = np.flatnonzero(yi == c)
        k_c = int(kr[idx[0]])
        radius[idx] = _tree_kth_sq(ta[idx], k_c, pair_t, idx)
    m = torch.zeros(len(ta), dtype=torch.int64)
    kept = np.flatnonzero(keep)
    m[kept] = _tree_count_sq(ta[kept], next_below(radius[kept]), pair_t, kept)
    return m


def _digamma(a: Any) -> torch.Tensor:
    return torch.special.digamma(torch.as_tensor(a).to(torch.float64))


def _knn_nats(
    t: torch.Tensor,
    x: Optional[torch.Tensor],
    y_idx: torch.Tensor,
    counts: torch.Tensor,
    k: int,
    *,
    algorithm: str,
    chunk_size: Optional[int],
    metric: str = "max",
) -> Tuple[float, float]:
    """(KSG I(X;T), Ross I(T;Y)) in nats, unclipped; NaN where undefined."""
    device = t.device
    n = t.shape[0]
    label_counts = counts[y_idx]
    k_row = torch.clamp(label_counts - 1, max=k)  # k_c; 0 for singleton classes
    keep = k_row > 0
    n_kept = int(keep.sum())
    if metric == "euclidean":
        # Exact power-of-two rescaling: squared distances stay in range. In
        # place: t and x are knn's own prepared copies.
        scale = _power_of_two_scale(t, x)
        t.mul_(scale)
        if x is not None:
            x.mul_(scale)

    ksg_dim = 0 if x is None else x.shape[1] + t.shape[1]
    ksg_limit = _KD_TREE_MAX_DIM if metric == "max" else _KD_TREE_MAX_DIM_EUCLIDEAN
    ksg_tree = x is not None and (
        algorithm == "kd_tree"
        or (algorithm == "auto" and device.type == "cpu" and ksg_dim <= ksg_limit)
    )
    ross_tree = _use_tree(algorithm, device, t.shape[1])
    brute_ksg = x is not None and not ksg_tree
    # A brute-force KSG pass computes every t-distance anyway: Ross rides on it.
    brute_ross = bool(n_kept) and (brute_ksg or not ross_tree)
    n_x = n_t = m = None
    if ksg_tree:
        if metric == "max":
            n_x, n_t = _tree_ksg_counts(x, t, k)
        else:
            n_x, n_t = _tree_ksg_counts_euclidean(x, t, k)
    if n_kept and not brute_ross:
        if metric == "max":
            m = _tree_ross_counts(t, y_idx, k_row)
        else:
            m = _tree_ross_counts_euclidean(t, y_idx, k_row)
    if brute_ksg or brute_ross:
        # Sort by class (the estimates do not depend on the order) so that
        # each class is one contiguous range; one pass serves both estimators.
        order = torch.argsort(y_idx, stable=True)
        count_list = [int(c) for c in counts.tolist()]
        ranges = class_ranges(count_list)
        k_of_class = [min(c - 1, k) for c in count_list]
        m_s, n_x_s, n_t_s = _brute_counts(
            t[order],
            x[order] if brute_ksg else None,
            ranges,
            k_of_class,
            k,
            chunk_size,
            ross=brute_ross,
            metric=metric,
        )
        if brute_ross:
            m = torch.empty_like(m_s).index_copy_(0, order, m_s)
        if brute_ksg:
            n_x = torch.empty_like(n_x_s).index_copy_(0, order, n_x_s)
            n_t = torch.empty_like(n_t_s).index_copy_(0, order, n_t_s)

    i_xt = math.nan
    if n_x is not None and n_t is not None:
        i_xt = float(
            _digamma(float(k))
            + _digamma(float(n))
            - _digamma(n_x.to(device) + 1).mean()
            - _digamma(n_t.to(device) + 1).mean()
        )
    i_ty = math.nan
    if n_kept and m is not None:
        m = m.to(device)
        i_ty = float(
            _digamma(float(n_kept))
            + _digamma(k_row[keep]).mean()
            - _digamma(label_counts[keep]).mean()
            - _digamma(m[keep]).mean()
        )
    return i_xt, i_ty


def _check_params(
    k: Any = 3,
    standardize: Any = True,
    jitter: Any = 1e-10,
    random_state: Any = 0,
    algorithm: Any = "auto",
    chunk_size: Any = None,
    metric: Any = "max",
) -> np.random.RandomState:
    """Check the parameters of :func:`knn`; return the random state to use."""
    check_param(k, "k", "knn", kind="int", low=1)
    check_param(jitter, "jitter", "knn", low=0.0)
    check_param(algorithm, "algorithm", "knn", kind="option", options=_ALGORITHMS)
    check_param(metric, "metric", "knn", kind="option", options=_METRICS)
    if not isinstance(standardize, (bool, np.bool_)):
        raise InvalidParameterError(
            "The 'standardize' parameter of knn must be a bool. "
            f"Got {standardize!r} instead."
        )
    if chunk_size is not None:
        check_param(chunk_size, "chunk_size", "knn", kind="int", low=1)
    return _check_random_state(random_state)


@register("knn", inputs="values", check=_check_params)
def knn(
    t: Any,
    y: Any,
    *,
    x: Any = None,
    k: int = 3,
    standardize: bool = True,
    jitter: float = 1e-10,
    random_state: Any = 0,
    algorithm: str = "auto",
    chunk_size: Optional[int] = None,
    metric: str = "max",
) -> InformationEstimate:
    """Estimate I(X;T) (KSG) and I(T;Y) (Ross) from nearest neighbours, in bits.

    **I(T;Y)**, labels discrete: the estimator of Ross (2014), as in
    scikit-learn's ``mutual_info_classif`` (``_compute_mi_cd``), with a norm
    on the whole layer (the max-norm, or the Euclidean norm with
    ``metric="euclidean"``) instead of one feature at a time. For sample
    ``i`` of class ``c`` (``n_c`` samples), ``r_i`` is the distance to its
    ``k_c = min(k, n_c - 1)``-th nearest neighbour within the class and
    ``m_i`` the number of samples of any class strictly closer than ``r_i``
    (``i`` included); then ``I = psi(N) + <psi(k_c)> - <psi(n_c)> - <psi(m_i)>``
    over the ``N`` samples whose class has at least 2 samples.

    **I(X;T)**, ``x`` given: algorithm 1 of Kraskov, Stoegbauer & Grassberger
    (2004). ``eps_i`` is the distance to the ``k``-th nearest neighbour in the
    joint space, ``max(||x_i - x_j||, ||t_i - t_j||)`` (the max-norm in each
    space by default, so the joint distance is the max-norm of ``[x, t]``),
    and ``n_x(i)``, ``n_t(i)`` count the other samples strictly within
    ``eps_i`` in each space: ``I = psi(k) + psi(n) - <psi(n_x + 1) + psi(n_t +
    1)>``.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer (numpy array or torch tensor, CPU or CUDA,
        any float dtype). Searches run on ``t``'s device, in float64.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels.
    x : array-like or Tensor of shape (n_samples,) or (n_samples, ...), optional
        The inputs, as values (flattened to one row per sample). Without
        them, ``i_xt`` is NaN (see Notes).
    k : int, default=3
        Number of neighbours (``n_neighbors`` in scikit-learn); at least 1,
        and below ``n_samples`` when ``x`` is given. Larger values lower the
        variance and raise the bias.
    standardize : bool, default=True
        Scale every unit of ``t`` and every feature of ``x`` to unit variance
        first, as scikit-learn does (the max-norm is not scale invariant).
    jitter : float, default=1e-10
        Relative scale of the Gaussian noise added to ``t`` and ``x`` to
        break ties (see Notes); ``0`` disables it.
    random_state : int, numpy RandomState or None, default=0
        Seed of the noise. The default makes estimates reproducible; the
        noise is drawn on the CPU with numpy, so CPU and CUDA runs see the same
        values, and a 1-D ``t`` gets exactly the noise ``mutual_info_classif``
        adds with the same ``random_state``.
    algorithm : {"auto", "brute", "kd_tree"}, default="auto"
        Neighbour search. ``"brute"``: blocks of rows of pairwise distances
        with torch on ``t``'s device (memory ``O(n_samples)`` per block row).
        ``"kd_tree"``: scikit-learn's ``KDTree`` on the CPU. ``"auto"`` uses
        the tree for CPU data whose search space has at most 20 dimensions
        with the max-norm, 6 with the Euclidean metric (where it is the
        faster of the two), and brute force otherwise.
    chunk_size : int, optional
        Rows per block of the brute-force search (default: about 2**20
        distances per block on the CPU and 2**24 on CUDA with the max-norm,
        2**22 and 2**24 with the Euclidean metric). The result does not
        depend on it.
    metric : {"max", "euclidean"}, default="max"
        Norm within each space. ``"max"``: the max-norm (Chebyshev), as in
        Kraskov et al. and scikit-learn. ``"euclidean"``: the Euclidean norm
        within ``x`` and within ``t``, the joint distance being the larger of
        the two, a valid KSG variant (see Notes) whose brute-force search
        runs on matrix products, several times faster than the max-norm's at
        tens of dimensions. The two give different estimates on
        multidimensional data (the same in one dimension).

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits (``i_xt`` NaN without ``x``).

    Raises
    ------
    InvalidParameterError
        A bad ``k``, ``jitter``, ``random_state``, ``algorithm``,
        ``chunk_size`` or ``metric``, mismatched sample counts, non-integer
        labels, fewer than 2 samples, or NaN/Inf activations or inputs.

    Warns
    -----
    EstimationWarning
        ``x`` is None (``i_xt`` is NaN), or no class has two samples
        (``i_ty`` is NaN).

    Notes
    -----
    *I(X;T) without x.* A deterministic layer ``T = f(X)`` of a continuous
    input has ``I(X;T) = H(T) - H(T|X) = H(T) + infinity`` (``H(T|X)`` is the
    differential entropy of a point mass): the quantity is infinite, or, for
    a finite sample of distinct inputs, equal to ``H(T)`` of whatever
    discretisation one picks, so it measures the estimator rather than the
    network (Goldfeld et al. 2019). The KSG estimator needs the input values
    to give a finite, consistent estimate of a well-posed quantity (e.g.
    with noisy or discrete inputs); without them this function returns NaN
    with an :class:`~ibmonitor.exceptions.EstimationWarning` rather than a
    number. A constant layer is the exception: ``I(X;T) = 0`` exactly.

    *Clipping.* Both estimates are clipped at 0, as scikit-learn does: a
    negative estimate means, when the method is adequate, that the mutual
    information is close to 0.

    *Ties.* The estimators assume continuous data; repeated points (saturated
    units, discrete inputs) make neighbour distances 0. As scikit-learn does,
    a tiny noise (``jitter`` times each column's mean absolute value, at
    least ``jitter``) is added after standardising, so that distances are
    almost surely distinct; it is seeded by ``random_state``. Computations
    are in float64 so that the noise survives float32 inputs. Counting
    within a radius is strict (``dist < r``, computed as ``dist <=
    nextafter(r, 0)``, as scikit-learn does). With ``jitter=0`` and repeated
    points, the estimates stay finite but lose their meaning. On nearly
    discrete layers (saturated tanh), kNN estimates reflect the geometry of
    the noise at duplicated points; prefer the binned or KDE estimators
    there.

    *Pinning.* The kNN estimates are never marked ``pinned`` (the field
    stays None and ``as_dict()`` reports ``pinned=0.0``): their scale is the
    distance to each sample's k-th neighbour, which adapts to the data, so
    no width can leave every sample alone, and neither estimate has the
    ``log2 n`` ceiling that binned, KDE and Renyi estimates reach when every
    sample is its own bin or kernel. Their failure on wide layers is a
    different one: neighbour distances concentrate, and the estimates become
    biased towards 0 rather than pinned.

    *Metrics.* Kraskov et al. (2004, section II) note that any norms may be
    used in the two marginal spaces as long as the joint distance is their
    maximum: the joint ball is then the product of the marginal balls, whose
    volumes cancel, and the formula above holds unchanged (likewise for
    Ross's estimator, whose counts are all in t-space). Gao, Oh & Viswanath
    (2018) analyse KSG with Euclidean norms; it is the default of the
    ``bmi`` benchmark package of Czyz et al. (2023)
    (``KSGEnsembleFirstEstimator(metric_x="euclidean")``).
    ``metric="euclidean"`` computes squared distances as ``|a|^2 + |b|^2 -
    2 a.b`` (float64, centred data, one matrix product per block and space)
    and recomputes from coordinate differences every comparison its
    rounding could change (a worst-case error bound decides which): the
    ``k + 5`` candidate neighbours of each sample, and any other distance
    within the bound of a radius (ties broken only by the jitter, as with
    discrete inputs). The estimate is thus that of exactly computed
    distances; heavily tied data costs up to one more distance pass.

    *Cost.* Brute force: one block loop computes, per block of rows, the
    distances to every sample once in t-space and once in x-space when ``x``
    is given: two ``O(n_samples ** 2 d)`` passes with ``x``, one without.
    The joint maximum, the top-``k`` searches (Ross's within its class's
    slice of the same block) and all the counts are ``O(n_samples ** 2)``
    elementwise work on those blocks, tile by tile, about a quarter of one
    more pass with the max-norm at ``d = 64`` (``scripts/bench_knn.py``).
    Memory stays ``O(chunk_size * n_samples)``: at ``n = 50,000``, ``d =
    64`` on the CPU, about 250 MiB above the data with the max-norm and 450
    MiB with the Euclidean metric (which keeps its matrix-product factors).

    References
    ----------
    .. [1] B. C. Ross, "Mutual information between discrete and continuous
       data sets", PLoS ONE 9(2), e87357, 2014.
    .. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
       information", Phys. Rev. E 69, 066138, 2004.
    .. [3] Z. Goldfeld, E. van den Berg, K. Greenewald, I. Melnyk, N. Nguyen,
       B. Kingsbury and Y. Polyanskiy, "Estimating information flow in deep
       neural networks", ICML 2019.
    .. [4] W. Gao, S. Oh and P. Viswanath, "Demystifying fixed k-nearest
       neighbor information estimators", IEEE Trans. Information Theory
       64(8), 2018.
    .. [5] P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx,
       "Beyond Normal: on the evaluation of mutual information estimators",
       NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from ibmonitor import estimators
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2000, 1))
    >>> t = 0.8 * x + 0.6 * rng.standard_normal((2000, 1))  # rho = 0.8
    >>> r = estimators.knn(t, (x[:, 0] > 0).astype(int), x=x, k=3)
    >>> round(r.i_xt, 1)  # -0.5 * log2(1 - 0.8**2) = 0.74
    0.7
    """
    rng = _check_params(
        k=k,
        standardize=standardize,
        jitter=jitter,
        random_state=random_state,
        algorithm=algorithm,
        chunk_size=chunk_size,
        metric=metric,
    )
    tt = check_activations(t)
    n = tt.shape[0]
    yy = check_labels(y, n)
    xx = None
    if x is not None:
        xa = as_tensor(x, name="x")
        if xa.ndim == 0:
            raise InvalidParameterError(
                "x must have shape (n_samples, ...). Got a scalar instead."
            )
        check_consistent_samples(x=xa.shape[0], t=n)
        xx = check_activations(xa.reshape(n, -1), name="x")
        if k >= n:
            raise InvalidParameterError(
                f"The 'k' parameter of knn must be smaller than the number of "
                f"samples ({n}) when x is given. Got {k} instead."
            )
    params = {
        "k": int(k),
        "standardize": bool(standardize),
        "jitter": float(jitter),
        "random_state": random_state
        if not isinstance(random_state, np.random.RandomState)
        else "RandomState",
        "algorithm": algorithm,
        "chunk_size": chunk_size,
        "metric": metric,
    }

    device = tt.device
    logger.debug(
        "knn: %d samples, %d units, x %s, k=%d, on %s",
        n,
        tt.shape[1],
        None if xx is None else tuple(xx.shape),
        k,
        device,
    )
    if bool((tt == tt[0]).all()):
        # A constant layer carries no information about anything.
        return InformationEstimate("knn", 0.0, 0.0, params=params)

    tp = _prepare(tt, device=device, standardize=standardize, jitter=jitter, rng=rng)
    xp = None
    if xx is not None:
        xp = _prepare(
            xx, device=device, standardize=standardize, jitter=jitter, rng=rng
        )
    _, y_idx, counts = torch.unique(
        yy.to(device), return_inverse=True, return_counts=True
    )
    i_xt_nats, i_ty_nats = _knn_nats(
        tp,
        xp,
        y_idx,
        counts,
        int(k),
        algorithm=algorithm,
        chunk_size=chunk_size,
        metric=metric,
    )
    if math.isnan(i_ty_nats):
        warnings.warn(
            "Every class has a single sample, so the kNN estimate of I(T;Y) "
            "is undefined; i_ty is NaN.",
            EstimationWarning,
            stacklevel=2,
        )
    if xx is None:
        warnings.warn(
            "knn got no inputs x: I(X;T) of a deterministic layer is ill-posed "
            "(infinite for continuous inputs) and cannot be estimated from the "
            "activations alone, so i_xt is NaN. Pass x=inputs for the KSG "
            "estimate.",
            EstimationWarning,
            stacklevel=2,
        )
    # Negative estimates mean "close to 0": clipped, as scikit-learn does.
    i_xt = math.nan if math.isnan(i_xt_nats) else max(i_xt_nats, 0.0) * LOG2E
    i_ty = math.nan if math.isnan(i_ty_nats) else max(i_ty_nats, 0.0) * LOG2E
    return InformationEstimate("knn", i_xt, i_ty, params=params)
