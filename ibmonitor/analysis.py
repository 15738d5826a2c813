"""Offline analysis of saved runs: summaries, compression, re-estimation.

:func:`sensitivity` re-estimates stored activations over a grid of estimator
parameters without writing anything, and :func:`sensitivity_summary` says per
layer whether fitting and compression survive the grid (docs/sensitivity.md).

>>> from ibmonitor import load_run
>>> from ibmonitor.analysis import summary_table, estimate_from_activations
>>> summary_table(load_run("runs/demo"))  # doctest: +SKIP
>>> estimate_from_activations("runs/demo", "knn", {"k": 5})  # doctest: +SKIP
>>> sensitivity("runs/demo", "binned", {"n_bins": [10, 30, 100]})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np
import pandas as pd

from .aggregate import aggregate_seeds
from .exceptions import EstimationWarning, InvalidParameterError
from .schema import INFORMATION_COLUMNS, information_records, information_wide
from .storage import RUN_FILE, Run, Runs, RunWriter, load_run, load_runs
from .storage.files import jsonable

__all__ = [
    "aggregate_seeds",
    "compression_table",
    "estimate_from_activations",
    "sensitivity",
    "sensitivity_summary",
    "summary_table",
]

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
    from .estimators import get

    run = run_path if isinstance(run_path, Run) else load_run(run_path)
    params = dict(params or {})
    estimator = get(estimator_name, **params)
    if run.status == "running" and not force:
        raise InvalidParameterError(
            f"The run {run.name!r} is still being written (status 'running'); "
            f"estimate once it is finished, or pass force=True if its writer is "
            f"gone."
        )
    todo = _stored_epochs(run, epochs)
    if label is None:
        label = _label_for(run, estimator_name, params, estimator.describe())
    elif not isinstance(label, str) or not label:
        raise InvalidParameterError(
            f"The 'label' parameter of estimate_from_activations must be a "
            f"non-empty str. Got {label!r} instead."
        )

    new_rows: List[Dict[str, Any]] = []
    with RunWriter.append_to(run.path) as writer:
        for _, epoch_rows in _estimated_epochs(
            run,
            [(label, estimator)],
            todo,
            probes,
            layers,
            progress=progress,
            desc=f"estimate {label}",
        ):
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


def _stored_epochs(run: Run, epochs: Optional[Sequence[int]]) -> List[int]:
    """Return the epochs to re-estimate: ``epochs``, all stored when None.

    Raises when the run has no stored activations, naming the run and how to
    store them, or lacks some of ``epochs``.
    """
    stored = run.activation_epochs
    if not stored:
        raise InvalidParameterError(
            f"The run {run.name!r} ({str(run.path)!r}) has no stored activations, "
            "so it cannot be re-estimated offline. Record it with "
            "store_activations=True: InformationMonitor(..., "
            "sinks=[RunStore(store_activations=True)])."
        )
    if epochs is None:
        return stored
    todo = [int(e) for e in epochs]
    missing = sorted(set(todo) - set(stored))
    if missing:
        raise InvalidParameterError(
            f"The run {run.name!r} has no stored activations at epochs "
            f"{missing}. Epochs with activations: {stored}."
        )
    return todo


def _estimated_epochs(
    run: Run,
    labelled: Sequence[Tuple[str, Any]],
    todo: Sequence[int],
    probes: Optional[Sequence[str]],
    layers: Optional[Sequence[str]],
    *,
    progress: bool,
    desc: str,
    device: Any = None,
    on_warning: Optional[Callable[..., None]] = None,
) -> Iterator[Tuple[int, List[Dict[str, Any]]]]:
    """Estimate stored activations epoch by epoch: yield ``(epoch, rows)``.

    Each epoch's file is read once and every ``(label, estimator)`` of
    ``labelled`` runs on it through :func:`ibmonitor.estimation.information_rows`.
    ``on_warning(epoch, probe, layer, label, warning)`` receives the
    estimators' warnings when given. ``device`` moves the activations to a
    torch device first (the estimators run where ``t`` is).
    """
    from tqdm.auto import tqdm

    from .estimation import InputsForEstimators, information_rows
    from .estimators import input_ids

    kinds = {getattr(est, "inputs", "ids") for _, est in labelled}
    kind = next((k for k in ("ids", "values") if k in kinds), "none")
    ids_cache: Dict[str, tuple] = {}
    for epoch in tqdm(todo, desc=desc, unit="epoch", disable=not progress):
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
                layer: _on_device(_float32(acts[probe][layer]), device)
                for layer in _select(list(acts[probe]), layers, "layer", run, epoch)
            }
            inputs = _inputs_for(kind, xs.get(probe), probe, ids_cache, input_ids)
            told: Optional[Callable[[str, str, Any], None]] = None
            if on_warning is not None:

                def told(
                    layer: str,
                    label: str,
                    warning: Any,
                    _e: int = epoch,
                    _p: str = probe,
                ) -> None:
                    on_warning(_e, _p, layer, label, warning)

            epoch_rows += information_rows(
                epoch,
                probe,
                chosen,
                ys[probe],
                labelled,
                inputs=InputsForEstimators(*inputs),
                on_warning=told,
            )
        yield epoch, epoch_rows


def _on_device(a: np.ndarray, device: Any) -> Any:
    """Return ``a``, or ``a`` as a torch tensor on ``device`` when one is given."""
    if device is None:
        return a
    import torch

    return torch.as_tensor(a, device=device)


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


# -- sensitivity to the estimator's parameters --------------------------------------

#: Columns of :func:`sensitivity_summary` after layer, probe and the grid columns.
SENSITIVITY_SUMMARY_COLUMNS = [
    "epochs",
    "first_epoch",
    "epoch_max_i_xt",
    "final_epoch",
    "i_xt_first",
    "i_xt_max",
    "i_xt_final",
    "compression_bits",
    "i_ty_first",
    "i_ty_at_max",
    "i_ty_final",
    "fitting_bits",
    "i_ty_gain",
    "pinned_epochs",
    "compresses",
    "fits",
    "compression_verdict",
    "fitting_verdict",
]

#: Default threshold (bits) above which a phase counts as present.
SENSITIVITY_THRESHOLD = 0.1

_SENSITIVITY_RESERVED = ("layer", "probe", "epoch", "estimator", "i_xt", "i_ty")


def _plain(value: Any) -> Any:
    """Return a grid value as a plain, hashable Python value (numpy scalars, lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, np.ndarray)):
        return tuple(_plain(v) for v in value)
    return value


def _grid_points(
    grid: Any, estimator: str, params: Mapping[str, Any]
) -> Tuple[List[str], List[Dict[str, Any]], List[Any]]:
    """Check ``grid``; return its names, its points and one estimator per point."""
    import itertools

    from .estimators import get

    example = "e.g. {'n_bins': [10, 30, 100]}"
    if not isinstance(grid, Mapping) or not grid:
        raise InvalidParameterError(
            "The 'grid' parameter of sensitivity must be a non-empty dict of "
            f"estimator parameter -> list of values, {example}. Got {grid!r} "
            "instead."
        )
    names: List[str] = []
    values: List[List[Any]] = []
    for name, given in grid.items():
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(
                "The 'grid' parameter of sensitivity must have parameter names "
                f"(non-empty str) as keys. Got {name!r} instead."
            )
        if name in params:
            raise InvalidParameterError(
                f"The parameter {name!r} is both in 'grid' and in 'params' of "
                "sensitivity; give it in one of them."
            )
        if name in _SENSITIVITY_RESERVED:
            raise InvalidParameterError(
                f"The 'grid' parameter of sensitivity cannot vary {name!r}: it is "
                f"a column of the result. Reserved: {list(_SENSITIVITY_RESERVED)}."
            )
        if isinstance(given, (str, bytes, Mapping)) or not hasattr(given, "__iter__"):
            raise InvalidParameterError(
                f"The grid values of {name!r} in sensitivity must be a list of "
                f"values, {example}. Got {given!r} instead."
            )
        listed = [_plain(v) for v in given]
        if not listed:
            raise InvalidParameterError(
                f"The grid values of {name!r} in sensitivity are empty; give at "
                "least one value."
            )
        reprs = [repr(v) for v in listed]
        if len(set(reprs)) != len(reprs):
            twice = sorted({r for r in reprs if reprs.count(r) > 1})
            raise InvalidParameterError(
                f"The grid values of {name!r} in sensitivity repeat {twice}; give "
                "each value once."
            )
        names.append(name)
        values.append(listed)
    if not isinstance(estimator, str):
        raise InvalidParameterError(
            "The 'estimator' parameter of sensitivity must be the name of a "
            f"registered estimator (str). Got {estimator!r} instead."
        )
    points = [dict(zip(names, combo)) for combo in itertools.product(*values)]
    built = [get(estimator, **params, **point) for point in points]
    return names, points, built


def sensitivity(
    run: Any,
    estimator: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    params: Optional[Mapping[str, Any]] = None,
    epochs: Optional[Sequence[int]] = None,
    probes: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    device: Any = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Re-estimate a saved run's information plane over a grid of estimator parameters.

    Every stored epoch's activations are read once and estimated with the
    estimator at every point of ``grid`` (through
    :func:`ibmonitor.estimation.information_rows`, as the monitor does). Nothing
    is written: the run directory is left as it is. Summarise the result with
    :func:`sensitivity_summary`; draw it with
    :func:`ibmonitor.sensitivity_plot.sensitivity_figure`.

    Parameters
    ----------
    run : str, path or Run
        A run recorded with stored activations
        (``sinks=[RunStore(store_activations=True)]``). A run still being
        written is read as far as it goes.
    estimator : str
        A registered estimator (:func:`ibmonitor.estimators.available`).
    grid : dict of str to list
        ``{parameter: [values]}``, e.g. ``{"n_bins": [10, 30, 100]}``,
        ``{"bin_size": [0.05, 0.5]}`` or ``{"noise_variance": [1e-3, 0.1]}``.
        Several parameters give their Cartesian product, in the order given
        (the first varies slowest). Values are checked by the estimator
        (an ``n_bins`` of 10.0 is refused: it must be an int).
    params : dict, optional
        Parameters held fixed at every grid point (``{"value_range": (-1, 1)}``).
    epochs, probes, layers : sequence, optional
        Restrict the work to these (default: every stored one).
    device : str or torch.device, optional
        Move the stored activations to this device (``"cuda"``) before
        estimating; the estimators run on the device of the activations.
        Default: numpy on the CPU.
    progress : bool, default=False
        Show a tqdm progress bar over the epochs (on stderr).

    Returns
    -------
    table : DataFrame
        One row per layer, probe, grid point and epoch (sorted in that order,
        layers and probes as stored): ``layer``, ``probe``, ``epoch``, one
        column per grid parameter, ``i_xt`` and ``i_ty`` (bits), the
        estimator's extras (``h_t``, ``pinned``, ...) and ``estimator`` (its
        description, ``binned(n_bins=10)``). ``table.attrs`` holds ``grid``
        (the grid parameter names), ``estimator``, ``params`` and ``run``.

    Raises
    ------
    InvalidParameterError
        A bad grid (not a dict of lists, empty, repeated values, a parameter
        the estimator does not take, a value it refuses), the run has no
        stored activations (the message names the run and says how to store
        them), or an unknown epoch, probe or layer was asked for.

    Warns
    -----
    EstimationWarning
        Once per grid point whose estimates are pinned at the estimator's
        ceiling (every sample in its own bin), naming the layers and how many
        epochs; the ``pinned`` column marks each such row. Other warnings of
        the estimator are repeated once per grid point and layer.

    Examples
    --------
    >>> table = sensitivity("runs/demo", "binned", {"n_bins": [10, 30, 100]})
    ... # doctest: +SKIP
    >>> sensitivity_summary(table)  # doctest: +SKIP
    """
    if params is not None and not isinstance(params, Mapping):
        raise InvalidParameterError(
            "The 'params' parameter of sensitivity must be a dict of fixed "
            f"estimator parameters. Got {params!r} instead."
        )
    params = dict(params or {})
    names, points, built = _grid_points(grid, estimator, params)
    run = run if isinstance(run, Run) else load_run(run)
    todo = _stored_epochs(run, epochs)
    labelled = [(est.describe(), est) for est in built]
    index = {label: i for i, (label, _) in enumerate(labelled)}

    caught: Dict[Tuple[str, str, str, Any], List[Tuple[int, Any]]] = {}

    def on_warning(
        epoch: int, probe: str, layer: str, label: str, warning: Any
    ) -> None:
        key = (label, probe, layer, warning.category)
        caught.setdefault(key, []).append((epoch, warning))

    rows: List[Dict[str, Any]] = []
    for _, epoch_rows in _estimated_epochs(
        run,
        labelled,
        todo,
        probes,
        layers,
        progress=progress,
        desc=f"sensitivity {estimator}",
        device=device,
        on_warning=on_warning,
    ):
        rows.extend(epoch_rows)

    pinned_at = {  # a dict keeps the order of the rows (layers as stored)
        (r["estimator"], r["probe"], r["layer"], r["epoch"]): None
        for r in rows
        if r.get("pinned") == 1.0
    }
    _warn_grid(run, labelled, rows, pinned_at, caught)

    frame = pd.DataFrame.from_records(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["epoch", "probe", "layer", "estimator"])
    point = frame["estimator"].map(index)
    for name in names:
        frame[name] = pd.Series(
            [points[i][name] for i in point], index=frame.index, dtype=object
        )
        if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in frame[name]
        ):
            frame[name] = pd.to_numeric(frame[name])
    layer_order = {k: i for i, k in enumerate(dict.fromkeys(frame["layer"]))}
    probe_order = {k: i for i, k in enumerate(dict.fromkeys(frame["probe"]))}
    order = pd.DataFrame(
        {
            "layer": frame["layer"].map(layer_order),
            "probe": frame["probe"].map(probe_order),
            "point": point,
            "epoch": frame["epoch"],
        }
    )
    frame = frame.loc[order.sort_values(list(order.columns), kind="stable").index]
    extras = [
        c
        for c in frame.columns
        if c not in ("epoch", "probe", "layer", "estimator", "i_xt", "i_ty", *names)
    ]
    columns = ["layer", "probe", "epoch", *names, "i_xt", "i_ty", *extras, "estimator"]
    frame = frame.reindex(columns=columns).reset_index(drop=True)
    if not frame.empty:
        frame["epoch"] = frame["epoch"].astype("int64")
    frame.attrs = {
        "grid": list(names),
        "estimator": estimator,
        "params": jsonable(params),
        "run": run.name,
    }
    return frame


def _warn_grid(
    run: Run,
    labelled: Sequence[Tuple[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    pinned_at: Mapping[Tuple[str, str, str, int], None],
    caught: Mapping[Tuple[str, str, str, Any], List[Tuple[int, Any]]],
) -> None:
    """Say once per grid point which layers were pinned, and pass on the rest."""
    n_epochs: Dict[Tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["estimator"], r["probe"], r["layer"])
        n_epochs[key] = n_epochs.get(key, 0) + 1
    order = {key[1:]: i for i, key in enumerate(n_epochs)}
    for label, _ in labelled:
        counts: Dict[Tuple[str, str], int] = {}
        for lab, probe, layer, _epoch in pinned_at:
            if lab == label:
                counts[(probe, layer)] = counts.get((probe, layer), 0) + 1
        counts = dict(sorted(counts.items(), key=lambda item: order[item[0]]))
        if counts:
            where = ", ".join(
                f"{layer} ({n} of {n_epochs[(label, probe, layer)]} epochs)"
                + (f" of probe {probe!r}" if probe != "default" else "")
                for (probe, layer), n in counts.items()
            )
            warnings.warn(
                f"{label} on run {run.name!r}: estimates pinned at the "
                f"estimator's ceiling for layers {where}; there I(X;T) measures "
                "the number of samples, not the layer (see the 'pinned' column).",
                EstimationWarning,
                stacklevel=3,
            )
    for (label, probe, layer, cat), found in caught.items():
        rest = [
            (e, w)
            for e, w in found
            if not (
                issubclass(cat, EstimationWarning)
                and (label, probe, layer, e) in pinned_at
            )
        ]
        if rest:
            epoch, warning = rest[0]
            more = f" (and {len(rest) - 1} more epochs)" if len(rest) > 1 else ""
            warnings.warn(
                f"{label}, layer {layer!r}, probe {probe!r}, epoch {epoch}{more}: "
                f"{warning.message}",
                cat,
                stacklevel=3,
            )


def _phase_verdict(present: pd.Series) -> str:
    """``survives`` (present at every grid value), ``absent``, ``depends``."""
    known = present.dropna()
    if known.empty:
        return "unknown"
    if known.all():
        return "survives"
    if not known.any():
        return "absent"
    return "depends"


def sensitivity_summary(
    table: pd.DataFrame,
    *,
    grid: Optional[Sequence[str]] = None,
    threshold: float = SENSITIVITY_THRESHOLD,
) -> pd.DataFrame:
    """Per layer and grid value: fitting, compression, and whether they survive.

    For each layer, probe and grid point, the trajectory over the epochs
    (sorted) gives, in bits:

    * ``compression_bits``: the highest I(X;T) minus the final I(X;T), as in
      :func:`compression_table` (>= 0; the peak is the first epoch reaching the
      highest value, ``epoch_max_i_xt``);
    * ``fitting_bits``: I(T;Y) at ``epoch_max_i_xt`` minus I(T;Y) at the first
      epoch: the label information gained while I(X;T) rose to its peak
      (negative when it fell; 0 when the peak is the first epoch);
    * ``i_ty_gain``: final minus first I(T;Y), whenever it was gained (no
      verdict; it shows how much of the label information came after the
      peak, when fitting and compression overlap).

    A phase is *present* at a grid point when its bits exceed ``threshold``
    (``compresses``, ``fits``). Over the grid, a layer's verdict is
    ``"survives"`` when the phase is present at every grid value, ``"absent"``
    when at none (the conclusion "this layer does not compress" then holds at
    every value too), ``"depends"`` otherwise, and ``"unknown"`` when every
    value is NaN.

    Parameters
    ----------
    table : DataFrame
        The result of :func:`sensitivity` (layer, probe, epoch, grid columns,
        i_xt, i_ty and optionally pinned).
    grid : sequence of str, optional
        The grid columns; default ``table.attrs["grid"]``.
    threshold : float, default=0.1
        Bits a phase must exceed to count as present (>= 0).

    Returns
    -------
    summary : DataFrame
        One row per layer, probe and grid point, in the table's order:
        ``layer``, ``probe``, the grid columns, then ``epochs``,
        ``first_epoch``, ``epoch_max_i_xt``, ``final_epoch``, ``i_xt_first``,
        ``i_xt_max``, ``i_xt_final``, ``compression_bits``, ``i_ty_first``,
        ``i_ty_at_max``, ``i_ty_final``, ``fitting_bits``, ``i_ty_gain`` (bits),
        ``pinned_epochs`` (epochs whose estimate is pinned at the
        estimator's ceiling; missing without a ``pinned`` column),
        ``compresses``, ``fits`` (bool, missing where the bits are NaN) and
        the layer's ``compression_verdict`` and ``fitting_verdict`` (the same
        on every row of a layer and probe).

    Raises
    ------
    InvalidParameterError
        ``threshold`` is negative or not a number, or the grid columns are
        neither given nor in ``table.attrs``, or missing from the table.

    Examples
    --------
    >>> summary = sensitivity_summary(sensitivity("runs/demo", "binned",
    ...     {"n_bins": [10, 30, 100]}))  # doctest: +SKIP
    >>> summary.pivot(index="layer", columns="n_bins", values="compression_bits")
    ... # doctest: +SKIP
    """
    from ._validation import check_param

    check_param(threshold, "threshold", "sensitivity_summary", kind="real", low=0.0)
    threshold = float(threshold)
    if grid is None:
        grid = table.attrs.get("grid")
        if grid is None:
            raise InvalidParameterError(
                "sensitivity_summary cannot tell the grid columns of this table "
                "(no table.attrs['grid']); pass grid=[...], e.g. grid=['n_bins']."
            )
    names = [grid] if isinstance(grid, str) else list(grid)
    missing = [
        c for c in ["layer", "probe", "epoch", "i_xt", "i_ty", *names] if c not in table
    ]
    if missing:
        raise InvalidParameterError(
            f"The table given to sensitivity_summary lacks the columns {missing}; "
            "expected the result of sensitivity()."
        )
    columns = ["layer", "probe", *names, *SENSITIVITY_SUMMARY_COLUMNS]
    if table.empty:
        return pd.DataFrame(columns=columns)
    rows: List[Dict[str, Any]] = []
    keys = ["layer", "probe", *names]
    for key, group in table.groupby(keys, sort=False, dropna=False):
        group = group.sort_values("epoch", kind="stable")
        row: Dict[str, Any] = dict(zip(keys, key))
        peak = compression_table(
            group.assign(estimator="")[
                ["epoch", "probe", "layer", "estimator", "i_xt", "i_ty"]
            ]
        ).iloc[0]
        i_ty = group["i_ty"].to_numpy(dtype=float)
        epochs = group["epoch"].to_numpy()
        at_peak = np.flatnonzero(epochs == peak["epoch_max_i_xt"])
        i_ty_at_max = float(i_ty[at_peak[0]]) if at_peak.size else np.nan
        pinned = int((group["pinned"] == 1.0).sum()) if "pinned" in group else pd.NA
        row.update(
            epochs=int(group["epoch"].nunique()),
            first_epoch=int(epochs[0]),
            epoch_max_i_xt=int(peak["epoch_max_i_xt"]),
            final_epoch=int(peak["final_epoch"]),
            i_xt_first=float(group["i_xt"].iloc[0]),
            i_xt_max=float(peak["i_xt_max"]),
            i_xt_final=float(peak["i_xt_final"]),
            compression_bits=float(peak["compression_bits"]),
            i_ty_first=float(i_ty[0]),
            i_ty_at_max=i_ty_at_max,
            i_ty_final=float(i_ty[-1]),
            fitting_bits=i_ty_at_max - float(i_ty[0]),
            i_ty_gain=float(i_ty[-1]) - float(i_ty[0]),
            pinned_epochs=pinned,
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    for bits, flag in (("compression_bits", "compresses"), ("fitting_bits", "fits")):
        value = out[bits].to_numpy(dtype=float)
        out[flag] = pd.array(
            [pd.NA if np.isnan(v) else bool(v > threshold) for v in value],
            dtype="boolean",
        )
    out["pinned_epochs"] = pd.array(list(out["pinned_epochs"]), dtype="Int64")
    for flag, verdict in (
        ("compresses", "compression_verdict"),
        ("fits", "fitting_verdict"),
    ):
        out[verdict] = out.groupby(["layer", "probe"], sort=False)[flag].transform(
            _phase_verdict
        )
    return out.reindex(columns=columns)
