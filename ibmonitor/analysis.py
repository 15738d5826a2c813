"""Offline analysis of saved runs: summaries, compression, re-estimation.

>>> from ibmonitor import load_run
>>> from ibmonitor.analysis import summary_table, estimate_from_activations
>>> summary_table(load_run("runs/demo"))  # doctest: +SKIP
>>> estimate_from_activations("runs/demo", "knn", {"k": 5})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .exceptions import InvalidParameterError
from .schema import INFORMATION_COLUMNS, information_records, information_wide
from .storage import RUN_FILE, Run, Runs, RunWriter, load_run, load_runs
from .storage.files import jsonable

__all__ = ["compression_table", "estimate_from_activations", "summary_table"]

logger = logging.getLogger(__name__)

_KEYS = ["probe", "layer", "estimator"]

SUMMARY_COLUMNS = [
    "probe",
    "layer",
    "estimator",
    "epochs",
    "first_epoch",
    "last_epoch",
    "i_xt_first",
    "i_xt_max",
    "i_xt_final",
    "i_ty_first",
    "i_ty_max",
    "i_ty_final",
]

COMPRESSION_COLUMNS = [
    "probe",
    "layer",
    "estimator",
    "epoch_max_i_xt",
    "i_xt_max",
    "final_epoch",
    "i_xt_final",
    "compression_bits",
    "i_ty_final",
]


def _as_runs(runs: Any) -> Union[Run, Runs]:
    """One run for a Run or a run directory; several (``run`` column) else."""
    if isinstance(runs, (Run, Runs)):
        return runs
    if isinstance(runs, (str, os.PathLike)) and (Path(runs) / RUN_FILE).is_file():
        return load_run(runs)
    return load_runs(runs)


def _information_of(data: Any) -> pd.DataFrame:
    """Wide information table of a Run, Runs, paths, or a DataFrame."""
    if isinstance(data, pd.DataFrame):
        return data
    return _as_runs(data).information


def _group_keys(frame: pd.DataFrame) -> List[str]:
    return (["run"] if "run" in frame.columns else []) + _KEYS


def _summarise_information(info: pd.DataFrame) -> pd.DataFrame:
    keys = _group_keys(info)
    rows = []
    # sort=False keeps the run, probe, layer and estimator order of the table.
    for key, group in info.groupby(keys, sort=False):
        group = group.sort_values("epoch", kind="stable")
        row = dict(zip(keys, key))
        row.update(
            epochs=int(group["epoch"].nunique()),
            first_epoch=int(group["epoch"].iloc[0]),
            last_epoch=int(group["epoch"].iloc[-1]),
        )
        for q in ("i_xt", "i_ty"):
            values = group[q].to_numpy(dtype=float)
            row[f"{q}_first"] = float(values[0])
            row[f"{q}_max"] = (
                float(np.nanmax(values)) if np.isfinite(values).any() else np.nan
            )
            row[f"{q}_final"] = float(values[-1])
        rows.append(row)
    columns = keys + SUMMARY_COLUMNS[3:]
    return pd.DataFrame(rows, columns=columns)


def _summarise_scalars(scalars: pd.DataFrame) -> pd.DataFrame:
    keys = (["run"] if "run" in scalars.columns else []) + ["name"]
    rows = []
    for key, group in scalars.groupby(keys, sort=False):
        group = group.sort_values("epoch", kind="stable")
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(
            epochs=int(group["epoch"].nunique()),
            first_epoch=int(group["epoch"].iloc[0]),
            last_epoch=int(group["epoch"].iloc[-1]),
            final_value=float(group["value"].iloc[-1]),
        )
        rows.append(row)
    return pd.DataFrame(
        rows, columns=[*keys, "epochs", "first_epoch", "last_epoch", "final_value"]
    )


def summary_table(run: Any, *, scalars: bool = True) -> pd.DataFrame:
    """Summarise a run: information per probe, layer and estimator, and scalars.

    Parameters
    ----------
    run : Run, Runs, or a path (or paths, or a glob) of runs
        Several runs give a leading ``run`` column.
    scalars : bool, default=True
        Append one row per scalar (``train_loss``, ``gap/loss``, ...) with its
        final value.

    Returns
    -------
    table : DataFrame
        One row per (probe, layer, estimator) with ``epochs`` (number of
        recorded epochs), ``first_epoch``, ``last_epoch``, ``i_xt_first``,
        ``i_xt_max``, ``i_xt_final``, ``i_ty_first``, ``i_ty_max``,
        ``i_ty_final`` (bits), in the run's layer order. With ``scalars=True``
        two more columns, ``scalar`` and ``final_value``, and one row per
        scalar after the information rows (their probe, layer and estimator
        are ``""`` and their information columns NaN).

    Examples
    --------
    >>> summary_table(load_run("runs/demo"))  # doctest: +SKIP
      probe   layer estimator  epochs  first_epoch  last_epoch  i_xt_first ...
    """
    data = _as_runs(run)
    table = _summarise_information(data.information)
    if not scalars:
        return table
    table["scalar"] = ""
    table["final_value"] = np.nan
    sc = _summarise_scalars(data.scalars)
    if sc.empty:
        return table.reset_index(drop=True)
    sc = sc.rename(columns={"name": "scalar"})
    for col in _KEYS:
        sc[col] = ""
    sc = sc.reindex(columns=table.columns)
    if table.empty:
        out = sc
    else:
        out = pd.concat([table, sc], ignore_index=True)
    for col in ("epochs", "first_epoch", "last_epoch"):
        out[col] = out[col].astype("int64")
    return out.reset_index(drop=True)


def compression_table(runs: Any) -> pd.DataFrame:
    """Per layer: when I(X;T) peaked, how much it then compressed, final I(T;Y).

    Parameters
    ----------
    runs : Run, Runs, DataFrame, or path(s) / glob of runs
        A DataFrame must be a wide information table (``Run.information``).

    Returns
    -------
    table : DataFrame
        One row per ([run,] probe, layer, estimator): ``epoch_max_i_xt``
        (epoch of the highest I(X;T)), ``i_xt_max``, ``final_epoch``,
        ``i_xt_final``, ``compression_bits`` (``i_xt_max - i_xt_final``, >= 0;
        the compression phase of Shwartz-Ziv & Tishby shows as a positive
        value) and ``i_ty_final``, all in bits.

    Examples
    --------
    >>> compression_table(load_runs("runs/*"))  # doctest: +SKIP
    """
    info = _information_of(runs)
    keys = _group_keys(info)
    rows = []
    for key, group in info.groupby(keys, sort=False):
        group = group.sort_values("epoch", kind="stable")
        row = dict(zip(keys, key))
        i_xt = group["i_xt"].to_numpy(dtype=float)
        finite = np.isfinite(i_xt)
        if finite.any():
            peak = int(np.flatnonzero(i_xt == np.nanmax(i_xt))[0])
            row["epoch_max_i_xt"] = int(group["epoch"].iloc[peak])
            row["i_xt_max"] = float(i_xt[peak])
        else:
            row["epoch_max_i_xt"] = -1
            row["i_xt_max"] = np.nan
        row["final_epoch"] = int(group["epoch"].iloc[-1])
        row["i_xt_final"] = float(i_xt[-1])
        row["compression_bits"] = row["i_xt_max"] - row["i_xt_final"]
        row["i_ty_final"] = float(group["i_ty"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + COMPRESSION_COLUMNS[3:])


def _label_for(run: Run, name: str, params: Mapping[str, Any], describe: str) -> str:
    """Return the estimator column value of re-estimated rows.

    The name, unless the run already has rows of that name made with other
    parameters (then ``name(k=v, ...)``).
    """
    params = jsonable(dict(params))
    known: Dict[str, Any] = {}
    for entry in run.config.get("estimators") or []:
        if isinstance(entry, Mapping) and "name" in entry:
            known[entry.get("label", entry["name"])] = entry.get("params", {})
        elif isinstance(entry, str):
            known[entry] = {}
    if name in known:
        return name if known[name] == params else describe
    in_data = set(run.information_long["estimator"])
    if name in in_data and params:
        return describe
    return name


def estimate_from_activations(
    run_path: Any,
    estimator_name: str,
    params: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
    *,
    label: Optional[str] = None,
    epochs: Optional[Sequence[int]] = None,
    probes: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    force: bool = False,
) -> pd.DataFrame:
    """Recompute information from a run's stored activations with any estimator.

    The rows are made by :func:`ibmonitor.estimation.information_rows`, as the
    monitor makes them during training, and appended to the run's
    ``information.csv`` through :meth:`ibmonitor.storage.RunWriter.append_to`
    (each epoch flushed and fsynced as it is done, so an interrupted call
    keeps its finished epochs); the estimator is added to ``run.json``'s
    ``"estimators"``. The run's status and times are left as they were.

    Parameters
    ----------
    run_path : str, path or Run
        A run recorded with ``store_activations=True``.
    estimator_name : str
        A registered estimator (:func:`ibmonitor.estimators.available`).
    params : dict, optional
        Parameters of the estimator (``{"k": 5}``).
    progress : bool, default=True
        Show a tqdm progress bar over the epochs (on stderr).
    label : str, optional
        Value of the ``estimator`` column. By default the estimator's name, or
        ``name(k=v, ...)`` when the run already holds that estimator with other
        parameters.
    epochs, probes, layers : sequence, optional
        Restrict the work to these (default: every stored one).
    force : bool, default=False
        Append even though the run is still being written (its status is
        ``"running"`` and its writer may be alive); only safe when it is not.

    Returns
    -------
    rows : DataFrame
        The new rows, wide (epoch, probe, layer, estimator, i_xt, i_ty, extras).

    Raises
    ------
    ValueError
        The run has no stored activations or is still being written, or an
        unknown epoch, probe, layer or estimator was asked for.

    Examples
    --------
    >>> estimate_from_activations("runs/demo", "knn", {"k": 5})  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from .estimation import InputsForEstimators, information_rows
    from .estimators import get, input_ids

    run = run_path if isinstance(run_path, Run) else load_run(run_path)
    params = dict(params or {})
    estimator = get(estimator_name, **params)
    if run.status == "running" and not force:
        raise InvalidParameterError(
            f"The run {run.name!r} is still being written (status 'running'); "
            f"estimate once it is finished, or pass force=True if its writer is "
            f"gone."
        )
    stored = run.activation_epochs
    if not stored:
        raise InvalidParameterError(
            f"The run {run.name!r} has no stored activations; record it with "
            f"store_activations=True to re-estimate offline."
        )
    if epochs is None:
        todo = stored
    else:
        todo = [int(e) for e in epochs]
        missing = sorted(set(todo) - set(stored))
        if missing:
            raise InvalidParameterError(
                f"The run {run.name!r} has no stored activations at epochs "
                f"{missing}. Epochs with activations: {stored}."
            )
    if label is None:
        label = _label_for(run, estimator_name, params, estimator.describe())
    elif not isinstance(label, str) or not label:
        raise InvalidParameterError(
            f"The 'label' parameter of estimate_from_activations must be a "
            f"non-empty str. Got {label!r} instead."
        )

    new_rows: List[Dict[str, Any]] = []
    ids_cache: Dict[str, tuple] = {}
    with RunWriter.append_to(run.path) as writer:
        bar = tqdm(todo, desc=f"estimate {label}", unit="epoch", disable=not progress)
        for epoch in bar:
            acts = run.activations(epoch)
            ys = run.labels(epoch)
            xs = run.inputs(epoch)
            epoch_rows: List[Dict[str, Any]] = []
            for probe in _select(list(acts), probes, "probe", run, epoch):
                if probe not in ys:
                    raise InvalidParameterError(
                        f"The stored activations of probe {probe!r} at epoch "
                        f"{epoch} have no labels."
                    )
                chosen = {
                    layer: _float32(acts[probe][layer])
                    for layer in _select(list(acts[probe]), layers, "layer", run, epoch)
                }
                inputs = _inputs_for(
                    estimator.inputs, xs.get(probe), probe, ids_cache, input_ids
                )
                epoch_rows += information_rows(
                    epoch,
                    probe,
                    chosen,
                    ys[probe],
                    [(label, estimator)],
                    inputs=InputsForEstimators(*inputs),
                )
            writer.append_information(epoch_rows)
            new_rows.extend(epoch_rows)
        entry = {
            "name": estimator_name,
            "params": jsonable(params),
            "label": label,
            "source": "activations",
        }
        entries = list(writer.config.get("estimators") or [])
        same = [
            e
            for e in entries
            if isinstance(e, Mapping)
            and e.get("label", e.get("name")) == label
            and e.get("params") == entry["params"]
        ]
        if not same:
            writer.update_config(estimators=[*entries, entry])
    logger.info("added %d rows of %s to %s", len(new_rows), label, run.path)
    long = pd.DataFrame.from_records(
        information_records(new_rows), columns=list(INFORMATION_COLUMNS)
    )
    return information_wide(long, run.config)


def _float32(a: np.ndarray) -> np.ndarray:
    """Compute on float32 what was stored as float16."""
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _select(available, wanted, what, run, epoch):
    if wanted is None:
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise InvalidParameterError(
            f"The run {run.name!r} has no stored {what} {missing} at epoch {epoch}. "
            f"Stored: {available}."
        )
    return list(wanted)


def _inputs_for(kind, x, probe, cache, input_ids):
    """Return ``(values, ids)`` of a probe's stored inputs for the estimator.

    Unique-row ids are computed only for an estimator that takes ids, and
    reused across epochs while the stored inputs stay the same.
    """
    if kind == "none" or x is None:
        return None, None
    values = _float32(x)
    if kind != "ids":
        return values, None
    hit = cache.get(probe)
    if hit is not None and hit[0].shape == x.shape and np.array_equal(hit[0], x):
        return values, hit[1]
    ids = input_ids(x)
    cache[probe] = (x, ids)
    return values, ids
