"""Evaluation of ONNX nodes whose inputs are all known at import time.

Exporters leave shape arithmetic in the graph: PyTorch's ``F.pad`` becomes
``Shape``, ``Gather``, ``ConstantOfShape``, ``Slice``, ``Concat``, ``Cast``...;
ShuffleNet's channel shuffle reads the batch and channel counts with ``Shape``;
TensorFlow-style "same" padding computes its pads with ``Ceil`` and ``Clip``; weight
standardization (NFNets) normalizes the weights with a training-mode
``BatchNormalization``; sinusoidal position embeddings (EdgeNeXt) come from ``Range``,
``CumSum``, ``Sin`` and ``Cos``, projected by a ``Conv``. The
importer knows every activation's shape (from the graph input's static shape, or
``input_shape``), so ``Shape`` of an activation is a constant, and so is everything
computed only from constants and shapes. :func:`evaluate` computes such a node with
numpy, following the ONNX operator definitions (https://onnx.ai/onnx/operators/).
"""
from __future__ import annotations

import numpy as np

__all__ = ["CONSTANT_OPS", "evaluate", "ConstantEvaluationError"]


class ConstantEvaluationError(ValueError):
    """A node's constant inputs are not valid for its operator."""


def _np_dtype(onnx_type):
    from onnx import helper
    return helper.tensor_dtype_to_np_dtype(int(onnx_type))


def _axes_input(vals, attr, i=1):
    """Axes given as input ``i`` (newer opsets) or attribute ``axes`` (older)."""
    if len(vals) > i and vals[i] is not None:
        return [int(a) for a in np.asarray(vals[i]).reshape(-1)]
    v = attr("axes")
    return None if v is None else [int(a) for a in v]


def _slice(vals, attr):
    x = vals[0]
    if len(vals) > 1:               # opset >= 10: starts, ends, axes, steps are inputs
        starts = np.asarray(vals[1]).reshape(-1).tolist()
        ends = np.asarray(vals[2]).reshape(-1).tolist()
        axes = np.asarray(vals[3]).reshape(-1).tolist() if len(vals) > 3 and vals[3] is not None \
            else list(range(len(starts)))
        steps = np.asarray(vals[4]).reshape(-1).tolist() if len(vals) > 4 and vals[4] is not None \
            else [1] * len(starts)
    else:
        starts, ends = list(attr("starts")), list(attr("ends"))
        axes = list(attr("axes") or range(len(starts)))
        steps = [1] * len(starts)
    return x[slice_index(x.shape, axes, starts, ends, steps)]


def slice_bounds(dim, start, end, step):
    """ONNX Slice's clamping of (start, end) on an axis of length ``dim`` -> a Python
    slice with the same elements (end None: through index 0 for a negative step)."""
    if step == 0:
        raise ConstantEvaluationError("Slice step cannot be 0")
    start, end = int(start), int(end)
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        return slice(start, end, int(step))
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, int(step))


def slice_index(shape, axes, starts, ends, steps):
    idx = [slice(None)] * len(shape)
    for ax, s, e, st in zip(axes, starts, ends, steps):
        ax = int(ax) + len(shape) if int(ax) < 0 else int(ax)
        idx[ax] = slice_bounds(shape[ax], s, e, st)
    return tuple(idx)


def _reshape(x, shape, allowzero):
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not allowzero:
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    out = x
    for ax in sorted(a % rank for a in axes):
        out = np.expand_dims(out, ax)
    return out


def _split(vals, attr, n_out):
    x = vals[0]
    axis = int(attr("axis", 0))
    split = None
    if len(vals) > 1 and vals[1] is not None:
        split = np.asarray(vals[1]).reshape(-1).tolist()
    elif attr("split") is not None:
        split = list(attr("split"))
    if split is None:
        k = attr("num_outputs", n_out)
        size = -(-x.shape[axis] // k)
        split = [min(size, x.shape[axis] - i * size) for i in range(k)]
    return tuple(np.split(x, np.cumsum(split)[:-1], axis=axis))


def _reduce(f):
    def run(vals, attr):
        axes = _axes_input(vals, attr)
        keep = bool(attr("keepdims", 1))
        if not axes:
            if attr("noop_with_empty_axes", 0):
                return vals[0]
            axes = None
        return f(vals[0], axis=None if axes is None else tuple(axes), keepdims=keep)
    return run


def _div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.trunc(a / b).astype(np.result_type(a, b))   # ONNX integer division truncates
    return a / b


def _binary(f):
    def run(vals, attr):
        a, b = vals[0], vals[1]
        return np.asarray(f(a, b)).astype(np.result_type(a, b), copy=False)
    return run


def _constant_of_shape(vals, attr):
    from onnx import numpy_helper
    v = attr("value")
    fill = np.zeros(1, np.float32) if v is None else numpy_helper.to_array(v).reshape(-1)
    shape = [int(d) for d in np.asarray(vals[0]).reshape(-1)]
    if any(d < 0 for d in shape):
        raise ConstantEvaluationError(f"ConstantOfShape with a negative dimension {shape}")
    if int(np.prod(shape, dtype=np.int64)) > 1 << 26:
        raise ConstantEvaluationError(f"ConstantOfShape of shape {shape} is larger than a shape "
                                      "computation needs (over 2**26 values)")
    return np.full(shape, fill[0], fill.dtype)


def _range(vals, attr):
    start, limit, delta = (np.asarray(v).reshape(()) for v in vals[:3])
    if delta == 0:
        raise ConstantEvaluationError("Range with delta 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    if n > 1 << 26:
        raise ConstantEvaluationError(f"Range of {n} values is larger than a shape computation needs")
    return (start + delta * np.arange(n)).astype(np.result_type(start, limit, delta))


def _expand(vals, attr):
    shape = [int(d) for d in np.asarray(vals[1]).reshape(-1)]
    out_shape = np.broadcast_shapes(vals[0].shape, tuple(shape))
    if int(np.prod(out_shape, dtype=np.int64)) > 1 << 26:
        raise ConstantEvaluationError(f"Expand to {out_shape} is larger than a shape computation needs")
    return np.array(np.broadcast_to(vals[0], out_shape))


def _gather(vals, attr):
    x, idx = vals[0], np.asarray(vals[1]).astype(np.int64)
    axis = int(attr("axis", 0))
    n = x.shape[axis]
    if ((idx < -n) | (idx >= n)).any():
        raise ConstantEvaluationError(f"Gather index out of range for an axis of length {n}")
    return np.take(x, np.where(idx < 0, idx + n, idx), axis=axis)


def _clip(vals, attr):
    x = vals[0]
    if len(vals) > 1:               # opset >= 11: min and max are optional inputs
        lo = vals[1] if vals[1] is not None else None
        hi = vals[2] if len(vals) > 2 and vals[2] is not None else None
    else:
        lo, hi = attr("min"), attr("max")
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo).astype(x.dtype))
    if hi is not None:             # min > max: every value becomes max, as ONNX defines it
        out = np.minimum(out, np.asarray(hi).astype(x.dtype))
    return np.asarray(out, x.dtype)


def _batch_norm(vals, attr, n_out):
    """BatchNormalization; in training mode with the batch's own statistics (the
    exporters' weight standardization: F.batch_norm over a weight), then the running
    statistics ONNX defines as further outputs. Computed in float64 (a weight's
    variance can be small beside its mean), returned in the input's dtype."""
    dtype = vals[0].dtype
    x, scale, bias, mean, var = (np.asarray(v, np.float64) for v in vals[:5])
    eps, momentum = float(attr("epsilon", 1e-5)), float(attr("momentum", 0.9))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if attr("training_mode", 0):
        axes = (0,) + tuple(range(2, x.ndim))
        cur_mean, cur_var = x.mean(axis=axes), x.var(axis=axes)
    else:
        cur_mean, cur_var = mean, var
    y = (x - cur_mean.reshape(shape)) / np.sqrt(cur_var.reshape(shape) + eps) * scale.reshape(shape) \
        + bias.reshape(shape)
    outs = [np.asarray(y, dtype)]
    if n_out > 1:
        outs += [np.asarray(mean * momentum + cur_mean * (1 - momentum), dtype),
                 np.asarray(var * momentum + cur_var * (1 - momentum), dtype)]
    return tuple(outs[:n_out])


def _cumsum(vals, attr):
    """CumSum along the axis input, with ONNX's ``exclusive`` and ``reverse``."""
    x, axis = vals[0], int(np.asarray(vals[1]).reshape(-1)[0])
    if not -x.ndim <= axis < x.ndim:
        raise ConstantEvaluationError(f"CumSum axis {axis} out of range for a {x.ndim}-D tensor")
    y = np.flip(x, axis) if attr("reverse", 0) else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if attr("exclusive", 0):
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)),
                              np.take(out, range(out.shape[axis] - 1), axis=axis)], axis=axis)
    return np.flip(out, axis) if attr("reverse", 0) else out


def _conv(vals, attr):
    """A 2-D Conv of constants (a projection of position embeddings), in float64
    with gradvis's own kernel, returned in the input's dtype."""
    from ...nn.functional import conv_forward
    x, w = vals[0], vals[1]
    b = vals[2] if len(vals) > 2 else None
    if x.ndim != 4 or w.ndim != 4:
        raise ConstantEvaluationError(f"only 2-D convolutions of constants are evaluated (input {x.shape})")
    if attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        raise ConstantEvaluationError(f"auto_pad {attr('auto_pad')!r} on constants")
    p = list(attr("pads", [0, 0, 0, 0])) if attr("auto_pad", "NOTSET") != "VALID" else [0, 0, 0, 0]
    param = {"stride": tuple(attr("strides", [1, 1])), "pad": (p[0], p[2], p[1], p[3]),
             "dilation": tuple(attr("dilations", [1, 1])), "groups": int(attr("group", 1))}
    out, _ = conv_forward(x.astype(np.float64), w.astype(np.float64),
                          None if b is None else b.astype(np.float64), param)
    return out.astype(x.dtype)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)


_OPS = {
    "Identity": lambda v, a: v[0],
    "Cast": lambda v, a: v[0].astype(_np_dtype(a("to"))),
    "CastLike": lambda v, a: v[0].astype(v[1].dtype),
    "Shape": lambda v, a: np.array(v[0].shape, np.int64)[a("start", 0):a("end", None)],
    "Size": lambda v, a: np.array(v[0].size, np.int64),
    "Gather": _gather,
    "Unsqueeze": lambda v, a: _unsqueeze(v[0], _axes_input(v, a)),
    "Squeeze": lambda v, a: np.squeeze(v[0], axis=None if _axes_input(v, a) is None
                                       else tuple(_axes_input(v, a))),
    "Concat": lambda v, a: np.concatenate([np.atleast_1d(x) for x in v], axis=int(a("axis"))),
    "Slice": _slice,
    "Reshape": lambda v, a: _reshape(v[0], v[1], a("allowzero", 0)),
    "Flatten": lambda v, a: v[0].reshape(int(np.prod(v[0].shape[:a("axis", 1)], dtype=np.int64)), -1),
    "Transpose": lambda v, a: np.transpose(v[0], a("perm")),
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Expand": _expand,
    "Tile": lambda v, a: np.tile(v[0], [int(r) for r in np.asarray(v[1]).reshape(-1)]),
    "Where": lambda v, a: np.where(v[0].astype(bool), v[1], v[2]),
    "Equal": lambda v, a: np.equal(v[0], v[1]),
    "Less": lambda v, a: np.less(v[0], v[1]),
    "LessOrEqual": lambda v, a: np.less_equal(v[0], v[1]),
    "Greater": lambda v, a: np.greater(v[0], v[1]),
    "GreaterOrEqual": lambda v, a: np.greater_equal(v[0], v[1]),
    "Not": lambda v, a: np.logical_not(v[0]),
    "And": lambda v, a: np.logical_and(v[0], v[1]),
    "Or": lambda v, a: np.logical_or(v[0], v[1]),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Mod": lambda v, a: (np.fmod if a("fmod", 0) else np.mod)(v[0], v[1]),
    "Pow": lambda v, a: np.power(v[0], v[1]).astype(v[0].dtype, copy=False),
    "Max": lambda v, a: np.maximum.reduce([np.asarray(x) for x in v]),
    "Min": lambda v, a: np.minimum.reduce([np.asarray(x) for x in v]),
    "Neg": lambda v, a: np.negative(v[0]),
    "Abs": lambda v, a: np.abs(v[0]),
    "Sqrt": lambda v, a: np.sqrt(v[0]),
    "Exp": lambda v, a: np.exp(v[0]),
    "Reciprocal": lambda v, a: np.reciprocal(v[0]),
    "Floor": lambda v, a: np.floor(v[0]),
    "Round": lambda v, a: np.round(v[0]),      # half to even, as ONNX
    "Sin": lambda v, a: np.sin(v[0]),           # sinusoidal position embeddings
    "Cos": lambda v, a: np.cos(v[0]),
    "Tan": lambda v, a: np.tan(v[0]),
    "Atan": lambda v, a: np.arctan(v[0]),
    "Ceil": lambda v, a: np.ceil(v[0]),
    "Sign": lambda v, a: np.sign(v[0]),
    "Relu": lambda v, a: np.maximum(v[0], 0).astype(v[0].dtype),
    "Clip": _clip,
    "Log": lambda v, a: np.log(v[0]),
    "Sigmoid": lambda v, a: _sigmoid(v[0]),
    "Tanh": lambda v, a: np.tanh(v[0]),
    "BatchNormalization": None,   # up to three outputs: handled in evaluate
    "ReduceProd": _reduce(np.prod),
    "ReduceSum": _reduce(np.sum),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "ReduceMean": _reduce(np.mean),
    "ReduceL1": _reduce(lambda x, **kw: np.sum(np.abs(x), **kw)),
    "ReduceL2": _reduce(lambda x, **kw: np.sqrt(np.sum(np.square(x), **kw)).astype(x.dtype)),
    "ReduceSumSquare": _reduce(lambda x, **kw: np.sum(np.square(x), **kw)),
    "CumSum": _cumsum,
    "Conv": _conv,
    "Split": None,   # several outputs: handled in evaluate
    "Dropout": lambda v, a: v[0],
}

#: Operators evaluated when all their inputs are constants.
CONSTANT_OPS = tuple(sorted(_OPS))


def evaluate(op, vals, attr, n_outputs=1):
    """The outputs (a tuple of numpy arrays) of ONNX operator ``op`` on constant
    inputs ``vals`` (None for an omitted optional input), or None when ``op`` is not
    in :data:`CONSTANT_OPS`. ``attr(name, default)`` reads the node's attributes.
    Raises :class:`ConstantEvaluationError` (or numpy's errors) on invalid inputs."""
    if op not in _OPS:
        return None
    vals = [None if v is None else np.asarray(v) for v in vals]
    if op == "Split":
        return _split(vals, attr, n_outputs)
    if op == "BatchNormalization":
        return _batch_norm(vals, attr, n_outputs)
    out = _OPS[op](vals, attr)
    return (np.asarray(out),)
