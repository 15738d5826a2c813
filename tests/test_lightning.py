"""Tests of the Lightning adapter and of ibmonitor._imports (issue 3, section 5)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import ibmonitor
from ibmonitor._imports import require
from ibmonitor.exceptions import InvalidParameterError

pytestmark = [
    pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning"),
    # Lightning's own use of torch's pytree API, on recent torch
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),
]


# -- ibmonitor._imports.require ---------------------------------------------
def test_require_returns_the_first_importable_module():
    assert require("json", "a test", "dev").__name__ == "json"
    module = require(("ibmonitor_no_such_module", "json"), "a test", "dev")
    assert module.__name__ == "json"


def test_require_names_feature_and_extra():
    with pytest.raises(
        ModuleNotFoundError, match=r"pip install ibmonitor\[lightning\]"
    ):
        require("ibmonitor_no_such_module", "The callback", "lightning")
    with pytest.raises(ModuleNotFoundError, match="The callback needs 'a_x' or 'b_y'"):
        require(("a_x", "b_y"), "The callback", "lightning")


def test_require_propagates_errors_inside_installed_packages(tmp_path, monkeypatch):
    package = tmp_path / "ibm_broken_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import ibm_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("ibm_broken_pkg", "A feature", "extra")
    assert info.value.name == "ibm_missing_dependency"
    assert "pip install" not in str(info.value)


def test_lightning_module_without_lightning(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    monkeypatch.delitem(sys.modules, "ibmonitor.integrations.lightning", raising=False)
    with pytest.raises(
        ModuleNotFoundError, match=r"InformationMonitorCallback.*ibmonitor\[lightning\]"
    ):
        importlib.import_module("ibmonitor.integrations.lightning")


# -- the callback -------------------------------------------------------------
try:
    import lightning.pytorch as pl
except ModuleNotFoundError:  # pragma: no cover - CI installs ibmonitor[lightning]
    pl = None

needs_lightning = pytest.mark.skipif(pl is None, reason="needs ibmonitor[lightning]")


def _callback_cls():
    from ibmonitor.integrations.lightning import InformationMonitorCallback

    return InformationMonitorCallback


def _module(crash_at_epoch=None):
    class TinyModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if self.current_epoch == crash_at_epoch:
                raise RuntimeError("boom")
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            acc = (self(x).argmax(1) == y).float().mean()
            self.log("val_acc", acc, on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return TinyModule()


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _loader(x, y):
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=16)


def _trainer(callback, max_epochs=3):
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
    )


@needs_lightning
def test_callback_records_a_run(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    logdir = tmp_path / "run"
    callback = _callback_cls()(
        inputs=x,
        labels=y,
        estimators=("binned",),
        schedule=1,
        logdir=str(logdir),
        sinks=["runstore"],
        overhead_budget=None,
    )
    trainer = _trainer(callback)
    trainer.fit(_module(), _loader(x, y), _loader(x, y))

    run = ibmonitor.load_run(logdir)
    assert run.config["status"] == "finished"
    info = run.information
    assert sorted(info["epoch"].unique()) == [0, 1, 2]
    assert set(info["estimator"]) == {"binned"}
    assert info[["i_xt", "i_ty"]].notna().all().all()
    scalars = run.scalars
    for name in ("train_loss", "val_acc"):
        rows = scalars[scalars["name"] == name]
        assert sorted(rows["epoch"]) == [0, 1, 2], name
    assert callback.monitor.recorded_epochs == [0, 1, 2]


@needs_lightning
def test_callback_log_schedule_uses_max_epochs(tmp_path):
    x, y = _data()
    logdir = tmp_path / "log"
    callback = _callback_cls()(
        inputs=x,
        labels=y,
        estimators=("binned",),
        schedule="log",
        logdir=logdir,
        sinks=["runstore"],
        overhead_budget=None,
    )
    _trainer(callback, max_epochs=3).fit(_module(), _loader(x, y), _loader(x, y))
    run = ibmonitor.load_run(logdir)
    assert run.config["status"] == "finished"
    epochs = sorted(run.information["epoch"].unique())
    assert epochs[0] == 0
    assert epochs[-1] == 2  # the last epoch of max_epochs=3


@needs_lightning
def test_callback_marks_a_crashed_run(tmp_path):
    x, y = _data()
    logdir = tmp_path / "crash"
    callback = _callback_cls()(
        inputs=x,
        labels=y,
        estimators=("binned",),
        schedule=1,
        logdir=logdir,
        sinks=["runstore"],
        overhead_budget=None,
    )
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(callback).fit(_module(crash_at_epoch=1), _loader(x, y), _loader(x, y))
    run = ibmonitor.load_run(logdir)
    assert run.config["status"] == "crashed"
    assert sorted(run.information["epoch"].unique()) == [0]


@needs_lightning
def test_callback_rejects_model_and_unknown_arguments():
    x, y = _data()
    with pytest.raises(InvalidParameterError, match="'model'"):
        _callback_cls()(model=nn.Linear(4, 2), inputs=x, labels=y, overhead_budget=None)
    with pytest.raises(InvalidParameterError, match="unknown argument"):
        _callback_cls()(inputs=x, labels=y, no_such_option=1, overhead_budget=None)


@needs_lightning
def test_callback_is_a_lightning_callback():
    assert issubclass(_callback_cls(), pl.Callback)


@needs_lightning
def test_callback_without_forward_is_a_clear_error(tmp_path):
    class NoForward(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    callback = _callback_cls()(
        inputs=x, labels=y, estimators=("binned",), overhead_budget=None
    )
    with pytest.raises(
        InvalidParameterError, match="NoForward does not define forward"
    ):
        _trainer(callback, max_epochs=1).fit(NoForward(), _loader(x, y))


@needs_lightning
def test_callback_passes_output_key_and_structured_inputs(tmp_path):
    """A module with two inputs and a tuple output: output_key reaches the monitor."""

    class TwoInputs(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 2)

        def forward(self, a, b):
            hidden = torch.tanh(self.fc1(torch.cat([a, b], dim=1)))
            return self.fc2(hidden), hidden

        def training_step(self, batch, batch_idx):
            a, b, y = batch
            loss = nn.functional.cross_entropy(self(a, b)[0], y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data()
    a, b = x[:, :2], x[:, 2:]
    logdir = tmp_path / "run"
    callback = _callback_cls()(
        inputs=(a, b),
        labels=y,
        layers=["fc1", "fc2"],
        output_key=0,
        estimators=("binned",),
        schedule=1,
        logdir=logdir,
        sinks=["runstore"],
        overhead_budget=None,
    )
    assert callback.monitor_kwargs["output_key"] == 0
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(a, b, y), batch_size=16
    )
    _trainer(callback, max_epochs=2).fit(TwoInputs(), loader)
    run = ibmonitor.load_run(logdir)
    assert run.config["status"] == "finished"
    assert sorted(run.information["epoch"].unique()) == [0, 1]
    assert set(run.information["layer"]) == {"fc1", "fc2"}


_BOTH_PACKAGES = """
import tempfile, warnings
warnings.simplefilter("ignore")
import torch
import pytorch_lightning as PL
import lightning.pytorch as L
from ibmonitor.integrations.lightning import InformationMonitorCallback
import ibmonitor

assert issubclass(InformationMonitorCallback, L.Callback)
assert issubclass(InformationMonitorCallback, PL.Callback)
x = torch.randn(32, 4)
y = (x[:, 0] > 0).long()


class Module(PL.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


logdir = tempfile.mkdtemp() + "/run"
callback = InformationMonitorCallback(
    inputs=x, labels=y, estimators=("binned",), schedule=1, logdir=logdir,
    sinks=["runstore"],
)
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x, y), batch_size=8
)
PL.Trainer(
    max_epochs=2, logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    callbacks=[callback],
).fit(Module(), loader)
run = ibmonitor.load_run(logdir)
assert run.config["status"] == "finished"
assert sorted(run.information["epoch"].unique()) == [0, 1]
assert "loss" in set(run.scalars["name"])
print("ok")
"""


@pytest.mark.slow
@needs_lightning
def test_callback_works_with_a_pytorch_lightning_trainer():
    """Both packages installed, pytorch_lightning imported first: its Trainer works."""
    pytest.importorskip("pytorch_lightning")
    result = subprocess.run(
        [sys.executable, "-c", _BOTH_PACKAGES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
