"""The Hugging Face ``Trainer`` adapter (issue "Any PyTorch model").

A tiny BERT built from a ``BertConfig`` (no download: random weights and
generated token ids), trained by ``transformers.Trainer`` with the callback.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import ibmonitor
from ibmonitor.exceptions import InvalidParameterError

transformers = pytest.importorskip("transformers")

pytestmark = [
    pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SEQ = 16
LAYERS = ["bert.encoder.layer.1.output", "bert.pooler", "classifier"]


class TokenDataset(torch.utils.data.Dataset):
    """Samples as dicts of input_ids, attention_mask and labels."""

    def __init__(self, ids, mask, labels):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": self.mask[i],
            "labels": self.labels[i],
        }


def _tokens(n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, SEQ), generator=generator)
    mask = torch.ones(n, SEQ, dtype=torch.int64)
    lengths = torch.randint(8, SEQ + 1, (n,), generator=generator)
    for i, length in enumerate(lengths):
        mask[i, length:] = 0
        ids[i, length:] = 0
    labels = (ids[:, 0] > 50).long()  # learnable from the first token
    return ids, mask, labels


def _model():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=SEQ,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def _args(tmp_path, **overrides):
    options = {
        "output_dir": str(tmp_path / "trainer"),
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 1e-3,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_strategy": "epoch",
        "eval_strategy": "epoch",
        "disable_tqdm": True,
        "seed": 0,
    }
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def _callback_cls():
    from ibmonitor.integrations.transformers import InformationMonitorCallback

    return InformationMonitorCallback


def test_trainer_callback_records_a_run(tmp_path):
    ids, mask, labels = _tokens()
    dataset = TokenDataset(ids, mask, labels)
    logdir = tmp_path / "run"
    callback = _callback_cls()(
        inputs={"input_ids": ids[:32], "attention_mask": mask[:32]},
        labels=labels[:32],
        layers=LAYERS,
        logdir=logdir,
        estimators=("binned",),
        schedule="all",
        overhead_budget=None,
    )
    trainer = transformers.Trainer(
        model=_model(),
        args=_args(tmp_path),
        train_dataset=dataset,
        eval_dataset=dataset,
        callbacks=[callback],
    )
    trainer.train()

    run = ibmonitor.load_run(logdir)
    assert run.config["status"] == "finished"
    assert run.config["probes"]["default"]["inputs"] == {
        "input_ids": [SEQ],
        "attention_mask": [SEQ],
    }
    info = run.information
    assert sorted(info["epoch"].unique()) == [0, 1]
    assert set(info["layer"]) == set(LAYERS)
    assert info[["i_xt", "i_ty"]].notna().all().all()
    scalars = run.scalars
    for name in ("loss", "eval_loss", "learning_rate"):
        rows = scalars[scalars["name"] == name]
        assert sorted(rows["epoch"]) == [0, 1], name
    assert "train_runtime" not in set(scalars["name"])  # the summary log
    assert callback.monitor.recorded_epochs == [0, 1]


def test_trainer_callback_steps_timeline(tmp_path):
    ids, mask, labels = _tokens(n=32)
    logdir = tmp_path / "steps"
    callback = _callback_cls()(
        timeline="steps",
        inputs={"input_ids": ids, "attention_mask": mask},
        labels=labels,
        layers=["classifier"],
        logdir=logdir,
        estimators=("binned",),
        schedule="all",
        overhead_budget=None,
    )
    args = _args(
        tmp_path,
        num_train_epochs=1,
        logging_strategy="steps",
        logging_steps=2,
        eval_strategy="no",
    )
    trainer = transformers.Trainer(
        model=_model(),
        args=args,
        train_dataset=TokenDataset(ids, mask, labels),
        callbacks=[callback],
    )
    trainer.train()  # 32 samples / 8 per batch: 4 steps, logged at 2 and 4
    run = ibmonitor.load_run(logdir)
    assert sorted(run.information["epoch"].unique()) == [2, 4]
    loss = run.scalars[run.scalars["name"] == "loss"]
    assert sorted(loss["epoch"]) == [2, 4]


def test_trainer_callback_rejects_bad_arguments():
    ids, _, labels = _tokens(n=8)
    cls = _callback_cls()
    with pytest.raises(InvalidParameterError, match="'model'"):
        cls(model=_model(), inputs=ids, labels=labels)
    with pytest.raises(InvalidParameterError, match="unknown argument"):
        cls(inputs=ids, labels=labels, no_such_option=1)
    with pytest.raises(InvalidParameterError, match="'timeline' parameter"):
        cls(inputs=ids, labels=labels, timeline="batches")


def test_trainer_callback_is_a_trainer_callback():
    assert issubclass(_callback_cls(), transformers.TrainerCallback)


def test_transformers_adapter_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(
        sys.modules, "ibmonitor.integrations.transformers", raising=False
    )
    with pytest.raises(
        ModuleNotFoundError,
        match=r"InformationMonitorCallback.*ibmonitor\[transformers\]",
    ):
        importlib.import_module("ibmonitor.integrations.transformers")
