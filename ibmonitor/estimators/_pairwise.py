"""Chunked pairwise-distance helpers shared by the KDE and kNN estimators.

Everything here runs on the device of the tensors it is given and keeps memory
bounded: no function materialises an ``(n, n)`` matrix; callers walk over
blocks of rows (and columns) whose size these helpers choose.

Private helpers: they trust their input (validated by the public estimators).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

__all__ = [
    "blocks",
    "chebyshev_block",
    "class_ranges",
    "compute_dtype",
    "default_block_size",
    "default_row_chunk",
    "gaussian_kernel_",
    "next_below",
    "overlap",
    "sq_dist_factors",
    "sq_dist_pairs",
]

#: Elements of one ``(rows, n)`` work matrix of the row-chunked kNN search on
#: the CPU. 2**20 float64 values are 8 MiB: small enough that the C allocator
#: recycles the buffers (allocations above glibc's mmap threshold, at most
#: 32 MiB, come back from the kernel zeroed each time and cost page faults) and
#: large enough that the per-chunk Python overhead is negligible.
_CPU_CHUNK_ELEMENTS = 1 << 20
#: Same for CUDA, where the caching allocator recycles memory and larger
#: launches are faster: 2**24 float64 values are 128 MiB (a handful of such
#: matrices live at once).
_CUDA_CHUNK_ELEMENTS = 1 << 24


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Return float64 for float64 input, float32 for every other float type."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def default_block_size(device: torch.device) -> int:
    """Side of the square blocks of the KDE's pairwise sums.

    2048 x 2048 on the CPU (16 or 32 MiB per buffer, one per bound), 4096
    x 4096 on CUDA (64 or 128 MiB per buffer) where kernel-launch overhead
    favours larger blocks.
    """
    return 4096 if device.type == "cuda" else 2048


def default_row_chunk(
    n_columns: int, device: torch.device, *, elements: Optional[int] = None
) -> int:
    """Rows per chunk for ``(rows, n_columns)`` distance matrices (kNN search).

    ``elements`` overrides the default budget of elements per chunk
    (``_CPU_CHUNK_ELEMENTS`` or ``_CUDA_CHUNK_ELEMENTS``).
    """
    if elements is not None:
        budget = elements
    else:
        budget = _CUDA_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS
    return max(1, min(n_columns, budget // max(1, n_columns)))


def blocks(n: int, size: int) -> List[Tuple[int, int]]:
    """Split ``range(n)`` into consecutive ``(start, stop)`` pieces of ``size``."""
    size = max(1, int(size))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def sq_dist_factors(u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Factors whose product is minus the squared distance matrix.

    With ``lhs = [2u, -|u|^2, -1]`` and ``rhs = [u, 1, |u|^2]`` (one row per
    sample), ``lhs_i . rhs_j = 2 u_i.u_j - |u_i|^2 - |u_j|^2 = -||u_i - u_j||^2``,
    so one matrix product per block gives the negated distances with no
    further pass over the block.

    Parameters
    ----------
    u : Tensor of shape (n, d)

    Returns
    -------
    lhs, rhs : Tensor of shape (n, d + 2)
        Contiguous, same dtype and device as ``u``.
    """
    sq = (u * u).sum(dim=1, keepdim=True)
    one = torch.ones_like(sq)
    lhs = torch.cat([2.0 * u, -sq, -one], dim=1).contiguous()
    rhs = torch.cat([u, one, sq], dim=1).contiguous()
    return lhs, rhs


def gaussian_kernel_(
    out: torch.Tensor,
    lhs: torch.Tensor,
    rhs: torch.Tensor,
    *,
    floor: float,
) -> torch.Tensor:
    """Fill ``out`` in place with ``exp(-min(max(D_ij, 0), floor))``.

    ``D_ij = ||u_i - u_j||^2`` comes from one matrix product of the factors of
    :func:`sq_dist_factors` (rows ``lhs`` of the block's rows, ``rhs`` of its
    columns), is clamped at 0 against rounding, and capped at ``floor``
    because exponentials that underflow are slow on some CPUs while
    contributing nothing beside the terms callers add. No temporary of the
    block's size is allocated. Scale the data before taking the factors (by
    ``1/sqrt(2 * variance)``, say) to set the kernel's width.

    Parameters
    ----------
    out : Tensor of shape (n_a, n_b)
        Contiguous buffer, same dtype and device as ``lhs``.
    lhs : Tensor of shape (n_a, d + 2)
    rhs : Tensor of shape (n_b, d + 2)
    floor : float
        Largest exponent kept (e.g. 80 for float32).

    Returns
    -------
    out : Tensor of shape (n_a, n_b)
        The same buffer.
    """
    torch.mm(lhs, rhs.T, out=out)
    out.clamp_(min=-floor, max=0.0)
    out.exp_()
    return out


def chebyshev_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Max-norm (Chebyshev) distances between the rows of ``a`` and ``b``.

    Parameters
    ----------
    a : Tensor of shape (n_a, d)
    b : Tensor of shape (n_b, d)

    Returns
    -------
    dist : Tensor of shape (n_a, n_b)
        ``max_k |a_ik - b_jk|``, exact (no cancellation: differences of the
        coordinates, not an expansion), on ``a``'s device.
    """
    if a.shape[1] == 1:
        return (a - b.T).abs_()
    return torch.cdist(a, b, p=math.inf)


def next_below(r: torch.Tensor) -> torch.Tensor:
    """Largest float strictly below each positive ``r`` (``0`` stays ``0``).

    Counting ``dist <= next_below(r)`` counts ``dist < r`` exactly, as
    scikit-learn does with ``np.nextafter(radius, 0)``.
    """
    return torch.nextafter(r, torch.zeros((), dtype=r.dtype, device=r.device))


def class_ranges(counts: List[int]) -> List[Tuple[int, int]]:
    """``(start, stop)`` of each class in class-sorted order."""
    out = []
    start = 0
    for c in counts:
        out.append((start, start + c))
        start += c
    return out


def overlap(a: Tuple[int, int], b: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """Intersection of two half-open ranges, or ``None`` when empty."""
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


#: Elements (pairs times features) of one gathered difference block in
#: :func:`sq_dist_pairs`: 2**20 float64 values are 8 MiB.
_PAIR_ELEMENTS = 1 << 20


def sq_dist_pairs(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows ``i`` and ``j`` of ``u``.

    Computed from the coordinate differences (``sum_k (u_ik - u_jk)^2``), so
    without the cancellation of the expansion ``|a|^2 + |b|^2 - 2 a.b``: the
    relative error is a few units in the last place even for points closer
    than ``1e-8`` times their norm. Gathers at most ``_PAIR_ELEMENTS``
    values at a time.

    Parameters
    ----------
    u : Tensor of shape (n, d)
    i, j : int64 Tensors of broadcastable shapes
        Row indices into ``u``, on ``u``'s device.

    Returns
    -------
    sq : Tensor of the broadcast shape of ``i`` and ``j``
        Same dtype and device as ``u``.
    """
    i, j = torch.broadcast_tensors(i, j)
    shape = i.shape
    i = i.reshape(-1)
    j = j.reshape(-1)
    out = torch.empty(i.numel(), dtype=u.dtype, device=u.device)
    step = max(1, _PAIR_ELEMENTS // max(1, u.shape[1]))
    for s in range(0, i.numel(), step):
        diff = u[i[s : s + step]] - u[j[s : s + step]]
        out[s : s + step] = diff.mul_(diff).sum(dim=1)
    return out.reshape(shape)
