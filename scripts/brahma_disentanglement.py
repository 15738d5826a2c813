"""Brahma, Wu & She (2016): deeper layers flatten and separate the class manifolds.

"Why deep learning works: a manifold disentanglement perspective" (IEEE
TNNLS 27(10), 2016) measured, layer by layer, how a deep network disentangles
the class manifolds of its input: each class's manifold becomes flatter and
the classes move apart. This script repeats the measurement at a small scale:
a ReLU MLP 64-128-128-128-128-10 (:func:`ibmonitor.zoo.tishby_mlp`; Adam,
learning rate 1e-3, batch 100) trained on 1000 of scikit-learn's 8x8 digits
(:func:`ibmonitor.datasets.digits`), with the other 797 images as the probe
set.

At log-spaced numbers of epochs (0 = the initialisation) every layer is
recorded on the probe set (:func:`ibmonitor.recording.record_activations`:
the input pixels, the four ReLU layers ``relu1`` .. ``relu4`` and the logits
``fc5``) and :func:`ibmonitor.geometry.layer_geometry` computes per layer:

- ``separation``: tr(S_B) / tr(S_W), between- over within-class scatter;
- ``flattening``: mean ratio of the 10-NN-graph geodesic to the Euclidean
  distance within each class (1.0 = flat);
- ``probe_accuracy`` and ``usable_information`` (bits): a logistic-regression
  probe fitted on 70 % of the probe set and scored on the other 30 %.

Output (``--outdir``, default ``runs/brahma_disentanglement``):
``geometry_brahma_disentanglement.csv`` (tidy: epoch, depth, layer, measure,
value), ``geometry_brahma_disentanglement.html`` (interactive figure) and,
unless ``--no-figure``, the PNG (``--gallery``: also
``docs/images/geometry_brahma_disentanglement.png``): each measure against
depth, one line per recorded epoch. Printed: the measures per layer at the
first and last recorded epoch and the trend of each measure over depth
(Spearman correlation with depth) at every recorded epoch.

Usage::

    python scripts/brahma_disentanglement.py            # 100 epochs, 6 recordings
    python scripts/brahma_disentanglement.py --quick    # 10 epochs, 3 recordings
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np
import pandas as pd

NAME = "geometry_brahma_disentanglement"
FULL_EPOCHS, QUICK_EPOCHS = 100, 10
FULL_POINTS, QUICK_POINTS = 6, 3
N_TRAIN = 1000
BATCH_SIZE = 100
LR = 1e-3
MEASURES = {
    "separation": "separation tr(S_B)/tr(S_W)",
    "flattening": "flattening (geodesic/Euclidean)",
    "probe_accuracy": "linear probe accuracy",
    "usable_information": "usable information (bits)",
}


def recorded_epochs(epochs: int, points: int) -> List[int]:
    """0 and ``points - 1`` log-spaced epoch counts up to ``epochs`` (1: the end)."""
    if points <= 1:
        return [epochs]
    spaced = np.rint(np.geomspace(1, epochs, points - 1)).astype(int).tolist()
    return sorted({0, *spaced, epochs})


def digits_split(seed: int = 0, probe_size: Optional[int] = None):
    """Return (x_train, y_train, x_probe, y_probe) as float32 / int64 tensors."""
    import torch

    from ibmonitor import datasets

    images, labels = datasets.digits()
    x = torch.as_tensor(images).flatten(1)
    y = torch.as_tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, probe = perm[:N_TRAIN], perm[N_TRAIN:]
    if probe_size is not None:
        probe = probe[:probe_size]
    return x[train], y[train], x[probe], y[probe]


def measure_layers(model, layers, x_probe, y_probe, *, epoch: int, k: int, seed: int):
    """Geometry of the input and of every layer: rows of the tidy table."""
    from ibmonitor.geometry import layer_geometry
    from ibmonitor.recording import record_activations

    acts = {"input": x_probe, **record_activations(model, layers, x_probe)}
    rows = []
    for depth, (layer, t) in enumerate(acts.items()):
        values = layer_geometry(t, y_probe, flattening_k=k, max_samples=None, seed=seed)
        for measure, value in values.items():
            rows.append(
                {
                    "epoch": epoch,
                    "depth": depth,
                    "layer": layer,
                    "measure": measure,
                    "value": value,
                }
            )
    return rows


def run(
    *,
    epochs: int,
    points: int,
    width: int = 128,
    hidden: int = 4,
    seed: int = 0,
    probe_size: Optional[int] = None,
    k: int = 10,
) -> pd.DataFrame:
    """Train the MLP, measuring every layer at the recorded epochs."""
    import torch
    from torch import nn

    from ibmonitor import zoo

    x_train, y_train, x_probe, y_probe = digits_split(0, probe_size)
    torch.manual_seed(seed)
    widths = (64, *([width] * hidden), 10)
    model = zoo.tishby_mlp(widths, activation="relu")
    layers = [f"relu{i}" for i in range(1, hidden + 1)] + [f"fc{hidden + 1}"]
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    record = set(recorded_epochs(epochs, points))
    rows = []
    for epoch in range(epochs + 1):
        if epoch in record:
            rows += measure_layers(
                model, layers, x_probe, y_probe, epoch=epoch, k=k, seed=seed
            )
        if epoch == epochs:
            break
        model.train()
        for batch in torch.randperm(N_TRAIN, generator=order).split(BATCH_SIZE):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
    return pd.DataFrame(rows)


def wide_table(frame: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """Measures (columns) per layer (rows) at one epoch."""
    rows = frame[frame["epoch"] == epoch]
    table = rows.pivot_table(
        index=["depth", "layer"], columns="measure", values="value", sort=False
    )
    return table[[m for m in MEASURES if m in table]].reset_index()


def trend_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each measure with depth, per recorded epoch."""
    from scipy.stats import spearmanr

    out = []
    for epoch, rows in frame.groupby("epoch", sort=True):
        entry = {"epoch": epoch}
        for measure in MEASURES:
            sub = rows[rows["measure"] == measure]
            if sub["value"].nunique() > 1:
                entry[measure] = float(spearmanr(sub["depth"], sub["value"])[0])
            else:
                entry[measure] = float("nan")
        out.append(entry)
    return pd.DataFrame(out)


def figure(frame: pd.DataFrame):
    """One panel per measure: value against depth, one line per epoch."""
    from ibmonitor.plotting import combine_figures, line_figure

    layers = frame.drop_duplicates("depth").sort_values("depth")
    panels, titles = [], []
    tidy = frame.assign(run=frame["epoch"].map(lambda e: f"epoch {e}"))
    for measure, title in MEASURES.items():
        rows = tidy[tidy["measure"] == measure]
        fig = line_figure(
            rows, x="depth", y="value", color="run", xtitle="layer", ytitle=title
        )
        fig.update_xaxes(
            tickvals=layers["depth"].tolist(), ticktext=layers["layer"].tolist()
        )
        panels.append(fig)
        titles.append(title)
    return combine_figures(
        panels,
        titles,
        cols=4,
        shared_plane_axes=None,
        horizontal_spacing=0.06,
        title=(
            "Brahma et al.: class-manifold geometry per layer, ReLU MLP on digits "
            "(probe set of held-out images)"
        ),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(
        NAME,
        __doc__,
        epochs=FULL_EPOCHS,
        quick_epochs=QUICK_EPOCHS,
        points=FULL_POINTS,
        quick_points=QUICK_POINTS,
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the run")
    parser.add_argument("--width", type=int, default=128, help="hidden width")
    parser.add_argument("--hidden", type=int, default=4, help="hidden layers")
    parser.add_argument(
        "--probe-size",
        type=int,
        default=None,
        help="probe images (default: all 797 held out)",
    )
    parser.add_argument("--k", type=int, default=10, help="flattening neighbours")
    args = _common.parse_args(parser, argv)
    clock = _common.Clock()
    _common.setup_torch(args.threads)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    print(
        f"Brahma et al.: 64-{'-'.join([str(args.width)] * args.hidden)}-10 ReLU MLP "
        f"on digits ({N_TRAIN} train), {args.epochs} epochs, geometry at epochs "
        f"{recorded_epochs(args.epochs, args.points)} -> {outdir}"
    )
    frame = run(
        epochs=args.epochs,
        points=args.points,
        width=args.width,
        hidden=args.hidden,
        seed=args.seed,
        probe_size=args.probe_size,
        k=args.k,
    )
    csv = outdir / f"{NAME}.csv"
    frame.to_csv(csv, index=False)
    first, last = int(frame["epoch"].min()), int(frame["epoch"].max())
    _common.print_table(
        f"Geometry per layer at epoch {first} (initialisation):",
        wide_table(frame, first),
        precision=3,
    )
    _common.print_table(
        f"Geometry per layer at epoch {last}:", wide_table(frame, last), precision=3
    )
    _common.print_table(
        "Spearman correlation of each measure with depth (+1: grows with every "
        "layer; flattening should fall):",
        trend_table(frame),
        precision=2,
    )
    fig = figure(frame)
    html = outdir / f"{NAME}.html"
    fig.write_html(html, include_plotlyjs=True)
    print(f"\nTable:   {csv}\nHTML:    {html}")
    _common.save_figure(fig, args, NAME, width=1500, height=480)
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
