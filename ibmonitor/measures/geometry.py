"""The geometry of representations on the timeline (issue 13): registered measures.

Thin wrappers that put the pure functions of :mod:`ibmonitor.geometry` in the
measure registry, so that a :class:`~ibmonitor.measures.MeasureSet` computes
them on its schedule and every sink stores them as scalars:

- ``"separation"`` (cheap): Fisher's between- over within-class scatter of
  each recorded layer, ``geometry/<layer>/separation``;
- ``"geometry"`` (expensive): :func:`ibmonitor.geometry.layer_geometry` of each
  recorded layer: ``geometry/<layer>/flattening`` (k-NN geodesic over Euclidean
  distance within classes, 1 = flat), ``geometry/<layer>/probe_accuracy`` and
  ``geometry/<layer>/usable_information`` (bits) of a linear probe;
- ``"pairing"`` (cheap): Shang et al.'s filter pairing of each Linear and Conv
  layer from the weights, ``pairing/<layer>/mean_mu``, ``.../median_mu`` and
  ``.../frac_below`` (fraction of filters with ``mu <= -0.9``).

``separation`` and ``geometry`` read the activations the monitor has just
recorded (:attr:`MeasureContext.activations`), so they give values on recorded
epochs only. For a probe set other than the default one the names are
``geometry/<probe>/<layer>/...``.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..geometry import layer_geometry, pairing_table, separation
from ..schema import probe_prefix
from .registry import MeasureContext, register_measure

__all__ = ["geometry_name"]


def geometry_name(layer: str, quantity: str, probe: str = "default") -> str:
    """Return the scalar name of a layer's geometry ``quantity``."""
    return f"{probe_prefix('geometry', probe)}{layer}/{quantity}"


def _each_layer(context: MeasureContext):
    """Yield ``(probe, layer, t, y)`` per recorded layer (none if not recorded)."""
    if not context.activations or not context.labels:
        return
    for probe, layers in context.activations.items():
        y = context.labels.get(probe)
        if y is None:
            continue
        for layer, t in layers.items():
            if t.shape[0] == 0 or not bool(t.isfinite().all()):
                continue  # an empty shard, or diverged: nothing to measure
            yield probe, layer, t, y


@register_measure("separation", cost="cheap", option_names=[])
def _separation_measure(context: MeasureContext) -> Dict[str, float]:
    """Return ``geometry/<layer>/separation``: tr(S_B) / tr(S_W) per recorded layer."""
    return {
        geometry_name(layer, "separation", probe): separation(t, y)
        for probe, layer, t, y in _each_layer(context)
    }


@register_measure(
    "geometry",
    cost="expensive",
    option_names=["probe", "flattening_k", "max_samples", "test_fraction", "seed"],
)
def _geometry_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """Return the flattening and linear-probe scalars of every recorded layer."""
    out: Dict[str, float] = {}
    for probe, layer, t, y in _each_layer(context):
        values = layer_geometry(t, y, **options)
        values.pop("separation", None)  # the cheap "separation" measure has it
        for quantity, value in values.items():
            out[geometry_name(layer, quantity, probe)] = value
    return out


@register_measure("pairing", cost="cheap", option_names=["layers", "threshold"])
def _pairing_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """Return ``pairing/<layer>/{mean_mu,median_mu,frac_below}`` from the weights.

    Also ``pairing/<layer>/mu``, every filter's mu as an array: the monitor
    draws it as a TensorBoard histogram per layer and epoch (the paper's
    figure); the scalar tables keep the summaries.
    """
    table = pairing_table(context.model, baseline=False, **options)
    out: Dict[str, Any] = {}
    for row in table.itertuples(index=False):
        for column in ("mean_mu", "median_mu", "frac_below"):
            out[f"pairing/{row.layer}/{column}"] = float(getattr(row, column))
        out[f"pairing/{row.layer}/mu"] = np.asarray(row.mu, dtype=np.float64)
    return out
