"""The geometry reproduction scripts (issue 13, item 4): tiny runs of each.

``scripts/brahma_disentanglement.py`` and ``scripts/shang_crelu_pairing.py``
are run in this process through their ``main(argv)``, shrunk (one epoch, small
networks, no PNG) so that both take a few seconds; the slow tests run the real
``--quick`` modes with the PNG export. The checks read what a user reads: the
CSV table, the HTML figure and the printed tables, and compare stored values
with direct calls of :mod:`ibmonitor.geometry`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from _scripts import load_script as _load
from _scripts import restore_torch_threads  # noqa: F401 (autouse)

from ibmonitor.geometry import layer_geometry, pairing_table

# ------------------------------------------------------------------- Brahma
BRAHMA_TINY = [
    "--epochs",
    "1",
    "--points",
    "2",
    "--width",
    "16",
    "--hidden",
    "2",
    "--probe-size",
    "200",
    "--no-figure",
]


def test_brahma_recorded_epochs():
    script = _load("brahma_disentanglement")
    assert script.recorded_epochs(100, 6) == [0, 1, 3, 10, 32, 100]
    assert script.recorded_epochs(10, 3) == [0, 1, 10]
    assert script.recorded_epochs(7, 1) == [7]


def test_brahma_tiny(tmp_path, capsys):
    script = _load("brahma_disentanglement")
    out = tmp_path / "brahma"
    assert script.main([*BRAHMA_TINY, "--outdir", str(out)]) == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(out / f"{script.NAME}.csv")
    assert list(frame.columns) == ["epoch", "depth", "layer", "measure", "value"]
    assert sorted(frame["epoch"].unique()) == [0, 1]
    assert list(dict.fromkeys(frame["layer"])) == ["input", "relu1", "relu2", "fc3"]
    assert set(frame["measure"]) == set(script.MEASURES)
    assert np.isfinite(frame["value"]).all()
    by = frame.set_index(["epoch", "layer", "measure"])["value"]
    assert (frame.loc[frame["measure"] == "flattening", "value"] >= 1.0).all()
    acc = frame.loc[frame["measure"] == "probe_accuracy", "value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    # The stored input geometry is a direct call on the same probe images.
    _, _, x_probe, y_probe = script.digits_split(0, 200)
    direct = layer_geometry(x_probe, y_probe, max_samples=None, seed=0)
    for measure, value in direct.items():
        assert by[(0, "input", measure)] == pytest.approx(value, rel=1e-9)
        assert by[(1, "input", measure)] == pytest.approx(value, rel=1e-9)
    # Training moves the hidden layers, not the input.
    assert by[(1, "relu2", "separation")] != by[(0, "relu2", "separation")]
    assert "Geometry per layer at epoch 0 (initialisation):" in printed
    assert "Spearman correlation of each measure with depth" in printed
    html = (out / f"{script.NAME}.html").read_text(encoding="utf-8")
    assert "Plotly" in html
    assert not (out / f"{script.NAME}.png").exists()  # --no-figure


def test_brahma_tables_and_figure():
    script = _load("brahma_disentanglement")
    rows = []
    for epoch in (0, 5):
        for depth, layer in enumerate(["input", "h1", "h2"]):
            for i, measure in enumerate(script.MEASURES):
                value = depth + i + (epoch if measure != "flattening" else -depth / 10)
                rows.append((epoch, depth, layer, measure, float(value)))
    frame = pd.DataFrame(rows, columns=["epoch", "depth", "layer", "measure", "value"])
    trend = script.trend_table(frame)
    assert trend["separation"].tolist() == [1.0, 1.0]
    assert trend["flattening"].tolist() == [1.0, 1.0]  # grows with depth here
    wide = script.wide_table(frame, 5)
    assert list(wide.columns) == ["depth", "layer", *script.MEASURES]
    assert wide["separation"].tolist() == [5.0, 6.0, 7.0]
    fig = script.figure(frame)
    assert len(fig.data) == 2 * len(script.MEASURES)  # one line per epoch and panel
    assert fig.layout.xaxis.ticktext == ("input", "h1", "h2")


# -------------------------------------------------------------------- Shang
SHANG_TINY = ["--epochs", "1", "--seeds", "0", "--channels", "4", "4", "6", "6"]


def test_shang_tiny(tmp_path, capsys):
    script = _load("shang_crelu_pairing")
    out = tmp_path / "shang"
    argv = [*SHANG_TINY, "--outdir", str(out), "--no-figure", "--jobs", "1"]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(out / f"{script.NAME}.csv")
    assert frame["layer"].tolist() == list(script.LAYERS) * 2
    assert frame["when"].tolist() == ["init"] * 5 + ["trained"] * 5
    assert frame["n_filters"].tolist()[:5] == [4, 4, 6, 6, 10]
    assert frame["filter_size"].tolist()[:5] == [49, 36, 36, 54, 6]
    # The stored initial pairing is pairing_table of the same seeded network.
    torch.manual_seed(0)
    table = pairing_table(
        script.make_cnn((4, 4, 6, 6)), layers=script.LAYERS, threshold=-0.9, seed=0
    )
    init = frame[frame["when"] == "init"].reset_index(drop=True)
    np.testing.assert_allclose(init["mean_mu"], table["mean_mu"], rtol=1e-9)
    np.testing.assert_allclose(init["random_mean_mu"], table["random_mean_mu"])
    stored = np.array(init["mu"].iloc[0].split(), dtype=float)
    np.testing.assert_allclose(stored, table["mu"].iloc[0], atol=1e-5)
    trained = frame[frame["when"] == "trained"]
    assert ((trained["mean_mu"] >= -1) & (trained["mean_mu"] <= 1)).all()
    assert not np.allclose(trained["mean_mu"], init["mean_mu"])
    assert "Test accuracy per seed:" in printed
    assert "Mean mu per layer" in printed
    summary = script.summary_table(frame)
    assert summary["layer"].tolist() == list(script.LAYERS)
    np.testing.assert_allclose(
        summary["trained - random"],
        summary["mean mu trained"] - summary["mean mu random"],
    )
    assert "Plotly" in (out / f"{script.NAME}.html").read_text(encoding="utf-8")


def test_shang_figure_has_a_panel_per_layer():
    script = _load("shang_crelu_pairing")
    rows = []
    for when in ("init", "trained"):
        for layer in script.LAYERS:
            mu = np.linspace(-0.8, -0.1, 4) - (0.1 if when == "trained" else 0)
            rows.append({"layer": layer, "when": when, "mu": " ".join(map(str, mu))})
    shapes = dict.fromkeys(script.LAYERS, (4, 3, 3))
    fig = script.figure(pd.DataFrame(rows), shapes)
    # Per panel: trained and init histograms and the random-baseline line.
    assert len(fig.data) == 3 * len(script.LAYERS)
    assert [a.text for a in fig.layout.annotations][:1] == ["conv1 (4 filters of 9)"]
    baseline = [t for t in fig.data if t.name == "Gaussian random filters"]
    widths = np.diff(baseline[0].x)
    assert math.isclose(float(np.sum(baseline[0].y) * widths[0]), 1.0, rel_tol=1e-6)


# ---------------------------------------------------------------- slow tests
@pytest.mark.slow
def test_brahma_quick_with_png(tmp_path):
    script = _load("brahma_disentanglement")
    out = tmp_path / "brahma"
    assert script.main(["--quick", "--outdir", str(out)]) == 0
    assert (out / f"{script.NAME}.csv").is_file()
    png = out / f"{script.NAME}.png"
    html = out / f"{script.NAME}.html"
    assert png.is_file() or html.is_file()


@pytest.mark.slow
def test_shang_quick_with_png(tmp_path):
    script = _load("shang_crelu_pairing")
    out = tmp_path / "shang"
    assert script.main(["--quick", "--outdir", str(out)]) == 0
    assert (out / f"{script.NAME}.csv").is_file()
    assert (out / f"{script.NAME}.html").is_file()
