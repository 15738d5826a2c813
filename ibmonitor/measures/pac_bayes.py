"""PAC-Bayesian flatness and bound (Neyshabur et al. 2017; Jiang et al. 2019).

The posterior is the trained network with Gaussian noise on its parameters; the
largest noise scale ``sigma`` that still keeps the training accuracy within
``target_deviation`` of the unperturbed one measures flatness (``1/sigma^2``),
and enters a McAllester-style PAC-Bayes bound with a Gaussian prior centred at
the initial weights.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .._device import autocast_disabled, model_device
from .._state import preserve_state
from .._validation import check_param
from ..exceptions import EstimationWarning, InvalidParameterError
from ..structures import OutputKey
from ._data import evaluate, load_batches, trainable_parameters
from ._perturb import flatten, perturbation_std, perturbed_samples
from .registry import MeasureContext, register_measure

__all__ = ["PACBayesResult", "pac_bayes", "pac_bayes_kl"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PACBayesResult:
    """Result of :func:`pac_bayes`.

    Attributes
    ----------
    sigma : float
        The largest perturbation scale found (``sigma'`` when magnitude-aware).
    flatness : float
        ``1 / sigma^2``.
    bound : float
        ``sqrt(complexity / (2 (m - 1)))``, the PAC-Bayes bound on the gap between
        the expected and the empirical error of the perturbed network.
    kl : float
        ``KL(Q || P)`` between posterior and prior (nats).
    complexity : float
        ``kl + log(m / delta) + 10``.
    m : int
        Number of training samples.
    delta : float
        Confidence parameter.
    train_acc : float
        Training accuracy of the unperturbed network.
    perturbed_acc : float
        Mean training accuracy under the perturbation at ``sigma``.
    converged : bool
        Whether the search met ``|drop - target_deviation| <= tol``.
    n_search_steps : int
        Bisection steps made.
    magnitude_aware : bool
        Which variant.
    """

    sigma: float
    flatness: float
    bound: float
    kl: float
    complexity: float
    m: int
    delta: float
    train_acc: float
    perturbed_acc: float
    converged: bool
    n_search_steps: int
    magnitude_aware: bool

    def as_dict(self) -> Dict[str, Any]:
        """Return the fields as a dict."""
        return asdict(self)


def _init_vector(
    init: Union[Mapping[str, torch.Tensor], nn.Module, None],
    named: List,
    dtype: torch.dtype,
    device: torch.device,
    owner: str,
) -> Optional[torch.Tensor]:
    if init is None:
        return None
    state = init.state_dict() if isinstance(init, nn.Module) else init
    if not isinstance(state, Mapping):
        raise InvalidParameterError(
            f"The 'init' parameter of {owner} must be a state dict (name -> tensor) "
            f"or a Module. Got {type(init).__name__} instead."
        )
    missing = [n for n, _ in named if n not in state]
    if missing:
        raise InvalidParameterError(
            f"The 'init' state dict passed to {owner} lacks parameters "
            f"{missing[:20]}; pass a copy of model.state_dict() taken at "
            "initialization."
        )
    parts = []
    for n, p in named:
        t = torch.as_tensor(state[n])
        if t.shape != p.shape:
            raise InvalidParameterError(
                f"Parameter {n!r} has shape {tuple(p.shape)} but the 'init' state "
                f"dict of {owner} has shape {tuple(t.shape)}."
            )
        parts.append(t.detach().reshape(-1).to(device=device, dtype=dtype))
    return torch.cat(parts)


def pac_bayes_kl(
    w: torch.Tensor,
    w0: Optional[torch.Tensor],
    sigma: float,
    *,
    magnitude_aware: bool = False,
    magnitude_eps: float = 1e-3,
) -> float:
    """Return ``KL(Q || P)`` for the Gaussian posterior and prior used here.

    Plain: ``Q = N(w, sigma^2 I)``, ``P = N(w0, sigma^2 I)``, so
    ``KL = ||w - w0||^2 / (2 sigma^2)``.

    Magnitude-aware: ``Q = N(w, diag(s^2))`` with ``s_i^2 = sigma^2 w_i^2 + eps^2``
    and ``P = N(w0, rho^2 I)`` with the KL-minimising
    ``rho^2 = (sum_i s_i^2 + ||w - w0||^2) / n``, so
    ``KL = 1/2 sum_i log(rho^2 / s_i^2)``.

    ``w0 = None`` means a prior centred at zero.
    """
    d = w if w0 is None else w - w0
    dist2 = float((d.double() ** 2).sum())
    if not magnitude_aware:
        return dist2 / (2.0 * sigma**2) if sigma > 0 else math.inf
    s2 = sigma**2 * w.double() ** 2 + magnitude_eps**2
    if float(s2.min()) <= 0:
        return math.inf
    rho2 = (float(s2.sum()) + dist2) / w.numel()
    return float(0.5 * torch.log(rho2 / s2).sum())


def pac_bayes(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    init: Union[Mapping[str, torch.Tensor], nn.Module, None] = None,
    target_deviation: float = 0.1,
    tol: float = 1e-2,
    n_samples: int = 10,
    max_iter: int = 15,
    sigma_max: float = 2.0,
    magnitude_aware: bool = False,
    magnitude_eps: float = 1e-3,
    delta: float = 0.05,
    n_train: Optional[int] = None,
    params: Any = None,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> PACBayesResult:
    """Find the PAC-Bayes noise scale ``sigma``; return flatness and bound.

    **Search** (Jiang et al. 2019, Algorithm 1): bisection on ``[0, sigma_max]``
    for the ``sigma`` at which Gaussian noise on the parameters lowers the mean
    training accuracy (over ``n_samples`` draws) by ``target_deviation``; the
    search stops when ``|drop - target_deviation| <= tol`` or after ``max_iter``
    steps. Noise: ``nu_i ~ N(0, sigma^2)`` (``sigma`` is the standard deviation),
    or with ``magnitude_aware`` variance ``sigma^2 w_i^2 + magnitude_eps^2``.
    Every step reuses the same standard-normal draws (common random numbers),
    so the drop is monotone in ``sigma`` for a fixed draw.

    **Bound** (McAllester's PAC-Bayes theorem as used by Jiang et al.):

    ``kl = ||w - w0||^2 / (2 sigma^2)`` (see :func:`pac_bayes_kl` for the
    magnitude-aware KL),
    ``complexity = kl + log(m / delta) + 10``,
    ``bound = sqrt(complexity / (2 (m - 1)))``,

    with ``w0`` the parameters in ``init`` (zero without ``init``), ``m`` the
    number of training samples and the constant 10 standing for the union bound
    over the searched ``sigma`` as in Jiang et al.

    Parameters
    ----------
    model : Module
        A classifier (accuracy must be defined, see
        :func:`ibmonitor.measures.generalization_gap`).
    loss_fn : callable
        ``loss_fn(output, target)``; evaluated alongside the accuracy.
    data : tuple (inputs, targets) or iterable of batches
        Training data (read once).
    init : dict or Module, optional
        The initial parameters (a copy of ``model.state_dict()`` taken at
        initialization), the prior's mean.
    target_deviation : float, default=0.1
        Allowed drop of training accuracy (Jiang et al.: 0.1).
    tol : float, default=0.01
        Tolerance on the drop (Jiang et al.: 1e-2).
    n_samples : int, default=10
        Monte Carlo draws per search step (Jiang et al.: 10).
    max_iter : int, default=15
        Bisection steps (Jiang et al.'s search depth: 15).
    sigma_max : float, default=2.0
        Upper end of the search interval (Jiang et al.: 2).
    magnitude_aware : bool, default=False
        Jiang et al.'s magnitude-aware perturbation (``pacbayes.mag.*``).
    magnitude_eps : float, default=1e-3
        ``eps`` of the magnitude-aware variance.
    delta : float, default=0.05
        The bound holds with probability ``1 - delta``.
    n_train : int, optional
        ``m``; default the number of samples in ``data`` (pass the full training
        set size when ``max_batches`` keeps only part of it).
    params : str, Parameter or sequence of them, optional
        Perturb only these parameters; default all that require grad.
    seed : int, default=0
        Seed of the draws (own generator on the model's device).
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
    result : PACBayesResult
        ``.sigma .flatness .bound`` and the terms that make them up.

    Warns
    -----
    EstimationWarning
        When the search does not meet the tolerance (e.g. the accuracy never
        drops by ``target_deviation`` below ``sigma_max``, as for a network at
        chance level); ``sigma`` is then the largest tested value whose drop was
        at most ``target_deviation`` (or the last midpoint when none was).

    Notes
    -----
    Jiang et al.'s public code draws ``torch.normal(0, sigma**2)``, i.e. uses the
    variance as the standard deviation; here ``sigma`` is the standard deviation
    throughout (the tests check it against a closed form). Their tabulated
    ``pacbayes.init`` measure is ``||w - w0||^2 / (4 sigma^2) + log(m / sigma) + 10``;
    the complexity here is the KL of the stated Gaussians (factor 2) with
    ``log(m / delta)``, McAllester's form.

    Cost: up to ``max_iter * n_samples`` forward passes over the batches used,
    plus one (150 with the defaults; no gradients). The most expensive measure.

    References
    ----------
    McAllester, "PAC-Bayesian model averaging", COLT (1999). Neyshabur,
    Bhojanapalli, McAllester & Srebro, "Exploring generalization in deep
    learning", NeurIPS (2017). Jiang, Neyshabur, Mobahi, Krishnan & Bengio,
    "Fantastic generalization measures and where to find them", ICLR (2020).
    """
    owner = "pac_bayes"
    check_param(
        target_deviation, "target_deviation", owner, low=0.0, high=1.0, low_closed=False
    )
    check_param(tol, "tol", owner, low=0.0)
    check_param(n_samples, "n_samples", owner, kind="int", low=1)
    check_param(max_iter, "max_iter", owner, kind="int", low=1)
    check_param(sigma_max, "sigma_max", owner, low=0.0, low_closed=False)
    check_param(magnitude_eps, "magnitude_eps", owner, low=0.0)
    check_param(
        delta, "delta", owner, low=0.0, high=1.0, low_closed=False, high_closed=False
    )
    check_param(seed, "seed", owner, kind="int", low=0)
    check_param(batch_size, "batch_size", owner, kind="int", low=1)
    if max_batches is not None:
        check_param(max_batches, "max_batches", owner, kind="int", low=1)
    named = trainable_parameters(model, params, owner=owner)
    params_t = [p for _, p in named]
    batches = load_batches(
        data,
        model,
        batch_size=batch_size,
        max_batches=max_batches,
        owner=owner,
        label_key=label_key,
    )
    m = batches.n_samples if n_train is None else n_train
    check_param(m, "n_train", owner, kind="int", low=2)
    dtype, device = params_t[0].dtype, params_t[0].device
    w = flatten(params_t, dtype)
    w0 = _init_vector(init, named, dtype, device, owner)

    def accuracy() -> float:
        return evaluate(
            model, loss_fn, batches.batches, output_key=output_key, owner=owner
        )[1]

    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        acc0 = accuracy()
        if math.isnan(acc0):
            raise InvalidParameterError(
                "pac_bayes needs the training accuracy, which is undefined for "
                "these outputs and targets: use class scores of shape (n, C) with "
                "integer labels, or one logit with 0/1 labels."
            )
        lo, hi = 0.0, float(sigma_max)
        sigma, drop, acc_at = math.nan, math.nan, math.nan
        best_ok = None  # (sigma, perturbed accuracy) of the largest feasible sigma
        converged = False
        steps = 0
        for steps in range(1, max_iter + 1):
            sigma = 0.5 * (lo + hi)
            std = perturbation_std(w, sigma, magnitude_aware, magnitude_eps)
            accs = perturbed_samples(params_t, std, n_samples, False, seed, accuracy)
            acc_at = sum(accs) / len(accs)
            drop = acc0 - acc_at
            logger.debug("pac_bayes step %d: sigma=%g drop=%g", steps, sigma, drop)
            if abs(drop - target_deviation) <= tol:
                converged = True
                break
            if drop > target_deviation:
                hi = sigma
            else:
                lo = sigma
                best_ok = (sigma, acc_at)
    if not converged:
        if best_ok is not None:
            sigma, acc_at = best_ok
        warnings.warn(
            f"pac_bayes: the accuracy drop did not reach target_deviation="
            f"{target_deviation:g} within tol={tol:g} in {max_iter} bisection steps "
            f"on [0, {sigma_max:g}] (last drop {drop:.3g}); sigma={sigma:.4g} is "
            "a bound from the search, not a solution. A network at chance level "
            "cannot lose accuracy; else raise sigma_max or max_iter.",
            EstimationWarning,
            stacklevel=2,
        )
    kl = pac_bayes_kl(
        w, w0, sigma, magnitude_aware=magnitude_aware, magnitude_eps=magnitude_eps
    )
    complexity = kl + math.log(m / delta) + 10.0
    bound = math.sqrt(complexity / (2.0 * (m - 1)))
    return PACBayesResult(
        sigma=float(sigma),
        flatness=1.0 / sigma**2 if sigma > 0 else math.inf,
        bound=float(bound),
        kl=float(kl),
        complexity=float(complexity),
        m=int(m),
        delta=float(delta),
        train_acc=float(acc0),
        perturbed_acc=float(acc_at),
        converged=converged,
        n_search_steps=steps,
        magnitude_aware=magnitude_aware,
    )


@register_measure("pac_bayes", cost="expensive", option_names=[pac_bayes])
def _pac_bayes_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """``pac_bayes/{sigma,flatness,bound,kl}``; the prior's mean is ``context.init``."""
    options.setdefault("init", context.init)
    r = pac_bayes(context.model, context.loss_fn, context.train_data, **options)
    return {
        "pac_bayes/sigma": r.sigma,
        "pac_bayes/flatness": r.flatness,
        "pac_bayes/bound": r.bound,
        "pac_bayes/kl": r.kl,
    }
