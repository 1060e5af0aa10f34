"""Flatten, fully connected (Linear) and Dropout layers, and the weight layout that
Linear and :class:`~gradvis.nn.MatMul` share."""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from . import functional as F
from .module import Layer

__all__ = ["Flatten", "Linear", "Dropout", "DenseWeight"]


class Flatten(Layer):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk)."""
    type = "Flatten"

    def output_shape(self, input_shapes):
        return (int(np.prod(input_shapes[0], dtype=np.int64)),)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dout, cache):
        return [np.asarray(dout).reshape(cache)], {}


class DenseWeight(Layer):
    """The parameters of a layer that multiplies features by a matrix: ``weight`` (D, M)
    as CS231n lays it out (inputs times weight, not PyTorch's (M, D)), and ``bias`` (M,)
    when ``bias``; uniform in +-1/sqrt(D) at initialization, as PyTorch's Linear.
    :class:`Linear` and :class:`~gradvis.nn.MatMul` are such layers."""

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = _checks.integer(in_features, f"{self.type}: in_features", 1)
        self.out_features = _checks.integer(out_features, f"{self.type}: out_features", 1)
        self.bias = _checks.boolean(bias, f"{self.type}: bias")

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias)

    @property
    def param_shapes(self):
        s = {"weight": (self.in_features, self.out_features)}
        if self.bias:
            s["bias"] = (self.out_features,)
        return s

    def init_params(self, rng, dtype):
        bound = 1.0 / math.sqrt(self.in_features)
        p = {"weight": rng.uniform(-bound, bound, (self.in_features, self.out_features)).astype(dtype)}
        if self.bias:
            p["bias"] = np.zeros(self.out_features, dtype)
        return p


class Linear(DenseWeight):
    """Affine layer: out = x.reshape(N, D) @ weight + bias, weight (D, M) as CS231n."""
    type = "Linear"

    def describe(self):
        return f"Linear {self.in_features}->{self.out_features}" + ("" if self.bias else " no bias")

    def output_shape(self, input_shapes):
        d = math.prod(input_shapes[0])
        if d != self.in_features:
            raise ValueError(f"expects {self.in_features} input features, got input (N, "
                             f"{', '.join(map(str, input_shapes[0]))}) = {d} features")
        return (self.out_features,)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return F.affine_forward(x, params["weight"], params.get("bias"))

    def backward(self, dout, cache):
        dx, dw, db = F.affine_backward(dout, cache)
        grads = {"weight": dw}
        if self.bias:
            grads["bias"] = db
        return [dx], grads

    def backward_inputs(self, dout, cache):
        return [F.affine_backward_input(dout, cache)]

    def backward_params(self, dout, cache):
        dw, db = F.affine_backward_params(dout, cache)
        return {"weight": dw, "bias": db} if self.bias else {"weight": dw}


class Dropout(Layer):
    """Inverted dropout: in train mode zero each value with probability p and scale
    the rest by 1 / (1 - p); identity in test mode. Random numbers come from the
    model's generator (``Model.seed``) or the ``rng`` passed to forward."""
    type = "Dropout"

    def __init__(self, p=0.5):
        self.p = _checks.finite_float(p, "Dropout: p")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")

    def config(self):
        return dict(p=self.p)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        if mode != "train" or self.p == 0.0:
            return x, None
        mask = (rng.random(x.shape, dtype=np.float32) >= self.p).astype(x.dtype) / x.dtype.type(1.0 - self.p)
        return x * mask, mask

    def backward(self, dout, cache):
        return [dout if cache is None else dout * cache], {}
