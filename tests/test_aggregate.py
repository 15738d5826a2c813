"""Aggregation of runs that differ only by seed (issue 12): exact medians,
quartiles, means and spreads of synthetic tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import ibmonitor
from ibmonitor.aggregate import MAX_COLUMNS, aggregate_seeds
from ibmonitor.exceptions import IBMonitorWarning, InvalidParameterError
from ibmonitor.storage import RunWriter

#: I(X;T) of layer fc1 at epoch 0 in four seeds; quartiles by hand with numpy's
#: linear rule: positions 0.75, 1.5 and 2.25 of the sorted values 1, 2, 3, 10.
XT = [3.0, 1.0, 10.0, 2.0]
MEDIAN, Q25, Q75 = 2.5, 1.75, 4.75


def seeds_frame():
    rows = []
    for run, xt in enumerate(XT):
        for epoch in (0, 5):
            for layer in ("fc1", "fc2"):
                rows.append(
                    {
                        "run": f"seed-{run}",
                        "epoch": epoch,
                        "probe": "default",
                        "layer": layer,
                        "estimator": "binned",
                        "i_xt": xt + epoch + (layer == "fc2"),
                        "i_ty": 0.1 * run,
                        "pinned": float(run == 2 and epoch == 5),
                        "resolution": 0.01 * (run + 1),
                    }
                )
    return pd.DataFrame(rows)


def test_median_and_quartiles_are_exact():
    out = aggregate_seeds(seeds_frame())
    assert list(out.columns[:4]) == ["probe", "layer", "estimator", "epoch"]
    row = out[(out.layer == "fc1") & (out.epoch == 0)].iloc[0]
    assert (row.i_xt, row.i_xt_q25, row.i_xt_q75) == (MEDIAN, Q25, Q75)
    assert np.quantile(XT, [0.25, 0.5, 0.75]).tolist() == [Q25, MEDIAN, Q75]
    assert row.i_ty == pytest.approx(0.15)  # median of 0, 0.1, 0.2, 0.3
    assert row.i_ty_q25 == pytest.approx(0.075)
    assert row.n_runs == 4
    later = out[(out.layer == "fc2") & (out.epoch == 5)].iloc[0]
    assert later.i_xt == MEDIAN + 6  # shifted values, shifted median
    # epoch order, then first appearance; one row per group
    assert out[["epoch", "layer"]].values.tolist() == [
        [0, "fc1"],
        [0, "fc2"],
        [5, "fc1"],
        [5, "fc2"],
    ]


def test_flags_and_bounds_take_their_maximum():
    out = aggregate_seeds(seeds_frame()).set_index(["layer", "epoch"])
    assert out.loc[("fc1", 5), "pinned"] == 1.0  # one seed pinned
    assert out.loc[("fc1", 0), "pinned"] == 0.0
    assert out.loc[("fc1", 0), "resolution"] == pytest.approx(0.04)
    assert "pinned_q25" not in out and "resolution_q75" not in out
    assert set(MAX_COLUMNS) >= {"pinned", "resolution", "i_xt_ceiling"}


def test_nan_values_are_left_out_but_the_runs_counted():
    frame = seeds_frame()
    frame.loc[(frame.run == "seed-2") & (frame.layer == "fc1"), "i_xt"] = np.nan
    row = aggregate_seeds(frame).query("layer == 'fc1' and epoch == 0").iloc[0]
    assert row.i_xt == 2.0  # median of 3, 1, 2
    assert row.i_xt_q25 == 1.5 and row.i_xt_q75 == 2.5
    assert row.n_runs == 4


def test_mean_with_standard_deviation_and_error():
    out = aggregate_seeds(seeds_frame(), statistic="mean", quantities=["i_xt"])
    row = out.query("layer == 'fc1' and epoch == 0").iloc[0]
    assert row.i_xt == pytest.approx(np.mean(XT))
    assert row.i_xt_std == pytest.approx(np.std(XT, ddof=1))
    assert row.i_xt_sem == pytest.approx(np.std(XT, ddof=1) / 2)
    assert "i_ty" not in out  # only the quantities asked for
    one = aggregate_seeds(seeds_frame().query("run == 'seed-0'"), statistic="mean")
    assert one.i_xt_std.isna().all() and (one.n_runs == 1).all()


def test_long_tables_give_the_same_result_as_wide_ones():
    wide = seeds_frame()
    long = wide.melt(
        id_vars=["run", "epoch", "probe", "layer", "estimator"],
        var_name="quantity",
        value_name="value",
    )
    pd.testing.assert_frame_equal(
        aggregate_seeds(long)[aggregate_seeds(wide).columns], aggregate_seeds(wide)
    )


def test_intervals_and_baselines_are_aggregated_like_any_quantity():
    frame = seeds_frame().assign(i_ty_baseline=lambda f: 0.01 * f.i_xt)
    out = aggregate_seeds(frame).query("layer == 'fc1' and epoch == 0").iloc[0]
    assert out.i_ty_baseline == pytest.approx(0.01 * MEDIAN)
    assert out.i_ty_baseline_q75 == pytest.approx(0.01 * Q75)


def test_scalars_by_name_and_epoch():
    frame = pd.DataFrame(
        {
            "run": ["a", "b", "c", "a", "b", "c"],
            "epoch": [0, 0, 0, 1, 1, 1],
            "name": ["train_loss"] * 3 + ["test_acc"] * 3,
            "value": [1.0, 3.0, 2.0, 0.5, 0.7, 0.9],
        }
    )
    out = aggregate_seeds(frame, table="scalars")
    assert list(out.columns) == [
        "name",
        "epoch",
        "value",
        "value_q25",
        "value_q75",
        "n_runs",
    ]
    assert out.value.tolist() == pytest.approx([2.0, 0.7])
    assert out.value_q25.tolist() == pytest.approx([1.5, 0.6])
    assert out.value_q75.tolist() == pytest.approx([2.5, 0.8])


def _write(path, seed, xt, *, layers=("fc1",)):
    config = {"seed": seed, "layers": {layer: {} for layer in layers}}
    with RunWriter(path, config) as writer:
        writer.append_information(
            [
                {
                    "epoch": 0,
                    "probe": "default",
                    "layer": layer,
                    "estimator": "binned",
                    "i_xt": xt,
                    "i_ty": 0.5,
                }
                for layer in layers
            ]
        )
        writer.append_scalars(0, {"train_loss": xt / 10})
    return path


def test_stored_runs_by_glob_and_by_load_runs(tmp_path):
    for seed, xt in enumerate(XT):
        _write(tmp_path / f"seed-{seed}", seed, xt)
    by_glob = aggregate_seeds(str(tmp_path / "seed-*"))
    by_runs = aggregate_seeds(ibmonitor.load_runs(tmp_path))
    pd.testing.assert_frame_equal(by_glob, by_runs)
    assert by_glob[["i_xt", "i_xt_q25", "i_xt_q75", "n_runs"]].values.tolist() == [
        [MEDIAN, Q25, Q75, 4.0]
    ]
    loss = aggregate_seeds(ibmonitor.load_runs(tmp_path), table="scalars")
    assert loss.value.iloc[0] == pytest.approx(MEDIAN / 10)


def test_runs_of_different_experiments_are_flagged(tmp_path):
    _write(tmp_path / "a", 0, 1.0)
    _write(tmp_path / "b", 1, 2.0, layers=("fc1", "fc2"))
    with pytest.warns(IBMonitorWarning, match=r"differ in run.json\['layers'\]"):
        aggregate_seeds(ibmonitor.load_runs(tmp_path))


def test_a_runs_like_object_and_one_run():
    frame = seeds_frame()
    runs = SimpleNamespace(information=frame, scalars=frame.iloc[:0], configs={})
    assert aggregate_seeds(runs).equals(aggregate_seeds(frame))
    single = frame[frame.run == "seed-0"].drop(columns="run")
    out = aggregate_seeds(single)
    assert (out.n_runs == 1).all() and (out.i_xt == out.i_xt_q75).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"statistic": "mode"}, "'statistic' parameter of aggregate_seeds"),
        ({"table": "activations"}, "'table' parameter of aggregate_seeds"),
        ({"quantities": ["layer"]}, "not a numeric column"),
        ({"quantities": "h_t"}, "'h_t'"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        aggregate_seeds(seeds_frame(), **kwargs)


def test_bad_inputs():
    with pytest.raises(InvalidParameterError, match="lacks the columns"):
        aggregate_seeds(pd.DataFrame({"run": ["a"], "epoch": [0]}))
    with pytest.raises(InvalidParameterError, match="lacks the columns"):
        aggregate_seeds(pd.DataFrame({"epoch": [0]}), table="scalars")
    with pytest.raises(InvalidParameterError, match="expects runs"):
        aggregate_seeds(42)
    assert math.isnan(aggregate_seeds(seeds_frame().assign(i_ty=np.nan)).i_ty.iloc[0])
