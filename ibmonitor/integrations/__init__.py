"""Adapters that attach :class:`~ibmonitor.InformationMonitor` to training frameworks.

- :mod:`ibmonitor.integrations.lightning`: ``InformationMonitorCallback`` for
  Lightning (``pip install ibmonitor[lightning]``).
- :mod:`ibmonitor.integrations.transformers`: ``InformationMonitorCallback``
  for the Hugging Face ``Trainer`` (``pip install ibmonitor[transformers]``).

Each adapter is imported explicitly, so that ``import ibmonitor`` never imports
a training framework::

    from ibmonitor.integrations.lightning import InformationMonitorCallback
"""

from __future__ import annotations

__all__: list = []
