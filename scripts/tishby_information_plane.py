"""Shwartz-Ziv & Tishby (2017): the 12-bit task's information plane, mean of seeds.

Trains the 12-10-7-5-4-3-2 tanh network of "Opening the black box of deep
neural networks via information" on the 4096 inputs of the 12-bit task
(:func:`ibmonitor.datasets.twelve_bit`; Adam, learning rate 4e-4, batch 512, an
80 % training split) once per seed with :func:`ibmonitor.demo.train_twelve_bit`.
Every layer is recorded on all 4096 inputs at log-spaced epochs with the
paper's estimator: every unit's activity binned on 30 equally spaced edges in
[-1, 1] (``binned`` with ``value_range=(-1, 1)``, as Shwartz-Ziv & Tishby
binned the tanh range; the softmax output lies in [0, 1]). The figure
averages the trajectories over the seeds, as the paper's figures average 50
random initialisations.

Output (``--outdir``, default ``runs/tishby_information_plane``): one run
directory per seed (``seed-0``, ...), ``report.html``, and
``tishby_information_plane.png`` (``--gallery``: also
``docs/images/tishby_information_plane.png``). Printed: the phase table of the
mean trajectory (first, highest and final I(X;T) and I(T;Y) per layer, in
bits, and the compression = highest minus final I(X;T)) and the compression of
each seed.

Layers are named after the modules of :func:`ibmonitor.zoo.tishby_mlp`:
``tanh1`` (10 units), ``tanh2`` (7), ``tanh3`` (5), ``tanh4`` (4), ``tanh5``
(3) and ``softmax`` (the 2-unit output).

Usage::

    python scripts/tishby_information_plane.py              # 3 seeds x 1000 epochs
    python scripts/tishby_information_plane.py --quick      # 1 seed x 60 epochs
    python scripts/tishby_information_plane.py --seeds 0 1 2 3 4 --epochs 2000
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import pandas as pd

NAME = "tishby_information_plane"
FULL_EPOCHS, QUICK_EPOCHS = 1000, 60
FULL_SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
ESTIMATOR = "binned"


def mean_trajectory(information: pd.DataFrame) -> pd.DataFrame:
    """Average a multi-run information table per (estimator, layer, epoch)."""
    frame = information
    if "probe" in frame:
        frame = frame[frame["probe"] == frame["probe"].iloc[0]]
    keys = ["estimator", "layer", "epoch"]
    mean = frame.groupby(keys, sort=False)[["i_xt", "i_ty"]].mean().reset_index()
    return mean.sort_values(["estimator", "epoch"], kind="stable")


def per_seed_compression(runs, estimator: str = ESTIMATOR) -> pd.DataFrame:
    """Compression (highest minus final I(X;T), bits) per layer and seed."""
    from ibmonitor.analysis import compression_table

    table = compression_table(runs)
    table = table[table["estimator"] == estimator]
    wide = table.pivot_table(
        index="layer", columns="run", values="compression_bits", sort=False
    )
    wide.columns = [f"{c}" for c in wide.columns]
    wide["mean"] = wide.mean(axis=1)
    wide["sd"] = wide.drop(columns="mean").std(axis=1, ddof=1)
    return wide.reset_index()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME,
        __doc__,
        points=30,
        quick_points=6,
        seeds=FULL_SEEDS,
        quick_seeds=QUICK_SEEDS,
        epochs=FULL_EPOCHS,
        quick_epochs=QUICK_EPOCHS,
    )
    args = _common.parse_args(parser, argv)
    points = args.points
    clock = _common.Clock()
    _common.setup_torch(args.threads)

    from ibmonitor.demo import phase_table, train_twelve_bit
    from ibmonitor.plotting import information_plane
    from ibmonitor.storage import load_runs

    outdir = Path(args.outdir)
    print(
        f"Shwartz-Ziv & Tishby: 12-10-7-5-4-3-2 tanh network, 12-bit task, "
        f"{args.epochs} epochs x {len(args.seeds)} seed(s), binned estimator on "
        f"{points} log-spaced epochs -> {outdir}"
    )
    jobs = [
        {
            "logdir": outdir / f"seed-{seed}",
            "epochs": args.epochs,
            "seed": seed,
            "estimators": {ESTIMATOR: {"value_range": (-1.0, 1.0)}},
            "n_schedule": points,
            "tensorboard": args.tensorboard,
        }
        for seed in args.seeds
    ]
    paths = _common.train_or_load(train_twelve_bit, jobs, args)
    runs = load_runs(paths)

    mean = mean_trajectory(runs.information)
    table = phase_table(mean, ESTIMATOR)
    _common.print_table(
        f"Phase table of the mean trajectory over {len(paths)} seed(s) "
        "(bits, binned estimator):",
        table,
    )
    if len(paths) > 1:
        _common.print_table(
            "Compression per seed (highest minus final I(X;T), bits):",
            per_seed_compression(runs),
        )
    scalars = runs.scalars
    last = scalars[scalars["epoch"] == scalars.groupby("run")["epoch"].transform("max")]
    acc = last[last["name"].isin(["train_acc", "test_acc"])].pivot_table(
        index="run", columns="name", values="value", sort=False
    )
    _common.print_table("Final accuracy per seed:", acc.reset_index(), precision=3)

    fig = information_plane(
        runs,
        estimator=ESTIMATOR,
        average_seeds=len(paths) > 1,
        title=(
            "Shwartz-Ziv & Tishby 12-bit task, tanh 12-10-7-5-4-3-2: binned "
            "information plane, "
            + (f"mean of {len(paths)} seeds" if len(paths) > 1 else "1 seed")
        ),
    )
    print()
    _common.save_figure(fig, args, NAME, width=1000, height=560)
    _common.write_report(paths, args, "Shwartz-Ziv & Tishby 12-bit task")
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
