"""Mutual information of a noisy layer: Goldfeld et al.'s sample-propagation estimator.

With Gaussian noise added to a layer, ``T = S + Z`` with ``Z ~ N(0, s^2 I)``,
the mutual information between the input and the layer is a well-defined
differential-entropy quantity, finite even when ``S`` is a deterministic
function of the input (Goldfeld et al. 2019). Its *sample-propagation*
estimate is the entropy of the Gaussian mixture centred on the recorded
samples of ``S``: ``h(T) = h((1/n) sum_i N(s_i, s^2 I))`` and, for the input
groups and the classes, the same over their own samples. Goldfeld, Greenewald
and Polyanskiy prove that this plug-in estimate converges at the rate
``O((log n)^(d/4) / sqrt(n))``, later ``e^O(d) / sqrt(n)`` (with Niles-Weed).
The mixture's entropy has no closed form and is computed by Monte-Carlo
integration, with its standard error. All results are in bits.

Implementation
--------------
One set of draws serves every quantity: draw ``v = s_i + Z`` (``n_mc`` draws
per sample, so every mixture component is sampled equally), evaluate the log
density of the whole mixture, of the draw's own input group and of its own
class at ``v``, and average. The mutual informations are averages of log
density *ratios*, whose Monte-Carlo variance is far smaller than that of the
entropies themselves (the noise term cancels). The ``(draws, samples)``
exponents are computed in row chunks on the activations' device, each one
matrix product giving minus the squared distances, so memory stays
``O(chunk * n)``. The noise is drawn on the CPU
from ``seed``, so results are reproducible and identical on every device.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .._validation import (
    check_activations,
    check_consistent_samples,
    check_labels,
    check_param,
)
from ..exceptions import InvalidParameterError
from ._common import (
    LOG2E,
    PINNED_MARGIN,
    InformationEstimate,
    entropy_from_counts,
    input_ids,
    pinned_at_ceiling,
    register,
    warn_pinned,
)
from ._pairwise import compute_dtype

__all__ = ["default_draws_per_sample", "noisy"]

logger = logging.getLogger(__name__)

_OWNER = "noisy"
#: With ``n_mc=None``, every sample gets at least this many draws ...
_MIN_DRAWS_PER_SAMPLE = 2
#: ... and the draws number at least this many in all: for the entropies of
#: small samples the Monte-Carlo error, not the cost, is what matters.
_MIN_TOTAL_DRAWS = 8192
#: float32 exponents are used only when an estimate of their rounding error
#: (see :func:`_exponent_dtype`) stays below this many nats (0.014 bits);
#: otherwise float64.
_FLOAT32_TOLERANCE = 1e-2
#: Squared norms (scaled by the noise) beyond which even float64 exponents
#: lose every digit.
_MAX_SQ_NORM = 1e300
#: Mixed into the seed of the draws (see :func:`_generator`): "noisy" in ASCII.
_SALT = 0x6E6F697379
#: Exponents per ``(draws, samples)`` chunk: 2**20 on the CPU (8 MiB of
#: float64, recycled by the allocator), 2**24 on CUDA (larger launches).
_CPU_CHUNK_ELEMENTS = 1 << 20
_CUDA_CHUNK_ELEMENTS = 1 << 24
#: Exponents (relative to each row's maximum) are raised to -floor before
#: ``exp``: exp(-80) ~ 1.8e-35 is still a normal float32 (results that
#: underflow into subnormals make ``exp`` many times slower on some CPUs).
_EXP_FLOOR = {torch.float32: 80.0, torch.float64: 700.0}


def default_draws_per_sample(n_samples: int) -> int:
    """Monte-Carlo draws per sample used when ``n_mc`` is None.

    ``max(2, ceil(8192 / n_samples))``: at least two per sample (so that the
    standard error comes from the spread within each mixture component) and
    at least 8192 in all.

    Examples
    --------
    >>> default_draws_per_sample(4096), default_draws_per_sample(1000)
    (2, 9)
    """
    return max(_MIN_DRAWS_PER_SAMPLE, -(-_MIN_TOTAL_DRAWS // max(1, int(n_samples))))


def _check_params(
    noise_std: Any = 0.1,
    n_mc: Any = None,
    seed: Any = 0,
    chunk_size: Any = None,
) -> None:
    """Check the parameters of :func:`noisy` (run by ``estimators.get``)."""
    check_param(
        noise_std,
        "noise_std",
        _OWNER,
        low=0.0,
        low_closed=False,
        high=math.inf,
        high_closed=False,
    )
    if n_mc is not None:
        check_param(n_mc, "n_mc", _OWNER, kind="int", low=1)
    check_param(seed, "seed", _OWNER, kind="int", low=0)
    if chunk_size is not None:
        check_param(chunk_size, "chunk_size", _OWNER, kind="int", low=1)


@register("noisy", inputs="ids", check=_check_params, ceiling="inputs")
def noisy(
    t: Any,
    y: Any,
    *,
    x: Any = None,
    noise_std: float = 0.1,
    n_mc: Optional[int] = None,
    seed: int = 0,
    chunk_size: Optional[int] = None,
) -> InformationEstimate:
    """Estimate I(X;T) and I(T;Y) of a layer with Gaussian noise, in bits.

    The layer is read as noisy: ``T = S + Z`` with ``S`` the recorded
    activations and ``Z ~ N(0, noise_std^2 I)`` independent of everything
    (Goldfeld et al. 2019). With ``n`` samples ``s_i`` of ``S``, the
    sample-propagation estimate of each differential entropy is the entropy
    of a Gaussian mixture:

    * ``h(T) = h(g)`` with ``g = (1/n) sum_i N(s_i, noise_std^2 I)``;
    * ``h(T|X) = sum_x p(x) h(g_x)``, ``g_x`` the mixture of the samples of
      input ``x`` (rows sharing an input id are samples of ``S`` given that
      input, as a recording pass with noise injected in earlier layers gives,
      see :func:`ibmonitor.noise.inject_noise`). When every input occurs once,
      ``S`` is a function of ``X`` and ``h(T|X) = h(Z) = (d/2) log2(2 pi e
      noise_std^2)`` exactly;
    * ``h(T|Y) = sum_y p(y) h(g_y)``, ``g_y`` the mixture of class ``y``.

    ``I(X;T) = h(T) - h(T|X)`` and ``I(T;Y) = h(T) - h(T|Y)``. The mixture
    entropies are integrated by Monte Carlo: ``n_mc`` points ``v = s_i +
    noise_std * z`` are drawn from each component, and ``I(X;T)`` is the mean
    of ``log2(g_x(v) / g(v))`` over all draws (``x`` the input of the draw's
    sample), ``I(T;Y)`` the mean of ``log2(g_y(v) / g(v))``, ``h(T)`` the mean
    of ``-log2 g(v)``; each comes with its Monte-Carlo standard error.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        The layer's noiseless outputs ``S`` (numpy or torch, CPU or CUDA, any
        float dtype); the computation runs on ``t``'s device.
    y : array-like or Tensor of shape (n_samples,)
        Integer class labels.
    x : array-like or Tensor of shape (n_samples,) or (n_samples, ...), \
default=None
        Input ids (1-D) or the inputs; rows of equal ``x`` are samples of the
        same input (the registry lists this estimator with ``inputs="ids"``).
        None: every sample is a distinct input.
    noise_std : float, default=0.1
        Standard deviation of the Gaussian noise ``Z`` of every unit, in the
        units of ``t``; must be finite and > 0. Use the standard deviation
        injected by :func:`~ibmonitor.noise.inject_noise`, so that ``T`` is the
        layer of the noisy network.
    n_mc : int, optional
        Monte-Carlo draws per sample (at least 1). Default
        :func:`default_draws_per_sample`: ``max(2, ceil(8192 / n_samples))``.
        The cost and the memory of the noise grow with it; the standard errors
        shrink as ``1 / sqrt(n_mc * n_samples)``.
    seed : int, default=0
        Seed of the Monte-Carlo draws (a CPU generator of its own, seeded from
        ``seed`` mixed with a constant: the global random state is untouched,
        the same seed gives the same estimate on every device, and the draws
        never repeat the noise that :func:`~ibmonitor.noise.inject_noise`
        injected with the same seed).
    chunk_size : int, optional
        Draws per chunk (default: about 2**20 exponents per chunk on the CPU,
        2**24 on CUDA). Memory grows with ``chunk_size * n_samples``; the
        result does not depend on it.

    Returns
    -------
    estimate : InformationEstimate
        ``i_xt`` and ``i_ty`` in bits, ``params`` as given, and ``extras``
        in bits: ``h_t``, ``h_t_given_x`` and ``h_t_given_y`` (differential
        entropies of ``T``, which depend on the units of ``t`` and may be
        negative), ``h_noise`` (``h(Z)``, exact), the Monte-Carlo standard
        errors ``i_xt_mc_se``, ``i_ty_mc_se`` and ``h_t_mc_se``, and
        ``mc_draws``, the number of draws (a count). ``pinned`` holds the
        reason when ``i_xt`` is within
        :data:`~ibmonitor.estimators.PINNED_MARGIN` of its ceiling ``H(X)``.

    Warns
    -----
    EstimationWarning
        When the estimate is pinned at ``H(X)`` (``log2 n_samples`` with
        every input distinct): the noise is so small beside the distances
        between samples that every sample's Gaussian stands alone.

    Raises
    ------
    InvalidParameterError
        ``noise_std`` not finite and > 0, ``n_mc`` or ``chunk_size`` below 1,
        a negative ``seed``, mismatched sample counts, non-integer labels,
        fewer than 2 samples, NaN/Inf or complex activations, or activations
        so large beside ``noise_std`` that no float64 exponent can be
        evaluated.

    Notes
    -----
    **What converges to what.** For a fixed set of samples, the mixture
    entropies are exact numbers and the Monte-Carlo estimates are unbiased
    for them, with the reported standard errors (with ``n_mc >= 2`` from the
    spread within each component, the draws being stratified by component;
    with ``n_mc = 1`` from the spread of all draws, which overstates the
    error). As ``n_samples`` grows, ``h(g)`` converges to ``h(S + Z)`` at the
    rate ``e^O(d) / sqrt(n_samples)`` (for sub-Gaussian ``S`` in ``d``
    dimensions: the constant grows exponentially with ``d``, so wide layers
    need many samples) [2]_; a
    finite sample of a continuous ``S`` gives a mixture entropy biased low,
    so ``I(X;T)`` is biased towards 0 when ``h(T|X) = h(Z)`` is exact, and
    towards ``H(X)`` when ``h(T|X)`` is itself estimated from few repeats.

    Nothing is clipped: ``i_xt`` and ``i_ty`` are non-negative for the exact
    mixtures, and their Monte-Carlo estimates may fall below 0 by about their
    standard error when the true value is near 0. ``I(X;T) <= H(X)`` and
    ``I(T;Y) <= H(Y)`` hold for every draw (each ratio ``g_x / g`` is at most
    ``1 / p(x)``).

    **Pinned estimates.** ``I(X;T)`` within 0.1 bit of ``H(X)`` means that
    the noise almost never moves a sample's draw near another input's samples;
    the estimate then says that ``noise_std`` is small for this layer and
    sample, and ``I(T;Y)`` is ``H(Y)`` up to the same margin. The result's
    ``pinned`` field holds the reason and an ``EstimationWarning`` is issued.

    **Numerics.** Exponents ``-|v - s_j|^2 / (2 noise_std^2)`` come from one
    matrix product per chunk after centring the samples; each draw's own
    component is evaluated exactly from its noise. They are computed in
    float32 for float32 (and half) input when the usual estimate of their
    rounding error, ``sqrt(d + 2) * eps * (|u|_max + |a|_max)^2`` for the
    scaled samples ``u`` and draws ``a`` (the worst case has ``d + 2`` for
    ``sqrt(d + 2)``), is below 0.01 nats, and in float64 otherwise (float64
    input always). Log-sum-exps subtract each row's maximum and raise
    exponents below -80 (float32) or -700 (float64) to that floor; a chunk in
    which some draw lies so much closer to another sample than to its own
    that its own group's terms would fall below exp(-40) in float32 is
    redone in float64.

    Cost: ``n_mc * n_samples^2`` exponentials and as many ``(d + 2)``-long
    dot products; memory ``O(chunk_size * n_samples + n_mc * n_samples * d)``
    (the noise is drawn once, so that the result does not depend on the
    chunks).

    References
    ----------
    .. [1] Z. Goldfeld, E. van den Berg, K. Greenewald, I. Melnyk, N. Nguyen,
       B. Kingsbury and Y. Polyanskiy, "Estimating information flow in deep
       neural networks", ICML 2019.
    .. [2] Z. Goldfeld, K. Greenewald, J. Niles-Weed and Y. Polyanskiy,
       "Convergence of smoothed empirical measures with applications to
       entropy estimation", IEEE Trans. Inf. Theory, 2020
       (arXiv:1905.13576; first as arXiv:1810.11589, "Estimating differential
       entropy under Gaussian convolutions").

    Examples
    --------
    Two far-apart inputs through a noisy channel carry one bit:

    >>> import numpy as np
    >>> from ibmonitor import estimators
    >>> t = np.array([[0.0], [5.0]])
    >>> r = estimators.noisy(t, [0, 1], noise_std=0.5)
    >>> round(r.i_xt, 3), round(r.i_ty, 3)
    (1.0, 1.0)
    """
    _check_params(noise_std=noise_std, n_mc=n_mc, seed=seed, chunk_size=chunk_size)
    tt = check_activations(t)
    n, d = tt.shape
    device = tt.device
    yt = check_labels(y, n).to(device)
    if x is None:
        xids = None
        h_x = math.log2(n)
    else:
        xt = x if isinstance(x, torch.Tensor) else np.asarray(x)
        check_consistent_samples(x=xt.shape[0], t=n)
        xids = input_ids(xt, n_samples=n)
        counts = torch.unique(xids, return_counts=True)[1]
        if counts.numel() == n:
            xids = None  # every input once: h(T|X) = h(Z) exactly
        h_x = entropy_from_counts(counts)
    m = default_draws_per_sample(n) if n_mc is None else int(n_mc)
    std = float(noise_std)

    out = _mixture_information(
        tt, yt, None if xids is None else xids.to(device), std, m, int(seed), chunk_size
    )
    h_noise = 0.5 * d * math.log2(2.0 * math.pi * math.e * std * std)
    extras = {
        "h_t": out["h_t"],
        "h_t_given_x": out["h_t"] - out["i_xt"],
        "h_t_given_y": out["h_t"] - out["i_ty"],
        "h_noise": h_noise,
        "i_xt_mc_se": out["i_xt_se"],
        "i_ty_mc_se": out["i_ty_se"],
        "h_t_mc_se": out["h_t_se"],
        "mc_draws": float(m * n),
    }
    pinned = _pinned_reason(out["i_xt"], h_x, x is None or xids is None, n, std)
    if pinned is not None:
        warn_pinned(pinned)
    return InformationEstimate(
        estimator="noisy",
        i_xt=out["i_xt"],
        i_ty=out["i_ty"],
        params={
            "noise_std": std,
            "n_mc": None if n_mc is None else int(n_mc),
            "seed": int(seed),
            "chunk_size": None if chunk_size is None else int(chunk_size),
        },
        extras=extras,
        pinned=pinned,
    )


def _generator(seed: int) -> torch.Generator:
    """Return the CPU generator of the Monte-Carlo draws of ``seed``.

    Seeded from ``numpy.random.SeedSequence([seed, _SALT])``, so that its
    stream is neither ``torch.manual_seed(seed)``'s nor the noise that
    :func:`ibmonitor.noise.inject_noise` injects with the same seed: draws
    that reuse the recorded noise would bias the estimate.
    """
    state = np.random.SeedSequence([int(seed), _SALT]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def _pinned_reason(
    i_xt: float, ceiling: float, distinct: bool, n: int, noise_std: float
) -> Optional[str]:
    """Why the estimate is pinned at ``H(X)``, or None (see :func:`noisy`)."""
    if not pinned_at_ceiling(i_xt, ceiling):
        return None
    what = f"log2({n})" if distinct else "H(X)"
    return (
        f"I(X;T) = {i_xt:.2f} bits is within {PINNED_MARGIN} bit of {what} = "
        f"{ceiling:.2f} bits: the noise (noise_std={noise_std:g}) is small beside "
        "the distances between the samples of different inputs, so every "
        "sample's Gaussian stands on its own, I(X;T) = H(X) and I(T;Y) = H(Y) "
        "whatever the layer does. Use a larger noise_std (scaled to the layer) "
        "or more samples."
    )


#: Up to this many groups (classes), the group sums of a chunk are one matrix
#: product with the one-hot matrix of the groups; above, a gather of each
#: row's own group members.
_MAX_ONE_HOT = 64


class _Groups:
    """The samples of each group (class or input), for per-row group sums.

    For a chunk of exponentials ``e`` (rows: draws, columns: samples),
    :meth:`own_sums` returns, for each row, the sum over the samples of the
    group of the row's own sample (and the sum over all samples).
    """

    def __init__(self, ids: torch.Tensor, *, with_totals: bool = False) -> None:
        device = ids.device
        _, idx, counts = torch.unique(ids, return_inverse=True, return_counts=True)
        n = idx.numel()
        #: Group of each sample and log of its group's size, per sample.
        self.idx = idx
        self.log_counts = torch.log(counts.to(torch.float64))[idx]
        self.with_totals = with_totals
        self._one_hot: Dict[torch.dtype, torch.Tensor] = {}
        self._valid: Dict[torch.dtype, torch.Tensor] = {}
        if counts.numel() <= _MAX_ONE_HOT:
            one_hot = torch.zeros(n, counts.numel(), dtype=torch.float64, device=device)
            one_hot[torch.arange(n, device=device), idx] = 1.0
            self._one_hot[torch.float64] = one_hot
            return
        # members[g, :counts[g]] are the samples of group g; the rest is padding.
        order = torch.argsort(idx, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        rank = torch.arange(n, device=device) - starts[idx[order]]
        shape = (counts.numel(), width)
        self.members = torch.zeros(shape, dtype=torch.int64, device=device)
        valid = torch.zeros(shape, dtype=torch.float64, device=device)
        self.members[idx[order], rank] = order
        valid[idx[order], rank] = 1.0
        self._valid[torch.float64] = valid

    @staticmethod
    def _cast(
        cache: Dict[torch.dtype, torch.Tensor], dtype: torch.dtype
    ) -> torch.Tensor:
        """Return the float64 tensor of ``cache`` in ``dtype`` (converted once)."""
        if dtype not in cache:
            cache[dtype] = cache[torch.float64].to(dtype)
        return cache[dtype]

    def own_sums(
        self, e: torch.Tensor, centre: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Float64 sums of ``e`` over each row's own group (and over all columns)."""
        g = self.idx[centre]
        if self._one_hot:
            sums = torch.mm(e, self._cast(self._one_hot, e.dtype))
            own = sums.gather(1, g[:, None])[:, 0].to(torch.float64)
            total = sums.sum(dim=1, dtype=torch.float64) if self.with_totals else None
            return own, total
        valid = self._cast(self._valid, e.dtype)
        picked = e.gather(1, self.members[g]).mul_(valid[g])
        own = picked.sum(dim=1, dtype=torch.float64)
        total = e.sum(dim=1, dtype=torch.float64) if self.with_totals else None
        return own, total


def _mixture_information(
    t: torch.Tensor,
    y: torch.Tensor,
    xids: Optional[torch.Tensor],
    noise_std: float,
    m: int,
    seed: int,
    chunk_size: Optional[int],
) -> Dict[str, float]:
    """Monte-Carlo mixture information (bits) and standard errors.

    Returns ``i_xt``, ``i_ty``, ``h_t`` and their standard errors ``*_se``.
    ``xids`` None means every sample is its own input.
    """
    device = t.device
    n, d = t.shape
    n_draws = n * m

    # Scaled, centred samples: the exponent of component j at draw v is
    # -|v - s_j|^2 / (2 var) = -|a - u_j|^2 with u = s / (std sqrt 2) and
    # a = u_i + z / sqrt 2 for a draw v = s_i + std z from component i.
    t64 = t.to(torch.float64)
    u64 = (t64 - t64.mean(dim=0, keepdim=True)) / (noise_std * math.sqrt(2.0))
    del t64
    z = torch.randn((n_draws, d), generator=_generator(seed), dtype=torch.float64)
    half_z_sq = 0.5 * (z * z).sum(dim=1)  # -own exponent of each draw (CPU)

    dtype = _exponent_dtype(t, u64, float(half_z_sq.max()) if d else 0.0, noise_std)
    sq = (u64 * u64).sum(dim=1, keepdim=True)
    rhs = torch.cat([u64, torch.ones_like(sq), sq], dim=1)

    classes = _Groups(y, with_totals=True)
    inputs = None if xids is None else _Groups(xids.to(device))
    rhs_cast = {torch.float64: rhs}

    if chunk_size is None:
        budget = _CUDA_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
        rows = max(1, budget // n)
    else:
        rows = int(chunk_size)
    rows = min(rows, n_draws)
    logger.debug(
        "noisy: %d samples, %d units, %d draws per sample, chunks of %d on %s (%s)",
        n,
        d,
        m,
        rows,
        device,
        dtype,
    )
    f_xt = torch.empty(n_draws, dtype=torch.float64, device=device)
    f_ty = torch.empty(n_draws, dtype=torch.float64, device=device)
    f_h = torch.empty(n_draws, dtype=torch.float64, device=device)
    log_n = math.log(n)
    for k0 in range(0, n_draws, rows):
        k1 = min(n_draws, k0 + rows)
        centre = torch.arange(k0, k1, device=device) % n
        own = -half_z_sq[k0:k1].to(device)  # exact own exponent, float64
        a = u64[centre] + z[k0:k1].to(device) * math.sqrt(0.5)
        a_sq = (a * a).sum(dim=1, keepdim=True)
        lhs = torch.cat([2.0 * a, -a_sq, -torch.ones_like(a_sq)], dim=1)
        del a, a_sq
        terms = _chunk_terms(lhs, rhs_cast, own, centre, classes, inputs, dtype)
        if terms is None:  # a draw far from its own sample: redo in float64
            terms = _chunk_terms(
                lhs, rhs_cast, own, centre, classes, inputs, torch.float64
            )
        log_all, log_y, log_x = terms
        log_all = log_all - log_n
        f_xt[k0:k1] = log_x - log_all
        f_ty[k0:k1] = log_y - log_all
        f_h[k0:k1] = -log_all
    # h(T) = -E log g: add back the Gaussian normaliser common to all terms.
    log_norm = 0.5 * d * math.log(2.0 * math.pi * noise_std * noise_std)
    out: Dict[str, float] = {}
    for key, f, shift in (
        ("i_xt", f_xt, 0.0),
        ("i_ty", f_ty, 0.0),
        ("h_t", f_h, log_norm),
    ):
        mean, se = _mean_and_se(f.view(m, n))
        out[key] = (mean + shift) * LOG2E
        out[key + "_se"] = se * LOG2E
    return out


def _chunk_terms(
    lhs: torch.Tensor,
    rhs: Dict[torch.dtype, torch.Tensor],
    own: torch.Tensor,
    centre: torch.Tensor,
    classes: _Groups,
    inputs: Optional[_Groups],
    dtype: torch.dtype,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Log mixture densities (nats, without ``log n`` and the normaliser).

    Returns ``(log sum_j exp e_j, log mean_{j in y} exp e_j, log mean_{j in x}
    exp e_j)`` per draw, or None when, in float32, some draw lies so much
    closer to another sample than to its own that its own group's terms would
    underflow (the caller then redoes the chunk in float64).
    """
    if dtype not in rhs:
        rhs[dtype] = rhs[torch.float64].to(dtype).contiguous()
    e = torch.mm(lhs.to(dtype), rhs[dtype].T)  # 2 a.u - |a|^2 - |u|^2 = -|a - u|^2
    e.scatter_(1, centre[:, None], own[:, None].to(dtype))
    top = e.amax(dim=1, keepdim=True)
    top64 = top[:, 0].to(torch.float64)
    floor = _EXP_FLOOR[dtype]
    if dtype != torch.float64 and float((top64 - own).max()) > floor / 2:
        return None
    # Every row holds its maximum, exp(0) = 1; terms below exp(-floor) are
    # raised to it (a relative change below n * exp(-floor / 2) of any own
    # group's sum, which holds exp(own - top) >= exp(-floor / 2)).
    e.sub_(top).clamp_(min=-floor).exp_()
    s_y, s_all = classes.own_sums(e, centre)
    log_all = top64 + torch.log(s_all)
    log_y = top64 + torch.log(s_y) - classes.log_counts[centre]
    if inputs is None:
        log_x = own
    else:
        s_x, _ = inputs.own_sums(e, centre)
        log_x = top64 + torch.log(s_x) - inputs.log_counts[centre]
    return log_all, log_y, log_x


def _mean_and_se(f: torch.Tensor) -> Tuple[float, float]:
    """Mean of draws ``f`` (shape ``(m, n)``: m per component) and its error.

    With ``m >= 2`` the draws are stratified by component and the variance of
    the mean is ``sum_i var_i / (m n^2)`` with each component's own sample
    variance; with ``m = 1`` it is the plain ``var / n`` (an overestimate).
    """
    m, n = f.shape
    mean = float(f.mean())
    if m >= 2:
        var = float(f.var(dim=0, unbiased=True).sum()) / (m * n * n)
    elif n >= 2:
        var = float(f.var(unbiased=True)) / n
    else:
        var = math.nan
    return mean, math.sqrt(max(var, 0.0))


def _exponent_dtype(
    t: torch.Tensor, u: torch.Tensor, max_half_z_sq: float, noise_std: float
) -> torch.dtype:
    """Return float32 or float64 for the exponents (see Notes of :func:`noisy`).

    The exponent ``2 a.u - |a|^2 - |u|^2`` sums ``d + 2`` terms of magnitude
    up to ``(|u|_max + |a|_max)^2``; its rounding error is estimated as
    ``sqrt(d + 2) * eps`` times that (errors of random sign), the worst case
    being ``(d + 2) * eps`` times it.
    """
    r_u = math.sqrt(float((u * u).sum(dim=1).max())) if u.numel() else 0.0
    r_a = r_u + math.sqrt(max_half_z_sq)
    span = (r_u + r_a) ** 2
    if not math.isfinite(span) or span > _MAX_SQ_NORM:
        raise InvalidParameterError(
            f"noisy cannot evaluate its Gaussian exponents on these activations "
            f"with noise_std={noise_std:g}: the squared distances divided by "
            f"2 * noise_std^2 reach {span:g}, beyond the float64 range (at most "
            f"{_MAX_SQ_NORM:g}). Use a larger noise_std, scaled to the layer."
        )
    dtype = compute_dtype(t)
    if dtype == torch.float32:
        eps = float(torch.finfo(torch.float32).eps)
        error = math.sqrt(t.shape[1] + 2) * eps * span
        if error > _FLOAT32_TOLERANCE:
            logger.debug("noisy: float32 rounding ~%.3g nats, using float64", error)
            return torch.float64
    return dtype
