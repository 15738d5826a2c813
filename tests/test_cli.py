"""Tests of `ibmonitor summary` and `ibmonitor estimate` (called via cli.main)."""

from __future__ import annotations

import numpy as np
import pytest

from ibmonitor.cli import main
from ibmonitor.estimators import InformationEstimate
from ibmonitor.estimators import _common as registry
from ibmonitor.storage import RunWriter, load_run


def make_run(path, *, activations=True):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = np.arange(8) % 2
    with RunWriter(path, {"layers": {"layers.1": {}, "layers.3": {}}}) as writer:
        for epoch in (0, 1):
            writer.append_information(
                [
                    {
                        "epoch": epoch,
                        "layer": layer,
                        "estimator": "binned",
                        "i_xt": 3.0 - epoch,
                        "i_ty": 0.25 * (epoch + 1),
                    }
                    for layer in ("layers.1", "layers.3")
                ]
            )
            writer.append_scalars(epoch, {"train_loss": 0.5 / (epoch + 1)})
            if activations:
                writer.save_activations(
                    epoch,
                    {
                        "default": {
                            "layers.1": np.tanh(x),
                            "layers.3": np.tanh(x[:, :2]),
                        }
                    },
                    labels={"default": y},
                    inputs={"default": x},
                )
    return path


def width_estimator(t, y, *, x=None, k=1):
    t = np.asarray(t)
    return InformationEstimate("width", float(t.shape[1] * k), 0.0, {"k": k})


@pytest.fixture
def width(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "width", (width_estimator, "values"))


def test_summary_prints_layers_and_scalars(tmp_path, capsys):
    path = make_run(tmp_path / "run", activations=False)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "layer" in lines[0] and "i_xt_final" in lines[0]
    assert any("layers.1" in line and "binned" in line for line in lines)
    assert any("train_loss" in line and "0.25" in line for line in lines)


def test_summary_of_a_missing_run_is_an_error(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_estimate_adds_rows_to_the_run(tmp_path, capsys, width):
    path = make_run(tmp_path / "run")
    code = main(
        [
            "estimate",
            str(path),
            "--estimator",
            "width",
            "--param",
            "k=3",
            "--no-progress",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "width" in captured.out and "9.0" in captured.out and captured.err == ""
    info = load_run(path).information
    added = info[info.estimator == "width"].set_index(["epoch", "layer"]).i_xt
    assert added.to_dict() == {
        (0, "layers.1"): 9.0,
        (0, "layers.3"): 6.0,
        (1, "layers.1"): 9.0,
        (1, "layers.3"): 6.0,
    }
    assert load_run(path).config["estimators"][-1]["params"] == {"k": 3}


def test_estimate_shows_progress_on_stderr(tmp_path, capsys, width):
    path = make_run(tmp_path / "run")
    assert main(["estimate", str(path), "--estimator", "width"]) == 0
    assert "estimate width" in capsys.readouterr().err


def test_estimate_errors_are_reported(tmp_path, capsys, width):
    path = make_run(tmp_path / "run", activations=False)
    assert main(["estimate", str(path), "--estimator", "width"]) == 2
    assert "store_activations=True" in capsys.readouterr().err
    path = make_run(tmp_path / "run2")
    assert main(["estimate", str(path), "--estimator", "nope"]) == 2
    assert "Unknown estimator 'nope'" in capsys.readouterr().err
