"""Elementwise layers an imported graph may use beyond the CS231n set: GELU (exact
and tanh forms), erf, and constant powers, roots, negation, absolute value and exp.

GELU and erf run in the compiled core (float32 in SIMD lanes, several threads
for large maps); the rest are numpy (memory-bound). Each takes and returns arrays of
any shape (N, ...) and keeps the input's float dtype.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .functional import float_array
from .module import Layer

__all__ = ["erf", "GELU", "Erf", "Pow", "Sqrt", "Neg", "Abs", "Exp"]

def erf(x):
    """The error function of a float32 or float64 array, in its dtype (the compiled
    kernel: float32 in SIMD lanes, relative error about 1e-7; float64 the C library's)."""
    return _core.erf_forward(float_array(x, "x"))


class _Pointwise(Layer):
    """out = f(x) elementwise; subclasses give ``_f(x)`` and ``_df(x, out)``."""

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        out = self._f(x)
        return out, (x, out)

    def backward(self, dout, cache):
        x, out = cache
        return [np.asarray(dout) * self._df(x, out)], {}


class GELU(_Pointwise):
    """Gaussian error linear unit (Hendrycks & Gimpel 2016, arXiv:1606.08415):
    ``x * Phi(x)``, or with ``approximate='tanh'`` ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    type = "GELU"

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def config(self):
        return dict(approximate=self.approximate)

    def describe(self):
        return "GELU" + (" tanh" if self.approximate == "tanh" else "")

    def forward(self, inputs, params, buffers, mode, rng):
        x = float_array(inputs[0], "x")
        return _core.gelu_forward(x, self.approximate), x

    def backward(self, dout, cache):
        x = cache
        return [_core.gelu_backward(np.asarray(dout, dtype=x.dtype), x, self.approximate)], {}


class Erf(_Pointwise):
    """The error function, erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt."""
    type = "Erf"

    def forward(self, inputs, params, buffers, mode, rng):
        x = float_array(inputs[0], "x")
        return _core.erf_forward(x), x

    def backward(self, dout, cache):
        x = cache
        return [_core.erf_backward(np.asarray(dout, dtype=x.dtype), x)], {}


class Pow(_Pointwise):
    """x ** exponent for a constant exponent (ONNX Pow with a constant exponent)."""
    type = "Pow"

    def __init__(self, exponent):
        if isinstance(exponent, (str, bytes, bool)):
            raise TypeError(f"Pow: exponent must be a number, got {exponent!r}")
        self.exponent = float(exponent)
        if not math.isfinite(self.exponent):
            raise ValueError(f"Pow: exponent must be finite, got {exponent!r}")

    def config(self):
        return dict(exponent=self.exponent)

    def describe(self):
        return f"Pow {self.exponent:g}"

    def _f(self, x):
        e = self.exponent
        return x * x if e == 2.0 else np.power(x, x.dtype.type(e))

    def _df(self, x, out):
        e = self.exponent
        if e == 2.0:
            return 2 * x
        if e == 1.0:
            return np.ones_like(x)
        return x.dtype.type(e) * np.power(x, x.dtype.type(e - 1))


class Sqrt(_Pointwise):
    """Square root (gradient 1 / (2 sqrt(x)))."""
    type = "Sqrt"

    @staticmethod
    def _f(x):
        return np.sqrt(x)

    @staticmethod
    def _df(x, out):
        return 0.5 / out


class Neg(_Pointwise):
    """-x."""
    type = "Neg"

    def forward(self, inputs, params, buffers, mode, rng):
        return -inputs[0], None

    def backward(self, dout, cache):
        return [-np.asarray(dout)], {}


class Abs(_Pointwise):
    """|x| (gradient sign(x); 0 at 0, as PyTorch)."""
    type = "Abs"

    @staticmethod
    def _f(x):
        return np.abs(x)

    @staticmethod
    def _df(x, out):
        return np.sign(x)


class Exp(_Pointwise):
    """exp(x)."""
    type = "Exp"

    @staticmethod
    def _f(x):
        return np.exp(x)

    @staticmethod
    def _df(x, out):
        return out
