"""Flat parameter vectors, seeded generators and Gaussian parameter perturbations.

Shared by the Hessian, sharpness and PAC-Bayes measures; the callers run these
inside :func:`~ibmonitor._state.preserve_state` (``parameters=True``), which
puts the parameters back.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

import torch

__all__ = [
    "flatten",
    "perturbation_std",
    "perturbed_samples",
    "seeded_generator",
    "set_parameters",
]


def flatten(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Concatenate detached ``tensors`` into one flat vector of ``dtype``."""
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


@torch.no_grad()
def set_parameters(
    params: Sequence[torch.Tensor], base: Sequence[torch.Tensor], delta: torch.Tensor
) -> None:
    """Write ``base + delta`` (``delta`` flat) into ``params`` in place."""
    i = 0
    for p, b in zip(params, base):
        n = p.numel()
        p.copy_(b + delta[i : i + n].view_as(p).to(p.dtype))
        i += n


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """Return a new generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def perturbation_std(
    w: torch.Tensor, sigma: float, magnitude_aware: bool, magnitude_eps: float
) -> torch.Tensor:
    """Return the standard deviation of each coordinate of the perturbation.

    Plain: ``sigma`` (variance ``sigma^2``). Magnitude-aware: the variance is
    ``sigma^2 w_i^2 + eps^2``, so the std is ``sqrt(sigma^2 w_i^2 + eps^2)``.
    """
    if magnitude_aware:
        return torch.sqrt(sigma**2 * w**2 + magnitude_eps**2)
    return torch.full_like(w, sigma)


def perturbed_samples(
    params: List[torch.Tensor],
    std: torch.Tensor,
    n_samples: int,
    antithetic: bool,
    seed: int,
    metric: Callable[[], float],
) -> List[float]:
    """Return ``metric()`` at ``w + nu`` for ``n_samples`` draws of ``nu``.

    ``nu = std * N(0, I)`` from a generator seeded with ``seed`` (the same draws
    for the same seed, so a search over ``sigma`` uses common random numbers).
    With ``antithetic``, each draw also evaluates ``w - nu`` and contributes the
    mean of the two. ``params`` hold ``w`` again on return.
    """
    base = [p.detach().clone() for p in params]
    gen = seeded_generator(std.device, seed)
    out = []
    for _ in range(n_samples):
        noise = torch.randn(
            std.shape, generator=gen, device=std.device, dtype=std.dtype
        )
        nu = std * noise
        set_parameters(params, base, nu)
        value = metric()
        if antithetic:
            set_parameters(params, base, -nu)
            value = 0.5 * (value + metric())
        out.append(value)
    set_parameters(params, base, torch.zeros_like(std))
    return out
