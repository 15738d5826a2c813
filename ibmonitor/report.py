"""A self-contained HTML report of one or more runs (``ibmonitor report``).

The report is one HTML file that works with no network: plotly.js is read
from the installed plotly package (``plotly/package_data/plotly.min.js``) and
inlined once in the page head, and every figure is a ``<div>`` with a short
script that draws it with that copy. It holds, per run, the dashboard of
:func:`ibmonitor.plotting.dashboard` (its scalars in the panels of
:func:`ibmonitor.schema.scalar_panel`: loss, accuracy, sharpness, norms and,
where recorded, saturation), the scalars of the "Other" panel (a learning
rate, say) in one more figure, one information plane per further estimator,
the summary table of :func:`ibmonitor.analysis.summary_table` and the run's
configuration (``run.json``); with several runs, a comparison of their
information planes comes first. Every run, layer and other name is
HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 1240px; padding: 1.5rem 2rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd;
     padding-bottom: 0.3rem; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
.meta { color: #666; font-size: 0.9rem; }
nav ul { padding-left: 1.2rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; }
td.value { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
           white-space: pre-wrap; word-break: break-word; max-width: 48rem; }
.table-wrap { overflow-x: auto; }
.figure { margin: 0.5rem 0 1rem; }
details summary { cursor: pointer; color: #444; }
.pinned-note { background: #fff8e1; border-left: 4px solid #f0b400;
               padding: 0.5rem 0.8rem; font-size: 0.9rem; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _flatten(config: Any, prefix: str = "") -> list:
    """Flatten nested dicts into (key path, value) rows; lists stay JSON."""
    rows: list = []
    if isinstance(config, Mapping) and config:
        for key, value in config.items():
            path = f"{prefix} › {key}" if prefix else str(key)
            rows.extend(_flatten(value, path))
        return rows
    if isinstance(config, str):
        text = config
    else:
        try:
            text = json.dumps(config, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(config)
    if len(text) > 600:
        text = text[:600] + " …"
    return [(prefix, text)]


def _config_table(config: Mapping) -> str:
    rows = _flatten(config)
    if not rows:
        return '<p class="meta">No configuration recorded.</p>'
    body = "\n".join(
        f'<tr><th scope="row">{_esc(key)}</th><td class="value">{_esc(value)}</td></tr>'
        for key, value in rows
    )
    return (
        '<div class="table-wrap"><table class="config">'
        "<thead><tr><th>key</th><th>value</th></tr></thead>"
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _summary_html(run: Any) -> str:
    from .analysis import summary_table

    table = summary_table(run)
    if table is None or len(table) == 0:
        return '<p class="meta">Nothing recorded yet.</p>'
    return _table_html(table)


def _figure_html(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    # plotly.io.to_html escapes "</" inside the figure JSON, so no name can
    # close the script element.
    return (
        '<div class="figure">'
        + pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
        + "</div>"
    )


def _plotlyjs() -> str:
    """plotly.js from the installed plotly package, never a CDN."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _runs_of(runs: Any) -> list:
    """Load the report's runs: paths, folders of runs, Run objects, Runs."""
    from .storage import RUN_FILE, Run, Runs, load_run, load_runs

    items = [runs] if isinstance(runs, (str, os.PathLike, Run, Runs)) else list(runs)
    if not items:
        raise ValueError("write_report needs at least one run. Got none.")
    out: list = []
    for item in items:
        if isinstance(item, Runs):
            out.extend(item.runs)
        elif isinstance(item, (str, os.PathLike)):
            if (Path(item) / RUN_FILE).is_file():
                out.append(load_run(item))
            else:
                out.extend(load_runs(item).runs)
        else:
            out.append(item)
    return out


def _other_scalars_figure(run: Any, name: str) -> Any:
    """Draw the run's scalars of the "Other" panel over epochs (None for none)."""
    from .plotting import line_figure
    from .schema import scalar_panel, use_log_epochs

    scalars = getattr(run, "scalars", None)
    if scalars is None or len(scalars) == 0:
        return None
    names = [
        n
        for n in dict.fromkeys(scalars["name"].astype(str))
        if scalar_panel(n).panel == "Other"
    ]
    if not names:
        return None
    frame = scalars[scalars["name"].astype(str).isin(names)].dropna(subset=["value"])
    if frame.empty:
        return None
    config = run.config if isinstance(run.config, Mapping) else {}
    log = use_log_epochs([config], frame["epoch"])
    fig = line_figure(
        frame,
        x="epoch",
        y="value",
        color="name",
        xtitle="epoch",
        ytitle="value",
        log_x=log,
    )
    fig.update_layout(
        title={"text": html.escape(f"Other scalars: {name}", quote=False)},
        height=360,
    )
    return fig


def _table_html(frame: Any) -> str:
    """Return a small escaped HTML table of a DataFrame."""
    # pandas escapes cell text (escape=True); float_format keeps it readable.
    return (
        '<div class="table-wrap">'
        + frame.to_html(
            index=False,
            escape=True,
            na_rep="",
            border=0,
            classes="summary",
            float_format=lambda v: f"{v:.4g}",
        )
        + "</div>"
    )


def _saliency_strip(run: Any, name: str) -> Any:
    """Draw each explained input's |saliency| over the explained epochs.

    Images (inputs with two spatial dimensions): a grid, one row per input
    (at most 8) and one column per epoch (at most 10, spread over the run),
    channels reduced by their largest absolute value, each map scaled on its
    own. Other inputs: one heatmap, epochs against input features, of the
    mean |gradient| over the explained inputs. None without saliency.
    """
    import numpy as np
    from plotly.subplots import make_subplots

    stored = {e: run.explanations(e).get("saliency") for e in run.explanation_epochs}
    epochs = [e for e, m in stored.items() if m is not None]
    if not epochs:
        return None
    if len(epochs) > 10:
        picks = np.unique(np.linspace(0, len(epochs) - 1, 10).round().astype(int))
        epochs = [epochs[i] for i in picks]
    maps = {e: np.abs(stored[e]) for e in epochs}
    first = maps[epochs[0]]
    image = first.ndim == 3 or (first.ndim == 4 and first.shape[1] in (1, 3, 4))
    if not image:
        z = np.stack([m.reshape(len(m), -1).mean(axis=0) for m in maps.values()])
        fig = make_subplots(rows=1, cols=1)
        fig.add_heatmap(z=z, y=[str(e) for e in epochs], colorscale="Viridis")
        fig.update_xaxes(title_text="input feature")
        fig.update_yaxes(title_text="epoch", type="category")
        height = 140 + 22 * len(epochs)
    else:
        rows = min(len(first), 8)
        fig = make_subplots(
            rows=rows,
            cols=len(epochs),
            column_titles=[f"epoch {e}" for e in epochs],
            horizontal_spacing=0.01,
            vertical_spacing=0.01,
        )
        for col, epoch in enumerate(epochs, start=1):
            m = maps[epoch]
            if m.ndim == 4:
                m = m.max(axis=1)
            for row in range(1, rows + 1):
                tile = m[row - 1]
                span = tile.max() - tile.min()
                tile = (tile - tile.min()) / (span if span > 0 else 1.0)
                fig.add_heatmap(
                    z=tile[::-1],
                    colorscale="Viridis",
                    showscale=False,
                    row=row,
                    col=col,
                )
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False, scaleanchor="x")
        height = 110 + 80 * rows
    fig.update_layout(
        title={
            "text": html.escape(f"Saliency |d score / d input|: {name}", quote=False)
        },
        height=height,
    )
    return fig


def _explanations_html(run: Any, name: str, figure: Any) -> str:
    """Return the report's explanations of a run: saliency strip and tables."""
    if not getattr(run, "explanation_epochs", None):
        return ""
    parts = ["<h3>What the network looks at (docs/explain.md)</h3>"]
    strip = _saliency_strip(run, name)
    if strip is not None:
        parts.append(figure(strip))
    top = run.top_activations
    if len(top):
        last = top[top["epoch"] == top["epoch"].max()]
        last = last[last["unit"] < 8]
        parts.append(
            f'<p class="meta">Top-activating probe inputs at epoch '
            f"{int(last['epoch'].max())} (units 0-7; index into the probe set; "
            "all units and epochs: <code>Run.top_activations</code>).</p>"
        )
        parts.append(_table_html(last.head(80)))
    influence = run.influence
    if len(influence):
        last = influence[influence["epoch"] == influence["epoch"].max()]
        ranked = last.sort_values("influence")
        import pandas as pd

        shown = pd.concat(
            [
                pd.concat([g.head(3), g.tail(3)]).drop_duplicates()
                for _, g in ranked.groupby("test_index", sort=True)
            ],
            ignore_index=True,
        )
        parts.append(
            f'<p class="meta">Influence at epoch {int(last["epoch"].max())}: '
            "predicted change of each test loss when a training point is removed "
            "(positive: the point helped), the 3 most harmful and most helpful "
            "points per test point (<code>Run.influence</code>).</p>"
        )
        parts.append(_table_html(shown))
    return "\n".join(parts)


def _geometry_figure(run: Any, name: str) -> Any:
    """Draw the geometry scalars: one chart per quantity, one line per layer.

    Quantities: separation, flattening, linear-probe accuracy and usable
    information (``geometry/<layer>/<quantity>``), filter pairing
    (``pairing/<layer>/<quantity>``). None when the run has none.
    """
    from plotly.subplots import make_subplots

    from .schema import scalar_panel, use_log_epochs

    scalars = getattr(run, "scalars", None)
    if scalars is None or len(scalars) == 0:
        return None
    names = scalars["name"].astype(str)
    frame = scalars[names.map(lambda n: scalar_panel(n).panel == "Geometry")]
    frame = frame.dropna(subset=["value"])
    if frame.empty:
        return None
    frame = frame.assign(
        chart=frame["name"].map(lambda n: scalar_panel(str(n)).chart),
        layer=frame["name"].map(lambda n: str(n).split("/", 1)[1].rsplit("/", 1)[0]),
    )
    charts = list(dict.fromkeys(frame["chart"]))
    cols = 2 if len(charts) > 1 else 1
    rows = (len(charts) + cols - 1) // cols
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[html.escape(c, quote=False) for c in charts],
        vertical_spacing=0.12 if rows > 1 else 0.2,
    )
    config = run.config if isinstance(run.config, Mapping) else {}
    log = use_log_epochs([config], frame["epoch"])
    layers = list(dict.fromkeys(frame["layer"]))
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    for k, chart in enumerate(charts):
        row, col = k // cols + 1, k % cols + 1
        part = frame[frame["chart"] == chart]
        for layer, group in part.groupby("layer", sort=False):
            group = group.sort_values("epoch")
            color = palette[layers.index(layer) % len(palette)]
            fig.add_scatter(
                x=group["epoch"],
                y=group["value"],
                mode="lines+markers",
                name=html.escape(str(layer), quote=False),
                legendgroup=str(layer),
                showlegend=k == 0,
                line={"color": color},
                marker={"size": 5},
                row=row,
                col=col,
            )
        fig.update_xaxes(type="log" if log else "linear", row=row, col=col)
    fig.update_layout(
        title={"text": html.escape(f"Geometry of the layers: {name}", quote=False)},
        height=300 * rows + 80,
    )
    return fig


def _hessian_density_figure(run: Any, name: str) -> Any:
    """Draw the Hessian's eigenvalue density per measured epoch (None for none).

    From the ``hessian_density`` measure's quadrature nodes and weights,
    smoothed by a Gaussian of 1 % of the spread of all nodes (as PyHessian's
    density plots), on a log density axis.
    """
    import numpy as np
    import plotly.graph_objects as go

    from .measures import DENSITY_PREFIX, density_from_scalars

    scalars = getattr(run, "scalars", None)
    if scalars is None or len(scalars) == 0:
        return None
    frame = scalars[scalars["name"].astype(str).str.startswith(DENSITY_PREFIX)]
    if frame.empty:
        return None
    densities = {}
    for epoch, group in frame.groupby("epoch"):
        try:
            densities[int(epoch)] = density_from_scalars(
                dict(zip(group["name"].astype(str), group["value"]))
            )
        except ValueError:
            continue
    densities = {e: d for e, d in densities.items() if len(d.nodes)}
    if not densities:
        return None
    nodes = np.concatenate([d.nodes for d in densities.values()])
    low, high = float(nodes.min()), float(nodes.max())
    spread = high - low or max(abs(high), 1.0)
    sigma = 0.01 * spread
    grid = np.linspace(low - 0.05 * spread, high + 0.05 * spread, 600)
    fig = go.Figure()
    for epoch, density in sorted(densities.items()):
        values = density.density(grid, sigma=sigma)
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=np.maximum(values, 1e-12),
                mode="lines",
                name=f"epoch {epoch}",
            )
        )
    fig.update_layout(
        title={"text": html.escape(f"Hessian eigenvalue density: {name}", quote=False)},
        xaxis_title="eigenvalue of the training loss's Hessian",
        yaxis_title="density (Gaussian-smoothed, σ = 1 % of the range)",
        yaxis_type="log",
        height=360,
    )
    return fig


def _pinned_note(run: Any) -> str:
    """Return a note naming the pinned estimates of a run ("" for none).

    An estimate is pinned when the estimator flagged it (the ``pinned``
    quantity is 1): I(X;T) at log2 n with every sample its own bin or kernel,
    so the point shows the sample size, not the layer.
    """
    from .schema import to_wide

    info = getattr(run, "information", None)
    if info is None or len(info) == 0:
        return ""
    try:
        wide = to_wide(info, "write_report")
    except ValueError:
        return ""
    if "pinned" not in wide:
        return ""
    flag = wide["pinned"].astype(float).fillna(0.0) > 0.5
    if not flag.any():
        return ""
    rows = wide[flag]
    parts = []
    for estimator, group in rows.groupby("estimator", sort=False):
        layers = list(dict.fromkeys(group["layer"].astype(str)))
        shown = ", ".join(layers[:8]) + (" …" if len(layers) > 8 else "")
        parts.append(
            f"{estimator}: {len(group)} of "
            f"{int((wide['estimator'] == estimator).sum())} estimates "
            f"({len(layers)} layer{'s' if len(layers) != 1 else ''}: {shown})"
        )
    return (
        '<p class="pinned-note"><b>Pinned estimates.</b> '
        + _esc("; ".join(parts))
        + ". Their I(X;T) sits within 0.1 bit of log2 n: every sample is its "
        "own bin or kernel, so I(X;T) measures the sample size and I(T;Y) = "
        "H(Y) whatever the layer does. They are drawn as hollow, faded markers; "
        "read wide layers with the 'renyi' estimator instead.</p>"
    )


def _estimators(run: Any) -> list:
    info = run.information
    if info is None or len(info) == 0 or "estimator" not in info:
        return []
    return list(dict.fromkeys(info["estimator"].astype(str)))


def write_report(
    runs: Any,
    output: Union[str, os.PathLike] = "report.html",
    *,
    title: Optional[str] = None,
) -> Path:
    """Write one self-contained HTML report of one or more runs.

    Parameters
    ----------
    runs : path, Run, Runs, or a list of them
        Run directories, folders of runs, or loaded runs.
    output : str or path-like, default="report.html"
        The HTML file to write (its folder is created).
    title : str, optional
        Page title; by default ``"ibmonitor report"`` and the run names.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    FileNotFoundError
        A path is neither a run directory nor a folder of runs.

    Notes
    -----
    plotly.js (about 4.5 MB) is inlined once; each figure adds only its data.
    The page loads nothing from the network.
    """
    from . import __version__
    from .plotting import dashboard, information_plane

    loaded = _runs_of(runs)
    names: list = []
    for run in loaded:  # unique names, as load_runs gives them
        base, name, k = str(run.name), str(run.name), 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    output = Path(output)
    page_title = title or "ibmonitor report: " + ", ".join(names[:5]) + (
        " …" if len(names) > 5 else ""
    )
    sections: list = []
    n_fig = 0

    def figure(fig: Any) -> str:
        nonlocal n_fig
        n_fig += 1
        return _figure_html(fig, f"ibmonitor-figure-{n_fig}")

    toc = [
        f'<li><a href="#run-{i + 1}">{_esc(name)}</a></li>'
        for i, name in enumerate(names)
    ]
    if len(loaded) > 1:
        common = set(_estimators(loaded[0]))
        for run in loaded[1:]:
            common &= set(_estimators(run))
        order = [e for e in _estimators(loaded[0]) if e in common]
        if order:
            fig = information_plane(
                _Named.wrap(loaded, names),
                estimator=order[0],
                facet="run",
                title=f"Information planes ({order[0]})",
            )
            sections.append(
                '<section id="comparison"><h2>Comparison</h2>'
                + figure(fig)
                + "</section>"
            )
            toc.insert(0, '<li><a href="#comparison">Comparison</a></li>')

    for i, (name, run) in enumerate(zip(names, loaded)):
        config = dict(run.config or {})
        status = getattr(run, "status", config.get("status", ""))
        meta = " · ".join(
            _esc(f"{label}: {value}")
            for label, value in (
                ("status", status),
                ("started", config.get("started")),
                ("ended", config.get("ended")),
                ("seed", config.get("seed")),
                ("path", getattr(run, "path", None)),
            )
            if value not in (None, "")
        )
        parts = [
            f'<section id="run-{i + 1}"><h2>{_esc(name)}</h2>',
            f'<p class="meta">{meta}</p>',
        ]
        note = _pinned_note(run)
        if note:
            parts.append(note)
        parts.append(figure(dashboard(_Named(run, name))))
        explained = _explanations_html(run, name, figure)
        if explained:
            parts.append(explained)
        geometry = _geometry_figure(run, name)
        if geometry is not None:
            parts.append(figure(geometry))
        spectrum = _hessian_density_figure(run, name)
        if spectrum is not None:
            parts.append(figure(spectrum))
        other = _other_scalars_figure(run, name)
        if other is not None:
            parts.append(figure(other))
        for estimator in _estimators(run)[1:]:
            parts.append(
                figure(information_plane(_Named(run, name), estimator=estimator))
            )
        parts.append("<h3>Summary</h3>")
        parts.append(_summary_html(run))
        parts.append("<h3>Configuration</h3>")
        parts.append(_config_table(config))
        parts.append("</section>")
        sections.append("\n".join(parts))

    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(page_title)}</title>",
            f"<style>{_CSS}</style>",
            '<script type="text/javascript">'
            "window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script type="text/javascript">{_plotlyjs()}</script>',
            "</head>",
            "<body>",
            f"<h1>{_esc(page_title)}</h1>",
            f'<p class="meta">Generated {_esc(generated)} by ibmonitor '
            f"{_esc(__version__)}. Information in bits.</p>",
            "<nav><ul>" + "".join(toc) + "</ul></nav>",
            *sections,
            "</body>",
            "</html>",
        ]
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d figures, %d bytes)", output, n_fig, len(page))
    return output


class _Named:
    """A run seen under another name (unique within the report)."""

    def __init__(self, run: Any, name: str) -> None:
        self._run = run
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._run, attr)

    @staticmethod
    def wrap(runs: list, names: list) -> list:
        return [_Named(run, name) for run, name in zip(runs, names)]
