"""The demo (issue 6 §2): the two phases of the binned information plane."""

import pytest

from ibmonitor import load_run
from ibmonitor.demo import phase_table, run_demo

pytestmark = pytest.mark.filterwarnings("ignore::ibmonitor.EstimationWarning")


def _check_phases(run, *, min_compression: float) -> None:
    table = phase_table(run.information).set_index("layer")
    # Fitting: I(T;Y) rises for every layer from the first recorded epoch,
    # except where it already starts at H(Y) (the wide first layers keep every
    # input distinct, so T determines Y from epoch 0).
    h_y = 0.9999972  # bits, see ibmonitor.datasets.twelve_bit
    first, final = table["I(T;Y) first"], table["I(T;Y) final"]
    assert (final >= first - 1e-9).all(), table
    assert ((final > first) | (first > h_y - 1e-3)).all(), table
    assert (final - first > 0.3).sum() >= 2, table
    # Compression: a deeper tanh layer loses at least `min_compression` bits of
    # I(X;T) from its highest value (the first layers stay near log2(4096) = 12).
    tanh_layers = [
        name for name, spec in run.config["layers"].items() if spec["module"] == "Tanh"
    ]
    deep = table.loc[tanh_layers[2:], "compression"]
    assert deep.max() >= min_compression, table
    # ... and it happens after the peak, not at the first epoch.
    peak_epoch = table.loc[deep.idxmax(), "epoch of max"]
    assert peak_epoch > 0


def test_run_demo_quick_shows_fitting_and_compression(tmp_path, capsys):
    result = run_demo(tmp_path / "demo", quick=True, report=False)
    out = capsys.readouterr().out
    assert "I(X;T) max" in out
    assert "ibmonitor tensorboard" in out
    run = load_run(result["logdir"])
    assert run.config["status"] == "finished"
    assert set(run.information["estimator"]) == {"binned", "kde"}
    _check_phases(run, min_compression=1.0)
    # issue 12: the demo's run stores its activations, so that the printed
    # sensitivity command works on it
    assert "ibmonitor sensitivity" in out
    assert run.activation_epochs == sorted(set(run.information["epoch"]))
    from ibmonitor.cli import main

    figure = tmp_path / "sensitivity.html"
    code = main(
        [
            "sensitivity",
            str(result["logdir"]),
            "--estimator",
            "binned",
            "--grid",
            "n_bins=10,30",
            "--layers",
            "tanh5",
            "--no-progress",
            "-o",
            str(figure),
        ]
    )
    assert code == 0 and figure.stat().st_size > 10_000
    assert "compression" in capsys.readouterr().out


@pytest.mark.slow
def test_run_demo_full_shows_fitting_and_compression(tmp_path):
    result = run_demo(tmp_path / "demo", report=True)
    assert result["report"].is_file()
    _check_phases(load_run(result["logdir"]), min_compression=1.0)
