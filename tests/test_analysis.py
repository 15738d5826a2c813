"""Tests of offline analysis: summary_table, compression_table, re-estimation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibmonitor import estimators
from ibmonitor.analysis import (
    compression_table,
    estimate_from_activations,
    summary_table,
)
from ibmonitor.estimators import InformationEstimate, input_ids
from ibmonitor.estimators import _common as registry
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.storage import RunWriter, load_run, load_runs

LAYERS = ("fc1", "fc2")
# I(X;T) of fc1 rises to a peak at epoch 2 and then compresses.
I_XT = {"fc1": [1.0, 2.0, 3.0, 2.5, 2.0], "fc2": [0.5, 0.6, 0.7, 0.8, 0.9]}
I_TY = {"fc1": [0.1, 0.2, 0.3, 0.4, 0.5], "fc2": [0.2, 0.1, 0.3, 0.2, 0.6]}


def make_run(path, *, activations=True, status="finished", float16=False):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(16, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=16)
    writer = RunWriter(
        path,
        {
            "layers": {layer: {} for layer in LAYERS},
            "estimators": [{"name": "binned", "params": {"n_bins": 30}}],
            "probes": {"default": {"n_samples": 16}},
        },
    )
    for epoch in range(5):
        writer.append_information(
            [
                {
                    "epoch": epoch,
                    "probe": "default",
                    "layer": layer,
                    "estimator": "binned",
                    "i_xt": I_XT[layer][epoch],
                    "i_ty": I_TY[layer][epoch],
                }
                for layer in LAYERS
            ]
        )
        writer.append_scalars(epoch, {"train_loss": 1.0 / (epoch + 1), "test_acc": 0.5})
        if activations and epoch % 2 == 0:
            acts = {
                layer: np.tanh(x @ rng.normal(size=(4, 3)) * (epoch + 1))
                for layer in LAYERS
            }
            writer.save_activations(
                epoch,
                {"default": acts},
                labels={"default": y},
                inputs={"default": x},
                float16=float16,
            )
    if status != "running":
        writer.close(status)
    return path, writer


def fake_estimator(t, y, *, x=None, scale=1.0):
    """A deterministic stand-in: mean activation, and what x looked like."""
    t = np.asarray(t, dtype=np.float64)
    kind = (
        -1.0 if x is None else 1.0 if isinstance(x, torch.Tensor) else 2.0
    )  # ids come as tensors, values as arrays
    return InformationEstimate(
        estimator="fake",
        i_xt=float(t.mean()) * scale,
        i_ty=float(np.asarray(y).mean()),
        params={"scale": scale},
        extras={"x_kind": kind, "width": float(t.shape[1])},
    )


@pytest.fixture
def fake(monkeypatch):
    """Register ``fake`` (ids), ``fake_values`` and ``fake_none`` for one test."""
    for name, kind in (
        ("fake", "ids"),
        ("fake_values", "values"),
        ("fake_none", "none"),
    ):
        monkeypatch.setitem(registry._REGISTRY, name, (fake_estimator, kind))
    return "fake"


# -- summary_table ------------------------------------------------------------------


def test_summary_table_per_layer_with_scalars(tmp_path):
    path, _ = make_run(tmp_path / "r", activations=False)
    table = summary_table(load_run(path))
    info = table[table.scalar == ""]
    assert info.layer.tolist() == ["fc1", "fc2"]
    fc1 = info.iloc[0]
    assert fc1.epochs == 5 and fc1.first_epoch == 0 and fc1.last_epoch == 4
    assert (fc1.i_xt_first, fc1.i_xt_max, fc1.i_xt_final) == (1.0, 3.0, 2.0)
    assert (fc1.i_ty_first, fc1.i_ty_max, fc1.i_ty_final) == (0.1, 0.5, 0.5)
    scalars = table[table.scalar != ""].set_index("scalar")
    assert scalars.loc["train_loss", "final_value"] == pytest.approx(0.2)
    assert scalars.loc["test_acc", "epochs"] == 5
    assert (scalars.layer == "").all() and scalars.i_xt_final.isna().all()
    only_info = summary_table(load_run(path), scalars=False)
    assert "scalar" not in only_info.columns and len(only_info) == 2


def test_summary_table_of_several_runs_and_of_an_empty_run(tmp_path):
    make_run(tmp_path / "a", activations=False)
    make_run(tmp_path / "b", activations=False)
    table = summary_table(load_runs(tmp_path))
    assert table.columns[0] == "run"
    assert table.groupby("run").size().to_dict() == {"a": 4, "b": 4}
    RunWriter(tmp_path / "empty").close()
    empty = summary_table(load_run(tmp_path / "empty"))
    assert empty.empty and "i_xt_final" in empty.columns
    assert summary_table(load_run(tmp_path / "a")).equals(summary_table(tmp_path / "a"))


def test_compression_table(tmp_path):
    path, _ = make_run(tmp_path / "r", activations=False)
    table = compression_table(load_run(path)).set_index("layer")
    assert table.loc["fc1", "epoch_max_i_xt"] == 2
    assert table.loc["fc1", "compression_bits"] == pytest.approx(1.0)
    assert table.loc["fc1", "i_ty_final"] == pytest.approx(0.5)
    assert table.loc["fc2", "epoch_max_i_xt"] == 4
    assert table.loc["fc2", "compression_bits"] == 0.0
    several = compression_table([path, path.parent / "r"])
    assert several.columns[0] == "run"
    frame = compression_table(load_run(path).information)
    assert frame.equals(compression_table(load_run(path)))


def test_compression_table_all_nan_layer():
    frame = pd.DataFrame(
        {
            "epoch": [0, 1],
            "probe": "default",
            "layer": "fc1",
            "estimator": "kde",
            "i_xt": [math.nan, math.nan],
            "i_ty": [0.1, 0.2],
        }
    )
    row = compression_table(frame).iloc[0]
    assert row.epoch_max_i_xt == -1 and math.isnan(row.compression_bits)


# -- estimate_from_activations ---------------------------------------------------


def test_estimate_matches_a_direct_call_and_is_stored(tmp_path, fake):
    path, _ = make_run(tmp_path / "r")
    run = load_run(path)
    new = estimate_from_activations(path, "fake", {"scale": 2.0}, progress=False)
    assert list(new.columns[:6]) == [
        "epoch",
        "probe",
        "layer",
        "estimator",
        "i_xt",
        "i_ty",
    ]
    assert new.epoch.unique().tolist() == [0, 2, 4] and len(new) == 6
    assert (new.estimator == "fake").all() and (new.x_kind == 1.0).all()
    for row in new.itertuples():
        t = run.activations(row.epoch)["default"][row.layer]
        y = run.labels(row.epoch)["default"]
        x = run.inputs(row.epoch)["default"]
        direct = estimators.get("fake", scale=2.0)(t, y, x=input_ids(x))
        assert row.i_xt == direct.i_xt and row.i_ty == direct.i_ty
    stored = load_run(path).information
    assert set(stored.estimator) == {"binned", "fake"}
    assert len(stored[stored.estimator == "fake"]) == 6
    entries = load_run(path).config["estimators"]
    assert entries[-1] == {
        "name": "fake",
        "params": {"scale": 2.0},
        "label": "fake",
        "source": "activations",
    }
    # Same estimator and parameters again: same label, rows replaced (last wins).
    estimate_from_activations(path, "fake", {"scale": 2.0}, progress=False)
    again = load_run(path)
    assert len(again.information[again.information.estimator == "fake"]) == 6
    assert len(again.config["estimators"]) == 2


def test_estimate_with_other_parameters_gets_its_own_label(tmp_path, fake):
    path, _ = make_run(tmp_path / "r")
    estimate_from_activations(path, "fake", {"scale": 1.0}, progress=False)
    other = estimate_from_activations(path, "fake", {"scale": 3.0}, progress=False)
    assert set(other.estimator) == {"fake(scale=3.0)"}
    binned = estimate_from_activations(
        path, "fake", {}, progress=False, label="mine", epochs=[2], layers=["fc2"]
    )
    assert binned.estimator.tolist() == ["mine"] and binned.epoch.tolist() == [2]
    info = load_run(path).information
    assert set(info.estimator) == {"binned", "fake", "fake(scale=3.0)", "mine"}


def test_estimate_passes_inputs_as_the_estimator_wants(tmp_path, fake):
    path, _ = make_run(tmp_path / "r", float16=True)
    values = estimate_from_activations(path, "fake_values", progress=False)
    assert (values.x_kind == 2.0).all()
    nothing = estimate_from_activations(path, "fake_none", progress=False)
    assert (nothing.x_kind == -1.0).all()
    assert (nothing.width == 3.0).all()


def test_estimate_computes_input_ids_once_per_probe(tmp_path, fake, monkeypatch):
    path, _ = make_run(tmp_path / "r")  # the same inputs at epochs 0, 2 and 4
    calls = []

    def counting(x, n_samples=None):
        calls.append(np.asarray(x).shape)
        return input_ids(x, n_samples)

    monkeypatch.setattr(estimators, "input_ids", counting)
    new = estimate_from_activations(path, "fake", progress=False)
    assert len(new) == 6 and (new.x_kind == 1.0).all()
    assert calls == [(16, 4)]
    estimate_from_activations(path, "fake_values", progress=False)
    assert len(calls) == 1  # an estimator of values needs no ids


def test_estimate_leaves_the_run_status_and_times_alone(tmp_path, fake):
    path, _ = make_run(tmp_path / "r")
    before = load_run(path).config
    estimate_from_activations(path, "fake", progress=False)
    after = load_run(path).config
    for key in ("status", "started", "ended", "writer", "layers", "probes"):
        assert after[key] == before[key], key
    assert "resumed" not in after
    assert after["estimators"] == [
        *before["estimators"],
        {"name": "fake", "params": {}, "label": "fake", "source": "activations"},
    ]


def test_estimate_shows_a_progress_bar(tmp_path, fake, capsys):
    path, _ = make_run(tmp_path / "r")
    estimate_from_activations(path, "fake", progress=True)
    err = capsys.readouterr().err
    assert "estimate fake" in err and "3/3" in err


def test_estimate_errors(tmp_path, fake):
    path, _ = make_run(tmp_path / "noacts", activations=False)
    with pytest.raises(InvalidParameterError, match="store_activations=True"):
        estimate_from_activations(path, "fake", progress=False)
    path, _ = make_run(tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="Unknown estimator"):
        estimate_from_activations(path, "no-such-estimator", progress=False)
    with pytest.raises(InvalidParameterError, match=r"epochs \[1\]"):
        estimate_from_activations(path, "fake", epochs=[1], progress=False)
    with pytest.raises(InvalidParameterError, match="layer"):
        estimate_from_activations(path, "fake", layers=["fc9"], progress=False)
    before = (path / "information.csv").read_bytes()
    assert (path / "information.csv").read_bytes() == before


def test_estimate_refuses_a_run_still_being_written(tmp_path, fake):
    path, writer = make_run(tmp_path / "r", status="running")
    with pytest.raises(InvalidParameterError, match="still being written"):
        estimate_from_activations(path, "fake", progress=False)
    writer.close()
    assert len(estimate_from_activations(path, "fake", progress=False)) == 6


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_estimate_with_binned_equals_a_direct_call(tmp_path):
    try:
        est = estimators.get("binned")
        est(np.zeros((4, 2)), np.array([0, 1, 0, 1]), x=np.arange(4))
    except (InvalidParameterError, NotImplementedError):
        pytest.skip("the binned estimator is not written yet")
    path, _ = make_run(tmp_path / "r")
    new = estimate_from_activations(path, "binned", {"n_bins": 10}, progress=False)
    run = load_run(path)
    assert set(new.estimator) == {"binned(n_bins=10)"}
    for row in new.itertuples():
        direct = estimators.get("binned", n_bins=10)(
            run.activations(row.epoch)["default"][row.layer],
            run.labels(row.epoch)["default"],
            x=input_ids(run.inputs(row.epoch)["default"]),
        )
        assert row.i_xt == pytest.approx(direct.i_xt, abs=1e-12)
        assert row.i_ty == pytest.approx(direct.i_ty, abs=1e-12)
    entry = run.config["estimators"][-1]
    assert json.loads(json.dumps(entry))["params"] == {"n_bins": 10}


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_estimate_reproduces_the_monitors_rows(tiny_mlp, tmp_path):
    monitor_module = pytest.importorskip("ibmonitor.monitor")
    sinks = pytest.importorskip("ibmonitor.sinks")
    with monitor_module.InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators={"binned": {"n_bins": 10}},
        schedule=[0, 1],
        logdir=tmp_path / "r",
        sinks=[sinks.RunStore(store_activations=True)],
        overhead_budget=None,
    ) as monitor:
        for epoch in range(2):
            monitor.on_epoch_end(epoch, train_loss=1.0)
    before = load_run(tmp_path / "r").information
    new = estimate_from_activations(
        tmp_path / "r", "binned", {"n_bins": 10}, progress=False
    )
    assert set(new.estimator) == {"binned"}  # same parameters: same label
    cols = ["epoch", "probe", "layer", "estimator", "i_xt", "i_ty"]
    pd.testing.assert_frame_equal(
        new[cols].reset_index(drop=True), before[cols].reset_index(drop=True)
    )
    after = load_run(tmp_path / "r").information
    pd.testing.assert_frame_equal(after[cols], before[cols])
