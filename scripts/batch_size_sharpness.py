"""Keskar et al. (2017): do large batches find sharper minima that generalize worse?

"On large-batch training for deep learning: generalization gap and sharp
minima" (Keskar, Mudigere, Nocedal, Smelyanskiy & Tang, ICLR 2017) found that
networks trained with large batches converge to sharper minima (a larger
worst-case loss increase in a small box around the weights) and generalize
worse than with small batches. This script repeats the comparison at a small
scale: a 64-256-128-10 ReLU MLP (:func:`ibmonitor.zoo.tishby_mlp` with these
widths) on scikit-learn's 8x8 digits
(:func:`ibmonitor.datasets.digits`; 1200 training and 597 test images) with
Adam (learning rate 1e-3, as Keskar et al. used Adam), once with batches of 32
(small batch, SB) and once with the full training set as one batch of 1200
(large batch, LB), per seed.

The LB network takes one step per epoch, so it is trained for 10 times as
many epochs (1000 against 100; 1000 against 3800 steps) to reach a training
loss comparable with SB's: comparing at equal epochs would compare an
unconverged LB network, sharper merely because it sits higher on the loss
surface.

An :class:`ibmonitor.InformationMonitor` records, on log-spaced epochs, the
information plane (binned estimator, on the training images) and the measures
of :mod:`ibmonitor.measures`: the generalization gap (``gap``), the top
eigenvalue of the Hessian of the training loss (``hessian``, Lanczos) and
Keskar et al.'s worst-case sharpness (``sharpness``: the largest relative
loss increase, in percent, in the box ``|z_i| <= eps (|w_i| + 1)`` with
``eps = 1e-3``, over the full parameter space; projected sign-gradient ascent
instead of the paper's L-BFGS-B).

Output (``--outdir``, default ``runs/batch_size_sharpness``): run directories
``small-batch-seed-0``, ``large-batch-seed-0``, ..., ``report.html`` and
``batch_size_sharpness.png`` (sharpness, top Hessian eigenvalue, accuracy and
gap over epochs; ``--gallery``: also in ``docs/images/``). Printed: the final
values per run, and the mean per regime with the LB / SB ratio.

Usage::

    python scripts/batch_size_sharpness.py            # seeds 0 1 2
    python scripts/batch_size_sharpness.py --quick    # 1 seed, 5 / 30 epochs
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, Union

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import pandas as pd

NAME = "batch_size_sharpness"
FULL_SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
N_TRAIN = 1200
WIDTHS = (64, 256, 128, 10)
LR = 1e-3
EPS = 1e-3
#: regime -> (batch size, full epochs, quick epochs)
REGIMES = {
    "small-batch": (32, 100, 5),
    "large-batch": (N_TRAIN, 1000, 30),
}
MEASURES = {
    "gap": {},
    "hessian": {"k": 1, "trace": False},
    "sharpness": {"eps": EPS},
}
COLUMNS = {
    "gap/train_loss": "train loss",
    "gap/train_acc": "train acc",
    "gap/test_acc": "test acc",
    "gap/acc": "acc gap",
    "gap/loss": "loss gap",
    "sharpness/worst_case": "sharpness %",
    "hessian/top_eigenvalue": "top eigenvalue",
}


def make_mlp():
    """Return the 64-256-128-10 ReLU MLP (outputs logits)."""
    from ibmonitor import zoo

    return zoo.tishby_mlp(WIDTHS, activation="relu")


def train_regime(
    logdir: Union[str, Path],
    *,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    n_schedule: int = 12,
    tensorboard: bool = False,
) -> Path:
    """Train the MLP with one batch size under the monitor (with measures)."""
    import torch
    from torch import nn

    from ibmonitor import (
        InformationMonitor,
        MeasureSet,
        RunStore,
        TensorBoard,
        datasets,
    )

    images, labels = datasets.digits()
    x = torch.as_tensor(images).flatten(1)
    y = torch.as_tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:N_TRAIN], perm[N_TRAIN:]
    x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]

    torch.manual_seed(seed)
    model = make_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(seed)
    monitor = InformationMonitor(
        model,
        inputs=x_train,
        labels=y_train,
        estimators=("binned",),
        schedule=f"log:{n_schedule}",
        sinks=[RunStore(overwrite=True), *([TensorBoard()] if tensorboard else [])],
        measures=MeasureSet(
            MEASURES,
            loss_fn=loss_fn,
            train_data=(x_train, y_train),
            test_data=(x_test, y_test),
            schedule=f"log:{n_schedule}",
        ),
        total_epochs=epochs,
        logdir=logdir,
        seed=seed,
        config={
            "experiment": "batch_size_sharpness",
            "batch_size": batch_size,
            "lr": LR,
            "widths": list(WIDTHS),
        },
        overhead_budget=None,
    )
    with monitor:
        for epoch in range(epochs):
            model.train()
            for batch in torch.randperm(N_TRAIN, generator=order_gen).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x_train[batch]), y_train[batch]).backward()
                optimizer.step()
            monitor.on_epoch_end(epoch)
    return Path(logdir)


def regime_of(run: str) -> str:
    return run.rsplit("-seed-", 1)[0]


def final_values(runs) -> pd.DataFrame:
    """The last recorded value of each measure, one row per run."""
    scalars = runs.scalars
    scalars = scalars[scalars["name"].isin(COLUMNS)]
    last = scalars.sort_values("epoch").groupby(["run", "name"], sort=False).last()
    table = last["value"].unstack("name")
    table = table[[c for c in COLUMNS if c in table]].rename(columns=COLUMNS)
    table.insert(0, "regime", [regime_of(r) for r in table.index])
    order = {r: i for i, r in enumerate(runs.names)}
    table = table.sort_index(key=lambda idx: idx.map(order))
    return table.reset_index()


def regime_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean (and sd) per regime, and the large / small ratio."""
    numeric = table.drop(columns=["run"]).groupby("regime", sort=False)
    mean = numeric.mean()
    sd = numeric.std(ddof=1)
    rows = []
    for regime in mean.index:
        rows.append(mean.loc[[regime]].rename(index=lambda r: f"{r} mean"))
        if numeric.size()[regime] > 1:
            rows.append(sd.loc[[regime]].rename(index=lambda r: f"{r} sd"))
    if {"small-batch", "large-batch"} <= set(mean.index):
        ratio = mean.loc["large-batch"] / mean.loc["small-batch"]
        rows.append(ratio.to_frame("large / small").T)
    return pd.concat(rows).reset_index(names="")


def curves(runs, name: str, ytitle: str, *, log_y: bool = False):
    from ibmonitor.plotting import line_figure

    scalars = runs.scalars
    frame = scalars[scalars["name"] == name].copy()
    frame["regime"] = frame["run"].map(regime_of)
    frame["seed"] = (
        frame["run"].str.rsplit("-seed-", n=1).str[1].map(lambda s: f"seed {s}")
    )
    return line_figure(
        frame,
        x="epoch",
        y="value",
        color="regime",
        dash="seed",
        xtitle="epoch",
        ytitle=ytitle,
        log_x=True,
        log_y=log_y,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME,
        __doc__,
        seeds=FULL_SEEDS,
        quick_seeds=QUICK_SEEDS,
        points=12,
        quick_points=4,
    )
    parser.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        metavar=("SMALL", "LARGE"),
        default=None,
        help="epochs of the small- and large-batch runs (default: 100 1000; "
        "with --quick: 5 30)",
    )
    args = _common.parse_args(parser, argv)
    points = args.points
    epochs = (
        dict(zip(REGIMES, args.epochs))
        if args.epochs
        else {
            regime: quick if args.quick else full
            for regime, (_, full, quick) in REGIMES.items()
        }
    )
    if min(epochs.values()) < 1:
        parser.error(f"--epochs must be at least 1. Got {args.epochs} instead.")
    clock = _common.Clock()
    _common.setup_torch(args.threads)

    from ibmonitor.plotting import combine_figures
    from ibmonitor.storage import load_runs

    outdir = Path(args.outdir)
    desc = ", ".join(
        f"{regime} (batch {bs}, {epochs[regime]} epochs)"
        for regime, (bs, _, _) in REGIMES.items()
    )
    print(
        f"Keskar et al.: {'-'.join(map(str, WIDTHS))} ReLU MLP on digits, {desc}, "
        f"seeds {' '.join(map(str, args.seeds))} -> {outdir}"
    )
    jobs = [
        {
            "logdir": outdir / f"{regime}-seed-{seed}",
            "batch_size": bs,
            "epochs": epochs[regime],
            "seed": seed,
            "n_schedule": points,
            "tensorboard": args.tensorboard,
        }
        for seed in args.seeds
        for regime, (bs, _, _) in REGIMES.items()
    ]
    paths = _common.train_or_load(train_regime, jobs, args)
    runs = load_runs(paths)

    table = final_values(runs)
    _common.print_table(
        f"Final values per run (sharpness: worst case in percent, eps = {EPS:g}; "
        "top eigenvalue of the training-loss Hessian):",
        table,
        precision=4,
    )
    _common.print_table("Per regime:", regime_summary(table), precision=4)

    panels = [
        curves(runs, "sharpness/worst_case", f"worst-case sharpness (%), eps {EPS:g}"),
        curves(runs, "hessian/top_eigenvalue", "top Hessian eigenvalue", log_y=True),
        curves(runs, "gap/test_acc", "test accuracy"),
        curves(runs, "gap/loss", "loss gap (test - train)"),
    ]
    titles = [
        "worst-case sharpness",
        "top Hessian eigenvalue",
        "test accuracy",
        "generalization gap (loss)",
    ]
    fig = combine_figures(
        panels,
        titles,
        cols=2,
        shared_plane_axes=None,
        height=820,
        title=("Keskar et al.: small batch (32) vs large batch (1200, full) on digits"),
    )
    print()
    _common.save_figure(fig, args, NAME, width=1200, height=820)
    _common.write_report(paths, args, "Keskar et al.: small vs large batch")
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
