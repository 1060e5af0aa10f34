"""Argument checks shared by the algorithms (clear errors before any work)."""
from __future__ import annotations

import numbers

import numpy as np


def images(X, model, name="X", allow_any_size=False):
    """X as a C-contiguous float32/float64 (N, C, H, W) array, checked against the model."""
    arr = np.asarray(X)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array in the model's input space "
                        f"(use model.preprocess on uint8 images), got dtype {arr.dtype}")
    if arr.ndim == 3:
        raise ValueError(f"{name} must be 4-D (N, C, H, W); got 3-D shape {arr.shape} "
                         f"(add a batch axis: {name}[None])")
    if arr.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    channels = getattr(model, "input_channels", None)
    if channels is not None and arr.shape[1] != channels:
        raise ValueError(f"{name} has {arr.shape[1]} channels but the model expects {channels}; "
                         f"shape {arr.shape}")
    if not allow_any_size:
        size = getattr(model, "input_size", None)
        if size is not None and tuple(arr.shape[2:]) != tuple(size) and not _size_free(model):
            raise ValueError(f"{name} is {arr.shape[2]}x{arr.shape[3]} but the model takes "
                             f"{size[0]}x{size[1]} images")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def _size_free(model):
    f = getattr(model, "accepts_any_size", None)
    return bool(f() if callable(f) else f)


def labels(y, n, model, name="y"):
    """y as an int64 (n,) array of valid class indices; a scalar is broadcast."""
    num_classes = model.num_classes
    arr = np.asarray(y)
    if arr.dtype.kind == "b" or (arr.dtype.kind not in "iu" and not
                                 (arr.dtype.kind == "f" and np.all(arr == np.round(arr)))):
        raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim == 0:
        arr = np.full(n, int(arr), dtype=np.int64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one class per image), got {arr.shape}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(f"{name} has class indices out of range [0, {num_classes}): "
                         f"{arr[bad][:5].tolist()}")
    return arr


def positive_int(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return int(value)


def nonneg_float(value, name, positive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


def rng_from(seed):
    """A numpy Generator from a seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
