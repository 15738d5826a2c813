"""Data sets for the reproductions; nothing is ever downloaded.

- :func:`twelve_bit`: the 4096 inputs of Shwartz-Ziv & Tishby's 12-bit task with
  labels made here by a rule in the spirit of the original.
- :func:`load_var_u`: the original ``var_u.mat`` file, where a user has it.
- :func:`digits`: scikit-learn's 8x8 digits (shipped inside scikit-learn).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Tuple, Union

import numpy as np

__all__ = ["digits", "icosahedron_vertices", "load_var_u", "twelve_bit"]


def icosahedron_vertices() -> np.ndarray:
    """Return the 12 unit vectors of a regular icosahedron, shape (12, 3)."""
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    v = np.asarray(vertices)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def twelve_bit() -> Tuple[np.ndarray, np.ndarray]:
    """Return the 12-bit task: every 12-bit pattern and a binary label.

    The 12 inputs sit on the vertices of a regular icosahedron (12 points spread
    uniformly over the sphere, as Shwartz-Ziv & Tishby placed theirs). With spins
    ``s_i = 2 x_i - 1``, the label is ``y = 1`` where

    ``g(s) = 5 * sum_i s_i - 2 * sum_{edges (i,j)} s_i s_j
    + 3 * sum_{antipodes (i,j)} s_i s_j >= 6``

    over the 30 edges and the 6 antipodal pairs. ``g`` is invariant under the 60
    rotations of the icosahedron (they permute vertices, edges and antipodal
    pairs), the analogue of the original's rule, which is invariant under
    rotations of the sphere; like the original labels (which a quadratic form in
    the spins separates exactly), ``g`` is quadratic with a dominant linear term.
    The threshold is the one that makes the classes closest to balanced:
    p(y=1) = 2044/4096 = 0.49902, so H(Y) = 0.9999972 bits. H(X) = 12 bits.
    The coefficients were chosen, among small integers, for balanced classes and
    a rule the 12-10-7-5-4-3-2 tanh network fits in a few hundred epochs.

    Returns
    -------
    x : ndarray of shape (4096, 12), float32
        Row ``i`` is the binary code of ``i`` (most significant bit first), as in
        the original ``var_u.mat``.
    y : ndarray of shape (4096,), int64
        The labels.
    """
    x = ((np.arange(4096)[:, None] >> np.arange(11, -1, -1)) & 1).astype(np.int64)
    s = 2 * x - 1
    gram = icosahedron_vertices() @ icosahedron_vertices().T
    neighbour = np.isclose(gram, 1.0 / math.sqrt(5.0))
    edges = [(i, j) for i in range(12) for j in range(i + 1, 12) if neighbour[i, j]]
    antipodes = [
        (i, j) for i in range(12) for j in range(i + 1, 12) if gram[i, j] < -0.99
    ]
    g = 5 * s.sum(axis=1)
    g = g - 2 * sum(s[:, i] * s[:, j] for i, j in edges)
    g = g + 3 * sum(s[:, i] * s[:, j] for i, j in antipodes)
    y = (g >= 6).astype(np.int64)
    return x.astype(np.float32), y


def load_var_u(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Read the original 12-bit data set ``var_u.mat`` (Shwartz-Ziv & Tishby 2017).

    Parameters
    ----------
    path : str or Path
        The ``.mat`` file, with keys ``F`` (4096, 12) and ``y`` (1, 4096).

    Returns
    -------
    x : ndarray of shape (4096, 12), float32
    y : ndarray of shape (4096,), int64
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"var_u.mat not found at {str(path)!r}.")
    data = loadmat(str(path))
    x = np.asarray(data["F"], dtype=np.float32)
    y = np.asarray(data["y"]).reshape(-1).astype(np.int64)
    return x, y


def digits(*, scale: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's 8x8 digits as images (1797, 1, 8, 8) and labels.

    Parameters
    ----------
    scale : bool, default=True
        Divide pixel values (0..16) by 16.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    if scale:
        images = images / 16.0
    return images, bunch.target.astype(np.int64)
