"""The run directory's boundary: one writer, no writes through links, stale
temporaries removed, close() on a full disk.

Non-regression tests for the issue "Nothing lost, nothing hangs, nothing
outside the run".
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ibmonitor.storage import (
    LinkError,
    RunLockedError,
    RunWriter,
    StorageWarning,
    load_run,
)
from ibmonitor.storage import files as storage_files

ROWS = [{"epoch": 0, "layer": "fc1", "estimator": "binned", "i_xt": 1.0, "i_ty": 0.5}]
needs_symlinks = pytest.mark.skipif(
    not hasattr(os, "symlink") or sys.platform == "win32",
    reason="symbolic links need privileges on Windows",
)
needs_flock = pytest.mark.skipif(
    sys.platform == "win32", reason="the two-process tests use POSIX signals"
)

# A child process (started fresh, never forked) that opens a writer, says
# "ready", then waits on its stdin: closing stdin closes the writer.
HOLDER = textwrap.dedent(
    """
    import sys
    from ibmonitor.storage import RunWriter
    writer = RunWriter(sys.argv[1], resume=True)
    writer.append_scalars(0, {"loss": 1.0})
    print("ready", flush=True)
    sys.stdin.read()
    writer.close()
    """
)

# A child that tries to create a new run once a start file appears.
RACER = textwrap.dedent(
    """
    import os, sys, time
    from ibmonitor.storage import RunLockedError, RunWriter
    path, go = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        with RunWriter(path) as writer:
            for epoch in range(20):
                writer.append_scalars(epoch, {"who": float(os.getpid())})
    except (RunLockedError, FileExistsError) as err:
        print(type(err).__name__, flush=True)
    else:
        print("ok", flush=True)
    """
)


def _start_holder(path: Path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline()
    assert line.strip() == "ready", line
    return child


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(timeout=30)
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


# ---------------------------------------------------------------- one writer
def test_second_writer_in_the_same_process_is_refused(tmp_path):
    path = tmp_path / "r"
    first = RunWriter(path)
    try:
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(RunLockedError, match="another live writer") as info:
                RunWriter(path, **kwargs)
            message = str(info.value)
            assert str(path) in message
            assert f"pid {os.getpid()}" in message
            assert socket.gethostname() in message
        with pytest.raises(RunLockedError, match="one writer at a time"):
            RunWriter.append_to(path)
        first.append_scalars(0, {"loss": 1.0})  # the first writer is unharmed
    finally:
        first.close()
    with RunWriter(path, resume=True) as second:
        assert second.last_epoch == 0
    assert not (path / storage_files.LOCK_FILE).exists()


def test_append_to_holds_the_lock_too(tmp_path):
    path = tmp_path / "r"
    RunWriter(path).close()
    with RunWriter.append_to(path) as appender:
        with pytest.raises(RunLockedError):
            RunWriter(path, resume=True)
        with pytest.raises(RunLockedError):
            RunWriter.append_to(path)
        appender.append_information(ROWS)
    with RunWriter.append_to(path) as appender:
        assert appender.last_epoch == 0


def test_a_refused_or_failed_open_leaves_no_lock(tmp_path):
    path = tmp_path / "r"
    RunWriter(path).close()
    with pytest.raises(FileExistsError):
        RunWriter(path)
    with RunWriter(path, resume=True):
        pass
    (path / "run.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version"):
        RunWriter(path, resume=True)
    with pytest.raises(ValueError, match="schema_version"):
        RunWriter.append_to(path)
    RunWriter(path, overwrite=True).close()


@needs_flock
def test_second_writer_in_another_process_is_refused_until_it_ends(tmp_path):
    path = tmp_path / "r"
    RunWriter(path).close()
    child = _start_holder(path)
    try:
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(RunLockedError, match=f"pid {child.pid} on host"):
                RunWriter(path, **kwargs)
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            RunWriter.append_to(path)
        child.stdin.close()  # the child closes its writer and exits
        assert child.wait(timeout=60) == 0
    finally:
        _stop(child)
    with RunWriter(path, resume=True) as writer:
        assert writer.last_epoch == 0
    assert load_run(path).status == "finished"


@needs_flock
def test_a_killed_writer_never_blocks_a_resume(tmp_path):
    path = tmp_path / "r"
    RunWriter(path).close()
    child = _start_holder(path)
    try:
        with pytest.raises(RunLockedError):
            RunWriter(path, resume=True)
        child.kill()  # SIGKILL: the operating system releases the lock
        child.wait(timeout=30)
    finally:
        _stop(child)
    assert (path / storage_files.LOCK_FILE).exists()  # left by the killed child
    assert load_run(path).status == "crashed"
    with RunWriter(path, resume=True) as writer:
        writer.append_scalars(1, {"loss": 0.5})
    assert load_run(path).scalars["epoch"].tolist() == [0, 1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_releases_the_parents_lock(tmp_path):
    """A DataLoader worker forked from the training process shares the lock."""
    path = tmp_path / "r"
    with RunWriter(path) as writer:
        pid = os.fork()
        if pid == 0:  # the child: drop its copy of the lock, exit at once
            try:
                writer._run_lock.release()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert (path / storage_files.LOCK_FILE).exists()
        with pytest.raises(RunLockedError):
            RunWriter(path, resume=True)


@needs_flock
def test_racing_writers_on_a_new_directory_only_one_wins(tmp_path):
    path, go = tmp_path / "race", tmp_path / "go"
    children = []
    try:
        for _ in range(6):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, str(path), str(go)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        time.sleep(1.0)  # let every child reach its wait loop
        go.touch()
        outcomes = [child.communicate(timeout=120)[0].strip() for child in children]
    finally:
        for child in children:
            _stop(child)
    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) <= {"ok", "RunLockedError", "FileExistsError"}
    scalars = load_run(path).scalars
    assert len(scalars) == 20
    assert scalars["value"].nunique() == 1  # rows of one writer, not interleaved


# ---------------------------------------------------------- never via a link
@needs_symlinks
@pytest.mark.parametrize("name", ["information.csv", "scalars.csv", "run.json"])
def test_resume_refuses_a_symlinked_file_and_leaves_the_target_alone(tmp_path, name):
    path = tmp_path / "r"
    with RunWriter(path) as writer:
        writer.append_information(ROWS)
        writer.append_scalars(0, {"loss": 1.0})
    outside = tmp_path / f"outside-{name}"
    outside.write_bytes((path / name).read_bytes() + b"partial")
    before = outside.read_bytes()
    (path / name).unlink()
    (path / name).symlink_to(outside)
    for open_run in (
        lambda: RunWriter(path, resume=True),
        lambda: RunWriter.append_to(path),
    ):
        with pytest.raises(LinkError, match="symbolic link") as info:
            open_run()
        assert str(path / name) in str(info.value)
        assert isinstance(info.value, OSError)
        assert isinstance(info.value, ValueError)
        assert info.value.errno == errno.ELOOP
    assert outside.read_bytes() == before
    assert not (path / storage_files.LOCK_FILE).exists()  # the lock was released


@needs_symlinks
def test_a_table_replaced_by_a_link_while_open_is_not_written_through(tmp_path):
    """Appends go to the file opened at start, never to a later link."""
    path = tmp_path / "r"
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"keep\n")
    with RunWriter(path) as writer:
        (path / "scalars.csv").rename(path / "moved.csv")
        (path / "scalars.csv").symlink_to(outside)
        writer.append_scalars(0, {"loss": 1.0})
    assert outside.read_bytes() == b"keep\n"


@needs_symlinks
def test_update_config_refuses_a_symlinked_run_json(tmp_path):
    path = tmp_path / "r"
    outside = tmp_path / "outside.json"
    with RunWriter(path) as writer:
        outside.write_bytes((path / "run.json").read_bytes())
        (path / "run.json").unlink()
        (path / "run.json").symlink_to(outside)
        with pytest.raises(LinkError, match=r"run\.json"):
            writer.update_config(note="x")
        (path / "run.json").unlink()
        (path / "run.json").write_bytes(outside.read_bytes())
    assert "note" not in json.loads(outside.read_text())


@needs_symlinks
def test_activations_never_go_through_a_link(tmp_path):
    path = tmp_path / "r"
    outside = tmp_path / "outside"
    outside.mkdir()
    acts = {"train": {"fc1": np.ones((2, 2))}}
    with RunWriter(path) as writer:
        (path / "activations").symlink_to(outside, target_is_directory=True)
        with pytest.raises(LinkError, match="activations"):
            writer.save_activations(0, acts)
        (path / "activations").unlink()
        writer.save_activations(0, acts)
        target = path / "activations" / "epoch_000001.npz"
        (outside / "kept.npz").write_bytes(b"not ours")
        target.symlink_to(outside / "kept.npz")
        with pytest.raises(LinkError, match=r"epoch_000001\.npz"):
            writer.save_activations(1, acts)
    assert list(outside.iterdir()) == [outside / "kept.npz"]
    assert (outside / "kept.npz").read_bytes() == b"not ours"
    assert not list((path / "activations").glob(".*tmp-*"))


@needs_symlinks
def test_temporary_files_are_never_opened_through_a_link(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    tmp = tmp_path / "planted"
    tmp.symlink_to(outside)
    with pytest.raises(LinkError):
        storage_files.open_for_write(tmp, "xb")
    with pytest.raises(LinkError):
        storage_files.open_for_write(tmp, "ab")
    assert outside.read_bytes() == b"keep"


@needs_symlinks
def test_a_symlinked_lock_file_is_refused(tmp_path):
    path = tmp_path / "r"
    path.mkdir()
    (path / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LinkError, match=r"\.lock"):
        RunWriter(path)
    assert not (tmp_path / "elsewhere").exists()


@needs_symlinks
def test_reading_through_a_link_warns_and_reads(tmp_path):
    path = tmp_path / "r"
    with RunWriter(path) as writer:
        writer.append_information(ROWS)
        writer.append_scalars(0, {"loss": 1.0})
        writer.save_activations(0, {"train": {"fc1": np.ones((2, 2))}})
    store = tmp_path / "store"
    store.mkdir()
    for name in ("run.json", "information.csv", "scalars.csv"):
        (path / name).rename(store / name)
        (path / name).symlink_to(store / name)
    (path / "activations").rename(store / "activations")
    (path / "activations").symlink_to(store / "activations", target_is_directory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(path)
        assert run.information["i_xt"].tolist() == [1.0]
        assert run.scalars["value"].tolist() == [1.0]
        assert run.activations(0)["train"]["fc1"].shape == (2, 2)
    messages = [str(w.message) for w in caught if w.category is StorageWarning]
    for name in ("run.json", "information.csv", "scalars.csv", "activations"):
        assert any(str(path / name) in m and "symbolic link" in m for m in messages), (
            name
        )


# ----------------------------------------------------------- stale temporaries
@pytest.mark.parametrize("how", ["resume", "append_to"])
def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path, how):
    path = tmp_path / "r"
    with RunWriter(path) as writer:
        writer.save_activations(0, {"train": {"fc1": np.ones((2, 2))}})
    ours = [
        path / ".run.json.tmp-123-abc",
        path / "activations" / ".epoch_000003.npz.tmp-123-def",
    ]
    theirs = [
        path / ".notes.txt.tmp-1-x",
        path / "notes.tmp-1",
        path / "activations" / ".mine.npz.tmp-1-y",
        path / "activations" / "epoch_000009.npz.tmp-1",
    ]
    for p in ours + theirs:
        p.write_bytes(b"half")
    if how == "resume":
        RunWriter(path, resume=True).close()
    else:
        RunWriter.append_to(path).close()
    assert [p for p in ours if p.exists()] == []
    assert [p for p in theirs if not p.exists()] == []
    assert load_run(path).activation_epochs == [0]


# ---------------------------------------------------------------- full disk
def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_close_on_a_full_disk_closes_everything_and_raises_once(tmp_path, monkeypatch):
    path = tmp_path / "r"
    writer = RunWriter(path)
    writer.append_scalars(0, {"loss": 1.0}, sync=False)
    tables = [writer._information, writer._scalars]
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(OSError, match="Closing the run") as info:
        writer.close()
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value)
    assert "information.csv" in str(info.value)
    assert "scalars.csv" in str(info.value)
    assert "run.json" in str(info.value)
    assert all(table.closed for table in tables)
    assert writer.closed
    writer.close()  # nothing more to do, nothing raised
    assert not list(path.glob(".run.json.tmp-*"))
    # run.json could not be rewritten: still "running", which readers show as
    # crashed once the writer process is gone; the lock was released.
    assert json.loads((path / "run.json").read_text())["status"] == "running"
    with RunWriter(path, resume=True) as again:
        assert again.last_epoch == 0


def test_close_writes_the_status_when_only_the_tables_fail(tmp_path, monkeypatch):
    path = tmp_path / "r"
    writer = RunWriter(path)
    writer.append_scalars(0, {"loss": 1.0})
    table_files = {
        (st.st_dev, st.st_ino)
        for st in (os.stat(path / n) for n in ("information.csv", "scalars.csv"))
    }
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in table_files:
            _full_disk()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=r"closing information\.csv") as info:
        writer.close("crashed")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert "run.json" not in str(info.value)
    assert writer._information.closed and writer._scalars.closed
    assert json.loads((path / "run.json").read_text())["status"] == "crashed"
    assert load_run(path).scalars["value"].tolist() == [1.0]


def _monitored_run(path, **kwargs):
    import torch

    from ibmonitor import InformationMonitor
    from ibmonitor.sinks import RunStore

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    monitor = InformationMonitor(
        model,
        x,
        y,
        layers=["1"],
        estimators=["binned"],
        schedule=lambda e: True,
        overhead_budget=None,
        sinks=[RunStore(path)],
        **kwargs,
    )
    monitor.on_epoch_end(0, train_loss=1.0)
    monitor.on_epoch_end(1, train_loss=0.5)
    return monitor


def test_monitor_close_on_a_full_disk_does_not_raise_and_says_why(
    tmp_path, monkeypatch
):
    """Issue 11: close() never raises without strict; run.json tells what failed."""
    path = tmp_path / "r"
    monitor = _monitored_run(path)
    table_files = {
        (st.st_dev, st.st_ino)
        for st in (os.stat(path / n) for n in ("information.csv", "scalars.csv"))
    }
    real_fsync = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in table_files:
            _full_disk()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.warns(UserWarning, match="failed to close"):
        monitor.close()  # no exception
    monkeypatch.undo()
    stored = json.loads((path / "run.json").read_text())
    assert stored["status"] == "finished"
    where = [e["where"] for e in stored["errors"]]
    assert "closing information.csv" in where and "closing scalars.csv" in where
    assert any("No space left" in e["message"] for e in stored["errors"])
    assert sorted(set(load_run(path).scalars.epoch)) == [0, 1]


def test_monitor_close_when_nothing_can_be_written(tmp_path, monkeypatch):
    path = tmp_path / "r"
    monitor = _monitored_run(path)
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.warns(UserWarning, match="failed to close"):
        monitor.close()
    monkeypatch.undo()
    # run.json could not be rewritten: it still says "running" (a reader
    # reports "crashed" once the process is gone), the lock is released and
    # the run resumes at once with everything written before.
    assert json.loads((path / "run.json").read_text())["status"] == "running"
    with RunWriter(path, resume=True) as again:
        assert again.last_epoch == 1
