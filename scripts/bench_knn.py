"""How fast is the kNN estimator? Before and after issue 12, against one distance pass.

Times :func:`ibmonitor.estimators.knn` with inputs (``x`` given, ``k = 3``) on
the workload of ``scripts/bench_estimators.py`` (c): ``x`` standard normal of
``d`` = 64 features (float32), ``t = tanh(x @ w)`` with 64 units, ten classes,
at n = 10,000 and 50,000, for

- **pass**: one chunked ``torch.cdist(t_rows, t, p=inf)`` plus ``topk(4)``
  over the whole data (float64, the dtype the estimator searches in, row
  chunks of about 2**20 distances): the unit the issue counts costs in;
- **before**: the estimator as committed at ``git HEAD`` (``git show
  HEAD:ibmonitor/estimators/knn.py``, loaded as a temporary module; use
  ``--before PATH`` for another file, ``--no-before`` to skip it);
- **after (max)**: the current estimator, default metric (the max-norm,
  Kraskov et al.'s algorithm 1);
- **after (euclidean)**: ``metric="euclidean"`` (Euclidean marginals, matrix
  products).

Each figure is the best of ``--repeats`` calls (default 1), each after a
warm-up call on 256 samples, as wall time and process CPU time, on
``--threads`` torch threads (default 2); the pass is also timed once more
after the variants, and the best of its timings is the unit. Both columns are
reported because on a shared machine wall time includes waiting for the CPU;
CPU time is inflated less by other jobs (though cache and memory-bandwidth
contention, and threads spinning while they wait for each other, still
count). The table also gives each time in passes and the
estimates in bits (``before`` and ``after (max)`` must agree; the largest
difference is printed).

Usage::

    python scripts/bench_knn.py               # n = 10,000 and 50,000 (minutes)
    python scripts/bench_knn.py --quick       # n = 2,000 and 5,000
    python scripts/bench_knn.py --sizes 20000 --threads 1
    python scripts/bench_knn.py --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibmonitor.estimators import knn  # after ROOT is on sys.path

#: The decorator that registers the estimator; the old copy must not replace
#: the current one in the registry.
_REGISTER_LINE = '@register("knn", inputs="values", check=_check_params)\n'


def load_before(path: Optional[str]) -> Optional[types.ModuleType]:
    """The kNN module as committed at HEAD (or from ``path``), unregistered."""
    if path is not None:
        source = Path(path).read_text(encoding="utf-8")
    else:
        try:
            source = subprocess.run(
                ["git", "show", "HEAD:ibmonitor/estimators/knn.py"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"note: no 'before' timing ({exc}); pass --before PATH")
            return None
    source = source.replace(_REGISTER_LINE, "")
    name = "ibmonitor.estimators._knn_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "ibmonitor.estimators"  # its relative imports
    exec(compile(source, "knn_before.py", "exec"), module.__dict__)
    return module


def make_data(n: int, d: int, seed: int = 0):
    """The workload (c) of bench_estimators.py: x, t = tanh(x w), 10 classes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, d)).astype(np.float32) * (2.0 / np.sqrt(d))
    t = np.tanh(x @ w)
    y = np.argmax(t @ rng.standard_normal((d, 10)).astype(np.float32), axis=1)
    return tuple(torch.from_numpy(a) for a in (x, t, y))


def one_pass(t: torch.Tensor) -> None:
    """One chunked max-norm distance pass over ``t`` (float64) with a top-4."""
    u = t.to(torch.float64)
    n = u.shape[0]
    chunk = max(1, (1 << 20) // n)
    for s in range(0, n, chunk):
        dist = torch.cdist(u[s : s + chunk], u, p=math.inf)
        torch.topk(dist, 4, dim=1, largest=False)


def timed(call: Callable[..., Any], *args: Any) -> Dict[str, Any]:
    """Wall and process CPU time of ``call(*args)``, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call(*args)
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "result": result,
    }


def _keep_best(best: Dict[str, Dict[str, Any]], name: str, row: Dict[str, Any]) -> None:
    if name not in best or row["wall_s"] < best[name]["wall_s"]:
        best[name] = row


def run(
    sizes: List[int], d: int, before: Optional[types.ModuleType], repeats: int = 1
) -> List[Dict]:
    """Time every variant at every size; the best of ``repeats`` runs of each.

    The reference pass is timed before the variants and once more after them
    (the best of those is the unit), so that a change in the machine's load
    during a run shows as a spread rather than as a wrong ratio.
    """
    variants: List[tuple] = []
    if before is not None:
        variants.append(("before (max)", lambda x, t, y: before.knn(t, y, x=x, k=3)))
    variants += [
        ("after (max)", lambda x, t, y: knn(t, y, x=x, k=3)),
        ("after (euclidean)", lambda x, t, y: knn(t, y, x=x, k=3, metric="euclidean")),
    ]
    pass_name = "pass: cdist(p=inf) + topk"
    rows = []
    for n in sizes:
        x, t, y = make_data(n, d)
        xs, ts, ys = make_data(256, d, seed=1)
        best: Dict[str, Dict[str, Any]] = {}
        for rep in range(repeats):
            print(f"n = {n:,}, d = {d}, run {rep + 1}: one pass ...", flush=True)
            _keep_best(best, pass_name, timed(one_pass, t))
            for name, call in variants:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    call(xs, ts, ys)  # warm-up
                    print(f"n = {n:,}, run {rep + 1}: {name} ...", flush=True)
                    _keep_best(best, name, timed(call, x, t, y))
        print(f"n = {n:,}: one pass again ...", flush=True)
        _keep_best(best, pass_name, timed(one_pass, t))
        ref = best[pass_name]
        for name in [pass_name] + [v[0] for v in variants]:
            row = {"n": n, "variant": name, **best[name]}
            row["passes"] = row["wall_s"] / ref["wall_s"]
            row["cpu_passes"] = row["cpu_s"] / ref["cpu_s"]
            rows.append(row)
    return rows


def table(rows: List[Dict]) -> str:
    lines = [
        "| n | variant | wall (s) | CPU (s) | wall / pass | CPU / pass "
        "| I(X;T) (bits) | I(T;Y) (bits) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        est = r["result"]
        i_xt = "" if est is None else f"{est.i_xt:.4f}"
        i_ty = "" if est is None else f"{est.i_ty:.4f}"
        lines.append(
            f"| {r['n']:,} | {r['variant']} | {r['wall_s']:.3g} | {r['cpu_s']:.3g} "
            f"| {r['passes']:.2f} | {r['cpu_passes']:.2f} | {i_xt} | {i_ty} |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2,000 and 5,000")
    parser.add_argument("--sizes", type=int, nargs="+", help="sample sizes")
    parser.add_argument("--dim", type=int, default=64, help="features of x and t")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (best)")
    parser.add_argument("--before", help="file of the 'before' kNN module")
    parser.add_argument("--no-before", action="store_true", help="skip 'before'")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([2000, 5000] if args.quick else [10_000, 50_000])

    torch.set_num_threads(args.threads)
    before = None if args.no_before else load_before(args.before)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {platform.machine()}, "
        f"{args.threads} torch thread(s)"
    )
    rows = run(sizes, args.dim, before, max(1, args.repeats))
    print()
    print(table(rows))
    pairs = {}
    for r in rows:
        if r["variant"] in ("before (max)", "after (max)"):
            pairs.setdefault(r["n"], []).append(r["result"])
    diffs = [
        max(abs(a.i_xt - b.i_xt), abs(a.i_ty - b.i_ty))
        for a, b in (p for p in pairs.values() if len(p) == 2)
    ]
    if diffs:
        print(f"\nlargest |before - after| (max-norm): {max(diffs):.2e} bits")
    if args.json:
        out = []
        for r in rows:
            item = {key: value for key, value in r.items() if key != "result"}
            if r["result"] is not None:
                item.update(i_xt=r["result"].i_xt, i_ty=r["result"].i_ty)
            out.append(item)
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
