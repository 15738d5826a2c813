"""Tests of ibmonitor.plotting: information planes, dashboards, static export."""

from __future__ import annotations

import html
import math
import os
import struct
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from ibmonitor import _browser, schema
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.plotting import (
    MIN_PLANE_SPAN,
    X_TITLE,
    Y_TITLE,
    combine_figures,
    dashboard,
    information_curves,
    information_plane,
    line_figure,
    place_labels,
    plane_min_spans,
    write_image,
)

LAYERS = ("fc1", "fc2", "fc3")
TOTAL_EPOCHS = 1000
LOG_EPOCHS = sorted(
    set(np.logspace(0, np.log2(TOTAL_EPOCHS), 20, base=2).astype(int) - 1)
)


def information_frame(layers=LAYERS, epochs=LOG_EPOCHS, seed=0, estimator="binned"):
    """Synthetic trajectories: fitting (both rise), then compression (I(X;T) falls)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, layer in enumerate(layers):
        for epoch in epochs:
            s = math.log1p(epoch) / math.log1p(max(epochs))
            rows.append(
                {
                    "epoch": int(epoch),
                    "probe": "default",
                    "layer": layer,
                    "estimator": estimator,
                    "i_xt": (10 - 2.5 * k) * (0.6 + 0.4 * math.sin(math.pi * s))
                    + rng.normal(0, 0.05),
                    "i_ty": 0.95 * (1 - math.exp(-4 * s)) * (1 - 0.1 * k),
                }
            )
    return pd.DataFrame(rows)


def scalars_frame(epochs=range(0, TOTAL_EPOCHS, 50), measures=True, saturation=()):
    rows = []
    for e in epochs:
        train = 0.7 * math.exp(-5 * e / TOTAL_EPOCHS)
        test = train + 0.1 * e / TOTAL_EPOCHS
        rows += [
            (e, "train_loss", train),
            (e, "test_loss", test),
            (e, "gap/loss", test - train),
            (e, "train_acc", 1 - train / 2),
            (e, "test_acc", 1 - test / 2),
            (e, "gap/acc", (test - train) / 2),
        ]
        if measures:
            rows += [
                (e, "hessian/top_eigenvalue", 1 + 10 * math.log1p(e)),
                (e, "sharpness/worst_case", 0.01 + 0.001 * e),
                (e, "norms/total/frobenius", 5 + math.sqrt(e)),
                (e, "norms/fc1/frobenius", 2.0),  # per layer: not on the dashboard
                (e, "pac_bayes/bound", 100.0 + e),
            ]
        rows += [
            (e, schema.saturation_name(layer), min(1.0, e / TOTAL_EPOCHS + 0.1 * k))
            for k, layer in enumerate(saturation)
        ]
    return pd.DataFrame(rows, columns=["epoch", "name", "value"])


def fake_run(name="demo", layers=LAYERS, seed=0, scalars=None, schedule="log"):
    """A Run-like object (what ibmonitor.storage.load_run returns)."""
    return SimpleNamespace(
        name=name,
        path=None,
        config={
            "name": name,
            "seed": seed,
            "layers": {layer: {"n_units": 4} for layer in layers},
            "schedule": {"kind": schedule, "total_epochs": TOTAL_EPOCHS},
        },
        information=information_frame(layers, seed=seed),
        scalars=scalars_frame() if scalars is None else scalars,
    )


def plane_traces(fig):
    return [t for t in fig.data if (t.meta or {}).get("kind") == "information_plane"]


def annotation_texts(fig):
    return [a.text for a in fig.layout.annotations]


def scalar_traces(fig):
    return [t for t in fig.data if (t.meta or {}).get("kind") == "scalar"]


def panel_titles(fig):
    """Subplot titles of the dashboard's time-series panels, top to bottom."""
    return [a.text for a in fig.layout.annotations if a.text in schema.PANELS]


def panel_of(fig, trace):
    """Title of the subplot a trace is drawn in."""
    top = fig.layout["yaxis" + trace.yaxis[1:]].domain[1]
    (title,) = [
        a.text
        for a in fig.layout.annotations
        if a.text in schema.PANELS and a.y == pytest.approx(top)
    ]
    return title


# --------------------------------------------------------------- information plane


def test_information_plane_one_trace_per_layer():
    fig = information_plane(information_frame())
    assert isinstance(fig, go.Figure)
    traces = plane_traces(fig)
    assert [t.meta["layer"] for t in traces] == list(LAYERS)
    for trace in traces:
        assert trace.mode == "lines+markers"
        assert len(trace.x) == len(LOG_EPOCHS)
        assert trace.marker.coloraxis == "coloraxis"
    assert fig.layout.xaxis.title.text == X_TITLE == "I(X;T) (bits)"
    assert fig.layout.yaxis.title.text == Y_TITLE == "I(T;Y) (bits)"
    # one colour bar, on the epochs
    assert fig.layout.coloraxis.colorbar.title.text == "epoch"
    assert sum(1 for t in fig.data if getattr(t.marker, "showscale", None)) == 0


def test_information_plane_values_and_hover():
    frame = information_frame()
    fig = information_plane(frame)
    rows = frame[frame.layer == "fc2"].sort_values("epoch")
    trace = plane_traces(fig)[1]
    np.testing.assert_allclose(trace.x, rows.i_xt)
    np.testing.assert_allclose(trace.y, rows.i_ty)
    assert [int(c[0]) for c in trace.customdata] == rows.epoch.tolist()
    for word in ("run", "layer", "epoch", "I(X;T)", "I(T;Y)", "bits"):
        assert word in trace.hovertemplate
    assert "$" not in fig.to_json()  # no LaTeX anywhere


def test_information_plane_layer_names_at_trajectory_ends():
    frame = information_frame()
    fig = information_plane(frame)
    ends = {a.text: (a.x, a.y) for a in fig.layout.annotations}
    for layer in LAYERS:
        last = frame[frame.layer == layer].sort_values("epoch").iloc[-1]
        assert ends[layer] == pytest.approx((last.i_xt, last.i_ty))


def test_information_plane_log_epochs_from_schedule_and_spacing():
    log_fig = information_plane(fake_run())  # config says "log"
    colors = np.asarray(plane_traces(log_fig)[0].marker.color)
    np.testing.assert_allclose(colors, np.log10(np.asarray(LOG_EPOCHS) + 1))
    bar = log_fig.layout.coloraxis.colorbar
    assert "100" in bar.ticktext and "0" in bar.ticktext
    assert bar.tickvals[list(bar.ticktext).index("100")] == pytest.approx(
        math.log10(101)
    )
    # No config: detected from the spacing of the recorded epochs.
    spaced = information_plane(information_frame())
    assert spaced.layout.coloraxis.colorbar.ticktext is not None
    linear = information_plane(information_frame(epochs=range(0, 200, 10)))
    colors = np.asarray(plane_traces(linear)[0].marker.color)
    np.testing.assert_allclose(colors, np.arange(0, 200, 10))
    assert linear.layout.coloraxis.colorbar.ticktext is None
    # "every" schedule in the config wins over the spacing; explicit option wins.
    every = information_plane(fake_run(schedule="every"))
    assert every.layout.coloraxis.colorbar.ticktext is None
    forced = information_plane(fake_run(schedule="every"), log_epochs=True)
    assert forced.layout.coloraxis.colorbar.ticktext is not None


def test_information_plane_accepts_long_frames_and_selections():
    wide = information_frame()
    long = wide.melt(
        id_vars=["epoch", "probe", "layer", "estimator"],
        value_vars=["i_xt", "i_ty"],
        var_name="quantity",
    )
    fig = information_plane(long, layers=["fc3", "fc1"])
    assert [t.meta["layer"] for t in plane_traces(fig)] == ["fc1", "fc3"]


def test_information_plane_estimator_choice():
    frame = pd.concat(
        [information_frame(), information_frame(estimator="kde", seed=1)],
        ignore_index=True,
    )
    default = information_plane(frame)
    assert "binned" in default.layout.title.text
    kde = information_plane(frame, estimator="kde")
    assert "kde" in kde.layout.title.text
    assert len(plane_traces(kde)) == len(LAYERS)
    both = information_plane(frame, facet="estimator")
    assert len(plane_traces(both)) == 2 * len(LAYERS)
    assert {a.text for a in both.layout.annotations} >= {"binned", "kde"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimator": "knn"}, r"Unknown estimator 'knn'. Available estimators"),
        ({"layers": ["fc9"]}, r"Unknown layer 'fc9'. Available layers: \['fc1'"),
        ({"runs": ["nope"]}, "Unknown run 'nope'"),
        ({"probe": "test"}, "Unknown probe 'test'"),
        ({"facet": "layer"}, "'facet' parameter of information_plane"),
        ({"log_epochs": "yes"}, "'log_epochs' parameter"),
        ({"spread": "iqr"}, "'spread' parameter"),
        ({"average_seeds": True, "facet": "run"}, "cannot be 'run'"),
    ],
    ids=["estimator", "layer", "run", "probe", "facet", "log", "spread", "avg-facet"],
)
def test_information_plane_rejects_bad_parameters(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        information_plane(fake_run(), **kwargs)


def test_information_plane_rejects_bad_input():
    with pytest.raises(InvalidParameterError, match="lacks the columns"):
        information_plane(pd.DataFrame({"epoch": [0], "layer": ["a"]}))
    with pytest.raises(InvalidParameterError, match="expects a Run"):
        information_plane(42)


def test_information_plane_overlays_runs_with_run_in_legend():
    runs = [fake_run(name="a", seed=0), fake_run(name="b", seed=1)]
    fig = information_plane(runs)
    traces = plane_traces(fig)
    assert len(traces) == 2 * len(LAYERS)
    assert fig.layout.showlegend
    legend = [t for t in traces if t.showlegend]
    assert [t.name for t in legend] == ["a", "b"]
    assert {t.legendgroup for t in traces} == {"a", "b"}
    assert traces[0].line.color != traces[-1].line.color
    # each layer named once, not once per run
    assert sorted(annotation_texts(fig)) == sorted(LAYERS)
    only_b = information_plane(runs, runs=["b"])
    assert len(plane_traces(only_b)) == len(LAYERS)


def test_information_plane_same_names_stay_apart():
    fig = information_plane([fake_run(name="seed"), fake_run(name="seed", seed=1)])
    assert {t.legendgroup for t in plane_traces(fig)} == {"seed", "seed-2"}


def test_information_plane_facets_by_run():
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(3)]
    fig = information_plane(runs, facet="run")
    traces = plane_traces(fig)
    assert len(traces) == 3 * len(LAYERS)
    assert len({t.xaxis for t in traces}) == 3
    assert {"s0", "s1", "s2"} <= set(annotation_texts(fig))


def test_information_plane_average_seeds_is_the_mean():
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(3)]
    fig = information_plane(runs, average_seeds=True, spread="std")
    traces = plane_traces(fig)
    assert len(traces) == len(LAYERS)
    frames = pd.concat([r.information for r in runs])
    expected = frames[frames.layer == "fc1"].groupby("epoch")[["i_xt", "i_ty"]]
    np.testing.assert_allclose(traces[0].x, expected.mean().i_xt)
    np.testing.assert_allclose(traces[0].y, expected.mean().i_ty)
    np.testing.assert_allclose(traces[0].error_x.array, expected.std().i_xt)
    assert "mean of 3 runs" in fig.layout.title.text
    assert all(int(c[3]) == 3 for c in traces[0].customdata)


def test_information_plane_average_with_missing_epochs():
    a = fake_run(name="a")
    b = fake_run(name="b", seed=1)
    b.information = b.information[b.information.epoch != LOG_EPOCHS[3]]
    fig = information_plane([a, b], average_seeds=True)
    trace = plane_traces(fig)[0]
    counts = {int(c[0]): int(c[3]) for c in trace.customdata}
    assert counts[LOG_EPOCHS[3]] == 1
    assert counts[LOG_EPOCHS[4]] == 2


def test_information_plane_escapes_names():
    evil = "<script>alert(1)</script>"
    run = fake_run(name=f"run {evil}", layers=("fc1", evil))
    fig = information_plane(run)
    text = fig.to_json()
    assert evil not in text
    assert html.escape(evil, quote=False) in annotation_texts(fig)


def test_information_plane_from_storage(tmp_path):
    storage = pytest.importorskip("ibmonitor.storage")
    frame = information_frame()
    with storage.RunWriter(
        tmp_path / "run", {"layers": {k: {"n_units": 4} for k in LAYERS}}
    ) as writer:
        writer.append_information(frame.to_dict("records"))
    fig = information_plane(tmp_path / "run")  # a path
    assert len(plane_traces(fig)) == len(LAYERS)
    runs = storage.load_runs([tmp_path / "run", tmp_path / "run"])
    assert len(plane_traces(information_plane(storage.load_run(tmp_path / "run")))) == 3
    assert len(plane_traces(information_plane(runs))) == 3  # one run, deduplicated


# --------------------------------------------------------------------- dashboard


def test_dashboard_panels_and_shared_log_epoch_axis():
    fig = dashboard(fake_run())
    plane = plane_traces(fig)
    assert len(plane) == len(LAYERS)
    assert fig.data[: len(LAYERS)] == tuple(plane)
    scalars = {t.meta["name"] for t in fig.data if t.meta.get("kind") == "scalar"}
    assert scalars == {
        "train_loss",
        "test_loss",
        "gap/loss",
        "train_acc",
        "test_acc",
        "gap/acc",
        "hessian/top_eigenvalue",
        "sharpness/worst_case",
        "norms/total/frobenius",
        "pac_bayes/bound",
    }
    right = [t for t in fig.data if t.meta.get("kind") == "scalar"]
    axes = {t.xaxis for t in right}
    assert len(axes) == 4
    assert panel_titles(fig) == ["Loss", "Accuracy", "Sharpness", "Norms"]
    layout = fig.layout
    for axis in axes:
        ax = layout["xaxis" + axis[1:]]
        assert ax.type == "log"
        assert ax.matches in (None, "x5") or ax.matches.startswith("x")
    # shared: all four right-hand x axes match one another
    matched = {layout["xaxis" + a[1:]].matches for a in axes}
    assert len(matched - {None}) == 1
    # epoch 0 is on the log axis at position 1, labelled "0"
    train = next(t for t in right if t.meta["name"] == "train_loss")
    assert train.x[0] == 1 and train.customdata[0] == 0
    assert "not recorded" not in annotation_texts(fig)


def test_dashboard_reads_gap_measure_names():
    scalars = scalars_frame(measures=False)
    scalars["name"] = (
        scalars["name"]
        .map({"train_loss": "gap/train_loss", "test_loss": "gap/test_loss"})
        .fillna(scalars["name"])
    )
    fig = dashboard(fake_run(scalars=scalars))
    names = {t.meta["name"] for t in fig.data if t.meta.get("kind") == "scalar"}
    assert {"gap/train_loss", "gap/test_loss", "gap/loss"} <= names
    assert annotation_texts(fig).count("not recorded") == 2  # sharpness, norms


def test_dashboard_missing_measures_say_not_recorded():
    empty = pd.DataFrame(columns=["epoch", "name", "value"])
    fig = dashboard(fake_run(scalars=empty))
    assert annotation_texts(fig).count("not recorded") == 4
    assert len(plane_traces(fig)) == len(LAYERS)
    frame_only = dashboard(information_frame())
    assert annotation_texts(frame_only).count("not recorded") == 4
    no_info = fake_run()
    no_info.information = information_frame().iloc[0:0]
    fig = dashboard(no_info)
    assert "information not recorded" in annotation_texts(fig)
    assert not plane_traces(fig)


def test_dashboard_linear_epochs_for_an_even_schedule():
    run = fake_run(schedule="every")
    run.information = information_frame(epochs=range(0, 1000, 50))
    fig = dashboard(run)
    right = [t for t in fig.data if t.meta.get("kind") == "scalar"]
    assert all(fig.layout["xaxis" + t.xaxis[1:]].type != "log" for t in right)
    assert right[0].x[0] == 0


def test_dashboard_panels_are_the_schemas():
    """Which panel draws a scalar is ibmonitor.schema.scalar_panel's answer."""
    fig = dashboard(fake_run(scalars=scalars_frame(saturation=LAYERS)))
    traces = scalar_traces(fig)
    assert traces
    for trace in traces:
        panel = schema.scalar_panel(trace.meta["name"]).panel
        assert trace.meta["panel"] == panel
        assert panel_of(fig, trace) == panel
    pac_bayes = next(t for t in traces if t.meta["name"] == "pac_bayes/bound")
    assert panel_of(fig, pac_bayes) == "Sharpness"
    assert "Norms and bounds" not in annotation_texts(fig)


def test_dashboard_saturation_panel_when_recorded():
    fig = dashboard(fake_run(scalars=scalars_frame(saturation=LAYERS)))
    assert panel_titles(fig) == [
        "Loss",
        "Accuracy",
        "Sharpness",
        "Norms",
        "Saturation",
    ]
    saturation = [t for t in scalar_traces(fig) if t.meta["panel"] == "Saturation"]
    assert [t.meta["name"] for t in saturation] == [
        f"saturation/{layer}" for layer in LAYERS
    ]
    # one shared epoch axis for all five panels
    axes = {t.xaxis for t in scalar_traces(fig)}
    assert len(axes) == 5
    matched = {fig.layout["xaxis" + a[1:]].matches for a in axes}
    assert len(matched - {None}) == 1
    assert fig.layout["yaxis" + saturation[0].yaxis[1:]].rangemode == "tozero"
    assert fig.layout.height > dashboard(fake_run()).layout.height
    # the epoch axis title sits under the lowest panel
    lowest = fig.layout["xaxis" + saturation[0].xaxis[1:]]
    assert lowest.title.text == "epoch (log scale)"
    # a probe other than the default is named in the scalar
    probe = scalars_frame(measures=False).iloc[:0]
    probe = pd.concat(
        [
            probe,
            pd.DataFrame(
                {"epoch": [0, 50], "name": "saturation/test/fc1", "value": [0.1, 0.2]}
            ),
        ]
    )
    fig = dashboard(fake_run(scalars=probe))
    assert panel_titles(fig)[-1] == "Saturation"
    # no saturation scalar: no panel
    assert "Saturation" not in panel_titles(dashboard(fake_run()))


def test_dashboard_draws_other_loss_names_but_not_other_scalars():
    scalars = scalars_frame(measures=False)
    extra = pd.DataFrame(
        {
            "epoch": [0, 50] * 3,
            "name": ["gap/test_loss"] * 2 + ["aux_loss"] * 2 + ["lr"] * 2,
            "value": [0.5, 0.4, 0.3, 0.2, 0.1, 0.1],
        }
    )
    fig = dashboard(fake_run(scalars=pd.concat([scalars, extra])))
    names = {t.meta["name"]: t for t in scalar_traces(fig)}
    assert names["aux_loss"].line.dash == "dot"
    assert panel_of(fig, names["aux_loss"]) == "Loss"
    assert "gap/test_loss" not in names  # a copy of test_loss
    assert "lr" not in names  # the "Other" panel is not on the dashboard


def test_dashboard_norms_per_layer_only_without_total_norms():
    scalars = pd.DataFrame(
        {
            "epoch": [0, 1, 0, 1],
            "name": ["norms/fc1/frobenius"] * 2 + ["norms/fc2/frobenius"] * 2,
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    )
    fig = dashboard(fake_run(scalars=scalars))
    assert {t.meta["name"] for t in scalar_traces(fig)} == {
        "norms/fc1/frobenius",
        "norms/fc2/frobenius",
    }


def test_log_epochs_follow_the_schedule_a_monitor_writes():
    """run.json["schedule"]["kind"] as ibmonitor.schedules writes it decides."""
    from ibmonitor.schedules import make_schedule

    for spec, log in (("log", True), ("all", False), (5, False)):
        run = fake_run()
        run.config["schedule"] = dict(make_schedule(spec, TOTAL_EPOCHS).config)
        assert schema.schedule_is_log(run.config) is log
        fig = information_plane(run)
        assert (fig.layout.coloraxis.colorbar.ticktext is not None) is log
    # a schedule of no known kind: the spacing of the recorded epochs decides
    run = fake_run()
    run.config["schedule"] = {"kind": "callable", "name": "mine"}
    assert information_plane(run).layout.coloraxis.colorbar.ticktext is not None


def test_dashboard_rejects_several_runs():
    with pytest.raises(InvalidParameterError, match="dashboard draws one run"):
        dashboard([fake_run(name="a"), fake_run(name="b")])


# ------------------------------------------------------------- combined figures


def test_combine_figures_shares_plane_ranges_and_one_colour_axis():
    short = fake_run(name="short")
    short.information = information_frame(epochs=LOG_EPOCHS[:8])
    long = fake_run(name="long", seed=1)
    long.information["i_xt"] += 3.0
    left, right = information_plane(short), information_plane(long)
    n_left = len(left.data)
    fig = combine_figures([left, right], ["short", "long"], title="two runs")
    assert len(fig.data) == len(left.data) + len(right.data)
    assert [a.text for a in fig.layout.annotations][:2] == ["short", "long"]
    assert fig.layout.title.text == "two runs"
    # shared ranges: both panels cover both runs' trajectories
    xs = [v for t in fig.data for v in t.x]
    assert fig.layout.xaxis.range == fig.layout.xaxis2.range
    assert fig.layout.yaxis.range == fig.layout.yaxis2.range
    assert fig.layout.xaxis.range[0] < min(xs) and fig.layout.xaxis.range[1] > max(xs)
    # the colour axis spans the longer run's epochs
    assert fig.layout.coloraxis.cmax == right.layout.coloraxis.cmax
    assert fig.layout.coloraxis.cmax > left.layout.coloraxis.cmax
    # the plane's titles: x on each panel, y on the first column only
    assert fig.layout.xaxis2.title.text == X_TITLE
    assert fig.layout.yaxis.title.text == Y_TITLE
    assert fig.layout.yaxis2.title.text is None
    # the source figures are left as they were
    assert len(left.data) == n_left
    assert left.layout.xaxis.range is None


def test_combine_figures_rows_and_own_ranges():
    planes = [information_plane(fake_run(name=f"s{i}", seed=i)) for i in range(4)]
    for i, plane in enumerate(planes):
        for trace in plane.data:
            trace.x = np.asarray(trace.x) + 5 * i
    by_row = combine_figures(
        planes, ["a", "b", "c", "d"], title="t", cols=2, shared_plane_axes="row"
    )
    layout = by_row.layout
    assert layout.xaxis.range == layout.xaxis2.range
    assert layout.xaxis3.range == layout.xaxis4.range
    assert layout.xaxis.range != layout.xaxis3.range
    own = combine_figures(planes, list("abcd"), title="t", shared_plane_axes=None)
    assert own.layout.xaxis.range is None


def test_combine_figures_flat_planes_get_a_minimum_span():
    frame = pd.DataFrame(
        {"epoch": [0, 1], "layer": ["a", "a"], "i_xt": [12.0, 12.0], "i_ty": [0.9, 0.9]}
    )
    fig = combine_figures([information_plane(frame)], ["flat"], title="flat")
    x0, x1 = fig.layout.xaxis.range
    y0, y1 = fig.layout.yaxis.range
    assert x1 - x0 >= MIN_PLANE_SPAN[0] and y1 - y0 >= MIN_PLANE_SPAN[1]
    assert x0 < 12.0 < x1


def test_combine_figures_mixes_planes_and_line_figures():
    scalars = scalars_frame(measures=False).assign(run="demo")
    curve = line_figure(
        scalars[scalars.name.isin(["train_loss", "test_loss"])],
        x="epoch",
        y="value",
        color="name",
        xtitle="epoch",
        ytitle="loss",
        log_x=True,
    )
    twin = line_figure(
        scalars[scalars.name == "train_loss"],
        x="epoch",
        y="value",
        color="name",
        xtitle="epoch",
        ytitle="loss",
    )
    fig = combine_figures(
        [information_plane(fake_run()), curve, twin],
        ["plane", "loss", "again"],
        title="mixed",
    )
    assert fig.layout.xaxis2.type == "log"
    assert fig.layout.yaxis2.title.text == "loss"  # not a plane: its y title kept
    assert fig.layout.xaxis2.range is None  # only planes share ranges
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend.count("train_loss") == 1  # one legend entry per name


def test_combine_figures_rejects_bad_arguments():
    plane = information_plane(information_frame())
    with pytest.raises(InvalidParameterError, match="one title per figure"):
        combine_figures([plane], ["a", "b"], title="t")
    with pytest.raises(InvalidParameterError, match="at least one figure"):
        combine_figures([], [], title="t")
    with pytest.raises(InvalidParameterError, match="'shared_plane_axes' parameter"):
        combine_figures([plane], ["a"], title="t", shared_plane_axes="col")


def test_line_figure_one_line_per_group():
    frame = pd.DataFrame(
        {
            "epoch": [0, 10, 0, 10, 0, 10, 0, 10],
            "regime": ["small"] * 4 + ["large"] * 4,
            "seed": ["seed 0", "seed 0", "seed 1", "seed 1"] * 2,
            "value": [1.0, 0.5, 1.1, 0.6, 1.0, 0.8, 1.2, 0.9],
        }
    )
    fig = line_figure(
        frame,
        x="epoch",
        y="value",
        color="regime",
        dash="seed",
        xtitle="epoch",
        ytitle="loss",
        log_x=True,
        log_y=True,
    )
    assert [t.name for t in fig.data] == [
        "small · seed 0",
        "small · seed 1",
        "large · seed 0",
        "large · seed 1",
    ]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert fig.data[0].line.dash == fig.data[2].line.dash != fig.data[1].line.dash
    # epoch 0 on a log axis: every x shifted by one, and the title says so
    assert list(fig.data[0].x) == [1.0, 11.0]
    assert fig.layout.xaxis.title.text == "epoch (log scale, +1)"
    assert (fig.layout.xaxis.type, fig.layout.yaxis.type) == ("log", "log")
    linear = line_figure(
        frame, x="epoch", y="value", color="regime", xtitle="epoch", ytitle="loss"
    )
    assert list(linear.data[0].x) == [0.0, 0.0, 10.0, 10.0]
    assert linear.layout.xaxis.title.text == "epoch"


def test_line_figure_escapes_names_and_checks_columns():
    evil = "<b>x</b>"
    frame = pd.DataFrame({"epoch": [0, 1], "name": [evil, evil], "value": [1, 2]})
    fig = line_figure(
        frame, x="epoch", y="value", color="name", xtitle="epoch", ytitle="v"
    )
    assert evil not in fig.to_json()
    with pytest.raises(InvalidParameterError, match=r"lacks the columns \['run'\]"):
        line_figure(frame, x="epoch", y="value", color="run", xtitle="e", ytitle="v")


# ------------------------------------------------------------------ static export


def test_find_browser_order(monkeypatch, tmp_path):
    exe = tmp_path / "my-chrome"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(exe))
    assert _browser.find_browser() == str(exe)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setattr(_browser, "DEBIAN_CHROMIUM", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _browser.find_browser() is None
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    assert _browser.find_browser() == str(tmp_path / "chromium")


def test_write_image_without_browser_says_how_to_get_one(monkeypatch, tmp_path):
    pytest.importorskip("kaleido")
    monkeypatch.setattr(_browser, "find_browser", lambda: None)
    with pytest.raises(FileNotFoundError, match="install the 'chromium' system"):
        write_image(information_plane(information_frame()), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_write_image_rejects_unknown_format(tmp_path):
    with pytest.raises(InvalidParameterError, match="'format' parameter"):
        write_image(go.Figure(), tmp_path / "a.gif")


def _require_browser():
    path = _browser.find_browser()
    if path is None:
        if os.environ.get("IBMONITOR_REQUIRE_BROWSER") == "1":
            pytest.fail("IBMONITOR_REQUIRE_BROWSER=1 but no Chrome/Chromium found")
        pytest.skip("no Chrome or Chromium found (set BROWSER_PATH)")
    pytest.importorskip("kaleido")
    return path


@pytest.mark.browser
def test_write_image_png_for_real(tmp_path):
    _require_browser()
    fig = information_plane(fake_run())
    path = write_image(fig, tmp_path / "plane.png", width=640, height=400)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (640, 400)
    assert len(data) > 10_000  # a real plot, not a blank canvas


# ------------------------------------------- pinned estimates and wide layers
# Non-regression tests for the issue "Any PyTorch model ... with planes that
# mean something", point 5: 42 resnet18 layers pinned at (9.0, 3.31) were
# drawn zoomed onto a 0.008-bit spread with 42 labels on top of each other.


def pinned_frame(n_layers=42, epochs=(0, 1, 2, 5, 10)):
    """n_layers layers all at (log2 512, H(Y)) within a few thousandths of a bit."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n_layers):
        for epoch in epochs:
            rows.append(
                {
                    "epoch": epoch,
                    "layer": f"layer{k}",
                    "estimator": "binned",
                    "i_xt": 9.0 - 0.004 * rng.random(),
                    "i_ty": 3.31 + 0.004 * rng.random(),
                    "pinned": 1.0,
                    "resolution": 0.72,
                }
            )
    return pd.DataFrame(rows)


def _label_positions(fig):
    """Each label's (x, y) in bits and its pixel offset from that point."""
    out = []
    for note in fig.layout.annotations:
        if note.showarrow:
            out.append((note.x, note.y, note.ax or 0, -(note.ay or 0)))
        else:
            out.append((note.x, note.y, note.xshift or 0, note.yshift or 0))
    return out


def test_information_plane_draws_pinned_points_hollow_with_a_legend_entry():
    frame = information_frame()
    frame["pinned"] = (frame["layer"] == "fc1").astype(float)
    fig = information_plane(frame)
    traces = {t.meta["layer"]: t for t in plane_traces(fig)}
    assert set(traces["fc1"].marker.symbol) == {"circle-open"}
    assert max(traces["fc1"].marker.opacity) < 1
    assert "pinned" in traces["fc1"].customdata[0][4]
    assert traces["fc2"].marker.symbol is None  # unpinned layers unchanged
    assert traces["fc2"].customdata[0][4] == ""
    legend = [t for t in fig.data if (t.meta or {}).get("kind") == "pinned_legend"]
    assert len(legend) == 1 and legend[0].showlegend
    assert "pinned" in legend[0].name and fig.layout.showlegend


def test_information_plane_without_pinned_column_has_no_pinned_legend():
    fig = information_plane(information_frame())
    assert not any((t.meta or {}).get("kind") == "pinned_legend" for t in fig.data)


def test_information_plane_never_stretches_a_spread_below_the_resolution():
    fig = information_plane(pinned_frame())
    x0, x1 = fig.layout.xaxis.range
    y0, y1 = fig.layout.yaxis.range
    # resolution 0.72 bit > MIN_PLANE_SPAN: neither axis spans less
    assert x1 - x0 >= 0.72 and y1 - y0 >= 0.72
    assert x0 < 8.996 and x1 > 9.0 and y0 < 3.31 < 3.314 < y1


def test_information_plane_minimum_span_without_resolution():
    frame = pinned_frame(n_layers=2).drop(columns=["resolution"])
    fig = information_plane(frame)
    x0, x1 = fig.layout.xaxis.range
    y0, y1 = fig.layout.yaxis.range
    assert x1 - x0 >= MIN_PLANE_SPAN[0] and y1 - y0 >= MIN_PLANE_SPAN[1]
    wide = information_plane(information_frame())  # spans > minimum: autorange
    assert wide.layout.xaxis.range is None


def test_information_plane_42_labels_at_one_point_do_not_overlap():
    fig = information_plane(pinned_frame(42))
    positions = _label_positions(fig)
    assert len(set(positions)) == len(positions)
    texts = [a.text for a in fig.layout.annotations]
    # 42 coinciding ends: one label saying how many, the names on hover
    assert len(texts) == 1 and texts[0].startswith("42 layers")
    assert "layer41" in fig.layout.annotations[0].hovertext


def test_information_plane_stacks_a_few_coinciding_labels():
    frame = pinned_frame(5)
    frame.loc[frame.epoch == 10, ["i_xt", "i_ty"]] = (9.0, 3.31)  # one end point
    fig = information_plane(frame)
    positions = _label_positions(fig)
    assert sorted(a.text for a in fig.layout.annotations) == [
        f"layer{k}" for k in range(5)
    ]
    offsets = sorted(dy for *_, dy in positions)
    # one label line (14 px) apart, all at the same point in bits
    assert all(b - a >= 13.9 for a, b in zip(offsets, offsets[1:]))


def test_place_labels_separates_every_pair_of_nearby_labels():
    rng = np.random.default_rng(3)
    ends = [
        {"x": float(x), "y": float(y), "text": f"l{i}"}
        for i, (x, y) in enumerate(rng.random((30, 2)) * [2.0, 1.0])
    ]
    axes = ((0.0, 2.0, False), (0.0, 1.0, False))
    notes = place_labels(ends, axes, (500, 350))
    boxes = []
    for note in notes:
        px, py = note["x"] * 250, note["y"] * 350
        dy = -note["ay"] if note.get("showarrow") else note["yshift"]
        boxes.append((px, py + dy))
    for i in range(len(boxes)):
        for j in range(i):
            (xi, yi), (xj, yj) = boxes[i], boxes[j]
            assert abs(xi - xj) >= 110 or abs(yi - yj) >= 13.9


def test_plane_min_spans_reads_the_resolution():
    assert plane_min_spans(pd.DataFrame({"i_xt": [1.0]})) == MIN_PLANE_SPAN
    frame = pd.DataFrame({"resolution": [0.2, 2.0, np.nan]})
    assert plane_min_spans(frame) == (2.0, 2.0)


# ------------------------------------------- intervals, baselines, aggregation
# (issue 12: uncertainty and baselines on every estimate)


def with_intervals(frame, *, half=0.2, floor=0.3, ceiling=10.0):
    """Add what estimators give with bootstrap= and baseline= (bits)."""
    out = frame.copy()
    out["i_xt_low"], out["i_xt_high"] = out.i_xt - half, out.i_xt + 2 * half
    out["i_ty_low"], out["i_ty_high"] = out.i_ty - half / 4, out.i_ty + half / 2
    out["i_ty_baseline"] = floor
    out["i_xt_ceiling"] = ceiling
    return out


def kinds(fig):
    return [(t.meta or {}).get("kind") for t in fig.data]


def test_information_plane_draws_intervals_as_error_bars_on_both_axes():
    frame = with_intervals(information_frame())
    fig = information_plane(frame)
    trace = plane_traces(fig)[0]
    rows = frame[frame.layer == "fc1"].sort_values("epoch")
    np.testing.assert_allclose(trace.error_x.array, np.full(len(rows), 0.4))
    np.testing.assert_allclose(trace.error_x.arrayminus, np.full(len(rows), 0.2))
    np.testing.assert_allclose(trace.error_y.array, np.full(len(rows), 0.1))
    np.testing.assert_allclose(trace.error_y.arrayminus, np.full(len(rows), 0.05))
    assert "I(X;T) interval: [" in trace.customdata[0][5]
    assert "I(T;Y) floor (labels permuted): 0.3000" in trace.customdata[0][5]
    assert information_plane(frame, intervals=False).data[0].error_x.array is None


def test_information_plane_has_no_bars_or_lines_without_the_columns():
    fig = information_plane(information_frame())
    assert all(t.error_x.array is None and t.error_y.array is None for t in fig.data)
    assert "baseline" not in kinds(fig) and "ceiling" not in kinds(fig)
    assert "band" not in kinds(information_curves(information_frame()))


def test_information_plane_reference_lines_where_they_fall_in_range():
    frame = with_intervals(information_frame(), floor=0.3, ceiling=10.0)
    fig = information_plane(frame)
    (floor,) = [t for t in fig.data if (t.meta or {}).get("kind") == "baseline"]
    (ceiling,) = [t for t in fig.data if (t.meta or {}).get("kind") == "ceiling"]
    assert list(floor.y) == pytest.approx([0.3, 0.3])  # horizontal, mean floor
    assert list(ceiling.x) == [10.0, 10.0]  # vertical, at log2 n
    # spanning the data's ranges, so that they never stretch an axis
    assert floor.x[0] == pytest.approx(frame.i_xt.min())
    assert floor.x[1] == pytest.approx(frame.i_xt.max())
    assert floor.showlegend and fig.layout.showlegend
    # out of range: not drawn (a ceiling of 20 bits beside trajectories below 10)
    far = with_intervals(information_frame(), floor=5.0, ceiling=20.0)
    assert {"baseline", "ceiling"}.isdisjoint(kinds(information_plane(far)))
    assert {"baseline", "ceiling"}.isdisjoint(
        kinds(information_plane(frame, references=False))
    )
    # the floor is the mean of the panel's floors
    varied = frame.assign(i_ty_baseline=np.linspace(0.2, 0.4, len(frame)))
    (line,) = [
        t for t in information_plane(varied).data if t.meta["kind"] == "baseline"
    ]
    assert line.y[0] == pytest.approx(0.3)


def test_dashboard_draws_intervals_and_reference_lines():
    run = fake_run()
    run.information = with_intervals(run.information)
    fig = dashboard(run)
    assert plane_traces(fig)[0].error_x.array is not None
    assert {"baseline", "ceiling"} <= set(kinds(fig))


def test_information_plane_median_of_seeds_with_the_interquartile_range():
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(5)]
    fig = information_plane(runs, aggregate="median")
    traces = plane_traces(fig)
    assert len(traces) == len(LAYERS)
    frames = pd.concat([r.information for r in runs])
    by_epoch = frames[frames.layer == "fc1"].groupby("epoch").i_xt
    median = by_epoch.median().to_numpy()
    np.testing.assert_allclose(traces[0].x, median)
    np.testing.assert_allclose(
        traces[0].error_x.array, by_epoch.quantile(0.75) - median
    )
    np.testing.assert_allclose(
        traces[0].error_x.arrayminus, median - by_epoch.quantile(0.25)
    )
    assert "median of 5 runs" in fig.layout.title.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"aggregate": "median", "spread": "std"}, "must be 'iqr' or None"),
        ({"aggregate": "mean", "spread": "iqr"}, "'iqr' only with aggregate='median'"),
        ({"aggregate": "mode"}, "'aggregate' parameter"),
        ({"aggregate": "median", "facet": "run"}, "cannot be 'run'"),
    ],
)
def test_information_plane_rejects_bad_aggregation(kwargs, match):
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(2)]
    with pytest.raises(InvalidParameterError, match=match):
        information_plane(runs, **kwargs)


def test_information_plane_mean_aggregate_is_average_seeds():
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(3)]
    a = information_plane(runs, average_seeds=True, spread="sem")
    b = information_plane(runs, aggregate="mean", spread="sem")
    for ta, tb in zip(plane_traces(a), plane_traces(b)):
        np.testing.assert_allclose(ta.x, tb.x)
        np.testing.assert_allclose(ta.error_y.array, tb.error_y.array)
    frames = pd.concat([r.information for r in runs])
    sem = frames[frames.layer == "fc1"].groupby("epoch").i_ty.sem().to_numpy()
    np.testing.assert_allclose(plane_traces(a)[0].error_y.array, sem)


def test_information_curves_lines_bands_and_references():
    frame = with_intervals(information_frame(epochs=[0, 1, 2, 5, 10]), ceiling=10.0)
    fig = information_curves(frame, log_epochs=False)
    curves = [t for t in fig.data if t.meta["kind"] == "information_curve"]
    assert len(curves) == 2 * len(LAYERS)
    assert [t.meta["quantity"] for t in curves[: len(LAYERS)]] == ["i_xt"] * 3
    fc1 = [t for t in curves if t.meta["layer"] == "fc1"]
    rows = frame[frame.layer == "fc1"].sort_values("epoch")
    np.testing.assert_allclose(fc1[0].x, rows.epoch)
    np.testing.assert_allclose(fc1[1].y, rows.i_ty)
    bands = [t for t in fig.data if t.meta["kind"] == "band"]
    assert len(bands) == 2 * len(LAYERS)
    band = next(
        t
        for t in bands
        if t.meta == {"kind": "band", "quantity": "i_ty", "layer": "fc1"}
    )
    # a closed polygon: the highs forward, the lows backward
    np.testing.assert_allclose(band.y[:5], rows.i_ty_high)
    np.testing.assert_allclose(band.y[5:], rows.i_ty_low[::-1])
    floors = [t for t in fig.data if t.meta["kind"] == "baseline"]
    assert len(floors) == len(LAYERS) and all(list(t.y) == [0.3] * 5 for t in floors)
    # the ceiling at 10 bits is within reach of fc1's I(X;T) (up to ~10)
    assert kinds(fig).count("ceiling") == 1
    # the same colour per layer in the band, the line and the floor
    assert fc1[0].line.color == floors[0].line.color
    assert (
        information_curves(frame, intervals=False, references=False)
        .data[-1]
        .meta["kind"]
        == "information_curve"
    )


def test_information_curves_median_band_and_selection():
    runs = [fake_run(name=f"s{i}", seed=i) for i in range(4)]
    fig = information_curves(
        runs, quantities="i_xt", aggregate="median", layers=["fc2"]
    )
    (curve,) = [t for t in fig.data if t.meta["kind"] == "information_curve"]
    (band,) = [t for t in fig.data if t.meta["kind"] == "band"]
    frames = pd.concat([r.information for r in runs])
    by_epoch = frames[frames.layer == "fc2"].groupby("epoch").i_xt
    np.testing.assert_allclose(curve.y, by_epoch.median())
    n = len(curve.y)
    np.testing.assert_allclose(band.y[:n], by_epoch.quantile(0.75))
    np.testing.assert_allclose(band.y[n:], by_epoch.quantile(0.25)[::-1])
    assert "median of 4 runs" in fig.layout.title.text
    # overlaid runs: one dash style per run
    fig = information_curves(runs[:2], quantities=["i_ty"], layers=["fc1"])
    assert [t.line.dash for t in fig.data] == ["solid", "dash"]


def test_information_curves_keep_rows_with_one_quantity_missing():
    """kNN without inputs records I(X;T) as NaN: its I(T;Y) is still drawn."""
    frame = information_frame(layers=("fc1",), epochs=[0, 1, 2])
    frame["i_xt"] = np.nan
    fig = information_curves(frame)
    (curve,) = [t for t in fig.data if t.meta["kind"] == "information_curve"]
    assert curve.meta["quantity"] == "i_ty" and len(curve.y) == 3
    assert "not recorded" in annotation_texts(fig)


def test_information_curves_rejects_bad_parameters():
    frame = information_frame()
    with pytest.raises(InvalidParameterError, match="'quantities' parameter"):
        information_curves(frame, quantities=["h_t"])
    with pytest.raises(InvalidParameterError, match="is empty"):
        information_curves(frame, quantities=[])
    with pytest.raises(InvalidParameterError, match="Unknown layer"):
        information_curves(frame, layers=["fc9"])


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_intervals_from_a_monitored_run_reach_the_plots(tmp_path, tiny_mlp):
    """End to end: estimators with bootstrap= and baseline= in a monitor, the
    store, then the plane and the curves draw bars, bands and lines."""
    import ibmonitor
    from ibmonitor.monitor import InformationMonitor
    from ibmonitor.sinks import RunStore

    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators={"binned": {"n_bins": 4, "bootstrap": 10, "baseline": 2}},
        schedule=[0, 1],
        logdir=tmp_path / "r",
        sinks=[RunStore()],
        overhead_budget=None,
    ) as monitor:
        monitor.on_epoch_end(0)
        monitor.on_epoch_end(1)
    run = ibmonitor.load_run(tmp_path / "r")
    plane = information_plane(run)
    assert all(t.error_y.array is not None for t in plane_traces(plane))
    curves = information_curves(run)
    assert "band" in kinds(curves) and "baseline" in kinds(curves)
