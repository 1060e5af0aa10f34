"""Layer normalization over chosen axes of each sample (Ba, Kiros & Hinton 2016,
arXiv:1607.06450), as ONNX ``LayerNormalization`` and ConvNeXt's channel norm use it."""
from __future__ import annotations

import math

import numpy as np

from .geometry import sample_axes
from .module import Layer

__all__ = ["LayerNorm"]


class LayerNorm(Layer):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` with mean and (biased) variance
    over ``axes`` of each sample.

    Args:
        axes: axes of the (N, ...) input to normalize over (>= 1): ``(1,)`` is
            ConvNeXt's channel norm of (N, C, H, W); ``(3,)`` the last axis of
            (N, H, W, C) as ``torch.nn.LayerNorm(C)`` after a permute.
        shape: shape of ``weight`` and ``bias``, broadcast against one sample
            (e.g. (C, 1, 1) for the channel norm, (C,) for the last axis).
        eps: added to the variance.
        affine: whether there are ``weight`` and ``bias`` parameters.

    Shapes: input (N, ...) -> output of the same shape.
    """
    type = "LayerNorm"

    def __init__(self, axes, shape, eps=1e-5, affine=True):
        self.axes = sample_axes(axes, "LayerNorm: axes")
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError(f"LayerNorm: shape must be a sequence of ints, got {shape!r}")
        self.shape = tuple(int(v) for v in shape)
        if any(v < 1 for v in self.shape):
            raise ValueError(f"LayerNorm: shape must be positive, got {shape!r}")
        if isinstance(eps, (str, bytes, bool)):
            raise TypeError(f"LayerNorm: eps must be a number, got {eps!r}")
        self.eps = float(eps)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"LayerNorm: eps must be finite and >= 0, got {eps!r}")
        self.affine = bool(affine)

    def config(self):
        return dict(axes=list(self.axes), shape=list(self.shape), eps=self.eps, affine=self.affine)

    def describe(self):
        return f"LayerNorm axes {list(self.axes)}"

    @property
    def param_shapes(self):
        return {"weight": self.shape, "bias": self.shape} if self.affine else {}

    def init_params(self, rng, dtype):
        return {"weight": np.ones(self.shape, dtype), "bias": np.zeros(self.shape, dtype)} if self.affine else {}

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if max(self.axes) > len(s):
            raise ValueError(f"normalizes axes {list(self.axes)} of an input (N, {', '.join(map(str, s))})")
        if self.affine:
            try:
                ok = np.broadcast_shapes(s, self.shape) == s
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"weight of shape {self.shape} does not broadcast to the input "
                                 f"(N, {', '.join(map(str, s))})")
        return s

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        mu = x.mean(axis=self.axes, keepdims=True)
        xc = x - mu
        var = np.mean(xc * xc, axis=self.axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.eps))
        xhat = xc * inv
        if not self.affine:
            return xhat, (xhat, inv, None)
        w = params["weight"].astype(x.dtype, copy=False)
        return xhat * w + params["bias"].astype(x.dtype, copy=False), (xhat, inv, w)

    def _dx(self, dout, xhat, inv, w):
        g = dout if w is None else dout * w
        m1 = g.mean(axis=self.axes, keepdims=True)
        m2 = (g * xhat).mean(axis=self.axes, keepdims=True)
        return inv * (g - m1 - xhat * m2)

    def _reduce(self, g):
        """Sum a (N, ...) gradient down to the parameter shape."""
        g = g.sum(axis=tuple(range(g.ndim - len(self.shape))))
        axes = tuple(i for i, n in enumerate(self.shape) if n == 1 and g.shape[i] != 1)
        return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(self.shape)

    def backward(self, dout, cache):
        xhat, inv, w = cache
        dout = np.asarray(dout)
        dx = self._dx(dout, xhat, inv, w)
        if w is None:
            return [dx], {}
        return [dx], {"weight": self._reduce(dout * xhat), "bias": self._reduce(dout)}

    def backward_inputs(self, dout, cache):
        xhat, inv, w = cache
        return [self._dx(np.asarray(dout), xhat, inv, w)]
