"""Elementwise layers an imported graph may use beyond the CS231n set: GELU (exact
and tanh forms), erf, constant powers, roots, negation, absolute value, exp, log and
the reciprocal, and the activations ELU, SELU, CELU, Softplus, LogSigmoid, Softsign,
Mish and ThresholdedReLU (PyTorch's and ONNX's definitions).

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

__all__ = ["erf", "GELU", "Erf", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Log", "Reciprocal", "ELU", "SELU", "CELU",
           "Softplus", "LogSigmoid", "Softsign", "Mish", "ThresholdedReLU"]

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


class Log(_Pointwise):
    """Natural logarithm (gradient 1 / x); ``log(sigmoid(x))`` is PyTorch's LogSigmoid as exported."""
    type = "Log"

    @staticmethod
    def _f(x):
        return np.log(x)

    @staticmethod
    def _df(x, out):
        return 1 / x


class Reciprocal(_Pointwise):
    """1 / x (gradient -1 / x^2)."""
    type = "Reciprocal"

    @staticmethod
    def _f(x):
        return 1 / x

    @staticmethod
    def _df(x, out):
        return -(out * out)


def _alpha(value, what, positive=False):
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{what} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return v


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    """log(1 + exp(x)) without overflow (NaN stays NaN, quietly)."""
    with np.errstate(invalid="ignore"):
        return np.logaddexp(x.dtype.type(0), x)


class _WithAlpha(_Pointwise):
    """An elementwise function of one constant ``alpha`` (positive where
    ``_positive``)."""
    _positive = False

    def __init__(self, alpha=1.0):
        self.alpha = _alpha(alpha, f"{self.type}: alpha", positive=self._positive)

    def config(self):
        return dict(alpha=self.alpha)

    def describe(self):
        return f"{self.type} alpha {self.alpha:g}"


class ELU(_WithAlpha):
    """Exponential linear unit (Clevert, Unterthiner & Hochreiter 2016,
    arXiv:1511.07289): x for x > 0, else alpha (exp(x) - 1). Gradient 1 or
    alpha exp(x) (alpha at 0, as PyTorch)."""
    type = "ELU"

    def _f(self, x):
        a = x.dtype.type(self.alpha)
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))

    def _df(self, x, out):
        a = x.dtype.type(self.alpha)
        return np.where(x > 0, x.dtype.type(1), a * np.exp(np.minimum(x, 0)))


class SELU(_Pointwise):
    """Scaled ELU (Klambauer et al. 2017, arXiv:1706.02515): gamma * ELU(x, alpha),
    with PyTorch's constants by default (ONNX's are the same rounded to float32)."""
    type = "SELU"
    ALPHA = 1.6732632423543772848170429916717
    GAMMA = 1.0507009873554804934193349852946

    def __init__(self, alpha=ALPHA, gamma=GAMMA):
        self.alpha = _alpha(alpha, "SELU: alpha")
        self.gamma = _alpha(gamma, "SELU: gamma")

    def config(self):
        return dict(alpha=self.alpha, gamma=self.gamma)

    def _f(self, x):
        a, g = x.dtype.type(self.alpha), x.dtype.type(self.gamma)
        return g * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))

    def _df(self, x, out):
        a, g = x.dtype.type(self.alpha), x.dtype.type(self.gamma)
        return np.where(x > 0, g, g * a * np.exp(np.minimum(x, 0)))


class CELU(_WithAlpha):
    """Continuously differentiable ELU (Barron 2017, arXiv:1704.07483):
    max(0, x) + min(0, alpha (exp(x / alpha) - 1)), alpha > 0."""
    type = "CELU"
    _positive = True

    def _f(self, x):
        a = x.dtype.type(self.alpha)
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0) / a))

    def _df(self, x, out):
        a = x.dtype.type(self.alpha)
        return np.where(x > 0, x.dtype.type(1), np.exp(np.minimum(x, 0) / a))


class Softplus(_Pointwise):
    """log(1 + exp(x)) (ONNX Softplus), gradient sigmoid(x); with a ``threshold``, x
    itself (gradient 1) where x > threshold, as PyTorch's ``Softplus(beta=1,
    threshold)`` (its export without the threshold agrees to rounding past 20)."""
    type = "Softplus"

    def __init__(self, threshold=None):
        self.threshold = None if threshold is None else _alpha(threshold, "Softplus: threshold")

    def config(self):
        return dict(threshold=self.threshold)

    def describe(self):
        return "Softplus" + ("" if self.threshold is None else f" threshold {self.threshold:g}")

    def _f(self, x):
        y = _softplus(x)
        return y if self.threshold is None else np.where(x > x.dtype.type(self.threshold), x, y)

    def _df(self, x, out):
        d = _sigmoid(x)
        return d if self.threshold is None else np.where(x > x.dtype.type(self.threshold), x.dtype.type(1), d)


class LogSigmoid(_Pointwise):
    """log(sigmoid(x)) = -softplus(-x), computed so that it stays finite where
    sigmoid(x) rounds to 0 (as PyTorch's ``LogSigmoid``, which both ONNX exporters
    write as Sigmoid then Log); gradient sigmoid(-x)."""
    type = "LogSigmoid"

    @staticmethod
    def _f(x):
        return -_softplus(-x)

    @staticmethod
    def _df(x, out):
        return _sigmoid(-x)


class Softsign(_Pointwise):
    """x / (1 + |x|) (gradient 1 / (1 + |x|)^2)."""
    type = "Softsign"

    @staticmethod
    def _f(x):
        return x / (1 + np.abs(x))

    @staticmethod
    def _df(x, out):
        d = 1 + np.abs(x)
        return 1 / (d * d)


class Mish(_Pointwise):
    """x tanh(softplus(x)) (Misra 2019, arXiv:1908.08681): ONNX Mish (opset 18; older
    exports write Softplus, Tanh and Mul, which import as those three layers)."""
    type = "Mish"

    @staticmethod
    def _f(x):
        return x * np.tanh(_softplus(x))

    @staticmethod
    def _df(x, out):
        t = np.tanh(_softplus(x))
        return t + x * _sigmoid(x) * (1 - t * t)


class ThresholdedReLU(_WithAlpha):
    """x where x > alpha, else 0 (ONNX ThresholdedRelu, PyTorch's ``threshold(x,
    alpha, 0)``: a NaN stays NaN); gradient 1 there, else 0."""
    type = "ThresholdedReLU"

    def _f(self, x):
        return np.where(x <= x.dtype.type(self.alpha), x.dtype.type(0), x)

    def _df(self, x, out):
        return (~(x <= x.dtype.type(self.alpha))).astype(x.dtype)
