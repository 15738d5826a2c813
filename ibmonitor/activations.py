"""What kind of nonlinearity a layer is, and how saturated its units are.

One table maps module types to a kind (``"tanh"``, ``"sigmoid"``, ``"relu"``)
and each bounded kind to its bounds; :func:`saturated_fraction` is computed
once per recorded layer by the monitor and written to every sink as the
scalar ``saturation/<layer>`` (see :func:`ibmonitor.schema.saturation_name`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
from torch import nn

__all__ = [
    "ACTIVATION_KINDS",
    "SATURATION_BOUNDS",
    "activation_kind",
    "saturated_fraction",
]

#: Module types -> kind of nonlinearity.
ACTIVATION_KINDS: Tuple[Tuple[Tuple[type, ...], str], ...] = (
    ((nn.Tanh, nn.Hardtanh, nn.Softsign), "tanh"),
    ((nn.Sigmoid, nn.Hardsigmoid), "sigmoid"),
    (
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.PReLU,
            nn.RReLU,
            nn.ELU,
            nn.CELU,
            nn.SELU,
            nn.GELU,
            nn.SiLU,
            nn.Mish,
            nn.Softplus,
            nn.Hardswish,
        ),
        "relu",
    ),
)

#: Bounds of the saturating kinds. A unit is saturated when its value lies
#: within 1% of a bound (|t| >= 0.99 for tanh; t <= 0.01 or t >= 0.99 for
#: sigmoid).
SATURATION_BOUNDS: Dict[str, Tuple[float, float]] = {
    "tanh": (-1.0, 1.0),
    "hardtanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "logistic": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
}


def activation_kind(module: nn.Module) -> Optional[str]:
    """Return ``"tanh"``, ``"sigmoid"``, ``"relu"`` or None for a module.

    Decides whether saturation (values near the activation's bound) is
    meaningful for a layer.
    """
    for types, kind in ACTIVATION_KINDS:
        if isinstance(module, types):
            return kind
    return None


def saturated_fraction(
    t: Any, kind: Optional[str], *, tolerance: float = 0.01
) -> Optional[float]:
    """Return the fraction of activations within ``tolerance`` of their bounds.

    Saxe et al. (2018) tie the compression phase of tanh networks to saturation:
    the share of units pushed against the bounds of their nonlinearity.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer (any shape; every value counts).
    kind : str or None
        The layer's activation: ``"tanh"`` (bounds -1 and 1, also ``"hardtanh"``
        and ``"softsign"``) or ``"sigmoid"`` (bounds 0 and 1, also
        ``"logistic"`` and ``"hardsigmoid"``); case is ignored.
    tolerance : float, default=0.01
        Distance from a bound, as a fraction of the largest absolute bound, under
        which a value counts as saturated (1%).

    Returns
    -------
    fraction : float or None
        Saturated share of the finite values, in [0, 1]; None when ``kind`` has
        no bounds (ReLU, linear, unknown, None) or ``t`` has no finite value.

    Examples
    --------
    >>> saturated_fraction([[0.995, 0.2], [-0.999, 0.5]], "tanh")
    0.5
    >>> saturated_fraction([0.005, 0.5, 0.999, 0.7], "Sigmoid")
    0.5
    >>> saturated_fraction([0.5], "relu") is None
    True
    """
    bounds = SATURATION_BOUNDS.get(str(kind).lower()) if kind is not None else None
    if bounds is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    values = np.asarray(t, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = bounds
    margin = tolerance * max(abs(low), abs(high))
    saturated = (values <= low + margin) | (values >= high - margin)
    return float(np.mean(saturated))
