"""The measure registry: built-ins, registering a measure, options, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ibmonitor.exceptions import InvalidParameterError, MonitorWarning
from ibmonitor.measures import (
    Measure,
    MeasureContext,
    MeasureSet,
    available_measures,
    compute_measures,
    get_measure,
    measure_cost,
    register_measure,
)
from ibmonitor.measures import registry as registry_module


@pytest.fixture
def registry(monkeypatch):
    """Register toy measures in a copy of the registry, dropped after the test."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    return registry_module


@pytest.fixture
def problem(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    return model, loss_fn, (x[:80], y[:80]), (x[80:], y[80:])


def test_builtins_are_registered_with_cost_and_defaults():
    assert available_measures() == sorted(
        [
            "gap",
            "norms",
            "hessian",
            "hessian_density",
            "geometry",
            "pairing",
            "separation",
            "sharpness",
            "expected_sharpness",
            "pac_bayes",
        ]
    )
    hessian = get_measure("hessian")
    assert isinstance(hessian, Measure)
    assert hessian.cost == "expensive"
    assert hessian.defaults == {"n_samples": 20}
    assert {"k", "trace", "n_samples", "max_batches"} <= hessian.option_names
    assert get_measure("gap").requires == ("test_data",)
    with pytest.raises(InvalidParameterError, match="Unknown measure 'flatness'"):
        get_measure("flatness")


def test_registered_toy_measure_works_by_name(registry, problem):
    model, loss_fn, train, test = problem

    @register_measure("weight_sum", cost="cheap", defaults={"scale": 2.0})
    def weight_sum(context, *, scale=1.0, squared=False):
        with torch.no_grad():
            context.model[0].weight.add_(1.0)  # misbehaves: must be undone
        total = sum(float(p.detach().sum()) for p in context.model.parameters())
        return {"weight_sum/value": scale * (total**2 if squared else total)}

    assert "weight_sum" in available_measures()
    assert get_measure("weight_sum").option_names == {"scale", "squared"}
    before = model[0].weight.detach().clone()
    # The sum as the measure sees it: after its +1 on every weight of model[0].
    expected = sum(float(p.detach().sum()) for p in model.parameters())
    expected += model[0].weight.numel()

    values = compute_measures(["weight_sum", "gap"], model, loss_fn, train, test)
    assert torch.equal(model[0].weight, before)
    assert values["weight_sum/value"] == pytest.approx(2.0 * expected)
    assert "gap/loss" in values

    values = compute_measures(
        {"weight_sum": {"scale": 1.0}}, model, loss_fn, train, test
    )
    assert values["weight_sum/value"] == pytest.approx(expected)
    with pytest.raises(InvalidParameterError, match=r"Unknown option\(s\) \['sq'\]"):
        compute_measures({"weight_sum": {"sq": True}}, model, loss_fn, train)

    ms = MeasureSet({"weight_sum": {"scale": 1.0}}, loss_fn=loss_fn, train_data=train)
    ms.bind(model)
    assert ms.compute(model, 0) == {"weight_sum/value": pytest.approx(expected)}
    assert torch.equal(model[0].weight, before)


def test_register_measure_as_a_call_and_cost_class(registry, problem):
    model, loss_fn, train, _ = problem

    def calls(context, **options):
        return {"calls": 1.0, **{k: float(v) for k, v in options.items()}}

    assert register_measure("calls", calls, cost="expensive") is calls
    assert measure_cost("calls") == "expensive"
    assert get_measure("calls").option_names is None  # **options: anything goes
    assert compute_measures({"calls": {"x": 3}}, model, loss_fn, train) == {
        "calls": 1.0,
        "x": 3.0,
    }


def test_register_measure_replace_and_errors(registry):
    def toy(context):
        return {"toy": 1.0}

    register_measure("toy", toy, cost="cheap")
    with pytest.raises(InvalidParameterError, match="already registered"):
        register_measure("toy", toy, cost="cheap")
    register_measure("toy", toy, cost="expensive", replace=True)
    assert get_measure("toy").cost == "expensive"
    with pytest.raises(InvalidParameterError, match="'cost' parameter"):
        register_measure("toy2", toy, cost="slow")
    with pytest.raises(InvalidParameterError, match="'name' parameter"):
        register_measure("bad name!", toy, cost="cheap")
    with pytest.raises(InvalidParameterError, match=r"Unknown option\(s\) \['k'\]"):
        register_measure("toy3", toy, cost="cheap", defaults={"k": 1})
    with pytest.raises(InvalidParameterError, match="'requires' parameter"):
        register_measure("toy4", toy, cost="cheap", requires=["labels"])
    assert "toy2" not in available_measures()
    assert "toy3" not in available_measures()


def test_registered_measure_must_return_a_dict(registry, problem):
    model, loss_fn, train, _ = problem
    register_measure("scalar", lambda context: 1.0, cost="cheap")
    with pytest.raises(InvalidParameterError, match="must return a dict"):
        compute_measures(["scalar"], model, loss_fn, train)


def test_requires_and_option_names_from_functions(registry, problem):
    model, loss_fn, train, test = problem

    def reference(model, loss_fn, data, *, alpha=1.0, beta=2):
        return alpha

    @register_measure(
        "needs_test",
        cost="cheap",
        option_names=[reference, "gamma"],
        requires=["test_data"],
    )
    def needs_test(context, **options):
        return {"n_test": float(len(context.test_data[0]))}

    assert get_measure("needs_test").option_names == {"alpha", "beta", "gamma"}
    assert compute_measures(["needs_test"], model, loss_fn, train, test) == {
        "n_test": 40.0
    }
    with pytest.raises(InvalidParameterError, match="needs test_data"):
        compute_measures(["needs_test"], model, loss_fn, train)
    with pytest.raises(InvalidParameterError, match="'test_data' parameter"):
        MeasureSet(["needs_test"], loss_fn=loss_fn, train_data=train)


def test_measure_object_is_callable_and_usable_directly(problem):
    model, loss_fn, train, test = problem
    gap = get_measure("gap")
    context = MeasureContext(model, loss_fn, train, test)
    values = gap(context)
    assert set(values) == {
        "gap/loss",
        "gap/acc",
        "gap/train_loss",
        "gap/test_loss",
        "gap/train_acc",
        "gap/test_acc",
    }
    assert compute_measures([gap], model, loss_fn, train, test) == values


def test_non_numeric_values_are_left_out_with_a_log_warning(registry, problem, caplog):
    model, loss_fn, train, _ = problem
    register_measure(
        "mixed",
        lambda context: {"a": 1, "b": "text", "c": math.nan, "d": torch.tensor(2.0)},
        cost="cheap",
    )
    with caplog.at_level("WARNING", logger="ibmonitor.measures.registry"):
        values = compute_measures(["mixed"], model, loss_fn, train)
    assert values == {"a": 1.0, "d": 2.0}
    assert "non-numeric" in caplog.text


def test_failing_registered_measure_warns(registry, problem):
    model, loss_fn, train, _ = problem

    def broken(context):
        raise RuntimeError("no luck")

    register_measure("broken_toy", broken, cost="cheap")
    with pytest.warns(MonitorWarning, match="'broken_toy' failed.*no luck"):
        values = compute_measures(
            ["broken_toy", "norms"], model, loss_fn, train, on_error="warn"
        )
    assert "norms/total/frobenius" in values


def test_plain_callable_keeps_working_and_cost_attribute():
    def mine(model, loss_fn, train, test):
        return 1.0

    model = nn.Linear(2, 2)
    assert compute_measures([mine], model, nn.MSELoss(), None) == {"mine": 1.0}
    mine.cost = "expensive"
    assert measure_cost(mine) == "expensive"
