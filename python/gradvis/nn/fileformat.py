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
from pathlib import Path

import numpy as np

__all__ = ["save_model", "write_arrays", "read_arrays", "model_arrays", "FORMAT", "VERSION", "HEADER"]

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


def read_arrays(path):
    """{key: ndarray} of an .npz, or ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
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
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:   # BadZipFile, CRC errors, truncated members, pickled arrays, ...
        if "pickle" in str(e):
            raise ValueError(f"{path} is not a gradvis model file: it holds a pickled (object) "
                             f"array; model files hold plain numeric arrays only, and gradvis never "
                             f"unpickles") from None
        raise ValueError(f"{path} is not a readable gradvis model file "
                         f"({type(e).__name__}: {e})") from None


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
