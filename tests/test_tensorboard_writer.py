"""TensorBoardWriter: what the monitor writes into a TensorBoard log directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ibmonitor.tensorboard.writer import (
    PLUGIN_NAME,
    TensorBoardWriter,
    information_plane_png,
    plugin_tag,
    saturated_fraction,
)

LAYERS = ["fc1", "fc2", "out"]


def _rows(epoch, *, estimator="binned", probe=None, layers=LAYERS):
    rows = []
    for i, layer in enumerate(layers):
        row = {
            "epoch": epoch,
            "layer": layer,
            "estimator": estimator,
            "i_xt": 6.0 - i - 0.1 * epoch,
            "i_ty": 0.2 + 0.1 * epoch - 0.01 * i,
            "n_bins": 30,
        }
        if probe is not None:
            row["probe"] = probe
        rows.append(row)
    return rows


def _provider(logdir: Path):
    """TensorBoard's own data provider over ``logdir`` (the Python loader)."""
    from tensorboard.backend.event_processing import (
        data_provider,
        plugin_event_multiplexer,
    )

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={PLUGIN_NAME: 0, "images": 0}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


def _ctx():
    from tensorboard import context

    return context.RequestContext()


def _raw_values(logdir: Path):
    """Every summary value in the event files, as written (no migration)."""
    from tensorboard.backend.event_processing.event_file_loader import (
        LegacyEventFileLoader,
    )

    values = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            if event.HasField("summary"):
                values.extend((event.step, value) for value in event.summary.value)
    return values


# --------------------------------------------------------------- saturation
def test_saturated_fraction_tanh_counts_values_within_one_percent_of_bounds():
    t = np.array([[0.995, -0.991], [0.98, 0.0], [1.0, -1.0], [0.5, 0.989]])
    assert saturated_fraction(t, "tanh") == pytest.approx(4 / 8)
    assert saturated_fraction(t, "Tanh") == pytest.approx(4 / 8)


def test_saturated_fraction_sigmoid_uses_bounds_zero_and_one():
    t = np.array([0.0, 0.009, 0.011, 0.5, 0.989, 0.991, 1.0, 0.3])
    assert saturated_fraction(t, "sigmoid") == pytest.approx(4 / 8)


def test_saturated_fraction_none_for_unbounded_kinds_and_no_finite_values():
    t = np.ones((4, 3))
    assert saturated_fraction(t, "relu") is None
    assert saturated_fraction(t, None) is None
    assert saturated_fraction(np.full(3, np.nan), "tanh") is None


def test_saturated_fraction_ignores_nan_and_accepts_tensors():
    t = torch.tensor([[1.0, float("nan")], [0.0, -1.0]], dtype=torch.float16)
    assert saturated_fraction(t, "tanh") == pytest.approx(2 / 3)


# ------------------------------------------------------------ information
def test_write_information_writes_scalars_per_layer_and_estimator(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        for epoch in (0, 1, 3):
            writer.write_information(epoch, _rows(epoch))
    scalars = _provider(tmp_path).read_scalars(
        _ctx(), experiment_id="", plugin_name="scalars", downsample=100
    )["."]
    assert {"information/binned/fc1/I_XT", "information/binned/out/I_TY"} <= set(
        scalars
    )
    points = scalars["information/binned/fc2/I_XT"]
    assert [p.step for p in points] == [0, 1, 3]
    assert [p.value for p in points] == pytest.approx([5.0, 4.9, 4.7])


def test_write_information_probe_other_than_default_is_in_the_tag(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_information(2, _rows(2, probe="test"))
        writer.write_information(2, _rows(2, probe="default"))
    tags = set(
        _provider(tmp_path).list_scalars(
            _ctx(), experiment_id="", plugin_name="scalars"
        )["."]
    )
    assert "information/test/binned/fc1/I_XT" in tags
    assert "information/binned/fc1/I_XT" in tags


def test_plugin_tensors_carry_plugin_name_data_class_and_metadata(tmp_path):
    from tensorboard.compat.proto import summary_pb2

    with TensorBoardWriter(tmp_path) as writer:
        writer.write_information(0, _rows(0))
        writer.write_information(5, _rows(5))
    raw = [
        (step, value)
        for step, value in _raw_values(tmp_path)
        if value.metadata.plugin_data.plugin_name == PLUGIN_NAME
    ]
    assert len(raw) == 2 * len(LAYERS)
    for _, value in raw:
        assert value.metadata.data_class == summary_pb2.DATA_CLASS_TENSOR
        content = json.loads(value.metadata.plugin_data.content)
        assert content["version"] == 1
        assert value.tag == plugin_tag(content["layer"], "binned", "default")
        assert content["layer_index"] == LAYERS.index(content["layer"])

    # ... so that TensorBoard's data provider returns them.
    provider = _provider(tmp_path)
    listing = provider.list_tensors(_ctx(), experiment_id="", plugin_name=PLUGIN_NAME)[
        "."
    ]
    assert set(listing) == {plugin_tag(layer, "binned") for layer in LAYERS}
    data = provider.read_tensors(
        _ctx(), experiment_id="", plugin_name=PLUGIN_NAME, downsample=100
    )["."]
    fc1 = data[plugin_tag("fc1", "binned")]
    assert [p.step for p in fc1] == [0, 5]
    np.testing.assert_allclose(fc1[1].numpy, [5.5, 0.7])
    assert fc1[1].numpy.dtype == np.float64


def test_nan_information_is_written_not_dropped(tmp_path):
    rows = _rows(1)
    rows[0]["i_xt"] = float("nan")
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_information(1, rows)
    data = _provider(tmp_path).read_tensors(
        _ctx(), experiment_id="", plugin_name=PLUGIN_NAME, downsample=10
    )["."]
    assert np.isnan(data[plugin_tag("fc1", "binned")][0].numpy[0])


# ---------------------------------------------------------------- scalars
def test_write_scalars_skips_values_that_are_not_numbers(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_scalars(
            4,
            {"gap/loss": 0.25, "train_acc": np.float32(0.5), "note": "x", "n": None},
        )
    scalars = _provider(tmp_path).read_scalars(
        _ctx(), experiment_id="", plugin_name="scalars", downsample=10
    )["."]
    assert set(scalars) == {"gap/loss", "train_acc"}
    assert scalars["gap/loss"][0].step == 4
    assert scalars["gap/loss"][0].value == pytest.approx(0.25)


# ------------------------------------------------------------ activations
def test_write_activations_histogram_and_saturation(tmp_path):
    t = np.tanh(np.random.default_rng(0).normal(scale=3.0, size=(200, 5)))
    expected = saturated_fraction(t, "tanh")
    with TensorBoardWriter(tmp_path) as writer:
        fraction = writer.write_activations(3, "fc1", t, "tanh")
        assert writer.write_activations(3, "fc2", np.abs(t), "relu") is None
    assert fraction == pytest.approx(expected)
    assert 0.0 < fraction < 1.0
    provider = _provider(tmp_path)
    scalars = provider.read_scalars(
        _ctx(), experiment_id="", plugin_name="scalars", downsample=10
    )["."]
    assert set(scalars) == {"saturation/fc1"}
    assert scalars["saturation/fc1"][0].value == pytest.approx(fraction)
    histograms = provider.read_tensors(
        _ctx(), experiment_id="", plugin_name="histograms", downsample=10
    )["."]
    assert set(histograms) == {"activations/fc1", "activations/fc2"}
    buckets = histograms["activations/fc1"][0].numpy  # (k, 3): left, right, count
    assert buckets[:, 2].sum() == pytest.approx(t.size)
    assert buckets[0, 0] == pytest.approx(t.min())
    assert buckets[-1, 1] == pytest.approx(t.max())


def test_write_activations_constant_layer_and_probe_prefix(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_activations(0, "fc1", np.ones((4, 2)), "sigmoid", probe="test")
        writer.write_activations(0, "fc2", np.full((2, 2), np.nan), "tanh")
    provider = _provider(tmp_path)
    histograms = provider.read_tensors(
        _ctx(), experiment_id="", plugin_name="histograms", downsample=10
    )["."]
    assert set(histograms) == {"activations/test/fc1"}  # the all-NaN layer: none
    scalars = provider.read_scalars(
        _ctx(), experiment_id="", plugin_name="scalars", downsample=10
    )["."]
    assert scalars["saturation/test/fc1"][0].value == pytest.approx(1.0)


# ----------------------------------------------------------------- images
def _frame(epochs, estimators=("binned",)):
    rows = []
    for estimator in estimators:
        for epoch in epochs:
            rows.extend(_rows(epoch, estimator=estimator))
    return pd.DataFrame(rows)


def test_information_plane_png_is_a_png_without_a_browser():
    png = information_plane_png(_frame([0, 1, 2, 4, 8, 16, 64, 128]), epoch=64)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(__import__("io").BytesIO(png), format="png")
    assert image.shape[:2] == (480, 640)


def test_information_plane_png_rejects_a_frame_without_the_columns():
    with pytest.raises(ValueError, match="column 'i_ty'"):
        information_plane_png(
            pd.DataFrame({"epoch": [0], "layer": ["a"]}).assign(
                estimator="binned", i_xt=1.0
            )
        )


def test_write_plane_image_one_image_per_estimator_and_epoch(tmp_path):
    frame = _frame([0, 1, 2], estimators=("binned", "kde"))
    with TensorBoardWriter(tmp_path, image_dpi=40) as writer:
        assert writer.write_plane_image(1, frame[frame.epoch <= 1]) == [
            "information_plane/binned",
            "information_plane/kde",
        ]
        writer.write_plane_image(2, frame)
        assert writer.write_plane_image(3, frame.iloc[:0]) == []
    provider = _provider(tmp_path)
    images = provider.read_blob_sequences(
        _ctx(), experiment_id="", plugin_name="images", downsample=100
    )["."]
    assert set(images) == {"information_plane/binned", "information_plane/kde"}
    assert [p.step for p in images["information_plane/kde"]] == [1, 2]
    blob = provider.read_blob(
        _ctx(), blob_key=images["information_plane/kde"][0].values[2].blob_key
    )
    assert blob[:4] == b"\x89PNG"


# ----------------------------------------------------------------- layout
def _layout(logdir: Path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    data = _provider(logdir).read_tensors(
        _ctx(), experiment_id="", plugin_name="custom_scalars", downsample=1
    )["."]
    layout = layout_pb2.Layout()
    layout.ParseFromString(data["custom_scalars__config__"][-1].numpy.item())
    return {
        category.title: {
            chart.title: list(chart.multiline.tag) for chart in category.chart
        }
        for category in layout.category
    }


def test_write_layout_groups_information_gap_sharpness_and_norms(tmp_path):
    names = [
        "train_loss",
        "test_loss",
        "test_acc",
        "gap/loss",
        "gap/acc",
        "sharpness/worst_case",
        "hessian/top_eigenvalue",
        "norms/fc1/spectral",
        "norms/fc2/spectral",
        "norms/fc1/frobenius",
        "lr",
    ]
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_layout(["fc1", "fc2"], ["binned", "kde"], names)
    layout = _layout(tmp_path)
    assert layout["Information · kde"]["I(X;T) [bits]"] == [
        "^information/kde/fc1/I_XT$",
        "^information/kde/fc2/I_XT$",
    ]
    assert layout["Generalization"]["loss"] == ["^train_loss$", "^test_loss$"]
    assert layout["Generalization"]["generalization gap"] == ["^gap/loss$", "^gap/acc$"]
    assert set(layout["Sharpness"]) == {
        "sharpness/worst_case",
        "hessian/top_eigenvalue",
    }
    assert layout["Norms"]["spectral norm"] == [
        "^norms/fc1/spectral$",
        "^norms/fc2/spectral$",
    ]
    assert layout["Other"] == {"lr": ["^lr$"]}


def test_layout_follows_new_scalars_and_saturated_layers(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_layout(["fc1"], ["binned"], [])
        writer.write_scalars(1, {"gap/loss": 0.1})
        writer.write_activations(1, "fc1", np.zeros((3, 2)), "tanh")
    layout = _layout(tmp_path)
    assert layout["Generalization"] == {"generalization gap": ["^gap/loss$"]}
    assert layout["Saturation"] == {"saturated fraction": ["^saturation/fc1$"]}


def test_layer_names_are_escaped_in_layout_regexes(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_layout(["encoder.fc1"], ["binned"])
    charts = _layout(tmp_path)["Information · binned"]
    assert charts["I(T;Y) [bits]"] == [r"^information/binned/encoder\.fc1/I_TY$"]


# --------------------------------------------------------------- lifecycle
def test_closed_writer_raises_and_close_is_idempotent(tmp_path):
    writer = TensorBoardWriter(tmp_path)
    writer.write_scalars(0, {"a": 1.0})
    writer.flush()
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write_scalars(1, {"a": 2.0})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_importing_ibmonitor_tensorboard_loads_neither_tensorboard_nor_matplotlib():
    code = (
        "import sys, ibmonitor.tensorboard as t; "
        "assert 'tensorboard' not in sys.modules, 'tensorboard'; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib'; "
        "assert callable(t.saturated_fraction)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
