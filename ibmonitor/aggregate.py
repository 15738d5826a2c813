"""Aggregate runs that differ only by their seed: median and quartiles per epoch.

Information-plane trajectories of one network change from seed to seed, and
a single run's trajectory says little about the network. Shwartz-Ziv & Tishby
(2017) averaged 50 runs; a median with its inter-quartile band is the robust
version of that (one diverged seed moves it by one rank, not by its value).

>>> import pandas as pd
>>> frame = pd.DataFrame({"run": ["s0", "s1", "s2"], "epoch": 0, "layer": "fc1",
...                       "i_xt": [1.0, 2.0, 4.0], "i_ty": [0.1, 0.2, 0.3]})
>>> out = aggregate_seeds(frame)
>>> out[["i_xt", "i_xt_q25", "i_xt_q75", "n_runs"]].values.tolist()
[[2.0, 1.5, 3.0, 3.0]]

The functions read tables (a :class:`~ibmonitor.storage.Runs`, run
directories, or DataFrames with a ``run`` column); they never run an
estimator.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ._validation import check_param
from .exceptions import IBMonitorWarning, InvalidParameterError
from .schema import to_wide

__all__ = [
    "AGGREGATE_STATISTICS",
    "MAX_COLUMNS",
    "SEED_KEYS",
    "aggregate_seeds",
]

logger = logging.getLogger(__name__)

#: Statistics of :func:`aggregate_seeds`: the median with the quartiles, or
#: the mean with the standard deviation and the standard error.
AGGREGATE_STATISTICS = ("median", "mean")
#: Columns aggregated by their maximum over runs, without a spread: a flag
#: (a pinned estimate in any run marks the aggregate) and bounds (the
#: coarsest ``resolution``, the largest ``i_xt_ceiling``), all in bits or 0/1.
MAX_COLUMNS = ("pinned", "resolution", "i_xt_ceiling")
#: Keys of ``run.json`` that must agree between runs that differ only by seed.
SEED_KEYS = ("model", "layers", "estimators", "probes", "schedule")
#: Columns that identify a row of each table (besides ``epoch``).
_KEYS = {"information": ("probe", "layer", "estimator"), "scalars": ("name",)}
_TABLES = tuple(_KEYS)
_OWNER = "aggregate_seeds"


def aggregate_seeds(
    runs: Any,
    *,
    table: str = "information",
    statistic: str = "median",
    quantities: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """Aggregate runs that differ only by seed, per epoch.

    Rows are grouped by probe, layer, estimator and epoch (information) or by
    scalar name and epoch (scalars); each numeric quantity is summarised over
    the runs of its group, NaN values left out.

    Parameters
    ----------
    runs : Runs, path, glob, list of runs or paths, or DataFrame
        The runs: the result of :func:`ibmonitor.storage.load_runs`, anything
        it accepts (run directories, a folder of runs, ``"runs/seed-*"``,
        :class:`~ibmonitor.storage.Run` objects), or a table with a ``run``
        column: an information table (wide, or long with ``quantity`` and
        ``value``) or, with ``table="scalars"``, a scalars table (``run,
        epoch, name, value``). A table without ``run`` is one run.
    table : {"information", "scalars"}, default="information"
        Which table to aggregate.
    statistic : {"median", "mean"}, default="median"
        ``"median"``: each quantity ``q`` becomes its median ``q`` and its
        quartiles ``q_q25`` and ``q_q75`` (linear interpolation, numpy's
        default, so that 2 runs give their mean and the quartiles at a quarter
        and three quarters between them). ``"mean"``: the mean ``q``, the
        standard deviation ``q_std`` (``ddof=1``, NaN for one run) and the
        standard error ``q_sem`` (``q_std / sqrt(runs)``).
    quantities : list of str, optional
        The quantities to aggregate; by default every numeric column (for
        information ``i_xt``, ``i_ty``, the extras, intervals and baselines,
        in bits; for scalars ``value``). :data:`MAX_COLUMNS` are aggregated
        by their maximum, without a spread.

    Returns
    -------
    pandas.DataFrame
        Information: ``probe, layer, estimator, epoch``, the aggregated
        columns and ``n_runs`` (how many runs recorded the row); scalars:
        ``name, epoch``, ``value`` (and its spread) and ``n_runs``. Rows in
        epoch order, then in order of first appearance. Values keep their
        units (bits for information).

    Raises
    ------
    InvalidParameterError
        A bad option, a table without the needed columns, or a quantity that
        is not a numeric column.

    Warns
    -----
    IBMonitorWarning
        When the runs' ``run.json`` differ in more than the seed (keys
        :data:`SEED_KEYS`): they are aggregated anyway, but they are not
        seeds of one experiment.
    """
    check_param(table, "table", _OWNER, kind="option", options=_TABLES)
    check_param(
        statistic, "statistic", _OWNER, kind="option", options=AGGREGATE_STATISTICS
    )
    frame, configs = _table(runs, table)
    _check_same_experiment(configs)
    keys = [*_KEYS[table], "epoch"]
    if "run" not in frame:
        frame = frame.assign(run="run")
    numeric = [
        c
        for c in frame.columns
        if c not in (*keys, "run") and pd.api.types.is_numeric_dtype(frame[c])
    ]
    if quantities is None:
        chosen = numeric
    else:
        chosen = [
            str(q)
            for q in ([quantities] if isinstance(quantities, str) else quantities)
        ]
        bad = [q for q in chosen if q not in numeric]
        if bad:
            raise InvalidParameterError(
                f"The 'quantities' parameter of {_OWNER} names {bad[0]!r}, which is "
                f"not a numeric column of the {table} table. Numeric columns: "
                f"{numeric}."
            )
    return _summarise(frame, keys, chosen, statistic)


def _summarise(
    frame: pd.DataFrame, keys: List[str], quantities: List[str], statistic: str
) -> pd.DataFrame:
    """Group ``frame`` by ``keys`` and summarise ``quantities`` over runs."""
    grouped = frame.groupby(keys, sort=False, dropna=False)
    out = grouped.size().rename("n_runs").to_frame()
    for q in quantities:
        values = pd.to_numeric(frame[q], errors="coerce").astype(float)
        by = values.groupby([frame[k] for k in keys], sort=False, dropna=False)
        if q in MAX_COLUMNS:
            out[q] = by.max()
        elif statistic == "median":
            out[q] = by.median()
            out[f"{q}_q25"] = by.quantile(0.25)
            out[f"{q}_q75"] = by.quantile(0.75)
        else:
            out[q] = by.mean()
            std = by.std(ddof=1)
            out[f"{q}_std"] = std
            out[f"{q}_sem"] = std / np.sqrt(by.count().clip(lower=1))
    out = out.reset_index()
    out["n_runs"] = out.pop("n_runs").astype(float)
    out["epoch"] = out["epoch"].astype("int64")
    out = out.sort_values("epoch", kind="stable").reset_index(drop=True)
    return out


def _table(runs: Any, table: str) -> Tuple[pd.DataFrame, Dict[str, Any]]:
    """Return (the requested table with a ``run`` column, {run: config})."""
    if isinstance(runs, pd.DataFrame):
        return _checked(runs, table), {}
    if not hasattr(runs, "information") or not hasattr(runs, "scalars"):
        if not isinstance(runs, (str, os.PathLike, list, tuple)):
            raise InvalidParameterError(
                f"{_OWNER} expects runs (load_runs), run directories, a glob or a "
                f"DataFrame with a 'run' column. Got {type(runs).__name__} instead."
            )
        from .storage import load_runs

        runs = load_runs(runs)
    frame = runs.information if table == "information" else runs.scalars
    configs = getattr(runs, "configs", None)
    if not isinstance(configs, Mapping):
        config = getattr(runs, "config", None)
        configs = {"run": config} if isinstance(config, Mapping) else {}
    return _checked(frame, table), dict(configs)


def _checked(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Validate a table and bring it to the columns :func:`_summarise` uses."""
    if table == "information":
        return to_wide(frame, _OWNER)  # keeps a run column, long or wide
    missing = [c for c in ("epoch", "name", "value") if c not in frame]
    if missing:
        raise InvalidParameterError(
            f"The scalars table given to {_OWNER} lacks the columns {missing}. "
            "Expected run, epoch, name and value."
        )
    out = frame.copy()
    out["epoch"] = pd.to_numeric(out["epoch"]).astype("int64")
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    return out


def _check_same_experiment(configs: Mapping[str, Any]) -> None:
    """Warn when runs differ in more than the seed (keys :data:`SEED_KEYS`)."""
    items = [(n, c) for n, c in configs.items() if isinstance(c, Mapping)]
    if len(items) < 2:
        return
    first_name, first = items[0]
    for name, config in items[1:]:
        for key in SEED_KEYS:
            if key in first and key in config and first[key] != config[key]:
                warnings.warn(
                    f"{_OWNER}: runs {first_name!r} and {name!r} differ in "
                    f"run.json[{key!r}], not only in the seed; aggregating them "
                    "anyway. Pass runs of one experiment that differ only by seed.",
                    IBMonitorWarning,
                    stacklevel=3,
                )
                return
