"""Readers of the run store: :func:`load_run`, :func:`load_runs` and the tables.

Reading never unpickles or executes anything: ``run.json`` is JSON, the
tables are CSV and activations are ``.npz`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import errno
import glob as _glob
import io
import json
import logging
import math
import os
import re
import socket
import warnings
import zipfile
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

from ..exceptions import InvalidParameterError
from ..schema import INFORMATION_COLUMNS, SCALARS_COLUMNS, information_wide
from .files import (
    ACTIVATIONS_DIR,
    EXPLANATIONS_DIR,
    INFORMATION_FILE,
    INPUTS_KEY,
    LABELS_KEY,
    MAX_EPOCH,
    RUN_FILE,
    SCALARS_FILE,
    SCHEMA_VERSION,
    PathLike,
    StorageWarning,
    activation_epochs,
    check_epoch,
    check_path,
    decode_name,
    npz_name,
    read_json,
    warn_if_link,
)

__all__ = ["Run", "Runs", "load_run", "load_runs", "read_archive", "read_table"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# tables


def _split_rows(
    body: bytes, n_fields: int
) -> Tuple[List[Tuple[int, List[str]]], List[str]]:
    """Split complete lines into fields.

    Returns the ``(line number, fields)`` rows and what was skipped.
    """
    lines = body.decode("utf-8", errors="replace").split("\n")[:-1]
    out: List[Tuple[int, List[str]]] = []
    problems: List[str] = []
    bad = 0
    for number, text in enumerate(lines, start=1):
        # Names never hold a newline (it is percent-encoded), so one line is
        # one record; only lines with quotes need the csv parser.
        try:
            fields = next(csv.reader([text]), []) if '"' in text else text.split(",")
        except csv.Error as exc:  # e.g. a carriage return inside a quoted field
            bad += 1
            if bad <= 3:
                problems.append(f"line {number} ({exc})")
            continue
        if number == 1 and len(fields) == n_fields and fields[0] == "epoch":
            continue
        if len(fields) != n_fields:
            bad += 1
            if bad <= 3:
                problems.append(f"line {number} with {len(fields)} fields")
            continue
        out.append((number, fields))
    if bad > 3:
        problems.append(f"{bad - 3} more such lines")
    return out, problems


def _parse_rows(
    rows: List[Tuple[int, List[str]]], columns: Sequence[str]
) -> Tuple[List[Tuple], List[int]]:
    """Parse epoch (int64), names (decoded) and value (float).

    Returns the records and the numbers of the lines skipped: an epoch that is
    not an int64 or a value that is not a float.
    """
    out = []
    bad: List[int] = []
    names = range(1, len(columns) - 1)
    for number, fields in rows:
        try:
            epoch = int(fields[0])
            value = float(fields[-1])
        except ValueError:
            bad.append(number)
            continue
        if not -MAX_EPOCH - 1 <= epoch <= MAX_EPOCH:  # int64
            bad.append(number)
            continue
        out.append((epoch, *(decode_name(fields[i]) for i in names), value))
    return out, bad


def _frame(records: List[Tuple], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    frame["epoch"] = frame["epoch"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    for col in columns[1:-1]:
        frame[col] = frame[col].astype(object)
    return frame


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
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError):
        return None
    for col in columns[1:-1]:
        encoded = out[col].str.contains("%", regex=False)
        if encoded.any():
            out.loc[encoded, col] = out.loc[encoded, col].map(decode_name)
    return out


def read_table(
    path: Path, columns: Sequence[str], *, warn: bool = True, live: bool = False
) -> pd.DataFrame:
    """Read a run-store CSV table, skipping (with a warning) broken lines.

    A last line without its newline is a write cut short (or in progress);
    lines with the wrong number of fields, or an unreadable epoch or value,
    are skipped too.

    Parameters
    ----------
    path : Path
        The CSV file (a missing file reads as an empty table).
    columns : sequence of str
        Its columns: ``epoch``, the name columns, ``value``.
    warn : bool, default=True
        Warn (:class:`StorageWarning`) about skipped lines.
    live : bool, default=False
        The writer is still running: log a partial last line (a write in
        progress) instead of warning about it.

    Returns
    -------
    frame : DataFrame
        ``epoch`` int64, names (decoded) object, ``value`` float64.
    """
    if warn:
        warn_if_link(path, stacklevel=3)
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
            shown = ", ".join(map(str, bad[:3])) + (" ..." if len(bad) > 3 else "")
            problems.append(
                f"{len(bad)} line(s) with an unreadable epoch (an int64) or "
                f"value (line {shown})"
            )
        frame = _frame(records, columns)
    if problems and warn:
        warnings.warn(
            f"Skipped {', '.join(problems)} in {str(path)!r} (expected "
            f"{len(columns)} fields per line: {','.join(columns)}).",
            StorageWarning,
            stacklevel=3,
        )
    return frame


#: Default limit on the decompressed size of one epoch's activation file.
MAX_ARRAY_BYTES = 4 * 2**30


class _TooLarge(ValueError):
    """An activation file declares more than ``max_bytes`` of arrays."""


def _check_npz_sizes(file: Path, limit: int, where: str) -> None:
    """Refuse an ``.npz`` whose arrays declare more than ``limit`` bytes.

    The sizes come from each member's ``.npy`` header (shape and dtype) and
    from the zip directory (uncompressed size), read without decompressing
    more than the headers.
    """
    total = 0
    with zipfile.ZipFile(file) as zf:
        for info in zf.infolist():
            declared = int(info.file_size)
            if info.filename.endswith(".npy"):
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                declared = max(declared, math.prod(shape) * dtype.itemsize)
            total += declared
            if total > limit:
                raise _TooLarge(
                    f"Refusing to load {where}: its arrays declare {total} bytes "
                    f"once decompressed (member {info.filename!r}), more than "
                    f"max_bytes={limit}. Pass a larger max_bytes if the file is "
                    "trusted."
                )


def read_archive(
    file: Path, where: str, limit: int = MAX_ARRAY_BYTES
) -> Dict[str, Dict[str, np.ndarray]]:
    """Read an activations archive as ``{probe: {layer: array}}`` (no pickle).

    Labels and inputs appear under the layer names ``__y__`` and ``__x__``.

    Parameters
    ----------
    file : Path
        An ``epoch_XXXXXX.npz`` written by the run store.
    where : str
        What the file is, for error messages (file and epoch).
    limit : int
        Largest total of decompressed bytes accepted (from the headers).

    Raises
    ------
    ValueError
        The file is unreadable or declares more than ``limit`` bytes.
    """
    out: Dict[str, Dict[str, np.ndarray]] = {}
    try:
        _check_npz_sizes(file, limit, where)
        with np.load(file, allow_pickle=False) as archive:
            for key in archive.files:
                probe, sep, layer = key.partition("/")
                if not sep:
                    continue
                out.setdefault(decode_name(probe), {})[decode_name(layer)] = archive[
                    key
                ]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        if isinstance(exc, _TooLarge):
            raise
        raise ValueError(f"Cannot read {where}: {exc}") from exc
    return out


def _writer_alive(writer: Any) -> bool:
    """Whether the writer process recorded in run.json may still run.

    Returns True when unknown (another host, no record).
    """
    if not isinstance(writer, Mapping):
        return True
    pid, host = writer.get("pid"), writer.get("host")
    if (
        not isinstance(pid, int)
        or isinstance(pid, bool)
        or not 0 < pid < 2**31
        or host != socket.gethostname()
    ):
        return True  # no usable record (an out-of-range pid cannot be checked)
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


# --------------------------------------------------------------------------
# one run


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
        self.path = check_path(path, what="run path")
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
        warn_if_link(self.path / RUN_FILE, stacklevel=5)
        return read_json(self.path / RUN_FILE)

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
        if not isinstance(status, str):
            raise ValueError(
                f"{str(self.path / RUN_FILE)!r} has a 'status' of {status!r}; "
                "expected one of 'running', 'finished', 'crashed'."
            )
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
        return read_table(
            self.path / INFORMATION_FILE, INFORMATION_COLUMNS, live=self._live()
        )

    @property
    def information(self) -> pd.DataFrame:
        """Information estimates, wide (the last row wins on duplicates).

        Columns: epoch, probe, layer, estimator, i_xt, i_ty, then estimator
        extras (bits); sorted by epoch, then probe, layer and estimator in the
        order of the configuration.
        """
        return self._cached(
            "information",
            self.path / INFORMATION_FILE,
            lambda: information_wide(self.information_long, self.config),
        ).copy()

    @property
    def scalars(self) -> pd.DataFrame:
        """Scalars: epoch, name, value (sorted by epoch, stable)."""
        return self._cached(
            "scalars", self.path / SCALARS_FILE, self._load_scalars
        ).copy()

    def _load_scalars(self) -> pd.DataFrame:
        frame = read_table(self.path / SCALARS_FILE, SCALARS_COLUMNS, live=self._live())
        return frame.sort_values("epoch", kind="stable").reset_index(drop=True)

    @property
    def activation_epochs(self) -> List[int]:
        """Epochs with stored activations, sorted."""
        return activation_epochs(self.path)

    @property
    def explanation_epochs(self) -> List[int]:
        """Epochs with stored explanations (:class:`ibmonitor.explain.ExplainSet`)."""
        return activation_epochs(self.path, EXPLANATIONS_DIR)

    def explanations(self, epoch: int) -> Dict[str, np.ndarray]:
        """Return one epoch's stored explanations as named arrays.

        Names as in :meth:`ibmonitor.explain.ExplainSet.compute`:
        ``"saliency"`` (shaped like the explained inputs), ``"saliency_target"``,
        ``"top/<layer>"`` (rows ``unit, rank, index, activation``),
        ``"top/<layer>/inputs"``, ``"features/<layer>"``,
        ``"features/<layer>/units"`` and ``"influence"`` (rows ``test_index,
        train_index, influence``).

        Raises
        ------
        InvalidParameterError
            No explanations at ``epoch`` (the message lists those stored).
        ValueError
            The file is unreadable (names the file and epoch).
        """
        return self._read_explanations(epoch)

    def _read_explanations(
        self, epoch: int, wanted: Optional[Callable[[str], bool]] = None
    ) -> Dict[str, np.ndarray]:
        """Read an explanations archive, only the keys ``wanted`` accepts."""
        file = self._stored_file(EXPLANATIONS_DIR, epoch, "explanations")
        where = f"{str(file)!r} (explanations of epoch {epoch})"
        try:
            _check_npz_sizes(file, MAX_ARRAY_BYTES, where)
            with np.load(file, allow_pickle=False) as archive:
                return {
                    key: archive[key]
                    for key in archive.files
                    if wanted is None or wanted(key)
                }
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"Cannot read {where}: {exc}") from exc

    def _stored_file(self, folder: str, epoch: int, what: str) -> Path:
        """Return the archive of ``epoch`` in ``folder`` (an error when missing)."""
        epoch = check_epoch(epoch, where=f"Run.{what}")
        file = self.path / folder / npz_name(epoch)
        if not file.is_file():
            stored = activation_epochs(self.path, folder)
            raise InvalidParameterError(
                f"The run {self.name!r} has no stored {what} at epoch {epoch}. "
                f"Epochs with {what}: {stored}."
            )
        warn_if_link(file.parent, stacklevel=5)
        warn_if_link(file, stacklevel=5)
        return file

    def _explanation_table(self, prefix: str, columns: Sequence[str]) -> pd.DataFrame:
        def wanted(key: str) -> bool:  # "top/<layer>", not "top/<layer>/inputs"
            return key == prefix or (
                key.startswith(prefix + "/") and key.count("/") == 1
            )

        frames = []
        for epoch in self.explanation_epochs:
            for key, array in self._read_explanations(epoch, wanted).items():
                frame = pd.DataFrame(np.asarray(array), columns=list(columns))
                frame.insert(0, "epoch", epoch)
                if key != prefix:
                    frame.insert(0, "layer", decode_name(key.split("/", 1)[1]))
                frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["epoch", *columns])
        out = pd.concat(frames, ignore_index=True)
        for col in ("unit", "rank", "index", "test_index", "train_index"):
            if col in out:
                out[col] = out[col].astype("int64")
        return out

    @property
    def top_activations(self) -> pd.DataFrame:
        """The stored top-activating probe inputs of every unit, over epochs.

        Columns ``layer, epoch, unit, rank, index, activation`` (``index`` into
        the probe set searched; ``activation`` pooled over space for conv
        layers). Empty when the run stored none.
        """
        return self._explanation_table("top", ("unit", "rank", "index", "activation"))

    @property
    def influence(self) -> pd.DataFrame:
        """The stored influence of training points, over epochs.

        Columns ``epoch, test_index, train_index, influence`` (the predicted
        change of the test loss when the training point is removed; see
        :func:`ibmonitor.explain.influence`). Empty when the run stored none.
        """
        return self._explanation_table(
            "influence", ("test_index", "train_index", "influence")
        )

    def _arrays(
        self, epoch: int, max_bytes: Optional[int] = None
    ) -> Dict[str, Dict[str, np.ndarray]]:
        file = self._stored_file(ACTIVATIONS_DIR, epoch, "activations")
        limit = MAX_ARRAY_BYTES if max_bytes is None else int(max_bytes)
        where = f"{str(file)!r} (activations of epoch {epoch})"
        return read_archive(file, where, limit)

    def activations(
        self, epoch: int, *, max_bytes: Optional[int] = None
    ) -> Dict[str, Dict[str, np.ndarray]]:
        """Return the stored activations of ``epoch``: ``{probe: {layer: array}}``.

        Arrays keep their stored dtype (float32, or float16 if stored so).

        ``max_bytes`` (default :data:`MAX_ARRAY_BYTES`, 4 GiB) bounds the
        decompressed size of the file's arrays, read from their ``.npy``
        headers before anything is decompressed: a larger file raises
        ``ValueError`` naming the file and epoch (a small compressed file may
        declare huge arrays). Pass a larger value to read such a file.
        """
        return {
            probe: {k: v for k, v in d.items() if k not in (LABELS_KEY, INPUTS_KEY)}
            for probe, d in self._arrays(epoch, max_bytes).items()
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

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, name={self.name!r}, status={self.status!r})"


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
        ``.inputs(epoch)``. :func:`ibmonitor.analysis.summary_table` summarises it.

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


# --------------------------------------------------------------------------
# several runs


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
    path = check_path(item, what="run path or pattern")
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
