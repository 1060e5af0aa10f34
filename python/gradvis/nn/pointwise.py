"""Elementwise layers an imported graph may use beyond the CS231n set: GELU (exact
and tanh forms), erf, and constant powers, roots, negation, absolute value and exp.

All are numpy (memory-bound); each takes and returns arrays of any shape (N, ...)
and keeps the input's float dtype.
"""
from __future__ import annotations

import math

import numpy as np

from .module import Layer

__all__ = ["erf", "GELU", "Erf", "Pow", "Sqrt", "Neg", "Abs", "Exp"]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_numpy(x):
    """erf of a float64 array to about 1e-15: the positive series
    ``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))`` for
    |x| <= 3 and the continued fraction of erfc (Abramowitz & Stegun 7.1.6, 7.1.14)
    beyond it."""
    a = np.abs(x)
    out = np.empty_like(a)
    small = a <= 3.0
    if small.any():
        s = a[small]
        s2 = 2.0 * s * s
        term = s.copy()
        total = s.copy()
        for n in range(70):            # 18^n / (2n+1)!! < 1e-17 e^9 by n = 60
            term *= s2 / (2 * n + 3)
            total += term
        out[small] = _TWO_OVER_SQRT_PI * np.exp(-s * s) * total
    big = ~small
    if big.any():
        b = a[big]
        frac = np.zeros_like(b)        # K = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), from the tail
        for k in range(60, 0, -1):
            frac = (k / 2.0) / (b + frac)
        out[big] = 1.0 - np.exp(-b * b) / math.sqrt(math.pi) / (b + frac)
    return np.copysign(out, x)


try:                                   # the same function, compiled, when scipy is there
    from scipy.special import erf as _erf_fast
except ImportError:                    # pragma: no cover - depends on the environment
    _erf_fast = None


# erfc(z) = t P(t) exp(-z^2), t = 1 / (1 + z / 2), z >= 0: P a degree-10 least-squares
# fit (Chebyshev nodes, relative weights) of erfc(z) exp(z^2) / t, the form of
# Abramowitz & Stegun 7.1.26; relative error 1.2e-8 for every z >= 0 (in float64)
_ERFC_T = (0.28209479584, 0.28209370175, 0.24688579369, 0.17530302172, 0.09353744247, -0.059470504271,
           0.13273472101, -0.45572776772, 0.49431677988, -0.23501960297, 0.043251623299)
# erf(x) / x = 2/sqrt(pi) sum_n (-x^2)^n / (n! (2n + 1)), for |x| < 1/2 (next term < 1e-9)
_ERF_SERIES = tuple(2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(7))


def _erfc32(a):
    """erfc of a float32 array ``a >= 0`` to float32 accuracy (relative), in float32."""
    f = a.dtype.type
    t = f(1) / (f(1) + f(0.5) * a)
    poly = np.full_like(a, f(_ERFC_T[-1]))
    for c in _ERFC_T[-2::-1]:
        poly *= t
        poly += f(c)
    poly *= t
    poly *= np.exp(-(a * a))
    return poly


def _erf32(x):
    a = np.abs(x)
    big = _erfc32(a)
    np.subtract(np.float32(1), big, out=big)
    x2 = x * x
    small = np.full_like(x, x.dtype.type(_ERF_SERIES[-1]))
    for c in _ERF_SERIES[-2::-1]:
        small *= x2
        small += x.dtype.type(c)
    small *= x
    return np.where(a < 0.5, small, np.copysign(big, x))


def erf(x):
    """The error function of an array, in its float dtype: float32 by a fitted rational
    form (relative error about 1e-7), float64 exactly (scipy's, or the series and
    continued fraction of :func:`_erf_numpy` without scipy)."""
    x = np.asarray(x)
    if x.dtype == np.float32:
        return _erf32(x)
    x64 = x.astype(np.float64, copy=False)
    out = _erf_fast(x64) if _erf_fast is not None else _erf_numpy(x64)
    return out.astype(x.dtype, copy=False)


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt(2))) / 2, relatively accurate for negative x too."""
    if x.dtype == np.float32:
        e = _erfc32(np.abs(x) * np.float32(1 / math.sqrt(2.0)))
        e *= np.float32(0.5)
        np.subtract(np.float32(1), e, out=e, where=x >= 0)   # Phi(x) = 1 - erfc(x / sqrt 2) / 2
        return e
    return 0.5 * (1 + erf(x * x.dtype.type(1 / math.sqrt(2.0))))


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

    _K = math.sqrt(2.0 / math.pi)

    def forward(self, inputs, params, buffers, mode, rng):
        x = inputs[0]
        if self.approximate == "tanh":
            t = np.tanh(self._K * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + t), (x, t)
        phi = normal_cdf(x)
        return x * phi, (x, phi)

    def backward(self, dout, cache):
        x, t = cache
        if self.approximate == "tanh":
            d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * self._K * (1 + 3 * 0.044715 * x * x)
        else:
            d = t + x * np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return [np.asarray(dout) * d.astype(x.dtype, copy=False)], {}


class Erf(_Pointwise):
    """The error function, erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt."""
    type = "Erf"

    @staticmethod
    def _f(x):
        return erf(x)

    @staticmethod
    def _df(x, out):
        return x.dtype.type(_TWO_OVER_SQRT_PI) * np.exp(-x * x)


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
