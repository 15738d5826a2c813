"""Loading the scripts of scripts/ in the test process, for their tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py as a module (it puts scripts/ on sys.path)."""
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", SCRIPTS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The scripts set torch's threads; give the next test its setting back.

    Import it into a test module to use it there (it is autouse).
    """
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
