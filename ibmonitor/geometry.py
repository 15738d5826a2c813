"""Representation geometry: class-manifold flattening, separation, probes, pairing.

Two families of measures, read beside the information plane:

- **Disentanglement of a layer's class manifolds** (Brahma, Wu & She 2016):
  :func:`flattening` (ratio of the geodesic distance along a k-nearest-neighbour
  graph to the Euclidean distance, within each class; 1.0 is flat),
  :func:`separation` (between-class over within-class scatter) and
  :func:`linear_probe` (held-out accuracy of a logistic-regression probe and
  its *usable information* H(Y) - cross-entropy in bits, Xu et al. 2020, a
  lower bound on I(T;Y) for the information plane). :func:`layer_geometry`
  computes all of them for one layer.
- **Filter pairing** (Shang, Sohn, Almeida & Lee 2016): :func:`pairing`, each
  filter's most negative cosine similarity with another filter of the same
  layer, :func:`random_pairing` (the same for Gaussian random filters, the
  paper's baseline) and :func:`pairing_table` (one row per Linear or Conv
  layer of a model).

All functions are pure: they take arrays or tensors (numpy, or torch on any
device) and return numbers, arrays or a DataFrame; they never touch a model's
parameters or training state. The neighbour graphs, shortest paths and the
probe use scikit-learn and SciPy (``kneighbors_graph``,
``scipy.sparse.csgraph.shortest_path``, ``LogisticRegression``); scatter and
cosine similarities are a few tensor operations on the input's device.

References
----------
P. P. Brahma, D. Wu and Y. She, "Why deep learning works: a manifold
disentanglement perspective", IEEE TNNLS 27(10), 1997-2008, 2016.

W. Shang, K. Sohn, D. Almeida and H. Lee, "Understanding and improving
convolutional neural networks via concatenated rectified linear units", ICML
2016.

Y. Xu, S. Zhao, J. Song, R. Stewart and S. Ermon, "A theory of usable
information under computational constraints", ICLR 2020.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._validation import as_tensor, check_activations, check_labels, check_param
from .exceptions import EstimationWarning, InvalidParameterError

__all__ = [
    "PAIRING_COLUMNS",
    "ProbeResult",
    "flattening",
    "layer_geometry",
    "linear_probe",
    "pairing",
    "pairing_table",
    "random_pairing",
    "separation",
]

#: Columns of the frame :func:`pairing_table` returns.
PAIRING_COLUMNS = (
    "layer",
    "module",
    "n_filters",
    "filter_size",
    "mean_mu",
    "median_mu",
    "min_mu",
    "frac_below",
    "random_mean_mu",
    "mu",
)

#: Fraction of excluded (disconnected) pairs above which :func:`flattening` warns.
DISCONNECTED_WARN_FRACTION = 0.05

#: Rows of a filter bank compared at once in :func:`pairing` (bounds memory).
_PAIRING_BLOCK = 1024


# --------------------------------------------------------------------- input
def _prepare(t: Any, y: Any, owner: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``t`` as a finite 2-D float tensor and ``y`` as int64 labels.

    Extra dimensions of ``t`` (a convolutional map) are flattened; ``y`` is
    moved to ``t``'s device. At least two classes are required.
    """
    tt = as_tensor(t, name="t")
    if tt.ndim == 0:
        raise InvalidParameterError(
            f"The 't' parameter of {owner} must be an array of shape "
            "(n_samples, n_features). Got a scalar instead."
        )
    if tt.ndim > 2:
        tt = tt.reshape(tt.shape[0], -1)
    tt = check_activations(tt, name="t", min_samples=2)
    yt = check_labels(y, tt.shape[0], name="y").to(tt.device)
    n_classes = int(torch.unique(yt).numel())
    if n_classes < 2:
        raise InvalidParameterError(
            f"The 'y' parameter of {owner} must hold at least 2 classes. Got 1 "
            f"class (label {int(yt[0])}) instead."
        )
    return tt, yt


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """Float64 numpy copy on the CPU (scikit-learn and SciPy run there)."""
    return t.detach().to("cpu", torch.float64).numpy()


def _blas_single_thread() -> Any:
    """Context that runs NumPy's and SciPy's BLAS on one thread.

    The neighbour graphs and probes here are small (a few thousand rows);
    BLAS threads cost more than they save on them, and on a loaded machine
    far more: a probe on 700 x 256 activations took 1.7 s with two OpenBLAS
    threads and 0.05 s with one, on a 2-core machine under load. The limit
    is process-wide while it lasts (threadpoolctl, a scikit-learn
    dependency); torch's own thread pool is not touched.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _class_indices(y: np.ndarray) -> Dict[int, np.ndarray]:
    return {int(c): np.flatnonzero(y == c) for c in np.unique(y)}


# ---------------------------------------------------------------- separation
def separation(t: Any, y: Any) -> float:
    """Return the ratio of between-class to within-class scatter, tr(S_B) / tr(S_W).

    With class means ``m_c``, class sizes ``n_c`` and the overall mean ``m``::

        tr(S_B) = sum_c n_c ||m_c - m||^2
        tr(S_W) = sum_i ||t_i - m_{y_i}||^2

    i.e. Fisher's criterion with traces in place of the matrices (the
    Calinski-Harabasz index without its degrees-of-freedom factor
    ``(n - K) / (K - 1)``). Large values mean compact classes far apart; it is
    invariant to translation, rotation and a common scaling of ``t``.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_features)
        A layer's activations; extra dimensions are flattened.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels, at least two classes.

    Returns
    -------
    ratio : float
        tr(S_B) / tr(S_W), dimensionless. ``inf`` when every class is a
        single point (tr(S_W) = 0) and ``nan`` when all samples coincide, each
        with an :class:`~ibmonitor.exceptions.EstimationWarning`.

    Raises
    ------
    InvalidParameterError
        Mismatched lengths, fewer than 2 samples or classes, NaN or Inf,
        non-integer labels.

    Notes
    -----
    Computed in float64 on ``t``'s device. The sums are over samples, not
    averages, so the ratio does not depend on ``n`` for a fixed geometry; for
    two equally sized isotropic Gaussian classes with means ``+-a`` and
    per-coordinate variance ``s^2`` in ``d`` dimensions it tends to
    ``|a|^2 / (d s^2)``.

    Examples
    --------
    >>> separation([[0, 0], [2, 0], [0, 4], [2, 4]], [0, 0, 1, 1])
    4.0
    """
    tt, yt = _prepare(t, y, "separation")
    x = tt.to(torch.float64)
    classes, inverse, counts = torch.unique(yt, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, inverse, x)
    means = sums / counts[:, None].to(x.dtype)
    overall = x.mean(dim=0)
    between = float((counts.to(x.dtype) * ((means - overall) ** 2).sum(dim=1)).sum())
    within = float(((x - means[inverse]) ** 2).sum())
    if within == 0.0:
        what = "all samples coincide" if between == 0.0 else "every class is a point"
        warnings.warn(
            f"separation: the within-class scatter is 0 ({what}); returning "
            f"{'nan' if between == 0.0 else 'inf'}.",
            EstimationWarning,
            stacklevel=2,
        )
        return math.nan if between == 0.0 else math.inf
    return between / within


# ---------------------------------------------------------------- flattening
def _flattening_classes(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    n_sources: int,
    seed: int,
) -> Tuple[Dict[int, float], int, int]:
    """Mean geodesic/Euclidean ratio per class; also (excluded, total) pairs.

    Classes with fewer than 2 samples are skipped; ``k`` is capped at
    ``n_c - 1`` per class (the caller decides whether that is allowed).
    """
    from scipy.sparse.csgraph import shortest_path
    from scipy.spatial.distance import cdist
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(seed)
    per_class: Dict[int, float] = {}
    excluded = total = 0
    for label, idx in _class_indices(y).items():
        if len(idx) < 2:
            continue
        xc = x[idx]
        n_c = len(xc)
        sources = (
            np.arange(n_c)
            if n_c <= n_sources
            else np.sort(rng.choice(n_c, n_sources, replace=False))
        )
        # scikit-learn finds the neighbours; the edge lengths are recomputed
        # directly, since its fast distances (|a|^2 + |b|^2 - 2ab) carry
        # relative errors of ~1e-8 that would show in a ratio near 1.
        graph = kneighbors_graph(
            xc, min(k, n_c - 1), mode="connectivity", include_self=False
        ).tocoo()
        graph.data = np.linalg.norm(xc[graph.row] - xc[graph.col], axis=1)
        geodesic = shortest_path(
            graph.tocsr(), method="D", directed=False, indices=sources
        )
        euclid = cdist(xc[sources], xc)
        distinct = euclid > 0.0  # drops duplicates
        distinct[np.arange(len(sources)), sources] = False  # and each source itself
        connected = np.isfinite(geodesic)
        total += int(distinct.sum())
        excluded += int((distinct & ~connected).sum())
        keep = distinct & connected
        if keep.any():
            # Shortest paths are sums of edges, each a Euclidean distance, so
            # geodesic >= euclid up to rounding; clip that rounding to 1.
            ratios = np.maximum(geodesic[keep] / euclid[keep], 1.0)
            per_class[label] = float(ratios.mean())
    return per_class, excluded, total


def flattening(
    t: Any,
    y: Any,
    *,
    k: int = 10,
    n_sources: int = 100,
    seed: int = 0,
) -> float:
    """Return the mean ratio of k-NN-graph geodesic to Euclidean distance in classes.

    Within each class, the samples are joined to their ``k`` nearest
    neighbours (Euclidean edge lengths, edges taken as undirected); the
    geodesic distance between two samples is the shortest path along that
    graph (Dijkstra, as in Isomap). For each class the ratio geodesic /
    Euclidean is averaged over the pairs, then the class means are averaged
    with equal weight. A flat (convex, densely sampled) class manifold gives
    a ratio near 1; a curled one (a swiss roll) gives larger values, because
    its graph paths follow the manifold around the curl.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_features)
        A layer's activations; extra dimensions are flattened.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels, at least two classes.
    k : int, default=10
        Neighbours per sample in the graph; must be smaller than the size of
        every class.
    n_sources : int, default=100
        Classes with more samples use this many seeded random samples as path
        sources (paired with every sample of their class), which bounds the
        cost at ``n_sources`` Dijkstra runs per class.
    seed : int, default=0
        Seed of the source subsample.

    Returns
    -------
    ratio : float
        Mean geodesic / Euclidean distance ratio, dimensionless, at least 1.0
        (1.0 = flat). ``nan`` (with a warning) when no pair of distinct,
        connected samples exists.

    Raises
    ------
    InvalidParameterError
        Mismatched lengths, fewer than 2 classes, NaN or Inf, ``k`` not a
        positive int smaller than every class, bad ``n_sources``.

    Warns
    -----
    EstimationWarning
        When more than 5 % of the pairs lie in different connected components
        of their class's graph (see Notes).

    Notes
    -----
    Pairs of coinciding samples (Euclidean distance 0) have no ratio and are
    left out. Pairs in different connected components of the k-NN graph have
    an infinite geodesic distance; they are left out of the mean too, which
    biases the ratio downwards (the far, curled pairs are the ones that get
    cut off); raise ``k`` to connect the graph. The ratios are ordered pairs
    (source, target); with every sample a source each unordered pair counts
    twice, which leaves the mean unchanged.

    What 1.0 means in practice: only collinear samples give exactly 1. A
    random sample of a flat region has a k-NN graph whose shortest paths
    zigzag a little, about 4-5 % longer than the straight line in 2-D with
    ``k=10``, whatever the number of samples. The zigzag grows with the
    intrinsic dimension (a 10-D Gaussian blob of 100-1000 samples gives
    1.35-1.6) and shrinks with ``k``, so compare layers at the same ``k`` and
    sample size, and read the ratio as "curvature and intrinsic dimension",
    not curvature alone. Brahma et al. read a decreasing ratio over depth as
    flattening of the class manifolds.

    Examples
    --------
    >>> import numpy as np
    >>> line = np.linspace(0, 1, 20)[:, None] * [1.0, 2.0]
    >>> round(flattening(np.vstack([line, line + 5]), [0] * 20 + [1] * 20, k=2), 6)
    1.0
    """
    owner = "flattening"
    check_param(k, "k", owner, kind="int", low=1)
    check_param(n_sources, "n_sources", owner, kind="int", low=1)
    check_param(seed, "seed", owner, kind="int", low=0)
    tt, yt = _prepare(t, y, owner)
    y_np = yt.cpu().numpy()
    labels, counts = np.unique(y_np, return_counts=True)
    smallest = int(counts.min())
    if k >= smallest:
        label = int(labels[int(counts.argmin())])
        raise InvalidParameterError(
            f"The 'k' parameter of {owner} must be an int smaller than the size "
            f"of every class; class {label} has {smallest} samples. Got {k} "
            "instead."
        )
    return _flattening(_to_numpy(tt), y_np, k, n_sources, seed, stacklevel=3)


def _flattening(
    x: np.ndarray, y: np.ndarray, k: int, n_sources: int, seed: int, stacklevel: int
) -> float:
    with _blas_single_thread():
        per_class, excluded, total = _flattening_classes(x, y, k, n_sources, seed)
    if total and excluded / total > DISCONNECTED_WARN_FRACTION:
        warnings.warn(
            f"flattening: {excluded} of {total} pairs ({100 * excluded / total:.0f} "
            f"%) lie in different connected components of their class's {k}-NN "
            "graph and are left out of the mean; raise k to connect the graphs.",
            EstimationWarning,
            stacklevel=stacklevel,
        )
    if not per_class:
        warnings.warn(
            "flattening: no class has two distinct connected samples; returning nan.",
            EstimationWarning,
            stacklevel=stacklevel,
        )
        return math.nan
    return float(np.mean(list(per_class.values())))


# -------------------------------------------------------------- linear probe
@dataclass(frozen=True)
class ProbeResult:
    """Held-out performance of a linear probe (see :func:`linear_probe`).

    Attributes
    ----------
    accuracy : float
        Fraction of held-out samples classified correctly.
    usable_information : float
        ``label_entropy - cross_entropy`` in bits: the predictive V-information
        of Xu et al. (2020) for logistic regression, a lower bound on I(T;Y)
        (up to estimation error). Negative when the probe predicts worse than
        the class frequencies; not clipped.
    cross_entropy : float
        Mean held-out cross-entropy of the probe, ``-log2 p(y | t)``, in bits.
    label_entropy : float
        Mean held-out cross-entropy of the constant predictor (the class
        frequencies of the training part), in bits: H(Y) up to the difference
        between the parts' class frequencies.
    n_train, n_test : int
        Samples in the fitting and the held-out part.
    n_classes : int
        Number of classes.
    converged : bool
        Whether the solver converged within ``max_iter`` iterations.
    """

    accuracy: float
    usable_information: float
    cross_entropy: float
    label_entropy: float
    n_train: int
    n_test: int
    n_classes: int
    converged: bool

    def as_dict(self) -> Dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


#: Smallest probability a held-out label may get in the cross-entropy.
_MIN_PROBABILITY = 1e-15


def _check_test_fraction(test_fraction: Any, owner: str) -> None:
    """Check that ``test_fraction`` lies strictly between 0 and 1."""
    check_param(
        test_fraction,
        "test_fraction",
        owner,
        kind="real",
        low=0.0,
        high=1.0,
        low_closed=False,
        high_closed=False,
    )


def _split_sizes(n: int, test_fraction: float) -> Tuple[int, int]:
    """Sizes scikit-learn's ``train_test_split`` uses for a float test size."""
    n_test = math.ceil(test_fraction * n)
    return n - n_test, n_test


def linear_probe(
    t: Any,
    y: Any,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> ProbeResult:
    """Fit a logistic-regression probe on part of ``(t, y)``, score it on the rest.

    The samples are split with class proportions kept (a stratified split,
    ``sklearn.model_selection.train_test_split``); the features are
    standardised on the fitting part and a multinomial logistic regression
    with an L2 penalty is fitted there (``StandardScaler`` +
    ``LogisticRegression``). Its accuracy and cross-entropy are measured on
    the held-out part.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_features)
        A layer's activations; extra dimensions are flattened.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels; every class needs at least 2 samples.
    test_fraction : float, default=0.3
        Fraction of the samples held out, in (0, 1); both parts must hold at
        least one sample per class.
    seed : int, default=0
        Seed of the split.
    C : float, default=1.0
        Inverse L2 regularisation strength of ``LogisticRegression`` (on
        standardised features).
    max_iter : int, default=1000
        Iterations of the L-BFGS solver.

    Returns
    -------
    result : ProbeResult
        ``accuracy``, ``usable_information`` (bits), ``cross_entropy`` and
        ``label_entropy`` (bits), the part sizes and whether it converged.

    Raises
    ------
    InvalidParameterError
        Mismatched lengths, fewer than 2 classes, NaN or Inf, a class with
        fewer than 2 samples, ``test_fraction`` outside (0, 1) or leaving a
        part smaller than the number of classes, bad ``C`` or ``max_iter``.

    Notes
    -----
    Usable information (Xu et al. 2020) is ``H_V(Y) - H_V(Y | T)``, both
    measured as held-out cross-entropies: ``H_V(Y | T)`` with the fitted
    probe, ``H_V(Y)`` with the best constant predictor of the same family,
    the class frequencies of the fitting part. Using the same held-out
    samples for both terms makes an uninformative layer score about 0 bits
    rather than a split-dependent offset; for a stratified split the constant
    predictor's cross-entropy equals the plug-in entropy of the held-out
    labels up to rounding of the class counts. The value is in bits and lies
    on the I(T;Y) axis of the information plane: at most about H(Y), and
    negative when the probe overfits the fitting part so that it predicts
    held-out labels worse than the class frequencies do (it is reported as
    is, not clipped at 0). Probabilities below 1e-15 are raised to 1e-15 in
    the cross-entropy (as scikit-learn's ``log_loss`` does with its epsilon),
    which caps one confident mistake at about 50 bits.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 100)
    >>> t = rng.normal(size=(200, 2)) + 10.0 * y[:, None]
    >>> linear_probe(t, y).accuracy
    1.0
    """
    owner = "linear_probe"
    _check_test_fraction(test_fraction, owner)
    check_param(seed, "seed", owner, kind="int", low=0)
    check_param(C, "C", owner, kind="real", low=0.0, low_closed=False)
    check_param(max_iter, "max_iter", owner, kind="int", low=1)
    tt, yt = _prepare(t, y, owner)
    x = _to_numpy(tt)
    labels = yt.cpu().numpy()
    return _linear_probe(x, labels, float(test_fraction), int(seed), float(C), max_iter)


def _linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    test_fraction: float,
    seed: int,
    C: float,
    max_iter: int,
) -> ProbeResult:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    owner = "linear_probe"
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        label = int(classes[int(counts.argmin())])
        raise InvalidParameterError(
            f"The 'y' parameter of {owner} must have at least 2 samples in every "
            f"class (one to fit, one to test); class {label} has {int(counts.min())}."
        )
    n_train, n_test = _split_sizes(len(y), test_fraction)
    if min(n_train, n_test) < len(classes):
        raise InvalidParameterError(
            f"The 'test_fraction' parameter of {owner} must leave at least one "
            f"sample per class ({len(classes)}) in both parts; {len(y)} samples "
            f"split into {n_train} to fit and {n_test} to test. Got "
            f"{test_fraction!r} instead."
        )
    x_fit, x_test, y_fit, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught, _blas_single_thread():
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x_fit, y_fit)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # pass on anything else the fit said
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    fitted_classes = probe.classes_
    column = np.searchsorted(fitted_classes, y_test)
    with _blas_single_thread():
        proba = probe.predict_proba(x_test)
    p_true = np.maximum(proba[np.arange(len(y_test)), column], _MIN_PROBABILITY)
    cross_entropy = float(-np.mean(np.log2(p_true)))
    prior = np.unique(y_fit, return_counts=True)[1] / len(y_fit)
    label_entropy = float(-np.mean(np.log2(prior[column])))
    accuracy = float(np.mean(fitted_classes[proba.argmax(axis=1)] == y_test))
    return ProbeResult(
        accuracy=accuracy,
        usable_information=label_entropy - cross_entropy,
        cross_entropy=cross_entropy,
        label_entropy=label_entropy,
        n_train=len(y_fit),
        n_test=len(y_test),
        n_classes=len(classes),
        converged=converged,
    )


# ------------------------------------------------------------ layer_geometry
def layer_geometry(
    t: Any,
    y: Any,
    *,
    probe: bool = True,
    flattening_k: int = 10,
    max_samples: Optional[int] = 2000,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> Dict[str, float]:
    """Return every geometry measure of one layer as flat scalars.

    The one call a monitor makes per layer and recording: :func:`separation`,
    :func:`flattening` and (with ``probe=True``) :func:`linear_probe`, on at
    most ``max_samples`` samples.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_features)
        A layer's activations; extra dimensions are flattened.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels, at least two classes.
    probe : bool, default=True
        Also fit the linear probe.
    flattening_k : int, default=10
        Neighbours of the flattening graph; capped at ``n_c - 1`` for a class
        of ``n_c`` samples (classes of one sample are skipped), so that a small
        class does not stop the monitor.
    max_samples : int or None, default=2000
        Use a seeded random subset of this many samples when there are more
        (None: all); the cost of the flattening graph grows with the square of
        the class sizes.
    test_fraction : float, default=0.3
        Held-out fraction of the probe.
    seed : int, default=0
        Seed of the subset, the flattening sources and the probe split.

    Returns
    -------
    scalars : dict of str to float
        ``separation`` (tr(S_B)/tr(S_W)), ``flattening`` (ratio, 1.0 = flat)
        and, with ``probe``, ``probe_accuracy`` (fraction) and
        ``usable_information`` (bits).

    Raises
    ------
    InvalidParameterError
        As the measures do (the probe needs 2 samples per class), and for bad
        ``flattening_k`` or ``max_samples``.

    Notes
    -----
    Cost on a loaded 2-core CPU for 1000 samples of 256 units in 10 classes:
    about 0.2 s (separation 0.01 s, flattening 0.15 s, probe 0.06 s). The
    flattening part grows with ``n_sources x n_c x log n_c`` per class (at
    most 100 sources), the probe with ``n x d x n_classes`` per iteration.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> t = rng.normal(size=(100, 3)) + 6.0 * y[:, None]
    >>> sorted(layer_geometry(t, y))
    ['flattening', 'probe_accuracy', 'separation', 'usable_information']
    """
    owner = "layer_geometry"
    check_param(flattening_k, "flattening_k", owner, kind="int", low=1)
    if max_samples is not None:
        check_param(max_samples, "max_samples", owner, kind="int", low=4)
    _check_test_fraction(test_fraction, owner)
    check_param(seed, "seed", owner, kind="int", low=0)
    tt, yt = _prepare(t, y, owner)
    if max_samples is not None and tt.shape[0] > max_samples:
        gen = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(tt.shape[0], generator=gen)[:max_samples].sort().values
        tt, yt = tt[keep.to(tt.device)], yt[keep.to(yt.device)]
    out = {"separation": separation(tt, yt)}
    x = _to_numpy(tt)
    labels = yt.cpu().numpy()
    out["flattening"] = _flattening(
        x, labels, flattening_k, 100, int(seed), stacklevel=3
    )
    if probe:
        result = _linear_probe(x, labels, float(test_fraction), int(seed), 1.0, 1000)
        out["probe_accuracy"] = result.accuracy
        out["usable_information"] = result.usable_information
    return out


# ------------------------------------------------------------------- pairing
def _filter_bank(weight: Any, owner: str, name: str = "weight") -> torch.Tensor:
    """Check a weight tensor and return it as (n_filters, filter_size), floating."""
    w = as_tensor(weight, name=name)
    if w.ndim < 2:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must have at least 2 dimensions "
            "(filters first: (out_features, in_features) or (out_channels, "
            f"in_channels, *kernel)). Got shape {tuple(w.shape)} instead."
        )
    if w.shape[0] < 2:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must hold at least 2 filters to "
            f"pair. Got shape {tuple(w.shape)} instead."
        )
    if w[0].numel() == 0:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} has empty filters. Got shape "
            f"{tuple(w.shape)} instead."
        )
    if torch.is_complex(w):
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be real. Got dtype {w.dtype}."
        )
    if not torch.is_floating_point(w) or w.dtype in (torch.float16, torch.bfloat16):
        w = w.to(torch.float32)
    w = w.reshape(w.shape[0], -1)
    if not bool(torch.isfinite(w).all()):
        n_bad = int((~torch.isfinite(w)).sum())
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} contains NaN or Inf ({n_bad} of "
            f"{w.numel()} values)."
        )
    return w


def pairing(weight: Any) -> np.ndarray:
    """Return each filter's most negative cosine similarity with another filter.

    For the filters ``phi_1 .. phi_n`` of one layer (rows of a Linear weight,
    output channels of a Conv weight of any dimension, each flattened),
    ``mu_i = min_{j != i} cos(phi_i, phi_j)``: the cosine similarity with the
    filter's "pairing filter" in Shang et al. (2016). ``mu_i`` near -1 means
    the layer also holds (nearly) the negative of filter ``i``: the pair
    passes both phases of the same linear response through a ReLU.

    Parameters
    ----------
    weight : array-like or Tensor of shape (n_filters, ...)
        The filter bank, filters along the first axis (at least 2). For a
        transposed convolution pass ``weight.transpose(0, 1)``.

    Returns
    -------
    mu : ndarray of shape (n_filters,)
        Cosine similarities in [-1, 1], float64. A filter of zeros has no
        direction: its ``mu`` is nan, and it is nobody's partner (a filter
        whose every partner is zero gets nan too).

    Raises
    ------
    InvalidParameterError
        Fewer than 2 dimensions or 2 filters, empty filters, complex values,
        NaN or Inf.

    Notes
    -----
    Computed on the weight's device in its floating dtype (half precision in
    float32), in blocks of 1024 filters, so the memory is at most 1024 x
    ``n_filters`` similarities. Biases are not part of a filter. Shang et al.
    compare the histogram of ``mu`` with that of Gaussian random filters of
    the same shape (:func:`random_pairing`): random filters in ``D``
    dimensions already reach ``mu`` around ``-sqrt(2 ln n / D)``, so small
    filters (a 3x3 kernel on one input channel, ``D = 9``) pair by chance.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([[1.0, 2.0], [-1.0, -2.0], [2.0, -1.0]])
    >>> pairing(w).round(3).tolist()
    [-1.0, -1.0, 0.0]
    """
    w = _filter_bank(weight, "pairing")
    norms = w.norm(dim=1)
    zero = norms == 0
    unit = w / torch.where(zero, torch.ones_like(norms), norms)[:, None]
    n = unit.shape[0]
    mu = torch.empty(n, dtype=unit.dtype, device=unit.device)
    for start in range(0, n, _PAIRING_BLOCK):
        stop = min(start + _PAIRING_BLOCK, n)
        cos = (unit[start:stop] @ unit.T).clamp_(-1.0, 1.0)
        rows = torch.arange(stop - start, device=unit.device)
        cos[rows, rows + start] = math.inf  # not its own partner
        cos[:, zero] = math.inf  # zero filters are nobody's partner
        mu[start:stop] = cos.min(dim=1).values
    mu[zero] = math.nan
    mu[torch.isinf(mu)] = math.nan
    return mu.detach().to("cpu", torch.float64).numpy()


def random_pairing(shape: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """Return :func:`pairing` of a filter bank of i.i.d. Gaussian random filters.

    The baseline of Shang et al.'s histograms (their red curves): what ``mu``
    looks like when the filters of a layer of this shape carry no structure.

    Parameters
    ----------
    shape : sequence of int
        Shape of the weight, filters first, e.g. ``(32, 1, 5, 5)``.
    seed : int, default=0
        Seed of the draw (a CPU ``torch.Generator``).

    Returns
    -------
    mu : ndarray of shape (shape[0],)
        Cosine similarities in [-1, 1], float64.

    Raises
    ------
    InvalidParameterError
        A shape of fewer than 2 positive dimensions or fewer than 2 filters.

    Examples
    --------
    >>> random_pairing((16, 3, 3, 3)).shape
    (16,)
    """
    owner = "random_pairing"
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"The 'shape' parameter of {owner} must be a sequence of ints. Got "
            f"{shape!r} instead."
        ) from None
    if len(dims) < 2 or min(dims) < 1 or dims[0] < 2:
        raise InvalidParameterError(
            f"The 'shape' parameter of {owner} must have at least 2 positive "
            f"dimensions and at least 2 filters. Got {shape!r} instead."
        )
    check_param(seed, "seed", owner, kind="int", low=0)
    gen = torch.Generator().manual_seed(int(seed))
    return pairing(torch.randn(dims, generator=gen, dtype=torch.float64))


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _pairing_layers(model: nn.Module) -> Dict[str, Tuple[nn.Module, torch.Tensor]]:
    """Linear and Conv layers with their filter banks (filters first)."""
    found: Dict[str, Tuple[nn.Module, torch.Tensor]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or isinstance(
            weight, nn.parameter.UninitializedParameter
        ):
            continue
        if isinstance(module, _TRANSPOSED_TYPES):
            if module.groups != 1:
                continue  # output channels of several groups share no input
            bank = weight.transpose(0, 1)
        elif isinstance(module, (nn.Linear, *_CONV_TYPES)):
            bank = weight
        else:
            continue
        found[name or type(module).__name__] = (module, bank.detach())
    return found


def pairing_table(
    model: nn.Module,
    *,
    layers: Optional[Sequence[str]] = None,
    threshold: float = -0.9,
    baseline: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Return the filter pairing of every Linear and Conv layer, one row per layer.

    Parameters
    ----------
    model : nn.Module
        The model; its Linear, Conv1d/2d/3d and (ungrouped) ConvTranspose
        layers are read, in the order of ``model.named_modules()``. Layers
        with fewer than 2 filters (a single-output head) and lazy layers not
        yet initialised are skipped.
    layers : sequence of str, optional
        Names of the layers to read (default: all).
    threshold : float, default=-0.9
        ``frac_below`` counts the filters with ``mu <= threshold``: the
        fraction that has a near-opposite partner.
    baseline : bool, default=True
        Add ``random_mean_mu``, the mean ``mu`` of Gaussian random filters of
        the layer's shape (:func:`random_pairing`, seeded); otherwise nan.
    seed : int, default=0
        Seed of the baseline draw.

    Returns
    -------
    table : pandas.DataFrame
        Columns :data:`PAIRING_COLUMNS`: ``layer``, ``module`` (class name),
        ``n_filters``, ``filter_size`` (values per filter), ``mean_mu``,
        ``median_mu``, ``min_mu``, ``frac_below`` (fraction in [0, 1]),
        ``random_mean_mu`` and ``mu`` (the ndarray of :func:`pairing`).
        Statistics ignore the nan of zero filters.

    Raises
    ------
    InvalidParameterError
        A model with no such layer, an unknown name in ``layers``, a
        ``threshold`` outside [-1, 1].

    Examples
    --------
    >>> from torch import nn
    >>> table = pairing_table(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(),
    ...                                     nn.Linear(8, 4)))
    >>> table["layer"].tolist()
    ['0', '2']
    """
    owner = "pairing_table"
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module. Got "
            f"{type(model).__name__} instead."
        )
    check_param(threshold, "threshold", owner, kind="real", low=-1.0, high=1.0)
    check_param(seed, "seed", owner, kind="int", low=0)
    found = _pairing_layers(model)
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        unknown = [name for name in layers if name not in found]
        if unknown:
            names = list(found)
            shown = names[:20] + (["..."] if len(names) > 20 else [])
            raise InvalidParameterError(
                f"Unknown layer {unknown[0]!r} for {owner}. Available Linear and "
                f"Conv layers: {shown}."
            )
        found = {name: found[name] for name in layers}
    rows: List[Dict[str, Any]] = []
    for name, (module, bank) in found.items():
        if bank.shape[0] < 2 or bank[0].numel() == 0:
            continue
        mu = pairing(bank)
        valid = mu[np.isfinite(mu)]
        stats = (
            (float(valid.mean()), float(np.median(valid)), float(valid.min()))
            if len(valid)
            else (math.nan, math.nan, math.nan)
        )
        random_mean = (
            float(np.nanmean(random_pairing(tuple(bank.shape), seed=seed)))
            if baseline
            else math.nan
        )
        rows.append(
            {
                "layer": name,
                "module": type(module).__name__,
                "n_filters": int(bank.shape[0]),
                "filter_size": int(bank[0].numel()),
                "mean_mu": stats[0],
                "median_mu": stats[1],
                "min_mu": stats[2],
                "frac_below": float(np.mean(valid <= threshold)) if len(valid) else 0.0,
                "random_mean_mu": random_mean,
                "mu": mu,
            }
        )
    if not rows:
        raise InvalidParameterError(
            f"The 'model' parameter of {owner} has no Linear or Conv layer with "
            "at least 2 filters to pair."
        )
    return pd.DataFrame(rows, columns=list(PAIRING_COLUMNS))
