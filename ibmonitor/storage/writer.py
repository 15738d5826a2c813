"""The writer of the run store: :class:`RunWriter`.

Every write is durable before it returns (see :mod:`ibmonitor.storage.files`),
so a process killed at any moment leaves a readable run holding every
completed write. A writer holds the run directory's lock for its whole life
and never writes through a symbolic link.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import socket
import sys
import threading
from datetime import datetime
from numbers import Real
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ..exceptions import InvalidParameterError
from ..schema import (
    DEFAULT_PROBE,
    EPOCHS_COLUMNS,
    INFORMATION_COLUMNS,
    INFORMATION_KEYS,
    SCALARS_COLUMNS,
    information_records,
)
from .files import (
    ACTIVATIONS_DIR,
    ARCHIVE_DIRS,
    EPOCH_FILE,
    EPOCHS_FILE,
    EXPLANATIONS_DIR,
    INFORMATION_FILE,
    INPUTS_KEY,
    LABELS_KEY,
    PENDING_DIR,
    RUN_FILE,
    SCALARS_FILE,
    SCHEMA_VERSION,
    TMP_MARK,
    CsvTable,
    PathLike,
    RunLock,
    activation_epochs,
    atomic_write,
    check_epoch,
    check_path,
    encode_name,
    fsync_dir,
    npz_name,
    pending_epochs,
    read_json,
    refuse_link,
    remove_stale_temporaries,
    to_json_bytes,
    write_json,
)
from .reader import read_archive, read_table

__all__ = ["RunWriter"]

logger = logging.getLogger(__name__)

STATUSES = ("running", "finished", "crashed")
# Keys of run.json that only the writer sets.
_MANAGED_KEYS = ("schema_version", "status", "started", "ended")


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _versions() -> Dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> Optional[str]:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            return str(module.__version__)
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        from .. import __version__ as ib_version
    except ImportError:  # pragma: no cover
        ib_version = None
    return {
        "ibmonitor": ib_version,
        "torch": pkg("torch"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _check_value(value: Any, *, name: str, where: str) -> float:
    if value is None:
        return math.nan
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy and torch scalars
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidParameterError(
            f"The value of {name!r} given to {where} must be a real number. "
            f"Got {value!r} of type {type(value).__name__}."
        )
    return float(value)


def _format_value(value: float) -> str:
    return repr(float(value))


def _information_records(rows: Iterable[Mapping[str, Any]]) -> List[Tuple]:
    """Validate wide information rows and turn them into encoded CSV records.

    Rows are ``{epoch, probe, layer, estimator, i_xt, i_ty, **extras}``.
    The long records come from :func:`ibmonitor.schema.information_records`;
    this adds what the store needs: checked epochs, names and values (``None``
    and a missing ``i_xt``/``i_ty`` become NaN), names percent-encoded and
    values written with ``repr``.
    """
    where = "RunWriter.append_information"
    checked: List[Dict[str, Any]] = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise InvalidParameterError(
                f"Each row given to {where} must be a dict. Got {row!r}."
            )
        missing = [k for k in ("epoch", "layer", "estimator") if k not in row]
        if missing:
            raise InvalidParameterError(
                f"A row given to {where} lacks the keys {missing}. Got {dict(row)!r}."
            )
        clean: Dict[str, Any] = {
            "epoch": check_epoch(row["epoch"], where=where),
            "probe": row.get("probe", DEFAULT_PROBE),
            "layer": row["layer"],
            "estimator": row["estimator"],
        }
        for key in ("probe", "layer", "estimator"):
            encode_name(clean[key], what=f"{key} name")
        quantities = ["i_xt", "i_ty"] + [
            k for k in row if k not in INFORMATION_KEYS and k not in ("i_xt", "i_ty")
        ]
        for q in quantities:
            encode_name(q, what="quantity name")
            clean[q] = _check_value(row.get(q), name=q, where=where)
        checked.append(clean)
    return [
        (
            epoch,
            encode_name(probe),
            encode_name(layer),
            encode_name(estimator),
            encode_name(quantity),
            _format_value(value),
        )
        for epoch, probe, layer, estimator, quantity, value in information_records(
            checked
        )
    ]


def _as_numpy(a: Any, *, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor on any device
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise InvalidParameterError(
            f"{what} must be a numeric array. Got dtype {arr.dtype}."
        )
    return arr


def _own_files(path: Path) -> List[Path]:
    """List the files the run store wrote in ``path`` (and nothing else)."""
    names = (RUN_FILE, INFORMATION_FILE, SCALARS_FILE, EPOCHS_FILE)
    found = [path / n for n in names]
    found = [p for p in found if p.is_file() or p.is_symlink()]
    found += [
        p for p in path.glob(f".*{TMP_MARK}*") if p.name.split(TMP_MARK)[0][1:] in names
    ]
    for folder in (path / name for name in ARCHIVE_DIRS):
        if folder.is_dir() and not folder.is_symlink():
            for p in folder.iterdir():
                name = p.name
                if EPOCH_FILE.match(name) or (
                    name.startswith(".epoch_") and TMP_MARK in name
                ):
                    found.append(p)
    return found


def _read_journal(path: Path) -> Tuple[set, set]:
    """Return the epochs ``begun`` and ``done`` in the journal ``path``.

    Lines that do not parse (a partial last line) are ignored.
    """
    begun: set = set()
    done: set = set()
    refuse_link(path)
    for line in path.read_bytes().split(b"\n")[1:]:
        epoch, _, state = line.partition(b",")
        if not epoch.isdigit():
            continue
        if state == b"begun":
            begun.add(int(epoch))
        elif state == b"done":
            done.add(int(epoch))
    return begun, done


def _drop_epochs(path: Path, epochs: set) -> int:
    """Rewrite the table ``path`` without the rows of ``epochs``; return how many.

    A partially written last line is dropped too. The file is replaced
    atomically (never written through a link).
    """
    if not epochs or not path.is_file():
        return 0
    refuse_link(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" after a final newline, else a partial line
    kept = lines[:1]
    dropped = 1 if tail else 0
    for line in lines[1:]:
        head = line.split(b",", 1)[0]
        if head.isdigit() and int(head) in epochs:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        body = b"".join(line + b"\n" for line in kept)
        atomic_write(path, lambda fh: fh.write(body))
    return dropped


def _max_epoch_in(path: Path, columns: Tuple[str, ...]) -> Optional[int]:
    frame = read_table(path, columns, warn=False)
    return int(frame["epoch"].max()) if len(frame) else None


def _remove_stale(path: Path) -> None:
    removed = remove_stale_temporaries(path)
    if removed:
        logger.info(
            "removed %d temporary file(s) of a killed write in %s: %s",
            len(removed),
            path,
            [p.name for p in removed],
        )


def _check_schema_version(path: Path, stored: Mapping[str, Any]) -> None:
    version = stored.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"The run in {str(path)!r} has schema_version {version!r}; "
            f"this version of ibmonitor writes {SCHEMA_VERSION}."
        )


class RunWriter:
    """Write one run directory: ``run.json``, the CSV tables, activations.

    Every method returns only once its data is flushed and fsynced (unless it
    is asked not to fsync), so a process killed at any moment leaves a
    readable run with every completed write. Safe to call from several
    threads.

    Parameters
    ----------
    path : str or path
        The run directory; created (with its parents) when missing.
    config : dict, optional
        Initial content of ``run.json`` (layers, estimators, probes, schedule,
        seed, ...); merged over the defaults of the schema. ``schema_version``,
        ``status``, ``started`` and ``ended`` are managed by the writer.
    resume : bool, default=False
        Continue a run directory that exists: keep its tables and append
        (``config`` is merged over the stored configuration). See
        :attr:`last_epoch`.
    overwrite : bool, default=False
        Delete the run store's own files of an existing run (``run.json``, the
        CSV tables, ``activations/epoch_*.npz``) first; other files in the
        directory are left alone.

    Raises
    ------
    FileExistsError
        The directory already holds a run and neither ``resume`` nor
        ``overwrite`` is set.
    RunLockedError
        Another live writer (this process or another) holds the directory:
        one writer per run directory, held from here to :meth:`close` (see
        :class:`ibmonitor.storage.files.RunLock`).
    LinkError
        ``run.json``, a table or the lock file is a symbolic link; the store
        never writes through a link.

    Notes
    -----
    With ``resume=True`` the temporaries of a killed write
    (``.run.json.tmp-*``, ``activations/.epoch_*.npz.tmp-*``) are removed.

    See Also
    --------
    RunWriter.append_to : add rows to a finished run without changing it
        otherwise (its status, times and writer stay as they are).

    Examples
    --------
    >>> with RunWriter("runs/a", {"seed": 0}) as w:  # doctest: +SKIP
    ...     w.append_scalars(0, {"train_loss": 0.7})
    """

    def __init__(
        self,
        path: PathLike,
        config: Optional[Mapping[str, Any]] = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.path = check_path(path, what="run path")
        if resume and overwrite:
            raise InvalidParameterError(
                "The 'resume' and 'overwrite' parameters of RunWriter cannot both "
                "be True."
            )
        config = dict(config or {})
        bad = [k for k in _MANAGED_KEYS if k in config]
        if bad:
            raise InvalidParameterError(
                f"The config given to RunWriter may not set {bad}; the writer "
                f"manages them."
            )
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(
                f"The run path {str(self.path)!r} exists and is not a directory."
            )
        self._lock = threading.RLock()
        self._closed = False
        self._appending = False
        self.path.mkdir(parents=True, exist_ok=True)
        # The lock comes first: the existence check and the creation below
        # happen under it, so two writers cannot both create a run.
        self._run_lock: Optional[RunLock] = RunLock(self.path)
        try:
            self._open(config, resume=resume, overwrite=overwrite)
        except BaseException:
            self._abandon()
            raise
        logger.info("writing run %s", self.path)

    def _open(self, config: Dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        """Create, resume or overwrite the run (the lock is held)."""
        for name in (RUN_FILE, INFORMATION_FILE, SCALARS_FILE, EPOCHS_FILE):
            refuse_link(self.path / name)
        existing = _own_files(self.path)
        has_run = (self.path / RUN_FILE).exists()
        if existing and not (resume or overwrite):
            raise FileExistsError(
                f"The run directory {str(self.path)!r} already holds a run. Pass "
                f"resume=True to continue it or overwrite=True to replace it."
            )
        if resume:
            _remove_stale(self.path)
        if overwrite:
            for p in existing:
                p.unlink()
            for folder in (self.path / name for name in ARCHIVE_DIRS):
                if (
                    folder.is_dir()
                    and not folder.is_symlink()
                    and not any(folder.iterdir())
                ):
                    folder.rmdir()
            fsync_dir(self.path)
            has_run = False
        writer_info = {"pid": os.getpid(), "host": socket.gethostname()}
        if resume and has_run:
            stored = read_json(self.path / RUN_FILE)
            _check_schema_version(self.path, stored)
            stored.update(config)
            stored.update(
                status="running",
                ended=None,
                writer=writer_info,
                resumed=[*stored.get("resumed", []), _now()],
            )
            self._config = stored
        else:
            base: Dict[str, Any] = {
                "schema_version": SCHEMA_VERSION,
                "name": self.path.resolve().name,
                "status": "running",
                "started": _now(),
                "ended": None,
                "versions": _versions(),
                "seed": None,
                "layers": {},
                "estimators": [],
                "probes": {},
                "schedule": None,
                "skipped_epochs": [],
                "writer": writer_info,
            }
            versions = config.pop("versions", None)
            base.update(config)
            if isinstance(versions, Mapping):
                base["versions"].update(versions)
            self._config = base
        self._pending: List[int] = []
        if resume and (self.path / EPOCHS_FILE).is_file():
            self._repair()
        # Tables first, then run.json: a run.json always has its tables.
        self._information = CsvTable(self.path / INFORMATION_FILE, INFORMATION_COLUMNS)
        self._scalars = CsvTable(self.path / SCALARS_FILE, SCALARS_COLUMNS)
        self._epochs: Optional[CsvTable] = None  # the journal, opened on first use
        self._write_config()
        self._last_epoch = None
        if resume:
            self._last_epoch = self._find_last_epoch()
            if self._pending:
                self._last_epoch = max(self._last_epoch or 0, *self._pending)

    def _repair(self) -> None:
        """Make every recorded epoch of a resumed run complete or absent.

        Called with the lock held, before the tables are opened. A recorded
        epoch's writes are bracketed in the journal (``epochs.csv``) by a
        ``begun`` line and a ``done`` line (:meth:`begin_epoch`,
        :meth:`end_epoch`); other epochs write one atomic line of scalars.
        An epoch begun but not done was cut by the process's death:

        - with spooled activations (``pending/``) its ``on_epoch_end`` had
          returned: its scalars stay, its partly written information rows and
          archive are removed, and the monitor estimates it again
          (:attr:`pending`);
        - otherwise its ``on_epoch_end`` never returned: its rows and archive
          are removed, so that training can redo the epoch.
        """
        begun, done = _read_journal(self.path / EPOCHS_FILE)
        spooled = set(pending_epochs(self.path))
        for epoch in sorted(spooled & done):  # done; the spool was not removed
            (self.path / PENDING_DIR / npz_name(epoch)).unlink()
        cut = begun - done
        pending = cut & spooled
        info_file = self.path / INFORMATION_FILE
        dropped = _drop_epochs(info_file, cut)
        dropped += _drop_epochs(self.path / SCALARS_FILE, cut - pending)
        _drop_epochs(self.path / EPOCHS_FILE, cut - pending)  # redone afresh
        act = self.path / ACTIVATIONS_DIR
        archives = sorted(cut & set(activation_epochs(self.path)))
        for epoch in archives:
            refuse_link(act)
            (act / npz_name(epoch)).unlink()
        if cut:
            fsync_dir(self.path)
            logger.warning(
                "resumed run %s: removed %d rows and %d archives of epochs whose "
                "writes were cut (%s); spooled epochs %s will be estimated again",
                self.path,
                dropped,
                len(archives),
                sorted(cut - pending),
                sorted(pending),
            )
        self._pending = sorted(pending)

    @classmethod
    def append_to(cls, path: PathLike) -> RunWriter:
        """Open an existing run to add rows to it, leaving the rest as it is.

        For work done on a run after training (re-estimating information from
        stored activations, adding a measure): the run's ``status``,
        ``started``, ``ended`` and ``writer`` are kept, ``run.json`` is only
        rewritten by :meth:`update_config`, and :meth:`close` closes the tables
        without marking the run. Appends take the same care as during
        training: names are encoded, rows are flushed and fsynced, a partially
        written last line is cut first (with a warning).

        It takes the run's lock like any writer, so it is refused while the
        run's training writer (or another appender) is still open, and it
        removes temporaries left by a killed write first.

        Parameters
        ----------
        path : str or path
            A run directory (holding ``run.json``).

        Returns
        -------
        writer : RunWriter
            Use it as a context manager, or call :meth:`close`.

        Raises
        ------
        FileNotFoundError
            ``path`` is not a run directory.
        ValueError
            The run was written with a newer schema version.
        RunLockedError
            Another live writer holds the run directory.
        LinkError
            ``run.json`` or a table is a symbolic link.

        Examples
        --------
        >>> with RunWriter.append_to("runs/a") as w:  # doctest: +SKIP
        ...     w.append_information(rows)
        ...     w.update_config(estimators=[*w.config["estimators"], entry])
        """
        path = check_path(path, what="run path")
        for name in (RUN_FILE, INFORMATION_FILE, SCALARS_FILE):
            refuse_link(path / name)
        if not (path / RUN_FILE).is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is not a run directory (no {RUN_FILE})."
            )
        self = cls.__new__(cls)
        self.path = path
        self._lock = threading.RLock()
        self._closed = False
        self._appending = True
        self._run_lock = RunLock(path)
        try:
            stored = read_json(path / RUN_FILE)
            _check_schema_version(path, stored)
            self._config = stored
            _remove_stale(path)
            self._information = CsvTable(path / INFORMATION_FILE, INFORMATION_COLUMNS)
            self._scalars = CsvTable(path / SCALARS_FILE, SCALARS_COLUMNS)
            self._epochs = None
            self._pending = []
            self._last_epoch = self._find_last_epoch()
        except BaseException:
            self._abandon()
            raise
        logger.info("appending to run %s", path)
        return self

    def _abandon(self) -> None:
        """Close what a failed open opened and release the lock."""
        self._closed = True
        for table in (
            getattr(self, "_information", None),
            getattr(self, "_scalars", None),
            getattr(self, "_epochs", None),
        ):
            if table is not None:
                with contextlib.suppress(OSError):
                    table.close()
        run_lock = getattr(self, "_run_lock", None)
        if run_lock is not None:
            run_lock.release()

    # -- state ------------------------------------------------------------

    @property
    def config(self) -> Dict[str, Any]:
        """A copy of the configuration as stored in ``run.json``."""
        with self._lock:
            return json.loads(to_json_bytes(self._config))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def appending(self) -> bool:
        """Whether this writer came from :meth:`append_to` (it keeps the status)."""
        return self._appending

    @property
    def last_epoch(self) -> Optional[int]:
        """The last epoch with any stored row or activations, or ``None``.

        On resume, training continues at ``last_epoch + 1``.
        """
        return self._last_epoch

    def _find_last_epoch(self) -> Optional[int]:
        candidates = [
            _max_epoch_in(self.path / INFORMATION_FILE, INFORMATION_COLUMNS),
            _max_epoch_in(self.path / SCALARS_FILE, SCALARS_COLUMNS),
        ]
        candidates += activation_epochs(self.path)
        candidates = [c for c in candidates if c is not None]
        return max(candidates) if candidates else None

    def _seen(self, epoch: int) -> None:
        if self._last_epoch is None or epoch > self._last_epoch:
            self._last_epoch = epoch

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"The RunWriter of {str(self.path)!r} is closed.")

    def _write_config(self) -> None:
        write_json(self.path / RUN_FILE, self._config)

    # -- writes -----------------------------------------------------------

    def append_information(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append information estimates (long format), flushed and fsynced.

        Parameters
        ----------
        rows : iterable of dict
            Each ``{"epoch", "probe", "layer", "estimator", "i_xt", "i_ty",
            **extras}`` in bits (``probe`` defaults to ``"default"``; ``None``
            values are stored as NaN).

        Returns
        -------
        n : int
            Number of CSV lines written.

        Raises
        ------
        InvalidParameterError
            A row is not a dict, lacks ``epoch``, ``layer`` or ``estimator``,
            or holds a bad epoch, name or value.
        """
        records = _information_records(rows)
        with self._lock:
            self._check_open()
            n = self._information.append(records)
            for r in records:
                self._seen(r[0])
        return n

    def append_scalars(
        self, epoch: int, values: Mapping[str, Any], *, sync: bool = True
    ) -> int:
        """Append scalars of one epoch (``{"train_loss": 0.3, ...}``).

        Parameters
        ----------
        epoch : int
            The epoch of every value.
        values : dict of str to float
            Scalar name to value (``None`` is stored as NaN).
        sync : bool, default=True
            Fsync before returning. With False the rows are written and
            flushed to the operating system, so they survive the process being
            killed (even with ``SIGKILL``) and readers see them at once, but not
            a power loss until :meth:`sync` or :meth:`close`. For many scalars
            a step.

        Returns
        -------
        n : int
            Number of CSV lines written.

        Raises
        ------
        InvalidParameterError
            A bad epoch, a ``values`` that is not a dict, a bad name or value.
        """
        where = "RunWriter.append_scalars"
        epoch = check_epoch(epoch, where=where)
        if not isinstance(values, Mapping):
            raise InvalidParameterError(
                f"The 'values' parameter of {where} must be a dict. Got {values!r}."
            )
        records = [
            (
                epoch,
                encode_name(k, what="scalar name"),
                _format_value(_check_value(v, name=k, where=where)),
            )
            for k, v in values.items()
        ]
        with self._lock:
            self._check_open()
            n = self._scalars.append(records, sync=bool(sync))
            if n:
                self._seen(epoch)
        return n

    def sync(self) -> None:
        """Fsync every table holding rows appended with ``sync=False``.

        Does nothing on a closed writer (closing fsyncs).
        """
        with self._lock:
            if self._closed:
                return
            self._information.sync()
            self._scalars.sync()
            if self._epochs is not None:
                self._epochs.sync()

    def save_activations(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, Any]],
        *,
        labels: Optional[Mapping[str, Any]] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        float16: bool = False,
    ) -> Path:
        """Store one epoch's activations as ``activations/epoch_XXXXXX.npz``.

        Written atomically (temporary file, fsync, rename): a reader sees the
        whole archive or none.

        Parameters
        ----------
        epoch : int
            The recorded epoch.
        activations : dict
            ``{probe: {layer: array of shape (n_samples, n_units)}}`` (numpy
            arrays or tensors on any device).
        labels, inputs : dict, optional
            ``{probe: array}``; inputs are flattened to (n_samples, n_features),
            so that :func:`ibmonitor.analysis.estimate_from_activations` can
            rerun any estimator.
        float16 : bool, default=False
            Store floating activations and inputs as float16 (half the size).

        Returns
        -------
        path : Path
            The archive written.
        """
        return self._save_archive(
            ACTIVATIONS_DIR,
            epoch,
            activations,
            labels=labels,
            inputs=inputs,
            float16=float16,
            where="RunWriter.save_activations",
        )

    def _save_archive(
        self,
        folder_name: str,
        epoch: int,
        activations: Mapping[str, Mapping[str, Any]],
        *,
        labels: Optional[Mapping[str, Any]],
        inputs: Optional[Mapping[str, Any]],
        float16: bool,
        where: str,
    ) -> Path:
        epoch = check_epoch(epoch, where=where)
        arrays: Dict[str, np.ndarray] = {}
        fdtype = np.float16 if float16 else np.float32

        def floating(a: Any, what: str) -> np.ndarray:
            arr = _as_numpy(a, what=what)
            return arr.astype(fdtype, copy=False) if arr.dtype.kind == "f" else arr

        for probe, layers in dict(activations).items():
            p = encode_name(probe, what="probe name", probe=True)
            for layer, t in dict(layers).items():
                if layer in (LABELS_KEY, INPUTS_KEY):
                    raise InvalidParameterError(
                        f"The layer name {layer!r} is reserved by the run store."
                    )
                arr = floating(t, f"Activations of layer {layer!r}")
                if arr.ndim == 1:
                    arr = arr[:, None]
                elif arr.ndim > 2:
                    arr = arr.reshape(arr.shape[0], -1)
                arrays[f"{p}/{encode_name(layer, what='layer name')}"] = arr
        for extra, key, what in (
            (labels, LABELS_KEY, "labels"),
            (inputs, INPUTS_KEY, "inputs"),
        ):
            for probe, a in dict(extra or {}).items():
                p = encode_name(probe, what="probe name", probe=True)
                arr = _as_numpy(a, what=f"The {what} of probe {probe!r}")
                if key == INPUTS_KEY:
                    arr = floating(arr.reshape(arr.shape[0], -1), what)
                arrays[f"{p}/{key}"] = arr
        with self._lock:
            target = self._write_npz(folder_name, epoch, arrays)
            self._seen(epoch)
        return target

    def _write_npz(
        self, folder_name: str, epoch: int, arrays: Mapping[str, np.ndarray]
    ) -> Path:
        """Write ``<folder_name>/epoch_XXXXXX.npz`` atomically (lock held)."""
        self._check_open()
        folder = self.path / folder_name
        refuse_link(folder)
        created = not folder.exists()
        folder.mkdir(exist_ok=True)
        if created:
            fsync_dir(self.path)
        target = folder / npz_name(epoch)
        refuse_link(target)
        atomic_write(target, lambda fh: np.savez(fh, **arrays))
        return target

    def save_explanations(self, epoch: int, arrays: Mapping[str, Any]) -> Path:
        """Store one epoch's explanations as ``explanations/epoch_XXXXXX.npz``.

        Written atomically, like :meth:`save_activations`.

        Parameters
        ----------
        epoch : int
        arrays : dict of str to array
            Named arrays (see :meth:`ibmonitor.explain.ExplainSet.compute`);
            names are kept as they are (they are npz keys, never file names).

        Returns
        -------
        path : Path
        """
        epoch = check_epoch(epoch, where="RunWriter.save_explanations")
        stored = {
            str(k): _as_numpy(v, what=f"The explanation {k!r}")
            for k, v in dict(arrays).items()
        }
        with self._lock:
            return self._write_npz(EXPLANATIONS_DIR, epoch, stored)

    # -- the epoch journal and the spool ------------------------------------

    @property
    def pending(self) -> List[int]:
        """Epochs of a resumed run whose spooled activations await estimation.

        Their scalars are stored; their information rows (and archives) are
        not. Estimate each from :meth:`read_pending`, write its rows, then
        call :meth:`end_epoch`.
        """
        return list(self._pending)

    def _journal(self, epoch: int, state: str, *, sync: bool) -> None:
        epoch = check_epoch(epoch, where=f"RunWriter.{state}")
        with self._lock:
            self._check_open()
            if self._epochs is None:
                self._epochs = CsvTable(self.path / EPOCHS_FILE, EPOCHS_COLUMNS)
            self._epochs.append([(epoch, state)], sync=sync)

    def begin_epoch(self, epoch: int) -> None:
        """Journal that a recorded epoch's writes begin (before its first row).

        With :meth:`end_epoch` it brackets the epoch's writes, so that a
        resumed run can tell an epoch cut by the process's death (begun, not
        done) and repair it. Epochs that only append one set of scalars need
        neither: one append is all or nothing.
        """
        self._journal(epoch, "begun", sync=False)

    def end_epoch(self, epoch: int) -> None:
        """Journal that every write of ``epoch`` is done; drop its spool.

        The journal line is fsynced with everything appended before it.
        """
        with self._lock:
            self.sync()
            self._journal(epoch, "done", sync=True)
            spool = self.path / PENDING_DIR / npz_name(epoch)
            if spool.is_file() and not spool.is_symlink():
                spool.unlink()
            if epoch in self._pending:
                self._pending.remove(epoch)

    def save_pending(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, Any]],
        *,
        labels: Optional[Mapping[str, Any]] = None,
        inputs: Optional[Mapping[str, Any]] = None,
    ) -> Path:
        """Spool a recorded epoch's activations until they are estimated.

        Written like :meth:`save_activations` into ``pending/``; removed by
        :meth:`end_epoch`. A process killed in between leaves the file, and
        a resumed run (:attr:`pending`) estimates the epoch from it.
        """
        return self._save_archive(
            PENDING_DIR,
            epoch,
            activations,
            labels=labels,
            inputs=inputs,
            float16=False,
            where="RunWriter.save_pending",
        )

    def read_pending(self, epoch: int) -> Dict[str, Dict[str, np.ndarray]]:
        """Return a spooled epoch's arrays: ``{probe: {layer: array}}``.

        Labels and flattened inputs appear under the keys ``"__y__"`` and
        ``"__x__"`` of each probe.
        """
        epoch = check_epoch(epoch, where="RunWriter.read_pending")
        file = self.path / PENDING_DIR / npz_name(epoch)
        refuse_link(file.parent)
        refuse_link(file)
        where = f"{str(file)!r} (spooled activations of epoch {epoch})"
        return read_archive(file, where)

    def update_config(self, **keys: Any) -> None:
        """Set top-level keys of ``run.json`` and rewrite it atomically.

        A writer from :meth:`append_to` reads ``run.json`` again first, so
        keys set meanwhile by someone else are kept.

        Raises
        ------
        InvalidParameterError
            A key the writer manages (``schema_version``, ``status``,
            ``started``, ``ended``).

        Examples
        --------
        >>> writer.update_config(skipped_epochs=[3, 5])  # doctest: +SKIP
        """
        bad = [k for k in _MANAGED_KEYS if k in keys]
        if bad:
            raise InvalidParameterError(
                f"RunWriter.update_config may not set {bad}; use close(status=...)."
            )
        with self._lock:
            self._check_open()
            if self._appending:
                self._config = read_json(self.path / RUN_FILE)
            self._config.update(keys)
            self._write_config()

    def close(self, status: str = "finished") -> None:
        """Close the tables, mark the run ``status`` in ``run.json``, unlock.

        A writer from :meth:`append_to` only closes its tables: the run's
        status stays as it was. Calling it again does nothing.

        Every step is tried even when an earlier one fails (a full disk):
        every file is closed, the status is written if the disk allows, the
        lock is released and the writer counts as closed; then the first
        failure is raised as one :class:`OSError`.

        Parameters
        ----------
        status : {"finished", "crashed"}, default="finished"

        Raises
        ------
        OSError
            Flushing, fsyncing or closing a table, or writing ``run.json``,
            failed (its ``errno`` is the first failure's, e.g. ``ENOSPC``).
        """
        if status not in ("finished", "crashed"):
            raise InvalidParameterError(
                f"The 'status' parameter of RunWriter.close must be one of "
                f"['crashed', 'finished']. Got {status!r} instead."
            )
        failures: List[Tuple[str, OSError]] = []
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name, table in (
                (INFORMATION_FILE, self._information),
                (SCALARS_FILE, self._scalars),
                (EPOCHS_FILE, self._epochs),
            ):
                if table is None:
                    continue
                try:
                    table.close()
                except OSError as err:
                    failures.append((f"closing {name}", err))
            if not self._appending:
                self._config.update(status=status, ended=_now())
                if failures:  # say in run.json what could not be made durable
                    self._config["errors"] = [
                        *(self._config.get("errors") or []),
                        *(
                            {
                                "epoch": None,
                                "where": step,
                                "message": f"{type(err).__name__}: {err}",
                            }
                            for step, err in failures
                        ),
                    ]
                try:
                    self._write_config()
                except OSError as err:
                    failures.append((f"writing status {status!r} to {RUN_FILE}", err))
            if self._run_lock is not None:
                self._run_lock.release()
        if failures:
            what = "; ".join(f"{step} ({err})" for step, err in failures)
            first = failures[0][1]
            raise OSError(
                first.errno,
                f"Closing the run {str(self.path)!r} failed: {what}. Every file "
                f"was closed and the run unlocked; rows written before the "
                f"failure may not all be on disk",
            ) from first
        if self._appending:
            logger.info("closed run %s (appended rows)", self.path)
        else:
            logger.info("closed run %s (%s)", self.path, status)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("finished" if exc_type is None else "crashed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        mode = ", appending" if self._appending else ""
        return f"RunWriter({str(self.path)!r}, {state}{mode})"
