"""A ResNet-18 on digits: wide layers pinned under binning, moving under Renyi.

scikit-learn's 8x8 digits are upsampled to 32x32 and a CIFAR-style ResNet-18
(:func:`ibmonitor.zoo.resnet18`) is trained on them, its eight residual blocks
and its output monitored with the binned and the matrix-based Renyi estimators.
The block outputs have thousands of units (channels times positions): binning
puts every probe sample in its own bin, so each block sits at (log2 n, H(Y))
and its rows are marked pinned; the Renyi estimator, whose kernel width
scales with the layer (Yu et al. 2021; Wickstrom et al. 2019), gives
trajectories that move.

Run: python examples/resnet_digits.py [--epochs N] [--width W] [--logdir DIR]

``--width 8`` (the default: 8, 16, 32 and 64 channels, 0.18 million
parameters) trains on 800 images in a few seconds an epoch on two CPU cores,
the monitor (256 probe samples) adding about as much; ``--width 64 --epochs 30
--probe 512`` is the full-size ResNet-18 (11 million parameters; about a
minute an epoch on a CPU, use a GPU).
"""

import argparse
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import ibmonitor
from ibmonitor import datasets, zoo
from ibmonitor.exceptions import EstimationWarning

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--width", type=int, default=8)
parser.add_argument("--probe", type=int, default=256, help="monitored samples")
parser.add_argument("--logdir", default="runs/resnet_digits")
args = parser.parse_args()

images, labels = map(torch.as_tensor, datasets.digits())
images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
torch.manual_seed(0)
perm = torch.randperm(len(labels))
train, probe = perm[:800], perm[800 : 800 + args.probe]
model = zoo.resnet18(num_classes=10, in_channels=1, width=args.width)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

# Default layers: the stem's ReLU, the eight residual blocks (layer1.0 ...
# layer4.1) as units, and the logits; the default estimators add Renyi to
# binning and KDE because these layers are wide.
monitor = ibmonitor.InformationMonitor(
    model,
    inputs=images[probe],
    labels=labels[probe],
    schedule="all",
    total_epochs=args.epochs,
    logdir=args.logdir,
    overhead_budget=None,
)
with warnings.catch_warnings():
    # The pinned binned rows warn once per layer; they are summarised below.
    warnings.simplefilter("ignore", EstimationWarning)
    with monitor:
        for epoch in range(args.epochs):
            model.train()
            for batch in train[torch.randperm(len(train))].split(64):
                optimizer.zero_grad()
                loss_fn(model(images[batch]), labels[batch]).backward()
                optimizer.step()
            model.eval()
            monitor.on_epoch_end(epoch)

run = ibmonitor.load_run(args.logdir)
info = run.information
print(
    f"{'layer':<10} {'binned pinned':>14} {'renyi I(X;T) spread':>20} "
    f"{'renyi I(T;Y) spread':>20}"
)
for layer in monitor.layers:
    rows = info[info["layer"] == layer]
    binned = rows[rows["estimator"] == "binned"]
    renyi = rows[rows["estimator"] == "renyi"]
    pinned = int((binned.get("pinned", 0) > 0.5).sum())
    sx = renyi["i_xt"].max() - renyi["i_xt"].min()
    sy = renyi["i_ty"].max() - renyi["i_ty"].min()
    print(f"{layer:<10} {pinned:>7} of {len(binned):<4} {sx:>17.3f} b {sy:>17.3f} b")
print("(spread: max - min over the recorded epochs, in bits)")
