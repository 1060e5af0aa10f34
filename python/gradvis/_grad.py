"""Gradients of model outputs with respect to the input image."""
from __future__ import annotations

import numpy as np


def input_gradient(model, dout, cache):
    """d(objective)/dX for the cached forward pass, without parameter gradients."""
    return model.backward(dout, cache, param_grads=False)[0]


def one_hot(n, num_classes, y, dtype):
    d = np.zeros((n, num_classes), dtype=dtype)
    d[np.arange(n), y] = 1
    return d


def softmax(scores):
    s = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def class_score_gradient(model, X, y):
    """Scores (N, K) and d score_y / dX (N, C, H, W), test mode."""
    scores, cache = model.forward(X, mode="test")
    dX = input_gradient(model, one_hot(X.shape[0], scores.shape[1], y, scores.dtype), cache)
    return scores, dX
