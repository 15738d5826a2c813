"""The information-plane monitor in a Lightning ``Trainer``.

Trains Shwartz-Ziv & Tishby's 12-10-7-5-4-3-2 tanh network on the 12-bit task
as a ``LightningModule``;
:class:`ibmonitor.integrations.lightning.InformationMonitorCallback` records
four layers on all 4096 inputs on the log-spaced schedule (it passes the
trainer's ``max_epochs`` to the monitor) and stores what the module logs with
``self.log`` (``train_loss``, ``val_loss``, ``val_acc``) in the run's scalars.

Needs Lightning: ``pip install ibmonitor[lightning]``.
Run: python examples/lightning_example.py [--epochs N] [--logdir DIR]
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibmonitor
from ibmonitor import datasets, zoo
from ibmonitor.integrations.lightning import InformationMonitorCallback
from ibmonitor.sinks import RunStore

try:
    import lightning.pytorch as pl
except ModuleNotFoundError:  # the standalone package
    import pytorch_lightning as pl

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=100)
parser.add_argument("--logdir", default="runs/lightning_example")
args = parser.parse_args()


class TwelveBit(pl.LightningModule):
    """The 12-bit network; ``forward`` gives the softmax output the monitor records."""

    def __init__(self, lr: float = 1e-3):
        super().__init__()
        self.net = zoo.tishby_mlp(activation="tanh", softmax_output=True)
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def _logits(self, x):
        return self.net[:-1](x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self._logits(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self._logits(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


x, y = map(torch.as_tensor, datasets.twelve_bit())  # 4096 inputs, 2 classes
torch.manual_seed(0)
perm = torch.randperm(len(y))
train, val = perm[:3277], perm[3277:]  # 80 % / 20 %
train_loader = DataLoader(
    TensorDataset(x[train], y[train]), batch_size=512, shuffle=True
)
val_loader = DataLoader(TensorDataset(x[val], y[val]), batch_size=1024)

callback = InformationMonitorCallback(
    inputs=x,  # the probe set: all 4096 inputs
    labels=y,
    layers=["net.tanh1", "net.tanh3", "net.tanh5", "net.softmax"],
    estimators=("binned",),
    schedule="log",  # total_epochs comes from the trainer's max_epochs
    logdir=args.logdir,
    sinks=[RunStore(overwrite=True)],
)
trainer = pl.Trainer(
    max_epochs=args.epochs,
    callbacks=[callback],
    accelerator="auto",  # a GPU where there is one; the monitor follows the model
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
trainer.fit(TwelveBit(), train_loader, val_loader)

run = ibmonitor.load_run(args.logdir)
print(f"Run {run.path}: {run.config['status']}")
print(
    run.information[["epoch", "layer", "i_xt", "i_ty"]].tail(4).to_string(index=False)
)
scalars = run.scalars
print(scalars[scalars["epoch"] == scalars["epoch"].max()].to_string(index=False))
