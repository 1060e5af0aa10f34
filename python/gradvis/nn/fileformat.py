"""Saving and loading models without pickle.

A gradvis model file is a zip archive of ``.npy`` arrays (readable with
``np.load(path, allow_pickle=False)``):

- ``__gradvis__``: the UTF-8 bytes (uint8 array) of a JSON document with
  ``"format": "gradvis-model"``, ``"version": 1``, the nodes (name, layer type,
  constructor config, inputs), the input metadata (input shape, channel order,
  class names, wnids), ``info`` (the model's JSON notes, e.g. what an importer
  folded or dropped; older files lack it) and the name and shape of every array;
- ``param/<node>.<name>``, ``buffer/<node>.<name>``: weights and batch-norm statistics;
- ``meta/mean``, ``meta/std``: the input normalization;
- ``state/<key>`` (training checkpoints only): optimizer and data-order state.

Nothing in a file is executed or unpickled: layer types come from a fixed table
(:data:`gradvis.nn.registry.LAYER_TYPES`). Files are written to a temporary name in the
target directory and renamed into place, so a crash never leaves half a file
under the final name.

This module writes the format and reads its members; :mod:`gradvis.io.model_file`
builds models from them.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["save_model", "write_arrays", "read_arrays", "ModelArchive", "model_arrays", "FORMAT", "VERSION",
           "HEADER"]

FORMAT = "gradvis-model"
VERSION = 1
HEADER = "__gradvis__"


# ---------------------------------------------------------------------------- raw file I/O
def write_arrays(path, arrays, overwrite=False):
    """Write {key: ndarray} as an uncompressed .npz (no pickle), atomically.

    Raises FileExistsError if ``path`` exists and not ``overwrite``; TypeError for
    object arrays.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key, arr in arrays.items():
                    arr = np.asarray(arr)
                    if arr.dtype.kind == "O":
                        raise TypeError(f"cannot save {key!r}: object arrays need pickle")
                    with zf.open(key + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr if arr.flags.c_contiguous else arr.copy(order="C"),
                                                allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# Bounds of the member-by-member checks, applied from the zip directory and each
# member's .npy header, before anything of a declared size is decompressed or allocated.
MAX_HEADER_BYTES = 64 << 20         # the JSON header (the bundled model's: ~10 KiB)
MAX_NPY_HEADER_BYTES = 10000        # numpy's own bound on a .npy header
MAX_COMPRESSION_RATIO = 20          # deflated members: decompressed size / stored size
SMALL_MEMBER_BYTES = 1 << 20        # members this small may compress better (zero biases)
_KINDS = ("param/", "buffer/", "meta/", "state/")


def _key_of(name):
    """The array key of a member name, or None for a member a model file never holds."""
    if not name.endswith(".npy") or name.startswith("/") or "\\" in name or ".." in name.split("/"):
        return None
    key = name[:-4]
    if key == HEADER or key in ("meta/mean", "meta/std"):
        return key
    if key.startswith(("param/", "buffer/", "state/")) and len(key.split("/", 1)[1]) > 0:
        return key
    return None


class ModelArchive:
    """A gradvis model file opened for checked, member-by-member reading.

    Opening reads only the zip directory and refuses, before decompressing
    anything: members a model file never holds (names other than the header,
    ``meta/mean``, ``meta/std``, ``param/...``, ``buffer/...``, ``state/...``),
    duplicate names, encrypted or unknown compression, stored members whose
    declared size differs from what they store, and deflated members declaring
    more than :data:`MAX_COMPRESSION_RATIO` times what they store. :meth:`read`
    then checks a member's ``.npy`` header (dtype, shape, and that the declared
    size is exactly header + data) against what the caller expects, and only then
    allocates and reads its data.

    Use as a context manager. Errors are ValueError naming the file.
    """

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {path}")
        self.path = path
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise ValueError(f"{path} is not a readable gradvis model file ({e.strerror or e})") from None
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            what = ("an empty file" if not magic else "a single .npy array" if magic == b"\x93NUMPY"
                    else "not a zip archive of .npy arrays")
            raise ValueError(f"{path} is not a gradvis model file ({what})")
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path} is not a readable gradvis model file ({type(e).__name__}: {e})") from None
        try:
            self.members = self._check_directory(infos)
        except ValueError:
            self._zip.close()
            raise

    def _bad(self, msg):
        return ValueError(f"{self.path}: {msg}")

    def _check_directory(self, infos):
        names = [i.filename for i in infos]
        if HEADER + ".npy" not in names:
            shown = sorted(n[:-4] if n.endswith(".npy") else n for n in names)[:5]
            raise self._bad(f"not a gradvis model file (no {HEADER!r} entry; it holds {shown})")
        members = {}
        for info in infos:
            name = info.filename
            key = _key_of(name)
            if key is None:
                raise self._bad(f"unexpected member {name!r} (a model file holds only {HEADER}.npy, "
                                f"meta/, param/, buffer/ and state/ .npy arrays)")
            if key in members:
                raise self._bad(f"member {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise self._bad(f"member {name!r} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.file_size != info.compress_size:
                    raise self._bad(f"member {name!r} declares {info.file_size} bytes but stores "
                                    f"{info.compress_size}")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                if info.file_size > max(SMALL_MEMBER_BYTES, MAX_COMPRESSION_RATIO * info.compress_size):
                    raise self._bad(f"member {name!r} declares {info.file_size} bytes from "
                                    f"{info.compress_size} compressed (ratio above "
                                    f"{MAX_COMPRESSION_RATIO}); refusing to decompress it")
            else:
                raise self._bad(f"member {name!r} uses compression method {info.compress_type} "
                                f"(model files are stored or deflated)")
            members[key] = info
        return members

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._zip.close()

    def __contains__(self, key):
        return key in self.members

    def keys(self):
        return list(self.members)

    def read_header(self):
        """The JSON header's bytes (at most :data:`MAX_HEADER_BYTES`)."""
        info = self.members[HEADER]
        if info.file_size > MAX_HEADER_BYTES + MAX_NPY_HEADER_BYTES:
            raise self._bad(f"the {HEADER!r} header declares {info.file_size} bytes (at most "
                            f"{MAX_HEADER_BYTES} are read)")
        return self.read(HEADER, kinds="u", ndim=1).tobytes()

    def read(self, key, shape=None, kinds="f", ndim=None, max_bytes=None):
        """The array ``key``, checked before its data is read: dtype kind in ``kinds``,
        ``shape`` (when given) or ``ndim``, at most ``max_bytes``, and a declared
        member size of exactly its .npy header plus data."""
        info = self.members.get(key)
        if info is None:
            raise self._bad(f"missing array {key!r}")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    got, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
                elif version == (2, 0):
                    got, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER_BYTES)
                else:
                    raise ValueError(f".npy version {version} (model files use 1.0 or 2.0)")
                start = f.tell()
                if dtype.hasobject:
                    raise self._bad(f"array {key!r} is a pickled (object) array; model files hold plain "
                                    f"numeric arrays only, and gradvis never unpickles")
                if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize == 0 or dtype.fields:
                    raise self._bad(f"array {key!r} has dtype {dtype}, expected "
                                    f"{'floating point' if kinds == 'f' else 'kind ' + kinds}")
                if shape is not None and tuple(got) != tuple(shape):
                    raise self._bad(f"array {key!r} has shape {tuple(got)}, the architecture needs "
                                    f"{tuple(shape)}")
                if ndim is not None and len(got) != ndim:
                    raise self._bad(f"array {key!r} must be {ndim}-D, got shape {tuple(got)}")
                count = 1
                for d in got:
                    count *= int(d)
                nbytes = count * dtype.itemsize
                if start + nbytes != info.file_size:
                    raise self._bad(f"array {key!r} declares shape {tuple(got)} ({nbytes} bytes) but its "
                                    f"member holds {info.file_size - start}")
                if max_bytes is not None and nbytes > max_bytes:
                    raise self._bad(f"array {key!r} of shape {tuple(got)} is larger than the "
                                    f"{max_bytes} bytes it may hold")
                arr = np.empty(count, dtype)
                view = memoryview(arr.view(np.uint8))
                pos = 0
                while pos < nbytes:
                    n = f.readinto(view[pos:pos + (16 << 20)])
                    if not n:
                        raise ValueError(f"array {key!r} is truncated")
                    pos += n
                if f.read(1):
                    raise ValueError(f"array {key!r} has data past its end")
        except ValueError as e:
            if str(e).startswith(f"{self.path}: "):
                raise
            raise self._bad(f"damaged array {key!r} ({e})") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
            raise self._bad(f"damaged array {key!r} ({type(e).__name__}: {e})") from None
        return arr.reshape(got, order="F" if fortran else "C")


def read_arrays(path):
    """{key: ndarray} of a model file, every member read through :class:`ModelArchive`'s
    checks (floating-point arrays; the header as uint8; integer ``state/`` arrays),
    or ValueError naming the file."""
    with ModelArchive(path) as z:
        out = {}
        for key in z.keys():
            out[key] = z.read_header() if key == HEADER else z.read(key, kinds="fiub" if key.startswith("state/") else "f")
        return out


# ---------------------------------------------------------------------------- model <-> arrays
def _describe(model):
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": model.name,
        "input_shape": list(model.input_shape),
        "channel_order": model.channel_order,
        "class_names": model.class_names,
        "wnids": model.wnids,
        "info": getattr(model, "info", None) or {},
        "nodes": [{"name": n.name, "type": n.layer.type, "inputs": list(n.inputs),
                   "config": n.layer.config()} for n in model.nodes],
        "params": {k: list(v.shape) for k, v in model.params.items()},
        "buffers": {k: list(v.shape) for k, v in model.buffers.items()},
    }


def model_arrays(model, extra_json=None):
    """{key: array} of a model (the content of its file)."""
    header = _describe(model)
    if extra_json is not None:
        header["extra"] = extra_json
    arrays = {HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    arrays["meta/mean"] = model.mean
    arrays["meta/std"] = model.std
    for k, v in model.params.items():
        arrays["param/" + k] = v
    for k, v in model.buffers.items():
        arrays["buffer/" + k] = v
    return arrays


def save_model(model, path, overwrite=False, extra_json=None, extra_arrays=None):
    """Save ``model`` to ``path`` (one .npz file, no pickle). Returns the path.

    Args:
        overwrite: replace an existing file (default: FileExistsError).
        extra_json: JSON-able data stored in the header under "extra".
        extra_arrays: {key: array} stored as ``state/<key>`` (checkpoints).
    """
    arrays = model_arrays(model, extra_json)
    for k, v in (extra_arrays or {}).items():
        arrays["state/" + k] = v
    return write_arrays(path, arrays, overwrite=overwrite)
