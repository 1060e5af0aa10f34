"""A CNN as a graph of named layers, with the CS231n ``forward``/``backward`` contract.

A :class:`Model` is an ordered list of *nodes*. Each node has a unique name, a
layer object (:class:`Conv2d`, :class:`BatchNorm2d`, :class:`ReLU`, ...) and the
names of the tensors it reads: by default the output of the node before it (the
first node reads the model input, named ``"input"``); :class:`Add`,
:class:`Mul`, :class:`Sub`, :class:`Div` and :class:`Concat` read several, which
is how residual, multi-branch and squeeze-and-excitation nets are written. Nodes run in list order, so a node may only read tensors of nodes
listed before it.

The contract follows CS231n 2016's ``PretrainedCNN``::

    out, cache = model.forward(X, start=None, end=None, mode='test')
    dX, grads = model.backward(dout, cache)

``start`` and ``end`` are node indices or names and **end is inclusive**, as in
the course. When ``start`` is given, ``X`` is the *input of node start* (the
output of the node before it), so a pass can begin at an intermediate activation.
``dout`` is d(loss)/d(output of the last node run), ``dX`` is the gradient with
respect to the ``X`` that was passed in and ``grads`` maps parameter names
(``'conv1.weight'``) to gradients.

Arrays are NCHW. float32 is the default; a pass keeps the dtype of ``X``
(float64 inputs compute in float64, the parameters are cast on the fly).
Linear weights are stored as CS231n's ``(D, M)`` (the transpose of PyTorch's).
Batch-norm momentum follows CS231n: ``running = momentum * running + (1 -
momentum) * batch`` with momentum 0.9 (PyTorch's momentum 0.1).
"""
from __future__ import annotations

import difflib
import math

import numpy as np

from . import _checks
from . import layers as L

__all__ = [
    "Model", "Layer",
    "Conv2d", "BatchNorm2d", "BatchNorm1d", "ReLU", "ReLU6", "LeakyReLU",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "SiLU",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool", "Flatten", "Linear", "Dropout",
    "Add", "Mul", "Sub", "Div", "Concat", "Clip", "Pad", "Bias", "Scale", "LAYER_TYPES",
]

INPUT = "input"


# ============================================================================ layers
def _pair(v, what, lo=1):
    """An int or a pair of ints, each >= lo (ints or numpy integers, not floats)."""
    return _checks.int_pair(v, what, lo)


def _pad4(v, what="padding", lo=0):
    """int, (ph, pw) or (top, bottom, left, right) -> (top, bottom, left, right), each >= lo."""
    if isinstance(v, (tuple, list)):
        if len(v) == 2:
            ph, pw = (_checks.integer(x, what, lo) for x in v)
            return (ph, ph, pw, pw)
        if len(v) == 4:
            return tuple(_checks.integer(x, what, lo) for x in v)
        raise ValueError(f"{what} must be an int, (pad_h, pad_w) or (top, bottom, left, right), got {v!r}")
    return (_checks.integer(v, what, lo),) * 4


class LayerNotFoundError(KeyError, ValueError):
    """An unknown layer name; both a KeyError (a lookup) and a ValueError (a bad argument)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Layer:
    """Base class of a node's computation.

    Subclasses set ``type`` (the name used in saved files), ``param_shapes``
    (local parameter name -> shape) and ``buffer_shapes`` (non-trained state,
    e.g. batch-norm running statistics), and implement ``forward(inputs, params,
    buffers, mode, rng) -> (out, cache)`` and ``backward(dout, cache) ->
    (dinputs, dparams)`` with ``inputs``/``dinputs`` lists (one entry per input
    tensor) and ``params``/``dparams`` dicts keyed by local name. ``config()``
    returns the JSON-able constructor arguments.
    """
    type = "Layer"
    num_inputs = 1          # None: any number >= 1

    def config(self):
        return {}

    @property
    def param_shapes(self):
        return {}

    @property
    def buffer_shapes(self):
        return {}

    def check_arrays(self, params, buffers):
        """Raise ValueError if stored ``params``/``buffers`` (by local name) are values the
        layer cannot use; shapes and finiteness are checked by the caller."""

    def init_params(self, rng, dtype):
        return {k: np.zeros(s, dtype) for k, s in self.param_shapes.items()}

    def init_buffers(self, dtype):
        return {k: np.zeros(s, dtype) for k, s in self.buffer_shapes.items()}

    def backward_inputs(self, dout, cache):
        """Only the input gradients (a list); layers whose parameter gradients
        cost real work override it. Used for gradients with respect to images."""
        return self.backward(dout, cache)[0]

    def backward_params(self, dout, cache):
        """Only the parameter gradients (a dict): the first layer of a training
        pass needs no input gradient."""
        return self.backward(dout, cache)[1]

    def output_shape(self, input_shapes):
        """Shape (without the batch axis) of the output, or raise ValueError."""
        return input_shapes[0]

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.type}({args})"

    def describe(self):
        """A short one-line description for :meth:`Model.summary`."""
        return self.type


class Conv2d(Layer):
    """2-D convolution (cross-correlation). weight (F, C // groups, KH, KW), bias (F,).

    padding: int, (ph, pw), (top, bottom, left, right) or ``'same'`` (stride-1
    'same' output size for odd kernels: pad = dilation * (k - 1) // 2).
    """
    type = "Conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        self.in_channels = _checks.integer(in_channels, "Conv2d: in_channels", 1)
        self.out_channels = _checks.integer(out_channels, "Conv2d: out_channels", 1)
        self.kernel_size = _pair(kernel_size, "Conv2d: kernel_size")
        self.stride = _pair(stride, "Conv2d: stride")
        self.dilation = _pair(dilation, "Conv2d: dilation")
        if isinstance(padding, str):
            if padding != "same":
                raise ValueError(f"padding must be a number, a tuple or 'same', got {padding!r}")
            ph = self.dilation[0] * (self.kernel_size[0] - 1)
            pw = self.dilation[1] * (self.kernel_size[1] - 1)
            padding = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        self.padding = _pad4(padding, "Conv2d: padding")
        self.groups = _checks.integer(groups, "Conv2d: groups", 1)
        self.bias = bool(bias)
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
        return L._conv_run(x, params["weight"], params.get("bias"),
                           (self.stride, self.padding, self.dilation, self.groups), relu)

    def backward(self, dout, cache):
        return self.backward_inputs(dout, cache), self.backward_params(dout, cache)

    def backward_inputs(self, dout, cache):
        return [L.conv_backward_input(dout, cache)]

    def backward_params(self, dout, cache):
        dw, db = L.conv_backward_weight(dout, cache)
        return {"weight": dw, "bias": db} if self.bias else {"weight": dw}


class _BatchNorm(Layer):
    spatial = True

    def __init__(self, num_features, eps=1e-5, momentum=0.9):
        self.num_features = _checks.integer(num_features, f"{self.type}: num_features", 1)
        self.eps = _checks.finite_float(eps, f"{self.type}: eps")
        self.momentum = _checks.finite_float(momentum, f"{self.type}: momentum")
        if self.eps <= 0:
            raise ValueError(f"{self.type}: eps must be > 0, got {eps!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"{self.type}: momentum must be in [0, 1], got {momentum!r}")

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum)

    def describe(self):
        return f"{self.type} {self.num_features}"

    @property
    def param_shapes(self):
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    @property
    def buffer_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def init_params(self, rng, dtype):
        return {"gamma": np.ones(self.num_features, dtype), "beta": np.zeros(self.num_features, dtype)}

    def init_buffers(self, dtype):
        return {"running_mean": np.zeros(self.num_features, dtype),
                "running_var": np.ones(self.num_features, dtype)}

    def check_arrays(self, params, buffers):
        var = buffers["running_var"]
        if (var < 0).any():
            raise ValueError(f"{self.type}: running_var has negative entries (min {float(var.min()):g}); "
                             f"a variance is >= 0")

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        want = 3 if self.spatial else 1
        if len(s) != want or s[0] != self.num_features:
            form = "(N, C, H, W)" if self.spatial else "(N, D)"
            raise ValueError(f"expects input {form} with {self.num_features} channels, "
                             f"got (N, {', '.join(map(str, s))})")
        return s

    def forward(self, inputs, params, buffers, mode, rng, relu=False):
        """relu=True returns max(batch norm, 0) (the model fuses a ReLU that only reads this layer)."""
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        if mode == "test" and x.ndim == (4 if self.spatial else 2):
            return L._bn_test_run(L._float_array(x, "x"), params["gamma"], params["beta"],
                                  buffers["running_mean"], buffers["running_var"], self.eps, relu)
        bn_param = {"mode": mode, "eps": self.eps, "momentum": self.momentum,
                    "running_mean": buffers["running_mean"], "running_var": buffers["running_var"]}
        fwd = L.spatial_batchnorm_forward if self.spatial else L.batchnorm_forward
        out, cache = fwd(x, params["gamma"], params["beta"], bn_param, relu=relu)
        if mode == "train":   # keep the buffers' identity and dtype
            buffers["running_mean"][...] = bn_param["running_mean"]
            buffers["running_var"][...] = bn_param["running_var"]
        return out, cache

    def backward(self, dout, cache):
        bwd = L.spatial_batchnorm_backward if self.spatial else L.batchnorm_backward
        dx, dgamma, dbeta = bwd(dout, cache)
        return [dx], {"gamma": dgamma, "beta": dbeta}

    def backward_inputs(self, dout, cache):
        # Gradients with respect to an image run in test mode: dx alone is one pass.
        return [L.batchnorm_backward_input(dout, cache)]


class BatchNorm2d(_BatchNorm):
    """Spatial batch norm of (N, C, H, W) over N, H, W; params gamma, beta; buffers
    running_mean, running_var. momentum is CS231n's (0.9 keeps 90% of the old value)."""
    type = "BatchNorm2d"
    spatial = True


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, D) features; as :class:`BatchNorm2d`."""
    type = "BatchNorm1d"
    spatial = False


# Layers whose forward takes relu=True (a following ReLU fused into their output pass).
_FUSES_RELU = (Conv2d, BatchNorm2d, BatchNorm1d)


class _Elementwise(Layer):
    """An elementwise activation: a ``*_forward``/``*_backward`` pair of
    :mod:`gradvis.layers`, the forward called with ``config()`` as keywords."""
    _fwd = _bwd = None    # staticmethods in the subclasses

    def forward(self, inputs, params, buffers, mode, rng):
        return self._fwd(inputs[0], **self.config())

    def backward(self, dout, cache):
        return [self._bwd(dout, cache)], {}


class ReLU(_Elementwise):
    type = "ReLU"
    _fwd, _bwd = staticmethod(L.relu_forward), staticmethod(L.relu_backward)


class ReLU6(_Elementwise):
    type = "ReLU6"
    _fwd, _bwd = staticmethod(L.relu6_forward), staticmethod(L.relu6_backward)


class LeakyReLU(_Elementwise):
    type = "LeakyReLU"
    _fwd, _bwd = staticmethod(L.leaky_relu_forward), staticmethod(L.leaky_relu_backward)

    def __init__(self, alpha=0.01):
        self.alpha = _checks.finite_float(alpha, "LeakyReLU: alpha")

    def config(self):
        return dict(alpha=self.alpha)


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)) (the squeeze-and-excitation gate of EfficientNet)."""
    type = "Sigmoid"
    _fwd, _bwd = staticmethod(L.sigmoid_forward), staticmethod(L.sigmoid_backward)


class Tanh(_Elementwise):
    type = "Tanh"
    _fwd, _bwd = staticmethod(L.tanh_forward), staticmethod(L.tanh_backward)


class HardSigmoid(_Elementwise):
    """clamp(alpha * x + beta, 0, 1). The defaults are PyTorch's Hardsigmoid (the
    MobileNetV3 gate); ONNX's HardSigmoid defaults to alpha=0.2, beta=0.5."""
    type = "HardSigmoid"
    _fwd, _bwd = staticmethod(L.hardsigmoid_forward), staticmethod(L.hardsigmoid_backward)

    def __init__(self, alpha=1.0 / 6.0, beta=0.5):
        self.alpha = float(alpha)
        self.beta = float(beta)
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError(f"HardSigmoid: alpha and beta must be finite, got {alpha}, {beta}")

    def config(self):
        return dict(alpha=self.alpha, beta=self.beta)

    def describe(self):
        return f"HardSigmoid alpha {self.alpha:.6g} beta {self.beta:g}"


class HardSwish(_Elementwise):
    """x * clamp(x + 3, 0, 6) / 6 (MobileNetV3's h-swish)."""
    type = "HardSwish"
    _fwd, _bwd = staticmethod(L.hardswish_forward), staticmethod(L.hardswish_backward)


class SiLU(_Elementwise):
    """x * sigmoid(x) (swish; EfficientNet's activation)."""
    type = "SiLU"
    _fwd, _bwd = staticmethod(L.silu_forward), staticmethod(L.silu_backward)


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self.kernel_size = _pair(kernel_size, f"{self.type}: kernel_size")
        self.stride = _pair(stride, f"{self.type}: stride") if stride is not None else self.kernel_size
        self.padding = _pad4(padding, f"{self.type}: padding")
        self.ceil_mode = bool(ceil_mode)

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

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got (N, {', '.join(map(str, s))})")
        t, b, l, r = self.padding
        dims = []
        for size, k, st, p in ((s[1], self.kernel_size[0], self.stride[0], t + b),
                               (s[2], self.kernel_size[1], self.stride[1], l + r)):
            span = size + p - k
            o = (-(-span // st) if self.ceil_mode else span // st) + 1
            if self.ceil_mode and (o - 1) * st >= size + p // 2:   # PyTorch's rule
                o -= 1
            if span < 0 or o < 1:
                raise ValueError(f"input {s[1]}x{s[2]} is too small for a {self.kernel_size} window")
            dims.append(o)
        return (s[0], dims[0], dims[1])


class MaxPool2d(_Pool):
    """Max pooling; stride defaults to the window size; padded cells never win."""
    type = "MaxPool2d"

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return L._max_pool_run(x, (self.kernel_size, self.stride, self.padding, self.ceil_mode))

    def backward(self, dout, cache):
        return [L.max_pool_backward(dout, cache)], {}


class AvgPool2d(_Pool):
    """Average pooling; count_include_pad as PyTorch (default True)."""
    type = "AvgPool2d"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def config(self):
        c = super().config()
        c["count_include_pad"] = self.count_include_pad
        return c

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        p = self._param()
        p["count_include_pad"] = self.count_include_pad
        return L.avg_pool_forward(x, p)

    def backward(self, dout, cache):
        return [L.avg_pool_backward(dout, cache)], {}


class GlobalAvgPool(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1), or (N, C) with
    ``keepdims=False`` (ONNX's ReduceMean over axes [2, 3] with keepdims=0)."""
    type = "GlobalAvgPool"

    def __init__(self, keepdims=True):
        self.keepdims = bool(keepdims)

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
        out, cache = L.global_avg_pool_forward(x)
        return (out, cache) if self.keepdims else (out.reshape(out.shape[:2]), cache)

    def backward(self, dout, cache):
        if not self.keepdims:
            dout = np.asarray(dout).reshape(tuple(cache[0][:2]) + (1, 1))
        return [L.global_avg_pool_backward(dout, cache)], {}


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


class Linear(Layer):
    """Affine layer: out = x.reshape(N, D) @ weight + bias, weight (D, M) as CS231n."""
    type = "Linear"

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = _checks.integer(in_features, "Linear: in_features", 1)
        self.out_features = _checks.integer(out_features, "Linear: out_features", 1)
        self.bias = bool(bias)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias)

    def describe(self):
        return f"Linear {self.in_features}->{self.out_features}" + ("" if self.bias else " no bias")

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

    def output_shape(self, input_shapes):
        d = int(np.prod(input_shapes[0], dtype=np.int64))
        if d != self.in_features:
            raise ValueError(f"expects {self.in_features} input features, got input (N, "
                             f"{', '.join(map(str, input_shapes[0]))}) = {d} features")
        return (self.out_features,)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return L.affine_forward(x, params["weight"], params.get("bias"))

    def backward(self, dout, cache):
        dx, dw, db = L.affine_backward(dout, cache)
        grads = {"weight": dw}
        if self.bias:
            grads["bias"] = db
        return [dx], grads

    def backward_inputs(self, dout, cache):
        return [L.affine_backward_input(dout, cache)]

    def backward_params(self, dout, cache):
        dw, db = L.affine_backward_params(dout, cache)
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


def _broadcast_inputs(input_shapes):
    """The numpy broadcast of activation shapes with the same number of axes, or ValueError."""
    shapes = [tuple(s) for s in input_shapes]
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(f"inputs must have the same number of axes, got {shapes}")
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"input shapes {shapes} do not broadcast") from None


def _sum_to(g, shape):
    """A gradient of the broadcast output summed back to an input of ``shape`` (batch axis included)."""
    return g if g.shape == tuple(shape) else _reduce_to(g, shape)


class Add(Layer):
    """Elementwise sum of its inputs (residual connections). Inputs with the same
    number of axes broadcast as in numpy, e.g. (C, H, W) + (C, 1, 1)."""
    type = "Add"
    num_inputs = None

    def output_shape(self, input_shapes):
        return _broadcast_inputs(input_shapes)

    def forward(self, inputs, params, buffers, mode, rng):
        shape = self.output_shape([x.shape for x in inputs])
        if inputs[0].shape == shape:
            out = inputs[0].copy()
        else:
            out = np.empty(shape, inputs[0].dtype)
            out[...] = inputs[0]
        for x in inputs[1:]:
            out += x
        return out, [x.shape for x in inputs]

    def backward(self, dout, cache):
        dout = np.asarray(dout)
        return [_sum_to(dout, s) for s in cache], {}


class _Binary(Layer):
    """Two activation tensors combined elementwise, broadcasting as numpy does when
    they have the same number of axes: the squeeze-and-excitation gate is
    (N, C, H, W) * (N, C, 1, 1). Constant operands are :class:`Scale` / :class:`Bias`."""
    num_inputs = 2

    def output_shape(self, input_shapes):
        return _broadcast_inputs(input_shapes)

    def _operands(self, inputs):
        a, b = inputs
        self.output_shape([a.shape, b.shape])
        return a, b.astype(a.dtype, copy=False)


class Mul(_Binary):
    """a * b of two activation tensors (broadcasting)."""
    type = "Mul"

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = self._operands(inputs)
        return a * b, (a, b)

    def backward(self, dout, cache):
        a, b = cache
        dout = np.asarray(dout)
        return [_sum_to(dout * b, a.shape), _sum_to(dout * a, b.shape)], {}


class Sub(_Binary):
    """a - b of two activation tensors (broadcasting)."""
    type = "Sub"

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = self._operands(inputs)
        return a - b, (a.shape, b.shape)

    def backward(self, dout, cache):
        dout = np.asarray(dout)
        return [_sum_to(dout, cache[0]), -_sum_to(dout, cache[1])], {}


class Div(_Binary):
    """a / b of two activation tensors (broadcasting)."""
    type = "Div"

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = self._operands(inputs)
        out = a / b
        return out, (a.shape, b, out)

    def backward(self, dout, cache):
        a_shape, b, out = cache
        q = np.asarray(dout) / b
        return [_sum_to(q, a_shape), _sum_to(-q * out, b.shape)], {}


class Concat(Layer):
    """Concatenation of its inputs along the channel axis (axis 1)."""
    type = "Concat"
    num_inputs = None

    def output_shape(self, input_shapes):
        rest = [s[1:] for s in input_shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"inputs must agree on all but the channel axis, got {input_shapes}")
        return (sum(s[0] for s in input_shapes),) + tuple(rest[0])

    def forward(self, inputs, params, buffers, mode, rng):
        self.output_shape([x.shape[1:] for x in inputs])
        sizes = [x.shape[1] for x in inputs]
        return np.concatenate(inputs, axis=1), sizes

    def backward(self, dout, cache):
        splits = np.cumsum(cache)[:-1]
        return [np.ascontiguousarray(d) for d in np.split(dout, splits, axis=1)], {}


class Clip(Layer):
    """Elementwise clamp to [min, max] (either may be infinite); ReLU6 is Clip(0, 6)."""
    type = "Clip"

    def __init__(self, min=None, max=None):   # noqa: A002 (ONNX's names); None: open end
        self.min = float("-inf") if min is None else float(min)
        self.max = float("inf") if max is None else float(max)
        if not self.min <= self.max:
            raise ValueError(f"Clip: min ({min}) must not exceed max ({max})")

    def config(self):
        # JSON has no infinity: None stands for an open end
        return dict(min=None if math.isinf(self.min) else self.min,
                    max=None if math.isinf(self.max) else self.max)

    def describe(self):
        return f"Clip [{self.min:g}, {self.max:g}]"

    def forward(self, inputs, params, buffers, mode, rng):
        # the clamp kernel takes finite bounds: an open end is float32's largest value
        big = float(np.finfo(np.float32).max)
        return L.relu6_forward(inputs[0], max(self.min, -big), min(self.max, big))

    def backward(self, dout, cache):
        return [L.relu6_backward(dout, cache)], {}


class Pad(Layer):
    """Constant padding of H and W: (top, bottom, left, right) cells of ``value``.

    A zero Pad that feeds a convolution is better folded into the convolution's
    own padding (the ONNX importer does that); this layer covers the rest.
    """
    type = "Pad"

    def __init__(self, padding, value=0.0):
        self.padding = _pad4(padding, "Pad: padding", lo=None)
        if min(self.padding) < 0:
            raise ValueError(f"Pad: negative padding {self.padding} (cropping) is not supported")
        if isinstance(value, (str, bytes)):
            raise TypeError(f"Pad: value must be a number, got {value!r}")
        self.value = float(value)
        if math.isnan(self.value):
            raise ValueError(f"Pad: value must be a number, got {value!r}")

    def config(self):
        return dict(padding=list(self.padding), value=self.value)

    def describe(self):
        return f"Pad {self.padding}" + ("" if self.value == 0 else f" value {self.value:g}")

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got (N, {', '.join(map(str, s))})")
        t, b, l, r = self.padding
        return (s[0], s[1] + t + b, s[2] + l + r)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        t, b, l, r = self.padding
        out = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=x.dtype.type(self.value))
        return out, x.shape

    def backward(self, dout, cache):
        h, w = cache[2:]
        t, _, l, _ = self.padding
        return [np.ascontiguousarray(np.asarray(dout)[:, :, t:t + h, l:l + w])], {}


def _broadcast_shape(param, input_shape, what):
    try:
        out = np.broadcast_shapes(tuple(input_shape), tuple(param))
    except ValueError:
        out = None
    if out != tuple(input_shape):
        raise ValueError(f"{what} of shape {tuple(param)} does not broadcast to the input "
                         f"(N, {', '.join(map(str, input_shape))})")
    return out


def _reduce_to(g, shape):
    """Sum a (N, ...) gradient down to a parameter of ``shape`` (broadcast over N and size-1 axes)."""
    g = np.asarray(g)
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _shape(shape, what):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{what} must be a sequence of ints, got {shape!r}")
    return tuple(_checks.integer(v, what, 1) for v in shape)


class Bias(Layer):
    """out = x + bias, with ``bias`` of ``shape`` broadcast against one sample
    (e.g. (C, 1, 1) per channel); a constant addition in an imported graph."""
    type = "Bias"

    def __init__(self, shape):
        self.shape = _shape(shape, f"{self.type}: shape")

    def config(self):
        return dict(shape=list(self.shape))

    def describe(self):
        return f"Bias {'x'.join(map(str, self.shape)) or 'scalar'}"

    @property
    def param_shapes(self):
        return {"bias": self.shape}

    def output_shape(self, input_shapes):
        return _broadcast_shape(self.shape, input_shapes[0], "bias")

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return x + params["bias"].astype(x.dtype, copy=False), None

    def backward(self, dout, cache):
        return self.backward_inputs(dout, cache), self.backward_params(dout, cache)

    def backward_inputs(self, dout, cache):
        return [dout]

    def backward_params(self, dout, cache):
        return {"bias": _reduce_to(dout, self.shape)}


class Scale(Layer):
    """out = x * scale, with ``scale`` of ``shape`` broadcast against one sample;
    a constant multiplication (or division) in an imported graph."""
    type = "Scale"

    def __init__(self, shape):
        self.shape = _shape(shape, f"{self.type}: shape")

    def config(self):
        return dict(shape=list(self.shape))

    def describe(self):
        return f"Scale {'x'.join(map(str, self.shape)) or 'scalar'}"

    @property
    def param_shapes(self):
        return {"scale": self.shape}

    def init_params(self, rng, dtype):
        return {"scale": np.ones(self.shape, dtype)}

    def output_shape(self, input_shapes):
        return _broadcast_shape(self.shape, input_shapes[0], "scale")

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        s = params["scale"].astype(x.dtype, copy=False)
        return x * s, (x, s)

    def backward(self, dout, cache):
        x, s = cache
        return [dout * s], {"scale": _reduce_to(dout * x, self.shape)}

    def backward_inputs(self, dout, cache):
        return [dout * cache[1]]


LAYER_TYPES = {cls.type: cls for cls in (
    Conv2d, BatchNorm2d, BatchNorm1d, ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, HardSigmoid, HardSwish,
    SiLU, MaxPool2d, AvgPool2d, GlobalAvgPool, Flatten, Linear, Dropout, Add, Mul, Sub, Div, Concat,
    Clip, Pad, Bias, Scale)}


# ============================================================================ model
class Node:
    __slots__ = ("name", "layer", "inputs")

    def __init__(self, name, layer, inputs):
        self.name = name
        self.layer = layer
        self.inputs = inputs

    def __repr__(self):
        return f"Node({self.name!r}, {self.layer!r}, inputs={self.inputs})"


def _as_float_input(X, what="X"):
    X = np.asarray(X)
    if X.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array (float32 or float64), got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    return X


def _names(names, what):
    """A list of strings (one per class), or None."""
    if names is None:
        return None
    if isinstance(names, (str, bytes, dict)) or not hasattr(names, "__iter__"):
        raise TypeError(f"{what} must be a list of strings (one per class), got {type(names).__name__}")
    names = list(names)
    bad = [v for v in names if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what} must be a list of strings (one per class), got {bad[0]!r} "
                        f"({type(bad[0]).__name__})")
    return names


class Model:
    """A network of named nodes with CS231n ``forward``/``backward`` (see the module doc).

    Args:
        input_shape: (C, H, W) the model was made for (H, W are informative: fully
            convolutional prefixes accept any size).
        mean: per-channel mean (C,) or mean image (C, H, W) in 0-255 pixel units,
            subtracted by :meth:`preprocess`.
        std: per-channel (C,) divisor applied after the mean (default 1: CS231n 2016's
            "mean subtracted" input space).
        channel_order: 'RGB' or 'BGR' (of the model's input channels).
        class_names, wnids: one per class (index = label).
        name: a label for the model.
        seed: seeds the initial weights of added layers and the generator used by
            Dropout (``Model.rng``).

    Example:
        >>> m = Model(input_shape=(3, 8, 8))
        >>> m.add('conv1', Conv2d(3, 4, 3, padding=1)).add('relu1', ReLU())
        >>> m.add('pool', GlobalAvgPool()).add('flat', Flatten()).add('fc', Linear(4, 10))
        >>> scores, cache = m.forward(X)
    """

    def __init__(self, input_shape=(3, 64, 64), mean=None, std=None, channel_order="RGB",
                 class_names=None, wnids=None, name="model", seed=None):
        self.nodes = []
        self._index = {}
        self.params = {}    # 'node.local' -> array
        self.buffers = {}   # 'node.local' -> array
        try:
            ok = not isinstance(input_shape, (str, bytes)) and len(input_shape) == 3
        except TypeError:     # no length: a number, None, a 0-d array
            ok = False
        if not ok:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
        self.input_shape = tuple(_checks.integer(v, "input_shape", 1) for v in input_shape)
        c = self.input_shape[0]
        try:
            self.mean = np.zeros(c, np.float32) if mean is None else np.asarray(mean, np.float32)
            self.std = np.ones(c, np.float32) if std is None else np.asarray(std, np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"mean and std must be numbers, got mean {mean!r}, std {std!r}") from None
        if self.mean.shape not in ((c,), self.input_shape):
            raise ValueError(f"mean must have shape ({c},) or {self.input_shape}, got {self.mean.shape}")
        if not np.all(np.isfinite(self.mean)):
            raise ValueError(f"mean contains NaN or infinite values: {self.mean.ravel()[:5]}")
        if self.std.shape != (c,) or not np.all((self.std > 0) & np.isfinite(self.std)):
            raise ValueError(f"std must be {c} positive finite numbers, got {self.std}")
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.channel_order = channel_order
        self.class_names = _names(class_names, "class_names")
        self.wnids = _names(wnids, "wnids")
        self.name = name
        # JSON-able notes on where the model came from (e.g. what an importer folded or
        # dropped); saved with the model
        self.info = {}
        self.rng = _checks.rng_from(seed)
        self._init_rng = _checks.rng_from(seed)   # initial weights of added layers
        # A ReLU that only reads a Conv2d is applied by the convolution as it writes
        # its output (one pass less over memory) unless the convolution's own output
        # is asked for; False runs every layer separately (same results).
        self.fuse_relu = True
        self._plans = {}    # see _plan

    # ------------------------------------------------------------------ building
    def add(self, name, layer, inputs=None):
        """Append a node; ``inputs`` (a name or list of names) defaults to the
        previous node (or the model input for the first node). Returns self."""
        inputs = self._check_node(name, layer, inputs)
        return self._append(name, layer, inputs, layer.init_params(self._init_rng, np.float32),
                            layer.init_buffers(np.float32))

    def _check_node(self, name, layer, inputs):
        """The node's input list, after checking that ``add`` may append it."""
        if not isinstance(name, str) or not name or "/" in name or name == INPUT:
            raise ValueError(f"node name must be a non-empty string without '/', not {INPUT!r}; got {name!r}")
        if name in self._index:
            raise ValueError(f"a node named {name!r} already exists")
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a gradvis.model.Layer, got {type(layer).__name__}")
        if inputs is None:
            inputs = [self.nodes[-1].name if self.nodes else INPUT]
        elif isinstance(inputs, str):
            inputs = [inputs]
        inputs = list(inputs)
        for i in inputs:
            if i != INPUT and i not in self._index:
                raise ValueError(f"node {name!r} reads {i!r}, which is not an earlier node"
                                 f"{self._suggest(i)}")
        n = layer.num_inputs
        if (n is not None and len(inputs) != n) or len(inputs) < 1:
            raise ValueError(f"node {name!r}: {layer.type} takes {n or 'one or more'} input(s), got {inputs}")
        return inputs

    def _append(self, name, layer, inputs, params, buffers):
        """Append a checked node with its parameter and buffer arrays."""
        self._index[name] = len(self.nodes)
        self.nodes.append(Node(name, layer, inputs))
        self._plans = {}
        for k, v in params.items():
            self.params[f"{name}.{k}"] = v
        for k, b in buffers.items():
            self.buffers[f"{name}.{k}"] = b
        return self

    def init_params(self, seed=0, dtype=np.float32):
        """(Re)initialize all parameters (He-normal convs, uniform linears, BN 1/0)
        and buffers, with a seeded generator."""
        rng = _checks.rng_from(seed)
        for node in self.nodes:
            for k, v in node.layer.init_params(rng, dtype).items():
                self.params[f"{node.name}.{k}"] = v
            for k, v in node.layer.init_buffers(dtype).items():
                self.buffers[f"{node.name}.{k}"] = v
        return self

    def seed(self, seed):
        """Reseed the generator used by Dropout."""
        self.rng = _checks.rng_from(seed)
        return self

    # ------------------------------------------------------------------ lookup
    @property
    def layer_names(self):
        return [n.name for n in self.nodes]

    def __len__(self):
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def __contains__(self, name):
        return name in self._index

    def _suggest(self, name):
        close = difflib.get_close_matches(str(name), self.layer_names, n=3, cutoff=0.5)
        return f"; did you mean {', '.join(map(repr, close))}?" if close else ""

    def index(self, key):
        """Node index of a name or an index (negative indices count from the end)."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key)
            if not -len(self.nodes) <= k < len(self.nodes):
                raise IndexError(f"layer index {k} out of range for a model with {len(self.nodes)} layers")
            return k % len(self.nodes)
        if isinstance(key, str):
            if key not in self._index:
                raise LayerNotFoundError(f"no layer named {key!r}{self._suggest(key)} "
                               f"(layers: {', '.join(self.layer_names)})")
            return self._index[key]
        raise TypeError(f"a layer is named by a str or an int index, got {type(key).__name__}")

    def __getitem__(self, key):
        """The layer object of a node, by name or index."""
        return self.nodes[self.index(key)].layer

    def node(self, key):
        return self.nodes[self.index(key)]

    def layer_params(self, key):
        """Parameters of one node, keyed by local name ('weight', ...)."""
        name = self.nodes[self.index(key)].name
        return {k.split(".", 1)[1]: v for k, v in self.params.items() if k.split(".", 1)[0] == name}

    def named_parameters(self):
        """[(name, array)] in node order."""
        return list(self.params.items())

    def parameters(self):
        return list(self.params.values())

    def num_parameters(self):
        return int(sum(p.size for p in self.params.values()))

    @property
    def num_classes(self):
        for node in reversed(self.nodes):
            if isinstance(node.layer, Linear):
                return node.layer.out_features
            if isinstance(node.layer, Conv2d):
                return node.layer.out_channels
        return None

    def output_shapes(self, input_shape=None):
        """{node name: output shape without the batch axis} for an input (C, H, W)."""
        shapes = {INPUT: tuple(input_shape or self.input_shape)}
        for node in self.nodes:
            try:
                shapes[node.name] = tuple(node.layer.output_shape([shapes[i] for i in node.inputs]))
            except ValueError as e:
                raise ValueError(f"layer {node.name!r} ({node.layer.type}): {e}") from None
        return shapes

    def summary(self):
        """A table of nodes, inputs, output shapes and parameter counts."""
        shapes = self.output_shapes()
        rows = [("name", "layer", "inputs", "output", "params")]
        for node in self.nodes:
            n = sum(self.params[f"{node.name}.{k}"].size for k in node.layer.param_shapes)
            ins = ",".join(node.inputs)
            rows.append((node.name, node.layer.describe(), ins, "x".join(map(str, shapes[node.name])), str(n)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"total parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<gradvis.Model {self.name!r}: {len(self.nodes)} layers, {self.num_parameters():,} parameters>"

    # ------------------------------------------------------------------ passes
    def _range(self, start, end):
        if not self.nodes:
            raise ValueError("the model has no layers")
        s = 0 if start is None else self.index(start)
        e = len(self.nodes) - 1 if end is None else self.index(end)
        if s > e:
            raise ValueError(f"start ({self.nodes[s].name!r}, index {s}) comes after end "
                             f"({self.nodes[e].name!r}, index {e})")
        return s, e

    def _ancestors(self, targets, s, bound):
        """Indices (>= s) of the nodes the tensors ``targets`` depend on, themselves included."""
        needed = set()
        stack = list(targets)
        while stack:
            name = stack.pop()
            if name == bound or name == INPUT:
                continue
            i = self._index[name]
            if i < s or i in needed:
                continue    # before the start: forward reports the crossing skip connection
            needed.add(i)
            stack.extend(self.nodes[i].inputs)
        return needed

    def forward(self, X, start=None, end=None, mode="test", outputs=None, rng=None):
        """Run nodes ``start`` through ``end`` (inclusive, as CS231n).

        Only the nodes that ``end`` (or ``outputs``) depend on are computed: in a
        branching graph, side branches listed between start and end are skipped
        (and get zero parameter gradients in :meth:`backward`).

        Args:
            X: (N, C, H, W) float32/float64: the model input when ``start`` is None,
                else the input of node ``start`` (the output of the node before it).
            start, end: node index or name (default: first, last).
            mode: 'test' (batch norm uses running statistics, dropout off) or 'train'
                (batch statistics, running statistics updated, dropout on).
            outputs: optional list of node names; then ``out`` is a dict name -> tensor
                of those nodes (and ``end`` defaults to the last of them).
            rng: a numpy Generator for dropout (default: the model's ``rng``).

        Returns:
            (out, cache): the last node's output (or the dict), and the cache for
            :meth:`backward`.
        """
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        X = _as_float_input(X)
        if outputs is not None:
            outputs = [outputs] if isinstance(outputs, str) else list(outputs)
            if not outputs:
                raise ValueError("outputs must name at least one node (or be None for the last node's output)")
            for o in outputs:
                self.index(o)
            if end is None:
                end = max(self.index(o) for o in outputs)
        s, e = self._range(start, end)
        if outputs is not None:
            for o in outputs:
                if not s <= self.index(o) <= e:
                    raise ValueError(f"requested output {o!r} is not among the nodes run "
                                     f"({self.nodes[s].name!r} .. {self.nodes[e].name!r})")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        first = self.nodes[s]
        if s == 0 and start is None:
            bound = INPUT
            if X.ndim != 4 or X.shape[1] != self.input_shape[0]:
                raise ValueError(f"X must be (N, {self.input_shape[0]}, H, W) images, got shape {X.shape}")
        else:
            if len(first.inputs) != 1:
                raise ValueError(f"cannot start at {first.name!r}: it reads several tensors {first.inputs}")
            bound = first.inputs[0]
        rng = self.rng if rng is None else rng
        needed, fused, keys = self._plan(s, e, outputs, bound)
        tensors = {bound: X}
        shapes = {}
        caches = []
        for i in range(s, e + 1):
            node = self.nodes[i]
            if i not in needed:      # a branch the requested outputs do not depend on
                caches.append(None)
                continue
            if i - 1 in fused:       # the ReLU was applied by the convolution before it
                conv = self.nodes[i - 1].name
                out = tensors[node.name] = tensors.pop(conv)
                shapes[conv] = out.shape
                caches.append(out)   # relu's backward masks with out > 0, as with its input
                continue
            ins = []
            for t in node.inputs:
                if t not in tensors:
                    raise ValueError(
                        f"layer {node.name!r} needs {t!r}, which is computed before the start of this "
                        f"pass ({first.name!r}); a skip connection crosses the cut, start earlier")
                ins.append(tensors[t])
            pkeys, bkeys = keys[i]
            params = {k: self.params[pk] for k, pk in pkeys}
            buffers = {k: self.buffers[bk] for k, bk in bkeys}
            try:
                if i in fused:
                    out, cache = node.layer.forward(ins, params, buffers, mode, rng, relu=True)
                else:
                    out, cache = node.layer.forward(ins, params, buffers, mode, rng)
            except (ValueError, TypeError) as err:
                raise type(err)(f"layer {node.name!r} ({node.layer.type}): {err}") from None
            tensors[node.name] = out
            caches.append(cache)
        last = self.nodes[e].name
        result = {o: tensors[o] for o in outputs} if outputs is not None else tensors[last]
        shapes.update((k, v.shape) for k, v in tensors.items())
        cache = {"start": s, "end": e, "bound": bound, "caches": caches, "dtype": X.dtype,
                 "X_shape": X.shape, "outputs": outputs, "shapes": shapes, "last": self.nodes[e]}
        return result, cache

    def _plan(self, s, e, outputs, bound):
        """What a forward pass over nodes s..e needs besides the tensors, which depends
        only on the graph: the nodes it computes, the ReLU fusions, and each node's
        parameter and buffer keys. Kept per (range, outputs, fusion setting); a gradient
        loop runs the same pass hundreds of times (rebuilding this was ~40 us a pass)."""
        key = (s, e, None if outputs is None else tuple(outputs), bound, self.fuse_relu)
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(key)
        if plan is None:
            needed = self._ancestors(outputs if outputs is not None else [self.nodes[e].name], s, bound)
            fused = self._relu_fusions(s, e, needed, outputs)
            keys = [([(k, f"{n.name}.{k}") for k in n.layer.param_shapes],
                     [(k, f"{n.name}.{k}") for k in n.layer.buffer_shapes]) for n in self.nodes]
            if len(plans) >= 64:
                plans.clear()
            plan = plans[key] = (needed, fused, keys)
        return plan

    def _relu_fusions(self, s, e, needed, outputs):
        """Indices i in [s, e) of Conv2d and batch-norm nodes that can apply the ReLU
        of node i + 1 themselves (their backward passes do not read their output):
        the ReLU reads only node i, nothing else reads node i, and node i is not a
        requested output (``end`` or ``outputs``). Its pre-activation is then never
        stored; the ReLU's output and both gradients are unchanged."""
        if not self.fuse_relu:
            return set()
        readers = {}
        for node in self.nodes:
            for t in node.inputs:
                readers[t] = readers.get(t, 0) + 1
        keep = set(outputs or ())
        fused = set()
        for i in range(s, e):
            node, nxt = self.nodes[i], self.nodes[i + 1]
            if (type(node.layer) in _FUSES_RELU and type(nxt.layer) is ReLU and nxt.inputs == [node.name]
                    and readers.get(node.name) == 1 and node.name not in keep
                    and i in needed and i + 1 in needed):
                fused.add(i)
        return fused

    def backward(self, dout, cache, param_grads=True, input_grad=True):
        """Backward of :meth:`forward`.

        Args:
            dout: d(loss)/d(out): an array shaped like the last node's output, or,
                when forward had ``outputs``, a dict name -> gradient (missing = 0).
            cache: from :meth:`forward`.
            param_grads: compute parameter gradients. The image-gradient
                algorithms pass False and skip the weight-gradient kernels.
            input_grad: compute dX. Training passes False and skips the first
                layer's input gradient.

        Returns:
            (dX, grads): the gradient w.r.t. forward's X (None when input_grad is
            False) and a dict parameter name -> gradient for every parameter of
            the nodes run (zeros where the loss does not depend on it; empty when
            param_grads is False).
        """
        if not isinstance(cache, dict) or "last" not in cache:
            got = "a dict without forward's entries" if isinstance(cache, dict) else type(cache).__name__
            raise TypeError(f"cache must be the cache returned by this model's forward, got {got}")
        s, e = cache["start"], cache["end"]
        if e >= len(self.nodes) or self.nodes[e] is not cache["last"]:
            raise ValueError("cache comes from another model's forward (or from before this "
                             "model's layers changed); pass the cache of this model's forward")
        dtype = cache["dtype"]
        shapes = cache["shapes"]
        grads_t = {}

        def accumulate(name, g):
            g = np.asarray(g)
            if g.shape != shapes[name]:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, expected {shapes[name]}")
            if name in grads_t:
                grads_t[name] = grads_t[name] + g
            else:
                grads_t[name] = g

        if cache["outputs"] is not None:
            if not isinstance(dout, dict):
                raise TypeError("forward ran with outputs=[...]; pass dout as a dict name -> gradient")
            for k, g in dout.items():
                if k not in cache["outputs"]:
                    raise ValueError(f"dout has {k!r}, which was not among forward's outputs {cache['outputs']}")
                accumulate(k, np.asarray(g, dtype=dtype))
        else:
            accumulate(self.nodes[e].name, np.asarray(dout, dtype=dtype))

        grads = {}
        for i in range(e, s - 1, -1):
            node = self.nodes[i]
            g = grads_t.pop(node.name, None)
            if g is None:
                if param_grads:
                    for k, shp in node.layer.param_shapes.items():
                        grads[f"{node.name}.{k}"] = np.zeros(shp, dtype)
                continue
            c = cache["caches"][i - s]
            need_inputs = input_grad or any(t != cache["bound"] for t in node.inputs)
            if param_grads and need_inputs:
                dins, dparams = node.layer.backward(g, c)
            elif param_grads:
                dins, dparams = [], node.layer.backward_params(g, c)
            else:
                dins, dparams = node.layer.backward_inputs(g, c), {}
            for k, v in dparams.items():
                grads[f"{node.name}.{k}"] = v
            for t, d in zip(node.inputs, dins):
                accumulate(t, d)
        if not input_grad:
            return None, grads
        dX = grads_t.get(cache["bound"])
        if dX is None:
            dX = np.zeros(cache["X_shape"], dtype)
        return dX, grads

    # ------------------------------------------------------------------ loss
    def loss(self, X, y=None, mode="train", label_smoothing=0.0):
        """Scores, or the softmax cross-entropy loss and parameter gradients.

        As CS231n's ``PretrainedCNN.loss``: with ``y`` None return the class scores
        (test mode); else return ``(loss, grads)``. ``label_smoothing`` mixes the
        one-hot target with the uniform distribution. Weight decay is the
        optimizer's job (:mod:`gradvis.train`).
        """
        if y is None:
            scores, _ = self.forward(X, mode="test")
            return scores
        scores, cache = self.forward(X, mode=mode)
        loss, dscores = softmax_cross_entropy(scores, y, label_smoothing)
        _, grads = self.backward(dscores, cache, input_grad=False)
        return loss, grads

    def predict(self, X, batch_size=256):
        """Class scores of X in test mode, in batches of ``batch_size`` (an int >= 1)."""
        batch_size = _checks.positive_int(batch_size, "batch_size")
        X = _as_float_input(X)
        outs = [self.forward(X[i:i + batch_size])[0] for i in range(0, len(X), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), X.dtype)

    # ------------------------------------------------------------------ copies
    def copy(self):
        import copy as _copy
        m = _copy.copy(self)
        m.nodes = list(self.nodes)
        m._index = dict(self._index)
        m.params = {k: v.copy() for k, v in self.params.items()}
        m.buffers = {k: v.copy() for k, v in self.buffers.items()}
        m.class_names = None if self.class_names is None else list(self.class_names)
        m.wnids = None if self.wnids is None else list(self.wnids)
        m.info = _copy.deepcopy(self.info)
        m.rng = _copy.deepcopy(self.rng)
        m._init_rng = _copy.deepcopy(self._init_rng)
        m._plans = {}
        return m

    def astype(self, dtype):
        """A copy whose parameters and buffers are ``dtype``: float32 or float64 (e.g.
        float64 for gradient checks); other dtypes raise TypeError."""
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        m = self.copy()
        m.params = {k: v.astype(dtype) for k, v in m.params.items()}
        m.buffers = {k: v.astype(dtype) for k, v in m.buffers.items()}
        return m

    # ------------------------------------------------------------------ pre/post-processing
    def _mean_for(self, h, w):
        if self.mean.ndim == 1:
            return self.mean[:, None, None]
        if self.mean.shape[1:] == (h, w):
            return self.mean
        return self.mean.mean(axis=(1, 2))[:, None, None]   # mean image, other size: its channel means

    def preprocess(self, images):
        """uint8 images (N, H, W, 3) or (H, W, 3), RGB, -> float32 (N, 3, H, W) model input."""
        img = np.asarray(images)
        single = img.ndim == 3
        if single:
            img = img[None]
        if img.ndim != 4 or img.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3), got shape {np.asarray(images).shape}")
        if img.dtype.kind not in "buif":
            raise TypeError(f"images must be a numeric array (uint8 pixel values), got dtype {img.dtype}")
        if img.dtype.kind == "f" and not np.isfinite(img).all():
            raise ValueError("images contain NaN or infinite values")
        x = img.astype(np.float32).transpose(0, 3, 1, 2)
        if self.channel_order == "BGR":
            x = x[:, ::-1]
        x = (x - self._mean_for(*x.shape[2:])) / self.std[:, None, None]
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, X):
        """Model input (N, 3, H, W) or (3, H, W) -> uint8 RGB images (N, H, W, 3) / (H, W, 3), clipped."""
        x = np.asarray(X, dtype=np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"X must be (N, 3, H, W) or (3, H, W), got shape {np.asarray(X).shape}")
        img = x * self.std[:, None, None] + self._mean_for(*x.shape[2:])
        if self.channel_order == "BGR":
            img = img[:, ::-1]
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(img[0] if single else img)

    def input_range(self):
        """(lo, hi) of valid model inputs (images of pixel values 0..255), shaped
        (C, 1, 1) for a per-channel mean, or (C, H, W) for a mean image, so they
        broadcast against (N, C, H, W) in ``np.clip``."""
        m = self.mean[:, None, None] if self.mean.ndim == 1 else self.mean
        s = self.std[:, None, None]
        lo, hi = (0.0 - m) / s, (255.0 - m) / s
        return lo.astype(np.float32), hi.astype(np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path, overwrite=False):
        """Write the model to one ``.npz`` file (no pickle); see :mod:`gradvis.serialization`."""
        from .serialization import save_model
        return save_model(self, path, overwrite=overwrite)


def softmax_cross_entropy(scores, y, label_smoothing=0.0):
    """Mean softmax cross-entropy and its gradient d(loss)/d(scores), (N, C).

    ``label_smoothing`` = eps uses the target (1 - eps) * onehot + eps / C.
    """
    scores = np.asarray(scores)
    label_smoothing = _checks.finite_float(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if label_smoothing == 0.0:
        return L.softmax_loss(scores, y)
    y = np.asarray(y)
    n, c = scores.shape
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= c)):
        raise ValueError(f"y must be ({n},) integer labels in [0, {c}), got {y.dtype} {y.shape}")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full_like(log_p, label_smoothing / c)
    target[np.arange(n), y] += 1.0 - label_smoothing
    loss = -float((target * log_p).sum(dtype=np.float64) / n)
    dx = (np.exp(log_p) - target) / n
    return loss, dx.astype(scores.dtype, copy=False)
