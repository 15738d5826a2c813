"""When to record: small functions that map an epoch to "record or not".

A schedule is a predicate ``f(epoch) -> bool`` over 0-based epochs. Every
function here returns one, except :func:`log_spaced_epochs`, which returns the
list of epochs of Shwartz-Ziv & Tishby's log-spaced schedule, and
:func:`make_schedule`, which turns whatever a user passed as ``schedule=`` into
a predicate plus the list of planned epochs (when that list is known).

>>> from ibmonitor import schedules
>>> schedules.log_spaced_epochs(100, 10)
[0, 1, 3, 6, 11, 20, 34, 58, 99]
>>> every_5 = schedules.every_n_epochs(5)
>>> [e for e in range(12) if every_5(e)]
[0, 5, 10]
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from ._validation import check_param
from .exceptions import InvalidParameterError

__all__ = [
    "DEFAULT_LOG_POINTS",
    "PlannedSchedule",
    "at_epochs",
    "every_n_epochs",
    "log_spaced_epochs",
    "make_schedule",
    "open_log_schedule",
]

#: Number of points of ``schedule="log"`` when ``total_epochs`` is known.
DEFAULT_LOG_POINTS = 50
#: Points per doubling of the epoch count of the open-ended log schedule.
OPEN_LOG_POINTS_PER_OCTAVE = 8


class PlannedSchedule(NamedTuple):
    """What :func:`make_schedule` returns.

    Attributes
    ----------
    predicate : callable
        ``predicate(epoch) -> bool``: whether to record at ``epoch`` (0-based).
    planned : list of int or None
        The epochs the schedule will record, sorted, when they are known
        (``None`` for an open-ended schedule or a user callable).
    config : dict
        A JSON-serialisable description for ``run.json``.
    """

    predicate: Callable[[int], bool]
    planned: Optional[List[int]]
    config: Dict[str, Any]

    def __call__(self, epoch: int) -> bool:
        """Return ``predicate(epoch)``."""
        return bool(self.predicate(epoch))


def every_n_epochs(n: int, *, offset: int = 0) -> Callable[[int], bool]:
    """Record every ``n`` epochs, starting at ``offset``.

    Parameters
    ----------
    n : int
        Interval in epochs; at least 1.
    offset : int, default=0
        First recorded epoch.

    Returns
    -------
    predicate : callable
        ``predicate(epoch)`` is true for ``offset, offset + n, offset + 2n, ...``.

    Examples
    --------
    >>> f = every_n_epochs(3)
    >>> [e for e in range(10) if f(e)]
    [0, 3, 6, 9]
    """
    check_param(n, "n", "every_n_epochs", kind="int", low=1)
    check_param(offset, "offset", "every_n_epochs", kind="int", low=0)
    n, offset = int(n), int(offset)

    def predicate(epoch: int) -> bool:
        return epoch >= offset and (epoch - offset) % n == 0

    predicate.__name__ = f"every_{n}_epochs"
    return predicate


def at_epochs(epochs: Sequence[int]) -> Callable[[int], bool]:
    """Record at an explicit list of epochs.

    Parameters
    ----------
    epochs : sequence of int
        Non-negative 0-based epochs; order and duplicates do not matter.

    Returns
    -------
    predicate : callable
        ``predicate(epoch)`` is true exactly for the listed epochs.

    Examples
    --------
    >>> f = at_epochs([0, 10, 3])
    >>> [e for e in range(12) if f(e)]
    [0, 3, 10]
    """
    chosen = frozenset(_check_epoch_list(epochs, "at_epochs"))

    def predicate(epoch: int) -> bool:
        return epoch in chosen

    predicate.__name__ = "at_epochs"
    return predicate


def log_spaced_epochs(total_epochs: int, n: int = DEFAULT_LOG_POINTS) -> List[int]:
    """Return the log-spaced epochs of Shwartz-Ziv & Tishby (2017).

    ``unique(logspace(0, log2(total_epochs), n, base=2)).astype(int) - 1``:
    dense early in training, where the information plane moves fastest, and
    sparse later. Both the first (0) and the last (``total_epochs - 1``)
    epochs are included.

    Parameters
    ----------
    total_epochs : int
        Number of epochs of the training run; at least 1.
    n : int, default=50
        Number of log-spaced points before rounding; the result has at most
        ``n`` epochs (fewer where neighbouring points round to the same epoch).

    Returns
    -------
    epochs : list of int
        Sorted, distinct 0-based epochs in ``[0, total_epochs - 1]``.

    Notes
    -----
    In floating point, ``2 ** log2(T)`` is often a hair below ``T`` (for
    ``T = 100`` it is ``99.99999999999997``), so the literal formula would
    drop the last epoch. The points are therefore rounded down after adding a
    relative tolerance of ``1e-9``, which gives the formula's value in exact
    arithmetic.

    References
    ----------
    .. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep
       neural networks via information", arXiv:1703.00810, 2017.

    Examples
    --------
    >>> log_spaced_epochs(1000, 8)
    [0, 1, 6, 18, 50, 137, 371, 999]
    """
    check_param(total_epochs, "total_epochs", "log_spaced_epochs", kind="int", low=1)
    check_param(n, "n", "log_spaced_epochs", kind="int", low=1)
    points = np.logspace(0.0, np.log2(int(total_epochs)), int(n), base=2.0)
    points = np.floor(points * (1.0 + 1e-9)).astype(np.int64)
    epochs = np.unique(np.clip(points, 1, int(total_epochs))) - 1
    return [int(e) for e in epochs]


def open_log_schedule(
    points_per_octave: int = OPEN_LOG_POINTS_PER_OCTAVE,
) -> Callable[[int], bool]:
    """Log-spaced recording when the number of epochs is not known in advance.

    Records ``floor(2 ** (k / points_per_octave)) - 1`` for ``k = 0, 1, ...``:
    every epoch early on, then about ``points_per_octave`` epochs per doubling
    of the epoch count.

    Parameters
    ----------
    points_per_octave : int, default=8
        Points per doubling of the epoch count; at least 1.

    Returns
    -------
    predicate : callable

    Examples
    --------
    >>> f = open_log_schedule(2)
    >>> [e for e in range(40) if f(e)]
    [0, 1, 3, 4, 7, 10, 15, 21, 31]
    """
    check_param(
        points_per_octave, "points_per_octave", "open_log_schedule", kind="int", low=1
    )
    per = int(points_per_octave)

    def predicate(epoch: int) -> bool:
        if epoch < 0:
            return False
        target = epoch + 1
        # smallest k with floor(2 ** (k / per)) >= target, then check equality
        k = max(int(np.floor(np.log2(target) * per)) - 1, 0)
        while True:
            value = int(np.floor(2.0 ** (k / per) * (1.0 + 1e-12)))
            if value >= target:
                return value == target
            k += 1

    predicate.__name__ = f"open_log_schedule_{per}"
    return predicate


def make_schedule(spec: Any, total_epochs: Optional[int] = None) -> PlannedSchedule:
    """Turn a ``schedule=`` argument into a predicate and the planned epochs.

    Parameters
    ----------
    spec : {"log", "log:N", "all"} or int or sequence of int or callable
        ``"log"``: :func:`log_spaced_epochs` with 50 points when
        ``total_epochs`` is known, otherwise :func:`open_log_schedule`;
        ``"log:N"``: the same with ``N`` points; ``"all"``: every epoch; an
        int ``N``: every ``N`` epochs (:func:`every_n_epochs`); a sequence of
        ints: those epochs (:func:`at_epochs`); a callable ``f(epoch) ->
        bool``: used as is.
    total_epochs : int, optional
        Number of epochs of the run, when known.

    Returns
    -------
    schedule : PlannedSchedule
        ``(predicate, planned, config)``; ``planned`` is ``None`` when not
        known in advance.

    Raises
    ------
    InvalidParameterError
        An unknown string, a non-positive interval, negative epochs.

    Examples
    --------
    >>> s = make_schedule(4, total_epochs=10)
    >>> s.planned
    [0, 4, 8]
    >>> s(4), s(5)
    (True, False)
    """
    if total_epochs is not None:
        check_param(total_epochs, "total_epochs", "make_schedule", kind="int", low=1)
        total_epochs = int(total_epochs)
    config: Dict[str, Any] = {"total_epochs": total_epochs}

    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return _finish(every_n_epochs(1), total_epochs, {**config, "kind": "all"})
        if text == "log" or text.startswith("log:"):
            n = DEFAULT_LOG_POINTS
            if text.startswith("log:"):
                try:
                    n = int(text[4:])
                except ValueError:
                    n = 0
                if n < 1:
                    raise InvalidParameterError(
                        "The 'schedule' parameter must be 'log', 'log:N' with N a "
                        f"positive int, 'all', an int, a list of epochs or a "
                        f"callable. Got {spec!r} instead."
                    )
            if total_epochs is None:
                per = OPEN_LOG_POINTS_PER_OCTAVE
                return PlannedSchedule(
                    open_log_schedule(per),
                    None,
                    {**config, "kind": "log", "points_per_octave": per},
                )
            planned = log_spaced_epochs(total_epochs, n)
            chosen = frozenset(planned)
            return PlannedSchedule(
                chosen.__contains__,
                planned,
                {**config, "kind": "log", "n_points": n, "epochs": planned},
            )
        raise InvalidParameterError(
            "The 'schedule' parameter must be 'log', 'log:N', 'all', an int, a list "
            f"of epochs or a callable. Got {spec!r} instead."
        )
    if isinstance(spec, Integral) and not isinstance(spec, bool):
        check_param(spec, "schedule", "make_schedule", kind="int", low=1)
        return _finish(
            every_n_epochs(int(spec)), total_epochs, {**config, "every": int(spec)}
        )
    if callable(spec):
        name = getattr(spec, "__name__", type(spec).__name__)
        return PlannedSchedule(spec, None, {**config, "kind": "callable", "name": name})
    if isinstance(spec, (Sequence, np.ndarray, set, frozenset)):
        epochs = sorted(set(_check_epoch_list(spec, "make_schedule")))
        chosen = frozenset(epochs)
        return PlannedSchedule(
            chosen.__contains__, epochs, {**config, "kind": "list", "epochs": epochs}
        )
    raise InvalidParameterError(
        "The 'schedule' parameter must be 'log', 'log:N', 'all', an int, a list of "
        f"epochs or a callable. Got {spec!r} instead."
    )


def _finish(
    predicate: Callable[[int], bool],
    total_epochs: Optional[int],
    config: Dict[str, Any],
) -> PlannedSchedule:
    config.setdefault("kind", "every")
    planned = None
    if total_epochs is not None:
        planned = [e for e in range(total_epochs) if predicate(e)]
    return PlannedSchedule(predicate, planned, config)


def _check_epoch_list(epochs: Any, owner: str) -> List[int]:
    values = list(np.asarray(list(epochs)).ravel()) if len(epochs) else []
    out = []
    for value in values:
        is_int = isinstance(value, (Integral, np.integer)) and not isinstance(
            value, (bool, np.bool_)
        )
        if is_int and int(value) >= 0:
            out.append(int(value))
            continue
        raise InvalidParameterError(
            f"The epochs given to {owner} must be non-negative ints. "
            f"Got {value!r} instead."
        )
    if not out:
        raise InvalidParameterError(
            f"The epochs given to {owner} are empty; give at least one epoch."
        )
    return out
