"""A CNN on scikit-learn's digits with its convolutional layers monitored.

Convolutional feature maps are pooled over space (``reduce="mean"``) so that
each channel is one unit; the generalization gap, the layers' geometry (class
separation, flattening, linear probe) and the filter pairing are measured on
the monitor's timeline. Run: python examples/cnn_digits.py [--epochs N] [--logdir DIR]
"""

import argparse

import torch
from torch import nn

import ibmonitor
from ibmonitor import datasets, zoo
from ibmonitor.measures import MeasureSet
from ibmonitor.sinks import RunStore, TensorBoard

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--logdir", default="runs/cnn_digits")
args = parser.parse_args()

images, labels = map(torch.as_tensor, datasets.digits())
torch.manual_seed(0)
perm = torch.randperm(len(labels))
train, test = perm[:1200], perm[1200:]
model = zoo.DigitsCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

monitor = ibmonitor.InformationMonitor(
    model,
    probes={
        "train": (images[train], labels[train]),
        "test": (images[test], labels[test]),
    },
    layers=["act1", "act2", "act3", "fc2"],
    reduce="mean",
    estimators={"binned": {"value_range": "auto"}, "kde": {"noise_variance": 0.1}},
    schedule="log",
    total_epochs=args.epochs,
    sinks=[RunStore(overwrite=True), TensorBoard()],
    measures=MeasureSet(
        ["gap", "norms", "separation", "geometry", "pairing"],
        loss_fn=loss_fn,
        train_data=(images[train], labels[train]),
        test_data=(images[test], labels[test]),
    ),
    logdir=args.logdir,
)
with monitor:
    for epoch in range(args.epochs):
        model.train()
        for batch in train[torch.randperm(len(train))].split(64):
            optimizer.zero_grad()
            loss_fn(model(images[batch]), labels[batch]).backward()
            optimizer.step()
        monitor.on_epoch_end(epoch)

run = ibmonitor.load_run(args.logdir)
print(run.information.groupby(["probe", "layer"])[["i_xt", "i_ty"]].last())
print(run.scalars[run.scalars["name"].str.startswith("gap/")].tail(4))
geometry = run.scalars[run.scalars["name"].str.startswith(("geometry/", "pairing/"))]
print(geometry[geometry["epoch"] == geometry["epoch"].max()].to_string(index=False))
