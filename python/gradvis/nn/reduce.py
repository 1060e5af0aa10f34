"""Reductions and normalized exponentials over chosen axes of each sample: ONNX
ReduceMean / ReduceSum / ReduceMax / ReduceMin and Softmax / LogSoftmax inside a graph."""
from __future__ import annotations

import numpy as np

from .geometry import sample_axes
from .module import Layer

__all__ = ["Reduce", "Softmax", "LogSoftmax"]


class Reduce(Layer):
    """Mean, sum, max or min over ``axes`` (>= 1) of each sample, the reduced axes kept
    as size 1 (``keepdims``) or removed. The max's (min's) gradient is shared equally
    among tied maxima (as ``torch.amax`` / ``torch.amin``).

    Shapes: (N, d1, ..., dk) -> (N, ...) without (or with size-1) ``axes``.
    """
    type = "Reduce"
    _OPS = ("mean", "sum", "max", "min")

    def __init__(self, op, axes, keepdims=True):
        if op not in self._OPS:
            raise ValueError(f"Reduce: op must be one of {self._OPS}, got {op!r}")
        self.op = op
        self.axes = sample_axes(axes, "Reduce: axes")
        self.keepdims = bool(keepdims)

    def config(self):
        return dict(op=self.op, axes=list(self.axes), keepdims=self.keepdims)

    def describe(self):
        return f"Reduce{self.op.capitalize()} axes {list(self.axes)}" + ("" if self.keepdims else " squeezed")

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
        f = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}[self.op]
        kept = f(x, axis=self.axes, keepdims=True)
        out = kept if self.keepdims else kept.reshape(
            tuple(d for i, d in enumerate(x.shape) if i not in self.axes))
        extreme = self.op in ("max", "min")
        return np.ascontiguousarray(out), (x if extreme else None, kept if extreme else None, x.shape)

    def backward(self, dout, cache):
        x, kept, shape = cache
        keep_shape = tuple(1 if i in self.axes else d for i, d in enumerate(shape))
        g = np.asarray(dout).reshape(keep_shape)
        if self.op == "sum":
            return [np.ascontiguousarray(np.broadcast_to(g, shape))], {}
        if self.op == "mean":
            n = int(np.prod([shape[a] for a in self.axes]))
            return [np.ascontiguousarray(np.broadcast_to(g / g.dtype.type(n), shape))], {}
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
