"""Quickstart: a plain PyTorch loop with the information-plane monitor.

Run: python examples/quickstart.py [--epochs N] [--logdir DIR]
"""

import argparse

import torch
from torch import nn

import ibmonitor
from ibmonitor import datasets, zoo
from ibmonitor.sinks import RunStore, TensorBoard

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--logdir", default="runs/quickstart")
args = parser.parse_args()

x, y = map(torch.as_tensor, datasets.twelve_bit())  # 4096 12-bit inputs, 2 classes
torch.manual_seed(0)
model = zoo.tishby_mlp(activation="tanh")  # 12-10-7-5-4-3-2
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()

with ibmonitor.InformationMonitor(
    model,
    inputs=x,
    labels=y,
    estimators=("binned", "kde"),
    schedule="log",
    total_epochs=args.epochs,
    logdir=args.logdir,
    sinks=[RunStore(overwrite=True), TensorBoard()],
) as monitor:
    for epoch in range(args.epochs):
        for batch in torch.randperm(len(y)).split(512):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        monitor.on_epoch_end(epoch, train_loss=loss.item())

run = ibmonitor.load_run(args.logdir)
print(run.information.query("estimator == 'binned'").tail(6).to_string(index=False))
