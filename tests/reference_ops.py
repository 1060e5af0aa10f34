"""Naive float64 numpy references for the pooling, activation, batch-norm and
blur kernels. Written for clarity, not speed: loops over every window."""

import numpy as np
from helpers import numeric_grad  # noqa: F401  (tests use ref.numeric_grad)


def out_size(n, k, s, pad_lo, pad_hi, ceil_mode, dilation=1):
    span = n + pad_lo + pad_hi - (k - 1) * dilation - 1
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= n + pad_lo:
        o -= 1
    return o


def _pads(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def max_pool2d(x, kernel, stride, padding=0, ceil_mode=False, dilation=1):
    """Returns (out, argmax) with argmax = h*W + w; first maximum in row-major window order."""
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel), _pair(stride), _pair(dilation)
    pt, pb, pl, pr = _pads(padding)
    N, C, H, W = x.shape
    OH, OW = out_size(H, kh, sh, pt, pb, ceil_mode, dh), out_size(W, kw, sw, pl, pr, ceil_mode, dw)
    out = np.empty((N, C, OH, OW))
    am = np.empty((N, C, OH, OW), np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, bi = -np.inf, None
                    for i in range(oh * sh - pt, oh * sh - pt + kh * dh, dh):
                        for j in range(ow * sw - pl, ow * sw - pl + kw * dw, dw):
                            if 0 <= i < H and 0 <= j < W:
                                if bi is None:
                                    bi = i * W + j
                                if x[n, c, i, j] > best:
                                    best, bi = x[n, c, i, j], i * W + j
                    out[n, c, oh, ow], am[n, c, oh, ow] = best, bi
    return out, am


def avg_pool2d(x, kernel, stride, padding=0, ceil_mode=False, count_include_pad=True):
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
    pt, pb, pl, pr = _pads(padding)
    N, C, H, W = x.shape
    OH, OW = out_size(H, kh, sh, pt, pb, ceil_mode), out_size(W, kw, sw, pl, pr, ceil_mode)
    out = np.empty((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * sh - pt, ow * sw - pl
            h1, w1 = min(h0 + kh, H + pb), min(w0 + kw, W + pr)  # clipped at the padded border
            size = (h1 - h0) * (w1 - w0)
            hs, ws, he, we = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            div = size if count_include_pad else (he - hs) * (we - ws)
            out[:, :, oh, ow] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / div
    return out


def relu(x):
    return np.maximum(np.asarray(x, np.float64), 0.0)


def clamp(x, lo, hi):
    return np.clip(np.asarray(x, np.float64), lo, hi)


def leaky_relu(x, alpha):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x, alpha * x)


def sigmoid(x):
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))   # no overflow warning for large |x|


def tanh(x):
    return np.tanh(np.asarray(x, np.float64))


def hardsigmoid(x, alpha=1.0 / 6.0, beta=0.5):
    return np.clip(alpha * np.asarray(x, np.float64) + beta, 0.0, 1.0)


def hardswish(x):
    x = np.asarray(x, np.float64)
    return x * hardsigmoid(x)


def silu(x):
    x = np.asarray(x, np.float64)
    return x * sigmoid(x)


def away_from(rng, shape, kinks, margin=1e-3):
    """Normal samples (times 4) with every value at least `margin` from each kink."""
    x = rng.standard_normal(shape) * 4
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, margin, -margin) * 2
    return x


def _bn_axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _bn_shape(x, v):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_train(x, gamma, beta, eps):
    x = np.asarray(x, np.float64)
    axes = _bn_axes(x)
    mean = x.mean(axis=axes)
    var = ((x - _bn_shape(x, mean)) ** 2).mean(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - _bn_shape(x, mean)) * _bn_shape(x, inv_std)
    out = xhat * _bn_shape(x, np.asarray(gamma, np.float64)) + _bn_shape(x, np.asarray(beta, np.float64))
    return out, mean, var, inv_std


def batchnorm_test(x, gamma, beta, rm, rv, eps):
    x = np.asarray(x, np.float64)
    f = lambda v: _bn_shape(x, np.asarray(v, np.float64))
    return (x - f(rm)) / np.sqrt(f(rv) + eps) * f(gamma) + f(beta)


def gaussian_kernel1d(sigma, truncate=4.0):
    if sigma <= 1e-15:
        return np.ones(1)
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * t * t / (sigma * sigma))
    return w / w.sum()


def reflect_index(p, n):
    m = p % (2 * n)
    return m if m < n else 2 * n - 1 - m


def blur_matrix(n, sigma, truncate=4.0):
    """The 1-D blur along an axis of n points as a dense (n, n) matrix."""
    w = gaussian_kernel1d(sigma, truncate)
    r = (len(w) - 1) // 2
    A = np.zeros((n, n))
    for i in range(n):
        for k in range(len(w)):
            A[i, reflect_index(i - r + k, n)] += w[k]
    return A


def gaussian_blur(x, sigma, truncate=4.0, adjoint=False):
    """Blur over H and W of (N, C, H, W) by explicit dense matrices (independent of scipy)."""
    x = np.asarray(x, np.float64)
    sh, sw = (sigma, sigma) if np.isscalar(sigma) else sigma
    A = blur_matrix(x.shape[2], sh, truncate)
    B = blur_matrix(x.shape[3], sw, truncate)
    if adjoint:
        A, B = A.T, B.T
    return np.einsum("ih,nchw,jw->ncij", A, x, B)


