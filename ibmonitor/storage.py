"""The run store: a crash-safe, append-only run directory, and its readers.

A monitored training run writes one directory. Nothing in it is ever
unpickled or executed when it is read; everything is JSON, CSV or ``.npz``
read with ``allow_pickle=False``.

On-disk schema, version 1
-------------------------
``run.json``
    The configuration, as one JSON object, rewritten atomically (temporary
    file, ``fsync``, ``os.replace``, ``fsync`` of the directory) on every change::

        {"schema_version": 1,
         "name": "my-run",                    # the directory name by default
         "status": "running" | "finished" | "crashed",
         "started": "2024-05-01T12:00:00+02:00",
         "ended": null | "<iso time>",
         "versions": {"ibmonitor": ..., "torch": ..., "python": ..., "numpy": ...},
         "seed": null | int,
         "layers": {layer: {"shape": [...], "n_units": int, "module": "Tanh"}},
         "estimators": [{"name": "binned", "params": {...}}, ...],
         "probes": {probe: {"n_samples": int}},
         "schedule": {...} | null,
         "skipped_epochs": [...],
         "writer": {"pid": int, "host": str},   # the process writing the run
         "resumed": ["<iso time>", ...],        # present once a run was resumed
         ...}                                   # any key the monitor adds

    A run whose status is still ``"running"`` while its writer process is gone
    crashed (it was killed or lost power); :attr:`Run.status` reports
    ``"crashed"`` for such a run when the writer ran on this host.
``information.csv``
    Tidy, long, append-only; header ``epoch,probe,layer,estimator,quantity,value``.
    ``quantity`` is ``i_xt``, ``i_ty`` or an estimator extra (``h_t``, ...);
    values are in bits, written with Python's ``repr`` (exact round trip,
    ``nan``/``inf`` included). Every append is flushed and fsynced before it
    returns. When the same (epoch, probe, layer, estimator, quantity) appears
    twice (a resumed epoch, an estimator recomputed), the last row wins.
``scalars.csv``
    Tidy, long, append-only; header ``epoch,name,value`` (``train_loss``,
    ``gap/loss``, ``hessian/top_eigenvalue``, ...). Same rules.
``activations/epoch_000042.npz``
    Optional (``store_activations=True``): one archive per recorded epoch,
    written atomically, with keys ``"<probe>/<layer>"`` -> float32 or float16
    array of shape (n_samples, n_units), ``"<probe>/__y__"`` -> labels and
    ``"<probe>/__x__"`` -> inputs flattened to (n_samples, n_features).

Names (probes, layers, estimators, quantities, scalars) appear only inside CSV
cells and npz keys, never in file names, so no name can reach outside the run
directory. In both places ``%`` and control characters (newline, NUL, ...) are
percent-encoded (``%25``, ``%0A``, ...), and so is ``/`` inside a probe name in
npz keys; the readers decode them. Ordinary names (``layers.1``, ``fc1``,
``conv/relu``, unicode) are written verbatim.

A reader skips a last line without its newline (a write cut short by a
crash, with a :class:`StorageWarning`; or a write in progress while reading a
live run, silently) and, with a warning, any line with the wrong number of
fields or an unreadable epoch or value.

Examples
--------
>>> from ibmonitor.storage import RunWriter, load_run
>>> with RunWriter("runs/a", {"seed": 0}) as writer:  # doctest: +SKIP
...     writer.append_information([{"epoch": 0, "probe": "default",
...         "layer": "fc1", "estimator": "binned", "i_xt": 3.2, "i_ty": 0.7}])
...     writer.append_scalars(0, {"train_loss": 0.69})
>>> load_run("runs/a").information  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob as _glob
import io
import json
import logging
import math
import os
import platform
import re
import socket
import sys
import threading
import uuid
import warnings
from datetime import datetime
from numbers import Integral, Real
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import unquote

import numpy as np
import pandas as pd

from .exceptions import IBMonitorWarning, InvalidParameterError

__all__ = [
    "ACTIVATIONS_DIR",
    "INFORMATION_COLUMNS",
    "INFORMATION_FILE",
    "RUN_FILE",
    "SCALARS_COLUMNS",
    "SCALARS_FILE",
    "SCHEMA_VERSION",
    "Run",
    "RunWriter",
    "Runs",
    "StorageWarning",
    "load_run",
    "load_runs",
    "run_directory",
    "safe_name",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
INFORMATION_FILE = "information.csv"
SCALARS_FILE = "scalars.csv"
ACTIVATIONS_DIR = "activations"
INFORMATION_COLUMNS = ("epoch", "probe", "layer", "estimator", "quantity", "value")
SCALARS_COLUMNS = ("epoch", "name", "value")
LABELS_KEY = "__y__"
INPUTS_KEY = "__x__"
STATUSES = ("running", "finished", "crashed")
# Keys of run.json that only the writer sets.
_MANAGED_KEYS = ("schema_version", "status", "started", "ended")
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npz$")
_TMP_MARK = ".tmp-"

PathLike = Union[str, "os.PathLike[str]"]


class StorageWarning(IBMonitorWarning):
    """A run directory was read with a problem that did not stop reading.

    For example a partially written last line of a CSV table (a crash in the
    middle of a write, or a write in progress while reading a live run).
    """


# --------------------------------------------------------------------------
# names and paths


_ENCODE = re.compile(r"[%\x00-\x1f\x7f]")
_ENCODE_PROBE = re.compile(r"[%/\x00-\x1f\x7f]")


def _encode_name(name: str, *, what: str = "name", probe: bool = False) -> str:
    """Percent-encode ``%``, control characters (and ``/`` for probes)."""
    if not isinstance(name, str):
        raise InvalidParameterError(
            f"The {what} must be a str. Got {name!r} of type {type(name).__name__}."
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidParameterError(
            f"The {what} {name!r} cannot be encoded as UTF-8: {err}."
        ) from None
    pattern = _ENCODE_PROBE if probe else _ENCODE
    return pattern.sub(lambda m: f"%{ord(m.group(0)):02X}", name)


def _decode_name(text: str) -> str:
    return unquote(text) if "%" in text else text


def safe_name(name: str, *, max_length: int = 120) -> str:
    """Turn any run name into a single, harmless directory name.

    Keeps letters (unicode included), digits, ``.``, ``_`` and ``-``; replaces
    every other run of characters (``/``, ``..``, NUL, spaces, ...) with ``_``;
    never returns ``""``, ``"."``, ``".."`` or a name starting with a dot.

    Parameters
    ----------
    name : str
        The name to clean.
    max_length : int, default=120
        Longest result, in characters.

    Returns
    -------
    safe : str

    Examples
    --------
    >>> safe_name("../../etc/passwd")
    'etc_passwd'
    >>> safe_name("tanh net, lr=0.1")
    'tanh_net_lr_0.1'
    """
    text = re.sub(r"[^\w.\-]+", "_", str(name), flags=re.UNICODE)
    text = re.sub(r"\.{2,}", "_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._-")
    return text[:max_length] or "run"


def run_directory(root: PathLike, name: str) -> Path:
    """Return the directory for run ``name`` under ``root``, never outside it.

    Parameters
    ----------
    root : str or path
        Folder holding runs (``"runs"``).
    name : str
        Any run name; it is cleaned with :func:`safe_name`.

    Returns
    -------
    path : Path
        ``root / safe_name(name)``.
    """
    root_path = _check_path(root, what="root")
    path = root_path / safe_name(name)
    resolved_root = root_path.resolve()
    if resolved_root not in path.resolve().parents:  # pragma: no cover - guard
        raise InvalidParameterError(
            f"The run name {name!r} leads outside of {str(root_path)!r}."
        )
    return path


def _check_path(path: Any, *, what: str = "path") -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError(
            f"The {what} must be a str or os.PathLike. Got {type(path).__name__}."
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidParameterError(f"The {what} must be a text path. Got {text!r}.")
    if text == "" or "\x00" in text:
        raise InvalidParameterError(
            f"The {what} must be a non-empty path without NUL characters. Got {text!r}."
        )
    return Path(text)


# --------------------------------------------------------------------------
# low-level writes


def _fsync_dir(path: Path) -> None:
    """Fsync a directory so that a rename in it survives a power loss."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` via a temporary file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch tensors
        return obj.tolist()
    return str(obj)


def _to_json_bytes(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8")


def _jsonable(obj: Any) -> Any:
    """Return ``obj`` as it will read back from JSON (tuples -> lists, ...)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    data = _to_json_bytes(obj)
    _atomic_write(path, lambda fh: fh.write(data))


def _read_json(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        obj = json.load(fh)
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} is not a run configuration (not an object).")
    return obj


def _update_run_json(path: Path, update: Callable[[Dict[str, Any]], None]) -> Dict:
    """Read ``run.json`` of run directory ``path``, apply ``update``, rewrite."""
    config = _read_json(path / RUN_FILE)
    update(config)
    _write_json(path / RUN_FILE, config)
    return config


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
        from . import __version__ as ib_version
    except ImportError:  # pragma: no cover
        ib_version = None
    return {
        "ibmonitor": ib_version,
        "torch": pkg("torch"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _check_epoch(epoch: Any, *, where: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, Integral) or epoch < 0:
        raise InvalidParameterError(
            f"The 'epoch' parameter of {where} must be an int in the range "
            f"[0, inf). Got {epoch!r} instead."
        )
    return int(epoch)


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


class _CsvTable:
    """An append-only CSV file: header written once, every append fsynced."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        self._header = (",".join(self.columns) + "\n").encode("utf-8")
        self._repair()
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for appends

    def _repair(self) -> None:
        """Create the file with its header, or cut a partial last line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            with open(self.path, "wb") as fh:
                fh.write(self._header)
                fh.flush()
                os.fsync(fh.fileno())
            return
        with open(self.path, "r+b") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                if not data.startswith(self._header):
                    raise ValueError(
                        f"{str(self.path)!r} does not start with the header "
                        f"{self._header.decode().strip()!r}; it was not written "
                        f"by this version of ibmonitor."
                    )
                return
            cut = data.rfind(b"\n") + 1
            warnings.warn(
                f"{str(self.path)!r} ended with a partially written line "
                f"({len(data) - cut} bytes); removed it before appending.",
                StorageWarning,
                stacklevel=4,
            )
            fh.truncate(cut)
            if cut == 0:
                fh.seek(0)
                fh.write(self._header)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, rows: Iterable[Sequence[Any]]) -> int:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
        if n:
            self._fh.write(buf.getvalue().encode("utf-8"))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return n

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


def _format_value(value: float) -> str:
    return repr(float(value))


def _information_records(rows: Iterable[Mapping[str, Any]]) -> List[Tuple]:
    """Turn wide information rows into long CSV records.

    Rows are ``{epoch, probe, layer, estimator, i_xt, i_ty, **extras}``; they
    are validated and their names encoded.
    """
    where = "RunWriter.append_information"
    out: List[Tuple] = []
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
        epoch = _check_epoch(row["epoch"], where=where)
        probe = _encode_name(row.get("probe", "default"), what="probe name")
        layer = _encode_name(row["layer"], what="layer name")
        estimator = _encode_name(row["estimator"], what="estimator name")
        quantities = ["i_xt", "i_ty"] + [
            k
            for k in row
            if k not in ("epoch", "probe", "layer", "estimator", "i_xt", "i_ty")
        ]
        for q in quantities:
            value = _check_value(row.get(q), name=q, where=where)
            out.append(
                (
                    epoch,
                    probe,
                    layer,
                    estimator,
                    _encode_name(q, what="quantity name"),
                    _format_value(value),
                )
            )
    return out


def _as_numpy(a: Any, *, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor on any device
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise InvalidParameterError(
            f"{what} must be a numeric array. Got dtype {arr.dtype}."
        )
    return arr


def _npz_name(epoch: int) -> str:
    return f"epoch_{epoch:06d}.npz"


def _own_files(path: Path) -> List[Path]:
    """List the files the run store wrote in ``path`` (and nothing else)."""
    found = [path / n for n in (RUN_FILE, INFORMATION_FILE, SCALARS_FILE)]
    found = [p for p in found if p.is_file() or p.is_symlink()]
    found += [
        p
        for p in path.glob(f".*{_TMP_MARK}*")
        if p.name.split(_TMP_MARK)[0][1:] in (RUN_FILE,)
    ]
    act = path / ACTIVATIONS_DIR
    if act.is_dir() and not act.is_symlink():
        for p in act.iterdir():
            name = p.name
            if _EPOCH_FILE.match(name) or (
                name.startswith(".epoch_") and _TMP_MARK in name
            ):
                found.append(p)
    return found


def _max_epoch_in(path: Path, columns: Sequence[str]) -> Optional[int]:
    frame = _read_table(path, columns, warn=False)
    return int(frame["epoch"].max()) if len(frame) else None


# --------------------------------------------------------------------------
# the writer


class RunWriter:
    """Write one run directory: ``run.json``, the CSV tables, activations.

    Every method returns only once its data is flushed and fsynced, so a
    process killed at any moment leaves a readable run with every completed
    write. Safe to call from several threads.

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
        self.path = _check_path(path, what="run path")
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
        self.path.mkdir(parents=True, exist_ok=True)
        existing = _own_files(self.path)
        has_run = (self.path / RUN_FILE).exists()
        if existing and not (resume or overwrite):
            raise FileExistsError(
                f"The run directory {str(self.path)!r} already holds a run. Pass "
                f"resume=True to continue it or overwrite=True to replace it."
            )
        if overwrite:
            for p in existing:
                p.unlink()
            act = self.path / ACTIVATIONS_DIR
            if act.is_dir() and not act.is_symlink() and not any(act.iterdir()):
                act.rmdir()
            _fsync_dir(self.path)
            has_run = False
        writer_info = {"pid": os.getpid(), "host": socket.gethostname()}
        if resume and has_run:
            stored = _read_json(self.path / RUN_FILE)
            version = stored.get("schema_version")
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise ValueError(
                    f"The run in {str(self.path)!r} has schema_version {version!r}; "
                    f"this version of ibmonitor writes {SCHEMA_VERSION}."
                )
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
        # Tables first, then run.json: a run.json always has its tables.
        self._information = _CsvTable(self.path / INFORMATION_FILE, INFORMATION_COLUMNS)
        self._scalars = _CsvTable(self.path / SCALARS_FILE, SCALARS_COLUMNS)
        self._write_config()
        self._last_epoch = self._find_last_epoch() if resume else None
        logger.info("writing run %s", self.path)

    # -- state ------------------------------------------------------------

    @property
    def config(self) -> Dict[str, Any]:
        """A copy of the configuration as stored in ``run.json``."""
        with self._lock:
            return json.loads(_to_json_bytes(self._config))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

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
        candidates += _activation_epochs(self.path)
        candidates = [c for c in candidates if c is not None]
        return max(candidates) if candidates else None

    def _seen(self, epoch: int) -> None:
        if self._last_epoch is None or epoch > self._last_epoch:
            self._last_epoch = epoch

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"The RunWriter of {str(self.path)!r} is closed.")

    def _write_config(self) -> None:
        _write_json(self.path / RUN_FILE, self._config)

    # -- writes -----------------------------------------------------------

    def append_information(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append information estimates (long format), flushed and fsynced.

        Parameters
        ----------
        rows : iterable of dict
            Each ``{"epoch", "probe", "layer", "estimator", "i_xt", "i_ty",
            **extras}`` (``probe`` defaults to ``"default"``; ``None`` values
            are stored as NaN).

        Returns
        -------
        n : int
            Number of CSV lines written.
        """
        records = _information_records(rows)
        with self._lock:
            self._check_open()
            n = self._information.append(records)
            for r in records:
                self._seen(r[0])
        return n

    def append_scalars(self, epoch: int, values: Mapping[str, Any]) -> int:
        """Append scalars of one epoch (``{"train_loss": 0.3, ...}``), fsynced.

        Returns
        -------
        n : int
            Number of CSV lines written.
        """
        where = "RunWriter.append_scalars"
        epoch = _check_epoch(epoch, where=where)
        if not isinstance(values, Mapping):
            raise InvalidParameterError(
                f"The 'values' parameter of {where} must be a dict. Got {values!r}."
            )
        records = [
            (
                epoch,
                _encode_name(k, what="scalar name"),
                _format_value(_check_value(v, name=k, where=where)),
            )
            for k, v in values.items()
        ]
        with self._lock:
            self._check_open()
            n = self._scalars.append(records)
            if n:
                self._seen(epoch)
        return n

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
        where = "RunWriter.save_activations"
        epoch = _check_epoch(epoch, where=where)
        arrays: Dict[str, np.ndarray] = {}
        fdtype = np.float16 if float16 else np.float32

        def floating(a: Any, what: str) -> np.ndarray:
            arr = _as_numpy(a, what=what)
            return arr.astype(fdtype, copy=False) if arr.dtype.kind == "f" else arr

        for probe, layers in dict(activations).items():
            p = _encode_name(probe, what="probe name", probe=True)
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
                arrays[f"{p}/{_encode_name(layer, what='layer name')}"] = arr
        for extra, key, what in (
            (labels, LABELS_KEY, "labels"),
            (inputs, INPUTS_KEY, "inputs"),
        ):
            for probe, a in dict(extra or {}).items():
                p = _encode_name(probe, what="probe name", probe=True)
                arr = _as_numpy(a, what=f"The {what} of probe {probe!r}")
                if key == INPUTS_KEY:
                    arr = floating(arr.reshape(arr.shape[0], -1), what)
                arrays[f"{p}/{key}"] = arr
        with self._lock:
            self._check_open()
            folder = self.path / ACTIVATIONS_DIR
            if folder.is_symlink():
                raise ValueError(
                    f"{str(folder)!r} is a symbolic link; refusing to write there."
                )
            created = not folder.exists()
            folder.mkdir(exist_ok=True)
            if created:
                _fsync_dir(self.path)
            target = folder / _npz_name(epoch)
            _atomic_write(target, lambda fh: np.savez(fh, **arrays))
            self._seen(epoch)
        return target

    def update_config(self, **keys: Any) -> None:
        """Set top-level keys of ``run.json`` and rewrite it atomically.

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
            self._config.update(keys)
            self._write_config()

    def close(self, status: str = "finished") -> None:
        """Close the tables and mark the run ``status`` in ``run.json``.

        Calling it again does nothing.

        Parameters
        ----------
        status : {"finished", "crashed"}, default="finished"
        """
        if status not in ("finished", "crashed"):
            raise InvalidParameterError(
                f"The 'status' parameter of RunWriter.close must be one of "
                f"['crashed', 'finished']. Got {status!r} instead."
            )
        with self._lock:
            if self._closed:
                return
            self._information.close()
            self._scalars.close()
            self._config.update(status=status, ended=_now())
            self._write_config()
            self._closed = True
        logger.info("closed run %s (%s)", self.path, status)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("finished" if exc_type is None else "crashed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RunWriter({str(self.path)!r}, {state})"


# --------------------------------------------------------------------------
# readers


def _split_rows(body: bytes, n_fields: int) -> Tuple[List[List[str]], List[str]]:
    """Split complete lines into fields; return the rows and what was skipped."""
    lines = body.decode("utf-8", errors="replace").split("\n")[:-1]
    out: List[List[str]] = []
    problems: List[str] = []
    bad = 0
    for number, text in enumerate(lines, start=1):
        # Names never hold a newline (it is percent-encoded), so one line is
        # one record; only lines with quotes need the csv parser.
        fields = next(csv.reader([text]), []) if '"' in text else text.split(",")
        if number == 1 and len(fields) == n_fields and fields[0] == "epoch":
            continue
        if len(fields) != n_fields:
            bad += 1
            if bad <= 3:
                problems.append(f"line {number} with {len(fields)} fields")
            continue
        out.append(fields)
    if bad > 3:
        problems.append(f"{bad - 3} more such lines")
    return out, problems


def _parse_rows(
    rows: List[List[str]], columns: Sequence[str]
) -> Tuple[List[Tuple], int]:
    """Parse epoch (int), names (decoded) and value (float); count bad rows."""
    out = []
    bad = 0
    names = range(1, len(columns) - 1)
    for fields in rows:
        try:
            epoch = int(fields[0])
            value = float(fields[-1])
        except ValueError:
            bad += 1
            continue
        out.append((epoch, *(_decode_name(fields[i]) for i in names), value))
    return out, bad


def _fast_frame(body: bytes, columns: Sequence[str]) -> Optional[pd.DataFrame]:
    """Parse a clean table with pandas' C parser; ``None`` when it is not clean."""
    header = (",".join(columns) + "\n").encode()
    if not body.startswith(header):
        return None
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            dtype=str,
            keep_default_na=False,
            na_values=[],
            engine="c",
            on_bad_lines="error",
        )
        if list(frame.columns) != list(columns) or len(frame) != body.count(b"\n") - 1:
            return None
        out = pd.DataFrame(
            {
                "epoch": np.array(frame["epoch"].tolist(), dtype=np.int64),
                **{
                    c: pd.Series(frame[c].tolist(), dtype=object) for c in columns[1:-1]
                },
                "value": np.array(frame["value"].tolist(), dtype=np.float64),
            }
        )
    except (ValueError, TypeError, pd.errors.ParserError):
        return None
    for col in columns[1:-1]:
        encoded = out[col].str.contains("%", regex=False)
        if encoded.any():
            out.loc[encoded, col] = out.loc[encoded, col].map(_decode_name)
    return out


def _read_table(
    path: Path, columns: Sequence[str], *, warn: bool = True, live: bool = False
) -> pd.DataFrame:
    """Read a run-store CSV table, skipping (with a warning) broken lines.

    A last line without its newline is a write cut short (or in progress);
    lines with the wrong number of fields, or an unreadable epoch or value,
    are skipped too. ``live=True`` (the writer is still running) logs the
    partial last line instead of warning: it is a write in progress.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    cut = data.rfind(b"\n") + 1
    problems: List[str] = []
    if cut < len(data):
        tail = f"a partially written last line ({len(data) - cut} bytes)"
        if live:
            logger.debug("%s: skipped %s (a write in progress)", path, tail)
        else:
            problems.append(tail)
    body = data[:cut]
    frame = _fast_frame(body, columns) if body else None
    if frame is None:
        rows, more = _split_rows(body, len(columns))
        problems += more
        records, bad = _parse_rows(rows, columns)
        if bad:
            problems.append(f"{bad} line(s) with an unreadable epoch or value")
        frame = _frame(records, columns)
    if problems and warn:
        warnings.warn(
            f"Skipped {', '.join(problems)} in {str(path)!r} (expected "
            f"{len(columns)} fields per line: {','.join(columns)}).",
            StorageWarning,
            stacklevel=3,
        )
    return frame


def _activation_epochs(path: Path) -> List[int]:
    folder = path / ACTIVATIONS_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _EPOCH_FILE.match(p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(set(found))


def _order_map(names: Iterable[Any]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for n in names:
        if isinstance(n, str) and n not in out:
            out[n] = len(out)
    return out


def _sort_frame(
    frame: pd.DataFrame,
    config: Mapping[str, Any],
    appearance: Optional[pd.DataFrame] = None,
) -> pd.DataFrame:
    """Sort by epoch, then probe, layer and estimator in config order.

    Names missing from the config come after, in their order of appearance in
    ``appearance`` (default ``frame``).
    """
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
        first_seen = _order_map(work[col])
        if appearance is not None:
            first_seen = _order_map([*appearance[col], *first_seen])
        rank = {n: order.get(n, len(order) + first_seen[n]) for n in first_seen}
        work[f"__{col}"] = work[col].map(rank)
        keys.append(f"__{col}")
    work = work.sort_values(keys, kind="stable")
    return work.drop(columns=keys[1:]).reset_index(drop=True)


def _wide(long: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Pivot the long information table to epoch, probe, layer, estimator, ..."""
    index = ["epoch", "probe", "layer", "estimator"]
    if long.empty:
        frame = pd.DataFrame(
            {
                "epoch": pd.Series(dtype="int64"),
                "probe": pd.Series(dtype=object),
                "layer": pd.Series(dtype=object),
                "estimator": pd.Series(dtype=object),
                "i_xt": pd.Series(dtype="float64"),
                "i_ty": pd.Series(dtype="float64"),
            }
        )
        return frame
    quantities = ["i_xt", "i_ty"] + [
        q for q in dict.fromkeys(long["quantity"]) if q not in ("i_xt", "i_ty")
    ]
    long = long.drop_duplicates(subset=[*index, "quantity"], keep="last")
    wide = long.pivot(index=index, columns="quantity", values="value")
    wide = wide.reindex(columns=quantities)
    wide.columns.name = None
    wide = wide.reset_index()
    wide["epoch"] = wide["epoch"].astype("int64")
    return _sort_frame(wide, config, appearance=long)


class Run:
    """A run directory read from disk (possibly while it is being written).

    Use :func:`load_run`. Every attribute reads the files again when they
    changed since the last access, so one ``Run`` follows a live run.

    Attributes
    ----------
    path : Path
        The run directory.
    name : str
        ``config["name"]``, or the directory name.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = _check_path(path, what="run path")
        if not (self.path / RUN_FILE).is_file():
            raise FileNotFoundError(
                f"{str(self.path)!r} is not a run directory (no {RUN_FILE})."
            )
        self._cache: Dict[str, Tuple[Any, Any]] = {}
        config = self.config
        version = config.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"The run in {str(self.path)!r} has schema_version {version!r}; "
                f"this version of ibmonitor reads up to {SCHEMA_VERSION}."
            )

    # -- cached, file-change aware reads -----------------------------------

    def _cached(self, key: str, file: Path, load: Callable[[], Any]) -> Any:
        try:
            st = file.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = load()
        self._cache[key] = (stamp, value)
        return value

    def reload(self) -> Run:
        """Forget cached tables so that the next access reads the files."""
        self._cache.clear()
        return self

    @property
    def config(self) -> Dict[str, Any]:
        """The content of ``run.json`` (a fresh copy)."""
        cfg = self._cached("config", self.path / RUN_FILE, self._load_config)
        return json.loads(json.dumps(cfg))

    def _load_config(self) -> Dict[str, Any]:
        return _read_json(self.path / RUN_FILE)

    @property
    def name(self) -> str:
        """The run's name (``config["name"]``, else the directory name)."""
        name = self.config.get("name")
        return name if isinstance(name, str) and name else self.path.resolve().name

    @property
    def status(self) -> str:
        """``"running"``, ``"finished"`` or ``"crashed"``.

        A run stored as ``"running"`` whose writer process (recorded in
        ``config["writer"]``) no longer exists on this host is reported as
        ``"crashed"``; ``config["status"]`` keeps the stored value.
        """
        config = self.config
        status = config.get("status", "running")
        if status == "running" and not _writer_alive(config.get("writer")):
            return "crashed"
        return status

    def _live(self) -> bool:
        """Whether a writer process may still be appending to this run."""
        return self.status == "running"

    @property
    def information_long(self) -> pd.DataFrame:
        """The tidy information table, as stored (duplicates kept).

        Columns: epoch, probe, layer, estimator, quantity, value.
        """
        return self._cached(
            "information_long", self.path / INFORMATION_FILE, self._load_long
        ).copy()

    def _load_long(self) -> pd.DataFrame:
        return _read_table(
            self.path / INFORMATION_FILE, INFORMATION_COLUMNS, live=self._live()
        )

    @property
    def information(self) -> pd.DataFrame:
        """Information estimates, wide (the last row wins on duplicates).

        Columns: epoch, probe, layer, estimator, i_xt, i_ty, then estimator
        extras; sorted by epoch, then probe, layer and estimator in the order
        of the configuration.
        """
        return self._cached(
            "information",
            self.path / INFORMATION_FILE,
            lambda: _wide(self.information_long, self.config),
        ).copy()

    @property
    def scalars(self) -> pd.DataFrame:
        """Scalars: epoch, name, value (sorted by epoch, stable)."""
        return self._cached(
            "scalars", self.path / SCALARS_FILE, self._load_scalars
        ).copy()

    def _load_scalars(self) -> pd.DataFrame:
        frame = _read_table(
            self.path / SCALARS_FILE, SCALARS_COLUMNS, live=self._live()
        )
        return frame.sort_values("epoch", kind="stable").reset_index(drop=True)

    @property
    def activation_epochs(self) -> List[int]:
        """Epochs with stored activations, sorted."""
        return _activation_epochs(self.path)

    def _arrays(self, epoch: int) -> Dict[str, Dict[str, np.ndarray]]:
        epoch = _check_epoch(epoch, where="Run.activations")
        file = self.path / ACTIVATIONS_DIR / _npz_name(epoch)
        if not file.is_file():
            raise InvalidParameterError(
                f"The run {self.name!r} has no stored activations at epoch {epoch}. "
                f"Epochs with activations: {self.activation_epochs}."
            )
        out: Dict[str, Dict[str, np.ndarray]] = {}
        with np.load(file, allow_pickle=False) as archive:
            for key in archive.files:
                probe, sep, layer = key.partition("/")
                if not sep:
                    continue
                out.setdefault(_decode_name(probe), {})[_decode_name(layer)] = archive[
                    key
                ]
        return out

    def activations(self, epoch: int) -> Dict[str, Dict[str, np.ndarray]]:
        """Return the stored activations of ``epoch``: ``{probe: {layer: array}}``.

        Arrays keep their stored dtype (float32, or float16 if stored so).
        """
        return {
            probe: {k: v for k, v in d.items() if k not in (LABELS_KEY, INPUTS_KEY)}
            for probe, d in self._arrays(epoch).items()
        }

    def labels(self, epoch: int) -> Dict[str, np.ndarray]:
        """Return the stored probe labels of ``epoch``: ``{probe: array}``."""
        return {
            p: d[LABELS_KEY] for p, d in self._arrays(epoch).items() if LABELS_KEY in d
        }

    def inputs(self, epoch: int) -> Dict[str, np.ndarray]:
        """Return the stored flattened probe inputs of ``epoch``: ``{probe: array}``."""
        return {
            p: d[INPUTS_KEY] for p, d in self._arrays(epoch).items() if INPUTS_KEY in d
        }

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        """Return :func:`ibmonitor.analysis.summary_table` of this run."""
        from .analysis import summary_table

        return summary_table(self, **kwargs)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, name={self.name!r}, status={self.status!r})"


def _frame(records: List[Tuple], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    for col in columns[1:-1]:
        frame[col] = frame[col].astype(object)
    return frame


def _writer_alive(writer: Any) -> bool:
    """Whether the writer process recorded in run.json may still run.

    Returns True when unknown (another host, no record).
    """
    if not isinstance(writer, Mapping):
        return True
    pid, host = writer.get("pid"), writer.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as err:  # pragma: no cover - e.g. Windows
        return err.errno != errno.ESRCH
    return True


def load_run(path: PathLike) -> Run:
    """Read a run directory (finished, crashed or still being written).

    Parameters
    ----------
    path : str or path
        The run directory (holding ``run.json``).

    Returns
    -------
    run : Run
        With ``.config``, ``.information`` (wide), ``.scalars``,
        ``.activation_epochs``, ``.activations(epoch)``, ``.labels(epoch)``,
        ``.inputs(epoch)``.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a run directory.

    Examples
    --------
    >>> run = load_run("runs/my-run")  # doctest: +SKIP
    >>> run.information.query("estimator == 'binned'")  # doctest: +SKIP
    """
    return Run(path)


class Runs:
    """Several runs read together; the tables carry a leading ``run`` column.

    Returned by :func:`load_runs`. Iterate over it for the :class:`Run`
    objects; index it by position or run name.

    Attributes
    ----------
    runs : list of Run
    names : list of str
        Unique names (the directory names, suffixed ``-2``, ``-3``, ... when two
        runs share one).
    """

    def __init__(self, runs: Sequence[Run], names: Optional[Sequence[str]] = None):
        self.runs = list(runs)
        self.names = list(names) if names is not None else _unique_names(self.runs)

    def _concat(self, attr: str) -> pd.DataFrame:
        frames = []
        for name, run in zip(self.names, self.runs):
            frame = getattr(run, attr)
            frame.insert(0, "run", name)
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True, sort=False)
        out["run"] = out["run"].astype(object)
        return out

    @property
    def information(self) -> pd.DataFrame:
        """Wide information tables of every run, with a ``run`` column."""
        return self._concat("information")

    def _live(self) -> bool:
        """Whether a writer process may still be appending to this run."""
        return self.status == "running"

    @property
    def information_long(self) -> pd.DataFrame:
        """Tidy information tables of every run, with a ``run`` column."""
        return self._concat("information_long")

    @property
    def scalars(self) -> pd.DataFrame:
        """Scalars of every run, with a ``run`` column."""
        return self._concat("scalars")

    @property
    def config(self) -> Dict[str, Dict[str, Any]]:
        """``{run name: config}``."""
        return {n: r.config for n, r in zip(self.names, self.runs)}

    @property
    def configs(self) -> Dict[str, Dict[str, Any]]:
        """Alias of :attr:`config` (``{run name: config}``)."""
        return self.config

    def summary(self, **kwargs: Any) -> pd.DataFrame:
        """Summary tables of every run, with a ``run`` column."""
        from .analysis import summary_table

        return summary_table(self, **kwargs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, key: Union[int, str]) -> Run:
        if isinstance(key, str):
            try:
                return self.runs[self.names.index(key)]
            except ValueError:
                raise KeyError(f"No run named {key!r}. Runs: {self.names}.") from None
        return self.runs[key]

    def __repr__(self) -> str:
        return f"Runs({self.names!r})"


def _unique_names(runs: Sequence[Run]) -> List[str]:
    names: List[str] = []
    taken = set()
    for run in runs:
        base = run.path.resolve().name or run.name
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


_GLOB_CHARS = re.compile(r"[*?\[]")


def _expand(item: Any) -> List[Path]:
    path = _check_path(item, what="run path or pattern")
    text = os.fspath(path)
    if isinstance(item, str) and _GLOB_CHARS.search(text):
        matches = sorted(Path(p) for p in _glob.glob(text))
        return [p for p in matches if (p / RUN_FILE).is_file()]
    if (path / RUN_FILE).is_file():
        return [path]
    if path.is_dir():  # a folder of runs
        children = sorted(
            p for p in path.iterdir() if p.is_dir() and (p / RUN_FILE).is_file()
        )
        if children:
            return children
    raise FileNotFoundError(
        f"{text!r} is neither a run directory nor a folder of runs."
    )


def load_runs(paths_or_glob: Any) -> Runs:
    """Read several runs and concatenate their tables with a ``run`` column.

    Parameters
    ----------
    paths_or_glob : str, path, Run or a list of them
        Run directories, folders holding run directories, glob patterns
        (``"runs/lr-*"``) or already loaded runs.

    Returns
    -------
    runs : Runs
        ``.information``, ``.scalars`` (with ``run`` first), ``.config``
        (``{name: config}``), and the :class:`Run` objects.

    Raises
    ------
    FileNotFoundError
        Nothing matched.

    Examples
    --------
    >>> runs = load_runs("runs/*")  # doctest: +SKIP
    >>> runs.information.groupby(["run", "layer"]).i_xt.max()  # doctest: +SKIP
    """
    if isinstance(paths_or_glob, (str, os.PathLike, Run)):
        items = [paths_or_glob]
    else:
        items = list(paths_or_glob)
    runs: List[Run] = []
    seen = set()
    for item in items:
        if isinstance(item, Run):
            runs.append(item)
            continue
        for path in _expand(item):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(Run(path))
    if not runs:
        raise FileNotFoundError(f"No run directories match {paths_or_glob!r}.")
    return Runs(runs)
