"""Array-level layers with the CS231n contract, on the compiled core.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward`` takes
``(dout, cache)``, with the names, arguments and return values of the course's
``layers.py`` / ``fast_layers.py``, so course code can import them instead.

Shapes use NCHW: ``x`` is ``(N, C, H, W)``, a conv weight ``(F, C // groups, HH, WW)``.
The dtype of ``x`` is kept: float32 stays float32, float64 stays float64 (float16
is computed in float32); the other arrays are converted to it. Integer, complex
and other non-float inputs raise ``TypeError``; wrong shapes raise ``ValueError``
naming the argument. The caller's arrays are never modified.
"""
from __future__ import annotations

import numpy as np

from .. import _checks, _core
from .geometry import pad4, pair

__all__ = [
    "conv_forward", "conv_backward", "conv_backward_input", "conv_backward_weight",
    "conv_relu_forward", "conv_relu_backward",
    "max_pool_forward", "max_pool_backward",
    "avg_pool_forward", "avg_pool_backward",
    "global_avg_pool_forward", "global_avg_pool_backward",
    "relu_forward", "relu_backward",
    "relu6_forward", "relu6_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "hardsigmoid_forward", "hardsigmoid_backward",
    "hardswish_forward", "hardswish_backward",
    "silu_forward", "silu_backward",
    "affine_forward", "affine_backward", "affine_backward_input", "affine_backward_params",
    "batchnorm_forward", "batchnorm_backward",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward", "batchnorm_backward_input",
    "softmax_loss",
    "gaussian_blur", "gaussian_blur_adjoint",
    "cs231n_blur", "cs231n_blur_adjoint",
]
# What the layer classes of gradvis.nn build on besides the CS231n API above (public
# names of this module, not re-exported by gradvis.layers).
BUILDING_BLOCKS = ["float_array", "conv2d_run", "max_pool2d_run", "batchnorm_test_run"]


# --------------------------------------------------------------------------- helpers
def float_array(a, name):
    """``a`` as a float32/float64 ndarray (no copy when it already is one)."""
    if type(a) is np.ndarray and a.dtype.char in "fd" and a.flags.c_contiguous:
        return a   # the common case, taken on every layer of every pass
    arr = _checks.as_array(a, name)
    kind = arr.dtype.kind
    if kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array (float32 or float64), got dtype {arr.dtype}"
            f" with shape {arr.shape}")
    # astype(order="C") rather than ascontiguousarray, which makes a 0-d array 1-d
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return arr.astype(arr.dtype, order="C", copy=False)
    return arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64, order="C")


def _like(a, dtype, name):
    """A secondary argument (weights, gradients) in the dtype of the primary input."""
    if a is None:
        return None
    if type(a) is np.ndarray and a.dtype is dtype and a.flags.c_contiguous:
        return a
    arr = _checks.as_array(a, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(dtype, order="C", copy=False)


_CONV_KEYS = frozenset(("stride", "pad", "dilation", "groups"))


def _conv_geometry(conv_param):
    if not isinstance(conv_param, dict):
        raise TypeError(f"conv_param must be a dict, got {type(conv_param).__name__}")
    unknown = conv_param.keys() - _CONV_KEYS
    if unknown:
        raise ValueError(f"conv_param has unknown keys {sorted(unknown)}; "
                         "expected 'stride', 'pad', 'dilation', 'groups'")
    stride = pair(conv_param.get("stride", 1), "conv_param['stride']")
    pad = pad4(conv_param.get("pad", 0), "conv_param['pad']")
    dilation = pair(conv_param.get("dilation", 1), "conv_param['dilation']")
    groups = _checks.integer(conv_param.get("groups", 1), "conv_param['groups']", 1)
    return stride, pad, dilation, groups


def _pool_geometry(pool_param, extra=()):
    if not isinstance(pool_param, dict):
        raise TypeError(f"pool_param must be a dict, got {type(pool_param).__name__}")
    allowed = {"pool_height", "pool_width", "stride", "pad", "ceil_mode"} | set(extra)
    unknown = set(pool_param) - allowed
    if unknown:
        raise ValueError(f"pool_param has unknown keys {sorted(unknown)}; expected {sorted(allowed)}")
    for key in ("pool_height", "pool_width", "stride"):
        if key not in pool_param:
            raise ValueError(f"pool_param needs '{key}'")
    kernel = (_checks.integer(pool_param["pool_height"], "pool_param['pool_height']", 1),
              _checks.integer(pool_param["pool_width"], "pool_param['pool_width']", 1))
    stride = pair(pool_param["stride"], "pool_param['stride']")
    pad = pad4(pool_param.get("pad", 0), "pool_param['pad']")
    ceil_mode = _checks.boolean(pool_param.get("ceil_mode", False), "pool_param['ceil_mode']")
    return kernel, stride, pad, ceil_mode


# --------------------------------------------------------------------------- convolution
def conv_forward(x, w, b, conv_param):
    """Convolution (cross-correlation, as in every CNN library).

    Args:
        x: input, (N, C, H, W).
        w: filters, (F, C // groups, HH, WW).
        b: biases, (F,), or None.
        conv_param: dict with 'stride' (int or (sh, sw), default 1), 'pad' (int,
            (ph, pw) or (top, bottom, left, right), zero padding, default 0) and
            optionally 'dilation' (default 1) and 'groups' (default 1).

    Returns:
        out: (N, F, H', W') with H' = 1 + (H + pad_top + pad_bottom - dil*(HH-1) - 1) // stride.
        cache: for :func:`conv_backward`.
    """
    return _conv_forward(x, w, b, conv_param, relu=False)


def _conv_forward(x, w, b, conv_param, relu):
    return conv2d_run(x, w, b, _conv_geometry(conv_param), relu)


def conv2d_run(x, w, b, geometry, relu, residual=None):
    """The convolution with checked ``geometry`` = (stride, pad, dilation, groups), as
    :func:`_conv_geometry` returns it (a Model's Conv2d holds it checked already).
    ``residual`` (or None): an array of the output's shape added to it before the
    relu (a residual connection, made as the output is written)."""
    x = float_array(x, "x")
    w = _like(w, x.dtype, "w")
    b = _like(b, x.dtype, "b")
    stride, pad, dilation, groups = geometry
    if residual is None:
        out = _core.conv2d_forward(x, w, b, stride, pad, dilation, groups, relu)
    else:
        out = _core.conv2d_forward_add(x, w, b, residual, stride, pad, dilation, groups, relu)
    return out, (x, w, b is not None, stride, pad, dilation, groups)


def conv_relu_forward(x, w, b, conv_param):
    """relu(conv(x, w) + b) in one pass (the relu is applied as the convolution
    writes its output). Shapes as :func:`conv_forward`. Returns (out, cache)."""
    out, conv_cache = _conv_forward(x, w, b, conv_param, relu=True)
    return out, (conv_cache, out)


def conv_relu_backward(dout, cache):
    """Backward of :func:`conv_relu_forward`: (dx, dw, db)."""
    conv_cache, out = cache
    return conv_backward(relu_backward(dout, out), conv_cache)


def conv_backward(dout, cache):
    """Gradients of :func:`conv_forward`: returns (dx, dw, db); db is None if b was None."""
    dx = conv_backward_input(dout, cache)
    dw, db = conv_backward_weight(dout, cache)
    return dx, dw, db


def conv_backward_input(dout, cache):
    """Only dx of :func:`conv_backward` (what image-gradient algorithms need)."""
    x, w, has_bias, stride, pad, dilation, groups = cache
    dout = _like(dout, x.dtype, "dout")
    return _core.conv2d_backward_input(dout, w, x.shape, stride, pad, dilation, groups)


def conv_backward_input_act(dout, cache, act, ref=None):
    """dx of :func:`conv_backward_input` times the derivative of the activation
    whose output is the convolution's input x: act ``("relu", 0, 0)`` keeps dx
    where x > 0, ``("clamp", lo, hi)`` where lo < x < hi (ReLU6: (0, 6));
    ``("silu", 0, 0)`` and ``("hardswish", 0, 0)`` multiply it by the derivative at
    ``ref``, the activation's input (x's shape). One kernel."""
    x, w, has_bias, stride, pad, dilation, groups = cache
    dout = _like(dout, x.dtype, "dout")
    ref = x if ref is None else _like(ref, x.dtype, "ref")
    return _core.conv2d_backward_input_act(dout, w, ref, stride, pad, dilation, groups, act[0], act[1], act[2])


def conv_backward_weight(dout, cache):
    """Only (dw, db) of :func:`conv_backward`; db is None if b was None."""
    x, w, has_bias, stride, pad, dilation, groups = cache
    dout = _like(dout, x.dtype, "dout")
    return _core.conv2d_backward_weight(dout, x, w.shape[2:], stride, pad, dilation, groups, has_bias)


# --------------------------------------------------------------------------- pooling
def max_pool_forward(x, pool_param):
    """Max pooling over (pool_height, pool_width) windows.

    Args:
        x: (N, C, H, W).
        pool_param: 'pool_height', 'pool_width', 'stride'; optional 'pad' (padded
            cells never win), 'ceil_mode' (default False) and 'dilation' (int or
            (dh, dw), default 1: window cell (a, b) reads the input a*dh rows and
            b*dw columns from the window's corner, as PyTorch's MaxPool2d).

    Returns:
        out: (N, C, H', W') with H' = 1 + (H + pads - dh*(pool_height-1) - 1) // stride.
        cache: for :func:`max_pool_backward` (keeps the argmax of each window).
    """
    geometry = _pool_geometry(pool_param, extra=("dilation",))
    return max_pool2d_run(x, geometry + (pair(pool_param.get("dilation", 1), "pool_param['dilation']"),))


def max_pool2d_run(x, geometry):
    """Max pooling with checked ``geometry`` = (kernel, stride, pad, ceil_mode[, dilation])."""
    x = float_array(x, "x")
    kernel, stride, pad, ceil_mode = geometry[:4]
    dilation = geometry[4] if len(geometry) > 4 else 1
    out, argmax = _core.max_pool2d_forward(x, kernel, stride, pad, ceil_mode, dilation)
    return out, (x.shape, x.dtype, argmax)


def max_pool_backward(dout, cache):
    """Routes each gradient to its window's maximum. Returns dx, (N, C, H, W)."""
    shape, dtype, argmax = cache
    dout = _like(dout, dtype, "dout")
    return _core.max_pool2d_backward(dout, argmax, shape)


def avg_pool_forward(x, pool_param):
    """Average pooling; pool_param as :func:`max_pool_forward`, plus
    'count_include_pad' (default True: padded zeros count in the mean)."""
    x = float_array(x, "x")
    kernel, stride, pad, ceil_mode = _pool_geometry(pool_param, extra=("count_include_pad",))
    include = _checks.boolean(pool_param.get("count_include_pad", True), "pool_param['count_include_pad']")
    out = _core.avg_pool2d_forward(x, kernel, stride, pad, ceil_mode, include)
    return out, (x.shape, x.dtype, kernel, stride, pad, ceil_mode, include)


def avg_pool_backward(dout, cache):
    """Gradient of :func:`avg_pool_forward`. Returns dx, (N, C, H, W)."""
    shape, dtype, kernel, stride, pad, ceil_mode, include = cache
    dout = _like(dout, dtype, "dout")
    return _core.avg_pool2d_backward(dout, shape, kernel, stride, pad, ceil_mode, include)


def global_avg_pool_forward(x):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1)."""
    x = float_array(x, "x")
    return _core.global_avg_pool_forward(x), (x.shape, x.dtype)


def global_avg_pool_backward(dout, cache):
    shape, dtype = cache
    dout = _like(dout, dtype, "dout")
    return _core.global_avg_pool_backward(dout, shape)


# --------------------------------------------------------------------------- activations
def relu_forward(x):
    """max(x, 0), any shape. Returns (out, cache)."""
    x = float_array(x, "x")
    return _core.relu_forward(x), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0."""
    x = cache
    return _core.relu_backward(_like(dout, x.dtype, "dout"), x)


def relu6_forward(x, lo=0.0, hi=6.0):
    """clamp(x, lo, hi) (ReLU6 by default). Returns (out, cache)."""
    x = float_array(x, "x")
    lo, hi = _checks.number(lo, "lo", allow_inf=True), _checks.number(hi, "hi", allow_inf=True)
    if lo > hi:
        raise ValueError(f"lo ({lo:g}) must not exceed hi ({hi:g})")
    return _core.clamp_forward(x, lo, hi), (x, lo, hi)


def relu6_backward(dout, cache):
    x, lo, hi = cache
    return _core.clamp_backward(_like(dout, x.dtype, "dout"), x, lo, hi)


def leaky_relu_forward(x, alpha=0.01):
    """x if x > 0 else alpha * x. Returns (out, cache)."""
    x = float_array(x, "x")
    alpha = _checks.number(alpha, "alpha")
    return _core.leaky_relu_forward(x, alpha), (x, alpha)


def leaky_relu_backward(dout, cache):
    x, alpha = cache
    return _core.leaky_relu_backward(_like(dout, x.dtype, "dout"), x, alpha)


def sigmoid_forward(x):
    """1 / (1 + exp(-x)), any shape. Returns (out, cache); the cache is the output."""
    out = _core.sigmoid_forward(float_array(x, "x"))
    return out, out


def sigmoid_backward(dout, cache):
    """dx = dout * (1 - out) * out."""
    out = cache
    return _core.sigmoid_backward(_like(dout, out.dtype, "dout"), out)


def tanh_forward(x):
    """tanh(x), any shape. Returns (out, cache); the cache is the output."""
    out = _core.tanh_forward(float_array(x, "x"))
    return out, out


def tanh_backward(dout, cache):
    """dx = dout * (1 - out**2)."""
    out = cache
    return _core.tanh_backward(_like(dout, out.dtype, "dout"), out)


def hardsigmoid_forward(x, alpha=1.0 / 6.0, beta=0.5):
    """clamp(alpha * x + beta, 0, 1); the defaults are PyTorch's Hardsigmoid (ONNX's
    HardSigmoid defaults to alpha=0.2). Returns (out, cache)."""
    x = float_array(x, "x")
    alpha, beta = _checks.number(alpha, "alpha"), _checks.number(beta, "beta")
    return _core.hardsigmoid_forward(x, alpha, beta), (x, alpha, beta)


def hardsigmoid_backward(dout, cache):
    """dx = alpha * dout where 0 < alpha * x + beta < 1, else 0."""
    x, alpha, beta = cache
    return _core.hardsigmoid_backward(_like(dout, x.dtype, "dout"), x, alpha, beta)


def hardswish_forward(x):
    """x * clamp(x + 3, 0, 6) / 6 (MobileNetV3's h-swish), any shape. Returns (out, cache)."""
    x = float_array(x, "x")
    return _core.hardswish_forward(x), x


def hardswish_backward(dout, cache):
    x = cache
    return _core.hardswish_backward(_like(dout, x.dtype, "dout"), x)


def silu_forward(x):
    """x * sigmoid(x) (SiLU, swish; EfficientNet's activation), any shape. Returns (out, cache)."""
    x = float_array(x, "x")
    return _core.silu_forward(x), x


def silu_backward(dout, cache):
    x = cache
    return _core.silu_backward(_like(dout, x.dtype, "dout"), x)


# --------------------------------------------------------------------------- affine
def affine_forward(x, w, b):
    """Fully connected layer.

    Args:
        x: (N, d_1, ..., d_k), flattened to (N, D) with D = d_1 * ... * d_k.
        w: (D, M).
        b: (M,) or None.

    Returns:
        out: (N, M); cache for :func:`affine_backward`.
    """
    x = float_array(x, "x")
    if x.ndim < 1:
        raise ValueError("affine_forward: x must have a batch dimension, got a scalar")
    x2 = x.reshape(x.shape[0], -1) if x.shape[0] > 0 else x.reshape(0, int(np.prod(x.shape[1:])))
    w = _like(w, x.dtype, "w")
    b = _like(b, x.dtype, "b")
    out = _core.affine_forward(x2, w, b)
    return out, (x.shape, x2, w, b is not None)


def affine_backward(dout, cache):
    """Returns (dx, dw, db); dx has the shape of the original x, db is None if b was None."""
    shape, x2, w, has_bias = cache
    dout = _like(dout, x2.dtype, "dout")
    dx, dw, db = _core.affine_backward(dout, x2, w)
    return dx.reshape(shape), dw, (db if has_bias else None)


def affine_backward_input(dout, cache):
    """Only dx of :func:`affine_backward` (what image-gradient algorithms need)."""
    shape, x2, w, _ = cache
    dx, _, _ = _core.affine_backward(_like(dout, x2.dtype, "dout"), x2, w, True, False)
    return dx.reshape(shape)


def affine_backward_params(dout, cache):
    """Only (dw, db) of :func:`affine_backward`; db is None if b was None."""
    _, x2, w, has_bias = cache
    _, dw, db = _core.affine_backward(_like(dout, x2.dtype, "dout"), x2, w, False, True)
    return dw, (db if has_bias else None)


# --------------------------------------------------------------------------- batch norm
def _bn_forward(x, gamma, beta, bn_param, what, relu=False):
    if not isinstance(bn_param, dict):
        raise TypeError(f"bn_param must be a dict, got {type(bn_param).__name__}")
    mode = bn_param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    eps = _checks.number(bn_param.get("eps", 1e-5), "bn_param['eps']")
    momentum = _checks.number(bn_param.get("momentum", 0.9), "bn_param['momentum']")
    if not eps > 0:
        raise ValueError(f"bn_param['eps'] must be > 0, got {eps}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"bn_param['momentum'] must be in [0, 1], got {momentum}")
    channels = x.shape[1] if x.ndim >= 2 else 0
    gamma = _like(gamma, x.dtype, "gamma")
    beta = _like(beta, x.dtype, "beta")
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    running_mean = (np.zeros(channels, dtype=x.dtype) if running_mean is None
                    else _like(running_mean, x.dtype, "bn_param['running_mean']"))
    running_var = (np.zeros(channels, dtype=x.dtype) if running_var is None
                   else _like(running_var, x.dtype, "bn_param['running_var']"))
    if mode == "train":
        out, mean, var, inv_std = _core.batchnorm_forward_train(x, gamma, beta, eps, relu=relu)
        # New arrays: the caller's running statistics are never written in place.
        bn_param["running_mean"] = momentum * running_mean + (1.0 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1.0 - momentum) * var
        cache = ("train", x, gamma, mean, inv_std)
    else:
        return batchnorm_test_run(x, gamma, beta, running_mean, running_var, eps, relu)
    return out, cache


def batchnorm_test_run(x, gamma, beta, running_mean, running_var, eps, relu):
    """Test-mode batch norm of a float array x with checked eps (what a Model's layer
    runs in every pass of a gradient loop); the arrays are taken in x's dtype."""
    dt = x.dtype
    gamma, beta = _like(gamma, dt, "gamma"), _like(beta, dt, "beta")
    running_mean = _like(running_mean, dt, "running_mean")
    running_var = _like(running_var, dt, "running_var")
    out = _core.batchnorm_forward_test(x, gamma, beta, running_mean, running_var, eps, relu=relu)
    return out, ("test", x, gamma, running_mean, running_var, eps)


def _bn_backward(dout, cache):
    x = cache[1]
    dout = _like(dout, x.dtype, "dout")
    if cache[0] == "train":
        _, x, gamma, mean, inv_std = cache
        return _core.batchnorm_backward_train(dout, x, gamma, mean, inv_std)
    _, x, gamma, running_mean, running_var, eps = cache
    return _core.batchnorm_backward_test(dout, x, gamma, running_mean, running_var, eps)


def batchnorm_backward_input(dout, cache):
    """Only dx, for a cache of :func:`batchnorm_forward` or
    :func:`spatial_batchnorm_forward`. In test mode that is dout * gamma /
    sqrt(running_var + eps): one pass, no sums over the batch."""
    if cache[0] == "train":
        return _bn_backward(dout, cache)[0]
    _, x, gamma, _, running_var, eps = cache
    return _core.batchnorm_backward_test_input(_like(dout, x.dtype, "dout"), gamma, running_var, eps)


def batchnorm_forward(x, gamma, beta, bn_param, relu=False):
    """Batch normalization of (N, D) features.

    bn_param: 'mode' ('train' or 'test'), 'eps' (1e-5), 'momentum' (0.9),
    'running_mean', 'running_var' ((D,), zeros when absent). Train mode uses the
    batch mean and biased variance and stores updated running statistics back
    into bn_param as new arrays. relu=True returns max(out, 0) from the same pass
    (the cache is the batch norm's own; a following relu_backward masks with the
    returned out > 0). Returns (out, cache).
    """
    x = float_array(x, "x")
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward: x must be 2-D (N, D), got shape {x.shape}")
    return _bn_forward(x, gamma, beta, bn_param, "batchnorm_forward", relu)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta)."""
    return _bn_backward(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param, relu=False):
    """Batch normalization of (N, C, H, W) per channel, over N, H and W.

    gamma, beta: (C,). bn_param and relu as :func:`batchnorm_forward`. Returns
    (out, cache).
    """
    x = float_array(x, "x")
    if x.ndim != 4:
        raise ValueError(f"spatial_batchnorm_forward: x must be 4-D (N, C, H, W), got shape {x.shape}")
    return _bn_forward(x, gamma, beta, bn_param, "spatial_batchnorm_forward", relu)


def spatial_batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta)."""
    return _bn_backward(dout, cache)


# --------------------------------------------------------------------------- loss
def softmax_loss(x, y):
    """Softmax cross-entropy.

    Args:
        x: scores, (N, C).
        y: labels, (N,), integers in [0, C).

    Returns:
        loss: mean over the batch of -log softmax(x)[y] (a float).
        dx: gradient of the loss with respect to x, (N, C), in x's dtype.
    """
    x = float_array(x, "x")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"softmax_loss: x must be a non-empty 2-D (N, C) array, got shape {x.shape}")
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"softmax_loss: y must be integer class labels, got dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"softmax_loss: y must have shape ({x.shape[0]},) to match x {x.shape}, got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"softmax_loss: labels must be in [0, {x.shape[1]}), got range "
                         f"[{y.min()}, {y.max()}]")
    n = x.shape[0]
    shifted = x - x.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    loss = -float(log_probs[np.arange(n), y].astype(np.float64).mean())
    dx = np.exp(log_probs)
    dx[np.arange(n), y] -= 1
    dx /= n
    return loss, dx.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- blurs
def _sigma(sigma):
    """A blur's sigma: a number >= 0 or a pair of them (numbers, not strings)."""
    if isinstance(sigma, (tuple, list)):
        if len(sigma) != 2:
            raise ValueError(f"sigma must be a number or a pair (sigma_h, sigma_w), got {sigma!r}")
        pair = tuple(_checks.number(v, "sigma") for v in sigma)
    else:
        pair = (_checks.number(sigma, "sigma"),)
    if min(pair) < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    return pair if len(pair) == 2 else pair[0]


def _truncate(truncate):
    t = _checks.number(truncate, "truncate")
    if t <= 0:
        raise ValueError(f"truncate must be > 0 (the kernel's radius in sigmas), got {truncate!r}")
    return t


def gaussian_blur(x, sigma, truncate=4.0):
    """Gaussian blur over H and W of (N, C, H, W) images.

    Equals ``scipy.ndimage.gaussian_filter(x, sigma=(0, 0, s, s), mode='reflect',
    truncate=truncate)``. ``sigma`` is a float or (sigma_h, sigma_w); 0 leaves an
    axis unchanged.
    """
    x = float_array(x, "x")
    return _core.gaussian_blur(x, _sigma(sigma), _truncate(truncate))


def gaussian_blur_adjoint(x, sigma, truncate=4.0):
    """The transpose of :func:`gaussian_blur` as a linear map (its reflect
    boundary makes it differ from the blur at the borders); use it to carry a
    gradient back through a blur."""
    x = float_array(x, "x")
    return _core.gaussian_blur_adjoint(x, _sigma(sigma), _truncate(truncate))


_CS231N_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 188.0, 2.0], [1.0, 2.0, 1.0]]) / 200.0


def _cs231n_filters(channels, dtype):
    return np.ascontiguousarray(np.broadcast_to(_CS231N_KERNEL, (channels, 1, 3, 3)), dtype=dtype)


def cs231n_blur(x):
    """CS231n 2016's ``blur_image``: the 3x3 kernel [[1,2,1],[2,188,2],[1,2,1]]/200
    per channel with zero padding. A very light smoothing, *not* a Gaussian."""
    x = float_array(x, "x")
    if x.ndim != 4:
        raise ValueError(f"cs231n_blur: x must be 4-D (N, C, H, W), got shape {x.shape}")
    c = x.shape[1]
    return _core.conv2d_forward(x, _cs231n_filters(c, x.dtype), None, 1, 1, 1, c)


def cs231n_blur_adjoint(x):
    """The transpose of :func:`cs231n_blur` (equal to it: the kernel is symmetric)."""
    x = float_array(x, "x")
    if x.ndim != 4:
        raise ValueError(f"cs231n_blur_adjoint: x must be 4-D (N, C, H, W), got shape {x.shape}")
    c = x.shape[1]
    return _core.conv2d_backward_input(x, _cs231n_filters(c, x.dtype), x.shape[2:], 1, 1, 1, c)
