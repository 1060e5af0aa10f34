"""The engine's Python side: checked ops over the compiled core, layer classes and
the graph :class:`Model`.

- :mod:`~gradvis.nn.functional`: the ops with the CS231n ``forward -> (out, cache)``,
  ``backward(dout, cache)`` contract (re-exported as :mod:`gradvis.layers`);
- :mod:`~gradvis.nn.geometry`: the one parser of kernel sizes, strides and padding;
- layer classes by kind: :mod:`~gradvis.nn.conv`, :mod:`~gradvis.nn.norm`,
  :mod:`~gradvis.nn.activation`, :mod:`~gradvis.nn.pooling`,
  :mod:`~gradvis.nn.linear`, :mod:`~gradvis.nn.elementwise`, and for imported graphs
  :mod:`~gradvis.nn.layernorm`, :mod:`~gradvis.nn.pointwise`, :mod:`~gradvis.nn.tensor`,
  :mod:`~gradvis.nn.reduce`, :mod:`~gradvis.nn.matmul`, on the base class of
  :mod:`~gradvis.nn.module`, listed by saved name in :mod:`~gradvis.nn.registry`;
- :mod:`~gradvis.nn.graph`: :class:`Model`, a graph of named nodes;
- :mod:`~gradvis.nn.fileformat`: the model file format (writing; reading is in
  :mod:`gradvis.io.model_file`);
- :mod:`~gradvis.nn.losses`, :mod:`~gradvis.nn.gradients`, :mod:`~gradvis.nn.imageops`:
  what the algorithms share (softmax and losses, image gradients, jitter/resize/blur);
- :mod:`~gradvis.nn.architectures`: the bundled model's network and CS231n 2016's.
"""
from .activation import HardSigmoid, HardSwish, LeakyReLU, ReLU, ReLU6, Sigmoid, SiLU, Tanh
from .conv import Conv2d
from .elementwise import Add, Bias, Clip, Compare, Concat, Div, Maximum, Minimum, Mul, Pad, PReLU, Scale, Select, Sub
from .graph import Model, Node
from .layernorm import LayerNorm
from .linear import Dropout, Flatten, Linear
from .matmul import BatchMatMul, MatMul
from .module import INPUT, Layer, LayerNotFoundError
from .norm import BatchNorm1d, BatchNorm2d
from .pointwise import (CELU, ELU, GELU, SELU, Abs, Erf, Exp, Log, LogSigmoid, Mish, Neg, Pow, Reciprocal,
                        Softplus, Softsign, Sqrt, ThresholdedReLU)
from .pooling import AvgPool2d, GlobalAvgPool, MaxPool2d
from .reduce import LogSoftmax, Reduce, Softmax
from .registry import LAYER_TYPES
from .tensor import GatherND, Reshape, Resize, Slice, Tile, Transpose

__all__ = [
    "Model", "Node", "Layer", "LayerNotFoundError", "INPUT", "LAYER_TYPES",
    "Conv2d", "BatchNorm2d", "BatchNorm1d", "ReLU", "ReLU6", "LeakyReLU",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "SiLU",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool", "Flatten", "Linear", "Dropout",
    "Add", "Mul", "Sub", "Div", "Concat", "Clip", "Pad", "Bias", "Scale",
    "LayerNorm", "GELU", "Erf", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Transpose", "Reshape", "Slice",
    "GatherND", "Resize", "Reduce", "Softmax", "LogSoftmax", "MatMul", "BatchMatMul",
    "Log", "Reciprocal", "ELU", "SELU", "CELU", "Softplus", "LogSigmoid", "Softsign", "Mish", "ThresholdedReLU",
    "Maximum", "Minimum", "PReLU", "Compare", "Select", "Tile",
]
