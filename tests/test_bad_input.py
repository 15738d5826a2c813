"""Bad input gives a clear error or warning (issue "Nothing lost, nothing hangs")."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

import ibmonitor
from ibmonitor import estimators
from ibmonitor.cli import main
from ibmonitor.estimators import binning
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.measures.generalization import generalization_gap
from ibmonitor.measures.hessian import hessian_eigenvalues
from ibmonitor.measures.norms import norms
from ibmonitor.storage import RunWriter, StorageWarning, load_run

RNG = np.random.default_rng(0)
T = RNG.standard_normal((120, 4))
Y = RNG.integers(0, 3, 120)


# -- estimator parameters, checked when built -------------------------------------


def test_get_unknown_parameter_names_valid_ones():
    with pytest.raises(InvalidParameterError, match="Unknown parameter 'nbins'") as e:
        estimators.get("binned", nbins=30)
    assert "n_bins" in str(e.value) and "value_range" in str(e.value)


@pytest.mark.parametrize(
    "name, params, phrase",
    [
        ("binned", {"n_bins": 1}, "'n_bins' parameter of binned"),
        ("kde", {"noise_variance": -1}, "'noise_variance' parameter of kde"),
        ("knn", {"k": 0}, "'k' parameter of knn"),
        ("renyi", {"alpha": 0}, "'alpha' parameter of renyi"),
    ],
)
def test_get_checks_values(name, params, phrase):
    with pytest.raises(InvalidParameterError, match=phrase):
        estimators.get(name, **params)


def test_get_accepts_good_parameters():
    est = estimators.get("binned", n_bins=10, value_range=(-3.0, 3.0))
    assert np.isfinite(est(T, Y).i_xt)


def test_monitor_rejects_unknown_estimator_parameter_at_construction():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(16, 4)
    y = torch.randint(0, 2, (16,))
    with pytest.raises(InvalidParameterError, match="Unknown parameter 'nbins'"):
        ibmonitor.InformationMonitor(
            model, inputs=x, labels=y, estimators={"binned": {"nbins": 30}}
        )


# -- estimators on extreme data -----------------------------------------------------


def test_kde_float32_huge_activations_are_finite():
    t = (T * 1e18).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = estimators.kde(t, Y)
    assert np.isfinite(r.i_xt) and np.isfinite(r.i_ty)
    assert r.i_xt == pytest.approx(np.log2(len(Y)))  # every sample its own kernel


def test_kde_tiny_noise_variance_raises_clearly():
    with pytest.raises(InvalidParameterError, match="beyond the float64 range"):
        estimators.kde(T, Y, noise_variance=1e-300)


def test_knn_is_scale_invariant_at_1e160():
    ref = estimators.knn(T, Y, x=T)
    big = estimators.knn(T * 1e160, Y, x=T)
    assert big.i_xt == pytest.approx(ref.i_xt)
    assert big.i_ty == pytest.approx(ref.i_ty)


def test_renyi_eigensolver_failure_falls_back_or_is_clear():
    def fail(a):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    ref = estimators.renyi(T, Y)
    with mock.patch.object(torch.linalg, "eigvalsh", fail):
        r = estimators.renyi(T, Y)
    assert r.i_xt == pytest.approx(ref.i_xt) and r.i_ty == pytest.approx(ref.i_ty)

    def np_fail(a):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    with (
        mock.patch.object(torch.linalg, "eigvalsh", fail),
        mock.patch.object(np.linalg, "eigvalsh", np_fail),
        pytest.raises(ValueError, match="could not compute the eigenvalues"),
    ):
        estimators.renyi(T, Y)


@pytest.mark.parametrize("name", ["binned", "kde", "knn", "renyi"])
def test_complex_activations_are_refused(name):
    t = T.astype(np.complex128) + 1j
    with pytest.raises(InvalidParameterError, match="are complex"):
        estimators.get(name)(t, Y)


def test_large_grids_are_not_cached():
    binning._cached_uniform_plan.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scale in (1.0, 2.0, 3.0):
            estimators.binned(T * scale, Y, n_bins=10**6)
    assert binning._cached_uniform_plan.cache_info().currsize == 0
    estimators.binned(T, Y, n_bins=30)
    assert binning._cached_uniform_plan.cache_info().currsize == 1


# -- storage: reading never fails on one bad line or file -----------------------------


def _run(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, {"seed": 0}) as writer:
        for epoch in range(2):
            writer.append_scalars(epoch, {"loss": 1.0})
    return path


def test_writer_refuses_epoch_beyond_int64(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    try:
        with pytest.raises(InvalidParameterError, match=r"2\*\*63 - 1"):
            writer.append_scalars(2**63, {"loss": 1.0})
    finally:
        writer.close()


@pytest.mark.parametrize(
    "line",
    [b"9223372036854775808,loss,1.0\n", b'1,lo\r"ss,1.0\n'],
    ids=["epoch-overflow", "cr-in-quotes"],
)
def test_reader_skips_unreadable_lines_naming_file_and_line(tmp_path, line):
    path = _run(tmp_path)
    with open(path / "scalars.csv", "ab") as fh:
        fh.write(line)
    with pytest.warns(StorageWarning, match=r"line 4") as record:
        frame = load_run(path).scalars
    assert "scalars.csv" in str(record[0].message)
    assert sorted(frame["epoch"].tolist()) == [0, 1]


@pytest.mark.parametrize("text", ["{bad json", '{"schema_version": 1, "status": [1]}'])
def test_bad_run_json_names_the_file(tmp_path, text):
    path = _run(tmp_path)
    (path / "run.json").write_text(text)
    with pytest.raises(ValueError, match=r"run\.json"):
        _ = load_run(path).status


def _write_npz(path, epoch, arrays):
    folder = path / "activations"
    folder.mkdir(exist_ok=True)
    np.savez_compressed(folder / f"epoch_{epoch:06d}.npz", **arrays)
    return folder / f"epoch_{epoch:06d}.npz"


def test_corrupt_npz_names_file_and_epoch(tmp_path):
    path = _run(tmp_path)
    folder = path / "activations"
    folder.mkdir(exist_ok=True)
    (folder / "epoch_000003.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"epoch_000003\.npz.*epoch 3"):
        load_run(path).activations(3)


def test_npz_bomb_is_refused_before_decompressing(tmp_path):
    path = _run(tmp_path)
    file = _write_npz(path, 2, {"probe/fc": np.zeros((1024, 1024), np.float32)})
    run = load_run(path)
    with pytest.raises(ValueError, match=r"Refusing to load .*epoch 2.*max_bytes"):
        run.activations(2, max_bytes=1024)
    assert run.activations(2)["probe"]["fc"].shape == (1024, 1024)
    # the declared size comes from the .npy header, not the zip directory
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    with zipfile.ZipFile(file, "w") as zf:
        zf.writestr("probe/fc.npy", buf.getvalue())
    with pytest.raises(ValueError, match="declare 4398046511104 bytes"):
        run.activations(2)


# -- measures -------------------------------------------------------------------------


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))


def test_norms_init_of_wrong_shape():
    model = _mlp()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    init["0.weight"] = torch.zeros(1, 4)
    with pytest.raises(InvalidParameterError, match=r"'init' state dict.*shape"):
        norms(model, init)


def test_generalization_gap_on_empty_data():
    model = _mlp()
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    empty = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(InvalidParameterError, match=r"'test_data'.*0 samples"):
        generalization_gap(model, nn.CrossEntropyLoss(), (x, y), empty)


def test_nan_weights_give_nan_accuracy():
    model = _mlp()
    with torch.no_grad():
        model[2].weight.fill_(float("nan"))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    gap = generalization_gap(model, nn.CrossEntropyLoss(), (x, y), (x, y))
    assert np.isnan(gap.train_acc) and np.isnan(gap.test_acc)


def test_hessian_k_above_parameter_count():
    model = _mlp()  # 72 parameters
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with pytest.raises(InvalidParameterError, match=r"'k' parameter.*at most"):
        hessian_eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=10**6)


def test_complex_inputs_to_measures_are_refused():
    model = _mlp()
    x = torch.randn(8, 4, dtype=torch.complex64)
    y = torch.randint(0, 2, (8,))
    with pytest.raises(InvalidParameterError, match="complex"):
        generalization_gap(model, nn.CrossEntropyLoss(), (x, y), (x, y))


# -- CLI on a read-only disk -----------------------------------------------------


@pytest.mark.parametrize("command", ["estimate", "report"])
def test_cli_oserror_is_one_line(tmp_path, capsys, command):
    path = _run(tmp_path)
    err = PermissionError(13, "Permission denied", str(path / "information.csv"))
    target = (
        "ibmonitor.analysis.estimate_from_activations"
        if command == "estimate"
        else "ibmonitor.report.write_report"
    )
    with mock.patch(target, side_effect=err):
        argv = [command, str(path)] + (
            ["--estimator", "binned"] * (command == "estimate")
        )
        assert main(argv) != 0
    out = capsys.readouterr().err
    assert "Permission denied" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_cli_report_to_read_only_directory(tmp_path, capsys):
    path = _run(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["report", str(path), "-o", str(ro / "report.html")]) != 0
    finally:
        ro.chmod(0o700)
    assert "error" in capsys.readouterr().err
