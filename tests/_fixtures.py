"""Fixtures shared by several test folders (imported by their conftest.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_and_seeded():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    random.seed(0)
    yield
    torch.set_num_threads(threads)
