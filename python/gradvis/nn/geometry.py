"""Geometry arguments (kernel sizes, strides, padding, the axes a layer acts on)
parsed in one place.

Every layer class and every functional op reads its geometry through these, so
the same spellings are accepted everywhere: an int, or a pair of ints, or for
padding also (top, bottom, left, right). Ints are Python or numpy integers (any
``__index__``); floats, bools and strings are refused with a message naming the
argument.
"""
from __future__ import annotations

import numpy as np

from .. import _checks

__all__ = ["pair", "pad4", "sample_axes"]


def pair(value, name, lo=1):
    """An int or a pair of ints, each >= lo -> (a, b)."""
    return _checks.int_pair(value, name, lo)


def pad4(value, name="padding", lo=0):
    """int, (ph, pw) or (top, bottom, left, right) -> (top, bottom, left, right), each >= lo
    (``lo=None``: any int, for layers that crop with negative padding)."""
    floor = -(1 << 62) if lo is None else lo
    if type(value) is int and value >= floor:
        return value, value, value, value
    if type(value) is tuple and len(value) == 4 and all(type(v) is int and v >= floor for v in value):
        return value
    if isinstance(value, (tuple, list)):
        if len(value) == 2:
            ph, pw = (_checks.integer(v, name, lo) for v in value)
            return ph, ph, pw, pw
        if len(value) == 4:
            return tuple(_checks.integer(v, name, lo) for v in value)
        raise ValueError(f"{name} must be an int, (pad_h, pad_w) or (top, bottom, left, right), got {value!r}")
    v = _checks.integer(value, name, lo)
    return v, v, v, v


def sample_axes(axes, what):
    """An axis or a sequence of axes of an (N, ...) tensor that a layer normalizes or
    reduces over -> sorted distinct ints >= 1 (0 is the batch, each sample is computed
    on its own); else ValueError naming ``what``."""
    if isinstance(axes, (str, bytes)) or not hasattr(axes, "__iter__"):
        axes = [axes]
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or a < 1:
            raise ValueError(f"{what} must be axes >= 1 of an (N, ...) tensor (0 is the batch), got {axes!r}")
        out.append(int(a))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{what} must be distinct axes, got {axes!r}")
    return tuple(sorted(out))
