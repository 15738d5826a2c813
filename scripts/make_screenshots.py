"""Renew the README screenshots of the TensorBoard tab and of the HTML report.

Writes a demo-like run (the 12-bit task and Shwartz-Ziv & Tishby's tanh network,
trained briefly with ``ibmonitor.InformationMonitor(..., logdir=...)``, or,
without the monitor, a synthetic run written by ``TensorBoardWriter``), starts
TensorBoard on it, and photographs with headless Chromium (Playwright):

- the Information Plane tab -> ``docs/images/tensorboard_plugin.png``
- ``ibmonitor.report.write_report`` of the run -> ``docs/images/report.png``

Nothing is fetched from the network: every request that leaves 127.0.0.1 (or
the report file) is refused. TensorBoard is stopped by its PID.

Usage::

    .venv/bin/python scripts/make_screenshots.py [--epochs 200] [--out docs/images]

Training takes a few minutes on a CPU (the kde estimator and the sharpness
measure dominate); ``--keep DIR`` keeps the run, ``--keep DIR --reuse`` only
takes the pictures again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ibmonitor.tensorboard.launch import tensorboard_argv

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
RUN_NAME = "tishby_tanh"


def find_browser() -> str:
    try:
        from ibmonitor._browser import require_browser
    except ImportError:
        path = shutil.which("chromium") or "/usr/bin/chromium"
        if not Path(path).exists():
            sys.exit("No Chromium found: install the 'chromium' package.")
        return path
    return require_browser("make_screenshots.py")


def train_with_monitor(run_dir: Path, epochs: int, seed: int) -> None:
    """Train the 12-bit tanh network with the monitor on (TensorBoard on)."""
    import numpy as np
    import torch
    from torch import nn

    from ibmonitor.datasets import twelve_bit
    from ibmonitor.measures import MeasureSet
    from ibmonitor.monitor import InformationMonitor
    from ibmonitor.sinks import RunStore, TensorBoard
    from ibmonitor.zoo import tishby_mlp

    torch.manual_seed(seed)
    x, y = twelve_bit()
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.85 * len(x))
    train, test = order[:n_train], order[n_train:]
    model = tishby_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    loss_fn = nn.CrossEntropyLoss()
    monitor = InformationMonitor(
        model,
        inputs=x,
        labels=y,
        estimators=("binned", "kde"),
        schedule="log",
        total_epochs=epochs,
        logdir=run_dir,
        sinks=[RunStore(overwrite=True), TensorBoard()],
        measures=MeasureSet(
            ["gap", "sharpness"],
            loss_fn=loss_fn,
            train_data=(x[train], y[train]),
            test_data=(x[test], y[test]),
        ),
        overhead_budget=None,
    )
    with monitor:
        for epoch in range(epochs):
            model.train()
            for batch in torch.split(train[torch.randperm(len(train))], 256):
                optimizer.zero_grad()
                loss = loss_fn(model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                model.eval()
                test_loss = loss_fn(model(x[test]), y[test]).item()
                test_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
            monitor.on_epoch_end(
                epoch, train_loss=loss.item(), test_loss=test_loss, test_acc=test_acc
            )


def write_synthetic_run(run_dir: Path, epochs: int) -> None:
    """Without the monitor: trajectories shaped like the paper's, via the writer."""
    import numpy as np
    import pandas as pd

    from ibmonitor.tensorboard.writer import TensorBoardWriter

    layers = ["1", "3", "5", "7", "9", "11"]
    recorded = sorted({int(e) for e in np.geomspace(1, epochs, 40)} | {0})
    rows = []
    with TensorBoardWriter(run_dir) as writer:
        writer.write_layout(layers, ["binned"], ["train_loss", "test_loss", "gap/loss"])
        for epoch in recorded:
            s = np.log1p(epoch) / np.log1p(epochs)
            epoch_rows = []
            for i, layer in enumerate(layers):
                depth = i / (len(layers) - 1)
                fit = 1 - np.exp(-6 * s)
                i_xt = 12 * (1 - 0.6 * depth) * (0.8 + 0.2 * fit) - 2 * depth * s**2
                i_ty = 0.99 * fit * (1 - 0.15 * depth) + 0.02
                epoch_rows.append(
                    {
                        "epoch": epoch,
                        "layer": layer,
                        "estimator": "binned",
                        "i_xt": float(i_xt),
                        "i_ty": float(i_ty),
                    }
                )
            writer.write_information(epoch, epoch_rows)
            rows += epoch_rows
            loss = float(np.exp(-4 * s))
            writer.write_scalars(
                epoch,
                {
                    "train_loss": loss,
                    "test_loss": 1.2 * loss + 0.05,
                    "gap/loss": 0.2 * loss + 0.05,
                    "sharpness/worst_case": 1 + 4 * s,
                },
            )
        writer.write_plane_image(recorded[-1], pd.DataFrame(rows))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_tensorboard(logdir: Path, log_path: Path):
    port = free_port()
    binary = Path(sys.executable).with_name("tensorboard")
    command = [str(binary), *tensorboard_argv(logdir, host="127.0.0.1", port=port)]
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"TensorBoard exited; see {log_path}")
        try:
            with urllib.request.urlopen(url + "/data/plugins_listing", timeout=10) as r:
                if json.load(r).get("ibmonitor", {}).get("enabled"):
                    return process, url
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(0.5)
    process.terminate()
    sys.exit("TensorBoard did not show the ibmonitor plugin in time")


def stop(process) -> None:
    process.terminate()  # by PID
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)


def screenshot_tensorboard(browser, url: str, path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1320})
    refused = []

    def only_local(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(url + "/#ibmonitor")
    selector = 'iframe[src*="plugin_entry.html?name=ibmonitor"]'
    page.frame_locator(selector).locator('body[data-ibmonitor-ready="true"]').wait_for(
        timeout=120_000
    )
    page.wait_for_timeout(1500)  # let plotly finish its transitions
    page.screenshot(path=str(path))
    page.close()
    if refused:
        print("refused requests:", refused[:5])


def screenshot_report(browser, run_dir: Path, work: Path, path: Path) -> bool:
    try:
        from ibmonitor.report import write_report
    except ImportError:
        print("ibmonitor.report is not available: no report screenshot")
        return False
    report = write_report([run_dir], work / "report.html")
    page = browser.new_page(viewport={"width": 1400, "height": 1060})
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file://")
            else route.abort()
        ),
    )
    page.goto(Path(report).resolve().as_uri())
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".some(d => d.querySelector('.main-svg'))",
        timeout=120_000,
    )
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))
    page.close()
    return True


def write_run(run_dir: Path, args: argparse.Namespace) -> None:
    try:
        import ibmonitor.monitor  # noqa: F401
    except ImportError:
        print("ibmonitor.monitor is not available: writing a synthetic run")
        write_synthetic_run(run_dir, args.epochs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_with_monitor(run_dir, args.epochs, args.seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the run in this folder"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="photograph the run already in --keep instead of training again",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    browser_path = find_browser()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ibmonitor_shots_") as tmp:
        work = Path(tmp)
        logdir = args.keep or work / "runs"
        run_dir = logdir / RUN_NAME
        logdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if args.reuse:
            if not run_dir.is_dir():
                sys.exit(f"--reuse: no run at {run_dir}")
        else:
            write_run(run_dir, args)
        print(f"run ready at {run_dir} after {time.monotonic() - started:.0f} s")
        process, url = start_tensorboard(logdir, work / "tensorboard.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=browser_path, args=BROWSER_ARGS
                )
                try:
                    target = args.out / "tensorboard_plugin.png"
                    screenshot_tensorboard(browser, url, target)
                    print("wrote", target)
                    target = args.out / "report.png"
                    if screenshot_report(browser, run_dir, work, target):
                        print("wrote", target)
                finally:
                    browser.close()
        finally:
            stop(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
