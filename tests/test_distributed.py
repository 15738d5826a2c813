"""Tests of ibmonitor.distributed and of the monitor under DDP (issue 3, section 4).

The multi-process tests spawn 2 processes with torch.multiprocessing and the
gloo backend on CPU. Workers report failures by raising (``mp.spawn`` re-raises
them here) and hand results back through files in ``tmp_path``.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ibmonitor.distributed import (
    barrier,
    broadcast_object,
    gather_to_rank_zero,
    is_rank_zero,
    shard_slice,
    world_info,
)
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.sinks import RunStore

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )


# Spawn, never fork: the parent has started threads (torch's, TensorBoard's
# event writer) by the time a test starts its ranks.
_START_METHOD = "spawn"
#: Seconds the ranks may take before they are killed and the test fails.
_RANKS_TIMEOUT = 100


def _spawn(fn, *args, timeout: float = _RANKS_TIMEOUT) -> list:
    """Run ``fn(rank, port, *args)`` on WORLD_SIZE processes; never leave one behind.

    A rank that raises fails the test (the others are terminated); ranks still
    running after ``timeout`` seconds are killed, so a stuck rank cannot keep
    pytest from exiting. Returns the (ended) processes.
    """
    context = mp.start_processes(
        fn,
        args=(_free_port(), *args),
        nprocs=WORLD_SIZE,
        join=False,
        start_method=_START_METHOD,
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"The {WORLD_SIZE} ranks did not finish in {timeout} s."
                )
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(10)
    return context.processes


def _stuck_worker(rank: int, port: int) -> None:
    time.sleep(3600)  # a rank stuck for ever (a deadlock in a collective, say)


@pytest.mark.timeout(120)
def test_a_stuck_rank_cannot_keep_pytest_alive():
    """Issue 11: a stuck child is killed and the test fails instead of hanging."""
    started = time.monotonic()
    processes = []
    with pytest.raises(TimeoutError, match="did not finish"):
        _spawn_and_keep(processes, _stuck_worker, timeout=8)
    assert time.monotonic() - started < 60
    assert processes and not any(p.is_alive() for p in processes)


def _spawn_and_keep(keep: list, fn, *args, timeout: float) -> None:
    """``_spawn``, keeping the process objects even when it raises."""
    original = mp.start_processes

    def recording(*a, **k):
        context = original(*a, **k)
        keep.extend(context.processes)
        return context

    mp.start_processes = recording
    try:
        _spawn(fn, *args, timeout=timeout)
    finally:
        mp.start_processes = original


def _teardown() -> None:
    """End a rank cleanly: wait for every rank, collect garbage, drop the group.

    Destroying the process group while a DDP model's reducer still holds it can
    deadlock in gloo's worker threads (pytorch/pytorch#56297): callers drop
    their DDP model and monitor first, and ``gc.collect()`` frees them here.
    """
    try:
        torch.distributed.barrier()
    finally:
        gc.collect()
        torch.distributed.destroy_process_group()


# -- single process ----------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 7, 10, 64])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shard_slice_covers_in_order(n, world_size):
    slices = [shard_slice(n, rank, world_size) for rank in range(world_size)]
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the larger shards come first
    expected = [len(part) for part in np.array_split(np.arange(n), world_size)]
    assert sizes == expected


@pytest.mark.parametrize(
    ("n", "rank", "world_size", "match"),
    [
        (-1, 0, 1, "'n' parameter"),
        (4, 0, 0, "'world_size' parameter"),
        (4, 2, 2, "'rank' parameter"),
        (4, -1, 2, "'rank' parameter"),
        (4.0, 0, 1, "'n' parameter"),
        (4, True, 2, "'rank' parameter"),
    ],
)
def test_shard_slice_rejects_bad_parameters(n, rank, world_size, match):
    with pytest.raises(InvalidParameterError, match=match):
        shard_slice(n, rank, world_size)


def test_single_process_helpers_are_identities():
    assert world_info() == (0, 1)
    assert is_rank_zero()
    tensors = {"a": torch.arange(6.0).reshape(3, 2), "y": torch.arange(3)}
    out = gather_to_rank_zero(tensors)
    assert out is not tensors
    assert out.keys() == tensors.keys()
    assert all(out[k] is tensors[k] for k in tensors)
    assert broadcast_object({"x": 1}) == {"x": 1}
    barrier()  # no-op


def test_gather_rejects_bad_input():
    with pytest.raises(InvalidParameterError, match="dict of str to Tensor"):
        gather_to_rank_zero([torch.zeros(2)])
    with pytest.raises(InvalidParameterError, match="key 'a'"):
        gather_to_rank_zero({"a": np.zeros(2)})
    with pytest.raises(ValueError, match="no dimensions"):
        gather_to_rank_zero({"a": torch.tensor(1.0)})


# -- two processes: the helpers ---------------------------------------------
def _expected_full(n: int):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    conv = torch.arange(n * 2 * 2 * 2, dtype=torch.float64).reshape(n, 2, 2, 2)
    y = torch.arange(n, dtype=torch.int64) % 3
    return {"layer/a": x, "layer/conv": conv, "__y__": y}


def _helpers_worker(rank: int, port: int, out_dir: str) -> None:
    _init(rank, port)
    try:
        assert world_info() == (rank, WORLD_SIZE)
        assert is_rank_zero() == (rank == 0)
        for n in (7, 1, 0, 8):  # unequal shards, an empty shard, no samples
            full = _expected_full(n)
            part = shard_slice(n, rank, WORLD_SIZE)
            shard = {key: value[part] for key, value in full.items()}
            if rank == 1:  # another key order on another rank
                shard = dict(reversed(list(shard.items())))
            out = gather_to_rank_zero(shard)
            if rank == 0:
                assert list(out) == list(full)
                for key, value in full.items():
                    assert out[key].dtype == value.dtype
                    assert torch.equal(out[key], value), (n, key)
            else:
                assert out is None
        # a non-contiguous tensor
        full = torch.arange(20.0).reshape(5, 4).t()
        out = gather_to_rank_zero({"t": full[shard_slice(4, rank, WORLD_SIZE)]})
        if rank == 0:
            assert torch.equal(out["t"], full)

        # disagreements raise on every rank, and leave the group usable
        bad = {"a": torch.zeros(2, 3 + rank)}
        try:
            gather_to_rank_zero(bad)
        except ValueError as error:
            assert "inconsistent shapes" in str(error)
        else:
            raise AssertionError("no error for inconsistent shapes")
        try:
            gather_to_rank_zero({f"k{rank}": torch.zeros(2)})
        except ValueError as error:
            assert "different keys" in str(error)
        else:
            raise AssertionError("no error for different keys")
        try:
            gather_to_rank_zero(
                {"a": torch.zeros(2, dtype=[torch.float32, torch.float64][rank])}
            )
        except ValueError as error:
            assert "inconsistent dtypes" in str(error)
        else:
            raise AssertionError("no error for inconsistent dtypes")

        value = broadcast_object({"epochs": [0, 3], "rank": rank})
        assert value == {"epochs": [0, 3], "rank": 0}
        assert broadcast_object(f"from {rank}", src=1) == "from 1"
        barrier()
        with open(os.path.join(out_dir, f"ok{rank}"), "w") as handle:
            handle.write("ok")
    finally:
        _teardown()


@pytest.mark.timeout(120)
def test_gather_to_rank_zero_two_processes_gloo(tmp_path):
    _spawn(_helpers_worker, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok0", "ok1"]


# -- two processes: the monitor end to end -----------------------------------
N_PROBE = 63  # odd: the two shards differ in size (32 and 31)
EPOCHS = 4
SCHEDULE = [0, 2, 3]


def _probe():
    codes = torch.arange(64)
    x = ((codes[:, None] >> torch.arange(6)) & 1).to(torch.float32)
    y = ((x[:, 0] + x[:, 1] + x[:, 2] * x[:, 3] + x[:, 5]) % 2).to(torch.int64)
    return x[:N_PROBE], y[:N_PROBE]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 2),
    )


def _train_monitored(model, logdir, **extra):
    """Full-batch SGD for EPOCHS epochs with the monitor; the same on every rank."""
    from ibmonitor import InformationMonitor

    x, y = _probe()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = InformationMonitor(
        model,
        inputs=x,
        labels=y,
        estimators=("binned", "kde"),
        schedule=SCHEDULE,
        total_epochs=EPOCHS,
        logdir=logdir,
        sinks=[RunStore(store_activations=True)],
        strict=True,
        batch_size=16,
        **{"overhead_budget": None, **extra},
    )
    for epoch in range(EPOCHS):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        monitor.on_epoch_end(epoch, train_loss=loss.item())
    monitor.close()
    return monitor


def _monitor_worker(rank: int, port: int, out_dir: str, extra: dict) -> None:
    _init(rank, port)
    model = monitor = None
    try:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(_model())
        # Every rank passes the same arguments except the run directory, so the
        # test can tell that rank 1 writes nothing.
        logdir = os.path.join(out_dir, "ddp" if rank == 0 else "ddp-rank1")
        monitor = _train_monitored(model, logdir, **extra)
        with open(os.path.join(out_dir, f"recorded{rank}.txt"), "w") as handle:
            handle.write(repr(monitor.recorded_epochs))
        torch.save(
            model.module.state_dict(), os.path.join(out_dir, f"weights{rank}.pt")
        )
    finally:
        model = monitor = None  # release the reducer before the group
        _teardown()


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
@pytest.mark.parametrize(
    ("extra", "recorded"),
    [
        ({}, SCHEDULE),
        # A budget nothing fits in: only the first and the last epoch are
        # recorded, the same on every rank (rank 0 decides and broadcasts).
        ({"overhead_budget": 1e-9}, [0, 3]),
    ],
    ids=["default", "overhead_budget"],
)
def test_monitor_ddp_run_equals_single_process_run(tmp_path, extra, recorded):
    """Issue 3, section 4: 2 gloo ranks store the run one process stores."""
    import ibmonitor

    # The single-process run first, then the same training on 2 spawned ranks.
    single_model = _model()
    single_monitor = _train_monitored(single_model, tmp_path / "single", **extra)
    assert single_monitor.recorded_epochs == recorded
    _spawn(_monitor_worker, str(tmp_path), extra)
    for rank in range(WORLD_SIZE):
        assert (tmp_path / f"recorded{rank}.txt").read_text() == repr(recorded)

    assert not (tmp_path / "ddp-rank1").exists()  # other ranks write nothing
    # DDP training (identical data on both ranks) matches one process
    weights = torch.load(tmp_path / "weights0.pt")
    for key, value in single_model.state_dict().items():
        torch.testing.assert_close(weights[key], value)

    ddp, single = (
        ibmonitor.load_run(tmp_path / "ddp"),
        ibmonitor.load_run(tmp_path / "single"),
    )
    assert ddp.config["status"] == single.config["status"] == "finished"
    assert ddp.config["layers"] == single.config["layers"]
    assert ddp.config["probes"] == single.config["probes"]
    assert ddp.config["probes"]["default"]["n_samples"] == N_PROBE
    skipped = sorted(set(SCHEDULE) - set(recorded))
    assert ddp.config["skipped_epochs"] == single.config["skipped_epochs"] == skipped

    a, b = ddp.information, single.information
    assert len(a) == len(b) > 0
    keys = ["epoch", "probe", "layer", "estimator"]
    assert a[keys].astype(str).values.tolist() == b[keys].astype(str).values.tolist()
    assert sorted(a["epoch"].unique()) == recorded
    numeric = [c for c in a.columns if c not in keys and c != "run"]
    assert set(numeric) == {c for c in b.columns if c not in keys and c != "run"}
    # The shards run in other batches than the single pass, so activations may
    # differ in the last bits (float32 matmul blocking); the estimates agree.
    np.testing.assert_allclose(
        a[numeric].to_numpy(float), b[numeric].to_numpy(float), rtol=1e-5, atol=1e-6
    )

    scalars_a = ddp.scalars.sort_values(["epoch", "name"]).reset_index(drop=True)
    scalars_b = single.scalars.sort_values(["epoch", "name"]).reset_index(drop=True)
    assert scalars_a[["epoch", "name"]].equals(scalars_b[["epoch", "name"]])
    np.testing.assert_allclose(scalars_a["value"], scalars_b["value"], rtol=1e-6)

    # the gathered activations are the single process's, in the same order
    assert ddp.activation_epochs == single.activation_epochs == recorded
    for epoch in recorded:
        acts_a, acts_b = ddp.activations(epoch), single.activations(epoch)
        assert list(acts_a["default"]) == list(acts_b["default"])
        for layer, t in acts_b["default"].items():
            assert acts_a["default"][layer].shape == (N_PROBE, t.shape[1])
            np.testing.assert_allclose(
                acts_a["default"][layer], t, rtol=1e-5, atol=1e-6
            )
        np.testing.assert_array_equal(
            ddp.labels(epoch)["default"], single.labels(epoch)["default"]
        )
