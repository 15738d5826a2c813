"""Compare saved runs: when I(X;T) peaked, how much each layer compressed, final I(T;Y).

Loads run directories with :func:`ibmonitor.load_runs` (run directories,
folders of runs, or glob patterns such as ``"runs/saxe_tanh_vs_relu/*"``; by
default the runs written by the other reproduction scripts under ``runs/``)
and prints, with pandas:

1. per run and layer: the epoch of the highest I(X;T), the compression
   (highest minus final I(X;T), bits; positive where a layer compressed) and
   the final I(T;Y) (:func:`ibmonitor.analysis.compression_table`);
2. the compression as a layer x run table;
3. the final accuracy and generalization gap of each run, where recorded.

It writes ``compare_runs.png`` (one information plane per run, in bits;
``--gallery``: also ``docs/images/compare_runs.png``) and, with ``--report``,
one ``report.html`` of all the runs, into ``--outdir`` (default
``runs/compare_runs``).

Usage::

    python scripts/compare_runs.py                                 # runs/<script>/*
    python scripts/compare_runs.py runs/saxe_tanh_vs_relu          # a folder of runs
    python scripts/compare_runs.py "runs/*/seed-*" --estimator binned
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import pandas as pd

NAME = "compare_runs"
#: Output folders of the reproduction scripts, compared by default.
DEFAULT_SOURCES = (
    "tishby_information_plane",
    "saxe_tanh_vs_relu",
    "random_labels",
    "batch_size_sharpness",
)
MAX_PANELS = 16
SCALARS = {
    "train_acc": "train acc",
    "test_acc": "test acc",
    "gap/train_acc": "train acc",
    "gap/test_acc": "test acc",
    "gap/acc": "acc gap",
    "gap/loss": "loss gap",
}


def default_sources(root: Path) -> List[str]:
    """The reproduction scripts' output folders under ``root`` that hold runs."""
    found = []
    for name in DEFAULT_SOURCES:
        folder = root / name
        if folder.is_dir() and any(
            p.joinpath("run.json").is_file() for p in folder.iterdir()
        ):
            found.append(str(folder))
    return found


def run_labels(runs) -> dict:
    """Run name -> ``<folder>/<run>``, so runs of different scripts stay apart."""
    labels = {}
    for name, run in zip(runs.names, runs):
        labels[name] = f"{Path(run.path).resolve().parent.name}/{Path(run.path).name}"
    return labels


def layer_table(runs, estimator: Optional[str], probe: Optional[str]) -> pd.DataFrame:
    """Per run, probe and layer: epoch of max I(X;T), compression, final I(T;Y)."""
    from ibmonitor.analysis import compression_table

    table = compression_table(runs)
    if estimator is not None:
        table = table[table["estimator"] == estimator]
    if probe is not None:
        table = table[table["probe"] == probe]
    labels = run_labels(runs)
    table = table.assign(run=table["run"].map(labels))
    columns = {
        "epoch_max_i_xt": "epoch of max I(X;T)",
        "i_xt_max": "max I(X;T)",
        "i_xt_final": "final I(X;T)",
        "compression_bits": "compression",
        "i_ty_final": "final I(T;Y)",
    }
    keep = ["run", "probe", "layer", "estimator", *columns]
    return table[keep].rename(columns=columns).reset_index(drop=True)


def compression_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Compression (bits) with one row per layer and one column per run."""
    frame = table
    if frame["probe"].nunique() > 1:
        frame = frame.assign(run=frame["run"] + " [" + frame["probe"] + "]")
    if frame["estimator"].nunique() > 1:
        frame = frame.assign(run=frame["run"] + " (" + frame["estimator"] + ")")
    wide = frame.pivot_table(
        index="layer", columns="run", values="compression", sort=False
    )
    return wide.reset_index()


def scalar_table(runs) -> pd.DataFrame:
    """The last value of accuracy and gap scalars per run (where recorded)."""
    scalars = runs.scalars
    scalars = scalars[scalars["name"].isin(SCALARS)]
    if scalars.empty:
        return pd.DataFrame()
    last = scalars.sort_values("epoch").groupby(["run", "name"], sort=False).last()
    wide = last["value"].unstack("name")
    merged = pd.DataFrame(index=wide.index)
    for label in dict.fromkeys(SCALARS.values()):
        names = [n for n, lab in SCALARS.items() if lab == label and n in wide]
        names.sort(key=lambda n: not n.startswith("gap/"))  # the measure first
        if names:
            column = wide[names[0]]
            for name in names[1:]:
                column = column.combine_first(wide[name])
            merged[label] = column
    merged = merged.reindex([name for name in runs.names if name in merged.index])
    merged.index = merged.index.map(run_labels(runs))
    return merged.reset_index(names="run")


def plane_grid(runs, estimator: Optional[str], probe: Optional[str]):
    """One information plane per run (at most MAX_PANELS), in one figure."""
    from ibmonitor.plotting import combine_figures, information_plane

    labels = run_labels(runs)
    panels, titles = [], []
    for name, run in list(zip(runs.names, runs))[:MAX_PANELS]:
        info = run.information
        estimators = list(dict.fromkeys(info["estimator"]))
        probes = list(dict.fromkeys(info["probe"]))
        est = estimator if estimator in estimators else (estimators or [None])[0]
        prb = probe if probe in probes else None
        if est is None:
            continue
        panels.append(information_plane(run, estimator=est, probe=prb))
        titles.append(f"{labels[name]} ({est})")
    cols = min(4, len(panels))
    fig = combine_figures(
        panels,
        titles,
        cols=cols,
        shared_plane_axes=None,
        height=330 * -(-len(panels) // cols),
        horizontal_spacing=0.05,
        title="Information planes of the compared runs (bits)",
    )
    fig.update_annotations(font_size=11, selector={"xref": "paper"})
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _common.make_parser(NAME, __doc__, training=False)
    parser.add_argument(
        "runs",
        nargs="*",
        help="run directories, folders of runs or glob patterns (default: the "
        "output folders of the reproduction scripts under --root)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("runs"),
        help="where to look for the scripts' output folders (default: runs)",
    )
    parser.add_argument(
        "--estimator",
        default="binned",
        help="estimator of the tables and planes (default: binned; every script "
        "records it); 'all' keeps every estimator in the tables",
    )
    parser.add_argument(
        "--probe", default=None, help="only this probe set (default: all in tables)"
    )
    parser.add_argument(
        "--report", action="store_true", help="also write report.html of all runs"
    )
    args = _common.parse_args(parser, argv)
    clock = _common.Clock()
    _common.quiet_warnings()

    from ibmonitor.storage import load_runs

    sources = args.runs or default_sources(args.root)
    if not sources:
        parser.error(
            f"no runs given and none found under {str(args.root)!r}: run the "
            "reproduction scripts first (e.g. python scripts/"
            "tishby_information_plane.py --quick) or pass run directories."
        )
    try:
        runs = load_runs(sources)
    except FileNotFoundError as err:
        parser.error(str(err))
    estimator = None if args.estimator == "all" else args.estimator
    print(f"Loaded {len(runs)} run(s) from {', '.join(map(str, sources))}")

    table = layer_table(runs, estimator, args.probe)
    if table.empty:
        parser.error(
            f"no information rows for estimator {args.estimator!r}"
            + (f" and probe {args.probe!r}" if args.probe else "")
            + "; try --estimator all."
        )
    _common.print_table(
        "Per layer: epoch of the highest I(X;T), compression = highest minus "
        "final I(X;T), final I(T;Y) (bits):",
        table,
    )
    _common.print_table(
        "Compression (bits) per layer and run:", compression_matrix(table)
    )
    scalars = scalar_table(runs)
    if not scalars.empty:
        _common.print_table(
            "Final accuracy and generalization gap:", scalars, precision=3
        )

    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    if args.figure:
        print()
        fig = plane_grid(runs, estimator, args.probe)
        cols = min(4, len(runs), MAX_PANELS)
        rows = -(-min(len(runs), MAX_PANELS) // cols)
        _common.save_figure(fig, args, NAME, width=380 * cols, height=330 * rows)
    if args.report:
        _common.write_report([run.path for run in runs], args, "Compared runs")
    print(f"Took {clock}.")
    return 0


if __name__ == "__main__":
    _common.main_guard(main)
