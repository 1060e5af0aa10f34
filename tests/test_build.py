"""The compiled module as the dynamic linker sees it."""
import shutil
import subprocess
import sys

import pytest

import gradvis._core as core

# Symbols of the C++ runtime and its exception handling. A module that exports them
# (a toolchain that links libstdc++ statically) has them bound to whichever
# libstdc++ the process loaded first, and its first C++ exception crashes.
RUNTIME = ("__cxa_", "__gxx_personality", "_ZNSt", "_ZSt", "_ZTVN10__cxxabiv1", "_ZNKSt")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol tables")
def test_module_exports_no_cxx_runtime_symbols():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", core.__file__], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert "PyInit__core" in [r[-1] for r in rows]
    # strong definitions only: weak ones (W, V, u) are template instances of the
    # module's own code, which any copy may provide
    leaked = [r[-1] for r in rows if r[-2] in "TDBR" and r[-1].startswith(RUNTIME)]
    assert not leaked, f"{len(leaked)} C++ runtime symbols exported, e.g. {leaked[:5]}"


def test_exceptions_cross_the_module():
    """A C++ exception thrown and translated inside the module reaches Python as an
    error (this is what crashed when the runtime's symbols were mixed)."""
    import numpy as np

    with pytest.raises(ValueError):
        core.conv2d_forward(np.zeros((1, 3, 4, 4), np.float32), np.zeros((2, 4, 3, 3), np.float32))
