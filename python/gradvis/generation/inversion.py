"""Feature inversion (Mahendran & Vedaldi 2015): an image whose features at one
layer match given features."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import input_gradient
from ..nn.graph import check_model
from ..nn.imageops import blur
from .regularizers import total_variation

__all__ = ["invert_features", "feature_error", "MAX_TV_BETA"]

# Largest TV exponent: ((dx^2 + dy^2) in 0-255 units)^(beta / 2) stays within float64
# (and its gradient's square too) for beta up to about 60; 16 leaves a wide margin
# above the values in use (1 to 2).
MAX_TV_BETA = 16.0


def feature_error(X, target_feats, layer, model):
    """Relative feature error ||phi(X) - phi_0|| / ||phi_0|| per image, (N,)."""
    feats, _ = model.forward(X, end=layer, mode="test")
    d = (feats - target_feats).reshape(feats.shape[0], -1).astype(np.float64)
    t = np.asarray(target_feats, np.float64).reshape(feats.shape[0], -1)
    return np.sqrt((d * d).sum(axis=1)) / np.maximum(np.sqrt((t * t).sum(axis=1)), 1e-30)


def invert_features(target_feats, layer, model, num_iterations=300, learning_rate=6.0, l2_reg=1e-7,
                    tv_reg=1e-5, tv_beta=2.0, blur_every=0, blur_sigma=0.5, clip=True, init=None,
                    init_scale=10.0, image_size=None, seed=0, callback=None):
    """Reconstruct images from one layer's features by gradient descent.

    Minimizes, per image,

        ||phi(X) - phi_0||^2 / ||phi_0||^2 + l2_reg * ||x||^2 / P + tv_reg * TV^beta(x) / P

    where x is X in 0-255 pixel units (whatever the model's input normalization)
    and P the number of pixel values, so the priors' weights depend neither on the
    model nor on the image size. Adam, from seeded noise; the learning rate, in
    pixels, decays linearly to a tenth. After each step the image is clipped to the model's valid
    range and, every ``blur_every`` steps, blurred. Shallow layers reconstruct
    the image almost exactly; deep layers keep the parts of the object but lose
    their arrangement.

    Args:
        target_feats: the features to match, as returned by
            ``model.forward(X, end=layer)[0]``, (N, ...).
        layer: name or index of the layer whose *output* the features are.
        model: a :class:`gradvis.Model`.
        num_iterations: descent steps.
        learning_rate: Adam step size, in pixels.
        l2_reg, tv_reg: weights of the L2 and total-variation priors (on pixel values).
        tv_beta: the TV exponent, 1 to :data:`MAX_TV_BETA` (2 smooth, 1 sharper edges).
        blur_every, blur_sigma: optional periodic Gaussian blur (0: never).
        clip: keep X in ``model.input_range()``.
        init: starting images instead of noise, (N, C, H, W).
        init_scale: standard deviation of the starting noise, in pixels (>= 0).
        image_size: (H, W) of the reconstruction, or one int for a square image;
            default the model's input size (or init's, which it must then match).
        seed: int or numpy Generator.
        callback: ``callback(t, X, info)``; info has 'feature_error' (N,) and 'loss'.

    Returns:
        X: (N, C, H, W) float32 in the model's input space.

    Example:
        >>> feats, _ = model.forward(X, end='relu3')
        >>> X_rec = invert_features(feats, 'relu3', model)

    Reference: A. Mahendran, A. Vedaldi, "Understanding Deep Image Representations
    by Inverting Them", CVPR 2015.
    """
    check_model(model)
    target = np.asarray(target_feats)
    if target.dtype.kind != "f":
        raise TypeError(f"target_feats must be a float array, got dtype {target.dtype}")
    if target.ndim < 2 or target.size == 0:
        raise ValueError(f"target_feats must be (N, ...) features, got shape {target.shape}")
    if not np.all(np.isfinite(target)):
        raise ValueError("target_feats contains NaN or infinite values")
    target = target.astype(np.float32)
    n = target.shape[0]
    num_iterations = _checks.positive_int(num_iterations, "num_iterations", allow_zero=True)
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
    l2_reg = _checks.nonneg_float(l2_reg, "l2_reg")
    tv_reg = _checks.nonneg_float(tv_reg, "tv_reg")
    tv_beta = _checks.finite_float(tv_beta, "tv_beta")
    if not 1 <= tv_beta <= MAX_TV_BETA:
        raise ValueError(f"tv_beta must be between 1 and {MAX_TV_BETA:g} (1 to 2 are the usual values; "
                         f"beyond {MAX_TV_BETA:g}, TV^beta of 0-255 pixel differences overflows), "
                         f"got {tv_beta!r}")
    blur_every = _checks.positive_int(blur_every, "blur_every", allow_zero=True)
    blur_sigma = _checks.nonneg_float(blur_sigma, "blur_sigma")
    rng = _checks.rng_from(seed)
    model.index(layer, "layer")  # unknown layer: a clear error before any work

    X = _checks.start_images(init, n, model, image_size, init_scale, rng, "target_feats")
    probe, _ = model.forward(X, end=layer, mode="test")
    if probe.shape != target.shape:
        raise ValueError(f"target_feats has shape {target.shape} but layer {layer!r} gives "
                         f"{probe.shape} for images of shape {X.shape}")
    lo, hi = _checks.valid_range(model, X.shape)
    px = _checks.pixel_scale(model)

    axes = tuple(range(1, target.ndim))
    t_norm2 = np.maximum((target.astype(np.float64) ** 2).sum(axis=axes), 1e-30)
    t_norm2_b = t_norm2.reshape((-1,) + (1,) * (target.ndim - 1)).astype(np.float32)
    pixels = float(np.prod(X.shape[1:]))
    # Adam's moments and the priors' gradients in float64: TV^beta for beta > 2 and
    # large priors reach values whose squares overflow float32
    m = np.zeros(X.shape, np.float64)
    v = np.zeros(X.shape, np.float64)
    beta1, beta2 = 0.9, 0.999
    for t in range(num_iterations):
        feats, cache = model.forward(X, end=layer, mode="test")
        diff = feats - target
        g = input_gradient(model, (2.0 / t_norm2_b) * diff, cache).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            if l2_reg:
                g += (2.0 * l2_reg / pixels) * X * (px * px)
            if tv_reg:
                _, g_tv = total_variation(X.astype(np.float64) * px, tv_beta)
                g += (tv_reg / pixels) * g_tv * px
            finite = np.isfinite(g).all()
            if finite:
                g2 = g * g
                finite = np.isfinite(g2).all()
        if not finite:
            raise ValueError(f"invert_features: the gradient overflowed at step {t} (tv_reg={tv_reg:g}, "
                             f"tv_beta={tv_beta:g}, l2_reg={l2_reg:g}); lower tv_reg, tv_beta or l2_reg")
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g2
        mhat = m / (1 - beta1 ** (t + 1))
        vhat = v / (1 - beta2 ** (t + 1))
        lr = learning_rate * (1.0 - 0.9 * t / max(1, num_iterations))
        X = X - (lr / px) * (mhat / (np.sqrt(vhat) + 1e-12))
        if clip:
            X = np.clip(X, lo, hi)
        if blur_every and (t + 1) % blur_every == 0:
            X = blur(X, blur_sigma)
        X = X.astype(np.float32, copy=False)
        if callback is not None:
            err = np.sqrt((diff.astype(np.float64) ** 2).sum(axis=axes) / t_norm2)
            callback(t, X, {"feature_error": err, "loss": float((err ** 2).sum())})
    return X
