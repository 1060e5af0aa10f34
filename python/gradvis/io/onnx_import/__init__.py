"""Bring your own network: ONNX files and PyTorch modules as gradvis models.

:func:`load_onnx` reads an ONNX graph (with the optional ``onnx`` package) and
builds a :class:`gradvis.Model` of gradvis layers, so the five algorithms run on
it with gradvis's own engine; :func:`from_torch` does the same for a PyTorch
module in memory by exporting it to ONNX first. Neither needs a deep-learning
framework afterwards: the result saves and loads as a gradvis ``.npz``.

What the importer does with the graph:

- **Batch norm is folded** into the convolution before it when nothing else
  reads that convolution's output (``W' = W * g / sqrt(v + eps)``, ``b' = (b - m)
  * g / sqrt(v + eps) + beta``, in float64); any other BatchNormalization becomes
  a test-mode :class:`~gradvis.nn.BatchNorm2d` / ``BatchNorm1d``. (PyTorch's
  own exporter already folds conv+BN in eval mode.)
- **Zero padding** (``Pad``) that feeds a convolution becomes that convolution's
  padding; other constant pads become a :class:`~gradvis.nn.Pad` layer.
- A constant added after a convolution or a ``MatMul`` becomes its bias.
- ``Mul(x, Sigmoid(x))`` (how PyTorch exports ``nn.SiLU``) becomes one
  :class:`~gradvis.nn.SiLU` layer when nothing else reads the Sigmoid, and
  ``Mul(x, HardSigmoid(x))`` with PyTorch's alpha 1/6, beta 1/2 (``nn.Hardswish``
  before opset 14) one :class:`~gradvis.nn.HardSwish`.
- ``Add``, ``Sub``, ``Mul`` and ``Div`` by a constant become
  :class:`~gradvis.nn.Bias` / :class:`~gradvis.nn.Scale` layers (with the
  constant as a parameter); of two activation tensors, :class:`~gradvis.nn.Add`,
  :class:`~gradvis.nn.Sub`, :class:`~gradvis.nn.Mul` and
  :class:`~gradvis.nn.Div` layers that broadcast as numpy does: the
  squeeze-and-excitation gate ``(N, C, H, W) * (N, C, 1, 1)``.
- ``ReduceMean`` over the spatial axes [2, 3] (``x.mean((2, 3))``) is global
  average pooling (flattened when keepdims=0); over other axes it is an
  :class:`UnsupportedOperatorError`.
- ``Dropout`` and ``Identity`` disappear (their output is another name for their
  input); a ``Softmax`` producing the graph output is dropped, so the model
  returns scores as the algorithms expect; ``model.info['dropped']`` says so.
- Shape arithmetic on constants (``Shape``, ``Gather``, ``Unsqueeze``,
  ``Concat``, ``Cast``, ...) is evaluated at import time; a ``Reshape`` must end
  up flattening ``(N, ...) -> (N, -1)`` (or be a no-op). The batch size is free:
  a hard-coded leading 1 in a Reshape (PyTorch's ``x.view(1, -1)`` on a batch-1
  export) is read as the batch axis.
- ReLU is not fused into the convolution (each ReLU stays its own node, so its
  output can be picked by name).

Node names come from the ONNX node names, made readable: PyTorch's scoped names
``/layer1/layer1.0/conv1/Conv`` become the module path ``layer1.0.conv1`` (an op
called in a block's ``forward``, like the residual ``Add``, is named after the
block: ``layer1.0.add`` when the block has several). Other names are sanitized
(characters outside ``[A-Za-z0-9_.:-]`` become ``_``) and made unique.
``model.info['tensors']`` maps every ONNX tensor name to the node whose output
it is (folded and dropped nodes map to the node that now produces the value).

Preprocessing travels with the model. gradvis's :meth:`Model.preprocess` maps
0-255 pixels to ``(x - mean) / std``; networks trained on torchvision's
``ToTensor`` + ``Normalize`` take ``(x / 255 - mean) / std``; pass ``scale=255``
with their 0-1 mean and std and the importer stores ``mean * 255`` and ``std *
255``, which is the same map.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ...nn import Model
from .converter import Importer, check_arrays, preprocessing
from .reader import SUPPORTED_OPS, ONNXImportError, UnsupportedOperatorError, read_proto, require_onnx

__all__ = ["load_onnx", "from_torch", "ONNXImportError", "UnsupportedOperatorError",
           "SUPPORTED_OPS"]


def load_onnx(source, input_shape=None, mean=None, std=None, scale=1.0, channel_order="RGB",
              class_names=None, wnids=None, name=None, output=None, fold_batchnorm=True):
    """Build a :class:`gradvis.Model` from an ONNX model.

    Args:
        source: path of a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
        input_shape: (C, H, W) of the input; default: the graph input's static shape
            (required when the graph's H and W are dynamic).
        mean, std: per-channel input normalization, in units of ``pixel / scale``
            (a scalar applies to every channel). Default 0 and 1.
        scale: pixel values are divided by ``scale`` before ``mean`` and ``std``
            apply: ``scale=255`` with torchvision's ``mean=(0.485, 0.456, 0.406)``,
            ``std=(0.229, 0.224, 0.225)`` gives the model ``(x / 255 - mean) /
            std``. gradvis stores ``mean * scale`` and ``std * scale`` (0-255 units).
        channel_order: 'RGB' or 'BGR'.
        class_names, wnids: one per output class.
        name: the model's name (default: the graph's name or the file's stem).
        output: which graph output is the model's output (default: the first).
        fold_batchnorm: fold BatchNormalization into the preceding convolution.

    Returns:
        A :class:`gradvis.Model`; ``model.info`` records the source, what was
        folded or dropped, and the ONNX tensor -> node name map.

    Raises:
        ImportError: the ``onnx`` package is missing.
        FileNotFoundError: no such file.
        ValueError: the file is not a (valid) ONNX model, naming the file;
            :class:`UnsupportedOperatorError` / :class:`ONNXImportError` (both
            ValueErrors) name the ONNX node, its op type and the problem
            (unsupported operator or attribute, shape mismatch).

    Example:
        >>> model = gradvis.load_onnx('resnet18.onnx', mean=(0.485, 0.456, 0.406),
        ...                           std=(0.229, 0.224, 0.225), scale=255)
        >>> X = model.preprocess(images)
        >>> saliency = gradvis.compute_saliency_maps(X, y, model)
    """
    proto, label = read_proto(source)
    imp = Importer(proto, label, input_shape, output, fold_batchnorm)
    c = imp.input_shape[0]
    m, s = preprocessing(c, mean, std, scale)
    if name is None:
        name = proto.graph.name or (Path(label).stem if not label.startswith("<") else "onnx")
    try:
        model = Model(input_shape=imp.input_shape, mean=m, std=s, channel_order=channel_order,
                      class_names=class_names, wnids=wnids, name=name)
    except ValueError as e:
        raise ValueError(f"load_onnx: {e}") from None
    imp.run(model)
    check_arrays(model, label)
    imp.info["scale"] = float(scale)
    model.info = imp.info
    k = model.num_classes
    if class_names is not None and k is not None and len(class_names) != k and \
            model.output_shapes()[model.nodes[-1].name] == (k,):
        raise ValueError(f"load_onnx: {len(class_names)} class names for a model with {k} outputs")
    return model


def from_torch(module, example_input, input_shape=None, mean=None, std=None, scale=1.0,
               channel_order="RGB", class_names=None, wnids=None, name=None, opset=17,
               fold_batchnorm=True):
    """Build a :class:`gradvis.Model` from a PyTorch module in memory.

    The module is put in eval mode (batch norm uses its running statistics,
    dropout is off), exported to ONNX in memory with PyTorch's TorchScript-based
    exporter (``dynamo=False``; opset ``opset`` >= 13) and read by
    :func:`load_onnx`. The training flag of the module and of each submodule is
    restored afterwards.

    Args:
        module: a ``torch.nn.Module`` taking one (N, C, H, W) image batch.
        example_input: a tensor or array (N, C, H, W) used for tracing; its (C, H,
            W) is the default ``input_shape``.
        others: as :func:`load_onnx`.

    Example:
        >>> model = gradvis.from_torch(net, torch.zeros(1, 3, 224, 224),
        ...                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=255)
    """
    try:
        import torch
    except ImportError:
        raise ImportError("from_torch needs PyTorch (pip install torch) and onnx (pip install onnx)") from None
    onnx = require_onnx()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if int(opset) < 13:
        raise ValueError(f"opset must be >= 13, got {opset}")
    x = example_input
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32)))
    if x.ndim != 4:
        raise ValueError(f"example_input must be an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    x = x.float()
    flags = [(m, m.training) for m in module.modules()]   # each submodule's own mode
    module.eval()
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the legacy exporter's deprecation notice
            torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=int(opset),
                              input_names=["input"], output_names=["output"], do_constant_folding=True)
    except Exception as e:
        raise ValueError(f"from_torch: PyTorch could not export {type(module).__name__} to ONNX "
                         f"({type(e).__name__}: {e})") from e
    finally:
        for m, training in flags:
            m.training = training
    proto = onnx.load_from_string(buf.getvalue())
    model = load_onnx(proto, input_shape=input_shape or tuple(x.shape[1:]), mean=mean, std=std,
                      scale=scale, channel_order=channel_order, class_names=class_names, wnids=wnids,
                      name=name or type(module).__name__, fold_batchnorm=fold_batchnorm)
    model.info["source"] = "torch"
    model.info["file"] = f"<{type(module).__name__}>"
    return model
