"""torchvision for the benchmarks' reference models, also beside a torch build that its
compiled ops do not match (PyPI's CPU torch with torchvision's CUDA wheel, installed
--no-deps): then the schemas of the two ops it registers at import (nms, qnms) are
declared first, which is all its model code needs. Where its ops do load, nothing is
declared (a declared schema would clash with theirs and abort the process)."""
import glob
import importlib.util
import os
import subprocess
import sys


def gradvis_origin(env=None):
    """The folder of the gradvis package the benchmark's workers import (run with
    env, as they are), printed with a note when it is not this checkout's
    python/gradvis: an installed copy may be an older build, and the timings would
    then be that build's (PYTHONPATH=$PWD/python times the checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", "import os, gradvis; print(os.path.dirname(gradvis.__file__))"],
                         capture_output=True, text=True, env=env)
    origin = out.stdout.strip() or f"(import failed: {out.stderr.strip()[-200:]})"
    own = os.path.join(os.path.dirname(here), "python", "gradvis")
    note = "" if os.path.realpath(origin) == os.path.realpath(own) else \
        " -- not this checkout's python/gradvis; PYTHONPATH=$PWD/python times the checkout"
    print(f"gradvis imported from {origin}{note}", flush=True)
    return origin


def simd_env(level):
    """Environment variables that cap both libraries at one SIMD level ('avx2' or
    'avx512'): GRADVIS_SIMD for gradvis; for PyTorch ATEN_CPU_CAPABILITY (its own
    kernels) and, for AVX2, ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS, without
    which its convolutions (oneDNN) and matrix products (MKL) keep using AVX-512."""
    env = {"GRADVIS_SIMD": level, "ATEN_CPU_CAPABILITY": level}
    if level == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    return env


def import_torchvision():
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.origin:
        raise ImportError("torchvision is not installed (pip install --no-deps torchvision)")
    ops_load = False
    for lib in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib)
            ops_load = True
        except (OSError, RuntimeError):
            pass
    if not ops_load:
        for op in ("nms", "qnms"):
            try:
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:     # declared already in this process
                pass
    import torchvision
    return torchvision
