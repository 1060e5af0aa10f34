"""The convolution layer of a graph :class:`~gradvis.nn.graph.Model`."""
from __future__ import annotations

import math

import numpy as np

from .. import _checks, _core
from . import functional as F
from .activation import HardSwish, ReLU6, SiLU
from .elementwise import Clip
from .geometry import pad4, pair
from .module import Layer

__all__ = ["Conv2d", "fusible_act", "fused_act_cache"]


class Conv2d(Layer):
    """2-D convolution (cross-correlation). weight (F, C // groups, KH, KW), bias (F,).

    padding: int, (ph, pw), (top, bottom, left, right) or ``'same'`` (stride-1
    'same' output size for odd kernels: pad = dilation * (k - 1) // 2).
    """
    fuses_relu = True
    fuses_activations = True   # forward_act: ReLU6 / Clip, HardSwish, SiLU as the output is written
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

    _checked_input = None   # the last (C, H, W) output_shape accepted
    _checked_io = (None, None)   # that input shape and its output's (F, OH, OW), one value

    def _check_input(self, x):
        """output_shape's checks of x (N, C, H, W), remembered for the next call with
        the same (C, H, W): a gradient loop repeats them on every layer of every pass.
        Returns (x's (C, H, W), the output's (F, OH, OW))."""
        if x.ndim != 4:
            raise ValueError(f"expects input (N, {self.in_channels}, H, W), got an array of shape {x.shape}")
        # (one tuple: threads that pass other shapes through the layer at once
        # never see one shape's input beside another's output)
        io = self._checked_io = (x.shape[1:], tuple(self.output_shape([x.shape[1:]])))
        self._checked_input = x.shape[1:]
        return io

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

    def forward(self, inputs, params, buffers, mode, rng, relu=False, residual=None):
        """relu=True returns max(conv, 0) (the model fuses a ReLU that only reads this layer).
        ``residual``: None, or an array of the output's shape and x's float dtype added
        before the relu as the output is written (the model fuses the residual Add
        that alone reads this layer, :meth:`residual_fits`): the values of the
        convolution followed by that Add."""
        x = inputs[0]
        if x.shape[1:] != self._checked_input or x.ndim != 4:
            self._check_input(x)
        return F.conv2d_run(x, params["weight"], params.get("bias"),
                           (self.stride, self.padding, self.dilation, self.groups), relu, residual)

    def residual_fits(self, x, r):
        """Whether :meth:`forward` can add ``r`` to its output for input ``x``: r an
        array of the output's shape and of x's dtype, float32 or float64 (an Add
        that broadcasts, or casts, runs as its own layer)."""
        if not (type(r) is np.ndarray and type(x) is np.ndarray and r.dtype == x.dtype and r.dtype.char in "fd"
                and x.ndim == 4 and r.ndim == 4 and r.shape[0] == x.shape[0]):
            return False
        io = self._checked_io
        if x.shape[1:] != io[0]:
            io = self._check_input(x)
        return r.shape[1:] == io[1]

    def forward_act(self, inputs, params, act, keep_pre=True):
        """The convolution followed by the activation ``act`` in one pass.

        act: ``("clamp", lo, hi)`` (ReLU6 is (0, 6)), ``("hardswish",)`` or
        ``("silu",)``, the same values as the separate layer's. Returns
        ``(out, pre, cache)``: out = act(conv(x)) (N, F, OH, OW); pre = conv(x), the
        activation's input, for the activations whose backward reads it (HardSwish,
        SiLU), else None (also when ``keep_pre`` is False: a pass that keeps nothing
        for a backward pass does not write it); cache: this layer's, as
        :meth:`forward` returns it.
        """
        x = inputs[0]
        if x.shape[1:] != self._checked_input or x.ndim != 4:
            self._check_input(x)
        x = F.float_array(x, "x")
        w = F._like(params["weight"], x.dtype, "w")
        b = F._like(params.get("bias"), x.dtype, "b")
        kind = act[0]
        lo, hi = (act[1], act[2]) if kind == "clamp" else (0.0, 0.0)
        need_pre = keep_pre and kind in ("hardswish", "silu")
        res = _core.conv2d_forward_act(x, w, b, self.stride, self.padding, self.dilation, self.groups,
                                       kind, lo, hi, need_pre)
        out, pre = res if need_pre else (res, None)
        return out, pre, (x, w, b is not None, self.stride, self.padding, self.dilation, self.groups)

    def backward(self, dout, cache):
        return self.backward_inputs(dout, cache), self.backward_params(dout, cache)

    def backward_inputs(self, dout, cache):
        return [F.conv_backward_input(dout, cache)]

    def backward_inputs_act(self, dout, cache, act, act_cache=None):
        """The input gradient through the activation before this layer, whose cache
        is ``act_cache``: act is ``("relu", 0, 0)`` or ``("clamp", lo, hi)``, whose
        masks read this layer's input (that activation's output), or ``("silu", 0,
        0)`` or ``("hardswish", 0, 0)``, whose derivatives read the activation's
        input, its cache (:func:`~gradvis.nn.functional.conv_backward_input_act`)."""
        ref = act_cache if act[0] in ("silu", "hardswish") else None
        return [F.conv_backward_input_act(dout, cache, act, ref)]

    def backward_params(self, dout, cache):
        dw, db = F.conv_backward_weight(dout, cache)
        return {"weight": dw, "bias": db} if self.bias else {"weight": dw}


_F32_MAX = float(np.finfo(np.float32).max)


def fusible_act(layer):
    """The activation spec Conv2d.forward_act takes for this layer (ReLU6, Clip,
    HardSwish, SiLU), or None (ReLU has its own fusion)."""
    t = type(layer)
    if t is ReLU6:
        return ("clamp", 0.0, 6.0)
    if t is Clip:   # as Clip.forward: an open end is float32's largest value
        return ("clamp", max(layer.min, -_F32_MAX), min(layer.max, _F32_MAX))
    if t is HardSwish:
        return ("hardswish",)
    if t is SiLU:
        return ("silu",)
    return None


def fused_act_cache(act, out, pre):
    """The cache a fused activation's backward gets, as its own forward returns it:
    clamp's (x, lo, hi) with the output for x (lo < out < hi exactly where lo < x <
    hi, the only place the gradient passes), HardSwish's and SiLU's input."""
    if act[0] == "clamp":
        return (out, act[1], act[2])
    return pre
