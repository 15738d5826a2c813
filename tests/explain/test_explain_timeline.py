"""Issue 14 on the timeline: ExplainSet in a monitored run, stored, drawn, harmless."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ibmonitor import InformationMonitor, load_run
from ibmonitor.datasets import digits
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.explain import ExplainSet, saliency, top_activations
from ibmonitor.report import write_report
from ibmonitor.sinks import RunStore, TensorBoard
from ibmonitor.zoo import DigitsCNN

EPOCHS = 3


def _data():
    images, labels = map(torch.as_tensor, digits())
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images, labels, perm[:400], perm[1200:1400]


def _train(path=None, explain=None):
    """Train the digits CNN for 3 epochs, monitored; return the model."""
    images, labels, train, test = _data()
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    monitor = None
    if path is not None:
        monitor = InformationMonitor(
            model,
            images[test],
            labels[test],
            layers=["act3"],
            reduce="mean",
            estimators=["binned"],
            schedule=lambda epoch: True,
            total_epochs=EPOCHS,
            overhead_budget=None,
            logdir=path,
            sinks=[RunStore(), TensorBoard(images=False)],
            explain=explain,
        )
    gen = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(EPOCHS):
            for batch in train[torch.randperm(len(train), generator=gen)].split(64):
                optimizer.zero_grad()
                loss_fn(model(images[batch]), labels[batch]).backward()
                optimizer.step()
            if monitor is not None:
                monitor.on_epoch_end(epoch)
        if monitor is not None:
            monitor.close()
            assert monitor.errors == []
    return model


def _explain_set():
    images, labels, train, test = _data()
    chosen = torch.cat([torch.nonzero(labels[test] == c)[:1, 0] for c in range(4)])
    return (
        ExplainSet(
            images[test][chosen],
            labels[test][chosen],
            top_activations={"act3": 4},
            feature_visualization={"act3": [0, 1]},
            fv_steps=20,
            influence={
                "loss_fn": nn.CrossEntropyLoss(),
                "train_data": (images[train][:60], labels[train][:60]),
                "test_data": (images[test][:2], labels[test][:2]),
                "params": ["fc2.weight", "fc2.bias"],
                "damping": 0.01,
            },
        ),
        images[test][chosen],
        labels[test][chosen],
        images[test],
    )


def test_explanations_over_epochs_are_stored_drawn_and_harmless(tmp_path):
    explain, x, targets, probe = _explain_set()
    model = _train(tmp_path / "run", explain)
    run = load_run(tmp_path / "run")
    assert run.explanation_epochs == [0, 1, 2]
    last = run.explanations(2)
    # what is stored at the last epoch is what the functions give on the model
    # as training left it
    np.testing.assert_allclose(
        last["saliency"], saliency(model, x, targets).numpy(), rtol=1e-4, atol=1e-6
    )
    assert last["saliency"].shape == tuple(x.shape)
    top = run.top_activations
    assert list(top.columns) == [
        "layer",
        "epoch",
        "unit",
        "rank",
        "index",
        "activation",
    ]
    direct = top_activations(model, "act3", probe, k=4)
    mine = top[(top.epoch == 2)].reset_index(drop=True)
    assert mine["index"].tolist() == direct["index"].tolist()
    np.testing.assert_allclose(mine["activation"], direct["activation"], rtol=1e-5)
    assert last["top/act3/inputs"].shape[:2] == (min(16, mine.unit.nunique()), 4)
    # the costly ones at the first and last recorded epochs only
    assert "features/act3" in run.explanations(0)
    assert "features/act3" not in run.explanations(1)
    assert last["features/act3"].shape == (2, *x.shape[1:])
    influence = run.influence
    assert sorted(influence.epoch.unique()) == [0, 2]
    assert len(influence[influence.epoch == 2]) == 2 * 60
    # the monitor's explanations never change the training
    plain = _train()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    # TensorBoard: image grids with a step per epoch
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert {"explain/saliency", "explain/top/act3", "explain/features/act3"} <= set(
        tags
    )
    assert [e.step for e in acc.Images("explain/saliency")] == [0, 1, 2]
    # the report: the saliency strip and the tables
    page = write_report(tmp_path / "run", tmp_path / "r.html").read_text()
    assert "Saliency |d score \\u002f d input|" in page
    assert "Top-activating probe inputs" in page
    assert "most harmful and most helpful" in page


def test_explain_set_checks_its_parameters():
    x = torch.zeros(2, 3)
    with pytest.raises(InvalidParameterError, match="'inputs'"):
        ExplainSet(torch.zeros(0, 3))
    with pytest.raises(InvalidParameterError, match="'targets'"):
        ExplainSet(x, torch.zeros(3))
    with pytest.raises(InvalidParameterError, match="explains nothing"):
        ExplainSet(x, saliency=False)
    with pytest.raises(InvalidParameterError, match="influence"):
        ExplainSet(x, influence={"loss_fn": nn.MSELoss()})
    with pytest.raises(InvalidParameterError, match="costly_epochs"):
        ExplainSet(x, costly_epochs="sometimes")
    with pytest.raises(InvalidParameterError, match="'explain'"):
        InformationMonitor(nn.Linear(3, 2), x, torch.zeros(2).long(), explain=1)


def test_vector_inputs_get_the_table_form(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    monitor = InformationMonitor(
        model,
        x,
        y,
        layers=["1"],
        estimators=["binned"],
        schedule=lambda e: True,
        overhead_budget=None,
        sinks=[RunStore(tmp_path / "run")],
        explain=ExplainSet(x[:3], y[:3], top_activations=["1"]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor.on_epoch_end(0)
        monitor.on_epoch_end(1)
        monitor.close()
    run = load_run(tmp_path / "run")
    assert run.explanations(1)["saliency"].shape == (3, 5)
    top = run.top_activations
    assert set(top.unit) == {0, 1, 2, 3}
    assert top["rank"].min() == 1 and top["rank"].max() == 9
    page = write_report(tmp_path / "run", tmp_path / "r.html").read_text()
    assert "Saliency |d score \\u002f d input|" in page


class _DictModel(nn.Module):
    """A model called as ``model(**{"features": x})`` (a structured probe)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)
        self.act = nn.Tanh()
        self.out = nn.Linear(3, 2)

    def forward(self, features):
        return self.out(self.act(self.fc(features)))


def test_structured_inputs_and_predicted_targets():
    torch.manual_seed(0)
    model = _DictModel()
    x = {"features": torch.randn(40, 5)}
    explain = ExplainSet({"features": x["features"][:4]}, top_activations=["act"])
    arrays = explain.compute(model, 0, probe_inputs=x)
    predicted = model(**{"features": x["features"][:4]}).argmax(dim=1)
    assert arrays["saliency_target"].tolist() == predicted.tolist()
    direct = saliency(model, {"features": x["features"][:4]}, predicted)
    np.testing.assert_allclose(
        arrays["saliency"], direct["features"].numpy(), rtol=1e-6
    )
    assert arrays["top/act"].shape == (3 * 9, 4)
    with pytest.raises(InvalidParameterError, match="feature_visualization"):
        ExplainSet(x, feature_visualization={"act": [0]})
