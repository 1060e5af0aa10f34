"""Layers that combine or reshape tensors elementwise: Add, Mul, Sub, Div, Maximum,
Minimum (numpy broadcasting), Concat, Clip, Pad, the constant Bias and Scale, PReLU
(a learned slope), and Compare / Select (``torch.where`` on a condition computed from
the activations).

The sum of two tensors of one shape (a residual connection), the product of an
(N, C, H, W) tensor and a per-channel (N, C, 1, 1) gate (squeeze-and-excitation) and
a per-channel constant scale (ConvNeXt's layer scale) run in the compiled core; the
other broadcasts in numpy."""
from __future__ import annotations

import math

import numpy as np

from .. import _checks, _core
from . import functional as F
from .geometry import pad4
from .module import Layer

__all__ = ["Add", "Mul", "Sub", "Div", "Maximum", "Minimum", "Concat", "Clip", "Pad", "Bias", "Scale", "PReLU",
           "Compare", "Select"]


def _broadcast_inputs(input_shapes):
    """The numpy broadcast of activation shapes with the same number of axes, or ValueError."""
    shapes = [tuple(s) for s in input_shapes]
    first = shapes[0]
    if all(s == first for s in shapes):   # the common case, on every pass (~2 us less than numpy's)
        return first
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(f"inputs must have the same number of axes, got {shapes}")
    out = list(first)
    for s in shapes[1:]:
        for i, b in enumerate(s):
            a = out[i]
            if a == 1:
                out[i] = b
            elif b != 1 and b != a:
                raise ValueError(f"input shapes {shapes} do not broadcast")
    return tuple(out)


def _kernel_pair(a, b):
    """Whether two operands can go to the compiled core: C-contiguous float32 or float64 of one dtype."""
    return (a.dtype == b.dtype and a.dtype.char in "fd" and a.flags.c_contiguous and b.flags.c_contiguous
            and a.ndim >= 2)


def add_arrays(a, b):
    """a + b for two arrays of one shape, by the compiled core where it takes them
    (multi-threaded, SIMD), else numpy: a backward pass summing the gradients of a
    tensor that several layers read."""
    if a.shape == b.shape and _kernel_pair(a, b):
        return _core.add_forward(a, b)
    return a + b


def _is_gate(g, shape):
    """Whether ``g`` is a per-channel gate of a tensor of ``shape`` (N, C, ...): shape
    (N or 1, C, 1, ...) with C > 1 and a larger tensor, so that numpy broadcasting
    gives ``shape``."""
    return (g.ndim == len(shape) and g.shape[0] in (1, shape[0]) and g.shape[1] == shape[1] > 1
            and all(v == 1 for v in g.shape[2:]) and g.size < math.prod(shape))


def _gate2d(g):
    return g.reshape(g.shape[0], g.shape[1])


def _sum_to(g, shape):
    """A gradient of the broadcast output summed back to an input of ``shape`` (batch axis included)."""
    return g if g.shape == tuple(shape) else _reduce_to(g, shape)


class Add(Layer):
    """Elementwise sum of its inputs (residual connections). Inputs with the same
    number of axes broadcast as in numpy, e.g. (C, H, W) + (C, 1, 1). Its backward
    does not read its output, so a ReLU after it (ResNet's blocks) runs in the same
    pass (``relu=True``, as relu_forward gives it)."""
    type = "Add"
    num_inputs = None
    fuses_relu = True

    def output_shape(self, input_shapes):
        return _broadcast_inputs(input_shapes)

    def forward(self, inputs, params, buffers, mode, rng, relu=False):
        shape = self.output_shape([x.shape for x in inputs])
        if len(inputs) == 2 and inputs[0].shape == inputs[1].shape == shape and _kernel_pair(inputs[0], inputs[1]):
            return _core.add_forward(inputs[0], inputs[1], relu), [shape, shape]
        if inputs[0].shape == shape:
            out = inputs[0].copy()
        else:
            out = np.empty(shape, inputs[0].dtype)
            out[...] = inputs[0]
        for x in inputs[1:]:
            out += x
        if relu:
            out = _core.relu_forward(out) if out.dtype.char in "fd" else np.where(out < 0, 0, out).astype(out.dtype)
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
    """a * b of two activation tensors (broadcasting). A per-channel gate, one operand
    (N, C, 1, 1) or (1, C, 1, 1) and the other (N, C, H, W), in either order, is one
    pass of the compiled core forward and backward."""
    type = "Mul"

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = self._operands(inputs)
        if _kernel_pair(a, b):
            if _is_gate(b, a.shape):
                return _core.channel_scale_forward(a, _gate2d(b)), ("gate", a, b, False)
            if _is_gate(a, b.shape):
                return _core.channel_scale_forward(b, _gate2d(a)), ("gate", b, a, True)
        return a * b, ("numpy", a, b)

    def backward(self, dout, cache):
        if cache[0] == "gate":
            _, big, gate, swapped = cache
            dbig, dgate = _core.channel_scale_backward(np.asarray(dout, dtype=big.dtype), big, _gate2d(gate))
            dgate = dgate.reshape(gate.shape)
            return ([dgate, dbig] if swapped else [dbig, dgate]), {}
        _, a, b = cache
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


class _Extremum(_Binary):
    """The elementwise larger (smaller) of two tensors, broadcasting; the gradient goes
    to the operand that gave the value, half to each where they tie (as PyTorch's
    ``maximum`` / ``minimum``); a NaN in either operand gives NaN."""
    _pick = None

    def forward(self, inputs, params, buffers, mode, rng):
        a, b = self._operands(inputs)
        out = self._pick(a, b)
        return out, (a, b, out)

    def backward(self, dout, cache):
        a, b, out = cache
        dout = np.asarray(dout)
        wins = out == a          # a gave the value (or tied)
        tie = a == b
        half = dout * dout.dtype.type(0.5)
        da = np.where(tie, half, np.where(wins, dout, 0))
        db = np.where(tie, half, np.where(wins, 0, dout))
        return [_sum_to(da, a.shape), _sum_to(db, b.shape)], {}


class Maximum(_Extremum):
    """max(a, b) elementwise (ONNX Max of two tensors, ``torch.maximum``)."""
    type = "Maximum"
    _pick = staticmethod(np.maximum)


class Minimum(_Extremum):
    """min(a, b) elementwise (ONNX Min of two tensors, ``torch.minimum``)."""
    type = "Minimum"
    _pick = staticmethod(np.minimum)

class Concat(Layer):
    """Concatenation of its inputs along ``axis`` (>= 1 of the (N, ...) tensors; the
    channel axis 1 by default, as DenseNet and Inception join branches).

    ``constants`` (``{position: shape}``) puts parameters ``const<position>`` of the
    given per-sample shapes among the inputs, at those positions of the joined
    parts, the same for every sample (a vision transformer's class token joined
    before the patch tokens); they train like any parameter.

    Shapes: inputs (N, ..., d_i at axis, ...) agreeing on every other axis -> (N, ...,
    sum of d_i, ...).
    """
    type = "Concat"
    num_inputs = None

    def __init__(self, axis=1, constants=None):
        self.axis = _checks.integer(axis, "Concat: axis", 1)
        self.constants = {}
        for pos, shape in dict(constants or {}).items():
            self.constants[_checks.integer(int(pos) if isinstance(pos, str) else pos, "Concat: constant position",
                                           0)] = _shape(shape, "Concat: constant shape")

    def config(self):
        c = {} if self.axis == 1 else dict(axis=self.axis)
        if self.constants:
            c["constants"] = {str(k): list(v) for k, v in sorted(self.constants.items())}
        return c

    def describe(self):
        return ("Concat" if self.axis == 1 else f"Concat axis {self.axis}") + \
            (f" with {len(self.constants)} constant{'s' if len(self.constants) > 1 else ''}" if self.constants else "")

    @property
    def param_shapes(self):
        return {f"const{k}": v for k, v in self.constants.items()}

    def _parts(self, items, consts):
        """The joined parts in order: ``items`` (the inputs) with ``consts(position)`` at
        the constants' positions."""
        it, parts = iter(items), []
        for k in range(len(items) + len(self.constants)):
            parts.append(consts(k) if k in self.constants else next(it))
        return parts

    def output_shape(self, input_shapes):
        if self.constants and max(self.constants) >= len(input_shapes) + len(self.constants):
            raise ValueError(f"constant positions {sorted(self.constants)} past the {len(input_shapes)} inputs and "
                             f"{len(self.constants)} constants")
        input_shapes = self._parts([tuple(s) for s in input_shapes], lambda k: self.constants[k])
        a = self.axis - 1
        if any(len(s) <= a for s in input_shapes):
            raise ValueError(f"axis {self.axis} is not an axis of every input, got {input_shapes}")
        rest = [tuple(s[:a]) + tuple(s[a + 1:]) for s in input_shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"inputs must agree on all but axis {self.axis}, got {input_shapes}")
        return tuple(input_shapes[0][:a]) + (sum(s[a] for s in input_shapes),) + tuple(input_shapes[0][a + 1:])

    def forward(self, inputs, params, buffers, mode, rng):
        self.output_shape([x.shape[1:] for x in inputs])
        n, dtype = inputs[0].shape[0], inputs[0].dtype
        parts = self._parts(list(inputs), lambda k: np.broadcast_to(
            params[f"const{k}"].astype(dtype, copy=False), (n,) + self.constants[k]))
        sizes = [x.shape[self.axis] for x in parts]
        return np.concatenate(parts, axis=self.axis), sizes

    def backward(self, dout, cache):
        splits = np.cumsum(cache)[:-1]
        pieces = np.split(dout, splits, axis=self.axis)
        dins, dparams = [], {}
        for k, d in enumerate(pieces):
            if k in self.constants:
                dparams[f"const{k}"] = d.sum(axis=0)
            else:
                dins.append(np.ascontiguousarray(d))
        return dins, dparams


class Clip(Layer):
    """Elementwise clamp to [min, max] (either may be infinite); ReLU6 is Clip(0, 6)."""
    type = "Clip"

    def __init__(self, min=None, max=None):   # noqa: A002 (ONNX's names); None: open end
        self.min = float("-inf") if min is None else _checks.number(min, "Clip: min", allow_inf=True)
        self.max = float("inf") if max is None else _checks.number(max, "Clip: max", allow_inf=True)
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
        return F.relu6_forward(inputs[0], max(self.min, -big), min(self.max, big))

    def backward(self, dout, cache):
        return [F.relu6_backward(dout, cache)], {}


class Pad(Layer):
    """Padding of H and W by (top, bottom, left, right) cells: of ``value``
    (``mode='constant'``), or the input mirrored without repeating its edge
    (``'reflect'``, ``nn.ReflectionPad2d``; each pad smaller than the side), its edge
    repeated (``'edge'``, ``nn.ReplicationPad2d``) or wrapped around (``'wrap'``,
    circular; each pad at most the side). The gradient of a padded cell goes back to
    the cell it copies.

    A zero Pad that feeds a convolution is better folded into the convolution's
    own padding (the ONNX importer does that); this layer covers the rest.
    """
    type = "Pad"
    MODES = ("constant", "reflect", "edge", "wrap")

    def __init__(self, padding, value=0.0, mode="constant"):
        self.padding = pad4(padding, "Pad: padding", lo=None)
        if min(self.padding) < 0:
            raise ValueError(f"Pad: negative padding {self.padding} (cropping) is not supported")
        if isinstance(value, (str, bytes)):
            raise TypeError(f"Pad: value must be a number, got {value!r}")
        self.value = float(value)
        if math.isnan(self.value):
            raise ValueError(f"Pad: value must be a number, got {value!r}")
        if mode not in self.MODES:
            raise ValueError(f"Pad: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def config(self):
        return dict(padding=list(self.padding), value=self.value, mode=self.mode)

    def describe(self):
        if self.mode != "constant":
            return f"Pad {self.padding} {self.mode}"
        return f"Pad {self.padding}" + ("" if self.value == 0 else f" value {self.value:g}")

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got (N, {', '.join(map(str, s))})")
        t, b, l, r = self.padding
        if self.mode == "reflect" and (max(t, b) >= s[1] or max(l, r) >= s[2]):
            raise ValueError(f"reflect padding {self.padding} needs each pad smaller than the side it mirrors "
                             f"(input {s[1]}x{s[2]})")
        if self.mode == "wrap" and (max(t, b) > s[1] or max(l, r) > s[2]):
            raise ValueError(f"wrap padding {self.padding} needs each pad at most the side it wraps "
                             f"(input {s[1]}x{s[2]})")
        if self.mode == "edge" and (s[1] == 0 or s[2] == 0):
            raise ValueError(f"edge padding of an empty input {s[1]}x{s[2]}")
        return (s[0], s[1] + t + b, s[2] + l + r)

    def _sources(self, h, w):
        """The input row and column each padded row and column copies."""
        t, b, l, r = self.padding
        return (np.pad(np.arange(h), (t, b), mode=self.mode), np.pad(np.arange(w), (l, r), mode=self.mode))

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        t, b, l, r = self.padding
        if self.mode == "constant":
            out = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=x.dtype.type(self.value))
        else:
            out = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=self.mode)
        return out, x.shape

    def backward(self, dout, cache):
        h, w = cache[2:]
        t, _, l, _ = self.padding
        dout = np.asarray(dout)
        if self.mode == "constant":
            return [np.ascontiguousarray(dout[:, :, t:t + h, l:l + w])], {}
        rows, cols = self._sources(h, w)
        g = np.zeros(dout.shape[:3] + (w,), dout.dtype)
        np.add.at(g, (slice(None), slice(None), slice(None), cols), dout)
        dx = np.zeros(dout.shape[:2] + (h, w), dout.dtype)
        np.add.at(dx, (slice(None), slice(None), rows), g)
        return [dx], {}


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

    def _per_channel(self, x):
        """Whether the scale is one value per channel of an (N, C, ...) input (C > 1)."""
        s = (1,) * (x.ndim - 1 - len(self.shape)) + self.shape
        return (len(s) >= 1 and s[0] == x.shape[1] > 1 and all(v == 1 for v in s[1:])
                and x.dtype.char in "fd" and x.flags.c_contiguous)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        s = params["scale"].astype(x.dtype, copy=False)
        if self._per_channel(x):
            s = np.ascontiguousarray(s.reshape(-1))
            return _core.channel_scale_forward(x, s), (x, s, True)
        return x * s, (x, s, False)

    def backward(self, dout, cache):
        x, s, kernel = cache
        if kernel:
            dx, ds = _core.channel_scale_backward(np.asarray(dout, dtype=x.dtype), x, s)
            return [dx], {"scale": ds.reshape(self.shape)}
        return [dout * s], {"scale": _reduce_to(dout * x, self.shape)}

    def backward_inputs(self, dout, cache):
        x, s, kernel = cache
        if kernel:
            return [_core.channel_scale_backward(np.asarray(dout, dtype=x.dtype), x, s, True, False)[0]]
        return [dout * s]


class PReLU(Layer):
    """Parametric ReLU (He et al. 2015, arXiv:1502.01852): x where x > 0, else
    slope * x, with ``slope`` of ``shape`` broadcast against one sample ((C, 1, 1): one
    per channel, as ``torch.nn.PReLU(C)``; (1,): one for all). Gradients as
    PyTorch's: dout where x > 0, else slope * dout; the slope's, the sum of
    dout * x where x <= 0.

    Shapes: (N, ...) -> the same shape.
    """
    type = "PReLU"

    def __init__(self, shape=(1,)):
        self.shape = _shape(shape, f"{self.type}: shape")

    def config(self):
        return dict(shape=list(self.shape))

    def describe(self):
        return f"PReLU {'x'.join(map(str, self.shape))}"

    @property
    def param_shapes(self):
        return {"slope": self.shape}

    def init_params(self, rng, dtype):
        return {"slope": np.full(self.shape, 0.25, dtype)}   # PyTorch's initial slope

    def output_shape(self, input_shapes):
        return _broadcast_shape(self.shape, input_shapes[0], "slope")

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        a = params["slope"].astype(x.dtype, copy=False)
        pos = x > 0
        return np.where(pos, x, a * x), (x, a, pos)

    def backward(self, dout, cache):
        x, _, pos = cache
        dout = np.asarray(dout, dtype=x.dtype)
        return self.backward_inputs(dout, cache), {"slope": _reduce_to(np.where(pos, 0, dout * x), self.shape)}

    def backward_inputs(self, dout, cache):
        x, a, pos = cache
        dout = np.asarray(dout, dtype=x.dtype)
        return [np.where(pos, dout, a * dout)]


class Compare(Layer):
    """A 0/1 mask in the input's dtype: ``a > b`` (``'greater'``), ``'less'``,
    ``'greater_equal'``, ``'less_equal'`` or ``'equal'``, of two activation tensors
    (broadcasting) or of one and a constant ``value`` of ``shape`` (broadcast against
    one sample). A mask has no gradient: its inputs get zeros (as PyTorch's
    comparisons). A NaN compares false.

    Shapes: (N, ...) -> the broadcast shape.
    """
    type = "Compare"
    OPS = {"greater": np.greater, "less": np.less, "greater_equal": np.greater_equal,
           "less_equal": np.less_equal, "equal": np.equal}

    def __init__(self, op, shape=None):
        if op not in self.OPS:
            raise ValueError(f"Compare: op must be one of {tuple(self.OPS)}, got {op!r}")
        self.op = op
        self.shape = None if shape is None else _shape(shape, f"{self.type}: shape")
        self.num_inputs = 2 if self.shape is None else 1

    def config(self):
        return dict(op=self.op, shape=None if self.shape is None else list(self.shape))

    def describe(self):
        return f"Compare {self.op}" + ("" if self.shape is None else " a constant")

    @property
    def param_shapes(self):
        return {} if self.shape is None else {"value": self.shape}

    def output_shape(self, input_shapes):
        if self.shape is None:
            return _broadcast_inputs(input_shapes)
        return _broadcast_shape(self.shape, input_shapes[0], "value")

    def forward(self, inputs, params, buffers, mode, rng):
        a = inputs[0]
        b = inputs[1] if self.shape is None else params["value"]
        self.output_shape([t.shape[1:] for t in inputs])
        return self.OPS[self.op](a, b.astype(a.dtype, copy=False)).astype(a.dtype), [t.shape for t in inputs]

    def backward(self, dout, cache):
        dt = np.asarray(dout).dtype
        return [np.zeros(s, dt) for s in cache], {k: np.zeros(v, dt) for k, v in self.param_shapes.items()}


class Select(Layer):
    """``where(cond != 0, a, b)`` (ONNX Where, ``torch.where``), broadcasting. The
    condition is an activation tensor (a :class:`Compare` mask) or, with
    ``cond_shape``, a constant 0/1 mask (buffer ``cond``, broadcast against one
    sample); either branch may be a constant (``a_shape`` / ``b_shape``:
    parameters ``a`` / ``b``). Inputs: those of the condition, a and b that are
    not constants, in that order. Gradients: dout where the branch was taken,
    else 0; none to the condition.

    Shapes: (N, ...) -> the broadcast shape.
    """
    type = "Select"

    def __init__(self, a_shape=None, b_shape=None, cond_shape=None):
        self.a_shape = None if a_shape is None else _shape(a_shape, f"{self.type}: a_shape")
        self.b_shape = None if b_shape is None else _shape(b_shape, f"{self.type}: b_shape")
        self.cond_shape = None if cond_shape is None else _shape(cond_shape, f"{self.type}: cond_shape")
        self.num_inputs = sum(c is None for c in (self.cond_shape, self.a_shape, self.b_shape))
        if not self.num_inputs:
            raise ValueError(f"{self.type}: the condition and both branches are constants: no input to select from")

    def config(self):
        c = dict(a_shape=None if self.a_shape is None else list(self.a_shape),
                 b_shape=None if self.b_shape is None else list(self.b_shape))
        if self.cond_shape is not None:
            c["cond_shape"] = list(self.cond_shape)
        return c

    @property
    def param_shapes(self):
        p = {}
        if self.a_shape is not None:
            p["a"] = self.a_shape
        if self.b_shape is not None:
            p["b"] = self.b_shape
        return p

    @property
    def buffer_shapes(self):
        return {} if self.cond_shape is None else {"cond": self.cond_shape}

    def output_shape(self, input_shapes):
        rank = len(input_shapes[0])
        it = iter(input_shapes)
        shapes = [tuple(next(it)) if const is None else (1,) * (rank - len(const)) + tuple(const)
                  for const in (self.cond_shape, self.a_shape, self.b_shape)]
        if any(len(t) != rank for t in shapes):
            raise ValueError(f"condition and branches {shapes} must have the same number of axes (constants: at "
                             "most as many)")
        return _broadcast_inputs(shapes)

    def _operands(self, inputs, params, buffers):
        rest = iter(inputs)
        cond = next(rest) if self.cond_shape is None else buffers["cond"]
        dtype = inputs[0].dtype
        a = next(rest) if self.a_shape is None else params["a"].astype(dtype, copy=False)
        b = next(rest) if self.b_shape is None else params["b"].astype(dtype, copy=False)
        return cond, a, b

    def forward(self, inputs, params, buffers, mode, rng):
        self.output_shape([t.shape[1:] for t in inputs])
        cond, a, b = self._operands(inputs, params, buffers)
        take = cond != 0
        out = np.where(take, a, b.astype(np.result_type(a, b), copy=False))
        return np.ascontiguousarray(out), (take, [t.shape for t in inputs])

    def backward(self, dout, cache):
        take, shapes = cache
        dout = np.asarray(dout)
        zero = dout.dtype.type(0)
        ga, gb = np.where(take, dout, zero), np.where(take, zero, dout)
        rest = iter(shapes)
        dins = [] if self.cond_shape is not None else [np.zeros(next(rest), dout.dtype)]
        dparams = {}
        for name, const, g in (("a", self.a_shape, ga), ("b", self.b_shape, gb)):
            if const is None:
                dins.append(_sum_to(g, next(rest)))
            else:
                dparams[name] = _reduce_to(g, const)
        return dins, dparams
