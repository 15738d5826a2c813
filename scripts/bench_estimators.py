"""How fast are the estimators? ibmonitor against straightforward numpy baselines.

Run by ``make bench``. Every figure is measured in one run of this script, on the
same machine and data. Each layer is timed on its own, ibmonitor and its
baseline alternately, as the best of ``--repeats`` timings after a warm-up
call, a timing running the call as many times as it takes to last 0.1 s (as
``timeit`` does) and dividing; a figure sums these over the layers of its
workload:

- **(a)** the six layers of ``act_epoch8000.npz`` (the reference activations in
  ``../shared/data/reference-activations``, n = 4096):

  * ``binned`` (default settings: 30 edges over each layer's min..max) against
    ``numpy.digitize`` then ``numpy.unique(symbols, axis=0,
    return_counts=True)`` for H(T) and for each class (binned's per-grid
    cache is cleared before each call, as a monitor's ranges change every
    epoch);
  * ``kde`` with both bounds (``bound="both"``, noise variance 1e-3) against a
    dense float64 squared-distance matrix and ``scipy.special.logsumexp``,
    computed separately for the whole set and for each class, for each bound;

- **(b)** ``binned`` on n = 10,000 samples of one 256-unit tanh layer (a random
  network on Gaussian inputs, 10 classes), against the same binned baseline;
- **(c)** ``kde`` (both bounds) and ``knn`` (``x`` given, k = 3) at n = 50,000,
  d = 64: time and peak memory, each in a fresh subprocess; the memory figure
  is the peak resident set size during the call minus the resident set size
  just before it, with the data in memory and the code paths warmed (on Linux
  the peak is restarted through ``/proc/self/clear_refs``; elsewhere the
  increase of ``ru_maxrss`` is reported).

Targets (issue 2): binned <= 0.1x its baseline on (a) and (b); kde <= 0.15x on
(a); (c) under 2 GB. Each ibmonitor result is checked against its baseline's
(the largest absolute difference is printed).

Both sides run on ``--threads`` threads (torch's intra-op pool and numpy's BLAS,
through threadpoolctl; default 1, the fair setting against single-threaded
numpy and the stable one on a shared machine).

Usage::

    python scripts/bench_estimators.py              # everything (minutes)
    python scripts/bench_estimators.py --quick      # (c) at n = 5,000
    python scripts/bench_estimators.py --json results.json
    python scripts/bench_estimators.py --parts ab   # leave out (c)
    python scripts/bench_estimators.py --device cuda  # ibmonitor on the GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibmonitor import estimators
from ibmonitor.estimators import binning
from ibmonitor.exceptions import EstimationWarning

REFERENCE = ROOT.parent / "shared" / "data" / "reference-activations"
LAYERS = ("T_1", "T_2", "T_3", "T_4", "T_5", "T_6")
NOISE_VARIANCE = 1e-3


# ------------------------------------------------------------------- baselines


def _entropy_rows(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def binned_baseline(
    t: np.ndarray, y: np.ndarray, n_bins: int = 30
) -> Tuple[float, float]:
    """I(X;T), I(T;Y) in bits: numpy.digitize, then numpy.unique rows per class."""
    edges = np.linspace(float(t.min()), float(t.max()), n_bins)
    symbols = np.digitize(t, edges)
    h_t = _entropy_rows(symbols)
    h_t_y = sum((y == c).mean() * _entropy_rows(symbols[y == c]) for c in np.unique(y))
    return h_t, h_t - h_t_y


def kde_baseline(
    t: np.ndarray, y: np.ndarray, var: float
) -> Dict[str, Tuple[float, float]]:
    """Both KDE bounds with dense float64 distances, whole set and per class."""

    def h(z: np.ndarray, factor: float) -> float:
        sq = (z * z).sum(axis=1)
        d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
        lse = logsumexp(-d / (factor * var), axis=1) - math.log(len(z))
        return float(-lse.mean() / math.log(2.0))

    t = t.astype(np.float64)
    out = {}
    for bound, factor in (("upper", 2.0), ("lower", 8.0)):
        h_t = h(t, factor)
        h_c = sum((y == c).mean() * h(t[y == c], factor) for c in np.unique(y))
        out[bound] = (h_t, h_t - h_c)
    return out


# --------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _calls_per_timing(f: Callable[[], Any], device: str, min_time: float) -> int:
    """Calls needed for one timing to last ``min_time`` (as ``timeit`` does)."""
    number = 1
    while True:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(number):
            f()
        _sync(device)
        if time.perf_counter() - t0 >= min_time or number >= 1 << 16:
            return number
        number *= 2


def best_of(
    items: List[Dict[str, Callable[[], Any]]],
    repeats: int,
    device: str,
    min_time: float = 0.1,
) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """Time each item's functions; return the summed best times and the results.

    ``items`` holds one ``{"ibmonitor": f, "baseline": g}`` per layer. Each
    function is called once untimed (warm-up; its result is kept for the
    comparison). A timing runs a function enough times in a row to last at
    least ``min_time`` seconds (as ``timeit`` does, so that a sub-millisecond
    call is not timed against the scheduler's granularity) and divides; each
    side gets ``repeats`` timings, alternating with the other side, and keeps
    the best. A figure is the sum over the layers of these per-call times.
    """
    totals: Dict[str, float] = {}
    results = []
    for funcs in items:
        results.append({k: f() for k, f in funcs.items()})
        numbers = {k: _calls_per_timing(f, device, min_time) for k, f in funcs.items()}
        best = dict.fromkeys(funcs, math.inf)
        for _ in range(repeats):
            for k, f in funcs.items():
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(numbers[k]):
                    f()
                _sync(device)
                best[k] = min(best[k], (time.perf_counter() - t0) / numbers[k])
        for k, v in best.items():
            totals[k] = totals.get(k, 0.0) + v
    return totals, results


def tanh_layer(
    n: int, n_units: int, n_inputs: int = 64, n_classes: int = 10, seed: int = 0
):
    """A tanh layer of a random network on Gaussian inputs, labels by a read-out."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_inputs))
    w = rng.standard_normal((n_inputs, n_units)) * (2.0 / np.sqrt(n_inputs))
    t = np.tanh(x @ w).astype(np.float32)
    y = np.argmax(t @ rng.standard_normal((n_units, n_classes)), axis=1).astype(
        np.int64
    )
    return x.astype(np.float32), t, y


# ------------------------------------------------------------------ workloads


def _to(device: str, *arrays: np.ndarray) -> List[Any]:
    if device == "cpu":
        return list(arrays)
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _quiet_binned(t: Any, y: Any) -> Any:
    # A monitor's layer has a new min..max at every epoch, so the per-grid
    # exactness check is not cached across its calls: do not let it be here.
    binning._uniform_plan.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimationWarning)  # every sample alone
        return estimators.binned(t, y)


def bench_binned(
    label: str, layers: List[np.ndarray], y: np.ndarray, repeats: int, device: str
) -> Dict[str, Any]:
    dev_layers = _to(device, *layers)
    (dev_y,) = _to(device, y)
    items = [
        {
            "ibmonitor": lambda d=d: _quiet_binned(d, dev_y),
            "baseline": lambda t=t: binned_baseline(t, y),
        }
        for t, d in zip(layers, dev_layers)
    ]
    times, results = best_of(items, repeats, device)
    diff = max(
        max(
            abs(r["ibmonitor"].i_xt - r["baseline"][0]),
            abs(r["ibmonitor"].i_ty - r["baseline"][1]),
        )
        for r in results
    )
    return _row(label, "binned", times, 0.1, diff)


def bench_kde(
    label: str, layers: List[np.ndarray], y: np.ndarray, repeats: int, device: str
) -> Dict[str, Any]:
    dev_layers = _to(device, *layers)
    (dev_y,) = _to(device, y)
    items = [
        {
            "ibmonitor": lambda d=d: estimators.kde(
                d, dev_y, noise_variance=NOISE_VARIANCE, bound="both"
            ),
            "baseline": lambda t=t: kde_baseline(t, y, NOISE_VARIANCE),
        }
        for t, d in zip(layers, dev_layers)
    ]
    times, results = best_of(items, repeats, device)
    diff = 0.0
    for res in results:
        r, b = res["ibmonitor"], res["baseline"]
        diff = max(
            diff,
            abs(r.i_xt - b["upper"][0]),
            abs(r.i_ty - b["upper"][1]),
            abs(r.extras.get("i_xt_lower", math.nan) - b["lower"][0]),
            abs(r.extras.get("i_ty_lower", math.nan) - b["lower"][1]),
        )
    return _row(label, "kde (both bounds)", times, 0.15, diff)


def _row(label, estimator, times, target, diff) -> Dict[str, Any]:
    ratio = times["ibmonitor"] / times["baseline"]
    return {
        "workload": label,
        "estimator": estimator,
        "ibmonitor_s": times["ibmonitor"],
        "baseline_s": times["baseline"],
        "ratio": ratio,
        "target": target,
        "meets_target": ratio <= target,
        "max_abs_diff_bits": diff,
    }


_LARGE = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    import numpy as np, torch
    from threadpoolctl import threadpool_limits
    sys.path.insert(0, {root!r})
    from ibmonitor import estimators

    def status_mb(key):
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None

    def reset_peak():
        try:  # Linux: make the peak RSS (VmHWM) restart from the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    torch.set_num_threads({threads})
    threadpool_limits({threads})
    rng = np.random.default_rng(0)
    n, d = {n}, {d}
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, d)).astype(np.float32) * (2.0 / np.sqrt(d))
    t = np.tanh(x @ w)
    y = np.argmax(t @ rng.standard_normal((d, 10)).astype(np.float32), axis=1)
    tt, yt, xt = (torch.from_numpy(a).to({device!r}) for a in (t, y, x))
    name = {name!r}
    call = {{
        "kde": lambda k: estimators.kde(tt[:k], yt[:k], noise_variance=1e-3,
                                         bound="both"),
        "knn": lambda k: estimators.knn(tt[:k], yt[:k], x=xt[:k], k=3),
        "noisy": lambda k: estimators.noisy(tt[:k], yt[:k], noise_std=0.1),
    }}[name]
    cuda = {device!r}.startswith("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call(256)  # warm the code paths, so that the peak is the big call's own
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if reset_peak() and status_mb("VmHWM") is not None:
            before, how = status_mb("VmRSS"), "VmHWM after clear_refs"
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            how = "ru_maxrss"
        t0 = time.perf_counter()
        r = call(n)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    if how == "ru_maxrss":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    else:
        peak = status_mb("VmHWM")
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    print(json.dumps({{"seconds": elapsed, "rss_before_mb": before,
                      "rss_peak_mb": peak, "how": how, "gpu_peak_mb": gpu_mb,
                      "i_xt": r.i_xt, "i_ty": r.i_ty}}))
    """
)


def bench_large(name: str, n: int, d: int, threads: int, device: str) -> Dict[str, Any]:
    code = _LARGE.format(
        root=str(ROOT), n=n, d=d, threads=threads, device=device, name=name
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    part = "(d)" if name == "noisy" else "(c)"
    row: Dict[str, Any] = {"workload": f"{part} n={n:,}, d={d}", "estimator": name}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return row
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(
        {
            "seconds": res["seconds"],
            "peak_rss_increase_mb": res["rss_peak_mb"] - res["rss_before_mb"],
            "peak_rss_mb": res["rss_peak_mb"],
            "memory_measured_by": res["how"],
            "gpu_peak_mb": res["gpu_peak_mb"],
            "target_mb": 2048,
            "meets_target": (res["rss_peak_mb"] - res["rss_before_mb"]) < 2048,
            "i_xt": res["i_xt"],
            "i_ty": res["i_ty"],
        }
    )
    return row


# ----------------------------------------------------------------------- main


def _load_reference() -> Optional[Tuple[List[np.ndarray], np.ndarray]]:
    path = REFERENCE / "act_epoch8000.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return [data[k] for k in LAYERS], data["y"]


def _print_table(rows: List[Dict[str, Any]]) -> None:
    ratio_rows = [r for r in rows if "ratio" in r]
    if ratio_rows:
        head = (
            f"{'workload':<34} {'estimator':<18} {'ibmonitor':>10} {'baseline':>10} "
            f"{'ratio':>7} {'target':>7}  {'max |diff|':>10}"
        )
        print(head)
        print("-" * len(head))
        for r in ratio_rows:
            print(
                f"{r['workload']:<34} {r['estimator']:<18} "
                f"{r['ibmonitor_s'] * 1e3:>8.1f}ms {r['baseline_s'] * 1e3:>8.1f}ms "
                f"{r['ratio']:>6.3f}x {r['target']:>6.2f}x  "
                f"{r['max_abs_diff_bits']:>10.1e}"
                + ("" if r["meets_target"] else "  (misses target)")
            )
    large = [r for r in rows if "ratio" not in r]
    if large:
        print()
        head = (
            f"{'workload':<34} {'estimator':<18} {'time':>9} {'peak RSS increase':>18}"
        )
        print(head)
        print("-" * len(head))
        for r in large:
            if "error" in r:
                print(f"{r['workload']:<34} {r['estimator']:<18} error: {r['error']}")
                continue
            gpu = f"  (GPU peak {r['gpu_peak_mb']:.0f} MB)" if r["gpu_peak_mb"] else ""
            print(
                f"{r['workload']:<34} {r['estimator']:<18} {r['seconds']:>8.1f}s "
                f"{r['peak_rss_increase_mb']:>15.0f} MB{gpu}"
                + ("" if r["meets_target"] else "  (over 2 GB)")
            )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="(c) at n = 5,000 and one timing each"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings per layer")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--device", default="cpu", help="device of ibmonitor's tensors")
    parser.add_argument(
        "--parts",
        default="abcd",
        help="workloads to run, e.g. 'ab' or 'c' (default abcd; d: noisy)",
    )
    parser.add_argument("--skip-large", action="store_true", help="same as --parts ab")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "machine": platform.machine(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(
        f"torch {env['torch']}, numpy {env['numpy']}, {args.threads} thread(s), "
        f"{env['cpu_count']} CPUs, device {args.device}, best of {args.repeats}"
    )
    rows: List[Dict[str, Any]] = []
    parts = "ab" if args.skip_large else args.parts
    with threadpool_limits(args.threads):
        ref = _load_reference() if "a" in parts else None
        if "a" in parts and ref is None:
            print(f"(a) skipped: {REFERENCE / 'act_epoch8000.npz'} not found")
        if ref is not None:
            layers, y = ref
            label = "(a) act_epoch8000, 6 layers"
            rows.append(bench_binned(label, layers, y, args.repeats, args.device))
            rows.append(bench_kde(label, layers, y, args.repeats, args.device))
        if "b" in parts:
            _, t, y = tanh_layer(10_000, 256)
            label = "(b) n=10,000, one 256-unit layer"
            rows.append(bench_binned(label, [t], y, args.repeats, args.device))
    if "c" in parts:
        n = 5_000 if args.quick else 50_000
        for name in ("kde", "knn"):
            rows.append(bench_large(name, n, 64, args.threads, args.device))
    if "d" in parts:  # Goldfeld's noisy estimator (default n_mc), a probe's size
        for d in (12, 256):
            rows.append(bench_large("noisy", 4096, d, args.threads, args.device))
    print()
    _print_table(rows)
    if args.json:
        args.json.write_text(
            json.dumps({"environment": env, "results": rows}, indent=2)
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
