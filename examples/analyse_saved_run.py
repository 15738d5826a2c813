"""Analyse saved runs with pandas: pivot, compare estimators and layers.

Usage::

    python examples/analyse_saved_run.py                 # makes a small run first
    python examples/analyse_saved_run.py runs/demo       # one run
    python examples/analyse_saved_run.py "runs/lr-*"     # several runs (a glob)

Without a path it trains the 12-bit tanh network for a few epochs in a
temporary folder, with :class:`ibmonitor.InformationMonitor` and stored
activations (or, where the monitor is unavailable, writes the same kind of run
with the run store's :class:`ibmonitor.storage.RunWriter`), then:

1. loads it with :func:`ibmonitor.load_runs` (plain pandas DataFrames),
2. pivots I(X;T) to an epoch x layer table,
3. recomputes the information plane from the stored activations with a
   second estimator (here a custom one, registered in a few lines) and
   compares the estimators layer by layer,
4. prints the summary and the per-layer compression table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import ibmonitor
from ibmonitor import estimators
from ibmonitor.analysis import (
    compression_table,
    estimate_from_activations,
    summary_table,
)
from ibmonitor.datasets import twelve_bit
from ibmonitor.estimators import InformationEstimate, entropy_from_counts
from ibmonitor.sinks import RunStore
from ibmonitor.storage import RunWriter, load_runs
from ibmonitor.zoo import tishby_mlp

EPOCHS = 40
RECORD = [0, 1, 2, 4, 8, 16, 39]


# -- a custom estimator, usable by the monitor and by estimate_from_activations --------


@estimators.register("quantized", inputs="ids")
def quantized(t, y, *, x=None, n_bins=12):
    """Plug-in estimate after binning every unit into ``n_bins`` on [-1, 1].

    The inputs are all distinct here, so I(X;T) = H(T) (x is not needed).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y).ravel()
    codes = np.clip(((t + 1.0) / 2.0 * n_bins).astype(np.int64), 0, n_bins - 1)
    _, t_ids = np.unique(codes, axis=0, return_inverse=True)
    t_ids = t_ids.ravel()
    h_t = entropy_from_counts(np.bincount(t_ids))
    h_t_given_y = 0.0
    for label in np.unique(y):
        mask = y == label
        h_t_given_y += mask.mean() * entropy_from_counts(np.bincount(t_ids[mask]))
    return InformationEstimate(
        "quantized", h_t, h_t - h_t_given_y, {"n_bins": n_bins}, {"h_t": h_t}
    )


def _layers(model):
    """Names of the tanh layers and the output, as named_modules gives them."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Tanh)]
    return [*names, str(len(model) - 1)]


def _train(model, x, y, on_epoch_end):
    """Full-batch Adam (a few seconds); calls ``on_epoch_end`` every epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        model.train()
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        acc = (out.argmax(1) == y).float().mean().item()
        on_epoch_end(epoch, train_loss=loss.item(), train_acc=acc)


def make_run(logdir: Path) -> Path:
    """Train a small network and record its information plane into ``logdir``."""
    torch.manual_seed(0)
    x_np, y_np = twelve_bit()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = tishby_mlp((12, 10, 7, 5, 2))
    try:
        monitor = ibmonitor.InformationMonitor(
            model,
            inputs=x,
            labels=y,
            estimators={"quantized": {"n_bins": 30}},
            schedule=RECORD,
            logdir=logdir,
            sinks=[RunStore(store_activations="float16")],
        )
    except (ImportError, AttributeError, NotImplementedError, TypeError) as err:
        print(f"(InformationMonitor unavailable: {err!r}; using RunWriter)")
        return _make_run_with_writer(model, x, y, logdir)
    with monitor:
        _train(model, x, y, monitor.on_epoch_end)
    return logdir


def _make_run_with_writer(model, x, y, logdir: Path) -> Path:
    """The fallback: record the same run by hand with the run store."""
    layers = _layers(model)
    modules = dict(model.named_modules())
    estimator = estimators.get("quantized", n_bins=30)
    config = {
        "layers": {name: {"module": type(modules[name]).__name__} for name in layers},
        "estimators": [{"name": "quantized", "params": {"n_bins": 30}}],
        "probes": {"default": {"n_samples": len(x)}},
        "schedule": {"epochs": RECORD},
        "seed": 0,
    }
    writer = RunWriter(logdir, config)

    def on_epoch_end(epoch, **scalars):
        writer.append_scalars(epoch, scalars)
        if epoch not in RECORD:
            return
        acts = {}
        hooks = [
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: acts.__setitem__(name, out.detach())
            )
            for name in layers
        ]
        try:
            model.eval()
            with torch.no_grad():
                model(x)
        finally:
            for hook in hooks:
                hook.remove()
        rows = []
        for name in layers:
            result = estimator(acts[name], y)
            rows.append({"epoch": epoch, "layer": name, **result.as_dict()})
        writer.append_information(rows)
        writer.save_activations(
            epoch,
            {"default": {n: a.numpy() for n, a in acts.items()}},
            labels={"default": y.numpy()},
            inputs={"default": x.numpy()},
            float16=True,
        )

    with writer:
        _train(model, x, y, on_epoch_end)
    return logdir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories or glob patterns")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 120)
    pd.set_option("display.max_columns", 20)
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.runs or [make_run(Path(tmp) / "tanh-12bit")]
        runs = load_runs(paths)
        info = runs.information  # run, epoch, probe, layer, estimator, i_xt, i_ty...
        print(f"Loaded {len(runs)} run(s): {runs.names}")
        print(f"{len(info)} rows; columns: {list(info.columns)}\n")

        # 1. Pivot: I(X;T) per epoch (rows) and layer (columns), one estimator.
        first = info["estimator"].iloc[0]
        pivot = info[info.estimator == first].pivot_table(
            index="epoch", columns="layer", values="i_xt", sort=False
        )
        print(f"I(X;T) in bits, estimator {first!r} (epochs x layers):")
        print(pivot.round(3).to_string(), "\n")

        # 2. Re-estimate from stored activations with another estimator/setting.
        for run in runs:
            if run.activation_epochs and run.status != "running":
                estimate_from_activations(
                    run, "quantized", {"n_bins": 8}, progress=False
                )
        runs = load_runs([run.path for run in runs])
        info = runs.information

        # 3. Compare estimators: one column per estimator, per layer and epoch.
        wide = info.pivot_table(
            index=["run", "layer", "epoch"],
            columns="estimator",
            values="i_xt",
            sort=False,
        )
        if wide.shape[1] > 1:
            print("I(X;T) by estimator, final epoch of each run:")
            last = info.groupby("run").epoch.max()
            final = wide[[e == last[r] for r, _, e in wide.index.to_list()]].droplevel(
                "epoch"
            )
            print(final.round(3).to_string(), "\n")
            base = wide.columns[0]
            diff = wide.sub(wide[base], axis=0).drop(columns=base)
            print(f"Mean difference to {base!r} over the epochs, per layer (bits):")
            print(diff.groupby(level="layer", sort=False).mean().round(3).to_string())
            print()

        # 4. Summary and compression (max I(X;T) - final I(X;T), in bits).
        print("Summary:")
        print(summary_table(runs).round(3).to_string(index=False), "\n")
        print("Compression per layer:")
        print(compression_table(runs).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
