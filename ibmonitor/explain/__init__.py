"""Explanations of a trained model: what it looks at, what excites it, what taught it.

Pure functions over a model and data, computed only when called (importing
:mod:`ibmonitor` imports none of this, and Captum is imported on first use):

>>> from ibmonitor import explain
>>> explain.saliency(model, x, target)                      # doctest: +SKIP
>>> explain.top_activations(model, "conv2", x, k=9)         # doctest: +SKIP
>>> explain.feature_visualization(model, "conv2", 3, shape=(1, 8, 8)) # doctest: +SKIP
>>> explain.influence(model, loss_fn, train, test, damping=1e-3)  # doctest: +SKIP

- :func:`saliency`: the gradient of each sample's target score with respect to
  its input (Simonyan et al. 2014), by Captum's ``Saliency``; for token ids,
  at the embedding output, one value per token.
- :func:`top_activations`: the probe inputs that activate each unit most
  (Zeiler & Fergus 2014), as a table (unit, rank, index, activation).
- :func:`feature_visualization`: an input that maximizes a unit, by gradient
  ascent with Yosinski et al.'s (2015) regularizers.
- :func:`influence`: the predicted change of each test loss when each training
  point is removed (Koh & Liang 2017), exact or by conjugate gradients.

Every function runs on the model's device, in eval mode, with autocast
disabled, and leaves the model as it found it (parameters, ``.grad``,
``requires_grad``, train/eval modes, random-number generators).
"""

from .influence_functions import INFLUENCE_COLUMNS, INFLUENCE_METHODS, influence
from .saliency_maps import EMBEDDING_REDUCE_OPTIONS, saliency
from .timeline import ExplainSet
from .top_inputs import TOP_ACTIVATIONS_COLUMNS, top_activations
from .visualization import YOSINSKI_SETTINGS, feature_visualization, gaussian_blur

__all__ = [
    "EMBEDDING_REDUCE_OPTIONS",
    "INFLUENCE_COLUMNS",
    "INFLUENCE_METHODS",
    "TOP_ACTIVATIONS_COLUMNS",
    "YOSINSKI_SETTINGS",
    "ExplainSet",
    "feature_visualization",
    "gaussian_blur",
    "influence",
    "saliency",
    "top_activations",
]
