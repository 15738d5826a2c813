"""The TensorBoard sink: scalars, histograms, plane images and plugin data."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .._validation import check_param
from .base import Sink, register_sink

__all__ = ["TensorBoard"]


@register_sink("tensorboard")
class TensorBoard(Sink):
    """Write TensorBoard summaries and the data of the *Information Plane* tab.

    Parameters
    ----------
    path : str or Path, optional
        Directory of the event files; by default the monitor's ``logdir``.
    images : {"end", "log", True, False}, default="end"
        When to draw the information-plane image into the Images tab (a
        matplotlib rendering, a few tenths of a second per estimator):
        ``"end"`` once, at close (the *Information Plane* tab shows every
        epoch interactively anyway); ``"log"`` on the 1st, 2nd, 4th, 8th, ...
        recorded epoch and at close; ``True`` on every recorded epoch;
        ``False`` never.

    Notes
    -----
    A TensorBoard failure never stops training: it is reported once and the
    other sinks go on.
    """

    name = "tensorboard"
    title = "TensorBoard"
    wants_activations = True

    def __init__(
        self, path: Union[str, Path, None] = None, *, images: Union[bool, str] = "end"
    ) -> None:
        check_param(
            images,
            "images",
            "TensorBoard",
            kind="option",
            options=("end", "log", True, False),
        )
        self.path = None if path is None else Path(path)
        self.images = images
        self.writer: Any = None
        self._rows: List[Dict[str, Any]] = []
        self._epochs: Dict[int, None] = {}
        self._image_epoch: Optional[int] = None

    def open(
        self, config: Mapping[str, Any], *, logdir: Optional[Path]
    ) -> Optional[Mapping[str, Any]]:
        """Open the event file and write the custom-scalars layout."""
        from ..tensorboard.writer import TensorBoardWriter

        self.path = self.directory(self.path, logdir)
        self.writer = TensorBoardWriter(self.path, config=config)
        self.writer.write_layout(
            list(config.get("layers") or {}),
            [e.get("label", e.get("name")) for e in config.get("estimators") or []],
            [],
            probes=list(config.get("probes") or {}),
        )
        if self.images in (True, "log"):  # pay the import now, not when drawing
            with contextlib.suppress(Exception):
                importlib.import_module("matplotlib.figure")
                importlib.import_module("matplotlib.backends.backend_agg")
        return None

    def write_scalars(
        self, epoch: int, values: Mapping[str, float], *, recorded: bool
    ) -> None:
        """Write the scalars."""
        if values:
            self.writer.write_scalars(epoch, values)

    def write_information(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write the plugin's tensors and scalars; draw the plane when due."""
        if not rows:
            return
        self.writer.write_information(epoch, rows)
        self._rows.extend(dict(r) for r in rows)
        self._epochs.setdefault(epoch, None)
        if self._image_due():
            self._write_image(epoch)

    def write_activations(
        self,
        epoch: int,
        activations: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, np.ndarray],
        inputs: Mapping[str, np.ndarray],
    ) -> None:
        """Write a histogram per layer and probe."""
        for probe, acts in activations.items():
            for layer, t in acts.items():
                self.writer.write_activations(epoch, layer, t, probe=probe)

    def write_histograms(self, epoch: int, values: Mapping[str, np.ndarray]) -> None:
        """Write one histogram per name (e.g. ``pairing/<layer>/mu``)."""
        for name, array in values.items():
            self.writer.write_histogram(epoch, name, array)

    def write_explanations(self, epoch: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Draw image-like explanations as image grids (one slider step per epoch).

        ``explain/saliency`` (one row per input: the input's |gradient|),
        ``explain/top/<layer>`` (one row per unit, its top inputs) and
        ``explain/features/<layer>`` (one row per unit). Inputs that are not
        images (fewer than two spatial dimensions) are stored by the run
        store only.
        """
        from ..storage.files import decode_name

        for key, array in arrays.items():
            a = np.asarray(array)
            if key == "saliency":
                self.writer.write_image_grid(epoch, "explain/saliency", a[:, None])
            elif key.startswith("top/") and key.endswith("/inputs"):
                layer = decode_name(key[len("top/") : -len("/inputs")])
                self.writer.write_image_grid(epoch, f"explain/top/{layer}", a)
            elif key.startswith("features/") and not key.endswith("/units"):
                layer = decode_name(key[len("features/") :])
                self.writer.write_image_grid(
                    epoch, f"explain/features/{layer}", a[:, None]
                )

    def close(self, status: str) -> None:
        """Draw the final plane (when not drawn yet) and close the event file."""
        if self.writer is None:
            return
        try:
            last = next(reversed(self._epochs), None) if self._epochs else None
            if self.images and last is not None and last != self._image_epoch:
                self._write_image(last)
        finally:
            self.writer.close()

    def _image_due(self) -> bool:
        if self.images is True:
            return True
        if self.images == "log":
            count = len(self._epochs)
            return count & (count - 1) == 0  # 1, 2, 4, 8, ...
        return False

    def _write_image(self, epoch: int) -> None:
        import pandas as pd

        self._image_epoch = epoch
        self.writer.write_plane_image(epoch, pd.DataFrame(self._rows))
