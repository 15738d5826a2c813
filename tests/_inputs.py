"""Shared inputs for the tests: the reference activations and small generators.

Importable as ``from _inputs import ...`` (``tests/`` is on ``sys.path``
because ``tests/conftest.py`` lives there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

#: ``../shared/data`` relative to the project's root (see its README);
#: ``IBMONITOR_SHARED_DATA`` overrides it.
SHARED_DATA = Path(
    os.environ.get(
        "IBMONITOR_SHARED_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    )
)
REFERENCE_DIR = SHARED_DATA / "reference-activations"
LAYERS = ("T_1", "T_2", "T_3", "T_4", "T_5", "T_6")


def reference_files() -> List[Path]:
    """The ``act_*.npz`` files of the reference activations (empty when absent)."""
    if not REFERENCE_DIR.is_dir():
        return []
    return sorted(REFERENCE_DIR.glob("act_*.npz"))


def require_reference() -> Path:
    """Return the reference folder, or skip the calling test with the reason."""
    if not reference_files():
        pytest.skip(
            f"reference activations not found in {REFERENCE_DIR} (they live in "
            "../shared/data/, which exists in CI but not on a user's machine)"
        )
    return REFERENCE_DIR


def load_reference(name: str) -> Dict[str, np.ndarray]:
    """Load one file, e.g. ``"act_epoch8000"`` or ``"act_relu_epoch8000"``.

    Returns ``X`` (4096, 12) uint8, ``y`` (4096,) int64, ``train_mask`` and the
    layers ``T_1`` ... ``T_6`` (float32). Skips the test when the data is absent.
    """
    path = require_reference() / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"reference file {path} not found")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def subsample(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``size`` of ``n`` samples."""
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False))


def entropy_bits(labels: np.ndarray) -> float:
    """Plug-in entropy, in bits, of the rows of ``labels`` (a slow reference)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    _, counts = np.unique(labels, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def slow_binned(
    symbols: np.ndarray, y: np.ndarray, x_ids: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """H(T), H(T|Y), I(T;Y) and I(X;T) of given symbols with numpy, class by class.

    The baseline of issue 2: ``numpy.unique(symbols, axis=0)`` for H(T) and
    for each class (and each input group when ``x_ids`` is given).
    """
    symbols = np.asarray(symbols)
    if symbols.ndim == 1:
        symbols = symbols[:, None]
    y = np.asarray(y)
    h_t = entropy_bits(symbols)
    h_t_y = sum((y == c).mean() * entropy_bits(symbols[y == c]) for c in np.unique(y))
    if x_ids is None:
        h_t_x = 0.0
    else:
        x_ids = np.asarray(x_ids)
        h_t_x = sum(
            (x_ids == g).mean() * entropy_bits(symbols[x_ids == g])
            for g in np.unique(x_ids)
        )
    return {
        "h_t": h_t,
        "h_t_given_y": h_t_y,
        "i_ty": h_t - h_t_y,
        "i_xt": h_t - h_t_x,
    }


def tanh_layer(
    n: int, n_units: int, *, n_inputs: int = 64, n_classes: int = 10, seed: int = 0
):
    """A tanh layer of a random network on Gaussian inputs, with linear labels.

    Returns ``(t, y)``: float32 ``(n, n_units)`` activations, a mix of
    saturated and linear-regime values, and int64 labels in
    ``0..n_classes-1`` given by the arg-max of a random linear read-out.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_inputs))
    w = rng.standard_normal((n_inputs, n_units)) * (2.0 / np.sqrt(n_inputs))
    t = np.tanh(x @ w).astype(np.float32)
    readout = rng.standard_normal((n_units, n_classes))
    y = np.argmax(t @ readout, axis=1).astype(np.int64)
    return t, y
