"""Class visualization: an image the network finds typical of a class
(Simonyan et al. 2013, section 2; Yosinski et al. 2015)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import input_gradient, one_hot
from ..nn.graph import check_classifier
from ..nn.imageops import blur, jitter, random_jitter_offsets, unjitter
from ..nn.losses import softmax
from ..optvis.param import ImageParam, color_correlation, image
from ..optvis.render import Adam, as_transform, fit_transforms, from_model_input, images_grad, \
    model_input_grad, to_model_input

__all__ = ["create_class_visualization"]


def create_class_visualization(target_y, model, num_iterations=200, learning_rate=None, l2_reg=1e-3,
                               blur_every=10, blur_sigma=0.5, blur_kind="gaussian", max_jitter=4,
                               normalize_grad=True, clip=True, init=None, init_scale=10.0,
                               image_size=None, seed=0, callback=None, param="pixels", transforms=None):
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

    ``param="fft"`` optimizes the image as Lucid does (Olah et al., "Feature
    Visualization", Distill 2017): its parameters are a 1/frequency-scaled Fourier
    spectrum with decorrelated colour and a sigmoid to the valid range
    (:func:`gradvis.optvis.param.image`, with the model's colour matrix), updated
    by Adam at ``learning_rate`` (default 0.05) up the same normalized gradient and
    L2 penalty; the blur acts on the spectrum (a Gaussian before the sigmoid), and
    ``clip`` is moot (the sigmoid keeps the image valid). ``transforms`` adds
    Lucid's transformation robustness: every iteration the (rolled) image, as RGB
    values in [0, 1], is seen through these random transforms
    (:mod:`gradvis.optvis.transforms`), and the gradient comes back through their
    exact adjoints. The defaults (``param="pixels", transforms=None``) are the
    CS231n loop above, unchanged.

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
        param: ``"pixels"`` (the CS231n ascent on pixel values), ``"fft"`` (the
            Lucid parameterization above, from seeded small noise; ``init`` and
            ``init_scale`` are for ``"pixels"``), or a
            :class:`gradvis.optvis.param.ImageParam` of batch N (its own size,
            colour and starting point).
        transforms: None (only the roll jitter), ``"standard"`` (Lucid's list sized
            to the model's input, :func:`gradvis.optvis.transforms.standard_transforms`),
            a :class:`gradvis.optvis.transforms.Transform` or a list of them.

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
    l2_reg = _checks.nonneg_float(l2_reg, "l2_reg")
    blur_every = _checks.positive_int(blur_every, "blur_every", allow_zero=True)
    blur_sigma = _checks.nonneg_float(blur_sigma, "blur_sigma")
    max_jitter = _checks.positive_int(max_jitter, "max_jitter", allow_zero=True, hi=_checks.MAX_JITTER)
    if blur_kind not in ("gaussian", "cs231n"):
        raise ValueError(f"blur_kind must be 'gaussian' or 'cs231n', got {blur_kind!r}")
    rng = _checks.rng_from(seed)
    p, tf = _lucid_options(param, transforms, n, model, init, image_size, rng)
    if p is not None:
        return _fft_class_visualization(targets, model, p, tf, num_iterations,
                                        0.05 if learning_rate is None else learning_rate, l2_reg,
                                        blur_every, blur_sigma, max_jitter, normalize_grad, rng, callback)
    if learning_rate is None:
        learning_rate = 1.0 if normalize_grad else 25.0
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)

    X = _checks.start_images(init, n, model, image_size, init_scale, rng, "target_y")
    if tf is not None:
        tf, _ = fit_transforms(tf, model, X.shape[2:], [model.nodes[-1].name])
    px = _checks.pixel_scale(model)
    lo, hi = _checks.valid_range(model, X.shape)
    if clip:
        X = np.clip(X, lo, hi)

    for t in range(num_iterations):
        oy, ox = random_jitter_offsets(rng, max_jitter)
        Xj = jitter(X, oy, ox)
        if tf is not None:
            xt, back = tf.apply(from_model_input(Xj, model), rng)
            Xj = to_model_input(xt, model)
        scores, cache = model.forward(Xj, mode="test")
        g = input_gradient(model, one_hot(n, scores.shape[1], targets, scores.dtype), cache)
        if tf is not None:
            g = model_input_grad(back(images_grad(g, model)), model).astype(X.dtype, copy=False)
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


def _lucid_options(param, transforms, n, model, init, image_size, rng):
    """The parameterization (None for pixels) and the transforms (None for none)
    that ``param`` and ``transforms`` ask for; ValueError/TypeError naming them."""
    tf = None if transforms is None else as_transform(transforms, model)
    if isinstance(param, str):
        if param == "pixels":
            return None, tf
        if param != "fft":
            raise ValueError(f"param must be 'pixels', 'fft' or a gradvis.optvis.param.ImageParam, "
                             f"got {param!r}")
        if init is not None:
            raise ValueError("init is a starting image for param='pixels'; param='fft' starts from "
                             "its own small random spectrum (pass an ImageParam to control it)")
        if model.input_shape[0] != 3:
            raise ValueError(f"param='fft' draws RGB images; the model takes {model.input_shape[0]} channels")
        size = model.input_shape[1:] if image_size is None else _checks.size_pair(image_size)
        p = image(*size, batch=n, color=color_correlation(model), seed=rng)
    elif isinstance(param, ImageParam):
        if init is not None:
            raise ValueError("init is a starting image for param='pixels', not for an ImageParam")
        if param.shape[0] != n:
            raise ValueError(f"param has a batch of {param.shape[0]} images but target_y names {n}")
        if model.input_shape[0] != 3:
            raise ValueError(f"param draws RGB images; the model takes {model.input_shape[0]} channels")
        p = param
        if not p.color_given:
            p.set_color(color_correlation(model))
    else:
        raise TypeError(f"param must be 'pixels', 'fft' or a gradvis.optvis.param.ImageParam, "
                        f"got {type(param).__name__}")
    return p, (tf if tf is not None else as_transform(None, model))


def _fft_class_visualization(targets, model, p, tf, num_iterations, learning_rate, l2_reg, blur_every,
                             blur_sigma, max_jitter, normalize_grad, rng, callback):
    """The class visualization loop on an :class:`ImageParam` (Adam up the
    parameters); the gradient with respect to pixel values is the pixel loop's."""
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
    n = len(targets)
    tf, _ = fit_transforms(tf, model, p.shape[2:], [model.nodes[-1].name])
    px = _checks.pixel_scale(model)
    opt = Adam(learning_rate)
    for t in range(num_iterations):
        img, ctx = p.forward()
        oy, ox = random_jitter_offsets(rng, max_jitter)
        xt, back = tf.apply(jitter(img, oy, ox), rng)
        X = to_model_input(xt, model)
        scores, cache = model.forward(X, mode="test")
        g = input_gradient(model, one_hot(n, scores.shape[1], targets, scores.dtype), cache)
        # gradient with respect to pixel values (0-255, in the model's channel order)
        gp = model_input_grad(back(images_grad(g, model)), model) / px
        gp = unjitter(gp, oy, ox)
        if normalize_grad:
            gp = gp / np.maximum(np.abs(gp).mean(axis=(1, 2, 3), keepdims=True), 1e-12)
        X0 = to_model_input(img, model)
        gp = gp - 2.0 * l2_reg * (X0 * px)
        opt.step(p.params, p.backward(images_grad(gp * px, model), ctx))
        if blur_every and (t + 1) % blur_every == 0:
            p.blur(blur_sigma)
        if callback is not None or t == num_iterations - 1:
            X_now = to_model_input(p.forward()[0], model)
        if callback is not None:
            probs = softmax(scores)
            callback(t, X_now, {"score": scores[np.arange(n), targets],
                                "prob": probs[np.arange(n), targets]})
    if num_iterations == 0:
        return to_model_input(p.forward()[0], model)
    return X_now
