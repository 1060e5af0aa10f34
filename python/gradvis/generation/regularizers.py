"""Image priors used by the generation algorithms: each returns (value, gradient)."""
from __future__ import annotations

import numpy as np

__all__ = ["l2_penalty", "total_variation"]


def l2_penalty(X):
    """sum(X^2) over each image's pixels, summed over the batch; gradient 2X."""
    return float((X.astype(np.float64) ** 2).sum()), 2.0 * X


def total_variation(X, beta=2.0, eps=1e-8):
    """Total variation TV^beta (Mahendran & Vedaldi 2015):
    sum over pixels of ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2)^(beta / 2).

    Args:
        X: (N, C, H, W).
        beta: 2 (smooth, the default) or any beta >= 1 (1 keeps edges sharper).
        eps: added inside the power for beta < 2, where the root is not
            differentiable at 0.

    Returns:
        (value, gradient) with gradient of X's shape and dtype.
    """
    if isinstance(beta, (str, bytes)) or not np.isfinite(beta) or beta < 1:
        raise ValueError(f"total_variation: beta must be a finite number >= 1, got {beta!r}")
    dx = X[:, :, :-1, 1:] - X[:, :, :-1, :-1]
    dy = X[:, :, 1:, :-1] - X[:, :, :-1, :-1]
    D = dx * dx + dy * dy
    if beta == 2:
        value = float(D.sum(dtype=np.float64))
        coef = 1.0
    else:
        De = D + eps
        value = float((De ** (beta / 2)).sum(dtype=np.float64))
        coef = (beta / 2) * De ** (beta / 2 - 1)
    gx = 2 * coef * dx
    gy = 2 * coef * dy
    g = np.zeros_like(X)
    g[:, :, :-1, 1:] += gx
    g[:, :, :-1, :-1] -= gx + gy
    g[:, :, 1:, :-1] += gy
    return value, g
