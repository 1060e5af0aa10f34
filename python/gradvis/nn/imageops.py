"""Image-space operations on model inputs shared by the algorithms: jitter, resizing, blur.

All functions take and return float arrays of shape (N, C, H, W) in the
model's input space and never modify their arguments.
"""
from __future__ import annotations

import numpy as np

from .. import _checks
from .functional import cs231n_blur, gaussian_blur

__all__ = ["jitter", "unjitter", "resize", "blur", "random_jitter_offsets"]


def random_jitter_offsets(rng, max_jitter):
    """Two offsets (oy, ox), each uniform in [-max_jitter, max_jitter]."""
    if max_jitter <= 0:
        return 0, 0
    oy, ox = rng.integers(-max_jitter, max_jitter + 1, size=2)
    return int(oy), int(ox)


def jitter(X, oy, ox):
    """Roll the images by (oy, ox) pixels, wrapping around (CS231n's jitter)."""
    if oy == 0 and ox == 0:
        return X
    return np.roll(X, (oy, ox), axis=(2, 3))


def unjitter(X, oy, ox):
    """Undo :func:`jitter`."""
    return jitter(X, -oy, -ox)


def _linear_weights(n_in, n_out, dtype):
    """(n_out, n_in) matrix of bilinear interpolation with half-pixel centres
    (as PIL, OpenCV and torch's align_corners=False), edges clamped."""
    if n_in == n_out:
        return np.eye(n_in, dtype=dtype)
    scale = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    M = np.zeros((n_out, n_in), dtype=np.float64)
    M[np.arange(n_out), lo] += 1.0 - frac
    M[np.arange(n_out), hi] += frac
    if n_out < n_in:
        # Downscaling: average over the footprint (area filter) to avoid aliasing.
        A = np.zeros((n_out, n_in), dtype=np.float64)
        edges = np.arange(n_out + 1) * scale
        for i in range(n_out):
            a, b = edges[i], edges[i + 1]
            for j in range(int(np.floor(a)), int(np.ceil(b))):
                A[i, j] = min(b, j + 1) - max(a, j)
        M = A / A.sum(axis=1, keepdims=True)
    return M.astype(dtype)


def resize(X, size):
    """Resize (N, C, H, W) images (H, W >= 1) to size = (H', W'), a pair of positive ints.

    Bilinear when enlarging, area averaging when shrinking; separable, so it
    costs two small matrix products. Used by DeepDream's octaves.
    """
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"resize: X must be 4-D (N, C, H, W), got shape {X.shape}")
    if X.shape[2] < 1 or X.shape[3] < 1:
        raise ValueError(f"resize: X has no pixels to resize (shape {X.shape})")
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__"):
        raise TypeError(f"resize: size must be a pair (H', W') of integers, got {size!r}")
    if len(size) != 2:
        raise ValueError(f"resize: size must be a pair (H', W'), got {len(size)} values: {size!r}")
    # integers only: not '4', not 4.5 (int() would take both)
    h, w = (_checks.integer(v, "resize: size", 0) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"resize: size must be positive, got {size}")
    dtype = X.dtype if X.dtype.kind == "f" else np.float32
    Ry = _linear_weights(X.shape[2], h, dtype)
    Rx = _linear_weights(X.shape[3], w, dtype)
    return np.ascontiguousarray(np.einsum("ij,ncjk,lk->ncil", Ry, X.astype(dtype, copy=False), Rx,
                                          optimize=True))


def blur(X, sigma, kind="gaussian"):
    """Blur the images: ``kind='gaussian'`` with standard deviation ``sigma``
    pixels (a number >= 0 or a pair (sigma_h, sigma_w); 0 leaves the images as they
    are), or ``kind='cs231n'`` for the course's light 3x3 smoothing (sigma unused)."""
    if kind == "gaussian":
        pair = sigma if isinstance(sigma, (tuple, list)) and len(sigma) == 2 else (sigma,)
        sigmas = [_checks.nonneg_float(v, "sigma") for v in pair]
        return gaussian_blur(X, sigma) if any(sigmas) else X
    if kind == "cs231n":
        return cs231n_blur(X)
    raise ValueError(f"blur kind must be 'gaussian' or 'cs231n', got {kind!r}")
