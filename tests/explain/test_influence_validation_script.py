"""scripts/influence_validation.py (issue 14): tiny runs of both cases."""

from __future__ import annotations

import re

import pytest
from _scripts import load_script, restore_torch_threads  # noqa: F401 (autouse)


def _load():
    return load_script("influence_validation")


def _row(printed: str, case: str) -> dict:
    lines = printed.strip().splitlines()
    header = lines[1].split()
    for line in lines[2:]:
        cells = line.split()
        if cells[0] == case:
            return dict(zip(header, cells))
    raise AssertionError(f"no row {case!r} in:\n{printed}")


@pytest.mark.filterwarnings("ignore:Conjugate gradients:UserWarning")
def test_influence_validation_tiny(capsys):
    script = _load()
    argv = ["--quick", "--n-train", "100", "--retrains", "4"]
    argv += [
        "--cnn-adam-steps",
        "20",
        "--cnn-train-iter",
        "30",
        "--cnn-retrain-iter",
        "10",
    ]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Influence vs leave-one-out retraining" in printed
    convex, cnn = _row(printed, "convex"), _row(printed, "cnn")
    assert float(convex["pearson"]) > 0.9
    assert int(convex["retrains"]) == 4 and int(cnn["retrains"]) == 4
    assert re.fullmatch(r"-?\d.*", cnn["pearson"])  # a number, reported as is


@pytest.mark.slow
def test_influence_validation_quick(capsys):
    script = _load()
    assert script.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert float(_row(printed, "convex")["pearson"]) >= 0.9
    assert float(_row(printed, "cnn")["pearson"]) > 0.5
