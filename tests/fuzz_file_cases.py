"""The cases of test_fuzz_files.py: mutated model files, made and loaded inside a
sandbox worker (fuzz_sandbox.py).

A case is ``{"kind": "npz" | "onnx", "seed": int, "mutation": name, "dir": path}``.
The worker writes the base file (a small seeded model), applies the seeded
mutation, loads the result and, when it loads, runs a forward pass on a small
input; it reports the outcome (``ok`` or the exception's type and message).
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np

import gradvis

NPZ_MUTATIONS = ["flip_bytes", "truncate", "zero_run", "bomb_member", "bomb_state", "bomb_param",
                 "unknown_member", "duplicate_member", "header_value", "npy_header", "drop_member",
                 "lying_size"]
ONNX_MUTATIONS = ["flip_bytes", "truncate", "zero_run", "attribute", "initializer_dims", "initializer_bytes"]
# edits of a layer's geometry: valid files whose first pass is far beyond memory
GEOMETRY_MUTATIONS = ["npz_padding", "onnx_pads"]


def base_model():
    m = gradvis.Model(input_shape=(3, 8, 8), class_names=[f"c{i}" for i in range(4)])
    m.add("conv1", gradvis.Conv2d(3, 4, 3, padding=1)).add("bn1", gradvis.BatchNorm2d(4))
    m.add("relu1", gradvis.ReLU()).add("pool1", gradvis.MaxPool2d(2, 2))
    m.add("gap", gradvis.GlobalAvgPool()).add("flatten", gradvis.Flatten()).add("fc", gradvis.Linear(4, 4))
    m.init_params(seed=1)
    return m


def base_onnx_bytes(rng):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    b = (0.1 * rng.standard_normal(4)).astype(np.float32)
    fw = (0.3 * rng.standard_normal((4, 4))).astype(np.float32)
    fb = np.zeros(4, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"])]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


HOSTILE_VALUES = [None, True, float("nan"), float("inf"), -1, 0, 2**31 - 1, 2**62, 1e300, "3", [], {}, [1, 2, 3],
                  "same", -2**31]


def pick(rng, options):
    """One of ``options`` (any objects), drawn with ``rng``."""
    return options[int(rng.integers(0, len(options)))]


def _zip_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i, zf.read(i.filename)) for i in zf.infolist()]


def _zip_write(members, compress=()):
    """A zip of (name, bytes) members; those named in ``compress`` deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data,
                        compress_type=zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)
    return buf.getvalue()


def _npy(arr):
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asarray(arr), allow_pickle=False)
    return b.getvalue()


def _bomb_npy(nbytes):
    """A .npy of ``nbytes`` zero bytes of float32 (deflates to ~1/1000)."""
    n = nbytes // 4
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    return head.getvalue() + bytes(n * 4)


def _bytes_mutation(data, mutation, rng):
    data = bytearray(data)
    if mutation == "flip_bytes":
        for _ in range(int(rng.integers(1, 20))):
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
    elif mutation == "truncate":
        data = data[:int(rng.integers(0, len(data)))]
    elif mutation == "zero_run":
        i = int(rng.integers(0, len(data)))
        n = int(rng.integers(1, 64))
        data[i:i + n] = bytes(len(data[i:i + n]))
    return bytes(data)


def _edit_json(obj, rng, value):
    """Replace one random leaf of a JSON document by ``value``."""
    paths = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, path + [k])
        elif isinstance(o, list) and o and not all(isinstance(v, (int, float)) for v in o):
            for i, v in enumerate(o):
                walk(v, path + [i])
        if path:
            paths.append(path)
    walk(obj, [])
    path = paths[int(rng.integers(0, len(paths)))]
    o = obj
    for k in path[:-1]:
        o = o[k]
    o[path[-1]] = value
    return obj


def mutate_npz(data, mutation, rng, bomb_size=None):
    if mutation in ("flip_bytes", "truncate", "zero_run"):
        return _bytes_mutation(data, mutation, rng)
    members = [(i.filename, d) for i, d in _zip_members(data)]
    names = [n for n, _ in members]
    compress = set()
    if mutation in ("bomb_member", "bomb_state", "bomb_param"):
        size = int(bomb_size or pick(rng, [64 << 20, 1 << 30, 4 << 30]))
        target = {"bomb_member": "extra/zeros.npy", "bomb_state": "state/zeros.npy",
                  "bomb_param": "param/conv1.weight.npy"}[mutation]
        if size > (256 << 20):
            # a deflated member declaring ``size`` bytes without holding them: write a small
            # one, then patch its declared size in both headers (what a crafted file does)
            small = _bomb_npy(1 << 20)
            members = [(n, d) for n, d in members if n != target] + [(target, small)]
            out = bytearray(_zip_write(members, compress={target}))
            return _patch_sizes(out, target, size)
        members = [(n, d) for n, d in members if n != target] + [(target, _bomb_npy(size))]
        compress.add(target)
    elif mutation == "unknown_member":
        members.append((pick(rng, ["evil.npy", "param/ghost.weight.npy", "meta/extra.npy", "../x.npy"]),
                        _npy(np.zeros(3, np.float32))))
    elif mutation == "duplicate_member":
        k = int(rng.integers(0, len(members)))
        members.append((members[k][0], _npy(np.zeros(int(rng.integers(0, 50)), np.float32))))
    elif mutation == "drop_member":
        del members[int(rng.integers(0, len(members)))]
    elif mutation == "header_value":
        k = names.index("__gradvis__.npy")
        header = json.loads(np.load(io.BytesIO(members[k][1])).tobytes())
        value = HOSTILE_VALUES[int(rng.integers(0, len(HOSTILE_VALUES)))]
        header = _edit_json(header, rng, value)
        text = json.dumps(header)      # NaN/Infinity are written as JSON extensions
        members[k] = (names[k], _npy(np.frombuffer(text.encode(), np.uint8)))
    elif mutation == "npy_header":
        k = int(rng.integers(0, len(members)))
        name, d = members[k]
        arr = np.load(io.BytesIO(d))
        shape = pick(rng, [(), (0,), (2**40,), (2**31, 2**31), arr.shape + (1,), (arr.size + 1,)])
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": pick(rng, ["<f4", "<f8", "|u1", "<c8", "|O"]),
                                                    "fortran_order": False, "shape": tuple(shape)})
        members[k] = (name, head.getvalue() + d[len(d) - arr.nbytes:])
    elif mutation == "lying_size":
        k = int(rng.integers(0, len(members)))
        out = bytearray(_zip_write(members))
        return _patch_sizes(out, members[k][0], int(pick(rng, [0, 1, 1 << 40])))
    return _zip_write(members, compress)


def _patch_sizes(data, name, size):
    """Set the uncompressed size of member ``name`` to ``size`` in its local header and
    its central-directory entry (zip64 extra fields where present)."""
    enc = name.encode()
    for sig, off_size, off_name in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        pos = 0
        while True:
            pos = data.find(sig, pos)
            if pos < 0:
                break
            nlen = struct.unpack_from("<H", data, pos + off_name - (4 if sig == b"PK\x03\x04" else 18))[0]
            if data[pos + off_name:pos + off_name + nlen] == enc:
                extra_len = struct.unpack_from("<H", data, pos + off_name - (2 if sig == b"PK\x03\x04" else 16))[0]
                struct.pack_into("<I", data, pos + off_size, min(size, 0xFFFFFFFF))
                ex = pos + off_name + nlen
                end = ex + extra_len
                while ex + 4 <= end:
                    hid, hlen = struct.unpack_from("<HH", data, ex)
                    if hid == 1 and hlen >= 8:
                        struct.pack_into("<I", data, pos + off_size, 0xFFFFFFFF)
                        struct.pack_into("<Q", data, ex + 4, size)
                    ex += 4 + hlen
            pos += 4
    return bytes(data)


def mutate_onnx(data, mutation, rng):
    if mutation in ("flip_bytes", "truncate", "zero_run"):
        return _bytes_mutation(data, mutation, rng)
    import onnx
    from onnx import helper
    model = onnx.load_from_string(data)
    g = model.graph
    if mutation == "attribute":
        node = g.node[int(rng.integers(0, len(g.node)))]
        if node.attribute:
            attr = node.attribute[int(rng.integers(0, len(node.attribute)))]
            vals = pick(rng, [[0, 0], [-1, -1], [2**31, 2**31], [1], [1, 2, 3, 4, 5], [2**62, 1]])
            new = helper.make_attribute(attr.name, [int(v) for v in vals])
            attr.CopyFrom(new)
        else:
            node.attribute.append(helper.make_attribute(pick(rng, ["pads", "strides", "group", "axis"]),
                                                        int(pick(rng, [0, -1, 2**40]))))
    elif mutation == "initializer_dims":
        init = g.initializer[int(rng.integers(0, len(g.initializer)))]
        dims = pick(rng, [[0], [2**40], [2**31, 2**31], [-1, 4], list(init.dims) + [1]])
        del init.dims[:]
        init.dims.extend(int(d) for d in dims)
    elif mutation == "initializer_bytes":
        init = g.initializer[int(rng.integers(0, len(g.initializer)))]
        raw = bytearray(init.raw_data)
        init.raw_data = bytes(raw[:int(rng.integers(0, len(raw) + 1))])
    return model.SerializeToString()


def geometry_file(kind, rng, path):
    """A well-formed file whose conv padding asks for an output far beyond memory."""
    big = int(pick(rng, [2**20, 2**30 - 1, 2**31 - 1]))
    if kind == "npz_padding":
        data = _npz_bytes(base_model(), path)
        members = [(i.filename, d) for i, d in _zip_members(data)]
        k = [n for n, _ in members].index("__gradvis__.npy")
        header = json.loads(np.load(io.BytesIO(members[k][1])).tobytes())
        header["nodes"][0]["config"]["padding"] = [0, big, 0, big]
        members[k] = (members[k][0], _npy(np.frombuffer(json.dumps(header).encode(), np.uint8)))
        return _zip_write(members)
    import onnx
    from onnx import helper
    model = onnx.load_from_string(base_onnx_bytes(rng))
    for a in model.graph.node[0].attribute:
        if a.name == "pads":
            a.CopyFrom(helper.make_attribute("pads", [0, 0, big, big]))
    return model.SerializeToString()


def _npz_bytes(model, path):
    model.save(path, overwrite=True)
    with open(path, "rb") as f:
        return f.read()


def run_case(case):
    rng = np.random.default_rng(case["seed"])
    kind, mutation = case["kind"], case["mutation"]
    path = os.path.join(case["dir"], f"case{case['seed']}_{mutation}.{'onnx' if 'onnx' in kind else 'npz'}")
    if mutation in GEOMETRY_MUTATIONS:
        data = geometry_file(mutation, rng, path)
    elif kind == "npz":
        data = mutate_npz(_npz_bytes(base_model(), path), mutation, rng, case.get("bomb_size"))
    else:
        data = mutate_onnx(base_onnx_bytes(rng), mutation, rng)
    with open(path, "wb") as f:
        f.write(data)
    try:
        model = gradvis.load_onnx(path) if path.endswith(".onnx") else gradvis.load_model(path)
        c, h, w = model.input_shape
        X = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
        out, cache = model.forward(X)
        ok = bool(np.isfinite(out).all())
    except Exception as e:
        return {"status": "error", "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__],
                "message": str(e)[:500], "path": path}
    finally:
        os.unlink(path)
    return {"status": "ok", "finite": ok, "path": path}
