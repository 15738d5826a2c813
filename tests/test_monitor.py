from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibmonitor
from ibmonitor import estimators
from ibmonitor.estimators import Estimator, InformationEstimate, input_ids
from ibmonitor.exceptions import InvalidParameterError, MonitorError, MonitorWarning
from ibmonitor.executor import BackgroundExecutor
from ibmonitor.measures import MeasureSet
from ibmonitor.monitor import InformationMonitor
from ibmonitor.sinks import RunStore, TensorBoard

# The 64-sample probe puts every sample in its own bin: expected, and not the topic.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ibmonitor.exceptions.EstimationWarning"
)


# --------------------------------------------------------------------- helpers
def _toy(t, y, *, x=None):
    t = torch.as_tensor(t, dtype=torch.float64)
    return InformationEstimate("toy", float(t.mean()), float(t.abs().mean()), {}, {})


TOY = Estimator(name="toy", function=_toy, inputs="ids")


def _failing_at(epochs, calls):
    """An estimator that raises on its n-th calls on the full probe (n in epochs).

    Calls on fewer samples (the monitor's warm-up at construction) don't count.
    """

    def f(t, y, *, x=None):
        if len(t) < 64:
            return InformationEstimate("flaky", 0.0, 0.0, {}, {})
        calls.append(1)
        if len(calls) in epochs:
            raise RuntimeError("estimator exploded")
        return InformationEstimate("flaky", 1.0, 2.0, {}, {})

    return Estimator(name="flaky", function=f, inputs="none")


def _train(model, x, y, epochs, monitor=None, *, lr=0.1):
    """Shuffled mini-batch SGD (draws from the global RNG every epoch).

    Plain parameter updates rather than torch.optim, whose first use imports
    torch._dynamo (seconds on a loaded machine).
    """
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0])
        total = 0.0
        for start in range(0, x.shape[0], 16):
            idx = order[start : start + 16]
            model.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
            total += loss.item()
        if monitor is not None:
            monitor.on_epoch_end(epoch, train_loss=total / 4)
    return model


def _hooks(model):
    return [h for m in model.modules() for h in m._forward_hooks.values()]


class NanAt(nn.Module):
    """Identity that returns NaN on the epochs listed (set from outside)."""

    def __init__(self):
        super().__init__()
        self.poison = False

    def forward(self, x):
        return x * float("nan") if self.poison else x


# ---------------------------------------------------------------- the basics
def test_monitor_records_scheduled_epochs_in_memory(tiny_mlp):
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule=2,
        overhead_budget=None,
    )
    for epoch in range(5):
        monitor.on_epoch_end(epoch, train_loss=1.0 / (epoch + 1))
    monitor.close()
    info = monitor.information
    assert sorted(set(info["epoch"])) == [0, 2, 4]
    assert list(info.columns[:6]) == [
        "epoch",
        "probe",
        "layer",
        "estimator",
        "i_xt",
        "i_ty",
    ]
    assert set(info["layer"]) == {"1", "3", "output"}
    assert monitor.recorded_epochs == [0, 2, 4]
    scalars = monitor.scalars
    assert len(scalars[scalars["name"] == "train_loss"]) == 5
    # the tanh layer's saturation, computed once per recorded epoch
    saturation = scalars[scalars["name"] == "saturation/1"]
    assert list(saturation["epoch"]) == [0, 2, 4]
    assert _hooks(tiny_mlp.model) == []


def test_monitor_writes_the_run_store(tiny_mlp, tmp_path):
    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        logdir=tmp_path / "run",
        schedule=[0, 1],
        sinks=[RunStore()],
        seed=3,
        config={"lr": 0.1},
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0, train_loss=0.7, test_acc=torch.tensor(0.5))
        monitor.on_epoch_end(1, train_loss=0.6, test_acc=np.float32(0.6))
    run = ibmonitor.load_run(tmp_path / "run")
    assert run.config["status"] == "finished"
    assert run.config["seed"] == 3
    assert run.config["user"] == {"lr": 0.1}
    assert run.config["layers"]["1"] == {"module": "Tanh", "shape": [8], "n_units": 8}
    assert run.config["activation_kinds"]["1"] == "tanh"
    assert run.config["probes"] == {"default": {"n_samples": 64, "input_shape": [6]}}
    assert [e["name"] for e in run.config["estimators"]] == ["binned", "kde"]
    assert run.config["schedule"]["epochs"] == [0, 1]
    assert set(run.config["versions"]) >= {"ibmonitor", "torch", "python", "numpy"}
    assert set(run.information["estimator"]) == {"binned", "kde"}
    assert len(run.information) == 2 * 3 * 2
    scalars = run.scalars.set_index(["epoch", "name"])["value"]
    assert scalars[(1, "test_acc")] == pytest.approx(0.6)


def test_stored_value_equals_a_direct_estimator_call(tiny_mlp, tmp_path):
    torch.nn.init.normal_(tiny_mlp.model[0].weight, std=2.0)  # a spread-out layer
    ests = {
        "binned": {"n_bins": 10},
        "kde": {"noise_variance": 0.01},
        "knn": {"k": 3},
        "renyi": {},
    }
    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=ests,
        schedule=[0],
        logdir=tmp_path / "r",
        sinks=[RunStore(store_activations=True)],
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0)
    run = ibmonitor.load_run(tmp_path / "r")
    acts = run.activations(0)["default"]
    x = run.inputs(0)["default"]
    y = run.labels(0)["default"]
    np.testing.assert_array_equal(y, tiny_mlp.y.numpy())
    info = run.information.set_index(["layer", "estimator"])
    for layer, t in acts.items():
        binned = estimators.get("binned", n_bins=10)(t, y, x=input_ids(x))
        kde = estimators.get("kde", noise_variance=0.01)(t, y)
        knn = estimators.get("knn", k=3)(t, y, x=x)  # "values": flattened inputs
        renyi = estimators.get("renyi")(t, y, x=x)
        for name, direct in [
            ("binned", binned),
            ("kde", kde),
            ("knn", knn),
            ("renyi", renyi),
        ]:
            assert info.loc[(layer, name), "i_xt"] == direct.i_xt, (layer, name)
            assert info.loc[(layer, name), "i_ty"] == direct.i_ty, (layer, name)


def test_store_activations_float16(tiny_mlp, tmp_path):
    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule=[0],
        logdir=tmp_path / "r",
        sinks=[RunStore(store_activations="float16")],
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0)
    acts = ibmonitor.load_run(tmp_path / "r").activations(0)["default"]
    assert acts["1"].dtype == np.float16
    assert acts["1"].shape == (64, 8)


# ------------------------------------------------------------ no side effects
def test_training_is_bit_identical_with_and_without_the_monitor(
    tiny_mlp, make_tiny_mlp, tmp_path
):
    x, y = tiny_mlp.x, tiny_mlp.y

    torch.manual_seed(1)
    plain = _train(make_tiny_mlp(5, dropout=0.3), x, y, 6)

    torch.manual_seed(1)
    model = make_tiny_mlp(5, dropout=0.3)
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    monitor = InformationMonitor(
        model,
        inputs=loader,
        schedule="all",
        logdir=tmp_path / "r",
        sinks=[RunStore(store_activations=True), TensorBoard(images=False)],
        measures=MeasureSet(
            ["gap", "norms"],
            loss_fn=nn.CrossEntropyLoss(),
            train_data=(x, y),
            test_data=(x, y),
        ),
        overhead_budget=None,
    )
    monitored = _train(model, x, y, 6, monitor)
    monitor.close()
    assert monitor.recorded_epochs == list(range(6))
    assert not monitor.errors
    for a, b in zip(plain.state_dict().values(), monitored.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch.get_rng_state())


def test_hooks_removed_when_the_model_raises_and_training_goes_on(tiny_mlp):
    model = nn.Sequential(*tiny_mlp.model, NanAt())
    monitor = InformationMonitor(
        model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule="all",
        overhead_budget=None,
    )

    def explode(module, args):
        raise RuntimeError("forward failed")

    handle = model[2].register_forward_pre_hook(explode)
    with pytest.warns(MonitorWarning, match="failed at epoch 0"):
        monitor.on_epoch_end(0)
    handle.remove()
    assert _hooks(model) == []
    assert model.training
    monitor.on_epoch_end(1)
    assert monitor.recorded_epochs == [1]
    assert monitor.errors[0]["epoch"] == 0
    assert "forward failed" in monitor.errors[0]["message"]


def test_strict_raises_monitor_error(tiny_mlp):
    calls: list = []
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[_failing_at({1}, calls)],
        schedule="all",
        strict=True,
        overhead_budget=None,
    )
    with pytest.raises(MonitorError, match="estimator exploded"):
        monitor.on_epoch_end(0)
    assert _hooks(tiny_mlp.model) == []


def test_non_strict_estimator_failure_gives_nan_rows(tiny_mlp, tmp_path):
    calls: list = []
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        logdir=tmp_path / "r",
        estimators=[_failing_at({1}, calls)],
        schedule="all",
        sinks=[RunStore()],
        overhead_budget=None,
    )
    with pytest.warns(MonitorWarning, match="estimator 'flaky' on layer '1'"):
        monitor.on_epoch_end(0)
    monitor.close()
    info = monitor.information.set_index("layer")
    assert math.isnan(info.loc["1", "i_xt"])
    assert info.loc["3", "i_xt"] == 1.0
    config = json.loads((tmp_path / "r" / "run.json").read_text())
    assert config["errors"][0]["where"] == "estimator 'flaky' on layer '1'"


# ----------------------------------------------------------------- selection
def test_layer_selection_is_passed_through(tiny_mlp):
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        layers=nn.Linear,
        overhead_budget=None,
    )
    assert monitor.layers == ["0", "2", "4"]
    with pytest.raises(InvalidParameterError, match="Unknown layer 'fc9'"):
        InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            layers=["fc9"],
            overhead_budget=None,
        )


def test_layer_producing_no_output_is_reported_at_init(tiny_mlp):
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_mlp.model
            self.spare = nn.Linear(2, 2)  # registered but never called

        def forward(self, x):
            return self.body(x)

    model = WithSpare()
    with pytest.raises(InvalidParameterError, match="'spare' produced no output"):
        InformationMonitor(
            model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            layers=["spare"],
            overhead_budget=None,
        )
    assert _hooks(model) == []


def test_reduce_mean_for_conv_maps():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2)
    )
    x = torch.randn(20, 1, 4, 4)
    y = torch.arange(20) % 2
    monitor = InformationMonitor(
        model, inputs=x, labels=y, estimators=[TOY], reduce="mean", overhead_budget=None
    )
    assert monitor._layer_info["1"] == {
        "module": "ReLU",
        "shape": [3, 4, 4],
        "n_units": 3,
    }


# -------------------------------------------------------------------- probes
def test_several_probes_get_a_probe_column(tiny_mlp):
    x, y = tiny_mlp.x, tiny_mlp.y
    monitor = InformationMonitor(
        tiny_mlp.model,
        probes={"train": (x[:40], y[:40]), "test": (x[40:], y[40:])},
        estimators=[TOY],
        schedule=[0],
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    info = monitor.information
    assert set(info["probe"]) == {"train", "test"}
    assert len(info) == 2 * 3
    single = InformationMonitor(
        tiny_mlp.model,
        inputs=x[40:],
        labels=y[40:],
        estimators=[TOY],
        schedule=[0],
        overhead_budget=None,
    )
    single.on_epoch_end(0)
    test_rows = info[info["probe"] == "test"].reset_index(drop=True)
    np.testing.assert_array_equal(test_rows["i_xt"], single.information["i_xt"])


def test_dataloader_probe_equals_tensor_probe(tiny_mlp):
    loader = DataLoader(TensorDataset(tiny_mlp.x, tiny_mlp.y), batch_size=10)
    a = InformationMonitor(
        tiny_mlp.model, inputs=loader, schedule=[0], overhead_budget=None
    )
    b = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule=[0],
        overhead_budget=None,
    )
    a.on_epoch_end(0)
    b.on_epoch_end(0)
    cols = ["i_xt", "i_ty"]
    np.testing.assert_array_equal(a.information[cols], b.information[cols])


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.zeros(10, dtype=torch.int64), "inconsistent numbers of samples"),
        (torch.rand(64), "integer class labels"),
        (np.array(["a"] * 64), "integer class labels"),
        (torch.zeros(64, 2), "1-D array"),
        (None, "has no labels"),
    ],
    ids=["length", "float", "strings", "2d", "missing"],
)
def test_bad_probe_labels_are_errors_at_init(tiny_mlp, labels, match):
    with pytest.raises(InvalidParameterError, match=match):
        InformationMonitor(
            tiny_mlp.model, inputs=tiny_mlp.x, labels=labels, overhead_budget=None
        )


def test_empty_probe_set_is_an_error(tiny_mlp):
    with pytest.raises(InvalidParameterError, match="is empty"):
        InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x[:0],
            labels=tiny_mlp.y[:0],
            overhead_budget=None,
        )
    with pytest.raises(InvalidParameterError, match="non-empty dict"):
        InformationMonitor(tiny_mlp.model, probes={}, overhead_budget=None)
    with pytest.raises(InvalidParameterError, match="needs a probe set"):
        InformationMonitor(tiny_mlp.model, overhead_budget=None)


def test_inputs_of_another_dtype_are_moved_to_the_model(tiny_mlp):
    model = tiny_mlp.model.double()
    monitor = InformationMonitor(
        model,
        inputs=tiny_mlp.x.numpy().astype(np.float32),
        labels=tiny_mlp.y.numpy(),
        estimators=[TOY],
        schedule=[0],
        device=None,
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    assert len(monitor.information) == 3


# --------------------------------------------------------------- NaN and Inf
def test_nan_activations_warn_store_nan_rows_and_training_goes_on(tiny_mlp, tmp_path):
    poison = NanAt()
    m = tiny_mlp.model
    model = nn.Sequential(m[0], m[1], m[2], m[3], m[4], poison)
    monitor = InformationMonitor(
        model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        layers=["1", "5"],
        schedule="all",
        logdir=tmp_path / "r",
        sinks=[RunStore()],
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    poison.poison = True
    with pytest.warns(MonitorWarning, match="layer '5' at epoch 1"):
        monitor.on_epoch_end(1)
    poison.poison = False
    monitor.on_epoch_end(2)
    monitor.close()
    info = ibmonitor.load_run(tmp_path / "r").information
    bad = info[(info["epoch"] == 1) & (info["layer"] == "5")]
    assert len(bad) == 2
    assert bad[["i_xt", "i_ty"]].isna().all().all()
    good = info[(info["epoch"] != 1) | (info["layer"] != "5")]
    assert good[["i_xt", "i_ty"]].notna().all().all()
    assert monitor.recorded_epochs == [0, 1, 2]


# -------------------------------------------------------------- background
def test_background_equals_synchronous(tiny_mlp, make_tiny_mlp, tmp_path):
    results = []
    for background in (False, True):
        model = make_tiny_mlp(0)
        monitor = InformationMonitor(
            model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            schedule="all",
            sinks=[RunStore()],
            background=BackgroundExecutor(queue_size=1) if background else False,
            logdir=tmp_path / str(background),
            overhead_budget=None,
        )
        torch.manual_seed(2)
        _train(model, tiny_mlp.x, tiny_mlp.y, 4, monitor)
        monitor.close()
        results.append(ibmonitor.load_run(tmp_path / str(background)))
    sync, back = results
    assert back.config["status"] == "finished"
    np.testing.assert_array_equal(
        sync.information[["epoch", "i_xt", "i_ty"]].to_numpy(),
        back.information[["epoch", "i_xt", "i_ty"]].to_numpy(),
    )
    assert list(back.information["epoch"]) == sorted(back.information["epoch"])
    np.testing.assert_array_equal(sync.scalars["value"], back.scalars["value"])


def test_background_errors_are_reported_not_swallowed(tiny_mlp):
    calls: list = []
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule="all",
        estimators=[_failing_at({2}, calls)],
        background=True,
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    with pytest.warns(MonitorWarning, match="estimator exploded"):
        monitor.flush()
    assert monitor.errors[0]["where"] == "estimator 'flaky' on layer '3'"
    monitor.on_epoch_end(1)
    monitor.close()
    assert monitor.recorded_epochs == [0, 1]


def test_background_errors_raise_at_the_next_call_when_strict(tiny_mlp):
    calls: list = []
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule="all",
        estimators=[_failing_at({1}, calls)],
        background=True,
        strict=True,
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    monitor._executor.join()
    with pytest.raises(MonitorError, match="estimator exploded"):
        monitor.on_epoch_end(1)
    monitor.close()


def test_background_strict_error_raises_at_close_and_marks_crashed(tiny_mlp, tmp_path):
    calls: list = []
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule="all",
        estimators=[_failing_at({1}, calls)],
        background=True,
        strict=True,
        logdir=tmp_path / "r",
        sinks=[RunStore()],
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    with pytest.raises(MonitorError, match="estimator exploded"):
        monitor.close()
    assert ibmonitor.load_run(tmp_path / "r").config["status"] == "crashed"


# ---------------------------------------------------------- overhead budget
def test_overhead_budget_thins_the_schedule_and_records_skips(tiny_mlp, tmp_path):
    def slow(t, y, *, x=None):
        time.sleep(0.02)
        return InformationEstimate("slow", 0.0, 0.0, {}, {})

    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule="all",
        estimators=[Estimator("slow", slow, inputs="none")],
        total_epochs=12,
        overhead_budget=0.25,
        logdir=tmp_path / "r",
        sinks=[RunStore()],
    )
    for epoch in range(12):
        time.sleep(0.01)  # "training": far less than one recording (3 x 20 ms)
        monitor.on_epoch_end(epoch)
    monitor.close()
    recorded = monitor.recorded_epochs
    assert recorded[0] == 0
    assert recorded[-1] == 11
    assert 2 <= len(recorded) < 12
    skipped = [s["epoch"] for s in monitor.skipped_epochs]
    assert sorted(skipped + recorded) == list(range(12))
    config = ibmonitor.load_run(tmp_path / "r").config
    assert config["skipped_epochs"] == skipped
    assert config["overhead"]["budget"] == 0.25
    assert "overhead budget" in config["overhead"]["skipped"][0]["reason"]


def test_overhead_budget_keeps_everything_when_cheap(tiny_mlp):
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule=[0, 1, 2],
        estimators=[TOY],
        overhead_budget=1e6,
    )
    for epoch in range(3):
        monitor.on_epoch_end(epoch)
    assert monitor.recorded_epochs == [0, 1, 2]
    assert monitor.skipped_epochs == []


# ------------------------------------------------------ lifecycle and resume
def test_resume_continues_the_epochs(tiny_mlp, tmp_path):
    path = tmp_path / "r"
    kwargs = {
        "inputs": tiny_mlp.x,
        "labels": tiny_mlp.y,
        "estimators": [TOY],
        "schedule": "all",
        "logdir": path,
        "overhead_budget": None,
    }
    with InformationMonitor(tiny_mlp.model, sinks=[RunStore()], **kwargs) as monitor:
        for epoch in range(3):
            monitor.on_epoch_end(epoch, train_loss=1.0)
        with pytest.warns(MonitorWarning, match="'note'"):
            monitor.on_epoch_end(3, note="not a number")  # an error to keep
    with pytest.raises(FileExistsError, match="resume=True"):
        InformationMonitor(tiny_mlp.model, sinks=[RunStore()], **kwargs)
    with InformationMonitor(
        tiny_mlp.model, sinks=[RunStore(resume=True)], **kwargs
    ) as monitor:
        with pytest.warns(MonitorWarning, match="already in the resumed run"):
            monitor.on_epoch_end(3, train_loss=5.0)
        for epoch in range(4, 6):
            monitor.on_epoch_end(epoch, train_loss=1.0)
    run = ibmonitor.load_run(path)
    assert sorted(set(run.information["epoch"])) == [0, 1, 2, 3, 4, 5]
    assert len(run.information) == 6 * 3
    losses = run.scalars[run.scalars["name"] == "train_loss"]
    assert list(losses["value"]) == [1.0] * 5
    assert [e["epoch"] for e in run.config["errors"]] == [3]
    assert len(run.config["resumed"]) == 1
    with InformationMonitor(
        tiny_mlp.model, sinks=[RunStore(overwrite=True)], **kwargs
    ) as monitor:
        monitor.on_epoch_end(0)
    assert sorted(set(ibmonitor.load_run(path).information["epoch"])) == [0]


def test_exception_in_with_block_marks_the_run_crashed(tiny_mlp, tmp_path):
    with (
        pytest.raises(KeyError),
        InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            estimators=[TOY],
            logdir=tmp_path / "r",
            sinks=[RunStore()],
            overhead_budget=None,
        ) as monitor,
    ):
        monitor.on_epoch_end(0)
        raise KeyError("user bug")
    assert ibmonitor.load_run(tmp_path / "r").config["status"] == "crashed"
    monitor.close()  # a second close does nothing


def test_epochs_must_increase_and_bad_scalars_are_skipped(tiny_mlp):
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule="all",
        overhead_budget=None,
    )
    monitor.on_epoch_end(1, train_loss=0.5)
    with pytest.warns(MonitorWarning, match="epochs must increase"):
        monitor.on_epoch_end(1)
    with pytest.warns(MonitorWarning, match="'note' given to on_epoch_end"):
        monitor.on_epoch_end(2, note="hello", train_loss=0.4)
    names = [n for n in monitor.scalars["name"] if not n.startswith("saturation/")]
    assert names == ["train_loss", "train_loss"]
    assert monitor.recorded_epochs == [1, 2]
    monitor.close()
    with pytest.warns(MonitorWarning, match="after close"):
        monitor.on_epoch_end(3)


def test_verbose_reports_on_stderr_and_quiet_by_default(tiny_mlp, capsys):
    for verbose in (False, True):
        monitor = InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            estimators=[TOY],
            schedule=[0],
            verbose=verbose,
            overhead_budget=None,
        )
        monitor.on_epoch_end(0)
        monitor.close()
        captured = capsys.readouterr()
        assert captured.out == ""
        assert ("[ibmonitor] epoch 0" in captured.err) == verbose


def test_bad_parameters_are_errors_at_init(tiny_mlp):
    base = {"inputs": tiny_mlp.x, "labels": tiny_mlp.y}
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter"):
        InformationMonitor(tiny_mlp.model, batch_size=0, **base)
    with pytest.raises(InvalidParameterError, match="'overhead_budget' parameter"):
        InformationMonitor(tiny_mlp.model, overhead_budget=0, **base)
    with pytest.raises(InvalidParameterError, match="Unknown estimator 'nope'"):
        InformationMonitor(tiny_mlp.model, estimators="nope", **base)
    with pytest.raises(InvalidParameterError, match="is empty"):
        InformationMonitor(tiny_mlp.model, estimators=[], **base)
    with pytest.raises(InvalidParameterError, match="'schedule' parameter"):
        InformationMonitor(tiny_mlp.model, schedule="sometimes", **base)
    with pytest.raises(InvalidParameterError, match="loss_fn"):
        MeasureSet(["gap"], loss_fn=None, train_data=None)
    with pytest.raises(InvalidParameterError, match="must be a MeasureSet"):
        InformationMonitor(tiny_mlp.model, measures=["gap"], **base)


def test_log_schedule_uses_total_epochs(tiny_mlp):
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        total_epochs=100,
        overhead_budget=None,
    )
    assert monitor.schedule.planned == ibmonitor.schedules.log_spaced_epochs(100, 50)


# ------------------------------------------------ measures and TensorBoard
def test_measures_go_to_the_scalars(tiny_mlp, tmp_path):
    calls = []

    def custom(model, loss_fn, train_data, test_data):
        calls.append(1)
        return {"weight_sum": sum(float(p.detach().sum()) for p in model.parameters())}

    data = (tiny_mlp.x, tiny_mlp.y)
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule=[0, 2],
        sinks=[RunStore()],
        measures=MeasureSet(
            ["gap", "norms", custom],
            loss_fn=nn.CrossEntropyLoss(),
            train_data=data,
            test_data=data,
        ),
        logdir=tmp_path / "r",
        overhead_budget=None,
    )
    for epoch in range(3):
        monitor.on_epoch_end(epoch)
    monitor.close()
    scalars = ibmonitor.load_run(tmp_path / "r").scalars
    names = set(scalars["name"])
    assert {"gap/loss", "gap/train_acc", "norms/total/frobenius"} <= names
    assert "custom/weight_sum" in names or "weight_sum" in names
    assert sorted(set(scalars["epoch"])) == [0, 2]
    assert len(calls) == 2


def test_expensive_measures_are_thinned_by_default(tiny_mlp, monkeypatch):
    from ibmonitor.measures import register_measure
    from ibmonitor.measures import registry as registry_module

    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    seen: list = []

    def counter(name):
        def measure(context):
            seen[-1].append(name)
            return {f"{name}/calls": 1.0}

        return measure

    # Registered through the public registration, then used by name.
    register_measure("cheap_toy", counter("cheap_toy"), cost="cheap")
    register_measure("dear_toy", counter("dear_toy"), cost="expensive")
    data = (tiny_mlp.x, tiny_mlp.y)
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule="all",
        total_epochs=7,
        measures=MeasureSet(
            ["cheap_toy", "dear_toy"],
            loss_fn=nn.CrossEntropyLoss(),
            train_data=data,
            test_data=data,
        ),
        overhead_budget=None,
    )
    for epoch in range(7):
        seen.append([])
        monitor.on_epoch_end(epoch)
    monitor.close()
    full, cheap = ["cheap_toy", "dear_toy"], ["cheap_toy"]
    assert seen == [full, cheap, cheap, cheap, full, cheap, full]
    assert set(monitor.scalars["name"]) >= {"cheap_toy/calls", "dear_toy/calls"}


def test_tensorboard_on_by_default_with_logdir(tiny_mlp, tmp_path):
    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule=[0],
        logdir=tmp_path / "r",
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0, train_loss=0.1)
    assert list((tmp_path / "r").glob("events.out.tfevents.*"))


def test_tensorboard_failure_never_stops_training(tiny_mlp, tmp_path, monkeypatch):
    from ibmonitor.tensorboard import writer as tb_writer

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tb_writer.TensorBoardWriter, "write_information", broken)
    monitor = InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators=[TOY],
        schedule="all",
        logdir=tmp_path / "r",
        strict=True,
        sinks=[RunStore(), TensorBoard(images=False)],
        overhead_budget=None,
    )
    with pytest.warns(MonitorWarning, match="TensorBoard write_information failed"):
        monitor.on_epoch_end(0)
    monitor.on_epoch_end(1)
    monitor.close()
    run = ibmonitor.load_run(tmp_path / "r")
    assert sorted(set(run.information["epoch"])) == [0, 1]
    assert run.config["errors"][0]["where"] == "tensorboard.write_information"


def test_monitor_never_warns_on_a_clean_run(tiny_mlp, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonitorWarning)
        with InformationMonitor(
            tiny_mlp.model,
            inputs=tiny_mlp.x,
            labels=tiny_mlp.y,
            estimators=[TOY],
            schedule="all",
            logdir=tmp_path / "r",
            sinks=[RunStore()],
            overhead_budget=None,
        ) as monitor:
            _train(tiny_mlp.model, tiny_mlp.x, tiny_mlp.y, 2, monitor)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_with_cpu_probe_leaves_cuda_rng_alone(tiny_mlp, make_tiny_mlp):
    model = make_tiny_mlp(0, dropout=0.3).cuda()
    torch.cuda.manual_seed(0)
    before = torch.cuda.get_rng_state()
    monitor = InformationMonitor(
        model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        schedule="all",
        device=None,
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    monitor.close()
    assert torch.equal(torch.cuda.get_rng_state(), before)
    assert len(monitor.information) == 2 * 3
    assert monitor.information[["i_xt", "i_ty"]].notna().all().all()
