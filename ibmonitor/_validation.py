"""Input checks at the public boundary, worded after scikit-learn's messages.

Private helpers trust their input; public functions call these once.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Optional

import numpy as np
import torch

from .exceptions import InvalidParameterError

__all__ = [
    "as_real_scalar",
    "as_tensor",
    "check_activations",
    "check_consistent_samples",
    "check_labels",
    "check_param",
    "context_phrase",
]


def as_real_scalar(value: Any) -> float:
    """Return a real number, numpy scalar or one-element array or tensor as a float.

    Raises
    ------
    TypeError
        ``value`` is not a real number (``bool``, a string, complex, None).
    ValueError
        An array or tensor with other than one element.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"not a scalar: a tensor of {value.numel()} elements")
        value = value.detach().cpu().item()
    elif isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"not a scalar: an array of {value.size} elements")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"not a real number: {type(value).__name__}")
    return float(value)


def context_phrase(layer: Optional[str] = None, epoch: Optional[int] = None) -> str:
    """Return " of layer 'x' at epoch 3" (or the parts that are known)."""
    text = ""
    if layer is not None:
        text += f" of layer {layer!r}"
    if epoch is not None:
        text += f" at epoch {epoch}"
    return text


def check_param(
    value: Any,
    name: str,
    owner: str,
    *,
    kind: str = "real",
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_closed: bool = True,
    high_closed: bool = True,
    options: Optional[tuple] = None,
) -> Any:
    """Check one scalar parameter and return it.

    Parameters
    ----------
    value : object
        The value given.
    name : str
        Parameter name, used in the message.
    owner : str
        Function or class that takes the parameter, used in the message.
    kind : {"real", "int", "option"}, default="real"
        What the parameter must be.
    low, high : float, optional
        Interval bounds; ``None`` means unbounded.
    low_closed, high_closed : bool, default=True
        Whether the bounds belong to the interval.
    options : tuple, optional
        Allowed values when ``kind="option"``.

    Returns
    -------
    value : object
        The value, unchanged.

    Raises
    ------
    InvalidParameterError
        ``The 'n_bins' parameter of binned must be an int in the range [2, inf).
        Got 1 instead.``
    """
    if kind == "option":
        if value not in options:
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be one of "
                f"{sorted(map(repr, options))}. Got {value!r} instead."
            )
        return value
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    interval = (
        f"{'[' if low_closed and low is not None else '('}{lo}, "
        f"{hi}{']' if high_closed and high is not None else ')'}"
    )
    what = "an int" if kind == "int" else "a float"
    ok_type = (
        isinstance(value, Integral) and not isinstance(value, bool)
        if kind == "int"
        else isinstance(value, Real) and not isinstance(value, bool)
    )
    if ok_type:
        v = float(value)
        ok = np.isfinite(v) or (kind == "real" and high is None and v == np.inf)
        if low is not None:
            ok = ok and (v >= low if low_closed else v > low)
        if high is not None:
            ok = ok and (v <= high if high_closed else v < high)
        if ok:
            return value
    raise InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {what} in the range "
        f"{interval}. Got {value!r} instead."
    )


def as_tensor(a: Any, *, name: str = "t", dtype: Optional[torch.dtype] = None):
    """Return ``a`` as a torch tensor without copying where possible.

    numpy arrays share memory with the result; tensors keep their device.
    """
    if isinstance(a, torch.Tensor):
        out = a.detach()
    else:
        arr = np.asarray(a)
        if arr.dtype == object:
            raise InvalidParameterError(
                f"{name} must be a numeric array or tensor. Got dtype object."
            )
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr).copy()
        out = torch.from_numpy(arr)
    if dtype is not None:
        out = out.to(dtype)
    return out


def check_activations(
    t: Any,
    *,
    name: str = "t",
    layer: Optional[str] = None,
    epoch: Optional[int] = None,
    min_samples: int = 2,
) -> torch.Tensor:
    """Check a layer's activations and return them as a 2-D floating tensor.

    A 1-D input is read as one unit. Integer inputs become float64.

    Raises
    ------
    InvalidParameterError
        Wrong number of dimensions, too few samples, NaN or Inf values.
    """
    where = context_phrase(layer, epoch)
    tt = as_tensor(t, name=name)
    if tt.ndim == 1:
        tt = tt[:, None]
    if tt.ndim != 2:
        raise InvalidParameterError(
            f"Activations{where} ({name}) must have shape (n_samples, n_units). "
            f"Got shape {tuple(tt.shape)} instead."
        )
    if tt.shape[0] < min_samples:
        raise InvalidParameterError(
            f"Activations{where} ({name}) have {tt.shape[0]} samples; at least "
            f"{min_samples} are required to estimate mutual information. "
            "Is the probe set empty?"
        )
    if torch.is_complex(tt):
        raise InvalidParameterError(
            f"Activations{where} ({name}) are complex (dtype {tt.dtype}); "
            "expected real values. Pass the real part, the modulus or both as "
            "separate units explicitly."
        )
    if not torch.is_floating_point(tt):
        tt = tt.to(torch.float64)
    # A finite sum proves every value finite (NaN and Inf propagate), and costs
    # far less than the element-wise check; only a non-finite sum (or an
    # overflow) pays for the count.
    n_bad = 0
    if not bool(torch.isfinite(tt.sum())):
        n_bad = int((~torch.isfinite(tt)).sum())
    if n_bad:
        n_nan = int(torch.isnan(tt).sum())
        what = "NaN" if n_nan == n_bad else ("Inf" if n_nan == 0 else "NaN or Inf")
        raise InvalidParameterError(
            f"Activations{where} ({name}) contain {what} ({n_bad} of {tt.numel()} "
            "values). Training may have diverged."
        )
    return tt


def check_labels(y: Any, n_samples: int, *, name: str = "y") -> torch.Tensor:
    """Check integer class labels of length ``n_samples``; return an int64 tensor.

    Float labels holding whole numbers are accepted; anything else is an error.
    """
    yt = as_tensor(y, name=name)
    if yt.ndim == 2 and yt.shape[1] == 1:
        yt = yt[:, 0]
    if yt.ndim != 1:
        raise InvalidParameterError(
            f"{name} must be a 1-D array of integer class labels. "
            f"Got shape {tuple(yt.shape)} instead."
        )
    check_consistent_samples(t=n_samples, **{name: yt.shape[0]})
    if torch.is_floating_point(yt) or torch.is_complex(yt):
        if not bool(torch.all(torch.isfinite(yt))) or not bool(
            torch.all(yt == torch.round(yt))
        ):
            raise InvalidParameterError(
                f"{name} must hold integer class labels. Got non-integer values "
                f"of dtype {yt.dtype}."
            )
    elif yt.dtype == torch.bool:
        pass
    return yt.to(torch.int64)


def check_consistent_samples(**counts: int) -> None:
    """Raise when the named arrays do not have the same number of samples.

    Example message: ``Found inputs with inconsistent numbers of samples: x has
    1000, t has 999.``
    """
    values = set(counts.values())
    if len(values) > 1:
        parts = ", ".join(f"{k} has {v}" for k, v in counts.items())
        raise InvalidParameterError(
            f"Found inputs with inconsistent numbers of samples: {parts}. "
            "Activations must be recorded on the same examples."
        )
