"""Reading image files as RGB uint8 arrays, and fitting them to a size."""
from __future__ import annotations

import numpy as np

__all__ = ["read_rgb", "load_image", "fit_image", "resize_rgb", "multi_crops"]


def _to_rgb(im):
    """A Pillow image as RGB uint8 (H, W, 3): transparency composited over white,
    16-bit and float images rescaled to their own range."""
    from PIL import Image
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.rint((a - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_rgb(path):
    """Any image file Pillow reads, as (rgb, mode): RGB uint8 (H, W, 3) with EXIF
    rotation applied, transparency composited over white and 16-bit and float
    images rescaled; ``mode`` is the file's Pillow mode. A file that cannot be
    read (damaged, not an image, too large to decode safely, empty) raises
    ValueError naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            mode = im.mode
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = _to_rgb(im)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file that Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: image too large to read safely ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:   # truncated or damaged files, permissions
        raise ValueError(f"{path}: cannot read image ({e})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"{path}: empty image")
    return np.ascontiguousarray(rgb, dtype=np.uint8), mode


def resize_rgb(rgb, size, box=None):
    """uint8 (H, W, 3) -> size (H', W') with Pillow's antialiased bicubic; ``box``
    (left, top, right, bottom), in source pixels, resizes only that region."""
    from PIL import Image
    h, w = size
    if rgb.shape[:2] == (h, w) and box is None:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC, box=box))


def fit_image(rgb, size):
    """Scale (keeping the aspect ratio) so the image covers ``size`` (H, W), and crop
    the centre. Returns (image (H, W, 3) uint8, description of what was done or None).

    Only the part that survives the crop is resized: memory and time follow the
    output size, not the scaled image's (a 65000x1 strip fitted to 64x64 would
    otherwise be scaled to 4,160,000x64 first).
    """
    h0, w0 = rgb.shape[:2]
    h, w = size
    if (h0, w0) == (h, w):
        return rgb, None
    s = max(h / h0, w / w0)
    rh, rw = max(h, int(round(h0 * s))), max(w, int(round(w0 * s)))
    # the crop of the scaled (rh, rw) image, mapped back to source pixels
    y, x = (rh - h) // 2, (rw - w) // 2
    sy, sx = h0 / rh, w0 / rw
    box = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
    out = resize_rgb(rgb, (h, w), box=box)
    what = f"resized from {w0}x{h0} to {rw}x{rh}"
    if (rh, rw) != (h, w):
        what += f" and center-cropped to {w}x{h}"
    return np.ascontiguousarray(out), what


def multi_crops(rgb, size, n=5, scale=1.14):
    """Several views of one photo for test-time averaging (Krizhevsky et al. 2012;
    torchvision's FiveCrop/TenCrop).

    The photo is scaled (aspect kept) so that it covers ``scale`` times ``size``
    (H, W); from the centre square of that, ``n`` crops of ``size`` are cut:
    n=1 the centre (the same as :func:`fit_image` when scale is 1), n=5 the centre
    and the four corners, n=10 those five and their mirror images.

    Args:
        rgb: (H0, W0, 3) uint8.
        size: (H, W) of the crops.
        n: 1, 5 or 10.
        scale: >= 1; how much larger than ``size`` the scaled photo is.

    Returns:
        (n, H, W, 3) uint8.
    """
    if n not in (1, 5, 10):
        raise ValueError(f"crops must be 1, 5 or 10, got {n!r}")
    scale = float(scale)
    if not (np.isfinite(scale) and 1.0 <= scale <= 4.0):
        raise ValueError(f"scale must be between 1 and 4, got {scale!r}")
    h, w = size
    big = (max(h, int(round(h * scale))), max(w, int(round(w * scale))))
    img, _ = fit_image(rgb, big)
    if n == 1:
        out = [fit_image(img, (h, w))[0]]
    else:
        H, W = big
        cy, cx = (H - h) // 2, (W - w) // 2
        corners = [(cy, cx), (0, 0), (0, W - w), (H - h, 0), (H - h, W - w)]
        out = [img[y:y + h, x:x + w] for y, x in corners]
        if n == 10:
            out += [c[:, ::-1] for c in out]
    return np.ascontiguousarray(np.stack(out))


def load_image(path, size=None):
    """An image file as RGB uint8 (H, W, 3), the layout ``model.preprocess`` takes.

    Args:
        path: any image file Pillow reads (EXIF rotation applied, transparency
            composited over white, 16-bit and float images rescaled).
        size: None (the file's own size), an int (a square) or (H, W): the image is
            scaled to cover that size, keeping its aspect ratio, and its centre cropped.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        FileNotFoundError if there is no file; ValueError naming it if it cannot be
        read; TypeError/ValueError naming ``size`` for a bad size.

    Example:
        >>> img = gradvis.load_image("cat.jpg", size=64)
        >>> X = model.preprocess(img[None])
    """
    from pathlib import Path
    from .. import _checks
    fit = _checks.size_pair(size, "size")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if p.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    rgb, _ = read_rgb(p)
    return rgb if fit is None else fit_image(rgb, fit)[0]
