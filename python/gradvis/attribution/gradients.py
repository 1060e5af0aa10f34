"""Gradient attributions with Captum's semantics: Saliency, InputXGradient,
GuidedBackprop, Deconvolution, NoiseTunnel and GradientShap.

All return an array shaped like ``X`` (float32 stays float32), unnormalized.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _checks, _core
from . import _common as C
from .relu_rules import deconvolution_rules, guided_backprop_rules

__all__ = ["saliency", "input_x_gradient", "guided_backprop", "deconvolution",
           "noise_tunnel", "gradient_shap", "PIXEL_METHODS"]


def _prepare(X, target, model, what, internal_batch_size):
    C.check_model(model, what)
    X = C.check_images(X, model)
    b = C.batch_size_arg(internal_batch_size, model, X)
    t = C.resolve_target(target, X, model, defer=True)   # None: each pass's own predicted class
    return X, t, b


def saliency(X, target, model, abs=True, internal_batch_size=None):   # noqa: A002 (Captum's name)
    """Gradient of the target's score with respect to the input (Captum ``Saliency``).

    Args:
        X: (N, C, H, W) images in the model's input space.
        target: an int, an (N,) array, a class name, or None (predicted class).
        model: a :class:`gradvis.Model`.
        abs: return |gradient| (Captum's default) instead of the signed gradient.
        internal_batch_size: images per pass (default from the model's size).

    Returns:
        (N, C, H, W) in X's dtype.

    Example:
        >>> attr = saliency(X, 3, model)

    Reference: Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional
    Networks", 2013.
    """
    X, t, b = _prepare(X, target, model, "saliency", internal_batch_size)
    g = C.chunked_gradient(model, X, t, b)
    return np.abs(g) if abs else g


def input_x_gradient(X, target, model, internal_batch_size=None):
    """X * d score_target / dX (Captum ``InputXGradient``); (N, C, H, W).

    Reference: Shrikumar et al., "Not Just a Black Box", 2016.
    """
    X, t, b = _prepare(X, target, model, "input_x_gradient", internal_batch_size)
    return X * C.chunked_gradient(model, X, t, b)


def guided_backprop(X, target, model, internal_batch_size=None):
    """Guided backpropagation (Captum ``GuidedBackprop``); (N, C, H, W).

    Every ReLU node passes back ``max(dout, 0)`` where its input is positive, the
    ReLUs fused into convolutions included; other layers keep their gradient.

    Reference: Springenberg et al., "Striving for Simplicity: The All
    Convolutional Net", 2015.
    """
    X, t, b = _prepare(X, target, model, "guided_backprop", internal_batch_size)
    return C.chunked_gradient(model, X, t, b, rules=guided_backprop_rules())


def deconvolution(X, target, model, internal_batch_size=None):
    """Deconvolution (Captum ``Deconvolution``); (N, C, H, W).

    Every ReLU node passes back ``max(dout, 0)`` whatever its input.

    Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional
    Networks", 2014.
    """
    X, t, b = _prepare(X, target, model, "deconvolution", internal_batch_size)
    return C.chunked_gradient(model, X, t, b, rules=deconvolution_rules())


_NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def pixel_method(method):
    """A pixel method given as a function or by its name in :data:`PIXEL_METHODS`."""
    if isinstance(method, str):
        if method not in PIXEL_METHODS:
            raise ValueError(f"method {method!r} is not a pixel attribution method; "
                             f"known: {', '.join(sorted(PIXEL_METHODS))}")
        return PIXEL_METHODS[method]
    if not callable(method):
        raise TypeError(f"method must be a pixel attribution function or its name, got {method!r}")
    return method


def noise_tunnel(method, X, target, model, nt_type="smoothgrad", nt_samples=5, stdevs=1.0, seed=0,
                 internal_batch_size=None, **kwargs):
    """SmoothGrad, SmoothGrad-squared or VarGrad over any pixel method (Captum ``NoiseTunnel``).

    Each image gets ``nt_samples`` copies with Gaussian noise of standard
    deviation ``stdevs`` (in the model's input units); the method's attributions
    of the copies are averaged (``smoothgrad``), their squares averaged
    (``smoothgrad_sq``) or their variance taken (``vargrad``).

    Args:
        method: a pixel method (e.g. :func:`saliency`, :func:`integrated_gradients`)
            or its name.
        X, target, model: as :func:`saliency`.
        nt_type: 'smoothgrad', 'smoothgrad_sq' or 'vargrad'.
        nt_samples: noisy copies per image (>= 1).
        stdevs: noise standard deviation (>= 0), input units.
        seed: int or numpy Generator. One integer k is drawn from it; the noise
            of image i, copy s is the ``standard_normal((C, H, W), dtype=X.dtype)``
            of its own stream, ``PCG64(SeedSequence(k, spawn_key=(i, s)))``
            (:func:`noise_rows`): it depends on neither the batching nor the
            other images, and the streams are drawn on gradvis's threads.
        internal_batch_size: noisy copies per call of ``method``.
        kwargs: passed to ``method`` (an (N, ...) ``baselines`` array is
            repeated for the copies).

    Returns:
        (N, C, H, W) in X's dtype.

    Reference: Smilkov et al., "SmoothGrad: removing noise by adding noise",
    2017; Adebayo et al., "Local Explanation Methods for Deep Neural Networks
    Lack Sensitivity to Parameter Values", 2018 (VarGrad).
    """
    fn = pixel_method(method)
    C.check_model(model, "noise_tunnel")
    X = C.check_images(X, model)
    if nt_type not in _NT_TYPES:
        raise ValueError(f"nt_type must be one of {', '.join(_NT_TYPES)}, got {nt_type!r}")
    nt_samples = _checks.positive_int(nt_samples, "nt_samples")
    stdevs = _checks.nonneg_float(stdevs, "stdevs")
    rng = _checks.rng_from(seed)
    b = C.batch_size_arg(internal_batch_size, model, X)
    t = C.resolve_target(target, X, model)
    n = X.shape[0]
    per_image_kw = {k: v for k, v in kwargs.items()
                    if k == "baselines" and isinstance(v, np.ndarray) and v.ndim == 4 and v.shape[0] == n and n > 1}
    total = n * nt_samples
    key = _noise_key(rng)
    s1 = np.zeros(X.shape, np.float64)
    s2 = np.zeros(X.shape, np.float64) if nt_type != "smoothgrad" else None
    for k0 in range(0, total, b):
        rows = np.arange(k0, min(total, k0 + b))
        img = rows // nt_samples
        Xn = noise_rows(key, img, rows % nt_samples, X.shape[1:], X.dtype, stdevs, X[img])
        kw = dict(kwargs)
        for k, v in per_image_kw.items():
            kw[k] = v[img]
        a = np.asarray(fn(Xn, t[img], model, **kw))    # summed in float64 by add_rows
        C.add_rows(s1, img, a)
        if s2 is not None:
            a = a.astype(np.float64)
            C.add_rows(s2, img, a * a)
    mean = s1 / nt_samples
    if nt_type == "smoothgrad":
        out = mean
    elif nt_type == "smoothgrad_sq":
        out = s2 / nt_samples
    else:
        out = s2 / nt_samples - mean * mean
    return out.astype(X.dtype)


def gradient_shap(X, target, model, baselines, n_samples=5, stdevs=0.0, seed=0, internal_batch_size=None):
    """Expected gradients (Captum ``GradientShap``); (N, C, H, W).

    For each image, ``n_samples`` times: draw a baseline from ``baselines``, a
    point uniformly on the segment from it to the image (plus Gaussian noise of
    standard deviation ``stdevs`` on the image), and take
    ``gradient(point) * (noisy image - baseline)``; the result is the mean.

    Args:
        X, target, model: as :func:`saliency`.
        baselines: the reference distribution, (B, C, H, W) (or one (C, H, W)
            image, or a number).
        n_samples: samples per image (>= 1).
        stdevs: noise standard deviation on the image (>= 0), input units.
        seed: int or numpy Generator. Draw order: baseline indices
            ``integers(0, B, N * n_samples)``, then the segment positions
            ``uniform(0, 1, N * n_samples)``, then the noise as
            :func:`noise_tunnel`'s (one integer, then a stream per image and sample).

    Reference: Lundberg & Lee, "A Unified Approach to Interpreting Model
    Predictions", 2017; Erion et al., "Learning Explainable Models Using
    Attribution Priors" (expected gradients), 2019.
    """
    C.check_model(model, "gradient_shap")
    X = C.check_images(X, model)
    B = _baseline_distribution(baselines, X)
    n_samples = _checks.positive_int(n_samples, "n_samples")
    stdevs = _checks.nonneg_float(stdevs, "stdevs")
    rng = _checks.rng_from(seed)
    b = C.batch_size_arg(internal_batch_size, model, X)
    t = C.resolve_target(target, X, model)
    n = X.shape[0]
    total = n * n_samples
    idx = rng.integers(0, B.shape[0], total)
    alpha = rng.uniform(0.0, 1.0, total)
    key = _noise_key(rng)
    s1 = np.zeros(X.shape, np.float64)
    for k0 in range(0, total, b):
        rows = np.arange(k0, min(total, k0 + b))
        img = rows // n_samples
        Xn = noise_rows(key, img, rows % n_samples, X.shape[1:], X.dtype, stdevs, X[img])
        base = B[idx[rows]]
        a = alpha[rows].astype(X.dtype).reshape(-1, 1, 1, 1)
        pts = a * Xn + (1 - a) * base      # Captum's rounding: equal ReLU masks at the kinks
        g = C.gradient(model, pts, t[img])[1]
        C.add_rows(s1, img, g * (Xn - base))
    return (s1 / n_samples).astype(X.dtype)


def _noise_key(rng):
    return int(rng.integers(0, 2 ** 63))


def noise_rows(key, img, copy, shape, dtype, stdevs, base):
    """``base + stdevs * z`` (len(img), *shape) in ``dtype``, where row j's z is
    the standard normal draw of its own stream
    ``Generator(PCG64(SeedSequence(key, spawn_key=(img[j], copy[j]))))``. The rows
    are filled on gradvis's thread count (numpy releases the GIL while it draws):
    one stream would draw them one after another, about 6% of a SmoothGrad call
    on the bundled model."""
    out = np.empty((len(img),) + tuple(shape), dtype)

    def fill(part, step):
        for j in range(part, len(img), step):
            ss = np.random.SeedSequence(key, spawn_key=(int(img[j]), int(copy[j])))
            np.random.Generator(np.random.PCG64(ss)).standard_normal(dtype=out.dtype, out=out[j])

    nt = max(1, min(_core.get_num_threads(), len(img)))
    if nt == 1:
        fill(0, 1)
    else:
        with ThreadPoolExecutor(nt) as ex:
            list(ex.map(fill, range(nt), [nt] * nt))
    out *= out.dtype.type(stdevs)
    out += base
    return out


def _baseline_distribution(baselines, X, name="baselines"):
    if baselines is None:
        raise ValueError(f"{name} is required by gradient_shap: a (B, C, H, W) array of reference images")
    if isinstance(baselines, (int, float, np.number)) and not isinstance(baselines, bool):
        return np.full((1,) + X.shape[1:], float(baselines), X.dtype)
    B = np.asarray(baselines)
    if B.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {B.dtype}")
    if B.ndim == 3:
        B = B[None]
    if B.ndim != 4 or B.shape[1:] != X.shape[1:] or B.shape[0] < 1:
        raise ValueError(f"{name} must be (B, {', '.join(map(str, X.shape[1:]))}) reference images, "
                         f"got shape {B.shape}")
    if not np.all(np.isfinite(B)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(B, dtype=X.dtype)


# Filled in by the package __init__ with every pixel method (name -> function).
PIXEL_METHODS = {}
