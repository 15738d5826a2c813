"""The Information Plane TensorBoard plugin: in-process, in a real TensorBoard,
and in a headless Chromium.

The in-process tests drive the plugin's WSGI routes over TensorBoard's own data
provider. The server tests start ``tensorboard`` once for the module (the
binary next to this interpreter), and stop it by its PID. The browser test
drives Debian's Chromium through Playwright; it skips when no browser is found,
unless ``IBMONITOR_REQUIRE_BROWSER=1``, where it fails instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ibmonitor import schema
from ibmonitor.activations import saturated_fraction
from ibmonitor.schema import PANELS, X_TITLE, Y_TITLE, saturation_name
from ibmonitor.sinks import RunStore, TensorBoard
from ibmonitor.tensorboard.plugin import (
    MIN_PLANE_SPAN,
    PLUGIN_NAME,
    InformationPlanePlugin,
    plotly_js_path,
)
from ibmonitor.tensorboard.writer import TensorBoardWriter

LAYERS = ["fc1", "fc2", "fc3"]
EPOCHS = [0, 1, 2, 4, 8]
STARTUP_TIMEOUT = 120.0


# ------------------------------------------------------------------ a logdir
def _value(layer_index, epoch, estimator):
    shift = 0.5 if estimator == "kde" else 0.0
    return (
        8.0 - layer_index - 0.1 * epoch + shift,
        0.3 + 0.05 * epoch - 0.02 * layer_index,
    )


def write_demo_run(path: Path, *, probes=("default",), nan_at=None) -> None:
    """A run written by TensorBoardWriter: 3 layers, binned and kde, 5 epochs."""
    with TensorBoardWriter(path) as writer:
        writer.write_layout(LAYERS, ["binned", "kde"], [], probes=list(probes))
        for epoch in EPOCHS:
            rows = []
            for probe in probes:
                for estimator in ("binned", "kde"):
                    for i, layer in enumerate(LAYERS):
                        i_xt, i_ty = _value(i, epoch, estimator)
                        if nan_at == (epoch, layer):
                            i_xt = math.nan
                        rows.append(
                            {
                                "epoch": epoch,
                                "probe": probe,
                                "layer": layer,
                                "estimator": estimator,
                                "i_xt": i_xt,
                                "i_ty": i_ty,
                            }
                        )
            writer.write_information(epoch, rows)
            writer.write_scalars(
                epoch,
                {
                    "train_loss": 1.0 / (epoch + 1),
                    "test_loss": 1.5 / (epoch + 1),
                    "gap/loss": 0.5 / (epoch + 1),
                    "gap/train_loss": 1.0 / (epoch + 1),
                    "test_acc": 0.8,
                    "gap/test_acc": 0.8,
                    "gap/acc": 0.1,
                    "sharpness/worst_case": 2.0 + epoch,
                    "hessian/top_eigenvalue": 10.0 + epoch,
                    "pac_bayes/bound": 30.0 - epoch,
                    "norms/fc1/spectral": 1.0,
                    "lr": 0.1,
                },
            )
            # As the monitor does: saturation is computed once per layer and
            # reaches the writer as ordinary scalars.
            t = np.tanh(np.arange(-8, 8.0))
            writer.write_scalars(
                epoch,
                {
                    saturation_name(layer): saturated_fraction(t, "tanh")
                    for layer in LAYERS
                },
            )
            for layer in LAYERS:
                writer.write_activations(epoch, layer, t)


PINNED_LAYERS = [f"layer{k}" for k in range(42)]


def write_pinned_run(path: Path) -> None:
    """42 layers pinned at (log2 512, H(Y)) within a few thousandths of a bit.

    The resnet18 case of the issue "planes that mean something", point 5.
    """
    rng = np.random.default_rng(0)
    with TensorBoardWriter(path) as writer:
        for epoch in EPOCHS:
            rows = [
                {
                    "epoch": epoch,
                    "layer": layer,
                    "estimator": "binned",
                    "i_xt": 9.0 - 0.004 * rng.random(),
                    "i_ty": 3.31 + 0.004 * rng.random(),
                    "pinned": 1.0,
                    "resolution": 0.72,
                }
                for layer in PINNED_LAYERS
            ]
            writer.write_information(epoch, rows)


def write_interval_run(path: Path) -> None:
    """Two layers with bootstrap intervals and a permutation baseline (issue 12)."""
    with TensorBoardWriter(path) as writer:
        for epoch in EPOCHS:
            rows = [
                {
                    "epoch": epoch,
                    "layer": layer,
                    "estimator": "binned",
                    "i_xt": 2.0 + k + 0.001 * epoch,
                    "i_ty": 0.5 + 0.1 * k,
                    "i_xt_low": 1.8 + k + 0.001 * epoch,
                    "i_xt_high": 2.3 + k + 0.001 * epoch,
                    "i_ty_low": 0.45 + 0.1 * k,
                    "i_ty_high": 0.6 + 0.1 * k,
                    "i_ty_baseline": 0.02 * (k + 1),
                    "i_xt_ceiling": 3.5,
                }
                for k, layer in enumerate(["fc1", "fc2"])
            ]
            writer.write_information(epoch, rows)


def write_explain_run(path: Path) -> None:
    """A run with explanation image grids at three epochs (issue 14)."""
    rng = np.random.default_rng(0)
    with TensorBoardWriter(path) as writer:
        for epoch in (0, 4, 9):
            writer.write_information(
                epoch,
                [{"epoch": epoch, "layer": "fc1", "estimator": "binned",
                  "i_xt": 1.0, "i_ty": 0.5}],
            )  # fmt: skip
            writer.write_image_grid(epoch, "explain/saliency", rng.random((3, 1, 8, 8)))
            writer.write_image_grid(
                epoch, "explain/top/conv1", rng.random((2, 4, 1, 8, 8))
            )


def write_monitor_run(path: Path) -> None:
    """A run written by ibmonitor.InformationMonitor(tensorboard=True)."""
    import torch
    from torch import nn

    from ibmonitor.exceptions import EstimationWarning
    from ibmonitor.measures import MeasureSet
    from ibmonitor.monitor import InformationMonitor

    torch.manual_seed(0)
    x = ((torch.arange(64)[:, None] >> torch.arange(6)) & 1).to(torch.float32)
    y = (x.sum(dim=1) > 2).to(torch.int64)
    model = nn.Sequential(
        nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 2)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = InformationMonitor(
        model,
        inputs=x,
        labels=y,
        estimators=("binned",),
        schedule=1,
        logdir=path,
        sinks=[
            RunStore(),
            TensorBoard(images="log"),  # on the 1st and 2nd recorded epoch, at close
        ],
        overhead_budget=None,
        measures=MeasureSet(
            ["separation", "geometry", "pairing"],
            loss_fn=nn.functional.cross_entropy,
            train_data=(x, y),
            schedule=1,
        ),
    )
    with monitor, warnings.catch_warnings():
        # 64 distinct inputs: binning warns that I(X;T) is pinned at 6 bits.
        warnings.simplefilter("ignore", EstimationWarning)
        for epoch in range(3):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            monitor.on_epoch_end(epoch, train_loss=loss.item())


def _monitor_available() -> bool:
    try:
        import ibmonitor.monitor  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tb_logdir")
    write_demo_run(root / "writer_run")
    write_demo_run(root / "probes_run", probes=("default", "test"), nan_at=(2, "fc2"))
    return root


# --------------------------------------------------------- in-process plugin
def _plugin(logdir: Path, *, hints=None) -> InformationPlanePlugin:
    from tensorboard.backend.event_processing import (
        data_provider,
        plugin_event_multiplexer,
    )
    from tensorboard.plugins import base_plugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(data_provider=provider, sampling_hints=hints)
    return InformationPlanePlugin(context)


@pytest.fixture(scope="module")
def plugin(logdir) -> InformationPlanePlugin:
    return _plugin(logdir)


def _get(plugin: InformationPlanePlugin, route: str, query: str = ""):
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    app = plugin.get_plugin_apps()[route]
    return Client(app, Response).get(route + query)


def _json(plugin, route, query=""):
    response = _get(plugin, route, query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data(as_text=True))


def test_frontend_metadata_is_an_es_module_tab():
    metadata = InformationPlanePlugin.frontend_metadata(None)
    assert metadata.es_module_path == "/static/index.js"
    assert metadata.tab_name == "Information Plane"
    assert InformationPlanePlugin.plugin_name == "ibmonitor"


def test_entry_point_registers_the_plugin():
    from importlib.metadata import entry_points

    found = [
        ep for ep in entry_points(group="tensorboard_plugins") if ep.name == "ibmonitor"
    ]
    assert found, "the tensorboard_plugins entry point 'ibmonitor' is not installed"
    assert found[0].load() is InformationPlanePlugin


def test_is_active_follows_the_data(plugin, tmp_path):
    assert plugin.is_active()
    assert not _plugin(tmp_path).is_active()


def test_information_route_carries_pinned_flags_and_minimum_spans(tmp_path):
    write_pinned_run(tmp_path / "pinned")
    write_demo_run(tmp_path / "plain")
    plugin = _plugin(tmp_path)
    info = _json(plugin, "/information", "?run=pinned")
    assert [s["layer"] for s in info["series"]] == PINNED_LAYERS
    assert all(all(s["pinned"]) for s in info["series"])
    assert info["series"][0]["resolution"] == [0.72] * len(EPOCHS)
    assert info["min_span"] == [1.0, 0.72]  # I(T;Y) widened to the resolution
    plain = _json(plugin, "/information", "?run=plain&estimator=binned")
    assert not any(p for s in plain["series"] for p in s["pinned"])
    assert plain["series"][0]["resolution"] == [None] * len(EPOCHS)
    assert plain["min_span"] == list(MIN_PLANE_SPAN)


def test_information_route_carries_intervals_and_baselines(tmp_path):
    write_interval_run(tmp_path / "interval")
    write_demo_run(tmp_path / "plain")
    plugin = _plugin(tmp_path)
    info = _json(plugin, "/information", "?run=interval")
    fc2 = info["series"][1]
    assert fc2["layer"] == "fc2"
    assert fc2["i_xt_low"] == pytest.approx([2.8 + 0.001 * e for e in EPOCHS])
    assert fc2["i_ty_high"] == pytest.approx([0.7] * len(EPOCHS))
    assert fc2["i_ty_baseline"] == pytest.approx([0.04] * len(EPOCHS))
    assert fc2["i_xt_ceiling"] == [3.5] * len(EPOCHS)
    assert fc2["pinned"] == [False] * len(EPOCHS)
    plain = _json(plugin, "/information", "?run=plain&estimator=binned")
    assert "i_xt_low" not in plain["series"][0]  # only where the run has them


def test_explanation_routes_list_and_serve_the_images(tmp_path):
    write_explain_run(tmp_path / "explain")
    write_demo_run(tmp_path / "plain")
    plugin = _plugin(tmp_path)
    body = _json(plugin, "/explanations", "?run=explain")
    assert body["tags"] == {
        "explain/saliency": [0, 4, 9],
        "explain/top/conv1": [0, 4, 9],
    }
    png = _get(plugin, "/explanation_image", "?run=explain&tag=explain/saliency&step=4")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.get_data().startswith(b"\x89PNG")
    assert _json(plugin, "/explanations", "?run=plain")["tags"] == {}
    # only explanation tags, only stored epochs, ints only
    from tensorboard import errors as tb_errors

    for query, error in (
        ("?run=explain&tag=information_plane/binned&step=0", "InvalidArgument"),
        ("?run=explain&tag=explain/saliency&step=3", "NotFound"),
        ("?run=explain&tag=explain/saliency&step=x", "InvalidArgument"),
    ):
        # TensorBoard answers these errors with 400 and 404
        with pytest.raises(getattr(tb_errors, error + "Error")):
            _get(plugin, "/explanation_image", query)


def test_plugin_minimum_span_is_the_plotting_one():
    from ibmonitor import plotting

    assert tuple(MIN_PLANE_SPAN) == tuple(plotting.MIN_PLANE_SPAN)


def test_runs_route_lists_layers_estimators_and_probes(plugin):
    runs = _json(plugin, "/runs")
    assert [r["run"] for r in runs] == ["probes_run", "writer_run"]
    writer_run = runs[1]
    assert writer_run["layers"] == LAYERS
    assert writer_run["estimators"] == ["binned", "kde"]
    assert writer_run["probes"] == ["default"]
    assert writer_run["max_step"] == EPOCHS[-1]
    assert runs[0]["probes"] == ["default", "test"]


def test_information_route_returns_each_layers_trajectory(plugin):
    body = _json(plugin, "/information", "?run=writer_run&estimator=kde")
    assert body["run"] == "writer_run"
    # titles and the log-or-linear epoch decision of ibmonitor.schema
    assert (body["x_title"], body["y_title"]) == (X_TITLE, Y_TITLE)
    assert body["log_epochs"] is schema.epochs_look_log(EPOCHS) is False
    assert [s["layer"] for s in body["series"]] == LAYERS
    for i, series in enumerate(body["series"]):
        assert series["estimator"] == "kde"
        assert series["epochs"] == EPOCHS
        expected = [_value(i, epoch, "kde") for epoch in EPOCHS]
        assert series["i_xt"] == pytest.approx([e[0] for e in expected])
        assert series["i_ty"] == pytest.approx([e[1] for e in expected])


def test_information_route_filters_probe_and_sends_nan_as_null(plugin):
    body = _json(plugin, "/information", "?run=probes_run&estimator=binned&probe=test")
    assert [(s["probe"], s["layer"]) for s in body["series"]] == [
        ("test", layer) for layer in LAYERS
    ]
    fc2 = body["series"][1]
    assert fc2["i_xt"][EPOCHS.index(2)] is None
    everything = _json(plugin, "/information", "?run=probes_run")
    assert len(everything["series"]) == 2 * 2 * len(LAYERS)


def test_information_route_unknown_run_is_empty_and_missing_run_an_error(plugin):
    from tensorboard import errors

    body = _json(plugin, "/information", "?run=nope")
    assert (body["run"], body["series"]) == ("nope", [])
    # TensorBoard answers these errors with HTTP 400 (see the server test).
    with pytest.raises(errors.InvalidArgumentError, match="'run' parameter"):
        _get(plugin, "/information")
    with pytest.raises(errors.InvalidArgumentError, match="'run' parameter"):
        _get(plugin, "/scalars")


def test_scalars_route_groups_scalars_in_the_schemas_panels(plugin):
    panels = _json(plugin, "/scalars", "?run=writer_run")["panels"]
    assert list(panels) == list(PANELS)
    # train, test, then the gap; the gap measure's copies of the plain scalars
    # (gap/train_loss, gap/test_acc) are left out.
    assert list(panels["Loss"]) == ["train_loss", "test_loss", "gap/loss"]
    assert list(panels["Accuracy"]) == ["test_acc", "gap/acc"]
    assert set(panels["Sharpness"]) == {
        "sharpness/worst_case",
        "hessian/top_eigenvalue",
        "pac_bayes/bound",
    }
    assert set(panels["Norms"]) == {"norms/fc1/spectral"}
    assert set(panels["Saturation"]) == {f"saturation/{layer}" for layer in LAYERS}
    assert set(panels["Other"]) == {"lr"}  # not the information scalars
    assert panels["Loss"]["gap/loss"]["epochs"] == EPOCHS
    assert panels["Sharpness"]["sharpness/worst_case"]["values"] == pytest.approx(
        [2.0 + e for e in EPOCHS]
    )
    expected = saturated_fraction(np.tanh(np.arange(-8, 8.0)), "tanh")
    assert panels["Saturation"]["saturation/fc1"]["values"] == pytest.approx(
        [expected] * len(EPOCHS)
    )
    for panel, tags in panels.items():
        assert all(schema.scalar_panel(tag).panel == panel for tag in tags)


def test_index_js_knows_every_panel_of_the_schema(plugin):
    text = _get(plugin, "/static/index.js").get_data(as_text=True)
    for panel in PANELS:
        assert f"key: '{panel}'" in text
    assert f"const DEFAULT_PROBE = '{schema.DEFAULT_PROBE}'" in text
    assert "[bits]" not in text  # the axis titles come from /information


# The scalar names every panel consumer must sort alike.
AGREEMENT_NAMES = (
    "train_loss",
    "test_loss",
    "gap/loss",
    "train_acc",
    "test_acc",
    "gap/acc",
    "sharpness/worst_case",
    "hessian/top_eigenvalue",
    "expected_sharpness/sigma_0.01",
    "pac_bayes/bound",
    "pac_bayes/sigma",
    "norms/total/frobenius",
    "saturation/fc1",
    "saturation/test/fc2",
)


def _dashboard_panels(fig) -> dict:
    """{scalar name: title of the dashboard panel drawing it}."""
    titles = {
        round(a.y, 6): a.text
        for a in fig.layout.annotations
        if a.text in PANELS and a.yref == "paper"
    }
    found = {}
    for trace in fig.data:
        if (trace.meta or {}).get("kind") != "scalar":
            continue
        axis = fig.layout["yaxis" + trace.yaxis[1:]]
        found[trace.meta["name"]] = titles[round(axis.domain[1], 6)]
        assert trace.meta["panel"] == found[trace.meta["name"]]
    return found


def test_every_panel_consumer_sorts_scalars_alike(tmp_path):
    """The dashboard, the custom-scalars layout and the plugin agree (issue: one
    shape for the monitor), pac_bayes/* and saturation/* included."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    from ibmonitor.plotting import dashboard

    expected = {name: schema.scalar_panel(name).panel for name in AGREEMENT_NAMES}
    assert expected["pac_bayes/bound"] == "Sharpness"
    assert expected["saturation/test/fc2"] == "Saturation"

    with TensorBoardWriter(tmp_path / "run") as writer:
        writer.write_information(
            0, [{"layer": "fc1", "estimator": "binned", "i_xt": 1.0, "i_ty": 0.5}]
        )
        for epoch in (0, 1, 2):
            writer.write_scalars(epoch, dict.fromkeys(AGREEMENT_NAMES, 0.5 + epoch))
        layout = layout_pb2.Layout.FromString(
            writer._build_layout().SerializeToString()
        )
    layout_panels = {
        pattern[1:-1].replace("\\", ""): category.title
        for category in layout.category
        for chart in category.chart
        for pattern in chart.multiline.tag
    }
    plugin_panels = {
        tag: panel
        for panel, tags in _json(_plugin(tmp_path), "/scalars", "?run=run")[
            "panels"
        ].items()
        for tag in tags
    }
    run = type(
        "Run",
        (),
        {
            "name": "run",
            "config": {},
            "information": pd.DataFrame(
                {"epoch": [0], "layer": ["fc1"], "i_xt": [1.0], "i_ty": [0.5]}
            ),
            "scalars": pd.DataFrame(
                [(e, n, 0.5 + e) for e in (0, 1, 2) for n in AGREEMENT_NAMES],
                columns=["epoch", "name", "value"],
            ),
        },
    )()
    dashboard_panels = _dashboard_panels(dashboard(run))
    for name, panel in expected.items():
        assert layout_panels[name] == panel, name
        assert plugin_panels[name] == panel, name
        assert dashboard_panels[name] == panel, name


def test_static_routes_serve_the_module_and_plotly_from_the_package(plugin):
    index = _get(plugin, "/static/index.js")
    assert index.status_code == 200
    assert index.mimetype == "application/javascript"
    text = index.get_data(as_text=True)
    assert "export async function render" in text
    assert "http://" not in text and "https://" not in text  # nothing from a CDN
    plotly = _get(plugin, "/static/plotly.min.js")
    assert plotly.status_code == 200
    assert plotly.get_data() == plotly_js_path().read_bytes()
    assert "package_data" in str(plotly_js_path())


def test_sampling_hint_zero_keeps_everything(logdir):
    plugin = _plugin(logdir, hints={PLUGIN_NAME: 0, "scalars": 2})
    body = _json(plugin, "/information", "?run=writer_run&estimator=binned")
    assert body["series"][0]["epochs"] == EPOCHS
    panels = _json(plugin, "/scalars", "?run=writer_run")["panels"]
    assert len(panels["Loss"]["gap/loss"]["epochs"]) == 2


def test_foreign_plugin_content_is_ignored(tmp_path):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    writer = TensorBoardWriter(tmp_path / "run")
    summary = summary_pb2.Summary()
    summary.value.add(
        tag="ibmonitor/default/binned/future",
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=PLUGIN_NAME, content=b'{"version": 99}'
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        ),
        tensor=tensor_util.make_tensor_proto(np.zeros(2)),
    )
    writer._add_summary(summary, 0)
    writer.close()
    assert _json(_plugin(tmp_path), "/runs") == []


# ------------------------------------------------------------------ launcher
def test_launch_starts_tensorboard_keeping_all_images(monkeypatch, tmp_path, capsys):
    import importlib

    from ibmonitor.tensorboard import launch as launch_module

    program = importlib.import_module("tensorboard.program")

    seen = {}

    class FakeTensorBoard:
        def configure(self, argv):
            seen["argv"] = argv

        def launch(self):
            return "http://127.0.0.1:6123/"

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(program, "TensorBoard", FakeTensorBoard)
    monkeypatch.setattr(launch_module, "_serve_forever", interrupt)
    assert launch_module.launch(tmp_path, host="127.0.0.1", port=6123) == 0
    argv = seen["argv"]
    assert argv[argv.index("--logdir") + 1] == str(tmp_path)
    assert argv[argv.index("--port") + 1] == "6123"
    hints = dict(
        pair.split("=")
        for pair in argv[argv.index("--samples_per_plugin") + 1].split(",")
    )
    assert int(hints["images"]) >= 10_000 and int(hints["ibmonitor"]) >= 10_000
    assert "http://127.0.0.1:6123/#ibmonitor" in capsys.readouterr().out


def test_launch_missing_logdir_is_an_error(tmp_path):
    from ibmonitor.tensorboard.launch import launch

    with pytest.raises(FileNotFoundError, match="does not exist"):
        launch(tmp_path / "missing")


# -------------------------------------------------------- a real TensorBoard
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fetch(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def tensorboard_binary() -> str:
    """The ``tensorboard`` script of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("tensorboard")
    return str(candidate) if candidate.exists() else (shutil.which("tensorboard") or "")


@pytest.fixture(scope="module")
def server_logdir(tmp_path_factory):
    """A log directory with a TensorBoardWriter run and, if any, a monitor run."""
    root = tmp_path_factory.mktemp("tb_server")
    write_demo_run(root / "writer_run")
    write_pinned_run(root / "writer_run_pinned")
    write_interval_run(root / "writer_run_interval")
    write_explain_run(root / "writer_run_explain")
    if _monitor_available():
        write_monitor_run(root / "monitor_run")
    return root


@pytest.fixture(scope="module")
def tensorboard_url(server_logdir):
    binary = tensorboard_binary()
    if not binary:
        pytest.fail("the tensorboard executable is not installed next to Python")
    port = _free_port()
    log = (server_logdir.parent / "tensorboard.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--logdir",
            str(server_logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorboard exited with status {process.returncode}")
            try:
                listing = json.loads(_fetch(url + "/data/plugins_listing"))
                if listing.get(PLUGIN_NAME, {}).get("enabled"):
                    break
            except (urllib.error.URLError, ConnectionError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("tensorboard did not list the ibmonitor plugin in time")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()  # by its PID, never by name
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def test_tensorboard_lists_the_plugin_and_serves_its_routes(
    tensorboard_url, server_logdir
):
    listing = json.loads(_fetch(tensorboard_url + "/data/plugins_listing"))
    entry = listing[PLUGIN_NAME]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Information Plane"
    assert entry["loading_mechanism"]["type"] == "IFRAME"
    base = tensorboard_url + "/data/plugin/ibmonitor"
    runs = {r["run"]: r for r in json.loads(_fetch(base + "/runs"))}
    assert runs["writer_run"]["layers"] == LAYERS
    info = json.loads(_fetch(base + "/information?run=writer_run&estimator=binned"))
    assert [s["epochs"] for s in info["series"]] == [EPOCHS] * len(LAYERS)
    scalars = json.loads(_fetch(base + "/scalars?run=writer_run"))
    assert "gap/loss" in scalars["panels"]["Loss"]
    assert len(_fetch(base + "/static/plotly.min.js")) > 1_000_000
    with pytest.raises(urllib.error.HTTPError) as error:
        _fetch(base + "/information")
    assert error.value.code == 400
    if _monitor_available():
        monitor_run = runs["monitor_run"]
        assert len(monitor_run["layers"]) >= 2
        assert monitor_run["estimators"] == ["binned"]
        info = json.loads(_fetch(base + "/information?run=monitor_run"))
        assert all(s["epochs"] == [0, 1, 2] for s in info["series"])
        images = json.loads(_fetch(tensorboard_url + "/data/plugin/images/tags"))
        assert "information_plane/binned" in images["monitor_run"]
        # issue 13: the geometry measures in their own panel
        geometry = json.loads(_fetch(base + "/scalars?run=monitor_run"))["panels"][
            "Geometry"
        ]
        assert "geometry/1/probe_accuracy" in geometry
        assert "pairing/0/mean_mu" in geometry
        assert geometry["geometry/3/separation"]["epochs"] == [0, 1, 2]


def _browser_or_skip() -> str:
    try:
        from ibmonitor._browser import find_browser
    except ImportError:  # the helper module is not there yet: the same lookup

        def find_browser():
            env = os.environ.get("BROWSER_PATH")
            for candidate in (env, "/usr/bin/chromium"):
                if candidate and os.access(candidate, os.X_OK):
                    return candidate
            return shutil.which("chromium") or shutil.which("google-chrome")

    required = os.environ.get("IBMONITOR_REQUIRE_BROWSER") == "1"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("IBMONITOR_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright is not installed")
    path = find_browser()
    if not path:
        if required:
            pytest.fail("IBMONITOR_REQUIRE_BROWSER=1 but no Chrome or Chromium found")
        pytest.skip(
            "no Chrome or Chromium found (set BROWSER_PATH or install chromium)"
        )
    return path


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def open_information_plane(page, url: str, *, timeout_ms: float = 90_000):
    """Open TensorBoard's Information Plane tab; return the plugin's frame.

    TensorBoard shows a dynamic plugin in an iframe (``plugin_entry.html``);
    the plugin marks its body ``data-ibmonitor-ready`` once the plots are drawn.
    """
    page.goto(url + "/#" + PLUGIN_NAME)
    selector = f'iframe[src*="plugin_entry.html?name={PLUGIN_NAME}"]'
    page.frame_locator(selector).locator('body[data-ibmonitor-ready="true"]').wait_for(
        timeout=timeout_ms
    )
    return page.locator(selector).element_handle().content_frame()


@pytest.mark.browser
def test_information_plane_tab_in_headless_chromium(
    tensorboard_url, server_logdir, tmp_path_factory
):
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("screenshots")
    outside = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=BROWSER_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})

            def only_local(route):
                if route.request.url.startswith(tensorboard_url):
                    route.continue_()
                else:  # no network: anything else (a CDN, fonts) is refused
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            frame = open_information_plane(page, tensorboard_url)
            run = frame.locator("#ibm-run").input_value()
            runs = {
                r["run"]: r
                for r in json.loads(
                    _fetch(tensorboard_url + "/data/plugin/ibmonitor/runs")
                )
            }
            names = frame.evaluate(
                "document.getElementById('ibm-plane').data.map(trace => trace.name)"
            )
            assert names == runs[run]["layers"]  # one trace per layer
            assert frame.locator("#ibm-loss-box").is_visible()
            page.screenshot(path=str(shots / "information_plane.png"))

            frame.locator("#ibm-run").select_option("writer_run")
            frame.locator("#ibm-estimator").select_option("kde")
            frame.wait_for_function(
                "() => { const d = document.getElementById('ibm-plane');"
                " return d.layout.title.text.includes('kde') && d.data.length === 3; }",
                timeout=30_000,
            )
            traces = frame.evaluate(
                "document.getElementById('ibm-plane').data"
                ".map(trace => [trace.name, trace.x.length])"
            )
            assert traces == [[layer, len(EPOCHS)] for layer in LAYERS]

            # 42 layers pinned at one point: hollow markers, an axis never
            # narrower than the resolution, and labels that do not overlap.
            frame.locator("#ibm-run").select_option("writer_run_pinned")
            frame.wait_for_function(
                "() => document.getElementById('ibm-plane').data.length === 42",
                timeout=30_000,
            )
            plane = frame.evaluate(
                """() => {
                  const d = document.getElementById('ibm-plane');
                  const full = d._fullLayout;
                  return {
                    symbols: [...new Set(d.data.flatMap(t => t.marker.symbol))],
                    hover: d.data[0].hovertext[0],
                    x: full.xaxis.range, y: full.yaxis.range,
                    notes: d.layout.annotations.map(a => [a.text, a.x, a.y,
                      a.showarrow ? a.ay : -(a.yshift || 0)]),
                  };
                }"""
            )
            assert plane["symbols"] == ["circle-open"]
            assert "pinned" in plane["hover"]
            assert plane["x"][1] - plane["x"][0] >= 0.72
            assert plane["y"][1] - plane["y"][0] >= 0.72
            labels = [n for n in plane["notes"] if "pinned" not in n[0]]
            assert len(labels) == 1 and labels[0][0].startswith("42 layers")
            assert any("pinned" in n[0] for n in plane["notes"])  # the key
            page.screenshot(path=str(shots / "pinned_plane.png"))

            # intervals as error bars on both axes, the baseline as a line
            frame.locator("#ibm-run").select_option("writer_run_interval")
            frame.wait_for_function(
                "() => { const d = document.getElementById('ibm-plane');"
                " return d.data.length === 2 && d.data[0].error_x; }",
                timeout=30_000,
            )
            bars = frame.evaluate(
                """() => {
                  const d = document.getElementById('ibm-plane');
                  return {
                    up: d.data[1].error_x.array[0],
                    down: d.data[1].error_y.arrayminus[0],
                    shapes: (d.layout.shapes || []).map(s => [s.name, s.y0]),
                  };
                }"""
            )
            assert bars["up"] == pytest.approx(0.3)
            assert bars["down"] == pytest.approx(0.05)
            assert bars["shapes"] == [
                ["baseline", pytest.approx(0.04)],
                ["ceiling", 0],  # a vertical line at I(X;T) = 3.5 bits
            ]

            # issue 14: explanation images with an epoch slider
            frame.locator("#ibm-run").select_option("writer_run_explain")
            frame.wait_for_function(
                "() => { const b = document.getElementById('ibm-explain-box');"
                " const i = document.getElementById('ibm-explain-img');"
                " return !b.hidden && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert frame.locator("#ibm-explain-label").inner_text() == "epoch 9"
            frame.locator("#ibm-explain-epoch").fill("0")
            frame.wait_for_function(
                "() => { const i = document.getElementById('ibm-explain-img');"
                " return i.src.includes('step=0') && i.complete"
                " && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert frame.locator("#ibm-explain-label").inner_text() == "epoch 0"
            page.screenshot(path=str(shots / "explanations.png"))

            # issue 13: the monitor run's geometry panel is shown and drawn
            if "monitor_run" in runs:
                frame.locator("#ibm-run").select_option("monitor_run")
                frame.wait_for_function(
                    "() => { const b = document.getElementById('ibm-geometry-box');"
                    " const p = b && b.querySelector('.ibm-plot');"
                    " return b && !b.hidden && p.data && p.data.length > 0; }",
                    timeout=30_000,
                )
                tags = frame.evaluate(
                    "[...document.getElementById('ibm-geometry-box')"
                    ".querySelector('.ibm-plot').data].map(t => t.name)"
                )
                assert "geometry/1/probe_accuracy" in tags
                assert "pairing/0/mean_mu" in tags
                page.screenshot(path=str(shots / "geometry_panel.png"))
        finally:
            browser.close()
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"
    assert (shots / "information_plane.png").stat().st_size > 10_000


def _write_raw_run(path: Path, content: bytes, values) -> None:
    """A run with one ibmonitor tensor summary of the given content and values."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    writer = TensorBoardWriter(path)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag="ibmonitor/default/binned/fc1",
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=PLUGIN_NAME, content=content
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        ),
        tensor=tensor_util.make_tensor_proto(values),
    )
    writer._add_summary(summary, 0)
    writer.close()


def test_a_malformed_run_is_skipped_and_the_others_served(tmp_path, caplog):
    """Non-regression: one run's bad metadata made /runs answer 500 for all."""
    write_demo_run(tmp_path / "good")
    bad = b'{"version": 1, "estimator": "binned", "layer": "fc1", "layer_index": "abc"}'
    _write_raw_run(tmp_path / "bad", bad, np.zeros(2))
    plugin = _plugin(tmp_path)
    with caplog.at_level("WARNING", logger="ibmonitor.tensorboard.plugin"):
        runs = _json(plugin, "/runs")
    assert [r["run"] for r in runs] == ["good"]
    assert "'bad'" in caplog.text and "layer_index" in caplog.text
    skipped = _json(plugin, "/skipped")
    assert [s["run"] for s in skipped] == ["bad"]
    assert "layer_index" in skipped[0]["reason"]
    body = _json(plugin, "/information", "?run=bad")
    assert body["series"] == []
    assert [s["run"] for s in body["skipped"]] == ["bad"]
    good = _json(plugin, "/information", "?run=good&estimator=binned")
    assert len(good["series"]) == len(LAYERS) and good["skipped"] == []


def test_a_string_tensor_is_skipped_with_a_reason(tmp_path):
    write_demo_run(tmp_path / "good")
    content = b'{"version": 1, "estimator": "binned", "layer": "fc1"}'
    _write_raw_run(tmp_path / "strings", content, np.array([b"a", b"b"]))
    plugin = _plugin(tmp_path)
    assert [r["run"] for r in _json(plugin, "/runs")] == ["good", "strings"]
    body = _json(plugin, "/information", "?run=strings")
    assert body["series"] == []
    assert body["skipped"][0]["tag"] == "ibmonitor/default/binned/fc1"
    assert "not numbers" in body["skipped"][0]["reason"]
    assert _json(plugin, "/information", "?run=good")["series"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_routes_are_read_only(plugin, method):
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    for route, app in plugin.get_plugin_apps().items():
        response = Client(app, Response).open(route, method=method)
        assert response.status_code == 405, route
        assert "GET" in response.headers["Allow"].split(", ")
    head = Client(plugin.get_plugin_apps()["/runs"], Response).head("/runs")
    assert head.status_code == 200
