"""Reading image files as RGB uint8 arrays."""
from __future__ import annotations

import numpy as np

__all__ = ["read_rgb", "resize_rgb", "fit_image"]


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


def resize_rgb(rgb, size):
    """uint8 (H, W, 3) -> size (H', W') with Pillow's antialiased bicubic."""
    from PIL import Image
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


def fit_image(rgb, size):
    """Resize (keeping the aspect ratio) so the image covers ``size`` (H, W), then
    crop the centre. Returns (image, description of what was done or None)."""
    h0, w0 = rgb.shape[:2]
    h, w = size
    if (h0, w0) == (h, w):
        return rgb, None
    s = max(h / h0, w / w0)
    rh, rw = max(h, int(round(h0 * s))), max(w, int(round(w0 * s)))
    out = resize_rgb(rgb, (rh, rw))
    y, x = (rh - h) // 2, (rw - w) // 2
    out = out[y:y + h, x:x + w]
    what = f"resized from {w0}x{h0} to {rw}x{rh}"
    if (rh, rw) != (h, w):
        what += f" and center-cropped to {w}x{h}"
    return np.ascontiguousarray(out), what
