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
(:data:`gradvis.model.LAYER_TYPES`). Files are written to a temporary name in the
target directory and renamed into place, so a crash never leaves half a file
under the final name.

Also :func:`load_cs231n_h5`, for the CS231n 2016 ``pretrained_model.h5``.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .model import LAYER_TYPES, Model

__all__ = ["save_model", "load_model", "write_arrays", "read_model_file", "load_cs231n_h5",
           "FORMAT", "VERSION"]

FORMAT = "gradvis-model"
VERSION = 1
_HEADER = "__gradvis__"


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


def _read_arrays(path):
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
    arrays = {_HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
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


def read_model_file(path):
    """(model, extra_json, state_arrays) from a gradvis model file or checkpoint."""
    arrays = _read_arrays(path)
    bad = lambda msg: ValueError(f"{path}: {msg}")   # noqa: E731
    if _HEADER not in arrays:
        raise bad(f"not a gradvis model file (no {_HEADER!r} entry; it holds {sorted(arrays)[:5]})")
    try:
        header = json.loads(arrays[_HEADER].tobytes().decode("utf-8"))
    except Exception as e:
        raise bad(f"damaged header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad(f"not a gradvis model file (format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad(f"unknown file format version {version!r} (this gradvis reads version "
                  f"{VERSION if VERSION == 1 else f'1 to {VERSION}'})")
    if version > VERSION:
        raise bad(f"file format version {version!r} is newer than this gradvis "
                  f"reads (up to {VERSION}); upgrade gradvis")

    def stored(kind, name, shape):
        """The file's array for a parameter or buffer of the declared ``shape``, checked."""
        key = f"{kind}/{name}"
        if key not in arrays:
            raise bad(f"missing array {key!r}")
        arr = arrays[key]
        if arr.shape != tuple(shape):
            raise bad(f"array {key!r} has shape {arr.shape}, the architecture needs {tuple(shape)}")
        if arr.dtype.kind != "f":
            raise bad(f"array {key!r} has dtype {arr.dtype}, expected floating point")
        if not np.all(np.isfinite(arr)):
            raise bad(f"array {key!r} contains NaN or infinity")
        return np.array(arr, dtype=np.float32 if arr.dtype.itemsize <= 4 else arr.dtype)

    try:
        model = Model(input_shape=header["input_shape"], mean=arrays.get("meta/mean"),
                      std=arrays.get("meta/std"), channel_order=header.get("channel_order", "RGB"),
                      class_names=header.get("class_names"), wnids=header.get("wnids"),
                      name=header.get("name", "model"))
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"bad input description ({type(e).__name__}: {e})") from None
    try:
        info = header.get("info") or {}
        if not isinstance(info, dict):
            raise ValueError(f"'info' must be a JSON object, got {type(info).__name__}")
        model.info = info
        nodes = header["nodes"]
        if not isinstance(nodes, list):
            raise TypeError(f"'nodes' must be a list, got {type(nodes).__name__}")
        for nd in nodes:
            if not isinstance(nd, dict) or not isinstance(nd.get("config"), dict):
                raise TypeError(f"each node must be an object with a 'config' object, got {nd!r:.80}")
            cls = LAYER_TYPES.get(nd["type"]) if isinstance(nd.get("type"), str) else None
            if cls is None:
                raise ValueError(f"unknown layer type {nd.get('type')!r} for node {nd.get('name')!r}")
            layer = cls(**nd["config"])
            inputs = model._check_node(nd["name"], layer, nd["inputs"])
            # The declared shapes are checked against the stored arrays before anything
            # of that size is allocated: a header cannot make loading build huge layers.
            params = {k: stored("param", f"{nd['name']}.{k}", shp) for k, shp in layer.param_shapes.items()}
            buffers = {k: stored("buffer", f"{nd['name']}.{k}", shp) for k, shp in layer.buffer_shapes.items()}
            try:
                layer.check_arrays(params, buffers)
            except ValueError as e:
                raise bad(f"node {nd['name']!r}: {e}") from None
            model._append(nd["name"], layer, inputs, params, buffers)
    except (KeyError, TypeError, ValueError, ArithmeticError, IndexError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
            raise        # a problem with the stored arrays, already described
        raise bad(f"bad architecture description ({type(e).__name__}: {e})") from None
    num_classes = model.num_classes
    for what in ("class_names", "wnids"):
        names = getattr(model, what)
        if names is not None and num_classes is not None and len(names) != num_classes:
            raise bad(f"{what} has {len(names)} entries but the model has {num_classes} classes")
    known = {_HEADER, "meta/mean", "meta/std"} | {"param/" + k for k in model.params} \
        | {"buffer/" + k for k in model.buffers}
    unexpected = sorted(k for k in arrays if k not in known and not k.startswith("state/"))
    if unexpected:
        raise bad(f"unexpected arrays {unexpected[:5]} (not in the architecture)")
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    return model, header.get("extra"), state


def load_model(path):
    """Load a model saved by :meth:`Model.save` (or a training checkpoint).

    Raises FileNotFoundError if there is no file, ValueError naming the file and
    the problem if it is not a valid gradvis model file.
    """
    return read_model_file(path)[0]


# ---------------------------------------------------------------------------- CS231n 2016
def load_cs231n_h5(path, class_names=None, wnids=None, mean=None):
    """Load CS231n 2016's ``pretrained_model.h5`` as a :class:`Model`.

    The file holds ``W0..W10``, ``b0..b10``, ``gamma0..gamma9``, ``beta0..beta9``,
    ``running_mean0..9``, ``running_var0..9`` (conv weights (F, C, k, k), affine
    weights (D, M)); widths and filter sizes are read from the shapes. The input
    is mean-image subtracted: ``mean`` if given (a (3, 64, 64) / (64, 64, 3) mean
    image, e.g. ``ds.X_train.mean(0)``, or a per-channel (3,) mean), else
    ``mean_image`` from the file if present, else TinyImageNet-100-A's
    per-channel mean. Requires h5py.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("load_cs231n_h5 needs h5py: pip install h5py "
                          "(or pip install 'gradvis[h5]')") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        def dataset(key, ndim=None):
            """The dataset ``key``, checked before anything of its size is read or built."""
            d = f.get(key)
            if d is None:
                raise ValueError(f"{path}: missing dataset {key!r} (not a CS231n 2016 model file?)")
            if not isinstance(d, h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is a {type(d).__name__}, not a dataset")
            if ndim is not None and d.ndim != ndim:
                raise ValueError(f"{path}: {key!r} must be {ndim}-D, got shape {d.shape}")
            if d.dtype.kind not in "fiu":
                raise ValueError(f"{path}: {key!r} holds {d.dtype} values, not numbers")
            if d.size and d.id.get_storage_size() == 0:   # declared, never written
                raise ValueError(f"{path}: {key!r} declares shape {d.shape} but holds no data")
            return d

        def get(key):
            arr = np.asarray(dataset(key), dtype=np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: {key!r} has NaN or infinite values")
            return arr
        convs = 0
        while f"W{convs}" in f and np.ndim(f[f"W{convs}"]) == 4:
            convs += 1
        if convs == 0:
            raise ValueError(f"{path}: no 4-D 'W0' convolution weights; not a CS231n 2016 model file")
        widths = [dataset(f"W{i}", 4).shape[0] for i in range(convs)]
        filters = [f[f"W{i}"].shape[2] for i in range(convs)]
        last = f"W{convs + 1}"
        if f"W{convs}" not in f or last not in f:
            raise ValueError(f"{path}: missing affine weights W{convs}/W{convs + 1}")
        hidden = dataset(f"W{convs}", 2).shape[1]
        num_classes = dataset(last, 2).shape[1]
        # every array the model needs, present and holding data, before the model (of
        # the sizes these declare) is built
        for i in range(convs + 1):
            for key in (f"b{i}", f"gamma{i}", f"beta{i}", f"running_mean{i}", f"running_var{i}"):
                dataset(key, 1)
        dataset(f"b{convs + 1}", 1)
        for key in (() if mean is not None else ("mean_image", "mean")):
            if key in f:
                mean = np.asarray(f[key], dtype=np.float32)
                break
        if mean is not None:
            mean = np.asarray(mean, np.float32)
        if mean is not None and mean.ndim == 3 and mean.shape[-1] == 3 and mean.shape[0] != 3:
            mean = mean.transpose(2, 0, 1)
        input_size = mean.shape[-1] if mean is not None and mean.ndim == 3 else 64
        if mean is None:
            mean = np.array([121.55, 113.05, 99.85], np.float32)   # TinyImageNet-100-A train mean
        try:
            from .architectures import cs231n_2016
            model = cs231n_2016(num_classes, widths, hidden, input_size, filters, mean=mean,
                                             class_names=class_names, wnids=wnids)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        expect = {}
        for i in range(convs):
            expect[f"conv{i}.weight"], expect[f"conv{i}.bias"] = f"W{i}", f"b{i}"
            expect[f"bn{i}.gamma"], expect[f"bn{i}.beta"] = f"gamma{i}", f"beta{i}"
        expect[f"fc{convs}.weight"], expect[f"fc{convs}.bias"] = f"W{convs}", f"b{convs}"
        expect[f"bn{convs}.gamma"], expect[f"bn{convs}.beta"] = f"gamma{convs}", f"beta{convs}"
        expect[f"fc{convs + 1}.weight"], expect[f"fc{convs + 1}.bias"] = f"W{convs + 1}", f"b{convs + 1}"
        for name, key in expect.items():
            arr = get(key)
            want = model.params[name].shape
            if arr.shape != want:
                raise ValueError(f"{path}: {key!r} has shape {arr.shape}, expected {want}")
            model.params[name] = arr
        for i in range(convs + 1):
            for stat in ("running_mean", "running_var"):
                arr = get(f"{stat}{i}")
                want = model.buffers[f"bn{i}.{stat}"].shape
                if arr.shape != want:
                    raise ValueError(f"{path}: '{stat}{i}' has shape {arr.shape}, expected {want}")
                if stat == "running_var" and (arr < 0).any():
                    raise ValueError(f"{path}: 'running_var{i}' has negative entries (min {arr.min():g})")
                model.buffers[f"bn{i}.{stat}"] = arr
    return model
