"""torchvision for the benchmarks' reference models, also beside a torch build that its
compiled ops do not match (PyPI's CPU torch with torchvision's CUDA wheel, installed
--no-deps): then the schemas of the two ops it registers at import (nms, qnms) are
declared first, which is all its model code needs. Where its ops do load, nothing is
declared (a declared schema would clash with theirs and abort the process)."""
import glob
import importlib.util
import os


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
