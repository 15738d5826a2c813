"""Figures of :func:`ibmonitor.analysis.sensitivity`: phases against the grid.

:func:`sensitivity_figure` draws, from a sensitivity table (and its
:func:`~ibmonitor.analysis.sensitivity_summary`), one figure:

- first row: per layer, the compression (highest minus final I(X;T)), the
  fitting (I(T;Y) gained up to the I(X;T) peak) and the highest I(X;T), in
  bits, against the grid value, with the threshold of the summary as a
  dashed line;
- below: one small information plane per grid value (markers coloured by
  epoch), on shared axes, so that the trajectories compare at a glance.

The panels are made by :func:`ibmonitor.plotting.line_figure` and
:func:`ibmonitor.plotting.information_plane` and put together by
:func:`ibmonitor.plotting.combine_figures`; :func:`write_sensitivity_html`
writes a self-contained HTML file (plotly.js inlined from the installed
plotly package, never a CDN).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .analysis import SENSITIVITY_THRESHOLD, sensitivity_summary
from .exceptions import InvalidParameterError

__all__ = ["grid_labels", "sensitivity_figure", "write_sensitivity_html"]

_PANELS = (
    ("compression_bits", "Compression: highest − final I(X;T) (bits)"),
    ("fitting_bits", "Fitting: I(T;Y) gained up to the I(X;T) peak (bits)"),
    ("i_xt_max", "Highest I(X;T) (bits)"),
)


def grid_labels(frame: pd.DataFrame, grid: Sequence[str]) -> List[str]:
    """Return a short label per row for its grid point.

    One parameter gives its value (``"30"``); several give
    ``"n_bins=30, strategy='uniform'"``.

    Parameters
    ----------
    frame : DataFrame
        A table with the grid columns.
    grid : sequence of str
        The grid columns.

    Returns
    -------
    labels : list of str
        One label per row of ``frame``.
    """
    names = list(grid)
    if len(names) == 1:
        return [_value_text(v) for v in frame[names[0]]]
    return [
        ", ".join(f"{n}={_value_text(v, quote=True)}" for n, v in zip(names, values))
        for values in frame[names].itertuples(index=False, name=None)
    ]


def _value_text(value: Any, quote: bool = False) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    if isinstance(value, str) and not quote:
        return value
    return repr(value)


def _numeric_axis(values: Sequence[Any]) -> Optional[bool]:
    """None when ``values`` are not all real numbers, else whether to log them."""
    if not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values
    ):
        return None
    arr = np.asarray(values, dtype=float)
    if not np.isfinite(arr).all():
        return None
    return bool((arr > 0).all() and arr.max() / arr.min() >= 10)


def sensitivity_figure(
    table: pd.DataFrame,
    summary: Optional[pd.DataFrame] = None,
    *,
    grid: Optional[Sequence[str]] = None,
    threshold: float = SENSITIVITY_THRESHOLD,
    probe: Optional[str] = None,
    title: Optional[str] = None,
) -> Any:
    """Draw the phases of each layer against the grid, and a plane per grid value.

    Parameters
    ----------
    table : DataFrame
        The result of :func:`ibmonitor.analysis.sensitivity`.
    summary : DataFrame, optional
        Its :func:`~ibmonitor.analysis.sensitivity_summary`; computed with
        ``threshold`` when not given.
    grid : sequence of str, optional
        The grid columns; default ``table.attrs["grid"]``.
    threshold : float, default=0.1
        Bits drawn as the dashed line of the first row (and used to compute
        the summary when it is not given).
    probe : str, optional
        The probe set to draw; default the first in the table.
    title : str, optional
        Figure title; by default names the run, estimator and grid.

    Returns
    -------
    fig : plotly.graph_objects.Figure
        Three line panels (compression, fitting, highest I(X;T), bits, one
        line per layer, x = the grid value: numeric, log-scaled when the
        values are positive and span a factor of 10 or more, or one
        position per grid point), then one information plane per grid point.

    Raises
    ------
    InvalidParameterError
        An empty table, unknown grid columns or an unknown probe.

    Examples
    --------
    >>> from ibmonitor.analysis import sensitivity
    >>> table = sensitivity("runs/demo", "binned", {"n_bins": [10, 30, 100]})
    ... # doctest: +SKIP
    >>> sensitivity_figure(table).write_html("sensitivity.html")  # doctest: +SKIP
    """
    import plotly.graph_objects as go

    from .plotting import combine_figures, information_plane, line_figure

    if summary is None:
        summary = sensitivity_summary(table, grid=grid, threshold=threshold)
    names = list(grid) if grid is not None else list(table.attrs.get("grid") or [])
    if not names or any(n not in table or n not in summary for n in names):
        raise InvalidParameterError(
            "sensitivity_figure cannot find the grid columns "
            f"{names or '(none in table.attrs)'} in the table and summary; pass "
            "grid=[...] naming them."
        )
    if table.empty:
        raise InvalidParameterError(
            "sensitivity_figure got an empty table: nothing was estimated."
        )
    probes = list(dict.fromkeys(table["probe"]))
    if probe is None:
        probe = probes[0]
    elif probe not in probes:
        raise InvalidParameterError(
            f"Unknown probe {probe!r} in sensitivity_figure. Probes: {probes}."
        )
    table = table[table["probe"] == probe].copy()
    summary = summary[summary["probe"] == probe].copy()

    labels = grid_labels(table, names)
    table["_point"] = labels
    summary["_point"] = grid_labels(summary, names)
    points = list(dict.fromkeys(labels))
    log = _numeric_axis(summary[names[0]].tolist()) if len(names) == 1 else None
    if log is None:
        summary["_x"] = summary["_point"].map({p: i for i, p in enumerate(points)})
        tickvals = list(range(len(points)))
        xtitle = ", ".join(names)
    else:
        summary["_x"] = summary[names[0]].astype(float)
        tickvals = sorted(set(summary["_x"]))
        xtitle = names[0] + (" (log scale)" if log else "")
    ticktext = [
        p
        for _, p in sorted(
            {float(x): p for x, p in zip(summary["_x"], summary["_point"])}.items()
        )
    ]

    figures, titles = [], []
    x_lo, x_hi = min(tickvals), max(tickvals)
    for column, panel_title in _PANELS:
        fig = line_figure(
            summary,
            x="_x",
            y=column,
            color="layer",
            xtitle=xtitle,
            ytitle="bits",
            log_x=bool(log),
        )
        if column != "i_xt_max":
            fig.add_trace(
                go.Scatter(
                    x=[x_lo, x_hi],
                    y=[threshold, threshold],
                    mode="lines",
                    name=f"threshold ({threshold:g} bits)",
                    line={"color": "rgba(90, 90, 90, 0.7)", "dash": "dash"},
                    hoverinfo="skip",
                )
            )
        fig.update_xaxes(tickvals=tickvals, ticktext=ticktext)
        figures.append(fig)
        titles.append(panel_title)
    for point in points:
        rows = table[table["_point"] == point]
        plane = rows[["epoch", "probe", "layer", "estimator", "i_xt", "i_ty"]]
        figures.append(information_plane(plane, probe=probe))
        titles.append(f"{', '.join(names)} = {point}" if len(names) == 1 else point)
    cols = 3
    rows_n = math.ceil(len(figures) / cols)
    run = table.attrs.get("run", "")
    estimator = table.attrs.get("estimator", "")
    if title is None:
        where = f", probe {probe}" if len(probes) > 1 else ""
        title = f"Sensitivity of {run} to {', '.join(names)} ({estimator}{where})"
    return combine_figures(
        figures,
        titles,
        title=title,
        cols=cols,
        shared_plane_axes="all",
        height=340 * rows_n + 140,
    )


def write_sensitivity_html(fig: Any, path: Union[str, os.PathLike]) -> Path:
    """Write ``fig`` as one self-contained HTML file (no network needed).

    plotly.js is inlined from the installed plotly package
    (``include_plotlyjs=True``), never loaded from a CDN.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
        E.g. from :func:`sensitivity_figure`.
    path : str or path-like
        The file to write; its folder is created.

    Returns
    -------
    path : pathlib.Path
        The file written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(
        out,
        include_plotlyjs=True,
        include_mathjax=False,
        full_html=True,
        config={"displaylogo": False, "responsive": True},
    )
    return out
