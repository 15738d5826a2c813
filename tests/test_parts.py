"""The monitor's parts: sinks, executors, the row builder and the schema (issue 9).

A new sink and a new measure are each one class or function plus its
registration; the monitor takes them with no edit of its own.
"""

from __future__ import annotations

import math
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ibmonitor
from ibmonitor import schema
from ibmonitor.estimation import InputsForEstimators, estimator_list, information_rows
from ibmonitor.estimators import Estimator, InformationEstimate
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.executor import BackgroundExecutor, InlineExecutor, make_executor
from ibmonitor.measures import MeasureSet, register_measure
from ibmonitor.measures import registry as measure_registry
from ibmonitor.sinks import Sink, make_sink, register_sink
from ibmonitor.sinks import base as sink_base

# Small probe sets pin the binned estimates: expected here, and not the topic.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ibmonitor.exceptions.EstimationWarning"
)


class ListSink(Sink):
    """A toy sink: every event appended to a list."""

    name = "list"
    wants_activations = True

    def __init__(self):
        self.events = []

    def open(self, config, *, logdir):
        self.events.append(("open", dict(config)))

    def write_scalars(self, epoch, values, *, recorded):
        self.events.append(("scalars", epoch, dict(values), recorded))

    def write_information(self, epoch, rows):
        self.events.append(("information", epoch, [dict(r) for r in rows]))

    def write_activations(self, epoch, activations, labels, inputs):
        self.events.append(("activations", epoch, sorted(activations["default"])))

    def update_config(self, **keys):
        self.events.append(("config", sorted(keys)))

    def close(self, status):
        self.events.append(("close", status))


@pytest.fixture
def registries(monkeypatch):
    """Registrations made by a test are forgotten after it."""
    monkeypatch.setattr(sink_base, "_REGISTRY", dict(sink_base._REGISTRY))
    monkeypatch.setattr(measure_registry, "_REGISTRY", dict(measure_registry._REGISTRY))


def test_a_toy_sink_and_a_toy_measure_join_a_run_through_registration(
    tiny_mlp, registries
):
    made = []

    @register_sink("list")
    class Registered(ListSink):
        def __init__(self):
            super().__init__()
            made.append(self)

    def weight_sum(context):
        return {
            "toy/weight_sum": sum(
                float(p.detach().sum()) for p in context.model.parameters()
            )
        }

    register_measure("toy_weight_sum", weight_sum, cost="cheap")

    data = (tiny_mlp.x, tiny_mlp.y)
    with ibmonitor.InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=("binned",),
        schedule=[0, 2],
        sinks=["list"],
        measures=MeasureSet(
            ["toy_weight_sum"], loss_fn=nn.functional.cross_entropy, train_data=data
        ),
        overhead_budget=None,
    ) as monitor:
        for epoch in range(3):
            monitor.on_epoch_end(epoch, train_loss=1.0 / (epoch + 1))
    (sink,) = made
    kinds = [e[0] for e in sink.events]
    assert kinds[0] == "open" and kinds[-1] == "close"
    assert sink.events[-1] == ("close", "finished")
    config = sink.events[0][1]
    assert config["sinks"] == ["list"] and set(config["layers"]) == set(monitor.layers)
    scalars = {e[1]: e[2] for e in sink.events if e[0] == "scalars"}
    assert sorted(scalars) == [0, 1, 2]
    assert "toy/weight_sum" in scalars[0] and "toy/weight_sum" in scalars[2]
    assert "toy/weight_sum" not in scalars[1]  # measured on recorded epochs only
    recorded = {e[1]: e[3] for e in sink.events if e[0] == "scalars"}
    assert recorded == {0: True, 1: False, 2: True}
    information = [e for e in sink.events if e[0] == "information"]
    assert [e[1] for e in information] == [0, 2]
    assert {r["layer"] for r in information[0][2]} == set(monitor.layers)
    activations = [e for e in sink.events if e[0] == "activations"]
    assert [e[1] for e in activations] == [0, 2]
    # the memory sink saw the same
    assert set(monitor.scalars["name"]) >= {"train_loss", "toy/weight_sum"}


def test_sinks_by_name_and_errors(tmp_path):
    assert make_sink("runstore").name == "runstore"
    sink = ListSink()
    assert make_sink(sink) is sink
    with pytest.raises(InvalidParameterError, match="Unknown sink 'nope'"):
        make_sink("nope")
    with pytest.raises(InvalidParameterError, match="'sinks' parameter"):
        make_sink(3)


def test_a_failing_optional_sink_never_stops_the_run(tiny_mlp, tmp_path):
    class Broken(ListSink):
        name = "broken"
        title = "Broken sink"

        def write_information(self, epoch, rows):
            raise OSError("no room")

    broken = Broken()
    with (
        pytest.warns(ibmonitor.MonitorWarning, match="Broken sink write_information"),
        ibmonitor.InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            estimators=("binned",),
            schedule="all",
            logdir=tmp_path / "r",
            sinks=["runstore", broken],
            strict=True,  # an optional sink's failure does not raise even so
            overhead_budget=None,
        ) as monitor,
    ):
        for epoch in range(2):
            monitor.on_epoch_end(epoch)
    run = ibmonitor.load_run(tmp_path / "r")
    assert sorted(set(run.information["epoch"])) == [0, 1]
    assert run.config["errors"][0]["where"] == "broken.write_information"
    assert broken.events[-1] == ("close", "finished")


def test_inline_executor_runs_at_once_and_raises():
    done = []
    executor = make_executor(False)
    assert isinstance(executor, InlineExecutor) and not executor.background
    executor.submit(lambda: done.append(1))
    assert done == [1]
    with pytest.raises(ZeroDivisionError):
        executor.submit(lambda: 1 / 0)


def test_background_executor_keeps_order_bounds_the_queue_and_forwards_errors():
    executor = BackgroundExecutor(queue_size=1)
    executor.start()
    gate = threading.Event()
    done = []
    try:
        executor.submit(lambda: (gate.wait(5), done.append("a")), bounded=True)
        started = time.perf_counter()
        blocker = threading.Thread(
            target=executor.submit,
            args=(lambda: done.append("b"),),
            kwargs={"bounded": True},
        )
        blocker.start()
        blocker.join(0.2)
        assert blocker.is_alive()  # the second bounded job waits for a slot
        gate.set()
        blocker.join(5)
        executor.submit(lambda: 1 / 0)
        executor.submit(lambda: done.append("c"))
        executor.join()
        assert done == ["a", "b", "c"]
        errors = executor.take_errors()
        assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
        assert executor.take_errors() == []
        assert time.perf_counter() - started < 5
    finally:
        executor.shutdown()
        executor.shutdown()  # a second call does nothing
    assert not executor.alive()
    with pytest.raises(RuntimeError, match="not running"):
        executor.submit(lambda: None)


def test_make_executor_rejects_other_values():
    assert make_executor(True).background
    custom = BackgroundExecutor(queue_size=3)
    assert make_executor(custom) is custom
    with pytest.raises(InvalidParameterError, match="'background' parameter"):
        make_executor("yes")


# ------------------------------------------------------------ the row builder
def _constant(t, y, *, x=None):
    return InformationEstimate("const", 1.0, 0.5, {}, {"h_t": 2.0})


def test_information_rows_one_row_per_layer_and_estimator():
    estimators = [("const", Estimator(name="const", function=_constant, inputs="none"))]
    acts = {"a": torch.zeros(4, 2), "b": torch.ones(4, 3)}
    rows = information_rows(3, "default", acts, torch.tensor([0, 1, 0, 1]), estimators)
    assert rows == [
        {
            "epoch": 3,
            "probe": "default",
            "layer": layer,
            "estimator": "const",
            "i_xt": 1.0,
            "i_ty": 0.5,
            "h_t": 2.0,
            "pinned": 0.0,
        }
        for layer in ("a", "b")
    ]


def test_information_rows_skip_errors_and_warnings():
    def flaky(t, y, *, x=None):
        if t.shape[1] == 3:
            raise RuntimeError("boom")
        warnings.warn("every sample in its own bin", EstimationWarning, stacklevel=2)
        return InformationEstimate("flaky", 2.0, 1.0, {}, {})

    estimators = [("flaky", Estimator(name="flaky", function=flaky, inputs="none"))]
    acts = {"a": torch.zeros(4, 2), "b": torch.ones(4, 3), "c": torch.ones(4, 2)}
    errors, seen = [], []
    rows = information_rows(
        0,
        "p",
        acts,
        torch.tensor([0, 1, 0, 1]),
        estimators,
        skip={"c": "NaN activations"},
        on_error=lambda layer, label, exc: errors.append((layer, str(exc))),
        on_warning=lambda layer, label, w: seen.append((layer, str(w.message))),
    )
    assert errors == [("b", "boom")]
    assert seen == [("a", "every sample in its own bin")]
    assert rows[0]["i_xt"] == 2.0
    assert math.isnan(rows[1]["i_xt"]) and math.isnan(rows[2]["i_ty"])
    with pytest.raises(RuntimeError, match="boom"):
        information_rows(0, "p", {"b": acts["b"]}, torch.zeros(4), estimators)


def test_inputs_for_estimators_gives_ids_values_or_nothing():
    values = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    inputs = InputsForEstimators(values)
    by_kind = {
        kind: Estimator(name=kind, function=_constant, inputs=kind)
        for kind in ("ids", "values", "none")
    }
    ids = inputs.for_estimator(by_kind["ids"])
    assert ids[0] == ids[1] != ids[2]
    assert inputs.for_estimator(by_kind["values"]) is values
    assert inputs.for_estimator(by_kind["none"]) is None


def test_estimator_list_labels_and_errors():
    pairs = estimator_list({"binned": {"n_bins": 10}, "kde": None})
    assert [label for label, _ in pairs] == ["binned", "kde"]
    twice = estimator_list(
        [
            ibmonitor.estimators.get("binned", n_bins=10),
            ibmonitor.estimators.get("binned", n_bins=30),
        ]
    )
    assert len({label for label, _ in twice}) == 2
    with pytest.raises(InvalidParameterError, match="is empty"):
        estimator_list([])
    with pytest.raises(InvalidParameterError, match="same estimator twice"):
        estimator_list(["binned", "binned"])


# ----------------------------------------------------------------- the schema
def test_wide_and_long_round_trip():
    rows = [
        {
            "epoch": 0,
            "probe": "default",
            "layer": "a",
            "estimator": "kde",
            "i_xt": 1.5,
            "i_ty": 0.25,
            "h_t": 3.0,
        },
        {
            "epoch": 0,
            "probe": "default",
            "layer": "b",
            "estimator": "kde",
            "i_xt": 2.5,
            "i_ty": 0.5,
            "h_t": 4.0,
        },
    ]
    long = pd.DataFrame(
        schema.information_records(rows), columns=schema.INFORMATION_COLUMNS
    )
    assert list(long["quantity"][:3]) == ["i_xt", "i_ty", "h_t"]
    wide = schema.information_wide(long, {"layers": {"b": {}, "a": {}}})
    assert list(wide["layer"]) == ["b", "a"]  # the config's order
    np.testing.assert_array_equal(wide["i_xt"], [2.5, 1.5])
    assert list(schema.to_wide(long, "test").columns[:6]) == list(schema.WIDE_COLUMNS)
    assert list(schema.rows_frame(rows).columns) == [*schema.WIDE_COLUMNS, "h_t"]
    with pytest.raises(InvalidParameterError, match="lacks the columns"):
        schema.to_wide(pd.DataFrame({"epoch": [0]}), "test")


@pytest.mark.parametrize(
    ("name", "panel"),
    [
        ("train_loss", "Loss"),
        ("gap/loss", "Loss"),
        ("val_acc", "Accuracy"),
        ("hessian/top_eigenvalue", "Sharpness"),
        ("pac_bayes/sigma", "Sharpness"),
        ("norms/total/frobenius", "Norms"),
        ("saturation/tanh1", "Saturation"),
        ("lr", "Other"),
    ],
)
def test_scalar_panel(name, panel):
    assert schema.scalar_panel(name).panel == panel
    assert panel in schema.PANELS


def test_saturation_is_written_once_per_bounded_layer(tiny_mlp):
    monitor = ibmonitor.InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=("binned",),
        schedule=[0],
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    monitor.close()
    scalars = monitor.scalars.set_index("name")["value"]
    assert "saturation/1" in scalars  # the Tanh layer
    assert not any(n.startswith("saturation/3") for n in scalars.index)  # ReLU
    from ibmonitor.activations import saturated_fraction

    with torch.no_grad():
        t = tiny_mlp.model[1](tiny_mlp.model[0](tiny_mlp.x))
    assert scalars["saturation/1"] == pytest.approx(saturated_fraction(t, "tanh"))
    assert schema.saturation_name("fc", "test") == "saturation/test/fc"


def test_a_sink_without_a_path_or_logdir_is_a_clear_error(tiny_mlp):
    from ibmonitor.sinks import RunStore, TensorBoard

    for sink, name in ((RunStore(), "RunStore"), (TensorBoard(), "TensorBoard")):
        with pytest.raises(
            InvalidParameterError, match=f"The {name} sink needs a path"
        ):
            sink.open({}, logdir=None)
    with pytest.raises(InvalidParameterError, match="RunStore sink needs a path"):
        ibmonitor.InformationMonitor(
            tiny_mlp.model, inputs=tiny_mlp.x, labels=tiny_mlp.y, sinks=["runstore"]
        )


def test_background_executor_timeout_never_blocks_for_ever():
    from ibmonitor.executor import ExecutorBusy

    release = threading.Event()
    executor = BackgroundExecutor(queue_size=1, timeout=0.2)
    executor.start()
    try:
        executor.submit(lambda: release.wait(30), bounded=True)
        started = time.perf_counter()
        with pytest.raises(ExecutorBusy, match=r"has not finished a job in 0\.2 s"):
            executor.submit(lambda: None, bounded=True)
        with pytest.raises(ExecutorBusy, match="has not finished its jobs"):
            executor.join()
        with pytest.raises(ExecutorBusy, match="still running"):
            executor.shutdown()
        assert time.perf_counter() - started < 5
    finally:
        release.set()
        if executor._thread is not None:
            executor._thread.join(5)
    assert not executor.alive()
    with pytest.raises(InvalidParameterError, match="'timeout' parameter"):
        BackgroundExecutor(timeout=0)


def test_a_stuck_estimator_costs_epochs_not_the_training_loop(tiny_mlp, tmp_path):
    release = threading.Event()
    calls = []

    def stuck(t, y, *, x=None):
        if len(t) == 64:  # not the warm-up on 16 samples
            calls.append(1)
            release.wait(30)
        return InformationEstimate("stuck", 1.0, 1.0, {}, {})

    monitor = ibmonitor.InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[Estimator(name="stuck", function=stuck, inputs="none")],
        schedule="all",
        logdir=tmp_path / "r",
        sinks=["runstore"],
        background=BackgroundExecutor(queue_size=1, timeout=0.2),
        overhead_budget=None,
    )
    started = time.perf_counter()
    try:
        with pytest.warns(
            ibmonitor.MonitorWarning, match="estimation failed at epoch 1"
        ):
            for epoch in range(3):
                monitor.on_epoch_end(epoch, train_loss=float(epoch))
        with pytest.warns(ibmonitor.MonitorWarning, match="still running"):
            monitor.close()
        assert time.perf_counter() - started < 10
    finally:
        release.set()
    run = ibmonitor.load_run(tmp_path / "r")
    losses = run.scalars[run.scalars["name"] == "train_loss"]
    assert list(losses["epoch"]) == [0, 1, 2]  # the user's scalars are all there
    wheres = [e["where"] for e in run.config["errors"]]
    assert "estimation" in wheres and "background worker" in wheres
