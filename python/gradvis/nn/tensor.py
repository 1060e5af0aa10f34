"""Layers that move values without arithmetic (or, for Resize, interpolate them):
transposition, reshaping, slicing and resizing of (N, ...) activations, each with its
gradient. The batch axis 0 is never moved or merged."""
from __future__ import annotations

import math

import numpy as np

from .module import Layer

__all__ = ["Transpose", "Reshape", "Slice", "Resize"]


def _ints(v, what, lo=None):
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{what} must be a sequence of ints, got {v!r}")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or (lo is not None and x < lo):
            raise ValueError(f"{what} must be ints{'' if lo is None else f' >= {lo}'}, got {v!r}")
        out.append(int(x))
    return tuple(out)


def _fmt(s):
    return f"(N, {', '.join(map(str, s))})"


class Transpose(Layer):
    """Permute the axes of each sample: ``perm`` of the full (N, ...) tensor with
    ``perm[0] == 0`` (ONNX Transpose; the batch stays first). ConvNeXt's
    (N, C, H, W) -> (N, H, W, C) is ``Transpose((0, 2, 3, 1))``; ShuffleNet's channel
    shuffle transposes (N, g, C/g, H, W) with ``(0, 2, 1, 3, 4)``."""
    type = "Transpose"

    def __init__(self, perm):
        self.perm = _ints(perm, "Transpose: perm", lo=0)
        if sorted(self.perm) != list(range(len(self.perm))) or not self.perm or self.perm[0] != 0:
            raise ValueError(f"Transpose: perm must be a permutation of 0..k that keeps the batch "
                             f"axis 0 first, got {list(perm)}")
        self.inverse = tuple(int(i) for i in np.argsort(self.perm))

    def config(self):
        return dict(perm=list(self.perm))

    def describe(self):
        return f"Transpose {list(self.perm)}"

    def output_shape(self, input_shapes):
        s = (None,) + tuple(input_shapes[0])
        if len(s) != len(self.perm):
            raise ValueError(f"perm {list(self.perm)} is for {len(self.perm)}-D inputs, got {_fmt(s[1:])}")
        return tuple(s[p] for p in self.perm[1:])

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return np.ascontiguousarray(x.transpose(self.perm)), None

    def backward(self, dout, cache):
        return [np.ascontiguousarray(np.asarray(dout).transpose(self.inverse))], {}


class Reshape(Layer):
    """(N, ...) -> (N, *shape): each sample reshaped in C order (ONNX Reshape, the
    batch axis kept). ``shape`` is fully resolved (no 0 or -1)."""
    type = "Reshape"

    def __init__(self, shape):
        self.shape = _ints(shape, "Reshape: shape", lo=1)

    def config(self):
        return dict(shape=list(self.shape))

    def describe(self):
        return f"Reshape to {_fmt(self.shape)}"

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if math.prod(s) != math.prod(self.shape):
            raise ValueError(f"cannot reshape {_fmt(s)} ({math.prod(s)} values a sample) to "
                             f"{_fmt(self.shape)} ({math.prod(self.shape)})")
        return self.shape

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return x.reshape((x.shape[0],) + self.shape), x.shape

    def backward(self, dout, cache):
        return [np.asarray(dout).reshape(cache)], {}


class Slice(Layer):
    """``x[:, ..., start:stop:step, ...]`` on one or more axes (>= 1) of each sample:
    ONNX Slice, and each output of Split (GhostNet keeps the first channels, ShuffleNet
    splits the channels in two). ``stop`` None runs to the end for a positive step and
    past index 0 for a negative one, as in Python."""
    type = "Slice"

    def __init__(self, axes, starts, stops, steps=None):
        self.axes = _ints(axes, "Slice: axes", lo=1)
        self.starts = _ints(starts, "Slice: starts")
        if isinstance(stops, (str, bytes)) or not hasattr(stops, "__iter__"):
            raise TypeError(f"Slice: stops must be a sequence, got {stops!r}")
        self.stops = tuple(None if v is None else _ints([v], "Slice: stops")[0] for v in stops)
        self.steps = (1,) * len(self.axes) if steps is None else _ints(steps, "Slice: steps")
        if not (len(self.axes) == len(self.starts) == len(self.stops) == len(self.steps)) or not self.axes:
            raise ValueError("Slice: axes, starts, stops and steps must have the same (non-zero) length")
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f"Slice: repeated axis in {list(self.axes)}")
        if 0 in self.steps:
            raise ValueError("Slice: a step cannot be 0")

    def config(self):
        return dict(axes=list(self.axes), starts=list(self.starts), stops=list(self.stops),
                    steps=list(self.steps))

    def describe(self):
        parts = [f"axis {a} {s}:{'' if e is None else e}:{st}"
                 for a, s, e, st in zip(self.axes, self.starts, self.stops, self.steps)]
        return "Slice " + ", ".join(parts)

    def _index(self, rank):
        idx = [slice(None)] * rank
        for a, s, e, st in zip(self.axes, self.starts, self.stops, self.steps):
            idx[a] = slice(s, e, st)
        return tuple(idx)

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if max(self.axes) > len(s):
            raise ValueError(f"slices axis {max(self.axes)} of an input {_fmt(s)}")
        out = np.empty((1,) + s, dtype=np.bool_)[self._index(len(s) + 1)].shape[1:]
        if 0 in out:
            raise ValueError(f"{self.describe()} of an input {_fmt(s)} is empty")
        return tuple(out)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return np.ascontiguousarray(x[self._index(x.ndim)]), x.shape

    def backward(self, dout, cache):
        dout = np.asarray(dout)
        dx = np.zeros(cache, dout.dtype)
        dx[self._index(len(cache))] = dout
        return [dx], {}


def _resize_matrix(n_in, n_out, mode, coord, nearest_mode="round_prefer_floor", cubic=None):
    """(n_out, n_in) float64 matrix M with out = M @ in along one axis (ONNX Resize's
    coordinate transforms; 'linear' clamps at the borders as ONNX and PyTorch do)."""
    scale = n_out / n_in
    o = np.arange(n_out, dtype=np.float64)
    if coord == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    elif coord == "align_corners":
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    elif coord == "asymmetric":
        src = o / scale
    else:
        raise ValueError(f"Resize: coordinate_transformation_mode {coord!r} is not supported "
                         "(half_pixel, pytorch_half_pixel, align_corners, asymmetric are)")
    m = np.zeros((n_out, n_in))
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            i = np.ceil(src - 0.5)
        elif nearest_mode == "round_prefer_ceil":
            i = np.floor(src + 0.5)
        elif nearest_mode == "floor":
            i = np.floor(src)
        elif nearest_mode == "ceil":
            i = np.ceil(src)
        else:
            raise ValueError(f"Resize: nearest_mode {nearest_mode!r} is not supported")
        m[np.arange(n_out), np.clip(i, 0, n_in - 1).astype(np.int64)] = 1.0
        return m
    if mode != "linear":
        raise ValueError(f"Resize: mode {mode!r} is not supported (nearest and linear are)")
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = src - lo
    np.add.at(m, (np.arange(n_out), lo), 1.0 - w)
    np.add.at(m, (np.arange(n_out), hi), w)
    return m


class Resize(Layer):
    """Resize H and W of (N, C, H, W) by nearest or (bi)linear interpolation (ONNX
    Resize / Upsample; ``torch.nn.Upsample``): out = M_h @ x @ M_w^T per channel, with
    the (out, in) interpolation matrices of ONNX's coordinate transforms.

    Args:
        size: (H_out, W_out).
        mode: 'nearest' or 'linear'.
        coordinate_transformation_mode: 'half_pixel' (PyTorch's align_corners=False
            for linear), 'pytorch_half_pixel', 'align_corners' or 'asymmetric'
            (PyTorch's nearest).
        nearest_mode: ONNX's rounding of the source index for 'nearest'.
    """
    type = "Resize"

    def __init__(self, size, mode="nearest", coordinate_transformation_mode="half_pixel",
                 nearest_mode="round_prefer_floor"):
        self.size = _ints(size, "Resize: size", lo=1)
        if len(self.size) != 2:
            raise ValueError(f"Resize: size must be (H, W), got {size!r}")
        self.mode = mode
        self.coord = coordinate_transformation_mode
        self.nearest_mode = nearest_mode
        _resize_matrix(2, 3, mode, self.coord, nearest_mode)   # checks the names
        self._mats = {}

    def config(self):
        return dict(size=list(self.size), mode=self.mode, coordinate_transformation_mode=self.coord,
                    nearest_mode=self.nearest_mode)

    def describe(self):
        return f"Resize {self.mode} to {self.size[0]}x{self.size[1]}"

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if len(s) != 3:
            raise ValueError(f"expects input (N, C, H, W), got {_fmt(s)}")
        return (s[0],) + self.size

    def _matrices(self, hw, dtype):
        key = (hw, np.dtype(dtype).str)
        if key not in self._mats:
            self._mats[key] = tuple(_resize_matrix(n, m, self.mode, self.coord, self.nearest_mode).astype(dtype)
                                    for n, m in zip(hw, self.size))
        return self._mats[key]

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        mh, mw = self._matrices(x.shape[2:], x.dtype)
        return np.ascontiguousarray(mh @ (x @ mw.T)), (mh, mw)

    def backward(self, dout, cache):
        mh, mw = cache
        return [np.ascontiguousarray(mh.T @ (np.asarray(dout) @ mw))], {}
