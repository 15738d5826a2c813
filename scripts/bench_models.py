"""Models tried: default layers, recording time and memory per model.

Run by ``make bench``. For every model of ``tests/_models.py`` (torchvision
ResNet-18, a timm MobileNetV3, Hugging Face BERT and ViT from tiny configs, an
``nn.TransformerEncoder`` classifier, an LSTM classifier, tuple- and
dict-output models, a ``torch.compile``'d CNN), all built offline, this script

- chooses the default layers (:func:`ibmonitor.recording.select_layers`) and
  prints the one-line summary the monitor logs;
- times the **recording pass** (:func:`ibmonitor.recording.record_activations`,
  hooks and copies, as the monitor makes it) against its **floor**, a bare
  ``torch.no_grad()`` forward pass over the same probe set in the same batches
  (each the minimum of ``--repeats`` alternating measurements);
- reports the memory the recorded activations take (float32, all layers).

Target (issue 10): the recording pass of ResNet-18 on 1,000 probe images of
32x32 pixels costs at most 1.5x the bare forward pass.

Usage::

    python scripts/bench_models.py              # every model (about a minute)
    python scripts/bench_models.py --only resnet18 --n 1000
    python scripts/bench_models.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import _models

from ibmonitor import structures
from ibmonitor.recording import record_activations, select_layers

TARGET = 1.5
BATCH_SIZE = 256
#: Probe sizes: 1,000 images for ResNet-18 (the issue's workload), 256 otherwise.
PROBE_SIZE = {"resnet18": 1000}


def _floor(model, inputs, batch_size: int) -> None:
    was = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, structures.n_rows(inputs), batch_size):
            batch = structures.slice_rows(inputs, slice(start, start + batch_size))
            structures.call_model(model, batch)
    model.train(was)


def bench_case(name: str, n: int, repeats: int) -> Dict[str, Any]:
    """Time one model's recording pass against its floor."""
    case = _models.CASES[name](n)
    model, inputs = case.model, case.inputs
    output_key = case.options.get("output_key")
    started = time.perf_counter()
    selection = select_layers(
        model, None, structures.slice_rows(inputs, slice(0, 2)), output_key=output_key
    )
    select_s = time.perf_counter() - started
    floor = record = float("inf")
    acts: Dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        _floor(model, inputs, BATCH_SIZE)
        t1 = time.perf_counter()
        acts = record_activations(
            model,
            selection.layers,
            inputs,
            batch_size=BATCH_SIZE,
            output_key=output_key,
        )
        t2 = time.perf_counter()
        floor, record = min(floor, t1 - t0), min(record, t2 - t1)
    memory = sum(t.numel() * t.element_size() for t in acts.values())
    return {
        "model": case.name,
        "key": name,
        "n_probe": n,
        "layers": list(selection.layers),
        "skipped": dict(selection.skipped),
        "summary": selection.summary(),
        "widths": {k: int(v.shape[1]) for k, v in acts.items()},
        "select_s": select_s,
        "floor_s": floor,
        "record_s": record,
        "ratio": record / floor,
        "memory_mb": memory / 2**20,
        "target": TARGET if name == "resnet18" else None,
    }


def _short(names: List[str], most: int = 6) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return (
        ", ".join(names[: most - 2])
        + f", ... ({len(names) - most + 1} more), "
        + (names[-1])
    )


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The markdown table of docs/models.md."""
    lines = [
        "| model | probe | default layers | skipped | recording | bare forward "
        "| ratio (target) | activations |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        target = ""
        if r["target"] is not None:
            met = "met" if r["ratio"] <= r["target"] else "MISSED"
            target = f" (<= {r['target']}x {met})"
        lines.append(
            f"| {r['model']} | {r['n_probe']} | {len(r['layers'])}: "
            f"{_short(r['layers'])} | {len(r['skipped'])} "
            f"| {r['record_s'] * 1e3:.1f} ms | {r['floor_s'] * 1e3:.1f} ms "
            f"| {r['ratio']:.2f}x{target} | {r['memory_mb']:.1f} MB |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=_models.case_names(), default=None)
    parser.add_argument("--n", type=int, default=None, help="probe size (all models)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = [args.only] if args.only else _models.case_names()
    rows = []
    for name in names:
        n = args.n or PROBE_SIZE.get(name, 256)
        row = bench_case(name, n, args.repeats)
        print(f"{row['model']}: {row['summary']}", flush=True)
        rows.append(row)
    print()
    print(format_table(rows))
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"python {platform.python_version()}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
