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
                                  ``sharpness/worst_case``, ``train_loss``, ...)
activations (histograms)          ``activations/<p>/<layer>``
saturated fraction (scalars)      ``saturation/<p>/<layer>`` (tanh and sigmoid)
information-plane images (PNG)    ``information_plane/<p>/<estimator>``
custom-scalars layout             ``custom_scalars__config__`` (kept up to date as
                                  new tags appear)
================================  =================================================

The step of every summary is the epoch. Images are drawn with matplotlib's Agg
renderer (no display and no browser needed at training time). Everything heavy
(tensorboard, matplotlib) is imported when a writer is created, not when
:mod:`ibmonitor` is imported.
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

__all__ = [
    "PLUGIN_NAME",
    "TensorBoardWriter",
    "information_plane_png",
    "saturated_fraction",
]

logger = logging.getLogger(__name__)

#: Name of the TensorBoard plugin that reads the information-plane tensors.
PLUGIN_NAME = "ibmonitor"
#: Version of the JSON stored in the plugin's summary metadata.
PLUGIN_DATA_VERSION = 1
DEFAULT_PROBE = "default"

# Bounds of the saturating activations: a unit is saturated when its value lies
# within 1% of the activation's bound (|t| >= 0.99 for tanh; t <= 0.01 or
# t >= 0.99 for sigmoid).
_SATURATION_BOUNDS = {
    "tanh": (-1.0, 1.0),
    "hardtanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "logistic": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
}
_GAP_PLAIN = ("train_loss", "test_loss", "train_acc", "test_acc")
_SHARPNESS_PREFIXES = ("sharpness/", "hessian/", "pac_bayes/", "expected_sharpness/")


def saturated_fraction(
    t: Any, kind: Optional[str], *, tolerance: float = 0.01
) -> Optional[float]:
    """Return the fraction of activations within ``tolerance`` of their bounds.

    Saxe et al. (2018) tie the compression phase of tanh networks to saturation:
    the share of units pushed against the bounds of their nonlinearity.

    Parameters
    ----------
    t : array-like or Tensor of shape (n_samples, n_units)
        Activations of one layer (any shape; every value counts).
    kind : str or None
        The layer's activation: ``"tanh"`` (bounds -1 and 1, also ``"hardtanh"``
        and ``"softsign"``) or ``"sigmoid"`` (bounds 0 and 1, also
        ``"logistic"`` and ``"hardsigmoid"``); case is ignored.
    tolerance : float, default=0.01
        Distance from a bound, as a fraction of the largest absolute bound, under
        which a value counts as saturated (1%).

    Returns
    -------
    fraction : float or None
        Saturated share of the finite values, in [0, 1]; None when ``kind`` has
        no bounds (ReLU, linear, unknown, None) or ``t`` has no finite value.

    Examples
    --------
    >>> saturated_fraction([[0.995, 0.2], [-0.999, 0.5]], "tanh")
    0.5
    >>> saturated_fraction([0.005, 0.5, 0.999, 0.7], "Sigmoid")
    0.5
    >>> saturated_fraction([0.5], "relu") is None
    True
    """
    bounds = _SATURATION_BOUNDS.get(str(kind).lower()) if kind is not None else None
    if bounds is None:
        return None
    values = _to_numpy(t).astype(np.float64, copy=False).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = bounds
    margin = tolerance * max(abs(low), abs(high))
    saturated = (values <= low + margin) | (values >= high - margin)
    return float(np.mean(saturated))


def information_plane_png(
    frame: Any,
    *,
    estimator: Optional[str] = None,
    probe: Optional[str] = None,
    epoch: Optional[int] = None,
    title: Optional[str] = None,
    dpi: int = 100,
) -> bytes:
    """Draw the information plane of one estimator as a PNG, without a browser.

    Uses matplotlib's Agg renderer through :class:`matplotlib.figure.Figure`
    (no pyplot state, no display, safe in a training process).

    Parameters
    ----------
    frame : pandas.DataFrame
        Wide information table (``Run.information``): columns ``epoch``,
        ``layer``, ``estimator``, ``i_xt``, ``i_ty`` and optionally ``probe``.
    estimator : str, optional
        Estimator to draw; defaults to the first one in ``frame``.
    probe : str, optional
        Probe set to draw; defaults to ``"default"`` or the first one present.
    epoch : int, optional
        Draw the trajectories up to this epoch and mark it; defaults to the last.
    title : str, optional
        Figure title; a default names the estimator and the epoch.
    dpi : int, default=100
        Resolution of the 6.4 x 4.8 inch figure.

    Returns
    -------
    png : bytes
        The encoded image. Axes are in bits; points are coloured by epoch.
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
        if _log_spaced(epochs):
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
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
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
        information, generalization, sharpness, norm and saturation scalars.
    image_dpi : int, default=100
        Resolution of the information-plane images.

    Notes
    -----
    Events handled (the monitor calls them): :meth:`write_information` for each
    recorded epoch, :meth:`write_scalars` for measures and keyword scalars,
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
        self._lock = threading.Lock()
        self._closed = False
        # What the layout groups; ordered as first seen.
        self._layers: dict[str, int] = {}
        self._estimators: dict[str, None] = {}
        self._probes: dict[str, None] = {}
        self._scalar_names: dict[str, None] = {}
        self._saturation_tags: dict[str, None] = {}
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
            (default ``"default"``); other keys are ignored here.
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
            index = self._layers.setdefault(layer, len(self._layers))
            self._estimators.setdefault(estimator, None)
            self._probes.setdefault(probe, None)
            base = _prefix("information", probe) + f"{estimator}/{layer}"
            summary.value.add(tag=f"{base}/I_XT", simple_value=i_xt)
            summary.value.add(tag=f"{base}/I_TY", simple_value=i_ty)
            content = {
                "version": PLUGIN_DATA_VERSION,
                "probe": probe,
                "estimator": estimator,
                "layer": layer,
                "layer_index": index,
                "quantities": ["i_xt", "i_ty"],
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
                    np.array([i_xt, i_ty], dtype=np.float64)
                ),
            )
        self._add_summary(summary, epoch)
        self._maybe_update_layout(epoch)

    def write_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Write named scalars (measures such as ``gap/loss``, keyword scalars).

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
        kind: Optional[str] = None,
        *,
        probe: str = DEFAULT_PROBE,
        bins: int = 30,
    ) -> Optional[float]:
        """Write a layer's activation histogram and, if it saturates, its fraction.

        Parameters
        ----------
        epoch : int
            The step of the summaries.
        layer : str
            Layer name.
        t : ndarray or Tensor of shape (n_samples, n_units)
            The layer's activations on the probe set.
        kind : str, optional
            Activation of the layer (``"tanh"``, ``"sigmoid"``, ``"relu"``, ...);
            ``saturation/<layer>`` is written for tanh- and sigmoid-like layers
            (see :func:`saturated_fraction`).
        probe : str, default="default"
            Probe set of the activations; named in the tags when not default.
        bins : int, default=30
            Equal-width histogram buckets between the smallest and largest value.

        Returns
        -------
        fraction : float or None
            The saturated fraction written, or None.
        """
        summary_pb2 = self._summary_pb2
        values = _to_numpy(t).astype(np.float64, copy=False).ravel()
        finite = values[np.isfinite(values)]
        summary = summary_pb2.Summary()
        layer = str(layer)
        if finite.size:
            summary.value.add(
                tag=_prefix("activations", probe) + layer,
                histo=_histogram_proto(finite, bins=bins),
            )
        else:
            logger.debug(
                "Layer %r at epoch %d has no finite activation; no histogram.",
                layer,
                epoch,
            )
        fraction = saturated_fraction(finite, kind)
        if fraction is not None:
            tag = _prefix("saturation", probe) + layer
            summary.value.add(tag=tag, simple_value=fraction)
            self._saturation_tags.setdefault(tag, None)
        if summary.value:
            self._add_summary(summary, epoch)
            self._maybe_update_layout(epoch)
        return fraction

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

        frame = pd.DataFrame(information_frame)
        if frame.empty:
            return []
        if "probe" not in frame.columns:
            frame = frame.assign(probe=DEFAULT_PROBE)
        names = list(dict.fromkeys(frame["estimator"].astype(str)))
        if estimators is not None:
            names = [name for name in names if name in set(estimators)]
        summary_pb2 = self._summary_pb2
        summary = summary_pb2.Summary()
        tags = []
        for probe in dict.fromkeys(frame["probe"].astype(str)):
            for name in names:
                png = information_plane_png(
                    frame, estimator=name, probe=probe, epoch=epoch, dpi=self.image_dpi
                )
                width, height = _png_size(png)
                tag = _prefix("information_plane", probe) + name
                summary.value.add(
                    tag=tag,
                    image=summary_pb2.Summary.Image(
                        height=height,
                        width=width,
                        colorspace=4,
                        encoded_image_string=png,
                    ),
                )
                tags.append(tag)
        if tags:
            self._add_summary(summary, epoch)
        return tags

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
        layer in two charts; "Generalization" (train and test loss and accuracy,
        ``gap/*``); "Sharpness" (``sharpness/*``, ``hessian/*``, ``pac_bayes/*``);
        "Norms" (one chart per norm kind, all layers); "Saturation"; "Other".
        With ``auto_layout`` the layout grows as new names appear.

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
            tuple(self._saturation_tags),
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
                base = _prefix("information", probe) + name
                title = f"Information · {name}"
                if probe != DEFAULT_PROBE:
                    title += f" · {probe}"
                categories.append(
                    layout_pb2.Category(
                        title=title,
                        chart=[
                            chart(
                                "I(X;T) [bits]",
                                [f"{base}/{layer}/I_XT" for layer in layers],
                            ),
                            chart(
                                "I(T;Y) [bits]",
                                [f"{base}/{layer}/I_TY" for layer in layers],
                            ),
                        ],
                    )
                )
        if self._saturation_tags:
            categories.append(
                layout_pb2.Category(
                    title="Saturation",
                    chart=[chart("saturated fraction", self._saturation_tags)],
                )
            )
        groups = _group_scalar_names(list(self._scalar_names))
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


def _prefix(kind: str, probe: str) -> str:
    return f"{kind}/" if probe == DEFAULT_PROBE else f"{kind}/{probe}/"


def _group_scalar_names(names: Sequence[str]) -> dict:
    """Group scalar names into {category: {chart title: [tags]}} for the layout."""
    groups: dict[str, dict[str, list]] = {}

    def add(category: str, title: str, name: str) -> None:
        groups.setdefault(category, {}).setdefault(title, []).append(name)

    for name in names:
        leaf = name.rsplit("/", 1)[-1]
        if name.startswith("gap/") or name in _GAP_PLAIN:
            if name in ("gap/loss", "gap/acc"):
                add("Generalization", "generalization gap", name)
            elif "loss" in leaf:
                add("Generalization", "loss", name)
            elif "acc" in leaf:
                add("Generalization", "accuracy", name)
            else:
                add("Generalization", name, name)
        elif name.startswith(_SHARPNESS_PREFIXES):
            add("Sharpness", name, name)
        elif name.startswith("norms/"):
            add("Norms", f"{leaf} norm", name)
        else:
            add("Other", name, name)
    return groups


def _select_plane(
    frame: Any,
    *,
    estimator: Optional[str],
    probe: Optional[str],
    epoch: Optional[int],
) -> Any:
    import pandas as pd

    data = pd.DataFrame(frame)
    for column in ("epoch", "layer", "estimator", "i_xt", "i_ty"):
        if column not in data.columns:
            raise ValueError(
                f"The information frame must have a column {column!r}. "
                f"Got columns {list(data.columns)} instead."
            )
    if "probe" not in data.columns:
        data = data.assign(probe=DEFAULT_PROBE)
    if estimator is None and len(data):
        estimator = str(data["estimator"].iloc[0])
    if probe is None and len(data):
        probes = list(dict.fromkeys(data["probe"].astype(str)))
        probe = DEFAULT_PROBE if DEFAULT_PROBE in probes else probes[0]
    selected = data[
        (data["estimator"].astype(str) == str(estimator))
        & (data["probe"].astype(str) == str(probe))
    ]
    if epoch is not None:
        selected = selected[selected["epoch"] <= epoch]
    selected = selected.copy()
    selected.attrs = {
        "estimator": estimator,
        "probe": probe,
        "epoch": (
            epoch
            if epoch is not None
            else (int(selected["epoch"].max()) if len(selected) else None)
        ),
    }
    return selected


def _log_spaced(epochs: np.ndarray) -> bool:
    """Guess whether recorded epochs are log-spaced (then colour on a log scale)."""
    unique = np.unique(epochs[np.isfinite(epochs)])
    if unique.size < 5 or unique.max() < 50:
        return False
    return bool(np.median(unique) < 0.2 * unique.max())


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
