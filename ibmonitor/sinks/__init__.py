"""Sinks: where a monitored run goes (run store, TensorBoard, memory, yours).

A sink receives the run's events from the monitor; it never computes a
quantity. The monitor opens every sink with the run's configuration, writes
each epoch's scalars, information rows and (for sinks that want them)
activations, updates the configuration when it changes, and closes each sink
with the run's status. See :class:`Sink` for the protocol.

>>> from ibmonitor.sinks import RunStore, TensorBoard
>>> sinks = [RunStore(store_activations=True), TensorBoard(images=False)]
>>> # InformationMonitor(model, inputs=x, labels=y, logdir="runs/a", sinks=sinks)

A new sink is a subclass of :class:`Sink`, registered by name with
:func:`register_sink` so that ``sinks=["name"]`` finds it.
"""

from .base import Sink, available_sinks, make_sink, register_sink
from .memory import MemorySink
from .runstore import RunStore
from .tensorboard import TensorBoard

__all__ = [
    "MemorySink",
    "RunStore",
    "Sink",
    "TensorBoard",
    "available_sinks",
    "make_sink",
    "register_sink",
]
