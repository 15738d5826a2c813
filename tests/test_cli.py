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


# -- ibmonitor sensitivity (issue 12, item 3) ------------------------------------------


def _files(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_prints_the_summary_and_writes_figure_and_csv(tmp_path, capsys):
    import pandas as pd

    from ibmonitor.analysis import sensitivity, sensitivity_summary

    path = make_run(tmp_path / "run")
    before = _files(path)
    out, csv = tmp_path / "fig" / "s.html", tmp_path / "s.csv"
    code = main(
        [
            "sensitivity",
            str(path),
            "--estimator",
            "binned",
            "--grid",
            "n_bins=2,3,10",
            "--out",
            str(out),
            "--csv",
            str(csv),
            "--no-progress",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["layer", "n_bins"])
    assert "compression_bits" in header and "compression_verdict" in header
    expected = sensitivity_summary(
        sensitivity(path, "binned", {"n_bins": [2, 3, 10]})
    ).set_index(["layer", "n_bins"])
    rows = [line.split() for line in lines if line.split()[:1] == ["layers.1"]]
    assert [int(r[1]) for r in rows] == [2, 3, 10]
    col = header.split().index("compression_bits")
    for r in rows:
        want = expected.loc[("layers.1", int(r[1]))].compression_bits
        assert float(r[col]) == pytest.approx(want, abs=5e-4)
    assert f"Figure: {out}" in captured.out and out.stat().st_size > 1_000_000
    table = pd.read_csv(csv)
    assert list(table.columns[:6]) == [
        "layer",
        "probe",
        "epoch",
        "n_bins",
        "i_xt",
        "i_ty",
    ]
    assert len(table) == 2 * 2 * 3  # layers x epochs x grid values
    assert _files(path) == before  # the run directory is not touched


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_long_table_params_and_restrictions(tmp_path, capsys):
    path = make_run(tmp_path / "run")
    code = main(
        [
            "sensitivity",
            str(path),
            "--estimator",
            "binned",
            "--grid",
            "bin_size=0.5,1",
            "--param",
            "strategy='uniform'",
            "--layers",
            "layers.3",
            "--epochs",
            "1",
            "--long",
            "--no-figure",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Figure:" not in out and "layers.1" not in out
    assert "binned(bin_size=0.5, strategy='uniform')" in out
    assert "binned(bin_size=1, strategy='uniform')" in out


def test_parse_grid_reads_ints_floats_tuples_and_strings():
    from ibmonitor.cli import parse_grid

    grid = parse_grid(
        [
            "n_bins=10,30,100",
            "noise_variance=0.01,1e-3",
            "value_range=(-1,1), (-2, 2)",
            "strategy=uniform,quantile",
        ]
    )
    assert grid == {
        "n_bins": [10, 30, 100],
        "noise_variance": [0.01, 0.001],
        "value_range": [(-1, 1), (-2, 2)],
        "strategy": ["uniform", "quantile"],
    }
    assert all(type(v) is int for v in grid["n_bins"])
    assert all(type(v) is float for v in grid["noise_variance"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "n_bins"], "--grid must look like name=v1,v2"),
        (["--grid", "n_bins=10,,30"], "empty value"),
        (["--grid", "n_bins=10", "--grid", "n_bins=30"], "gives 'n_bins' twice"),
        (["--grid", "n_bins=1,10"], "'n_bins' parameter of binned"),
        (["--grid", "n_bins=10.5"], "'n_bins' parameter of binned"),
        (["--grid", "nope=1"], "Unknown parameter 'nope'"),
        (["--grid", "n_bins=10", "--threshold", "-1"], "--threshold must be"),
        (["--grid", "n_bins=10", "--layers", "fc9"], "no stored layer ['fc9']"),
    ],
)
def test_sensitivity_bad_input_exits_with_a_message(tmp_path, capsys, argv, message):
    path = make_run(tmp_path / "run")
    args = ["sensitivity", str(path), "--estimator", "binned", *argv]
    assert main([*args, "--no-progress", "--no-figure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ibmonitor sensitivity: error:") and message in err


def test_sensitivity_of_a_run_without_activations(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = make_run(tmp_path / "run", activations=False)
    args = ["sensitivity", str(path), "--estimator", "binned", "--grid", "n_bins=10"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'run'" in err and "RunStore(store_activations=True)" in err
    assert not (tmp_path / "sensitivity.html").exists()


def test_sensitivity_needs_a_grid(tmp_path, capsys):
    path = make_run(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_:
        main(["sensitivity", str(path), "--estimator", "binned"])
    assert exit_.value.code == 2
    assert "--grid" in capsys.readouterr().err


def test_sensitivity_reports_pinned_estimates_as_one_note_each(tmp_path, capsys):
    path = make_run(tmp_path / "run")  # 8 samples: 100 bins keep each apart
    args = ["sensitivity", str(path), "--estimator", "binned", "--grid", "n_bins=100"]
    assert main([*args, "--no-figure", "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("ibmonitor sensitivity: note:")]
    assert len(notes) == 1 and "binned(n_bins=100) on run 'run'" in notes[0]
    assert not any("table = sensitivity(" in line for line in err)
