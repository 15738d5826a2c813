"""The data schema of a monitored run, in one place (a leaf module).

Every part that writes or reads a run (the monitor, the sinks, the run store,
the analysis functions, plotting, the report, the TensorBoard writer and its
plugin) takes column names, the default probe name, the long/wide conversion
of the information table, the grouping of scalar names into panels and the
keys of ``run.json`` from here. This module imports nothing of ibmonitor.

Tables
------
information (long, as stored)
    ``epoch, probe, layer, estimator, quantity, value``: ``quantity`` is
    ``i_xt``, ``i_ty`` or an estimator extra (``h_t``, ...), values in bits.
information (wide, as read)
    ``epoch, probe, layer, estimator, i_xt, i_ty`` then the extras.
scalars
    ``epoch, name, value``; names such as ``train_loss``, ``gap/acc``,
    ``hessian/top_eigenvalue``, ``saturation/tanh1``.

Panels
------
:func:`scalar_panel` sorts a scalar name into one of :data:`PANELS`:
``Loss``, ``Accuracy``, ``Sharpness`` (Hessian, worst-case and expected
sharpness, PAC-Bayes flatness), ``Norms``, ``Saturation`` and ``Other``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence

__all__ = [
    "DEFAULT_PROBE",
    "EPOCHS_COLUMNS",
    "INFORMATION_COLUMNS",
    "INFORMATION_KEYS",
    "MIN_PLANE_SPAN",
    "PANELS",
    "RUN_KEYS",
    "SCALARS_COLUMNS",
    "UNCERTAINTY_COLUMNS",
    "WIDE_COLUMNS",
    "X_TITLE",
    "Y_TITLE",
    "PlaneRows",
    "ScalarPanel",
    "build_run_config",
    "default_probe",
    "epochs_look_log",
    "information_records",
    "information_wide",
    "plane_rows",
    "probe_prefix",
    "rows_frame",
    "saturation_name",
    "scalar_panel",
    "schedule_is_log",
    "to_wide",
    "use_log_epochs",
]

#: Name of the probe set given as ``inputs``/``labels``.
DEFAULT_PROBE = "default"
#: Columns of the long information table (``information.csv``).
INFORMATION_COLUMNS = ("epoch", "probe", "layer", "estimator", "quantity", "value")
#: Columns that identify one estimate.
INFORMATION_KEYS = ("epoch", "probe", "layer", "estimator")
#: Leading columns of the wide information table.
WIDE_COLUMNS = (*INFORMATION_KEYS, "i_xt", "i_ty")
#: Columns of the scalars table (``scalars.csv``).
SCALARS_COLUMNS = ("epoch", "name", "value")
#: Columns of the information table that estimators add when asked
#: (``bootstrap=B``, ``baseline=True``): the interval of each coordinate,
#: the permutation baseline of I(T;Y) and the ceiling of I(X;T), in bits.
UNCERTAINTY_COLUMNS = (
    "i_xt_low",
    "i_xt_high",
    "i_ty_low",
    "i_ty_high",
    "i_ty_baseline",
    "i_xt_ceiling",
)
#: Columns of the epoch journal (``epochs.csv``): a recorded epoch whose
#: writes have ``begun`` (before its first row) or are all ``done``.
EPOCHS_COLUMNS = ("epoch", "state")
#: Axis titles of every information plane.
X_TITLE = "I(X;T) (bits)"
Y_TITLE = "I(T;Y) (bits)"
#: Smallest (I(X;T), I(T;Y)) axis spans of a plane, in bits: a flat
#: trajectory (a layer pinned at log2 n, say) is never stretched over a
#: spread smaller than this (or than the estimator's resolution).
MIN_PLANE_SPAN = (1.0, 0.5)

#: Keys of ``run.json`` (the writer adds schema_version, status, started,
#: ended, writer, resumed; a user's own configuration is under ``"user"``).
RUN_KEYS = (
    "versions",
    "seed",
    "model",
    "layers",
    "activation_kinds",
    "estimators",
    "probes",
    "schedule",
    "total_epochs",
    "recording",
    "measures",
    "explain",
    "sinks",
    "overhead",
    "skipped_epochs",
    "errors",
    "user",
)

# ----------------------------------------------------------------- panels


class ScalarPanel(NamedTuple):
    """Where a scalar is drawn: its panel and its chart within the panel."""

    panel: str
    chart: str


#: Panels of the dashboard, the report and TensorBoard, in display order.
PANELS = (
    "Loss",
    "Accuracy",
    "Sharpness",
    "Norms",
    "Saturation",
    "Geometry",
    "Other",
)
#: Charts of the "Geometry" panel, by the last part of the scalar's name.
_GEOMETRY_CHARTS = {
    "separation": "class separation (Fisher ratio)",
    "flattening": "flattening (geodesic / Euclidean)",
    "probe_accuracy": "linear probe accuracy",
    "usable_information": "usable information (bits)",
    "mean_mu": "filter pairing: mean mu",
    "median_mu": "filter pairing: median mu",
    "frac_below": "filter pairing: fraction paired",
}
_SHARPNESS_PREFIXES = (
    "sharpness/",
    "hessian/",
    "expected_sharpness/",
    "pac_bayes/",
)


def scalar_panel(name: str) -> ScalarPanel:
    """Sort a scalar name into its panel and chart.

    Parameters
    ----------
    name : str
        A scalar name (``"train_loss"``, ``"gap/acc"``, ``"norms/total/l2"``).

    Returns
    -------
    ScalarPanel
        ``(panel, chart)``; ``panel`` is one of :data:`PANELS`.

    Examples
    --------
    >>> scalar_panel("gap/test_loss")
    ScalarPanel(panel='Loss', chart='loss')
    >>> scalar_panel("pac_bayes/sigma").panel
    'Sharpness'
    """
    leaf = name.rsplit("/", 1)[-1]
    if name.startswith("hessian_density/"):
        # quadrature nodes and weights, not curves over epochs: the report
        # draws them as a density; no panel of PANELS shows them
        return ScalarPanel("Spectrum", "hessian density")
    if name.startswith(_SHARPNESS_PREFIXES):
        return ScalarPanel("Sharpness", name)
    if name.startswith("norms/"):
        return ScalarPanel("Norms", f"{leaf} norm")
    if name.startswith("saturation/"):
        return ScalarPanel("Saturation", "saturated fraction")
    if name.startswith(("geometry/", "pairing/")):
        return ScalarPanel("Geometry", _GEOMETRY_CHARTS.get(leaf, leaf))
    if name == "gap/loss":
        return ScalarPanel("Loss", "generalization gap")
    if name == "gap/acc":
        return ScalarPanel("Accuracy", "generalization gap")
    if "loss" in leaf:
        return ScalarPanel("Loss", "loss")
    if "acc" in leaf:
        return ScalarPanel("Accuracy", "accuracy")
    return ScalarPanel("Other", name)


def saturation_name(layer: str, probe: str = DEFAULT_PROBE) -> str:
    """Return the scalar name of a layer's saturated fraction."""
    return (
        f"saturation/{layer}"
        if probe == DEFAULT_PROBE
        else (f"saturation/{probe}/{layer}")
    )


def probe_prefix(kind: str, probe: str) -> str:
    """Return ``"kind/"`` for the default probe, else ``"kind/probe/"``."""
    return f"{kind}/" if probe == DEFAULT_PROBE else f"{kind}/{probe}/"


# ---------------------------------------------------------- long and wide


def information_records(rows: Iterable[Mapping[str, Any]]) -> List[tuple]:
    """Turn wide information rows into long records.

    Parameters
    ----------
    rows : iterable of dict
        Each with ``epoch``, ``probe``, ``layer``, ``estimator`` and any number
        of numeric quantities (``i_xt``, ``i_ty``, extras, in bits).

    Returns
    -------
    list of tuple
        ``(epoch, probe, layer, estimator, quantity, value)`` records, in the
        row order, ``i_xt`` and ``i_ty`` first; non-numeric extras are dropped.
    """
    records: List[tuple] = []
    for row in rows:
        key = tuple(row[k] for k in INFORMATION_KEYS)
        ordered = ["i_xt", "i_ty"] + [
            q for q in row if q not in INFORMATION_KEYS and q not in ("i_xt", "i_ty")
        ]
        for quantity in ordered:
            if quantity not in row:
                continue
            value = row[quantity]
            if isinstance(value, bool) or value is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            records.append((*key, str(quantity), value))
    return records


def _order_map(names: Iterable[Any]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for n in names:
        if isinstance(n, str) and n not in out:
            out[n] = len(out)
    return out


def _sort_wide(frame: Any, config: Mapping[str, Any], appearance: Any) -> Any:
    """Sort by epoch, then probe, layer and estimator in the config's order."""
    if frame.empty:
        return frame.reset_index(drop=True)
    estimators = config.get("estimators") or []
    orders = {
        "probe": _order_map(config.get("probes") or {}),
        "layer": _order_map(config.get("layers") or {}),
        "estimator": _order_map(
            e.get("label", e.get("name")) if isinstance(e, Mapping) else e
            for e in estimators
        ),
    }
    keys = ["epoch"]
    work = frame.copy()
    for col, order in orders.items():
        # Names missing from the config come after, in order of appearance.
        first_seen = _order_map([*appearance[col], *work[col]])
        rank = {n: order.get(n, len(order) + first_seen[n]) for n in first_seen}
        work[f"__{col}"] = work[col].map(rank)
        keys.append(f"__{col}")
    work = work.sort_values(keys, kind="stable")
    return work.drop(columns=keys[1:]).reset_index(drop=True)


def _empty_wide() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "epoch": pd.Series(dtype="int64"),
            "probe": pd.Series(dtype=object),
            "layer": pd.Series(dtype=object),
            "estimator": pd.Series(dtype=object),
            "i_xt": pd.Series(dtype="float64"),
            "i_ty": pd.Series(dtype="float64"),
        }
    )


def information_wide(long: Any, config: Optional[Mapping[str, Any]] = None) -> Any:
    """Pivot a long information table to the wide one (the last row wins).

    Parameters
    ----------
    long : pandas.DataFrame
        Columns :data:`INFORMATION_COLUMNS` (an extra ``run`` column is kept).
    config : dict, optional
        The run's ``run.json``; its probe, layer and estimator order sorts the
        rows (names it lacks come after, in order of appearance).

    Returns
    -------
    pandas.DataFrame
        ``epoch, probe, layer, estimator, i_xt, i_ty`` and extras (bits).
    """
    if long.empty:
        frame = _empty_wide()
        if "run" in long.columns:
            frame.insert(0, "run", [])
        return frame
    index = (["run"] if "run" in long.columns else []) + list(INFORMATION_KEYS)
    quantities = ["i_xt", "i_ty"] + [
        q for q in dict.fromkeys(long["quantity"]) if q not in ("i_xt", "i_ty")
    ]
    long = long.drop_duplicates(subset=[*index, "quantity"], keep="last")
    wide = long.pivot(index=index, columns="quantity", values="value")
    wide = wide.reindex(columns=quantities)
    wide.columns.name = None
    wide = wide.reset_index()
    wide["epoch"] = wide["epoch"].astype("int64")
    return _sort_wide(wide, config or {}, long)


def to_wide(frame: Any, owner: str) -> Any:
    """Return any information table (long or wide, rows or DataFrame) as wide.

    Missing ``probe`` becomes :data:`DEFAULT_PROBE`, missing ``estimator``
    ``""``; numbers become floats.

    Parameters
    ----------
    frame : pandas.DataFrame or list of dict
        A wide or long information table.
    owner : str
        The function that asked, for the error message.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        The table lacks ``epoch``, ``layer``, ``i_xt`` or ``i_ty``.
    """
    import pandas as pd

    frame = pd.DataFrame(frame).copy()
    if {"quantity", "value"} <= set(frame.columns) and not {"i_xt", "i_ty"} <= set(
        frame.columns
    ):
        if "probe" not in frame:
            frame["probe"] = DEFAULT_PROBE
        if "estimator" not in frame:
            frame["estimator"] = ""
        frame = information_wide(frame)
    missing = [c for c in ("epoch", "layer", "i_xt", "i_ty") if c not in frame]
    if missing:
        from .exceptions import InvalidParameterError

        raise InvalidParameterError(
            f"The information table given to {owner} lacks the columns {missing}. "
            "Expected a run, a run directory, or a DataFrame with columns "
            "epoch, layer, i_xt and i_ty (bits)."
        )
    if "probe" not in frame:
        frame["probe"] = DEFAULT_PROBE
    if "estimator" not in frame:
        frame["estimator"] = ""
    frame["epoch"] = pd.to_numeric(frame["epoch"]).astype("int64")
    frame["layer"] = frame["layer"].astype(str)
    frame["estimator"] = frame["estimator"].fillna("").astype(str)
    frame["probe"] = frame["probe"].fillna(DEFAULT_PROBE).astype(str)
    frame["i_xt"] = pd.to_numeric(frame["i_xt"], errors="coerce").astype(float)
    frame["i_ty"] = pd.to_numeric(frame["i_ty"], errors="coerce").astype(float)
    return frame


def rows_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Return in-memory wide rows as a wide DataFrame (columns in schema order)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return _empty_wide()
    extras = [c for c in frame.columns if c not in WIDE_COLUMNS]
    return frame[[*WIDE_COLUMNS, *extras]].reset_index(drop=True)


# ----------------------------------------------------------------- run.json


def build_run_config(
    *,
    versions: Mapping[str, Any],
    model: str,
    layers: Mapping[str, Mapping[str, Any]],
    activation_kinds: Mapping[str, Optional[str]],
    estimators: Sequence[Mapping[str, Any]],
    probes: Mapping[str, Mapping[str, Any]],
    schedule: Mapping[str, Any],
    total_epochs: Optional[int],
    recording: Mapping[str, Any],
    measures: Optional[Mapping[str, Any]] = None,
    explain: Optional[Mapping[str, Any]] = None,
    sinks: Sequence[str] = (),
    overhead_budget: Optional[float] = None,
    seed: Optional[int] = None,
    user: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Build the monitor's part of ``run.json`` (keys :data:`RUN_KEYS`).

    Parameters
    ----------
    versions : dict
        Package versions (ibmonitor, torch, python, numpy).
    model : str
        The model's class name.
    layers : dict
        ``{layer: {"module": ..., "shape": [...], "n_units": int}}`` in model
        order.
    activation_kinds : dict
        ``{layer: "tanh" | "relu" | ... | None}``.
    estimators : list of dict
        ``{"name", "label", "params"}`` per estimator.
    probes : dict
        ``{probe: {"n_samples": int, "input_shape": [...]}}``.
    schedule : dict
        The schedule's description; ``schedule["kind"]`` is ``"log"``,
        ``"all"``, ``"every"``, ``"list"`` or ``"callable"``.
    total_epochs : int or None
    recording : dict
        Options of the recording pass (batch size, reduce, device, ...).
    measures : dict, optional
        The measure set's description (names, options, schedule).
    explain : dict, optional
        The explain set's description (:class:`ibmonitor.explain.ExplainSet`).
    sinks : list of str
        Names of the sinks the run is written to.
    overhead_budget : float, optional
    seed : int, optional
    user : dict, optional
        The user's own configuration.

    Returns
    -------
    dict
        JSON-ready; ``overhead``, ``skipped_epochs`` and ``errors`` start empty.
    """
    config: Dict[str, Any] = {
        "versions": dict(versions),
        "seed": seed,
        "model": model,
        "layers": {k: dict(v) for k, v in layers.items()},
        "activation_kinds": dict(activation_kinds),
        "estimators": [dict(e) for e in estimators],
        "probes": {k: dict(v) for k, v in probes.items()},
        "schedule": dict(schedule),
        "total_epochs": total_epochs,
        "recording": dict(recording),
        "measures": None if measures is None else dict(measures),
        "explain": None if explain is None else dict(explain),
        "sinks": list(sinks),
        "overhead": {"budget": overhead_budget, "skipped": []},
        "skipped_epochs": [],
        "errors": [],
    }
    if user:
        config["user"] = dict(user)
    return config


def schedule_is_log(config: Mapping[str, Any]) -> Optional[bool]:
    """Whether a run's schedule is log-spaced: True, False, or None (unknown).

    Reads ``run.json["schedule"]["kind"]`` as :func:`build_run_config` writes
    it (runs written before that key existed give None).
    """
    schedule = config.get("schedule") if isinstance(config, Mapping) else None
    if not isinstance(schedule, Mapping):
        return None
    kind = schedule.get("kind")
    if kind == "log":
        return True
    if kind in ("all", "every"):
        return False
    return None


def epochs_look_log(epochs: Iterable[float]) -> bool:
    """Whether recorded epochs look log-spaced (gaps grow; span over a decade)."""
    unique = sorted({float(e) for e in epochs if math.isfinite(float(e))})
    if len(unique) < 5 or (unique[-1] + 1) / (unique[0] + 1) < 20:
        return False
    gaps = [b - a for a, b in zip(unique, unique[1:])]
    k = max(1, len(gaps) // 4)
    return sum(gaps[-k:]) / k >= 4 * (sum(gaps[:k]) / k)


def use_log_epochs(
    configs: Iterable[Mapping[str, Any]],
    epochs: Iterable[float],
    log_epochs: Any = "auto",
) -> bool:
    """Decide whether epochs are drawn on a log scale (colours and epoch axes).

    Every renderer of an information plane (plotly figures, the TensorBoard
    images and tab) takes this one decision.

    Parameters
    ----------
    configs : iterable of dict
        The ``run.json`` of each run drawn (may be empty).
    epochs : iterable of float
        The recorded epochs drawn.
    log_epochs : {"auto", True, False}, default="auto"
        True or False decide; ``"auto"`` follows the runs' schedules
        (:func:`schedule_is_log`: log if any run's is), and where no run says,
        the spacing of ``epochs`` (:func:`epochs_look_log`).

    Returns
    -------
    bool
    """
    if log_epochs is True or log_epochs is False:
        return log_epochs
    votes = [schedule_is_log(c) for c in configs]
    votes = [v for v in votes if v is not None]
    if votes:
        return any(votes)
    return epochs_look_log(epochs)


# ------------------------------------------------------- plane selection


def default_probe(probes: Iterable[Any]) -> Optional[str]:
    """Return the probe shown when none is asked for.

    :data:`DEFAULT_PROBE` when it was recorded, else the first probe; None
    for no probe.
    """
    names = [str(p) for p in dict.fromkeys(probes)]
    if DEFAULT_PROBE in names or not names:
        return DEFAULT_PROBE if names else None
    return names[0]


class PlaneRows(NamedTuple):
    """The rows of one information plane and what was chosen."""

    rows: Any
    probe: Optional[str]
    estimators: List[str]
    available: List[str]


def plane_rows(
    wide: Any,
    *,
    estimator: Any = None,
    probe: Optional[str] = None,
    until: Optional[int] = None,
    all_estimators: bool = False,
) -> PlaneRows:
    """Select the rows of one information plane from a wide information table.

    Parameters
    ----------
    wide : pandas.DataFrame
        A wide information table as :func:`to_wide` returns it (columns
        ``probe`` and ``estimator`` present).
    estimator : str or list of str, optional
        Estimator(s) to keep; by default the first recorded for the probe
        (every one with ``all_estimators``).
    probe : str, optional
        Probe set to keep; by default :func:`default_probe`.
    until : int, optional
        Keep the epochs up to and including this one.
    all_estimators : bool, default=False
        With no ``estimator``, keep every estimator instead of the first.

    Returns
    -------
    PlaneRows
        ``(rows, probe, estimators, available)``: the selected rows, the probe
        and estimators chosen, and every estimator recorded for that probe
        (for the caller's validation and messages). Names are not validated
        here: an unknown name selects no row.
    """
    probe = default_probe(wide["probe"]) if probe is None else str(probe)
    rows = wide[wide["probe"].astype(str) == probe]
    available = [str(e) for e in dict.fromkeys(rows["estimator"].astype(str))]
    if estimator is None:
        chosen = available if all_estimators else available[:1]
    elif isinstance(estimator, str):
        chosen = [estimator]
    else:
        chosen = [str(e) for e in estimator]
    rows = rows[rows["estimator"].astype(str).isin(chosen)]
    if until is not None:
        rows = rows[rows["epoch"] <= until]
    return PlaneRows(rows, probe, chosen, available)
