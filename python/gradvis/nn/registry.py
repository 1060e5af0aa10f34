"""The table of layer types by the name saved in model files."""
from __future__ import annotations

from .activation import HardSigmoid, HardSwish, LeakyReLU, ReLU, ReLU6, Sigmoid, SiLU, Tanh
from .conv import Conv2d
from .elementwise import Add, Bias, Clip, Compare, Concat, Div, Maximum, Minimum, Mul, Pad, PReLU, Scale, Select, Sub
from .layernorm import LayerNorm
from .linear import Dropout, Flatten, Linear
from .matmul import BatchMatMul, MatMul
from .norm import BatchNorm1d, BatchNorm2d
from .pointwise import (CELU, ELU, GELU, SELU, Abs, Erf, Exp, Log, LogSigmoid, Mish, Neg, Pow, Reciprocal,
                        Softplus, Softsign, Sqrt, ThresholdedReLU)
from .pooling import AvgPool2d, GlobalAvgPool, MaxPool2d
from .reduce import LogSoftmax, Reduce, Softmax
from .tensor import GatherND, Reshape, Resize, Slice, Tile, Transpose

__all__ = ["LAYER_TYPES"]

# Nothing in a model file is executed: its layer types are looked up here.
LAYER_TYPES = {cls.type: cls for cls in (
    Conv2d, BatchNorm2d, BatchNorm1d, ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, HardSigmoid, HardSwish,
    SiLU, MaxPool2d, AvgPool2d, GlobalAvgPool, Flatten, Linear, Dropout, Add, Mul, Sub, Div, Concat,
    Clip, Pad, Bias, Scale,
    # what imported graphs use beyond the CS231n set
    LayerNorm, GELU, Erf, Pow, Sqrt, Neg, Abs, Exp, Transpose, Reshape, Slice, GatherND, Resize, Reduce, Softmax,
    LogSoftmax, MatMul, Log, Reciprocal, ELU, SELU, CELU, Softplus, Softsign, Mish, ThresholdedReLU, Maximum, Minimum,
    PReLU, Compare, Select, Tile, LogSigmoid, BatchMatMul)}
