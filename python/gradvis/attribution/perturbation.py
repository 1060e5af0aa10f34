"""Occlusion (Captum ``Occlusion``)."""
from __future__ import annotations

import numbers

import numpy as np

from .. import _checks
from . import _common as C

__all__ = ["occlusion"]


def _window_arg(value, shape, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * len(shape)
    try:
        vals = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}") from None
    if len(vals) == 2:      # (h, w): the window spans every channel... or strides step over them
        vals = (None,) + vals
    if len(vals) != len(shape):
        raise ValueError(f"{name} must have {len(shape)} entries (C, H, W) or 2 (H, W), got {value!r}")
    return vals


def occlusion(X, target, model, sliding_window_shapes, strides=None, baselines=0, internal_batch_size=None):
    """Occlusion (Captum ``Occlusion``): slide a window over the input, replace
    it by the baseline and attribute the drop of the target's score to each
    covered value, averaged over the windows covering it.

    Window positions along each of (C, H, W) are ``0, s, 2s, ...``, ``ceil((D -
    w) / s) + 1`` of them (the last may be cut by the border), as in Captum.

    Args:
        X: (N, C, H, W); target, model as :func:`gradvis.attribution.saliency`.
        sliding_window_shapes: (c, h, w), or (h, w) for windows over all channels.
        strides: None (1 in every dimension), an int, (s_c, s_h, s_w) or
            (s_h, s_w) (channels then step by the window's depth).
        baselines: a number or an array broadcastable to X.
        internal_batch_size: occluded copies per forward pass.

    Returns:
        (N, C, H, W) in X's dtype.

    Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional
    Networks", ECCV 2014.
    """
    C.check_model(model, "occlusion")
    X = C.check_images(X, model)
    shape = X.shape[1:]
    win = _window_arg(sliding_window_shapes, shape, "sliding_window_shapes")
    win = tuple(shape[0] if w is None else w for w in win)
    for w, d, axis in zip(win, shape, "CHW"):
        w = _checks.positive_int(w, "sliding_window_shapes")
        if w > d:
            raise ValueError(f"sliding_window_shapes {tuple(win)} exceeds the input's {axis} size {d} "
                             f"(input (C, H, W) = {shape})")
    if strides is None:
        st = (1, 1, 1)
    else:
        st = _window_arg(strides, shape, "strides")
        st = tuple(win[0] if s is None else s for s in st)
    st = tuple(_checks.positive_int(s, "strides") for s in st)
    base = C.baselines_arg(baselines, X)
    b = C.forward_batch_arg(internal_batch_size, model, X)
    # the images' own scores in batches; with target None the pass that finds
    # the predicted class gives them
    scores = C.predict(model, X, b) if target is None else None
    t = C.resolve_target(target, X, model, scores=scores)
    if scores is None:
        orig_scores = C.target_scores(model, X, t, b)
    else:
        orig_scores = scores[np.arange(len(X)), t].astype(np.float64)
    counts = [int(np.ceil((d - w) / s)) + 1 for d, w, s in zip(shape, win, st)]
    grids = np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, st)], indexing="ij")
    starts = np.stack([g.reshape(-1) for g in grids], axis=1)      # (windows, 3): c0, h0, w0
    coverage = np.zeros(shape, np.float64)
    for c0, h0, w0 in starts:
        coverage[c0:c0 + win[0], h0:h0 + win[1], w0:w0 + win[2]] += 1
    out = np.empty_like(X)
    for i in range(len(X)):
        x, bi = X[i], base[i]
        orig = orig_scores[i]
        acc = np.zeros(shape, np.float64)
        for k0 in range(0, len(starts), b):
            chunk = starts[k0:k0 + b]
            batch = np.repeat(x[None], len(chunk), axis=0)
            for j, (c0, h0, w0) in enumerate(chunk):
                sl = (slice(c0, c0 + win[0]), slice(h0, h0 + win[1]), slice(w0, w0 + win[2]))
                batch[(j,) + sl] = bi[sl]
            scores = model.forward(batch, cache=False)[0][:, t[i]]
            diffs = orig - scores.astype(np.float64)
            for (c0, h0, w0), d in zip(chunk, diffs):
                acc[c0:c0 + win[0], h0:h0 + win[1], w0:w0 + win[2]] += d
        out[i] = acc / coverage
    return out
