"""Information planes and training dashboards as plotly figures.

Every function takes a run (a :class:`ibmonitor.storage.Run`, the path of a run
directory, or a DataFrame) and **returns** a :class:`plotly.graph_objects.Figure`;
none calls ``show()``. Labels are plain Unicode (``I(X;T) (bits)``), never LaTeX,
so that figures render offline and in static exports.

- :func:`information_plane`: one trajectory per layer in the (I(X;T), I(T;Y))
  plane, markers coloured by epoch on one colour bar; several runs overlaid or
  in facets, or aggregated over seeds (mean as in Shwartz-Ziv & Tishby 2017,
  or median with the inter-quartile range); intervals as error bars, the
  permutation floor of I(T;Y) and the ceiling of I(X;T) as reference lines.
- :func:`information_curves`: I(X;T) and I(T;Y) over epochs, one line per
  layer, intervals (or the seeds' spread) as bands, the floor and the
  ceiling as dashed lines.
- :func:`dashboard`: the information plane beside the scalars over epochs, in
  the panels of :func:`ibmonitor.schema.scalar_panel` (loss, accuracy,
  sharpness, norms, and saturation where recorded).
- :func:`combine_figures`: several single-panel figures side by side in one
  (shared plane ranges, one epoch colour bar).
- :func:`line_figure`: one line per group of a tidy table (e.g. a scalar
  over epochs, one line per run).
- :func:`write_image`: static PNG, SVG or PDF export through kaleido and a
  Chrome or Chromium browser (see :mod:`ibmonitor._browser`).

Column names, the default probe, the long/wide conversion, the panels of the
scalars, the axis titles and whether epochs are log-scaled all come from
:mod:`ibmonitor.schema`, which the TensorBoard writer and plugin share.

Accepted inputs
---------------
A DataFrame is read as an information table: wide (``epoch, layer, i_xt, i_ty``
and optionally ``run, probe, estimator``) or long (``epoch, probe, layer,
estimator, quantity, value``, as in ``information.csv``). A Run (or any object
with ``information``, ``scalars``, ``config`` and ``name`` attributes) also
brings its scalars and configuration; a path is loaded with
:func:`ibmonitor.storage.load_run`. A list of these is combined, each run under
its own name.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._validation import check_param
from .aggregate import aggregate_seeds
from .exceptions import InvalidParameterError
from .schema import (
    DEFAULT_PROBE,
    MIN_PLANE_SPAN,
    X_TITLE,
    Y_TITLE,
    default_probe,
    plane_rows,
    scalar_panel,
    to_wide,
    use_log_epochs,
)

__all__ = [
    "X_TITLE",
    "Y_TITLE",
    "combine_figures",
    "dashboard",
    "information_curves",
    "information_plane",
    "line_figure",
    "place_labels",
    "plane_min_spans",
    "write_image",
]

logger = logging.getLogger(__name__)

_INFO_COLUMNS = ("run", "probe", "estimator", "layer", "epoch", "i_xt", "i_ty")
_FACETS = (None, "run", "estimator")
_LOG_OPTIONS = ("auto", True, False)
_SPREADS = (None, "std", "sem", "iqr")
_AGGREGATES = (None, "mean", "median")
#: Colour of error bars, bands and reference lines that are not a layer's.
_ERROR_COLOR = "rgba(110, 110, 110, 0.5)"
_FLOOR_COLOR = "rgba(200, 60, 40, 0.75)"
_CEILING_COLOR = "rgba(60, 60, 60, 0.6)"
_IMAGE_FORMATS = {
    "png": "png",
    "svg": "svg",
    "pdf": "pdf",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "webp": "webp",
}
_NEUTRAL_LINE = "rgba(110, 110, 110, 0.55)"
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)

RunLike = Any


# --------------------------------------------------------------------------- data


@dataclass
class _Runs:
    """Runs gathered into one information table and one scalars table."""

    information: pd.DataFrame
    scalars: pd.DataFrame
    configs: dict = field(default_factory=dict)
    names: list = field(default_factory=list)
    layer_order: list = field(default_factory=list)


def _escape(text: Any) -> str:
    """HTML-escape a name for plotly text (plotly decodes the entities back)."""
    return html.escape(str(text), quote=False)


def _empty_information() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _INFO_COLUMNS})


def _empty_scalars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": pd.Series(dtype=object),
            "epoch": pd.Series(dtype="int64"),
            "name": pd.Series(dtype=object),
            "value": pd.Series(dtype=float),
        }
    )


def _config_layers(config: Mapping) -> list:
    layers = config.get("layers") if isinstance(config, Mapping) else None
    if isinstance(layers, Mapping):
        return [str(k) for k in layers]
    if isinstance(layers, (list, tuple)):
        return [str(k) for k in layers]
    return []


def _run_name(obj: Any, default: str) -> str:
    name = getattr(obj, "name", None)
    if name:
        return str(name)
    path = getattr(obj, "path", None)
    if path:
        return Path(path).name
    return default


def _one(obj: Any, default_name: str, owner: str, name: Optional[str] = None) -> _Runs:
    """Gather one input (Run-like or DataFrame) into a :class:`_Runs`."""
    if isinstance(obj, pd.DataFrame):
        info = to_wide(obj, owner)
        scalars = _empty_scalars()
        configs: dict = {}
    elif hasattr(obj, "information"):
        info = obj.information
        info = (
            to_wide(info, owner)
            if info is not None and len(info)
            else _empty_information()
        )
        scalars = getattr(obj, "scalars", None)
        scalars = (
            scalars.copy() if scalars is not None and len(scalars) else _empty_scalars()
        )
        configs = {}
        per_run = getattr(obj, "configs", None)
        if isinstance(per_run, Mapping):
            configs = {str(k): dict(v) for k, v in per_run.items()}
        else:
            config = getattr(obj, "config", None)
            configs = {None: dict(config)} if isinstance(config, Mapping) else {}
    else:
        raise InvalidParameterError(
            f"{owner} expects a Run, the path of a run directory or a DataFrame. "
            f"Got {type(obj).__name__} instead."
        )
    name = name or _run_name(obj, default_name)
    if "run" not in info or info["run"].isna().all():
        info["run"] = name
    info["run"] = info["run"].astype(str)
    if "run" not in scalars or scalars["run"].isna().all():
        scalars["run"] = name
    scalars["run"] = scalars["run"].astype(str)
    names = list(dict.fromkeys([*info["run"], *scalars["run"]])) or [name]
    if None in configs:
        shared = configs.pop(None)
        for run in names:
            configs.setdefault(run, shared)
    return _Runs(info, scalars, configs, names)


def _expand(run_or_frame: Any) -> list:
    """Return [(name or None, Run-like or DataFrame)] for the accepted inputs.

    Paths are loaded (a folder of runs gives each run in it); a
    :class:`ibmonitor.storage.Runs` gives its runs under its names.
    """
    if isinstance(run_or_frame, (list, tuple)):
        return [pair for item in run_or_frame for pair in _expand(item)]
    if isinstance(run_or_frame, (str, os.PathLike)):
        from .storage import RUN_FILE, load_run, load_runs

        if (Path(run_or_frame) / RUN_FILE).is_file():
            return [(None, load_run(run_or_frame))]
        return _expand(load_runs(run_or_frame))
    runs = getattr(run_or_frame, "runs", None)
    names = getattr(run_or_frame, "names", None)
    if isinstance(runs, list) and isinstance(names, list) and len(runs) == len(names):
        return list(zip(names, runs))
    return [(None, run_or_frame)]


def _gather(run_or_frame: Any, owner: str) -> _Runs:
    """Gather one input or a list of inputs into one :class:`_Runs`."""
    items = _expand(run_or_frame)
    if not items:
        raise InvalidParameterError(
            f"{owner} needs at least one run. Got an empty "
            f"{type(run_or_frame).__name__}."
        )
    parts: list = []
    seen: set = set()
    for i, (name, item) in enumerate(items):
        part = _one(item, f"run {i + 1}" if len(items) > 1 else "run", owner, name)
        # Two inputs with the same name (e.g. two seeds called "demo") stay apart.
        rename = {}
        for run in part.names:
            new, k = run, 2
            while new in seen:
                new, k = f"{run}-{k}", k + 1
            seen.add(new)
            rename[run] = new
        if any(k != v for k, v in rename.items()):
            part.information["run"] = part.information["run"].map(rename)
            part.scalars["run"] = part.scalars["run"].map(rename)
            part.configs = {rename.get(k, k): v for k, v in part.configs.items()}
            part.names = [rename[r] for r in part.names]
        parts.append(part)
    info = pd.concat(
        [p.information for p in parts if len(p.information)] or [_empty_information()],
        ignore_index=True,
    )
    scalars = pd.concat(
        [p.scalars for p in parts if len(p.scalars)] or [_empty_scalars()],
        ignore_index=True,
    )
    if len(scalars):
        scalars["epoch"] = pd.to_numeric(scalars["epoch"]).astype("int64")
        scalars["value"] = pd.to_numeric(scalars["value"], errors="coerce")
    configs: dict = {}
    names: list = []
    for p in parts:
        configs.update(p.configs)
        names.extend(p.names)
    order: list = []
    for config in configs.values():
        order.extend(_config_layers(config))
    order.extend(info["layer"].tolist())
    return _Runs(info, scalars, configs, names, list(dict.fromkeys(order)))


def _choose(
    value: Any, available: Sequence, what: str, owner: str, *, many: bool = False
) -> list:
    """Validate a selection (one name, or several with ``many``) against names."""
    if value is None:
        return list(available)
    values = (
        [value] if isinstance(value, str) or not isinstance(value, Sequence) else value
    )
    if not many and len(values) != 1:
        raise InvalidParameterError(
            f"The {what!r} parameter of {owner} must be one name. Got {value!r} "
            "instead."
        )
    shown = list(available)[:20]
    for v in values:
        if str(v) not in available:
            raise InvalidParameterError(
                f"Unknown {what} {v!r}. Available {what}s: {shown}"
                + (" ..." if len(available) > 20 else "")
                + "."
            )
    return [str(v) for v in values]


# ----------------------------------------------------------------- epoch scaling


def _use_log(log_epochs: Any, configs: Mapping, epochs: Sequence[int]) -> bool:
    return use_log_epochs(configs.values(), epochs, log_epochs)


def _nice_epochs(lo: float, hi: float) -> list:
    """Round epochs (0, 1, 2, 5, 10, 20, 50, ...) within [lo, hi]."""
    ticks = [0] if lo <= 0 else []
    mults = (1, 2, 5) if hi <= 2000 else (1,)
    decade = 1
    while decade <= max(hi, 1):
        ticks.extend(m * decade for m in mults)
        decade *= 10
    return [t for t in ticks if lo <= t <= hi] or [int(lo), int(hi)]


def _color_values(epochs: np.ndarray, log: bool) -> np.ndarray:
    return np.log10(epochs + 1.0) if log else epochs.astype(float)


def _coloraxis(
    epochs: np.ndarray, log: bool, color_scale: Any, **colorbar: Any
) -> dict:
    """Layout of the one colour axis (epoch) shared by every trajectory."""
    lo, hi = (float(epochs.min()), float(epochs.max())) if len(epochs) else (0, 1)
    if hi == lo:
        hi = lo + 1
    bar = {"title": {"text": "epoch"}, "thickness": 14, **colorbar}
    if log:
        ticks = _nice_epochs(lo, hi)
        bar.update(
            tickvals=[math.log10(t + 1) for t in ticks],
            ticktext=[str(t) for t in ticks],
        )
        cmin, cmax = math.log10(lo + 1), math.log10(hi + 1)
    else:
        cmin, cmax = lo, hi
    return {"colorscale": color_scale, "cmin": cmin, "cmax": cmax, "colorbar": bar}


def _epoch_axis(epochs: np.ndarray, log: bool) -> tuple:
    """Return (offset, axis layout) for an epoch axis.

    A log axis cannot show epoch 0, so where epoch 0 was recorded the points sit
    at ``epoch + 1`` and the ticks are labelled with the true epochs.
    """
    if not log:
        return 0, {"title": {"text": "epoch"}}
    lo = float(epochs.min()) if len(epochs) else 1.0
    hi = float(epochs.max()) if len(epochs) else 10.0
    offset = 1 if lo <= 0 else 0
    ticks = _nice_epochs(lo, hi)
    return offset, {
        "type": "log",
        "title": {"text": "epoch (log scale)"},
        "tickvals": [t + offset for t in ticks],
        "ticktext": [str(t) for t in ticks],
    }


# ------------------------------------------------------------ information plane


def _select(
    data: _Runs,
    owner: str,
    *,
    estimator: Any,
    layers: Any,
    runs: Any,
    probe: Any,
    all_estimators: bool,
    require: Sequence[str] = ("i_xt", "i_ty"),
) -> tuple:
    """Filter the information table; return (frame, estimators, layers).

    Rows where any of ``require`` is NaN are left out.
    """
    info = data.information
    if runs is not None:
        keep = _choose(runs, data.names, "run", owner, many=True)
        info = info[info["run"].isin(keep)]
    probes = list(dict.fromkeys(info["probe"]))
    if probe is None:
        probe_sel = default_probe(probes) or DEFAULT_PROBE
    else:
        probe_sel = _choose(probe, probes, "probe", owner)[0]
    if estimator is not None:
        for_probe = info[info["probe"] == probe_sel]
        estimator = _choose(
            estimator,
            list(dict.fromkeys(for_probe["estimator"])),
            "estimator",
            owner,
            many=all_estimators,
        )
    info, _, chosen, estimators = plane_rows(
        info, estimator=estimator, probe=probe_sel, all_estimators=all_estimators
    )
    if estimator is None and len(estimators) > 1 and not all_estimators:
        logger.info(
            "%s: several estimators recorded (%s); showing %r. Pass "
            "estimator= to choose.",
            owner,
            estimators,
            chosen[0],
        )
    present = set(info["layer"])
    order = [layer for layer in data.layer_order if layer in present]
    if layers is not None:
        keep = set(_choose(layers, order, "layer", owner, many=True))
        order = [layer for layer in order if layer in keep]  # network order
        info = info[info["layer"].isin(keep)]
    info = info.dropna(subset=list(require))
    return info, chosen, order


def _check_aggregate(
    aggregate: Any, average_seeds: bool, spread: Any, owner: str
) -> tuple:
    """Return (statistic or None, spread) after checking the combination.

    ``average_seeds=True`` is ``aggregate="mean"``; the median's spread is
    the inter-quartile range (by default), the mean's the standard deviation
    or standard error (none by default).
    """
    check_param(aggregate, "aggregate", owner, kind="option", options=_AGGREGATES)
    check_param(spread, "spread", owner, kind="option", options=_SPREADS)
    statistic = aggregate or ("mean" if average_seeds else None)
    if statistic == "median":
        if spread in ("std", "sem"):
            raise InvalidParameterError(
                f"The 'spread' parameter of {owner} must be 'iqr' or None with "
                f"aggregate='median'. Got {spread!r} instead."
            )
        return statistic, "iqr"
    if spread == "iqr":
        raise InvalidParameterError(
            f"The 'spread' parameter of {owner} can be 'iqr' only with "
            "aggregate='median' (the mean takes 'std' or 'sem'). Got 'iqr' instead."
        )
    if statistic is None and spread is not None:
        logger.info("%s: spread= applies only when aggregating seeds.", owner)
        spread = None
    return statistic, spread


def _average_seeds(
    info: pd.DataFrame,
    runs: list,
    spread: Optional[str],
    statistic: str = "mean",
    quantities: Sequence[str] = ("i_xt", "i_ty"),
) -> tuple:
    """Aggregate the runs per (estimator, layer, epoch): mean or median.

    Uses :func:`ibmonitor.aggregate.aggregate_seeds`. The error columns
    ``err_<q>_minus`` and ``err_<q>_plus`` (``q`` in ``quantities``) hold the
    spread drawn: one standard deviation or standard error on both sides of
    the mean, or the distances to the quartiles of the median. Flags and
    bounds (``pinned``, ``resolution``, ``i_xt_ceiling``) take their maximum,
    the permutation floor ``i_ty_baseline`` the same statistic.
    """
    wanted = [*quantities, "pinned", "resolution", "i_ty_baseline", "i_xt_ceiling"]
    present = [c for c in dict.fromkeys(wanted) if c in info]
    out = aggregate_seeds(info, statistic=statistic, quantities=present)
    for q in quantities:
        if spread is None:
            continue
        if spread == "iqr":
            minus = out[q] - out[f"{q}_q25"]
            plus = out[f"{q}_q75"] - out[q]
        else:
            minus = plus = out[f"{q}_{spread}"].fillna(0.0)
        out[f"err_{q}_minus"], out[f"err_{q}_plus"] = minus, plus
    label = f"{statistic} of {len(runs)} runs"
    out["run"] = label
    out["probe"] = info["probe"].iloc[0] if len(info) else DEFAULT_PROBE
    return out, [label]


#: Hover line of a pinned point (the estimator's warning gave the details).
_PINNED_HOVER = (
    "<br><b>pinned</b>: at log2 n (every sample its own bin or kernel),"
    "<br>set by the sample size, not the layer"
)
_PINNED_LEGEND = "pinned: set by the sample size, not the layer"
#: Label layout of the plane: font size, the height of one label line and the
#: width of a label (pixels); a cluster of more coinciding trajectory ends
#: than _MAX_STACK gets one label naming how many layers end there.
_LABEL_LINE_PX = 14
_LABEL_WIDTH_PX = 110
_MAX_STACK = 6


def _pinned_mask(rows: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows marked ``pinned`` (False where not recorded)."""
    if "pinned" not in rows:
        return np.zeros(len(rows), dtype=bool)
    values = pd.to_numeric(rows["pinned"], errors="coerce").to_numpy(dtype=float)
    return np.nan_to_num(values, nan=0.0) > 0.5


def _plane_marker(colors: np.ndarray, pinned: np.ndarray) -> dict:
    """Markers coloured by epoch; pinned points hollow and faded."""
    marker: dict = {
        "color": colors,
        "coloraxis": "coloraxis",
        "size": 7,
        "line": {"width": 0.5, "color": "rgba(40, 40, 40, 0.6)"},
    }
    if pinned.any():
        marker["symbol"] = np.where(pinned, "circle-open", "circle").tolist()
        marker["opacity"] = np.where(pinned, 0.55, 1.0).tolist()
        marker["line"] = {"width": np.where(pinned, 2.0, 0.5).tolist()}
        marker["size"] = np.where(pinned, 9, 7).tolist()
    return marker


def _pinned_legend_trace() -> go.Scatter:
    """Return a legend entry (no data) explaining the hollow markers."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        name=_PINNED_LEGEND,
        showlegend=True,
        marker={
            "symbol": "circle-open",
            "size": 9,
            "color": "rgba(90, 90, 90, 0.8)",
            "line": {"width": 2},
        },
        hoverinfo="skip",
        meta={"kind": "pinned_legend"},
    )


def plane_min_spans(info: pd.DataFrame) -> tuple:
    """Smallest (I(X;T), I(T;Y)) axis spans, in bits, for an information table.

    :data:`MIN_PLANE_SPAN`, widened to the largest ``resolution`` recorded
    (the binned estimator's bias, see :func:`ibmonitor.estimators.binned`):
    a spread smaller than the estimator can resolve is never stretched over
    a whole axis.
    """
    res = 0.0
    if "resolution" in info and len(info):
        values = pd.to_numeric(info["resolution"], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values)]
        res = float(values.max()) if values.size else 0.0
    return max(MIN_PLANE_SPAN[0], res), max(MIN_PLANE_SPAN[1], res)


def _axis_range(values: np.ndarray, minimum: float) -> tuple:
    """(lo, hi, forced): the data's range, widened to ``minimum`` if narrower."""
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0, False
    lo, hi = float(values.min()), float(values.max())
    if hi - lo >= minimum:
        return lo, hi, False
    mid = (lo + hi) / 2
    return mid - minimum / 2, mid + minimum / 2, True


def _plane_axes(info: pd.DataFrame) -> tuple:
    """Ranges of the plane's axes: ((x0, x1, forced), (y0, y1, forced))."""
    span_x, span_y = plane_min_spans(info)
    xs = pd.to_numeric(info["i_xt"], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(info["i_ty"], errors="coerce").to_numpy(float)
    return _axis_range(xs, span_x), _axis_range(ys, span_y)


def _apply_min_spans(fig: go.Figure, axes: tuple, row: int, col: int) -> None:
    """Fix the plane's ranges where the data span less than the minimum."""
    (x0, x1, fx), (y0, y1, fy) = axes
    if fx:
        pad = 0.05 * (x1 - x0)
        fig.update_xaxes(range=[x0 - pad, x1 + 3 * pad], row=row, col=col)
    if fy:
        pad = 0.06 * (y1 - y0)
        fig.update_yaxes(range=[y0 - pad, y1 + pad], row=row, col=col)


def place_labels(ends: Sequence[Mapping], axes: tuple, size_px: tuple) -> list:
    """Annotations naming the trajectory ends, placed so that none overlap.

    Each label sits right of its trajectory's last point. Ends closer than a
    label (in pixels, from the axis ranges and the plot's approximate size)
    form a cluster: up to :data:`_MAX_STACK` labels are stacked one line
    apart, with a thin leader line to the point; a larger cluster (many
    layers ending at one point, as pinned layers do) gets one label naming
    how many layers end there, the names in its hover text. A final pass
    pushes down any label still within one line of another above it.

    Parameters
    ----------
    ends : sequence of dict
        ``{"x", "y", "text"}`` per trajectory, in bits.
    axes : tuple
        ``((x0, x1, _), (y0, y1, _))`` as :func:`_plane_axes` returns.
    size_px : (float, float)
        Approximate width and height of the plot area in pixels.

    Returns
    -------
    list of dict
        plotly annotations; ``x``, ``y`` are the end point and ``yshift`` the
        label's vertical offset in pixels.
    """
    if not ends:
        return []
    (x0, x1, _), (y0, y1, _) = axes
    w, h = size_px
    sx = w / (x1 - x0) if x1 > x0 else 1.0
    sy = h / (y1 - y0) if y1 > y0 else 1.0
    px = [(e["x"] - x0) * sx for e in ends]
    py = [(e["y"] - y0) * sy for e in ends]
    # clusters: ends within one label of each other (single linkage)
    parent = list(range(len(ends)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(ends)):
        for j in range(i):
            if (
                abs(px[i] - px[j]) < _LABEL_WIDTH_PX / 2
                and abs(py[i] - py[j]) < _LABEL_LINE_PX
            ):
                parent[find(i)] = find(j)
    clusters: dict = {}
    for i in range(len(ends)):
        clusters.setdefault(find(i), []).append(i)
    items = []  # (px, desired label py, end index, text, hover)
    for members in clusters.values():
        members.sort(key=lambda i: -py[i])
        if len(members) > _MAX_STACK:
            names = [str(ends[i]["text"]) for i in members]
            first = members[0]
            shown = ", ".join(names[:2])
            text = f"{len(members)} layers ({shown}, …)"
            hover = "<br>".join(names[:40]) + ("<br>…" if len(names) > 40 else "")
            items.append((px[first], py[first], first, text, hover))
            continue
        top = sum(py[i] for i in members) / len(members)
        top += (len(members) - 1) * _LABEL_LINE_PX / 2
        for k, i in enumerate(members):
            items.append((px[i], top - k * _LABEL_LINE_PX, i, ends[i]["text"], None))
    items.sort(key=lambda item: -item[1])
    placed: list = []  # (px, label py)
    out = []
    for x_px, want, i, text, hover in items:
        label = want
        moved = True
        while moved:  # labels only move down, so this ends
            moved = False
            for qx, qy in placed:
                near = abs(qx - x_px) < _LABEL_WIDTH_PX
                if near and abs(label - qy) < _LABEL_LINE_PX:
                    label = qy - _LABEL_LINE_PX
                    moved = True
        placed.append((x_px, label))
        shift = label - py[i]
        note: dict = {
            "x": float(ends[i]["x"]),
            "y": float(ends[i]["y"]),
            "text": text,
            "xanchor": "left",
            "yanchor": "middle",
            "font": {"size": 11, "color": "#333"},
        }
        if abs(shift) < 3:  # at its point (nudged a little at most)
            note.update(showarrow=False, xshift=7, yshift=shift)
        else:  # moved off its point: a thin leader line back to it
            note.update(
                showarrow=True,
                arrowhead=0,
                arrowwidth=0.6,
                arrowcolor="rgba(90, 90, 90, 0.7)",
                ax=18,
                ay=-shift,
            )
        if hover:
            note["hovertext"] = hover
        out.append(note)
    return out


def _error_bars(rows: pd.DataFrame, q: str, intervals: bool) -> Optional[dict]:
    """Error bars of quantity ``q`` (``"i_xt"`` or ``"i_ty"``) of some rows.

    The seeds' spread where aggregated (``err_<q>_minus``/``_plus``), else the
    estimator's interval (``<q>_low``/``_high``) when ``intervals`` and
    recorded; None where there is neither.
    """
    values = rows[q].to_numpy(dtype=float)
    if f"err_{q}_plus" in rows:
        minus = rows[f"err_{q}_minus"].to_numpy(dtype=float)
        plus = rows[f"err_{q}_plus"].to_numpy(dtype=float)
    elif intervals and f"{q}_low" in rows and f"{q}_high" in rows:
        low = pd.to_numeric(rows[f"{q}_low"], errors="coerce").to_numpy(float)
        high = pd.to_numeric(rows[f"{q}_high"], errors="coerce").to_numpy(float)
        if not np.isfinite(low).any():
            return None
        minus, plus = values - low, high - values
    else:
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": np.nan_to_num(plus, nan=0.0),
        "arrayminus": np.nan_to_num(minus, nan=0.0),
        "thickness": 1,
        "width": 0,
        "color": _ERROR_COLOR,
    }


def _interval_hover(rows: pd.DataFrame, intervals: bool) -> np.ndarray:
    """Hover lines of the intervals and the permutation floor ("" where none)."""
    out = np.full(len(rows), "", dtype=object)
    if not intervals:
        return out
    for q, label in (("i_xt", "I(X;T)"), ("i_ty", "I(T;Y)")):
        if f"{q}_low" in rows and f"{q}_high" in rows:
            low = pd.to_numeric(rows[f"{q}_low"], errors="coerce").to_numpy(float)
            high = pd.to_numeric(rows[f"{q}_high"], errors="coerce").to_numpy(float)
            for k in np.flatnonzero(np.isfinite(low) & np.isfinite(high)):
                out[k] += f"<br>{label} interval: [{low[k]:.4f}, {high[k]:.4f}]"
    if "i_ty_baseline" in rows:
        floor = pd.to_numeric(rows["i_ty_baseline"], errors="coerce").to_numpy(float)
        for k in np.flatnonzero(np.isfinite(floor)):
            out[k] += f"<br>I(T;Y) floor (labels permuted): {floor[k]:.4f}"
    return out


def _plane_traces(
    info: pd.DataFrame,
    *,
    layer_order: list,
    run_order: list,
    log: bool,
    overlay: bool,
    spread: Optional[str],
    intervals: bool = True,
) -> tuple:
    """Build the trajectories of one panel: (traces, end annotations)."""
    traces: list = []
    ends: list = []
    shown_runs: set = set()
    labelled: set = set()
    any_pinned = False
    for r, run in enumerate(run_order):
        run_rows = info[info["run"] == run]
        if run_rows.empty:
            continue
        line_color = _PALETTE[r % len(_PALETTE)] if overlay else _NEUTRAL_LINE
        for layer in layer_order:
            rows = run_rows[run_rows["layer"] == layer].sort_values("epoch")
            if rows.empty:
                continue
            epochs = rows["epoch"].to_numpy()
            n_runs = rows["n_runs"].to_numpy() if "n_runs" in rows else None
            pinned = _pinned_mask(rows)
            custom = np.empty((len(rows), 6), dtype=object)
            custom[:, 0] = epochs
            custom[:, 1] = _escape(run)
            custom[:, 2] = _escape(layer)
            custom[:, 3] = n_runs if n_runs is not None else 1
            custom[:, 4] = np.where(pinned, _PINNED_HOVER, "")
            custom[:, 5] = _interval_hover(rows, intervals and spread is None)
            hover = (
                "run: %{customdata[1]}<br>layer: %{customdata[2]}<br>"
                "epoch: %{customdata[0]}<br>I(X;T): %{x:.4f} bits<br>"
                "I(T;Y): %{y:.4f} bits"
                + (
                    "<br>runs aggregated: %{customdata[3]}"
                    if n_runs is not None
                    else ""
                )
                + "%{customdata[5]}%{customdata[4]}<extra></extra>"
            )
            any_pinned = any_pinned or bool(pinned.any())
            trace = go.Scatter(
                x=rows["i_xt"].to_numpy(),
                y=rows["i_ty"].to_numpy(),
                mode="lines+markers",
                name=_escape(run) if overlay else _escape(layer),
                legendgroup=_escape(run) if overlay else None,
                showlegend=overlay and run not in shown_runs,
                line={"color": line_color, "width": 1.5},
                marker=_plane_marker(_color_values(epochs, log), pinned),
                customdata=custom,
                hovertemplate=hover,
                meta={"kind": "information_plane", "layer": _escape(layer)},
            )
            show_errors = intervals or spread is not None
            error_x = _error_bars(rows, "i_xt", intervals) if show_errors else None
            error_y = _error_bars(rows, "i_ty", intervals) if show_errors else None
            if error_x is not None:
                trace.error_x = error_x
            if error_y is not None:
                trace.error_y = error_y
            shown_runs.add(run)
            traces.append(trace)
            if layer in labelled:  # overlaid runs: name each layer once
                continue
            labelled.add(layer)
            ends.append(
                {
                    "x": float(rows["i_xt"].iloc[-1]),
                    "y": float(rows["i_ty"].iloc[-1]),
                    "text": _escape(layer),
                }
            )
    if any_pinned:
        traces.append(_pinned_legend_trace())
    return traces, ends


def _finite(info: pd.DataFrame, column: str) -> np.ndarray:
    """Return the finite values of a column (empty where it is missing)."""
    if column not in info:
        return np.empty(0)
    values = pd.to_numeric(info[column], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _in_range(value: float, lo: float, hi: float) -> bool:
    """Whether ``value`` lies within [lo, hi] widened by 5 % of the span."""
    pad = 0.05 * (hi - lo)
    return lo - pad <= value <= hi + pad


def _reference_traces(info: pd.DataFrame, axes: tuple) -> list:
    """Return the reference lines of a plane panel, where recorded and in range.

    A horizontal dashed line at the mean permutation floor of I(T;Y)
    (``i_ty_baseline``) and a vertical dotted line at the ceiling of I(X;T)
    (``i_xt_ceiling``, the largest recorded), each drawn only where it falls
    within the data's range (a reference line never stretches an axis).
    """
    (x0, x1, _), (y0, y1, _) = axes
    out = []
    floor = _finite(info, "i_ty_baseline")
    if floor.size and _in_range(float(floor.mean()), y0, y1):
        value = float(floor.mean())
        spread = (
            f" (range {floor.min():.3f}-{floor.max():.3f})" if floor.size > 1 else ""
        )
        out.append(
            go.Scatter(
                x=[x0, x1],
                y=[value, value],
                mode="lines",
                name="I(T;Y) floor: labels permuted",
                line={"color": _FLOOR_COLOR, "dash": "dash", "width": 1.2},
                hovertemplate=(
                    f"I(T;Y) floor, labels permuted: {value:.4f} bits, mean over "
                    f"{floor.size} estimates{spread}<extra></extra>"
                ),
                meta={"kind": "baseline"},
            )
        )
    ceiling = _finite(info, "i_xt_ceiling")
    if ceiling.size and _in_range(float(ceiling.max()), x0, x1):
        value = float(ceiling.max())
        out.append(
            go.Scatter(
                x=[value, value],
                y=[y0, y1],
                mode="lines",
                name="I(X;T) ceiling: log2 n",
                line={"color": _CEILING_COLOR, "dash": "dot", "width": 1.2},
                hovertemplate=(
                    f"I(X;T) ceiling: {value:.4f} bits (log2 n, or H(X) of the "
                    "grouped inputs)<extra></extra>"
                ),
                meta={"kind": "ceiling"},
            )
        )
    return out


def information_plane(
    run_or_frame: Any,
    *,
    estimator: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    runs: Optional[Sequence[str]] = None,
    probe: Optional[str] = None,
    average_seeds: bool = False,
    aggregate: Optional[str] = None,
    spread: Optional[str] = None,
    facet: Optional[str] = None,
    intervals: bool = True,
    references: bool = True,
    color_scale: Any = "Viridis",
    log_epochs: Union[str, bool] = "auto",
    title: Optional[str] = None,
) -> go.Figure:
    """Draw each layer's trajectory in the information plane.

    One trajectory per layer (lines and markers) in the (I(X;T), I(T;Y))
    plane, in bits. Markers are coloured by epoch on one continuous colour
    scale with a single colour bar, logarithmic where the schedule is
    log-spaced. Layer names sit at the trajectory ends (the last recorded
    epoch); hovering a point shows the run, layer, epoch and both values.

    Parameters
    ----------
    run_or_frame : Run, path, DataFrame, or list of these
        The run(s): a :class:`ibmonitor.storage.Run`, the path of a run
        directory, the result of :func:`ibmonitor.storage.load_runs` (a ``run``
        column), or an information DataFrame (wide: ``epoch, layer, i_xt,
        i_ty`` and optionally ``run, probe, estimator``; or long, with
        ``quantity`` and ``value``). A list is combined, one run per item.
    estimator : str, optional
        The estimator to show; by default the first one recorded. With
        ``facet="estimator"``, a list of names, by default all of them.
    layers : list of str, optional
        Layers to show, by default all, in the order of the run's config.
    runs : list of str, optional
        Runs to show when several are given, by default all.
    probe : str, optional
        Probe set to show; by default ``"default"`` or the first one recorded.
    average_seeds : bool, default=False
        Average the runs (e.g. seeds of one experiment) per layer and epoch
        and draw the mean trajectory, as Shwartz-Ziv & Tishby's figures do.
        An epoch recorded by only some runs is averaged over those runs.
        The same as ``aggregate="mean"``.
    aggregate : {"mean", "median"}, optional
        Aggregate the runs per layer and epoch
        (:func:`ibmonitor.aggregate.aggregate_seeds`): ``"mean"`` as
        ``average_seeds``; ``"median"`` draws the median trajectory with the
        inter-quartile range of the runs as error bars on both axes.
    spread : {"std", "sem", "iqr"}, optional
        The error bars of aggregated runs: one standard deviation or one
        standard error of the mean (with the mean; none by default), the
        inter-quartile range (with the median, its default).
    facet : {"run", "estimator"}, optional
        Draw one panel per run (or per estimator) instead of overlaying runs.
        Without it, several runs are overlaid, each in its own line colour and
        named in the legend.
    intervals : bool, default=True
        Where the information table has intervals (``i_xt_low``,
        ``i_xt_high``, ``i_ty_low``, ``i_ty_high``, from estimators called with
        ``bootstrap=B``), draw them as error bars on both axes and name them
        on hover. Aggregated runs draw their spread instead.
    references : bool, default=True
        Where recorded, draw the permutation floor of I(T;Y)
        (``i_ty_baseline``, mean over the panel's points) as a horizontal
        dashed line and the ceiling of I(X;T) (``i_xt_ceiling``, log2 n) as a
        vertical dotted line, each only where it falls within the panel's
        ranges.
    color_scale : str or list, default="Viridis"
        Any plotly continuous colour scale for the epochs.
    log_epochs : {"auto", True, False}, default="auto"
        Colour epochs on a log scale. ``"auto"`` reads the run's configured
        schedule (``"log"``), or else tests whether the recorded epochs are
        log-spaced.
    title : str, optional
        Figure title; by default names the estimator (and the run).

    Returns
    -------
    fig : plotly.graph_objects.Figure
        One trace per (run, layer) and panel; axes in bits.

    Raises
    ------
    InvalidParameterError
        For an unknown estimator, layer, run or probe (listing the available
        names) or a bad option.

    Examples
    --------
    >>> import pandas as pd
    >>> from ibmonitor.plotting import information_plane
    >>> frame = pd.DataFrame({"epoch": [0, 1, 0, 1], "layer": ["a", "a", "b", "b"],
    ...                       "i_xt": [1.0, 2.0, 0.5, 1.0],
    ...                       "i_ty": [0.1, 0.4, 0.1, 0.3]})
    >>> len(information_plane(frame).data)
    2
    """
    owner = "information_plane"
    check_param(facet, "facet", owner, kind="option", options=_FACETS)
    statistic, spread = _check_aggregate(aggregate, average_seeds, spread, owner)
    _check_log(log_epochs, owner)
    if statistic is not None and facet == "run":
        raise InvalidParameterError(
            "The 'facet' parameter of information_plane cannot be 'run' with "
            "average_seeds=True or aggregate=...: the runs are aggregated into one "
            "trajectory per layer."
        )
    data = _gather(run_or_frame, owner)
    info, estimators, layer_order = _select(
        data,
        owner,
        estimator=estimator,
        layers=layers,
        runs=runs,
        probe=probe,
        all_estimators=facet == "estimator",
    )
    run_order = [r for r in data.names if r in set(info["run"])]
    if statistic is not None:
        info, run_order = _average_seeds(info, run_order, spread, statistic)
    epochs_all = info["epoch"].to_numpy() if len(info) else np.array([0])
    log = _use_log(log_epochs, data.configs, np.unique(epochs_all))

    if facet == "run":
        panels = [(r, info[info["run"] == r], [r]) for r in run_order]
    elif facet == "estimator":
        panels = [(e, info[info["estimator"] == e], run_order) for e in estimators]
    else:
        panels = [(None, info, run_order)]
    overlay = facet != "run" and len(run_order) > 1
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[_escape(p[0]) for p in panels] if facet else None,
        shared_xaxes="all" if n > 1 else False,
        shared_yaxes="all" if n > 1 else False,
        horizontal_spacing=0.06,
        vertical_spacing=0.12 if rows > 1 else 0.08,
    )
    # Shared axes (several panels share one range): spans from every panel.
    axes = _plane_axes(info)
    height = 480 if rows == 1 else 380 * rows
    size_px = (560 / cols, (height - 130) / rows)
    any_pinned = False
    reference_kinds: set = set()
    for i, (_, frame, panel_runs) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        traces, ends = _plane_traces(
            frame,
            layer_order=layer_order,
            run_order=panel_runs,
            log=log,
            overlay=overlay,
            spread=spread,
            intervals=intervals,
        )
        if traces and references:
            for line in _reference_traces(frame, axes):
                kind = line.meta["kind"]
                line.showlegend = kind not in reference_kinds  # one legend entry
                reference_kinds.add(kind)
                fig.add_trace(line, row=row, col=col)
        for trace in traces:
            if (trace.meta or {}).get("kind") == "pinned_legend":
                trace.showlegend = not any_pinned  # one legend entry
                any_pinned = True
            fig.add_trace(trace, row=row, col=col)
        for note in place_labels(ends, axes, size_px):
            fig.add_annotation(note, row=row, col=col)
        if traces:
            _apply_min_spans(fig, axes, row, col)
        if not traces:
            _not_recorded(fig, row, col, "no information recorded")
        fig.update_xaxes(title_text=X_TITLE if row == rows else None, row=row, col=col)
        fig.update_yaxes(title_text=Y_TITLE if col == 1 else None, row=row, col=col)

    if title is None:
        est = ", ".join(e for e in estimators if e)
        what = f"{statistic} of {len(data.names)} runs" if statistic else None
        if what is None and len(run_order) == 1:
            what = run_order[0]
        title = "Information plane" + (f" ({est})" if est else "")
        title += f": {what}" if what else ""
    fig.update_layout(
        title={"text": _escape(title), "x": 0.01, "xanchor": "left"},
        coloraxis=_coloraxis(epochs_all, log, color_scale),
        template="plotly_white",
        showlegend=overlay or any_pinned or bool(reference_kinds),
        legend={
            "title": {"text": "run" if overlay else ""},
            "x": 1.12,
            "xanchor": "left",
            "y": 1,
        },
        hovermode="closest",
        height=height,
        margin={"l": 70, "r": 40, "t": 70, "b": 60},
    )
    return fig


def _check_log(log_epochs: Any, owner: str) -> None:
    if not (log_epochs is True or log_epochs is False or log_epochs == "auto"):
        raise InvalidParameterError(
            f"The 'log_epochs' parameter of {owner} must be one of 'auto', True, "
            f"False. Got {log_epochs!r} instead."
        )


def _not_recorded(
    fig: go.Figure, row: int, col: int, text: str, *, hide_x: bool = True
) -> None:
    """Write ``text`` in the middle of an empty subplot and hide its ticks.

    The text is placed in paper coordinates from the subplot's domains
    (plotly.js does not place ``"x5 domain"`` references on an axis without
    traces). ``hide_x=False`` keeps a shared epoch axis readable.
    """
    subplot = fig.get_subplot(row, col)
    fig.add_annotation(
        text=text,
        x=sum(subplot.xaxis.domain) / 2,
        y=sum(subplot.yaxis.domain) / 2,
        xref="paper",
        yref="paper",
        xanchor="center",
        yanchor="middle",
        showarrow=False,
        font={"size": 13, "color": "#888"},
    )
    if hide_x:
        fig.update_xaxes(
            showticklabels=False, showgrid=False, zeroline=False, row=row, col=col
        )
    fig.update_yaxes(
        showticklabels=False, showgrid=False, zeroline=False, row=row, col=col
    )


# ------------------------------------------------------------ information curves

_QUANTITIES = {"i_xt": X_TITLE, "i_ty": Y_TITLE}


def _rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` as an ``rgba(...)`` string with opacity ``alpha``."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _band(rows: pd.DataFrame, q: str, intervals: bool) -> Optional[tuple]:
    """(low, high) arrays of a band around quantity ``q``, or None.

    The seeds' spread where aggregated, else the estimator's interval when
    ``intervals`` and recorded (see :func:`_error_bars`).
    """
    bars = _error_bars(rows, q, intervals)
    if bars is None:
        return None
    values = rows[q].to_numpy(dtype=float)
    return values - bars["arrayminus"], values + bars["array"]


def information_curves(
    run_or_frame: Any,
    *,
    quantities: Sequence[str] = ("i_xt", "i_ty"),
    estimator: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    runs: Optional[Sequence[str]] = None,
    probe: Optional[str] = None,
    aggregate: Optional[str] = None,
    spread: Optional[str] = None,
    intervals: bool = True,
    references: bool = True,
    log_epochs: Union[str, bool] = "auto",
    title: Optional[str] = None,
) -> go.Figure:
    """Draw I(X;T) and I(T;Y) over epochs, one line per layer, with their bands.

    One panel per quantity, on a shared epoch axis (logarithmic where the
    schedule is log-spaced). Each layer has one colour in every panel; with
    several runs overlaid, each run has its own dash style.

    Parameters
    ----------
    run_or_frame : Run, path, DataFrame, or list of these
        As for :func:`information_plane`.
    quantities : sequence of {"i_xt", "i_ty"}, default=("i_xt", "i_ty")
        The quantities drawn, one panel each, in bits.
    estimator, layers, runs, probe : optional
        The selection, as for :func:`information_plane` (one estimator: by
        default the first recorded).
    aggregate : {"mean", "median"}, optional
        Aggregate the runs per layer and epoch
        (:func:`ibmonitor.aggregate.aggregate_seeds`); the median comes with
        its inter-quartile band.
    spread : {"std", "sem", "iqr"}, optional
        The band of aggregated runs, as ``spread`` of :func:`information_plane`.
    intervals : bool, default=True
        Draw each layer's interval (``<q>_low`` to ``<q>_high``, from
        ``bootstrap=B``) as a band where recorded.
    references : bool, default=True
        Draw each layer's permutation floor of I(T;Y) (``i_ty_baseline``) as
        a dashed line in its colour, and the ceiling of I(X;T)
        (``i_xt_ceiling``) as a dotted grey line where it falls within the
        panel's range.
    log_epochs : {"auto", True, False}, default="auto"
        Log-scale the epoch axis; ``"auto"`` follows the runs' schedules.
    title : str, optional
        Figure title; by default names the estimator (and the run).

    Returns
    -------
    fig : plotly.graph_objects.Figure
        Traces carry ``meta``: ``kind`` is ``"information_curve"`` (with
        ``quantity``, ``layer``, ``run``), ``"band"``, ``"baseline"`` or
        ``"ceiling"``.

    Raises
    ------
    InvalidParameterError
        For an unknown quantity, estimator, layer, run or probe, or a bad
        option.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"epoch": [0, 1], "layer": ["a", "a"],
    ...                       "i_xt": [1.0, 2.0], "i_ty": [0.1, 0.4],
    ...                       "i_ty_low": [0.0, 0.3], "i_ty_high": [0.2, 0.5]})
    >>> fig = information_curves(frame)
    >>> sorted({t.meta["kind"] for t in fig.data})
    ['band', 'information_curve']
    """
    owner = "information_curves"
    chosen_q = [quantities] if isinstance(quantities, str) else list(quantities)
    if not chosen_q:
        raise InvalidParameterError(
            f"The 'quantities' parameter of {owner} is empty; give 'i_xt', 'i_ty' "
            "or both."
        )
    for q in chosen_q:
        check_param(q, "quantities", owner, kind="option", options=tuple(_QUANTITIES))
    statistic, spread = _check_aggregate(aggregate, False, spread, owner)
    _check_log(log_epochs, owner)
    data = _gather(run_or_frame, owner)
    info, estimators, layer_order = _select(
        data,
        owner,
        estimator=estimator,
        layers=layers,
        runs=runs,
        probe=probe,
        all_estimators=False,
        require=(),
    )
    run_order = [r for r in data.names if r in set(info["run"])]
    if statistic is not None and len(info):
        info, run_order = _average_seeds(
            info, run_order, spread, statistic, quantities=chosen_q
        )
    epochs_all = info["epoch"].to_numpy() if len(info) else np.array([0])
    log = _use_log(log_epochs, data.configs, np.unique(epochs_all))
    offset, axis = _epoch_axis(epochs_all, log)
    fig = make_subplots(
        rows=len(chosen_q), cols=1, shared_xaxes=True, vertical_spacing=0.08
    )
    dashes = {run: _DASHES[i % len(_DASHES)] for i, run in enumerate(run_order)}
    for row, q in enumerate(chosen_q, start=1):
        rows_q = info.dropna(subset=[q])
        drawn = False
        for k, layer in enumerate(layer_order):
            color = _PALETTE[k % len(_PALETTE)]
            for run in run_order:
                rows = rows_q[(rows_q["layer"] == layer) & (rows_q["run"] == run)]
                rows = rows.sort_values("epoch")
                if rows.empty:
                    continue
                drawn = True
                x = rows["epoch"].to_numpy() + offset
                band = _band(rows, q, intervals)
                if band is not None:
                    lo, hi = band
                    fig.add_trace(
                        go.Scatter(
                            x=np.concatenate([x, x[::-1]]),
                            y=np.concatenate([hi, lo[::-1]]),
                            fill="toself",
                            fillcolor=_rgba(color, 0.18),
                            line={"width": 0},
                            mode="lines",
                            hoverinfo="skip",
                            showlegend=False,
                            legendgroup=_escape(layer),
                            meta={
                                "kind": "band",
                                "quantity": q,
                                "layer": _escape(layer),
                            },
                        ),
                        row=row,
                        col=1,
                    )
                label = _escape(layer) + (
                    f" · {_escape(run)}" if len(run_order) > 1 else ""
                )
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=rows[q].to_numpy(dtype=float),
                        customdata=rows["epoch"].to_numpy(),
                        mode="lines+markers" if len(rows) <= 60 else "lines",
                        name=label,
                        legendgroup=_escape(layer),
                        showlegend=row == 1,
                        line={"color": color, "dash": dashes[run], "width": 1.8},
                        marker={"size": 5},
                        hovertemplate=(
                            f"{label}<br>epoch %{{customdata}}<br>"
                            f"{_QUANTITIES[q].split(' ')[0]}: %{{y:.4f}} bits"
                            "<extra></extra>"
                        ),
                        meta={
                            "kind": "information_curve",
                            "quantity": q,
                            "layer": _escape(layer),
                            "run": _escape(run),
                        },
                    ),
                    row=row,
                    col=1,
                )
                floor = (
                    pd.to_numeric(rows["i_ty_baseline"], errors="coerce").to_numpy(
                        float
                    )
                    if references and q == "i_ty" and "i_ty_baseline" in rows
                    else np.empty(0)
                )
                if np.isfinite(floor).any():
                    fig.add_trace(
                        go.Scatter(
                            x=x,
                            y=floor,
                            mode="lines",
                            name=f"{label}: floor",
                            legendgroup=_escape(layer),
                            showlegend=False,
                            line={"color": color, "dash": "dash", "width": 1.0},
                            opacity=0.8,
                            hovertemplate=(
                                f"{label}<br>I(T;Y) floor, labels permuted: "
                                "%{y:.4f} bits<extra></extra>"
                            ),
                            meta={"kind": "baseline", "layer": _escape(layer)},
                        ),
                        row=row,
                        col=1,
                    )
        ceiling = _finite(rows_q, "i_xt_ceiling") if q == "i_xt" else np.empty(0)
        values = _finite(rows_q, q)
        if references and ceiling.size and values.size:
            lo, hi = float(values.min()), float(values.max())
            top = float(ceiling.max())
            if _in_range(top, lo, max(hi, lo + MIN_PLANE_SPAN[0])):
                xs = epochs_all + offset
                fig.add_trace(
                    go.Scatter(
                        x=[xs.min(), xs.max()],
                        y=[top, top],
                        mode="lines",
                        name="I(X;T) ceiling: log2 n",
                        line={"color": _CEILING_COLOR, "dash": "dot", "width": 1.2},
                        hovertemplate=f"I(X;T) ceiling: {top:.4f} bits<extra></extra>",
                        meta={"kind": "ceiling"},
                    ),
                    row=row,
                    col=1,
                )
        if not drawn:
            _not_recorded(fig, row, 1, "not recorded", hide_x=False)
        fig.update_yaxes(title_text=_QUANTITIES[q], row=row, col=1)
        fig.update_xaxes(
            **{k: v for k, v in axis.items() if k != "title"}, row=row, col=1
        )
    fig.update_xaxes(title_text=axis["title"]["text"], row=len(chosen_q), col=1)
    if title is None:
        est = ", ".join(e for e in estimators if e)
        what = f"{statistic} of {len(data.names)} runs" if statistic else None
        if what is None and len(run_order) == 1:
            what = run_order[0]
        title = "Information over epochs" + (f" ({est})" if est else "")
        title += f": {what}" if what else ""
    fig.update_layout(
        title={"text": _escape(title), "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        hovermode="closest",
        height=260 + 220 * len(chosen_q),
        legend={"title": {"text": "layer"}},
        margin={"l": 70, "r": 40, "t": 70, "b": 60},
    )
    return fig


# ------------------------------------------------------------------- dashboard

#: Panels of the dashboard's time series, in order (names from
#: :data:`ibmonitor.schema.PANELS`); "Saturation" only where recorded, and
#: "Other" scalars (a learning rate, say) are not drawn.
DASHBOARD_PANELS = ("Loss", "Accuracy", "Sharpness", "Norms", "Saturation")
_OPTIONAL_PANELS = ("Saturation",)
#: Roles of the Loss and Accuracy panels: (label, candidate names, dash); the
#: first candidate recorded is drawn. The other names of these panels (the
#: ones no role names) are drawn dotted under their own names.
_ROLES = {
    "Loss": (
        ("train", ("train_loss", "gap/train_loss"), "solid"),
        ("test", ("test_loss", "gap/test_loss", "val_loss"), "solid"),
        ("gap (test − train)", ("gap/loss",), "dash"),
    ),
    "Accuracy": (
        ("train", ("train_acc", "gap/train_acc"), "solid"),
        ("test", ("test_acc", "gap/test_acc", "val_acc"), "solid"),
        ("gap (train − test)", ("gap/acc",), "dash"),
    ),
}
#: Panels whose value axis turns logarithmic when values span two decades.
_LOG_VALUE_PANELS = ("Sharpness", "Norms")
_ROLE_COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}


def _scalar_names_by_panel(scalars: pd.DataFrame) -> dict:
    """{panel: [scalar names in order of appearance]} by :func:`scalar_panel`."""
    panels: dict = {}
    for name in dict.fromkeys(scalars["name"].astype(str)):
        panels.setdefault(scalar_panel(name).panel, []).append(name)
    return panels


def _panel_series(scalars: pd.DataFrame, panel: str, names: list) -> list:
    """Return [(label, scalar name, dash, rows)] for one panel.

    ``names`` are the scalars :func:`ibmonitor.schema.scalar_panel` puts in
    ``panel``. Loss and Accuracy draw their roles (train, test, gap), then
    the names no role lists; the Norms panel draws the whole-model norms
    (``norms/total/*``) when recorded, else every norm; the other panels draw
    every name.
    """
    roles = _ROLES.get(panel, ())
    out = []
    listed: set = set()
    for label, candidates, dash in roles:
        listed.update(candidates)
        for name in candidates:
            if name in names:
                out.append((label, name, dash))
                break
    others = [name for name in names if name not in listed]
    if panel == "Norms" and any(n.startswith("norms/total/") for n in others):
        others = [n for n in others if n.startswith("norms/total/")]
    out.extend((name, name, "dot" if roles else "solid") for name in others)
    return [
        (label, name, dash, scalars[scalars["name"] == name].sort_values("epoch"))
        for label, name, dash in out
    ]


def dashboard(
    run: Any,
    *,
    estimator: Optional[str] = None,
    probe: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    color_scale: Any = "Viridis",
    log_epochs: Union[str, bool] = "auto",
    title: Optional[str] = None,
) -> go.Figure:
    """Draw a run's information plane beside its generalization and sharpness.

    Left: the information plane (see :func:`information_plane`; intervals and
    reference lines where recorded). Right, one
    above the other on a shared epoch axis (logarithmic where the schedule
    is log-spaced), the panels of :func:`ibmonitor.schema.scalar_panel`, the
    same panels as the HTML report and TensorBoard:

    - **Loss**: train and test loss (scalars ``train_loss``, ``test_loss``, or
      the gap measure's ``gap/train_loss``, ``gap/test_loss``) and the gap
      ``gap/loss``, dashed; other loss scalars dotted;
    - **Accuracy**: the same for ``*_acc`` and ``gap/acc``;
    - **Sharpness**: every ``sharpness/*``, ``hessian/*``,
      ``expected_sharpness/*`` and ``pac_bayes/*`` scalar;
    - **Norms**: every ``norms/total/*`` scalar (the per-layer norms where no
      whole-model norm was recorded);
    - **Saturation**, only where recorded: the saturated fraction of each
      tanh or sigmoid layer (``saturation/<layer>``, in [0, 1]).

    A panel whose measures were not recorded says "not recorded". Sharpness
    and norm panels whose values span more than two decades get a log value
    axis. Scalars of no panel (the "Other" panel: a learning rate, say) are
    not drawn.

    Parameters
    ----------
    run : Run, path or DataFrame
        One run (see :func:`information_plane` for the accepted forms). A
        DataFrame carries no scalars, so only the plane is drawn.
    estimator : str, optional
        Estimator of the information plane; by default the first recorded.
    probe : str, optional
        Probe set of the information plane; by default ``"default"``.
    layers : list of str, optional
        Layers of the information plane, by default all.
    color_scale : str or list, default="Viridis"
        Continuous colour scale of the epochs.
    log_epochs : {"auto", True, False}, default="auto"
        Log-scale the epochs (colours and epoch axes); ``"auto"`` follows the
        run's schedule (see :func:`ibmonitor.schema.use_log_epochs`).
    title : str, optional
        Figure title; by default the run's name.

    Returns
    -------
    fig : plotly.graph_objects.Figure
        The information-plane traces (one per layer) first, then the
        time-series traces (``meta``: ``kind="scalar"``, the scalar's
        ``name`` and its ``panel``).
    """
    owner = "dashboard"
    _check_log(log_epochs, owner)
    data = _gather(run, owner)
    if len(data.names) > 1:
        raise InvalidParameterError(
            f"dashboard draws one run; got {len(data.names)} runs "
            f"({data.names[:5]}). Call it once per run, or use information_plane "
            "to compare runs."
        )
    name = data.names[0]
    info, estimators, layer_order = _select(
        data,
        owner,
        estimator=estimator,
        layers=layers,
        runs=None,
        probe=probe,
        all_estimators=False,
    )
    scalars = data.scalars.dropna(subset=["value"])
    info_epochs = info["epoch"].to_numpy()
    scalar_epochs = scalars["epoch"].to_numpy()
    all_epochs = np.unique(np.concatenate([info_epochs, scalar_epochs]).astype(float))
    log = _use_log(
        log_epochs,
        data.configs,
        np.unique(info_epochs) if len(info_epochs) else all_epochs,
    )
    by_panel = _scalar_names_by_panel(scalars)
    panels = [
        p for p in DASHBOARD_PANELS if p not in _OPTIONAL_PANELS or by_panel.get(p)
    ]
    n_rows = len(panels)

    est = estimators[0] if estimators and estimators[0] else None
    plane_title = "Information plane" + (f" ({_escape(est)})" if est else "")
    fig = make_subplots(
        rows=n_rows,
        cols=2,
        specs=[[{"rowspan": n_rows}, {}]] + [[None, {}]] * (n_rows - 1),
        column_widths=[0.52, 0.48],
        shared_xaxes=True,
        horizontal_spacing=0.09,
        vertical_spacing=0.045 if n_rows <= 4 else 0.04,
        subplot_titles=[plane_title, *panels],
    )
    traces, ends = _plane_traces(
        info,
        layer_order=layer_order,
        run_order=[name],
        log=log,
        overlay=False,
        spread=None,
    )
    if traces:
        # the floor and ceiling lines, named on hover (the legends are the panels')
        traces.extend(_reference_traces(info, _plane_axes(info)))
    for trace in traces:
        trace.showlegend = False
        fig.add_trace(trace, row=1, col=1)
    if traces:
        axes = _plane_axes(info)
        plane_height = 820 + 170 * (n_rows - 4) - 140
        for note in place_labels(ends, axes, (460, plane_height)):
            fig.add_annotation(note, row=1, col=1)
        _apply_min_spans(fig, axes, 1, 1)
    if not traces:
        _not_recorded(fig, 1, 1, "information not recorded")
    else:
        fig.update_xaxes(title_text=X_TITLE, row=1, col=1)
        fig.update_yaxes(title_text=Y_TITLE, row=1, col=1)

    offset, axis = _epoch_axis(all_epochs if len(all_epochs) else np.array([0]), log)
    for i, panel in enumerate(panels):
        row = i + 1
        series = _panel_series(scalars, panel, by_panel.get(panel, []))
        legend = f"legend{row + 1}"
        values = []
        for k, (label, scalar, dash, rows) in enumerate(series):
            epochs = rows["epoch"].to_numpy()
            color = _ROLE_COLORS.get(
                label.split(" ")[0], "#555" if dash == "dash" else None
            )
            if color is None:
                color = _PALETTE[(k + 2) % len(_PALETTE)]
            values.append(rows["value"].to_numpy())
            fig.add_trace(
                go.Scatter(
                    x=epochs + offset,
                    y=rows["value"].to_numpy(),
                    customdata=epochs,
                    mode="lines+markers" if len(rows) <= 60 else "lines",
                    name=_escape(label),
                    legend=legend,
                    line={"color": color, "dash": dash, "width": 1.8},
                    marker={"size": 5},
                    hovertemplate=(
                        f"{_escape(scalar)}<br>epoch %{{customdata}}<br>"
                        "%{y:.4g}<extra></extra>"
                    ),
                    meta={"kind": "scalar", "name": _escape(scalar), "panel": panel},
                ),
                row=row,
                col=2,
            )
        if not series:
            _not_recorded(fig, row, 2, "not recorded", hide_x=False)
            if len(all_epochs):
                # plotly.js draws no axis for a subplot without traces; an
                # invisible placeholder keeps the shared epoch axis drawn.
                fig.add_trace(
                    go.Scatter(
                        x=[all_epochs.min() + offset, all_epochs.max() + offset],
                        y=[0.0, 0.0],
                        mode="markers",
                        marker={"opacity": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        meta={"kind": "placeholder"},
                    ),
                    row=row,
                    col=2,
                )
        else:
            joined = np.concatenate(values)
            joined = joined[np.isfinite(joined)]
            if (
                panel in _LOG_VALUE_PANELS
                and len(joined)
                and joined.min() > 0
                and joined.max() / joined.min() > 100
            ):
                fig.update_yaxes(type="log", row=row, col=2)
            if panel == "Saturation":
                fig.update_yaxes(rangemode="tozero", row=row, col=2)
        fig.update_xaxes(
            **{k: v for k, v in axis.items() if k != "title"}, row=row, col=2
        )
        # One legend per panel, beside it (plotly >= 5.15 draws several legends).
        yaxis = fig.get_subplot(row, 2).yaxis
        fig.update_layout(
            {
                legend: {
                    "x": 1.01,
                    "xanchor": "left",
                    "y": yaxis.domain[1],
                    "yanchor": "top",
                    "font": {"size": 10},
                    "bgcolor": "rgba(255,255,255,0)",
                }
            }
        )

    fig.update_xaxes(title_text=axis["title"]["text"], row=n_rows, col=2)

    plane_domain = fig.get_subplot(1, 1).xaxis.domain
    fig.update_layout(
        title={
            "text": _escape(title if title is not None else name),
            "x": 0.01,
            "xanchor": "left",
        },
        coloraxis=_coloraxis(
            info_epochs if len(info_epochs) else np.array([0]),
            log,
            color_scale,
            orientation="h",
            x=(plane_domain[0] + plane_domain[1]) / 2,
            xanchor="center",
            len=(plane_domain[1] - plane_domain[0]) * 0.9,
            y=-0.1,
            yanchor="top",
            title={"text": "epoch", "side": "top"},
        ),
        template="plotly_white",
        hovermode="closest",
        height=820 + 170 * (n_rows - 4),
        margin={"l": 70, "r": 190, "t": 80, "b": 110},
    )
    return fig


# ------------------------------------------------------------ combined figures

_SHARE_OPTIONS = (None, "all", "row")
_LINE_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_DASHES = ("solid", "dash", "dot", "dashdot")


def _is_plane(fig: go.Figure) -> bool:
    """Whether a figure is an information plane (by its traces or x title)."""
    if any((t.meta or {}).get("kind") == "information_plane" for t in fig.data):
        return True
    return (fig.layout.xaxis.title.text or "") == X_TITLE


def _widest_coloraxis(current: Any, new: Any) -> Any:
    """Keep the colour axis (and ticks) spanning the most epochs, widened to both.

    Every information plane colours its markers by log10(epoch + 1) (or the
    epoch), so one colour axis serves all panels once cmin/cmax cover them.
    """
    if new is None or new.colorscale is None or new.cmin is None:
        return current
    if current is None:
        return new
    wider = new if (new.cmax - new.cmin) > (current.cmax - current.cmin) else current
    wider = type(wider)(wider)
    wider.cmin = min(current.cmin, new.cmin)
    wider.cmax = max(current.cmax, new.cmax)
    return wider


def _share_plane_ranges(
    out: go.Figure, figures: Sequence[go.Figure], refs: Sequence[int], cols: int
) -> None:
    """Give the plane panels ``refs`` of ``out`` the ranges that cover them all."""
    xs: list = []
    ys: list = []
    for i in refs:
        for trace in figures[i].data:
            if trace.x is not None:
                xs.extend(v for v in trace.x if v is not None and math.isfinite(v))
            if trace.y is not None:
                ys.extend(v for v in trace.y if v is not None and math.isfinite(v))
    if not xs or not ys:
        return
    (x0, x1), (y0, y1) = (min(xs), max(xs)), (min(ys), max(ys))
    if x1 - x0 < MIN_PLANE_SPAN[0]:
        x0, x1 = (x0 + x1 - MIN_PLANE_SPAN[0]) / 2, (x0 + x1 + MIN_PLANE_SPAN[0]) / 2
    if y1 - y0 < MIN_PLANE_SPAN[1]:
        y0, y1 = (y0 + y1 - MIN_PLANE_SPAN[1]) / 2, (y0 + y1 + MIN_PLANE_SPAN[1]) / 2
    xpad, ypad = 0.05 * (x1 - x0), 0.06 * (y1 - y0)
    for i in refs:
        row, col = i // cols + 1, i % cols + 1
        # room on the right for the layer names at the trajectory ends
        out.update_xaxes(range=[x0 - xpad, x1 + 3 * xpad], row=row, col=col)
        out.update_yaxes(range=[y0 - ypad, y1 + ypad], row=row, col=col)


def combine_figures(
    figures: Sequence[go.Figure],
    titles: Sequence[str],
    *,
    title: str,
    cols: Optional[int] = None,
    shared_plane_axes: Optional[str] = "all",
    horizontal_spacing: float = 0.07,
    height: Optional[int] = None,
) -> go.Figure:
    """Put several single-panel figures side by side in one figure.

    Traces, layer-name annotations, axis titles, axis types and tick labels
    are copied from each figure (its first subplot); a legend entry shown by
    several figures is shown once. The information planes among them (from
    :func:`information_plane`) share one epoch colour axis, widened to cover
    all of them.

    Parameters
    ----------
    figures : sequence of plotly.graph_objects.Figure
        Single-panel figures, e.g. from :func:`information_plane` and
        :func:`line_figure`; they are not modified.
    titles : sequence of str
        One subplot title per figure.
    title : str
        Title of the combined figure.
    cols : int, optional
        Panels per row; by default all in one row.
    shared_plane_axes : {"all", "row"} or None, default="all"
        ``"all"``: the information-plane panels share their I(X;T) and I(T;Y)
        ranges, so trajectories compare at a glance; ``"row"``: within each
        row; None: each panel keeps its own ranges. Shared ranges span at
        least :data:`MIN_PLANE_SPAN` bits.
    horizontal_spacing : float, default=0.07
        Space between columns, as a fraction of the width.
    height : int, optional
        Height in pixels; by default plotly's.

    Returns
    -------
    fig : plotly.graph_objects.Figure

    Raises
    ------
    InvalidParameterError
        No figure, a different number of titles, or a bad option.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"epoch": [0, 1], "layer": ["a", "a"],
    ...                       "i_xt": [1.0, 2.0], "i_ty": [0.1, 0.4]})
    >>> fig = combine_figures([information_plane(frame)] * 2, ["left", "right"],
    ...                       title="two planes")
    >>> len(fig.data)
    2
    """
    owner = "combine_figures"
    check_param(
        shared_plane_axes,
        "shared_plane_axes",
        owner,
        kind="option",
        options=_SHARE_OPTIONS,
    )
    if not figures:
        raise InvalidParameterError(f"{owner} needs at least one figure. Got none.")
    if len(titles) != len(figures):
        raise InvalidParameterError(
            f"{owner} needs one title per figure: got {len(figures)} figures and "
            f"{len(titles)} titles."
        )
    n = len(figures)
    cols = cols or n
    rows = math.ceil(n / cols)
    out = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles),
        horizontal_spacing=horizontal_spacing,
        vertical_spacing=0.14 if rows > 1 else 0.1,
    )
    coloraxis = None
    plane_refs: list = []
    legend_seen: set = set()
    for i, fig in enumerate(figures):
        row, col = i // cols + 1, i % cols + 1
        plane = _is_plane(fig)
        for trace in fig.data:
            trace = type(trace)(trace)  # a copy: the source figure is kept
            name = getattr(trace, "legendgroup", None) or getattr(trace, "name", None)
            if trace.showlegend is not False and name is not None:
                if name in legend_seen:
                    trace.showlegend = False
                legend_seen.add(name)
            out.add_trace(trace, row=row, col=col)
        for ann in fig.layout.annotations or ():
            if ann.xref == "paper" or ann.yref == "paper":
                continue  # subplot titles and notes of the source figure
            out.add_annotation(ann.to_plotly_json(), row=row, col=col)
        out.update_xaxes(
            title_text=fig.layout.xaxis.title.text,
            type=fig.layout.xaxis.type,
            row=row,
            col=col,
        )
        out.update_yaxes(
            title_text=fig.layout.yaxis.title.text if (col == 1 or not plane) else None,
            type=fig.layout.yaxis.type,
            row=row,
            col=col,
        )
        if fig.layout.xaxis.tickvals is not None:
            out.update_xaxes(
                tickvals=fig.layout.xaxis.tickvals,
                ticktext=fig.layout.xaxis.ticktext,
                row=row,
                col=col,
            )
        if plane:
            plane_refs.append(i)
            coloraxis = _widest_coloraxis(coloraxis, fig.layout.coloraxis)
    if shared_plane_axes == "all":
        groups = [plane_refs]
    elif shared_plane_axes == "row":
        groups = [[i for i in plane_refs if i // cols == r] for r in range(rows)]
    else:
        groups = []
    for refs in groups:
        if refs:
            _share_plane_ranges(out, figures, refs, cols)
    layout: dict = {
        "title": {"text": title, "x": 0.01, "xanchor": "left"},
        "template": "plotly_white",
        "hovermode": "closest",
        "margin": {"l": 70, "r": 40, "t": 80, "b": 60},
        "legend": {"orientation": "h", "y": -0.18, "x": 0.0},
    }
    if coloraxis is not None:
        layout["coloraxis"] = coloraxis
    if height is not None:
        layout["height"] = height
    out.update_layout(**layout)
    return out


def line_figure(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    color: str,
    dash: Optional[str] = None,
    xtitle: str,
    ytitle: str,
    log_x: bool = False,
    log_y: bool = False,
) -> go.Figure:
    """Draw one line per ``color`` value (and ``dash`` value) of a tidy table.

    Parameters
    ----------
    frame : pandas.DataFrame
        A tidy table, e.g. the scalars of :func:`ibmonitor.storage.load_runs`
        (``run, epoch, name, value``).
    x, y : str
        Columns of the horizontal and vertical positions.
    color : str
        Column whose values get one colour each (in order of appearance).
    dash : str, optional
        Column whose values get one dash style each (solid, dash, dot,
        dashdot, then again).
    xtitle, ytitle : str
        Axis titles.
    log_x : bool, default=False
        Logarithmic x axis; where some x is 0 or less every x is shifted by
        +1 (an epoch axis starting at 0), and the title says so.
    log_y : bool, default=False
        Logarithmic y axis.

    Returns
    -------
    fig : plotly.graph_objects.Figure
        One trace per group, named ``"<color value> · <dash value>"``.

    Raises
    ------
    InvalidParameterError
        A column is missing from ``frame``.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"epoch": [0, 1, 0, 1], "run": ["a", "a", "b", "b"],
    ...                       "value": [1.0, 0.5, 1.2, 0.7]})
    >>> fig = line_figure(frame, x="epoch", y="value", color="run",
    ...                   xtitle="epoch", ytitle="loss")
    >>> [t.name for t in fig.data]
    ['a', 'b']
    """
    missing = [c for c in (x, y, color, dash) if c is not None and c not in frame]
    if missing:
        raise InvalidParameterError(
            f"The table given to line_figure lacks the columns {missing}. "
            f"Got columns {list(frame.columns)} instead."
        )
    fig = go.Figure()
    groups = [color] + ([dash] if dash else [])
    colors = list(dict.fromkeys(frame[color]))
    styles = list(dict.fromkeys(frame[dash])) if dash else [None]
    shift = 1.0 if log_x and (frame[x].to_numpy(dtype=float) <= 0).any() else 0.0
    for key, rows in frame.groupby(groups, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        c = colors.index(key[0])
        d = styles.index(key[1]) if dash else 0
        rows = rows.sort_values(x)
        label = " · ".join(str(k) for k in key)
        fig.add_trace(
            go.Scatter(
                x=rows[x].to_numpy(dtype=float) + shift,
                y=rows[y].to_numpy(dtype=float),
                mode="lines+markers",
                name=_escape(label),
                legendgroup=_escape(label),
                line={
                    "color": _LINE_PALETTE[c % len(_LINE_PALETTE)],
                    "dash": _DASHES[d % len(_DASHES)],
                },
                marker={"size": 5},
                hovertemplate=(
                    f"{_escape(label)}<br>{_escape(x)}: %{{x}}<br>"
                    f"{_escape(y)}: %{{y:.4g}}<extra></extra>"
                ),
            )
        )
    fig.update_xaxes(
        title_text=xtitle + (" (log scale, +1)" if shift else ""),
        type="log" if log_x else None,
    )
    fig.update_yaxes(title_text=ytitle, type="log" if log_y else None)
    fig.update_layout(template="plotly_white")
    return fig


# ---------------------------------------------------------------- static export


@contextlib.contextmanager
def _browser_env(path: str):
    """Set ``BROWSER_PATH`` for kaleido's browser lookup, then restore it."""
    old = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old


def write_image(
    fig: go.Figure,
    path: Union[str, os.PathLike[str]],
    *,
    format: Optional[str] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    scale: float = 1.0,
) -> Path:
    """Export a figure to PNG, SVG or PDF through kaleido and a headless Chromium.

    kaleido (1.x, the ``export`` extra) drives a Chrome or Chromium found by
    :func:`ibmonitor._browser.find_browser` (``BROWSER_PATH``,
    ``/usr/bin/chromium``, or ``chromium`` / ``google-chrome`` on ``PATH``),
    with plotly.js from the installed plotly package and MathJax off, so that
    export needs no network.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        The figure, e.g. from :func:`information_plane` or :func:`dashboard`.
    path : str or path-like
        Output file; its suffix gives the format unless ``format`` is given.
    format : {"png", "svg", "pdf", "jpeg", "webp"}, optional
        Image format, by default from the suffix of ``path``.
    width, height : int, optional
        Size in CSS pixels; by default the figure's own, else 1100 x 600.
    scale : float, default=1.0
        Multiplies the resolution of raster formats.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    BrowserNotFoundError
        When no Chrome or Chromium is found; the message says how to get one
        (the ``chromium`` system package, or ``BROWSER_PATH``).
    ModuleNotFoundError
        When kaleido is not installed.
    InvalidParameterError
        For a format other than the ones above.
    """
    from ._browser import require_browser

    path = Path(path)
    owner = "write_image"
    fmt = format if format is not None else path.suffix.lstrip(".").lower()
    if fmt not in _IMAGE_FORMATS:
        raise InvalidParameterError(
            f"The 'format' parameter of {owner} must be one of "
            f"{sorted(_IMAGE_FORMATS)} (or given by the suffix of 'path'). Got "
            f"{fmt!r} instead."
        )
    check_param(scale, "scale", owner, kind="real", low=0, low_closed=False)
    try:
        import kaleido
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "write_image needs kaleido>=1.0 for static export; install it with "
            "`pip install 'ibmonitor[export]'` (or `pip install kaleido`)."
        ) from err
    browser = require_browser("write_image (static export)")
    import plotly

    layout = fig.layout
    opts = {
        "format": _IMAGE_FORMATS[fmt],
        "width": width or layout.width or 1100,
        "height": height or layout.height or 600,
        "scale": scale,
    }
    plotlyjs = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    kopts: dict = {"mathjax": False}
    if plotlyjs.is_file():
        kopts["plotlyjs"] = str(plotlyjs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _browser_env(browser):
        data = kaleido.calc_fig_sync(fig.to_dict(), opts=opts, kopts=kopts)
    path.write_bytes(data)
    logger.info("wrote %s (%d bytes)", path, len(data))
    return path
