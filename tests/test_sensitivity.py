"""Tests of analysis.sensitivity, sensitivity_summary and the sensitivity figure.

Issue 12, item 3: re-estimate a saved run over a grid of estimator parameters
and say whether its fitting and compression phases survive the choice.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ibmonitor import estimators
from ibmonitor.analysis import compression_table, sensitivity, sensitivity_summary
from ibmonitor.estimators import input_ids
from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.storage import RunWriter, load_run

N = 16
IDX = np.arange(N)
LABELS = IDX % 2


def exact_activations(epoch):
    """Layers whose binned I(X;T), I(T;Y) are known exactly (see the test)."""
    a = {0: 4.0 * (IDX // 2), 1: 4.0 * IDX, 2: 4.0 * (IDX % 2)}[epoch]
    b = {0: 0.5 * IDX, 1: 1.0 * IDX, 2: 2.0 * (IDX // 2)}[epoch]
    # Powers of two and small integers: exact in float32 and after / bin_size.
    return {
        "a": a.astype(np.float32)[:, None],
        "b": b.astype(np.float32)[:, None],
    }


def make_exact_run(path):
    x = ((IDX[:, None] >> np.arange(4)) & 1).astype(np.float32)  # 16 distinct inputs
    with RunWriter(path, {"layers": {"a": {}, "b": {}}}) as writer:
        for epoch in range(3):
            writer.save_activations(
                epoch,
                {"default": exact_activations(epoch)},
                labels={"default": LABELS},
                inputs={"default": x},
            )
    return path


def make_random_run(path, *, activations=True, probes=("default",)):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(32, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    with RunWriter(path, {"layers": {"fc1": {}, "fc2": {}}}) as writer:
        for epoch in (0, 3, 7):
            writer.append_scalars(epoch, {"train_loss": 1.0 / (epoch + 1)})
            if activations:
                w1, w2 = rng.normal(size=(5, 4)), rng.normal(size=(4, 2))
                h = np.tanh(x @ w1 * (1 + epoch))
                writer.save_activations(
                    epoch,
                    {
                        p: {"fc1": h, "fc2": np.tanh(h @ w2) * (k + 1)}
                        for k, p in enumerate(probes)
                    },
                    labels=dict.fromkeys(probes, y),
                    inputs=dict.fromkeys(probes, x),
                )
    return path


def direct(run, epoch, layer, probe="default", **params):
    """The slow reference: the estimator called on the stored arrays."""
    return estimators.get("binned", **params)(
        run.activations(epoch)[probe][layer],
        run.labels(epoch)[probe],
        x=input_ids(run.inputs(epoch)[probe]),
    )


def snapshot(path):
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# -- sensitivity ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_exact_values_and_verdicts(tmp_path):
    """Closed-form plug-in values for bin sizes 0.25 and 2.

    Layer a: I(X;T) = 3, 4, 1 bits and I(T;Y) = 0, 1, 1 at both bin sizes
    (values 4 apart); it fits by 1 bit and compresses by 3 bits at both.
    Layer b at bin size 0.25 keeps every sample apart, then pairs them:
    I(X;T) = 4, 4, 3 (compression 1); at bin size 2 it groups 4, 2, 2 samples:
    I(X;T) = 2, 3, 3 (no compression) and I(T;Y) = 0 (every group holds both
    labels). So a's phases survive the grid and b's compression depends on it.
    """
    path = make_exact_run(tmp_path / "r")
    table = sensitivity(path, "binned", {"bin_size": [0.25, 2.0]})
    assert list(table.columns[:6]) == [
        "layer",
        "probe",
        "epoch",
        "bin_size",
        "i_xt",
        "i_ty",
    ]
    assert table.attrs["grid"] == ["bin_size"] and table.attrs["estimator"] == "binned"
    got = table.set_index(["layer", "bin_size", "epoch"])[["i_xt", "i_ty"]]
    expected = {
        ("a", 0.25): ([3, 4, 1], [0, 1, 1]),
        ("a", 2.0): ([3, 4, 1], [0, 1, 1]),
        ("b", 0.25): ([4, 4, 3], [1, 1, 0]),
        ("b", 2.0): ([2, 3, 3], [0, 0, 0]),
    }
    for (layer, size), (i_xt, i_ty) in expected.items():
        for epoch in range(3):
            row = got.loc[(layer, size, epoch)]
            assert row.i_xt == pytest.approx(i_xt[epoch], abs=1e-12)
            assert row.i_ty == pytest.approx(i_ty[epoch], abs=1e-12)
    # Rows sorted by layer, grid point, then epoch.
    assert table.layer.tolist() == ["a"] * 6 + ["b"] * 6
    assert table.bin_size.tolist()[:6] == [0.25] * 3 + [2.0] * 3
    assert table.epoch.tolist()[:3] == [0, 1, 2]

    summary = sensitivity_summary(table).set_index(["layer", "bin_size"])
    a = summary.loc[("a", 0.25)]
    assert a.epoch_max_i_xt == 1 and a.final_epoch == 2
    assert a.compression_bits == pytest.approx(3.0)
    assert a.fitting_bits == pytest.approx(1.0)
    assert a.i_ty_gain == pytest.approx(1.0)
    assert bool(a.compresses) and bool(a.fits)
    assert set(summary.loc["a"].compression_verdict) == {"survives"}
    assert set(summary.loc["a"].fitting_verdict) == {"survives"}
    b_fine, b_coarse = summary.loc[("b", 0.25)], summary.loc[("b", 2.0)]
    assert b_fine.compression_bits == pytest.approx(1.0)
    assert b_fine.epoch_max_i_xt == 0  # the first epoch reaching the maximum
    assert b_coarse.compression_bits == pytest.approx(0.0)
    assert b_coarse.epoch_max_i_xt == 1
    assert bool(b_fine.compresses) and not bool(b_coarse.compresses)
    assert set(summary.loc["b"].compression_verdict) == {"depends"}
    assert set(summary.loc["b"].fitting_verdict) == {"absent"}
    # 16 samples in 16 bins (4 bits) is the estimator's ceiling: pinned.
    assert summary.pinned_epochs.to_dict() == {
        ("a", 0.25): 1,
        ("a", 2.0): 1,
        ("b", 0.25): 2,
        ("b", 2.0): 0,
    }


def test_sensitivity_summary_agrees_with_compression_table(tmp_path):
    path = make_random_run(tmp_path / "r")
    table = sensitivity(path, "binned", {"n_bins": [3, 6]})
    summary = sensitivity_summary(table)
    for n_bins, rows in table.groupby("n_bins"):
        ref = compression_table(rows.assign(estimator="binned")).set_index("layer")
        mine = summary[summary.n_bins == n_bins].set_index("layer")
        for col in ("epoch_max_i_xt", "i_xt_max", "i_xt_final", "compression_bits"):
            assert mine[col].to_dict() == pytest.approx(ref[col].to_dict())


def test_sensitivity_matches_direct_estimator_calls(tmp_path):
    path = make_random_run(tmp_path / "r")
    run = load_run(path)
    table = sensitivity(path, "binned", {"n_bins": [3, 10]})
    assert len(table) == 2 * 3 * 2  # layers x epochs x grid values
    for row in table.itertuples():
        ref = direct(run, row.epoch, row.layer, n_bins=row.n_bins)
        assert row.i_xt == pytest.approx(ref.i_xt, abs=1e-12)
        assert row.i_ty == pytest.approx(ref.i_ty, abs=1e-12)
        assert row.estimator == f"binned(n_bins={row.n_bins})"
    assert table.n_bins.dtype == np.int64


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_product_grid_and_fixed_params(tmp_path):
    path = make_random_run(tmp_path / "r")
    run = load_run(path)
    table = sensitivity(
        path,
        "binned",
        {"n_bins": [4, 8], "miller_madow": [False, True]},
        params={"value_range": (-1.0, 1.0)},
    )
    points = table[["n_bins", "miller_madow"]].drop_duplicates()
    assert points.values.tolist() == [[4, False], [4, True], [8, False], [8, True]]
    assert len(table) == 2 * 3 * 4
    assert table.attrs["params"] == {"value_range": [-1.0, 1.0]}
    for row in table.itertuples():
        ref = direct(
            run,
            row.epoch,
            row.layer,
            n_bins=row.n_bins,
            miller_madow=row.miller_madow,
            value_range=(-1.0, 1.0),
        )
        assert row.i_xt == pytest.approx(ref.i_xt, abs=1e-12)
    summary = sensitivity_summary(table)
    assert len(summary) == 2 * 4
    assert list(summary.columns[:4]) == ["layer", "probe", "n_bins", "miller_madow"]


def test_sensitivity_kde_noise_variance_grid(tmp_path):
    path = make_random_run(tmp_path / "r")
    run = load_run(path)
    table = sensitivity(path, "kde", {"noise_variance": [0.01, 0.1]}, layers=["fc2"])
    assert table.noise_variance.dtype == np.float64
    for row in table.itertuples():
        ref = estimators.get("kde", noise_variance=row.noise_variance)(
            run.activations(row.epoch)["default"]["fc2"],
            run.labels(row.epoch)["default"],
        )
        assert row.i_xt == pytest.approx(ref.i_xt, rel=1e-12)
    # More noise hides more of the layer: I(X;T) falls with the variance.
    wide = table.pivot(index="epoch", columns="noise_variance", values="i_xt")
    assert (wide[0.01] > wide[0.1]).all()


def test_sensitivity_writes_nothing_into_the_run(tmp_path):
    path = make_random_run(tmp_path / "r")
    before = snapshot(path)
    sensitivity(path, "binned", {"n_bins": [3, 5]})
    assert snapshot(path) == before


def test_sensitivity_restricts_epochs_probes_and_layers(tmp_path):
    path = make_random_run(tmp_path / "r", probes=("default", "test"))
    table = sensitivity(
        path, "binned", {"n_bins": [4]}, epochs=[3, 7], probes=["test"], layers=["fc2"]
    )
    assert set(table.epoch) == {3, 7}
    assert set(table.probe) == {"test"} and set(table.layer) == {"fc2"}
    both = sensitivity(path, "binned", {"n_bins": [4]})
    assert list(dict.fromkeys(both.probe)) == ["default", "test"]
    run = load_run(path)
    row = table.iloc[0]
    ref = direct(run, row.epoch, "fc2", probe="test", n_bins=4)
    assert row.i_xt == pytest.approx(ref.i_xt, abs=1e-12)
    with pytest.raises(InvalidParameterError, match=r"no stored layer \['fc9'\]"):
        sensitivity(path, "binned", {"n_bins": [4]}, layers=["fc9"])
    with pytest.raises(
        InvalidParameterError, match=r"no stored activations at epochs \[5\]"
    ):
        sensitivity(path, "binned", {"n_bins": [4]}, epochs=[5])


def test_sensitivity_without_stored_activations_names_the_run(tmp_path):
    path = make_random_run(tmp_path / "plain", activations=False)
    with pytest.raises(InvalidParameterError) as err:
        sensitivity(path, "binned", {"n_bins": [10]})
    message = str(err.value)
    assert "'plain'" in message
    assert "RunStore(store_activations=True)" in message


@pytest.mark.parametrize(
    ("grid", "params", "match"),
    [
        ({}, None, "non-empty dict"),
        ([("n_bins", [10])], None, "non-empty dict"),
        ({"n_bins": 10}, None, "must be a list of values"),
        ({"n_bins": "10,30"}, None, "must be a list of values"),
        ({"n_bins": []}, None, "are empty"),
        ({"n_bins": [10, 10]}, None, r"repeat \['10'\]"),
        ({"nope": [1, 2]}, None, "Unknown parameter 'nope'"),
        ({"n_bins": [10, 1]}, None, "'n_bins' parameter of binned"),
        ({"n_bins": [10.0]}, None, "'n_bins' parameter of binned"),
        ({"n_bins": [10]}, {"n_bins": 5}, "both in 'grid' and in 'params'"),
        ({"epoch": [1]}, None, "cannot vary 'epoch'"),
        ({"n_bins": [10]}, [("a", 1)], "'params' parameter of sensitivity"),
    ],
)
def test_sensitivity_bad_grid(tmp_path, grid, params, match):
    path = make_random_run(tmp_path / "r")
    with pytest.raises(InvalidParameterError, match=match):
        sensitivity(path, "binned", grid, params=params)


def test_sensitivity_bad_estimator(tmp_path):
    path = make_random_run(tmp_path / "r")
    with pytest.raises(InvalidParameterError, match="Unknown estimator 'nope'"):
        sensitivity(path, "nope", {"n_bins": [10]})
    with pytest.raises(InvalidParameterError, match="name of a registered estimator"):
        sensitivity(path, estimators.get("binned"), {"n_bins": [10]})


def test_sensitivity_accepts_numpy_values(tmp_path):
    path = make_random_run(tmp_path / "r")
    table = sensitivity(path, "binned", {"n_bins": np.array([3, 5])})
    assert table.n_bins.drop_duplicates().tolist() == [3, 5]
    assert type(table.n_bins.iloc[0]) is not np.ndarray


def test_sensitivity_warns_once_per_pinned_grid_point(tmp_path):
    path = make_random_run(tmp_path / "r")
    # 32 samples, 4 tanh units in 100 bins: every sample in its own bin.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = sensitivity(path, "binned", {"n_bins": [2, 100]})
    pinned = [w for w in caught if issubclass(w.category, EstimationWarning)]
    assert len(pinned) == 1, [str(w.message) for w in pinned]
    message = str(pinned[0].message)
    assert message.startswith("binned(n_bins=100) on run 'r'")
    assert pinned[0].filename == __file__  # points at the caller
    counts = table[table.n_bins == 100].groupby("layer", sort=False).pinned.sum()
    assert counts.sum() >= 1 and (table[table.n_bins == 2].pinned == 0).all()
    listed = ", ".join(f"{k} ({int(n)} of 3 epochs)" for k, n in counts.items() if n)
    assert f"for layers {listed};" in message
    summary = sensitivity_summary(table).set_index(["layer", "n_bins"])
    for layer, n in counts.items():
        assert summary.loc[(layer, 100)].pinned_epochs == n
        assert summary.loc[(layer, 2)].pinned_epochs == 0


def test_sensitivity_on_a_torch_device_gives_the_same_numbers(tmp_path):
    path = make_random_run(tmp_path / "r")
    cpu = sensitivity(path, "binned", {"n_bins": [3, 10]})
    torch_cpu = sensitivity(path, "binned", {"n_bins": [3, 10]}, device="cpu")
    pd.testing.assert_frame_equal(cpu, torch_cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sensitivity_on_cuda_gives_the_cpu_numbers(tmp_path):
    path = make_random_run(tmp_path / "r")
    for name, grid in (
        ("binned", {"n_bins": [3, 10]}),
        ("kde", {"noise_variance": [0.1]}),
    ):
        cpu = sensitivity(path, name, grid)
        gpu = sensitivity(path, name, grid, device="cuda")
        np.testing.assert_allclose(gpu.i_xt, cpu.i_xt, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(gpu.i_ty, cpu.i_ty, rtol=1e-6, atol=1e-9)


# -- sensitivity_summary on hand-made tables ------------------------------------------


def hand_table():
    rows = []
    # layer x: I(X;T) 1 -> 2 -> 1.9375 (compression 0.0625, below the threshold),
    # I(T;Y) 0.5 -> 0.25 -> 0.75 (fitting -0.25 at the peak). Binary fractions,
    # so that the differences are exact.
    for epoch, i_xt, i_ty in ((0, 1.0, 0.5), (1, 2.0, 0.25), (2, 1.9375, 0.75)):
        rows.append(("x", epoch, 1, i_xt, i_ty))
    # At grid value 2: compression 0.5, fitting +0.5.
    for epoch, i_xt, i_ty in ((0, 1.0, 0.0), (1, 2.0, 0.5), (2, 1.5, 0.6)):
        rows.append(("x", epoch, 2, i_xt, i_ty))
    # layer z: NaN at value 1, compression 1 at value 2.
    for epoch in range(3):
        rows.append(("z", epoch, 1, math.nan, math.nan))
    for epoch, i_xt in ((0, 3.0), (1, 2.0), (2, 2.0)):
        rows.append(("z", epoch, 2, i_xt, 0.0))
    table = pd.DataFrame(rows, columns=["layer", "epoch", "k", "i_xt", "i_ty"])
    table.insert(1, "probe", "default")
    return table


def test_sensitivity_summary_definitions_on_a_hand_made_table():
    summary = sensitivity_summary(hand_table(), grid=["k"]).set_index(["layer", "k"])
    x1, x2 = summary.loc[("x", 1)], summary.loc[("x", 2)]
    assert x1.compression_bits == 0.0625
    assert x1.fitting_bits == -0.25
    assert x1.i_ty_at_max == 0.25 and x1.i_ty_gain == 0.25
    assert not bool(x1.compresses) and not bool(x1.fits)
    assert x2.compression_bits == pytest.approx(
        0.5
    ) and x2.fitting_bits == pytest.approx(0.5)
    assert bool(x2.compresses) and bool(x2.fits)
    assert x1.compression_verdict == x2.compression_verdict == "depends"
    assert x1.fitting_verdict == "depends"
    # NaN at one value: not counted; the other value decides.
    z1, z2 = summary.loc[("z", 1)], summary.loc[("z", 2)]
    assert pd.isna(z1.compresses) and pd.isna(z1.compression_bits)
    assert z2.compression_bits == pytest.approx(1.0)
    assert z2.compression_verdict == "survives" and z2.fitting_verdict == "absent"
    assert pd.isna(z1.pinned_epochs)  # no 'pinned' column


def test_sensitivity_summary_threshold_moves_the_verdict():
    table = hand_table()
    # 0.0625 bits is not *above* a threshold of 0.0625 bits.
    at = sensitivity_summary(table, grid=["k"], threshold=0.0625)
    assert at.set_index(["layer", "k"]).compresses.to_dict()[("x", 1)] is False
    loose = sensitivity_summary(table, grid="k", threshold=0.05)
    strict = sensitivity_summary(table, grid=["k"], threshold=0.6)
    assert set(loose[loose.layer == "x"].compression_verdict) == {"survives"}
    assert set(strict[strict.layer == "x"].compression_verdict) == {"absent"}


def test_sensitivity_summary_all_nan_layer_is_unknown():
    table = hand_table()
    table = table[~((table.layer == "z") & (table.k == 2))]
    summary = sensitivity_summary(table, grid=["k"])
    assert summary[summary.layer == "z"].compression_verdict.tolist() == ["unknown"]


def test_sensitivity_summary_errors():
    table = hand_table()
    with pytest.raises(InvalidParameterError, match="pass grid="):
        sensitivity_summary(table)
    with pytest.raises(InvalidParameterError, match=r"lacks the columns \['nope'\]"):
        sensitivity_summary(table, grid=["nope"])
    with pytest.raises(InvalidParameterError, match="'threshold' parameter"):
        sensitivity_summary(table, grid=["k"], threshold=-0.1)
    empty = sensitivity_summary(table.iloc[:0], grid=["k"])
    assert empty.empty and "compression_verdict" in empty.columns


# -- figure ---------------------------------------------------------------------------


def test_sensitivity_figure_panels_and_axes(tmp_path):
    plot = pytest.importorskip("ibmonitor.sensitivity_plot")
    path = make_random_run(tmp_path / "r")
    table = sensitivity(path, "binned", {"n_bins": [3, 10, 30]})
    fig = plot.sensitivity_figure(table, threshold=0.2)
    layouts = fig.layout
    # Three line panels and one plane per grid value.
    titles = [a.text for a in layouts.annotations if a.text and a.yref == "paper"]
    assert titles[:3] == [
        "Compression: highest − final I(X;T) (bits)",
        "Fitting: I(T;Y) gained up to the I(X;T) peak (bits)",
        "Highest I(X;T) (bits)",
    ]
    assert titles[3:6] == ["n_bins = 3", "n_bins = 10", "n_bins = 30"]
    assert layouts.xaxis.type == "log" and list(layouts.xaxis.tickvals) == [3, 10, 30]
    compression = [t for t in fig.data if t.xaxis == "x" and t.name in ("fc1", "fc2")]
    summary = sensitivity_summary(table).set_index(["layer", "n_bins"])
    for trace in compression:
        want = [summary.loc[(trace.name, n)].compression_bits for n in (3, 10, 30)]
        assert list(trace.y) == pytest.approx(want)
    threshold = [t for t in fig.data if t.name and t.name.startswith("threshold")]
    assert {tuple(t.y) for t in threshold} == {(0.2, 0.2)}
    assert "Sensitivity of r to n_bins (binned)" in layouts.title.text


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_figure_categorical_grid_and_probe(tmp_path):
    plot = pytest.importorskip("ibmonitor.sensitivity_plot")
    path = make_random_run(tmp_path / "r", probes=("default", "test"))
    table = sensitivity(
        path, "binned", {"n_bins": [4], "strategy": ["uniform", "quantile"]}
    )
    fig = plot.sensitivity_figure(table, probe="test")
    assert list(fig.layout.xaxis.ticktext) == [
        "n_bins=4, strategy='uniform'",
        "n_bins=4, strategy='quantile'",
    ]
    assert list(fig.layout.xaxis.tickvals) == [0, 1]
    assert "probe test" in fig.layout.title.text
    with pytest.raises(InvalidParameterError, match="Unknown probe 'nope'"):
        plot.sensitivity_figure(table, probe="nope")


def test_write_sensitivity_html_inlines_plotly(tmp_path):
    plot = pytest.importorskip("ibmonitor.sensitivity_plot")
    import plotly

    path = make_random_run(tmp_path / "r")
    fig = plot.sensitivity_figure(sensitivity(path, "binned", {"n_bins": [3, 10]}))
    out = plot.write_sensitivity_html(fig, tmp_path / "deep" / "s.html")
    text = out.read_text(encoding="utf-8")
    assert "<script src=" not in text  # nothing loaded: no CDN
    assert f"plotly.js v{plotly.offline.get_plotlyjs_version()}" in text
    assert len(text) > 1_000_000  # the library itself, inlined


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_sensitivity_reproduces_the_monitors_rows_at_its_parameters(tiny_mlp, tmp_path):
    from ibmonitor import sinks
    from ibmonitor.monitor import InformationMonitor

    with InformationMonitor(
        tiny_mlp.model,
        inputs=tiny_mlp.x,
        labels=tiny_mlp.y,
        estimators={"binned": {"n_bins": 10}},
        schedule=[0, 1],
        logdir=tmp_path / "r",
        sinks=[sinks.RunStore(store_activations=True)],
        overhead_budget=None,
    ) as monitor:
        for epoch in range(2):
            monitor.on_epoch_end(epoch, train_loss=1.0)
    recorded = load_run(tmp_path / "r").information
    table = sensitivity(tmp_path / "r", "binned", {"n_bins": [10, 30]})
    mine = table[table.n_bins == 10].set_index(["epoch", "layer"]).sort_index()
    theirs = recorded.set_index(["epoch", "layer"]).sort_index()
    assert mine.index.equals(theirs.index)
    np.testing.assert_allclose(mine.i_xt, theirs.i_xt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mine.i_ty, theirs.i_ty, rtol=0, atol=1e-12)
