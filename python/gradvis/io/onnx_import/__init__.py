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
  padding; other pads (constant, reflect, edge, wrap) become a
  :class:`~gradvis.nn.Pad` layer.
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
  squeeze-and-excitation gate ``(N, C, H, W) * (N, C, 1, 1)``; a constant minus
  (divided by) activations is :class:`~gradvis.nn.Neg` (``Reciprocal``) then the
  constant's layer. ``Max`` / ``Min`` of two activations are
  :class:`~gradvis.nn.Maximum` / :class:`~gradvis.nn.Minimum`.
- **Conditions on the activations** (:mod:`.masks`): ``Greater``, ``Less``,
  ``Equal``... of activations become a :class:`~gradvis.nn.Compare` 0/1 mask,
  ``Not`` / ``And`` / ``Or`` work on masks, and ``Where`` on one is a
  :class:`~gradvis.nn.Select` (``torch.where(x > t, a, b)``).
- ``InstanceNormalization`` (and GroupNorm's export around it) is a
  :class:`~gradvis.nn.LayerNorm` over the axes after the channels;
  ``Softplus`` -> ``Greater`` -> ``Where`` (the torch.export-based exporter's
  ``nn.Softplus``) is one :class:`~gradvis.nn.Softplus` with PyTorch's threshold.
- ``ReduceMean`` over the spatial axes [2, 3] (``x.mean((2, 3))``) is global
  average pooling (flattened when keepdims=0); other reductions (``ReduceMean``,
  ``ReduceSum``, ``ReduceMax`` on any axes but the batch) are a
  :class:`~gradvis.nn.Reduce` layer.
- ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (how the TorchScript exporter writes
  GELU) becomes one :class:`~gradvis.nn.GELU`; ONNX ``Gelu`` and ``Erf`` are layers.
- **Channels-last regions run channels-first.** A ``Transpose`` (0, 2, 3, 1)
  followed only by layer norms over the last axis, ``MatMul`` by constants and
  elementwise operators, back through ``Transpose`` (0, 3, 1, 2), as ConvNeXt's
  ``LayerNorm2d`` and blocks are written, is imported without the transposes: the
  layer norm over the channels (:class:`~gradvis.nn.LayerNorm` with axes (1,)),
  the ``MatMul`` as a 1x1 convolution. Other ``Transpose``, general ``Reshape``
  (ShuffleNet's channel shuffle), ``Slice``, ``Split`` and ``Gather`` by evenly
  spaced constant indices are layers with gradients
  (:class:`~gradvis.nn.Transpose`, :class:`~gradvis.nn.Reshape`,
  :class:`~gradvis.nn.Slice`), as are ``Tile`` and ``Expand`` of activations
  (:class:`~gradvis.nn.Tile`); the batch axis may not be sliced or merged, and moved
  only where the next nodes move it back: ``Transpose`` -> ``GatherND`` ->
  ``Transpose`` (the torch.export-based exporter's adaptive average pooling) is one
  :class:`~gradvis.nn.GatherND`, and ``Transpose`` (1, 0) into a ``Gemm`` with
  transA=1 is nothing. ``Where`` with a constant condition and a constant branch
  (``masked_fill``) is a :class:`~gradvis.nn.Scale` by the 0/1 mask (and a
  :class:`~gradvis.nn.Bias` for a non-zero fill).
- ``Resize`` / ``Upsample`` (nearest, linear and cubic) become :class:`~gradvis.nn.Resize`;
  ``Softmax`` / ``LogSoftmax`` inside the network are layers, ``MatMul`` by a
  constant acts on any axis (:class:`~gradvis.nn.MatMul`), and ``MatMul`` of two
  activation tensors (attention) is a :class:`~gradvis.nn.BatchMatMul`; a
  ``Transpose`` that moves the batch axis second, read only by the pieces of its
  new first axis (attention's ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``), becomes
  slices of the untransposed tensor. A ``Concat`` of activations and constants (a
  class token expanded to the batch) keeps the constants as parameters of the
  :class:`~gradvis.nn.Concat` layer. ``Where``
  with a constant condition and two activation branches is a
  :class:`~gradvis.nn.Select` on the constant mask. ``Log(Sigmoid(x))`` is one
  :class:`~gradvis.nn.LogSigmoid`; a 1-D ``Conv`` is a ``Conv2d`` with a (1, k) kernel
  between two reshapes, and a 1-D ``MaxPool``, ``AveragePool`` or
  ``BatchNormalization`` on (N, C, L) likewise the 2-D layer on (N, C, 1, L).
- ``Dropout`` and ``Identity`` disappear (their output is another name for their
  input); a ``Softmax`` producing the graph output is dropped, so the model
  returns scores as the algorithms expect; ``model.info['dropped']`` says so.
- **Constant subgraphs are evaluated at import** with numpy (:mod:`.constants`):
  every activation's shape is known from the input shape, so ``Shape``,
  ``Gather``, ``ConstantOfShape``, ``Slice``, ``Concat``, ``Range``, ``Expand``,
  ``Where``, arithmetic, ``Reshape``, ``Transpose``... on constants and shapes
  are computed once (``F.pad``'s export, ShuffleNet's ``x.size(0)``). What
  depends on the image's values cannot be: the error names the node where the
  dependence enters (an operator evaluated on constants only, given activations, is
  reported as unsupported) and, for shape arithmetic, suggests folding with
  onnxsim or onnxruntime. The batch
  size stays free: a leading ``0``, ``-1`` or the exported batch size in a
  ``Reshape`` is the batch axis.
- Complex or string initializers, and a Conv whose bias names no initializer,
  are refused.
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

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from ...nn import Model
from .converter import Importer
from .ops import SUPPORTED_OPS
from .reader import ONNXImportError, UnsupportedOperatorError, read_proto, require_onnx

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
        A :class:`gradvis.Model`, frozen (:meth:`Model.freeze`: its weights are
        constants, as an ONNX Runtime session's; ``unfreeze()`` to change them in
        place); ``model.info`` records the source, what was folded or dropped,
        and the ONNX tensor -> node name map.

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
    return model.freeze()


def _exporter(which):
    """'dynamo' when ``which`` is 'auto' and onnxscript (the torch.export-based
    exporter's dependency) is installed, else 'torchscript'; or ``which`` itself."""
    if which not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {which!r}")
    if which != "auto":
        return which
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return "torchscript"
    return "dynamo"


def export_torch(module, x, exporter="auto", opset=None):
    """(onnx.ModelProto, exporter used) of ``module`` traced on ``x`` in eval mode
    without gradients; 'auto' tries the torch.export-based exporter (when onnxscript
    is installed) and falls back to the TorchScript one if it fails."""
    import torch
    onnx = require_onnx()
    which = _exporter(exporter)
    errors = []
    for kind in (["dynamo", "torchscript"] if which == "dynamo" and exporter == "auto" else [which]):
        try:
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")   # deprecation and tracer notices
                if kind == "dynamo":
                    prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                             input_names=["input"], output_names=["output"], verbose=False)
                    return prog.model_proto, kind
                buf = io.BytesIO()
                torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=opset or 17,
                                  input_names=["input"], output_names=["output"], do_constant_folding=True)
                return onnx.load_from_string(buf.getvalue()), kind
        except Exception as e:    # the exporters raise many kinds
            errors.append(f"{kind}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise ValueError(f"from_torch: PyTorch could not export {type(module).__name__} to ONNX "
                     f"({'; '.join(errors)})")


def from_torch(module, example_input, input_shape=None, mean=None, std=None, scale=1.0,
               channel_order="RGB", class_names=None, wnids=None, name=None, opset=None,
               fold_batchnorm=True, exporter="auto"):
    """Build a :class:`gradvis.Model` from a PyTorch module in memory.

    The module is put in eval mode (batch norm uses its running statistics,
    dropout is off), exported to ONNX in memory and read by :func:`load_onnx`.
    The exporter is PyTorch's torch.export-based one (``dynamo=True``, PyTorch's
    default since 2.9) when ``onnxscript`` is installed, else (or if it fails) the
    TorchScript-based one (``dynamo=False``). The training flag of the module and
    of each submodule is restored afterwards.

    Args:
        module: a ``torch.nn.Module`` taking one (N, C, H, W) image batch.
        example_input: a tensor or array (N, C, H, W) used for tracing; its (C, H,
            W) is the default ``input_shape``.
        opset: the ONNX opset to export (>= 13); default: 17 for the TorchScript
            exporter, the torch.export-based exporter's own default (18 or later).
        exporter: 'auto' (above), 'dynamo' or 'torchscript'. ``model.info['exporter']``
            says which one was used.
        others: as :func:`load_onnx`.

    Example:
        >>> model = gradvis.from_torch(net, torch.zeros(1, 3, 224, 224),
        ...                            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=255)
    """
    try:
        import torch
    except ImportError:
        raise ImportError("from_torch needs PyTorch (pip install torch) and onnx (pip install onnx)") from None
    require_onnx()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if opset is not None:
        if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset < 13:
            raise ValueError(f"opset must be an int >= 13, got {opset!r}")
        opset = int(opset)
    _exporter(exporter)
    x = example_input
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32)))
    if x.ndim != 4:
        raise ValueError(f"example_input must be an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    x = x.float()
    flags = [(m, m.training) for m in module.modules()]   # each submodule's own mode
    module.eval()
    try:
        proto, used = export_torch(module, x, exporter, opset)
    finally:
        for m, training in flags:
            m.training = training
    model = load_onnx(proto, input_shape=input_shape or tuple(x.shape[1:]), mean=mean, std=std,
                      scale=scale, channel_order=channel_order, class_names=class_names, wnids=wnids,
                      name=name or type(module).__name__, fold_batchnorm=fold_batchnorm)
    model.info["source"] = "torch"
    model.info["file"] = f"<{type(module).__name__}>"
    model.info["exporter"] = used
    return model


def preprocessing(channels, mean, std, scale):
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    m = np.zeros(channels) if mean is None else np.asarray(mean, np.float64)
    s = np.ones(channels) if std is None else np.asarray(std, np.float64)
    if m.ndim == 0:
        m = np.full(channels, float(m))
    if s.ndim == 0:
        s = np.full(channels, float(s))
    return (m * scale).astype(np.float32), (s * scale).astype(np.float32)


def check_arrays(model, label):
    """Every parameter and buffer finite, and each layer's own checks (e.g. batch norm's
    variances >= 0): a file with NaN weights would give NaN scores, never an error."""
    for table in (model.params, model.buffers):
        for k, v in table.items():
            if not np.isfinite(v).all():
                raise ONNXImportError(f"{label}: {k!r} (shape {v.shape}) has NaN or infinite values")
    for node in model.nodes:
        lay = node.layer
        try:
            lay.check_arrays({k: model.params[f"{node.name}.{k}"] for k in lay.param_shapes},
                             {k: model.buffers[f"{node.name}.{k}"] for k in lay.buffer_shapes})
        except ValueError as e:
            raise ONNXImportError(f"{label}: node {node.name!r}: {e}") from None
