"""Pooling layers: max, average and global average pooling."""
from __future__ import annotations

import numpy as np

from .. import _checks
from . import functional as F
from .geometry import pad4, pair
from .module import Layer

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool"]


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self.kernel_size = pair(kernel_size, f"{self.type}: kernel_size")
        self.stride = pair(stride, f"{self.type}: stride") if stride is not None else self.kernel_size
        self.padding = pad4(padding, f"{self.type}: padding")
        self.ceil_mode = _checks.boolean(ceil_mode, f"{self.type}: ceil_mode")

    def config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)

    def describe(self):
        k, st = self.kernel_size, self.stride
        pad = "" if not any(self.padding) else f" pad {self.padding}"
        return f"{self.type} {k[0]}x{k[1]} stride {st[0] if st[0] == st[1] else st}{pad}"

    def _param(self):
        return {"pool_height": self.kernel_size[0], "pool_width": self.kernel_size[1],
                "stride": self.stride, "pad": self.padding, "ceil_mode": self.ceil_mode}

    dilation = (1, 1)

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got (N, {', '.join(map(str, s))})")
        t, b, l, r = self.padding
        dims = []
        for size, k, st, lo, hi, d in ((s[1], self.kernel_size[0], self.stride[0], t, b, self.dilation[0]),
                                       (s[2], self.kernel_size[1], self.stride[1], l, r, self.dilation[1])):
            span = size + lo + hi - (k - 1) * d - 1
            o = (-(-span // st) if self.ceil_mode else span // st) + 1
            # PyTorch's and ONNX's rule: the last window starts inside the input or
            # its leading padding (in ceil mode a window may run past both ends)
            if self.ceil_mode and (o - 1) * st >= size + lo:
                o -= 1
            if o < 1:
                dil = f", dilation {self.dilation}" if self.dilation != (1, 1) else ""
                raise ValueError(f"input {s[1]}x{s[2]} is too small for a {self.kernel_size} window"
                                 f" (stride {self.stride}, padding {self.padding}{dil}"
                                 f"{', ceil_mode' if self.ceil_mode else ''})")
            dims.append(o)
        return (s[0], dims[0], dims[1])


class MaxPool2d(_Pool):
    """Max pooling; stride defaults to the window size; padded cells never win.

    ``dilation`` (int or (dh, dw)) spreads the window's cells: cell (a, b) of the
    window at (oh, ow) reads input row ``oh*stride_h - top + a*dh`` and column
    ``ow*stride_w - left + b*dw``, as PyTorch's ``MaxPool2d`` and ONNX's
    ``MaxPool`` ``dilations`` (Yu & Koltun 2016, arXiv:1511.07122). Ties keep the
    first maximum in row-major window order; the gradient goes to it."""
    type = "MaxPool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, dilation=1):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = pair(dilation, "MaxPool2d: dilation")

    def config(self):
        c = super().config()
        if self.dilation != (1, 1):
            c["dilation"] = list(self.dilation)
        return c

    def describe(self):
        d = self.dilation
        return super().describe() + ("" if d == (1, 1) else f" dilation {d[0] if d[0] == d[1] else d}")

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return F.max_pool2d_run(x, (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.dilation))

    def backward(self, dout, cache):
        return [F.max_pool_backward(dout, cache)], {}


class AvgPool2d(_Pool):
    """Average pooling; count_include_pad as PyTorch (default True)."""
    type = "AvgPool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = _checks.boolean(count_include_pad, "AvgPool2d: count_include_pad")

    def config(self):
        c = super().config()
        c["count_include_pad"] = self.count_include_pad
        return c

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        p = self._param()
        p["count_include_pad"] = self.count_include_pad
        return F.avg_pool_forward(x, p)

    def backward(self, dout, cache):
        return [F.avg_pool_backward(dout, cache)], {}


class GlobalAvgPool(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1), or (N, C) with
    ``keepdims=False`` (ONNX's ReduceMean over axes [2, 3] with keepdims=0)."""
    type = "GlobalAvgPool"

    def __init__(self, keepdims=True):
        self.keepdims = _checks.boolean(keepdims, "GlobalAvgPool: keepdims")

    def config(self):
        return dict(keepdims=self.keepdims)

    def describe(self):
        return "GlobalAvgPool" + ("" if self.keepdims else " flattened")

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got (N, {', '.join(map(str, s))})")
        return (s[0], 1, 1) if self.keepdims else (s[0],)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        out, cache = F.global_avg_pool_forward(x)
        return (out, cache) if self.keepdims else (out.reshape(out.shape[:2]), cache)

    def backward(self, dout, cache):
        if not self.keepdims:
            dout = np.asarray(dout).reshape(tuple(cache[0][:2]) + (1, 1))
        return [F.global_avg_pool_backward(dout, cache)], {}
