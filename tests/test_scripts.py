"""The paper-reproduction scripts in scripts/ (issue 6): tiny runs of each.

Each script's ``main(argv)`` is called in this process (the slow tests run the
real ``--quick`` modes with the PNG export). The fast tests shrink epochs and
recorded points further and skip the PNG, and check what a user reads: the run
directories, ``report.html`` and the printed tables.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from _scripts import load_script as _load
from _scripts import restore_torch_threads  # noqa: F401 (autouse)

import ibmonitor


def _finished_runs(outdir, names):
    for name in names:
        config = json.loads((outdir / name / "run.json").read_text())
        assert config["status"] == "finished", name
        run = ibmonitor.load_run(outdir / name)
        info = run.information
        assert len(info) > 0, name
        assert info[["i_xt", "i_ty"]].notna().all().all(), name
        assert (info["i_xt"] >= -1e-6).all() and (info["i_ty"] >= -1e-6).all(), name


def _report(outdir):
    report = outdir / "report.html"
    assert report.is_file()
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "Plotly" in text
    return text


def _numbers_after(text, title):
    """The numeric cells of the table printed under ``title``."""
    rest = text.split(title, 1)[1].split("\n", 1)[1]  # the end of the title line
    rows = rest.split("\n\n", 1)[0].splitlines()[1:]  # skip the header
    values = []
    for row in rows:
        values += [float(v) for v in re.findall(r"(?<![\w.])-?\d+\.\d+", row)]
    return rows, values


# ------------------------------------------------------------------ fast tests
def test_tishby_tiny(tmp_path, capsys):
    script = _load("tishby_information_plane")
    out = tmp_path / "tishby"
    argv = ["--quick", "--epochs", "4", "--points", "3", "--seeds", "0", "1"]
    assert script.main([*argv, "--outdir", str(out), "--no-figure"]) == 0
    printed = capsys.readouterr().out
    _finished_runs(out, ["seed-0", "seed-1"])
    _report(out)
    rows, values = _numbers_after(printed, "Phase table of the mean trajectory")
    layers = [row.split()[0] for row in rows]
    assert layers == ["tanh1", "tanh2", "tanh3", "tanh4", "tanh5", "softmax"]
    assert all(0.0 <= v <= 12.0 + 1e-6 for v in values)
    assert "Compression per seed" in printed
    assert not (out / "tishby_information_plane.png").exists()  # --no-figure

    # --plot-only redraws from the runs in --outdir without training
    before = (out / "seed-0" / "information.csv").stat().st_mtime_ns
    assert script.main([*argv, "--outdir", str(out), "--no-figure", "--plot-only"]) == 0
    assert capsys.readouterr().out.count("Phase table") == 1
    assert (out / "seed-0" / "information.csv").stat().st_mtime_ns == before
    with pytest.raises(SystemExit, match="--plot-only needs the finished run"):
        script.main([*argv, "--outdir", str(tmp_path / "none"), "--plot-only"])


def test_tishby_mean_trajectory_averages_seeds():
    script = _load("tishby_information_plane")
    import pandas as pd

    frame = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b"],
            "probe": "default",
            "estimator": "binned",
            "layer": "tanh1",
            "epoch": [0, 1, 0, 1],
            "i_xt": [1.0, 3.0, 3.0, 5.0],
            "i_ty": [0.0, 0.5, 0.2, 0.7],
        }
    )
    mean = script.mean_trajectory(frame)
    assert mean["i_xt"].tolist() == [2.0, 4.0]
    assert mean["i_ty"].tolist() == pytest.approx([0.1, 0.6])


def test_saxe_tiny(tmp_path, capsys):
    script = _load("saxe_tanh_vs_relu")
    out = tmp_path / "saxe"
    argv = ["--quick", "--epochs", "3", "--points", "2", "--outdir", str(out)]
    assert script.main([*argv, "--no-figure"]) == 0
    printed = capsys.readouterr().out
    _finished_runs(out, ["tanh-seed-0", "relu-seed-0"])
    config = json.loads((out / "relu-seed-0" / "run.json").read_text())
    params = {e["name"]: e["params"] for e in config["estimators"]}
    assert params["binned"]["bin_size"] == pytest.approx(0.07)
    assert params["kde"]["noise_variance"] == pytest.approx(0.1)
    assert set(config["layers"]) >= {"relu1", "relu5", "softmax"}
    rows, values = _numbers_after(printed, "Compression per layer")
    header = printed.split("Compression per layer", 1)[1].splitlines()[1].split()
    pairs = [" ".join(header[i : i + 2]) for i in range(1, len(header), 2)]
    assert pairs == ["binned tanh", "binned relu", "kde tanh", "kde relu"]
    names = [" ".join(row.split()[:2]) for row in rows]
    assert names[:5] == [f"hidden {i}" for i in range(1, 6)]
    assert rows[5].split()[0] == "softmax"
    assert all(v >= 0 for v in values)  # compression is max - final
    assert "Final accuracy" in printed


def test_random_labels_tiny(tmp_path, capsys):
    script = _load("random_labels")
    out = tmp_path / "zhang"
    argv = ["--quick", "--epochs", "2", "--outdir", str(out), "--no-figure"]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    _finished_runs(out, ["true-labels", "random-labels"])
    text = _report(out)
    assert "random-labels" in text
    true_cfg = json.loads((out / "true-labels" / "run.json").read_text())
    rand_cfg = json.loads((out / "random-labels" / "run.json").read_text())
    assert true_cfg["user"]["train_labels_equal_true"] == 1.0
    assert rand_cfg["user"]["train_labels_equal_true"] < 0.3  # a permutation
    run = ibmonitor.load_run(out / "random-labels")
    assert set(run.information["probe"]) == {"train", "test"}
    names = set(run.scalars["name"])
    assert {"gap/train_acc", "gap/test_acc", "gap/acc", "train_acc_running"} <= names
    rows, _ = _numbers_after(printed, "Final accuracy and generalization gap")
    assert [row.split()[0] for row in rows] == ["true-labels", "random-labels"]
    assert "never" in rows[1]  # two epochs cannot fit random labels


def test_batch_size_tiny(tmp_path, capsys):
    script = _load("batch_size_sharpness")
    out = tmp_path / "keskar"
    argv = ["--quick", "--epochs", "2", "4", "--points", "2", "--outdir", str(out)]
    assert script.main([*argv, "--no-figure"]) == 0
    printed = capsys.readouterr().out
    _finished_runs(out, ["small-batch-seed-0", "large-batch-seed-0"])
    _report(out)
    scalars = ibmonitor.load_run(out / "large-batch-seed-0").scalars
    assert {"sharpness/worst_case", "hessian/top_eigenvalue", "gap/loss"} <= set(
        scalars["name"]
    )
    rows, values = _numbers_after(printed, "Final values per run")
    assert [row.split()[0] for row in rows] == [
        "small-batch-seed-0",
        "large-batch-seed-0",
    ]
    assert all(math.isfinite(v) for v in values)
    assert "large / small" in printed


def test_batch_size_rejects_bad_epochs(tmp_path):
    script = _load("batch_size_sharpness")
    with pytest.raises(SystemExit):
        script.main(["--epochs", "0", "3", "--outdir", str(tmp_path)])


def test_compare_runs_tables(tmp_path, capsys):
    tishby = _load("tishby_information_plane")
    zhang = _load("random_labels")
    root = tmp_path / "runs"
    base = ["--quick", "--no-figure"]
    tishby.main(
        [
            *base,
            "--epochs",
            "3",
            "--points",
            "2",
            "--outdir",
            str(root / "tishby_information_plane"),
        ]
    )
    zhang.main([*base, "--epochs", "2", "--outdir", str(root / "random_labels")])
    capsys.readouterr()

    compare = _load("compare_runs")
    out = tmp_path / "cmp"
    assert compare.main(["--root", str(root), "--outdir", str(out), "--no-figure"]) == 0
    printed = capsys.readouterr().out
    assert "Loaded 3 run(s)" in printed
    rows, _ = _numbers_after(printed, "Per layer: epoch of the highest I(X;T)")
    assert any(
        row.strip().startswith("tishby_information_plane/seed-0") for row in rows
    )
    assert any("random_labels/true-labels" in row for row in rows)
    assert "Compression (bits) per layer and run" in printed
    assert "Final accuracy and generalization gap" in printed

    # explicit run directories and another estimator
    assert (
        compare.main(
            [
                str(root / "random_labels" / "true-labels"),
                "--estimator",
                "kde",
                "--probe",
                "test",
                "--outdir",
                str(out),
                "--no-figure",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    rows, _ = _numbers_after(printed, "Per layer: epoch of the highest I(X;T)")
    assert len(rows) == 3  # relu1, relu2, softmax on the test probe
    assert all(" test " in row and " kde " in row for row in rows)


def test_compare_runs_without_runs_says_what_to_do(tmp_path, capsys):
    compare = _load("compare_runs")
    with pytest.raises(SystemExit) as info:
        compare.main(["--root", str(tmp_path), "--outdir", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "run the reproduction scripts first" in capsys.readouterr().err


def test_scripts_share_the_common_options(capsys):
    for name in (
        "tishby_information_plane",
        "saxe_tanh_vs_relu",
        "random_labels",
        "batch_size_sharpness",
    ):
        script = _load(name)
        with pytest.raises(SystemExit) as info:
            script.main(["--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        for option in ("--quick", "--outdir", "--gallery", "--no-figure", "--jobs"):
            assert option in text, (name, option)
        assert f"runs/{name}" in text


# ------------------------------------------------------------------ slow tests
def _png_or_html(outdir, name):
    png, html = outdir / f"{name}.png", outdir / f"{name}.html"
    assert png.is_file() or html.is_file()
    if png.is_file():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "runs"),
    [
        ("tishby_information_plane", ["seed-0"]),
        ("saxe_tanh_vs_relu", ["tanh-seed-0", "relu-seed-0"]),
        ("random_labels", ["true-labels", "random-labels"]),
        ("batch_size_sharpness", ["small-batch-seed-0", "large-batch-seed-0"]),
    ],
)
def test_quick_mode(tmp_path, capsys, name, runs):
    script = _load(name)
    out = tmp_path / name
    assert script.main(["--quick", "--outdir", str(out)]) == 0
    printed = capsys.readouterr().out
    _finished_runs(out, runs)
    _report(out)
    _png_or_html(out, name)
    assert "Took" in printed


@pytest.mark.slow
def test_parallel_jobs(tmp_path, capsys):
    """--jobs 2 trains in spawned processes; the runs match a sequential run."""
    script = _load("tishby_information_plane")
    argv = ["--quick", "--epochs", "3", "--points", "2", "--seeds", "0", "1"]
    argv += ["--no-figure"]
    assert script.main([*argv, "--jobs", "2", "--outdir", str(tmp_path / "p")]) == 0
    assert script.main([*argv, "--jobs", "1", "--outdir", str(tmp_path / "s")]) == 0
    for seed in ("seed-0", "seed-1"):
        parallel = ibmonitor.load_run(tmp_path / "p" / seed).information
        serial = ibmonitor.load_run(tmp_path / "s" / seed).information
        assert parallel[["i_xt", "i_ty"]].equals(serial[["i_xt", "i_ty"]])


@pytest.mark.slow
def test_compare_runs_figure(tmp_path, capsys):
    tishby = _load("tishby_information_plane")
    out = tmp_path / "runs" / "tishby_information_plane"
    tishby.main(
        [
            "--quick",
            "--epochs",
            "3",
            "--points",
            "2",
            "--seeds",
            "0",
            "1",
            "--outdir",
            str(out),
            "--no-figure",
        ]
    )
    compare = _load("compare_runs")
    cmp_out = tmp_path / "cmp"
    argv = [str(out), "--outdir", str(cmp_out), "--report"]
    assert compare.main(argv) == 0
    _png_or_html(cmp_out, "compare_runs")
    assert (cmp_out / "report.html").is_file()
