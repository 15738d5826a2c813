"""Generalization, sharpness and norm measures, read beside the information plane.

Pure functions ``f(model, loss_fn, data, ...) -> result``. ``data`` is a pair
``(inputs, targets)`` of arrays or tensors or a DataLoader of such batches;
every measure evaluates in eval mode, batched, on the model's device, and
leaves the model exactly as it found it (parameters bitwise, ``.grad``,
train/eval modes, buffers, and all random-number generator states).

>>> from ibmonitor import measures
>>> measures.generalization_gap(model, loss_fn, train_data, test_data)  # doctest: +SKIP
>>> measures.hessian_eigenvalues(model, loss_fn, data, k=1)             # doctest: +SKIP
>>> measures.hessian_trace(model, loss_fn, data, n_samples=100)         # doctest: +SKIP
>>> measures.worst_case_sharpness(model, loss_fn, data, eps=1e-3)       # doctest: +SKIP
>>> measures.expected_sharpness(model, loss_fn, data, sigma=0.01)       # doctest: +SKIP
>>> measures.pac_bayes(model, loss_fn, data, init=initial_state_dict)   # doctest: +SKIP
>>> measures.norms(model, init=initial_state_dict)                      # doctest: +SKIP

:func:`compute_measures` runs named measures for the monitor and returns flat
scalars (``gap/loss``, ``hessian/top_eigenvalue``, ``norms/fc1/spectral``...);
:data:`MEASURE_COSTS` classes each as cheap or expensive.
"""

from ._data import OperationCounts, counting
from ._state import ModelSnapshot, preserved_state
from .generalization import GeneralizationGap, generalization_gap
from .hessian import (
    HessianEigenvalues,
    HessianTrace,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
)
from .norms import NORM_COLUMNS, conv_operator_norm, norms, path_norm, spectral_norm
from .pac_bayes import PACBayesResult, pac_bayes, pac_bayes_kl
from .sharpness import expected_sharpness, worst_case_sharpness
from .timeline import (
    AVAILABLE_MEASURES,
    MEASURE_COSTS,
    TIMELINE_DEFAULTS,
    compute_measures,
    measure_cost,
    measure_name,
)

__all__ = [
    "AVAILABLE_MEASURES",
    "MEASURE_COSTS",
    "NORM_COLUMNS",
    "TIMELINE_DEFAULTS",
    "GeneralizationGap",
    "HessianEigenvalues",
    "HessianTrace",
    "ModelSnapshot",
    "OperationCounts",
    "PACBayesResult",
    "compute_measures",
    "conv_operator_norm",
    "counting",
    "expected_sharpness",
    "generalization_gap",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "measure_cost",
    "measure_name",
    "norms",
    "pac_bayes",
    "pac_bayes_kl",
    "path_norm",
    "preserved_state",
    "spectral_norm",
    "worst_case_sharpness",
]
