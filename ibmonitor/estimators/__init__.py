"""Mutual-information estimators for the information plane (all results in bits).

Each estimator is a pure function ``f(t, y, *, x=None, **params)`` over numpy
arrays or torch tensors (CPU or CUDA) that returns an
:class:`InformationEstimate` with ``i_xt`` and ``i_ty`` in bits.

>>> from ibmonitor import estimators
>>> sorted(estimators.available())
['binned', 'kde', 'knn', 'noisy', 'renyi']
"""

from ._common import (
    PINNED_MARGIN,
    Estimator,
    InformationEstimate,
    available,
    entropy_from_counts,
    get,
    input_ids,
    register,
)
from .binning import binned
from .kde import kde
from .knn import knn
from .noisy import noisy
from .renyi import renyi

__all__ = [
    "PINNED_MARGIN",
    "Estimator",
    "InformationEstimate",
    "available",
    "binned",
    "entropy_from_counts",
    "get",
    "input_ids",
    "kde",
    "knn",
    "noisy",
    "register",
    "renyi",
]
