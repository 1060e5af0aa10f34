"""Naive float64 numpy references for conv2d, affine and gemm (the tests' ground truth).

Plain loops over the kernel taps, written for clarity, not speed; padding is
(top, bottom, left, right), stride/dilation are (h, w) pairs.
"""
import numpy as np


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _pad4(p):
    if np.isscalar(p):
        return (p, p, p, p)
    p = tuple(p)
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else p


def out_size(n, k, stride, pad_lo, pad_hi, dilation):
    return (n + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """x (N,C,H,W), w (F,C/groups,KH,KW), b (F,) -> (N,F,OH,OW), float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    pt, pb, pl, pr = _pad4(padding)
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    OH, OW = out_size(H, KH, sh, pt, pb, dh), out_size(W, KW, sw, pl, pr, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = np.zeros((N, F, OH, OW))
    for g in range(groups):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        wg = w[g * Fg:(g + 1) * Fg]
        for kh in range(KH):
            for kw in range(KW):
                h0, w0 = kh * dh, kw * dw
                patch = xg[:, :, h0:h0 + sh * (OH - 1) + 1:sh, w0:w0 + sw * (OW - 1) + 1:sw]  # (N,Cg,OH,OW)
                out[:, g * Fg:(g + 1) * Fg] += np.einsum("nchw,fc->nfhw", patch, wg[:, :, kh, kw])
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def conv2d_backward(dout, x, w, stride=1, padding=0, dilation=1, groups=1):
    """Adjoint of conv2d_forward: returns (dx, dw, db), float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dout = np.asarray(dout, np.float64)
    (sh, sw), (dh, dw_) = _pair(stride), _pair(dilation)
    pt, pb, pl, pr = _pad4(padding)
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    Fg = F // groups
    OH, OW = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for g in range(groups):
        cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for kh in range(KH):
            for kw in range(KW):
                h0, w0 = kh * dh, kw * dw_
                hs = slice(h0, h0 + sh * (OH - 1) + 1, sh)
                ws = slice(w0, w0 + sw * (OW - 1) + 1, sw)
                dw[fs, :, kh, kw] += np.einsum("nfhw,nchw->fc", dout[:, fs], xp[:, cs, hs, ws])
                dxp[:, cs, hs, ws] += np.einsum("nfhw,fc->nchw", dout[:, fs], w[fs, :, kh, kw])
    dx = dxp[:, :, pt:pt + H, pl:pl + W]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def affine_forward(x, w, b=None):
    out = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    return out if b is None else out + np.asarray(b, np.float64)


def affine_backward(dout, x, w):
    dout, x, w = (np.asarray(a, np.float64) for a in (dout, x, w))
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def gemm(a, b, trans_a=False, trans_b=False):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a.T if trans_a else a) @ (b.T if trans_b else b)
