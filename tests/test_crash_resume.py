"""Issue 11: a monitored training process killed at random points loses nothing.

A child process trains a small network under an :class:`InformationMonitor`
(synchronous or with a background worker, activations stored) and writes the
last epoch whose ``on_epoch_end`` returned to a marker file. The test kills it
with ``SIGKILL`` at a random moment, then checks what the guarantee of
docs/storage.md promises:

- every epoch whose ``on_epoch_end`` returned has its scalars on disk;
- resuming completes the epochs whose activations were spooled (background)
  and removes the rows of an epoch cut mid-write, so that every stored epoch is
  whole: a recorded epoch has its scalars, one row per layer and estimator,
  and its archive;
- no temporary file is left, and training continues after the resume.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ibmonitor import InformationMonitor
from ibmonitor.sinks import RunStore
from ibmonitor.storage import files as storage_files
from ibmonitor.storage import load_run

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["1", "3"]

#: The child: a tanh MLP on random bits, every epoch recorded, scalars each
#: epoch, the marker rewritten (atomically) after each ``on_epoch_end``.
CHILD = textwrap.dedent(
    """
    import os, sys
    import torch
    from ibmonitor import InformationMonitor
    from ibmonitor.executor import BackgroundExecutor
    from ibmonitor.sinks import RunStore
    path, marker, background = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 10), torch.nn.Tanh(), torch.nn.Linear(10, 2),
        torch.nn.Tanh())
    x = torch.randint(0, 2, (512, 12)).float()
    y = (x.sum(1) > 6).long()
    monitor = InformationMonitor(
        model, x, y, layers=["1", "3"], estimators=["binned"],
        schedule=lambda epoch: True, overhead_budget=None,
        sinks=[RunStore(path, store_activations=True)],
        background=BackgroundExecutor(queue_size=4) if background else False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(100000):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        monitor.on_epoch_end(epoch, train_loss=float(loss))
        with open(marker + ".tmp", "w") as fh:
            fh.write(str(epoch))
        os.replace(marker + ".tmp", marker)
    """
)


def _setup():
    """The child's model and probe set, drawn in the same order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 10),
        torch.nn.Tanh(),
        torch.nn.Linear(10, 2),
        torch.nn.Tanh(),
    )
    x = torch.randint(0, 2, (512, 12)).float()
    return model, x, (x.sum(1) > 6).long()


def _kill_at_random(path: Path, marker: Path, background: bool, delay: float) -> int:
    """Run the child, kill it ``delay`` s after its first epoch; return the marker."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(marker),
            "1" if background else "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read().decode()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("the training child made no progress")
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return int(marker.read_text())


def _temporaries(path: Path):
    return sorted(p.name for p in path.rglob("*") if storage_files.TMP_MARK in p.name)


def _check_whole(path: Path, finished: int) -> int:
    """Every stored epoch is whole; every finished epoch is stored. Return the last."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a partial last line is reported
        run = load_run(path)
        info, scalars = run.information, run.scalars
    stored = sorted(set(scalars.epoch))
    assert stored == list(range(len(stored))), "an epoch is missing in the middle"
    assert stored[-1] >= finished
    per_epoch = info.groupby("epoch").size()
    for epoch in stored:
        assert per_epoch.get(epoch, 0) == len(LAYERS), f"epoch {epoch} rows"
    assert sorted(info.epoch.unique()) == stored
    assert run.activation_epochs == stored
    assert (scalars.groupby("epoch").size() >= 1).all()
    return stored[-1]


def _resume_and_continue(path: Path, last: int) -> None:
    model, x, y = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor = InformationMonitor(
            model,
            x,
            y,
            layers=LAYERS,
            estimators=["binned"],
            schedule=lambda epoch: True,
            overhead_budget=None,
            sinks=[RunStore(path, store_activations=True, resume=True)],
        )
        assert monitor.errors == []
        for epoch in range(last + 1, last + 3):
            monitor.on_epoch_end(epoch, train_loss=0.5)
        monitor.close()


def _one_kill(tmp_path: Path, background: bool, delay: float) -> None:
    path, marker = tmp_path / "run", tmp_path / "done"
    finished = _kill_at_random(path, marker, background, delay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scalars = load_run(path).scalars
    # the guarantee at the moment of the kill: every returned epoch's scalars
    assert set(range(finished + 1)) <= set(scalars.epoch)
    _resume_and_continue(path, _last_stored(path))
    last = _check_whole(path, finished)
    assert _temporaries(path) == []
    assert list((path / storage_files.PENDING_DIR).glob("*")) == []
    assert load_run(path).status == "finished"
    assert last >= finished + 2


def _last_stored(path: Path) -> int:
    from ibmonitor.storage import RunWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer = RunWriter(path, resume=True)
        last = writer.last_epoch
        writer.close("crashed")
    return last


@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_killed_training_loses_no_finished_epoch(tmp_path, background, seed):
    delay = random.Random(seed * 2 + background).uniform(0.05, 1.0)
    _one_kill(tmp_path, background, delay)


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
@pytest.mark.parametrize("seed", range(2, 22))
def test_many_random_kills(tmp_path, background, seed):
    delay = random.Random(seed * 2 + background).uniform(0.0, 2.0)
    _one_kill(tmp_path, background, delay)


# -- the repair itself, state by state ---------------------------------------------


def _journaled_run(path: Path, *, spool: bool, done: bool):
    """A run with whole epochs 0 and 1 and epoch 2 begun with partial rows."""
    from ibmonitor.storage import RunWriter

    writer = RunWriter(path, {"seed": 0})
    for epoch in range(3):
        writer.begin_epoch(epoch)
        writer.append_scalars(epoch, {"train_loss": 1.0 / (epoch + 1)})
        if epoch == 2 and spool:
            writer.save_pending(epoch, {"p": {"fc": np.zeros((4, 2))}})
        writer.append_information(
            [{"epoch": epoch, "layer": "fc", "estimator": "binned", "i_xt": 1.0}]
        )
        if epoch < 2 or done:
            writer.end_epoch(epoch)
    writer._run_lock.release()  # as a killed process would leave it
    return writer


def test_resume_removes_an_epoch_cut_before_on_epoch_end_returned(tmp_path):
    from ibmonitor.storage import RunWriter

    _journaled_run(tmp_path / "r", spool=False, done=False)
    writer = RunWriter(tmp_path / "r", resume=True)
    assert writer.last_epoch == 1 and writer.pending == []
    writer.close()
    run = load_run(tmp_path / "r")
    assert sorted(run.scalars.epoch) == [0, 1]
    assert sorted(run.information.epoch) == [0, 1]


def test_resume_keeps_the_scalars_of_a_spooled_epoch(tmp_path):
    from ibmonitor.storage import RunWriter

    _journaled_run(tmp_path / "r", spool=True, done=False)
    writer = RunWriter(tmp_path / "r", resume=True)
    assert writer.last_epoch == 2 and writer.pending == [2]
    arrays = writer.read_pending(2)
    assert arrays["p"]["fc"].shape == (4, 2)
    writer.append_information(
        [{"epoch": 2, "layer": "fc", "estimator": "binned", "i_xt": 2.0}]
    )
    writer.end_epoch(2)
    assert writer.pending == []
    writer.close()
    run = load_run(tmp_path / "r")
    assert sorted(run.scalars.epoch) == [0, 1, 2]
    info = run.information
    assert info.set_index("epoch").i_xt.to_dict() == {0: 1.0, 1: 1.0, 2: 2.0}
    assert not list((tmp_path / "r" / storage_files.PENDING_DIR).glob("*.npz"))


def test_resume_drops_the_spool_of_a_done_epoch(tmp_path):
    from ibmonitor.storage import RunWriter

    path = tmp_path / "r"
    _journaled_run(path, spool=True, done=True)
    # killed between the journal line and the spool's removal: put it back
    assert not (path / storage_files.PENDING_DIR / "epoch_000002.npz").exists()
    folder = path / storage_files.PENDING_DIR
    np.savez(folder / "epoch_000002.npz", **{"p/fc": np.zeros((4, 2))})
    writer = RunWriter(path, resume=True)
    assert writer.last_epoch == 2 and writer.pending == []
    writer.close()
    assert not list(folder.glob("*.npz"))
    assert sorted(load_run(path).information.epoch) == [0, 1, 2]


def test_writers_without_a_journal_resume_as_before(tmp_path):
    from ibmonitor.storage import RunWriter

    with RunWriter(tmp_path / "r") as writer:
        writer.append_scalars(0, {"a": 1.0})
        writer.append_scalars(1, {"a": 2.0})
    assert not (tmp_path / "r" / storage_files.EPOCHS_FILE).exists()
    writer = RunWriter(tmp_path / "r", resume=True)
    assert writer.last_epoch == 1
    writer.close()
