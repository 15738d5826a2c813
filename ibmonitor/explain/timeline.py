"""Explanations over training: what the monitor computes at its recorded epochs.

:class:`ExplainSet` is the part of the monitor (``InformationMonitor(...,
explain=ExplainSet(...))``) that runs the functions of :mod:`ibmonitor.explain`
on a schedule and hands their results to the sinks as arrays
(``write_explanations``): the run store keeps them per epoch
(``explanations/epoch_XXXXXX.npz``, no pickle; ``Run.explanations(epoch)``,
``Run.top_activations``, ``Run.influence``), TensorBoard draws image grids
(its Images tab has the epoch slider) and the HTML report draws a saliency
strip over epochs and the tables.

Nothing runs unless asked: each explanation is off by default, and the costly
ones (feature visualization, influence) run only at the epochs given.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._validation import check_param
from ..exceptions import InvalidParameterError
from ..storage.files import encode_name
from ..structures import call_model, move, n_rows, select_output

__all__ = ["ExplainSet"]

#: Epochs of a costly explanation: a list, or "first_last" (the first and the
#: last recorded epoch).
EpochSpec = Union[str, Sequence[int]]


def _as_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t)


class ExplainSet:
    """What to explain on the monitor's timeline, and on which inputs.

    Parameters
    ----------
    inputs : Tensor, ndarray, or tuple or dict of tensors, batch first
        A handful of fixed inputs to explain (e.g. the first two of each
        class), as the model takes them (``model(x)``, ``model(*x)``,
        ``model(**x)``; token ids get the saliency at the embedding output,
        see :func:`ibmonitor.explain.saliency`).
    targets : Tensor or ndarray of shape (k,), optional
        Their classes (true labels): saliency is the gradient of this class's
        score. Default: the model's predicted class at each epoch.
    saliency : bool, default=True
        The saliency map of each input at every recorded epoch (Simonyan et
        al. 2014; :func:`ibmonitor.explain.saliency`, signed gradient).
    top_activations : dict of str to int, or sequence of str, optional
        Layers whose units' top-activating probe inputs are kept at every
        recorded epoch (Zeiler & Fergus 2014): ``{layer: k}``, or layer names
        with ``k=9``. The inputs are the monitor's first probe set (or
        ``top_inputs``).
    top_inputs : Tensor or ndarray, optional
        The inputs searched by ``top_activations`` (default: the monitor's
        first probe set).
    feature_visualization : dict of str to sequence of int, optional
        ``{layer: units}``: inputs that maximize each unit (Yosinski et al.
        2015; :func:`ibmonitor.explain.feature_visualization`) at
        ``costly_epochs``, of the shape of one input.
    influence : dict, optional
        ``{"loss_fn", "train_data", "test_data"}`` and the options of
        :func:`ibmonitor.explain.influence` (``damping``, ``top``, ...): the
        most helpful and harmful training points of each test point (Koh &
        Liang 2017) at ``costly_epochs``.
    costly_epochs : "first_last" or sequence of int, default="first_last"
        When feature visualization and influence run: the first and last
        recorded epochs (the last needs the monitor's ``total_epochs``), or
        the given epochs (each must be recorded).
    fv_steps : int, default=100
        Gradient-ascent steps of each feature visualization.

    Raises
    ------
    InvalidParameterError
        Bad types or values, naming the parameter.
    """

    def __init__(
        self,
        inputs: Any,
        targets: Any = None,
        *,
        saliency: bool = True,
        top_activations: Union[Mapping[str, int], Sequence[str], None] = None,
        top_inputs: Any = None,
        feature_visualization: Optional[Mapping[str, Sequence[int]]] = None,
        influence: Optional[Mapping[str, Any]] = None,
        costly_epochs: EpochSpec = "first_last",
        fv_steps: int = 100,
    ) -> None:
        owner = "ExplainSet"
        if isinstance(inputs, np.ndarray):
            inputs = torch.as_tensor(inputs)
        self.inputs = inputs
        try:
            n = n_rows(inputs) if inputs is not None else 0
        except (InvalidParameterError, TypeError):
            n = 0
        if n == 0:
            raise InvalidParameterError(
                f"The 'inputs' parameter of {owner} must be a non-empty batch of "
                "inputs, batch first: a Tensor or ndarray, or a tuple or dict of "
                "tensors as the model takes them."
            )
        self.n_inputs = n
        self.targets = None if targets is None else torch.as_tensor(targets).long()
        if self.targets is not None and self.targets.shape != (n,):
            raise InvalidParameterError(
                f"The 'targets' parameter of {owner} must have one class per input "
                f"({n}); got shape {tuple(self.targets.shape)}."
            )
        self.saliency = bool(saliency)
        if top_activations is None:
            self.top: Dict[str, int] = {}
        elif isinstance(top_activations, Mapping):
            self.top = {str(k): int(v) for k, v in top_activations.items()}
        elif isinstance(top_activations, str):
            self.top = {top_activations: 9}
        else:
            self.top = {str(layer): 9 for layer in top_activations}
        for layer, k in self.top.items():
            check_param(k, f"top_activations[{layer!r}]", owner, kind="int", low=1)
        self.top_inputs = None if top_inputs is None else torch.as_tensor(top_inputs)
        self.features = {
            str(layer): [int(u) for u in units]
            for layer, units in dict(feature_visualization or {}).items()
        }
        if self.features and not isinstance(self.inputs, torch.Tensor):
            raise InvalidParameterError(
                f"The 'feature_visualization' parameter of {owner} needs tensor "
                "inputs (it optimizes an input of their shape); these are "
                f"{type(self.inputs).__name__}."
            )
        self.influence = dict(influence) if influence is not None else None
        if self.influence is not None:
            missing = {"loss_fn", "train_data", "test_data"} - set(self.influence)
            if missing:
                raise InvalidParameterError(
                    f"The 'influence' parameter of {owner} needs the keys "
                    f"{sorted(missing)} (and optionally influence()'s options)."
                )
        if isinstance(costly_epochs, str):
            check_param(
                costly_epochs,
                "costly_epochs",
                owner,
                kind="option",
                options=("first_last",),
            )
            self.costly: Optional[List[int]] = None
        else:
            self.costly = sorted({int(e) for e in costly_epochs})
        check_param(fv_steps, "fv_steps", owner, kind="int", low=1)
        self.fv_steps = int(fv_steps)
        if not (self.saliency or self.top or self.features or self.influence):
            raise InvalidParameterError(
                f"{owner} explains nothing: turn on saliency, top_activations, "
                "feature_visualization or influence."
            )
        self._first_done = False
        self._last: Optional[int] = None

    def bind(self, total_epochs: Optional[int]) -> None:
        """Learn the run's last epoch (for ``costly_epochs="first_last"``)."""
        self._last = None if total_epochs is None else int(total_epochs) - 1

    def _costly_due(self, epoch: int) -> bool:
        if self.costly is not None:
            return epoch in self.costly
        return not self._first_done or epoch == self._last

    def compute(
        self,
        model: nn.Module,
        epoch: int,
        *,
        probe_inputs: Any = None,
        output_key: Any = None,
    ) -> Dict[str, np.ndarray]:
        """Compute the explanations due at a recorded epoch, as named arrays.

        Returns
        -------
        arrays : dict of str to ndarray
            ``"saliency"`` (shaped like ``inputs``; for a tuple or dict of
            inputs, its first input's, and every input's as
            ``"saliency/<key>"``) and ``"saliency_target"``;
            per top-activation layer ``"top/<layer>"``, rows ``(unit, rank,
            index, activation)``, and ``"top/<layer>/inputs"``, the top inputs
            of the first 16 units, shaped ``(units, k, ...)``; per visualized
            layer ``"features/<layer>"`` (one input per unit) and
            ``"features/<layer>/units"``; ``"influence"``, rows
            ``(test_index, train_index, influence)``. Layer names are encoded
            as in the run store.
        """
        from . import feature_visualization, influence, saliency, top_activations

        out: Dict[str, np.ndarray] = {}
        x = self.inputs
        if self.saliency:
            targets = self.targets
            if targets is None:
                from .._device import model_device

                with torch.no_grad():
                    was = model.training
                    model.eval()
                    try:
                        output = call_model(model, move(x, model_device(model)))
                    finally:
                        model.train(was)
                logits = select_output(output, output_key, owner="ExplainSet")
                targets = logits.argmax(dim=-1).reshape(self.n_inputs, -1)[:, 0].cpu()
            grads = saliency(model, x, targets, output_key=output_key)
            if isinstance(grads, torch.Tensor):
                leaves = {"": grads}
            elif isinstance(grads, Mapping):
                leaves = {str(k): v for k, v in grads.items() if v is not None}
            else:  # a tuple or list of inputs
                leaves = {str(i): v for i, v in enumerate(grads) if v is not None}
            for i, (key, grad) in enumerate(leaves.items()):
                array = _as_numpy(grad).astype(np.float32)
                if i == 0:  # the first input: what TensorBoard and the report draw
                    out["saliency"] = array
                if key:
                    out[
                        f"saliency/{encode_name(key, what='input name', probe=True)}"
                    ] = array
            out["saliency_target"] = targets.cpu().numpy().astype(np.int64)
        searched = self.top_inputs if self.top_inputs is not None else probe_inputs
        for layer, k in self.top.items():
            if searched is None:
                raise InvalidParameterError(
                    "ExplainSet.top_activations needs inputs to search: pass "
                    "top_inputs= or use it inside a monitor (its first probe set)."
                )
            table = top_activations(model, layer, searched, k=k, output_key=output_key)
            name = f"top/{encode_name(layer, what='layer name', probe=True)}"
            out[name] = table[["unit", "rank", "index", "activation"]].to_numpy(
                dtype=np.float64
            )
            units = sorted(table["unit"].unique())[:16]
            if isinstance(searched, torch.Tensor) and searched.is_floating_point():
                chosen = table[table["unit"].isin(units)].sort_values(["unit", "rank"])
                idx = torch.as_tensor(chosen["index"].to_numpy(), dtype=torch.long)
                picked = searched[idx].reshape(len(units), -1, *searched.shape[1:])
                out[name + "/inputs"] = _as_numpy(picked).astype(np.float32)
        if self._costly_due(epoch):
            for layer, units in self.features.items():
                images = torch.stack(
                    [
                        feature_visualization(
                            model,
                            layer,
                            unit,
                            shape=tuple(x.shape[1:]),
                            steps=self.fv_steps,
                            output_key=output_key,
                        ).cpu()
                        for unit in units
                    ]
                )
                name = f"features/{encode_name(layer, what='layer name', probe=True)}"
                out[name] = _as_numpy(images).astype(np.float32)
                out[name + "/units"] = np.asarray(units, dtype=np.int64)
            if self.influence is not None:
                spec = dict(self.influence)
                table = influence(
                    model,
                    spec.pop("loss_fn"),
                    spec.pop("train_data"),
                    spec.pop("test_data"),
                    output_key=output_key,
                    **spec,
                )
                out["influence"] = table[
                    ["test_index", "train_index", "influence"]
                ].to_numpy(dtype=np.float64)
        self._first_done = True
        return out

    def describe(self) -> Dict[str, Any]:
        """Return a JSON-ready description (for ``run.json``)."""
        return {
            "n_inputs": self.n_inputs,
            "targets": "given" if self.targets is not None else "predicted",
            "saliency": self.saliency,
            "top_activations": dict(self.top),
            "feature_visualization": {k: list(v) for k, v in self.features.items()},
            "influence": None
            if self.influence is None
            else sorted(
                k
                for k in self.influence
                if k not in ("train_data", "test_data", "loss_fn")
            ),
            "costly_epochs": "first_last" if self.costly is None else list(self.costly),
            "fv_steps": self.fv_steps,
        }
