"""Reading and writing what gradvis works on: model files (gradvis ``.npz``, CS231n
``.h5``, ONNX and PyTorch), images and datasets.

- :mod:`~gradvis.io.model_file`: :func:`load_model` (the format: :mod:`gradvis.nn.fileformat`);
- :mod:`~gradvis.io.cs231n_h5`: :func:`load_cs231n_h5`;
- :mod:`~gradvis.io.onnx_import`: :func:`load_onnx`, :func:`from_torch` (needs ``onnx``);
- :mod:`~gradvis.io.pretrained`: :func:`load_pretrained` (the bundled model), :func:`load_any`;
- :mod:`~gradvis.io.images`: :func:`load_image`, :func:`read_rgb`;
- :mod:`~gradvis.io.datasets`: the TinyImageNet-100-A archive and image folders.
"""
from .cs231n_h5 import load_cs231n_h5
from .images import load_image, read_rgb
from .model_file import load_model, read_model_file
from .onnx_import import from_torch, load_onnx
from .pretrained import load_any, load_pretrained

__all__ = ["load_model", "read_model_file", "load_cs231n_h5", "load_onnx", "from_torch",
           "load_pretrained", "load_any", "load_image", "read_rgb"]
