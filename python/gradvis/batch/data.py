"""The images of a batch run: where they come from and how a worker reads them.

A :class:`Source` lists the images of a run in a fixed order: image ``i`` has id
``i``, a source path (a file, or ``<array>[i]``) and a label (a class index of
the model, or -1 when unknown). The driver lists them; workers read a chunk's
images from a small picklable *payload* (:meth:`Source.payload`,
:func:`load_payload`), so image files are read where the work is done.

Sources (:func:`open_source`):

- an image folder: files in class sub-folders (any depth below them) get the
  label of the model class whose wnid or name (or one of its comma-separated
  synonyms, case-insensitive) is the sub-folder's name; files directly in the
  folder and unmatched sub-folders have label -1;
- the TinyImageNet-100-A archive: ``'tinyimagenet'`` (found as
  :func:`gradvis.io.datasets.find_tiny_imagenet` finds it) or the archive's
  path, optionally followed by ``:val`` (the held-out images 450-499 of each
  class), ``:train`` or ``:all`` (the default);
- a ``.npy`` file or a Zarr array (a ``.zarr`` directory) of uint8 images
  (N, H, W, 3) or (N, H, W) or of model inputs, float (N, C, H, W); a numpy
  array given directly works the same way;
- a text file of image paths, one a line, optionally followed by a tab and a
  class (index, wnid or name); relative paths are relative to the text file;
  empty lines and lines starting with ``#`` are skipped.

Images of another size than the model's input are resized to cover it and
centre-cropped (Pillow's bicubic, as the ``gradvis`` command does with photos).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

import numpy as np

__all__ = ["Source", "open_source", "load_payload", "match_class", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_SPLITS = ("all", "val", "train")


@dataclasses.dataclass
class Source:
    """The images of a run.

    Attributes:
        kind: 'folder', 'tinyimagenet', 'npy', 'zarr', 'array' or 'list'.
        paths: one source path per image (a file, or ``<where>[i]``).
        labels: int64 (N,), class indices of the model, -1 where unknown.
        description: JSON-able facts that identify the data (kind, path, count,
            a digest of the listing): part of a run's settings.
    """
    kind: str
    paths: list
    labels: np.ndarray
    description: dict
    _array: object = None        # in-memory images (tinyimagenet, array)
    _file: str | None = None     # npy / zarr path

    def __len__(self):
        return len(self.paths)

    def payload(self, lo, hi):
        """What a worker needs to read images lo..hi-1 (small unless in memory)."""
        if self.kind in ("folder", "list"):
            return ("files", list(self.paths[lo:hi]))
        if self.kind in ("npy", "zarr"):
            return (self.kind, self._file, lo, hi)
        return ("array", np.ascontiguousarray(self._array[lo:hi]))


def match_class(name, model):
    """The model's class index named ``name`` (a wnid, a class name or one of its
    comma-separated synonyms, case-insensitive; or a decimal index), or -1."""
    s = str(name).strip()
    key = s.lower()
    if model.wnids:
        for i, w in enumerate(model.wnids):
            if w.lower() == key:
                return i
    if model.class_names:
        hits = [i for i, n in enumerate(model.class_names)
                if key == n.lower() or key in (p.strip().lower() for p in n.split(","))]
        if len(hits) == 1:
            return hits[0]
    if re.fullmatch(r"\d+", s) and int(s) < (model.num_classes or 0):
        return int(s)
    return -1


def _digest(items):
    h = hashlib.sha256()
    for it in items:
        h.update(str(it).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _describe(kind, where, paths, labels, **extra):
    return {"kind": kind, "path": str(where), "count": len(paths),
            "listing": _digest([*paths, *np.asarray(labels).tolist()]), **extra}


def _folder(root, model):
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"data: {root} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    cache, labels, unmatched = {}, [], set()
    for f in files:
        rel = f.relative_to(root)
        if len(rel.parts) == 1:
            labels.append(-1)
            continue
        top = rel.parts[0]
        if top not in cache:
            cache[top] = match_class(top, model)
            if cache[top] < 0:
                unmatched.add(top)
        labels.append(cache[top])
    paths = [str(f) for f in files]
    labels = np.asarray(labels, np.int64)
    return Source("folder", paths, labels,
                  _describe("folder", root.resolve(), paths, labels, unmatched_folders=sorted(unmatched)))


def _text_list(path, model):
    base = path.parent
    paths, labels = [], []
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"data: {path} is not a text file of image paths ({e})") from None
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, cls = line.rstrip("\n").partition("\t")
        p = Path(name.strip())
        paths.append(str(p if p.is_absolute() else base / p))
        if cls.strip():
            k = match_class(cls, model)
            if k < 0:
                raise ValueError(f"data: {path}, line {i}: unknown class {cls.strip()!r} for this model")
            labels.append(k)
        else:
            labels.append(-1)
    if not paths:
        raise ValueError(f"data: {path} lists no image paths")
    labels = np.asarray(labels, np.int64)
    return Source("list", paths, labels, _describe("list", path.resolve(), paths, labels))


def _check_array_shape(shape, dtype, model, where):
    if len(shape) == 4 and np.dtype(dtype).kind == "f":
        if tuple(shape[1:]) != tuple(model.input_shape):
            raise ValueError(f"data: {where} holds float arrays of shape {tuple(shape)}; model inputs "
                             f"must be (N, {', '.join(map(str, model.input_shape))})")
    elif np.dtype(dtype) == np.uint8 and (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
        pass
    else:
        raise ValueError(f"data: {where} has shape {tuple(shape)} and dtype {np.dtype(dtype)}; expected "
                         f"uint8 images (N, H, W, 3) or (N, H, W), or float model inputs (N, C, H, W)")
    if shape[0] == 0:
        raise ValueError(f"data: {where} holds no images (shape {tuple(shape)})")


def _array_source(kind, arr, where, file=None, extra=None):
    n = int(arr.shape[0])
    paths = [f"{where}[{i}]" for i in range(n)]
    labels = np.full(n, -1, np.int64)
    desc = {"kind": kind, "path": str(where), "count": n, "shape": list(arr.shape),
            "dtype": str(arr.dtype), **(extra or {})}
    return Source(kind, paths, labels, desc, _array=None if file else arr, _file=file)


def _tiny_imagenet(path, split, model):
    from ..io.datasets import VAL_FIRST_INDEX, find_tiny_imagenet, load_tiny_imagenet
    archive = find_tiny_imagenet(path)
    ds = load_tiny_imagenet(archive)
    parts = {"train": [(ds.X_train, ds.y_train, False)], "val": [(ds.X_val, ds.y_val, True)],
             "all": [(ds.X_train, ds.y_train, False), (ds.X_val, ds.y_val, True)]}[split]
    X = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y_ds = np.concatenate([p[1] for p in parts])
    # member names, when the counts per class say which numbers they are
    # (the archive's own order: by class, then by number)
    paths = []
    for Xp, yp, held_out in parts:
        counts = np.bincount(yp, minlength=len(ds.wnids))
        expected = (500 - VAL_FIRST_INDEX) if held_out else VAL_FIRST_INDEX
        first = VAL_FIRST_INDEX if held_out else 0
        seen = np.zeros(len(ds.wnids), np.int64)
        for j, c in enumerate(yp):
            if counts[c] == expected:
                w = ds.wnids[c]
                paths.append(f"{archive}:train/{w}/images/{w}_{first + seen[c]}.JPEG")
            else:
                paths.append(f"{archive}:{'val' if held_out else 'train'}[{j}]")
            seen[c] += 1
    to_model = np.array([match_class(w, model) for w in ds.wnids], np.int64)
    labels = to_model[y_ds]
    desc = _describe("tinyimagenet", Path(archive).resolve(), paths, labels, split=split,
                     archive_size=os.stat(archive).st_size)
    return Source("tinyimagenet", paths, labels, desc, _array=X)


def _zarr_array(path):
    try:
        import zarr
    except ImportError:
        raise ImportError("reading Zarr data needs zarr: pip install 'gradvis[dask]'") from None
    try:
        a = zarr.open_array(str(path), mode="r")
    except Exception as e:
        raise ValueError(f"data: {path} is not a readable Zarr array ({e})") from None
    return a


def open_source(data, model):
    """The :class:`Source` for ``data`` (see the module doc): a path (str or Path),
    a numpy array, or a Source. FileNotFoundError for a missing path; ValueError
    for data holding no images or of a kind not understood."""
    if isinstance(data, Source):
        return data
    if isinstance(data, np.ndarray):
        _check_array_shape(data.shape, data.dtype, model, "the array")
        return _array_source("array", data, "array",
                             extra={"digest": hashlib.sha256(np.ascontiguousarray(data).data).hexdigest()[:16]})
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a path or a numpy array, got {type(data).__name__}")
    spec = str(data)
    if not spec:
        raise ValueError("data is empty; give an image folder, an archive, an array file or a list")
    m = re.fullmatch(r"(.*?)(?::(all|val|train))?", spec)
    head, split = m.group(1), m.group(2)
    if head.lower() == "tinyimagenet" or re.search(r"\.(tar\.gz|tgz|tar)$", head, re.I):
        return _tiny_imagenet(None if head.lower() == "tinyimagenet" else head, split or "all", model)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"data: {spec} does not exist")
    if p.is_dir():
        if p.suffix.lower() == ".zarr" or (p / "zarr.json").is_file() or (p / ".zarray").is_file():
            a = _zarr_array(p)
            _check_array_shape(a.shape, a.dtype, model, p)
            return _array_source("zarr", a, p.resolve(), file=str(p.resolve()))
        return _folder(p, model)
    if p.suffix.lower() == ".npy":
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"data: {p} is not a readable .npy array ({e})") from None
        _check_array_shape(a.shape, a.dtype, model, p)
        st = p.stat()
        return _array_source("npy", a, p.resolve(), file=str(p.resolve()),
                             extra={"size": st.st_size, "mtime_ns": st.st_mtime_ns})
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"data: {p} is one image; give a folder or a text file listing images")
    return _text_list(p, model)


# ---------------------------------------------------------------------------- on the workers
def _fit(rgb, size):
    """uint8 (H, W, 3) resized (aspect kept) to cover ``size`` (H, W), centre-cropped."""
    h0, w0 = rgb.shape[:2]
    h, w = size
    if (h0, w0) == (h, w):
        return rgb
    from PIL import Image
    s = max(h / h0, w / w0)
    rh, rw = max(h, int(round(h0 * s))), max(w, int(round(w0 * s)))
    out = np.asarray(Image.fromarray(rgb).resize((rw, rh), Image.BICUBIC))
    y, x = (rh - h) // 2, (rw - w) // 2
    return np.ascontiguousarray(out[y:y + h, x:x + w])


def _to_inputs(images, model):
    """uint8 (k, H, W[, 1|3]) -> float32 (k, C, H', W') model inputs at the model's size."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[..., None]
    if a.shape[3] == 1:
        a = np.repeat(a, 3, axis=3)
    size = tuple(model.input_shape[1:])
    if a.shape[1:3] != size:
        a = np.stack([_fit(im, size) for im in a])
    return model.preprocess(a)


def load_payload(payload, model):
    """A worker reads a chunk: ``(X, errors)`` where X is float (k, C, H, W) model
    inputs (rows of failed images are zeros) and ``errors`` a list of k strings,
    empty for an image read well, else why it could not be used."""
    kind = payload[0]
    c, h, w = model.input_shape
    if kind == "files":
        from ..io.images import read_rgb
        paths = payload[1]
        X = np.zeros((len(paths), c, h, w), np.float32)
        errors = [""] * len(paths)
        for i, p in enumerate(paths):
            try:
                rgb, _ = read_rgb(p)
                X[i] = _to_inputs(_fit(rgb, (h, w))[None], model)[0]
            except ValueError as e:
                errors[i] = str(e)
            except OSError as e:    # noqa: PERF203 - one failed file must not stop the chunk
                errors[i] = f"{p}: {e.strerror or e}"
        return X, errors
    if kind == "array":
        arr = payload[1]
    elif kind == "npy":
        arr = np.load(payload[1], mmap_mode="r", allow_pickle=False)[payload[2]:payload[3]]
    elif kind == "zarr":
        arr = _zarr_array(payload[1])[payload[2]:payload[3]]
    else:
        raise ValueError(f"unknown payload kind {kind!r}")
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        X = _to_inputs(arr, model)
    else:
        X = np.array(arr, dtype=np.float32 if arr.dtype != np.float64 else np.float64)
    errors = [""] * X.shape[0]
    bad = ~np.isfinite(X.reshape(X.shape[0], -1)).all(axis=1)
    for i in np.flatnonzero(bad):
        errors[i] = "the image contains NaN or infinite values"
        X[i] = 0
    return X, errors

