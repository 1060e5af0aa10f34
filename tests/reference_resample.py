"""The float64 numpy reference of the bilinear resize and rotation (and their
adjoints) that gradvis.optvis.transforms runs in C++: each is written as 4 taps
per output pixel (flat source index, weight), gathered forward and scattered
back with np.bincount."""
import math

import numpy as np


def axis_taps(n_in, n_out):
    """Per output index along one axis: two sources and their weights (half-pixel
    centres, sources clamped to the axis)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    return lo, hi, 1.0 - frac, frac


def scale_taps(h, w, size):
    ly, hy, wly, why = axis_taps(h, size[0])
    lx, hx, wlx, whx = axis_taps(w, size[1])
    idx = np.stack([(ys[:, None] * w + xs[None, :]).ravel() for ys in (ly, hy) for xs in (lx, hx)])
    wts = np.stack([(a[:, None] * b[None, :]).ravel() for a in (wly, why) for b in (wlx, whx)])
    return idx, wts


def rotation_taps(h, w, degrees):
    a = math.radians(degrees)
    ca, sa = math.cos(a), math.sin(a)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx,
                         indexing="ij")
    xs = ca * xx - sa * yy + cx
    ys = sa * xx + ca * yy + cy
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    idx, wts = [], []
    for dy_, dx_, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                         (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy_, x0 + dx_
        inside = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
        idx.append((np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)).astype(np.int64).ravel())
        wts.append(np.where(inside, wt, 0.0).ravel())
    return np.stack(idx), np.stack(wts)


def gather(x, idx, wts, size):
    n, c, h, w = x.shape
    flat = np.asarray(x, np.float64).reshape(n * c, h * w)
    y = sum(flat[:, idx[k]] * wts[k] for k in range(len(idx)))
    return y.reshape(n, c, *size)


def scatter(dy, idx, wts, in_hw):
    n, c = dy.shape[:2]
    h, w = in_hw
    g = np.asarray(dy, np.float64).reshape(n * c, -1)
    rows = np.arange(n * c, dtype=np.int64)[:, None, None] * (h * w)
    dx = np.bincount((rows + idx[None]).ravel(), weights=(g[:, None, :] * wts[None]).ravel(),
                     minlength=n * c * h * w)
    return dx.reshape(n, c, h, w)


def resize(x, size):
    return gather(x, *scale_taps(x.shape[2], x.shape[3], size), size)


def resize_adjoint(dy, in_hw):
    return scatter(dy, *scale_taps(in_hw[0], in_hw[1], dy.shape[2:]), in_hw)


def rotate(x, degrees):
    return gather(x, *rotation_taps(x.shape[2], x.shape[3], degrees), x.shape[2:])


def rotate_adjoint(dy, degrees):
    return scatter(dy, *rotation_taps(dy.shape[2], dy.shape[3], degrees), dy.shape[2:])
