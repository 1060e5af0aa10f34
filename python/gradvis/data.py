"""TinyImageNet-100-A and image-folder data sets as uint8 numpy arrays.

The TinyImageNet archive is read in place (no unpacking to disk) and decoded
once; the decoded arrays are cached as an ``.npz`` file keyed by the archive's
size and modification time, so later loads take a second.

Split: the images numbered 450-499 of each class (``<wnid>_450.JPEG`` ...
``<wnid>_499.JPEG``) are the validation split, never trained on; 0-449 train.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import tarfile
from pathlib import Path

import numpy as np

__all__ = ["ImageDataset", "load_tiny_imagenet", "find_tiny_imagenet", "load_image_folder",
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

    Looks at ``path``, then ``$GRADVIS_TINY_IMAGENET``, then ``shared/data/`` and
    ``../shared/data/`` from the working directory and from this source tree.
    Raises FileNotFoundError naming the places it looked.
    """
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    env = os.environ.get("GRADVIS_TINY_IMAGENET")
    if env:
        candidates.append(Path(env))
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        candidates.append(base / "shared" / "data" / ARCHIVE_NAME)
        candidates.append(base.parent / "shared" / "data" / ARCHIVE_NAME)
    for c in candidates:
        if c.is_file():
            return c
    if path is not None:
        raise FileNotFoundError(f"TinyImageNet archive not found: {path}")
    raise FileNotFoundError(
        f"could not find {ARCHIVE_NAME}; pass its path or set GRADVIS_TINY_IMAGENET "
        f"(looked in ./shared/data, ../shared/data and above {here.parent})")


def default_cache_dir():
    """``$GRADVIS_CACHE`` or ``~/.cache/gradvis``."""
    env = os.environ.get("GRADVIS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gradvis"


def _decode_rgb(data):
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


_IMG_RE = re.compile(r"train/(n\d+)/images/(n\d+)_(\d+)\.JPEG$")


def _read_archive(archive):
    images = {}   # (wnid, k) -> array
    boxes = {}    # (wnid, k) -> (x0, y0, x1, y1)
    wnids = None
    words = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            if name.endswith("wnids.txt"):
                wnids = tar.extractfile(member).read().decode().split()
            elif name.endswith("words.txt"):
                for line in tar.extractfile(member).read().decode().splitlines():
                    parts = line.split("\t", 1)
                    if len(parts) == 2:
                        words[parts[0]] = parts[1].strip()
            elif name.endswith("_boxes.txt"):
                for line in tar.extractfile(member).read().decode().splitlines():
                    parts = line.split()
                    if len(parts) == 5:
                        m = re.match(r"(n\d+)_(\d+)\.JPEG", parts[0])
                        if m:
                            boxes[(m.group(1), int(m.group(2)))] = tuple(int(v) for v in parts[1:])
            else:
                m = _IMG_RE.search(name)
                if m:
                    images[(m.group(1), int(m.group(3)))] = _decode_rgb(tar.extractfile(member).read())
    if wnids is None:
        raise ValueError(f"{archive}: no wnids.txt in the archive")
    if not images:
        raise ValueError(f"{archive}: no train/<wnid>/images/*.JPEG files in the archive")
    return images, boxes, wnids, words


def _cache_key(archive):
    st = os.stat(archive)
    h = hashlib.sha1(f"{Path(archive).resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_VERSION}".encode())
    return h.hexdigest()[:16]


def load_tiny_imagenet(path=None, cache_dir=None, use_cache=True):
    """Load TinyImageNet-100-A as an :class:`ImageDataset`.

    Args:
        path: the ``tiny-imagenet-100-A-train.tar.gz`` archive (see :func:`find_tiny_imagenet`).
        cache_dir: where the decoded arrays are cached (default :func:`default_cache_dir`).
        use_cache: read and write the cache.

    Returns:
        ImageDataset with 45,000 train and 5,000 validation images of 64x64.
    """
    archive = find_tiny_imagenet(path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / f"tiny-imagenet-100-A-{_cache_key(archive)}.npz"
    if use_cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                return ImageDataset(
                    X_train=z["X_train"], y_train=z["y_train"], X_val=z["X_val"], y_val=z["y_val"],
                    wnids=[str(s) for s in z["wnids"]], class_names=[str(s) for s in z["class_names"]],
                    boxes_train=z["boxes_train"], boxes_val=z["boxes_val"])
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    images, boxes, wnids, words = _read_archive(archive)
    class_index = {w: i for i, w in enumerate(wnids)}
    keys = sorted((k for k in images if k[0] in class_index), key=lambda k: (class_index[k[0]], k[1]))
    X = np.stack([images[k] for k in keys])
    y = np.array([class_index[k[0]] for k in keys], dtype=np.int64)
    b = np.array([boxes.get(k, (0, 0, X.shape[2] - 1, X.shape[1] - 1)) for k in keys], dtype=np.int32)
    is_val = np.array([k[1] >= VAL_FIRST_INDEX for k in keys])
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
        except OSError:
            pass  # a read-only home is fine: we just decode again next time
    return ds


_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_image_folder(root, size=(64, 64), val_fraction=0.1, seed=0):
    """An image-folder data set: one sub-folder of images per class (any depth below it).

    Images are converted to RGB and resized to ``size`` (H, W). A seeded
    ``val_fraction`` of each class is held out.
    """
    from PIL import Image
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class folders found")
    rng = np.random.default_rng(seed)
    X_tr, y_tr, X_va, y_va = [], [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*") if p.suffix.lower() in _IMAGE_EXTS)
        if not files:
            raise ValueError(f"{root / cls}: no images")
        arrays = []
        for f in files:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)))
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
