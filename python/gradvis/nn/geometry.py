"""Geometry arguments (kernel sizes, strides, padding) parsed in one place.

Every layer class and every functional op reads its geometry through these, so
the same spellings are accepted everywhere: an int, or a pair of ints, or for
padding also (top, bottom, left, right). Ints are Python or numpy integers (any
``__index__``); floats, bools and strings are refused with a message naming the
argument.
"""
from __future__ import annotations

from .. import _checks

__all__ = ["pair", "pad4"]


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
