"""Norm-based capacity measures: Frobenius, spectral, distance to init, path norm.

A *layer* here is a module that owns a ``weight`` parameter with at least two
dimensions (Linear, Conv, Embedding, ...). Norms are those of the weight tensor;
biases and one-dimensional parameters (batch-norm scales) are left out of the
per-layer norms, as in Jiang et al. (2019), but counted in ``n_params``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._device import autocast_disabled, model_device, model_dtype
from .._state import preserve_state, preserved_rng
from .._validation import as_tensor, check_param
from ..exceptions import InvalidParameterError
from ..structures import OutputKey, select_output
from ._data import iter_batches
from .registry import MeasureContext, register_measure

__all__ = ["NORM_COLUMNS", "conv_operator_norm", "norms", "path_norm", "spectral_norm"]

logger = logging.getLogger(__name__)

#: Columns of the frame :func:`norms` returns.
NORM_COLUMNS = (
    "layer",
    "module",
    "n_params",
    "frobenius",
    "spectral",
    "spectral_fft",
    "distance_to_init",
    "log_spectral_sum",
    "path",
)

Size = Union[int, Tuple[int, ...]]


def spectral_norm(
    matrix: torch.Tensor, *, n_iter: int = 100, tol: float = 1e-6, seed: int = 0
) -> float:
    """Return the largest singular value of a matrix by power iteration.

    Iterates ``v <- M^T M v / ||M^T M v||`` from a seeded random start until the
    estimate ``||M v||`` changes by less than ``tol`` relatively, at most
    ``n_iter`` times. Tensors with more than two dimensions are reshaped to
    ``(shape[0], -1)`` (a conv kernel becomes out_channels x (in_channels *
    kernel size)).
    """
    mat = matrix.detach()
    if mat.ndim != 2:
        mat = mat.reshape(mat.shape[0], -1)
    mat = mat.to(torch.float64) if mat.dtype in (torch.float16, torch.bfloat16) else mat
    gen = torch.Generator(device=mat.device)
    gen.manual_seed(int(seed))
    v = torch.randn(mat.shape[1], generator=gen, device=mat.device, dtype=mat.dtype)
    v = v / v.norm()
    est = 0.0
    for _ in range(n_iter):
        u = mat @ v
        new = float(u.norm())
        if new == 0.0:
            return 0.0
        v = mat.T @ (u / new)
        v = v / v.norm()
        if abs(new - est) <= tol * new:
            est = new
            break
        est = new
    return float((mat @ v).norm())


def conv_operator_norm(
    weight: torch.Tensor,
    input_size: Sequence[int],
    *,
    groups: int = 1,
    dilation: Union[int, Sequence[int]] = 1,
) -> float:
    """Return the exact operator norm of a stride-1 circular convolution.

    Sedghi et al. (2019): the convolution's matrix is block-circulant, so its
    singular values are those of the ``(out, in)`` matrices ``K_hat(f)``, the
    kernel's discrete Fourier transform at each frequency ``f`` of an input of
    ``input_size``; the norm is the largest of them.

    Parameters
    ----------
    weight : Tensor of shape (out_channels, in_channels / groups, *kernel_size)
    input_size : sequence of int
        Spatial size of the layer's input (one number per kernel dimension); at
        least the (dilated) kernel size.
    groups : int, default=1
        The operator is block diagonal over groups; the norm is the largest.
    dilation : int or sequence of int, default=1

    Notes
    -----
    Exact for circular padding and stride 1; for zero padding it is the norm of
    the circular operator of the same kernel (usually close, and an upper bound
    on the "same"-padded one for large inputs).
    """
    k = weight.detach().to(torch.float64)
    nd = k.ndim - 2
    size = tuple(int(s) for s in input_size)
    if len(size) != nd:
        raise InvalidParameterError(
            f"conv_operator_norm needs one input size per kernel dimension ({nd}). "
            f"Got {size} instead."
        )
    dil = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if any(d != 1 for d in dil):
        shape = list(k.shape[:2]) + [(s - 1) * d + 1 for s, d in zip(k.shape[2:], dil)]
        dilated = k.new_zeros(shape)
        index = (slice(None), slice(None), *(slice(None, None, d) for d in dil))
        dilated[index] = k
        k = dilated
    if any(ks > s for ks, s in zip(k.shape[2:], size)):
        raise InvalidParameterError(
            f"Input size {size} is smaller than the kernel {tuple(k.shape[2:])}."
        )
    out_ch = k.shape[0]
    best = 0.0
    for g in range(groups):
        block = k[g * out_ch // groups : (g + 1) * out_ch // groups]
        spectrum = torch.fft.fftn(block, s=size, dim=tuple(range(2, 2 + nd)))
        mats = spectrum.permute(*range(2, 2 + nd), 0, 1)  # (*freq, out, in)
        best = max(best, float(torch.linalg.svdvals(mats).max()))
    return best


def _layers(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """Return (display name, module, state-dict key of its weight) per layer."""
    out = []
    for name, module in model.named_modules():
        w = module._parameters.get("weight")
        if isinstance(w, torch.Tensor) and w.ndim >= 2:
            out.append((name or "root", module, f"{name}.weight" if name else "weight"))
    return out


def _state(init: Any, owner: str) -> Optional[Mapping[str, torch.Tensor]]:
    if init is None:
        return None
    if isinstance(init, nn.Module):
        return init.state_dict()
    if not isinstance(init, Mapping):
        raise InvalidParameterError(
            f"The 'init' parameter of {owner} must be a state dict (name -> tensor) "
            f"or a Module. Got {type(init).__name__} instead."
        )
    return init


def _conv_input_sizes(
    model: nn.Module, example_input: torch.Tensor
) -> Dict[str, Tuple[int, ...]]:
    """Record the spatial input size of every conv layer on one example."""
    sizes: Dict[str, Tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):

            def hook(mod, inputs, output, name=name):
                sizes[name or "root"] = tuple(inputs[0].shape[2:])

            handles.append(module.register_forward_hook(hook))
    try:
        with (
            preserve_state(model, parameters=True),
            autocast_disabled(model_device(model)),
            torch.no_grad(),
        ):
            model.eval()
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return sizes


def path_norm(
    model: nn.Module, input_shape: Sequence[int], *, output_key: OutputKey = None
) -> float:
    """Return Neyshabur et al.'s (squared) l2 path norm, by a forward pass.

    A copy of the model, with every parameter squared and in eval mode, is fed
    one all-ones input of shape ``(1, *input_shape)``; the value is the absolute
    sum of the output. For a network of linear layers and ReLUs this is the sum
    over all input-output paths of the product of squared weights (biases count
    as paths from a constant unit). Other nonlinearities and batch-norm (which
    keeps its running statistics) make it a heuristic, as in the public code of
    Jiang et al. The original model is never modified. ``output_key`` picks
    the output from what the model returns (see
    :func:`ibmonitor.structures.select_output`).
    """
    device, dtype = model_device(model), model_dtype(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.grad = None
            p.pow_(2)
        twin.eval()
        out = twin(torch.ones((1, *input_shape), device=device, dtype=dtype))
        out = select_output(out, output_key, owner="path_norm")
    return float(out.sum().abs())


def norms(
    model: nn.Module,
    init: Union[Mapping[str, torch.Tensor], nn.Module, None] = None,
    *,
    input_shape: Optional[Sequence[int]] = None,
    example_input: Any = None,
    exact_conv: bool = False,
    conv_input_sizes: Union[Sequence[int], Mapping[str, Sequence[int]], None] = None,
    n_iter: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
    output_key: OutputKey = None,
) -> pd.DataFrame:
    """Return per-layer and total norms of the model's weights.

    Parameters
    ----------
    model : Module
    init : dict or Module, optional
        The initial parameters (a copy of ``model.state_dict()`` taken at
        initialization) for the distance to initialization.
    input_shape : sequence of int, optional
        Shape of one input (without the batch dimension), for the path norm.
    example_input : array or Tensor, optional
        One batch of inputs: gives ``input_shape`` when it is not given and, with
        ``exact_conv``, the input size of every conv layer.
    exact_conv : bool, default=False
        Also compute the exact operator norm of stride-1 conv layers by FFT
        (:func:`conv_operator_norm`), column ``spectral_fft``; needs
        ``conv_input_sizes`` or ``example_input``.
    conv_input_sizes : sequence of int or dict, optional
        Spatial input size of all conv layers, or ``{layer: size}``; implies
        ``exact_conv``.
    n_iter : int, default=100
        Power iterations for the spectral norms.
    tol : float, default=1e-6
        Relative tolerance of the power iteration.
    seed : int, default=0
        Seed of the power iteration's start vectors.
    output_key : None, int or str, default=None
        Which element of the model's output is the output, for the path norm
        (see :func:`ibmonitor.structures.select_output`).

    Returns
    -------
    frame : pandas.DataFrame
        Columns ``layer, module, n_params, frobenius, spectral, spectral_fft,
        distance_to_init, log_spectral_sum, path``. One row per layer (in model
        order): ``n_params`` of the module's own parameters, the Frobenius and
        spectral norm of its weight (a conv kernel reshaped to
        ``(out, in * kernel)``), ``spectral_fft`` (exact conv operator norm, NaN
        elsewhere), the Frobenius norm of ``weight - weight_init``. Then a row
        ``layer="total"``: ``n_params`` of the whole model, the Frobenius norm
        and distance to init over all layer weights together (root of the sum of
        squares), ``log_spectral_sum`` = sum of the layers' log spectral norms
        (the log of their product), and ``path`` (:func:`path_norm`; NaN without
        an input shape). Missing values are NaN.

    Notes
    -----
    Cost: a few power iterations per layer, one SVD per frequency for the FFT
    option, one forward pass of one input for the path norm; no data pass.
    Cheap compared with any training epoch.

    References
    ----------
    Neyshabur, Tomioka & Srebro, "Norm-based capacity control in neural
    networks", COLT (2015). Neyshabur et al., "Exploring generalization in deep
    learning", NeurIPS (2017). Sedghi, Gupta & Long, "The singular values of
    convolutional layers", ICLR (2019). Jiang et al., "Fantastic generalization
    measures and where to find them", ICLR (2020).

    Examples
    --------
    >>> import torch
    >>> frame = norms(torch.nn.Sequential(torch.nn.Linear(3, 2)), input_shape=(3,))
    >>> list(frame["layer"])
    ['0', 'total']
    """
    owner = "norms"
    check_param(n_iter, "n_iter", owner, kind="int", low=1)
    check_param(tol, "tol", owner, low=0.0)
    check_param(seed, "seed", owner, kind="int", low=0)
    state = _state(init, owner)
    device = model_device(model)
    if example_input is not None:
        example_input = as_tensor(example_input, name="example_input")
        if torch.is_floating_point(example_input):
            example_input = example_input.to(model_dtype(model))
        example_input = example_input.to(device)[:1]
        if input_shape is None:
            input_shape = tuple(example_input.shape[1:])
    sizes: Dict[str, Tuple[int, ...]] = {}
    layers = _layers(model)
    if conv_input_sizes is not None:
        exact_conv = True
        if isinstance(conv_input_sizes, Mapping):
            sizes = {k: tuple(v) for k, v in conv_input_sizes.items()}
        else:
            fixed = tuple(int(s) for s in conv_input_sizes)
            sizes = {
                n: fixed for n, m, _ in layers if isinstance(m, nn.modules.conv._ConvNd)
            }
    elif exact_conv:
        if example_input is None:
            raise InvalidParameterError(
                "norms with exact_conv=True needs conv_input_sizes or example_input "
                "to know each conv layer's input size."
            )
        sizes = _conv_input_sizes(model, example_input)

    rows = []
    fro2 = dist2 = 0.0
    log_spec = 0.0
    have_dist = state is not None
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        for i, (name, module, key) in enumerate(layers):
            w = module.weight.detach()
            n_params = sum(
                p.numel() for p in module._parameters.values() if p is not None
            )
            fro = float(w.double().norm())
            spec = spectral_norm(w, n_iter=n_iter, tol=tol, seed=seed + i)
            fft = math.nan
            if (
                exact_conv
                and isinstance(module, nn.modules.conv._ConvNd)
                and name in sizes
                and all(s == 1 for s in module.stride)
            ):
                size = tuple(sizes[name])[-(w.ndim - 2) :]
                fft = conv_operator_norm(
                    w, size, groups=module.groups, dilation=module.dilation
                )
            dist = math.nan
            if state is not None:
                if key not in state:
                    raise InvalidParameterError(
                        f"The 'init' state dict passed to norms lacks {key!r}; pass "
                        "a copy of model.state_dict() taken at initialization."
                    )
                w0 = torch.as_tensor(state[key])
                if tuple(w0.shape) != tuple(w.shape):
                    raise InvalidParameterError(
                        f"The 'init' state dict passed to norms has {key!r} of "
                        f"shape {tuple(w0.shape)}; expected the model's shape "
                        f"{tuple(w.shape)}. Pass a copy of model.state_dict() "
                        "taken at initialization of this model."
                    )
                if torch.is_complex(w0):
                    raise InvalidParameterError(
                        f"The 'init' state dict passed to norms has a complex "
                        f"{key!r} (dtype {w0.dtype}); expected real weights."
                    )
                w0 = w0.to(device=w.device, dtype=w.dtype)
                dist = float((w - w0).double().norm())
                dist2 += dist**2
            fro2 += fro**2
            log_spec += math.log(spec) if spec > 0 else -math.inf
            rows.append(
                {
                    "layer": name,
                    "module": type(module).__name__,
                    "n_params": int(n_params),
                    "frobenius": fro,
                    "spectral": spec,
                    "spectral_fft": fft,
                    "distance_to_init": dist,
                    "log_spectral_sum": math.nan,
                    "path": math.nan,
                }
            )
        path = math.nan
        if input_shape is not None:
            path = path_norm(
                model, tuple(int(s) for s in input_shape), output_key=output_key
            )
    total_params = sum(p.numel() for p in model.parameters())
    rows.append(
        {
            "layer": "total",
            "module": type(model).__name__,
            "n_params": int(total_params),
            "frobenius": math.sqrt(fro2) if layers else math.nan,
            "spectral": math.nan,
            "spectral_fft": math.nan,
            "distance_to_init": math.sqrt(dist2) if have_dist and layers else math.nan,
            "log_spectral_sum": log_spec if layers else math.nan,
            "path": path,
        }
    )
    frame = pd.DataFrame(rows, columns=list(NORM_COLUMNS))
    return frame.astype({"n_params": np.int64})


def _first_input(
    model: nn.Module, data: Any, label_key: Optional[str] = None
) -> Optional[torch.Tensor]:
    """Return one input of ``data`` (for the path norm), or None if unreadable.

    None also for structured inputs (a tuple or dict of tensors, e.g. token
    ids): the path norm feeds an all-ones tensor, which only a model of one
    float input takes.
    """
    try:
        with preserved_rng():  # a shuffling DataLoader draws from the global RNG
            for x, _ in iter_batches(
                data,
                device=model_device(model),
                dtype=model_dtype(model),
                batch_size=1,
                max_batches=1,
                owner="the 'norms' measure",
                label_key=label_key,
            ):
                if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
                    return None
                return x[:1]
    except (InvalidParameterError, TypeError, ValueError):
        return None
    return None


@register_measure("norms", cost="cheap", option_names=[norms])
def _norms_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """Per-layer and total norms as ``norms/<layer>/<column>`` scalars.

    Layers: ``frobenius``, ``spectral``, ``spectral_fft``, ``distance_to_init``;
    ``total``: ``frobenius``, ``distance_to_init``, ``log_spectral_sum``,
    ``path``, ``n_params``. ``init`` defaults to ``context.init``; the path
    norm's input shape to that of the first training input (no path norm for
    structured or integer inputs, such as token ids).
    """
    options.setdefault("init", context.init)
    if "input_shape" not in options and "example_input" not in options:
        options["example_input"] = _first_input(
            context.model, context.train_data, context.label_key
        )
    frame = norms(context.model, **options)
    out: Dict[str, float] = {}
    for row in frame.to_dict("records"):
        layer = row["layer"]
        cols = (
            ("frobenius", "distance_to_init", "log_spectral_sum", "path", "n_params")
            if layer == "total"
            else ("frobenius", "spectral", "spectral_fft", "distance_to_init")
        )
        for col in cols:
            out[f"norms/{layer}/{col}"] = float(row[col])
    return out
