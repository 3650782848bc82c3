import importlib.util
import os
import sys
from pathlib import Path

import keras
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir():
    """The team's shared data folder beside the repository, or a skip."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends under the float32 policy."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True, scope="module")
def _release_models_between_modules():
    """Drop Keras's global state after each test module, so the suite's memory stays flat."""
    yield
    keras.backend.clear_session(free_memory=True)


@pytest.fixture(scope="session")
def torch_python():
    """A Python interpreter with PyTorch and torchvision for reference runs, or a skip.

    `KSEG_TORCH_PYTHON` names it (CI installs the `reference` extra into a virtual environment of
    its own); otherwise this interpreter, when it has torchvision. Reference code always runs in a
    child process: importing torch beside TensorFlow in one process can crash.
    """
    configured = os.environ.get("KSEG_TORCH_PYTHON")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"KSEG_TORCH_PYTHON={configured!r} is not a file")
        return configured
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip(
            "PyTorch and torchvision are not installed (the `reference` extra); set "
            "KSEG_TORCH_PYTHON to an interpreter that has them"
        )
    return sys.executable
