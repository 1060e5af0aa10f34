"""Elementwise activation layers (one input, one output of the same shape)."""
from __future__ import annotations

import math

from .. import _checks
from . import functional as F
from .module import Layer

__all__ = ["ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "SiLU"]


class _Elementwise(Layer):
    """An elementwise activation: a ``*_forward``/``*_backward`` pair of
    :mod:`gradvis.layers`, the forward called with ``config()`` as keywords."""
    _fwd = _bwd = None    # staticmethods in the subclasses

    def forward(self, inputs, params, buffers, mode, rng):
        return self._fwd(inputs[0], **self.config())

    def backward(self, dout, cache):
        return [self._bwd(dout, cache)], {}


class ReLU(_Elementwise):
    type = "ReLU"
    _fwd, _bwd = staticmethod(F.relu_forward), staticmethod(F.relu_backward)


class ReLU6(_Elementwise):
    type = "ReLU6"
    _fwd, _bwd = staticmethod(F.relu6_forward), staticmethod(F.relu6_backward)


class LeakyReLU(_Elementwise):
    type = "LeakyReLU"
    _fwd, _bwd = staticmethod(F.leaky_relu_forward), staticmethod(F.leaky_relu_backward)

    def __init__(self, alpha=0.01):
        self.alpha = _checks.finite_float(alpha, "LeakyReLU: alpha")

    def config(self):
        return dict(alpha=self.alpha)


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)) (the squeeze-and-excitation gate of EfficientNet)."""
    type = "Sigmoid"
    _fwd, _bwd = staticmethod(F.sigmoid_forward), staticmethod(F.sigmoid_backward)


class Tanh(_Elementwise):
    type = "Tanh"
    _fwd, _bwd = staticmethod(F.tanh_forward), staticmethod(F.tanh_backward)


class HardSigmoid(_Elementwise):
    """clamp(alpha * x + beta, 0, 1). The defaults are PyTorch's Hardsigmoid (the
    MobileNetV3 gate); ONNX's HardSigmoid defaults to alpha=0.2, beta=0.5."""
    type = "HardSigmoid"
    _fwd, _bwd = staticmethod(F.hardsigmoid_forward), staticmethod(F.hardsigmoid_backward)

    def __init__(self, alpha=1.0 / 6.0, beta=0.5):
        self.alpha = _checks.number(alpha, "HardSigmoid: alpha")
        self.beta = _checks.number(beta, "HardSigmoid: beta")
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"HardSigmoid: alpha and beta must be finite, got {alpha}, {beta}")

    def config(self):
        return dict(alpha=self.alpha, beta=self.beta)

    def describe(self):
        return f"HardSigmoid alpha {self.alpha:.6g} beta {self.beta:g}"


class HardSwish(_Elementwise):
    """x * clamp(x + 3, 0, 6) / 6 (MobileNetV3's h-swish)."""
    type = "HardSwish"
    _fwd, _bwd = staticmethod(F.hardswish_forward), staticmethod(F.hardswish_backward)


class SiLU(_Elementwise):
    """x * sigmoid(x) (swish; EfficientNet's activation)."""
    type = "SiLU"
    _fwd, _bwd = staticmethod(F.silu_forward), staticmethod(F.silu_backward)
