"""Figures of the CS231n notebooks, drawn with matplotlib.

Display only: every function takes images that are ready to show (uint8 RGB
``(H, W, 3)``, or floats in [0, 1]; use ``model.deprocess(X)`` on model inputs)
and the arrays an algorithm returned, draws a figure, returns the
:class:`matplotlib.figure.Figure` and, given ``path``, also writes it (see
:func:`save_figure`: PNG unless the name says otherwise; a file that exists is
overwritten, as matplotlib does, but only once the figure has been rendered).
Nothing here computes gradients, and the algorithms never import this module.

Accepted images (see :func:`to_display`): ``(H, W, 3)``, ``(H, W, 4)`` (RGBA),
``(H, W)`` or ``(H, W, 1)`` (grayscale), and channels-first ``(3, H, W)`` /
``(1, H, W)``; uint8 (other integers are clipped to [0, 255]) or floats in
[0, 1] (clipped). Where several images are taken, give a list of such images or
one array ``(N, H, W, 3)``, ``(N, 3, H, W)`` or ``(N, H, W)``. A 3-D array whose
first or last axis is 1 or 3 is one image, never a stack: pass three grayscale
images as a list, not as one ``(3, H, W)`` array. Empty images, NaN or infinite
values and non-numeric arrays raise ValueError/TypeError naming the argument.

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

import io
import numbers
import os
import secrets
import shutil
import sys
from collections.abc import Mapping

import numpy as np

from . import _checks

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


def _format_of(fig, format, name):
    """The file format to write: ``format``, else ``path``'s extension, else png."""
    supported = fig.canvas.get_supported_filetypes()
    if format is not None:
        if not isinstance(format, str):
            raise TypeError(f"format must be a string such as 'png', got {format!r}")
        fmt = format.lower().lstrip(".")
        if fmt not in supported:
            raise ValueError(f"format {format!r} is not supported; use one of {', '.join(sorted(supported))}")
        return fmt
    ext = os.path.splitext(name)[1][1:].lower() if name is not None else ""
    if not ext:
        return "png"
    if ext not in supported:
        raise ValueError(f"path {name!r}: unknown image format {ext!r} (supported extensions: "
                         f"{', '.join(sorted(supported))}); use a .png name or pass format=")
    return ext


def _figure_bytes(fig, fmt, dpi, compact):
    """The figure rendered to bytes; nothing is written anywhere yet."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=fmt, bbox_inches="tight", pad_inches=0.05)
    if compact:
        from PIL import Image
        buf.seek(0)
        with Image.open(buf) as im:
            q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        q.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _write_file(name, data):
    """Write ``data`` to the file ``name``: to a new file in the same folder that
    then replaces it, so that a failed write leaves an existing file as it was."""
    target = os.path.realpath(name)   # write through a symlink, as open() would
    if os.path.isdir(target):
        raise IsADirectoryError(f"path {name!r} is a directory")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {name!r}: folder {folder!r} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError:
        # no new file allowed in that folder (e.g. no write permission on it, only on the file):
        # write in place; the data is complete already, so only the write itself can fail
        with open(target, "wb") as f:
            f.write(data)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if os.path.exists(target):
            try:
                shutil.copymode(target, tmp)
            except OSError:
                pass
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_figure(fig, path, dpi=DPI, compact=False, format=None):
    """Write ``fig`` to ``path`` and return ``path``.

    Args:
        fig: a :class:`matplotlib.figure.Figure`.
        path: a file name (str, bytes or ``os.PathLike``), or a writable binary file
            object (``io.BytesIO``, ``open(name, "wb")``): the bytes are written at its
            position and it is left open. A file that exists is overwritten (as
            matplotlib's ``savefig`` does), but the figure is rendered first and
            written to a new file in the same folder that then replaces it: if
            saving fails, an existing file is left as it was.
        dpi: resolution, dots per inch (a positive number).
        compact: quantize to a 256-colour palette (about 3x smaller files, for
            galleries and docs; the pictures look the same at a glance). PNG only.
        format: ``'png'``, ``'jpg'``, ``'svg'``, ``'pdf'``, ... (what matplotlib can
            write); default: from ``path``'s extension, PNG when it has none or
            ``path`` is a file object. An unknown extension is a ValueError.
    """
    if not (hasattr(fig, "savefig") and hasattr(fig, "canvas")):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if isinstance(path, io.TextIOBase):
        raise TypeError("path is a text-mode file; open it in binary mode ('wb') or use io.BytesIO")
    if hasattr(path, "write"):
        name = None
    elif isinstance(path, (str, bytes, os.PathLike)):
        name = os.fsdecode(os.fspath(path))
        if not name:
            raise ValueError("path is empty")
    else:
        raise TypeError(f"path must be a file name (str or os.PathLike) or a binary file object, "
                        f"got {type(path).__name__}")
    if not (isinstance(dpi, str) and dpi == "figure"):
        dpi = _checks.nonneg_float(dpi, "dpi", positive=True)
    fmt = _format_of(fig, format, name)
    if compact and fmt != "png":
        raise ValueError(f"compact=True writes a palette PNG; it cannot write format {fmt!r}"
                         + (f" (path {name!r})" if name is not None else ""))
    data = _figure_bytes(fig, fmt, dpi, compact)
    if name is None:
        path.write(data)
    else:
        _write_file(name, data)
    return path


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _array(x, name, what):
    """``x`` as a numeric ndarray; ValueError for ragged nested lists, TypeError
    naming ``name`` (which must be ``what``) for anything that is not numbers."""
    try:
        a = np.asarray(x)
    except ValueError as e:
        raise ValueError(f"{name} is not an array: {e}") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {what}, got {type(x).__name__}"
                        + (f" of dtype {a.dtype}" if a.dtype.kind != "O" else ""))
    return a


def to_display(img, name="image"):
    """An image as imshow wants it: uint8 or float [0, 1] ``(H, W, 3)`` or
    ``(H, W, 4)``, or ``(H, W)`` (grayscale).

    Accepts ``(H, W, 3)``, ``(H, W, 4)`` (RGBA), ``(H, W, 1)``, ``(H, W)`` and
    channels-first ``(3, H, W)`` / ``(1, H, W)``. Floats are clipped to [0, 1],
    other integers to [0, 255]; booleans show as black/white. A non-numeric
    array is a TypeError; another shape, an empty image or NaN/infinite values a
    ValueError naming ``name``."""
    a = _array(img, name, "a numeric image array")
    if a.dtype.kind == "b":
        a = a.astype(np.uint8) * np.uint8(255)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ValueError(f"{name} must be an image (H, W, 3), (3, H, W) or (H, W), got shape {np.shape(img)}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(img)})")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return np.clip(a, 0.0, 1.0)
    if a.dtype != np.uint8:
        return np.clip(a, 0, 255).astype(np.uint8)
    return a


def _as_list(images, name="images"):
    """One image or several -> a non-empty list of display images (:func:`to_display`).

    A list/tuple holds one image per entry. An array: 4-D is a stack
    (N, H, W, C) or (N, C, H, W); 3-D is one image when its last axis is 1, 3 or 4
    (H, W, C) or else its first is 1 or 3 (C, H, W), and otherwise a stack of
    (N, H, W) grayscale images; 2-D is one grayscale image."""
    if isinstance(images, (list, tuple)):
        items = list(images)
    else:
        a = _array(images, name, "an image array or a list of images")
        if a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] not in (1, 3)):
            items = list(a)
        else:
            return [to_display(a, name)]
    if not items:
        raise ValueError(f"{name} is empty (no images)")
    return [to_display(im, f"{name}[{i}]") for i, im in enumerate(items)]


def _titles(titles, n, name="titles", what="images"):
    """``titles`` as a list of ``n`` entries (None: no titles)."""
    if titles is None:
        return None
    if isinstance(titles, (str, bytes)) or not hasattr(titles, "__len__"):
        raise TypeError(f"{name} must be a list of {n} titles (one per image), got {type(titles).__name__}")
    titles = list(titles)
    if len(titles) != n:
        raise ValueError(f"{name} has {len(titles)} {'entry' if len(titles) == 1 else 'entries'} for {n} {what}")
    return titles


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
def _numeric(x, name):
    """``x`` as a float64 array; TypeError naming ``name`` if it is not numbers."""
    return _array(x, name, "a numeric array").astype(np.float64, copy=False)


def saliency_figure(images, saliency, titles=None, overlay=True, cmap="hot", path=None):
    """Images over their saliency maps (CS231n's layout): one column per image,
    rows: the image, its saliency map and (``overlay``) the map over the image.

    Args:
        images: N display images: (N, H, W, 3), (N, 3, H, W) or a list; one image
            (H, W, 3) or (3, H, W) (see the module docstring).
        saliency: (N, H, W) maps, as from :func:`gradvis.compute_saliency_maps`
            ((H, W) for one image); finite values.
        titles: N column titles (e.g. class names).
        overlay: add a row with the map blended over the image.
        cmap: colour map of the saliency rows.
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
    """
    imgs = _as_list(images, "images")
    sal = _numeric(saliency, "saliency")
    if sal.ndim == 2:
        sal = sal[None]
    if sal.ndim != 3 or len(imgs) != sal.shape[0]:
        raise ValueError(f"saliency must be (N, H, W) for {len(imgs)} images, got shape {np.shape(saliency)}")
    if sal.size == 0:
        raise ValueError(f"saliency is empty (shape {np.shape(saliency)})")
    if not np.isfinite(sal).all():
        raise ValueError("saliency contains NaN or infinite values")
    n, rows = len(imgs), 3 if overlay else 2
    titles = _titles(titles, n)
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
            base = img[..., :3] if img.ndim == 3 else img
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
        original, fooling: display images of the same shapes: one image (H, W, 3)
            or (3, H, W), or several, (N, H, W, 3) / (N, 3, H, W) / a list.
        magnify: factor of the last panel (a finite number).
        titles: optional titles of the first two panels, per row: [(orig, fool), ...].
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
    """
    origs, fools = _as_list(original, "original"), _as_list(fooling, "fooling")
    if len(origs) != len(fools):
        raise ValueError(f"{len(origs)} original images but {len(fools)} fooling images")
    magnify = _checks.finite_float(magnify, "magnify")
    n = len(origs)
    if titles is not None:
        if n == 1 and isinstance(titles, (list, tuple)) and len(titles) == 2 and all(
                isinstance(t, str) for t in titles):
            raise ValueError("titles must hold one (original title, fooling title) pair per row: "
                             "for one image use titles=[(orig, fool)]")
        titles = _titles(titles, n, what="rows")
        for r, t in enumerate(titles):
            if isinstance(t, (str, bytes)) or not hasattr(t, "__len__"):
                raise TypeError(f"titles[{r}] must be a pair (original title, fooling title), got {t!r}")
            if len(t) != 2:
                raise ValueError(f"titles[{r}] must be a pair (original title, fooling title), "
                                 f"got {len(t)} entries")
    c = max(2.0, _cell(origs[0].shape[0]))
    fig = _new_figure((4 * c, n * (c + 0.5)))
    for r, (o8, f8) in enumerate(zip(origs, fools)):
        if o8.shape != f8.shape:
            raise ValueError(f"original[{r}] and fooling[{r}] differ in shape: {o8.shape} and {f8.shape}"
                             if n > 1 else f"original and fooling differ in shape: {o8.shape} and {f8.shape}")
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
        frames: a list of display images (sizes may differ), or one array
            (N, H, W, 3) / (N, 3, H, W).
        labels: one label per frame.
        title: figure title.
        ncols: columns (a positive integer; default: all in one row up to 8).
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
    """
    return _grid(frames, labels, title, ncols, path, True, "frames", "labels")


def image_grid(images, titles=None, title=None, ncols=None, path=None, labels_below=False):
    """A grid of images with optional per-image titles and a figure title.

    Args:
        images: a list of display images (sizes may differ), or one array
            (N, H, W, 3) / (N, 3, H, W); a single image (H, W, 3) or (3, H, W) is one panel.
        titles: one title per image.
        title: figure title.
        ncols: columns (a positive integer; default: all in one row up to 8).
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
        labels_below: put the titles under the images.
    """
    return _grid(images, titles, title, ncols, path, labels_below, "images", "titles")


def _grid(images, titles, title, ncols, path, labels_below, name, titles_name):
    imgs = _as_list(images, name)
    n = len(imgs)
    titles = _titles(titles, n, titles_name)
    if ncols is None:
        ncols = min(n, 8)
    else:
        if isinstance(ncols, (bool, np.bool_)) or not isinstance(ncols, numbers.Real):
            raise TypeError(f"ncols must be a positive integer, got {ncols!r}")
        if not np.isfinite(ncols) or ncols < 1:
            raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
        ncols = int(ncols)
    nrows = -(-n // ncols)
    h, w = imgs[0].shape[:2]
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
        original: the display image whose features were inverted, (H, W, 3) or (3, H, W).
        reconstructions: a dict ``{label: image}`` (e.g. ``{"relu2": ..., "relu6": ...}``)
            in order, shallow first; or ``{label: [snapshots]}`` to show each
            layer's progress as a row (the last snapshot is the result; a snapshot
            may be an ``(image, caption)`` pair).
        title: figure title.
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
    """
    if not isinstance(reconstructions, Mapping):
        raise TypeError(f"reconstructions must be a dict {{label: image}} or {{label: [snapshots]}}, "
                        f"got {type(reconstructions).__name__}")
    items = list(reconstructions.items())
    if not items:
        raise ValueError("no reconstructions to show")
    original = to_display(original, "original")
    is_row = [isinstance(v, (list, tuple)) for _, v in items]
    if not all(is_row):
        if any(is_row):
            raise ValueError("reconstructions mixes single images and lists of snapshots; "
                             "give all labels an image, or all a list")
        frames = [original] + [to_display(v, f"reconstructions[{k!r}]") for k, v in items]
        labels = ["original"] + [f"from {k}" for k, _ in items]
        return image_grid(frames, labels, title=title, path=path)
    rows = []
    for label, frames in items:
        if not frames:
            raise ValueError(f"reconstructions[{label!r}] is an empty list")
        row = []
        for k, fr in enumerate(frames):
            lab = None
            if isinstance(fr, tuple):
                if len(fr) != 2:
                    raise ValueError(f"reconstructions[{label!r}][{k}] must be an image or an "
                                     f"(image, caption) pair, got a tuple of {len(fr)}")
                fr, lab = fr
            row.append((to_display(fr, f"reconstructions[{label!r}][{k}]"), lab))
        rows.append((label, row))
    ncols = 1 + max(len(row) for _, row in rows)
    nrows = len(rows)
    c = _cell(original.shape[0])
    fig = _new_figure((c * ncols, (c + 0.3) * nrows + (0.3 if title else 0)))
    for r, (label, row) in enumerate(rows):
        ax = fig.add_subplot(nrows, ncols, r * ncols + 1)
        _show(ax, original, "original" if r == 0 else None)
        ax.set_ylabel(label, fontsize=10)
        for k, (fr, lab) in enumerate(row):
            ax = fig.add_subplot(nrows, ncols, r * ncols + k + 2)
            _show(ax, fr)
            if lab:
                ax.set_xlabel(lab, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(wspace=0.05, hspace=0.2)
    return _finish(fig, path)


def _predictions(predictions, n):
    """``predictions`` as n lists of (name, probability) pairs, checked."""
    if isinstance(predictions, (str, bytes)) or not hasattr(predictions, "__len__"):
        raise TypeError(f"predictions must be a list (one per image) of [(class name, probability), ...] "
                        f"lists, got {type(predictions).__name__}")
    if len(predictions) != n:
        raise ValueError(f"{len(predictions)} prediction lists for {n} images")
    out = []
    for i, preds in enumerate(predictions):
        if isinstance(preds, (str, bytes)) or not hasattr(preds, "__len__"):
            raise TypeError(f"predictions[{i}] must be a list of (class name, probability) pairs, "
                            f"got {type(preds).__name__}")
        row = []
        for j, p in enumerate(preds):
            if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 2:
                raise ValueError(f"predictions[{i}][{j}] must be a (class name, probability) pair, got {p!r}")
            row.append((str(p[0]), _checks.finite_float(p[1], f"predictions[{i}][{j}] probability")))
        out.append(row)
    return out


def predictions_figure(images, predictions, titles=None, path=None):
    """Each image beside a bar chart of its top classes.

    Args:
        images: N display images (a list, (N, H, W, 3) or (N, 3, H, W)); one image
            (H, W, 3) or (3, H, W).
        predictions: per image, a list of ``(class name, probability)``, best first.
        titles: optional image titles, one per image.
        path: write the figure here (:func:`save_figure`; overwrites ``path`` if it exists).
    """
    imgs = _as_list(images, "images")
    n = len(imgs)
    predictions = _predictions(predictions, n)
    titles = _titles(titles, n)
    fig = _new_figure((6.4, 1.9 * n))
    for i, (img, preds) in enumerate(zip(imgs, predictions)):
        _show(fig.add_subplot(n, 2, 2 * i + 1), img, titles[i] if titles else None)
        ax = fig.add_subplot(n, 2, 2 * i + 2)
        names = [p[0] if len(p[0]) <= 28 else p[0][:27] + "…" for p in preds]
        probs = [p[1] for p in preds]
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
