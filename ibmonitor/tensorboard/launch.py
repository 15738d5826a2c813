"""Start TensorBoard on a run directory (``ibmonitor tensorboard RUN_DIR``)."""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Sequence, Union

__all__ = ["SAMPLES_PER_PLUGIN", "launch", "tensorboard_argv"]

logger = logging.getLogger(__name__)

#: Keep every information-plane image and every plugin tensor: TensorBoard
#: otherwise keeps a random sample of 10 images per tag. A large count rather
#: than the documented ``images=0`` ("keep all"): with TensorBoard 2.21 the
#: images dashboard passes the 0 on as its own limit and then shows no image.
SAMPLES_PER_PLUGIN = "images=100000,ibmonitor=100000"


def tensorboard_argv(
    logdir: Union[str, Path],
    *,
    host: str = "127.0.0.1",
    port: int = 6006,
    extra: Sequence[str] = (),
) -> list:
    """Return the TensorBoard command-line arguments :func:`launch` uses.

    Parameters
    ----------
    logdir : str or Path
        A run directory or a folder of runs.
    host : str, default="127.0.0.1"
        Interface to listen on (``"0.0.0.0"`` for every interface).
    port : int, default=6006
        Port to listen on (0 picks a free one).
    extra : sequence of str, default=()
        More TensorBoard flags, appended as given.

    Returns
    -------
    argv : list of str
        Flags, without the program name.
    """
    return [
        "--logdir",
        str(logdir),
        "--host",
        str(host),
        "--port",
        str(int(port)),
        "--samples_per_plugin",
        SAMPLES_PER_PLUGIN,
        *extra,
    ]


def launch(
    logdir: Union[str, Path],
    host: str = "127.0.0.1",
    port: int = 6006,
    *,
    block: bool = True,
    extra: Sequence[str] = (),
) -> int:
    """Start TensorBoard on ``logdir``, print its URL and serve until Ctrl-C.

    TensorBoard runs with ``--samples_per_plugin`` set to
    :data:`SAMPLES_PER_PLUGIN` so that every recorded epoch's information-plane
    image and plugin data are kept. The
    "Information Plane" tab is the ``ibmonitor`` plugin.

    Parameters
    ----------
    logdir : str or Path
        A run directory or a folder of runs; must exist.
    host : str, default="127.0.0.1"
        Interface to listen on.
    port : int, default=6006
        Port to listen on (0 picks a free one).
    block : bool, default=True
        Serve until interrupted; False returns right after start-up (tests).
    extra : sequence of str, default=()
        More TensorBoard flags.

    Returns
    -------
    status : int
        0 after Ctrl-C (or at once with ``block=False``).

    Raises
    ------
    FileNotFoundError
        If ``logdir`` does not exist.
    """
    path = Path(logdir).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"The log directory {str(path)!r} does not exist. Pass a run directory "
            "written with the TensorBoard sink (the default with a logdir), or a "
            "folder of runs."
        )
    # The real module, not the lazy proxy that ``from tensorboard import program``
    # returns.
    program = importlib.import_module("tensorboard.program")
    board = program.TensorBoard()
    board.configure(
        argv=[None, *tensorboard_argv(path, host=host, port=port, extra=extra)]
    )
    url = board.launch()
    print(f"TensorBoard on {path}: {url}#ibmonitor  (Ctrl-C to stop)", flush=True)
    if not block:
        return 0
    try:
        _serve_forever()
    except KeyboardInterrupt:
        print("TensorBoard stopped.", flush=True)
    return 0


def _serve_forever() -> None:
    """Sleep while TensorBoard's threads serve, until Ctrl-C."""
    while True:
        time.sleep(3600)
