"""What does monitoring cost? Wall time of training with and without the monitor.

Run by ``make bench``. Everything is measured in one run of this script, on the
same machine, from the same initial weights:

- **(a)** the 12-10-7-5-4-3-2 tanh network (:func:`ibmonitor.zoo.tishby_mlp`) on
  the 4096 12-bit inputs (:func:`ibmonitor.datasets.twelve_bit`; 80% train
  split, Adam lr 4e-4, batch 512), 1000 epochs, probe = all 4096 inputs;
- **(b)** :class:`ibmonitor.zoo.DigitsCNN` on scikit-learn's digits (80% train
  split, Adam lr 1e-3, batch 64), 50 epochs, probe = 1,000 images of the
  training split;

both with ``estimators=("binned", "kde")`` on the log schedule
(``total_epochs`` = the number of epochs) and a ``logdir``, at the monitor's
default settings (a run store and TensorBoard sink, and the default
``overhead_budget=0.25``), with ``overhead_budget=None`` (every scheduled
epoch recorded, whatever it costs), with ``background=True``, and with
``sinks=["runstore"]`` (no TensorBoard sink: what the TensorBoard summaries
cost). Each ratio divides the monitored wall time (monitor construction and ``close()``
included) by the mean of two unmonitored runs, one before and one after the
monitored ones. A tiny monitored run first imports everything the monitor
needs, so that no timing pays one-time imports (their time is printed).

The **recording pass** (forward hooks and copies of the activations, made by
:func:`ibmonitor.recording.record_activations` as the monitor makes them; then
also with the ``.npz`` write of ``store_activations=True``, in float32 and in
float16, by :meth:`ibmonitor.storage.RunWriter.save_activations`; estimators
off) is timed on its own against its **floor**, a bare ``torch.no_grad()``
forward pass of the model over the same probe set in the same batches, both
made at the same points of one training run (the scheduled epochs). Each is
the minimum of ``--repeats`` alternating measurements at each point, summed
over the points.

Targets: recording pass <= 1.5x its floor on (b) (issue 3); the default
settings <= 1.5x unmonitored on (a) and (b) (issue 9). Timings on a shared machine are
noisy; the table says on which torch build and how many threads they ran.

Usage::

    python scripts/bench_overhead.py            # full (several minutes)
    python scripts/bench_overhead.py --quick    # (a) 100 epochs, (b) 10 epochs
    python scripts/bench_overhead.py --json results.json   # also write JSON
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ibmonitor
from ibmonitor import datasets, schedules, zoo
from ibmonitor.recording import record_activations, resolve_layers
from ibmonitor.storage import RunWriter

TARGET_RECORDING = 1.5
TARGET_DEFAULT = 1.5
ESTIMATORS = ("binned", "kde")


# -- the two training problems ------------------------------------------------
@dataclass
class Problem:
    """A model factory, data, optimiser settings and a probe set."""

    key: str
    title: str
    make_model: Callable[[], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_probe: torch.Tensor
    y_probe: torch.Tensor
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    init_state: Dict[str, torch.Tensor] = field(default_factory=dict)

    def fresh_model(self) -> nn.Module:
        torch.manual_seed(self.seed)
        model = self.make_model()
        if self.init_state:
            model.load_state_dict(self.init_state)
        else:
            self.init_state = copy.deepcopy(model.state_dict())
        return model


def _split(n: int, seed: int, fraction: float = 0.8):
    order = np.random.default_rng(seed).permutation(n)
    cut = round(fraction * n)
    return order[:cut], order[cut:]


def problem_tishby(epochs: int, seed: int = 0) -> Problem:
    x, y = datasets.twelve_bit()
    train, _ = _split(len(x), seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    return Problem(
        key="a",
        title="(a) 12-10-7-5-4-3-2 tanh, 12-bit",
        make_model=zoo.tishby_mlp,
        x_train=x_t[train],
        y_train=y_t[train],
        x_probe=x_t,
        y_probe=y_t,
        epochs=epochs,
        batch_size=512,
        lr=4e-4,
        seed=seed,
    )


def problem_digits(epochs: int, seed: int = 0, n_probe: int = 1000) -> Problem:
    x, y = datasets.digits()
    train, _ = _split(len(x), seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    x_train, y_train = x_t[train], y_t[train]
    return Problem(
        key="b",
        title="(b) DigitsCNN, digits",
        make_model=zoo.DigitsCNN,
        x_train=x_train,
        y_train=y_train,
        x_probe=x_train[:n_probe],
        y_probe=y_train[:n_probe],
        epochs=epochs,
        batch_size=64,
        lr=1e-3,
        seed=seed,
    )


# -- training with and without the monitor ------------------------------------
def _train_epoch(model, optimizer, problem: Problem, generator) -> float:
    model.train()
    n = problem.x_train.shape[0]
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for start in range(0, n, problem.batch_size):
        idx = order[start : start + problem.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(
            model(problem.x_train[idx]), problem.y_train[idx]
        )
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * idx.numel()
    return total / n


def train(problem: Problem, monitor_kwargs: Optional[Dict[str, Any]] = None):
    """Train from the problem's initial weights; return (seconds, run config)."""
    model = problem.fresh_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=problem.lr)
    generator = torch.Generator().manual_seed(problem.seed)
    start = time.perf_counter()
    monitor = None
    if monitor_kwargs is not None:
        monitor = ibmonitor.InformationMonitor(
            model, inputs=problem.x_probe, labels=problem.y_probe, **monitor_kwargs
        )
    for epoch in range(problem.epochs):
        loss = _train_epoch(model, optimizer, problem, generator)
        if monitor is not None:
            monitor.on_epoch_end(epoch, train_loss=loss)
    if monitor is not None:
        monitor.close()
    seconds = time.perf_counter() - start
    config = None
    if monitor_kwargs is not None:
        config = ibmonitor.load_run(monitor_kwargs["logdir"]).config
    return seconds, config


@dataclass
class Row:
    problem: str
    setting: str
    seconds: float
    baseline_seconds: float
    ratio: float
    recorded_epochs: Optional[int] = None
    skipped_epochs: Optional[int] = None
    target: Optional[float] = None
    note: str = ""


def _logdir(workdir: Path, problem: Problem, setting: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in setting)
    return workdir / f"{problem.key}-{slug}"


def bench_training(problem: Problem, settings, workdir: Path, log) -> List[Row]:
    """Time unmonitored training, each monitored setting, unmonitored again."""
    before, _ = train(problem)
    log(f"  {problem.key}: unmonitored {before:.2f} s")
    measured = []
    for setting, kwargs in settings:
        full = {
            "estimators": ESTIMATORS,
            "schedule": "log",
            "total_epochs": problem.epochs,
            "logdir": str(_logdir(workdir, problem, setting)),
            **kwargs,
        }
        seconds, config = train(problem, full)
        log(f"  {problem.key}: {setting} {seconds:.2f} s")
        measured.append((setting, seconds, config))
    after, _ = train(problem)
    log(f"  {problem.key}: unmonitored again {after:.2f} s")
    baseline = (before + after) / 2
    rows = []
    for setting, seconds, config in measured:
        run = ibmonitor.load_run(_logdir(workdir, problem, setting))
        recorded = (
            int(run.information["epoch"].nunique()) if len(run.information) else 0
        )
        is_default = setting == "default"
        rows.append(
            Row(
                problem=problem.title,
                setting=setting,
                seconds=seconds,
                baseline_seconds=baseline,
                ratio=seconds / baseline,
                recorded_epochs=recorded,
                skipped_epochs=len(config.get("skipped_epochs") or []),
                target=TARGET_DEFAULT if is_default else None,
                note=f"unmonitored {before:.2f} s before, {after:.2f} s after",
            )
        )
    return rows


# -- the recording pass against its floor --------------------------------------
def _floor_pass(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size])
    model.train(was_training)


def bench_recording(problem: Problem, workdir: Path, repeats: int, log) -> List[Row]:
    """Time recording (with and without the npz write) and the floor."""
    model = problem.fresh_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=problem.lr)
    generator = torch.Generator().manual_seed(problem.seed)
    layers = resolve_layers(model, None)
    batch_size = 256  # record_activations' default, used by the monitor
    points = set(schedules.log_spaced_epochs(problem.epochs))
    writer = RunWriter(workdir / f"{problem.key}-recording", {"seed": problem.seed})
    floor = record = record_write = record_write16 = 0.0
    x_flat = problem.x_probe.reshape(problem.x_probe.shape[0], -1)
    try:
        for epoch in range(problem.epochs):
            _train_epoch(model, optimizer, problem, generator)
            if epoch not in points:
                continue
            best = dict.fromkeys(("floor", "record", "write", "write16"), np.inf)
            for _ in range(repeats):
                t0 = time.perf_counter()
                _floor_pass(model, problem.x_probe, batch_size)
                t1 = time.perf_counter()
                acts = record_activations(
                    model, layers, problem.x_probe, batch_size=batch_size
                )
                t2 = time.perf_counter()
                writer.save_activations(
                    epoch,
                    {"default": acts},
                    labels={"default": problem.y_probe},
                    inputs={"default": x_flat},
                )
                t3 = time.perf_counter()
                writer.save_activations(
                    epoch,
                    {"default": acts},
                    labels={"default": problem.y_probe},
                    inputs={"default": x_flat},
                    float16=True,
                )
                t4 = time.perf_counter()
                best["floor"] = min(best["floor"], t1 - t0)
                best["record"] = min(best["record"], t2 - t1)
                best["write"] = min(best["write"], t3 - t1)
                best["write16"] = min(best["write16"], t2 - t1 + t4 - t3)
            floor += best["floor"]
            record += best["record"]
            record_write += best["write"]
            record_write16 += best["write16"]
    finally:
        writer.close()
    log(
        f"  {problem.key}: floor {floor * 1e3:.1f} ms, recording {record * 1e3:.1f} ms,"
        f" recording + write {record_write * 1e3:.1f} ms (float16"
        f" {record_write16 * 1e3:.1f} ms) over {len(points)} epochs"
    )
    target = TARGET_RECORDING if problem.key == "b" else None
    return [
        Row(
            problem=problem.title,
            setting="recording pass (hooks, copies)",
            seconds=record,
            baseline_seconds=floor,
            ratio=record / floor,
            recorded_epochs=len(points),
            target=target,
            note="vs bare no_grad forward",
        ),
        Row(
            problem=problem.title,
            setting="recording pass + npz write",
            seconds=record_write,
            baseline_seconds=floor,
            ratio=record_write / floor,
            recorded_epochs=len(points),
            target=target,
            note="store_activations=True",
        ),
        Row(
            problem=problem.title,
            setting="recording pass + npz write (float16)",
            seconds=record_write16,
            baseline_seconds=floor,
            ratio=record_write16 / floor,
            recorded_epochs=len(points),
            target=target,
            note="store_activations='float16'",
        ),
    ]


def _warm_up(workdir: Path) -> float:
    """Run a tiny monitor once, so no timing below pays one-time imports."""
    start = time.perf_counter()
    model = zoo.DigitsCNN()
    x, y = datasets.digits()
    monitor = ibmonitor.InformationMonitor(
        model,
        inputs=torch.from_numpy(x[:32]),
        labels=torch.from_numpy(y[:32]),
        estimators=ESTIMATORS,
        schedule=[0],
        total_epochs=1,
        logdir=workdir / "warm-up",
    )
    monitor.on_epoch_end(0, train_loss=1.0)
    monitor.close()
    ibmonitor.load_run(workdir / "warm-up")
    return time.perf_counter() - start


# -- output ---------------------------------------------------------------------
def format_table(rows: List[Row]) -> str:
    header = (
        "| problem | setting | time (s) | baseline (s) | ratio | target |"
        " recorded epochs | skipped |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        target = (
            ""
            if r.target is None
            else f"<= {r.target:.1f}x " + ("met" if r.ratio <= r.target else "MISSED")
        )
        lines.append(
            f"| {r.problem} | {r.setting} | {r.seconds:.3f} | "
            f"{r.baseline_seconds:.3f} | {r.ratio:.2f}x | {target} | "
            f"{'' if r.recorded_epochs is None else r.recorded_epochs} | "
            f"{'' if r.skipped_epochs is None else r.skipped_epochs} |"
        )
    return "\n".join(lines)


def environment() -> Dict[str, Any]:
    return {
        "torch": torch.__version__,
        "ibmonitor": ibmonitor.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="(a) 100 epochs, (b) 10 epochs"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the results as JSON to PATH ('-' or no value: stdout)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--only", choices=("a", "b"), default=None, help="run one problem only"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Degenerate estimates (every sample in its own bin, ...) are expected here.
    warnings.simplefilter("ignore", ibmonitor.IBMonitorWarning)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet = args.json == "-"

    def log(message: str) -> None:
        print(message, file=sys.stderr if quiet else sys.stdout, flush=True)

    epochs_a, epochs_b = (100, 10) if args.quick else (1000, 50)
    settings = [
        ("default", {}),
        ("overhead_budget=None", {"overhead_budget": None}),
        ("background=True", {"background": True}),
        ("sinks=['runstore'] (no TensorBoard)", {"sinks": ["runstore"]}),
    ]
    rows: List[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ibmonitor-bench-") as tmp:
        workdir = Path(tmp)
        warm_up = _warm_up(workdir)
        log(f"warm-up (imports of the monitor's dependencies): {warm_up:.1f} s")
        if args.only in (None, "a"):
            problem = problem_tishby(epochs_a, seed=args.seed)
            log(f"{problem.title}: {epochs_a} epochs")
            rows += bench_training(problem, settings, workdir, log)
            rows += bench_recording(problem, workdir, args.repeats, log)
        if args.only in (None, "b"):
            problem = problem_digits(epochs_b, seed=args.seed)
            log(f"{problem.title}: {epochs_b} epochs")
            rows += bench_training(problem, settings, workdir, log)
            rows += bench_recording(problem, workdir, args.repeats, log)
    env = environment()
    env["total_seconds"] = time.perf_counter() - started
    env["warm_up_seconds"] = warm_up
    env["mode"] = "quick" if args.quick else "full"
    table = format_table(rows)
    log("")
    log(table)
    log(
        f"\n{env['mode']} mode, torch {env['torch']}, {env['threads']} threads, "
        f"{env['cpus']} CPUs, load average {env['load_average']}, "
        f"{env['total_seconds']:.0f} s in all"
    )
    if args.json is not None:
        payload = json.dumps(
            {"environment": env, "rows": [asdict(r) for r in rows]}, indent=2
        )
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
