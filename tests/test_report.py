"""Tests of ibmonitor.report: the self-contained HTML report (issue 5, section 2).

The browser test opens the report in headless Chromium (Playwright) with every
non-file request blocked and checks that the plots rendered (issue 5, section 4).
"""

from __future__ import annotations

import html
import math
import os
import re

import numpy as np
import pytest

from ibmonitor._browser import find_browser
from ibmonitor.cli import main
from ibmonitor.plotting import dashboard
from ibmonitor.report import _runs_of, write_report
from ibmonitor.storage import RunWriter, load_run, load_runs

EVIL = "<script>alert(1)</script>"
LAYERS = ("fc1", "fc2", EVIL)
EPOCHS = sorted(set(np.logspace(0, np.log2(300), 15, base=2).astype(int) - 1))


def write_run(path, *, name, layers=LAYERS, seed=0, estimators=("binned",), extra=None):
    """A finished run written by RunWriter, with information and scalars."""
    rng = np.random.default_rng(seed)
    config = {
        "name": name,
        "seed": seed,
        "layers": {layer: {"shape": [4], "n_units": 4} for layer in layers},
        "estimators": [{"name": e, "params": {}} for e in estimators],
        "schedule": {"kind": "log", "total_epochs": 300, "epochs": EPOCHS},
        "probes": {"default": {"n_samples": 256}},
    }
    with RunWriter(path, config) as writer:
        for epoch in EPOCHS:
            s = math.log1p(epoch) / math.log1p(EPOCHS[-1])
            rows = [
                {
                    "epoch": epoch,
                    "probe": "default",
                    "layer": layer,
                    "estimator": est,
                    "i_xt": (8 - 2 * k) * (0.6 + 0.4 * math.sin(math.pi * s))
                    + rng.normal(0, 0.05),
                    "i_ty": 0.9 * (1 - math.exp(-4 * s)) * (1 - 0.1 * k),
                }
                for k, layer in enumerate(layers)
                for est in estimators
            ]
            writer.append_information(rows)
            loss = 0.7 * math.exp(-3 * s)
            writer.append_scalars(
                epoch,
                {
                    "train_loss": loss,
                    "test_loss": loss + 0.1 * s,
                    "gap/loss": 0.1 * s,
                    "train_acc": 1 - loss / 2,
                    "test_acc": 1 - loss / 2 - 0.05 * s,
                    "hessian/top_eigenvalue": 1 + 5 * s,
                    **(extra(epoch, s) if extra else {}),
                },
            )
    return path


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "runs" / "evil", name=f"run {EVIL}")


@pytest.fixture
def report(run_dir, tmp_path):
    return write_report([run_dir], tmp_path / "out" / "report.html")


def plotly_bundle_head():
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:300]


def test_write_report_is_one_self_contained_file(report, run_dir):
    assert report.is_file()
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # plotly.js from the plotly package, inlined exactly once; no external script
    assert text.count(plotly_bundle_head()) == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.I)
    assert not re.search(r"src\s*=\s*[\"'][^\"']*cdn", text, flags=re.I)
    assert '<link rel="stylesheet" href' not in text
    # small: plotly.js (~4.7 MB) plus a little per figure
    assert report.stat().st_size < len(plotly_bundle_head()) + 6_000_000
    # one dashboard, a summary table and a configuration table
    assert text.count('class="plotly-graph-div"') == 1
    assert 'class="dataframe summary"' in text
    assert 'class="config"' in text
    assert "i_xt_final" in text
    assert "hessian/top_eigenvalue" in text
    assert "schedule › kind" in text


def test_write_report_escapes_run_and_layer_names(report):
    text = report.read_text(encoding="utf-8")
    assert EVIL not in text
    assert "alert(1)" in text  # the names are there, only escaped
    assert html.escape(EVIL) in text  # headings, config and summary tables
    # inside the figure JSON "</" is escaped, so no name closes a script element
    assert text.count("</script>") == len(re.findall(r"<script[\s>]", text))


def test_write_report_several_runs_and_folders(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", name="a", seed=0, estimators=("binned", "kde"))
    write_run(root / "b", name="b", seed=1, layers=("fc1", "fc2"))
    out = write_report(str(root), tmp_path / "two.html")  # a folder of runs
    text = out.read_text(encoding="utf-8")
    assert 'id="comparison"' in text
    assert 'id="run-1"' in text and 'id="run-2"' in text
    # comparison + 2 dashboards + the second estimator's plane of run a
    assert text.count('class="plotly-graph-div"') == 4
    assert text.count(plotly_bundle_head()) == 1
    mixed = _runs_of([load_run(root / "a"), root / "b", load_runs(str(root))])
    assert [run.name for run in mixed] == ["a", "b", "a", "b"]


def test_write_report_shows_saturation_and_other_scalars(tmp_path):
    """Saturation (written by the monitor as scalars) reaches the report's
    dashboard; scalars of the "Other" panel get a figure of their own."""
    from ibmonitor.schema import saturation_name

    def extra(epoch, s):
        return {
            saturation_name("fc1"): 0.1 + 0.5 * s,
            "pac_bayes/bound": 3.0 - s,
            "lr": 0.1 / (1 + epoch),
        }

    path = write_run(tmp_path / "sat", name="sat", layers=("fc1", "fc2"), extra=extra)
    out = write_report([path], tmp_path / "sat.html")
    text = out.read_text(encoding="utf-8")
    assert text.count('class="plotly-graph-div"') == 2  # dashboard + other
    assert '"panel":"Saturation"' in text.replace(" ", "")
    assert "Other scalars: sat" in text
    # the report's dashboard is plotting.dashboard: the schema's panels
    fig = dashboard(load_run(path))
    panels = {t.meta["name"]: t.meta["panel"] for t in fig.data if t.meta.get("name")}
    assert panels["saturation/fc1"] == "Saturation"
    assert panels["pac_bayes/bound"] == "Sharpness"
    assert "lr" not in panels


def test_write_report_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory"):
        write_report([tmp_path / "nothing"], tmp_path / "r.html")


def test_cli_report(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert out.is_file()
    assert str(out) in capsys.readouterr().out


# ------------------------------------------------------------------- real browser

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def browser_or_skip():
    """The Chromium to drive; skip without one unless CI requires it."""
    required = os.environ.get("IBMONITOR_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("IBMONITOR_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright is not installed (pip install playwright)")
    path = find_browser()
    if path is None:
        if required:
            pytest.fail(
                "IBMONITOR_REQUIRE_BROWSER=1 but no Chrome/Chromium was found; "
                "install the 'chromium' package or set BROWSER_PATH"
            )
        pytest.skip(
            "no Chrome or Chromium found (install chromium or set BROWSER_PATH)"
        )
    return path


@pytest.mark.browser
def test_report_renders_offline_in_chromium(report, run_dir, tmp_path):
    executable = browser_or_skip()
    from playwright.sync_api import sync_playwright

    expected = dashboard(load_run(run_dir))
    n_traces = len(expected.data)
    blocked, dialogs, errors = [], [], []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.route("**/*", route)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function(
                "() => { const p = document.querySelectorAll('.js-plotly-plot');"
                " return p.length > 0 && Array.from(p).every(e => e._fullLayout); }",
                timeout=30_000,
            )
            plots = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                .map(el => ({
                    traces: el.data.length,
                    plane: el.data.filter(
                        t => t.meta && t.meta.kind === 'information_plane').length,
                    mainSvg: el.querySelectorAll('svg.main-svg').length,
                    drawn: el.querySelectorAll('g.scatterlayer g.trace').length,
                    points: el.querySelectorAll('g.scatterlayer path.point').length,
                    text: el.innerText,
                }))"""
            )
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()

    assert blocked == [], f"the report tried to reach the network: {blocked}"
    assert dialogs == [], "a name was executed as script"
    assert errors == []
    assert len(plots) == 1
    (plot,) = plots
    assert plot["traces"] == n_traces
    assert plot["plane"] == len(LAYERS)
    assert plot["mainSvg"] >= 1
    assert plot["drawn"] == n_traces
    assert plot["points"] >= len(LAYERS) * len(EPOCHS)
    assert "I(X;T) (bits)" in plot["text"]
    assert EVIL in plot["text"]  # shown as text, not run
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_write_report_notes_pinned_estimates(tmp_path):
    """Issue "planes that mean something", point 5: pinned rows get a note."""
    path = tmp_path / "pinned"
    config = {"name": "pinned", "layers": {"conv": {}, "fc": {}}}
    with RunWriter(path, config) as writer:
        for epoch in (0, 1, 2):
            writer.append_information(
                [
                    {
                        "epoch": epoch,
                        "probe": "default",
                        "layer": layer,
                        "estimator": "binned",
                        "i_xt": 9.0 if layer == "conv" else 2.0 + epoch,
                        "i_ty": 3.3 if layer == "conv" else 0.5,
                        "pinned": 1.0 if layer == "conv" else 0.0,
                    }
                    for layer in ("conv", "fc")
                ]
            )
    text = write_report([path], tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'class="pinned-note"' in text
    assert "binned: 3 of 6 estimates (1 layer: conv)" in text
    clean = write_report([run_dir_for(tmp_path)], tmp_path / "c.html")
    assert 'class="pinned-note"' not in clean.read_text(encoding="utf-8")


def run_dir_for(tmp_path):
    return write_run(tmp_path / "clean", name="clean")
