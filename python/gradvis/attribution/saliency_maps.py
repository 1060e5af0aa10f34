"""Class saliency maps (Simonyan, Vedaldi & Zisserman 2013, section 3.1)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import class_score_gradient
from ..nn.graph import check_classifier

__all__ = ["compute_saliency_maps", "smoothgrad_saliency_maps"]


def _reduce_channels(grad):
    # |gradient|, max over colour channels (a single channel: just the absolute value)
    return np.abs(grad).max(axis=1)


def compute_saliency_maps(X, y, model, batch_size=64):
    """Saliency maps: |d score_y / d X|, maximum over colour channels.

    The gradient is of the *unnormalized* class score (not the softmax, not the
    loss), computed in test mode. Images are independent: the batch is split into
    chunks of ``batch_size`` to bound memory.

    Args:
        X: images in the model's input space, (N, C, H, W).
        y: class per image, (N,) ints (or one int for all); class names or wnids where the
            model has them (``"lemon"``, ``["lemon", 3]``).
        model: a :class:`gradvis.Model`.
        batch_size: images per forward/backward pass.

    Returns:
        saliency: (N, H, W), non-negative, in X's dtype.

    Example:
        >>> model = gradvis.load_pretrained()
        >>> X = model.preprocess(images)                     # uint8 (N, 64, 64, 3)
        >>> sal = compute_saliency_maps(X, labels, model)    # (N, 64, 64)

    Reference: K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional
    Networks: Visualising Image Classification Models and Saliency Maps", 2013.
    """
    check_classifier(model, "compute_saliency_maps")
    X = _checks.images(X, model)
    y = _checks.labels(y, X.shape[0], model)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    out = np.empty((X.shape[0],) + X.shape[2:], dtype=X.dtype)
    for i in range(0, X.shape[0], batch_size):
        _, dX = class_score_gradient(model, X[i:i + batch_size], y[i:i + batch_size])
        out[i:i + batch_size] = _reduce_channels(dX)
    return out


def smoothgrad_saliency_maps(X, y, model, num_samples=25, noise_level=0.15, seed=0, batch_size=64):
    """SmoothGrad (Smilkov et al. 2017): the saliency of the mean gradient over
    noisy copies of each image, which removes much of the speckle.

    Args:
        X, y, model: as :func:`compute_saliency_maps`.
        num_samples: noisy copies per image.
        noise_level: noise standard deviation as a fraction of each image's
            value range (max - min).
        seed: int or numpy Generator for the noise.

    Returns:
        saliency: (N, H, W).
    """
    check_classifier(model, "smoothgrad_saliency_maps")
    X = _checks.images(X, model)
    y = _checks.labels(y, X.shape[0], model)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    noise_level = _checks.nonneg_float(noise_level, "noise_level")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    rng = _checks.rng_from(seed)
    out = np.empty((X.shape[0],) + X.shape[2:], dtype=X.dtype)
    per = max(1, batch_size // num_samples)
    # at most batch_size noisy copies in memory at once, however many samples: one
    # image's samples are drawn in chunks (the same stream of noise as in one draw)
    chunk = num_samples if per > 1 else min(num_samples, batch_size)
    for i in range(0, X.shape[0], per):
        Xb, yb = X[i:i + per], y[i:i + per]
        span = (Xb.max(axis=(1, 2, 3)) - Xb.min(axis=(1, 2, 3))).reshape(-1, 1, 1, 1, 1)
        total = np.zeros(Xb.shape, np.float64)
        for s in range(0, num_samples, chunk):
            k = min(chunk, num_samples - s)
            with np.errstate(over="ignore", invalid="ignore"):
                noise = (noise_level * span * rng.standard_normal((Xb.shape[0], k) + Xb.shape[1:])).astype(X.dtype)
            if not np.isfinite(noise).all():
                raise ValueError(f"noise_level {noise_level:g} times the images' value range overflows "
                                 f"{X.dtype}; use a noise_level near 0.1-0.2")
            noisy = Xb[:, None] + noise
            _, dX = class_score_gradient(model, noisy.reshape((-1,) + Xb.shape[1:]), np.repeat(yb, k))
            total += dX.reshape(noisy.shape).sum(axis=1)
        out[i:i + per] = _reduce_channels((total / num_samples).astype(X.dtype))
    return out
