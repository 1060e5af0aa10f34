"""Multiplication of activations by a constant matrix along any axis: ONNX MatMul
and Gemm whose weight is a constant, on (N, ..., K) activations (ConvNeXt's
pointwise layers act on the last axis of (N, H, W, C)) or any other axis."""
from __future__ import annotations

import numpy as np

from .linear import DenseWeight

__all__ = ["MatMul"]


class MatMul(DenseWeight):
    """out = x contracted with ``weight`` (K, M) along ``axis`` (>= 1) of each sample,
    plus ``bias`` (M,) along that axis when ``bias``: with ``axis`` the last one this
    is ``x @ weight + bias`` (torch.nn.Linear on (N, ..., K) inputs with weight.T).
    The parameters are :class:`~gradvis.nn.Linear`'s (:class:`~gradvis.nn.linear.DenseWeight`).

    Shapes: (N, ..., K at axis, ...) -> (N, ..., M at axis, ...).
    """
    type = "MatMul"

    def __init__(self, in_features, out_features, axis=-1, bias=False):
        super().__init__(in_features, out_features, bias)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"MatMul: axis must be a non-batch axis (>= 1, or negative from the end), got {axis!r}")
        self.axis = int(axis)

    def config(self):
        return dict(super().config(), axis=self.axis)

    def describe(self):
        return f"MatMul {self.in_features}->{self.out_features} axis {self.axis}" + (" + bias" if self.bias else "")

    def _ax(self, rank):
        """The axis in the full (N, ...) tensor of ``rank`` axes."""
        a = self.axis if self.axis > 0 else rank + self.axis
        if not 1 <= a < rank:
            raise ValueError(f"axis {self.axis} is not a non-batch axis of a {rank}-D input")
        return a

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        a = self._ax(len(s) + 1)
        if s[a - 1] != self.in_features:
            raise ValueError(f"expects {self.in_features} features on axis {self.axis}, got input "
                             f"(N, {', '.join(map(str, s))})")
        return s[:a - 1] + (self.out_features,) + s[a:]

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        a = self._ax(x.ndim)
        w = params["weight"].astype(x.dtype, copy=False)
        xm = np.moveaxis(x, a, -1)
        out = xm.reshape(-1, self.in_features) @ w
        if self.bias:
            out += params["bias"].astype(x.dtype, copy=False)
        out = np.ascontiguousarray(np.moveaxis(out.reshape(xm.shape[:-1] + (self.out_features,)), -1, a))
        return out, (x, w)

    def _dx(self, dout, x, w):
        a = self._ax(x.ndim)
        dm = np.moveaxis(np.asarray(dout), a, -1)
        dx = dm.reshape(-1, self.out_features) @ w.T
        return np.ascontiguousarray(np.moveaxis(dx.reshape(dm.shape[:-1] + (self.in_features,)), -1, a))

    def backward(self, dout, cache):
        x, w = cache
        a = self._ax(x.ndim)
        dm = np.moveaxis(np.asarray(dout), a, -1).reshape(-1, self.out_features)
        xm = np.moveaxis(x, a, -1).reshape(-1, self.in_features)
        grads = {"weight": xm.T @ dm}
        if self.bias:
            grads["bias"] = dm.sum(axis=0)
        return [self._dx(dout, x, w)], grads

    def backward_inputs(self, dout, cache):
        return [self._dx(dout, *cache)]
