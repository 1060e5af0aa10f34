"""Multiplication of activations by a constant matrix along any axis: ONNX MatMul
and Gemm whose weight is a constant, on (N, ..., K) activations (ConvNeXt's
pointwise layers act on the last axis of (N, H, W, C)) or any other axis; and the
matrix product of two activation tensors (attention: ONNX MatMul of two computed
operands)."""
from __future__ import annotations

import numpy as np

from .linear import DenseWeight
from .module import Layer

__all__ = ["MatMul", "BatchMatMul"]


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


def _broadcast_sum(g, shape):
    """Gradient ``g`` of a broadcast operand summed back to its ``shape`` (same rank)."""
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class BatchMatMul(Layer):
    """``a @ b`` of two activation tensors per sample (ONNX MatMul of two computed
    operands, ``torch.matmul``: attention's ``q @ k^T`` and ``attn @ v``, linear
    attention's ``k^T v``): the last two axes multiplied as matrices, the axes
    between the batch and them broadcast as in numpy. Both inputs have the same
    number of axes (at least 3, the batch's included).

    Shapes: (N, ..., M, K), (N, ..., K, L) -> (N, ..., M, L).
    """
    type = "BatchMatMul"
    num_inputs = 2

    def output_shape(self, input_shapes):
        a, b = (tuple(s) for s in input_shapes)
        if len(a) != len(b) or len(a) < 2:
            raise ValueError(f"expects two inputs (N, ..., M, K) and (N, ..., K, L) with as many axes, got "
                             f"(N, {', '.join(map(str, a))}) and (N, {', '.join(map(str, b))})")
        if a[-1] != b[-2]:
            raise ValueError(f"inner sizes differ: (N, {', '.join(map(str, a))}) @ (N, {', '.join(map(str, b))})")
        try:
            lead = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ValueError(f"the axes before the last two of (N, {', '.join(map(str, a))}) and "
                             f"(N, {', '.join(map(str, b))}) do not broadcast") from None
        return tuple(lead) + (a[-2], b[-1])

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = inputs
        self.output_shape([a.shape[1:], b.shape[1:]])
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"BatchMatMul: batches differ ({a.shape[0]} and {b.shape[0]})")
        return np.matmul(a, b.astype(a.dtype, copy=False)), (a, b)

    def backward(self, dout, cache):
        a, b = cache
        dout = np.asarray(dout)
        da = np.matmul(dout, np.swapaxes(b, -1, -2).astype(dout.dtype, copy=False))
        db = np.matmul(np.swapaxes(a, -1, -2).astype(dout.dtype, copy=False), dout)
        return [np.ascontiguousarray(_broadcast_sum(da, a.shape)),
                np.ascontiguousarray(_broadcast_sum(db, b.shape))], {}
