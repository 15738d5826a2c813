"""TensorBoard summaries of a monitored run.

:class:`TensorBoardWriter` turns what the monitor records into TensorBoard event
files, so that a run directory is also a TensorBoard log directory:

================================  =================================================
what                              TensorBoard tag (``<p>/`` only for a probe other
                                  than ``"default"``)
================================  =================================================
I(X;T), I(T;Y) in bits (scalars)  ``information/<p>/<estimator>/<layer>/I_XT``,
                                  ``.../I_TY``
the Information Plane plugin      ``ibmonitor/<p>/<estimator>/<layer>``: a float64
                                  tensor ``[i_xt, i_ty]`` per recorded epoch,
                                  plugin ``ibmonitor``, ``DATA_CLASS_TENSOR``
measures and keyword scalars      their own names (``gap/loss``,
                                  ``sharpness/worst_case``, ``train_loss``,
                                  ``saturation/<p>/<layer>``, ...)
activations (histograms)          ``activations/<p>/<layer>``
information-plane images (PNG)    ``information_plane/<p>/<estimator>``
custom-scalars layout             ``custom_scalars__config__`` (kept up to date as
                                  new tags appear)
================================  =================================================

The writer is a sink: it computes nothing. The saturated fraction of a tanh or
sigmoid layer (:func:`ibmonitor.activations.saturated_fraction`) is computed
once by the monitor and arrives, like every measure, through
:meth:`TensorBoardWriter.write_scalars` under
:func:`ibmonitor.schema.saturation_name`. The custom-scalars layout sorts the
scalars into the panels of :func:`ibmonitor.schema.scalar_panel`, the same
panels as the plotly dashboard, the HTML report and the Information Plane tab.

The step of every summary is the epoch. Images are drawn with matplotlib's Agg
renderer (no display and no browser needed at training time), with the axis
titles and the log-or-linear epoch colours of :mod:`ibmonitor.plotting`
(:data:`ibmonitor.schema.X_TITLE`, :func:`ibmonitor.schema.use_log_epochs`).
Everything heavy (tensorboard, matplotlib) is imported when a writer is
created, not when :mod:`ibmonitor` is imported.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import struct
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..schema import (
    DEFAULT_PROBE,
    PANELS,
    UNCERTAINTY_COLUMNS,
    X_TITLE,
    Y_TITLE,
    plane_rows,
    probe_prefix,
    scalar_panel,
    to_wide,
    use_log_epochs,
)

__all__ = [
    "PLUGIN_NAME",
    "TensorBoardWriter",
    "information_plane_png",
    "plugin_tag",
]

logger = logging.getLogger(__name__)

#: Name of the TensorBoard plugin that reads the information-plane tensors.
PLUGIN_NAME = "ibmonitor"
#: Version of the JSON stored in the plugin's summary metadata.
PLUGIN_DATA_VERSION = 1


def information_plane_png(
    frame: Any,
    *,
    estimator: Optional[str] = None,
    probe: Optional[str] = None,
    epoch: Optional[int] = None,
    title: Optional[str] = None,
    dpi: int = 100,
    log_epochs: Union[str, bool] = "auto",
    config: Optional[Mapping[str, Any]] = None,
) -> bytes:
    """Draw the information plane of one estimator as a PNG, without a browser.

    Uses matplotlib's Agg renderer through :class:`matplotlib.figure.Figure`
    (no pyplot state, no display, safe in a training process).

    Parameters
    ----------
    frame : pandas.DataFrame or list of dict
        Information table, wide (``Run.information``: ``epoch``, ``layer``,
        ``estimator``, ``i_xt``, ``i_ty``, optional ``probe``) or long (as
        stored); read with :func:`ibmonitor.schema.to_wide`.
    estimator : str, optional
        Estimator to draw; defaults to the first one in ``frame``.
    probe : str, optional
        Probe set to draw; defaults to ``"default"`` or the first one present
        (:func:`ibmonitor.schema.plane_rows`, as the plotly figures choose).
    epoch : int, optional
        Draw the trajectories up to this epoch and mark it; defaults to the last.
    title : str, optional
        Figure title; a default names the estimator and the epoch.
    dpi : int, default=100
        Resolution of the 6.4 x 4.8 inch figure.
    log_epochs : {"auto", True, False}, default="auto"
        Colour epochs on a log scale; ``"auto"`` follows the run's schedule in
        ``config``, else the spacing of the epochs drawn, as
        :func:`ibmonitor.plotting.information_plane` decides
        (:func:`ibmonitor.schema.use_log_epochs`).
    config : dict, optional
        The run's ``run.json`` (its ``schedule``).

    Returns
    -------
    png : bytes
        The encoded image. Axes are in bits; points are coloured by epoch.

    Raises
    ------
    InvalidParameterError
        ``frame`` lacks ``epoch``, ``layer``, ``i_xt`` or ``i_ty``.
    """
    from matplotlib import colors
    from matplotlib.figure import Figure

    data = _select_plane(frame, estimator=estimator, probe=probe, epoch=epoch)
    fig = Figure(figsize=(6.4, 4.8), dpi=dpi)
    # A fixed layout: tight_layout() cost about a second per image.
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)
    ax = fig.add_subplot(1, 1, 1)
    epochs = data["epoch"].to_numpy(dtype=float)
    if epochs.size:
        low, high = float(epochs.min()), float(epochs.max())
        if use_log_epochs([config] if config else [], epochs, log_epochs):
            norm: Any = colors.FuncNorm(
                (np.log1p, np.expm1), vmin=max(low, 0.0), vmax=max(high, low + 1)
            )
        else:
            norm = colors.Normalize(vmin=low, vmax=max(high, low + 1))
        mappable = None
        for layer, rows in data.groupby("layer", sort=False):
            rows = rows.sort_values("epoch")
            x = rows["i_xt"].to_numpy(dtype=float)
            y = rows["i_ty"].to_numpy(dtype=float)
            ax.plot(x, y, color="0.7", linewidth=0.8, zorder=1)
            mappable = ax.scatter(
                x,
                y,
                c=rows["epoch"].to_numpy(dtype=float),
                cmap="viridis",
                norm=norm,
                s=16,
                zorder=2,
                edgecolors="none",
            )
            finite = np.isfinite(x) & np.isfinite(y)
            if finite.any():
                last = np.flatnonzero(finite)[-1]
                ax.annotate(
                    str(layer),
                    (x[last], y[last]),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=8,
                )
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=ax, label="epoch")
            if isinstance(norm, colors.FuncNorm):
                ticks = [
                    tick
                    for tick in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000)
                    if low <= tick <= high
                ]
                bar.set_ticks(ticks, labels=[str(tick) for tick in ticks])
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center")
    ax.set_xlabel(X_TITLE)
    ax.set_ylabel(Y_TITLE)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if title is None:
        name = data.attrs.get("estimator", estimator) or ""
        shown = data.attrs.get("epoch")
        title = f"Information plane · {name}"
        if shown is not None:
            title += f" · epoch {shown}"
        chosen_probe = data.attrs.get("probe")
        if chosen_probe not in (None, DEFAULT_PROBE):
            title += f" · {chosen_probe}"
    ax.set_title(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class TensorBoardWriter:
    """Write a monitored run as TensorBoard summaries (scalars, images, plugin data).

    Parameters
    ----------
    logdir : str or Path
        Directory of the event files; the monitor passes the run directory, so
        ``tensorboard --logdir`` on it (or on its parent) shows the run.
    flush_secs : float, default=10
        Longest time summaries wait in memory before reaching the disk.
    auto_layout : bool, default=True
        Keep a custom-scalars layout up to date: it is rewritten whenever a
        new layer, estimator, probe or scalar name appears, grouping the
        information scalars per estimator and the other scalars in the panels
        of :func:`ibmonitor.schema.scalar_panel`.
    image_dpi : int, default=100
        Resolution of the information-plane images.
    config : dict, optional
        The run's ``run.json``; its ``schedule`` decides whether the images
        colour epochs on a log scale (else the spacing of the recorded epochs,
        as in :mod:`ibmonitor.plotting`).

    Notes
    -----
    Events handled (the monitor calls them): :meth:`write_information` for each
    recorded epoch, :meth:`write_scalars` for measures, keyword scalars and
    the saturated fractions (``saturation/<layer>``, computed by the monitor),
    :meth:`write_activations` per layer when activations are recorded,
    :meth:`write_plane_image` after the information of an epoch is known,
    :meth:`write_layout` once the layers are known, then :meth:`close`.
    The class is safe to call from the monitor's background worker.
    """

    def __init__(
        self,
        logdir: Union[str, Path],
        *,
        flush_secs: float = 10,
        auto_layout: bool = True,
        image_dpi: int = 100,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._summary_pb2 = summary_pb2
        self.logdir = Path(logdir)
        self._writer = EventFileWriter(
            str(self.logdir), max_queue_size=100, flush_secs=flush_secs
        )
        self.auto_layout = auto_layout
        self.image_dpi = int(image_dpi)
        self.config = dict(config) if config else None
        self._lock = threading.Lock()
        self._closed = False
        # What the layout groups; ordered as first seen.
        self._layers: dict[str, int] = {}
        self._estimators: dict[str, None] = {}
        self._probes: dict[str, None] = {}
        self._scalar_names: dict[str, None] = {}
        self._layout_written: Optional[tuple] = None

    # ------------------------------------------------------------------ events
    def write_information(self, epoch: int, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write one recorded epoch's information estimates.

        Parameters
        ----------
        epoch : int
            The step of the summaries.
        rows : iterable of dict
            The rows given to ``RunWriter.append_information``: ``layer``,
            ``estimator``, ``i_xt``, ``i_ty`` (bits), optional ``probe``
            (default ``"default"``), and the estimator's ``pinned`` flag and
            ``resolution`` (bits) where present, which the plugin's tensor
            carries after the two coordinates, then, where present, the
            interval and baseline (bits, NaN where one is missing; see
            :data:`ibmonitor.schema.UNCERTAINTY_COLUMNS`); the tensor's
            metadata names its layout (``quantities``). Other keys are ignored.
        """
        from tensorboard.util import tensor_util

        summary_pb2 = self._summary_pb2
        summary = summary_pb2.Summary()
        for row in rows:
            layer = str(row["layer"])
            estimator = str(row["estimator"])
            probe = str(row.get("probe") or DEFAULT_PROBE)
            i_xt = _as_float(row.get("i_xt"))
            i_ty = _as_float(row.get("i_ty"))
            # [i_xt, i_ty] then, where the row has them, the estimator's
            # pinned flag and resolution (always in this order; NaN if absent)
            values = [i_xt, i_ty]
            quantities = ["i_xt", "i_ty"]
            uncertain = [q for q in UNCERTAINTY_COLUMNS if q in row]
            if "resolution" in row or uncertain:
                quantities += ["pinned", "resolution"]
            elif "pinned" in row:
                quantities.append("pinned")
            if uncertain:  # the bootstrap interval and permutation baseline
                quantities += list(UNCERTAINTY_COLUMNS)
            values += [_as_float(row.get(q)) for q in quantities[2:]]
            index = self._layers.setdefault(layer, len(self._layers))
            self._estimators.setdefault(estimator, None)
            self._probes.setdefault(probe, None)
            base = probe_prefix("information", probe) + f"{estimator}/{layer}"
            summary.value.add(tag=f"{base}/I_XT", simple_value=i_xt)
            summary.value.add(tag=f"{base}/I_TY", simple_value=i_ty)
            content = {
                "version": PLUGIN_DATA_VERSION,
                "probe": probe,
                "estimator": estimator,
                "layer": layer,
                "layer_index": index,
                "quantities": quantities,
            }
            metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(
                    plugin_name=PLUGIN_NAME,
                    content=json.dumps(content, sort_keys=True).encode("utf-8"),
                ),
                summary_description=(
                    f"I(X;T) and I(T;Y) in bits of layer {layer!r} "
                    f"({estimator} estimator)"
                ),
                data_class=summary_pb2.DATA_CLASS_TENSOR,
            )
            summary.value.add(
                tag=plugin_tag(layer, estimator, probe),
                metadata=metadata,
                tensor=tensor_util.make_tensor_proto(
                    np.array(values, dtype=np.float64)
                ),
            )
        self._add_summary(summary, epoch)
        self._maybe_update_layout(epoch)

    def write_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Write named scalars (measures such as ``gap/loss``, keyword scalars).

        The saturated fractions computed by the monitor arrive here too
        (``saturation/<layer>``, see :func:`ibmonitor.schema.saturation_name`).
        Values that are not real numbers (None, strings) are skipped.

        Parameters
        ----------
        epoch : int
            The step of the summaries.
        values : dict of str to float
            Tag to value; the tag is the scalar's name.
        """
        summary = self._summary_pb2.Summary()
        for name, value in values.items():
            number = _as_float(value, default=None)
            if number is None:
                logger.debug("Skipping non-numeric scalar %r=%r", name, value)
                continue
            summary.value.add(tag=str(name), simple_value=number)
            self._scalar_names.setdefault(str(name), None)
        if summary.value:
            self._add_summary(summary, epoch)
            self._maybe_update_layout(epoch)

    def write_activations(
        self,
        epoch: int,
        layer: str,
        t: Any,
        *,
        probe: str = DEFAULT_PROBE,
        bins: int = 30,
    ) -> None:
        """Write a layer's activation histogram.

        Only the histogram: the saturated fraction is computed by the monitor
        (:func:`ibmonitor.activations.saturated_fraction`) and written through
        :meth:`write_scalars` like every other scalar.

        Parameters
        ----------
        epoch : int
            The step of the summaries.
        layer : str
            Layer name.
        t : ndarray or Tensor of shape (n_samples, n_units)
            The layer's activations on the probe set.
        probe : str, default="default"
            Probe set of the activations; named in the tag when not default.
        bins : int, default=30
            Equal-width histogram buckets between the smallest and largest value.
        """
        layer = str(layer)
        tag = probe_prefix("activations", probe) + layer
        if not self.write_histogram(epoch, tag, t, bins=bins):
            logger.debug(
                "Layer %r at epoch %d has no finite activation; no histogram.",
                layer,
                epoch,
            )

    def write_histogram(
        self, epoch: int, tag: str, values: Any, *, bins: int = 30
    ) -> bool:
        """Write a histogram of ``values`` under ``tag`` (finite values only).

        Returns whether one was written (False when no value is finite).
        """
        flat = _to_numpy(values).astype(np.float64, copy=False).ravel()
        finite = flat[np.isfinite(flat)]
        if not finite.size:
            return False
        summary = self._summary_pb2.Summary()
        summary.value.add(tag=str(tag), histo=_histogram_proto(finite, bins=bins))
        self._add_summary(summary, epoch)
        return True

    def write_plane_image(
        self,
        epoch: int,
        information_frame: Any,
        *,
        estimators: Optional[Sequence[str]] = None,
    ) -> list:
        """Write the information plane up to ``epoch`` as one image per estimator.

        Rendered with matplotlib's Agg backend (no browser, no display).

        Parameters
        ----------
        epoch : int
            The step of the images; rows after it are left out.
        information_frame : pandas.DataFrame
            Wide information table (``Run.information`` or the monitor's
            accumulated rows as a frame): ``epoch``, ``layer``, ``estimator``,
            ``i_xt``, ``i_ty``, optional ``probe``.
        estimators : sequence of str, optional
            Estimators to draw; all in the frame by default.

        Returns
        -------
        tags : list of str
            The image tags written (``information_plane/<estimator>``, with the
            probe inserted for probes other than ``"default"``).
        """
        import pandas as pd

        if pd.DataFrame(information_frame).empty:
            return []
        frame = to_wide(information_frame, "write_plane_image")
        names = list(dict.fromkeys(frame["estimator"].astype(str)))
        if estimators is not None:
            names = [name for name in names if name in set(estimators)]
        summary_pb2 = self._summary_pb2
        summary = summary_pb2.Summary()
        tags = []
        for probe in dict.fromkeys(frame["probe"].astype(str)):
            for name in names:
                png = information_plane_png(
                    frame,
                    estimator=name,
                    probe=probe,
                    epoch=epoch,
                    dpi=self.image_dpi,
                    config=self.config,
                )
                tag = probe_prefix("information_plane", probe) + name
                self._add_png(summary, tag, png)
                tags.append(tag)
        if tags:
            self._add_summary(summary, epoch)
        return tags

    def write_image_grid(self, epoch: int, tag: str, images: Any) -> bool:
        """Write a grid of small images as one image summary.

        Parameters
        ----------
        epoch : int
            The step (TensorBoard's Images tab has a slider over steps).
        tag : str
            The image's tag (``explain/saliency``, ...).
        images : ndarray of shape (rows, cols, H, W) or (rows, cols, C, H, W)
            The images, arranged; colour channels (C of 1, 3 or 4) are reduced
            by their largest absolute value, and each image is scaled to
            [0, 1] on its own.

        Returns
        -------
        bool
            Whether something was written (False for anything that is not a
            grid of images).
        """
        import io

        from matplotlib.image import imsave

        arr = np.asarray(images, dtype=np.float64)
        if arr.ndim == 5 and arr.shape[2] in (1, 3, 4):
            arr = np.abs(arr).max(axis=2)
        if arr.ndim != 4:
            return False
        rows, cols, h, w = arr.shape
        if h < 2 or w < 2:
            return False
        flat = arr.reshape(rows * cols, h * w)
        flat = np.nan_to_num(flat)
        low = flat.min(axis=1, keepdims=True)
        span = flat.max(axis=1, keepdims=True) - low
        flat = (flat - low) / np.where(span > 0, span, 1.0)
        tiles = flat.reshape(rows, cols, h, w)
        pad = 1
        grid = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad))
        for i in range(rows):
            for j in range(cols):
                top, left = i * (h + pad), j * (w + pad)
                grid[top : top + h, left : left + w] = tiles[i, j]
        scale = max(1, 96 // max(h, w))  # small inputs (8x8 digits) drawn larger
        grid = np.kron(grid, np.ones((scale, scale)))
        buffer = io.BytesIO()
        imsave(buffer, grid, cmap="viridis", vmin=0.0, vmax=1.0, format="png")
        summary = self._summary_pb2.Summary()
        self._add_png(summary, tag, buffer.getvalue())
        self._add_summary(summary, epoch)
        return True

    def _add_png(self, summary: Any, tag: str, png: bytes) -> None:
        """Add a PNG image (RGBA) under ``tag`` to ``summary``."""
        width, height = _png_size(png)
        summary.value.add(
            tag=tag,
            image=self._summary_pb2.Summary.Image(
                height=height, width=width, colorspace=4, encoded_image_string=png
            ),
        )

    def write_layout(
        self,
        layers: Sequence[str],
        estimators: Sequence[str],
        scalar_names: Sequence[str] = (),
        *,
        probes: Sequence[str] = (DEFAULT_PROBE,),
        epoch: int = 0,
    ) -> None:
        """Write a custom-scalars layout that groups the run's scalars.

        Categories: one per estimator (and probe) with I(X;T) and I(T;Y) of every
        layer in two charts, then one per panel of
        :func:`ibmonitor.schema.scalar_panel` that has scalars, in the order of
        :data:`ibmonitor.schema.PANELS`: "Loss" and "Accuracy" (charts: train
        and test values, the generalization gap), "Sharpness"
        (``sharpness/*``, ``hessian/*``, ``expected_sharpness/*``,
        ``pac_bayes/*``, one chart each), "Norms" (one chart per norm kind, all
        layers), "Saturation" (``saturation/*``, one chart) and "Other". With
        ``auto_layout`` the layout grows as new names appear.

        Parameters
        ----------
        layers : sequence of str
            Monitored layers, in model order.
        estimators : sequence of str
            Estimator names.
        scalar_names : sequence of str, default=()
            Names of the scalars the run writes (``gap/loss``, ``train_loss``, ...).
        probes : sequence of str, default=("default",)
            Probe sets.
        epoch : int, default=0
            Step of the layout summary (TensorBoard shows the latest layout).
        """
        for layer in layers:
            self._layers.setdefault(str(layer), len(self._layers))
        for name in estimators:
            self._estimators.setdefault(str(name), None)
        for probe in probes:
            self._probes.setdefault(str(probe), None)
        for name in scalar_names:
            self._scalar_names.setdefault(str(name), None)
        self._emit_layout(epoch)

    def flush(self) -> None:
        """Write pending summaries to disk."""
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def _add_summary(self, summary: Any, step: int) -> None:
        import time

        from tensorboard.compat.proto import event_pb2

        if self._closed:
            raise ValueError(
                "This TensorBoardWriter is closed; create a new one to write more."
            )
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer.add_event(event)

    def _layout_key(self) -> tuple:
        return (
            tuple(self._layers),
            tuple(self._estimators),
            tuple(self._probes),
            tuple(self._scalar_names),
        )

    def _maybe_update_layout(self, epoch: int) -> None:
        if self.auto_layout and self._layout_key() != self._layout_written:
            self._emit_layout(epoch)

    def _emit_layout(self, epoch: int) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.util import tensor_util

        layout = self._build_layout()
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name="custom_scalars"
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        )
        summary = summary_pb2.Summary()
        summary.value.add(
            tag="custom_scalars__config__",
            metadata=metadata,
            tensor=tensor_util.make_tensor_proto(
                [layout.SerializeToString()], shape=[]
            ),
        )
        self._add_summary(summary, epoch)
        self._layout_written = self._layout_key()

    def _build_layout(self) -> Any:
        from tensorboard.plugins.custom_scalar import layout_pb2

        def chart(title: str, tags: Iterable[str]) -> Any:
            patterns = [f"^{re.escape(tag)}$" for tag in tags]
            return layout_pb2.Chart(
                title=title, multiline=layout_pb2.MultilineChartContent(tag=patterns)
            )

        categories = []
        layers = list(self._layers)
        for probe in self._probes:
            for name in self._estimators:
                base = probe_prefix("information", probe) + name
                title = f"Information · {name}"
                if probe != DEFAULT_PROBE:
                    title += f" · {probe}"
                categories.append(
                    layout_pb2.Category(
                        title=title,
                        chart=[
                            chart(
                                X_TITLE,
                                [f"{base}/{layer}/I_XT" for layer in layers],
                            ),
                            chart(
                                Y_TITLE,
                                [f"{base}/{layer}/I_TY" for layer in layers],
                            ),
                        ],
                    )
                )
        groups = _layout_groups(list(self._scalar_names))
        for title, charts in groups.items():
            categories.append(
                layout_pb2.Category(
                    title=title,
                    chart=[chart(name, tags) for name, tags in charts.items()],
                )
            )
        return layout_pb2.Layout(category=categories)


def plugin_tag(layer: str, estimator: str, probe: str = DEFAULT_PROBE) -> str:
    """Return the tag of the plugin's tensor for one layer, estimator and probe."""
    return f"{PLUGIN_NAME}/{probe}/{estimator}/{layer}"


def _layout_groups(names: Iterable[str]) -> dict:
    """Group scalar names into ``{panel: {chart title: [names]}}``.

    Panels and charts come from :func:`ibmonitor.schema.scalar_panel`, panels
    in the order of :data:`ibmonitor.schema.PANELS`, names in the order given;
    only panels with names appear.
    """
    found: dict[str, dict[str, list]] = {}
    for name in dict.fromkeys(names):
        panel, chart = scalar_panel(name)
        found.setdefault(panel, {}).setdefault(chart, []).append(name)
    return {panel: found[panel] for panel in PANELS if panel in found}


def _select_plane(
    frame: Any,
    *,
    estimator: Optional[str],
    probe: Optional[str],
    epoch: Optional[int],
) -> Any:
    """Rows of one plane up to ``epoch`` (attrs: estimator, probe, epoch shown)."""
    data = to_wide(frame, "information_plane_png")
    selected, probe, chosen, _ = plane_rows(
        data, estimator=estimator, probe=probe, until=epoch
    )
    selected = selected.copy()
    selected.attrs = {
        "estimator": chosen[0] if chosen else estimator,
        "probe": probe,
        "epoch": (
            epoch
            if epoch is not None
            else (int(selected["epoch"].max()) if len(selected) else None)
        ),
    }
    return selected


def _histogram_proto(values: np.ndarray, *, bins: int) -> Any:
    from tensorboard.compat.proto import summary_pb2

    low, high = float(values.min()), float(values.max())
    if high > low:
        counts, edges = np.histogram(values, bins=max(int(bins), 1), range=(low, high))
        limits = edges[1:].tolist()
    else:
        counts, limits = np.array([values.size]), [high]
    return summary_pb2.HistogramProto(
        min=low,
        max=high,
        num=float(values.size),
        sum=float(values.sum()),
        sum_squares=float(np.dot(values, values)),
        bucket_limit=limits,
        bucket=counts.astype(float).tolist(),
    )


def _png_size(png: bytes) -> tuple:
    """Return (width, height) from a PNG's IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach") and hasattr(t, "cpu"):  # a torch.Tensor, on any device
        return t.detach().cpu().double().numpy()
    return np.asarray(t)


def _as_float(value: Any, default: Any = math.nan) -> Any:
    if value is None or isinstance(value, (str, bytes)):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
