"""Layer normalization over chosen axes of each sample (Ba, Kiros & Hinton 2016,
arXiv:1607.06450), as ONNX ``LayerNormalization`` and ConvNeXt's channel norm use it.

The compiled kernel (``_core.layernorm_forward``/``layernorm_backward``) does every
layer whose axes are consecutive and whose weight and bias vary only along them (the
channel norm, the last axis, trailing axes); other layouts take the numpy path."""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .functional import float_array
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
        if self.affine:   # weight broadcasts to the sample's shape, leaving it as it is
            ps = self.shape
            ok = len(ps) <= len(s) and all(p == 1 or p == d for p, d in zip(ps, s[len(s) - len(ps):]))
            if not ok:
                raise ValueError(f"weight of shape {self.shape} does not broadcast to the input "
                                 f"(N, {', '.join(map(str, s))})")
        return s

    def _kernel_layout(self, ndim):
        """(begin, end, param_axes) when the compiled kernel applies to a sample of
        ``ndim`` axes: axes begin..end-1 consecutive, and the parameters (padded on the
        left to ``ndim`` axes) of size 1 outside them; param_axes are the axes of the
        padded parameter, within [begin, end), to sum a flat gradient over. Else None."""
        a0, a1 = self.axes[0], self.axes[-1]
        if a1 - a0 + 1 != len(self.axes):
            return None
        ps = (1,) * (ndim - len(self.shape)) + self.shape
        if any(ps[i - 1] != 1 for i in range(1, ndim + 1) if not a0 <= i <= a1):
            return None
        return a0, a1 + 1, ps[a0 - 1:a1]

    def _flat_param(self, p, dtype, reduced_shape, pshape):
        """A parameter as the R values of the normalized axes (broadcast where it has 1s)."""
        p = np.asarray(p, dtype=dtype)
        if pshape == reduced_shape:   # one value per normalized element (the channel norm): no copy
            return np.ascontiguousarray(p).reshape(-1)
        return np.ascontiguousarray(np.broadcast_to(p.reshape(pshape), reduced_shape)).reshape(-1)

    def forward(self, inputs, params, buffers, mode, rng):
        x = float_array(inputs[0], "x")
        self.output_shape([x.shape[1:]])
        lay = self._kernel_layout(x.ndim - 1)
        if lay is None:
            return self._forward_numpy(x, params)
        begin, end, pshape = lay
        reduced = x.shape[begin:end]
        w = b = None
        if self.affine:
            w = self._flat_param(params["weight"], x.dtype, reduced, pshape)
            b = self._flat_param(params["bias"], x.dtype, reduced, pshape)
        out, mean, rstd = _core.layernorm_forward(x, w, b, begin, end, self.eps)
        return out, ("kernel", x, mean, rstd, w, begin, end, pshape)

    def _sum_flat(self, g, reduced, pshape):
        """A flat (R,) gradient summed to the parameter shape."""
        g = g.reshape(reduced)
        axes = tuple(i for i, n in enumerate(pshape) if n == 1 and reduced[i] != 1)
        return (g.sum(axis=axes, keepdims=True) if axes else g).reshape(self.shape)

    def backward(self, dout, cache):
        if cache[0] != "kernel":
            return self._backward_numpy(dout, cache)
        _, x, mean, rstd, w, begin, end, pshape = cache
        dx, dw, db = _core.layernorm_backward(np.asarray(dout, dtype=x.dtype), x, mean, rstd, w, begin, end,
                                              self.affine)
        if not self.affine:
            return [dx], {}
        reduced = x.shape[begin:end]
        return [dx], {"weight": self._sum_flat(dw, reduced, pshape), "bias": self._sum_flat(db, reduced, pshape)}

    def backward_inputs(self, dout, cache):
        if cache[0] != "kernel":
            xhat, inv, w = cache[1:]
            return [self._dx(np.asarray(dout), xhat, inv, w)]
        _, x, mean, rstd, w, begin, end, _ = cache
        return [_core.layernorm_backward(np.asarray(dout, dtype=x.dtype), x, mean, rstd, w, begin, end, False)[0]]

    # numpy, for axes that are not consecutive or parameters that vary outside them
    def _forward_numpy(self, x, params):
        mu = x.mean(axis=self.axes, keepdims=True)
        xc = x - mu
        var = np.mean(xc * xc, axis=self.axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.eps))
        xhat = xc * inv
        if not self.affine:
            return xhat, ("numpy", xhat, inv, None)
        w = params["weight"].astype(x.dtype, copy=False)
        return xhat * w + params["bias"].astype(x.dtype, copy=False), ("numpy", xhat, inv, w)

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

    def _backward_numpy(self, dout, cache):
        xhat, inv, w = cache[1:]
        dout = np.asarray(dout)
        dx = self._dx(dout, xhat, inv, w)
        if w is None:
            return [dx], {}
        return [dx], {"weight": self._reduce(dout * xhat), "bias": self._reduce(dout)}
