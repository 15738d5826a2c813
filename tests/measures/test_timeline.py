from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn

from ibmonitor.exceptions import InvalidParameterError, MonitorWarning
from ibmonitor.measures import (
    available_measures,
    compute_measures,
    expected_sharpness,
    generalization_gap,
    get_measure,
    hessian_eigenvalues,
    hessian_trace,
    measure_cost,
    norms,
    pac_bayes,
    worst_case_sharpness,
)

FAST = {
    "hessian": {"max_iter": 20, "n_samples": 3},
    "sharpness": {"n_steps": 2},
    "expected_sharpness": {"n_samples": 2},
    "pac_bayes": {"n_samples": 2, "max_iter": 4},
}


@pytest.fixture
def problem(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    init = {k: v * 0.9 for k, v in copy.deepcopy(model.state_dict()).items()}
    return model, loss_fn, (x[:80], y[:80]), (x[80:], y[80:]), init


def test_measure_costs_classify_every_measure():
    names = available_measures()
    assert set(names) == {
        "gap",
        "norms",
        "hessian",
        "sharpness",
        "expected_sharpness",
        "pac_bayes",
        "hessian_density",
        "separation",
        "geometry",
        "pairing",
    }
    cheap = {n for n in names if get_measure(n).cost == "cheap"}
    assert cheap == {"gap", "norms", "separation", "pairing"}
    assert all(measure_cost(n) == get_measure(n).cost for n in names)
    assert measure_cost("hessian") == "expensive"

    def mine(model, loss_fn, train, test):
        return 1.0

    assert measure_cost(mine) == "cheap"
    mine.cost = "expensive"
    assert measure_cost(mine) == "expensive"
    with pytest.raises(InvalidParameterError, match="Unknown measure 'flatness'"):
        measure_cost("flatness")


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_compute_measures_keys_and_values_match_functions(problem):
    model, loss_fn, train, test, init = problem
    values = compute_measures(
        available_measures(), model, loss_fn, train, test, init, options=FAST
    )
    assert all(isinstance(v, float) for v in values.values())
    expected_keys = {
        "gap/loss",
        "gap/acc",
        "gap/train_loss",
        "gap/test_loss",
        "gap/train_acc",
        "gap/test_acc",
        "hessian/top_eigenvalue",
        "hessian/trace",
        "hessian/trace_stderr",
        "sharpness/worst_case",
        "sharpness/expected",
        "sharpness/expected_stderr",
        "pac_bayes/sigma",
        "pac_bayes/flatness",
        "pac_bayes/bound",
        "pac_bayes/kl",
        "norms/0/frobenius",
        "norms/0/spectral",
        "norms/0/distance_to_init",
        "norms/2/frobenius",
        "norms/2/spectral",
        "norms/2/distance_to_init",
        "norms/total/frobenius",
        "norms/total/distance_to_init",
        "norms/total/log_spectral_sum",
        "norms/total/path",
        "norms/total/n_params",
        # filter pairing of the two Linear layers (the geometry measures that
        # read recorded activations give nothing here)
        "pairing/0/mean_mu",
        "pairing/0/median_mu",
        "pairing/0/frac_below",
        "pairing/2/mean_mu",
        "pairing/2/median_mu",
        "pairing/2/frac_below",
    }
    density = {k for k in values if k.startswith("hessian_density/")}
    assert density and len(density) % 2 == 0
    assert set(values) - density == expected_keys
    gap = generalization_gap(model, loss_fn, train, test)
    assert values["gap/loss"] == gap.loss_gap
    assert values["gap/acc"] == gap.acc_gap
    assert values["gap/test_acc"] == gap.test_acc
    assert (
        values["hessian/top_eigenvalue"]
        == hessian_eigenvalues(model, loss_fn, train, max_iter=20)[0]
    )
    tr = hessian_trace(model, loss_fn, train, n_samples=3)
    assert values["hessian/trace"] == tr.mean
    assert values["hessian/trace_stderr"] == tr.stderr
    assert values["sharpness/worst_case"] == worst_case_sharpness(
        model, loss_fn, train, n_steps=2
    )
    assert values["sharpness/expected"] == expected_sharpness(
        model, loss_fn, train, n_samples=2
    )
    pb = pac_bayes(model, loss_fn, train, init=init, n_samples=2, max_iter=4)
    assert values["pac_bayes/bound"] == pb.bound
    assert values["pac_bayes/sigma"] == pb.sigma
    frame = norms(model, init, input_shape=(5,)).set_index("layer")
    assert values["norms/2/spectral"] == frame.loc["2", "spectral"]
    assert values["norms/total/path"] == frame.loc["total", "path"]
    assert values["norms/total/n_params"] == 147


def test_compute_measures_hessian_options(problem):
    model, loss_fn, train, _, _ = problem
    values = compute_measures(
        {"hessian": {"k": 2, "per_layer": True, "trace": False}},
        model,
        loss_fn,
        train,
    )
    assert set(values) == {
        "hessian/0/top_eigenvalue",
        "hessian/0/eigenvalue_2",
        "hessian/2/top_eigenvalue",
        "hessian/2/eigenvalue_2",
    }
    assert values["hessian/0/top_eigenvalue"] >= values["hessian/0/eigenvalue_2"]


def test_compute_measures_default_trace_samples_is_20(problem):
    model, loss_fn, train, _, _ = problem
    values = compute_measures(["hessian"], model, loss_fn, train)
    assert values["hessian/trace"] == hessian_trace(model, loss_fn, train, 20).mean


def test_compute_measures_user_functions(problem):
    model, loss_fn, train, test, _ = problem

    def weight_sum(model, loss_fn, train_data, test_data):
        with torch.no_grad():
            model[0].weight.add_(1.0)  # misbehaves: must be undone
        return float(sum(p.detach().sum() for p in model.parameters()))

    def pair(model, loss_fn, train_data, test_data):
        return {"a": 1, "b": torch.tensor(2.0)}

    before = model[0].weight.detach().clone()
    values = compute_measures(
        [weight_sum, "gap", pair, functools.partial(pair)], model, loss_fn, train, test
    )
    assert torch.equal(model[0].weight, before)
    assert values["pair/a"] == 1.0
    assert values["pair/b"] == 2.0
    assert values["custom/a"] == 1.0  # a partial has no name
    assert "weight_sum" in values
    named = compute_measures({"mine": pair}, model, loss_fn, train, test)
    assert named == {"mine/a": 1.0, "mine/b": 2.0}


def test_compute_measures_drops_nan():
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randn(10, 2) * 3
    values = compute_measures(["gap", "norms"], model, nn.MSELoss(), (x, y), (x, y))
    assert "gap/acc" not in values
    assert "gap/loss" in values
    assert "norms/root/frobenius" in values
    assert "norms/total/distance_to_init" not in values  # no init_state


@pytest.mark.parametrize(
    ("measures", "options", "match"),
    [
        (["flatness"], None, "Unknown measure 'flatness'"),
        (["hessian"], {"hessian": {"kk": 1}}, r"Unknown option\(s\) \['kk'\]"),
        (["gap"], {"norms": {}}, "not computed"),
        (["gap", "gap"], None, "listed twice"),
        ([3], None, "Each measure must be"),
    ],
)
def test_compute_measures_rejects_bad_arguments(problem, measures, options, match):
    model, loss_fn, train, test, _ = problem
    with pytest.raises(InvalidParameterError, match=match):
        compute_measures(measures, model, loss_fn, train, test, options=options)


def test_compute_measures_on_error(problem):
    model, loss_fn, train, _, _ = problem

    def broken(model, loss_fn, train_data, test_data):
        raise RuntimeError("no luck")

    with pytest.raises(InvalidParameterError, match="needs test_data"):
        compute_measures(["gap"], model, loss_fn, train)
    with pytest.warns(MonitorWarning) as record:
        values = compute_measures(
            [broken, "gap", "norms"], model, loss_fn, train, on_error="warn"
        )
    messages = [str(r.message) for r in record]
    assert any("'broken' failed" in m and "no luck" in m for m in messages)
    assert any("'gap' failed" in m for m in messages)
    assert not any(k.startswith("gap/") for k in values)
    assert math.isfinite(values["norms/total/frobenius"])
