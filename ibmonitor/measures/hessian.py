"""Hessian spectrum of the training loss from Hessian-vector products.

The Hessian ``H`` of the training loss ``L(w)`` (the sample mean of ``loss_fn``
over the batches used) is never formed: every algorithm here only needs
products ``H v``, computed by double backward (Pearlmutter's trick),

    H v = d/dw ( (dL/dw) . v ),

one ``torch.autograd.grad(..., create_graph=True)`` and one more
``torch.autograd.grad`` per batch, about twice the cost of a gradient. When the
data is one batch the first gradient (and its graph) is computed once and
reused for every product, as PyHessian does, so a product costs one backward
pass through that graph.

- :func:`hessian_eigenvalues`: top-k eigenvalues by Lanczos with full
  reorthogonalisation (default) or by power iteration with deflation.
- :func:`hessian_trace`: Hutchinson's estimator with Rademacher vectors.
- :func:`hessian_spectral_density`: the eigenvalue density by stochastic
  Lanczos quadrature (PyHessian's ESD).

Both have per-layer variants (``per_layer=True``: the diagonal block of ``H``
for the parameters of each module) and accept ``params`` to restrict ``w`` to a
subset.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._device import autocast_disabled, model_device
from .._state import preserve_state
from .._validation import check_param
from ..exceptions import EstimationWarning, InvalidParameterError
from ..structures import OutputKey
from ._data import (
    Batches,
    _check_loss,
    _count,
    check_autograd,
    load_batches,
    model_output,
    parameter_groups,
    trainable_parameters,
)
from ._perturb import flatten, seeded_generator
from .registry import MeasureContext, register_measure

__all__ = [
    "DENSITY_PREFIX",
    "HessianEigenvalues",
    "HessianSpectralDensity",
    "HessianTrace",
    "density_from_scalars",
    "hessian_eigenvalues",
    "hessian_spectral_density",
    "hessian_trace",
    "hessian_vector_product",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class HessianEigenvalues(tuple):
    """The top-k Hessian eigenvalues, largest first: a tuple of floats.

    Attributes
    ----------
    n_hvp : int
        Hessian-vector products used.
    n_iter : int
        Lanczos steps, or power iterations over all eigenvalues.
    converged : bool
        Whether every eigenvalue met the tolerance.
    method : str
        ``"lanczos"`` or ``"power"``.
    eigenvectors : list of list of Tensor or None
        With ``return_eigenvectors=True``, one unit vector per eigenvalue, split
        like the parameters.
    """

    n_hvp: int
    n_iter: int
    converged: bool
    method: str
    eigenvectors: Optional[List[List[torch.Tensor]]]

    def __new__(
        cls,
        values: Sequence[float],
        *,
        n_hvp: int,
        n_iter: int,
        converged: bool,
        method: str,
        eigenvectors: Optional[List[List[torch.Tensor]]] = None,
    ) -> HessianEigenvalues:
        """Build from the values (sorted by the caller) and the run's details."""
        self = super().__new__(cls, (float(v) for v in values))
        self.n_hvp = n_hvp
        self.n_iter = n_iter
        self.converged = converged
        self.method = method
        self.eigenvectors = eigenvectors
        return self

    def __repr__(self) -> str:
        vals = ", ".join(f"{v:.6g}" for v in self)
        return (
            f"HessianEigenvalues([{vals}], method={self.method!r}, "
            f"n_hvp={self.n_hvp}, converged={self.converged})"
        )


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson's estimate of the Hessian trace.

    Attributes
    ----------
    mean : float
        The estimate, the mean of ``v^T H v`` over Rademacher vectors ``v``.
    stderr : float
        Its standard error, ``std(ddof=1) / sqrt(n_samples)`` (NaN for 1 sample).
    n_samples : int
        Rademacher vectors used (one Hessian-vector product each).
    """

    mean: float
    stderr: float
    n_samples: int

    def as_dict(self) -> Dict[str, Any]:
        """Return the fields as a dict."""
        return asdict(self)


# ------------------------------------------------------------ HVP & vectors ---
def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[torch.Tensor],
    vector: Sequence[torch.Tensor],
    *,
    output_key: OutputKey = None,
) -> List[torch.Tensor]:
    """Return ``H v`` for the mean loss over ``batches`` (double backward).

    The model's mode is used as it is (the measures set eval mode first);
    ``.grad`` is never touched. Every call adds one to the HVP counter of
    :func:`ibmonitor.measures._data.counting`.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target)``, the mean over the batch.
    batches : Batches
        From :func:`ibmonitor.measures._data.load_batches`.
    params : sequence of Tensor
        The parameters ``w`` (their block of the Hessian is used).
    vector : sequence of Tensor
        ``v``, shaped like ``params``.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`).

    Returns
    -------
    hv : list of Tensor
        Shaped like ``params``.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()``, where no gradient exists.
    """
    owner = "hessian_vector_product"
    check_autograd(owner)
    out = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for (x, y), w in zip(batches.batches, batches.weights()):
            output = model_output(model, x, output_key, owner=owner)
            loss = _check_loss(loss_fn(output, y)) * w
            _count("forward")
            grads = torch.autograd.grad(
                loss, params, create_graph=True, allow_unused=True
            )
            dot = None
            for g, v in zip(grads, vector):
                if g is not None and g.requires_grad:
                    term = (g * v).sum()
                    dot = term if dot is None else dot + term
            if dot is None:  # the loss is at most linear in params: H = 0
                continue
            hv = torch.autograd.grad(dot, params, allow_unused=True)
            for acc, h in zip(out, hv):
                if h is not None:
                    acc.add_(h.detach())
    _count("hvp")
    return out


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    out, i = [], 0
    for p in like:
        n = p.numel()
        out.append(flat[i : i + n].view_as(p).to(p.dtype))
        i += n
    return out


class _Operator:
    """``v -> H v`` on flat vectors for a fixed model, loss, data and params.

    With one batch the gradient is computed once, with ``create_graph=True``,
    and every product differentiates that graph again
    (``torch.autograd.grad(grads, params, v, retain_graph=True)``): one
    backward pass a product instead of a forward and two backward passes. The
    graph lives until :meth:`release` (the callers release it in ``finally``).
    With several batches each product goes through
    :func:`hessian_vector_product` (one batch's graph at a time).
    """

    def __init__(self, model, loss_fn, batches, params, output_key=None):
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.output_key = output_key
        self.params = list(params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.n = sum(p.numel() for p in self.params)
        self.calls = 0
        self.single = len(batches.batches) == 1
        self._graph: Optional[Tuple[List[torch.Tensor], List[int]]] = None

    def _build_graph(self) -> Tuple[List[torch.Tensor], List[int]]:
        owner = "hessian_vector_product"
        ((x, y),) = self.batches.batches
        with torch.enable_grad():
            output = model_output(self.model, x, self.output_key, owner=owner)
            loss = _check_loss(self.loss_fn(output, y))
            _count("forward")
            grads = torch.autograd.grad(
                loss, self.params, create_graph=True, allow_unused=True
            )
        # Only gradients that depend on the parameters have a second derivative.
        keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in keep], keep

    def release(self) -> None:
        """Free the retained graph of the one-batch path."""
        self._graph = None

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if not self.single:
            hv = hessian_vector_product(
                self.model,
                self.loss_fn,
                self.batches,
                self.params,
                _unflatten(v, self.params),
                output_key=self.output_key,
            )
            return flatten(hv, self.dtype)
        check_autograd("hessian_vector_product")
        if self._graph is None:
            self._graph = self._build_graph()
        grads, keep = self._graph
        _count("hvp")
        if not keep:  # the loss is at most linear in params: H = 0
            return torch.zeros_like(v)
        parts = _unflatten(v.detach(), self.params)
        with torch.enable_grad():
            hv = torch.autograd.grad(
                grads,
                self.params,
                grad_outputs=[parts[i] for i in keep],
                retain_graph=True,
                allow_unused=True,
            )
        return torch.cat(
            [
                (h.detach() if h is not None else torch.zeros_like(p))
                .reshape(-1)
                .to(self.dtype)
                for h, p in zip(hv, self.params)
            ]
        )


# ------------------------------------------------------------------ Lanczos ---
def _lanczos(
    op: _Operator, k: int, max_iter: int, tol: float, gen: torch.Generator
) -> Tuple[List[float], List[torch.Tensor], int, bool]:
    """Lanczos with full reorthogonalisation; the k algebraically largest."""
    n = op.n
    m = min(max_iter, n)
    q_mat = torch.zeros(m + 1, n, dtype=op.dtype, device=op.device)
    q = torch.randn(n, generator=gen, dtype=op.dtype, device=op.device)
    q_mat[0] = q / q.norm()
    alphas: List[float] = []
    betas: List[float] = []
    theta = s_vec = None
    converged = False
    j = 0
    for j in range(m):
        w = op(q_mat[j])
        alpha = float(w @ q_mat[j])
        basis = q_mat[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        t_mat = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s_vec = np.linalg.eigh(t_mat)
        top = np.argsort(theta)[::-1][:k]
        scale = max(float(np.max(np.abs(theta))), 1e-30)
        resid = beta * np.abs(s_vec[-1, top])
        if j + 1 >= k and np.all(
            resid <= tol * np.maximum(np.abs(theta[top]), scale * 1e-6)
        ):
            converged = True
            break
        if j + 1 == n:
            converged = True
            break
        if beta <= 1e-10 * scale:
            # Invariant subspace: restart with a vector orthogonal to the basis.
            w = torch.randn(n, generator=gen, dtype=op.dtype, device=op.device)
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
            beta_next = 0.0
            q_mat[j + 1] = w / w.norm()
        else:
            beta_next = beta
            q_mat[j + 1] = w / beta
        betas.append(beta_next)
    top = np.argsort(theta)[::-1][:k]
    basis = q_mat[: len(alphas)]
    vectors = [
        basis.T @ torch.as_tensor(s_vec[:, i], dtype=op.dtype, device=op.device)
        for i in top
    ]
    return [float(theta[i]) for i in top], vectors, j + 1, converged


# -------------------------------------------------------------------- power ---
def _power(
    op: _Operator, k: int, max_iter: int, tol: float, gen: torch.Generator
) -> Tuple[List[float], List[torch.Tensor], int, bool]:
    """Power iteration with deflation; a shift makes the result the algebraic top-k.

    The first run finds the eigenvalue ``mu`` of largest magnitude. If ``mu < 0``
    the operator ``H - mu I`` (positive semi-definite) is iterated instead; if
    ``mu >= 0`` and ``k > 1``, ``H + mu I``. The top-k of the shifted operator,
    found one by one with the earlier eigenvectors projected out, are the
    algebraic top-k of ``H``.
    """
    total_iter = 0
    all_converged = True

    def run(
        shift: float, found: List[torch.Tensor], floor: float
    ) -> Tuple[float, torch.Tensor]:
        """Iterate ``P (H - shift I) P``; return an eigenvalue of ``H`` and its vector.

        The stop tests look at the eigenvalue of ``H`` itself (``rq + shift``),
        never at the shifted Rayleigh quotient, whose relative change is smaller
        by the factor ``|lambda| / |lambda - shift|`` (issue "Nothing lost,
        nothing hangs ... and right Hessians").
        """
        nonlocal total_iter, all_converged

        def project(v: torch.Tensor) -> torch.Tensor:
            for u in found:
                v = v - (u @ v) * u
            return v

        v = project(torch.randn(op.n, generator=gen, dtype=op.dtype, device=op.device))
        v = v / v.norm()
        lam = math.nan
        prev_change = math.nan
        for _ in range(max_iter):
            total_iter += 1
            w = project(op(v) - shift * v)
            rq = float(v @ w)
            new = rq + shift  # the estimate of the eigenvalue of H
            scale = max(abs(new), floor)
            bound = tol * scale
            # ||(H - new I) v|| (deflated): |new - lambda| <= residual for some
            # eigenvalue lambda, so this test certifies the relative error.
            resid = float((w - rq * v).norm())
            if resid <= bound:
                return new, v
            v_next = w / w.norm()
            # Rayleigh quotients converge geometrically: their change shrinks by
            # a ratio q per step, and the error left is about change * q / (1 - q)
            # (Aitken); stop when that is within tol. The residual must be small
            # too (the eigenvalue error is about residual^2 / gap), which keeps
            # a stagnating quotient (e.g. +-lambda both dominant) from stopping.
            if not math.isnan(lam) and resid <= math.sqrt(tol) * scale:
                change = abs(new - lam)
                if change == 0.0:
                    return new, v_next
                if change <= bound and prev_change > 0:
                    q = change / prev_change
                    if q < 1 and change * q / (1 - q) <= bound:
                        return new, v_next
                prev_change = change
            elif not math.isnan(lam):
                prev_change = abs(new - lam)
            lam, v = new, v_next
        all_converged = False
        return lam, v

    mu, u = run(0.0, [], 1e-30)
    floor = 1e-6 * abs(mu) if mu != 0 else 1e-30
    if mu >= 0:
        values, vectors, shift = [mu], [u], -mu
    else:
        values, vectors, shift = [], [], mu
    while len(values) < min(k, op.n):
        lam, u = run(shift, vectors, floor)
        values.append(lam)
        vectors.append(u)
    order = np.argsort(values)[::-1]
    return (
        [values[i] for i in order],
        [vectors[i] for i in order],
        total_iter,
        all_converged,
    )


# --------------------------------------------------------------- public API ---
def _check_common(owner: str, seed: Any, batch_size: Any, max_batches: Any) -> None:
    check_param(seed, "seed", owner, kind="int", low=0)
    check_param(batch_size, "batch_size", owner, kind="int", low=1)
    if max_batches is not None:
        check_param(max_batches, "max_batches", owner, kind="int", low=1)


def _groups(
    model: nn.Module, params: Any, per_layer: bool, owner: str
) -> Dict[str, List[Tuple[str, torch.Tensor]]]:
    named = trainable_parameters(model, params, owner=owner)
    if per_layer:
        return parameter_groups(model, named)
    return {"all": named}


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    k: int = 1,
    *,
    method: str = "lanczos",
    max_iter: int = 100,
    tol: float = 1e-3,
    params: Any = None,
    per_layer: bool = False,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    return_eigenvectors: bool = False,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> Union[HessianEigenvalues, Dict[str, HessianEigenvalues]]:
    """Return the top-k eigenvalues of the Hessian of the training loss.

    The loss is the sample mean of ``loss_fn`` over the batches of ``data``
    (all of them, or the first ``max_batches``), in eval mode, on the model's
    device. The model is left exactly as found.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    data : tuple (inputs, targets) or iterable of batches
        Training data; a DataLoader is read once, so a shuffling loader gives
        the same Hessian for every product. Inputs of any structure (a tuple
        or dict of tensors, see :func:`generalization_gap`).
    k : int, default=1
        How many eigenvalues (the algebraically largest).
    method : {"lanczos", "power"}, default="lanczos"
        Lanczos with full reorthogonalisation (stores up to ``max_iter`` vectors
        of the parameters' size) or power iteration with deflation (stores k
        vectors; slower when eigenvalues are close).
    max_iter : int, default=100
        Lanczos steps, or power iterations per eigenvalue.
    tol : float, default=1e-3
        Relative tolerance. Lanczos stops when every Ritz residual
        ``||H y_i - theta_i y_i|| = |beta_j s_ji|`` is below ``tol * |theta_i|``
        (so each value is within ``tol`` relatively of an eigenvalue of ``H``).
        Power iteration stops, for each eigenvalue, when the residual
        ``||H v - lambda v||`` (deflated) is below ``tol * |lambda|``, or when
        the change of the estimate ``lambda`` itself, extrapolated to the limit
        from the ratio of successive changes, is below ``tol * |lambda|``.
    params : str, Parameter or sequence of them, optional
        Restrict ``w`` to these parameters (names of parameters or modules, or
        Parameter objects); default all parameters that require grad.
    per_layer : bool, default=False
        Return ``{module name: eigenvalues}`` for the diagonal block of each
        module that owns parameters (among ``params``).
    seed : int, default=0
        Seed of the start vector (a generator on the model's device; the global
        generators are not used).
    batch_size : int, default=1024
        Batch size for a tensor pair.
    max_batches : int, optional
        Use only the first ``max_batches`` batches (bounds time and memory).
    return_eigenvectors : bool, default=False
        Attach unit eigenvectors (split like the parameters) as ``.eigenvectors``.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`).
    label_key : str, optional
        Key of the targets in dict batches; default ``"labels"``, else
        ``"label"``.

    Returns
    -------
    eigenvalues : HessianEigenvalues or dict of str to HessianEigenvalues
        A tuple of ``k`` floats, largest first, with ``.n_hvp``, ``.n_iter``,
        ``.converged``.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()`` (``torch.no_grad()`` is fine).

    Warns
    -----
    EstimationWarning
        When the tolerance was not met within ``max_iter``.

    Notes
    -----
    Cost: one Hessian-vector product (about two gradient evaluations over the
    batches used) per Lanczos step. For ``k=1`` and ``tol=1e-3``, Lanczos
    typically needs 10-30 products on small networks; power iteration 20-100 per
    eigenvalue. ``scripts/bench_measures.py`` measures both.

    References
    ----------
    Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation
    (1994). Yao et al., "PyHessian: Neural networks through the lens of the
    Hessian", IEEE BigData (2020).
    """
    owner = "hessian_eigenvalues"
    check_autograd(owner)
    check_param(k, "k", owner, kind="int", low=1)
    check_param(method, "method", owner, kind="option", options=("lanczos", "power"))
    check_param(max_iter, "max_iter", owner, kind="int", low=1)
    check_param(tol, "tol", owner, low=0.0, low_closed=False)
    _check_common(owner, seed, batch_size, max_batches)
    groups = _groups(model, params, per_layer, owner)
    for name, named in groups.items():
        n_group = sum(p.numel() for _, p in named)
        if k > n_group:
            raise InvalidParameterError(
                f"The 'k' parameter of {owner} must be at most the number of "
                f"parameters ({n_group} in {name!r}): a Hessian of that size has "
                f"{n_group} eigenvalues. Got {k} instead."
            )
    batches = load_batches(
        data,
        model,
        batch_size=batch_size,
        max_batches=max_batches,
        owner=owner,
        label_key=label_key,
    )
    solver = _lanczos if method == "lanczos" else _power
    results: Dict[str, HessianEigenvalues] = {}
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        for name, named in groups.items():
            tensors = [p for _, p in named]
            op = _Operator(model, loss_fn, batches, tensors, output_key)
            gen = seeded_generator(op.device, seed)
            try:
                values, vectors, n_iter, converged = solver(op, k, max_iter, tol, gen)
            finally:
                op.release()
            if not converged:
                warnings.warn(
                    f"hessian_eigenvalues ({method}) did not reach tol={tol:g} in "
                    f"max_iter={max_iter} iterations for parameters {name!r}; "
                    "increase max_iter or tol.",
                    EstimationWarning,
                    stacklevel=2,
                )
            vecs = (
                [_unflatten(v, tensors) for v in vectors]
                if return_eigenvectors
                else None
            )
            results[name] = HessianEigenvalues(
                values,
                n_hvp=op.calls,
                n_iter=n_iter,
                converged=converged,
                method=method,
                eigenvectors=vecs,
            )
            logger.debug("hessian_eigenvalues %s: %r", name, results[name])
    return results if per_layer else results["all"]


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    n_samples: int = 100,
    *,
    params: Any = None,
    per_layer: bool = False,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> Union[HessianTrace, Dict[str, HessianTrace]]:
    """Estimate the trace of the Hessian of the training loss (Hutchinson).

    ``tr(H) = E[v^T H v]`` for ``v`` with independent Rademacher (+-1) entries;
    the estimate is the mean over ``n_samples`` vectors and its standard error
    is ``std / sqrt(n_samples)``. The variance of one term is
    ``2 * sum_{i != j} H_ij^2``, so the estimate is exact for a diagonal
    Hessian.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    data : tuple (inputs, targets) or iterable of batches
        Training data (read once).
    n_samples : int, default=100
        Rademacher vectors (one Hessian-vector product each).
    params : str, Parameter or sequence of them, optional
        Restrict ``w`` to these parameters; default all that require grad.
    per_layer : bool, default=False
        Return ``{module name: HessianTrace}``, the trace of each module's
        diagonal block (the blocks' traces sum to the full trace).
    seed : int, default=0
        Seed of the Rademacher vectors (own generator on the model's device).
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
    trace : HessianTrace or dict of str to HessianTrace
        ``.mean`` and ``.stderr``.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()`` (``torch.no_grad()`` is fine).

    Notes
    -----
    Cost: ``n_samples`` Hessian-vector products (per layer with
    ``per_layer=True``).

    References
    ----------
    Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines" (1990). Avron & Toledo, "Randomized algorithms
    for estimating the trace of an implicit symmetric positive semi-definite
    matrix", JACM (2011).
    """
    owner = "hessian_trace"
    check_autograd(owner)
    check_param(n_samples, "n_samples", owner, kind="int", low=1)
    _check_common(owner, seed, batch_size, max_batches)
    groups = _groups(model, params, per_layer, owner)
    batches = load_batches(
        data,
        model,
        batch_size=batch_size,
        max_batches=max_batches,
        owner=owner,
        label_key=label_key,
    )
    results: Dict[str, HessianTrace] = {}
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        for name, named in groups.items():
            op = _Operator(model, loss_fn, batches, [p for _, p in named], output_key)
            gen = seeded_generator(op.device, seed)
            samples = []
            try:
                for _ in range(n_samples):
                    v = torch.randint(0, 2, (op.n,), generator=gen, device=op.device)
                    v = v.to(op.dtype) * 2 - 1
                    samples.append(float(v @ op(v)))
            finally:
                op.release()
            arr = np.asarray(samples)
            stderr = (
                float(arr.std(ddof=1) / math.sqrt(len(arr)))
                if len(arr) > 1
                else math.nan
            )
            results[name] = HessianTrace(float(arr.mean()), stderr, len(arr))
    return results if per_layer else results["all"]


@dataclass(frozen=True, eq=False)
class HessianSpectralDensity:
    """Gauss quadrature of the Hessian's eigenvalue density (SLQ).

    The spectral measure ``(1/p) sum_i delta(t - lambda_i)`` of the ``p x p``
    Hessian is approximated by point masses ``weights`` at ``nodes``; for
    every polynomial ``f`` of degree below ``2 * n_steps``,
    ``sum(weights * f(nodes))`` is the mean over the probe vectors of
    ``v^T f(H) v / v^T v``, an unbiased estimate of ``tr(f(H)) / p``.

    Attributes
    ----------
    nodes : ndarray of shape (n_nodes,)
        Ritz values of every probe vector, concatenated (``n_steps`` each, or
        fewer where Lanczos found an invariant subspace).
    weights : ndarray of shape (n_nodes,)
        Their weights, the squared first components of the Ritz vectors divided
        by ``n_vectors``; they sum to 1.
    n_vectors : int
        Probe vectors (Rademacher, normalised).
    n_steps : tuple of int
        Lanczos steps run for each probe vector.
    n_hvp : int
        Hessian-vector products used.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_vectors: int
    n_steps: Tuple[int, ...]
    n_hvp: int

    def moment(self, m: int) -> float:
        """Return ``sum(weights * nodes**m)``, the estimate of ``tr(H^m) / p``."""
        return float(np.sum(self.weights * self.nodes**m))

    def density(self, grid: Any, *, sigma: Optional[float] = None) -> np.ndarray:
        """Evaluate the Gaussian-smoothed density on ``grid``.

        ``phi(t) = sum_i weights_i N(t; nodes_i, sigma^2)``, which integrates
        to 1 over the real line.

        Parameters
        ----------
        grid : array-like of shape (n_points,)
            Where to evaluate the density.
        sigma : float, optional
            Width of the Gaussian kernel; default ``0.01 * (max(nodes) -
            min(nodes))`` (``1e-3 * max(|nodes|)`` or 1e-12 if they are all
            equal).

        Returns
        -------
        density : ndarray of shape (n_points,)
        """
        t = np.asarray(grid, dtype=float)
        if sigma is None:
            spread = float(self.nodes.max() - self.nodes.min())
            sigma = 0.01 * spread or 1e-3 * float(np.abs(self.nodes).max()) or 1e-12
        check_param(
            sigma, "sigma", "HessianSpectralDensity.density", low=0.0, low_closed=False
        )
        z = (t[..., None] - self.nodes) / sigma
        kernel = np.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
        return kernel @ self.weights


#: Prefix of the ``hessian_density`` measure's scalars.
DENSITY_PREFIX = "hessian_density/"


def _slq_quadrature(
    op: _Operator, v: torch.Tensor, n_steps: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Lanczos (full reorthogonalisation) from ``v``: Gauss nodes and weights."""
    m = min(n_steps, op.n)
    q_mat = torch.zeros(m, op.n, dtype=op.dtype, device=op.device)
    q_mat[0] = v / v.norm()
    alphas: List[float] = []
    betas: List[float] = []
    for j in range(m):
        w = op(q_mat[j])
        alphas.append(float(w @ q_mat[j]))
        basis = q_mat[: j + 1]
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        scale = max(max(abs(a) for a in alphas), max(betas, default=0.0), 1e-30)
        # beta ~ 0: the Krylov space is invariant and the quadrature is exact.
        if j + 1 == m or beta <= 1e-10 * scale:
            break
        betas.append(beta)
        q_mat[j + 1] = w / beta
    t_mat = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    theta, s_vec = np.linalg.eigh(t_mat)
    return theta, s_vec[0] ** 2


def hessian_spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    n_vectors: int = 1,
    n_steps: int = 100,
    params: Any = None,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> HessianSpectralDensity:
    """Estimate the Hessian's eigenvalue density by stochastic Lanczos quadrature.

    For each of ``n_vectors`` Rademacher probe vectors ``v``, ``n_steps``
    Lanczos steps from ``v / ||v||`` give a tridiagonal matrix ``T``; its
    eigenvalues (nodes) and the squared first components of its eigenvectors
    (weights) are the Gauss quadrature of the spectral measure of ``H`` seen
    from ``v``. Averaged over the probes they estimate the eigenvalue density
    ``(1/p) sum_i delta(t - lambda_i)`` of the ``p x p`` Hessian of the
    training loss (the sample mean of ``loss_fn``), in eval mode, on the model's
    device. The model is left exactly as found.

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch.
    data : tuple (inputs, targets) or iterable of batches
        Training data (read once).
    n_vectors : int, default=1
        Probe vectors; the density's stochastic error falls as
        ``1 / sqrt(n_vectors)`` (small already for one vector when ``p`` is
        large).
    n_steps : int, default=100
        Lanczos steps for each probe (at most ``p``); the quadrature is exact
        for polynomials of degree below ``2 * n_steps``. Stores ``n_steps``
        vectors of the parameters' size.
    params : str, Parameter or sequence of them, optional
        Restrict ``w`` to these parameters; default all that require grad.
    seed : int, default=0
        Seed of the probe vectors (own generator on the model's device).
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
    density : HessianSpectralDensity
        ``.nodes`` and ``.weights`` (summing to 1), ``.moment(m)``, and
        ``.density(grid, sigma=...)`` for the Gaussian-smoothed density.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()`` (``torch.no_grad()`` is fine).

    Notes
    -----
    Cost: ``n_vectors * n_steps`` Hessian-vector products. The extreme nodes
    converge first to the extreme eigenvalues, so the density's support covers
    ``[lambda_min, lambda_max]`` after a few tens of steps; the interior is
    resolved to about ``(lambda_max - lambda_min) / n_steps``. PyHessian's
    ``density(iter, n_v)`` is the same algorithm.

    References
    ----------
    Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net Optimization
    via Hessian Eigenvalue Density", ICML (2019). Lin, Saad & Yang,
    "Approximating spectral densities of large matrices", SIAM Review (2016).
    Golub & Meurant, "Matrices, Moments and Quadrature with Applications"
    (2010).
    """
    owner = "hessian_spectral_density"
    check_autograd(owner)
    check_param(n_vectors, "n_vectors", owner, kind="int", low=1)
    check_param(n_steps, "n_steps", owner, kind="int", low=1)
    _check_common(owner, seed, batch_size, max_batches)
    named = trainable_parameters(model, params, owner=owner)
    batches = load_batches(
        data,
        model,
        batch_size=batch_size,
        max_batches=max_batches,
        owner=owner,
        label_key=label_key,
    )
    nodes, weights, steps = [], [], []
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        op = _Operator(model, loss_fn, batches, [p for _, p in named], output_key)
        gen = seeded_generator(op.device, seed)
        try:
            for _ in range(n_vectors):
                v = torch.randint(0, 2, (op.n,), generator=gen, device=op.device)
                theta, tau = _slq_quadrature(op, v.to(op.dtype) * 2 - 1, n_steps)
                nodes.append(theta)
                weights.append(tau / n_vectors)
                steps.append(len(theta))
        finally:
            op.release()
    result = HessianSpectralDensity(
        nodes=np.concatenate(nodes),
        weights=np.concatenate(weights),
        n_vectors=n_vectors,
        n_steps=tuple(steps),
        n_hvp=op.calls,
    )
    logger.debug(
        "hessian_spectral_density: %d nodes, %d HVPs", len(result.nodes), result.n_hvp
    )
    return result


@register_measure(
    "hessian",
    cost="expensive",
    defaults={"n_samples": 20},
    option_names=[hessian_eigenvalues, "n_samples", "trace"],
)
def _hessian_measure(
    context: MeasureContext, *, trace: bool = True, **options: Any
) -> Dict[str, float]:
    """Top eigenvalues and (with ``trace``) Hutchinson's trace of the Hessian.

    ``hessian/top_eigenvalue`` (``hessian/eigenvalue_2``... for ``k > 1``),
    ``hessian/trace``, ``hessian/trace_stderr``; with ``per_layer``
    ``hessian/<layer>/...``. ``n_samples`` goes to the trace (20 here, not
    100); ``params``, ``per_layer``, ``seed``, ``batch_size``,
    ``max_batches``, ``output_key`` and ``label_key`` to both.
    """
    n_samples = options.pop("n_samples", 20)
    shared = {
        k: options[k]
        for k in (
            "params",
            "per_layer",
            "seed",
            "batch_size",
            "max_batches",
            "output_key",
            "label_key",
        )
        if k in options
    }
    model, loss_fn, data = context.model, context.loss_fn, context.train_data
    eig = hessian_eigenvalues(model, loss_fn, data, **options)
    tr = hessian_trace(model, loss_fn, data, n_samples, **shared) if trace else None
    per_layer = bool(options.get("per_layer", False))
    eig_groups = eig if per_layer else {"": eig}
    tr_groups = (tr if per_layer else {"": tr}) if tr is not None else {}
    out: Dict[str, float] = {}
    for group, values in eig_groups.items():
        prefix = f"hessian/{group}/" if group else "hessian/"
        out[prefix + "top_eigenvalue"] = values[0]
        for i, v in enumerate(values[1:], start=2):
            out[prefix + f"eigenvalue_{i}"] = v
        if group in tr_groups:
            out[prefix + "trace"] = tr_groups[group].mean
            out[prefix + "trace_stderr"] = tr_groups[group].stderr
    return out


@register_measure(
    "hessian_density",
    cost="expensive",
    defaults={"n_steps": 30},
    option_names=[hessian_spectral_density],
)
def _hessian_density_measure(
    context: MeasureContext, **options: Any
) -> Dict[str, float]:
    """Return the Hessian's eigenvalue density (SLQ) as quadrature nodes and weights.

    ``hessian_density/node_000``, ``hessian_density/weight_000``, ... (one pair
    per Ritz value, ``n_vectors * n_steps`` in all; 30 steps here): the
    report draws the Gaussian-smoothed density from them
    (:meth:`HessianSpectralDensity.density`).
    """
    result = hessian_spectral_density(
        context.model, context.loss_fn, context.train_data, **options
    )
    out: Dict[str, float] = {}
    for i, (node, weight) in enumerate(zip(result.nodes, result.weights)):
        out[f"{DENSITY_PREFIX}node_{i:03d}"] = float(node)
        out[f"{DENSITY_PREFIX}weight_{i:03d}"] = float(weight)
    return out


def density_from_scalars(values: Mapping[str, float]) -> HessianSpectralDensity:
    """Rebuild a density from the scalars of the ``hessian_density`` measure.

    Parameters
    ----------
    values : dict of str to float
        One epoch's scalars (other names are ignored).

    Returns
    -------
    HessianSpectralDensity
        With the stored nodes and weights (``n_vectors=1``, ``n_hvp=0``: not
        stored).

    Raises
    ------
    InvalidParameterError
        No ``hessian_density/`` scalars, or nodes without weights.
    """
    nodes: Dict[str, float] = {}
    weights: Dict[str, float] = {}
    for name, value in values.items():
        if name.startswith(DENSITY_PREFIX + "node_"):
            nodes[name[len(DENSITY_PREFIX + "node_") :]] = float(value)
        elif name.startswith(DENSITY_PREFIX + "weight_"):
            weights[name[len(DENSITY_PREFIX + "weight_") :]] = float(value)
    if not nodes or set(nodes) != set(weights):
        raise InvalidParameterError(
            "density_from_scalars needs matching 'hessian_density/node_i' and "
            f"'hessian_density/weight_i' scalars; got {len(nodes)} nodes and "
            f"{len(weights)} weights."
        )
    keys = sorted(nodes)
    node_arr = np.array([nodes[k] for k in keys])
    weight_arr = np.array([weights[k] for k in keys])
    keep = np.isfinite(node_arr) & np.isfinite(weight_arr)
    return HessianSpectralDensity(
        nodes=node_arr[keep],
        weights=weight_arr[keep],
        n_vectors=1,
        n_steps=(int(keep.sum()),),
        n_hvp=0,
    )
