"""Where the monitor's estimation runs: in line, or in one background thread.

An executor runs jobs (plain callables) and forwards their errors; it knows
nothing of epochs or estimators. :class:`InlineExecutor` runs each job when
it is submitted (errors propagate to the caller). :class:`BackgroundExecutor`
runs jobs in order in a daemon thread; at most ``queue_size`` *bounded* jobs
(the recorded epochs, which hold activations) wait at once, so training
waits rather than memory growing. An error of a background job is kept and
handed over by :meth:`~BackgroundExecutor.take_errors`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional

from ._validation import check_param

__all__ = [
    "BackgroundExecutor",
    "Executor",
    "ExecutorBusy",
    "InlineExecutor",
    "make_executor",
]

logger = logging.getLogger(__name__)

Job = Callable[[], None]


class ExecutorBusy(RuntimeError):
    """The background worker did not free a slot (or finish) within its timeout."""


class Executor:
    """Protocol of the executors (see the module docstring)."""

    #: Whether jobs run in another thread.
    background = False

    def start(self) -> None:
        """Start accepting jobs."""

    def submit(self, job: Job, *, bounded: bool = False) -> None:
        """Run ``job`` (now, or queued)."""
        raise NotImplementedError

    def join(self) -> None:
        """Wait until every submitted job has run."""

    def take_errors(self) -> List[BaseException]:
        """Return and forget the errors of jobs that ran in the background."""
        return []

    def shutdown(self) -> None:
        """Run what is queued, then stop; calling it again does nothing."""

    def in_worker(self) -> bool:
        """Whether the calling thread is the executor's worker."""
        return False


class InlineExecutor(Executor):
    """Run every job at once in the calling thread; errors propagate."""

    def submit(self, job: Job, *, bounded: bool = False) -> None:
        """Run ``job`` now."""
        job()


class BackgroundExecutor(Executor):
    """Run jobs in order in one daemon thread.

    Parameters
    ----------
    queue_size : int, default=2
        Bounded jobs (recorded epochs) that may wait; :meth:`submit` of a
        further one blocks until one is done.
    timeout : float, optional
        Longest wait, in seconds, for a free slot in :meth:`submit` and for
        the worker to finish in :meth:`shutdown`; past it :meth:`submit`
        raises :class:`ExecutorBusy` (the job is not queued) and
        :meth:`shutdown` returns, leaving the (daemon) worker behind. ``None``
        waits as long as it takes. An estimator that never returns then
        cannot block training or ``close()`` for longer than ``timeout``.
    """

    background = True

    def __init__(self, queue_size: int = 2, *, timeout: Optional[float] = None) -> None:
        check_param(queue_size, "queue_size", "BackgroundExecutor", kind="int", low=1)
        if timeout is not None:
            check_param(
                timeout, "timeout", "BackgroundExecutor", low=0.0, low_closed=False
            )
        self.queue_size = int(queue_size)
        self.timeout = None if timeout is None else float(timeout)
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.queue_size)
        self._errors: List[BaseException] = []
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="ibmonitor-worker", daemon=True
            )
            self._thread.start()

    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job, *, bounded: bool = False) -> None:
        """Queue ``job``; a bounded job waits for a free slot first."""
        if not self.alive():
            raise RuntimeError("The background worker is not running.")
        if bounded and not self._slots.acquire(timeout=self.timeout):
            # training waits rather than memory growing, up to the timeout
            raise ExecutorBusy(
                f"the background worker has not finished a job in {self.timeout:g} s "
                f"({self.queue_size} recorded epochs waiting); this job is dropped"
            )
        self._queue.put((job, bounded))

    def join(self) -> None:
        """Wait for the queue to drain (at most ``timeout`` seconds).

        Raises
        ------
        ExecutorBusy
            The queue did not drain within ``timeout``.
        """
        if not self.alive():
            return
        if self.timeout is None:
            self._queue.join()
            return
        deadline = time.monotonic() + self.timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise ExecutorBusy(
                    f"the background worker has not finished its jobs in "
                    f"{self.timeout:g} s"
                )
            time.sleep(0.01)

    def take_errors(self) -> List[BaseException]:
        """Return and forget the errors of finished jobs, oldest first."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def defer_error(self, error: BaseException) -> None:
        """Keep an error found inside a job (handed over by :meth:`take_errors`)."""
        with self._lock:
            self._errors.append(error)

    def shutdown(self) -> None:
        """Run what is queued, then stop the worker (wait at most ``timeout``).

        Raises
        ------
        ExecutorBusy
            The worker was still running after ``timeout`` seconds; it is left
            behind (a daemon thread) with the jobs it had not finished.
        """
        if self._stopped:
            return
        self._stopped = True
        if self.alive():
            self._queue.put(None)
            assert self._thread is not None
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise ExecutorBusy(
                    f"the background worker was still running {self.timeout:g} s "
                    "after close; the epochs it had not estimated are lost"
                )

    def in_worker(self) -> bool:
        """Whether the calling thread is the worker."""
        return threading.current_thread() is self._thread

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                job, _ = item
                job()
            except BaseException as exc:  # handed over at the next call
                logger.debug("ibmonitor worker job failed: %r", exc)
                self.defer_error(exc)
            finally:
                if item is not None and item[1]:
                    self._slots.release()
                self._queue.task_done()


def make_executor(background: Any) -> Executor:
    """Return the executor for the monitor's ``background`` argument.

    ``False`` -> :class:`InlineExecutor`; ``True`` -> :class:`BackgroundExecutor`
    with its defaults; an :class:`Executor` object as it is.
    """
    if isinstance(background, Executor):
        return background
    if background is True:
        return BackgroundExecutor()
    if background is False or background is None:
        return InlineExecutor()
    from .exceptions import InvalidParameterError

    raise InvalidParameterError(
        "The 'background' parameter of InformationMonitor must be a bool or an "
        f"Executor (e.g. BackgroundExecutor(queue_size=4)). Got {background!r}."
    )
