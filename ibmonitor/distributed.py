"""Helpers for monitoring under ``torch.distributed`` (DistributedDataParallel).

Under DDP every rank runs the same training script, so every rank builds an
:class:`~ibmonitor.InformationMonitor` on the full probe set. The monitor then
divides the work:

1. each rank records the activations of its contiguous shard of the probe set
   (:func:`shard_slice`), so the recording pass costs ``1 / world_size`` of a
   single-process pass;
2. the shards are gathered, in rank order, on rank 0
   (:func:`gather_to_rank_zero`), which therefore holds exactly the activations
   a single process would have recorded;
3. rank 0 alone estimates and writes the run; the other ranks return at once
   and go on training.

Every function here works unchanged without ``torch.distributed`` (or before
``init_process_group``): the process is then rank 0 of a world of size 1.

Backends
--------
``gloo`` gathers CPU tensors; ``nccl`` gathers CUDA tensors. A collective always
runs on a device its backend supports: CUDA tensors under gloo, and CPU tensors
under nccl, are moved for the collective and the results are given back on the
device of the input tensors. Under nccl, each process must have selected its
GPU with ``torch.cuda.set_device(local_rank)`` (as DDP scripts do anyway), since
the object collectives (:func:`broadcast_object`) run on the current device.

Every function except :func:`world_info`, :func:`is_rank_zero` and
:func:`shard_slice` is a collective: all ranks must call it, in the same order,
or the processes deadlock.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import torch

from .exceptions import InvalidParameterError

__all__ = [
    "barrier",
    "broadcast_object",
    "gather_to_rank_zero",
    "is_rank_zero",
    "shard_slice",
    "world_info",
]

logger = logging.getLogger(__name__)


def _initialized() -> bool:
    """Return True when a default process group exists."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized())


def world_info() -> Tuple[int, int]:
    """Return this process's rank and the number of processes.

    Returns
    -------
    rank : int
        The rank in the default process group, 0 without ``torch.distributed``.
    world_size : int
        The number of processes in the default process group, 1 without
        ``torch.distributed`` (not available in this build of torch, or
        ``init_process_group`` not called yet).

    Examples
    --------
    >>> from ibmonitor.distributed import world_info
    >>> world_info()  # a single process
    (0, 1)
    """
    if not _initialized():
        return 0, 1
    dist = torch.distributed
    return int(dist.get_rank()), int(dist.get_world_size())


def is_rank_zero() -> bool:
    """Return True on rank 0, and in a process that is not distributed.

    Returns
    -------
    bool
        Whether this process is the one that estimates and writes.
    """
    return world_info()[0] == 0


def shard_slice(n: int, rank: int, world_size: int) -> slice:
    """Return the contiguous slice of ``range(n)`` that ``rank`` records.

    The shards are contiguous, in rank order, cover ``0..n`` exactly once, and
    their sizes differ by at most one (the first ``n % world_size`` ranks get one
    more sample), as :func:`numpy.array_split` divides. Concatenating the shards
    in rank order therefore gives back the samples in their original order.

    Parameters
    ----------
    n : int
        The number of samples to share, at least 0.
    rank : int
        The rank, in ``[0, world_size)``.
    world_size : int
        The number of processes, at least 1.

    Returns
    -------
    slice
        ``slice(start, stop)`` with ``0 <= start <= stop <= n``; empty when
        ``n < world_size`` and ``rank >= n``.

    Raises
    ------
    InvalidParameterError
        If a parameter is not an integer or is out of range.

    Examples
    --------
    >>> from ibmonitor.distributed import shard_slice
    >>> [shard_slice(10, r, 3) for r in range(3)]
    [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
    """
    for name, value, low in (("n", n, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidParameterError(
                f"The {name!r} parameter of shard_slice must be an int in the range "
                f"[{low}, inf). Got {value!r} instead."
            )
    if (
        isinstance(rank, bool)
        or not isinstance(rank, int)
        or not 0 <= rank < world_size
    ):
        raise InvalidParameterError(
            f"The 'rank' parameter of shard_slice must be an int in the range "
            f"[0, {world_size}). Got {rank!r} instead."
        )
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return slice(start, stop)


def _collective_device(tensor: torch.Tensor) -> torch.device:
    """Return the device on which the default backend can gather ``tensor``."""
    backend = str(torch.distributed.get_backend()).lower()
    if backend == "nccl":
        if tensor.is_cuda:
            return tensor.device
        return torch.device("cuda", torch.cuda.current_device())
    if backend in ("gloo", "mpi"):
        return torch.device("cpu")
    # Mixed backends ("cpu:gloo,cuda:nccl") and custom ones: keep the device.
    return tensor.device


def gather_to_rank_zero(
    tensors: Dict[str, torch.Tensor],
) -> Optional[Dict[str, torch.Tensor]]:
    """Concatenate each rank's tensors along dim 0, in rank order, on rank 0.

    Each rank passes the tensors of its shard (for example its activations of
    every layer and its labels); the shards may have different numbers of rows,
    including none. The sizes are exchanged first, every shard is padded to the
    largest, gathered with :func:`torch.distributed.gather`, and the padding is
    cut off again on rank 0.

    Parameters
    ----------
    tensors : dict of str to Tensor
        The same keys on every rank (in any order); for each key, tensors of at
        least one dimension whose trailing dimensions and dtype agree across
        ranks. CPU tensors under gloo, CUDA (or CPU) tensors under nccl.

    Returns
    -------
    dict of str to Tensor or None
        On rank 0, a new dict with the keys in the order rank 0 gave them, each
        tensor the concatenation of all ranks' tensors along dim 0 in rank order,
        on the device of rank 0's input tensor. ``None`` on the other ranks.
        Without ``torch.distributed`` (a world of size 1) the tensors themselves
        are returned in a new dict.

    Raises
    ------
    ValueError
        On every rank, when the ranks disagree on the keys, a tensor's trailing
        shape or its dtype, or when a tensor has no dimensions. The check runs
        on the exchanged sizes, so every rank raises and none is left waiting.

    Notes
    -----
    This is a collective: every rank must call it with the same keys. It costs
    one :func:`torch.distributed.all_gather_object` of the shapes and one
    :func:`torch.distributed.gather` per key; only rank 0 receives the data.
    """
    if not isinstance(tensors, dict):
        raise InvalidParameterError(
            "The 'tensors' parameter of gather_to_rank_zero must be a dict of str "
            f"to Tensor. Got {type(tensors).__name__} instead."
        )
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise InvalidParameterError(
                f"The 'tensors' parameter of gather_to_rank_zero must map str to "
                f"Tensor. Got {type(value).__name__} for key {key!r} instead."
            )
    rank, world_size = world_info()
    meta = {
        key: (tuple(value.shape), str(value.dtype)) for key, value in tensors.items()
    }
    if world_size == 1:
        _check_meta([meta])
        return dict(tensors)

    dist = torch.distributed
    all_meta: List[Any] = [None] * world_size
    dist.all_gather_object(all_meta, meta)
    _check_meta(all_meta)

    out: Dict[str, torch.Tensor] = {}
    # Iterate in a fixed order shared by all ranks (rank 0's), so the
    # collectives pair up even when the dicts were built in different orders.
    for key in all_meta[0]:
        value = tensors[key]
        sizes = [m[key][0][0] for m in all_meta]
        largest = max(sizes)
        device = _collective_device(value)
        local = value.detach().to(device).contiguous()
        if local.shape[0] < largest:
            pad = local.new_zeros((largest - local.shape[0], *local.shape[1:]))
            local = torch.cat([local, pad], dim=0)
        if rank == 0:
            gathered = [torch.empty_like(local) for _ in range(world_size)]
            dist.gather(local, gather_list=gathered, dst=0)
            parts = [part[:size] for part, size in zip(gathered, sizes)]
            out[key] = torch.cat(parts, dim=0).to(value.device)
        else:
            dist.gather(local, dst=0)
    return out if rank == 0 else None


def _check_meta(all_meta: List[Dict[str, Tuple[Tuple[int, ...], str]]]) -> None:
    """Check that every rank sent the same keys, trailing shapes and dtypes."""
    first = all_meta[0]
    for key, (shape, _) in first.items():
        if len(shape) == 0:
            raise ValueError(
                f"Tensor {key!r} passed to gather_to_rank_zero has no dimensions; "
                "expected at least one (the samples)."
            )
    for rank, meta in enumerate(all_meta[1:], start=1):
        if set(meta) != set(first):
            raise ValueError(
                "Ranks passed different keys to gather_to_rank_zero: rank 0 has "
                f"{sorted(first)}, rank {rank} has {sorted(meta)}."
            )
        for key, (shape, dtype) in meta.items():
            shape0, dtype0 = first[key]
            if len(shape) == 0 or tuple(shape[1:]) != tuple(shape0[1:]):
                raise ValueError(
                    f"Found tensors {key!r} with inconsistent shapes across ranks: "
                    f"rank 0 has {list(shape0)}, rank {rank} has {list(shape)}. "
                    "Only the first (sample) dimension may differ."
                )
            if dtype != dtype0:
                raise ValueError(
                    f"Found tensors {key!r} with inconsistent dtypes across ranks: "
                    f"rank 0 has {dtype0}, rank {rank} has {dtype}."
                )


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to every rank.

    Parameters
    ----------
    obj : object
        The object to send; ignored on the other ranks (pass anything, such as
        ``None``).
    src : int, default=0
        The rank whose object is sent.

    Returns
    -------
    object
        ``src``'s object, on every rank (``obj`` itself in a single process).

    Notes
    -----
    A collective built on :func:`torch.distributed.broadcast_object_list`, which
    pickles: use it for small configuration (a schedule decision, a run path),
    never for tensors of activations, and only between ranks that trust each
    other (they belong to the same job).
    """
    if not _initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every rank has reached this call (no-op in a single process)."""
    if _initialized():
        torch.distributed.barrier()
