"""Reductions and normalized exponentials over chosen axes of each sample: ONNX
ReduceMean / ReduceSum / ReduceMax / ReduceMin and Softmax / LogSoftmax inside a graph."""
from __future__ import annotations

import numpy as np

from .geometry import sample_axes
from .module import Layer

__all__ = ["Reduce", "Softmax", "LogSoftmax"]


class Reduce(Layer):
    """Mean, sum, max, min, the L1 or L2 norm, or the sum of squares over ``axes``
    (>= 1) of each sample (ONNX ReduceMean, ReduceSum, ReduceMax, ReduceMin,
    ReduceL1, ReduceL2, ReduceSumSquare), the reduced axes kept as size 1
    (``keepdims``) or removed. The max's (min's) gradient is shared equally among
    tied maxima (as ``torch.amax`` / ``torch.amin``); the L2 norm's is x / norm, 0
    where the norm is 0, and the L1 norm's sign(x) (as ``torch.linalg.vector_norm``).

    Shapes: (N, d1, ..., dk) -> (N, ...) without (or with size-1) ``axes``.
    """
    type = "Reduce"
    _OPS = ("mean", "sum", "max", "min", "l1", "l2", "sum_square")

    def __init__(self, op, axes, keepdims=True):
        if op not in self._OPS:
            raise ValueError(f"Reduce: op must be one of {self._OPS}, got {op!r}")
        self.op = op
        self.axes = sample_axes(axes, "Reduce: axes")
        self.keepdims = bool(keepdims)

    def config(self):
        return dict(op=self.op, axes=list(self.axes), keepdims=self.keepdims)

    def describe(self):
        name = {"l1": "L1", "l2": "L2", "sum_square": "SumSquare"}.get(self.op, self.op.capitalize())
        return f"Reduce{name} axes {list(self.axes)}" + ("" if self.keepdims else " squeezed")

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if max(self.axes) > len(s):
            raise ValueError(f"reduces axis {max(self.axes)} of an input (N, {', '.join(map(str, s))})")
        if self.keepdims:
            return tuple(1 if i + 1 in self.axes else d for i, d in enumerate(s))
        return tuple(d for i, d in enumerate(s) if i + 1 not in self.axes)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        f = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min,
             "l1": lambda v, **kw: np.sum(np.abs(v), **kw), "l2": lambda v, **kw: np.sqrt(np.sum(v * v, **kw)),
             "sum_square": lambda v, **kw: np.sum(v * v, **kw)}[self.op]
        kept = f(x, axis=self.axes, keepdims=True)
        out = kept if self.keepdims else kept.reshape(
            tuple(d for i, d in enumerate(x.shape) if i not in self.axes))
        needs_x = self.op not in ("mean", "sum")
        return np.ascontiguousarray(out), (x if needs_x else None, kept if needs_x else None, x.shape)

    def backward(self, dout, cache):
        x, kept, shape = cache
        keep_shape = tuple(1 if i in self.axes else d for i, d in enumerate(shape))
        g = np.asarray(dout).reshape(keep_shape)
        if self.op == "sum":
            return [np.ascontiguousarray(np.broadcast_to(g, shape))], {}
        if self.op == "mean":
            n = int(np.prod([shape[a] for a in self.axes]))
            return [np.ascontiguousarray(np.broadcast_to(g / g.dtype.type(n), shape))], {}
        if self.op == "l1":
            return [np.sign(x) * g], {}
        if self.op == "sum_square":
            return [2 * x * g], {}
        if self.op == "l2":
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(kept > 0, g / kept, g.dtype.type(0))
            return [x * scale], {}
        mask = (x == kept).astype(x.dtype)
        mask /= mask.sum(axis=self.axes, keepdims=True)
        return [mask * g], {}


class Softmax(Layer):
    """exp(x) / sum(exp(x)) along ``axis`` (>= 1) of each sample.

    Shapes: (N, ...) -> the same shape.
    """
    type = "Softmax"

    def __init__(self, axis=1):
        self.axis = sample_axes([axis], f"{self.type}: axis")[0]

    def config(self):
        return dict(axis=self.axis)

    def describe(self):
        return f"{self.type} axis {self.axis}"

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if self.axis > len(s):
            raise ValueError(f"axis {self.axis} of an input (N, {', '.join(map(str, s))})")
        return s

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        out = e / e.sum(axis=self.axis, keepdims=True)
        return out, out

    def backward(self, dout, cache):
        p = cache
        dout = np.asarray(dout)
        return [p * (dout - (dout * p).sum(axis=self.axis, keepdims=True))], {}


class LogSoftmax(Softmax):
    """x - log(sum(exp(x))) along ``axis`` (>= 1) of each sample."""
    type = "LogSoftmax"

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        z = x - x.max(axis=self.axis, keepdims=True)
        out = z - np.log(np.exp(z).sum(axis=self.axis, keepdims=True))
        return out, out

    def backward(self, dout, cache):
        dout = np.asarray(dout)
        return [dout - np.exp(cache) * dout.sum(axis=self.axis, keepdims=True)], {}
