"""Shang et al. (2016): do the lower convolutional layers learn opposite-phase pairs?

"Understanding and improving convolutional neural networks via concatenated
rectified linear units" (Shang, Sohn, Almeida & Lee, ICML 2016) found that
the first convolutional layers of AlexNet hold pairs of filters of opposite
phase: for each filter ``phi_i`` its most negatively correlated partner,
``mu_i = min_j cos(phi_i, phi_j)``, is near -1 far more often than for
Gaussian random filters of the same shape, while the histograms of the upper
layers match the random ones. Their reading: a ReLU discards the negative
half of a linear response, so a lower layer that needs both phases learns
both filters (which motivated CReLU).

This script repeats the measurement at a small scale: a four-layer CNN on
scikit-learn's 8x8 digits (:func:`ibmonitor.datasets.digits`) upsampled
bilinearly to 16x16 and standardised, 1000 training and 797 test images:
``conv1`` 32 filters of 7x7 (49 values each), max-pool, ``conv2`` 32 of
3x3x32, max-pool, ``conv3`` 64 of 3x3x32, ``conv4`` 64 of 3x3x64 (all ReLU),
global average pool and a linear classifier ``fc``. Trained with SGD
(momentum 0.9, learning rate 0.05, weight decay 5e-4, batch 50), as AlexNet
was, for 40 epochs per seed. :func:`ibmonitor.geometry.pairing_table` reads
every layer at initialisation and at the end; the baseline is
:func:`ibmonitor.geometry.random_pairing` of each layer's shape.

Output (``--outdir``, default ``runs/shang_crelu_pairing``):
``geometry_shang_crelu_pairing.csv`` (per seed, layer and time: the summary
scalars), ``geometry_shang_crelu_pairing.html`` (interactive figure) and,
unless ``--no-figure``, the PNG (``--gallery``: also
``docs/images/geometry_shang_crelu_pairing.png``): one histogram of ``mu`` per
layer, trained (pooled over seeds) against initialisation and the random
baseline, as the paper's Figure 1. Printed: test accuracy per seed and per
layer the mean ``mu`` at initialisation, after training and for random
filters, their difference and the fraction of filters with ``mu <= -0.9``.

Usage::

    python scripts/shang_crelu_pairing.py            # 3 seeds x 40 epochs
    python scripts/shang_crelu_pairing.py --quick    # 1 seed x 5 epochs
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np
import pandas as pd

NAME = "geometry_shang_crelu_pairing"
FULL_EPOCHS, QUICK_EPOCHS = 40, 5
FULL_SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
N_TRAIN = 1000
BATCH_SIZE = 50
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
THRESHOLD = -0.9
RANDOM_DRAWS = 20
LAYERS = ("conv1", "conv2", "conv3", "conv4", "fc")


def make_cnn(channels: Sequence[int] = (32, 32, 64, 64), kernel1: int = 7):
    """Return the CNN for 16x16 digits; modules named ``conv1`` .. ``conv4``, ``fc``."""
    from collections import OrderedDict

    from torch import nn

    c1, c2, c3, c4 = channels
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, c1, kernel1, padding=kernel1 // 2)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(c1, c2, 3, padding=1)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),
                ("relu3", nn.ReLU()),
                ("conv4", nn.Conv2d(c3, c4, 3, padding=1)),
                ("relu4", nn.ReLU()),
                ("gap", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(c4, 10)),
            ]
        )
    )


def digits_16(seed: int = 0):
    """Return (x_train, y_train, x_test, y_test): 16x16 standardised digits."""
    import torch
    from torch import nn

    from ibmonitor import datasets

    images, labels = datasets.digits()
    x = nn.functional.interpolate(
        torch.as_tensor(images), scale_factor=2, mode="bilinear", align_corners=False
    )
    x = (x - x.mean()) / x.std()
    y = torch.as_tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:N_TRAIN], perm[N_TRAIN:]
    return x[train], y[train], x[test], y[test]


def _rows(table: pd.DataFrame, seed: int, when: str) -> List[Dict]:
    return [
        {
            "seed": seed,
            "when": when,
            "layer": row["layer"],
            "n_filters": row["n_filters"],
            "filter_size": row["filter_size"],
            "mean_mu": row["mean_mu"],
            "min_mu": row["min_mu"],
            "frac_below": row["frac_below"],
            "random_mean_mu": row["random_mean_mu"],
            "mu": " ".join(f"{v:.5f}" for v in row["mu"]),
        }
        for _, row in table.iterrows()
    ]


def train_seed(
    *, seed: int, epochs: int, channels: Sequence[int] = (32, 32, 64, 64)
) -> Dict:
    """Train one CNN; return its pairing rows (init and trained) and accuracy."""
    import torch
    from torch import nn

    from ibmonitor.geometry import pairing_table

    x_train, y_train, x_test, y_test = digits_16(0)
    torch.manual_seed(seed)
    model = make_cnn(channels)
    rows = _rows(
        pairing_table(model, layers=LAYERS, threshold=THRESHOLD, seed=seed),
        seed,
        "init",
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(N_TRAIN, generator=order).split(BATCH_SIZE):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    rows += _rows(
        pairing_table(model, layers=LAYERS, threshold=THRESHOLD, seed=seed),
        seed,
        "trained",
    )
    return {"rows": rows, "accuracy": accuracy, "seed": seed}


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per layer: init, trained and random mean mu, pairs."""
    wide = frame.pivot_table(
        index="layer",
        columns="when",
        values=["mean_mu", "frac_below", "min_mu"],
        aggfunc="mean",
        sort=False,
    )
    random_mean = frame.groupby("layer", sort=False)["random_mean_mu"].mean()
    out = pd.DataFrame(
        {
            "layer": wide.index,
            "filter_size": frame.groupby("layer", sort=False)["filter_size"].first(),
            "mean mu init": wide[("mean_mu", "init")],
            "mean mu trained": wide[("mean_mu", "trained")],
            "mean mu random": random_mean,
            "trained - random": wide[("mean_mu", "trained")] - random_mean,
            "min mu trained": wide[("min_mu", "trained")],
            f"frac mu<={THRESHOLD} trained": wide[("frac_below", "trained")],
        }
    )
    return out.reset_index(drop=True)


def _density(values: np.ndarray, bins: np.ndarray):
    hist, edges = np.histogram(values, bins=bins, density=True)
    return (edges[:-1] + edges[1:]) / 2, hist


def figure(frame: pd.DataFrame, shapes: Dict[str, tuple]):
    """One histogram panel per layer: trained and init mu, random baseline."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from ibmonitor.geometry import random_pairing

    layers = list(dict.fromkeys(frame["layer"]))
    fig = make_subplots(
        rows=1,
        cols=len(layers),
        subplot_titles=[
            f"{layer} ({shapes[layer][0]} filters of {int(np.prod(shapes[layer][1:]))})"
            for layer in layers
        ],
        horizontal_spacing=0.04,
    )
    bins = np.linspace(-1.0, 0.2, 31)
    styles = {
        "trained": {"color": "#1f77b4", "dash": "solid", "name": "trained"},
        "init": {"color": "#7f7f7f", "dash": "dot", "name": "initialisation"},
    }
    for col, layer in enumerate(layers, start=1):
        rows = frame[frame["layer"] == layer]
        for when, style in styles.items():
            mu = np.concatenate(
                [
                    np.array(s.split(), dtype=float)
                    for s in rows[rows["when"] == when]["mu"]
                ]
            )
            fig.add_trace(
                go.Histogram(
                    x=mu,
                    xbins={"start": -1.0, "end": 0.2, "size": 0.04},
                    histnorm="probability density",
                    name=style["name"],
                    legendgroup=style["name"],
                    showlegend=col == 1,
                    marker={"color": style["color"]},
                    opacity=0.75 if when == "trained" else 0.35,
                ),
                row=1,
                col=col,
            )
        baseline = np.concatenate(
            [random_pairing(shapes[layer], seed=1000 + s) for s in range(RANDOM_DRAWS)]
        )
        centres, density = _density(baseline, bins)
        fig.add_trace(
            go.Scatter(
                x=centres,
                y=density,
                mode="lines",
                name="Gaussian random filters",
                legendgroup="random",
                showlegend=col == 1,
                line={"color": "#d62728", "width": 2},
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(
            title_text="mu = min_j cos(phi_i, phi_j)", range=[-1.0, 0.2], row=1, col=col
        )
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_layout(
        barmode="overlay",
        template="plotly_white",
        title={
            "text": "Shang et al.: pairing of filters per layer, CNN on 16x16 digits "
            "(histogram of each filter's most negative cosine with another)",
            "x": 0.01,
        },
        legend={"orientation": "h", "y": -0.22, "x": 0.0},
        margin={"l": 60, "r": 30, "t": 80, "b": 90},
    )
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME,
        __doc__,
        seeds=FULL_SEEDS,
        quick_seeds=QUICK_SEEDS,
        epochs=FULL_EPOCHS,
        quick_epochs=QUICK_EPOCHS,
    )
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=(32, 32, 64, 64),
        help="filters of conv1 .. conv4 (default: 32 32 64 64)",
    )
    args = _common.parse_args(parser, argv)
    clock = _common.Clock()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    print(
        f"Shang et al.: CNN {'-'.join(map(str, args.channels))} on 16x16 digits "
        f"({N_TRAIN} train / 797 test), SGD, {args.epochs} epochs x "
        f"{len(args.seeds)} seed(s) -> {outdir}"
    )
    jobs = [
        {"seed": seed, "epochs": args.epochs, "channels": tuple(args.channels)}
        for seed in args.seeds
    ]
    results = _common.run_all(train_seed, jobs, jobs=args.jobs, threads=args.threads)
    frame = pd.DataFrame([row for result in results for row in result["rows"]])
    csv = outdir / f"{NAME}.csv"
    frame.to_csv(csv, index=False)
    _common.print_table(
        "Test accuracy per seed:",
        pd.DataFrame(
            {
                "seed": [r["seed"] for r in results],
                "accuracy": [r["accuracy"] for r in results],
            }
        ),
        precision=3,
    )
    _common.print_table(
        f"Mean mu per layer (mean over {len(results)} seed(s); random: Gaussian "
        "filters of the layer's shape; more negative = more paired):",
        summary_table(frame),
        precision=3,
    )
    model = make_cnn(tuple(args.channels))
    shapes = {
        name: tuple(dict(model.named_modules())[name].weight.shape) for name in LAYERS
    }
    fig = figure(frame, shapes)
    html = outdir / f"{NAME}.html"
    fig.write_html(html, include_plotlyjs=True)
    print(f"\nTable:   {csv}\nHTML:    {html}")
    _common.save_figure(fig, args, NAME, width=1500, height=420)
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
