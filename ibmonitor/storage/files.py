"""Files of the run store: names, paths, durable writes, JSON and CSV tables.

The low-level half of :mod:`ibmonitor.storage`, shared by its writer and its
readers. Nothing here knows about runs beyond the file names and the name
encoding of the on-disk schema (see :mod:`ibmonitor.storage`).

Durability
----------
:func:`atomic_write` writes a temporary file in the same folder, fsyncs it,
renames it over the target and fsyncs the folder, so a reader sees the old
file or the new one, never a mix, even after a power loss.
:class:`CsvTable` appends whole lines, flushes them to the operating system
and (unless asked not to) fsyncs them before returning.

Staying inside the run directory
--------------------------------
Nothing here writes through a symbolic link: files are opened with
``O_NOFOLLOW`` where the platform has it, and checked with ``lstat`` first
(:func:`refuse_link`, :class:`LinkError`). Readers follow links but say so
(:func:`warn_if_link`, a :class:`StorageWarning`).

One writer
----------
:class:`RunLock` is an exclusive lock on ``<run>/.lock`` (``fcntl.flock``,
``LOCK_EX | LOCK_NB``; ``msvcrt.locking`` on Windows), held for a writer's
life and released by the operating system when its process dies. A second
writer is refused with :class:`RunLockedError`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import socket
import uuid
import warnings
from numbers import Integral
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
)
from urllib.parse import unquote

import numpy as np

from ..exceptions import IBMonitorWarning, InvalidParameterError

__all__ = [
    "ACTIVATIONS_DIR",
    "ARCHIVE_DIRS",
    "EPOCHS_FILE",
    "EPOCH_FILE",
    "EXPLANATIONS_DIR",
    "INFORMATION_FILE",
    "INPUTS_KEY",
    "LABELS_KEY",
    "LOCK_FILE",
    "PENDING_DIR",
    "RUN_FILE",
    "SCALARS_FILE",
    "SCHEMA_VERSION",
    "TMP_MARK",
    "CsvTable",
    "LinkError",
    "PathLike",
    "RunLock",
    "RunLockedError",
    "StorageWarning",
    "activation_epochs",
    "atomic_write",
    "check_epoch",
    "check_path",
    "decode_name",
    "encode_name",
    "fsync_dir",
    "jsonable",
    "npz_name",
    "open_for_write",
    "pending_epochs",
    "read_json",
    "refuse_link",
    "remove_stale_temporaries",
    "run_directory",
    "safe_name",
    "to_json_bytes",
    "update_run_json",
    "warn_if_link",
    "write_json",
]

#: Version of the on-disk schema this version of ibmonitor writes (and reads up to).
SCHEMA_VERSION = 1
RUN_FILE = "run.json"
INFORMATION_FILE = "information.csv"
SCALARS_FILE = "scalars.csv"
ACTIVATIONS_DIR = "activations"
#: The epoch journal: one line per epoch whose writes are all done.
EPOCHS_FILE = "epochs.csv"
#: Activations of recorded epochs not yet estimated (a background worker's
#: queue, spooled so that a killed process loses none of them).
PENDING_DIR = "pending"
#: Explanations of recorded epochs (saliency, top activations, ...; see
#: :class:`ibmonitor.explain.ExplainSet`).
EXPLANATIONS_DIR = "explanations"
#: The folders of ``epoch_XXXXXX.npz`` archives the run store writes.
ARCHIVE_DIRS = (ACTIVATIONS_DIR, PENDING_DIR, EXPLANATIONS_DIR)
#: The lock file of the run's writer (holds its ``{"pid", "host"}`` as JSON).
LOCK_FILE = ".lock"
#: Key suffix of a probe's labels and flattened inputs in an activations archive.
LABELS_KEY = "__y__"
INPUTS_KEY = "__x__"
#: Marks temporary files of :func:`atomic_write` (``.<name>.tmp-<pid>-<uuid>``).
TMP_MARK = ".tmp-"
#: File names of activations archives (``epoch_000042.npz``).
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.npz$")

PathLike = Union[str, "os.PathLike[str]"]


class StorageWarning(IBMonitorWarning):
    """A run directory was read with a problem that did not stop reading.

    For example a partially written last line of a CSV table (a crash in the
    middle of a write, or a write in progress while reading a live run), or
    a file of the run that is a symbolic link (read through the link).
    """


class LinkError(OSError, ValueError):
    """The run store refused to write through a symbolic link.

    A subclass of both :class:`OSError` (``errno.ELOOP``) and
    :class:`ValueError`; its ``filename`` is the link.
    """


class RunLockedError(RuntimeError):
    """Another live writer holds the run directory (see :class:`RunLock`)."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def refuse_link(path: Path) -> None:
    """Raise :class:`LinkError` when ``path`` is a symbolic link.

    The run store never writes through a link: it could lead anywhere
    outside the run directory.
    """
    if os.path.islink(path):
        raise LinkError(
            errno.ELOOP,
            f"{str(path)!r} is a symbolic link; the run store never writes "
            f"through a link (it may lead outside the run directory). Replace "
            f"it with a regular file or write the run elsewhere",
            str(path),
        )


def warn_if_link(path: Path, *, stacklevel: int = 3) -> None:
    """Warn (:class:`StorageWarning`) when ``path`` is a symbolic link."""
    if os.path.islink(path):
        warnings.warn(
            f"{str(path)!r} is a symbolic link (to {os.readlink(path)!r}); "
            f"reading it through the link.",
            StorageWarning,
            stacklevel=stacklevel,
        )


def _open_nofollow(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link (:class:`LinkError`)."""
    refuse_link(path)
    try:
        return os.open(str(path), flags | _NOFOLLOW | _BINARY | _CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            refuse_link(path)
        raise


def open_for_write(path: Path, mode: str) -> io.BufferedIOBase:
    """Open ``path`` in binary ``mode`` (``"wb"``, ``"ab"``, ``"r+b"``, ``"xb"``).

    Never follows a symbolic link (:class:`LinkError`).
    """
    flags = {
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "r+b": os.O_RDWR,
        "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    }[mode]
    fd = _open_nofollow(path, flags)
    try:
        return os.fdopen(fd, "wb" if mode == "xb" else mode)
    except BaseException:
        os.close(fd)
        raise


# --------------------------------------------------------------------------
# names and paths


_ENCODE = re.compile(r"[%\x00-\x1f\x7f]")
_ENCODE_PROBE = re.compile(r"[%/\x00-\x1f\x7f]")


def encode_name(name: str, *, what: str = "name", probe: bool = False) -> str:
    """Percent-encode ``%`` and control characters (and ``/`` for probes).

    Parameters
    ----------
    name : str
        A probe, layer, estimator, quantity or scalar name.
    what : str, default="name"
        What the name is, for the error message (``"layer name"``).
    probe : bool, default=False
        Also encode ``/`` (probe names in npz keys, ``"<probe>/<layer>"``).

    Returns
    -------
    encoded : str
        ``name`` itself when it holds nothing to encode.

    Raises
    ------
    InvalidParameterError
        ``name`` is not a str, or cannot be encoded as UTF-8.
    """
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


def decode_name(text: str) -> str:
    """Undo :func:`encode_name`."""
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
    root_path = check_path(root, what="root")
    path = root_path / safe_name(name)
    resolved_root = root_path.resolve()
    if resolved_root not in path.resolve().parents:  # pragma: no cover - guard
        raise InvalidParameterError(
            f"The run name {name!r} leads outside of {str(root_path)!r}."
        )
    return path


def check_path(path: Any, *, what: str = "path") -> Path:
    """Return ``path`` as a Path, or raise naming ``what`` when it is not one.

    Raises
    ------
    InvalidParameterError
        ``path`` is bytes, not path-like, empty or holds a NUL character.
    """
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


#: Largest epoch the store writes and reads (int64, as the tables hold it).
MAX_EPOCH = 2**63 - 1


def check_epoch(epoch: Any, *, where: str) -> int:
    """Return ``epoch`` as an int, or raise naming the caller ``where``."""
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, Integral)
        or not 0 <= epoch <= MAX_EPOCH
    ):
        raise InvalidParameterError(
            f"The 'epoch' parameter of {where} must be an int in the range "
            f"[0, 2**63 - 1] (stored as int64). Got {epoch!r} instead."
        )
    return int(epoch)


def npz_name(epoch: int) -> str:
    """Return the file name of an epoch's activations (``epoch_000042.npz``)."""
    return f"epoch_{epoch:06d}.npz"


def activation_epochs(path: Path, folder_name: str = ACTIVATIONS_DIR) -> List[int]:
    """Return the epochs with an activations archive in run directory ``path``.

    ``folder_name`` is :data:`ACTIVATIONS_DIR` (stored activations) or
    :data:`PENDING_DIR` (spooled, not yet estimated).
    """
    folder = path / folder_name
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = EPOCH_FILE.match(p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(set(found))


def pending_epochs(path: Path) -> List[int]:
    """Return the epochs whose spooled activations await estimation."""
    return activation_epochs(path, PENDING_DIR)


# --------------------------------------------------------------------------
# durable writes


def fsync_dir(path: Path) -> None:
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


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write ``path`` via a temporary file in the same folder, fsync, rename.

    Parameters
    ----------
    path : Path
        The file to (re)write.
    write : callable
        ``write(fh)`` writes the content to the binary file ``fh``.
    """
    refuse_link(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open_for_write(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def remove_stale_temporaries(path: Path) -> List[Path]:
    """Remove temporaries of :func:`atomic_write` left in run directory ``path``.

    Only the run store's own patterns: ``.run.json.tmp-*`` and
    ``.<table>.csv.tmp-*`` in ``path`` and ``.epoch_XXXXXX.npz.tmp-*`` in its
    activations, pending and explanations folders (unless a folder is a
    link). Call it only while holding the run's :class:`RunLock`, so no live
    write owns them.

    Returns
    -------
    removed : list of Path
    """
    candidates = [
        p
        for name in (RUN_FILE, INFORMATION_FILE, SCALARS_FILE, EPOCHS_FILE)
        for p in path.glob(f".{name}{TMP_MARK}*")
        if p.name.startswith(f".{name}{TMP_MARK}")
    ]
    folders = [path / name for name in ARCHIVE_DIRS]
    for folder in folders:
        if folder.is_dir() and not folder.is_symlink():
            candidates += [
                p
                for p in folder.glob(f".epoch_*.npz{TMP_MARK}*")
                if EPOCH_FILE.match(p.name.split(TMP_MARK)[0][1:])
            ]
    removed = []
    for p in candidates:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    if removed:
        fsync_dir(path)
        for folder in folders:
            if any(p.parent == folder for p in removed):
                fsync_dir(folder)
    return removed


# --------------------------------------------------------------------------
# one writer per run directory


class RunLock:
    """An exclusive, non-blocking lock on ``<run>/.lock``, held until released.

    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on POSIX, ``msvcrt.locking`` on
    Windows. The operating system releases it when the holder's process dies,
    so a killed writer never blocks a resume. The lock file holds the
    holder's ``{"pid", "host"}`` so that a refused writer can name it; it is
    removed when the lock is released (a killed writer leaves it, harmlessly).

    Limitations: ``flock`` locks may not be shared between hosts on some
    network file systems (NFS before Linux 2.6.12 locks only locally); where
    neither ``fcntl`` nor ``msvcrt`` exists no lock is taken (with a
    :class:`StorageWarning`).

    Parameters
    ----------
    path : Path
        The run directory (must exist).

    Raises
    ------
    RunLockedError
        Another live writer (another process, or another writer in this
        process) holds the lock.
    LinkError
        ``.lock`` is a symbolic link.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path / LOCK_FILE
        for _ in range(100):
            fd = _open_nofollow(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _lock_fd(fd):
                    holder = _lock_holder(fd, path)
                    raise RunLockedError(
                        f"The run directory {str(path)!r} is being written by "
                        f"another live writer ({holder}); a run directory takes "
                        f"one writer at a time. Close that writer (or wait for "
                        f"its process to end) before resuming, overwriting or "
                        f"appending, or write to another directory."
                    )
                if _same_file(fd, self.file):
                    me = {"pid": os.getpid(), "host": socket.gethostname()}
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.ftruncate(fd, 0)
                    os.write(fd, to_json_bytes(me))
                    break
            except BaseException:
                os.close(fd)
                raise
            # The holder released and removed the file between our open and
            # our lock: the lock is on a deleted file; take the new one.
            os.close(fd)
        else:  # pragma: no cover - a storm of writers
            raise RunLockedError(f"Could not lock the run directory {str(path)!r}.")
        self._fd: Optional[int] = fd
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        """Whether the lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (again: nothing).

        The file is removed while still locked, so a writer that opened it
        meanwhile sees a deleted file and opens a new one.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() != self._pid:
            # A forked child shares the parent's lock: closing its copy of the
            # descriptor must neither unlock nor remove the parent's lock.
            os.close(fd)
            return
        try:
            if _same_file(fd, self.file):
                with contextlib.suppress(OSError):  # Windows: file in use
                    self.file.unlink()
            with contextlib.suppress(OSError):
                _unlock_fd(fd)
        finally:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether descriptor ``fd`` is still the file at ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _lock_fd(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False when someone holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    try:  # pragma: no cover - Windows
        import msvcrt
    except ImportError:  # pragma: no cover
        warnings.warn(
            "This platform has neither fcntl nor msvcrt: the run directory is "
            "not locked against a second writer.",
            StorageWarning,
            stacklevel=4,
        )
        return True
    try:  # pragma: no cover - Windows: lock a byte far past the holder record
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def _unlock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_holder(fd: int, path: Path) -> str:
    """Describe the live writer of run ``path`` (from ``.lock``, else run.json)."""
    holder: Any = None
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
    if not isinstance(holder, dict):
        with contextlib.suppress(OSError, ValueError):
            holder = read_json(path / RUN_FILE).get("writer")
    if isinstance(holder, dict) and "pid" in holder:
        return f"pid {holder.get('pid')} on host {holder.get('host')!r}"
    return "an unknown process"


# --------------------------------------------------------------------------
# JSON


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


def to_json_bytes(obj: Mapping[str, Any]) -> bytes:
    """Return ``obj`` as indented UTF-8 JSON (numpy values, sets, paths allowed)."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8")


def jsonable(obj: Any) -> Any:
    """Return ``obj`` as it will read back from JSON (tuples -> lists, ...)."""
    return json.loads(json.dumps(obj, default=_json_default))


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` to ``path`` as JSON, atomically (see :func:`atomic_write`)."""
    data = to_json_bytes(obj)
    atomic_write(path, lambda fh: fh.write(data))


def read_json(path: Path) -> Dict[str, Any]:
    """Read a JSON object from ``path``.

    Raises
    ------
    ValueError
        The file is not valid JSON or holds JSON that is not an object (the
        message names the file).
    """
    with open(path, encoding="utf-8") as fh:
        try:
            obj = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{str(path)!r} is not valid JSON ({exc}); expected a run "
                "configuration (a JSON object)."
            ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} is not a run configuration (not an object).")
    return obj


def update_run_json(
    path: Path, update: Callable[[Dict[str, Any]], None]
) -> Dict[str, Any]:
    """Read ``run.json`` of run directory ``path``, apply ``update``, rewrite it.

    Parameters
    ----------
    path : Path
        The run directory.
    update : callable
        ``update(config)`` changes the configuration in place.

    Returns
    -------
    config : dict
        The configuration as written.
    """
    config = read_json(path / RUN_FILE)
    update(config)
    write_json(path / RUN_FILE, config)
    return config


# --------------------------------------------------------------------------
# CSV tables


class CsvTable:
    """An append-only CSV file: header written once, appends flushed and fsynced.

    Opening it creates the file with its header, or cuts a partially written
    last line (with a :class:`StorageWarning`) so that appends start on a new
    line.

    Parameters
    ----------
    path : Path
        The CSV file.
    columns : sequence of str
        Its header.

    Raises
    ------
    ValueError
        The file exists and does not start with ``columns`` as its header.
    LinkError
        The file is a symbolic link (never written through).
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = tuple(columns)
        self._header = (",".join(self.columns) + "\n").encode("utf-8")
        refuse_link(path)
        self._repair()
        self._fh = open_for_write(path, "ab")
        self._unsynced = False

    def _repair(self) -> None:
        """Create the file with its header, or cut a partial last line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            with open_for_write(self.path, "wb") as fh:
                fh.write(self._header)
                fh.flush()
                os.fsync(fh.fileno())
            return
        with open_for_write(self.path, "r+b") as fh:
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fh.closed

    def append(self, rows: Iterable[Sequence[Any]], *, sync: bool = True) -> int:
        """Append rows as whole lines; return how many.

        Parameters
        ----------
        rows : iterable of sequence
            The fields of each line (already encoded and formatted).
        sync : bool, default=True
            Fsync before returning. With False the lines are flushed to the
            operating system (they survive the process being killed, not a
            power loss) until :meth:`sync` or :meth:`close`.

        Returns
        -------
        n : int
            Number of lines written.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
        if n:
            self._fh.write(buf.getvalue().encode("utf-8"))
            self._fh.flush()
            self._unsynced = True
            if sync:
                self.sync()
        return n

    def sync(self) -> None:
        """Fsync the lines appended with ``sync=False`` (nothing if none)."""
        if self._unsynced and not self._fh.closed:
            os.fsync(self._fh.fileno())
            self._unsynced = False

    def close(self) -> None:
        """Flush, fsync and close the file (again: nothing).

        The file is closed even when flushing or fsyncing fails (a full
        disk); the first error is raised afterwards.
        """
        if self._fh.closed:
            return
        error: Optional[OSError] = None
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:
            error = err
        try:
            self._fh.close()  # closes the descriptor even when its flush fails
        except OSError as err:
            error = error or err
        if error is not None:
            raise error
