"""MeasureSet: the measures of a monitored run with their loss, data and schedule."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import ibmonitor
from ibmonitor.exceptions import InvalidParameterError, MonitorWarning
from ibmonitor.measures import MeasureSet, compute_measures, register_measure
from ibmonitor.measures import registry as registry_module


@pytest.fixture
def problem(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    return model, loss_fn, (x[:80], y[:80]), (x[80:], y[80:])


@pytest.fixture
def counters(monkeypatch):
    """A cheap and an expensive toy measure that count their calls."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    calls = {"cheap": 0, "dear": 0}

    def make(name):
        def count(context):
            calls[name] += 1
            return {f"{name}/calls": calls[name]}

        return count

    register_measure("cheap_count", make("cheap"), cost="cheap")
    register_measure("dear_count", make("dear"), cost="expensive")
    return calls


def _train_a_little(model, loss_fn, data):
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def test_measure_set_is_exported_at_top_level():
    assert ibmonitor.MeasureSet is MeasureSet
    assert "MeasureSet" in ibmonitor.__all__


def test_measure_set_matches_compute_measures_with_init_from_bind(problem):
    model, loss_fn, train, test = problem
    ms = MeasureSet(["gap", "norms"], loss_fn=loss_fn, train_data=train, test_data=test)
    assert ms.names == ["gap", "norms"]
    ms.bind(model)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _train_a_little(model, loss_fn, train)
    values = ms.compute(model, 0)
    assert all(isinstance(v, float) for v in values.values())
    assert values == compute_measures(
        ["gap", "norms"], model, loss_fn, train, test, init
    )
    assert values["norms/total/distance_to_init"] > 0


def test_measure_set_leaves_model_and_rng_unchanged(problem):
    model, loss_fn, train, test = problem
    ms = MeasureSet(
        {"gap": {}, "expected_sharpness": {"n_samples": 2}},
        loss_fn=loss_fn,
        train_data=train,
        test_data=test,
    )
    ms.bind(model)
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    ms.compute(model, 3)
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])  # noqa: NPY002
    assert random.getstate() == states[2]


def test_without_schedule_due_follows_recording_and_thins_expensive(problem, counters):
    model, loss_fn, train, _ = problem
    ms = MeasureSet(["cheap_count", "dear_count"], loss_fn=loss_fn, train_data=train)
    ms.bind(model, total_epochs=20)
    assert ms.due(5, recorded=True) is True
    assert ms.due(6, recorded=False) is False
    seen = [set(ms.compute(model, epoch)) for epoch in range(10)]
    dear = [i for i, keys in enumerate(seen) if "dear/calls" in keys]
    assert dear == [0, 4, 8]  # the 1st, then every 4th call
    assert all("cheap/calls" in keys for keys in seen)
    assert "dear/calls" in ms.compute(model, 19, last=True)
    assert counters == {"cheap": 11, "dear": 4}


def test_expensive_every_and_bind_restart_the_count(problem, counters):
    model, loss_fn, train, _ = problem
    ms = MeasureSet(
        ["cheap_count", "dear_count"],
        loss_fn=loss_fn,
        train_data=train,
        expensive_every=2,
    )
    ms.bind(model)
    hits = ["dear/calls" in ms.compute(model, e) for e in range(5)]
    assert hits == [True, False, True, False, True]
    ms.bind(model)
    assert "dear/calls" in ms.compute(model, 0)


def test_with_schedule_every_measure_runs_when_due(problem, counters):
    model, loss_fn, train, _ = problem
    ms = MeasureSet(
        ["cheap_count", "dear_count"], loss_fn=loss_fn, train_data=train, schedule=3
    )
    ms.bind(model, total_epochs=10)
    assert [e for e in range(10) if ms.due(e, recorded=False)] == [0, 3, 6, 9]
    assert ms.due(1, recorded=True) is False
    for epoch in (0, 3, 6):
        assert set(ms.compute(model, epoch)) == {"cheap/calls", "dear/calls"}
    assert ms.schedule.planned == [0, 3, 6, 9]


def test_errors_warn_with_measure_and_epoch_or_raise_when_strict(problem):
    model, loss_fn, train, _ = problem

    def broken(model, loss_fn, train_data, test_data):
        raise RuntimeError("no luck")

    ms = MeasureSet([broken, "norms"], loss_fn=loss_fn, train_data=train)
    ms.bind(model)
    with pytest.warns(MonitorWarning, match="'broken' failed at epoch 7.*no luck"):
        values = ms.compute(model, 7)
    assert "norms/total/frobenius" in values
    assert [name for name, _ in ms.last_errors] == ["broken"]
    with pytest.raises(RuntimeError, match="no luck"):
        ms.compute(model, 8, strict=True)


def test_non_numeric_values_are_skipped(problem, caplog):
    model, loss_fn, train, _ = problem

    def odd(model, loss_fn, train_data, test_data):
        return {"ok": 1.5, "flag": True, "text": "x", "nan": float("nan")}

    ms = MeasureSet(odd, loss_fn=loss_fn, train_data=train)
    ms.bind(model)
    with caplog.at_level("WARNING"):
        assert ms.compute(model, 0) == {"odd/ok": 1.5}
    assert "non-numeric" in caplog.text


def test_compute_before_bind_raises(problem):
    model, loss_fn, train, _ = problem
    ms = MeasureSet("norms", loss_fn=loss_fn, train_data=train)
    with pytest.raises(RuntimeError, match=r"before MeasureSet\.bind"):
        ms.compute(model, 0)


def test_describe_is_json_ready(problem):
    model, loss_fn, train, test = problem

    def mine(model, loss_fn, train_data, test_data):
        return 1.0

    ms = MeasureSet(
        {"gap": {"batch_size": 16}, "hessian": {"k": 2}, "mine": mine},
        loss_fn=loss_fn,
        train_data=train,
        test_data=test,
        schedule=[0, 5],
    )
    ms.bind(model, total_epochs=10)
    description = ms.describe()
    json.dumps(description)
    assert description["names"] == ["gap", "hessian", "mine"]
    assert description["options"]["hessian"] == {"n_samples": 20, "k": 2}
    assert description["options"]["gap"] == {"batch_size": 16}
    assert description["costs"] == {
        "gap": "cheap",
        "hessian": "expensive",
        "mine": "cheap",
    }
    assert description["schedule"]["spec"] == [0, 5]
    assert description["expensive_every"] == 4
    unscheduled = MeasureSet("norms", loss_fn=loss_fn, train_data=train)
    assert unscheduled.describe()["schedule"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"measures": ["flatness"]}, "Unknown measure 'flatness'"),
        ({"measures": {"hessian": {"kk": 1}}}, r"Unknown option\(s\) \['kk'\]"),
        ({"measures": []}, "'measures' parameter of MeasureSet is empty"),
        ({"measures": None}, "'measures' parameter of MeasureSet is empty"),
        ({"measures": ["norms", "norms"]}, "listed twice"),
        ({"loss_fn": None}, "'loss_fn' parameter"),
        ({"train_data": None}, "'train_data' parameter"),
        ({"measures": ["gap"], "test_data": None}, "'test_data' parameter"),
        ({"expensive_every": 0}, "'expensive_every' parameter"),
        ({"schedule": "sometimes"}, "sometimes"),
    ],
    ids=[
        "unknown-name",
        "unknown-option",
        "empty",
        "none",
        "twice",
        "no-loss",
        "no-train",
        "gap-without-test",
        "expensive-every",
        "bad-schedule",
    ],
)
def test_construction_rejects_bad_arguments(problem, kwargs, match):
    _, loss_fn, train, test = problem
    args = {
        "measures": ["norms"],
        "loss_fn": loss_fn,
        "train_data": train,
        "test_data": test,
        **kwargs,
    }
    measures = args.pop("measures")
    with pytest.raises(InvalidParameterError, match=match):
        MeasureSet(measures, **args)


def test_bind_rejects_a_non_module(problem):
    _, loss_fn, train, _ = problem
    ms = MeasureSet("norms", loss_fn=loss_fn, train_data=train)
    with pytest.raises(InvalidParameterError, match="'model' parameter"):
        ms.bind("model")
