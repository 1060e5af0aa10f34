"""Softmax and losses on class scores (N, C)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from . import functional as F

__all__ = ["softmax", "softmax_cross_entropy"]


def softmax(scores):
    """Class probabilities of scores (N, C), computed in float64 (a float64 array)."""
    s = np.asarray(scores, np.float64)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(scores, y, label_smoothing=0.0):
    """Mean softmax cross-entropy and its gradient d(loss)/d(scores), (N, C).

    ``label_smoothing`` = eps uses the target (1 - eps) * onehot + eps / C.
    """
    scores = np.asarray(scores)
    label_smoothing = _checks.finite_float(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if label_smoothing == 0.0:
        return F.softmax_loss(scores, y)
    y = np.asarray(y)
    n, c = scores.shape
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= c)):
        raise ValueError(f"y must be ({n},) integer labels in [0, {c}), got {y.dtype} {y.shape}")
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full_like(log_p, label_smoothing / c)
    target[np.arange(n), y] += 1.0 - label_smoothing
    loss = -float((target * log_p).sum(dtype=np.float64) / n)
    dx = (np.exp(log_p) - target) / n
    return loss, dx.astype(scores.dtype, copy=False)
