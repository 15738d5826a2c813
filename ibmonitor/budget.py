"""The overhead budget: how much of the training time the monitor may cost.

:class:`OverheadBudget` keeps two clocks, the training time between the
monitor's calls and the time spent inside them, and decides whether a
scheduled epoch fits: it records the epoch only if the monitor's cost so far,
plus the cost of its last recording, plus as much again kept for the last
epoch (which is always recorded, as is the first scheduled epoch), stays
within ``fraction`` of the training time so far. It knows nothing of models
or estimators; the monitor asks it and writes down what it skipped.

>>> budget = OverheadBudget(0.25, last_epoch=99)
>>> budget.add_training(4.0); budget.note_recording(0.5)
>>> budget.decide(1)
(True, 'first scheduled epoch')
>>> budget.note_scheduled(); budget.add_monitor(0.5)
>>> budget.decide(2)[0]  # 0.5 + 0.5 + 0.5 > 0.25 x 4.0
False
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["OverheadBudget"]


class OverheadBudget:
    """Time the monitor against training and decide which scheduled epochs fit.

    Parameters
    ----------
    fraction : float or None
        Share of the training time the monitor may cost (``0.25``); ``None``
        keeps every scheduled epoch (the clocks still run).
    last_epoch : int, optional
        The last epoch of training (always recorded, and room is kept for it).

    Attributes
    ----------
    skipped : list of dict
        ``{"epoch", "reason"}`` of every scheduled epoch skipped.
    """

    def __init__(self, fraction: Optional[float], last_epoch: Optional[int]) -> None:
        self.fraction = None if fraction is None else float(fraction)
        self.last_epoch = last_epoch
        self.train_time = 0.0
        self.monitor_time = 0.0
        self.last_cost = 0.0
        self.n_scheduled = 0
        self.skipped: List[Dict[str, Any]] = []

    def add_training(self, seconds: float) -> None:
        """Count ``seconds`` of training (the time between the monitor's calls)."""
        self.train_time += seconds

    def add_monitor(self, seconds: float) -> None:
        """Count ``seconds`` spent inside the monitor."""
        self.monitor_time += seconds

    def note_scheduled(self) -> None:
        """Count a scheduled epoch being recorded (after :meth:`decide` kept it)."""
        self.n_scheduled += 1

    def note_recording(self, seconds: float) -> None:
        """Keep the cost of the last recording: the estimate of the next one."""
        self.last_cost = seconds

    def decide(self, epoch: int) -> Tuple[bool, str]:
        """Whether the scheduled ``epoch`` fits, and why.

        Returns
        -------
        keep : bool
        reason : str
        """
        if self.fraction is None:
            return True, "no budget"
        if self.n_scheduled == 0:
            return True, "first scheduled epoch"
        if self.last_epoch is not None and epoch >= self.last_epoch:
            return True, "last epoch"
        allowed = self.fraction * self.train_time
        # Room is kept for the last epoch, which is recorded whatever it costs.
        reserved = self.last_cost if self.last_epoch is not None else 0.0
        expected = self.monitor_time + self.last_cost + reserved
        if expected > allowed:
            return False, (
                f"overhead budget: monitor time {self.monitor_time:.3g} s + expected "
                f"{self.last_cost:.3g} s (+ {reserved:.3g} s kept for the last "
                f"epoch) > {self.fraction:g} x training time {self.train_time:.3g} s"
            )
        return True, "within budget"

    def skip(self, epoch: int, reason: str) -> None:
        """Write down a skipped scheduled epoch."""
        self.skipped.append({"epoch": int(epoch), "reason": reason})

    @property
    def ratio(self) -> float:
        """Monitor time over training time so far (NaN before any training)."""
        return self.monitor_time / self.train_time if self.train_time else math.nan

    def describe(self) -> Dict[str, Any]:
        """Return the ``overhead`` entry of ``run.json``."""
        return {
            "budget": self.fraction,
            "skipped": [dict(s) for s in self.skipped],
            "train_s": round(self.train_time, 6),
            "monitor_s": round(self.monitor_time, 6),
        }
