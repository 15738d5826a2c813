"""Lightning adapter: :class:`InformationMonitorCallback`.

Attach the information-plane monitor to a Lightning ``Trainer``::

    from ibmonitor.integrations.lightning import InformationMonitorCallback

    callback = InformationMonitorCallback(
        inputs=x_probe, labels=y_probe, estimators=("binned", "kde"),
        schedule="log", logdir="runs/lightning",
    )
    trainer = lightning.pytorch.Trainer(max_epochs=100, callbacks=[callback])
    trainer.fit(module, datamodule)
    run = ibmonitor.load_run("runs/lightning")

The callback takes the keyword arguments of :class:`~ibmonitor.InformationMonitor`
except ``model``: the monitored model is the ``LightningModule`` itself, which
must therefore implement ``forward`` on the probe inputs (a tensor as
``forward(x)``, a tuple as ``forward(*x)``, a dict as ``forward(**x)``). When
``forward`` returns a tuple or a dict, say which element is the output with
``output_key=`` (as for the monitor).

Needs Lightning (``pip install ibmonitor[lightning]``). The unified package
(``import lightning.pytorch``) is preferred; the standalone ``pytorch_lightning``
is used where it alone is installed. Where both are installed and
``pytorch_lightning`` was imported before this module, the callback derives from
both packages' ``Callback``, so either package's ``Trainer`` accepts it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict, Optional

from torch import nn

from .._imports import require
from ..exceptions import InvalidParameterError
from ._common import check_monitor_kwargs, close_monitor, numeric_scalars

__all__ = ["InformationMonitorCallback"]

logger = logging.getLogger(__name__)

_pl = require(
    ("lightning.pytorch", "pytorch_lightning"),
    feature="ibmonitor.integrations.lightning.InformationMonitorCallback",
    extra="lightning",
)

_BASES: tuple = (_pl.Callback,)
if _pl.__name__ != "pytorch_lightning" and "pytorch_lightning" in sys.modules:
    _other = sys.modules["pytorch_lightning"].Callback
    if _other is not _pl.Callback:
        _BASES = (_pl.Callback, _other)


def _check_forward(pl_module: Any) -> None:
    """Raise a clear error when ``pl_module`` does not define ``forward``."""
    defaults = {nn.Module.forward}
    for package in (_pl, sys.modules.get("pytorch_lightning")):
        module_cls = getattr(package, "LightningModule", None)
        if module_cls is not None:
            defaults.add(module_cls.forward)
    if getattr(type(pl_module), "forward", None) in defaults:
        name = type(pl_module).__name__
        raise InvalidParameterError(
            f"InformationMonitorCallback feeds the probe inputs to the "
            f"LightningModule, but {name} does not define forward. Define "
            f"{name}.forward to take the probe inputs (a tensor as forward(x), a "
            "tuple as forward(*x), a dict as forward(**x)) and return the "
            "model's output, e.g. `def forward(self, x): return self.net(x)`."
        )


class InformationMonitorCallback(*_BASES):  # type: ignore[misc]
    """Run :class:`~ibmonitor.InformationMonitor` from a Lightning ``Trainer``.

    Parameters
    ----------
    **monitor_kwargs
        Keyword arguments of :class:`~ibmonitor.InformationMonitor` (``inputs``,
        ``labels`` or ``probes``, ``layers``, ``estimators``, ``schedule``,
        ``logdir``, ...), all except ``model``. Where the monitor takes
        ``total_epochs`` and it is not given, the trainer's ``max_epochs`` is
        passed (so ``schedule="log"`` works without repeating it).

    Attributes
    ----------
    monitor : InformationMonitor or None
        The monitor of the current (or last) fit; ``None`` before the first.

    Raises
    ------
    InvalidParameterError
        If ``model`` or an argument the monitor does not take is given; at
        ``fit``, if the ``LightningModule`` does not define ``forward``.

    Notes
    -----
    Events handled:

    - ``on_fit_start``: checks that the ``LightningModule`` defines
      ``forward``, then creates the monitor on it (already on its device, and
      on every rank under DDP: the monitor shards the probe set across ranks
      and rank 0 writes the run).
    - ``on_train_epoch_end``: calls ``monitor.on_epoch_end(epoch, **scalars)``
      with ``trainer.current_epoch`` and every entry of
      ``trainer.callback_metrics`` that converts to one float (what the module
      logged with ``self.log``, validation metrics included), stored in the
      run's ``scalars`` table under the names they were logged with.
    - ``on_fit_end``: closes the monitor (run status ``finished``).
    - ``on_exception``: closes the monitor with run status ``crashed`` (also on
      ``KeyboardInterrupt``); ``teardown`` closes it if still open.

    Each ``fit`` creates a new monitor from the same arguments: to continue a
    run in a second ``fit``, pass ``resume=True``.
    """

    def __init__(self, **monitor_kwargs: Any) -> None:
        super().__init__()
        self._monitor_cls, self._takes_total_epochs = check_monitor_kwargs(
            monitor_kwargs,
            "InformationMonitorCallback",
            "the LightningModule passed to Trainer.fit",
        )
        self.monitor_kwargs: Dict[str, Any] = dict(monitor_kwargs)
        self.monitor: Optional[Any] = None
        self._open = False

    # -- Lightning hooks ---------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Create the monitor on ``pl_module``."""
        _check_forward(pl_module)
        kwargs = dict(self.monitor_kwargs)
        max_epochs = getattr(trainer, "max_epochs", None)
        if (
            self._takes_total_epochs
            and "total_epochs" not in kwargs
            and isinstance(max_epochs, int)
            and max_epochs > 0
        ):
            kwargs["total_epochs"] = max_epochs
        self.monitor = self._monitor_cls(pl_module, **kwargs)
        self._open = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Record the epoch (if scheduled) and store the logged metrics."""
        if self.monitor is None or not self._open:
            return
        scalars = numeric_scalars(dict(trainer.callback_metrics))
        self.monitor.on_epoch_end(int(trainer.current_epoch), **scalars)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the monitor: the run is finished."""
        self._close("finished")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException):
        """Close the monitor: the run crashed."""
        logger.debug("Training raised %r; closing the run as crashed.", exception)
        self._close("crashed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Close the monitor if a fit ended without ``on_fit_end``."""
        if self._open:
            self._close("finished")

    # -- helpers -------------------------------------------------------------
    def _close(self, status: str) -> None:
        if self.monitor is None or not self._open:
            return
        self._open = False
        close_monitor(self.monitor, status)
