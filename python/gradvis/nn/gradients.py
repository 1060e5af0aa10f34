"""Gradients of model outputs with respect to the input image."""
from __future__ import annotations

import numpy as np

__all__ = ["input_gradient", "one_hot", "class_score_gradient"]


def input_gradient(model, dout, cache):
    """d(objective)/dX for the cached forward pass, without parameter gradients."""
    return model.backward(dout, cache, param_grads=False)[0]


def one_hot(n, num_classes, y, dtype):
    """(n, num_classes) array of ``dtype``, 1 at (i, y[i]) and 0 elsewhere."""
    d = np.zeros((n, num_classes), dtype=dtype)
    d[np.arange(n), y] = 1
    return d


def class_score_gradient(model, X, y):
    """Scores (N, K) and d score_y / dX (N, C, H, W), test mode."""
    scores, cache = model.forward(X, mode="test")
    dX = input_gradient(model, one_hot(X.shape[0], scores.shape[1], y, scores.dtype), cache)
    return scores, dX
