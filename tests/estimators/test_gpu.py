"""Every registered estimator gives the same numbers on CUDA as on the CPU.

Runs only where a CUDA device is present (``pytest -m gpu``); skipped, with
the reason, elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch

from ibmonitor import estimators
from ibmonitor.estimators import input_ids

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

N_SAMPLES = 1500
# float32 sums in another order on the GPU: agreement to ~1e-7 relative per
# term; eigen-solvers and logs amplify it a little.
TOLERANCE = {
    torch.float32: {"rel": 1e-4, "abs": 1e-5},
    torch.float64: {"rel": 1e-7, "abs": 1e-9},
}


def _data(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(N_SAMPLES, 12, generator=gen) > 0.5).to(dtype)
    w = torch.randn(12, 6, generator=gen, dtype=dtype)
    t = torch.tanh(x @ w)
    y = (x[:, :3].sum(dim=1) > 1).to(torch.int64)
    return x, t, y


def _x_argument(est, x, device):
    if est.inputs == "ids":
        return input_ids(x).to(device)
    if est.inputs == "values":
        return x.to(device)
    return None


def _close(a, b, tol):
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return b == pytest.approx(a, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", estimators.available())
def test_estimator_same_on_cuda_as_on_cpu(name, dtype):
    est = estimators.get(name)
    x, t, y = _data(dtype)
    cpu = est(t, y, _x_argument(est, x, "cpu"))

    device = torch.device("cuda")
    t_dev, y_dev = t.to(device), y.to(device)
    x_dev = _x_argument(est, x, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    gpu = est(t_dev, y_dev, x_dev)
    torch.cuda.synchronize()
    work = torch.cuda.max_memory_allocated() - before

    tol = TOLERANCE[dtype]
    assert _close(cpu.i_xt, gpu.i_xt, tol), (name, cpu.i_xt, gpu.i_xt)
    assert _close(cpu.i_ty, gpu.i_ty, tol), (name, cpu.i_ty, gpu.i_ty)
    assert set(cpu.extras) == set(gpu.extras)
    for key, value in cpu.extras.items():
        assert _close(value, gpu.extras[key], tol), (name, key)
    # The work happened on the device: it allocated device memory beyond
    # the inputs (an estimator that copied everything to the CPU would not).
    assert work > 0, f"{name} allocated no CUDA memory"


@pytest.mark.parametrize("name", ["kde", "knn"])
def test_pairwise_estimators_work_in_device_blocks(name):
    # KDE and brute-force kNN build their (block of) pairwise matrices on
    # the device: the peak must reach at least one block of distances.
    est = estimators.get(name)
    x, t, y = _data(torch.float32)
    device = torch.device("cuda")
    t_dev, y_dev = t.to(device), y.to(device)
    x_dev = _x_argument(est, x, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    est(t_dev, y_dev, x_dev)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before >= N_SAMPLES * N_SAMPLES * 4


def test_numpy_labels_with_activations_on_cuda():
    x, t, y = _data(torch.float32)
    for name in estimators.available():
        est = estimators.get(name)
        cpu = est(t, y, _x_argument(est, x, "cpu"))
        mixed = est(t.cuda(), y.numpy(), _x_argument(est, x, "cuda"))
        assert _close(cpu.i_ty, mixed.i_ty, TOLERANCE[torch.float32]), name
