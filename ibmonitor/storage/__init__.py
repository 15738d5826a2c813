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
    ``gap/loss``, ``hessian/top_eigenvalue``, ...). Same rules, except that
    ``RunWriter.append_scalars(..., sync=False)`` only flushes its rows to the
    operating system (they survive a killed process, not a power loss) until
    ``RunWriter.sync()`` or ``close()`` fsyncs them.
``activations/epoch_000042.npz``
    Optional (``store_activations=True``): one archive per recorded epoch,
    written atomically, with keys ``"<probe>/<layer>"`` -> float32 or float16
    array of shape (n_samples, n_units), ``"<probe>/__y__"`` -> labels and
    ``"<probe>/__x__"`` -> inputs flattened to (n_samples, n_features).
``epochs.csv``
    The journal, header ``epoch,state``: a recorded epoch's writes are
    bracketed by a ``begun`` and a ``done`` line (``RunWriter.begin_epoch``,
    ``RunWriter.end_epoch``), so that ``resume=True`` can repair an epoch cut
    mid-write. Absent in runs written before it existed (nothing to repair).
``pending/epoch_000042.npz``
    With a background worker: a recorded epoch's activations (same keys as
    above), spooled before ``on_epoch_end`` returns and removed once the
    epoch's rows are written; a resumed run estimates what is left.

Names (probes, layers, estimators, quantities, scalars) appear only inside CSV
cells and npz keys, never in file names, so no name can reach outside the run
directory. In both places ``%`` and control characters (newline, NUL, ...) are
percent-encoded (``%25``, ``%0A``, ...), and so is ``/`` inside a probe name in
npz keys; the readers decode them. Ordinary names (``layers.1``, ``fc1``,
``conv/relu``, unicode) are written verbatim.

Modules
-------
:mod:`ibmonitor.storage.files`
    Name encoding, path checks, fsync and atomic writes, ``run.json``
    reading and writing, the append-only CSV table.
:mod:`ibmonitor.storage.writer`
    :class:`RunWriter` (training, resuming, :meth:`RunWriter.append_to` for
    offline additions).
:mod:`ibmonitor.storage.reader`
    :class:`Run`, :class:`Runs`, :func:`load_run`, :func:`load_runs`.

Column names, the default probe and the long/wide conversion of the
information table come from :mod:`ibmonitor.schema`; summaries of a run are
:func:`ibmonitor.analysis.summary_table`. The store imports neither the
monitor, plotting nor the analysis functions.

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

from ..schema import INFORMATION_COLUMNS, SCALARS_COLUMNS
from .files import (
    ACTIVATIONS_DIR,
    INFORMATION_FILE,
    RUN_FILE,
    SCALARS_FILE,
    SCHEMA_VERSION,
    LinkError,
    RunLockedError,
    StorageWarning,
    run_directory,
    safe_name,
)
from .reader import Run, Runs, load_run, load_runs
from .writer import RunWriter

__all__ = [
    "ACTIVATIONS_DIR",
    "INFORMATION_COLUMNS",
    "INFORMATION_FILE",
    "RUN_FILE",
    "SCALARS_COLUMNS",
    "SCALARS_FILE",
    "SCHEMA_VERSION",
    "LinkError",
    "Run",
    "RunLockedError",
    "RunWriter",
    "Runs",
    "StorageWarning",
    "load_run",
    "load_runs",
    "run_directory",
    "safe_name",
]
