"""Find a Chrome or Chromium executable for static export and browser tests.

Static image export (kaleido 1.x) and the browser tests drive a headless
Chromium. ibmonitor never downloads one: it uses the browser named by the
``BROWSER_PATH`` environment variable, Debian's ``/usr/bin/chromium``, or a
``chromium`` / ``google-chrome`` executable on ``PATH``, in that order.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Optional

__all__ = ["BROWSER_HELP", "BrowserNotFoundError", "find_browser", "require_browser"]

logger = logging.getLogger(__name__)

#: Executables looked up on ``PATH``, in order, after ``BROWSER_PATH`` and
#: ``/usr/bin/chromium``.
BROWSER_NAMES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)

#: Debian's (and Ubuntu's) package location.
DEBIAN_CHROMIUM = "/usr/bin/chromium"

#: How to get a browser, appended to every "no browser" message.
BROWSER_HELP = (
    "install the 'chromium' system package (e.g. `apt-get install chromium`) "
    "or Google Chrome, or set BROWSER_PATH to the browser's executable"
)


class BrowserNotFoundError(FileNotFoundError):
    """No Chrome or Chromium executable was found.

    Subclasses :class:`FileNotFoundError` (an executable is missing), so the
    ``ibmonitor`` command reports it as a clean error.
    """


def _executable(path: str) -> Optional[str]:
    """Return ``path`` resolved to an executable file, or None."""
    if os.sep in path or (os.altsep and os.altsep in path):
        resolved = os.path.expanduser(path)
        if os.path.isfile(resolved) and os.access(resolved, os.X_OK):
            return resolved
        return None
    return shutil.which(path)


def find_browser() -> Optional[str]:
    """Return the path of a Chrome or Chromium executable, or None.

    Looks, in order, at the ``BROWSER_PATH`` environment variable (a path or a
    name on ``PATH``), at ``/usr/bin/chromium``, and for ``chromium``,
    ``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` and
    ``chrome`` on ``PATH``. A ``BROWSER_PATH`` that names no executable is
    logged as a warning and skipped.

    Returns
    -------
    path : str or None
        The executable, or None when no browser was found.
    """
    env = os.environ.get("BROWSER_PATH", "").strip()
    if env:
        found = _executable(env)
        if found:
            return found
        logger.warning(
            "BROWSER_PATH=%r is not an executable file; looking elsewhere.", env
        )
    found = _executable(DEBIAN_CHROMIUM)
    if found:
        return found
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser(feature: str) -> str:
    """Return a browser executable or raise an error saying how to get one.

    Parameters
    ----------
    feature : str
        What needs the browser, used in the message (e.g. ``"write_image"``).

    Returns
    -------
    path : str
        The executable found by :func:`find_browser`.

    Raises
    ------
    BrowserNotFoundError
        ``write_image needs a Chrome or Chromium browser for static export, and
        none was found ...; install the 'chromium' system package ... or set
        BROWSER_PATH ...``
    """
    path = find_browser()
    if path is None:
        env = os.environ.get("BROWSER_PATH")
        looked = (f"BROWSER_PATH={env!r}, " if env else "BROWSER_PATH, ") + (
            f"{DEBIAN_CHROMIUM} and {', '.join(BROWSER_NAMES)} on PATH"
        )
        raise BrowserNotFoundError(
            f"{feature} needs a Chrome or Chromium browser, and none was found "
            f"(looked at {looked}); {BROWSER_HELP}."
        )
    return path
