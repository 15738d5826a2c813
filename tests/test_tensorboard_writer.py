"""TensorBoardWriter: what the monitor writes into a TensorBoard log directory."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ibmonitor import schema
from ibmonitor.activations import saturated_fraction
from ibmonitor.schema import PANELS, X_TITLE, Y_TITLE, saturation_name
from ibmonitor.tensorboard import writer as writer_module
from ibmonitor.tensorboard.writer import (
    PLUGIN_NAME,
    TensorBoardWriter,
    information_plane_png,
    plugin_tag,
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
def test_write_activations_writes_only_the_histogram(tmp_path):
    t = np.tanh(np.random.default_rng(0).normal(scale=3.0, size=(200, 5)))
    assert 0.0 < saturated_fraction(t, "tanh") < 1.0  # saturated: yet no scalar
    with TensorBoardWriter(tmp_path) as writer:
        assert writer.write_activations(3, "fc1", t) is None
        writer.write_activations(3, "fc2", np.abs(t))
    provider = _provider(tmp_path)
    scalars = provider.list_scalars(_ctx(), experiment_id="", plugin_name="scalars")
    assert scalars.get(".", {}) == {}
    histograms = provider.read_tensors(
        _ctx(), experiment_id="", plugin_name="histograms", downsample=10
    )["."]
    assert set(histograms) == {"activations/fc1", "activations/fc2"}
    buckets = histograms["activations/fc1"][0].numpy  # (k, 3): left, right, count
    assert buckets[:, 2].sum() == pytest.approx(t.size)
    assert buckets[0, 0] == pytest.approx(t.min())
    assert buckets[-1, 1] == pytest.approx(t.max())


def test_writer_no_longer_computes_saturation(tmp_path):
    """One shape for the monitor: a sink writes what it is given, nothing more."""
    parameters = inspect.signature(TensorBoardWriter.write_activations).parameters
    assert "kind" not in parameters
    assert parameters["probe"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["probe"].default == schema.DEFAULT_PROBE
    with TensorBoardWriter(tmp_path) as writer, pytest.raises(TypeError):
        writer.write_activations(0, "fc1", np.ones((2, 2)), "tanh")
    assert not hasattr(writer_module, "_SATURATION_BOUNDS")
    assert "saturated_fraction" not in vars(writer_module)


def test_write_activations_constant_layer_and_probe_prefix(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_activations(0, "fc1", np.ones((4, 2)), probe="test")
        writer.write_activations(0, "fc2", np.full((2, 2), np.nan))
    provider = _provider(tmp_path)
    histograms = provider.read_tensors(
        _ctx(), experiment_id="", plugin_name="histograms", downsample=10
    )["."]
    assert set(histograms) == {"activations/test/fc1"}  # the all-NaN layer: none
    assert histograms["activations/test/fc1"][0].numpy[:, 2].sum() == 8


def test_saturation_scalars_arrive_through_write_scalars(tmp_path):
    values = {
        saturation_name("fc1"): 0.25,
        saturation_name("fc1", "test"): 1.0,
    }
    assert list(values) == ["saturation/fc1", "saturation/test/fc1"]
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_scalars(2, values)
    scalars = _provider(tmp_path).read_scalars(
        _ctx(), experiment_id="", plugin_name="scalars", downsample=10
    )["."]
    assert scalars["saturation/fc1"][0].value == pytest.approx(0.25)
    assert scalars["saturation/test/fc1"][0].step == 2
    assert _layout(tmp_path)["Saturation"] == {
        "saturated fraction": ["^saturation/fc1$", "^saturation/test/fc1$"]
    }


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
    with pytest.raises(ValueError, match=r"lacks the columns \['i_ty'\]"):
        information_plane_png(
            pd.DataFrame({"epoch": [0], "layer": ["a"]}).assign(
                estimator="binned", i_xt=1.0
            )
        )


def test_information_plane_png_shares_the_log_epoch_decision(tmp_path, monkeypatch):
    """The images colour epochs as plotting does: schema.use_log_epochs."""
    from ibmonitor.plotting import information_plane

    calls = []

    def spy(configs, epochs, log_epochs="auto"):
        configs = list(configs)
        answer = schema.use_log_epochs(configs, list(epochs), log_epochs)
        calls.append((configs, answer))
        return answer

    monkeypatch.setattr(writer_module, "use_log_epochs", spy)
    log_epochs = [0, 1, 2, 3, 5, 8, 13, 22, 37, 62, 104, 174, 292, 489]
    frame = _frame(log_epochs)
    information_plane_png(frame, dpi=30)
    assert calls[-1] == ([], True)
    plotted = information_plane(frame).layout.coloraxis.colorbar.ticktext
    assert plotted is not None  # plotting decides the same: log
    information_plane_png(_frame(range(0, 200, 10)), dpi=30)
    assert calls[-1] == ([], False)
    every = {"schedule": {"kind": "every", "every": 1}}
    information_plane_png(frame, dpi=30, config=every)
    assert calls[-1] == ([every], False)  # the run's schedule wins
    with TensorBoardWriter(tmp_path, config=every) as writer:
        assert writer.config == every


def test_write_plane_image_passes_the_runs_schedule(tmp_path, monkeypatch):
    seen = []
    real = writer_module.information_plane_png

    def spy(frame, **kwargs):
        seen.append(kwargs.get("config"))
        return real(frame, **kwargs)

    monkeypatch.setattr(writer_module, "information_plane_png", spy)
    config = {"schedule": {"kind": "log", "total_epochs": 100}}
    with TensorBoardWriter(tmp_path, config=config, image_dpi=30) as writer:
        long = _frame([0, 1]).melt(
            id_vars=["epoch", "layer", "estimator"],
            value_vars=["i_xt", "i_ty"],
            var_name="quantity",
        )
        assert writer.write_plane_image(1, long) == ["information_plane/binned"]
    assert seen == [config]


def test_information_plane_png_axis_titles_are_the_schemas(monkeypatch):
    from matplotlib.axes import Axes

    labels = []
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, t, **k: labels.append(t))
    monkeypatch.setattr(Axes, "set_ylabel", lambda ax, t, **k: labels.append(t))
    information_plane_png(_frame([0, 1, 2]), dpi=30)
    assert labels[-2:] == [X_TITLE, Y_TITLE]  # after the colour bar's "epoch"


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


def test_write_layout_groups_information_and_the_schemas_panels(tmp_path):
    names = [
        "train_loss",
        "test_loss",
        "test_acc",
        "gap/loss",
        "gap/acc",
        "sharpness/worst_case",
        "hessian/top_eigenvalue",
        "pac_bayes/bound",
        "norms/fc1/spectral",
        "norms/fc2/spectral",
        "norms/fc1/frobenius",
        "lr",
    ]
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_layout(["fc1", "fc2"], ["binned", "kde"], names)
    layout = _layout(tmp_path)
    assert list(layout) == [
        "Information · binned",
        "Information · kde",
        "Loss",
        "Accuracy",
        "Sharpness",
        "Norms",
        "Other",
    ]
    assert layout["Information · kde"][X_TITLE] == [
        "^information/kde/fc1/I_XT$",
        "^information/kde/fc2/I_XT$",
    ]
    assert layout["Loss"] == {
        "loss": ["^train_loss$", "^test_loss$"],
        "generalization gap": ["^gap/loss$"],
    }
    assert layout["Accuracy"] == {
        "accuracy": ["^test_acc$"],
        "generalization gap": ["^gap/acc$"],
    }
    assert set(layout["Sharpness"]) == {  # PAC-Bayes flatness is sharpness
        "sharpness/worst_case",
        "hessian/top_eigenvalue",
        "pac_bayes/bound",
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
        writer.write_activations(1, "fc1", np.ones((3, 2)))  # no saturation here
        assert "Saturation" not in _layout_of(writer)
        writer.write_scalars(1, {saturation_name("fc1"): 1.0})
    layout = _layout(tmp_path)
    assert layout["Loss"] == {"generalization gap": ["^gap/loss$"]}
    assert layout["Saturation"] == {"saturated fraction": ["^saturation/fc1$"]}


def _layout_of(writer):
    return {c.title for c in writer._build_layout().category}


def test_layout_categories_are_the_schemas_panels():
    names = [
        "train_loss",
        "gap/test_acc",
        "expected_sharpness/sigma_0.01",
        "pac_bayes/sigma",
        "norms/total/frobenius",
        "saturation/test/fc2",
        "epoch_time",
    ]
    groups = writer_module._layout_groups(names)
    for name in names:
        panel, chart = schema.scalar_panel(name)
        assert name in groups[panel][chart]
    assert list(groups) == [
        p for p in PANELS if any(schema.scalar_panel(n).panel == p for n in names)
    ]


def test_layer_names_are_escaped_in_layout_regexes(tmp_path):
    with TensorBoardWriter(tmp_path) as writer:
        writer.write_layout(["encoder.fc1"], ["binned"])
    charts = _layout(tmp_path)["Information · binned"]
    assert charts[Y_TITLE] == [r"^information/binned/encoder\.fc1/I_TY$"]


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
        "assert 'InformationPlanePlugin' in t.__all__"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
