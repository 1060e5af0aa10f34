"""Float64 numpy references for the pointwise and layer-norm kernels: GELU (both
forms), erf, sigmoid, SiLU, hard swish, the per-channel scale and layer normalization, forward and backward,
written from their definitions (erf and erfc from Python's math module)."""
import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)
K = math.sqrt(2.0 / math.pi)
C = 0.044715


def erf(x):
    return _erf(np.asarray(x, np.float64)).astype(np.float64)


def erf_grad(x):
    x = np.asarray(x, np.float64)
    return 2.0 / math.sqrt(math.pi) * np.exp(-x * x)


def normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2, relatively accurate in both tails."""
    return 0.5 * _erfc(-np.asarray(x, np.float64) / math.sqrt(2.0)).astype(np.float64)


def gelu(x, approximate="none"):
    x = np.asarray(x, np.float64)
    if approximate == "tanh":   # 0.5 x (1 + tanh u) = x sigmoid(2u), without 1 + tanh's cancellation
        with np.errstate(over="ignore"):
            return x / (1.0 + np.exp(-2.0 * K * (x + C * x ** 3)))
    return x * normal_cdf(x)


def gelu_grad(x, approximate="none"):
    x = np.asarray(x, np.float64)
    if approximate == "tanh":   # s + 2 x s (1 - s) u', s = sigmoid(2u)
        u2 = 2.0 * K * (x + C * x ** 3)
        with np.errstate(over="ignore"):
            s, s_neg = 1.0 / (1.0 + np.exp(-u2)), 1.0 / (1.0 + np.exp(u2))
        return s + x * s * s_neg * 2.0 * K * (1.0 + 3.0 * C * x * x)
    return normal_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def sigmoid(x):
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):      # exp(-x) = inf gives 0
        return 1.0 / (1.0 + np.exp(-x))


def silu_grad(x):
    s, s_neg = sigmoid(x), sigmoid(-np.asarray(x, np.float64))
    return s * (1.0 + np.asarray(x, np.float64) * s_neg)


def hardswish(x):
    x = np.asarray(x, np.float64)
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def hardswish_grad(x):
    x = np.asarray(x, np.float64)
    return np.where(x < -3.0, 0.0, np.where(x <= 3.0, x / 3.0 + 0.5, 1.0))


def channel_scale(x, s):
    """x (N, C, ...) times s (C,), (1, C) or (N, C) broadcast over the rest."""
    x = np.asarray(x, np.float64)
    s = np.asarray(s, np.float64)
    s = s.reshape(s.shape + (1,) * (x.ndim - s.ndim) if s.ndim == 2 else (1, -1) + (1,) * (x.ndim - 2))
    return x * s


def channel_scale_backward(dout, x, s):
    dout, x = np.asarray(dout, np.float64), np.asarray(x, np.float64)
    s = np.asarray(s, np.float64)
    dx = channel_scale(dout, s)
    prod = (dout * x).sum(axis=tuple(range(2, x.ndim)))      # (N, C)
    ds = prod.sum(axis=0) if s.ndim == 1 else (prod if s.shape[0] == x.shape[0] else prod.sum(0, keepdims=True))
    return dx, ds.reshape(s.shape)


def layernorm(x, w, b, begin, end, eps):
    """(out, mean, rstd) over axes [begin, end) of x; w, b flat over those axes or None."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(begin, end))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    out = (x - mu) * rstd
    shp = (1,) * begin + x.shape[begin:end] + (1,) * (x.ndim - end)
    if w is not None:
        out = out * np.asarray(w, np.float64).reshape(shp)
    if b is not None:
        out = out + np.asarray(b, np.float64).reshape(shp)
    return out, mu.reshape(mu.shape[:begin] + mu.shape[end:]), rstd.reshape(mu.shape[:begin] + mu.shape[end:])


def layernorm_backward(dout, x, w, begin, end, eps):
    """(dx, dw, db) of layernorm, from the definition's chain rule."""
    x, dout = np.asarray(x, np.float64), np.asarray(dout, np.float64)
    axes = tuple(range(begin, end))
    R = int(np.prod(x.shape[begin:end]))
    mu = x.mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mu) * rstd
    shp = (1,) * begin + x.shape[begin:end] + (1,) * (x.ndim - end)
    g = dout if w is None else dout * np.asarray(w, np.float64).reshape(shp)
    dx = rstd / R * (R * g - g.sum(axis=axes, keepdims=True) - xhat * (g * xhat).sum(axis=axes, keepdims=True))
    other = tuple(i for i in range(x.ndim) if i not in axes)
    return dx, (dout * xhat).sum(axis=other).reshape(-1), dout.sum(axis=other).reshape(-1)
