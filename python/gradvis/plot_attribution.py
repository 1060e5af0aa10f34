"""Figures of attributions: Captum's display modes, a CAM overlay, a grid that
compares several methods on the same images, and the sanity-check figure.

Scaling is for display only: the functions take the raw arrays the methods
return and never change them. ``attribution_image`` and ``cam_overlay`` return
the RGB(A) float arrays they draw (values in [0, 1]), so a figure can be made
elsewhere or the pixels saved as they are.

Captum's modes (``captum.attr.visualization.visualize_image_attr``): the map is
summed over channels, then scaled by the value below which ``100 - outlier_perc``
percent of the (signed part of the) mass lies, and clipped to [-1, 1]:

- ``heat_map``: the scaled map in a colour map (all: red-white-green; positive:
  greens; negative: reds; absolute_value: blues);
- ``blended_heat_map``: the heat map at alpha 0.5 over the grey image;
- ``masked_image``: the image times the scaled map (not for sign 'all');
- ``alpha_scaling``: the image with the scaled map as its alpha channel.

Example:
    >>> from gradvis import plot_attribution as pa
    >>> ig = gradvis.attribution.integrated_gradients(X, None, model)
    >>> pa.attribution_figure(model.deprocess(X), ig, method="blended_heat_map", path="ig.png")
"""
from __future__ import annotations

import numpy as np

from .plot import save_figure, to_display

__all__ = ["attribution_image", "cam_overlay", "attribution_figure", "comparison_figure", "sanity_figure",
           "normalize_attribution", "DISPLAY_METHODS", "SIGNS"]

DISPLAY_METHODS = ("heat_map", "blended_heat_map", "masked_image", "alpha_scaling")
SIGNS = ("all", "positive", "negative", "absolute_value")


def _new_figure(figsize):
    import sys
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=figsize)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _map_2d(attr, name="attribution"):
    a = np.asarray(attr)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 3:
        # (C, H, W) from gradvis (C of 1 or 3), or (H, W, C)
        a = a.sum(axis=0) if a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3) else a.sum(axis=-1)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be (C, H, W), (H, W, C) or (H, W), got shape {np.shape(attr)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _cumulative_threshold(values, percentile):
    s = np.sort(values.ravel())
    c = np.cumsum(s)
    if c[-1] <= 0:
        return 0.0
    return float(s[np.flatnonzero(c >= c[-1] * 0.01 * percentile)[0]])


def normalize_attribution(attr, sign="absolute_value", outlier_perc=2):
    """Captum's display scaling of one map: (H, W) in [-1, 1] ([0, 1] unless sign
    is 'all'). ``attr`` (C, H, W), (H, W, C) or (H, W) is summed over channels."""
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    pct = float(outlier_perc)
    if not 0 <= pct < 100:
        raise ValueError(f"outlier_perc must be in [0, 100), got {outlier_perc!r}")
    a = _map_2d(attr)
    if sign == "all":
        thr = _cumulative_threshold(np.abs(a), 100 - pct)
    elif sign == "positive":
        a = np.where(a > 0, a, 0.0)
        thr = _cumulative_threshold(a, 100 - pct)
    elif sign == "negative":
        a = np.where(a < 0, a, 0.0)
        thr = -_cumulative_threshold(np.abs(a), 100 - pct)
    else:
        a = np.abs(a)
        thr = _cumulative_threshold(a, 100 - pct)
    if abs(thr) < 1e-30:
        return np.zeros_like(a)
    return np.clip(a / thr, -1.0, 1.0)


def _cmap(sign):
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap
    if sign == "all":
        return LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]), -1.0
    return colormaps[{"positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}[sign]], 0.0


def _float_rgb(image, shape=None):
    img = to_display(image)
    img = img.astype(np.float64) / (255.0 if img.dtype == np.uint8 else 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if shape is not None and img.shape[:2] != tuple(shape):
        raise ValueError(f"image is {img.shape[:2]} but the attribution is {tuple(shape)}")
    return img


def attribution_image(attr, image=None, method="heat_map", sign="absolute_value", outlier_perc=2,
                      alpha_overlay=0.5):
    """One attribution as Captum displays it: float RGB (H, W, 3) in [0, 1], or
    RGBA (H, W, 4) for 'alpha_scaling'.

    Args:
        attr: (C, H, W), (H, W, C) or (H, W), raw values.
        image: the display image (needed except for 'heat_map').
        method: one of :data:`DISPLAY_METHODS`. sign: one of :data:`SIGNS`.
        outlier_perc: percent of the mass above the scale (clipped).
    """
    if method not in DISPLAY_METHODS:
        raise ValueError(f"method must be one of {', '.join(DISPLAY_METHODS)}, got {method!r}")
    norm = normalize_attribution(attr, sign, outlier_perc)
    cmap, vmin = _cmap(sign)
    heat = cmap((norm - vmin) / (1.0 - vmin))[..., :3]
    if method == "heat_map":
        return heat
    if image is None:
        raise ValueError(f"method {method!r} needs the image")
    img = _float_rgb(image, norm.shape)
    if method == "blended_heat_map":
        grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
        return (1 - alpha_overlay) * grey + alpha_overlay * heat
    if sign == "all":
        raise ValueError(f"method {method!r} needs a sign other than 'all' (the map scales the image)")
    if method == "masked_image":
        return img * norm[..., None]
    return np.concatenate([img, norm[..., None]], axis=2)


def _resize_bilinear(a, size):
    H, W = size
    h, w = a.shape

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return src - i0, i0, np.minimum(i0 + 1, n_in - 1)
    fy, y0, y1 = axis(h, H)
    fx, x0, x1 = axis(w, W)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def cam_overlay(image, cam, alpha=0.5, cmap="jet"):
    """A CAM (h, w) over its image: the map resized (bilinear) to the image,
    min-max scaled for display, coloured and blended; float RGB (H, W, 3)."""
    from matplotlib import colormaps
    c = _map_2d(cam, "cam")
    img = _float_rgb(image)
    if not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if c.shape != img.shape[:2]:
        c = _resize_bilinear(c, img.shape[:2])
    lo, hi = c.min(), c.max()
    c = (c - lo) / (hi - lo) if hi > lo else np.zeros_like(c)
    return (1 - alpha) * img + alpha * colormaps[cmap](c)[..., :3]


def _images(images):
    a = np.asarray(images) if not isinstance(images, (list, tuple)) else None
    if a is not None and a.ndim == 4:
        return [a[i] for i in range(len(a))]
    if a is not None and a.ndim in (2, 3):
        return [a]
    return list(images)


def _is_cam(a, img):
    return np.ndim(a) == 2 and np.shape(a) != to_display(img).shape[:2]


def _panel(ax, img, a, method, sign, outlier_perc):
    if np.ndim(a) == 2 and (method == "cam" or _is_cam(a, img)):
        ax.imshow(cam_overlay(img, a))
    else:
        ax.imshow(attribution_image(a, img, method, sign, outlier_perc))
    ax.set_xticks([])
    ax.set_yticks([])


def attribution_figure(images, attributions, method="blended_heat_map", sign="absolute_value", outlier_perc=2,
                       titles=None, path=None):
    """N images over their attributions in one of Captum's modes: two rows.

    Args:
        images: N display images ((N, H, W, 3), (N, 3, H, W) or a list).
        attributions: (N, C, H, W) pixel attributions or (N, h, w) CAMs (CAMs
            are drawn as :func:`cam_overlay`).
        path: write the figure there (see :func:`gradvis.plot.save_figure`).
    """
    imgs = _images(images)
    attrs = np.asarray(attributions)
    if attrs.ndim not in (3, 4) or len(attrs) != len(imgs):
        raise ValueError(f"attributions must be (N, C, H, W) or (N, h, w) for {len(imgs)} images, "
                         f"got shape {attrs.shape}")
    n = len(imgs)
    fig = _new_figure((2.2 * n, 4.6))
    for i in range(n):
        ax = fig.add_subplot(2, n, i + 1)
        ax.imshow(to_display(imgs[i]))
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(str(titles[i]), fontsize=9)
        _panel(fig.add_subplot(2, n, n + i + 1), imgs[i], attrs[i], method, sign, outlier_perc)
    fig.subplots_adjust(wspace=0.05, hspace=0.1)
    if path is not None:
        save_figure(fig, path)
    return fig


def comparison_figure(images, maps, method="blended_heat_map", sign="absolute_value", outlier_perc=2,
                      titles=None, path=None):
    """Several methods side by side on the same images: one row per image, the
    image then one column per method.

    Args:
        images: N display images.
        maps: dict method name -> (N, C, H, W) attributions or (N, h, w) CAMs.
        titles: N row labels (e.g. class names).
    """
    imgs = _images(images)
    if not isinstance(maps, dict) or not maps:
        raise TypeError("maps must be a non-empty dict: method name -> (N, ...) array")
    for k, v in maps.items():
        if np.ndim(v) not in (3, 4) or len(v) != len(imgs):
            raise ValueError(f"maps[{k!r}] must hold one map per image ({len(imgs)}), got shape {np.shape(v)}")
    n, k = len(imgs), len(maps)
    fig = _new_figure((1.9 * (k + 1), 1.9 * n + 0.4))
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(n, k + 1, i * (k + 1) + 1)
        ax.imshow(to_display(img))
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_ylabel(str(titles[i]), fontsize=8)
        if i == 0:
            ax.set_title("image", fontsize=9)
        for j, (name, v) in enumerate(maps.items()):
            ax = fig.add_subplot(n, k + 1, i * (k + 1) + j + 2)
            _panel(ax, img, np.asarray(v)[i], method, sign, outlier_perc)
            if i == 0:
                ax.set_title(name.replace("_", " "), fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.06)
    if path is not None:
        save_figure(fig, path)
    return fig


def sanity_figure(result, image, index=0, title=None, path=None, sign="absolute_value"):
    """The cascading-randomization figure of :func:`gradvis.attribution.sanity_check`:
    the original map and the maps after each layer's randomization for image
    ``index``, and the rank correlations of all images per step."""
    if not isinstance(result, dict) or not {"layers", "correlations", "maps"} <= set(result):
        raise TypeError("result must be the dict sanity_check returns")
    maps = result["maps"]
    n = len(maps)
    fig = _new_figure((min(max(1.4 * n, 6.0), 18.0), 4.2))
    for j, m in enumerate(maps):
        ax = fig.add_subplot(2, n, j + 1)
        _panel(ax, image, np.asarray(m)[index], "heat_map", sign, 2)
        ax.set_title("original" if j == 0 else result["layers"][j - 1], fontsize=7, rotation=30)
    ax = fig.add_subplot(2, 1, 2)
    corr = np.asarray(result["correlations"])
    x = np.arange(1, len(corr) + 1)
    ax.plot(x, corr.mean(axis=1), "o-", label="mean over images")
    ax.fill_between(x, corr.min(axis=1), corr.max(axis=1), alpha=0.2)
    ax.set_xticks(x)
    ax.set_xticklabels(result["layers"], rotation=30, fontsize=7)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("rank correlation", fontsize=8)
    ax.set_xlabel("randomized down to (cumulative, from the top)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(hspace=0.6, bottom=0.2)
    if path is not None:
        save_figure(fig, path)
    return fig
