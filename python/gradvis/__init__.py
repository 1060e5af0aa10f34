"""gradvis: see what a convolutional network sees through its gradients."""
from . import _core
from . import layers
from ._core import has_cuda, has_openmp, get_num_threads, set_num_threads, simd_level
from .model import Model
from .serialization import load_model, load_cs231n_h5
from .models import load_pretrained

__version__ = "0.1.0"

__all__ = [
    "layers",
    "Model",
    "load_model",
    "load_cs231n_h5",
    "load_pretrained",
    "has_cuda",
    "has_openmp",
    "get_num_threads",
    "set_num_threads",
    "simd_level",
    "__version__",
]
