"""k-nearest-neighbour estimators of the information plane (Ross; KSG).

I(T;Y) with discrete labels by the mixed continuous/discrete estimator of
Ross (2014), the one scikit-learn's ``mutual_info_classif`` uses, generalised
to multivariate ``t`` with the max-norm; I(X;T) by the estimator of Kraskov,
Stoegbauer & Grassberger (2004, algorithm 1) between the inputs and the layer.
All results are in bits.

Neighbour searches run on the activations' device, brute force in row chunks
(bounded memory), or with scikit-learn's KD-tree for low-dimensional data on
the CPU.
"""

from __future__ import annotations

import logging
import math
import warnings
from numbers import Integral
from typing import Any, List, Optional, Tuple

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
from ._pairwise import chebyshev_block, class_ranges, default_row_chunk, next_below

__all__ = ["knn"]

logger = logging.getLogger(__name__)

_ALGORITHMS = ("auto", "brute", "kd_tree")
#: With ``algorithm="auto"``, a search space of at most this many dimensions
#: on the CPU goes to scikit-learn's KD-tree; above it, trees degrade towards
#: brute force and the chunked torch search is faster.
_KD_TREE_MAX_DIM = 20


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


def _brute_counts(
    t: torch.Tensor,
    x: Optional[torch.Tensor],
    ranges: List[Tuple[int, int]],
    k_of_class: List[int],
    k: int,
    chunk_size: Optional[int],
    *,
    ross: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Neighbour counts of both estimators in one pass over row chunks.

    Samples must be sorted by class, ``ranges[c]`` being class ``c``'s rows
    and ``k_of_class[c]`` its ``k_c`` (0 for a class of one sample). Each chunk
    of rows (within one class) gets its max-norm distances to every sample in
    t-space (and x-space when ``x`` is given). From the same rows come, for
    Ross, the within-class radius ``r_i`` (the class's columns are one
    contiguous slice) and ``m_i``, the samples of kept classes closer than
    ``r_i`` (``i`` included); for KSG, the joint radius ``eps_i`` and the
    counts ``n_x(i)``, ``n_t(i)`` of other samples closer than ``eps_i``.

    Returns
    -------
    m, n_x, n_t : Tensor of shape (n_samples,)
        int64 counts on ``t``'s device (``n_x``, ``n_t`` None without ``x``;
        ``m`` is 0 for samples of one-sample classes).
    """
    n = t.shape[0]
    device = t.device
    chunk = chunk_size or default_row_chunk(n, device)
    keep_cols = None
    if ross and min(k_of_class) == 0:
        keep_cols = torch.zeros(n, dtype=torch.bool, device=device)
        for (s, e), k_c in zip(ranges, k_of_class):
            keep_cols[s:e] = k_c > 0
        keep_cols = keep_cols.unsqueeze(0)
    m = torch.zeros(n, dtype=torch.int64, device=device)
    n_x = n_t = None
    if x is not None:
        n_x = torch.empty(n, dtype=torch.int64, device=device)
        n_t = torch.empty(n, dtype=torch.int64, device=device)
    for (s, e), k_c in zip(ranges, k_of_class):
        if x is None and (k_c == 0 or not ross):
            continue
        for r0 in range(s, e, chunk):
            rows = slice(r0, min(e, r0 + chunk))
            dt = chebyshev_block(t[rows], t)
            if x is not None:
                dx = chebyshev_block(x[rows], x)
                dz = torch.maximum(dx, dt)
                eps = torch.topk(dz, k + 1, dim=1, largest=False).values.amax(dim=1)
                del dz
                radius = next_below(eps).unsqueeze(1)
                n_x[rows] = torch.count_nonzero(dx <= radius, dim=1) - 1
                n_t[rows] = torch.count_nonzero(dt <= radius, dim=1) - 1
                del dx
            if ross and k_c > 0:
                own = dt[:, s:e]
                r = torch.topk(own, k_c + 1, dim=1, largest=False).values.amax(dim=1)
                closer = dt <= next_below(r).unsqueeze(1)
                if keep_cols is not None:
                    closer &= keep_cols
                m[rows] = torch.count_nonzero(closer, dim=1)
    return m, n_x, n_t


def _tree_ross_counts(
    t: torch.Tensor, y_idx: torch.Tensor, k_row: torch.Tensor
) -> torch.Tensor:
    """``m_i`` of Ross's estimator with scikit-learn's KD-trees (CPU)."""
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
    """``n_x``, ``n_t`` of KSG algorithm 1 with scikit-learn's KD-trees (CPU)."""
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
) -> Tuple[float, float]:
    """(KSG I(X;T), Ross I(T;Y)) in nats, unclipped; NaN where undefined."""
    device = t.device
    n = t.shape[0]
    label_counts = counts[y_idx]
    k_row = torch.clamp(label_counts - 1, max=k)  # k_c; 0 for singleton classes
    keep = k_row > 0
    n_kept = int(keep.sum())

    ksg_tree = x is not None and _use_tree(algorithm, device, x.shape[1] + t.shape[1])
    ross_tree = _use_tree(algorithm, device, t.shape[1])
    brute_ksg = x is not None and not ksg_tree
    # A brute-force KSG pass computes every t-distance anyway: Ross rides on it.
    brute_ross = bool(n_kept) and (brute_ksg or not ross_tree)
    n_x = n_t = m = None
    if ksg_tree:
        n_x, n_t = _tree_ksg_counts(x, t, k)
    if n_kept and not brute_ross:
        m = _tree_ross_counts(t, y_idx, k_row)
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
) -> np.random.RandomState:
    """Check the parameters of :func:`knn`; return the random state to use."""
    check_param(k, "k", "knn", kind="int", low=1)
    check_param(jitter, "jitter", "knn", low=0.0)
    check_param(algorithm, "algorithm", "knn", kind="option", options=_ALGORITHMS)
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
) -> InformationEstimate:
    """Estimate I(X;T) (KSG) and I(T;Y) (Ross) from nearest neighbours, in bits.

    **I(T;Y)**, labels discrete: the estimator of Ross (2014), as in
    scikit-learn's ``mutual_info_classif`` (``_compute_mi_cd``), with the
    max-norm on the whole layer instead of one feature at a time. For sample
    ``i`` of class ``c`` (``n_c`` samples), ``r_i`` is the distance to its
    ``k_c = min(k, n_c - 1)``-th nearest neighbour within the class and
    ``m_i`` the number of samples of any class strictly closer than ``r_i``
    (``i`` included); then ``I = psi(N) + <psi(k_c)> - <psi(n_c)> - <psi(m_i)>``
    over the ``N`` samples whose class has at least 2 samples.

    **I(X;T)**, ``x`` given: algorithm 1 of Kraskov, Stoegbauer & Grassberger
    (2004). ``eps_i`` is the distance to the ``k``-th nearest neighbour in the
    joint space with the max-norm, ``max(||x_i - x_j||_inf, ||t_i - t_j||_inf)``,
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
        Neighbour search. ``"brute"``: chunked max-norm distances with torch
        on ``t``'s device (memory ``O(n_samples)`` per chunk row).
        ``"kd_tree"``: scikit-learn's ``KDTree`` on the CPU. ``"auto"`` uses
        the tree for CPU data whose search space has at most 20 dimensions
        (where it is the faster of the two) and brute force otherwise.
    chunk_size : int, optional
        Rows per chunk of the brute-force search (default: about 2**20
        distances per chunk on the CPU, 2**24 on CUDA). The result does not
        depend on it.

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits (``i_xt`` NaN without ``x``).

    Raises
    ------
    InvalidParameterError
        A bad ``k``, ``jitter``, ``random_state``, ``algorithm`` or
        ``chunk_size``, mismatched sample counts, non-integer labels, fewer
        than 2 samples, or NaN/Inf activations or inputs.

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

    *Cost.* Brute force: ``n_samples ** 2`` max-norm distances in t-space
    (plus ``sum_c n_c ** 2`` within classes), and as many in x-space when
    ``x`` is given, in row chunks, so memory stays ``O(chunk_size *
    n_samples)`` (under 100 MiB at ``n = 50,000`` on the CPU).

    References
    ----------
    .. [1] B. C. Ross, "Mutual information between discrete and continuous
       data sets", PLoS ONE 9(2), e87357, 2014.
    .. [2] A. Kraskov, H. Stoegbauer and P. Grassberger, "Estimating mutual
       information", Phys. Rev. E 69, 066138, 2004.
    .. [3] Z. Goldfeld, E. van den Berg, K. Greenewald, I. Melnyk, N. Nguyen,
       B. Kingsbury and Y. Polyanskiy, "Estimating information flow in deep
       neural networks", ICML 2019.

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
        tp, xp, y_idx, counts, int(k), algorithm=algorithm, chunk_size=chunk_size
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
