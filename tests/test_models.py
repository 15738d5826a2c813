"""Models nobody here wrote, monitored with their default layers (issue 10).

Each model of ``tests/_models.py`` (torchvision ResNet-18, a timm MobileNetV3,
Hugging Face BERT with dict inputs and an attention mask, Hugging Face ViT, an
``nn.TransformerEncoder`` classifier, an LSTM classifier, tuple- and
dict-output models, a ``torch.compile``'d CNN) is trained for two epochs with
the monitor on every epoch, default layers, the generalization gap as a
measure, ``strict=True`` and every monitor warning an error; all offline.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _models import CASES, case_names, compiled_cnn
from torch import nn

import ibmonitor
from ibmonitor import structures
from ibmonitor.exceptions import EstimationWarning, MonitorWarning
from ibmonitor.measures import MeasureSet

# Small probe sets pin the binned estimates: expected here, and not the topic.
pytestmark = pytest.mark.filterwarnings(
    "ignore::ibmonitor.exceptions.EstimationWarning"
)

#: What the default selection must (and must not) pick, per model.
EXPECTED = {
    "resnet18": (
        ["layer1.0", "layer4.1", "output"],
        ["layer1.0.relu", "layer1.0.conv1"],
    ),
    "timm": (["output"], ["conv_stem"]),
    "bert": (
        ["bert.encoder.layer.0", "bert.encoder.layer.1", "output"],
        [
            "bert.encoder.layer.0.attention.self.query",
            "bert.encoder.layer.0.intermediate.intermediate_act_fn",
        ],
    ),
    "vit": (
        ["vit.layers.0", "vit.layers.1", "output"],
        ["vit.layers.0.attention.q_proj", "vit.layers.0.attention.attention.query"],
    ),
    "transformer": (
        ["enc.layers.0", "enc.layers.1", "output"],
        [
            "enc.layers.0.self_attn.out_proj",
            "enc.layers.0.linear1",
        ],
    ),
    "lstm": (["lstm", "output"], []),
    "tuple_output": (["body.1", "output"], []),
    "dict_output": (["body.1", "output"], []),
    "compiled": (["1", "4", "output"], []),
}


def _train_step(model, case, optimizer) -> float:
    model.train()
    optimizer.zero_grad()
    output = structures.select_output(
        structures.call_model(model, case.inputs), case.options.get("output_key")
    )
    loss = nn.functional.cross_entropy(output, case.labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@pytest.mark.parametrize("name", case_names())
def test_model_is_monitored_with_its_default_layers(name, tmp_path):
    case = CASES[name](32)
    model = case.model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = (case.inputs, case.labels)
    measures = MeasureSet(
        ["gap"],
        loss_fn=nn.functional.cross_entropy,
        train_data=data,
        test_data=data,
        output_key=case.options.get("output_key"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonitorWarning)  # no monitor error at all
        warnings.simplefilter("ignore", EstimationWarning)  # 32 probes: pinned
        monitor = ibmonitor.InformationMonitor(
            model,
            inputs=case.inputs,
            labels=case.labels,
            estimators=("binned", "renyi"),
            schedule="all",
            logdir=tmp_path / "run",
            sinks=["runstore"],
            measures=measures,
            overhead_budget=None,
            strict=True,
            **case.options,
        )
        for epoch in range(2):
            loss = _train_step(model, case, optimizer)
            monitor.on_epoch_end(epoch, train_loss=loss)
        monitor.close()
    layers = monitor.layers
    must, must_not = EXPECTED[name]
    assert set(must) <= set(layers), layers
    assert not set(must_not) & set(layers), layers
    assert layers[-1] in ("output", "model_output") or name == "lstm"
    assert not any(n.startswith("_orig_mod") for n in layers)
    run = ibmonitor.load_run(tmp_path / "run")
    info = run.information
    assert set(info["layer"]) == set(layers)
    assert sorted(set(info["epoch"])) == [0, 1]
    assert info[["i_xt", "i_ty"]].notna().all().all()
    names = set(run.scalars["name"])
    assert {"train_loss", "gap/train_acc", "gap/test_acc"} <= names
    assert run.config["errors"] == []
    assert all(not m._forward_hooks for m in model.modules())


def test_compiled_model_records_eager_names_and_accepts_them(tmp_path):
    eager_names = ["1", "4"]
    case = compiled_cnn(16)
    monitor = ibmonitor.InformationMonitor(
        case.model,
        inputs=case.inputs,
        labels=case.labels,
        layers=eager_names,
        estimators=("binned",),
        schedule="all",
        overhead_budget=None,
    )
    monitor.on_epoch_end(0)
    monitor.close()
    assert monitor.layers == eager_names


def test_recording_under_autocast_equals_float32(tmp_path):
    case = CASES["dict_output"](16)

    def record():
        monitor = ibmonitor.InformationMonitor(
            case.model,
            inputs=case.inputs,
            labels=case.labels,
            estimators=("binned",),
            schedule="all",
            sinks=[
                ibmonitor.RunStore(tmp_path / f"r{len(runs)}", store_activations=True)
            ],
            overhead_budget=None,
        )
        monitor.on_epoch_end(0)
        monitor.close()
        return ibmonitor.load_run(tmp_path / f"r{len(runs)}").activations(0)["default"]

    runs = []
    runs.append(record())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        runs.append(record())
    for layer, plain in runs[0].items():
        assert plain.dtype == runs[1][layer].dtype
        torch.testing.assert_close(
            torch.as_tensor(runs[1][layer]), torch.as_tensor(plain)
        )
