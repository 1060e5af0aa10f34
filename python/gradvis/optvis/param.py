"""Image parameterizations for feature visualization (Olah, Mordvintsev & Schubert,
"Feature Visualization", Distill 2017, section "Preconditioning and
Parameterization"; Lucid's ``lucid.optvis.param``).

An image is not optimized as pixels but through a parameterization
``params -> image``: a Fourier spectrum scaled by 1/frequency (so that every
frequency moves at about the same speed under gradient ascent), colours
decorrelated by a fixed 3x3 matrix, and a sigmoid to the valid range [0, 1].
Each parameterization runs ``forward() -> (images, ctx)`` and carries a gradient
back with ``backward(d_images, ctx) -> d_params``, exactly (the adjoint of each
linear step, not a finite-difference or autograd approximation).
"""
from __future__ import annotations

import numpy as np

from .. import _checks
from ..io.datasets import COLOR_INFO_KEY, color_correlation_from_images
from ..nn import imageops

__all__ = ["image", "ImageParam", "IMAGENET_COLOR_CORRELATION", "color_correlation",
           "color_correlation_from_images", "COLOR_INFO_KEY"]

# Lucid's ``color_correlation_svd_sqrt``: the square root (U sqrt(S) of the SVD) of
# the RGB covariance of ImageNet photos with values in [0, 1].
IMAGENET_COLOR_CORRELATION = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])

# Lucid divides the inverse FFT's output by 4 ("magic" in Lucent): it keeps the
# starting spectrum's images far from the sigmoid's flat ends.
_FFT_OUTPUT_SCALE = 0.25


def color_correlation(model=None):
    """The colour matrix for ``model``: the one stored in ``model.info`` (its
    training images', see :func:`color_correlation_from_images`), else ImageNet's
    (:data:`IMAGENET_COLOR_CORRELATION`). Returns a (3, 3) float64 array."""
    info = getattr(model, "info", None) or {}
    m = info.get(COLOR_INFO_KEY)
    if m is None:
        return IMAGENET_COLOR_CORRELATION.copy()
    try:
        arr = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"model.info[{COLOR_INFO_KEY!r}] must be a 3x3 matrix of numbers") from None
    if arr.shape != (3, 3) or not np.isfinite(arr).all():
        raise ValueError(f"model.info[{COLOR_INFO_KEY!r}] must be a finite 3x3 matrix, got shape {arr.shape}")
    return arr


def rfft2d_freqs(h, w):
    """Spatial frequencies (cycles per pixel) of ``numpy.fft.rfft2``'s bins, (h, w//2 + 1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class ImageParam:
    """A batch of RGB images in [0, 1], (N, 3, H, W), as a function of ``params``.

    ``fft=True``: params are the real and imaginary parts of an rfft2 spectrum,
    (2, N, 3, H, W//2 + 1); the image before colour and sigmoid is
    ``irfft2(scale * spectrum, norm='ortho') / 4`` with ``scale = 1 /
    max(f, 1/max(H, W)) ** decay_power``. ``fft=False``: params are the pixels
    (N, 3, H, W). ``decorrelate=True`` then multiplies each pixel's 3 values by the
    colour matrix (normalized by its largest column norm, as Lucid does), and a
    sigmoid maps to [0, 1].

    Attributes:
        params: the float32 array that an optimizer updates in place.
        shape: (N, 3, H, W) of the images.
    """

    def __init__(self, h, w=None, batch=1, fft=True, decorrelate=True, sd=0.01, decay_power=1.0,
                 color=None, seed=0):
        h = _checks.integer(h, "h", 1)
        w = h if w is None else _checks.integer(w, "w", 1)
        batch = _checks.integer(batch, "batch", 1)
        sd = _checks.nonneg_float(sd, "sd")
        self.decay_power = _checks.finite_float(decay_power, "decay_power")
        rng = _checks.rng_from(seed)
        self.shape = (batch, 3, h, w)
        self.fft = bool(fft)
        self.decorrelate = bool(decorrelate)
        self.color_given = color is not None
        self.set_color(IMAGENET_COLOR_CORRELATION if color is None else color)
        if self.fft:
            freqs = rfft2d_freqs(h, w)
            scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** self.decay_power
            self._scale = (scale * _FFT_OUTPUT_SCALE).astype(np.float32)
            # irfft2's adjoint: bins whose conjugate partner is implied count twice
            mult = np.full(w // 2 + 1, 2.0)
            mult[0] = 1.0
            if w % 2 == 0:
                mult[-1] = 1.0
            self._adj = (self._scale * mult).astype(np.float32)
            pshape = (2, batch, 3, h, w // 2 + 1)
        else:
            pshape = self.shape
        self.params = (rng.standard_normal(pshape) * sd).astype(np.float32)

    def set_color(self, color):
        """Use the (3, 3) colour matrix ``color`` (normalized by its largest column norm)."""
        try:
            color = np.asarray(color, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError("color must be a 3x3 matrix of numbers") from None
        if color.shape != (3, 3) or not np.isfinite(color).all():
            raise ValueError(f"color must be a finite 3x3 matrix, got shape {color.shape}")
        norm = np.linalg.norm(color, axis=0).max()
        if not norm > 0:
            raise ValueError("color must not be all zeros")
        self.color = (color / norm).astype(np.float32)

    def __repr__(self):
        n, _, h, w = self.shape
        return f"ImageParam({h}x{w}, batch={n}, fft={self.fft}, decorrelate={self.decorrelate})"

    def blur(self, sigma):
        """Blur the images before their sigmoid, in place: a Gaussian filter of
        standard deviation ``sigma`` pixels on the parameters. With ``fft=True`` the
        spectrum is multiplied by the Gaussian's transfer function
        ``exp(-2 pi^2 sigma^2 f^2)`` (a periodic blur, exact in the spectrum); with
        pixels, :func:`gradvis.nn.imageops.blur`. The colour matrix mixes each
        pixel's values alone, so it commutes with either."""
        sigma = _checks.nonneg_float(sigma, "sigma")
        if sigma == 0:
            return
        if self.fft:
            h, w = self.shape[2:]
            f2 = rfft2d_freqs(h, w) ** 2
            self.params *= np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * f2).astype(self.params.dtype)
        else:
            self.params[...] = imageops.blur(self.params, sigma)

    def linear(self, params):
        """The images before their sigmoid, (N, 3, H, W), for ``params`` shaped like
        :attr:`params`: the linear part of the parameterization (inverse FFT and
        colour matrix), so ``linear(d)`` is also how the pre-sigmoid images move
        when the parameters move by ``d``."""
        h, w = self.shape[2:]
        if self.fft:
            dt = params.dtype
            spec = (params[0] * self._scale.astype(dt)) + 1j * (params[1] * self._scale.astype(dt))
            t = np.fft.irfft2(spec, s=(h, w), norm="ortho").astype(dt, copy=False)
        else:
            t = params
        if self.decorrelate:
            t = np.einsum("ij,njhw->nihw", self.color.astype(t.dtype), t, optimize=True)
        return t

    def forward(self):
        """Images (N, 3, H, W) in [0, 1] (float32, or :attr:`params`' dtype) and the
        context for :meth:`backward`."""
        img = 1.0 / (1.0 + np.exp(-self.linear(self.params)))
        return img, img

    def set_images(self, images, eps=1.0 / 512):
        """Set :attr:`params` so that :meth:`forward` gives ``images`` (N, 3, H, W),
        RGB in [0, 1], each value first clipped to [eps, 1 - eps] where the sigmoid
        can be inverted. The inverse of each step: logit, the colour matrix's
        inverse, ``rfft2`` divided by the frequency scaling (exact: the scaling has
        no zero, and the spectrum of real images is what ``irfft2`` reads)."""
        x = np.asarray(images, dtype=np.float64)
        if x.shape != self.shape:
            raise ValueError(f"images must have shape {self.shape}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("images must be finite")
        eps = _checks.nonneg_float(eps, "eps")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        x = np.clip(x, eps, 1.0 - eps)
        t = np.log(x) - np.log1p(-x)
        if self.decorrelate:
            t = np.einsum("ij,njhw->nihw", np.linalg.inv(self.color.astype(np.float64)), t, optimize=True)
        if self.fft:
            spec = np.fft.rfft2(t, norm="ortho") / self._scale.astype(np.float64)
            self.params[0] = spec.real
            self.params[1] = spec.imag
        else:
            self.params[...] = t

    def backward(self, d_images, ctx):
        """d(objective)/d(params), shaped like :attr:`params`, from d(objective)/d(images)."""
        img = ctx
        dt = self.params.dtype
        g = np.asarray(d_images, dtype=dt) * img * (1.0 - img)
        if self.decorrelate:
            g = np.einsum("ij,nihw->njhw", self.color.astype(dt), g, optimize=True)
        if not self.fft:
            return g.astype(dt, copy=False)
        G = np.fft.rfft2(g, norm="ortho")
        out = np.empty_like(self.params)
        adj = self._adj.astype(dt)
        np.multiply(G.real, adj, out=out[0])
        np.multiply(G.imag, adj, out=out[1])
        return out


def image(h, w=None, batch=1, fft=True, decorrelate=True, sd=0.01, decay_power=1.0, color=None,
          seed=0):
    """Lucid's ``param.image``: a batch of images to optimize.

    Args:
        h, w: image height and width (w defaults to h).
        batch: number of images N.
        fft: parameterize by a 1/f-scaled Fourier spectrum (else by pixels).
        decorrelate: mix colours through the colour matrix ``color``.
        sd: standard deviation of the starting parameters.
        decay_power: exponent of the 1/frequency scaling (fft only).
        color: (3, 3) colour matrix; None: the rendered model's
            (:func:`color_correlation`, set by :func:`render`), ImageNet's until then.
        seed: int or numpy Generator for the starting parameters.

    Returns:
        an :class:`ImageParam`.

    Example:
        >>> p = image(64, batch=4, seed=0)
        >>> X = optvis.render(objectives.channel('relu5', 7), model, param=p)
    """
    return ImageParam(h, w, batch=batch, fft=fft, decorrelate=decorrelate, sd=sd,
                      decay_power=decay_power, color=color, seed=seed)
