"""Test distributions with known mutual information ("Beyond Normal" tasks).

Generators of the kinds of tasks Czyz et al. (2023) use to benchmark
mutual-information estimators: jointly Gaussian pairs ``(X, Y)``, jointly
Student-t pairs, and either of them seen through a strictly monotone map of
every coordinate (which leaves the mutual information unchanged). Each
generator returns samples and the exact mutual information in bits.

Importable as ``from _distributions import ...`` (``tests/`` is on
``sys.path`` because ``tests/conftest.py`` lives there).

Structure of the tasks: ``X`` has ``dim_x`` and ``Y`` ``dim_y`` coordinates,
all of unit scale; the first ``n_interacting`` coordinates of ``X`` are each
correlated with the same coordinate of ``Y`` (correlation ``rho`` of the
Gaussian, or of the Student-t's scale matrix) and every other pair is
uncorrelated: the "sparse interaction" covariance of Czyz et al.

References
----------
P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx, "Beyond Normal:
On the Evaluation of Mutual Information Estimators", NeurIPS 2023.
R. B. Arellano-Valle, J. E. Contreras-Reyes and M. G. Genton, "Shannon entropy
and mutual information for multivariate skew-elliptical distributions",
Scandinavian Journal of Statistics 40(1), 2013.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy import special

LN2 = math.log(2.0)

#: Strictly increasing maps applied to every coordinate; mutual information is
#: invariant under them. ``normal_cdf`` gives a Gaussian coordinate uniform
#: margins.
TRANSFORMS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "asinh": np.arcsinh,
    "half_cube": lambda a: a * np.sqrt(np.abs(a)),
    "normal_cdf": special.ndtr,
}

Task = Tuple[np.ndarray, np.ndarray, float]


def sparse_covariance(
    dim_x: int, dim_y: int, rho: float, n_interacting: Optional[int] = None
) -> np.ndarray:
    """Joint ``(dim_x + dim_y)``-square covariance of the sparse-interaction tasks.

    Unit variances; ``cov[i, dim_x + i] = rho`` for ``i < n_interacting``
    (default ``min(dim_x, dim_y)``); every other off-diagonal entry is 0.
    """
    if n_interacting is None:
        n_interacting = min(dim_x, dim_y)
    if not 0 <= n_interacting <= min(dim_x, dim_y):
        raise ValueError(f"n_interacting must be in [0, {min(dim_x, dim_y)}]")
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1). Got {rho}.")
    cov = np.eye(dim_x + dim_y)
    for i in range(n_interacting):
        cov[i, dim_x + i] = cov[dim_x + i, i] = rho
    return cov


def gaussian_mi_bits(cov: np.ndarray, dim_x: int) -> float:
    """I(X;Y) in bits of a jointly Gaussian ``(X, Y)`` with covariance ``cov``.

    ``I = (log det cov_xx + log det cov_yy - log det cov) / 2``.
    """
    cov = np.asarray(cov, dtype=np.float64)
    logdet = [
        np.linalg.slogdet(c)[1] for c in (cov[:dim_x, :dim_x], cov[dim_x:, dim_x:], cov)
    ]
    return 0.5 * (logdet[0] + logdet[1] - logdet[2]) / LN2


def student_t_correction_bits(dof: float, dim_x: int, dim_y: int) -> float:
    """What a Student-t's shared scale adds to the Gaussian part of its MI (bits).

    For a multivariate Student-t ``(X, Y)`` with ``dof`` degrees of freedom
    and scale matrix ``S``, ``I(X;Y) = I_gauss(S) + c`` with (Arellano-Valle
    et al. 2013; Czyz et al. 2023)
    ``c = g(dim_x) + g(dim_y) - g(dim_x + dim_y)``,
    ``g(d) = log Gamma(nu / 2) - log Gamma((nu + d) / 2)
    + (nu + d) / 2 * (psi((nu + d) / 2) - psi(nu / 2))``,
    the terms of the entropy ``h = log det(S) / 2 + d log(nu pi) / 2 + g(d)``
    that do not cancel. ``c > 0``: X and Y are dependent even when ``S`` is
    diagonal.
    """

    def g(d: int) -> float:
        a, b = 0.5 * dof, 0.5 * (dof + d)
        return (
            special.gammaln(a)
            - special.gammaln(b)
            + b * (special.digamma(b) - special.digamma(a))
        )

    return float(g(dim_x) + g(dim_y) - g(dim_x + dim_y)) / LN2


def student_t_mi_bits(cov: np.ndarray, dim_x: int, dof: float) -> float:
    """I(X;Y) in bits of a multivariate Student-t with scale ``cov`` and ``dof``."""
    dim_y = cov.shape[0] - dim_x
    return gaussian_mi_bits(cov, dim_x) + student_t_correction_bits(dof, dim_x, dim_y)


def _split(
    z: np.ndarray, dim_x: int, transform: Optional[str]
) -> Tuple[np.ndarray, np.ndarray]:
    if transform is not None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {sorted(TRANSFORMS)} or None")
        z = TRANSFORMS[transform](z)
    return z[:, :dim_x].copy(), z[:, dim_x:].copy()


def gaussian_task(
    n: int,
    dim_x: int,
    dim_y: int,
    rho: float,
    seed: int = 0,
    *,
    n_interacting: Optional[int] = None,
    transform: Optional[str] = None,
) -> Task:
    """Samples of a jointly Gaussian ``(X, Y)`` and its exact MI.

    Parameters
    ----------
    n : int
        Number of samples.
    dim_x, dim_y : int
        Dimensions of ``X`` and ``Y``.
    rho : float
        Correlation of each interacting pair, in (-1, 1).
    seed : int, default=0
        Seed of the numpy Generator.
    n_interacting : int, optional
        Interacting pairs (default ``min(dim_x, dim_y)``).
    transform : {"asinh", "half_cube", "normal_cdf"}, optional
        Monotone map applied to every coordinate (the MI does not change).

    Returns
    -------
    x : ndarray of shape (n, dim_x)
    y : ndarray of shape (n, dim_y)
    mi_bits : float
        ``-n_interacting / 2 * log2(1 - rho**2)``.
    """
    cov = sparse_covariance(dim_x, dim_y, rho, n_interacting)
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(len(cov)), cov, size=n, method="cholesky")
    x, y = _split(z, dim_x, transform)
    return x, y, gaussian_mi_bits(cov, dim_x)


def student_t_task(
    n: int,
    dim_x: int,
    dim_y: int,
    rho: float,
    dof: float,
    seed: int = 0,
    *,
    n_interacting: Optional[int] = None,
    transform: Optional[str] = None,
) -> Task:
    """Samples of a multivariate Student-t ``(X, Y)`` and its exact MI.

    ``Z = G / sqrt(W / dof)`` with ``G`` Gaussian (the sparse-interaction
    covariance as scale matrix) and ``W`` chi-squared with ``dof`` degrees
    of freedom, shared by all coordinates. Parameters as in
    :func:`gaussian_task`, plus ``dof`` (> 0).

    Returns
    -------
    x, y : ndarrays
    mi_bits : float
        :func:`student_t_mi_bits`: the Gaussian part plus
        :func:`student_t_correction_bits`.
    """
    if not dof > 0:
        raise ValueError(f"dof must be positive. Got {dof}.")
    cov = sparse_covariance(dim_x, dim_y, rho, n_interacting)
    rng = np.random.default_rng(seed)
    g = rng.multivariate_normal(np.zeros(len(cov)), cov, size=n, method="cholesky")
    w = rng.chisquare(dof, size=(n, 1))
    z = g / np.sqrt(w / dof)
    x, y = _split(z, dim_x, transform)
    return x, y, student_t_mi_bits(cov, dim_x, dof)
