"""The ``ibmonitor`` command: a thin face over the public functions.

Commands
--------
demo         train the 12-bit tanh network and draw its information plane
summary      print a short table of a run
estimate     recompute information from a run's stored activations
sensitivity  re-estimate a run over a grid of estimator parameters; do the
             fitting and compression phases survive the choice?
report       write a self-contained HTML report of one or more runs
tensorboard  start TensorBoard on a run directory and print its URL
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def _parse_param(text: str):
    """Parse ``key=value`` into (key, value), reading numbers and literals."""
    import ast

    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"--param must look like key=value. Got {text!r}."
        )
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _split_values(text: str) -> list:
    """Split ``a,b,(c,d)`` at the commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _literal(raw: str):
    """Read a number, tuple, True/False/None or quoted string; else the text."""
    import ast

    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_grid(texts: Sequence[str]) -> dict:
    """Parse ``--grid`` options (``n_bins=10,30,100``) into ``{name: [values]}``.

    Values are split at commas outside brackets (``value_range=(-1,1),(-2,2)``
    gives two tuples) and read as Python literals: ``10`` is an int, ``0.05``
    and ``1e-3`` are floats, ``True``/``None`` what they say, anything else a
    string (``strategy=uniform,quantile``).

    Parameters
    ----------
    texts : sequence of str
        One ``name=v1,v2,...`` per grid parameter.

    Returns
    -------
    grid : dict of str to list

    Raises
    ------
    InvalidParameterError
        A text without ``=``, an empty name or value, or a parameter given
        twice.
    """
    from .exceptions import InvalidParameterError

    grid: dict = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidParameterError(
                f"--grid must look like name=v1,v2,... (e.g. n_bins=10,30,100). "
                f"Got {text!r}."
            )
        values = _split_values(raw)
        if any(v == "" for v in values):
            raise InvalidParameterError(
                f"--grid {name}= has an empty value in {raw!r}; separate values "
                "with single commas, e.g. n_bins=10,30,100."
            )
        if name in grid:
            raise InvalidParameterError(
                f"--grid gives {name!r} twice; list all its values in one option."
            )
        grid[name] = [_literal(v) for v in values]
    return grid


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``ibmonitor`` command."""
    parser = argparse.ArgumentParser(
        prog="ibmonitor",
        description="Information planes, generalization gap and sharpness of "
        "PyTorch training runs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo", help="train the 12-bit tanh network (Shwartz-Ziv & Tishby)"
    )
    p.add_argument("--quick", action="store_true", help="a much shorter run")
    p.add_argument("--logdir", default="runs/demo", help="run directory")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("summary", help="print a short table of a run")
    p.add_argument("run", help="run directory")

    p = sub.add_parser("estimate", help="recompute information from stored activations")
    p.add_argument("run", help="run directory (recorded with store_activations=True)")
    p.add_argument("--estimator", required=True, help="registered estimator name")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        type=_parse_param,
        metavar="KEY=VALUE",
        help="estimator parameter (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="estimate even when the run looks like it is still being written "
        "(a run that crashed on another machine stays 'running')",
    )

    p = sub.add_parser(
        "sensitivity",
        help="re-estimate stored activations over a grid of estimator parameters",
        description="Re-estimate a run from its stored activations at every point "
        "of a grid of estimator parameters (the product of several --grid "
        "options), print per layer and grid value the compression and fitting "
        "(bits) and whether they survive the grid, and write an HTML figure. "
        "The run directory is not changed.",
    )
    p.add_argument("run", help="run directory (recorded with store_activations=True)")
    p.add_argument("--estimator", required=True, help="registered estimator name")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="NAME=V1,V2,...",
        help="a parameter and its values, e.g. n_bins=10,30,100, bin_size=0.05,0.5 "
        "or noise_variance=0.01,0.1 (repeatable: the grid is the product)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        type=_parse_param,
        metavar="KEY=VALUE",
        help="an estimator parameter held fixed, e.g. value_range=(-1,1) (repeatable)",
    )
    p.add_argument("--probe", nargs="+", default=None, help="probe sets (default all)")
    p.add_argument("--layers", nargs="+", default=None, help="layers (default all)")
    p.add_argument(
        "--epochs", nargs="+", type=int, default=None, help="epochs (default all)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.1,
        help="bits a phase must exceed to count as present (default 0.1)",
    )
    p.add_argument(
        "-o",
        "--out",
        default="sensitivity.html",
        help="HTML figure to write (default sensitivity.html)",
    )
    p.add_argument("--no-figure", action="store_true", help="write no figure")
    p.add_argument(
        "--long", action="store_true", help="also print the table of every epoch"
    )
    p.add_argument("--csv", default=None, help="write the table of every epoch here")
    p.add_argument(
        "--device", default=None, help="torch device to estimate on, e.g. cuda"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("report", help="write a self-contained HTML report")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("-o", "--output", default="report.html", help="output HTML file")

    p = sub.add_parser("tensorboard", help="start TensorBoard on a run directory")
    p.add_argument("logdir", help="run directory or a folder of runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6006)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``ibmonitor`` command; return its exit status."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return _dispatch(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"ibmonitor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # read-only disk, permission denied, disk full, ...
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        reason = err.strerror or str(err)
        print(
            f"ibmonitor {args.command}: error: cannot write or read{where}: "
            f"{reason}. Check that the run directory is writable (or pass "
            "another output path).",
            file=sys.stderr,
        )
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        run_demo(
            logdir=args.logdir, quick=args.quick, epochs=args.epochs, seed=args.seed
        )
        return 0
    if args.command == "summary":
        from .analysis import summary_table
        from .storage import load_run

        print(summary_table(load_run(args.run)).to_string(index=False))
        return 0
    if args.command == "estimate":
        from .analysis import estimate_from_activations

        frame = estimate_from_activations(
            args.run,
            args.estimator,
            dict(args.param),
            progress=not args.no_progress,
            force=args.force,
        )
        print(frame.to_string(index=False))
        return 0
    if args.command == "sensitivity":
        return _sensitivity(args)
    if args.command == "report":
        from .report import write_report

        path = write_report(args.runs, args.output)
        print(path)
        return 0
    if args.command == "tensorboard":
        from .tensorboard.launch import launch

        return launch(args.logdir, host=args.host, port=args.port)
    raise AssertionError(args.command)  # pragma: no cover - argparse guards this


#: Columns of the summary that ``ibmonitor sensitivity`` prints.
_PRINTED = [
    "epoch_max_i_xt",
    "i_xt_max",
    "i_xt_final",
    "compression_bits",
    "fitting_bits",
    "i_ty_final",
    "pinned_epochs",
    "compression_verdict",
    "fitting_verdict",
]


def _bits(value: float) -> str:
    return f"{value:.3f}"


def _sensitivity(args: argparse.Namespace) -> int:
    import math
    import warnings

    import pandas as pd

    from .analysis import sensitivity, sensitivity_summary
    from .exceptions import InvalidParameterError

    grid = parse_grid(args.grid)
    if not math.isfinite(args.threshold) or args.threshold < 0:
        raise InvalidParameterError(
            f"--threshold must be a number of bits >= 0. Got {args.threshold}."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = sensitivity(
            args.run,
            args.estimator,
            grid,
            params=dict(args.param),
            epochs=args.epochs,
            probes=args.probe,
            layers=args.layers,
            device=args.device,
            progress=not args.no_progress,
        )
    for warning in caught:  # one line each, without the source line
        print(f"ibmonitor sensitivity: note: {warning.message}", file=sys.stderr)
    summary = sensitivity_summary(table, threshold=args.threshold)
    keys = ["layer"] + (["probe"] if summary["probe"].nunique() > 1 else [])
    shown = summary[[*keys, *table.attrs["grid"], *_PRINTED]]
    with pd.option_context("display.width", 200):
        print(
            f"Sensitivity of {table.attrs['run']!r} to {', '.join(grid)} "
            f"({args.estimator}); bits. compression = highest - final I(X;T); "
            f"fitting = I(T;Y) gained up to the I(X;T) peak; a phase is present "
            f"above {args.threshold:g} bits; verdict over the grid: survives "
            "(present at every value), absent (at none) or depends."
        )
        print(shown.to_string(index=False, float_format=_bits))
        if args.long:
            print()
            print(table.to_string(index=False, float_format=_bits))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"Table: {args.csv}")
    if not args.no_figure:
        from .sensitivity_plot import sensitivity_figure, write_sensitivity_html

        fig = sensitivity_figure(table, summary, threshold=args.threshold)
        print(f"Figure: {write_sensitivity_html(fig, args.out)}")
    return 0
