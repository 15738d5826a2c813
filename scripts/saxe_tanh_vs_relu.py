"""Saxe et al. (2018): the same network with tanh and with ReLU; does each compress?

"On the information bottleneck theory of deep learning" (Saxe, Bansal, Dapello,
Advani, Kolchinsky, Tracey & Cox, ICLR 2018) trained Shwartz-Ziv & Tishby's
12-10-7-5-4-3-2 network on the 12-bit task with tanh and with ReLU hidden
units and found that the compression phase comes from the double-sided
saturation of tanh: the tanh layers compress, the ReLU layers do not. This
script repeats that comparison with :func:`ibmonitor.demo.train_twelve_bit`
(Adam, learning rate 4e-4, batch 512, an 80 % training split) for each
activation and seed, recording all 4096 inputs at log-spaced epochs with two
estimators whose settings do not adapt to the layer:

- ``binned`` with a fixed ``bin_size=0.07``: each activation becomes
  ``floor(t / 0.07)``. 0.07 is about the bin width of Shwartz-Ziv & Tishby's
  30 bins on [-1, 1] (2 / 29 = 0.069), extended to unbounded ReLU activity;
  it is the ``binsize`` of the estimator code released with Saxe et al.'s
  estimators (Kolchinsky & Tracey's ``ibsgd``). A fixed width matters: with a
  per-layer min..max range, growing ReLU activity would be rebinned coarser.
- ``kde`` (the pairwise-distance upper bound of Kolchinsky & Tracey, 2017)
  with ``noise_variance=0.1``: activity is treated as corrupted by Gaussian
  noise of variance 0.1. The released code's default is 1e-3; at 1e-3 the
  4096 distinct inputs stay apart in the wide layers, so the bound sits near
  log2(4096) = 12 bits there and shows little. 0.1 (noise of standard
  deviation 0.32, about a sixth of the tanh range) resolves the dynamics of
  every layer; it is a choice made here, not a value checked against the
  paper.

Output (``--outdir``, default ``runs/saxe_tanh_vs_relu``): run directories
``tanh-seed-0``, ``relu-seed-0``, ..., ``report.html`` with all runs, and
``saxe_tanh_vs_relu.png`` (the tanh and ReLU planes side by side, one row per
estimator, averaged over seeds; ``--gallery``: also in ``docs/images/``).
Printed: per layer, the compression (highest minus final I(X;T), bits,
mean over seeds) of each activation and estimator, and the final accuracy.

Layers: the hidden layers ``tanh1`` ... ``tanh5`` (``relu1`` ... ``relu5``)
have 10, 7, 5, 4 and 3 units and appear in the tables as ``hidden 1`` ...
``hidden 5``; ``softmax`` is the output, which saturates in both networks and
is reported apart.

Usage::

    python scripts/saxe_tanh_vs_relu.py              # 2 seeds x 1000 epochs each
    python scripts/saxe_tanh_vs_relu.py --quick      # 1 seed x 60 epochs each
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import pandas as pd

NAME = "saxe_tanh_vs_relu"
FULL_EPOCHS, QUICK_EPOCHS = 1000, 60
FULL_SEEDS, QUICK_SEEDS = (0, 1), (0,)
ACTIVATIONS = ("tanh", "relu")
BIN_SIZE = 0.07
NOISE_VARIANCE = 0.1
ESTIMATORS = {
    "binned": {"bin_size": BIN_SIZE},
    "kde": {"noise_variance": NOISE_VARIANCE},
}
LABELS = {
    "binned": f"binned, bin size {BIN_SIZE}",
    "kde": f"KDE upper bound, noise variance {NOISE_VARIANCE}",
}
OUTPUT_LAYER = "softmax"


def compression_by_activation(runs) -> pd.DataFrame:
    """Mean compression (bits) per layer, activation and estimator."""
    from ibmonitor.analysis import compression_table

    table = compression_table(runs)
    table["activation"] = table["run"].str.split("-").str[0]
    table["layer"] = table["layer"].str.replace(
        r"^(?:tanh|relu)(\d+)$", r"hidden \1", regex=True
    )
    table = table[table["activation"].isin(ACTIVATIONS)]
    return (
        table.groupby(["estimator", "activation", "layer"], sort=False)
        .agg(
            i_xt_max=("i_xt_max", "mean"),
            i_xt_final=("i_xt_final", "mean"),
            compression=("compression_bits", "mean"),
            compression_sd=("compression_bits", "std"),
            i_ty_final=("i_ty_final", "mean"),
        )
        .reset_index()
    )


def verdict_table(comp: pd.DataFrame) -> pd.DataFrame:
    """Compression side by side: rows layer, columns (estimator, activation)."""
    wide = comp.pivot_table(
        index="layer",
        columns=["estimator", "activation"],
        values="compression",
        sort=False,
    )
    order = [(e, a) for e in ESTIMATORS for a in ACTIVATIONS if (e, a) in wide]
    wide = wide[order]
    wide.columns = [f"{e} {a}" for e, a in order]
    hidden = wide.drop(index=OUTPUT_LAYER, errors="ignore")
    wide.loc["hidden (sum)"] = hidden.sum()
    return wide.reset_index()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME,
        __doc__,
        points=20,
        quick_points=4,
        seeds=FULL_SEEDS,
        quick_seeds=QUICK_SEEDS,
        epochs=FULL_EPOCHS,
        quick_epochs=QUICK_EPOCHS,
    )
    args = _common.parse_args(parser, argv)
    points = args.points
    clock = _common.Clock()
    _common.setup_torch(args.threads)

    from ibmonitor.demo import train_twelve_bit
    from ibmonitor.plotting import combine_figures, information_plane
    from ibmonitor.storage import load_runs

    outdir = Path(args.outdir)
    print(
        f"Saxe et al.: 12-10-7-5-4-3-2 network with tanh and with ReLU, "
        f"{args.epochs} epochs x {len(args.seeds)} seed(s) each; binned "
        f"(bin size {BIN_SIZE}) and KDE (noise variance {NOISE_VARIANCE}) on "
        f"{points} log-spaced epochs -> {outdir}"
    )
    jobs = [
        {
            "logdir": outdir / f"{activation}-seed-{seed}",
            "epochs": args.epochs,
            "seed": seed,
            "activation": activation,
            "estimators": ESTIMATORS,
            "n_schedule": points,
            "tensorboard": args.tensorboard,
        }
        for activation in ACTIVATIONS
        for seed in args.seeds
    ]
    paths = _common.train_or_load(train_twelve_bit, jobs, args)
    runs = load_runs(paths)

    comp = compression_by_activation(runs)
    _common.print_table(
        "Compression per layer: highest minus final I(X;T) in bits, mean over "
        f"{len(args.seeds)} seed(s) (softmax = the output layer):",
        verdict_table(comp),
    )
    _common.print_table(
        "Highest and final I(X;T), final I(T;Y) (bits, mean over seeds):",
        comp.drop(columns=["compression_sd"]),
    )
    scalars = runs.scalars
    last = scalars[scalars["epoch"] == scalars.groupby("run")["epoch"].transform("max")]
    acc = last[last["name"].isin(["train_acc", "test_acc"])].pivot_table(
        index="run", columns="name", values="value", sort=False
    )
    _common.print_table("Final accuracy:", acc.reset_index(), precision=3)

    panels, titles = [], []
    for estimator in ESTIMATORS:
        for activation in ACTIVATIONS:
            mine = [p for p in paths if Path(p).name.startswith(f"{activation}-")]
            panels.append(
                information_plane(
                    load_runs(mine),
                    estimator=estimator,
                    average_seeds=len(mine) > 1,
                )
            )
            titles.append(f"{activation}: {LABELS[estimator]}")
    fig = combine_figures(
        panels,
        titles,
        cols=2,
        shared_plane_axes="row",
        height=900,
        title=(
            "Saxe et al.: tanh vs ReLU on the 12-bit task, "
            + (f"mean of {len(args.seeds)} seeds" if len(args.seeds) > 1 else "1 seed")
        ),
    )
    print()
    _common.save_figure(fig, args, NAME, width=1200, height=900)
    _common.write_report(paths, args, "Saxe et al.: tanh vs ReLU")
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
