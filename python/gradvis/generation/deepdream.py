"""DeepDream: amplify what one layer sees in a real photo (Mordvintsev, Olah &
Tyka 2015)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..nn.gradients import input_gradient
from ..nn.graph import check_model
from ..nn.imageops import jitter, random_jitter_offsets, resize, unjitter
from ..optvis.param import ImageParam, color_correlation
from ..optvis.render import as_transform, fit_transforms, from_model_input, images_grad, model_input_grad, \
    to_model_input

__all__ = ["deepdream"]


def deepdream(X, layer, model, num_iterations=20, learning_rate=None, max_jitter=16, octaves=1,
              octave_scale=1.4, normalize_grad=True, channel=None, clip=True, seed=0, callback=None,
              transforms=None, param="pixels"):
    """Gradient ascent on ``0.5 * ||a||^2``, the squared activations of ``layer``.

    The CS231n version is ``octaves=1, normalize_grad=False`` (step
    ``learning_rate * g`` in the model's input space, learning_rate 5 on 0-255
    inputs). The original DeepDream normalizes the step, moving pixels by
    ``learning_rate * g / mean(|g|)`` in 0-255 units (g the gradient with respect
    to pixel values, whatever the model's input normalization), and works on
    a pyramid of ``octaves`` scales, each ``octave_scale`` times smaller: it starts
    at the smallest, and after ``num_iterations`` steps there carries the *detail*
    it added (result minus that octave's image) up to the next scale. Every step
    rolls the image by a random offset up to ``max_jitter`` pixels and back.
    Images of any size work as long as ``layer`` is convolutional.

    ``transforms`` adds Lucid's transformation robustness (Olah et al., "Feature
    Visualization", Distill 2017): every step the rolled image, as RGB values in
    [0, 1], is seen through these random transforms
    (:mod:`gradvis.optvis.transforms`) and the gradient comes back through their
    exact adjoints. The default (None) is the loop above, unchanged.

    ``param="fft"`` climbs in Lucid's parameterization instead of in pixels (Olah
    et al. 2017, "Preconditioning and Parameterization"): at each octave the image
    is written as a 1/frequency-scaled Fourier spectrum of colour-decorrelated
    values under a sigmoid (:meth:`gradvis.optvis.param.ImageParam.set_images`,
    exactly the octave's image), and every step moves that spectrum along its
    gradient. The step is still ``learning_rate`` grey levels: it is scaled so
    that, to first order, the image changes by that much on average. Low
    frequencies then move as fast as high ones, so the patterns grow larger and
    smoother than the pixel loop's; the sigmoid keeps every image valid.

    Args:
        X: images in the model's input space, (N, C, H, W), any H and W.
        layer: name or index of the layer to amplify (its output).
        model: a :class:`gradvis.Model`.
        num_iterations: steps per octave.
        learning_rate: step size; default 3 grey levels normalized (the original used 1.5
            on 224-pixel images), 5.0 plain (input units).
        max_jitter: largest random roll in pixels (scaled down with the octave).
        octaves: number of scales (1: single scale, as in CS231n).
        octave_scale: ratio between successive scales.
        normalize_grad: divide the step by the mean absolute gradient.
        channel: amplify only this channel of the layer, an int (None: all).
        clip: keep the images inside ``model.input_range()``.
        seed: int or numpy Generator for the jitter.
        callback: ``callback(t, X, info)`` after every step; info has 'octave'
            and 'activation_norm' (N,).
        transforms: None, ``"standard"`` (Lucid's list sized to the model's input,
            :func:`gradvis.optvis.transforms.standard_transforms`), a
            :class:`gradvis.optvis.transforms.Transform` or a list of them.
        param: ``"pixels"`` (the loop above) or ``"fft"`` (RGB models; takes
            normalized steps).

    Returns:
        X_dream: (N, C, H, W) float32, same size as X.

    Example:
        >>> X = model.preprocess(photo)                       # any size
        >>> X_dream = deepdream(X, 'relu5', model, octaves=3)
        >>> plt.imshow(model.deprocess(X_dream)[0])
    """
    check_model(model)
    X = _checks.images(X, model).astype(np.float32)
    num_iterations = _checks.positive_int(num_iterations, "num_iterations", allow_zero=True)
    if learning_rate is None:
        learning_rate = 3.0 if normalize_grad else 5.0
    learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
    max_jitter = _checks.positive_int(max_jitter, "max_jitter", allow_zero=True, hi=_checks.MAX_JITTER)
    if channel is not None:
        channel = _checks.positive_int(channel, "channel", allow_zero=True)
    octaves = _checks.positive_int(octaves, "octaves")
    octave_scale = _checks.nonneg_float(octave_scale, "octave_scale")
    if octaves > 1 and octave_scale <= 1.0:
        raise ValueError(f"octave_scale must be > 1 when octaves > 1, got {octave_scale}")
    rng = _checks.rng_from(seed)
    node = model.nodes[model.index(layer, "layer")].name
    tf = None if transforms is None else as_transform(transforms, model)
    if tf is not None and model.input_shape[0] != 3:
        raise ValueError(f"transforms work on RGB images; the model takes {model.input_shape[0]} channels")
    px = _checks.pixel_scale(model)
    if not isinstance(param, str):
        raise TypeError(f"param must be 'pixels' or 'fft', got {type(param).__name__}")
    if param not in ("pixels", "fft"):
        raise ValueError(f"param must be 'pixels' or 'fft', got {param!r}")
    fft = param == "fft"
    if fft and model.input_shape[0] != 3:
        raise ValueError(f"param='fft' draws RGB images; the model takes {model.input_shape[0]} channels")
    if fft and not normalize_grad:
        raise ValueError("param='fft' takes steps of learning_rate grey levels: it needs normalize_grad=True")

    # The pyramid's sizes first (integers only), checked against the layer before any
    # image is resized: a million octaves is refused at once, not after building them.
    sizes = [tuple(X.shape[2:])]
    if not model.fits(sizes[0], end=layer):
        least = model.min_input_size(end=layer)
        need = f" (it needs at least {least[0]}x{least[1]})" if least else ""
        raise ValueError(f"deepdream: the {sizes[0][0]}x{sizes[0][1]} image is too small for layer "
                         f"{layer!r}{need}")
    while len(sizes) < octaves:
        h, w = sizes[-1]
        nxt = (max(1, int(round(h / octave_scale))), max(1, int(round(w / octave_scale))))
        if nxt == (h, w):
            break       # no longer shrinking: the remaining octaves are all this size
        if not model.fits(nxt, end=layer):
            fit = len(sizes)
            least = model.min_input_size(end=layer)
            need = f", which needs at least {least[0]}x{least[1]}" if least else ""
            raise ValueError(f"deepdream: octaves={octaves} is too many for this {X.shape[2]}x{X.shape[3]} "
                             f"image: octave {fit + 1} would be {nxt[0]}x{nxt[1]}, too small for layer "
                             f"{layer!r}{need}; at most {fit} octave(s) fit (or use a larger image)")
        sizes.append(nxt)
    sizes += [sizes[-1]] * (octaves - len(sizes))
    tfs = {}
    if tf is not None:
        for size in set(sizes):
            try:
                tfs[size] = fit_transforms(tf, model, size, [node])[0]
            except ValueError as e:
                raise ValueError(f"deepdream: transforms: {e}") from None
    bases = [X]
    for size in sizes[1:]:
        bases.append(resize(bases[-1], size) if size != bases[-1].shape[2:] else bases[-1])
    smallest = bases[-1]
    try:
        probe, _ = model.forward(smallest[:1], end=layer, mode="test")
    except ValueError as e:
        raise ValueError(f"deepdream: the smallest octave ({smallest.shape[2]}x{smallest.shape[3]}) "
                         f"does not fit layer {layer!r}: {e}; use fewer octaves or a larger image") from e
    if channel is not None:
        if probe.ndim < 2 or not channel < probe.shape[1]:
            raise ValueError(f"channel {channel} is out of range for layer {layer!r} with output "
                             f"shape {probe.shape[1:]}")

    detail = np.zeros_like(smallest)
    t_global = 0
    for o, base in enumerate(reversed(bases)):
        if o > 0:
            detail = resize(detail, base.shape[2:])
        Xo = base + detail
        lo, hi = _checks.valid_range(model, base.shape)
        jit = max(0, int(round(max_jitter * base.shape[2] / X.shape[2])))
        if fft:
            p = ImageParam(*base.shape[2:], batch=base.shape[0], sd=0.0, color=color_correlation(model))
            p.set_images(from_model_input(Xo, model))
            img, ctx = p.forward()
            Xo = to_model_input(img, model)
        for _ in range(num_iterations):
            oy, ox = random_jitter_offsets(rng, jit)
            Xj = jitter(Xo, oy, ox)
            if tf is not None:
                xt, back = tfs[tuple(base.shape[2:])].apply(from_model_input(Xj, model), rng)
                Xj = to_model_input(xt, model)
            act, cache = model.forward(Xj, end=layer, mode="test")
            dout = act
            if channel is not None:
                dout = np.zeros_like(act)
                dout[:, channel] = act[:, channel]
            g = input_gradient(model, dout, cache)
            if tf is not None:
                g = model_input_grad(back(images_grad(g, model)), model).astype(Xo.dtype, copy=False)
            g = unjitter(g, oy, ox)
            if fft:
                Xo, ctx = _spectrum_step(p, ctx, images_grad(g, model), learning_rate, model)
            elif normalize_grad:
                gp = g / px                  # gradient with respect to pixel values
                gp = gp / np.maximum(np.abs(gp).mean(axis=(1, 2, 3), keepdims=True), 1e-12)
                Xo = Xo + (learning_rate * gp) / px
            else:
                Xo = Xo + learning_rate * g
            if clip and not fft:
                Xo = np.clip(Xo, lo, hi)
            Xo = Xo.astype(np.float32, copy=False)
            if callback is not None:
                a = dout.reshape(dout.shape[0], -1).astype(np.float64)
                callback(t_global, Xo, {"octave": o, "activation_norm": np.sqrt((a * a).sum(axis=1))})
            t_global += 1
        detail = Xo - base
    return Xo


def _spectrum_step(p, ctx, d_images, learning_rate, model):
    """One normalized ascent step of the ImageParam ``p`` along d(objective)/d(params)
    from ``d_images`` (the gradient with respect to its [0, 1] images), sized so that
    each image changes by ``learning_rate`` grey levels on average to first order.
    Returns the new images in the model's input space and their context."""
    img = ctx
    gp = p.backward(d_images, ctx)
    dimg = img * (1.0 - img) * p.linear(gp)        # the images' change per unit step
    n = img.shape[0]
    move = np.abs(dimg).reshape(n, -1).mean(axis=1) * 255.0
    step = np.where(move > 0, learning_rate / np.maximum(move, 1e-30), 0.0).astype(p.params.dtype)
    p.params += gp * step.reshape((1, n, 1, 1, 1) if p.fft else (n, 1, 1, 1))
    img, ctx = p.forward()
    return to_model_input(img, model), ctx
