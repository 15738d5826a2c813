"""Data handling shared by the measures: batches on the model's device, losses.

``data`` is either a pair ``(inputs, targets)``, cut here into batches of
``batch_size``, or any iterable of batches (a
:class:`torch.utils.data.DataLoader`). The inputs may be a tensor or array, a
tuple or list of tensors (``model(*inputs)``) or a dict of tensors
(``model(**inputs)``). A batch is a tuple whose last element is the targets
(``(x, y)``, ``(ids, mask, y)``) or a dict whose value under ``label_key``
(default ``"labels"``, else ``"label"``) is. Every batch is moved to the
model's device; floating inputs and targets are cast to the model's floating
dtype (integer token ids keep theirs). The model's output is picked from
whatever it returns with ``output_key`` (see
:func:`ibmonitor.structures.select_output`).

The module also keeps operation counters (Hessian-vector products, gradient
evaluations, forward passes over a batch) that the benchmark reads through
:func:`counting`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np
import torch
from torch import nn

from .._batches import check_label_key, label_key_phrase, split_batch, to_structure
from .._device import model_device, model_dtype
from .._state import preserved_rng
from .._validation import as_tensor, check_consistent_samples, check_param
from ..exceptions import InvalidParameterError
from ..structures import (
    OutputKey,
    call_model,
    describe_structure,
    move,
    n_rows,
    select_output,
    slice_rows,
)

__all__ = [
    "Batches",
    "OperationCounts",
    "batch_accuracy",
    "check_autograd",
    "counting",
    "evaluate",
    "iter_batches",
    "load_batches",
    "loss_and_grad",
    "mean_loss",
    "model_output",
    "parameter_groups",
    "trainable_parameters",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------- counters ---
@dataclass
class OperationCounts:
    """Operations done by the measures since the counter started.

    Attributes
    ----------
    hvp : int
        Hessian-vector products, each over all the batches a measure uses.
    grad : int
        Gradient evaluations of the loss, each over all the batches used.
    forward : int
        Forward passes of one batch (a full pass over ``b`` batches counts ``b``).
    """

    hvp: int = 0
    grad: int = 0
    forward: int = 0


_COUNTS = OperationCounts()


@contextlib.contextmanager
def counting() -> Iterator[OperationCounts]:
    """Count the operations done inside the block.

    Yields an :class:`OperationCounts` that holds the counts when the block
    ends (it is filled in on exit).

    Examples
    --------
    >>> with counting() as counts:  # doctest: +SKIP
    ...     hessian_eigenvalues(model, loss_fn, data)
    >>> counts.hvp  # doctest: +SKIP
    23
    """
    start = OperationCounts(_COUNTS.hvp, _COUNTS.grad, _COUNTS.forward)
    result = OperationCounts()
    try:
        yield result
    finally:
        result.hvp = _COUNTS.hvp - start.hvp
        result.grad = _COUNTS.grad - start.grad
        result.forward = _COUNTS.forward - start.forward


def _count(kind: str, n: int = 1) -> None:
    setattr(_COUNTS, kind, getattr(_COUNTS, kind) + n)


# ------------------------------------------------------------------- model ---
def trainable_parameters(
    model: nn.Module, params: Any = None, *, owner: str = "measure"
) -> List[Tuple[str, nn.Parameter]]:
    """Return ``(name, parameter)`` pairs selected by ``params``.

    Parameters
    ----------
    model : Module
    params : None, str or sequence of str or Parameter
        ``None``: every parameter that requires grad. Strings name parameters
        (``"fc1.weight"``) or modules (``"fc1"``: all of its parameters).
    owner : str
        Function name used in error messages.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        if not named:
            raise InvalidParameterError(
                f"The model passed to {owner} has no parameters that require grad."
            )
        return named
    if isinstance(params, (str, nn.Parameter, torch.Tensor)):
        params = [params]
    by_name = dict(named)
    by_id = {id(p): n for n, p in named}
    modules = dict(model.named_modules())
    chosen: dict = {}
    for item in params:
        if isinstance(item, str):
            if item in by_name:
                chosen[item] = by_name[item]
            elif item in modules:
                found = [
                    (f"{item}.{n}" if item else n, p)
                    for n, p in modules[item].named_parameters()
                    if p.requires_grad
                ]
                if not found:
                    raise InvalidParameterError(
                        f"Module {item!r} has no parameters that require grad "
                        f"(the 'params' parameter of {owner})."
                    )
                chosen.update(found)
            else:
                avail = list(by_name)[:20]
                raise InvalidParameterError(
                    f"Unknown parameter or module {item!r} in the 'params' parameter "
                    f"of {owner}. Available parameters: {avail}."
                )
        elif isinstance(item, torch.Tensor):
            if id(item) not in by_id:
                raise InvalidParameterError(
                    f"A tensor in the 'params' parameter of {owner} is not a "
                    "parameter of the model that requires grad."
                )
            chosen[by_id[id(item)]] = item
        else:
            raise InvalidParameterError(
                f"The 'params' parameter of {owner} must hold parameter or module "
                f"names or Parameters. Got {type(item).__name__} instead."
            )
    if not chosen:
        raise InvalidParameterError(f"The 'params' parameter of {owner} is empty.")
    return list(chosen.items())


def parameter_groups(
    model: nn.Module, named: Sequence[Tuple[str, torch.Tensor]]
) -> Dict[str, List[Tuple[str, torch.Tensor]]]:
    """Group ``named`` parameters by the module that owns them directly.

    The group of a parameter ``"block.fc1.weight"`` is ``"block.fc1"``; parameters
    of the root module form the group ``"root"``. Groups keep model order.
    """
    groups: Dict[str, List[Tuple[str, torch.Tensor]]] = {}
    for name, p in named:
        layer = name.rpartition(".")[0] or "root"
        groups.setdefault(layer, []).append((name, p))
    return groups


# -------------------------------------------------------------------- data ---
def _to_device(t: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = as_tensor(t, name="data")
    if torch.is_complex(t):
        raise InvalidParameterError(
            f"The data hold a complex tensor (dtype {t.dtype}, shape "
            f"{tuple(t.shape)}); expected real inputs and targets. Casting to the "
            "model's dtype would drop the imaginary part; pass real and "
            "imaginary parts as separate features."
        )
    if torch.is_floating_point(t) and t.dtype != dtype:
        t = t.to(dtype)
    return t.to(device, non_blocking=True)


def _refuse_complex(x: Any, owner: str) -> Any:
    """Return ``x``; raise when a tensor in it is complex (casting drops it)."""
    if isinstance(x, torch.Tensor):
        if torch.is_complex(x):
            raise InvalidParameterError(
                f"The data passed to {owner} hold a complex tensor (dtype "
                f"{x.dtype}, shape {tuple(x.shape)}); expected real inputs. Pass "
                "the real and imaginary parts as separate features."
            )
    elif isinstance(x, Mapping):
        for v in x.values():
            _refuse_complex(v, owner)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _refuse_complex(v, owner)
    return x


def _data_error(owner: str, data: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"The 'data' parameter of {owner} must be a pair (inputs, targets), "
        "inputs a tensor or array, a tuple of tensors (model(*inputs)) or a dict "
        "of tensors (model(**inputs)), or an iterable of batches such as a "
        "DataLoader yielding (inputs..., targets) tuples or dicts with a labels "
        f"key. Got {type(data).__name__} instead."
    )


def _holds_tensors(obj: Any) -> bool:
    """Whether ``obj`` is or holds a tensor, an array or a mapping."""
    if isinstance(obj, (torch.Tensor, np.ndarray, Mapping)):
        return True
    if isinstance(obj, (tuple, list)):
        return any(_holds_tensors(v) for v in obj)
    return False


def _is_pair(data: Any) -> bool:
    """Whether ``data`` is one ``(inputs, targets)`` pair, not a list of batches."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    targets = data[1]
    return not isinstance(targets, Mapping) and not (
        isinstance(targets, (tuple, list)) and _holds_tensors(targets)
    )


def _pair_inputs(x: Any, owner: str) -> Any:
    if isinstance(x, (tuple, list, Mapping)) and _holds_tensors(x):
        return to_structure(x, what=f"The inputs of the 'data' parameter of {owner}")
    return as_tensor(x, name="inputs")


def check_autograd(owner: str) -> None:
    """Raise a clear error where gradients cannot be computed.

    Inside :func:`torch.inference_mode` autograd is off and
    :func:`torch.enable_grad` cannot turn it on; under :func:`torch.no_grad`
    the measures turn gradients on themselves, so that is fine.

    Raises
    ------
    RuntimeError
        Called inside ``torch.inference_mode()``; the message names ``owner``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{owner} needs gradients of the loss, but it was called inside "
            "torch.inference_mode(), where autograd is off and cannot be turned "
            f"back on. Call {owner} outside the inference_mode block "
            "(torch.no_grad() is fine: the measure enables gradients itself)."
        )


def iter_batches(
    data: Any,
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    owner: str = "measure",
    label_key: Optional[str] = None,
) -> Iterator[Tuple[Any, torch.Tensor]]:
    """Yield ``(inputs, targets)`` batches on ``device``.

    Parameters
    ----------
    data : tuple (inputs, targets) or iterable of batches
        A pair ``(inputs, targets)``: ``inputs`` a tensor or array, a tuple or
        list of tensors (``model(*inputs)``) or a dict of tensors
        (``model(**inputs)``), cut here into batches of ``batch_size``. Or an
        iterable of batches (a DataLoader), each a tuple whose **last**
        element is the targets (``(x, y)``, ``(x1, x2, y)``) or a dict whose
        value under ``label_key`` is (removed from the inputs).
    device : torch.device
    dtype : torch.dtype
        Floating tensors are cast to this dtype (integer ones, such as token
        ids, keep theirs).
    batch_size : int, default=1024
        Used only for a pair.
    max_batches : int, optional
        Stop after this many batches.
    owner : str
        Function name used in error messages.
    label_key : str, optional
        Key of the targets in dict batches; default ``"labels"``, else
        ``"label"``.

    Yields
    ------
    inputs : Tensor, tuple or list of Tensor, or dict of str to Tensor
    targets : Tensor
    """
    check_label_key(label_key, owner)
    if _is_pair(data):
        x, y = data
        if not hasattr(x, "__len__") or not hasattr(y, "__len__"):
            raise _data_error(owner, data)
        x = _pair_inputs(x, owner)
        y = as_tensor(y, name="targets")
        n = n_rows(x)
        check_consistent_samples(inputs=n, targets=y.shape[0])
        n_batches = math.ceil(n / batch_size)
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        for b in range(n_batches):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            yield (
                move(_refuse_complex(slice_rows(x, sl), owner), device, dtype),
                _to_device(y[sl], device, dtype),
            )
        return
    if isinstance(data, (str, bytes, torch.Tensor, np.ndarray, Mapping)) or not (
        hasattr(data, "__iter__")
    ):
        raise _data_error(owner, data)
    for b, batch in enumerate(data):
        if max_batches is not None and b >= max_batches:
            break
        x, y = split_batch(batch, label_key=label_key)
        if y is None:
            raise InvalidParameterError(
                f"Each batch of the 'data' parameter of {owner} must hold the "
                "targets: a tuple (inputs..., targets) with the targets last, or a "
                f"dict with the key {label_key_phrase(label_key)} (set "
                f"'label_key' for another key). Got {describe_structure(batch)} "
                "instead."
            )
        x = to_structure(x, what=f"The inputs in batch {b} of the data of {owner}")
        yield (
            move(_refuse_complex(x, owner), device, dtype),
            _to_device(y, device, dtype),
        )


@dataclass
class Batches:
    """Batches held on the model's device, so repeated passes see the same data.

    Attributes
    ----------
    batches : list of (inputs, Tensor)
        Inputs of any structure (tensor, tuple, dict) and targets.
    n_samples : int
        Total number of samples over the batches.
    """

    batches: List[Tuple[Any, torch.Tensor]]
    n_samples: int

    def weights(self) -> List[float]:
        """Return each batch's share of the samples (they sum to 1)."""
        return [n_rows(x) / self.n_samples for x, _ in self.batches]


def load_batches(
    data: Any,
    model: nn.Module,
    *,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    owner: str = "measure",
    label_key: Optional[str] = None,
) -> Batches:
    """Read ``data`` once into :class:`Batches` on the model's device.

    Raises
    ------
    InvalidParameterError
        When ``data`` is malformed or holds no samples.
    """
    check_param(batch_size, "batch_size", owner, kind="int", low=1)
    if max_batches is not None:
        check_param(max_batches, "max_batches", owner, kind="int", low=1)
    with preserved_rng():  # a shuffling DataLoader draws from the global RNG
        batches = list(
            iter_batches(
                data,
                device=model_device(model),
                dtype=model_dtype(model),
                batch_size=batch_size,
                max_batches=max_batches,
                owner=owner,
                label_key=label_key,
            )
        )
    n = sum(n_rows(x) for x, _ in batches)
    if n == 0:
        raise InvalidParameterError(
            f"The 'data' parameter of {owner} holds 0 samples; at least 1 is required."
        )
    return Batches(batches, n)


# ------------------------------------------------------------------ losses ---
def batch_accuracy(output: torch.Tensor, target: torch.Tensor) -> Optional[int]:
    """Return the number of correct predictions, or ``None`` when undefined.

    Outputs of shape (n, C) with C >= 2 are read as class scores (argmax);
    outputs of shape (n,) or (n, 1) as the logit of class 1 (threshold 0).
    Targets are integer (or bool) class labels, or one-hot / probability rows of
    the output's shape (non-negative, summing to 1; argmax). Any other
    combination (regression), or an output holding NaN, gives None.
    """
    if output.ndim == 0:
        return None
    if torch.is_floating_point(output) and bool(torch.isnan(output).any()):
        return None  # NaN outputs (diverged weights) predict nothing
    if output.ndim == 2 and output.shape[1] >= 2:
        pred = output.argmax(dim=1)
        if target.shape == output.shape and torch.is_floating_point(target):
            # One-hot or probability rows only; other float targets are regression.
            sums = target.sum(dim=1)
            if bool((target < 0).any()) or not bool(
                torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
            ):
                return None
            labels = target.argmax(dim=1)
        elif target.ndim == 1 and not torch.is_floating_point(target):
            labels = target
        else:
            return None
        return int((pred == labels).sum())
    if output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1):
        if torch.is_floating_point(target) or target.numel() != output.shape[0]:
            return None
        pred = (output.reshape(-1) > 0).to(torch.int64)
        return int((pred == target.reshape(-1).to(torch.int64)).sum())
    return None


def _check_loss(loss: torch.Tensor) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InvalidParameterError(
            "loss_fn(output, target) must return a scalar tensor (the mean loss "
            "over the batch, reduction='mean'). Got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}."
        )
    return loss.reshape(())


def model_output(
    model: nn.Module, x: Any, output_key: OutputKey = None, *, owner: str = "measure"
) -> torch.Tensor:
    """Call the model on inputs of any structure; return its output tensor.

    ``model(x)``, ``model(*x)`` or ``model(**x)`` by the structure of ``x``
    (see :func:`ibmonitor.structures.call_model`), then
    :func:`ibmonitor.structures.select_output` with ``output_key`` (a tensor
    as is; ``logits`` of a dict or Hugging Face ``ModelOutput``; else the
    element ``output_key`` names).

    Raises
    ------
    InvalidParameterError
        The output is not a tensor and ``output_key`` does not pick one; the
        message names ``owner``.
    """
    return select_output(call_model(model, x), output_key, owner=owner)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Any,
    *,
    output_key: OutputKey = None,
    owner: str = "measure",
) -> Tuple[float, float, int]:
    """Return (mean loss, accuracy, n_samples) over an iterable of batches.

    The loss is the sample-weighted mean of ``loss_fn`` over batches (so
    ``loss_fn`` must average over its batch); accuracy is NaN where
    :func:`batch_accuracy` gives None for some batch. ``output_key`` picks
    the output tensor (see :func:`model_output`).
    """
    total, correct, n = 0.0, 0, 0
    acc_defined = True
    for x, y in batches:
        out = model_output(model, x, output_key, owner=owner)
        _count("forward")
        nb = n_rows(x)
        total += float(_check_loss(loss_fn(out, y))) * nb
        c = batch_accuracy(out, y) if acc_defined else None
        if c is None:
            acc_defined = False
        else:
            correct += c
        n += nb
    if n == 0:
        return math.nan, math.nan, 0
    return total / n, (correct / n if acc_defined else math.nan), n


def mean_loss(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    output_key: OutputKey = None,
    owner: str = "measure",
) -> float:
    """Return the training loss averaged over ``batches`` (no gradient)."""
    return evaluate(
        model, loss_fn, batches.batches, output_key=output_key, owner=owner
    )[0]


def loss_and_grad(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    params: Sequence[torch.Tensor],
    *,
    output_key: OutputKey = None,
    owner: str = "measure",
) -> Tuple[float, List[torch.Tensor]]:
    """Return the mean loss over ``batches`` and its gradient w.r.t. ``params``.

    Gradients are accumulated batch by batch (``torch.autograd.grad``), so the
    parameters' ``.grad`` stay untouched and one batch's graph is alive at a time.

    Raises
    ------
    RuntimeError
        Inside ``torch.inference_mode()`` (see :func:`check_autograd`).
    """
    check_autograd(owner)
    total = 0.0
    grads = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for (x, y), w in zip(batches.batches, batches.weights()):
            out = model_output(model, x, output_key, owner=owner)
            loss = _check_loss(loss_fn(out, y)) * w
            _count("forward")
            gs = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(grads, gs):
                if g is not None:
                    acc.add_(g)
            total += float(loss.detach())
    _count("grad")
    return total, grads
