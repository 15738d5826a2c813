"""Influence functions (Koh & Liang 2017): the effect of removing one training point.

For a model trained to a minimum ``w`` of the mean training loss
``L(w) = (1/n) sum_i l(z_i, w)`` (plus an optional L2 term, see ``damping``),
removing the training point ``z`` moves the minimum by about
``(1/n) H^{-1} grad l(z, w)``, where ``H`` is the Hessian of the training
objective at ``w``. The test loss then changes by about

    influence(z, z_test) = (1/n) grad l(z_test, w)^T H^{-1} grad l(z, w),

which is ``-(1/n)`` times Koh & Liang's ``I_up,loss(z, z_test)``. Positive
values mean that removing ``z`` raises the test loss: ``z`` helped.

Written here rather than taken from Captum: ``captum.influence`` has
``NaiveInfluenceFunction`` (an explicit Hessian, but cut to its top
``projection_dim`` eigenpairs above a tolerance, of the *summed* loss, loaded
from a checkpoint file, for losses with ``reduction="none"`` and
tuple-of-tensor batches passed as ``model(*batch[:-1])``) and
``ArnoldiInfluenceFunction`` (a low-rank approximation). Neither gives the
exact inverse with the damping convention below, takes the mean losses and
dict inputs the rest of ibmonitor takes, or leaves the global RNG alone (the
constructor calls ``torch.manual_seed``). The tests check this module against
``NaiveInfluenceFunction`` set up to compute the same number.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._device import autocast_disabled, model_device
from .._state import preserve_state
from .._validation import check_param
from ..exceptions import EstimationWarning, InvalidParameterError
from ..measures._data import (
    Batches,
    check_autograd,
    load_batches,
    model_output,
    trainable_parameters,
)
from ..measures.hessian import hessian_vector_product
from ..recording import unwrap_model
from ..structures import OutputKey, n_rows, select_output, slice_rows
from ._common import check_int

__all__ = ["INFLUENCE_COLUMNS", "INFLUENCE_METHODS", "influence"]

logger = logging.getLogger(__name__)

OWNER = "influence"
#: Columns of the table :func:`influence` returns.
INFLUENCE_COLUMNS = ("test_index", "train_index", "influence")
#: Options of ``method``.
INFLUENCE_METHODS = ("auto", "exact", "cg")
#: Rows times Hessian columns one vectorised Hessian chunk may hold.
_HESSIAN_CHUNK_BUDGET = 2**16

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def influence(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Any,
    test_data: Any,
    *,
    damping: float = 0.0,
    params: Any = None,
    method: str = "auto",
    top: Optional[int] = None,
    batch_size: int = 256,
    exact_max_params: int = 2000,
    cg_tol: float = 1e-8,
    cg_max_iter: int = 1000,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> pd.DataFrame:
    """Predict how each test loss changes when each training point is removed.

    Koh & Liang's influence function, as the predicted change of the test
    loss (see the module docstring and Notes):
    ``influence = (1/n) grad l(z_test)^T (H + damping I)^{-1} grad l(z_train)``,
    with ``H`` the Hessian of the mean training loss over ``train_data`` at
    the model's current parameters.

    Parameters
    ----------
    model : nn.Module
        A model at (or near) a minimum of its training objective.
    loss_fn : callable
        ``loss_fn(output, target)``, the mean over the batch (e.g.
        ``nn.CrossEntropyLoss()``); the per-point loss ``l`` is it on one
        point.
    train_data : tuple (inputs, targets) or iterable of batches
        The **whole** training set: its size is ``n`` and its mean loss gives
        ``H``. Inputs may be a tensor, a tuple of tensors (``model(*x)``) or a
        dict of tensors (``model(**x)``); a DataLoader must not shuffle (its
        order gives ``train_index``).
    test_data : tuple (inputs, targets) or iterable of batches
        The test points whose loss change is predicted.
    damping : float, default=0.0
        Added to the Hessian's diagonal. For a training objective ``L(w) +
        lam * ||w||^2`` (L2 regularization, or weight decay ``2 * lam`` in
        SGD), ``damping = 2 * lam`` makes ``H + damping I`` its exact
        Hessian. For a non-convex model it also makes ``H`` positive definite
        (Koh & Liang add 0.01).
    params : None, str, or sequence of str or Parameter, default=None
        The parameters ``w`` (every parameter that requires grad by default;
        a module name takes all of its parameters, e.g. the last layer only).
    method : {"auto", "exact", "cg"}, default="auto"
        ``"exact"``: the Hessian is formed (:func:`torch.func.jacrev` of the
        gradient, by chunks) and inverted through its eigendecomposition,
        ``O(P^2)`` memory for ``P`` parameters. ``"cg"``: ``(H + damping
        I)^{-1} grad l(z_test)`` by conjugate gradients with Hessian-vector
        products (:func:`ibmonitor.measures.hessian_vector_product`), one
        solve per test point; needs ``H + damping I`` positive definite.
        ``"auto"``: exact up to ``exact_max_params`` parameters, else CG.
    top : int, optional
        Keep, per test point, the ``top`` most helpful training points
        (largest influence) and the ``top`` most harmful (smallest), ordered
        by influence, largest first. Default: every pair.
    batch_size : int, default=256
        Batch size for ``(inputs, targets)`` pairs; also bounds the memory of
        the per-example gradients and of the Hessian chunks.
    exact_max_params : int, default=2000
        Largest parameter count ``"auto"`` forms the Hessian for.
    cg_tol : float, default=1e-8
        CG stops when the residual norm is below ``cg_tol`` times the norm of
        the right-hand side.
    cg_max_iter : int, default=1000
        Most CG iterations per test point.
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns is the output.
    label_key : str, optional
        Key of the targets in dict batches (default ``"labels"``/``"label"``).

    Returns
    -------
    table : pandas.DataFrame
        Columns ``test_index`` and ``train_index`` (positions in
        ``test_data`` and ``train_data``) and ``influence`` (float, in units
        of the loss: nats for cross-entropy). Ordered by test index, then by
        train index (or, with ``top``, by influence, largest first).
        ``table.attrs`` holds ``method``, ``damping``, ``n_train``,
        ``n_params`` and, for the exact method, ``min_eigenvalue`` and
        ``max_eigenvalue`` of ``H + damping I`` (for CG, ``cg_iterations``,
        one per test point).

    Raises
    ------
    InvalidParameterError
        Bad parameters or data; a loss that is not a scalar.
    RuntimeError
        Called inside ``torch.inference_mode()``.

    Warns
    -----
    EstimationWarning
        ``H + damping I`` is not positive definite (exact: the inverse of an
        indefinite matrix is used, a singular direction is dropped; CG: stops
        at negative curvature), or CG did not converge.

    Notes
    -----
    Derivation (Koh & Liang, section 2.1): upweighting ``z`` by ``eps`` in the
    objective ``(1/n) sum_i l(z_i, w) + (damping/2) ||w||^2`` moves the
    minimum by ``dw/deps = -H^{-1} grad l(z)``; removing ``z`` is ``eps =
    -1/n``, so ``dw = (1/n) H^{-1} grad l(z)`` and the test loss changes by
    ``grad l(z_test)^T dw``. The objective after removal is ``(1/n)
    sum_{i != z} l(z_i, w) + (damping/2) ||w||^2``: the regularizer keeps its
    weight relative to the summed loss (as in Koh & Liang's code), which is
    what a leave-one-out retraining must minimize to be compared with this
    prediction.

    Everything runs in eval mode (dropout off, batch-norm running
    statistics), on the model's device, with autocast disabled; the solve is
    done in float64. The model is left exactly as found (parameters,
    ``.grad``, ``requires_grad``, modes, buffers, random-number generators).
    Per-example gradients use :func:`torch.func.vmap`, with a loop over the
    samples as a fallback for models vmap cannot trace.

    References
    ----------
    P. W. Koh and P. Liang, "Understanding Black-box Predictions via
    Influence Functions", ICML 2017.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 2).double()
    >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    >>> table = influence(model, torch.nn.CrossEntropyLoss(), (x, y),
    ...                   (x[:2], y[:2]), damping=0.1)
    >>> table.shape, list(table.columns)
    ((40, 3), ['test_index', 'train_index', 'influence'])
    """
    if not callable(loss_fn):
        raise InvalidParameterError(
            f"The 'loss_fn' parameter of {OWNER} must be callable as "
            f"loss_fn(output, target). Got {type(loss_fn).__name__} instead."
        )
    check_param(damping, "damping", OWNER, low=0.0)
    check_param(method, "method", OWNER, kind="option", options=INFLUENCE_METHODS)
    if top is not None:
        check_int(top, "top", OWNER)
    check_int(batch_size, "batch_size", OWNER)
    check_int(exact_max_params, "exact_max_params", OWNER)
    check_param(cg_tol, "cg_tol", OWNER, low=0.0, low_closed=False)
    check_int(cg_max_iter, "cg_max_iter", OWNER)
    check_autograd(OWNER)
    model = unwrap_model(model)
    device = model_device(model)
    attrs: Dict[str, Any] = {"damping": float(damping)}
    with preserve_state(model, parameters=True), autocast_disabled(device):
        model.eval()
        named = trainable_parameters(model, params, owner=OWNER)
        train = load_batches(
            train_data, model, batch_size=batch_size, owner=OWNER, label_key=label_key
        )
        test = load_batches(
            test_data, model, batch_size=batch_size, owner=OWNER, label_key=label_key
        )
        n_params = sum(p.numel() for _, p in named)
        chosen = method
        if method == "auto":
            chosen = "exact" if n_params <= exact_max_params else "cg"
        attrs.update(method=chosen, n_train=train.n_samples, n_params=n_params)
        grads = _PerExampleGradients(model, loss_fn, named, output_key)
        g_test = torch.cat([grads(x, y) for x, y in test.batches]).to(torch.float64)
        if chosen == "exact":
            hessian = _exact_hessian(model, loss_fn, named, train, output_key)
            solved, info = _solve_exact(hessian, float(damping), g_test)
        else:
            solved, info = _solve_cg(
                model,
                loss_fn,
                named,
                train,
                output_key,
                float(damping),
                g_test,
                cg_tol,
                cg_max_iter,
            )
        attrs.update(info)
        scores = [
            grads(x, y).to(torch.float64) @ solved for x, y in train.batches
        ]  # (n_batch, n_test) each
        values = (torch.cat(scores) / train.n_samples).T.contiguous().cpu().numpy()
    return _table(values, top, attrs)


# ------------------------------------------------------------ functional model ---
def _functional_call(model: nn.Module, values: Dict[str, torch.Tensor], x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.func.functional_call(model, values, (x,))
    if isinstance(x, dict):
        return torch.func.functional_call(model, values, (), dict(x))
    return torch.func.functional_call(model, values, tuple(x))


def _scalar(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InvalidParameterError(
            f"loss_fn(output, target) must return a scalar tensor (the mean loss "
            f"over the batch, reduction='mean'); {OWNER} got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}."
        )
    return loss.reshape(())


def _unsqueeze(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    if isinstance(x, dict):
        return {k: v.unsqueeze(0) for k, v in x.items()}
    return type(x)(v.unsqueeze(0) for v in x)


class _PerExampleGradients:
    """``(batch, P)`` gradients of the per-example loss, flattened in params order."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        named: Sequence[Tuple[str, torch.Tensor]],
        output_key: OutputKey,
    ) -> None:
        self.model, self.loss_fn, self.output_key = model, loss_fn, output_key
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        # The other parameters as constants: no graph through them.
        self.fixed = {n: p.detach() for n, p in model.named_parameters()}
        self.use_vmap = True

    def _loss_one(self, values: Dict[str, torch.Tensor], xi: Any, yi: Any) -> Any:
        out = select_output(
            _functional_call(self.model, {**self.fixed, **values}, _unsqueeze(xi)),
            self.output_key,
            owner=OWNER,
        )
        return _scalar(self.loss_fn(out, yi.unsqueeze(0)))

    def __call__(self, x: Any, y: torch.Tensor) -> torch.Tensor:
        b = n_rows(x)
        if self.use_vmap:
            values = {n: p.detach() for n, p in zip(self.names, self.params)}
            try:
                with torch.enable_grad():
                    g = torch.func.vmap(
                        torch.func.grad(self._loss_one), in_dims=(None, 0, 0)
                    )(values, x, y)
                flat = [g[n].reshape(b, -1) for n in self.names]
                return torch.cat(flat, dim=1).detach()
            except InvalidParameterError:
                raise
            except Exception as error:  # vmap cannot trace every model
                logger.debug("per-example gradients by a loop: %s", error)
                self.use_vmap = False
        rows = []
        with torch.enable_grad():
            for i in range(b):
                xi = slice_rows(x, slice(i, i + 1))
                out = model_output(self.model, xi, self.output_key, owner=OWNER)
                loss = _scalar(self.loss_fn(out, y[i : i + 1]))
                gs = torch.autograd.grad(loss, self.params, allow_unused=True)
                rows.append(
                    torch.cat(
                        [
                            (torch.zeros_like(p) if g is None else g).reshape(-1)
                            for g, p in zip(gs, self.params)
                        ]
                    )
                )
        return torch.stack(rows)


def _unflatten(
    flat: torch.Tensor, names: Sequence[str], like: Sequence[torch.Tensor]
) -> Dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in zip(names, like):
        k = p.numel()
        out[name] = flat[i : i + k].view_as(p)
        i += k
    return out


# --------------------------------------------------------------- exact solve ---
def _exact_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    named: Sequence[Tuple[str, torch.Tensor]],
    train: Batches,
    output_key: OutputKey,
) -> torch.Tensor:
    """Return the Hessian of the mean training loss, ``(P, P)`` float64."""
    names = [n for n, _ in named]
    params = [p for _, p in named]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    n_params = flat0.numel()

    fixed = {n: p.detach() for n, p in model.named_parameters()}

    def batch_loss(flat: torch.Tensor, x: Any, y: torch.Tensor) -> torch.Tensor:
        values = {**fixed, **_unflatten(flat, names, params)}
        out = select_output(
            _functional_call(model, values, x),
            output_key,
            owner=OWNER,
        )
        return _scalar(loss_fn(out, y))

    hessian = torch.zeros(n_params, n_params, dtype=torch.float64, device=flat0.device)
    try:
        for (x, y), w in zip(train.batches, train.weights()):
            chunk = max(1, min(n_params, _HESSIAN_CHUNK_BUDGET // max(1, n_rows(x))))
            with torch.enable_grad():
                h = torch.func.jacrev(torch.func.grad(batch_loss), chunk_size=chunk)(
                    flat0, x, y
                )
            hessian.add_(h.detach().to(torch.float64), alpha=w)
    except InvalidParameterError:
        raise
    except Exception as error:  # torch.func cannot trace every model: HVP columns
        logger.debug("Hessian by Hessian-vector products: %s", error)
        hessian.zero_()
        for j in range(n_params):
            e = torch.zeros(n_params, dtype=flat0.dtype, device=flat0.device)
            e[j] = 1.0
            vector = list(_unflatten(e, names, params).values())
            column = hessian_vector_product(
                model, loss_fn, train, params, vector, output_key=output_key
            )
            hessian[:, j] = torch.cat([c.reshape(-1) for c in column]).to(torch.float64)
    return 0.5 * (hessian + hessian.T)


def _solve_exact(
    hessian: torch.Tensor, damping: float, rhs: torch.Tensor
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Return ``(H + damping I)^{-1} rhs^T`` (P, m) through the eigendecomposition."""
    a = hessian + damping * torch.eye(
        hessian.shape[0], dtype=hessian.dtype, device=hessian.device
    )
    evals, evecs = torch.linalg.eigh(a)
    lo, hi = float(evals[0]), float(evals[-1])
    info = {"min_eigenvalue": lo, "max_eigenvalue": hi}
    tol = (
        max(abs(lo), abs(hi), 1e-300) * hessian.shape[0] * torch.finfo(evals.dtype).eps
    )
    singular = evals.abs() <= tol
    if lo < -tol:
        warnings.warn(
            f"The damped Hessian of {OWNER} is not positive definite (smallest "
            f"eigenvalue {lo:.3g}): the model is not at a minimum of a convex "
            "objective, and the influence uses the inverse of an indefinite "
            f"matrix. Raise 'damping' above {-lo:.3g} to make it positive "
            "definite, as Koh & Liang do for non-convex models.",
            EstimationWarning,
            stacklevel=3,
        )
    if bool(singular.any()):
        warnings.warn(
            f"The damped Hessian of {OWNER} is singular ({int(singular.sum())} of "
            f"{evals.numel()} eigenvalues are 0 to working precision); those "
            "directions are left out (pseudo-inverse). Raise 'damping' (e.g. to "
            "2x the L2 coefficient of training) for a well-posed influence.",
            EstimationWarning,
            stacklevel=3,
        )
    inv = torch.where(singular, torch.zeros_like(evals), 1.0 / evals)
    rhs = rhs.to(device=a.device)
    solved = evecs @ (inv[:, None] * (evecs.T @ rhs.T))
    return solved, info


# ------------------------------------------------------------------ CG solve ---
def _solve_cg(
    model: nn.Module,
    loss_fn: LossFn,
    named: Sequence[Tuple[str, torch.Tensor]],
    train: Batches,
    output_key: OutputKey,
    damping: float,
    rhs: torch.Tensor,
    tol: float,
    max_iter: int,
) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Solve ``(H + damping I) s = g`` for every row ``g`` of ``rhs`` by CG."""
    names = [n for n, _ in named]
    params = [p for _, p in named]
    dtype = params[0].dtype

    def apply(v: torch.Tensor) -> torch.Tensor:
        parts = _unflatten(v.to(dtype), names, params)
        hv = hessian_vector_product(
            model, loss_fn, train, params, list(parts.values()), output_key=output_key
        )
        flat = torch.cat([h.reshape(-1) for h in hv]).to(torch.float64)
        return flat + damping * v

    columns: List[torch.Tensor] = []
    iterations: List[int] = []
    troubles: List[str] = []
    for j, g in enumerate(rhs):
        s, its, status = _conjugate_gradients(apply, g, tol, max_iter)
        columns.append(s)
        iterations.append(its)
        if status != "converged":
            troubles.append(f"test point {j}: {status} after {its} iterations")
    if troubles:
        warnings.warn(
            f"Conjugate gradients of {OWNER} did not converge for "
            f"{len(troubles)} of {rhs.shape[0]} test points ({troubles[0]}). "
            "Negative curvature means the damped Hessian is not positive "
            "definite: raise 'damping' (Koh & Liang use 0.01 for non-convex "
            "models) or use method='exact' to see its eigenvalues.",
            EstimationWarning,
            stacklevel=3,
        )
    return torch.stack(columns, dim=1), {"cg_iterations": iterations}


def _conjugate_gradients(
    apply: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float,
    max_iter: int,
) -> Tuple[torch.Tensor, int, str]:
    """Textbook CG for ``A x = b``, ``A`` symmetric positive definite.

    Returns the solution, the iterations done and ``"converged"``,
    ``"negative curvature"`` (stopped where ``p^T A p <= 0``) or ``"not
    converged"``.
    """
    x = torch.zeros_like(b)
    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0.0:
        return x, 0, "converged"
    r = b.clone()
    p = r.clone()
    rs = float(r @ r)
    for it in range(1, max_iter + 1):
        ap = apply(p)
        curvature = float(p @ ap)
        if not curvature > 0 or not math.isfinite(curvature):
            return x, it - 1, "negative curvature"
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(r @ r)
        if math.sqrt(rs_new) <= tol * b_norm:
            return x, it, "converged"
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x, max_iter, "not converged"


# --------------------------------------------------------------------- table ---
def _table(
    values: np.ndarray, top: Optional[int], attrs: Dict[str, Any]
) -> pd.DataFrame:
    """Long table from the ``(n_test, n_train)`` matrix of influences."""
    n_test, n_train = values.shape
    if top is None or 2 * top >= n_train:
        if top is None:
            test_idx = np.repeat(np.arange(n_test), n_train)
            train_idx = np.tile(np.arange(n_train), n_test)
        else:
            order = np.argsort(-values, axis=1, kind="stable")
            test_idx = np.repeat(np.arange(n_test), n_train)
            train_idx = order.reshape(-1)
    else:
        order = np.argsort(-values, axis=1, kind="stable")
        keep = np.concatenate([order[:, :top], order[:, -top:]], axis=1)
        test_idx = np.repeat(np.arange(n_test), 2 * top)
        train_idx = keep.reshape(-1)
    table = pd.DataFrame(
        {
            "test_index": test_idx.astype(np.int64),
            "train_index": train_idx.astype(np.int64),
            "influence": values[test_idx, train_idx].astype(np.float64),
        },
        columns=list(INFLUENCE_COLUMNS),
    )
    table.attrs.update(attrs)
    return table
