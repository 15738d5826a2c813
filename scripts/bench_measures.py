"""What does each measure cost? Time and Hessian-vector products per measure.

Run by ``make bench``. In one run of this script, on the same machine:

- **digits**: :class:`ibmonitor.zoo.DigitsCNN` on scikit-learn's digits
  (:func:`ibmonitor.datasets.digits`; 80% train split, Adam lr 1e-3, batch 64);
- **twelve_bit**: the 12-10-7-5-4-3-2 tanh network
  (:func:`ibmonitor.zoo.tishby_mlp`) on the 4096 12-bit inputs
  (:func:`ibmonitor.datasets.twelve_bit`; 80% train split, Adam lr 4e-4,
  batch 512).

Each network is trained first (digits 5 epochs, twelve_bit 50; ``--quick``: 2
and 10; the time of one training epoch is the median over them, the first
excluded), then every measure runs on the
training split (test split for the gap) at the settings the monitor uses
(:func:`ibmonitor.measures.compute_measures`'s defaults; evaluation batch size
1024), ``--repeats`` times; the table gives the median wall time and process CPU
time (robust on a shared machine when run with ``--threads 1``), each also in
training epochs (wall or CPU time of one epoch), and the operations counted by
:func:`ibmonitor.measures.counting`: Hessian-vector products (``hvp``), gradient
evaluations over the data (``grad``) and full forward passes over the data
(``passes`` = forward batches / batches in the training split).

**Side by side with PyHessian** (Yao et al. 2020; ``pip install pyhessian``, a
benchmark-only dependency, skipped with a note when it is not installed): on one
batch (digits: the first 1,000 training images; twelve_bit: the whole training
split, 3,277 inputs) the top Hessian eigenvalue (ibmonitor's Lanczos and power
iteration, PyHessian's power iteration, all at ``tol=1e-3``) and the trace from
100 Hutchinson vectors (PyHessian's ``trace(maxIter=100, tol=-1)``: a negative
tol turns off its early stop, so both use exactly 100 vectors). PyHessian's
times include building its object (the forward pass and the first backward
with ``create_graph=True``), as ibmonitor's include theirs.

Usage::

    python scripts/bench_measures.py                 # full (a few minutes on CPU)
    python scripts/bench_measures.py --only-pyhessian  # just the comparison
    python scripts/bench_measures.py --no-pyhessian    # skip the comparison
    python scripts/bench_measures.py --quick         # 1 training epoch, 1 repeat
    python scripts/bench_measures.py --json out.json # also write JSON
    python scripts/bench_measures.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ibmonitor import datasets, measures, zoo
from ibmonitor.measures import counting

EVAL_BATCH = 1024


def _split(n: int, seed: int, fraction: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = round(fraction * n)
    return order[:cut], order[cut:]


def problem(name: str, device: torch.device, seed: int) -> Dict[str, Any]:
    torch.manual_seed(seed)
    if name == "digits":
        x, y = datasets.digits()
        model, lr, batch = zoo.DigitsCNN(), 1e-3, 64
    else:
        x, y = datasets.twelve_bit()
        model, lr, batch = zoo.tishby_mlp(), 4e-4, 512
    train, test = _split(len(x), seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return {
        "name": name,
        "model": model.to(device),
        "lr": lr,
        "batch": batch,
        "train": (xt[train].to(device), yt[train].to(device)),
        "test": (xt[test].to(device), yt[test].to(device)),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epochs(
    prob: Dict[str, Any], epochs: int, device: torch.device
) -> List[float]:
    model, (x, y) = prob["model"], prob["train"]
    opt = torch.optim.Adam(model.parameters(), lr=prob["lr"])
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    times, cpu = [], []
    model.train()
    for _ in range(epochs):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(len(x), generator=gen).to(device)
        for i in range(0, len(x), prob["batch"]):
            idx = order[i : i + prob["batch"]]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    opt.zero_grad(set_to_none=True)
    return times, cpu


def measure_cases(
    prob: Dict[str, Any], init: Dict[str, torch.Tensor]
) -> List[Tuple[str, str, Callable[[], Any]]]:
    """(measure, settings, thunk) triples."""
    model, train, test = prob["model"], prob["train"], prob["test"]
    lf = nn.CrossEntropyLoss()
    cases = [
        (
            "gap",
            "train + test pass",
            lambda: measures.generalization_gap(model, lf, train, test),
        ),
        (
            "norms",
            "power iteration, path norm",
            lambda: measures.norms(model, init, input_shape=tuple(train[0].shape[1:])),
        ),
    ]
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        cases.append(
            (
                "norms",
                "+ exact conv (FFT)",
                lambda: measures.norms(
                    model, init, example_input=train[0][:1], exact_conv=True
                ),
            )
        )
    cases += [
        (
            "hessian_eigenvalues",
            "k=1, lanczos, tol=1e-3",
            lambda: measures.hessian_eigenvalues(model, lf, train),
        ),
        (
            "hessian_eigenvalues",
            "k=1, power, tol=1e-3",
            lambda: measures.hessian_eigenvalues(model, lf, train, method="power"),
        ),
        (
            "hessian_eigenvalues",
            "k=5, lanczos, tol=1e-3",
            lambda: measures.hessian_eigenvalues(model, lf, train, k=5),
        ),
        (
            "hessian_trace",
            "n_samples=20",
            lambda: measures.hessian_trace(model, lf, train, n_samples=20),
        ),
        (
            "hessian_trace",
            "n_samples=100 (default)",
            lambda: measures.hessian_trace(model, lf, train, n_samples=100),
        ),
        (
            "hessian_eigenvalues",
            "k=1, max_batches=1",
            lambda: measures.hessian_eigenvalues(model, lf, train, max_batches=1),
        ),
        (
            "worst_case_sharpness",
            "eps=1e-3, 10 steps, full space",
            lambda: measures.worst_case_sharpness(model, lf, train),
        ),
        (
            "worst_case_sharpness",
            "eps=1e-3, 10 steps, subspace 100",
            lambda: measures.worst_case_sharpness(model, lf, train, subspace_dim=100),
        ),
        (
            "expected_sharpness",
            "sigma=0.01, 10 antithetic draws",
            lambda: measures.expected_sharpness(model, lf, train),
        ),
        (
            "pac_bayes",
            "defaults (15 steps x 10 draws)",
            lambda: measures.pac_bayes(model, lf, train, init=init),
        ),
        (
            "pac_bayes",
            "magnitude-aware",
            lambda: measures.pac_bayes(
                model, lf, train, init=init, magnitude_aware=True
            ),
        ),
        (
            "compute_measures",
            "all six, monitor defaults",
            lambda: measures.compute_measures(
                measures.available_measures(), model, lf, train, test, init
            ),
        ),
    ]
    return cases


PYHESSIAN_BATCH = {"digits": 1000, "twelve_bit": None}  # None: the whole split


def pyhessian_rows(
    prob: Dict[str, Any], device: torch.device, repeats: int
) -> List[Dict[str, Any]]:
    """Top-1 eigenvalue and 100-vector trace: ibmonitor vs PyHessian, one batch."""
    import importlib

    # pyhessian/__init__.py rebinds the name "hessian" to the class: take the module.
    pyh = importlib.import_module("pyhessian.hessian")

    model, lf = prob["model"], nn.CrossEntropyLoss()
    n = PYHESSIAN_BATCH[prob["name"]] or len(prob["train"][0])
    batch = (prob["train"][0][:n], prob["train"][1][:n])
    calls = {"hvp": 0}
    original = pyh.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["hvp"] += 1
        return original(*args, **kwargs)

    def with_pyhessian(method: str) -> Callable[[], Any]:
        def thunk() -> Any:
            calls["hvp"] = 0
            pyh.hessian_vector_product = counted
            try:
                h = pyh.hessian(model, lf, data=batch, cuda=device.type == "cuda")
                if method == "eig":
                    out = (h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0],)
                else:
                    out = float(np.mean(h.trace(maxIter=100, tol=-1)))
            finally:
                pyh.hessian_vector_product = original
                # PyHessian leaves .grad (with its graph) on the parameters.
                model.zero_grad(set_to_none=True)
            return out, calls["hvp"]

        return thunk

    def with_ibmonitor(thunk: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with counting() as counts:
                out = thunk()
            return out, counts.hvp

        return run

    cases = [
        (
            "top eigenvalue",
            "ibmonitor lanczos",
            with_ibmonitor(
                lambda: measures.hessian_eigenvalues(model, lf, batch, batch_size=n)
            ),
        ),
        (
            "top eigenvalue",
            "ibmonitor power",
            with_ibmonitor(
                lambda: measures.hessian_eigenvalues(
                    model, lf, batch, batch_size=n, method="power"
                )
            ),
        ),
        ("top eigenvalue", "PyHessian power", with_pyhessian("eig")),
        (
            "trace, 100 vectors",
            "ibmonitor",
            with_ibmonitor(
                lambda: measures.hessian_trace(model, lf, batch, 100, batch_size=n)
            ),
        ),
        ("trace, 100 vectors", "PyHessian", with_pyhessian("trace")),
    ]
    was_training = model.training
    # Round robin: every repeat runs each case once, so a shared machine's
    # load drifts over all of them alike; one untimed warm-up call each first.
    # A timing covers `inner` calls (at least 0.2 s), so that millisecond cases
    # are not at the mercy of one scheduler hiccup; the time is per call.
    times: List[List[float]] = [[] for _ in cases]
    results: List[Any] = [None] * len(cases)
    inner: List[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, _, thunk in cases:
            thunk()
            _sync(device)
            start = time.perf_counter()
            thunk()
            _sync(device)
            inner.append(max(1, math.ceil(0.2 / (time.perf_counter() - start))))
        for _ in range(repeats):
            for i, (_, _, thunk) in enumerate(cases):
                _sync(device)
                start = time.perf_counter()
                for _ in range(inner[i]):
                    results[i] = thunk()
                _sync(device)
                times[i].append((time.perf_counter() - start) / inner[i])
    rows = []
    for (quantity, tool, _), elapsed, (result, hvp) in zip(cases, times, results):
        seconds = statistics.median(elapsed)
        value = (
            result[0] if isinstance(result, tuple) else getattr(result, "mean", result)
        )
        rows.append(
            {
                "network": prob["name"],
                "batch": n,
                "quantity": quantity,
                "tool": tool,
                "seconds": seconds,
                "hvp": hvp,
                "ms_per_hvp": 1e3 * seconds / max(hvp, 1),
                "value": float(value),
            }
        )
        print(
            f"  {quantity:<19} {tool:<18} {seconds:8.3f} s  hvp={hvp:<4} "
            f"{rows[-1]['ms_per_hvp']:7.2f} ms/hvp  value={float(value):.5g}",
            flush=True,
        )
    model.train(was_training)
    return rows


def pyhessian_table(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| network | batch | quantity | tool | time (s) | HVPs | ms / HVP | value "
        "| time / PyHessian's |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    ref = {
        (r["network"], r["quantity"]): r["seconds"]
        for r in rows
        if r["tool"].startswith("PyHessian")
    }
    for r in rows:
        ratio = r["seconds"] / ref[(r["network"], r["quantity"])]
        lines.append(
            f"| {r['network']} | {r['batch']} | {r['quantity']} | {r['tool']} | "
            f"{r['seconds']:.3f} | {r['hvp']} | {r['ms_per_hvp']:.2f} | "
            f"{r['value']:.5g} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def _value(result: Any) -> str:
    if isinstance(result, float):
        return f"{result:.4g}"
    if isinstance(result, tuple):
        return ", ".join(f"{v:.4g}" for v in result[:3])
    if isinstance(result, dict):
        return f"{len(result)} scalars"
    if hasattr(result, "columns"):
        return f"{result.shape[0]} rows"
    for attr in ("mean", "bound", "loss_gap"):
        if hasattr(result, attr):
            return f"{attr}={getattr(result, attr):.4g}"
    return ""


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs_for = (
        {"digits": 2, "twelve_bit": 10}
        if args.quick
        else {
            "digits": args.epochs,
            "twelve_bit": args.epochs_twelve_bit,
        }
    )
    repeats = 1 if args.quick else args.repeats
    rows: List[Dict[str, Any]] = []
    nets: Dict[str, Any] = {}
    comparison: List[Dict[str, Any]] = []
    try:
        import pyhessian  # noqa: F401

        pyhessian_available = True
    except ImportError:
        pyhessian_available = False
    for name in args.networks:
        prob = problem(name, device, args.seed)
        init = copy.deepcopy(prob["model"].state_dict())
        times, cpu_times = train_epochs(prob, epochs_for[name], device)
        epoch_s = statistics.median(times[1:] if len(times) > 1 else times)
        epoch_cpu = statistics.median(cpu_times[1:] if len(times) > 1 else cpu_times)
        n_train = len(prob["train"][0])
        n_batches = math.ceil(n_train / EVAL_BATCH)
        gap = measures.generalization_gap(
            prob["model"], nn.CrossEntropyLoss(), prob["train"], prob["test"]
        )
        nets[name] = {
            "n_params": sum(p.numel() for p in prob["model"].parameters()),
            "n_train": n_train,
            "epoch_s": epoch_s,
            "epoch_cpu_s": epoch_cpu,
            "train_batch": prob["batch"],
            "train_epochs": epochs_for[name],
            "train_acc": gap.train_acc,
            "test_acc": gap.test_acc,
        }
        print(
            f"# {name}: {nets[name]['n_params']} parameters, {n_train} training "
            f"samples, one epoch (batch {prob['batch']}) = {epoch_s * 1e3:.1f} ms, "
            f"train/test accuracy {gap.train_acc:.3f}/{gap.test_acc:.3f}",
            flush=True,
        )
        if args.pyhessian:
            if pyhessian_available:
                comparison += pyhessian_rows(prob, device, args.pyhessian_repeats)
            else:
                print("  (PyHessian is not installed: pip install pyhessian)")
        if args.only_pyhessian:
            continue
        for measure, settings, thunk in measure_cases(prob, init):
            elapsed, elapsed_cpu, notes = [], [], set()
            for _ in range(repeats):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    _sync(device)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    with counting() as counts:
                        result = thunk()
                    _sync(device)
                    elapsed.append(time.perf_counter() - start)
                    elapsed_cpu.append(time.process_time() - start_cpu)
                notes |= {type(w.message).__name__ for w in caught}
            seconds = statistics.median(elapsed)
            cpu_seconds = statistics.median(elapsed_cpu)
            row = {
                "network": name,
                "measure": measure,
                "settings": settings,
                "seconds": seconds,
                "epochs": seconds / epoch_s,
                "cpu_seconds": cpu_seconds,
                "cpu_epochs": cpu_seconds / epoch_cpu,
                "hvp": counts.hvp,
                "grad": counts.grad,
                "passes": counts.forward / n_batches,
                "value": _value(result),
                "note": ",".join(sorted(notes)),
            }
            rows.append(row)
            print(
                f"  {measure:<21} {settings:<34} {seconds:8.3f} s "
                f"{row['epochs']:8.1f} ep  hvp={counts.hvp:<4} grad={counts.grad:<3} "
                f"passes={row['passes']:<6.1f} {row['value']} {row['note']}",
                flush=True,
            )
    return {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "repeats": repeats,
        "eval_batch_size": EVAL_BATCH,
        "networks": nets,
        "rows": rows,
        "pyhessian": comparison,
    }


def table(result: Dict[str, Any]) -> str:
    lines = [
        f"device {result['device']} ({result['device_name']}), torch "
        f"{result['torch']}, {result['threads']} threads, median of "
        f"{result['repeats']} run(s)",
        "",
        "| network | measure | settings | time (s) | x epoch | CPU time (s) | "
        "x epoch (CPU) | HVPs | grads | data passes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, net in result["networks"].items():
        if not any(r["network"] == name for r in result["rows"]):
            continue
        lines.append(
            f"| {name} | one training epoch | batch {net['train_batch']}, "
            f"{net['n_train']} samples | {net['epoch_s']:.3f} | 1 | "
            f"{net['epoch_cpu_s']:.3f} | 1 | - | - | - |"
        )
        for r in result["rows"]:
            if r["network"] != name:
                continue
            lines.append(
                f"| {name} | {r['measure']} | {r['settings']} | {r['seconds']:.3f} | "
                f"{r['epochs']:.1f} | {r['cpu_seconds']:.3f} | {r['cpu_epochs']:.1f} | "
                f"{r['hvp']} | {r['grad']} | {r['passes']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short training, 1 repeat")
    parser.add_argument("--epochs", type=int, default=5, help="digits epochs")
    parser.add_argument("--epochs-twelve-bit", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: as is)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["digits", "twelve_bit"],
        choices=["digits", "twelve_bit"],
    )
    parser.add_argument(
        "--no-pyhessian",
        dest="pyhessian",
        action="store_false",
        help="skip the side-by-side comparison with PyHessian",
    )
    parser.add_argument(
        "--only-pyhessian",
        action="store_true",
        help="train, then run only the comparison with PyHessian",
    )
    parser.add_argument(
        "--pyhessian-repeats",
        type=int,
        default=5,
        help="repeats of each case in the PyHessian comparison (median)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.only_pyhessian:
        args.pyhessian = True
    result = run(args)
    print()
    if result["rows"]:
        print(table(result))
    if result["pyhessian"]:
        print()
        print(pyhessian_table(result["pyhessian"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
