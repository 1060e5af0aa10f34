"""Argument checks shared by every part of gradvis (clear errors before any work).

This module imports no other part of gradvis; checks that need the model class
live beside it (:func:`gradvis.nn.graph.check_model`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def as_array(value, name):
    """``np.asarray(value)``, with a ragged or otherwise unconvertible value refused
    by a ValueError naming the argument (numpy's own message names nothing)."""
    if type(value) is np.ndarray:
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{name} is not an array of numbers ({e})") from None


def images(X, model, name="X"):
    """X as a C-contiguous float32/float64 (N, C, H, W) array, checked against the model."""
    arr = as_array(X, name)
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
    channels = model.input_shape[0]
    if arr.shape[1] != channels:
        raise ValueError(f"{name} has {arr.shape[1]} channels but the model expects {channels}; "
                         f"shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


def pixel_scale(model, dtype=np.float32):
    """0-255 pixel units per model input unit, per channel, shaped (1, C, 1, 1).

    Step sizes and budgets given "in pixels" are divided by it, so that one set of
    defaults suits a model fed 0-255 values and one fed (x/255 - mean)/std alike.
    """
    return np.asarray(model.std, dtype).reshape(1, -1, 1, 1)


def valid_range(model, shape, dtype=np.float32):
    """(lo, hi) of valid inputs, broadcastable to images of ``shape`` (N, C, H, W)."""
    lo, hi = model.input_range()
    lo, hi = np.asarray(lo, dtype), np.asarray(hi, dtype)
    if lo.ndim == 3 and lo.shape[1:] != tuple(shape[2:]) and lo.shape[1:] != (1, 1):
        # a mean image of another size: per-channel bounds
        lo = lo.min(axis=(1, 2), keepdims=True)
        hi = hi.max(axis=(1, 2), keepdims=True)
    return lo, hi


def _class_short(model, i):
    wnid = f"{model.wnids[i]}, " if model.wnids else ""
    short = model.class_names[i].split(",")[0].strip() if model.class_names else f"class {i}"
    return f"{short} ({wnid}{i})"


def class_index(model, spec, name="y"):
    """The index of the class named ``spec``: a wnid (``"n01443537"``) or a class name,
    exact (any of its comma-separated synonyms) or an unambiguous prefix,
    case-insensitive. ValueError naming ``name`` if none or several match;
    TypeError if the model has no class names."""
    if not isinstance(spec, str):
        raise TypeError(f"{name}: a class is an int index or a name (str), got {spec!r}")
    if not model.class_names and not model.wnids:
        raise TypeError(f"{name}: the model has no class names; give class indices (ints), got {spec!r}")
    s = spec.strip()
    if not s:
        raise ValueError(f"{name}: empty class name")
    key = s.lower()
    if model.wnids:
        hits = [i for i, w in enumerate(model.wnids) if w.lower() == key]
        if hits:
            return hits[0]
    names = model.class_names or []
    synonyms = [[c.lower()] + [part.strip().lower() for part in c.split(",")] for c in names]
    exact = [i for i, syn in enumerate(synonyms) if key in syn]
    if len(exact) == 1:
        return exact[0]
    prefix = exact or [i for i, syn in enumerate(synonyms) if any(x.startswith(key) for x in syn)]
    if len(prefix) == 1:
        return prefix[0]
    if len(prefix) > 1:
        shown = "; ".join(_class_short(model, i) for i in prefix[:8])
        more = f"; and {len(prefix) - 8} more" if len(prefix) > 8 else ""
        raise ValueError(f"{name}: class {s!r} is ambiguous: it matches {len(prefix)} classes: {shown}{more}")
    import difflib
    close = difflib.get_close_matches(key, [x for syn in synonyms for x in syn], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else ""
    raise ValueError(f"{name}: unknown class {s!r}{hint}")


def labels(y, n, model, name="y"):
    """y as an int64 (n,) array of valid class indices; a scalar is broadcast.

    Classes are int indices or, where the model has class names, names or wnids
    (see :func:`class_index`), alone or in a list (``["lemon", 3]``)."""
    num_classes = model.num_classes
    if isinstance(y, str):
        y = class_index(model, y, name)
    elif isinstance(y, (list, tuple)) and any(isinstance(v, str) for v in y):
        y = [class_index(model, v, name) if isinstance(v, str) else v for v in y]
    elif isinstance(y, np.ndarray) and y.dtype.kind in "US":
        y = [class_index(model, str(v), name) for v in y.reshape(-1)] if y.ndim else class_index(model, str(y), name)
    arr = as_array(y, name)
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


def integer(value, name, lo=None, hi=None):
    """``value`` as a Python int: an int or a numpy integer (not a bool, a float
    or a string), within [lo, hi] where given; else TypeError/ValueError naming it.
    (Layers call it on every pass: a plain int takes the short way.)"""
    if type(value) is int:
        v = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        hint = " (use // for integer division)" if isinstance(value, (float, np.floating)) else ""
        raise TypeError(f"{name} must be an integer, got {value!r}{hint}")
    else:
        v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def positive_int(value, name, allow_zero=False, hi=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")
    return int(value)


def int_pair(value, name, lo=1):
    """An int or a pair of ints (each >= lo) as a pair (a, b)."""
    if type(value) is int and value >= lo:
        return value, value
    if (type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int
            and value[0] >= lo and value[1] >= lo):
        return value
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return integer(value[0], name, lo), integer(value[1], name, lo)
    v = integer(value, name, lo)
    return v, v


def finite_float(value, name):
    """``value`` as a finite Python float (numbers only: not a bool or a string)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def number(value, name, allow_inf=False):
    """``value`` as a Python float: a real number (int, float, numpy scalar; not a bool,
    a string or None); NaN refused, and infinities unless ``allow_inf``."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r:.60}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number, got {value!r}")
    return v


def boolean(value, name):
    """``value`` as a Python bool: True or False (or a numpy bool), never a number,
    a string, None or NaN taken for a truth value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


# Largest random roll, in pixels: rolls wrap around, so anything near an image's
# size already covers every offset; the bound keeps the offsets in int32.
MAX_JITTER = 2**31 - 1


def nonneg_float(value, name, positive=False):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


def size_pair(value, name="image_size"):
    """(H, W) from a pair of positive ints, or one int for a square image; None stays None."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else value
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be (H, W) or one int for a square image, got {value!r}")
        return integer(value[0], name, 1), integer(value[1], name, 1)
    v = integer(value, name, 1)
    return v, v


def start_images(init, n, model, image_size, init_scale, rng, what):
    """The starting images of a generation loop, float32 (n, C, H, W): a copy of
    ``init``, or seeded noise of ``init_scale`` grey levels at ``image_size``
    (default the model's input size). ``what`` names what n counts, for errors."""
    size = size_pair(image_size)
    init_scale = nonneg_float(init_scale, "init_scale")
    if init is not None:
        X = images(init, model, name="init").astype(np.float32, copy=True)
        if X.shape[0] != n:
            raise ValueError(f"init has {X.shape[0]} images but {what} has {n}")
        if size is not None and size != X.shape[2:]:
            raise ValueError(f"image_size {size} conflicts with init of size {X.shape[2:]}; "
                             f"give one of them")
        return X
    h, w = size if size is not None else model.input_shape[1:]
    noise = rng.standard_normal((n, model.input_shape[0], h, w))
    return (init_scale * noise / pixel_scale(model)).astype(np.float32)


def rng_from(seed, name="seed"):
    """A numpy Generator from a seed, a Generator, or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_, float, np.floating, str, bytes)):
        raise TypeError(f"{name} must be None, a non-negative integer or a numpy Generator, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name} must be None, a non-negative integer or a numpy Generator, "
                      f"got {seed!r} ({e})") from None
