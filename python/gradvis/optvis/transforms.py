"""Random transformations for transformation robustness (Olah et al., "Feature
Visualization", Distill 2017; Lucid's ``lucid.optvis.transform``).

Every step of :func:`gradvis.optvis.render` shows the network a randomly padded,
jittered, scaled and rotated copy of the image, so that only patterns that
survive small changes are reinforced. Each transform is a linear (pad: affine)
resampling of (N, C, H, W) images: ``apply(x, rng) -> (y, back)`` returns the
transformed images and ``back(dy) -> dx``, the exact adjoint of the map that was
applied (bilinear weights scattered back, crops padded back with zeros), so the
gradient reaching the image is exact. The resize and rotation and their
adjoints run in C++ (``_core.resize_bilinear_forward`` / ``_adjoint``,
``_core.rotate_bilinear_forward`` / ``_adjoint``), parallel over planes and rows.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks, _core

__all__ = ["Transform", "pad", "jitter", "random_scale", "random_rotate", "resize", "compose",
           "standard_transforms", "LUCID_SCALES", "LUCID_ANGLES"]

# Lucid's standard_transforms, designed for 224-pixel images.
LUCID_SIZE = 224
LUCID_PAD, LUCID_JITTER, LUCID_JITTER_2 = 12, 8, 4
LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
LUCID_ANGLES = tuple(range(-10, 11)) + 5 * (0,)


class Transform:
    """Base of the transforms: ``apply(x, rng) -> (y, back)`` on (N, C, H, W) float32
    arrays, and ``size_range(h, w) -> ((h_min, w_min), (h_max, w_max))``, the
    smallest and largest output sizes for an input of h x w."""
    name = "transform"

    def apply(self, x, rng):
        raise NotImplementedError

    def size_range(self, h, w):
        return (h, w), (h, w)

    def __repr__(self):
        return self.name


def _check_images(x, what):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{what}: x must be a 4-D (N, C, H, W) array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")


class _Pad(Transform):
    def __init__(self, width, value):
        self.width = _checks.integer(width, "pad: width", 0)
        self.value = _checks.finite_float(value, "pad: value")
        self.name = f"pad({self.width}, value={self.value:g})"

    def apply(self, x, rng):
        _check_images(x, "pad")
        p = self.width
        if p == 0:
            return x, lambda dy: dy
        n, c, h, w = x.shape
        y = np.full((n, c, h + 2 * p, w + 2 * p), self.value, dtype=x.dtype)
        y[:, :, p:p + h, p:p + w] = x
        return y, lambda dy: dy[:, :, p:p + h, p:p + w]

    def size_range(self, h, w):
        s = (h + 2 * self.width, w + 2 * self.width)
        return s, s


class _Jitter(Transform):
    """Lucid's jitter: a random crop d pixels smaller, offsets uniform in [0, d]."""

    def __init__(self, d):
        self.d = _checks.integer(d, "jitter: d", 0)
        self.name = f"jitter({self.d})"

    def apply(self, x, rng):
        _check_images(x, "jitter")
        d = self.d
        n, c, h, w = x.shape
        if d == 0:
            return x, lambda dy: dy
        if d >= h or d >= w:
            raise ValueError(f"jitter: d={d} leaves nothing of a {h}x{w} image")
        oy, ox = (int(v) for v in rng.integers(0, d + 1, size=2))
        y = x[:, :, oy:oy + h - d, ox:ox + w - d]

        def back(dy):
            dx = np.zeros((n, c, h, w), dtype=dy.dtype)
            dx[:, :, oy:oy + h - d, ox:ox + w - d] = dy
            return dx
        return np.ascontiguousarray(y), back

    def size_range(self, h, w):
        s = (h - self.d, w - self.d)
        return s, s


def _resample(x, size):
    """Bilinear resize of (N, C, H, W) to size (h, w) (half-pixel centres, sources
    clamped to the image), and its adjoint; C++ (``_core.resize_bilinear_*``)."""
    in_shape = x.shape
    y = _core.resize_bilinear_forward(x, tuple(size))
    return y, lambda dy: _core.resize_bilinear_adjoint(dy, in_shape)


class _RandomScale(Transform):
    def __init__(self, scales):
        self.scales = _choices(scales, "random_scale: scales", positive=True)
        self.name = f"random_scale({len(self.scales)} scales {min(self.scales):g}..{max(self.scales):g})"

    def _size(self, s, h, w):
        return max(1, int(round(s * h))), max(1, int(round(s * w)))

    def apply(self, x, rng):
        _check_images(x, "random_scale")
        s = self.scales[int(rng.integers(len(self.scales)))]
        size = self._size(s, *x.shape[2:])
        if size == x.shape[2:]:
            return x, lambda dy: dy
        return _resample(x, size)

    def size_range(self, h, w):
        return self._size(min(self.scales), h, w), self._size(max(self.scales), h, w)


class _Resize(Transform):
    def __init__(self, size):
        self.size = _checks.size_pair(size, "resize: size")
        self.name = f"resize({self.size[0]}x{self.size[1]})"

    def apply(self, x, rng):
        _check_images(x, "resize")
        if tuple(x.shape[2:]) == self.size:
            return x, lambda dy: dy
        return _resample(x, self.size)

    def size_range(self, h, w):
        return self.size, self.size


def _rotate(x, degrees):
    """Bilinear rotation of (N, C, H, W) about the centre, zeros outside, and its
    adjoint; C++ (``_core.rotate_bilinear_*``)."""
    y = _core.rotate_bilinear_forward(x, degrees)
    return y, lambda dy: _core.rotate_bilinear_adjoint(dy, degrees)


class _RandomRotate(Transform):
    def __init__(self, angles, units="degrees"):
        if units not in ("degrees", "radians"):
            raise ValueError(f"random_rotate: units must be 'degrees' or 'radians', got {units!r}")
        angles = _choices(angles, "random_rotate: angles")
        self.angles = tuple(a if units == "degrees" else math.degrees(a) for a in angles)
        self.name = f"random_rotate({len(self.angles)} angles {min(self.angles):g}..{max(self.angles):g} deg)"

    def apply(self, x, rng):
        _check_images(x, "random_rotate")
        a = self.angles[int(rng.integers(len(self.angles)))]
        if a == 0:
            return x, lambda dy: dy
        return _rotate(x, a)


class _Compose(Transform):
    def __init__(self, transforms):
        self.transforms = tuple(transforms)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"compose: every item must be a gradvis.optvis.transforms.Transform, "
                                f"got {type(t).__name__}")
        self.name = "compose(" + ", ".join(map(repr, self.transforms)) + ")"

    def apply(self, x, rng):
        backs = []
        for t in self.transforms:
            x, b = t.apply(x, rng)
            backs.append(b)

        def back(dy):
            for b in reversed(backs):
                dy = b(dy)
            return dy
        return x, back

    def size_range(self, h, w):
        lo, hi = (h, w), (h, w)
        for t in self.transforms:
            lo = t.size_range(*lo)[0]
            hi = t.size_range(*hi)[1]
        return lo, hi


def _choices(values, name, positive=False):
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    try:
        vals = tuple(values)
    except TypeError:
        vals = (values,)
    if not vals:
        raise ValueError(f"{name} must not be empty")
    out = tuple(_checks.finite_float(v, name) for v in vals)
    if positive and min(out) <= 0:
        raise ValueError(f"{name} must be > 0, got {min(out)}")
    return out


def pad(width, value=0.5):
    """Pad by ``width`` pixels on every side with the constant ``value`` (images in
    [0, 1]: 0.5 is mid grey, Lucid's choice)."""
    return _Pad(width, value)


def jitter(d):
    """Crop a random (H - d) x (W - d) window, offsets uniform in [0, d] (Lucid's)."""
    return _Jitter(d)


def random_scale(scales):
    """Resize by a factor drawn from ``scales`` (bilinear, half-pixel centres; the
    size becomes round(s * H) x round(s * W))."""
    return _RandomScale(scales)


def random_rotate(angles, units="degrees"):
    """Rotate about the centre by an angle drawn from ``angles`` (bilinear, zeros
    where the rotated image has no source)."""
    return _RandomRotate(angles, units)


def resize(size):
    """Resize to a fixed (H, W) (bilinear): for a network that takes one input size."""
    return _Resize(size)


def compose(transforms):
    """Apply ``transforms`` in order (the result is itself a :class:`Transform`)."""
    return _Compose(transforms)


def standard_transforms(size=LUCID_SIZE):
    """Lucid's ``standard_transforms`` with the pixel amounts scaled to images of
    ``size`` pixels (Lucid's pad 12, jitter 8 and 4 are for 224): pad(p, 0.5),
    jitter(j), random_scale(0.9 .. 1.1), random_rotate(-10 .. 10 degrees, 0 five
    times more often), jitter(j2), with p, j, j2 = 12, 8, 4 times size/224,
    rounded, at least 1. Returns a :class:`Transform`."""
    size = _checks.integer(size, "size", 1)

    def px(v):
        return max(1, int(round(v * size / LUCID_SIZE)))
    return compose([pad(px(LUCID_PAD), 0.5), jitter(px(LUCID_JITTER)), random_scale(LUCID_SCALES),
                    random_rotate(LUCID_ANGLES), jitter(px(LUCID_JITTER_2))])
