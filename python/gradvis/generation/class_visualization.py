"""Class visualization: an image the network finds typical of a class
(Simonyan et al. 2013, section 2; Yosinski et al. 2015)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import input_gradient, one_hot
from ..nn.graph import check_classifier
from ..nn.imageops import blur, jitter, random_jitter_offsets, unjitter
from ..nn.losses import softmax

__all__ = ["create_class_visualization"]


def create_class_visualization(target_y, model, num_iterations=200, learning_rate=None, l2_reg=1e-3,
                               blur_every=10, blur_sigma=0.5, blur_kind="gaussian", max_jitter=4,
                               normalize_grad=True, clip=True, init=None, init_scale=10.0,
                               image_size=None, seed=0, callback=None):
    """Gradient ascent from noise on ``score_y(X) - l2_reg * ||X||^2``.

    Each iteration: roll the image by a random (oy, ox) in [-max_jitter, max_jitter],
    compute the gradient of the target score, add ``-2 * l2_reg * X``, step,
    roll back, clip to the model's valid range, and every ``blur_every``
    iterations blur (Gaussian of ``blur_sigma`` pixels, or CS231n's 3x3
    smoothing with ``blur_kind='cs231n'``).

    With ``normalize_grad`` (the default) the ascent works in 0-255 pixel units,
    whatever the model's input normalization: the step moves pixels by
    ``learning_rate * g / mean(|g|)`` pixels (g the gradient with respect to pixel
    values) and the L2 penalty acts on pixel values, so one set of defaults suits
    every model and class. With ``normalize_grad=False`` the step is the course's
    plain ``X += learning_rate * (g - 2 * l2_reg * X)`` in the model's input space
    (2016: learning_rate 10000, l2_reg 1e-6 on 0-255 inputs; 2017: 25 and 1e-3).

    Args:
        target_y: class index or name (where the model has class names), or a sequence
            of them (one image each).
        model: a :class:`gradvis.Model`.
        num_iterations: gradient steps.
        learning_rate: step size; default 1.0 pixel normalized (25 plain).
        l2_reg: weight of the L2 penalty on the image.
        blur_every: blur every this many iterations (0: never).
        blur_sigma: Gaussian standard deviation in pixels.
        blur_kind: 'gaussian' or 'cs231n'.
        max_jitter: largest random roll, in pixels.
        normalize_grad: normalize the gradient by its mean absolute value.
        clip: keep the image inside ``model.input_range()``.
        init: starting images (N, C, H, W) in input space instead of noise.
        init_scale: standard deviation of the starting noise, in pixels (>= 0).
        image_size: (H, W) of the image, or one int for a square image; default
            the model's input size (or init's, which it must then match).
        seed: int or numpy Generator for the noise and the jitter.
        callback: ``callback(t, X, info)`` after every iteration; info has
            'score' and 'prob' (N,) of the target class.

    Returns:
        X: (N, C, H, W) float32 images in the model's input space; show them
        with ``model.deprocess(X)``.

    Example:
        >>> X = create_class_visualization(76, model, seed=0)
        >>> plt.imshow(model.deprocess(X)[0])
    """
    check_classifier(model, "create_class_visualization")
    if isinstance(target_y, (str, int, np.integer)):
        target_y = [target_y]
    n = len(target_y) if isinstance(target_y, (list, tuple)) else np.atleast_1d(_checks.as_array(target_y, "target_y")).shape[0]
    targets = _checks.labels(target_y if isinstance(target_y, (list, tuple)) else np.atleast_1d(target_y),
                             n, model, name="target_y")
    num_iterations = _checks.positive_int(num_iterations, "num_iterations", allow_zero=True)
    if learning_rate is None:
        learning_rate = 1.0 if normalize_grad else 25.0
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
    l2_reg = _checks.nonneg_float(l2_reg, "l2_reg")
    blur_every = _checks.positive_int(blur_every, "blur_every", allow_zero=True)
    blur_sigma = _checks.nonneg_float(blur_sigma, "blur_sigma")
    max_jitter = _checks.positive_int(max_jitter, "max_jitter", allow_zero=True, hi=_checks.MAX_JITTER)
    if blur_kind not in ("gaussian", "cs231n"):
        raise ValueError(f"blur_kind must be 'gaussian' or 'cs231n', got {blur_kind!r}")
    rng = _checks.rng_from(seed)

    X = _checks.start_images(init, n, model, image_size, init_scale, rng, "target_y")
    px = _checks.pixel_scale(model)
    lo, hi = _checks.valid_range(model, X.shape)
    if clip:
        X = np.clip(X, lo, hi)

    for t in range(num_iterations):
        oy, ox = random_jitter_offsets(rng, max_jitter)
        Xj = jitter(X, oy, ox)
        scores, cache = model.forward(Xj, mode="test")
        g = input_gradient(model, one_hot(n, scores.shape[1], targets, scores.dtype), cache)
        g = unjitter(g, oy, ox)
        if normalize_grad:
            gp = g / px                      # gradient with respect to pixel values
            gp = gp / np.maximum(np.abs(gp).mean(axis=(1, 2, 3), keepdims=True), 1e-12)
            gp = gp - 2.0 * l2_reg * (X * px)
            X = X + (learning_rate * gp) / px
        else:
            X = X + learning_rate * (g - 2.0 * l2_reg * X)
        if clip:
            X = np.clip(X, lo, hi)
        if blur_every and (t + 1) % blur_every == 0:
            X = blur(X, blur_sigma, blur_kind)
        if callback is not None:
            probs = softmax(scores)
            callback(t, X, {"score": scores[np.arange(n), targets],
                            "prob": probs[np.arange(n), targets]})
    return X.astype(np.float32, copy=False)
