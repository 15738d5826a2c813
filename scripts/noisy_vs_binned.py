"""Goldfeld et al. (2019): the tanh demo's plane, binned and with Gaussian noise.

Trains Shwartz-Ziv & Tishby's 12-10-7-5-4-3-2 tanh network on the 12-bit task
(:func:`ibmonitor.datasets.twelve_bit`; Adam, learning rate 4e-4, batch 512,
an 80 % training split, as :func:`ibmonitor.demo.train_twelve_bit`) and
watches it with two monitors at the same log-spaced epochs:

* ``deterministic``: the plain network on all 4096 inputs, with the binned
  estimator of the demo (30 edges in [-1, 1]) and the ``noisy`` estimator
  (Goldfeld et al.'s sample propagation) with noise of standard deviation
  ``--noise-std`` added at the measured layer only, ``T = S + Z``;
* ``noisy-network``: Goldfeld et al.'s noisy network, the same noise injected
  into *every* hidden tanh layer during the recording pass only
  (the monitor's ``recording_noise``, never during training), so that the
  noise of one layer propagates through the later ones; the probe is a
  random subset of ``--probe-inputs`` inputs, each fed ``--repeats`` times, so
  that the rows of one input are samples of the layer given that input.

Output (``--outdir``, default ``runs/noisy_vs_binned``): the run directories
``seed-<s>/deterministic`` and ``seed-<s>/noisy-network``, ``report.html``,
and the three planes side by side as ``noisy_vs_binned.html`` (always) and,
with ``--gallery``, ``noisy_vs_binned.png`` and
``docs/images/noisy_vs_binned.png``. Printed: the phase table of each plane
(first, highest and final I(X;T) and I(T;Y) per layer, in bits, and the
compression = highest minus final I(X;T)) and the final accuracies.

Usage::

    python scripts/noisy_vs_binned.py              # 1 seed x 2000 epochs
    python scripts/noisy_vs_binned.py --quick      # 1 seed x 60 epochs
    python scripts/noisy_vs_binned.py --noise-std 0.05 --gallery
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import numpy as np
import pandas as pd

NAME = "noisy_vs_binned"
FULL_EPOCHS, QUICK_EPOCHS = 2000, 60
FULL_SEEDS, QUICK_SEEDS = (0,), (0,)
NOISE_STD = 0.1
#: Probe of the noisy network: inputs x repeats (full, quick).
PROBE_INPUTS, QUICK_PROBE_INPUTS = 512, 128
REPEATS, QUICK_REPEATS = 8, 4
BINNED = {"value_range": (-1.0, 1.0)}
#: (run subfolder, estimator, short name, panel title) of the three planes.
PANELS = (
    (
        "deterministic",
        "binned",
        "binned",
        "binned (30 edges in [-1, 1]), deterministic network",
    ),
    (
        "deterministic",
        "noisy",
        "noisy at layer",
        "noisy estimator, noise at the measured layer only",
    ),
    (
        "noisy-network",
        "noisy",
        "noisy network",
        "noisy network: noise in every hidden layer",
    ),
)


def _split(n: int, seed: int, fraction: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = round(fraction * n)
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def train(
    outdir: Path,
    *,
    epochs: int,
    seed: int,
    noise_std: float,
    probe_inputs: int,
    repeats: int,
    points: int,
    tensorboard: bool = False,
) -> Tuple[Path, Path]:
    """Train the tanh network once under both monitors; return their run paths."""
    import torch
    from torch import nn

    from ibmonitor import InformationMonitor, datasets, zoo
    from ibmonitor.measures import generalization_gap
    from ibmonitor.sinks import RunStore, TensorBoard

    x_np, y_np = datasets.twelve_bit()
    train_idx, test_idx = _split(len(y_np), seed)
    torch.manual_seed(seed)
    model = zoo.tishby_mlp(activation="tanh", softmax_output=True)
    mlp = model[:-1]  # the logits; shares its parameters with ``model``
    x = torch.as_tensor(x_np, dtype=torch.float32)
    y = torch.as_tensor(y_np, dtype=torch.int64)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=4e-4)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)

    chosen = np.sort(
        np.random.default_rng(seed + 1).choice(len(y_np), probe_inputs, replace=False)
    )
    rows = np.repeat(chosen, repeats)
    paths = (outdir / "deterministic", outdir / "noisy-network")

    def monitor(
        logdir: Path, inputs, labels, estimators, noise=None
    ) -> InformationMonitor:
        return InformationMonitor(
            model,
            inputs=inputs,
            labels=labels,
            estimators=estimators,
            schedule=f"log:{points}",
            total_epochs=epochs,
            logdir=logdir,
            sinks=[RunStore(overwrite=True), *([TensorBoard()] if tensorboard else [])],
            seed=seed,
            batch_size=len(labels),
            overhead_budget=None,
            recording_noise=noise,
            config={"noise_std": noise_std, "probe_inputs": probe_inputs},
        )

    noisy_spec = {"noisy": {"noise_std": noise_std}}
    plain = monitor(paths[0], x, y, {"binned": BINNED, **noisy_spec})
    # The noisy network: noise in the recording pass only (the monitor's
    # recording_noise), never during training.
    noisy_net = monitor(paths[1], x[rows], y[rows], noisy_spec, noise=noise_std)
    train_x, train_y = x[train_idx], y[train_idx]
    with plain, noisy_net:
        for epoch in range(epochs):
            mlp.train()
            order = torch.randperm(len(train_idx), generator=generator)
            for start in range(0, len(order), 512):
                batch = order[start : start + 512]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(mlp(train_x[batch]), train_y[batch]).backward()
                optimizer.step()
            scalars: Dict[str, float] = {}
            if plain.should_record(epoch):
                gap = generalization_gap(
                    mlp,
                    loss_fn,
                    (train_x, train_y),
                    (x[test_idx], y[test_idx]),
                    batch_size=len(y),
                )
                scalars = {"train_acc": gap.train_acc, "test_acc": gap.test_acc}
            plain.on_epoch_end(epoch, **scalars)
            noisy_net.on_epoch_end(epoch)
    return paths


def _finished(path: Path) -> bool:
    config = path / "run.json"
    return config.is_file() and json.loads(config.read_text())["status"] == "finished"


def compression_summary(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Compression (highest minus final I(X;T), bits) per layer and plane."""
    wide = pd.concat(
        {title: t.set_index("layer")["compression"] for title, t in tables.items()},
        axis=1,
    )
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
    parser.add_argument(
        "--noise-std",
        type=float,
        default=NOISE_STD,
        help=f"standard deviation of the Gaussian noise (default {NOISE_STD})",
    )
    parser.add_argument(
        "--probe-inputs",
        type=int,
        default=None,
        help="inputs of the noisy network's probe (default "
        f"{PROBE_INPUTS}; quick {QUICK_PROBE_INPUTS})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"times each probe input is fed (default {REPEATS}; quick "
        f"{QUICK_REPEATS})",
    )
    args = _common.parse_args(parser, argv)
    if not args.noise_std > 0:
        parser.error(f"--noise-std must be > 0. Got {args.noise_std} instead.")
    quick = args.quick
    probe_inputs = args.probe_inputs or (QUICK_PROBE_INPUTS if quick else PROBE_INPUTS)
    repeats = args.repeats or (QUICK_REPEATS if quick else REPEATS)
    if not 2 <= probe_inputs <= 4096 or repeats < 1:
        parser.error("--probe-inputs must be in [2, 4096] and --repeats at least 1.")
    clock = _common.Clock()
    _common.setup_torch(args.threads)

    from ibmonitor.demo import phase_table
    from ibmonitor.plotting import combine_figures, information_plane
    from ibmonitor.storage import load_runs

    outdir = Path(args.outdir)
    sigma = args.noise_std
    print(
        f"Goldfeld et al.: 12-10-7-5-4-3-2 tanh network, 12-bit task, {args.epochs} "
        f"epochs x {len(args.seeds)} seed(s); binned and noisy (noise_std {sigma}) "
        f"on {args.points} log-spaced epochs; noisy network on {probe_inputs} "
        f"inputs x {repeats} -> {outdir}"
    )
    runs: Dict[str, List[Path]] = {"deterministic": [], "noisy-network": []}
    for seed in args.seeds:
        folder = outdir / f"seed-{seed}"
        paths = (folder / "deterministic", folder / "noisy-network")
        if args.plot_only:
            missing = [str(p) for p in paths if not _finished(p)]
            if missing:
                raise SystemExit(
                    f"--plot-only needs the finished runs {missing}; run without "
                    "--plot-only first, with the same --outdir and seeds."
                )
        else:
            paths = train(
                folder,
                epochs=args.epochs,
                seed=seed,
                noise_std=sigma,
                probe_inputs=probe_inputs,
                repeats=repeats,
                points=args.points,
                tensorboard=args.tensorboard,
            )
        runs["deterministic"].append(paths[0])
        runs["noisy-network"].append(paths[1])

    tables: Dict[str, pd.DataFrame] = {}
    panels, titles = [], []
    for kind, estimator, short, title in PANELS:
        loaded = load_runs(runs[kind])
        info = loaded.information
        keys = ["estimator", "layer", "epoch"]
        mean = info.groupby(keys, sort=False)[["i_xt", "i_ty"]].mean().reset_index()
        table = phase_table(mean.sort_values(["epoch"], kind="stable"), estimator)
        tables[short] = table
        _common.print_table(f"Phase table, {title} (bits):", table)
        panels.append(
            information_plane(
                loaded, estimator=estimator, average_seeds=len(runs[kind]) > 1
            )
        )
        titles.append(title)
    _common.print_table(
        "Compression, highest minus final I(X;T) (bits):",
        compression_summary(tables),
    )
    scalars = load_runs(runs["deterministic"]).scalars
    last = scalars[scalars["epoch"] == scalars.groupby("run")["epoch"].transform("max")]
    acc = last[last["name"].isin(["train_acc", "test_acc"])].pivot_table(
        index="run", columns="name", values="value", sort=False
    )
    _common.print_table("Final accuracy:", acc.reset_index(), precision=3)

    fig = combine_figures(
        panels,
        titles,
        shared_plane_axes="all",
        title=(
            "12-bit task, tanh 12-10-7-5-4-3-2: binned vs Goldfeld et al.'s noisy "
            f"estimator (noise_std {sigma}; noisy network on {probe_inputs} inputs "
            f"x {repeats})"
        ),
    )
    outdir.mkdir(parents=True, exist_ok=True)
    html = outdir / f"{NAME}.html"
    fig.write_html(html, include_plotlyjs=True)
    print(f"\nFigure:  {html}")
    if args.gallery:  # static export starts a headless Chromium
        _common.save_figure(fig, args, NAME, width=1500, height=560)
    _common.write_report(
        [*runs["deterministic"], *runs["noisy-network"]],
        args,
        "Binned vs noisy (Goldfeld et al.) information planes",
    )
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
