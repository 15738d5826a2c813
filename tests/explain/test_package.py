"""ibmonitor.explain costs nothing unless used; its functions run on CUDA too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn


def test_importing_ibmonitor_imports_neither_explain_nor_captum():
    code = (
        "import sys, ibmonitor\n"
        "assert 'ibmonitor.explain' not in sys.modules\n"
        "import ibmonitor.explain\n"
        "assert 'captum' not in sys.modules, 'captum imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
def test_explanations_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from ibmonitor.explain import (
        feature_visualization,
        influence,
        saliency,
        top_activations,
    )

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).cuda()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    cpu_model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    cpu_model.load_state_dict(model.state_dict())
    grads = saliency(model, x, y)
    assert grads.device == x.device
    torch.testing.assert_close(grads, saliency(cpu_model, x, y))
    table = top_activations(model, "1", x, k=3)
    reference = top_activations(cpu_model, "1", x, k=3)
    assert table[["unit", "rank", "index"]].equals(reference[["unit", "rank", "index"]])
    assert ((table["activation"] - reference["activation"]).abs() < 1e-5).all()
    image = feature_visualization(model, "1", 0, shape=(4,), steps=20)
    assert image.device.type == "cuda"
    start = torch.zeros(4)
    image = feature_visualization(model, "1", 0, shape=(4,), steps=20, init=start)
    assert image.device == start.device
    on_gpu = influence(
        model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0
    )
    on_cpu = influence(
        cpu_model, nn.CrossEntropyLoss(), (x, y), (x[:2], y[:2]), damping=1.0
    )
    torch.testing.assert_close(
        torch.tensor(on_gpu["influence"].to_numpy()),
        torch.tensor(on_cpu["influence"].to_numpy()),
        atol=1e-5,
        rtol=1e-3,
    )
