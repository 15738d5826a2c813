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
>>> measures.hessian_spectral_density(model, loss_fn, data, n_steps=90) # doctest: +SKIP
>>> measures.worst_case_sharpness(model, loss_fn, data, eps=1e-3)       # doctest: +SKIP
>>> measures.expected_sharpness(model, loss_fn, data, sigma=0.01)       # doctest: +SKIP
>>> measures.pac_bayes(model, loss_fn, data, init=initial_state_dict)   # doctest: +SKIP
>>> measures.norms(model, init=initial_state_dict)                      # doctest: +SKIP

Each is also registered under a name (:func:`register_measure`,
:func:`available_measures`: ``gap``, ``norms``, ``hessian``, ``sharpness``,
``expected_sharpness``, ``pac_bayes``) with a cost class, ``"cheap"`` or
``"expensive"``. :func:`compute_measures` runs named measures and returns flat
scalars (``gap/loss``, ``hessian/top_eigenvalue``, ``norms/fc1/spectral``...);
:class:`MeasureSet` is the part the monitor composes (measures, loss, data,
schedule).
"""

from .._state import ModelSnapshot, preserve_state
from ._data import OperationCounts, counting
from .generalization import GeneralizationGap, generalization_gap
from .geometry import geometry_name
from .hessian import (
    DENSITY_PREFIX,
    HessianEigenvalues,
    HessianSpectralDensity,
    HessianTrace,
    density_from_scalars,
    hessian_eigenvalues,
    hessian_spectral_density,
    hessian_trace,
    hessian_vector_product,
)
from .norms import NORM_COLUMNS, conv_operator_norm, norms, path_norm, spectral_norm
from .pac_bayes import PACBayesResult, pac_bayes, pac_bayes_kl
from .registry import (
    Measure,
    MeasureContext,
    available_measures,
    get_measure,
    measure_cost,
    measure_name,
    register_measure,
)
from .sharpness import expected_sharpness, worst_case_sharpness
from .timeline import MeasureSet, compute_measures

__all__ = [
    "DENSITY_PREFIX",
    "NORM_COLUMNS",
    "GeneralizationGap",
    "HessianEigenvalues",
    "HessianSpectralDensity",
    "HessianTrace",
    "Measure",
    "MeasureContext",
    "MeasureSet",
    "ModelSnapshot",
    "OperationCounts",
    "PACBayesResult",
    "available_measures",
    "compute_measures",
    "conv_operator_norm",
    "counting",
    "density_from_scalars",
    "expected_sharpness",
    "generalization_gap",
    "geometry_name",
    "get_measure",
    "hessian_eigenvalues",
    "hessian_spectral_density",
    "hessian_trace",
    "hessian_vector_product",
    "measure_cost",
    "measure_name",
    "norms",
    "pac_bayes",
    "pac_bayes_kl",
    "path_norm",
    "preserve_state",
    "register_measure",
    "spectral_norm",
    "worst_case_sharpness",
]
