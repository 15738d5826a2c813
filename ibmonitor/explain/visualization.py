"""Regularized activation maximization (Yosinski et al. 2015): inputs a unit likes.

Gradient ascent on the input to increase one unit's activation, with the four
regularizers of Yosinski, Clune, Nguyen, Fuchs & Lipson (2015) applied after
every step: L2 decay, Gaussian blur every few steps, and clipping to zero the
pixels of small norm and those of small contribution. Optional constraints
keep the input in a value range and inside an L2 ball. No library does this
for PyTorch models with these regularizers (Captum has no activation
maximization; Lucent optimizes in a Fourier parametrisation with other
regularizers), so it is written here, after the authors' toolbox
(``deep-visualization-toolbox``, ``optimize/gradient_optimizer.py``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._device import autocast_disabled, model_device, model_dtype
from .._state import preserve_state
from .._validation import as_tensor, check_param
from ..exceptions import EstimationWarning, InvalidParameterError
from ..measures._data import check_autograd
from ..recording import unwrap_model
from ..structures import OutputKey, call_model
from ._common import LayerProbe, check_int, pool_unit, resolve_one_layer

__all__ = ["YOSINSKI_SETTINGS", "feature_visualization", "gaussian_blur"]

OWNER = "feature_visualization"

#: The four hyperparameter combinations of Yosinski et al. (2015), Table 1,
#: found by random search: (decay, blur_sigma, blur_every, norm_percentile,
#: contribution_percentile). The default of :func:`feature_visualization` is
#: the third.
YOSINSKI_SETTINGS: Tuple[Tuple[float, float, int, float, float], ...] = (
    (0.0, 0.5, 4, 50.0, 0.0),
    (0.3, 0.0, 0, 20.0, 0.0),
    (1e-4, 1.0, 4, 0.0, 0.0),
    (0.0, 0.5, 4, 0.0, 90.0),
)


def feature_visualization(
    model: nn.Module,
    layer: Union[str, nn.Module],
    unit: Union[int, Sequence[int]],
    *,
    shape: Sequence[int],
    steps: int = 300,
    lr: float = 0.05,
    decay: float = 1e-4,
    blur_sigma: float = 1.0,
    blur_every: int = 4,
    norm_percentile: float = 0.0,
    contribution_percentile: float = 0.0,
    value_range: Optional[Tuple[float, float]] = None,
    max_norm: Optional[float] = None,
    init: Any = None,
    init_std: float = 0.01,
    random_state: int = 0,
    output_key: OutputKey = None,
) -> torch.Tensor:
    """Return an input that strongly activates one unit (regularized gradient ascent).

    Starting from ``init`` (default: small Gaussian noise), each of ``steps``
    iterations does, as in Yosinski et al.'s toolbox:

    1. clip the input to ``value_range`` (if given);
    2. compute the unit's activation ``a(x)`` and its gradient ``g``;
    3. ascend: ``x += lr * g / rms(g)``;
    4. decay: ``x *= 1 - decay``;
    5. every ``blur_every`` steps, blur each channel with a Gaussian of
       standard deviation ``blur_sigma`` pixels;
    6. zero the pixels whose norm over channels is below the
       ``norm_percentile``-th percentile;
    7. zero the pixels whose contribution ``|sum_c x * g|`` (the linearized
       change of the activation if the pixel were zeroed) is below the
       ``contribution_percentile``-th percentile;
    8. project onto the ball ``||x||_2 <= max_norm`` (if given).

    The input is clipped (and projected) once more at the end.

    Parameters
    ----------
    model : nn.Module
        The model; it takes one float tensor of shape ``(batch, *shape)``.
    layer : str or nn.Module
        The layer, by name in ``model.named_modules()`` (``"output"`` is the
        model's output, e.g. a class logit) or as the module.
    unit : int or sequence of int
        An int: the unit after the pooling of
        :func:`~ibmonitor.explain.top_activations` (a channel's mean over
        space for a convolutional map, a hidden unit's mean over tokens for a
        sequence). A sequence: one element of the layer's output without the
        batch axis, e.g. ``(channel, row, column)``, as the toolbox does.
    shape : sequence of int
        The shape of one input without the batch axis, e.g. ``(1, 8, 8)``.
        The first axis of a 2-D or larger shape is read as channels (blur and
        clipping act over the remaining axes); a 1-D input has no blur and its
        "pixels" are its entries.
    steps : int, default=300
        Gradient steps (the toolbox's default).
    lr : float, default=0.05
        Step size, in input units: the gradient is scaled to unit root mean
        square first (see Notes).
    decay : float, default=1e-4
        L2 decay per step, in [0, 1).
    blur_sigma : float, default=1.0
        Standard deviation of the Gaussian blur in pixels; 0 disables it.
    blur_every : int, default=4
        Blur every this many steps; 0 disables it.
    norm_percentile : float, default=0.0
        Percentile (0-100) under which pixels of small norm are zeroed; 0
        disables it.
    contribution_percentile : float, default=0.0
        Percentile (0-100) under which pixels of small contribution are
        zeroed; 0 disables it.
    value_range : (float, float), optional
        Bounds of every input value (the data's range, e.g. ``(0, 1)``).
    max_norm : float, optional
        Radius of the L2 ball the input is kept in.
    init : Tensor or array of shape ``shape``, optional
        The starting input (e.g. a probe input); default ``init_std`` times
        standard Gaussian noise.
    init_std : float, default=0.01
        Standard deviation of the default starting noise.
    random_state : int, default=0
        Seed of the starting noise (a generator of its own; the global
        generators are left as they were).
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns is the output (for
        ``layer="output"``).

    Returns
    -------
    x : Tensor of shape ``shape``
        The input found, detached, in the model's dtype, on the device of
        ``init`` (else the model's device).

    Raises
    ------
    InvalidParameterError
        A bad parameter; a unit out of range; a layer called other than once.
    RuntimeError
        Called inside ``torch.inference_mode()``.

    Warns
    -----
    EstimationWarning
        The unit's gradient was 0 at every step (a dead ReLU unit).

    Notes
    -----
    Defaults are Yosinski et al.'s third setting (:data:`YOSINSKI_SETTINGS`:
    decay 1e-4, blur of width 1.0 every 4 steps, no clipping); pass the
    others' values to reproduce them. Two departures from the paper: the step
    is ``lr`` times the gradient scaled to unit root mean square (the toolbox
    used a fixed learning rate of 10 on 0-255 pixel values, which does not
    carry over to other input scales and models), and a convolutional unit
    is by default its channel's mean over space (the toolbox pushes one
    spatial position; pass ``unit=(channel, row, column)`` for that). The
    blur pads by reflection.

    The model is left as it was found (modes, parameters and ``.grad``,
    random-number generators): only input gradients are computed, with
    :func:`torch.autograd.grad`, in eval mode, with autocast disabled.

    References
    ----------
    J. Yosinski, J. Clune, A. Nguyen, T. Fuchs and H. Lipson, "Understanding
    Neural Networks Through Deep Visualization", ICML Deep Learning Workshop,
    2015.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> x = feature_visualization(model, "output", 0, shape=(4,), steps=50,
    ...                           blur_sigma=0.0, decay=0.0, max_norm=1.0)
    >>> direction = model.weight[0] / model.weight[0].norm()
    >>> bool(torch.allclose(x, direction, atol=1e-3))
    True
    """
    shape = _check_shape(shape)
    check_int(steps, "steps", OWNER)
    check_param(lr, "lr", OWNER, low=0.0, low_closed=False)
    check_param(decay, "decay", OWNER, low=0.0, high=1.0, high_closed=False)
    check_param(blur_sigma, "blur_sigma", OWNER, low=0.0)
    check_int(blur_every, "blur_every", OWNER, low=0)
    check_param(norm_percentile, "norm_percentile", OWNER, low=0.0, high=100.0)
    check_param(
        contribution_percentile,
        "contribution_percentile",
        OWNER,
        low=0.0,
        high=100.0,
    )
    check_param(init_std, "init_std", OWNER, low=0.0)
    check_int(random_state, "random_state", OWNER, low=0)
    if max_norm is not None:
        check_param(max_norm, "max_norm", OWNER, low=0.0, low_closed=False)
    low, high = _check_range(value_range)
    check_autograd(OWNER)
    model = unwrap_model(model)
    name, module = resolve_one_layer(model, layer, OWNER)
    device, dtype = model_device(model), model_dtype(model)
    out_device = device
    if init is None:
        gen = torch.Generator(device="cpu").manual_seed(int(random_state))
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * init_std).to(
            device=device, dtype=dtype
        )
    else:
        start = as_tensor(init, name="init")
        if tuple(start.shape) != shape:
            raise InvalidParameterError(
                f"The 'init' parameter of {OWNER} has shape {tuple(start.shape)}; "
                f"expected 'shape' {shape}."
            )
        if not torch.is_floating_point(start):
            start = start.to(torch.float64)
        out_device = start.device
        x = start.to(device=device, dtype=dtype).clone()
    probe = LayerProbe(model, module, output_key=output_key, owner=OWNER)
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserve_state(model))
        stack.enter_context(autocast_disabled(device))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(probe.attached())
        model.eval()
        objective = _Objective(model, probe, name, module, unit)
        moved = False
        for step in range(steps):
            x = _constrain(x, low, high, None)
            _, grad = objective.value_and_grad(x)
            rms = grad.pow(2).mean().sqrt()
            if bool(rms > 0):
                moved = True
                x = x + lr * grad / rms
            x = x * (1.0 - decay)
            if blur_every and blur_sigma > 0 and step % blur_every == 0 and x.ndim >= 2:
                x = gaussian_blur(x, blur_sigma)
            if norm_percentile > 0:
                x = _clip_small(x, _pixel_norms(x), norm_percentile)
            if contribution_percentile > 0:
                contribution = _channel_sum(x * grad).abs()
                x = _clip_small(x, contribution, contribution_percentile)
            x = _constrain(x, None, None, max_norm)
        x = _constrain(x, low, high, max_norm)
    if not moved:
        warnings.warn(
            f"The gradient of unit {unit!r} of layer {name!r} was 0 at every step "
            f"of {OWNER} (a dead ReLU unit, or a start where it is flat): the "
            "input was only regularized. Start from another 'init' or "
            "'random_state', or choose a layer before the activation.",
            EstimationWarning,
            stacklevel=2,
        )
    return x.detach().to(out_device)


# ---------------------------------------------------------------- objective ---
class _Objective:
    """The unit's activation at one input, and its gradient."""

    def __init__(
        self,
        model: nn.Module,
        probe: LayerProbe,
        name: str,
        module: nn.Module,
        unit: Any,
    ) -> None:
        self.model, self.probe, self.name, self.module = model, probe, name, module
        self.unit = unit
        self.checked = False

    def value(self, x: torch.Tensor) -> torch.Tensor:
        output = call_model(self.model, x[None])
        t = self.probe.take(output, self.name)
        if t.shape[0] != 1:
            raise InvalidParameterError(
                f"Layer {self.name!r} returned shape {tuple(t.shape)} for one "
                f"input; {OWNER} needs a batch-first output."
            )
        if isinstance(self.unit, int):
            pooled = pool_unit(t, self.module)[0]
            if not self.checked and not 0 <= self.unit < pooled.shape[0]:
                raise InvalidParameterError(
                    f"Unit {self.unit} is out of range: layer {self.name!r} has "
                    f"{pooled.shape[0]} units after pooling (0 to "
                    f"{pooled.shape[0] - 1})."
                )
            value = pooled[self.unit]
        else:
            index = tuple(self.unit)
            if not self.checked and (
                len(index) != t.ndim - 1
                or any(not 0 <= i < s for i, s in zip(index, t.shape[1:]))
            ):
                raise InvalidParameterError(
                    f"The 'unit' parameter of {OWNER} is {index}; layer "
                    f"{self.name!r} outputs shape {tuple(t.shape[1:])} per input."
                )
            value = t[0][index]
        self.checked = True
        return value

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        leaf = x.detach().requires_grad_(True)
        value = self.value(leaf)
        (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad


# ------------------------------------------------------------ regularizers ---
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel of ``x`` (channels, *spatial) with a Gaussian.

    Separable, truncated at four standard deviations (as
    :func:`scipy.ndimage.gaussian_filter`), padded by reflection without
    repeating the edge (scipy's ``mode="mirror"``); the radius is cut to fit
    the image. Works for one to three spatial axes.

    Parameters
    ----------
    x : Tensor of shape (channels, *spatial)
    sigma : float
        Standard deviation in pixels.

    Returns
    -------
    Tensor
        Same shape, dtype and device.
    """
    out = x
    for axis in range(1, x.ndim):
        size = x.shape[axis]
        radius = min(int(4.0 * sigma + 0.5), size - 1)
        if radius < 1:
            continue
        offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        moved = out.movedim(axis, -1)
        lead = moved.shape[:-1]
        rows = moved.reshape(-1, 1, size)
        padded = F.pad(rows, (radius, radius), mode="reflect")
        blurred = F.conv1d(padded, kernel.view(1, 1, -1))
        out = blurred.reshape(*lead, size).movedim(-1, axis)
    return out


def _pixel_norms(x: torch.Tensor) -> torch.Tensor:
    """Norm over channels per pixel (the entries' magnitude for 1-D inputs)."""
    if x.ndim == 1:
        return x.abs()
    return torch.linalg.vector_norm(x, dim=0)


def _channel_sum(v: torch.Tensor) -> torch.Tensor:
    return v if v.ndim == 1 else v.sum(dim=0)


def _clip_small(
    x: torch.Tensor, score: torch.Tensor, percentile: float
) -> torch.Tensor:
    """Zero the pixels whose score is below the given percentile."""
    threshold = torch.quantile(score.reshape(-1).to(torch.float64), percentile / 100)
    keep = (score.to(torch.float64) >= threshold).to(x.dtype)
    return x * keep if x.ndim == 1 else x * keep.unsqueeze(0)


def _constrain(
    x: torch.Tensor,
    low: Optional[float],
    high: Optional[float],
    max_norm: Optional[float],
) -> torch.Tensor:
    if low is not None or high is not None:
        x = x.clamp(min=low, max=high)
    if max_norm is not None:
        norm = torch.linalg.vector_norm(x)
        if bool(norm > max_norm):
            x = x * (max_norm / norm)
    return x


# ---------------------------------------------------------------- checking ---
def _check_shape(shape: Any) -> Tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if not dims or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims
    ):
        raise InvalidParameterError(
            f"The 'shape' parameter of {OWNER} must be a non-empty sequence of "
            f"positive ints (one input without the batch axis, e.g. (1, 8, 8)). "
            f"Got {shape!r} instead."
        )
    return dims


def _check_range(value_range: Any) -> Tuple[Optional[float], Optional[float]]:
    if value_range is None:
        return None, None
    try:
        low, high = value_range
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidParameterError(
            f"The 'value_range' parameter of {OWNER} must be a pair (low, high) of "
            f"finite floats with low < high. Got {value_range!r} instead."
        )
    return low, high
