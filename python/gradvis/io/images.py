"""Reading image files as RGB uint8 arrays."""
from __future__ import annotations

import numpy as np

__all__ = ["read_rgb"]


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
