"""Matrix-based Renyi alpha-entropy estimator of I(X;T) and I(T;Y).

Entropies are functionals of the eigenvalues of normalised Gram matrices
(Giraldo, Rao & Principe 2015); no probability density is estimated. This is
the estimator Yu et al. used for the information planes of convolutional
networks.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Tuple

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
    pinned_at_ceiling,
    register,
    warn_pinned,
)

__all__ = ["kernel_width", "renyi"]

logger = logging.getLogger(__name__)

_OWNER = "renyi"


def _check_params(
    alpha: Any = 1.01,
    sigma: Any = None,
    sigma_x: Any = None,
    gamma: Any = 1.0,
    n_max: Any = 1000,
    random_state: Any = 0,
) -> None:
    """Check the parameters of :func:`renyi` (run by ``estimators.get``)."""
    check_param(alpha, "alpha", _OWNER, low=0.0, low_closed=False)
    check_param(gamma, "gamma", _OWNER, low=0.0, low_closed=False)
    if sigma is not None:
        check_param(sigma, "sigma", _OWNER, low=0.0, low_closed=False)
    if sigma_x is not None:
        check_param(sigma_x, "sigma_x", _OWNER, low=0.0, low_closed=False)
    if n_max is not None:
        check_param(n_max, "n_max", _OWNER, kind="int", low=2)
    check_param(random_state, "random_state", _OWNER, kind="int")


@register("renyi", inputs="values", check=_check_params)
def renyi(
    t: Any,
    y: Any,
    *,
    x: Any = None,
    alpha: float = 1.01,
    sigma: Optional[float] = None,
    sigma_x: Optional[float] = None,
    gamma: float = 1.0,
    n_max: Optional[int] = 1000,
    random_state: int = 0,
) -> InformationEstimate:
    """Estimate I(X;T) and I(T;Y) with the matrix-based Renyi alpha-entropy.

    For samples ``z_1..z_n`` and a Gaussian kernel ``K_ij = exp(-|z_i -
    z_j|^2 / (2 sigma^2))``, the normalised Gram matrix ``A = K / n`` (trace
    1, since ``K_ii = 1``) has eigenvalues ``lambda_k`` and

    ``S_alpha(A) = log2(sum_k lambda_k^alpha) / (1 - alpha)`` bits.

    The joint entropy of two variables is that of the Hadamard product
    ``A o B / tr(A o B)``, and

    * I(T;Y) = S(T) + S(Y) - S(T,Y), with labels as one-hot vectors under a
      delta kernel (``K_ij = 1`` when ``y_i = y_j``, else 0);
    * I(X;T) = S(X) + S(T) - S(X,T) with a Gaussian kernel on ``x``.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer (numpy or torch, CPU or CUDA). The
        computation runs on the device of ``t`` in float64.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels.
    x : array-like or Tensor of shape (n_samples, ...), default=None
        The inputs; each sample is flattened to one vector. None means every
        sample is a distinct input, which gives I(X;T) = S(T) (see Notes).
    alpha : float, default=1.01
        Order of the entropy, > 0. ``alpha = 1`` gives the von Neumann
        (Shannon) entropy of the eigenvalues, the limit ``alpha -> 1``.
    sigma : float, default=None
        Kernel width for ``t``; None applies the width rule below.
    sigma_x : float, default=None
        Kernel width for ``x``; None applies the width rule below.
    gamma : float, default=1.0
        Factor of the width rule, > 0.
    n_max : int or None, default=1000
        At most this many samples are used: a larger set is subsampled
        without replacement (the same samples for ``t``, ``y`` and ``x``),
        because each entropy needs the eigenvalues of an ``n x n`` matrix,
        ``O(n^3)`` time and ``O(n^2)`` memory. None uses every sample.
    random_state : int, default=0
        Seed of the subsampling, so that successive epochs use the same
        samples.

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits, ``params``, and ``extras``: ``s_t``,
        ``s_y``, ``s_ty`` (entropies in bits), ``sigma`` (the width used for
        ``t``) and ``n_used`` (the number of samples used).

    Raises
    ------
    InvalidParameterError
        Bad parameters, fewer than 2 samples, NaN or Inf values, non-integer
        labels, inconsistent numbers of samples.

    Warns
    -----
    EstimationWarning
        When the estimate is pinned (see Notes); ``pinned`` holds the reason.

    Notes
    -----
    **Width rule.** ``sigma = gamma * s * n^(-1 / (4 + d))``: the
    Silverman/Scott rule of thumb ``n^(-1/(4+d))`` used by Yu et al., with
    ``n`` the number of samples used, ``d`` the number of units (or input
    features), and the scale ``s = sqrt(sum_j Var(z_j))``, the root mean
    squared distance of the samples to their mean. With this scale, a typical
    kernel value is ``exp(-n^(2/(4+d)) / gamma^2)`` whatever the width and the
    scale of the layer; with the per-unit standard deviation instead, wide
    layers would get a diagonal Gram matrix and S = log2(n) always. Constant
    activations give ``K = 1``, a single non-zero eigenvalue and 0 bits. The
    estimates depend on ``sigma`` as binned estimates depend on the bins:
    compare them only under one rule.

    **Wide layers.** The rule scales the width with the layer: for ``d``
    large, ``n^(-1/(4+d))`` tends to 1 and ``sigma`` to ``s``, while the
    squared distance between two samples concentrates around ``2 s^2``, so a
    typical kernel value stays near ``exp(-1)`` however many units the layer
    has (hundreds of channels times positions for a convolutional layer,
    flattened). The Gram matrix therefore neither becomes the identity (every
    sample its own kernel, S(T) = log2 n, the pinning of binned and KDE
    estimates on wide layers) nor all ones, and the estimates move as the
    representation changes. This is the width of Yu et al. (2021) with the
    data scale of the layer; Wickstrom et al. (2019) reach the same end with
    tensor kernels. For independent ``t`` and ``y`` the matrix-based I(T;Y)
    is not 0 (about 2 of 3.3 bits for 512 isotropic Gaussian samples in 512
    dimensions): read its trajectory over epochs, not its value alone.

    **Pinned estimates.** An S(T) within
    :data:`~ibmonitor.estimators.PINNED_MARGIN` (0.1 bit) of ``log2 n`` (a
    nearly diagonal Gram matrix: a fixed ``sigma`` too small for the layer)
    sets the result's ``pinned`` field and issues an ``EstimationWarning``.

    **Labels.** The delta kernel on labels gives ``A_Y`` with eigenvalues the
    class proportions, so S(Y) is the Renyi entropy of the class
    distribution; ``A_T o A_Y`` is block-diagonal by class, so S(T,Y) comes
    from the eigenvalues of the per-class blocks of ``K_T / n``.

    **Without x.** Taking every sample as a distinct input (delta kernel on
    sample ids) gives ``A_X = I / n`` and ``A_X o A_T / tr = I / n``, so S(X) =
    S(X,T) = log2(n) and I(X;T) = S(T). The same convention as the binned
    estimator's I(X;T) = H(T).

    S(A o B) >= max(S(A), S(B)) (Giraldo et al. 2015), so 0 <= I <= min(S(T),
    S(Y)) up to rounding; the results are clipped at 0 against rounding.
    Cost: two eigendecompositions of ``n x n`` matrices (plus per-class
    blocks) without ``x``, three with it; about 0.2 s each at ``n = 1000`` on
    one CPU core (a whole estimate with ``x``: about 0.65 s).

    References
    ----------
    .. [1] L. G. Sanchez Giraldo, M. Rao and J. C. Principe, "Measures of
       entropy from data using infinitely divisible kernels", IEEE Trans.
       Information Theory 61(1), 2015.
    .. [2] S. Yu, K. Wickstrom, R. Jenssen and J. C. Principe, "Understanding
       convolutional neural networks with information theory: an initial
       exploration", IEEE Trans. Neural Networks and Learning Systems 32(1),
       2021.
    .. [3] K. Wickstrom, S. Lokse, M. Kampffmeyer, S. Yu, J. Principe and R.
       Jenssen, "Information plane analysis of deep neural networks via
       matrix-based Renyi's entropy and tensor kernels", arXiv:1909.11396,
       2019.

    Examples
    --------
    >>> import numpy as np
    >>> from ibmonitor import estimators
    >>> y = np.array([0, 0, 1, 1])
    >>> t = np.array([[0.0], [0.0], [5.0], [5.0]])
    >>> r = estimators.renyi(t, y, alpha=2.0, sigma=0.1)
    >>> round(r.i_ty, 6), round(r.i_xt, 6)
    (1.0, 1.0)
    """
    _check_params(
        alpha=alpha,
        sigma=sigma,
        sigma_x=sigma_x,
        gamma=gamma,
        n_max=n_max,
        random_state=random_state,
    )
    alpha = float(alpha)

    tt = check_activations(t, name="t")
    n = tt.shape[0]
    device = tt.device
    yt = check_labels(y, n).to(device)
    xt = None
    if x is not None:
        xa = as_tensor(x, name="x")
        check_consistent_samples(x=xa.shape[0] if xa.ndim else 0, t=n)
        xt = check_activations(xa.reshape(n, -1), name="x").to(device)

    if n_max is not None and n > n_max:
        gen = torch.Generator().manual_seed(int(random_state))
        keep = torch.randperm(n, generator=gen)[:n_max].sort().values.to(device)
        tt, yt = tt[keep], yt[keep]
        xt = None if xt is None else xt[keep]
        logger.debug("renyi: using %d of %d samples", n_max, n)
    n_used = tt.shape[0]

    k_t, sig_t = _gram(tt, sigma, gamma)
    s_t = _entropy(_eigvals(k_t / n_used), alpha)
    _, y_inv, y_counts = torch.unique(yt, return_inverse=True, return_counts=True)
    s_y = _entropy(y_counts.to(torch.float64) / n_used, alpha)
    blocks = [
        _eigvals(k_t[idx][:, idx] / n_used)
        for idx in (torch.nonzero(y_inv == c).flatten() for c in range(len(y_counts)))
    ]
    s_ty = _entropy(torch.cat(blocks), alpha)
    i_ty = max(s_t + s_y - s_ty, 0.0)

    extras = {"s_t": s_t, "s_y": s_y, "s_ty": s_ty, "sigma": sig_t}
    if xt is None:
        i_xt = s_t
    else:
        k_x, sig_x = _gram(xt, sigma_x, gamma)
        s_x = _entropy(_eigvals(k_x / n_used, "x"), alpha)
        s_xt = _entropy(_eigvals(k_x.mul_(k_t).div_(n_used), "(x, t)"), alpha)
        i_xt = max(s_x + s_t - s_xt, 0.0)
        extras.update({"s_x": s_x, "s_xt": s_xt, "sigma_x": sig_x})
    extras["n_used"] = float(n_used)
    pinned = None
    if pinned_at_ceiling(s_t, math.log2(n_used)):
        pinned = (
            f"S(T) = {s_t:.2f} bits is within {PINNED_MARGIN} bit of "
            f"log2({n_used}) = {math.log2(n_used):.2f} bits: the kernel (sigma="
            f"{sig_t:.3g}) is narrower than the distances between samples, so "
            "every sample is its own kernel and I(T;Y) = S(Y) (I(X;T) = log2 n "
            "without x) whatever the layer does. Use the default width rule "
            "(sigma=None) or a larger gamma."
        )
        warn_pinned(pinned)
    params = {
        "alpha": alpha,
        "sigma": None if sigma is None else float(sigma),
        "sigma_x": None if sigma_x is None else float(sigma_x),
        "gamma": float(gamma),
        "n_max": None if n_max is None else int(n_max),
        "random_state": int(random_state),
    }
    return InformationEstimate(
        estimator="renyi",
        i_xt=i_xt,
        i_ty=i_ty,
        params=params,
        extras=extras,
        pinned=pinned,
    )


def kernel_width(z: Any, *, gamma: float = 1.0) -> float:
    """Width of the Gaussian kernel by the rule of :func:`renyi`.

    ``sigma = gamma * sqrt(sum_j Var(z_j)) * n^(-1 / (4 + d))`` for ``z`` of
    shape ``(n, d)``; 1.0 for constant ``z`` (any width gives the same, all-ones,
    Gram matrix).

    Parameters
    ----------
    z : array-like or Tensor of shape (n_samples, n_features)
        The samples.
    gamma : float, default=1.0
        Factor of the rule.

    Returns
    -------
    sigma : float
        The kernel width.
    """
    zt = as_tensor(z, name="z").to(torch.float64)
    if zt.ndim == 1:
        zt = zt[:, None]
    n, d = zt.shape
    spread = math.sqrt(float(zt.var(dim=0, unbiased=False).sum())) if n > 1 else 0.0
    if spread == 0.0 or not math.isfinite(spread):
        return 1.0
    return gamma * spread * n ** (-1.0 / (4 + d))


def _gram(
    z: torch.Tensor, sigma: Optional[float], gamma: float
) -> Tuple[torch.Tensor, float]:
    """Gaussian Gram matrix (float64, unit diagonal) and the width used."""
    z = z.to(torch.float64)
    z = z - z.mean(dim=0, keepdim=True)
    sig = float(sigma) if sigma is not None else kernel_width(z, gamma=gamma)
    sq = (z * z).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    d2.clamp_(min=0.0).fill_diagonal_(0.0)
    coef = -0.5 / sig**2 if sig**2 > 0.0 else -math.inf
    if not math.isfinite(coef):  # width so small that only equal points match
        return (d2 == 0.0).to(torch.float64), sig
    return d2.mul_(coef).exp_(), sig


def _eigvals(a: torch.Tensor, what: str = "t") -> torch.Tensor:
    """Eigenvalues of a symmetric Gram matrix.

    torch's solver (LAPACK ``syevd``) fails to converge on some
    ill-conditioned matrices; those are retried on the CPU with numpy's
    solver, then with a symmetrised copy, and only then is a clear error
    raised (instead of torch's private ``_LinAlgError``).
    """
    if a.shape[0] == 1:
        return a.reshape(1)
    try:
        return torch.linalg.eigvalsh(a)
    except (torch.linalg.LinAlgError, RuntimeError) as first:
        error: Exception = first
    host = a.detach().to("cpu", torch.float64).numpy()
    for m in (host, 0.5 * (host + host.T)):
        try:
            lam = np.linalg.eigvalsh(m)
        except np.linalg.LinAlgError as exc:
            error = exc
            continue
        if np.all(np.isfinite(lam)):
            return torch.from_numpy(lam).to(a.device)
    raise InvalidParameterError(
        f"renyi could not compute the eigenvalues of the {a.shape[0]} x "
        f"{a.shape[1]} Gram matrix of {what} (the eigensolver did not converge: "
        f"{error}). The layer's data are too ill-conditioned for the kernel "
        "width; check the activations for extreme values or pass another sigma."
    ) from error


def _entropy(eig: torch.Tensor, alpha: float) -> float:
    """Renyi alpha-entropy, in bits, of a spectrum normalised to sum 1.

    Eigenvalues below ``n * eps * max(eig)`` (numerical rank tolerance, as
    ``numpy.linalg.matrix_rank``) are rounding noise of zero eigenvalues and
    are set to 0; for ``alpha < 1`` they would otherwise add up.
    """
    lam = eig.to(torch.float64)
    tol = lam.numel() * torch.finfo(torch.float64).eps * lam.max().clamp(min=0.0)
    lam = torch.where(lam > tol, lam, torch.zeros_like(lam))
    lam = lam / lam.sum()
    if alpha == 1.0:
        h = -torch.special.xlogy(lam, lam).sum() / math.log(2.0)
    else:
        h = torch.log2(lam.pow(alpha).sum()) / (1.0 - alpha)
    return max(float(h), 0.0)
