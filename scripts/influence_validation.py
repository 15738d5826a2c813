"""Koh & Liang (2017), figure 2: influence functions against leave-one-out retraining.

"Understanding Black-box Predictions via Influence Functions" (Koh & Liang,
ICML 2017) checks that the influence function predicts the change of a test
loss when one training point is removed: for the training points of largest
predicted effect, the model is retrained without the point and the actual
change is measured. They report a Pearson correlation of about 0.99 for
logistic regression (convex) and 0.86 for a CNN (non-convex, not converged,
damping 0.01). This script repeats both on scikit-learn's 8x8 digits with
:func:`ibmonitor.explain.influence`:

- **convex**: multinomial logistic regression (``nn.Linear(64, 10)``, float64)
  with the L2 term ``lam * ||w||^2`` (``lam = 1e-3``), trained to a gradient
  norm below 1e-10 by L-BFGS; influence with the exact Hessian and
  ``damping = 2 * lam`` (the Hessian of the L2 term). The test point is the
  one of highest loss. For the ``--retrains`` training points of largest
  ``|influence|`` the model is retrained from the optimum without the point
  (objective ``(1/n) sum_{i != j} l_i + lam ||w||^2``, same tolerance).
- **cnn**: :class:`ibmonitor.zoo.DigitsCNN` (4 channels, 16 hidden units,
  ReLU and max-pooling, 1398 parameters, float64) with the same L2 term,
  trained by Adam then L-BFGS, which does not reach a minimum of this
  non-smooth loss. As Koh & Liang do for their non-convergent CNN: influence
  by conjugate gradients with ``damping = 2 * lam + 0.01``, and the actual
  change measured between two retrainings from the trained weights with the
  same L-BFGS budget, one with and one without the point (so that the drift
  of continued training cancels).

Printed: per case the correlation (Pearson and Spearman) of predicted and
actual loss changes over the retrained points, the slope of actual on
predicted, and the time taken. ``--quick`` uses fewer training points,
retrains and L-BFGS iterations.

Usage::

    python scripts/influence_validation.py            # 50 retrains per case
    python scripts/influence_validation.py --quick    # 50 convex, 10 CNN
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from ibmonitor.datasets import digits
from ibmonitor.explain import influence
from ibmonitor.zoo import DigitsCNN

LAM = 1e-3
#: Koh & Liang's damping for the non-convex CNN (added to 2 * LAM).
CNN_EXTRA_DAMPING = 0.01
#: (n_train, retrains, L-BFGS iterations of training, of each retrain) per mode.
SETTINGS = {
    "convex": {"full": (1000, 50, 2000, 500), "quick": (500, 50, 2000, 500)},
    "cnn": {"full": (1000, 50, 500, 100), "quick": (300, 10, 200, 50)},
}


def _data(n_train: int, seed: int):
    x, y = digits()
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:n_train], perm[n_train:]
    return x[train], y[train], x[test], y[test]


def _objective(model: nn.Module, x, y, n: int) -> torch.Tensor:
    """``(1/n) sum of the losses over (x, y) + LAM * ||w||^2`` (n: full set size)."""
    l2 = sum((p**2).sum() for p in model.parameters())
    return F.cross_entropy(model(x), y, reduction="sum") / n + LAM * l2


def _lbfgs(model: nn.Module, x, y, n: int, iterations: int, tol: float) -> int:
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=100,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = _objective(model, x, y, n)
        loss.backward()
        return loss

    opt.step(closure)
    return int(opt.state[opt._params[0]].get("n_iter", 0))


def _grad_norm(model: nn.Module, x, y, n: int) -> float:
    grads = torch.autograd.grad(_objective(model, x, y, n), list(model.parameters()))
    return float(torch.sqrt(sum((g**2).sum() for g in grads)))


def _test_loss(model: nn.Module, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _compare(predicted: np.ndarray, actual: np.ndarray) -> Dict[str, float]:
    slope = float(np.polyfit(predicted, actual, 1)[0]) if len(actual) > 1 else np.nan
    return {
        "pearson": float(np.corrcoef(predicted, actual)[0, 1]),
        "spearman": float(stats.spearmanr(predicted, actual).statistic),
        "slope": slope,
    }


def run_convex(
    n_train: int, retrains: int, train_iter: int, retrain_iter: int, seed: int = 0
) -> Dict[str, object]:
    """Logistic regression: predicted vs actual leave-one-out loss change."""
    start = time.perf_counter()
    xtr, ytr, xte, yte = _data(n_train, seed)
    xtr, xte = xtr.flatten(1), xte.flatten(1)
    torch.manual_seed(seed)
    model = nn.Linear(64, 10).double()
    _lbfgs(model, xtr, ytr, n_train, train_iter, 1e-12)
    with torch.no_grad():
        losses = F.cross_entropy(model(xte), yte, reduction="none")
    j = int(losses.argmax())
    x_test, y_test = xte[j : j + 1], yte[j : j + 1]
    table = influence(
        model, nn.CrossEntropyLoss(), (xtr, ytr), (x_test, y_test), damping=2 * LAM
    )
    values = table["influence"].to_numpy()
    chosen = np.argsort(-np.abs(values), kind="stable")[:retrains]
    base = _test_loss(model, x_test, y_test)
    actual = []
    for i in chosen:
        keep = torch.ones(n_train, dtype=torch.bool)
        keep[int(i)] = False
        retrained = copy.deepcopy(model)
        _lbfgs(retrained, xtr[keep], ytr[keep], n_train, retrain_iter, 1e-12)
        actual.append(_test_loss(retrained, x_test, y_test) - base)
    return {
        "case": "convex",
        "n_train": n_train,
        "n_params": table.attrs["n_params"],
        "retrains": len(chosen),
        "grad_norm": _grad_norm(model, xtr, ytr, n_train),
        **_compare(values[chosen], np.asarray(actual)),
        "seconds": time.perf_counter() - start,
    }


def run_cnn(
    n_train: int,
    retrains: int,
    train_iter: int,
    retrain_iter: int,
    seed: int = 0,
    adam_steps: int = 300,
) -> Dict[str, object]:
    """The digits CNN: predicted vs actual change, retrained with and without."""
    start = time.perf_counter()
    xtr, ytr, xte, yte = _data(n_train, seed)
    torch.manual_seed(seed)
    model = DigitsCNN(channels=4, hidden=16).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(adam_steps):
        opt.zero_grad()
        _objective(model, xtr, ytr, n_train).backward()
        opt.step()
    _lbfgs(model, xtr, ytr, n_train, train_iter, 1e-10)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        losses = F.cross_entropy(model(xte), yte, reduction="none")
    j = int(losses.argmax())
    x_test, y_test = xte[j : j + 1], yte[j : j + 1]
    damping = 2 * LAM + CNN_EXTRA_DAMPING
    table = influence(
        model,
        nn.CrossEntropyLoss(),
        (xtr, ytr),
        (x_test, y_test),
        damping=damping,
        method="cg",
    )
    values = table["influence"].to_numpy()
    chosen = np.argsort(-np.abs(values), kind="stable")[:retrains]
    # The same L-BFGS budget with every point: the baseline of each change.
    reference = copy.deepcopy(model)
    _lbfgs(reference, xtr, ytr, n_train, retrain_iter, 1e-10)
    base = _test_loss(reference, x_test, y_test)
    actual = []
    for i in chosen:
        keep = torch.ones(n_train, dtype=torch.bool)
        keep[int(i)] = False
        retrained = copy.deepcopy(model)
        _lbfgs(retrained, xtr[keep], ytr[keep], n_train, retrain_iter, 1e-10)
        actual.append(_test_loss(retrained, x_test, y_test) - base)
    return {
        "case": "cnn",
        "n_train": n_train,
        "n_params": table.attrs["n_params"],
        "retrains": len(chosen),
        "grad_norm": _grad_norm(model, xtr, ytr, n_train),
        **_compare(values[chosen], np.asarray(actual)),
        "cg_iterations": table.attrs["cg_iterations"][0],
        "seconds": time.perf_counter() - start,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument(
        "--cases", nargs="+", choices=("convex", "cnn"), default=["convex", "cnn"]
    )
    parser.add_argument("--retrains", type=int, help="retrains per case")
    parser.add_argument("--n-train", type=int, help="training points per case")
    parser.add_argument(
        "--cnn-train-iter", type=int, help="L-BFGS iterations to train the CNN"
    )
    parser.add_argument(
        "--cnn-retrain-iter", type=int, help="L-BFGS iterations of each CNN retrain"
    )
    parser.add_argument(
        "--cnn-adam-steps", type=int, default=300, help="Adam steps before L-BFGS"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    rows = []
    for case in args.cases:
        n_train, retrains, train_iter, retrain_iter = SETTINGS[case][mode]
        n_train = args.n_train or n_train
        retrains = args.retrains or retrains
        if case == "convex":  # always trained and retrained to convergence
            rows.append(
                run_convex(n_train, retrains, train_iter, retrain_iter, args.seed)
            )
            continue
        train_iter = args.cnn_train_iter or train_iter
        retrain_iter = args.cnn_retrain_iter or retrain_iter
        rows.append(
            run_cnn(
                n_train,
                retrains,
                train_iter,
                retrain_iter,
                args.seed,
                adam_steps=args.cnn_adam_steps,
            )
        )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 120, "display.max_columns", None):
        print("Influence vs leave-one-out retraining (Koh & Liang 2017, fig. 2)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
