"""gradvis: see what a convolutional network sees through its gradients.

The five algorithms of CS231n's "image gradients" and "image generation"
lessons on a fast C++ core: :func:`compute_saliency_maps`,
:func:`make_fooling_image`, :func:`create_class_visualization`,
:func:`invert_features` and :func:`deepdream`, on a :class:`Model` such as the
bundled TinyImageNet-100-A network from :func:`load_pretrained`.

The package by role, each part importing only the parts listed after it:
:mod:`gradvis.cli` (the ``gradvis`` command), :mod:`gradvis.plot` (figures), the
algorithm families :mod:`gradvis.attribution`, :mod:`gradvis.generation`,
:mod:`gradvis.optvis` (Lucid-style feature visualization), :mod:`gradvis.attacks`
and :mod:`gradvis.train`, :mod:`gradvis.io` (model files,
importers, images, datasets), :mod:`gradvis.nn` (the layers and the graph
:class:`Model`) and the compiled core. :mod:`gradvis.layers` is the CS231n
layer API.
"""
import os as _os

# The kernels run on gradvis's own thread pool (csrc/cpu/team.cpp), whose waits
# yield their core. With GRADVIS_TEAM=openmp they run on GNU OpenMP's threads, which
# spin for a long time at every barrier by default; when another process holds a
# core, a spinning thread burns the time slice its descheduled peer needs, and loops
# of short parallel regions (a batch-1 gradient loop) slow down many times over. A
# short spin bounds that case (bench/RESULTS.md, "Design measurements"). It must be
# set before the OpenMP runtime loads (importing _core); a user's own setting wins.
_spin_set = "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ
if _spin_set:
    _os.environ["GOMP_SPINCOUNT"] = "1000"
try:
    from . import _core
finally:
    # libgomp read it when _core loaded it; other runtimes loaded later (PyTorch
    # ships its own libgomp) and child processes keep their own defaults
    if _spin_set:
        _os.environ.pop("GOMP_SPINCOUNT", None)
from . import layers
from ._core import (has_cuda, has_openmp, get_num_threads, set_num_threads, simd_level,
                    get_conv_algorithm, set_conv_algorithm, set_winograd_cache_limit,
                    winograd_cache_info, set_packed_cache_limit, packed_cache_info,
                    set_array_pool_limit, array_pool_info,
                    set_block_cache_limit, block_cache_info, set_memory_limit, get_memory_limit)
from .nn import (Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Bias, Clip, Concat, Conv2d, Div, Dropout,
                 Flatten, GlobalAvgPool, HardSigmoid, HardSwish, Layer, LayerNotFoundError, LeakyReLU,
                 Linear, MaxPool2d, Model, Mul, Pad, ReLU, ReLU6, Scale, SiLU, Sigmoid, Sub, Tanh)
from .nn import (GELU, Abs, BatchMatMul, Erf, Exp, GatherND, LayerNorm, LogSoftmax, MatMul, Neg, Pow, Reduce, Reshape,
                 Resize, Slice, Softmax, Sqrt, Transpose)
from .nn import (CELU, ELU, SELU, Compare, Log, LogSigmoid, Maximum, Minimum, Mish, PReLU, Reciprocal, Select,
                 Softplus, Softsign, ThresholdedReLU, Tile)
from .io import from_torch, load_any, load_cs231n_h5, load_image, load_model, load_onnx, load_pretrained
from .attribution import compute_saliency_maps, smoothgrad_saliency_maps
from .attacks import make_fooling_image
from .generation import create_class_visualization, deepdream, invert_features

__version__ = "0.1.0"

__all__ = [
    "layers",
    "Model", "Layer", "LayerNotFoundError",
    "Conv2d", "BatchNorm2d", "BatchNorm1d", "ReLU", "ReLU6", "LeakyReLU",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "SiLU", "MaxPool2d",
    "AvgPool2d", "GlobalAvgPool", "Flatten", "Linear", "Dropout", "Add", "Mul", "Sub", "Div",
    "Concat", "Clip", "Pad", "Bias", "Scale",
    "LayerNorm", "GELU", "Erf", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Transpose", "Reshape", "Slice",
    "GatherND", "Resize", "Reduce", "Softmax", "LogSoftmax", "MatMul", "BatchMatMul",
    "Log", "Reciprocal", "ELU", "SELU", "CELU", "Softplus", "LogSigmoid", "Softsign", "Mish", "ThresholdedReLU",
    "Maximum", "Minimum", "PReLU", "Compare", "Select", "Tile",
    "load_model",
    "load_onnx",
    "from_torch",
    "load_any",
    "load_cs231n_h5",
    "load_pretrained",
    "load_image",
    "compute_saliency_maps",
    "smoothgrad_saliency_maps",
    "make_fooling_image",
    "create_class_visualization",
    "invert_features",
    "deepdream",
    "has_cuda",
    "has_openmp",
    "get_num_threads",
    "set_num_threads",
    "simd_level",
    "get_conv_algorithm",
    "set_conv_algorithm",
    "set_winograd_cache_limit",
    "winograd_cache_info",
    "set_packed_cache_limit",
    "packed_cache_info",
    "set_array_pool_limit",
    "set_block_cache_limit",
    "block_cache_info",
    "set_memory_limit",
    "get_memory_limit",
    "array_pool_info",
    "__version__",
]
