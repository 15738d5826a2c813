"""The main job: Shwartz-Ziv & Tishby's information plane on the 12-bit task.

``make demo`` (or ``ibmonitor demo``) trains the 12-10-7-5-4-3-2 tanh network on
:func:`ibmonitor.datasets.twelve_bit` with Adam (learning rate 4e-4, batch 512,
an 80 % training split as in the paper), while an
:class:`~ibmonitor.InformationMonitor` records every layer on all 4096 inputs on
the log-spaced schedule with the binned and KDE estimators and the
generalization gap. It writes the run to ``runs/demo/`` and
``runs/demo/report.html`` and prints a table of the first, highest and final
I(X;T) and I(T;Y) (bits, binned estimator) per layer.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import datasets, zoo
from .exceptions import EstimationWarning
from .measures import generalization_gap

__all__ = ["DemoResult", "phase_table", "run_demo", "train_twelve_bit"]

logger = logging.getLogger(__name__)

#: Epochs of the full demo and of ``--quick``.
FULL_EPOCHS = 2000
QUICK_EPOCHS = 300


class DemoResult(dict):
    """What :func:`run_demo` returns: ``logdir``, ``report``, ``table``, ``seconds``."""


def _split(n: int, seed: int, train_fraction: float = 0.8):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = round(train_fraction * n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def train_twelve_bit(
    logdir: Union[str, Path],
    *,
    epochs: int = FULL_EPOCHS,
    seed: int = 0,
    activation: str = "tanh",
    estimators=("binned", "kde"),
    n_schedule: int = 40,
    lr: float = 4e-4,
    batch_size: int = 512,
    data=None,
    overwrite: bool = True,
    tensorboard: bool = True,
    verbose: bool = False,
    store_activations: Union[bool, str] = False,
) -> Path:
    """Train Shwartz-Ziv & Tishby's network on the 12-bit task under the monitor.

    The network ends in a softmax module (the output layer of the original), so
    the monitor records it as a layer; training minimises cross-entropy on the
    logits before it.

    Parameters
    ----------
    logdir : str or Path
        Run directory (overwritten when ``overwrite``).
    epochs : int, default=2000
        Training epochs; information is recorded on ``n_schedule`` log-spaced
        epochs among them.
    seed : int, default=0
        Seeds the split, the initialisation and the batches.
    activation : {"tanh", "relu"}, default="tanh"
        Hidden-layer activation.
    estimators : sequence, default=("binned", "kde")
        Estimators for the monitor (names, or ``{name: params}``).
    n_schedule : int, default=40
        Points of the log-spaced schedule.
    lr, batch_size : float, int
        Adam's learning rate and the minibatch size.
    data : tuple of ndarray, optional
        ``(x, y)``; default :func:`ibmonitor.datasets.twelve_bit`.
    overwrite, tensorboard, verbose : bool
        Passed to the monitor.
    store_activations : bool or {"float32", "float16"}, default=False
        Passed to the run store (needed by ``ibmonitor sensitivity`` and
        ``ibmonitor estimate``).

    Returns
    -------
    logdir : Path
        The run directory.
    """
    from .monitor import InformationMonitor
    from .sinks import RunStore, TensorBoard

    x_np, y_np = datasets.twelve_bit() if data is None else data
    train_idx, test_idx = _split(len(y_np), seed)
    torch.manual_seed(seed)
    model = zoo.tishby_mlp(activation=activation, softmax_output=True)
    mlp = model[:-1]  # the logits; shares its parameters with ``model``
    x = torch.as_tensor(x_np, dtype=torch.float32)
    y = torch.as_tensor(y_np, dtype=torch.int64)
    x_train, y_train, x_test, y_test = (
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
    )
    optimizer = torch.optim.Adam(mlp.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)

    monitor = InformationMonitor(
        model,
        inputs=x,
        labels=y,
        estimators=estimators,
        schedule=f"log:{n_schedule}",
        total_epochs=epochs,
        logdir=logdir,
        sinks=[
            RunStore(overwrite=overwrite, store_activations=store_activations),
            *([TensorBoard()] if tensorboard else []),
        ],
        verbose=verbose,
        seed=seed,
        batch_size=len(y),
        overhead_budget=None,  # one recording batch: 4096 tiny vectors
    )
    with monitor:
        for epoch in range(epochs):
            mlp.train()
            order = torch.randperm(len(y_train), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(mlp(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
            scalars = {}
            if monitor.should_record(epoch):
                scalars = _gap_scalars(
                    mlp, loss_fn, (x_train, y_train), (x_test, y_test)
                )
            monitor.on_epoch_end(epoch, **scalars)
    return Path(logdir)


def _gap_scalars(mlp, loss_fn, train, test) -> Dict[str, float]:
    """Loss and accuracy on both splits, and their gaps (one batch each)."""
    gap = generalization_gap(
        mlp, loss_fn, train, test, batch_size=max(len(train[1]), len(test[1]))
    )
    return {
        "train_loss": gap.train_loss,
        "train_acc": gap.train_acc,
        "test_loss": gap.test_loss,
        "test_acc": gap.test_acc,
        "gap/loss": gap.loss_gap,
        "gap/acc": gap.acc_gap,
    }


def phase_table(information: pd.DataFrame, estimator: str = "binned") -> pd.DataFrame:
    """First, highest and final I(X;T) and I(T;Y) (bits) per layer.

    Also the epoch of the highest I(X;T) and the compression, highest minus
    final I(X;T), in bits (:func:`ibmonitor.analysis.compression_table`), for
    the first probe.
    """
    from .analysis import compression_table

    frame = information[information["estimator"] == estimator]
    if "probe" in frame:
        frame = frame[frame["probe"] == frame["probe"].iloc[0]]
    else:  # e.g. a trajectory averaged over runs
        frame = frame.assign(probe="")
    peaks = compression_table(frame).set_index("layer")
    rows = []
    for layer, group in frame.groupby("layer", sort=False):
        group = group.sort_values("epoch", kind="stable")
        peak = peaks.loc[layer]
        rows.append(
            {
                "layer": layer,
                "I(X;T) first": group["i_xt"].iloc[0],
                "I(X;T) max": peak["i_xt_max"],
                "epoch of max": int(peak["epoch_max_i_xt"]),
                "I(X;T) final": peak["i_xt_final"],
                "compression": peak["compression_bits"],
                "I(T;Y) first": group["i_ty"].iloc[0],
                "I(T;Y) max": group["i_ty"].max(),
                "I(T;Y) final": peak["i_ty_final"],
            }
        )
    return pd.DataFrame(rows)


def run_demo(
    logdir: Union[str, Path] = "runs/demo",
    *,
    quick: bool = False,
    epochs: Optional[int] = None,
    seed: int = 0,
    report: bool = True,
) -> DemoResult:
    """Run the demo, write the report and print the summary (see module docstring).

    Parameters
    ----------
    logdir : str or Path, default="runs/demo"
        Run directory; the report goes to ``logdir/report.html``.
    quick : bool, default=False
        Train for 300 epochs instead of 2000, recording 20 log-spaced epochs
        instead of 40 (for the tests).
    epochs : int, optional
        Overrides the number of epochs.
    seed : int, default=0
        Seed of the split, initialisation and batches.
    report : bool, default=True
        Write ``report.html``.

    Returns
    -------
    result : DemoResult
        ``logdir``, ``report`` (path or None), ``table`` (DataFrame), ``seconds``.
    """
    n_epochs = epochs or (QUICK_EPOCHS if quick else FULL_EPOCHS)
    # The network is tiny: one thread is faster than several (no thread
    # start-up and spinning per 512 x 12 matrix product), and on a shared
    # machine several threads can be ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            # The first tanh layers keep all 4096 inputs apart (12 bits): the
            # binned estimator's "every sample in its own bin" warning is the
            # expected picture there, not a problem to report at every epoch.
            warnings.simplefilter("ignore", EstimationWarning)
            return _run_demo(logdir, n_epochs, seed, report, 20 if quick else 40)
    finally:
        torch.set_num_threads(threads)


def _run_demo(
    logdir, n_epochs: int, seed: int, report: bool, n_schedule: int
) -> DemoResult:
    from .storage import load_run

    start = time.perf_counter()
    print(
        f"Training the 12-10-7-5-4-3-2 tanh network on the 12-bit task for "
        f"{n_epochs} epochs; recording every layer on a log schedule ..."
    )
    # The activations are stored (about 0.7 MB per recorded epoch) so that
    # `ibmonitor sensitivity` and `ibmonitor estimate` can re-estimate the run.
    path = train_twelve_bit(
        logdir,
        epochs=n_epochs,
        seed=seed,
        n_schedule=n_schedule,
        store_activations=True,
    )
    run = load_run(path)
    report_path = None
    if report:
        from .report import write_report

        report_path = write_report([path], path / "report.html")
    table = phase_table(run.information)
    seconds = time.perf_counter() - start
    with pd.option_context("display.width", 160, "display.precision", 2):
        print("\nBinned information plane (bits), per layer:")
        print(table.to_string(index=False))
    final = run.scalars[run.scalars["epoch"] == run.scalars["epoch"].max()]
    accs = dict(zip(final["name"], final["value"]))
    if "train_acc" in accs:
        print(
            f"\nFinal accuracy: train {accs['train_acc']:.3f}, "
            f"test {accs.get('test_acc', float('nan')):.3f}"
        )
    print(f"\nRun directory: {path}")
    if report_path is not None:
        print(f"Report:        {report_path}")
    print(f"TensorBoard:   ibmonitor tensorboard {path}")
    print(
        f"Sensitivity:   ibmonitor sensitivity {path} --estimator binned "
        "--grid n_bins=10,30,100"
    )
    print(f"Took {seconds:.0f} s.")
    return DemoResult(logdir=path, report=report_path, table=table, seconds=seconds)
