"""The ``ibmonitor`` command: a thin face over the public functions.

Commands
--------
demo         train the 12-bit tanh network and draw its information plane
summary      print a short table of a run
estimate     recompute information from a run's stored activations
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
    if args.command == "report":
        from .report import write_report

        path = write_report(args.runs, args.output)
        print(path)
        return 0
    if args.command == "tensorboard":
        from .tensorboard.launch import launch

        return launch(args.logdir, host=args.host, port=args.port)
    raise AssertionError(args.command)  # pragma: no cover - argparse guards this
