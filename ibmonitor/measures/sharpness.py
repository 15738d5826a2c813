"""Sharpness of the minimum: worst-case (Keskar et al.) and expected (Neyshabur et al.).

Both perturb the parameters ``w`` in place (inside :func:`preserve_state`, so
the model is restored exactly) and compare the training loss ``L`` (sample mean
of ``loss_fn`` over the batches used, eval mode) at ``w + z`` with ``L(w)``.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .._device import autocast_disabled, model_device
from .._state import preserve_state
from .._validation import check_param
from ..structures import OutputKey
from ._data import (
    Batches,
    check_autograd,
    load_batches,
    loss_and_grad,
    mean_loss,
    trainable_parameters,
)
from ._perturb import (
    flatten,
    perturbation_std,
    perturbed_samples,
    seeded_generator,
    set_parameters,
)
from .registry import MeasureContext, register_measure

__all__ = ["expected_sharpness", "worst_case_sharpness"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------- helpers ---
def _subspace_matrix(
    n: int, dim: int, seed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Return the random ``(n, dim)`` matrix ``A`` of the subspace variant.

    Entries are independent standard normal draws from a generator seeded with
    ``seed`` on ``device``.
    """
    return torch.randn(
        n, dim, generator=seeded_generator(device, seed), device=device, dtype=dtype
    )


def _prepare(
    model: nn.Module,
    data: Any,
    params: Any,
    batch_size: int,
    max_batches: Any,
    owner: str,
    label_key: Optional[str] = None,
) -> Tuple[Batches, List[torch.Tensor]]:
    check_param(batch_size, "batch_size", owner, kind="int", low=1)
    if max_batches is not None:
        check_param(max_batches, "max_batches", owner, kind="int", low=1)
    tensors = [p for _, p in trainable_parameters(model, params, owner=owner)]
    batches = load_batches(
        data,
        model,
        batch_size=batch_size,
        max_batches=max_batches,
        owner=owner,
        label_key=label_key,
    )
    return batches, tensors


# --------------------------------------------------------------- worst case ---
def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    eps: float = 1e-3,
    *,
    subspace_dim: Optional[int] = None,
    n_steps: int = 10,
    step_size: float = 0.5,
    random_start: bool = True,
    params: Any = None,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> float:
    """Return Keskar et al.'s worst-case sharpness, in percent.

    ``phi = 100 * (max_{z in C} L(w + z) - L(w)) / (1 + L(w))``

    over the box ``C = {z : |z_i| <= eps (|w_i| + 1)}`` (full space), or, with
    ``subspace_dim = p``, over perturbations ``z = A y`` with a random
    ``(n, p)`` matrix ``A`` (independent standard normal entries, seeded) and
    the box ``|y_i| <= eps (|(A^+ w)_i| + 1)``, ``A^+`` the pseudo-inverse, as in
    Keskar et al.'s definition of the metric.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    data : tuple (inputs, targets) or iterable of batches
        Training data (read once).
    eps : float, default=1e-3
        Box size relative to ``|w_i| + 1`` (Keskar et al. report 1e-3 and 5e-4).
    subspace_dim : int, optional
        Maximise in a random subspace of this dimension (Keskar et al. report
        the full space and random 100-dimensional subspaces); default the full
        parameter space. The ``(n, p)`` matrix ``A`` is held in memory and its
        seed is ``seed + 1``.
    n_steps : int, default=10
        Gradient steps of the projected ascent (one gradient evaluation each).
    step_size : float, default=0.5
        First step as a fraction of the box half-width, decaying linearly to
        ``step_size / n_steps``.
    random_start : bool, default=True
        Start from a point drawn uniformly in the box (else from ``z = 0``, where
        the gradient vanishes at a minimum).
    params : str, Parameter or sequence of them, optional
        Perturb only these parameters; default all that require grad.
    seed : int, default=0
        Seed of the start point and of ``A`` (own generator on the model's device).
    batch_size : int, default=1024
        Batch size for a tensor pair.
    max_batches : int, optional
        Use only the first ``max_batches`` batches.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`).
    label_key : str, optional
        Key of the targets in dict batches; default ``"labels"``, else
        ``"label"``.

    Returns
    -------
    sharpness : float
        Percentage; at least 0 because ``z = 0`` is in the box.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()`` (``torch.no_grad()`` is fine).

    Notes
    -----
    Keskar et al. solve the inner maximisation with L-BFGS-B (10 iterations).
    Here it is projected gradient ascent with sign steps scaled to the box,
    the steepest-ascent direction for the box's (weighted max) norm:

    ``z <- clip(z + a_t * b * sign(grad L(w + z)), -b, b)``, ``b_i = eps(|w_i|+1)``,
    ``a_t = step_size * (n_steps - t) / n_steps``,

    keeping the largest loss seen over the iterates (and ``z = 0``). For a
    convex loss the maximum over a box is at a vertex, which sign steps reach
    exactly; L-BFGS-B's quasi-Newton model is replaced by cheap, first-order
    steps, so for strongly curved losses this may find a smaller local maximum.
    In the subspace, the gradient is ``A^T grad L(w + A y)``. With standard
    normal entries, each coordinate of ``z = A y`` is of order
    ``sqrt(p) * eps``, so subspace values are comparable with each other (same
    ``p`` and ``seed``), not with full-space values.

    Cost: ``n_steps`` gradient evaluations plus 2 loss evaluations over the
    batches used (about ``2 n_steps + 2`` forward-pass equivalents), no
    Hessian-vector products.

    References
    ----------
    Keskar, Mudigere, Nocedal, Smelyanskiy & Tang, "On large-batch training for
    deep learning: generalization gap and sharp minima", ICLR (2017).
    """
    owner = "worst_case_sharpness"
    check_autograd(owner)
    check_param(eps, "eps", owner, low=0.0, low_closed=False)
    check_param(n_steps, "n_steps", owner, kind="int", low=1)
    check_param(step_size, "step_size", owner, low=0.0, low_closed=False)
    check_param(seed, "seed", owner, kind="int", low=0)
    if subspace_dim is not None:
        check_param(subspace_dim, "subspace_dim", owner, kind="int", low=1)
    batches, params_t = _prepare(
        model, data, params, batch_size, max_batches, owner, label_key
    )
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        device, dtype = params_t[0].device, params_t[0].dtype
        gen = seeded_generator(device, seed)
        base = [p.detach().clone() for p in params_t]
        w = flatten(base, dtype)
        loss0 = mean_loss(model, loss_fn, batches, output_key=output_key, owner=owner)
        if subspace_dim is None:
            a_mat = None
            bound = eps * (w.abs() + 1)
        else:
            a_mat = _subspace_matrix(w.numel(), subspace_dim, seed + 1, device, dtype)
            # A^+ w by least squares (A has full column rank almost surely).
            a_pinv_w = torch.linalg.lstsq(a_mat, w.unsqueeze(1)).solution.squeeze(1)
            bound = eps * (a_pinv_w.abs() + 1)
        if random_start:
            u = torch.rand(bound.shape, generator=gen, device=device, dtype=dtype)
            y = (2 * u - 1) * bound
        else:
            y = torch.zeros_like(bound)
        best = loss0
        for t in range(n_steps):
            z = y if a_mat is None else a_mat @ y
            set_parameters(params_t, base, z)
            loss, grads = loss_and_grad(
                model, loss_fn, batches, params_t, output_key=output_key, owner=owner
            )
            best = max(best, loss)
            g = flatten(grads, dtype)
            if a_mat is not None:
                g = a_mat.T @ g
            alpha = step_size * (n_steps - t) / n_steps
            y = torch.clamp(y + alpha * bound * torch.sign(g), -bound, bound)
        z = y if a_mat is None else a_mat @ y
        set_parameters(params_t, base, z)
        best = max(
            best,
            mean_loss(model, loss_fn, batches, output_key=output_key, owner=owner),
        )
    value = 100.0 * (best - loss0) / (1.0 + loss0)
    logger.debug("worst_case_sharpness: L(w)=%g max=%g -> %g%%", loss0, best, value)
    return float(value)


# ----------------------------------------------------------------- expected ---
def _expected_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    sigma: float,
    magnitude_aware: bool,
    magnitude_eps: float,
    n_samples: int,
    antithetic: bool,
    params: Any,
    seed: int,
    batch_size: int,
    max_batches: Optional[int],
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
    owner: str = "expected_sharpness",
) -> Tuple[float, float]:
    check_param(sigma, "sigma", owner, low=0.0)
    check_param(magnitude_eps, "magnitude_eps", owner, low=0.0)
    check_param(n_samples, "n_samples", owner, kind="int", low=1)
    check_param(seed, "seed", owner, kind="int", low=0)
    batches, params_t = _prepare(
        model, data, params, batch_size, max_batches, owner, label_key
    )

    def loss() -> float:
        return mean_loss(model, loss_fn, batches, output_key=output_key, owner=owner)

    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        dtype = params_t[0].dtype
        loss0 = loss()
        std = perturbation_std(
            flatten(params_t, dtype), sigma, magnitude_aware, magnitude_eps
        )
        losses = perturbed_samples(
            params_t,
            std,
            n_samples,
            antithetic,
            seed,
            loss,
        )
    diffs = [v - loss0 for v in losses]
    mean = sum(diffs) / len(diffs)
    if len(diffs) > 1:
        var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
        stderr = math.sqrt(var / len(diffs))
    else:
        stderr = math.nan
    return float(mean), float(stderr)


def expected_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    sigma: float = 0.01,
    *,
    magnitude_aware: bool = False,
    magnitude_eps: float = 1e-3,
    n_samples: int = 10,
    antithetic: bool = True,
    params: Any = None,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> float:
    """Return the expected sharpness ``E_nu[L(w + nu)] - L(w)`` by Monte Carlo.

    ``nu`` is Gaussian with independent coordinates. Plain: ``nu_i ~ N(0,
    sigma^2)``, i.e. ``sigma`` is the **standard deviation**
    (``nu = sigma * randn``). Magnitude-aware (Jiang et al. 2019): the variance
    of ``nu_i`` is ``sigma^2 w_i^2 + magnitude_eps^2``.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    data : tuple (inputs, targets) or iterable of batches
        Training data (read once).
    sigma : float, default=0.01
        Standard deviation of the perturbation (``sigma'`` when magnitude-aware).
    magnitude_aware : bool, default=False
        Scale the variance with each parameter's magnitude.
    magnitude_eps : float, default=1e-3
        ``eps`` of the magnitude-aware variance (Jiang et al. use 1e-3).
    n_samples : int, default=10
        Perturbations drawn.
    antithetic : bool, default=True
        Evaluate each draw at ``w + nu`` and ``w - nu`` and average: the
        first-order term ``grad L . nu`` cancels exactly, leaving the curvature
        term, whose mean is unchanged. Doubles the cost per draw.
    params : str, Parameter or sequence of them, optional
        Perturb only these parameters; default all that require grad.
    seed : int, default=0
        Seed of the perturbations (own generator on the model's device).
    batch_size : int, default=1024
        Batch size for a tensor pair.
    max_batches : int, optional
        Use only the first ``max_batches`` batches.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`).
    label_key : str, optional
        Key of the targets in dict batches; default ``"labels"``, else
        ``"label"``.

    Returns
    -------
    sharpness : float
        The Monte Carlo mean (may be slightly negative by chance).

    Notes
    -----
    For a quadratic ``L(w) = (w - c)^T A (w - c) / 2`` the value is
    ``sigma^2 tr(A) / 2`` (plain) and ``sum_i A_ii (sigma^2 w_i^2 + eps^2) / 2``
    (magnitude-aware), which the tests check; a variance/std mix-up (``sigma^2``
    used as the std, as in some public code) would give ``sigma^4 tr(A) / 2``.

    Cost: ``n_samples`` (twice that with ``antithetic``) + 1 loss evaluations
    over the batches used; no gradients.

    References
    ----------
    Neyshabur, Bhojanapalli, McAllester & Srebro, "Exploring generalization in
    deep learning", NeurIPS (2017). Jiang, Neyshabur, Mobahi, Krishnan & Bengio,
    "Fantastic generalization measures and where to find them", ICLR (2020).
    """
    mean, _ = _expected_sharpness(
        model,
        loss_fn,
        data,
        sigma=sigma,
        magnitude_aware=magnitude_aware,
        magnitude_eps=magnitude_eps,
        n_samples=n_samples,
        antithetic=antithetic,
        params=params,
        seed=seed,
        batch_size=batch_size,
        max_batches=max_batches,
        output_key=output_key,
        label_key=label_key,
    )
    return mean


@register_measure("sharpness", cost="expensive", option_names=[worst_case_sharpness])
def _worst_case_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """``sharpness/worst_case``: :func:`worst_case_sharpness` on the training data."""
    value = worst_case_sharpness(
        context.model, context.loss_fn, context.train_data, **options
    )
    return {"sharpness/worst_case": value}


@register_measure(
    "expected_sharpness", cost="expensive", option_names=[expected_sharpness]
)
def _expected_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """``sharpness/expected`` and its Monte Carlo ``sharpness/expected_stderr``."""
    defaults = inspect.signature(expected_sharpness).parameters
    kwargs = {
        k: options.get(k, defaults[k].default)
        for k in defaults
        if k not in ("model", "loss_fn", "data")
    }
    mean, stderr = _expected_sharpness(
        context.model, context.loss_fn, context.train_data, **kwargs
    )
    return {"sharpness/expected": mean, "sharpness/expected_stderr": stderr}
