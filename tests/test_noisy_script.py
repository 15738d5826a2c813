"""scripts/noisy_vs_binned.py (issue 12, item 4): a tiny run of its quick mode.

The test shrinks epochs, recorded points and the noisy network's probe, skips
the PNG, and checks what a user reads: both run directories, the estimators
each holds, the printed tables, the HTML figure and ``report.html``; and that
the noise injected while recording reached the later layers only there.
"""

from __future__ import annotations

import json
import math

import pytest
from _scripts import load_script as _load
from _scripts import restore_torch_threads  # noqa: F401 (autouse)

import ibmonitor


def test_noisy_vs_binned_tiny(tmp_path, capsys):
    script = _load("noisy_vs_binned")
    out = tmp_path / "nvb"
    argv = ["--quick", "--epochs", "3", "--points", "2", "--probe-inputs", "16"]
    argv += ["--repeats", "4", "--noise-std", "0.1", "--outdir", str(out)]
    assert script.main([*argv, "--no-figure"]) == 0
    printed = capsys.readouterr().out

    det = out / "seed-0" / "deterministic"
    net = out / "seed-0" / "noisy-network"
    for run_dir in (det, net):
        config = json.loads((run_dir / "run.json").read_text())
        assert config["status"] == "finished"
    det_info = ibmonitor.load_run(det).information
    net_info = ibmonitor.load_run(net).information
    assert set(det_info["estimator"]) == {"binned", "noisy"}
    assert set(net_info["estimator"]) == {"noisy"}
    for info in (det_info, net_info):
        assert info[["i_xt", "i_ty"]].notna().all().all()
        assert (info["i_ty"] >= -0.05).all()
    # the noisy network's probe: 16 inputs, so I(X;T) <= log2 16 = 4 bits
    assert (net_info["i_xt"] <= math.log2(16) + 1e-9).all()

    # Noise reached the later layers only in the noisy network: the first tanh
    # layer is a function of X there (h(T|X) = h(Z) up to the Monte Carlo),
    # the second is not (its 4 rows per input spread out).
    last = net_info[net_info["epoch"] == net_info["epoch"].max()].set_index("layer")
    gap = last["h_t_given_x"] - last["h_noise"]
    assert abs(gap["tanh1"]) < 0.1
    assert gap["tanh2"] > 0.3
    det_noisy = det_info[det_info["estimator"] == "noisy"]
    det_gap = (det_noisy["h_t_given_x"] - det_noisy["h_noise"]).abs()
    assert (det_gap < 0.1).all()  # every input once: h(T|X) = h(Z)

    for title in (
        "Phase table, binned",
        "Phase table, noisy estimator, noise at the measured layer only",
        "Phase table, noisy network",
        "Compression, highest minus final I(X;T)",
        "Final accuracy:",
    ):
        assert title in printed, title
    html = out / "noisy_vs_binned.html"
    assert html.is_file() and "plotly" in html.read_text(encoding="utf-8").lower()
    report = out / "report.html"
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (out / "noisy_vs_binned.png").exists()  # PNG only with --gallery

    # --plot-only redraws from the runs without training
    assert script.main([*argv, "--no-figure", "--plot-only"]) == 0
    assert "Phase table, noisy network" in capsys.readouterr().out


def test_noisy_vs_binned_plot_only_without_runs_fails_clearly(tmp_path):
    script = _load("noisy_vs_binned")
    with pytest.raises(SystemExit, match="--plot-only needs the finished runs"):
        script.main(["--quick", "--outdir", str(tmp_path / "none"), "--plot-only"])


def test_noisy_vs_binned_has_the_common_options(capsys):
    script = _load("noisy_vs_binned")
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--outdir", "--gallery", "--no-figure", "--noise-std"):
        assert option in text, option
    assert "runs/noisy_vs_binned" in text


def test_noisy_vs_binned_refuses_a_bad_noise_level(tmp_path):
    script = _load("noisy_vs_binned")
    with pytest.raises(SystemExit) as info:
        script.main(["--quick", "--noise-std", "0", "--outdir", str(tmp_path)])
    assert info.value.code == 2


@pytest.mark.slow
def test_noisy_vs_binned_quick_mode(tmp_path, capsys):
    script = _load("noisy_vs_binned")
    out = tmp_path / "nvb"
    assert script.main(["--quick", "--outdir", str(out)]) == 0
    printed = capsys.readouterr().out
    for kind in ("deterministic", "noisy-network"):
        info = ibmonitor.load_run(out / "seed-0" / kind).information
        assert info[["i_xt", "i_ty"]].notna().all().all()
    assert (out / "noisy_vs_binned.html").is_file()
    assert "Took" in printed
