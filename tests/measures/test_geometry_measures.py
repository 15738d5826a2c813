"""Issue 13 on the timeline: geometry measures in the registry and in a run."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ibmonitor import InformationMonitor, geometry, load_run
from ibmonitor.datasets import digits
from ibmonitor.measures import MeasureContext, MeasureSet, get_measure
from ibmonitor.report import write_report
from ibmonitor.sinks import RunStore, TensorBoard
from ibmonitor.zoo import DigitsCNN


def _context(model, activations=None, labels=None):
    return MeasureContext(model, activations=activations, labels=labels)


def test_geometry_measures_equal_the_pure_functions():
    rng = np.random.default_rng(0)
    y = torch.as_tensor(np.repeat([0, 1, 2], 40))
    t = torch.as_tensor(rng.normal(size=(120, 6)) + 3.0 * y.numpy()[:, None])
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    acts = {"default": {"fc": t}, "test": {"fc": t[:60]}}
    labels = {"default": y, "test": y[:60]}
    context = _context(model, acts, labels)

    sep = get_measure("separation")(context)
    assert sep == {
        "geometry/fc/separation": geometry.separation(t, y),
        "geometry/test/fc/separation": geometry.separation(t[:60], y[:60]),
    }
    full = get_measure("geometry")(context, flattening_k=5)
    expected = geometry.layer_geometry(t, y, flattening_k=5)
    for quantity in ("flattening", "probe_accuracy", "usable_information"):
        assert full[f"geometry/fc/{quantity}"] == pytest.approx(expected[quantity])
    assert "geometry/fc/separation" not in full  # the cheap measure has it

    pairs = get_measure("pairing")(context)
    table = geometry.pairing_table(model, baseline=False)
    for row in table.itertuples():
        np.testing.assert_array_equal(pairs[f"pairing/{row.layer}/mu"], row.mu)
        assert pairs[f"pairing/{row.layer}/mean_mu"] == pytest.approx(row.mean_mu)
        assert pairs[f"pairing/{row.layer}/frac_below"] == row.frac_below


def test_activation_measures_give_nothing_on_unrecorded_epochs():
    model = nn.Linear(3, 2)
    assert get_measure("separation")(_context(model)) == {}
    assert get_measure("geometry")(_context(model)) == {}
    # a diverged layer is left out rather than failing the measure
    bad = {"default": {"fc": torch.full((10, 2), float("nan"))}}
    labels = {"default": torch.arange(10) % 2}
    assert get_measure("separation")(_context(model, bad, labels)) == {}


def test_pairing_measure_finds_a_paired_bank():
    model = nn.Sequential(nn.Conv2d(1, 8, 3))
    with torch.no_grad():
        w = torch.randn(4, 1, 3, 3)
        model[0].weight.copy_(torch.cat([w, -w]))
    values = get_measure("pairing")(_context(model))
    assert values["pairing/0/mean_mu"] == pytest.approx(-1.0)
    assert values["pairing/0/frac_below"] == 1.0


def test_digits_cnn_run_stores_geometry_and_the_report_draws_it(tmp_path):
    """A short monitored run of the digits CNN: geometry per layer per epoch."""
    images, labels = map(torch.as_tensor, digits())
    torch.manual_seed(0)
    perm = torch.randperm(len(labels))
    train, test = perm[:600], perm[1200:1500]
    model = DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    monitor = InformationMonitor(
        model,
        images[test],
        labels[test],
        layers=["act1", "act3", "fc2"],
        reduce="mean",
        estimators=["binned"],
        schedule=lambda epoch: True,
        total_epochs=3,
        overhead_budget=None,
        logdir=tmp_path / "run",
        sinks=[RunStore(), TensorBoard(images=False)],
        measures=MeasureSet(
            ["separation", "geometry", "pairing"],
            loss_fn=loss_fn,
            train_data=(images[train], labels[train]),
        ),
    )
    with monitor, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(3):
            for batch in train[torch.randperm(len(train))].split(64):
                optimizer.zero_grad()
                loss_fn(model(images[batch]), labels[batch]).backward()
                optimizer.step()
            monitor.on_epoch_end(epoch)
    scalars = load_run(tmp_path / "run").scalars
    names = set(scalars["name"])
    for layer in ("act1", "act3", "fc2"):
        assert f"geometry/{layer}/separation" in names
    # expensive: the first call and the last epoch, without a measure schedule
    probe = scalars[scalars["name"] == "geometry/act3/probe_accuracy"]
    assert sorted(probe["epoch"]) == [0, 2]
    assert probe["value"].between(0.0, 1.0).all()
    assert {"pairing/conv1/mean_mu", "pairing/fc2/frac_below"} <= names
    # the filter pairing's distribution: a TensorBoard histogram per layer and
    # epoch (Shang et al.'s figure)
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"histograms": 0})
    acc.Reload()
    assert "pairing/conv1/mu" in acc.Tags()["histograms"]
    events = acc.Histograms("pairing/conv1/mu")
    assert [e.step for e in events] == [0, 1, 2]
    n_filters = DigitsCNN().conv1.out_channels
    assert events[-1].histogram_value.num == n_filters
    page = write_report(tmp_path / "run", tmp_path / "report.html").read_text()
    assert "Geometry of the layers" in page
    assert "linear probe accuracy" in page
