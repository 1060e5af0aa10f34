import importlib
import os
import subprocess
import sys

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


def require_torchvision():
    """(torch, torchvision) for torchvision's model code, also beside a torch build its
    compiled ops do not match: ``bench/torch_compat.py``'s loader, which declares the
    two op schemas torchvision registers at import only where its ops cannot load."""
    import importlib.util

    torch = require_torch()
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "torch_compat.py")
    spec = importlib.util.spec_from_file_location("gradvis_bench_torch_compat", path)
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    try:
        return torch, compat.import_torchvision()
    except ImportError as e:
        if os.environ.get("CI"):
            pytest.fail(f"torchvision is required when CI is set: {e}")
        pytest.skip(f"torchvision is not installed: {e}", allow_module_level=True)


def require_onnx():
    return require("onnx")


def run_at_simd_level(level, script):
    """Run ``script`` (Python source; ``{tests}`` and ``{level}`` are filled in) in
    a child process with GRADVIS_SIMD=level; it must print "ok". Skips avx2 on a CPU
    without it."""
    import gradvis

    if level == "avx2" and gradvis.simd_level() == "scalar":
        pytest.skip("this CPU has no AVX2")
    env = dict(os.environ, GRADVIS_SIMD=level)
    code = script.format(tests=os.path.dirname(os.path.abspath(__file__)), level=level)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout


SIMD_HEADER = r"""
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
"""


def run_checks_at_simd_level(level, checks):
    """run_at_simd_level for ``checks`` (Python source that imports its checks from
    the tests' folder, numpy as np and gradvis's _core at hand): they pass when
    they raise nothing."""
    run_at_simd_level(level, SIMD_HEADER + checks.replace("{", "{{").replace("}", "}}") + '\nprint("ok")\n')


def simd_paths_test(checks):
    """A test that runs ``checks`` (as run_checks_at_simd_level) at AVX2 and at the
    scalar level, in child processes; the widest level the CPU has runs in the
    test process itself. Assign it to a module name starting with test_."""
    @pytest.mark.parametrize("level", ["avx2", "scalar"])
    def test(level):
        run_checks_at_simd_level(level, checks)
    return test


@pytest.fixture
def torch():
    return require_torch()


@pytest.fixture
def onnx():
    return require_onnx()


# ---------------------------------------------------------------------------- shared models and data
@pytest.fixture(scope="module")
def net():
    """helpers.small_net(): a 16x16 five-class net with batch norm (random weights)."""
    from helpers import small_net
    return small_net()


@pytest.fixture(scope="module")
def pretrained_model():
    """The bundled TinyImageNet-100-A model (skips without it; fails under CI)."""
    from helpers import pretrained
    return pretrained()


@pytest.fixture(scope="module")
def held_out():
    """The TinyImageNet-100-A archive, whose X_val are the held-out images 450-499."""
    from helpers import held_out_data
    return held_out_data()


@pytest.fixture(scope="module")
def one_thread():
    """gradvis on one thread for a module's tests, restored afterwards."""
    import gradvis
    before = gradvis.get_num_threads()
    gradvis.set_num_threads(1)
    yield
    gradvis.set_num_threads(before)
