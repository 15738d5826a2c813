"""Gaussian noise in chosen layers for one block of code: the noisy network.

Goldfeld et al. (2019) make I(X;T) of a network a meaningful, finite quantity
by adding Gaussian noise ``Z ~ N(0, std^2 I)`` to the output of every hidden
layer, ``T_l = S_l + Z_l`` with ``S_l = f_l(T_{l-1})``: the noise of one
layer then propagates through all later ones. :func:`inject_noise` does this
only inside a ``with`` block, with forward hooks that it removes on exit
(also when the block raises), so that a *recording* pass sees the noisy
network while training never does::

    with inject_noise(model, ["tanh1", "tanh2"], std=0.1):
        monitor.on_epoch_end(epoch)          # records the noisy network

Every hooked module first shows its noiseless output ``S`` to the module's
other forward hooks (a recording hook stores ``S``, the input of the
:func:`~ibmonitor.estimators.noisy` estimator) and then passes ``S + Z`` on
to the rest of the model. The noise comes from generators of its own (one per
device, seeded), never from the global random state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch import nn

from ._validation import check_param
from .exceptions import InvalidParameterError
from .recording import LayerSpec, layer_output_name, resolve_layers, unwrap_model

__all__ = ["NoiseInjection", "inject_noise"]

_OWNER = "inject_noise"
#: Mixed into the seed of the noise generators: "inject" in ASCII.
_SALT = 0x696E6A656374


@dataclass
class NoiseInjection:
    """What :func:`inject_noise` yields: the noisy layers and their noise counts.

    Attributes
    ----------
    layers : list of str
        Names of the modules whose outputs get noise, in model order.
    std : float
        Standard deviation of the noise, in the units of the outputs.
    calls : dict of str to int
        How many outputs of each layer received noise so far (one per
        forward call).
    """

    layers: List[str]
    std: float
    calls: Dict[str, int] = field(default_factory=dict)


class _NoiseHook:
    """Forward hooks of one module that add ``std * N(0, 1)`` to its output.

    A forward pre-hook re-registers the noise hook before each call, so that
    it runs after every other forward hook of the module (hooks run in
    registration order): those see the noiseless output, the model the noisy
    one.
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        std: float,
        draw: _Noise,
        state: NoiseInjection,
    ) -> None:
        self.name = name
        self.module = module
        self.std = std
        self.draw = draw
        self.state = state
        self.post: Optional[Any] = None
        self.pre = module.register_forward_pre_hook(self._before)

    def _before(self, module: nn.Module, args: Any) -> None:
        if self.post is not None:
            self.post.remove()
        self.post = module.register_forward_hook(self._after)

    def _after(self, module: nn.Module, args: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or not torch.is_floating_point(output):
            what = (
                f"a {output.dtype} tensor"
                if isinstance(output, torch.Tensor)
                else type(output).__name__
            )
            raise InvalidParameterError(
                f"inject_noise cannot add noise to layer {self.name!r}: it returned "
                f"{what}, not a floating-point tensor. Choose layers that return "
                "one tensor (activation or linear modules)."
            )
        self.state.calls[self.name] = self.state.calls.get(self.name, 0) + 1
        return output + self.std * self.draw(output)

    def remove(self) -> None:
        self.pre.remove()
        if self.post is not None:
            self.post.remove()


class _Noise:
    """Standard normal noise shaped like a tensor, from dedicated generators.

    Without a given generator, one per device is seeded from
    ``numpy.random.SeedSequence([seed, _SALT])``: a stream of its own, unlike
    ``torch.manual_seed(seed)``'s or the Monte-Carlo draws of the ``noisy``
    estimator with the same seed.
    """

    def __init__(self, seed: int, generator: Optional[torch.Generator]) -> None:
        state = np.random.SeedSequence([seed, _SALT]).generate_state(1, np.uint64)
        self.seed = int(state[0])
        self.generator = generator
        self.by_device: Dict[str, torch.Generator] = {}

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        gen = self.generator
        if gen is None:
            key = str(like.device)
            gen = self.by_device.get(key)
            if gen is None:
                gen = torch.Generator(device=like.device).manual_seed(self.seed)
                self.by_device[key] = gen
        dtype = like.dtype
        if gen.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32  # drawn in float32, then cast
        noise = torch.randn(like.shape, generator=gen, dtype=dtype, device=gen.device)
        return noise.to(device=like.device, dtype=like.dtype)


@contextlib.contextmanager
def inject_noise(
    model: nn.Module,
    layers: LayerSpec,
    std: float,
    *,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Iterator[NoiseInjection]:
    """Add Gaussian noise to the outputs of ``layers`` inside a ``with`` block.

    Parameters
    ----------
    model : nn.Module
        The model (DDP, ``DataParallel`` and ``torch.compile`` wrappers are
        unwrapped).
    layers : str, type, sequence of str or type, or callable
        The modules whose outputs get noise, as for
        :func:`ibmonitor.record_activations`: names from
        ``model.named_modules()``, module types (``nn.Tanh``: every tanh
        module), or ``f(name, module) -> bool``. Not the model itself: noise
        on the model's output changes nothing inside the model (the
        ``noisy`` estimator's ``noise_std`` already treats the recorded
        output as noisy).
    std : float
        Standard deviation of the noise, in the units of the outputs; finite
        and > 0. Pass the same value as the estimator's ``noise_std``.
    seed : int, default=0
        Seed of the generators created for the block (one per device the
        outputs live on, seeded from ``seed`` mixed with a constant), when
        ``generator`` is None: the same seed gives the same noise in every
        block, and a noise stream independent of the ``noisy`` estimator's
        draws with the same seed.
    generator : torch.Generator, optional
        Draw the noise from this generator instead (on its device; the noise
        is then moved to each output's device). It advances with each draw.

    Yields
    ------
    injection : NoiseInjection
        The noisy layers and, as the block runs, the number of noisy outputs
        per layer.

    Raises
    ------
    InvalidParameterError
        A bad ``std`` or ``seed``, an unknown layer (the message lists the
        available ones), the model itself as a layer, or (during the block) a
        hooked layer returning something other than one floating-point
        tensor.

    Notes
    -----
    The hooks are registered on entry and removed on exit, also when the
    block raises; the model's parameters, buffers, training flags and the
    global random state (torch, numpy, Python) are never touched, so a
    training step after the block is exactly what it would have been
    without it. The noise is added out of place (``output + std * z``), so a
    tensor stored by another hook keeps the noiseless value. Noise is added
    under autograd too: use the block for no-grad recording passes.

    References
    ----------
    .. [1] Z. Goldfeld et al., "Estimating information flow in deep neural
       networks", ICML 2019.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
    >>> x = torch.ones(4, 2)
    >>> with inject_noise(model, ["1"], std=0.5) as noise:
    ...     noisy_out = model(x)
    >>> noise.calls
    {'1': 1}
    >>> bool(torch.equal(model(x), noisy_out))  # the hooks are gone
    False
    """
    check_param(
        std, "std", _OWNER, low=0.0, low_closed=False, high=math.inf, high_closed=False
    )
    check_param(seed, "seed", _OWNER, kind="int", low=0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidParameterError(
            f"The 'generator' parameter of {_OWNER} must be a torch.Generator or "
            f"None. Got {type(generator).__name__} instead."
        )
    if layers is None:
        raise InvalidParameterError(
            f"The 'layers' parameter of {_OWNER} must name the modules to make "
            "noisy (e.g. ['tanh1', 'tanh2'] or nn.Tanh). Got None."
        )
    root = unwrap_model(model)
    modules = resolve_layers(root, layers)
    if any(module is root for module in modules.values()):
        raise InvalidParameterError(
            f"inject_noise cannot add noise to the model's own output "
            f"({layer_output_name(root)!r}): nothing inside the model would see "
            "it. Use the estimator's noise_std for the output layer, or name the "
            "module that computes it."
        )
    state = NoiseInjection(layers=list(modules), std=float(std))
    draw = _Noise(int(seed), generator)
    hooks: List[_NoiseHook] = []
    try:
        for name, module in modules.items():
            hooks.append(_NoiseHook(name, module, float(std), draw, state))
        yield state
    finally:
        for hook in hooks:
            hook.remove()
