"""Reading gradvis model files (the format is described in :mod:`gradvis.nn.fileformat`).

Every declared shape is checked against the stored array before any layer is built,
and every value the layers cannot use is refused with the file and node named.
"""
from __future__ import annotations

import json

import numpy as np

from ..nn.fileformat import FORMAT, VERSION, HEADER, ModelArchive
from ..nn.graph import Model
from ..nn.registry import LAYER_TYPES

__all__ = ["load_model", "read_model_file"]


def read_model_file(path):
    """(model, extra_json, state_arrays) from a gradvis model file or checkpoint.

    The file is read member by member (:class:`gradvis.nn.fileformat.ModelArchive`):
    the zip directory first (unknown members, duplicates and implausible compression
    refused), then the JSON header, then each array the architecture declares, its
    .npy header checked against the declared shape before its data is read. Training
    state (``state/``) is read last: the optimizer's arrays must have their parameter's
    shape, the data order must be 1-D integers.
    """
    with ModelArchive(path) as z:
        return _read(z, path)


def _read(z, path):
    bad = lambda msg: ValueError(f"{path}: {msg}")   # noqa: E731
    try:
        header = json.loads(z.read_header().decode("utf-8"))
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise bad(f"damaged header ({e})") from None
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
        arr = z.read(key, shape=shape)
        if not np.all(np.isfinite(arr)):
            raise bad(f"array {key!r} contains NaN or infinity")
        return np.array(arr, dtype=np.float32 if arr.dtype.itemsize <= 4 else arr.dtype)

    def meta(key, input_shape):
        """meta/mean or meta/std: at most one value per input value (C, H, W)."""
        if key not in z:
            return None
        limit = 16
        for d in input_shape:
            limit *= d if isinstance(d, int) and d > 0 else 1
        return z.read(key, max_bytes=limit)

    input_shape = header.get("input_shape")
    if not isinstance(input_shape, list) or len(input_shape) != 3:
        raise bad(f"bad input description (input_shape must be [C, H, W], got {input_shape!r:.80})")
    try:
        model = Model(input_shape=input_shape, mean=meta("meta/mean", input_shape),
                      std=meta("meta/std", input_shape), channel_order=header.get("channel_order", "RGB"),
                      class_names=header.get("class_names"), wnids=header.get("wnids"),
                      name=header.get("name", "model"))
    except ValueError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise bad(f"bad input description (ValueError: {e})") from None
    except (KeyError, TypeError) as e:
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
            inputs = model.check_node(nd["name"], layer, nd["inputs"])
            # The declared shapes are checked against the stored arrays before anything
            # of that size is allocated: a header cannot make loading build huge layers.
            params = {k: stored("param", f"{nd['name']}.{k}", shp) for k, shp in layer.param_shapes.items()}
            buffers = {k: stored("buffer", f"{nd['name']}.{k}", shp) for k, shp in layer.buffer_shapes.items()}
            try:
                layer.check_arrays(params, buffers)
            except ValueError as e:
                raise bad(f"node {nd['name']!r}: {e}") from None
            model.add_with_arrays(nd["name"], layer, inputs, params, buffers)
    except (KeyError, TypeError, ValueError, ArithmeticError, IndexError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
            raise        # a problem with the stored arrays, already described
        raise bad(f"bad architecture description ({type(e).__name__}: {e})") from None
    num_classes = model.num_classes
    for what in ("class_names", "wnids"):
        names = getattr(model, what)
        if names is not None and num_classes is not None and len(names) != num_classes:
            raise bad(f"{what} has {len(names)} entries but the model has {num_classes} classes")
    known = {HEADER, "meta/mean", "meta/std"} | {"param/" + k for k in model.params} \
        | {"buffer/" + k for k in model.buffers}
    unexpected = sorted(k for k in z.keys() if k not in known and not k.startswith("state/"))
    if unexpected:
        raise bad(f"unexpected arrays {unexpected[:5]} (not in the architecture)")
    state = {}
    for key in z.keys():
        if not key.startswith("state/"):
            continue
        name = key[len("state/"):]
        param = name.split("/", 1)[1] if "/" in name else None
        if param is not None and param in model.params:
            # optimizer state: one array per parameter, of its shape
            state[name] = z.read(key, shape=model.params[param].shape)
        elif name.startswith(("ema/p/", "ema/b/")) and \
                (name[6:] in model.params if name[4] == "p" else name[6:] in model.buffers):
            # a moving average of the weights: one array per parameter or buffer, of its shape
            ref = model.params[name[6:]] if name[4] == "p" else model.buffers[name[6:]]
            state[name] = z.read(key, shape=ref.shape)
        elif name == "perm":
            # the data order: a permutation of the training images
            state[name] = z.read(key, kinds="iu", ndim=1)
        elif "/" not in name:
            # counters and scalars (an optimizer's step count)
            state[name] = z.read(key, kinds="iuf", max_bytes=64 * 8)
        else:
            raise bad(f"unexpected training state {key!r} (optimizer state is named "
                      f"'state/<optimizer>/<parameter>' after a parameter of the model)")
    return model, header.get("extra"), state





def load_model(path):
    """Load a model saved by :meth:`Model.save` (or a training checkpoint), frozen
    (:meth:`Model.freeze`: call ``unfreeze()`` to change its weights in place).

    Raises FileNotFoundError if there is no file, ValueError naming the file and
    the problem if it is not a valid gradvis model file.
    """
    return read_model_file(path)[0].freeze()
