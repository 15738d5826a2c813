"""Generalization gap: loss and accuracy on training and test data.

Zhang et al. (2017) showed that networks able to fit random labels can still
generalize; the gap between training and test performance is the quantity the
information plane is read against.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from .._device import autocast_disabled, model_device, model_dtype
from .._state import preserve_state
from .._validation import check_param
from ..exceptions import InvalidParameterError
from ..structures import OutputKey
from ._data import evaluate, iter_batches
from .registry import MeasureContext, register_measure

__all__ = ["GeneralizationGap", "generalization_gap"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneralizationGap:
    """Loss and accuracy on training and test data, and their gaps.

    Attributes
    ----------
    train_loss, test_loss : float
        Mean loss per sample (``loss_fn`` averaged over samples).
    train_acc, test_acc : float
        Fraction of correct predictions; NaN where accuracy is undefined
        (regression outputs).
    loss_gap : float
        ``test_loss - train_loss``.
    acc_gap : float
        ``train_acc - test_acc``.
    n_train, n_test : int
        Samples evaluated.
    """

    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float
    loss_gap: float
    acc_gap: float
    n_train: int
    n_test: int

    def as_dict(self) -> Dict[str, Any]:
        """Return the fields as a dict."""
        return asdict(self)


def generalization_gap(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_data: Any,
    test_data: Any,
    *,
    batch_size: int = 1024,
    max_batches: Optional[int] = None,
    output_key: OutputKey = None,
    label_key: Optional[str] = None,
) -> GeneralizationGap:
    """Return loss and accuracy on training and test data and the gap between them.

    The model is evaluated in eval mode, without gradients, batch by batch on
    its own device, and left exactly as found (see :func:`preserve_state`).

    Parameters
    ----------
    model : Module
    loss_fn : callable
        ``loss_fn(output, target) -> scalar tensor``, the mean over the batch
        (``reduction="mean"``), e.g. :class:`torch.nn.CrossEntropyLoss`.
    train_data, test_data : tuple (inputs, targets) or iterable of batches
        A pair ``(inputs, targets)`` (cut into batches of ``batch_size``),
        ``inputs`` a tensor or array, a tuple of tensors (``model(*inputs)``)
        or a dict of tensors (``model(**inputs)``); or a DataLoader yielding
        ``(x, y)`` or ``(x1, x2, ..., y)`` tuples (targets last) or dicts with
        a labels key.
    batch_size : int, default=1024
        Batch size for a pair.
    max_batches : int, optional
        Evaluate at most this many batches of each set.
    output_key : None, int or str, default=None
        Which element of the model's output is the output (see
        :func:`ibmonitor.structures.select_output`): ``None`` takes a tensor as
        is and the ``logits`` of a dict or Hugging Face ``ModelOutput``; an int
        indexes a tuple; a str names a key or attribute.
    label_key : str, optional
        Key of the targets in dict batches; default ``"labels"``, else
        ``"label"``.

    Returns
    -------
    gap : GeneralizationGap
        ``.train_loss .test_loss .train_acc .test_acc .loss_gap .acc_gap``.
        Accuracy is the argmax of (n, C) outputs, or ``output > 0`` for a single
        logit; NaN for other outputs.

    Raises
    ------
    InvalidParameterError
        Malformed data, a bad parameter, or an output that is not a tensor
        and that ``output_key`` does not resolve.

    Notes
    -----
    Cost: one forward pass over each set (cheap; about the cost of evaluating the
    test set once).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    >>> gap = generalization_gap(model, torch.nn.CrossEntropyLoss(), (x, y), (x, y))
    >>> gap.loss_gap
    0.0
    """
    owner = "generalization_gap"
    check_param(batch_size, "batch_size", owner, kind="int", low=1)
    if max_batches is not None:
        check_param(max_batches, "max_batches", owner, kind="int", low=1)
    device, dtype = model_device(model), model_dtype(model)
    with preserve_state(model, parameters=True), autocast_disabled(model_device(model)):
        model.eval()
        results = []
        for name, data in (("train_data", train_data), ("test_data", test_data)):
            batches = iter_batches(
                data,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                max_batches=max_batches,
                owner=f"{owner} ({name})",
                label_key=label_key,
            )
            result = evaluate(
                model, loss_fn, batches, output_key=output_key, owner=owner
            )
            if result[2] == 0:
                raise InvalidParameterError(
                    f"The {name!r} parameter of {owner} holds 0 samples; at least "
                    "1 is required to compute a loss and an accuracy. Is the "
                    "data set (or its DataLoader) empty?"
                )
            results.append(result)
    (tr_loss, tr_acc, n_tr), (te_loss, te_acc, n_te) = results
    return GeneralizationGap(
        train_loss=tr_loss,
        test_loss=te_loss,
        train_acc=tr_acc,
        test_acc=te_acc,
        loss_gap=te_loss - tr_loss,
        acc_gap=tr_acc - te_acc,
        n_train=n_tr,
        n_test=n_te,
    )


@register_measure(
    "gap",
    cost="cheap",
    option_names=[generalization_gap],
    requires=["test_data"],
)
def _gap_measure(context: MeasureContext, **options: Any) -> Dict[str, float]:
    """``gap/loss``, ``gap/acc``, ``gap/{train,test}_{loss,acc}``."""
    g = generalization_gap(
        context.model, context.loss_fn, context.train_data, context.test_data, **options
    )
    return {
        "gap/loss": g.loss_gap,
        "gap/acc": g.acc_gap,
        "gap/train_loss": g.train_loss,
        "gap/test_loss": g.test_loss,
        "gap/train_acc": g.train_acc,
        "gap/test_acc": g.test_acc,
    }
