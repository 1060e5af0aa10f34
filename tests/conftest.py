import importlib
import os

import pytest


def require(module):
    """Import an optional test dependency (torch, onnx, scipy, h5py); skip the test
    without it, except under CI (the CI variable set), where its absence fails."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required when CI is set: {e}")
        pytest.skip(f"{module} is not installed", allow_module_level=True)


def require_torch():
    return require("torch")


def require_onnx():
    return require("onnx")


@pytest.fixture
def torch():
    return require_torch()


@pytest.fixture
def onnx():
    return require_onnx()
