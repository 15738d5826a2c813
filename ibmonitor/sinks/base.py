"""The sink protocol and the sink registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type

import numpy as np

from ..exceptions import InvalidParameterError

__all__ = ["Sink", "available_sinks", "make_sink", "register_sink"]


class Sink:
    """Base class of the monitor's outputs: every event is a no-op here.

    Events, in the order the monitor sends them (all on the process that
    writes, rank 0 under ``torch.distributed``):

    - :meth:`open` once, with the run's configuration (``run.json``'s keys,
      see :func:`ibmonitor.schema.build_run_config`);
    - per epoch, :meth:`write_scalars` (every :meth:`on_epoch_end
      <ibmonitor.InformationMonitor.on_epoch_end>`, measures and saturation
      included); a recorded epoch's events are bracketed by
      :meth:`begin_epoch` (before its scalars) and :meth:`end_epoch` (after
      its :meth:`write_information` and, when :attr:`wants_activations`,
      :meth:`write_activations`); with a background worker,
      :meth:`write_pending` (when :attr:`spools`) comes right after the
      scalars, before ``on_epoch_end`` returns;
    - :meth:`update_config` when skipped epochs, overhead or errors change;
    - :meth:`close` once, with the status.

    The monitor serialises the calls (one at a time, even with a background
    worker). A sink's error never stops training: an :attr:`essential`
    sink's errors follow the monitor's ``strict`` flag; any other sink's are
    reported once per event and the run goes on.

    Attributes
    ----------
    name : str
        Registry name.
    essential : bool
        Whether losing this sink's output loses the run (the run store).
    wants_activations : bool
        Whether :meth:`write_activations` should be called.
    spools : bool
        Whether the sink keeps :meth:`write_pending`'s activations until
        :meth:`end_epoch` (so that a killed process loses no queued epoch).
    """

    name = "sink"
    #: How messages name the sink ("TensorBoard", "run store").
    title = "sink"
    essential = False
    wants_activations = False
    spools = False

    def open(
        self, config: Mapping[str, Any], *, logdir: Optional[Path]
    ) -> Optional[Mapping[str, Any]]:
        """Start the run.

        Parameters
        ----------
        config : dict
            The run's configuration (JSON-ready).
        logdir : Path or None
            The monitor's ``logdir``, for sinks given no path of their own.

        Returns
        -------
        dict or None
            When the sink continues a stored run: ``{"last_epoch": int or
            None, "config": stored run.json}``, and, for a sink that spools,
            ``"pending"`` (epochs whose spooled activations await estimation)
            and ``"read_pending"`` (``epoch -> {probe: {layer: array}}``, with
            labels and inputs under ``"__y__"`` and ``"__x__"``); otherwise None.
        """
        return None

    def begin_epoch(self, epoch: int) -> None:
        """Mark the start of a recorded epoch's writes (before its scalars)."""

    def write_pending(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, np.ndarray],
        inputs: Mapping[str, np.ndarray],
    ) -> None:
        """Keep a recorded epoch's activations until it is estimated.

        Sent (to sinks that :attr:`spools`) before ``on_epoch_end`` returns
        when a background worker estimates the epoch later. Same arguments
        as :meth:`write_activations`.
        """

    def write_explanations(self, epoch: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one recorded epoch's explanations (named arrays).

        See :meth:`ibmonitor.explain.ExplainSet.compute` for the names.
        """

    def write_histograms(self, epoch: int, values: Mapping[str, np.ndarray]) -> None:
        """Write distributions a measure gave (``{name: 1-D array}``).

        E.g. ``pairing/<layer>/mu``: TensorBoard draws a histogram per name
        and epoch; the run store keeps the measure's summary scalars only.
        """

    def end_epoch(self, epoch: int) -> None:
        """Mark every write of a recorded epoch sent; drop what was spooled."""

    def write_scalars(
        self, epoch: int, values: Mapping[str, float], *, recorded: bool
    ) -> None:
        """Write one epoch's scalars.

        Parameters
        ----------
        epoch : int
        values : dict of str to float
        recorded : bool
            Whether the monitor recorded this epoch; a sink may defer making
            unrecorded epochs durable (fsync) until the next recorded one.
        """

    def write_information(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write one recorded epoch's information rows (wide dicts, bits)."""

    def write_activations(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, np.ndarray],
        inputs: Mapping[str, np.ndarray],
    ) -> None:
        """Write one recorded epoch's activations ``{probe: {layer: array}}``.

        ``labels`` and ``inputs`` (flattened) are keyed by probe.
        """

    def update_config(self, **keys: Any) -> None:
        """Update keys of the run's configuration (``skipped_epochs``, ...)."""

    def close(self, status: str) -> None:
        """End the run with ``status`` (``"finished"`` or ``"crashed"``)."""

    def directory(self, path: Optional[Path], logdir: Optional[Path]) -> Path:
        """Return the sink's own ``path``, else the monitor's ``logdir``.

        Raises
        ------
        InvalidParameterError
            Neither is given (the message names the sink).
        """
        if path is not None:
            return Path(path)
        if logdir is None:
            cls = type(self).__name__
            raise InvalidParameterError(
                f"The {cls} sink needs a path: pass {cls}(path) or the monitor's "
                "'logdir'."
            )
        return Path(logdir)

    def describe(self) -> str:
        """Return the sink's name as listed in ``run.json["sinks"]``."""
        return self.name


_REGISTRY: Dict[str, Callable[[], Sink]] = {}


def register_sink(name: str) -> Callable[[Type[Sink]], Type[Sink]]:
    """Register a sink class (or factory) under ``name`` (a class decorator).

    Examples
    --------
    >>> @register_sink("print")  # doctest: +SKIP
    ... class PrintSink(Sink):
    ...     name = "print"
    ...     def write_scalars(self, epoch, values, *, recorded):
    ...         print(epoch, values)
    """
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(
            f"The 'name' parameter of register_sink must be a non-empty str. "
            f"Got {name!r} instead."
        )

    def decorate(cls: Type[Sink]) -> Type[Sink]:
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_sinks() -> List[str]:
    """Names of the registered sinks."""
    return sorted(_REGISTRY)


def make_sink(spec: Any) -> Sink:
    """Return a sink from a registered name or a :class:`Sink` object."""
    if isinstance(spec, Sink):
        return spec
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            raise InvalidParameterError(
                f"Unknown sink {spec!r}. Available sinks: {available_sinks()}."
            )
        return _REGISTRY[spec]()
    raise InvalidParameterError(
        "The 'sinks' parameter of InformationMonitor must hold Sink objects or "
        f"registered sink names ({available_sinks()}). Got {spec!r}."
    )
