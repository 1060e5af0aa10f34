import os

import pytest


def require_torch():
    """Import torch; skip without it, except under CI (CI set), where its absence fails."""
    try:
        import torch
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"torch is required when CI is set: {e}")
        pytest.skip("torch is not installed")
    return torch


@pytest.fixture
def torch():
    return require_torch()


def require_onnx():
    """Import onnx; skip without it, except under CI (CI set), where its absence fails."""
    try:
        import onnx
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"onnx is required when CI is set: {e}")
        pytest.skip("onnx is not installed")
    return onnx


@pytest.fixture
def onnx():
    return require_onnx()
