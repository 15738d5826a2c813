"""Imports of optional parts, with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Sequence, Union

__all__ = ["require"]


def require(
    module_name: Union[str, Sequence[str]], feature: str, extra: str
) -> ModuleType:
    """Import an optional module, or explain which extra installs it.

    Parameters
    ----------
    module_name : str or sequence of str
        The module to import, e.g. ``"lightning.pytorch"``; given several, the
        first that imports is returned (``("lightning.pytorch",
        "pytorch_lightning")`` prefers the unified package and falls back to the
        standalone one).
    feature : str
        What needs the module, as the user would name it, e.g.
        ``"InformationMonitorCallback"``.
    extra : str
        The ibmonitor extra that installs it, e.g. ``"lightning"``.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    ModuleNotFoundError
        If none of the modules can be imported; the message names the feature,
        the modules tried and the install command ``pip install ibmonitor[extra]``.
        Only a missing module is translated: an error raised while importing an
        installed module propagates unchanged.

    Examples
    --------
    >>> from ibmonitor._imports import require
    >>> require("json", "a doctest", "dev").__name__
    'json'
    """
    names = [module_name] if isinstance(module_name, str) else list(module_name)
    if not names:
        raise ValueError("The 'module_name' parameter of require must not be empty.")
    missing = None
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as error:
            # Only a missing package means "not installed"; a missing module
            # inside an installed package is a real error and propagates.
            if error.name is None or not _is_prefix(error.name, name):
                raise
            missing = error
    tried = " or ".join(repr(name) for name in names)
    raise ModuleNotFoundError(
        f"{feature} needs {tried}, which is not installed. Install it with "
        f"`pip install ibmonitor[{extra}]`.",
        name=names[0],
    ) from missing


def _is_prefix(missing: str, wanted: str) -> bool:
    """Return True if module ``missing`` is ``wanted`` or one of its parents."""
    return wanted == missing or wanted.startswith(missing + ".")
