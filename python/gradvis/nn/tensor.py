"""Layers that move values without arithmetic (or, for Resize, interpolate them):
transposition, reshaping, slicing, tiling, gathering and resizing of (N, ...)
activations, each with its gradient. The batch axis 0 is never moved or merged."""
from __future__ import annotations

import math

import numpy as np

from .module import Layer

__all__ = ["Transpose", "Reshape", "Slice", "Tile", "GatherND", "Resize"]


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

class Tile(Layer):
    """Each sample repeated ``repeats[i]`` times along its axis i + 1 (ONNX Tile,
    ``x.repeat``; ONNX Expand of size-1 axes, ``y.expand_as(x)``). The gradient sums
    the copies.

    Shapes: (N, d1, ..., dk) -> (N, r1 d1, ..., rk dk).
    """
    type = "Tile"

    def __init__(self, repeats):
        self.repeats = _ints(repeats, "Tile: repeats", lo=1)

    def config(self):
        return dict(repeats=list(self.repeats))

    def describe(self):
        return f"Tile {'x'.join(map(str, self.repeats))}"

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if len(s) != len(self.repeats):
            raise ValueError(f"repeats {self.repeats} for an input {_fmt(s)}: one per axis after the batch")
        return tuple(d * r for d, r in zip(s, self.repeats))

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        return np.tile(x, (1,) + self.repeats), x.shape

    def backward(self, dout, cache):
        split = [cache[0]]
        for r, d in zip(self.repeats, cache[1:]):
            split += [r, d]
        g = np.asarray(dout).reshape(split)
        return [g.sum(axis=tuple(range(1, len(split), 2)))], {}

class GatherND(Layer):
    """Entries of ``axes`` of each sample picked by index tuples: with ``indices`` of
    shape (*I, r) for r = len(axes),

        out[n, i..., rest...] = x[n, ..., indices[i..., 0] at axes[0], ..., indices[i..., r-1] at axes[r-1], ...]

    the remaining axes kept in their order after the index axes. ONNX GatherND on the
    front axes of a transposed tensor, as the torch.export-based exporter writes
    ``AdaptiveAvgPool2d`` (the windows' pixels gathered, then averaged). The gradient
    adds each output back to the entry it came from (an entry picked twice gets both).

    Shapes: (N, d1, ..., dk) -> (N, *I, the d's of the axes not in ``axes``).
    """
    type = "GatherND"

    def __init__(self, axes, indices):
        self.axes = _ints(axes, "GatherND: axes", lo=1)
        if not self.axes or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"GatherND: axes must be distinct axes >= 1, got {axes!r}")
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu" or idx.ndim < 1 or idx.shape[-1] != len(self.axes) or idx.size == 0:
            raise ValueError(f"GatherND: indices must be a non-empty integer array of shape (..., "
                             f"{len(self.axes)}), got {idx.dtype} {idx.shape}")
        if idx.min() < 0:
            raise ValueError("GatherND: indices must be >= 0 (negative ones resolved)")
        self.indices = idx.astype(np.int64)
        self._flat = {}

    def config(self):
        return dict(axes=list(self.axes), indices=self.indices.tolist())

    def describe(self):
        return f"GatherND axes {list(self.axes)} by {'x'.join(map(str, self.indices.shape[:-1]))} index tuples"

    def output_shape(self, input_shapes):
        s = tuple(input_shapes[0])
        if max(self.axes) > len(s):
            raise ValueError(f"gathers axis {max(self.axes)} of an input {_fmt(s)}")
        sizes = [s[a - 1] for a in self.axes]
        if any(int(self.indices[..., j].max()) >= n for j, n in enumerate(sizes)):
            raise ValueError(f"indices out of range for axes {list(self.axes)} of sizes {sizes}")
        rest = tuple(d for i, d in enumerate(s) if i + 1 not in self.axes)
        return self.indices.shape[:-1] + rest

    def _linear(self, sizes):
        sizes = tuple(sizes)
        if sizes not in self._flat:
            self._flat[sizes] = np.ravel_multi_index(tuple(np.moveaxis(self.indices, -1, 0)), sizes).reshape(-1)
        return self._flat[sizes]

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        out_shape = self.output_shape([x.shape[1:]])
        r = len(self.axes)
        xm = np.moveaxis(x, self.axes, range(1, r + 1))
        lin = self._linear(xm.shape[1:r + 1])
        xf = xm.reshape(x.shape[0], -1, int(np.prod(xm.shape[r + 1:], dtype=np.int64)))
        return np.ascontiguousarray(xf[:, lin, :]).reshape((x.shape[0],) + out_shape), (x.shape, xm.shape)

    def backward(self, dout, cache):
        shape, mshape = cache
        r = len(self.axes)
        dout = np.asarray(dout)
        lin = self._linear(mshape[1:r + 1])
        rest = int(np.prod(mshape[r + 1:], dtype=np.int64))
        d = np.zeros((shape[0], int(np.prod(mshape[1:r + 1], dtype=np.int64)), rest), dout.dtype)
        np.add.at(d, (slice(None), lin), dout.reshape(shape[0], lin.size, rest))
        return [np.ascontiguousarray(np.moveaxis(d.reshape(mshape), range(1, r + 1), self.axes))], {}


def _cubic_weights(t, a):
    """(4, n) weights of the taps at floor(x) - 1 .. floor(x) + 2 for fractions t = x -
    floor(x): Keys' cubic convolution with parameter a (ONNX's cubic_coeff_a; PyTorch's
    bicubic uses -0.75)."""
    def near(d):       # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):        # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)])


def _resize_matrix(n_in, n_out, mode, coord, nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75,
                   exclude_outside=False, scale=None):
    """(n_out, n_in) float64 matrix M with out = M @ in along one axis (ONNX Resize's
    coordinate transforms; 'linear' clamps the source coordinate at the borders as
    ONNX and PyTorch do; 'cubic' reads the border pixel for taps outside the image, or
    with ``exclude_outside`` drops them and renormalizes the rest). ``scale`` is the
    factor of the coordinate transforms, n_out / n_in unless given (ONNX's ``scales``
    input, PyTorch's ``scale_factor``: 1.5 maps 7 pixels to 10, at 1 / 1.5 apart)."""
    given = scale
    scale = n_out / n_in if scale is None else scale
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
        if coord == "asymmetric" and nearest_mode == "floor":
            # PyTorch's 'nearest' (how it exports F.interpolate's default): index o when
            # n_out == n_in, o // 2 when n_out == 2 n_in, else floor(o * s) with s =
            # n_in / n_out (or 1 / scale_factor) and the product in float32. In float64,
            # o / (n_out / n_in) put 14 -> 18's row 9 at 6.999... (row 6, where PyTorch
            # and onnxruntime read row 7).
            if n_out == n_in:
                src = o
            elif n_out == 2 * n_in:
                src = np.floor(o / 2)
            else:
                inv = np.float32(np.float32(n_in) / np.float32(n_out)) if given is None else np.float32(1.0 / given)
                src = np.floor(o.astype(np.float32) * inv).astype(np.float64)
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
    if mode == "cubic":
        base = np.floor(src)
        w = _cubic_weights(src - base, cubic_coeff_a)
        taps = base.astype(np.int64)[None, :] + np.arange(-1, 3)[:, None]
        if exclude_outside:
            w = np.where((taps >= 0) & (taps < n_in), w, 0.0)
            w = w / w.sum(axis=0, keepdims=True)
        rows = np.broadcast_to(np.arange(n_out), taps.shape)
        np.add.at(m, (rows, np.clip(taps, 0, n_in - 1)), w)
        return m
    if mode != "linear":
        raise ValueError(f"Resize: mode {mode!r} is not supported (nearest, linear and cubic are)")
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = src - lo
    np.add.at(m, (np.arange(n_out), lo), 1.0 - w)
    np.add.at(m, (np.arange(n_out), hi), w)
    return m


class Resize(Layer):
    """Resize H and W of (N, C, H, W) by nearest, (bi)linear or (bi)cubic interpolation
    (ONNX Resize / Upsample; ``torch.nn.Upsample``, ``F.interpolate``): out = M_h @ x @
    M_w^T per channel, with the (out, in) interpolation matrices of ONNX's coordinate
    transforms; cubic is Keys' cubic convolution (Keys 1981, "Cubic convolution
    interpolation for digital image processing", IEEE TASSP 29(6)).

    Args:
        size: (H_out, W_out).
        mode: 'nearest', 'linear' or 'cubic'.
        coordinate_transformation_mode: 'half_pixel' (PyTorch's align_corners=False
            for linear and cubic), 'pytorch_half_pixel', 'align_corners' or
            'asymmetric' (PyTorch's nearest).
        nearest_mode: ONNX's rounding of the source index for 'nearest'.
        cubic_coeff_a: the cubic kernel's a (-0.75 in PyTorch and ONNX's default, -0.5
            in TensorFlow).
        exclude_outside: cubic taps outside the image get weight 0 and the others are
            renormalized (ONNX's exclude_outside=1); otherwise they read the border.
        scales: (scale_h, scale_w) of the coordinate transforms when they are not
            size / input size: ONNX Resize by ``scales`` and PyTorch's
            ``scale_factor`` (H_out = floor(H * scale_h) for the input it was made for).
    """
    type = "Resize"

    def __init__(self, size, mode="nearest", coordinate_transformation_mode="half_pixel",
                 nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=False, scales=None):
        self.size = _ints(size, "Resize: size", lo=1)
        if len(self.size) != 2:
            raise ValueError(f"Resize: size must be (H, W), got {size!r}")
        self.mode = mode
        self.coord = coordinate_transformation_mode
        self.nearest_mode = nearest_mode
        if isinstance(cubic_coeff_a, (str, bytes, bool)) or not isinstance(cubic_coeff_a, (int, float, np.number)) \
                or not math.isfinite(float(cubic_coeff_a)):
            raise ValueError(f"Resize: cubic_coeff_a must be a finite number, got {cubic_coeff_a!r}")
        self.cubic_coeff_a = float(cubic_coeff_a)
        self.exclude_outside = bool(exclude_outside)
        if scales is not None:
            if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__") or len(scales) != 2 or not all(
                    isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(float(v))
                    and float(v) > 0 for v in scales):
                raise ValueError(f"Resize: scales must be two positive numbers (scale_h, scale_w), got {scales!r}")
            scales = tuple(float(v) for v in scales)
        self.scales = scales
        _resize_matrix(2, 3, mode, self.coord, nearest_mode, self.cubic_coeff_a)   # checks the names
        self._mats = {}

    def config(self):
        cfg = dict(size=list(self.size), mode=self.mode, coordinate_transformation_mode=self.coord,
                   nearest_mode=self.nearest_mode)
        if self.mode == "cubic":
            cfg.update(cubic_coeff_a=self.cubic_coeff_a, exclude_outside=self.exclude_outside)
        if self.scales is not None:
            cfg["scales"] = list(self.scales)
        return cfg

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
            scales = self.scales or (None, None)
            self._mats[key] = tuple(_resize_matrix(n, m, self.mode, self.coord, self.nearest_mode,
                                                   self.cubic_coeff_a, self.exclude_outside, sc).astype(dtype)
                                    for n, m, sc in zip(hw, self.size, scales))
        return self._mats[key]

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        mh, mw = self._matrices(x.shape[2:], x.dtype)
        return np.ascontiguousarray(mh @ (x @ mw.T)), (mh, mw)

    def backward(self, dout, cache):
        mh, mw = cache
        return [np.ascontiguousarray(mh.T @ (np.asarray(dout) @ mw))], {}
