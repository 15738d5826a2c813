"""Saliency maps (Simonyan, Vedaldi & Zisserman 2014): input gradients of a score.

The saliency of an input is the gradient of one output score (the logit of
the target class) with respect to the input, one gradient per sample. For
float inputs Captum's :class:`captum.attr.Saliency` computes it (with
``abs=False``, so the sign is kept); for integer token ids, which have no
gradient, the gradient is taken at the output of the first embedding layer
(Captum's :class:`captum.attr.LayerGradientXActivation` with
``multiply_by_inputs=False``) and summed over the embedding dimension: one
value per token.
"""

from __future__ import annotations

import logging
from numbers import Integral
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from .._device import autocast_disabled, model_device, model_float_dtype
from .._imports import require
from .._state import preserve_state
from .._validation import as_tensor, check_param
from ..exceptions import InvalidParameterError
from ..measures._data import check_autograd
from ..recording import resolve_layers, unwrap_model
from ..structures import OutputKey, call_model, move, n_rows, select_output, slice_rows
from ._common import Leaves, check_int, leaves_of, prepare_structure

__all__ = ["EMBEDDING_REDUCE_OPTIONS", "saliency"]

logger = logging.getLogger(__name__)

OWNER = "saliency"
#: Options of ``embedding_reduce``.
EMBEDDING_REDUCE_OPTIONS = ("sum", "norm", None)


def saliency(
    model: nn.Module,
    x: Any,
    target: Any = None,
    *,
    output_key: OutputKey = None,
    embedding_layer: Optional[str] = None,
    embedding_reduce: Optional[str] = "sum",
    batch_size: int = 256,
) -> Any:
    """Return the gradient of each sample's target score with respect to its input.

    For a sample ``x_i`` and its target class ``c_i`` the saliency map is
    ``d S_{c_i}(x_i) / d x_i``, where ``S`` is the model's output (the class
    scores, before any softmax the model does not apply itself), computed in
    evaluation mode. Simonyan et al. take the absolute value (and the maximum
    over colour channels) to draw it; here the signed gradient is returned, so
    ``saliency(...).abs()`` gives their map.

    Parameters
    ----------
    model : nn.Module
        The model (DDP, ``DataParallel`` and ``torch.compile`` are unwrapped).
    x : Tensor, ndarray, tuple or list of tensors, or dict of tensors
        The inputs, batch first: ``model(x)``, ``model(*x)`` or
        ``model(**x)``. Moved to the model's device (floating tensors cast to
        its dtype, integer tensors kept).
    target : None, int, or sequence of int of length n_samples, default=None
        The class whose score is differentiated: one class for every sample,
        or one per sample. ``None`` takes each sample's predicted class (the
        argmax of its output), the choice of Simonyan et al.; a model with
        one output per sample (shape ``(n,)``) needs ``None``.
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns holds the scores (see
        :func:`ibmonitor.structures.select_output`).
    embedding_layer : str, optional
        For integer inputs (token ids): the module whose output gradient is
        returned. Default: the first ``nn.Embedding`` in
        ``model.named_modules()``.
    embedding_reduce : {"sum", "norm", None}, default="sum"
        How the gradient at an embedding output, of shape ``(*ids.shape,
        dim)``, becomes one value per token: its sum over ``dim`` (the
        gradient with respect to a shift of the embedding along the all-ones
        direction), its Euclidean norm over ``dim``, or ``None`` to keep it
        whole.
    batch_size : int, default=256
        Samples per forward/backward pass.

    Returns
    -------
    saliency : Tensor, or tuple/list/dict like ``x``
        Shaped like ``x`` (score units per input unit), on the device of
        ``x``, in the model's floating dtype. For a structured ``x`` the same
        structure: each floating tensor gets its gradient, the tensor of token
        ids fed to the embedding layer its per-token saliency, and any other
        integer tensor (an attention mask) ``None``.

    Raises
    ------
    InvalidParameterError
        A target out of range or of the wrong length; an output that is not
        ``(n,)`` or ``(n, n_classes)``; integer inputs and no embedding layer;
        bad ``batch_size`` or ``embedding_reduce``.
    ModuleNotFoundError
        Captum is not installed (``pip install ibmonitor[explain]``).
    RuntimeError
        Called inside ``torch.inference_mode()``.

    Notes
    -----
    The model is left as it was found: its modes (it is switched to eval mode
    for the pass), parameters and their ``.grad`` (only input gradients are
    computed, with :func:`torch.autograd.grad`), and the random-number
    generators. Autocast is disabled inside.

    The integer-input rule follows common practice for text models (the
    gradient at the embedding output, e.g. Captum's layer attributions): a
    token id has no gradient, its embedding vector does.

    References
    ----------
    K. Simonyan, A. Vedaldi and A. Zisserman, "Deep Inside Convolutional
    Networks: Visualising Image Classification Models and Saliency Maps",
    ICLR workshop, 2014.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> grads = saliency(model, x, target=1)
    >>> bool(torch.allclose(grads, model.weight[1].expand(4, 3)))
    True
    """
    check_int(batch_size, "batch_size", OWNER)
    check_param(
        embedding_reduce,
        "embedding_reduce",
        OWNER,
        kind="option",
        options=EMBEDDING_REDUCE_OPTIONS,
    )
    check_autograd(OWNER)
    attr = require("captum.attr", "ibmonitor.explain.saliency", "explain")
    model = unwrap_model(model)
    structure = prepare_structure(x, OWNER)
    n = n_rows(structure)
    targets = _check_targets(target, n)
    leaves = leaves_of(structure)
    int_keys = [
        k for k, v in zip(leaves.keys, leaves.values) if not torch.is_floating_point(v)
    ]
    float_keys = [k for k in leaves.keys if k not in int_keys]
    embedding = None
    if int_keys:
        embedding = _embedding_module(model, embedding_layer)
    device = model_device(model)
    dtype = model_float_dtype(model)
    parts: Dict[Any, List[Optional[torch.Tensor]]] = {k: [] for k in leaves.keys}
    with preserve_state(model), autocast_disabled(device), torch.enable_grad():
        model.eval()
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            batch = move(slice_rows(structure, rows), device, dtype)
            grads = _batch_saliency(
                attr,
                model,
                leaves_of(batch),
                float_keys,
                int_keys,
                embedding,
                None if targets is None else targets[start : start + batch_size],
                output_key,
                embedding_reduce,
            )
            for k in leaves.keys:
                parts[k].append(grads.get(k))
    out: List[Optional[torch.Tensor]] = []
    for k, original in zip(leaves.keys, leaves.values):
        chunks = parts[k]
        if any(c is None for c in chunks):
            out.append(None)
        else:
            out.append(torch.cat(chunks).to(original.device))
    return leaves.rebuild(out)


# ------------------------------------------------------------------ helpers ---
def _check_targets(target: Any, n: int) -> Optional[torch.Tensor]:
    """Return the targets as an int64 tensor of length n (CPU), or None."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise InvalidParameterError(
            "The 'target' parameter of saliency must be None, an int class index "
            f"or a sequence of n_samples ints. Got {target!r} instead."
        )
    if isinstance(target, Integral):
        return torch.full((n,), int(target), dtype=torch.int64)
    try:
        t = as_tensor(np.asarray(target) if isinstance(target, list) else target)
    except (TypeError, ValueError, InvalidParameterError):
        t = None
    if t is None or t.ndim > 1 or torch.is_complex(t):
        raise InvalidParameterError(
            "The 'target' parameter of saliency must be None, an int class index "
            f"or a sequence of n_samples ints. Got {type(target).__name__} instead."
        )
    if t.ndim == 0:
        t = t.reshape(1).expand(n)
    if t.shape[0] != n:
        raise InvalidParameterError(
            f"The 'target' parameter of saliency has {t.shape[0]} entries; x has "
            f"{n} samples. Give one class per sample, or one int for all."
        )
    if torch.is_floating_point(t) and not bool(torch.all(t == torch.round(t))):
        raise InvalidParameterError(
            "The 'target' parameter of saliency must hold integer class indices. "
            "Got non-integer values."
        )
    return t.detach().cpu().to(torch.int64)


def _embedding_module(model: nn.Module, name: Optional[str]) -> nn.Module:
    if name is not None:
        found = resolve_layers(model, [name])
        return next(iter(found.values()))
    for _, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            return module
    raise InvalidParameterError(
        "x holds integer tensors (token ids?), which have no gradient, and the "
        "model has no nn.Embedding module; pass the 'embedding_layer' parameter "
        "of saliency (the module whose output gradient to return), or give "
        "floating inputs."
    )


def _batch_targets(
    output: torch.Tensor, targets: Optional[torch.Tensor]
) -> Optional[torch.Tensor]:
    """Return the per-sample class of this batch (argmax when not given)."""
    if output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1):
        if targets is not None and bool((targets != 0).any()):
            raise InvalidParameterError(
                "The model returns one score per sample (output of shape "
                f"{tuple(output.shape)}); the 'target' parameter of saliency must "
                "be None (or 0)."
            )
        return (
            None
            if output.ndim == 1
            else torch.zeros(output.shape[0], dtype=torch.int64, device=output.device)
        )
    if output.ndim != 2:
        raise InvalidParameterError(
            "saliency needs outputs of shape (n,) or (n, n_classes); the model "
            f"returned shape {tuple(output.shape)}. Pick the scores with "
            "'output_key' or wrap the model to return (n, n_classes)."
        )
    n_classes = output.shape[1]
    if targets is None:
        return output.argmax(dim=1)
    targets = targets.to(output.device)
    bad = (targets < 0) | (targets >= n_classes)
    if bool(bad.any()):
        value = int(targets[bad][0])
        raise InvalidParameterError(
            f"The 'target' parameter of saliency holds class {value}; the model "
            f"has {n_classes} outputs (classes 0 to {n_classes - 1})."
        )
    return targets


def _batch_saliency(
    attr: Any,
    model: nn.Module,
    batch: Leaves,
    float_keys: List[Any],
    int_keys: List[Any],
    embedding: Optional[nn.Module],
    targets: Optional[torch.Tensor],
    output_key: OutputKey,
    embedding_reduce: Optional[str],
) -> Dict[Any, Optional[torch.Tensor]]:
    """Saliency of one batch: {leaf key: gradient or None}."""
    order = float_keys + int_keys
    by_key = dict(zip(batch.keys, batch.values))
    float_leaves = tuple(by_key[k].detach().requires_grad_(True) for k in float_keys)
    int_leaves = tuple(by_key[k] for k in int_keys)

    def forward(*values: torch.Tensor) -> torch.Tensor:
        inputs = batch.rebuild(list(values), order)
        return select_output(call_model(model, inputs), output_key, owner=OWNER)

    with torch.no_grad():
        output = forward(*float_leaves, *int_leaves)
    target = _batch_targets(output, targets)
    result: Dict[Any, Optional[torch.Tensor]] = {}
    if float_keys:
        grads = attr.Saliency(forward).attribute(
            float_leaves,
            target=target,
            abs=False,
            additional_forward_args=int_leaves if int_leaves else None,
        )
        result.update({k: g.detach() for k, g in zip(float_keys, grads)})
    if int_keys:
        assert embedding is not None
        result.update(
            _embedding_saliency(
                attr,
                forward,
                embedding,
                float_leaves + int_leaves,
                int_keys,
                int_leaves,
                target,
                embedding_reduce,
            )
        )
    return result


def _embedding_saliency(
    attr: Any,
    forward: Any,
    embedding: nn.Module,
    inputs: tuple,
    int_keys: List[Any],
    int_leaves: tuple,
    target: Optional[torch.Tensor],
    embedding_reduce: Optional[str],
) -> Dict[Any, Optional[torch.Tensor]]:
    """Gradient at the embedding output, reduced per token, for the ids leaf."""
    seen: List[torch.Tensor] = []

    def pre_hook(module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.append(args[0])

    handle = embedding.register_forward_pre_hook(pre_hook)
    try:
        method = attr.LayerGradientXActivation(
            forward, embedding, multiply_by_inputs=False
        )
        grad = method.attribute(inputs, target=target)
    finally:
        handle.remove()
    if isinstance(grad, (tuple, list)):
        grad = grad[0]
    grad = grad.detach()
    key = _ids_key(seen, int_keys, int_leaves)
    if embedding_reduce == "sum":
        grad = grad.sum(dim=-1)
    elif embedding_reduce == "norm":
        grad = torch.linalg.vector_norm(grad, dim=-1)
    result: Dict[Any, Optional[torch.Tensor]] = dict.fromkeys(int_keys)
    result[key] = grad
    return result


def _ids_key(
    seen: List[torch.Tensor], int_keys: List[Any], int_leaves: tuple
) -> Union[int, str, Any]:
    """Which integer input was fed to the embedding layer."""
    if len(int_keys) == 1:
        return int_keys[0]
    for fed in seen:
        for key, leaf in zip(int_keys, int_leaves):
            if fed is leaf or (
                fed.shape == leaf.shape
                and fed.data_ptr() == leaf.data_ptr()
                and fed.dtype == leaf.dtype
            ):
                return key
    shapes = [
        k
        for k, leaf in zip(int_keys, int_leaves)
        if seen and leaf.shape == seen[0].shape
    ]
    if len(shapes) == 1:
        return shapes[0]
    raise InvalidParameterError(
        "saliency cannot tell which integer input of x feeds the embedding layer "
        f"(integer inputs: {int_keys}). Pass only the token ids as integers, or "
        "name the module with 'embedding_layer'."
    )
