"""Type aliases shared across ibmonitor."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

#: numpy array or torch tensor, CPU or CUDA.
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]
#: A layer's name as given by ``model.named_modules()``.
LayerName = str
#: A schedule: "log", every N epochs, explicit epochs, or a predicate.
Schedule = Union[str, int, Sequence[int], Callable[[int], bool]]
