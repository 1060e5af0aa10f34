"""Figures of the CS231n notebooks, drawn with matplotlib.

Display only: every function takes images that are ready to show (uint8 RGB
``(H, W, 3)``, or floats in [0, 1]; use ``model.deprocess(X)`` on model inputs)
and the arrays an algorithm returned, draws a figure, returns the
:class:`matplotlib.figure.Figure` and, given ``path``, also writes it as a PNG.
Nothing here computes gradients, and the algorithms never import this module.

Figures are made without pyplot (so no display is needed and nothing global is
touched: the Agg canvas renders them) unless ``matplotlib.pyplot`` has already
been imported, in which case they are pyplot figures and ``plt.show()`` shows
them. In Jupyter a returned Figure displays either way.

Example:
    >>> from gradvis import plot
    >>> sal = gradvis.compute_saliency_maps(X, y, model)
    >>> plot.saliency_figure(model.deprocess(X), sal, titles=names, path="saliency.png")
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["saliency_figure", "fooling_figure", "snapshots_figure", "inversion_figure",
           "predictions_figure", "image_grid", "save_figure", "to_display", "DPI"]

DPI = 100


# ----------------------------------------------------------------------------- helpers
def _new_figure(figsize):
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=DPI, compact=False):
    """Write ``fig`` as a PNG to ``path`` (str or Path) and return the path.

    ``compact``: quantize to a 256-colour palette (about 3x smaller files, for
    galleries and docs; the pictures look the same at a glance)."""
    fig.savefig(str(path), dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.05)
    if compact:
        from PIL import Image
        with Image.open(path) as im:
            q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        q.save(path, optimize=True)
    return path


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def to_display(img):
    """An image as imshow wants it: uint8 or float [0, 1] ``(H, W, 3)``; also
    accepts ``(3, H, W)`` and ``(H, W)`` (grayscale)."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"an image must be (H, W, 3), (3, H, W) or (H, W), got shape {a.shape}")
    if a.dtype.kind == "f":
        return np.clip(a, 0.0, 1.0)
    if a.dtype != np.uint8:
        return np.clip(a, 0, 255).astype(np.uint8)
    return a


def _as_list(images):
    """A single image or a stack (N, H, W, 3) / list -> list of images."""
    if isinstance(images, (list, tuple)):
        return list(images)
    a = np.asarray(images)
    if a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 3)):
        return list(a)
    return [a]


def _axis_off(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _wrap(text, width=22):
    import textwrap
    return "\n".join(textwrap.wrap(str(text), width)) if text else text


def _show(ax, img, title=None, fontsize=9, **kw):
    ax.imshow(to_display(img), interpolation="nearest", **kw)
    _axis_off(ax)
    if title:
        ax.set_title(_wrap(title), fontsize=fontsize)


def _cell(n_px, lo=1.6, hi=3.2):
    """Inches for one panel: small images are enlarged, large ones shrunk."""
    return float(np.clip(n_px / 40.0, lo, hi))


# ----------------------------------------------------------------------------- figures
def saliency_figure(images, saliency, titles=None, overlay=True, cmap="hot", path=None):
    """Images over their saliency maps (CS231n's layout): one column per image,
    rows: the image, its saliency map and (``overlay``) the map over the image.

    Args:
        images: N display images (N, H, W, 3).
        saliency: (N, H, W) maps, as from :func:`gradvis.compute_saliency_maps`.
        titles: N column titles (e.g. class names).
        overlay: add a row with the map blended over the image.
        cmap: colour map of the saliency rows.
        path: write a PNG here.
    """
    imgs = _as_list(images)
    sal = np.asarray(saliency, dtype=np.float64)
    if sal.ndim == 2:
        sal = sal[None]
    if sal.ndim != 3 or len(imgs) != sal.shape[0]:
        raise ValueError(f"saliency must be (N, H, W) for {len(imgs)} images, got shape {np.shape(saliency)}")
    n, rows = len(imgs), 3 if overlay else 2
    c = _cell(sal.shape[1])
    fig = _new_figure((c * n, c * rows + 0.3))
    for i, (img, s) in enumerate(zip(imgs, sal)):
        top = s.max()
        s_norm = s / top if top > 0 else s
        _show(fig.add_subplot(rows, n, i + 1), img, titles[i] if titles else None)
        ax = fig.add_subplot(rows, n, n + i + 1)
        ax.imshow(s_norm, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        _axis_off(ax)
        if i == 0:
            ax.set_ylabel("saliency", fontsize=9)
        if overlay:
            ax = fig.add_subplot(rows, n, 2 * n + i + 1)
            base = to_display(img)
            base = base.astype(np.float64) / (255.0 if base.dtype == np.uint8 else 1.0)
            if base.ndim == 2:
                base = np.repeat(base[..., None], 3, axis=2)
            if base.shape[:2] != s_norm.shape:
                ax.imshow(base, interpolation="nearest")
            else:
                ax.imshow(0.45 * base.mean(axis=2, keepdims=True).repeat(3, axis=2), interpolation="nearest")
                ax.imshow(s_norm, cmap=cmap, vmin=0, vmax=1, alpha=np.clip(s_norm * 1.5, 0, 1),
                          interpolation="nearest")
            _axis_off(ax)
            if i == 0:
                ax.set_ylabel("overlay", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.12)
    return _finish(fig, path)


def fooling_figure(original, fooling, magnify=10, titles=None, path=None):
    """Original | fooling image | difference | magnified difference (CS231n).

    Differences are shown on mid-gray (128 + d and 128 + ``magnify`` * d in
    pixel units, clipped), so no change is gray. Several images give one row each.

    Args:
        original, fooling: uint8 display images, (H, W, 3) or (N, H, W, 3).
        magnify: factor of the last panel.
        titles: optional titles of the first two panels, per row: [(orig, fool), ...].
        path: write a PNG here.
    """
    origs, fools = _as_list(original), _as_list(fooling)
    if len(origs) != len(fools):
        raise ValueError(f"{len(origs)} original images but {len(fools)} fooling images")
    n = len(origs)
    c = max(2.0, _cell(np.asarray(origs[0]).shape[0]))
    fig = _new_figure((4 * c, n * (c + 0.5)))
    for r, (o, f) in enumerate(zip(origs, fools)):
        o8, f8 = to_display(o), to_display(f)
        if o8.dtype.kind == "f":
            o8 = np.rint(o8 * 255).astype(np.uint8)
        if f8.dtype.kind == "f":
            f8 = np.rint(f8 * 255).astype(np.uint8)
        d = f8.astype(np.float64) - o8.astype(np.float64)
        t = titles[r] if titles else ("original", "fooling image")
        panels = [(o8, t[0]), (f8, t[1]),
                  (np.clip(128 + d, 0, 255).astype(np.uint8), f"difference (largest {np.abs(d).max():.0f}/255)"),
                  (np.clip(128 + magnify * d, 0, 255).astype(np.uint8), f"magnified difference ({magnify:g}x)")]
        for k, (img, title) in enumerate(panels):
            _show(fig.add_subplot(n, 4, 4 * r + k + 1), img, title)
    fig.subplots_adjust(wspace=0.05, hspace=0.25)
    return _finish(fig, path)


def snapshots_figure(frames, labels=None, title=None, ncols=None, path=None):
    """Iteration snapshots (class visualization, inversion, DeepDream): a grid
    of images with a label under each (e.g. ``"t = 50"``).

    Args:
        frames: a list of display images (sizes may differ).
        labels: one label per frame.
        title: figure title.
        ncols: columns (default: all in one row up to 8).
        path: write a PNG here.
    """
    return image_grid(frames, labels, title=title, ncols=ncols, path=path, labels_below=True)


def image_grid(images, titles=None, title=None, ncols=None, path=None, labels_below=False):
    """A grid of images with optional per-image titles and a figure title."""
    imgs = _as_list(images)
    if not imgs:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != len(imgs):
        raise ValueError(f"{len(titles)} titles for {len(imgs)} images")
    n = len(imgs)
    ncols = min(n, 8) if ncols is None else max(1, int(ncols))
    nrows = -(-n // ncols)
    h, w = np.asarray(imgs[0]).shape[:2]
    c = _cell(max(h, w), hi=2.6)
    fig = _new_figure((c * ncols * (w / max(h, w)), (c * h / max(h, w) + 0.3) * nrows + (0.3 if title else 0)))
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _show(ax, img, None if labels_below or titles is None else titles[i])
        if labels_below and titles is not None:
            ax.set_xlabel(titles[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(wspace=0.05, hspace=0.2)
    return _finish(fig, path)


def inversion_figure(original, reconstructions, title=None, path=None):
    """Shallow vs deep feature inversion: the original, then the reconstruction
    from each layer.

    Args:
        original: the display image whose features were inverted.
        reconstructions: ``{label: image}`` (e.g. ``{"relu2": ..., "relu6": ...}``)
            in order, shallow first; or ``{label: [snapshots]}`` to show each
            layer's progress as a row (the last snapshot is the result).
        title: figure title.
        path: write a PNG here.
    """
    items = list(reconstructions.items())
    if not items:
        raise ValueError("no reconstructions to show")
    rows_of_snapshots = all(isinstance(v, (list, tuple)) for _, v in items)
    if not rows_of_snapshots:
        frames = [original] + [v for _, v in items]
        labels = ["original"] + [f"from {k}" for k, _ in items]
        return image_grid(frames, labels, title=title, path=path)
    ncols = 1 + max(len(v) for _, v in items)
    nrows = len(items)
    c = _cell(np.asarray(original).shape[0])
    fig = _new_figure((c * ncols, (c + 0.3) * nrows + (0.3 if title else 0)))
    for r, (label, frames) in enumerate(items):
        ax = fig.add_subplot(nrows, ncols, r * ncols + 1)
        _show(ax, original, "original" if r == 0 else None)
        ax.set_ylabel(label, fontsize=10)
        for k, fr in enumerate(frames):
            lab = None
            if isinstance(fr, tuple):
                fr, lab = fr
            ax = fig.add_subplot(nrows, ncols, r * ncols + k + 2)
            _show(ax, fr)
            if lab:
                ax.set_xlabel(lab, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(wspace=0.05, hspace=0.2)
    return _finish(fig, path)


def predictions_figure(images, predictions, titles=None, path=None):
    """Each image beside a bar chart of its top classes.

    Args:
        images: N display images.
        predictions: per image, a list of ``(class name, probability)``, best first.
        titles: optional image titles.
        path: write a PNG here.
    """
    imgs = _as_list(images)
    if len(imgs) != len(predictions):
        raise ValueError(f"{len(predictions)} prediction lists for {len(imgs)} images")
    n = len(imgs)
    fig = _new_figure((6.4, 1.9 * n))
    for i, (img, preds) in enumerate(zip(imgs, predictions)):
        _show(fig.add_subplot(n, 2, 2 * i + 1), img, titles[i] if titles else None)
        ax = fig.add_subplot(n, 2, 2 * i + 2)
        names = [str(p[0]) if len(str(p[0])) <= 28 else str(p[0])[:27] + "…" for p in preds]
        probs = [float(p[1]) for p in preds]
        y = np.arange(len(preds))
        ax.barh(y, probs, color="#4c72b0")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
        for yy, p in zip(y, probs):
            ax.text(min(p + 0.02, 0.8), yy, f"{p:.2f}", va="center", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.3)
    return _finish(fig, path)
