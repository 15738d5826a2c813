"""Shared helpers of the paper-reproduction scripts in ``scripts/``.

Every reproduction script takes the same options (``--quick``, ``--outdir``,
``--gallery``, ``--jobs``, ``--threads``, ``--tensorboard``) and ends the same
way: an HTML report (:func:`ibmonitor.report.write_report`), a PNG figure
(:func:`ibmonitor.plotting.write_image`) and tables printed with pandas. This
module holds that common part (argument parsing, process pools, printing and
writing files) so that each script reads as its experiment; the figures are
composed by :mod:`ibmonitor.plotting` (``combine_figures``, ``line_figure``).

Not part of the installed package: the scripts import it as a sibling module.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import pandas as pd

#: The repository root (``scripts/..``) and the README gallery folder.
REPO = Path(__file__).resolve().parents[1]
GALLERY = REPO / "docs" / "images"


# ----------------------------------------------------------------- arguments
def make_parser(
    name: str,
    doc: Optional[str],
    *,
    seeds: Optional[Sequence[int]] = None,
    quick_seeds: Optional[Sequence[int]] = None,
    epochs: Optional[int] = None,
    quick_epochs: Optional[int] = None,
    points: Optional[int] = None,
    quick_points: Optional[int] = None,
    training: bool = True,
) -> argparse.ArgumentParser:
    """Return the argument parser shared by the reproduction scripts.

    Parameters
    ----------
    name : str
        The script's name: default output folder ``runs/<name>`` and figure
        ``<name>.png``.
    doc : str
        The script's module docstring (its first paragraph is the description).
    seeds, quick_seeds : sequence of int, optional
        Default seeds of the full and ``--quick`` modes; adds ``--seeds``.
    epochs, quick_epochs : int, optional
        Default epochs of the full and ``--quick`` modes; adds ``--epochs``.
    points, quick_points : int, optional
        Default number of log-spaced recorded epochs of the full and ``--quick``
        modes; adds ``--points``.
    training : bool, default=True
        Add ``--quick``, ``--jobs``, ``--threads`` and ``--tensorboard`` (the
        options of scripts that train).
    """
    description = (doc or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog=f"{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if training:
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a smoke run of a few seconds (fewer epochs and seeds; for tests)",
        )
    parser.add_argument(
        "--outdir",
        type=Path,
        default=Path("runs") / name,
        help=f"where the run directories, report.html and {name}.png go "
        f"(default: runs/{name})",
    )
    parser.add_argument(
        "--gallery",
        action="store_true",
        help=f"also write the figure to docs/images/{name}.png (README gallery)",
    )
    parser.add_argument(
        "--no-figure",
        dest="figure",
        action="store_false",
        help="skip the PNG (static export starts a headless Chromium)",
    )
    if seeds is not None:
        parser.add_argument(
            "--seeds",
            type=int,
            nargs="+",
            default=None,
            help=f"seeds to run (default: {' '.join(map(str, seeds))}; with "
            f"--quick: {' '.join(map(str, quick_seeds or seeds[:1]))})",
        )
    if epochs is not None:
        parser.add_argument(
            "--epochs",
            type=int,
            default=None,
            help=f"training epochs (default: {epochs}; with --quick: {quick_epochs})",
        )
    if points is not None:
        parser.add_argument(
            "--points",
            type=int,
            default=None,
            help=f"epochs recorded on the log-spaced schedule (default {points}; "
            f"quick {quick_points})",
        )
    if training:
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="training runs in parallel processes (default: min(2, CPU "
            "count), 1 with --quick)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch threads per process (default: 1; these networks are "
            "tiny, and more threads only contend)",
        )
        parser.add_argument(
            "--tensorboard",
            action="store_true",
            help="also write TensorBoard summaries into each run directory",
        )
        parser.add_argument(
            "--plot-only",
            action="store_true",
            help="train nothing: redraw the tables, figure and report from the "
            "run directories a previous run left in --outdir",
        )
    parser.set_defaults(_seeds=seeds, _quick_seeds=quick_seeds)
    parser.set_defaults(_epochs=epochs, _quick_epochs=quick_epochs)
    parser.set_defaults(_points=points, _quick_points=quick_points)
    return parser


def parse_args(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]
) -> argparse.Namespace:
    """Parse ``argv`` and fill the mode-dependent defaults (seeds, epochs, jobs)."""
    args = parser.parse_args(argv)
    if getattr(args, "_seeds", None) is not None and args.seeds is None:
        quick = args._quick_seeds or args._seeds[:1]
        args.seeds = list(quick if args.quick else args._seeds)
    if getattr(args, "_epochs", None) is not None and args.epochs is None:
        args.epochs = args._quick_epochs if args.quick else args._epochs
    if getattr(args, "_points", None) is not None and not args.points:
        args.points = args._quick_points if args.quick else args._points
    if getattr(args, "jobs", 0) is None:
        args.jobs = 1 if args.quick else max(1, min(2, os.cpu_count() or 1))
    if getattr(args, "threads", 1) < 1:
        parser.error(f"--threads must be at least 1. Got {args.threads} instead.")
    epochs = getattr(args, "epochs", None)
    if isinstance(epochs, int) and epochs < 1:
        parser.error(f"--epochs must be at least 1. Got {epochs} instead.")
    return args


def setup_torch(threads: int) -> None:
    """Set torch's intra-op threads and silence the expected estimator warnings.

    The networks of the reproductions are tiny: with several threads every
    small matrix product pays the thread pool's synchronisation, which on a
    2-core machine made a training step of the 12-bit network 2 times slower
    than on one thread (20 times under heavy load from other processes).
    """
    import torch

    torch.set_num_threads(threads)
    quiet_warnings()


def quiet_warnings() -> None:
    """Hide the warnings these experiments trigger on purpose.

    The first layers of the 12-bit network keep every one of the 4096 inputs
    apart, so the binned estimator warns that I(X;T) is pinned at 12 bits; that
    is the expected value here, not a problem to fix.
    """
    from ibmonitor.exceptions import EstimationWarning

    warnings.filterwarnings("ignore", category=EstimationWarning)
    warnings.filterwarnings("ignore", message=".*TensorBoard.*", category=UserWarning)


# ------------------------------------------------------------- parallel runs
def _call(fn: Callable[..., Any], threads: int, kwargs: Dict[str, Any]) -> Any:
    setup_torch(threads)
    return fn(**kwargs)


def run_all(
    fn: Callable[..., Any],
    jobs_kwargs: Sequence[Dict[str, Any]],
    *,
    jobs: int = 1,
    threads: int = 1,
) -> List[Any]:
    """Call ``fn(**kwargs)`` for each kwargs, in up to ``jobs`` processes.

    With ``jobs > 1`` the calls run in freshly spawned processes (no fork of
    a process that already holds torch's thread pools); ``fn`` must be
    importable (a library function or one defined at a script's top level).
    Results come back in the order of ``jobs_kwargs``.
    """
    if jobs <= 1 or len(jobs_kwargs) <= 1:
        setup_torch(threads)
        return [fn(**kwargs) for kwargs in jobs_kwargs]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(jobs_kwargs)), mp_context=context
    ) as pool:
        futures = [pool.submit(_call, fn, threads, kw) for kw in jobs_kwargs]
        return [f.result() for f in futures]


def train_or_load(
    fn: Callable[..., Any],
    jobs_kwargs: Sequence[Dict[str, Any]],
    args: argparse.Namespace,
) -> List[Path]:
    """Run the training jobs (see :func:`run_all`) and return their run paths.

    With ``--plot-only`` nothing is trained: the ``logdir`` of every job must
    already hold a finished run, whose path is returned.
    """
    if not getattr(args, "plot_only", False):
        return [
            Path(p)
            for p in run_all(fn, jobs_kwargs, jobs=args.jobs, threads=args.threads)
        ]
    import json

    paths = [Path(kw["logdir"]) for kw in jobs_kwargs]
    for path in paths:
        config = path / "run.json"
        status = json.loads(config.read_text())["status"] if config.is_file() else None
        if status != "finished":
            raise SystemExit(
                f"--plot-only needs the finished run {str(path)!r} (found "
                f"{'no run' if status is None else status!r}); run without "
                "--plot-only first, with the same --outdir, seeds and --quick."
            )
    return paths


# -------------------------------------------------------------------- output
class Clock:
    """Wall-clock seconds since construction; ``str()`` gives ``"93 s wall"``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.0f} s wall"


def print_table(
    title: str, frame: pd.DataFrame, *, precision: int = 2, index: bool = False
) -> None:
    """Print ``title`` and ``frame`` as plain text (floats to ``precision``)."""
    print(f"\n{title}")
    if frame.empty:
        print("  (empty)")
        return
    with pd.option_context(
        "display.width",
        200,
        "display.max_columns",
        40,
        "display.max_rows",
        200,
        "display.precision",
        precision,
    ):
        print(frame.to_string(index=index, float_format=f"{{:.{precision}f}}".format))


def save_figure(
    fig: Any,
    args: argparse.Namespace,
    name: str,
    *,
    width: int = 1200,
    height: int = 520,
) -> Optional[Path]:
    """Write ``fig`` as ``<outdir>/<name>.png`` (and the gallery copy).

    Static export needs kaleido and a Chromium; where either is missing the
    figure is written as standalone HTML instead (``<name>.html``, plotly.js
    inlined) and a note is printed, so a reproduction never fails for want of
    a browser. Returns the PNG path, or None.
    """
    from ibmonitor.plotting import write_image

    if not getattr(args, "figure", True):
        return None
    png = Path(args.outdir) / f"{name}.png"
    try:
        write_image(fig, png, width=width, height=height, scale=1.5)
    except (FileNotFoundError, ModuleNotFoundError, RuntimeError) as err:
        html = png.with_suffix(".html")
        fig.write_html(html, include_plotlyjs=True)
        print(f"(no PNG: {type(err).__name__}: {err}; wrote {html} instead)")
        return None
    print(f"Figure:  {png}")
    if getattr(args, "gallery", False):
        GALLERY.mkdir(parents=True, exist_ok=True)
        copy = GALLERY / f"{name}.png"
        copy.write_bytes(png.read_bytes())
        print(f"Gallery: {copy}")
    return png


def write_report(runs: Iterable[Path], args: argparse.Namespace, title: str) -> Path:
    """Write ``<outdir>/report.html`` for ``runs`` and print its path."""
    from ibmonitor.report import write_report as _write_report

    path = _write_report(list(runs), Path(args.outdir) / "report.html", title=title)
    print(f"Report:  {path}")
    return path


def main_guard(main: Callable[[Optional[Sequence[str]]], int]) -> None:
    """``sys.exit(main())`` for ``if __name__ == "__main__"``."""
    sys.exit(main(None))
