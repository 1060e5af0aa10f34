"""TinyImageNet-100-A and image-folder data sets as uint8 numpy arrays.

The TinyImageNet archive is read in place (no unpacking to disk) and decoded
once; the decoded arrays are cached as an ``.npz`` file keyed by the archive's
path, size and modification time, so later loads take a second. The whole
archive is read and checked (the gzip CRC, and that every class in
``wnids.txt`` has training and held-out images), so a damaged archive is
refused rather than loaded in part.

Split: the images numbered 450-499 of each class (``<wnid>_450.JPEG`` ...
``<wnid>_499.JPEG``) are the validation split, never trained on; 0-449 train.
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import io
import os
import re
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = ["COLOR_INFO_KEY", "color_correlation_from_images", "ImageDataset", "load_tiny_imagenet", "find_tiny_imagenet", "load_image_folder",
           "VAL_FIRST_INDEX", "ARCHIVE_NAME"]

ARCHIVE_NAME = "tiny-imagenet-100-A-train.tar.gz"
VAL_FIRST_INDEX = 450  # images 450..499 of each class are held out
_CACHE_VERSION = 1


@dataclasses.dataclass
class ImageDataset:
    """Images as uint8 (N, H, W, 3) with labels.

    Attributes:
        X_train, X_val: uint8 arrays (N, H, W, 3), RGB.
        y_train, y_val: int64 labels (N,).
        wnids: the class ids, index = label.
        class_names: readable names, index = label.
        boxes_train, boxes_val: (N, 4) int32 boxes (x0, y0, x1, y1), inclusive, or None.
    """
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    wnids: list
    class_names: list
    boxes_train: np.ndarray | None = None
    boxes_val: np.ndarray | None = None

    @property
    def num_classes(self):
        return len(self.wnids)


def find_tiny_imagenet(path=None):
    """Locate the TinyImageNet-100-A archive.

    An explicit ``path`` must be the archive: it is returned if it is a file, else
    FileNotFoundError names it (nothing else is tried). Without ``path``:
    ``$GRADVIS_TINY_IMAGENET`` if set (which then must be a file), else
    ``shared/data/`` and ``../shared/data/`` from the working directory and from
    this source tree. Raises FileNotFoundError naming the places it looked.
    """
    if path is not None:
        p = Path(path)
        if p.is_file():
            return p
        if p.is_dir():
            raise FileNotFoundError(f"TinyImageNet archive not found: {path} is a directory, not the "
                                    f"{ARCHIVE_NAME} file")
        raise FileNotFoundError(f"TinyImageNet archive not found: {path}")
    env = os.environ.get("GRADVIS_TINY_IMAGENET")
    if env:
        p = Path(env)
        if p.is_file():
            return p
        raise FileNotFoundError(f"TinyImageNet archive not found: GRADVIS_TINY_IMAGENET={env} "
                                f"{'is a directory' if p.is_dir() else 'does not exist'}")
    here = Path(__file__).resolve()
    candidates = []
    for base in [Path.cwd(), *here.parents]:
        candidates.append(base / "shared" / "data" / ARCHIVE_NAME)
        candidates.append(base.parent / "shared" / "data" / ARCHIVE_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"could not find {ARCHIVE_NAME}; pass its path or set GRADVIS_TINY_IMAGENET "
        f"(looked in ./shared/data, ../shared/data and above {here.parent})")


def default_cache_dir():
    """``$GRADVIS_CACHE`` or ``~/.cache/gradvis``."""
    env = os.environ.get("GRADVIS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gradvis"


def _decode_rgb(data, where):
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{where}: not an image file that Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{where}: image too large to read safely ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:   # truncated or damaged
        raise ValueError(f"{where}: cannot decode the image ({e})") from None


def _text(tar, member, where):
    try:
        return tar.extractfile(member).read().decode()
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text ({e})") from None


_IMG_RE = re.compile(r"train/(n\d+)/images/(n\d+)_(\d+)\.JPEG$")
_GZIP_MAGIC = b"\x1f\x8b"


def _open_stream(archive):
    """The archive's tar bytes as a seekable file object: gzip-decompressed for a
    gzip file (``.tar.gz``/``.tgz``), else the file itself (a plain ``.tar``)."""
    raw = open(archive, "rb")
    try:
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            return raw, gzip.GzipFile(fileobj=raw, mode="rb")
        raw.seek(0)
        return raw, raw
    except BaseException:
        raw.close()
        raise


class _Reader:
    """A file object that remembers its last read, so the tar header at which tarfile
    stopped can be checked without seeking back (which a gzip stream does by
    decompressing again from the start)."""

    def __init__(self, f):
        self.f, self.last, self.last_at = f, b"", -1

    def read(self, n=-1):
        self.last_at = self.f.tell()
        self.last = self.f.read(n)
        return self.last

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()


def _check_tail(reader, offset, archive):
    """After tarfile stops at ``offset``: the rest must be the zero blocks that end a
    tar archive (tarfile also stops, silently, at a header it cannot read); and
    reading a gzip stream to its end checks its CRC and length."""
    if reader.last_at == offset and reader.tell() == offset + len(reader.last):
        rest, at = reader.last, offset
    else:
        reader.seek(offset)
        rest, at = b"", offset
    while True:
        if rest.count(0) != len(rest):
            raise ValueError(f"{archive}: damaged archive: unreadable tar header or data after the end "
                             f"of the archive (near byte {at} of the uncompressed data)")
        at += len(rest)
        rest = reader.read(1 << 20)
        if not rest:
            return


def _read_archive(archive):
    images = {}   # (wnid, k) -> array
    members = {}  # (wnid, k) -> member name
    boxes = {}    # (wnid, k) -> (x0, y0, x1, y1)
    box_src = {}  # (wnid, k) -> where the box came from
    wnids = None
    words = {}
    raw, stream = _open_stream(archive)
    reader = _Reader(stream)
    try:
        with tarfile.open(fileobj=reader, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                where = f"{archive}: member {name}"
                if name.endswith("wnids.txt"):
                    wnids = _text(tar, member, where).split()
                    if not wnids:
                        raise ValueError(f"{where}: no class ids")
                elif name.endswith("words.txt"):
                    for line in _text(tar, member, where).splitlines():
                        parts = line.split("\t", 1)
                        if len(parts) == 2:
                            words[parts[0]] = parts[1].strip()
                elif name.endswith("_boxes.txt"):
                    for i, line in enumerate(_text(tar, member, where).splitlines(), start=1):
                        parts = line.split()
                        if len(parts) == 5:
                            m = re.match(r"(n\d+)_(\d+)\.JPEG", parts[0])
                            if m:
                                try:
                                    box = tuple(int(v) for v in parts[1:])
                                except ValueError:
                                    raise ValueError(f"{where}, line {i}: bad box {line.strip()!r}") from None
                                key = (m.group(1), int(m.group(2)))
                                boxes[key], box_src[key] = box, f"{where}, line {i}"
                else:
                    m = _IMG_RE.search(name)
                    if m:
                        key = (m.group(1), int(m.group(3)))
                        images[key] = _decode_rgb(tar.extractfile(member).read(), where)
                        members[key] = name
            _check_tail(reader, tar.offset, archive)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        what = str(e) or type(e).__name__
        if isinstance(e, EOFError):
            what = f"truncated ({what})"
        raise ValueError(f"{archive}: damaged or not a tar archive: {what}") from None
    finally:
        if stream is not raw:
            stream.close()
        raw.close()
    if wnids is None:
        raise ValueError(f"{archive}: no wnids.txt in the archive")
    if not images:
        raise ValueError(f"{archive}: no train/<wnid>/images/*.JPEG files in the archive")
    known = set(wnids)
    for key, name in members.items():
        if key[0] not in known:
            raise ValueError(f"{archive}: member {name}: class {key[0]} is not in wnids.txt")
    shapes = collections.Counter(a.shape for a in images.values())
    shape = shapes.most_common(1)[0][0]
    for key in sorted(images):
        if images[key].shape != shape:
            h, w = images[key].shape[:2]
            raise ValueError(f"{archive}: member {members[key]}: image is {w}x{h}, but the others are "
                             f"{shape[1]}x{shape[0]}; all images must have the same size")
    for key, (x0, y0, x1, y1) in boxes.items():
        if key in images and not (0 <= x0 <= x1 < shape[1] and 0 <= y0 <= y1 < shape[0]):
            raise ValueError(f"{box_src[key]}: box ({x0}, {y0}, {x1}, {y1}) of {key[0]}_{key[1]}.JPEG "
                             f"is outside the {shape[1]}x{shape[0]} image")
    return images, boxes, wnids, words


def _check_complete(where, wnids, y_train, y_val):
    """Every class must have training and held-out images; else ValueError naming them."""
    n = len(wnids)
    for what, y in (("training images (numbered below 450)", y_train),
                    ("held-out images (numbered 450-499)", y_val)):
        missing = np.flatnonzero(np.bincount(np.asarray(y, np.int64), minlength=n)[:n] == 0)
        if len(missing):
            names = ", ".join(wnids[i] for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"{where}: {len(missing)} of the {n} classes in wnids.txt have no {what}: "
                             f"{names}; the archive is incomplete or damaged")


_CACHE_PREFIX = "tiny-imagenet-100-A-"


def _source_tag(archive):
    """8 hex digits from the archive's resolved path: the entries made from one path share it."""
    return hashlib.sha1(str(Path(archive).resolve()).encode()).hexdigest()[:8]


def _cache_key(archive):
    st = os.stat(archive)
    h = hashlib.sha1(f"{Path(archive).resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_VERSION}".encode())
    return h.hexdigest()[:16]


def _prune_cache(cache_dir, archive, keep):
    """Remove the cache entries made from ``archive``'s path except ``keep`` (the archive
    changed since they were written, so they are never read again). Only complete
    entries this module names ``tiny-imagenet-100-A-<path tag>-<key>.npz`` are touched."""
    pattern = re.compile(re.escape(f"{_CACHE_PREFIX}{_source_tag(archive)}-") + r"[0-9a-f]{16}\.npz")
    try:
        entries = list(cache_dir.iterdir())
    except OSError:
        return
    for f in entries:
        if f.name != keep.name and pattern.fullmatch(f.name):
            try:
                f.unlink()
            except OSError:
                pass


def load_tiny_imagenet(path=None, cache_dir=None, use_cache=True):
    """Load TinyImageNet-100-A as an :class:`ImageDataset`.

    Args:
        path: the ``tiny-imagenet-100-A-train.tar.gz`` archive (a plain ``.tar`` works
            too); see :func:`find_tiny_imagenet` for where it is looked for without one.
        cache_dir: where the decoded arrays are cached (default :func:`default_cache_dir`).
        use_cache: read and write the cache.

    The cache holds one entry per archive path, named
    ``tiny-imagenet-100-A-<path tag>-<key>.npz`` (the key covers the path, size and
    modification time). Writing a new entry removes the older entries made from the
    same path, so a replaced or touched archive does not leave its old decode
    behind (about 615 MB each). Entries of other archives are kept; so are entries
    from before this naming scheme (``tiny-imagenet-100-A-<key>.npz``, which carry
    no path tag): such an entry is renamed when it is read.

    Raises:
        FileNotFoundError: no archive (see :func:`find_tiny_imagenet`).
        ValueError: a damaged, truncated or incomplete archive, naming it (and the
            member at fault where there is one). Nothing is cached then.

    Returns:
        ImageDataset with 45,000 train and 5,000 validation images of 64x64.
    """
    archive = find_tiny_imagenet(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(archive)
    cache_file = cache_dir / f"{_CACHE_PREFIX}{_source_tag(archive)}-{key}.npz"
    if use_cache:
        legacy = cache_dir / f"{_CACHE_PREFIX}{key}.npz"
        if not cache_file.is_file() and legacy.is_file():
            try:
                os.replace(legacy, cache_file)
                _prune_cache(cache_dir, archive, keep=cache_file)
            except OSError:
                cache_file = legacy   # a read-only cache: read it where it is
    if use_cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                ds = ImageDataset(
                    X_train=z["X_train"], y_train=z["y_train"], X_val=z["X_val"], y_val=z["y_val"],
                    wnids=[str(s) for s in z["wnids"]], class_names=[str(s) for s in z["class_names"]],
                    boxes_train=z["boxes_train"], boxes_val=z["boxes_val"])
            _check_complete(cache_file, ds.wnids, ds.y_train, ds.y_val)
            return ds
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    images, boxes, wnids, words = _read_archive(archive)
    class_index = {w: i for i, w in enumerate(wnids)}
    keys = sorted(images, key=lambda k: (class_index[k[0]], k[1]))
    X = np.stack([images[k] for k in keys])
    y = np.array([class_index[k[0]] for k in keys], dtype=np.int64)
    b = np.array([boxes.get(k, (0, 0, X.shape[2] - 1, X.shape[1] - 1)) for k in keys], dtype=np.int32)
    is_val = np.array([k[1] >= VAL_FIRST_INDEX for k in keys])
    _check_complete(archive, wnids, y[~is_val], y[is_val])
    names = [words.get(w, w) for w in wnids]
    ds = ImageDataset(X_train=X[~is_val], y_train=y[~is_val], X_val=X[is_val], y_val=y[is_val],
                      wnids=list(wnids), class_names=names,
                      boxes_train=b[~is_val], boxes_val=b[is_val])
    if use_cache:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, X_train=ds.X_train, y_train=ds.y_train, X_val=ds.X_val, y_val=ds.y_val,
                     wnids=np.array(ds.wnids), class_names=np.array(ds.class_names),
                     boxes_train=ds.boxes_train, boxes_val=ds.boxes_val)
            os.replace(tmp, cache_file)
            _prune_cache(cache_dir, archive, keep=cache_file)
        except OSError:
            pass  # a read-only home is fine: we just decode again next time
    return ds


_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_folder_image(path, size):
    """One image of an image folder as uint8 (H, W, 3) of ``size``: read as the CLI's
    :func:`gradvis.io.images.read_rgb` does (EXIF rotation, transparency over white,
    16-bit and float images rescaled), then resized. ValueError names the file."""
    from PIL import Image
    from .images import read_rgb
    rgb, _ = read_rgb(path)
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


def load_image_folder(root, size=(64, 64), val_fraction=0.1, seed=0):
    """An image-folder data set: one sub-folder of images per class (any depth below it).

    Images are read as :func:`gradvis.cli.read_image` reads photos (16-bit and
    float images rescaled, transparency composited over white) and resized to
    ``size`` (H, W). A seeded ``val_fraction`` (0 to 1) of each class is held out.
    An unreadable, damaged or too large image raises ValueError naming the file.
    """
    from .. import _checks
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    size = _checks.size_pair(size, "size")
    if not 0.0 <= _checks.finite_float(val_fraction, "val_fraction") <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class folders found")
    rng = np.random.default_rng(seed)
    X_tr, y_tr, X_va, y_va = [], [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in _IMAGE_EXTS)
        if not files:
            raise ValueError(f"{root / cls}: no images")
        arrays = [_read_folder_image(f, size) for f in files]
        order = rng.permutation(len(arrays))
        n_val = int(round(val_fraction * len(arrays)))
        for j, i in enumerate(order):
            (X_va if j < n_val else X_tr).append(arrays[i])
            (y_va if j < n_val else y_tr).append(label)
    empty = np.zeros((0, size[0], size[1], 3), np.uint8)
    return ImageDataset(
        X_train=np.stack(X_tr) if X_tr else empty, y_train=np.array(y_tr, np.int64),
        X_val=np.stack(X_va) if X_va else empty, y_val=np.array(y_va, np.int64),
        wnids=classes, class_names=classes)


# ---------------------------------------------------------------------------- colour statistics
# Where a model file keeps the colour matrix of its training images (model.info);
# gradvis.optvis decorrelates colours with it.
COLOR_INFO_KEY = "color_correlation_svd_sqrt"


def color_correlation_from_images(images, chunk=1 << 22):
    """The square root of the RGB covariance of ``images``, as Lucid computes
    ``color_correlation_svd_sqrt``: ``U @ diag(sqrt(s))`` for the covariance
    ``U diag(s) U^T`` of the pixel values in [0, 1], columns by decreasing
    variance, each column's red entry made >= 0.

    Args:
        images: uint8 RGB images (N, H, W, 3) (values 0-255).
        chunk: pixels summed at a time (bounds the float64 copy).

    Returns:
        (3, 3) float64 matrix M with ``M @ M.T`` the covariance.
    """
    arr = np.asarray(images)
    if arr.ndim < 2 or arr.shape[-1] != 3 or arr.size == 0:
        raise ValueError(f"images must be (..., 3) RGB pixel values, got shape {arr.shape}")
    px = arr.reshape(-1, 3)
    n, s, ss = 0, np.zeros(3), np.zeros((3, 3))
    for i in range(0, px.shape[0], chunk):
        c = px[i:i + chunk].astype(np.float64) / 255.0
        n += c.shape[0]
        s += c.sum(axis=0)
        ss += c.T @ c
    mean = s / n
    cov = ss / n - np.outer(mean, mean)
    w, U = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, U = np.clip(w[order], 0.0, None), U[:, order]
    U = U * np.where(U[0] < 0, -1.0, 1.0)
    return U * np.sqrt(w)
