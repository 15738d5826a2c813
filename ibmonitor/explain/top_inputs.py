"""Top-activating inputs (Zeiler & Fergus 2014): which probe inputs excite a unit most.

One recording pass (:func:`ibmonitor.recording.record_activations`: forward
hooks removed in ``finally``, eval mode, no gradient, autocast off, modes and
random-number generators restored) gives each unit's activation on every
probe input, pooled to one number per input; the ``k`` largest per unit are
returned as a table.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import check_param
from ..exceptions import InvalidParameterError
from ..recording import record_activations, unwrap_model
from ..structures import OutputKey
from ._common import check_int, resolve_one_layer

__all__ = ["TOP_ACTIVATIONS_COLUMNS", "top_activations"]

OWNER = "top_activations"
#: Columns of the table :func:`top_activations` returns.
TOP_ACTIVATIONS_COLUMNS = ("unit", "rank", "index", "activation")


def top_activations(
    model: nn.Module,
    layer: Union[str, nn.Module],
    x: Any,
    *,
    k: int = 9,
    units: Optional[Union[int, Sequence[int]]] = None,
    reduce: str = "mean",
    batch_size: int = 256,
    output_key: OutputKey = None,
) -> pd.DataFrame:
    """Return the ``k`` probe inputs that activate each unit of a layer most.

    Parameters
    ----------
    model : nn.Module
        The model (DDP, ``DataParallel`` and ``torch.compile`` are unwrapped).
    layer : str or nn.Module
        One module of the model, by its name in ``model.named_modules()``
        (``"output"`` is the model's own output), or the module itself.
    x : Tensor, ndarray, tuple/list/dict of tensors, or iterable of batches
        The probe inputs, fed as :func:`ibmonitor.recording.record_activations`
        feeds them (a DataLoader yields batches whose first element is fed).
    k : int, default=9
        Inputs per unit (Zeiler & Fergus show 9); at most the number of
        inputs.
    units : int or sequence of int, optional
        The units (columns after pooling) to rank; default every unit.
    reduce : {"mean", "max"}, default="mean"
        How a unit's activation becomes one number per input: a convolutional
        map ``(batch, channels, *spatial)`` is pooled over space per channel
        (its mean, or its maximum), a sequence ``(batch, tokens, hidden)``
        over the tokens (padding skipped when the inputs carry an
        ``attention_mask``); a ``(batch, units)`` output is taken as is.
    batch_size : int, default=256
        Inputs per forward pass.
    output_key : None, int or str, default=None
        Which element of what ``forward`` returns is the model's output (for
        ``layer="output"``).

    Returns
    -------
    table : pandas.DataFrame
        Columns ``unit`` (int), ``rank`` (1 for the largest activation),
        ``index`` (the input's row in ``x``, or its position in the order a
        DataLoader yields) and ``activation`` (float, in the layer's units);
        ``k`` rows per unit, ordered by unit then rank. Ties keep the earlier
        input first.

    Raises
    ------
    InvalidParameterError
        An unknown layer or unit; bad ``k``, ``reduce`` or ``batch_size``; an
        empty probe set; a layer called other than once per pass.

    Notes
    -----
    Zeiler & Fergus rank the inputs by the strongest activation of a feature
    map (and project it back with a deconvnet, not done here); the default
    here is the map's spatial mean, the pooling the information-plane
    recording uses, and ``reduce="max"`` gives their ranking.

    References
    ----------
    M. D. Zeiler and R. Fergus, "Visualizing and Understanding Convolutional
    Networks", ECCV 2014.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.eye(2)); _ = model[0].bias.zero_()
    >>> top_activations(model, "0", x, k=2, units=0)
       unit  rank  index  activation
    0     0     1      1         3.0
    1     0     2      2         2.0
    """
    check_int(k, "k", OWNER)
    check_int(batch_size, "batch_size", OWNER)
    check_param(reduce, "reduce", OWNER, kind="option", options=("mean", "max"))
    model = unwrap_model(model)
    name, module = resolve_one_layer(model, layer, OWNER)
    acts = record_activations(
        model,
        {name: module},
        x,
        batch_size=batch_size,
        reduce=reduce,
        output_key=output_key,
    )[name]
    n_samples, n_units = acts.shape
    chosen = _check_units(units, n_units)
    kk = min(k, n_samples)
    values = acts[:, chosen].to(torch.float64)
    # Stable sort: among equal activations the earlier input comes first.
    order = torch.sort(values, dim=0, descending=True, stable=True).indices[:kk]
    top = torch.gather(values, 0, order)
    n_chosen = len(chosen)
    return pd.DataFrame(
        {
            "unit": np.repeat(np.asarray(chosen, dtype=np.int64), kk),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), n_chosen),
            "index": order.T.reshape(-1).numpy().astype(np.int64),
            "activation": top.T.reshape(-1).numpy(),
        },
        columns=list(TOP_ACTIVATIONS_COLUMNS),
    )


def _check_units(units: Any, n_units: int) -> list:
    if units is None:
        return list(range(n_units))
    items = [units] if isinstance(units, (int, np.integer)) else list(units)
    if not items:
        raise InvalidParameterError(
            "The 'units' parameter of top_activations is empty; pass None for "
            "every unit."
        )
    out = []
    for u in items:
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
            raise InvalidParameterError(
                "The 'units' parameter of top_activations must hold int unit "
                f"indices. Got {u!r} instead."
            )
        if not 0 <= int(u) < n_units:
            raise InvalidParameterError(
                f"Unit {int(u)} is out of range: the layer has {n_units} units "
                f"after pooling (0 to {n_units - 1})."
            )
        out.append(int(u))
    return out
