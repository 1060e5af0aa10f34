"""The convolution layer of a graph :class:`~gradvis.nn.graph.Model`."""
from __future__ import annotations

import math

import numpy as np

from .. import _checks
from . import functional as F
from .geometry import pad4, pair
from .module import Layer

__all__ = ["Conv2d"]


class Conv2d(Layer):
    """2-D convolution (cross-correlation). weight (F, C // groups, KH, KW), bias (F,).

    padding: int, (ph, pw), (top, bottom, left, right) or ``'same'`` (stride-1
    'same' output size for odd kernels: pad = dilation * (k - 1) // 2).
    """
    fuses_relu = True
    type = "Conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        self.in_channels = _checks.integer(in_channels, "Conv2d: in_channels", 1)
        self.out_channels = _checks.integer(out_channels, "Conv2d: out_channels", 1)
        self.kernel_size = pair(kernel_size, "Conv2d: kernel_size")
        self.stride = pair(stride, "Conv2d: stride")
        self.dilation = pair(dilation, "Conv2d: dilation")
        if isinstance(padding, str):
            if padding != "same":
                raise ValueError(f"padding must be a number, a tuple or 'same', got {padding!r}")
            ph = self.dilation[0] * (self.kernel_size[0] - 1)
            pw = self.dilation[1] * (self.kernel_size[1] - 1)
            padding = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        self.padding = pad4(padding, "Conv2d: padding")
        self.groups = _checks.integer(groups, "Conv2d: groups", 1)
        self.bias = _checks.boolean(bias, "Conv2d: bias")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"Conv2d: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), dilation=list(self.dilation),
                    groups=self.groups, bias=self.bias)

    @property
    def param_shapes(self):
        s = {"weight": (self.out_channels, self.in_channels // self.groups) + self.kernel_size}
        if self.bias:
            s["bias"] = (self.out_channels,)
        return s

    def init_params(self, rng, dtype):
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        p = {"weight": (rng.standard_normal(self.param_shapes["weight"]) * math.sqrt(2.0 / fan_in)).astype(dtype)}
        if self.bias:
            p["bias"] = np.zeros(self.out_channels, dtype)
        return p

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3 or s[0] != self.in_channels:
            raise ValueError(f"expects input (N, {self.in_channels}, H, W), got (N, {', '.join(map(str, s))})")
        t, b, l, r = self.padding
        kh = self.dilation[0] * (self.kernel_size[0] - 1) + 1
        kw = self.dilation[1] * (self.kernel_size[1] - 1) + 1
        h = (s[1] + t + b - kh) // self.stride[0] + 1
        w = (s[2] + l + r - kw) // self.stride[1] + 1
        if h < 1 or w < 1:
            raise ValueError(f"input {s[1]}x{s[2]} is too small for a {kh}x{kw} kernel with padding {self.padding}")
        return (self.out_channels, h, w)

    def _param(self):
        return dict(stride=self.stride, pad=self.padding, dilation=self.dilation, groups=self.groups)

    def describe(self):
        k, st, d = self.kernel_size, self.stride, self.dilation
        extra = "" if st == (1, 1) else f" stride {st[0]}" if st[0] == st[1] else f" stride {st}"
        extra += "" if d == (1, 1) else f" dilation {d}"
        extra += "" if self.groups == 1 else f" groups {self.groups}"
        extra += "" if self.bias else " no bias"
        pad = self.padding[0] if len(set(self.padding)) == 1 else self.padding
        return f"Conv2d {self.in_channels}->{self.out_channels} {k[0]}x{k[1]} pad {pad}{extra}"

    def forward(self, inputs, params, buffers, mode, rng, relu=False):
        """relu=True returns max(conv, 0) (the model fuses a ReLU that only reads this layer)."""
        x = inputs[0]
        self.output_shape([x.shape[1:]] if x.ndim == 4 else [x.shape])
        return F.conv2d_run(x, params["weight"], params.get("bias"),
                           (self.stride, self.padding, self.dilation, self.groups), relu)

    def backward(self, dout, cache):
        return self.backward_inputs(dout, cache), self.backward_params(dout, cache)

    def backward_inputs(self, dout, cache):
        return [F.conv_backward_input(dout, cache)]

    def backward_params(self, dout, cache):
        dw, db = F.conv_backward_weight(dout, cache)
        return {"weight": dw, "bias": db} if self.bias else {"weight": dw}
