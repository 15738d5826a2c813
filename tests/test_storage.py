"""Tests of the run store: RunWriter, load_run, load_runs (issue 3, section 2)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

import ibmonitor
from ibmonitor import storage
from ibmonitor.exceptions import IBMonitorWarning, InvalidParameterError
from ibmonitor.storage import (
    Run,
    Runs,
    RunWriter,
    StorageWarning,
    load_run,
    load_runs,
    run_directory,
    safe_name,
)

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 3,
    "layers": {"fc2": {"n_units": 2}, "fc1": {"n_units": 3}},
    "estimators": [{"name": "kde", "params": {}}, {"name": "binned", "params": {}}],
    "probes": {"train": {"n_samples": 4}, "test": {"n_samples": 4}},
}


def rows_for(
    epoch, *, layers=("fc1", "fc2"), probes=("train",), estimators=("binned",)
):
    return [
        {
            "epoch": epoch,
            "probe": p,
            "layer": layer,
            "estimator": est,
            "i_xt": epoch + 0.25,
            "i_ty": 0.5,
            "h_t": 1.0 / 3.0,
        }
        for p in probes
        for layer in layers
        for est in estimators
    ]


def write_run(path, epochs=3, **kwargs):
    with RunWriter(path, CONFIG, **kwargs) as writer:
        for epoch in range(epochs):
            writer.append_information(rows_for(epoch))
            writer.append_scalars(epoch, {"train_loss": 1.0 / (epoch + 1)})
    return path


# -- writing and reading --------------------------------------------------------


def test_round_trip_wide_long_and_config(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, CONFIG) as writer:
        writer.append_information(
            rows_for(0, probes=("test", "train"), estimators=("binned", "kde"))
        )
        writer.append_information(
            [
                {
                    "epoch": 1,
                    "probe": "train",
                    "layer": "fc1",
                    "estimator": "binned",
                    "i_xt": math.nan,
                    "i_ty": math.inf,
                    "h_t": np.float32(0.1),
                    "extra": None,
                }
            ]
        )
        writer.append_scalars(0, {"train_loss": 0.1 + 0.2, "gap/loss": torch.tensor(2)})
    run = load_run(path)
    assert isinstance(run, Run) and isinstance(run.path, Path)
    info = run.information
    assert list(info.columns) == [
        "epoch",
        "probe",
        "layer",
        "estimator",
        "i_xt",
        "i_ty",
        "h_t",
        "extra",
    ]
    first = info[info.epoch == 0]
    # Order from the config: probes train, test; layers fc2, fc1; kde, binned.
    assert list(first.probe) == ["train"] * 4 + ["test"] * 4
    assert list(first.layer[:4]) == ["fc2", "fc2", "fc1", "fc1"]
    assert list(first.estimator[:2]) == ["kde", "binned"]
    assert (first.i_xt == 0.25).all() and (first.h_t == 1.0 / 3.0).all()
    last = info[info.epoch == 1].iloc[0]
    assert math.isnan(last.i_xt) and last.i_ty == math.inf
    assert last.h_t == float(np.float32(0.1)) and math.isnan(last.extra)
    assert info.epoch.dtype == np.int64
    long = run.information_long
    assert list(long.columns) == list(storage.INFORMATION_COLUMNS)
    assert len(long) == 8 * 3 + 4
    scalars = run.scalars
    assert list(scalars.columns) == ["epoch", "name", "value"]
    assert scalars.value.tolist() == [0.1 + 0.2, 2.0]  # exact round trip
    config = run.config
    assert config["schema_version"] == storage.SCHEMA_VERSION == 1
    assert config["status"] == "finished" and run.status == "finished"
    assert config["seed"] == 3 and config["name"] == "run" == run.name
    assert set(config["versions"]) >= {"ibmonitor", "torch", "python", "numpy"}
    assert config["started"] and config["ended"]
    assert list(config["layers"]) == ["fc2", "fc1"]


def test_empty_run_has_typed_empty_frames(tmp_path):
    with RunWriter(tmp_path / "r", {}):
        pass
    run = load_run(tmp_path / "r")
    assert run.information.empty
    assert list(run.information.columns)[:6] == [
        "epoch",
        "probe",
        "layer",
        "estimator",
        "i_xt",
        "i_ty",
    ]
    assert run.scalars.empty and run.activation_epochs == []


def test_header_written_once_and_resume_appends(tmp_path):
    path = write_run(tmp_path / "r", epochs=2)
    writer = RunWriter(path, {"note": "second part"}, resume=True)
    assert writer.last_epoch == 1
    assert load_run(path).config["status"] == "running"
    writer.append_information(rows_for(2))
    writer.append_scalars(2, {"train_loss": 0.1})
    writer.close()
    text = (path / "information.csv").read_text()
    assert text.count("epoch,probe") == 1
    assert (path / "scalars.csv").read_text().count("epoch,name") == 1
    run = load_run(path)
    assert sorted(run.information.epoch.unique()) == [0, 1, 2]
    assert run.config["note"] == "second part" and run.config["seed"] == 3
    assert len(run.config["resumed"]) == 1 and run.status == "finished"
    assert RunWriter(path, resume=True).last_epoch == 2


def test_resume_on_missing_directory_starts_a_new_run(tmp_path):
    writer = RunWriter(tmp_path / "new", resume=True)
    assert writer.last_epoch is None
    writer.close()


def test_existing_run_is_an_error_without_resume_or_overwrite(tmp_path):
    path = write_run(tmp_path / "r")
    with pytest.raises(FileExistsError, match="resume=True"):
        RunWriter(path)
    with pytest.raises(InvalidParameterError, match="resume"):
        RunWriter(path, resume=True, overwrite=True)
    # An unrelated non-empty folder is fine.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    RunWriter(tmp_path / "other").close()


def test_overwrite_removes_only_the_run_store_files(tmp_path):
    path = tmp_path / "r"
    with RunWriter(path, CONFIG) as writer:
        writer.append_information(rows_for(0))
        writer.save_activations(0, {"train": {"fc1": np.ones((4, 3))}})
    (path / "notes.txt").write_text("keep me")
    (path / "activations" / "mine.npy").write_bytes(b"keep")
    (path / "events.out.tfevents.1").write_bytes(b"tb")
    with RunWriter(path, {"seed": 9}, overwrite=True):
        pass
    run = load_run(path)
    assert run.information.empty and run.activation_epochs == []
    assert run.config["seed"] == 9
    assert (path / "notes.txt").read_text() == "keep me"
    assert (path / "activations" / "mine.npy").exists()
    assert (path / "events.out.tfevents.1").exists()


def test_overwrite_does_not_follow_a_symlinked_activations_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "epoch_000000.npz").write_bytes(b"not ours")
    path = tmp_path / "r"
    RunWriter(path).close()
    (path / "activations").symlink_to(outside, target_is_directory=True)
    RunWriter(path, overwrite=True).close()
    assert (outside / "epoch_000000.npz").read_bytes() == b"not ours"


def test_managed_keys_and_closed_writer(tmp_path):
    with pytest.raises(InvalidParameterError, match="status"):
        RunWriter(tmp_path / "a", {"status": "finished"})
    writer = RunWriter(tmp_path / "b")
    with pytest.raises(InvalidParameterError, match="started"):
        writer.update_config(started="now")
    with pytest.raises(InvalidParameterError, match="status"):
        writer.close(status="done")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.append_scalars(0, {"a": 1.0})


def test_context_manager_marks_crashed_on_exception(tmp_path):
    with pytest.raises(RuntimeError), RunWriter(tmp_path / "r") as writer:
        writer.append_scalars(0, {"loss": 1.0})
        raise RuntimeError("training failed")
    assert load_run(tmp_path / "r").status == "crashed"


def test_bad_rows_are_rejected_with_the_key_named(tmp_path):
    writer = RunWriter(tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="'epoch'"):
        writer.append_scalars(-1, {"a": 1.0})
    with pytest.raises(InvalidParameterError, match="'a'"):
        writer.append_scalars(0, {"a": "high"})
    with pytest.raises(InvalidParameterError, match=r"\['layer'\]"):
        writer.append_information([{"epoch": 0, "estimator": "binned"}])
    with pytest.raises(InvalidParameterError, match="layer name"):
        writer.append_information([{"epoch": 0, "layer": 3, "estimator": "b"}])
    writer.close()
    assert load_run(tmp_path / "r").scalars.empty


def test_update_config_is_atomic_and_survives_a_failed_rename(tmp_path, monkeypatch):
    writer = RunWriter(tmp_path / "r", CONFIG)
    writer.update_config(skipped_epochs=[4, 8])
    before = (tmp_path / "r" / "run.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        writer.update_config(skipped_epochs=[1])
    monkeypatch.undo()
    assert (tmp_path / "r" / "run.json").read_bytes() == before
    assert json.loads(before)["skipped_epochs"] == [4, 8]
    # No temporary left behind (.lock is the writer's lock file, kept).
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        ".lock",
        "information.csv",
        "run.json",
        "scalars.csv",
    ]
    writer.close()


def test_every_append_is_fsynced_before_returning(tmp_path, monkeypatch):
    writer = RunWriter(tmp_path / "r")
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    writer.append_information(rows_for(0))
    assert len(calls) == 1
    writer.append_scalars(0, {"a": 1.0})
    assert len(calls) == 2
    writer.close()


# -- crash safety -------------------------------------------------------------------


def test_partial_last_line_is_skipped_with_a_warning(tmp_path):
    path = write_run(tmp_path / "r", epochs=2)
    with open(path / "information.csv", "ab") as fh:
        fh.write(b"2,train,fc1,binn")
    with open(path / "scalars.csv", "ab") as fh:
        fh.write(b"1,bad line with,too,many,fields\n2,train_lo")
    run = load_run(path)
    with pytest.warns(StorageWarning, match="partially written last line"):
        info = run.information
    assert sorted(info.epoch.unique()) == [0, 1]
    with pytest.warns(StorageWarning, match="line 4 with 5 fields"):
        scalars = run.scalars
    assert scalars.epoch.tolist() == [0, 1]
    assert issubclass(StorageWarning, IBMonitorWarning)


def test_resume_cuts_a_partial_last_line_before_appending(tmp_path):
    path = write_run(tmp_path / "r", epochs=2)
    with open(path / "information.csv", "ab") as fh:
        fh.write(b"2,train,fc1,binn")
    with pytest.warns(StorageWarning, match="partially written"):
        writer = RunWriter(path, resume=True)
    assert writer.last_epoch == 1
    writer.append_information(rows_for(2))
    writer.close()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = load_run(path).information
    assert sorted(info.epoch.unique()) == [0, 1, 2] and len(info) == 6


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time, types
    path, marker, package = sys.argv[1], sys.argv[2], sys.argv[3]
    # Load ibmonitor.storage without the package's __init__ (which imports
    # torch), so that the subprocess starts fast.
    stub = types.ModuleType("ibmonitor")
    stub.__path__ = [package]
    stub.__version__ = "test"
    sys.modules["ibmonitor"] = stub
    from ibmonitor.storage import RunWriter
    writer = RunWriter(path, {"layers": {"fc1": {}, "fc2": {}}})
    epoch = 0
    while True:
        writer.append_information([
            {"epoch": epoch, "layer": layer, "estimator": "binned",
             "i_xt": float(epoch), "i_ty": 0.5} for layer in ("fc1", "fc2")])
        writer.append_scalars(epoch, {"train_loss": 1.0 / (epoch + 1)})
        with open(marker + ".tmp", "w") as fh:
            fh.write(str(epoch))
        os.replace(marker + ".tmp", marker)
        epoch += 1
        time.sleep(0.005)
    """
)


def test_sigkill_mid_training_leaves_every_completed_epoch(tmp_path):
    path, marker = tmp_path / "run", tmp_path / "done"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_WRITER,
            str(path),
            str(marker),
            str(REPO / "ibmonitor"),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if marker.exists() and int(marker.read_text() or 0) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read().decode())
            time.sleep(0.02)
        else:
            pytest.fail("the writer subprocess made no progress")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    completed = int(marker.read_text())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StorageWarning)  # a write may be cut short
        run = load_run(path)
        info, scalars = run.information, run.scalars
    epochs = sorted(info.epoch.unique())
    assert epochs[: completed + 1] == list(range(completed + 1))
    assert set(scalars.epoch) >= set(range(completed + 1))
    done = info[info.epoch <= completed]
    assert len(done) == 2 * (completed + 1)
    assert (done.i_xt == done.epoch).all()
    assert run.config["status"] == "running"  # stored as left by the writer
    assert run.status == "crashed"  # the writer process is gone
    with pytest.warns(StorageWarning) if _partial(path) else nullcontext():
        RunWriter(path, resume=True).close()


def _partial(path):
    return any(
        not (path / f).read_bytes().endswith(b"\n")
        for f in ("information.csv", "scalars.csv")
    )


# -- activations ----------------------------------------------------------------------


def test_activations_float16_and_pickle_free(tmp_path):
    path = tmp_path / "r"
    t = np.linspace(-1, 1, 12, dtype=np.float64).reshape(4, 3)
    with RunWriter(path, CONFIG) as writer:
        target = writer.save_activations(
            7,
            {
                "train": {
                    "fc1": torch.tensor(t),
                    "fc2": t[:, :2],
                    "conv": np.ones((4, 2, 2)),
                }
            },
            labels={"train": torch.tensor([0, 1, 1, 0])},
            inputs={"train": np.arange(8).reshape(4, 2, 1).astype(np.float32)},
            float16=True,
        )
        writer.save_activations(9, {"train": {"fc1": t}})
    assert target == path / "activations" / "epoch_000007.npz"
    with np.load(target, allow_pickle=False) as archive:
        assert sorted(archive.files) == [
            "train/__x__",
            "train/__y__",
            "train/conv",
            "train/fc1",
            "train/fc2",
        ]
    run = load_run(path)
    assert run.activation_epochs == [7, 9]
    acts = run.activations(7)
    assert acts["train"]["fc1"].dtype == np.float16
    np.testing.assert_allclose(acts["train"]["fc1"], t, atol=1e-3)
    assert acts["train"]["conv"].shape == (4, 4)
    assert run.labels(7)["train"].tolist() == [0, 1, 1, 0]
    assert run.inputs(7)["train"].shape == (4, 2)
    assert run.activations(9)["train"]["fc1"].dtype == np.float32
    assert run.labels(9) == {}
    with pytest.raises(InvalidParameterError, match=r"epoch 8.*\[7, 9\]"):
        run.activations(8)
    assert not [p for p in (path / "activations").iterdir() if p.name.startswith(".")]


def test_activations_reject_object_arrays_and_reserved_names(tmp_path):
    writer = RunWriter(tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="numeric"):
        writer.save_activations(0, {"p": {"fc1": np.array([{"a": 1}], dtype=object)}})
    with pytest.raises(InvalidParameterError, match="reserved"):
        writer.save_activations(0, {"p": {"__y__": np.ones((2, 1))}})
    writer.close()


def test_loading_never_unpickles(tmp_path):
    path = write_run(tmp_path / "r")
    folder = path / "activations"
    folder.mkdir()
    np.savez(
        folder / "epoch_000001.npz", **{"p/fc1": np.array([object()], dtype=object)}
    )
    with pytest.raises(ValueError, match="allow_pickle"):
        load_run(path).activations(1)


# -- names and paths ----------------------------------------------------------------

ODD_NAMES = [
    "../../escaped",
    "/absolute/layer",
    "a\x00b",
    'line\nbreak,comma"quote',
    "100%25 sure",
    "ünïcødé/日本語",
    "",
    "nan",
]


def test_odd_names_round_trip_and_never_escape(tmp_path):
    path = tmp_path / "runs" / "r"
    with RunWriter(path, {}) as writer:
        writer.append_information(
            [
                {
                    "epoch": 0,
                    "probe": "tr/ain",
                    "layer": n,
                    "estimator": n,
                    "i_xt": i,
                    "i_ty": 0.0,
                    n or "empty": 1.0,
                }
                for i, n in enumerate(ODD_NAMES)
            ]
        )
        writer.append_scalars(0, {n: float(i) for i, n in enumerate(ODD_NAMES)})
        writer.save_activations(
            0,
            {"tr/ain": {n: np.full((2, 1), i) for i, n in enumerate(ODD_NAMES)}},
            labels={"tr/ain": np.zeros(2)},
        )
    every = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert every == [
        "runs",
        "runs/r",
        "runs/r/activations",
        "runs/r/activations/epoch_000000.npz",
        "runs/r/information.csv",
        "runs/r/run.json",
        "runs/r/scalars.csv",
    ]
    assert len((path / "information.csv").read_text().splitlines()) == 1 + 3 * 8
    with zipfile.ZipFile(path / "activations" / "epoch_000000.npz") as zf:
        assert all("\x00" not in n for n in zf.namelist())
    run = load_run(path)
    info = run.information
    assert info.layer.tolist() == ODD_NAMES
    assert info.estimator.tolist() == ODD_NAMES
    assert info.probe.unique().tolist() == ["tr/ain"]
    assert run.scalars.name.tolist() == ODD_NAMES
    acts = run.activations(0)
    assert list(acts) == ["tr/ain"]
    assert {n: int(a[0, 0]) for n, a in acts["tr/ain"].items()} == {
        n: i for i, n in enumerate(ODD_NAMES)
    }


def test_run_paths_are_validated(tmp_path):
    with pytest.raises(InvalidParameterError, match="NUL"):
        RunWriter(str(tmp_path / "a\x00b"))
    with pytest.raises(InvalidParameterError, match=r"os\.PathLike"):
        RunWriter(b"bytes/path")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        RunWriter(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(tmp_path)
    with pytest.raises(InvalidParameterError, match="NUL"):
        load_run("a\x00")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("..", "run"),
        ("a\x00b", "a_b"),
        ("tanh net, lr=0.1", "tanh_net_lr_0.1"),
        (".hidden", "hidden"),
        ("日本", "日本"),
    ],
)
def test_safe_name_and_run_directory(tmp_path, name, expected):
    assert safe_name(name) == expected
    path = run_directory(tmp_path, name)
    assert path.parent == tmp_path and path.name == expected


def test_newer_schema_is_refused(tmp_path):
    path = write_run(tmp_path / "r")
    config = json.loads((path / "run.json").read_text())
    config["schema_version"] = 99
    (path / "run.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="schema_version 99"):
        load_run(path)
    with pytest.raises(ValueError, match="schema_version 99"):
        RunWriter(path, resume=True)


# -- live reading and several runs ---------------------------------------------------


def test_load_run_follows_a_live_run(tmp_path):
    writer = RunWriter(tmp_path / "r", CONFIG)
    writer.append_information(rows_for(0))
    run = load_run(tmp_path / "r")
    assert run.status == "running"
    assert run.information.epoch.unique().tolist() == [0]
    writer.append_information(rows_for(1))
    writer.append_scalars(1, {"loss": 1.0})
    writer.save_activations(1, {"train": {"fc1": np.ones((2, 2))}})
    assert run.information.epoch.unique().tolist() == [0, 1]
    assert run.scalars.epoch.tolist() == [1]
    assert run.activation_epochs == [1]
    writer.close()
    assert run.status == "finished"
    frame = run.information
    frame.loc[:, "i_xt"] = -1.0  # callers get copies
    assert (run.information.i_xt >= 0).all()


def test_a_write_in_progress_is_skipped_silently_while_live(tmp_path):
    writer = RunWriter(tmp_path / "r", CONFIG)
    writer.append_information(rows_for(0))
    with open(tmp_path / "r" / "information.csv", "ab") as fh:
        fh.write(b"1,train,fc1,bin")  # another thread is half-way through
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_run(tmp_path / "r").information.epoch.unique().tolist() == [0]
    writer._information._fh.write(b"ned,i_xt,1.0\n")
    writer.close()
    info = load_run(tmp_path / "r").information_long
    assert info.epoch.tolist()[-1] == 1 and info.estimator.tolist()[-1] == "binned"


def test_load_runs_concatenates_with_unique_run_names(tmp_path):
    write_run(tmp_path / "a" / "run", epochs=2)
    write_run(tmp_path / "b" / "run", epochs=3)
    write_run(tmp_path / "b" / "run-2", epochs=1)
    runs = load_runs([tmp_path / "a" / "run", str(tmp_path / "b" / "*")])
    assert isinstance(runs, Runs) and len(runs) == 3
    assert runs.names == ["run", "run-2", "run-2-2"]
    info = runs.information
    assert list(info.columns[:2]) == ["run", "epoch"]
    assert info.groupby("run").epoch.max().to_dict() == {
        "run": 1,
        "run-2": 2,
        "run-2-2": 0,
    }
    assert set(runs.scalars.run) == {"run", "run-2", "run-2-2"}
    assert set(runs.config) == {"run", "run-2", "run-2-2"} == set(runs.configs)
    assert runs["run-2"].path == tmp_path / "b" / "run"
    assert runs[0].path == tmp_path / "a" / "run"
    with pytest.raises(KeyError, match="No run named"):
        runs["zzz"]
    # A folder of runs, and the top-level export.
    assert len(ibmonitor.load_runs(tmp_path / "b")) == 2
    assert ibmonitor.load_run is load_run
    with pytest.raises(FileNotFoundError, match="No run directories"):
        load_runs(str(tmp_path / "nothing-*"))
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "missing")


# -- on-disk format --------------------------------------------------------------------

OLD_RUN_JSON = {
    "schema_version": 1,
    "name": "old",
    "status": "finished",
    "started": "2024-05-01T12:00:00+02:00",
    "ended": "2024-05-01T12:05:00+02:00",
    "versions": {"ibmonitor": "0.1.0", "torch": "2.2.0"},
    "seed": None,
    "layers": {"fc2": {}, "fc1": {}},
    "estimators": [{"name": "binned", "params": {}}],
    "probes": {"default": {"n_samples": 4}},
    "schedule": None,
    "skipped_epochs": [],
    "writer": {"pid": 1, "host": "elsewhere"},
}
OLD_INFORMATION = (
    "epoch,probe,layer,estimator,quantity,value\n"
    "0,default,fc1,binned,i_xt,0.25\n"
    "0,default,fc1,binned,i_ty,0.5\n"
    "0,default,fc2,binned,i_xt,nan\n"
    "0,default,fc2,binned,i_ty,inf\n"
    "0,default,fc2,binned,h_t,0.3333333333333333\n"
    "1,default,a%25b%0Ac,binned,i_xt,1.0\n"
    "1,default,a%25b%0Ac,binned,i_ty,2.0\n"
)
OLD_SCALARS = "epoch,name,value\n0,train_loss,0.30000000000000004\n1,gap/loss,2.0\n"


def test_a_run_written_by_an_earlier_version_loads_unchanged(tmp_path):
    path = tmp_path / "old"
    path.mkdir()
    (path / "run.json").write_text(json.dumps(OLD_RUN_JSON))
    (path / "information.csv").write_text(OLD_INFORMATION)
    (path / "scalars.csv").write_text(OLD_SCALARS)
    run = load_run(path)
    info = run.information
    assert info.layer.tolist() == ["fc2", "fc1", "a%b\nc"]  # config order first
    assert list(info.columns) == [
        *storage.INFORMATION_COLUMNS[:4],
        "i_xt",
        "i_ty",
        "h_t",
    ]
    assert math.isnan(info.i_xt[0]) and info.i_ty[0] == math.inf
    assert info.h_t[0] == 1.0 / 3.0 and info.i_xt[1] == 0.25
    assert run.scalars.value.tolist() == [0.1 + 0.2, 2.0]
    assert run.status == "finished" and run.name == "old"


def test_the_writer_writes_the_same_bytes_as_before(tmp_path):
    with RunWriter(tmp_path / "r", {"layers": {"fc2": {}, "fc1": {}}}) as writer:
        writer.append_information(
            [
                {"epoch": 0, "layer": "fc1", "estimator": "binned", "i_xt": 0.25,
                 "i_ty": 0.5},
                {"epoch": 0, "layer": "fc2", "estimator": "binned", "i_xt": math.nan,
                 "i_ty": math.inf, "h_t": 1.0 / 3.0},
                {"epoch": 1, "layer": "a%b\nc", "estimator": "binned", "i_ty": 2.0,
                 "i_xt": 1.0},
            ]
        )  # fmt: skip
        writer.append_scalars(0, {"train_loss": 0.1 + 0.2})
        writer.append_scalars(1, {"gap/loss": 2}, sync=False)
    assert (tmp_path / "r" / "information.csv").read_text() == OLD_INFORMATION
    assert (tmp_path / "r" / "scalars.csv").read_text() == OLD_SCALARS


def test_none_and_missing_information_values_are_stored_as_nan(tmp_path):
    with RunWriter(tmp_path / "r") as writer:
        writer.append_information(
            [{"epoch": 0, "layer": "fc1", "estimator": "b", "i_ty": None}]
        )
        with pytest.raises(InvalidParameterError, match="'h_t'"):
            writer.append_information(
                [{"epoch": 0, "layer": "fc1", "estimator": "b", "h_t": "high"}]
            )
        with pytest.raises(InvalidParameterError, match="quantity name"):
            writer.append_information(
                [{"epoch": 0, "layer": "fc1", "estimator": "b", 3: 1.0}]
            )
    long = load_run(tmp_path / "r").information_long
    assert long.quantity.tolist() == ["i_xt", "i_ty"] and long.value.isna().all()
    assert long.probe.tolist() == ["default", "default"]


# -- buffered scalars ------------------------------------------------------------------


def test_scalars_without_sync_are_readable_at_once_and_sync_fsyncs(
    tmp_path, monkeypatch
):
    writer = RunWriter(tmp_path / "r")
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    for step in range(3):
        assert writer.append_scalars(step, {"loss": 1.0 / (step + 1)}, sync=False)
    assert calls == []  # flushed to the OS, not fsynced
    scalars = load_run(tmp_path / "r").scalars  # same process, writer still open
    assert scalars.epoch.tolist() == [0, 1, 2]
    assert scalars.value.tolist() == [1.0, 0.5, 1.0 / 3.0]
    writer.sync()
    assert len(calls) == 1  # the scalars table only: nothing else was pending
    writer.sync()
    assert len(calls) == 1  # nothing new to fsync
    writer.append_scalars(3, {"loss": 0.25})
    assert len(calls) == 2  # the default still fsyncs every append
    writer.close()
    writer.sync()  # closing fsynced everything; a later sync does nothing
    assert load_run(tmp_path / "r").scalars.epoch.tolist() == [0, 1, 2, 3]


KILLED_AFTER_UNSYNCED = textwrap.dedent(
    """
    import os, signal, sys, types
    path, package = sys.argv[1], sys.argv[2]
    stub = types.ModuleType("ibmonitor")
    stub.__path__ = [package]
    stub.__version__ = "test"
    sys.modules["ibmonitor"] = stub
    from ibmonitor.storage import RunWriter
    writer = RunWriter(path)
    for step in range(5):
        writer.append_scalars(step, {"loss": float(step)}, sync=False)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_scalars_without_sync_survive_sigkill(tmp_path):
    path = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_AFTER_UNSYNCED,
            str(path),
            str(REPO / "ibmonitor"),
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    run = load_run(path)
    assert run.scalars.value.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert run.status == "crashed"


# -- appending to an existing run ------------------------------------------------------


def test_append_to_keeps_the_run_as_it_was(tmp_path):
    path = write_run(tmp_path / "r", epochs=2)
    raw = (path / "run.json").read_bytes()
    before = json.loads(raw)
    with RunWriter.append_to(path) as writer:
        assert writer.appending and writer.last_epoch == 1
        assert (path / "run.json").read_bytes() == raw  # opening wrote nothing
        writer.append_information(
            [{"epoch": 0, "probe": "train", "layer": "fc1", "estimator": "k%nn",
              "i_xt": 1.5, "i_ty": 0.25}]
        )  # fmt: skip
        # Someone else changes run.json meanwhile: update_config keeps it.
        other = json.loads((path / "run.json").read_text())
        other["note"] = "kept"
        (path / "run.json").write_text(json.dumps(other))
        writer.update_config(estimators=[*writer.config["estimators"], {"name": "k"}])
    after = load_run(path)
    config = after.config
    for key in ("status", "started", "ended", "writer", "name"):
        assert config[key] == before[key], key
    assert "resumed" not in config and config["note"] == "kept"
    assert config["estimators"][-1] == {"name": "k"}
    assert after.status == "finished"
    assert "k%25nn" in (path / "information.csv").read_text()  # names encoded
    assert set(after.information.estimator) == {"binned", "k%nn"}


def test_append_to_fsyncs_and_leaves_a_crash_unmarked(tmp_path, monkeypatch):
    path = write_run(tmp_path / "r", epochs=1)
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    with pytest.raises(RuntimeError), RunWriter.append_to(path) as writer:
        writer.append_information(rows_for(5))
        assert len(calls) == 1
        raise RuntimeError("estimator failed")
    monkeypatch.undo()
    run = load_run(path)
    assert run.status == "finished"  # not marked crashed: the run was fine
    assert 5 in set(run.information.epoch)
    with pytest.raises(ValueError, match="closed"):
        writer.append_scalars(0, {"a": 1.0})


def test_append_to_needs_a_run_of_a_known_schema(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        RunWriter.append_to(tmp_path)
    with pytest.raises(InvalidParameterError, match="run path"):
        RunWriter.append_to(b"r")
    path = write_run(tmp_path / "r")
    config = json.loads((path / "run.json").read_text())
    config["schema_version"] = 99
    (path / "run.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="schema_version 99"):
        RunWriter.append_to(path)


def test_run_and_runs_leave_summaries_to_analysis(tmp_path):
    """Issue "One shape for the monitor": the store does not import analysis."""
    path = write_run(tmp_path / "r")
    assert not hasattr(load_run(path), "summary")
    assert not hasattr(load_runs(path), "summary")
