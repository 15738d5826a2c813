"""Zhang et al. (2017): a network fits random labels as well as true ones.

"Understanding deep learning requires rethinking generalization" (Zhang,
Bengio, Hardt, Recht & Vinyals, ICLR 2017) showed that standard networks
reach 100 % training accuracy on images whose labels were replaced at random,
while their test accuracy stays at chance, and that random labels take longer
to fit. This script repeats the experiment at a small scale: a 64-512-256-10
ReLU MLP (:func:`ibmonitor.zoo.tishby_mlp` with these widths; Adam, learning
rate 1e-3, batch 100) on scikit-learn's 8x8 digits
(:func:`ibmonitor.datasets.digits`; 1000 training and 797 test images), once
with the true training labels and once with the training labels randomly
permuted (same class frequencies, no relation to the images). Test labels are
always the true ones.

An :class:`ibmonitor.InformationMonitor` records every layer (the two ReLU
layers, ``relu1`` with 512 units and ``relu2`` with 256, and the softmax
output ``softmax``) on two probe sets, ``train`` (the 1000 training images
with the labels the network is trained on) and ``test`` (797 images, true labels), and
measures the generalization gap (``gap``) on the same log-spaced epochs. The
information planes use the KDE upper bound with noise variance 0.1
(Kolchinsky & Tracey 2017); the binned estimator (30 bins per unit over each
layer's range) is recorded as well, for the report.

What the estimators can and cannot see here: the probe images are all
distinct and the ReLU layers are wide (512 and 256 units, activations up to
~10), so both estimators separate every image in the hidden layers: there
I(X;T) sits at log2(n) and I(T;Y) at H(Y) = log2(10) for both runs, whatever
the labels (any injective T has I(T;Y) = H(Y)). The informative layer is the
softmax output, where one-hot-like outputs of a fitted class collapse under
the noise: there the true-label network keeps ~3.2 bits about the test
labels and the random-label network almost none.

Output (``--outdir``, default ``runs/random_labels``): run directories
``true-labels`` and ``random-labels``, ``report.html`` and ``random_labels.png``
(accuracy and gap over epochs beside the information planes of both runs on
both probes; ``--gallery``: also in ``docs/images/``). Printed: final accuracy
and gap, epochs to 99 % (running) training accuracy, and per layer the final
I(X;T) and I(T;Y) (KDE) of both runs on both probes.

Usage::

    python scripts/random_labels.py            # 200 epochs per run
    python scripts/random_labels.py --quick    # 10 epochs (no memorisation yet)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, Union

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np
import pandas as pd

NAME = "random_labels"
FULL_EPOCHS, QUICK_EPOCHS = 200, 10
N_TRAIN = 1000
BATCH_SIZE = 100
LR = 1e-3
WIDTHS = (64, 512, 256, 10)
RUNS = {"true": "true-labels", "random": "random-labels"}
NOISE_VARIANCE = 0.1
ESTIMATOR = "kde"


def digits_split(seed: int = 0):
    """Return (x_train, y_train, x_test, y_test) float32 / int64 tensors."""
    import torch

    from ibmonitor import datasets

    images, labels = datasets.digits()
    x = torch.as_tensor(images).flatten(1)
    y = torch.as_tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:N_TRAIN], perm[N_TRAIN:]
    return x[train], y[train], x[test], y[test]


def make_mlp():
    """Return the ReLU MLP ending in a ``softmax`` module (train on ``[:-1]``)."""
    from ibmonitor import zoo

    return zoo.tishby_mlp(WIDTHS, activation="relu", softmax_output=True)


def train_digits(
    logdir: Union[str, Path],
    *,
    labels: str = "true",
    epochs: int = FULL_EPOCHS,
    seed: int = 0,
    n_schedule: int = 25,
    tensorboard: bool = False,
) -> Path:
    """Train the MLP on digits with true or permuted labels under the monitor."""
    import torch
    from torch import nn

    from ibmonitor import InformationMonitor, MeasureSet, RunStore, TensorBoard

    x_train, y_true, x_test, y_test = digits_split(0)
    y_train = y_true
    if labels == "random":
        shuffle = torch.Generator().manual_seed(1000 + seed)
        y_train = y_true[torch.randperm(len(y_true), generator=shuffle)]
    elif labels != "true":
        raise ValueError(f"labels must be 'true' or 'random'. Got {labels!r}.")
    torch.manual_seed(seed)
    model = make_mlp()
    mlp = model[:-1]  # the logits; shares its parameters with ``model``
    optimizer = torch.optim.Adam(mlp.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(seed)
    agreement = float((y_train == y_true).float().mean())
    monitor = InformationMonitor(
        model,
        probes={"train": (x_train, y_train), "test": (x_test, y_test)},
        estimators={"kde": {"noise_variance": NOISE_VARIANCE}, "binned": {}},
        schedule=f"log:{n_schedule}",
        total_epochs=epochs,
        sinks=[RunStore(overwrite=True), *([TensorBoard()] if tensorboard else [])],
        measures=MeasureSet(
            ["gap"],
            loss_fn=lambda out, y: nn.functional.nll_loss(torch.log(out + 1e-12), y),
            train_data=(x_train, y_train),
            test_data=(x_test, y_test),
        ),
        logdir=logdir,
        seed=seed,
        config={
            "experiment": "random_labels",
            "labels": labels,
            "train_labels_equal_true": agreement,
            "widths": list(WIDTHS),
            "lr": LR,
            "batch_size": BATCH_SIZE,
        },
        overhead_budget=None,
    )
    with monitor:
        for epoch in range(epochs):
            mlp.train()
            total, correct, count = 0.0, 0, 0
            for batch in torch.randperm(N_TRAIN, generator=order_gen).split(BATCH_SIZE):
                optimizer.zero_grad(set_to_none=True)
                logits = mlp(x_train[batch])
                loss = loss_fn(logits, y_train[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == y_train[batch]).sum())
                count += len(batch)
            monitor.on_epoch_end(
                epoch,
                train_loss_running=total / count,
                train_acc_running=correct / count,
            )
    return Path(logdir)


def epochs_to_fit(scalars: pd.DataFrame, threshold: float = 0.99) -> dict:
    """First epoch whose running training accuracy reaches ``threshold``, per run."""
    acc = scalars[scalars["name"] == "train_acc_running"]
    out = {}
    for run, rows in acc.groupby("run", sort=False):
        hit = rows[rows["value"] >= threshold]
        out[run] = int(hit["epoch"].iloc[0]) if len(hit) else None
    return out


def final_table(runs) -> pd.DataFrame:
    """Final accuracy, loss gap and accuracy gap per run."""
    scalars = runs.scalars
    last = scalars[scalars["epoch"] == scalars.groupby("run")["epoch"].transform("max")]
    names = ["gap/train_acc", "gap/test_acc", "gap/acc", "gap/loss"]
    table = last[last["name"].isin(names)].pivot_table(
        index="run", columns="name", values="value", sort=False
    )
    table = table[[n for n in names if n in table]]
    table.columns = [c.replace("gap/", "") for c in table.columns]
    fit = epochs_to_fit(scalars)
    table["epochs to 99% train acc"] = [
        "never" if fit.get(r) is None else str(fit[r]) for r in table.index
    ]
    return table.reset_index()


def information_table(runs) -> pd.DataFrame:
    """Final I(X;T) and I(T;Y) per probe and layer, one column per run."""
    info = runs.information
    info = info[info["estimator"] == ESTIMATOR]
    last = info[info["epoch"] == info.groupby("run")["epoch"].transform("max")]
    wide = last.pivot_table(
        index=["probe", "layer"],
        columns="run",
        values=["i_xt", "i_ty"],
        sort=False,
    )
    wide.columns = [f"{q} {r}" for q, r in wide.columns]
    return wide.reset_index()


def accuracy_figure(runs):
    """Training and test accuracy (top) and accuracy gap over epochs."""
    from ibmonitor.plotting import line_figure

    scalars = runs.scalars
    names = {"gap/train_acc": "train", "gap/test_acc": "test"}
    acc = scalars[scalars["name"].isin(names)].copy()
    acc["set"] = acc["name"].map(names)
    fig = line_figure(
        acc,
        x="epoch",
        y="value",
        color="run",
        dash="set",
        xtitle="epoch",
        ytitle="accuracy (train solid, test dashed)",
        log_x=True,
    )
    fig.update_yaxes(range=[0, 1.05])
    return fig


def gap_figure(runs):
    from ibmonitor.plotting import line_figure

    scalars = runs.scalars
    gap = scalars[scalars["name"] == "gap/acc"]
    fig = line_figure(
        gap,
        x="epoch",
        y="value",
        color="run",
        xtitle="epoch",
        ytitle="generalization gap (train - test accuracy)",
        log_x=True,
    )
    fig.update_traces(showlegend=False)  # same colours as the accuracy panel
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME, __doc__, epochs=FULL_EPOCHS, quick_epochs=QUICK_EPOCHS
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs")
    args = _common.parse_args(parser, argv)
    points = 6 if args.quick else 25
    clock = _common.Clock()
    _common.setup_torch(args.threads)

    from ibmonitor.plotting import combine_figures, information_plane
    from ibmonitor.storage import load_runs

    outdir = Path(args.outdir)
    print(
        f"Zhang et al.: {'-'.join(map(str, WIDTHS))} ReLU MLP on digits "
        f"({N_TRAIN} train / 797 test), true vs permuted training labels, "
        f"{args.epochs} epochs -> {outdir}"
    )
    jobs = [
        {
            "logdir": outdir / RUNS[labels],
            "labels": labels,
            "epochs": args.epochs,
            "seed": args.seed,
            "n_schedule": points,
            "tensorboard": args.tensorboard,
        }
        for labels in RUNS
    ]
    paths = _common.train_or_load(train_digits, jobs, args)
    runs = load_runs(paths)

    chance = 1.0 / WIDTHS[-1]
    _common.print_table(
        f"Final accuracy and generalization gap (chance = {chance:.2f}):",
        final_table(runs),
        precision=3,
    )
    _common.print_table(
        f"Final I(X;T) and I(T;Y) in bits (KDE, noise variance {NOISE_VARIANCE}), "
        "per probe and layer "
        f"(H(Y) = log2(10) = {np.log2(10):.2f}; train probe n = {N_TRAIN}: "
        f"I(X;T) <= {np.log2(N_TRAIN):.2f}):",
        information_table(runs),
    )

    panels = [accuracy_figure(runs)]
    titles = ["accuracy"]
    for probe in ("train", "test"):
        for path in paths:
            run = Path(path).name
            if probe == "test" and run == Path(paths[0]).name:
                panels.append(gap_figure(runs))
                titles.append("generalization gap")
            panels.append(information_plane(path, estimator=ESTIMATOR, probe=probe))
            titles.append(f"{run}: {probe} probe")
    fig = combine_figures(
        panels,
        titles,
        cols=3,
        shared_plane_axes="all",
        height=860,
        horizontal_spacing=0.08,
        title=(
            "Zhang et al.: true vs random labels, MLP on digits "
            f"(information planes: KDE, noise variance {NOISE_VARIANCE})"
        ),
    )
    print()
    _common.save_figure(fig, args, NAME, width=1400, height=860)
    _common.write_report(paths, args, "Zhang et al.: true vs random labels")
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
