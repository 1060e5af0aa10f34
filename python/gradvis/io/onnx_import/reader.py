"""Reading ONNX files: the protobuf and its external data, nodes, readable node names,
and evaluating constant expressions at import time."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...nn import INPUT

__all__ = ["ONNXImportError", "UnsupportedOperatorError", "SUPPORTED_OPS", "require_onnx", "read_proto", "load_external_data", "OnnxNode", "SAFE_NAME", "scope_name", "assign_names", "const_eval", "f32"]


class ONNXImportError(ValueError):
    """The ONNX graph cannot be turned into a gradvis model (the message says which node and why)."""


class UnsupportedOperatorError(ONNXImportError, NotImplementedError):
    """The graph uses an operator gradvis has no layer for."""


SUPPORTED_OPS = (
    "Conv", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid",
    "HardSwish", "Swish (alpha 1)", "MaxPool", "AveragePool", "GlobalAveragePool",
    "ReduceMean (axes [2, 3])", "Gemm", "MatMul", "Flatten", "Reshape", "Add", "Sub", "Mul", "Div",
    "Concat", "Dropout", "Pad", "Identity", "Softmax (graph output only)",
    # evaluated at import time when every input is a constant:
    "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Slice",
)


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("importing ONNX models needs the onnx package: pip install onnx "
                          "(or pip install 'gradvis[onnx]')") from None
    return onnx


def read_proto(source):
    """(ModelProto, label for messages) from a path, bytes or a ModelProto."""
    onnx = require_onnx()
    base = None
    if isinstance(source, onnx.ModelProto):
        proto, label = source, "<ONNX model>"
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            label, data = "<ONNX bytes>", bytes(source)
        else:
            path = Path(source)
            label = str(path)
            if not path.is_file():
                raise FileNotFoundError(f"no such ONNX file: {path}")
            data = path.read_bytes()
            base = path.parent
        try:
            proto = onnx.load_from_string(data)
        except Exception as e:   # DecodeError and friends
            raise ValueError(f"{label} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    load_external_data(onnx, proto, label, base)
    if not proto.graph.node or not proto.graph.output:
        raise ValueError(f"{label} is not an ONNX model (no graph nodes or outputs); "
                         "corrupt or a different kind of file?")
    # onnx.checker is not run: it rejects usable files over details (an output
    # without a declared shape); the import checks what it relies on itself
    if not any(i.type.HasField("tensor_type") for i in proto.graph.input):
        raise ValueError(f"{label} is not a usable ONNX model (no tensor input); corrupt or a "
                         "different kind of file?")
    return proto, label


def load_external_data(onnx, proto, label, base):
    """Read the weights of ``proto`` kept in side files (ONNX's external-data format,
    used for models over 2 GB), from the directory of the .onnx file, not the current one."""
    from onnx import external_data_helper as ext
    external = [t for t in ext._get_all_tensors(proto) if ext.uses_external_data(t)]
    if not external:
        return
    if base is None:
        raise ValueError(f"{label} keeps its weights in external data files "
                         f"({', '.join(sorted({ext.ExternalDataInfo(t).location for t in external}))}); "
                         "load it from its .onnx path so that they can be found")
    try:
        ext.load_external_data_for_model(proto, str(base))
    except Exception as e:   # a missing side file, a location outside the model's directory
        raise ValueError(f"{label}: cannot read its external weight data from {base} "
                         f"({type(e).__name__}: {e})") from None


class OnnxNode:
    """An ONNX node in plain Python: op, name, inputs, outputs, attributes."""
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "index")

    def __init__(self, proto, index):
        from onnx import helper
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else f"{proto.op_type}_{index}")
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.index = index
        if proto.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(
                f"ONNX node {self.name!r}: operator {proto.domain}::{self.op} is from a custom "
                "domain, which gradvis cannot run")

    def attr(self, key, default=None):
        v = self.attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    def where(self):
        return f"ONNX node {self.name!r} ({self.op})"


SAFE_NAME = re.compile(r"[^A-Za-z0-9_.:\-]+")


def scope_name(node):
    """PyTorch's '/layer1/layer1.0/conv1/Conv' -> ('layer1.0.conv1', 'conv'); else (sanitized, '')."""
    if "/" not in node.name:
        return SAFE_NAME.sub("_", node.name).strip("_") or node.op.lower(), ""
    parts = [p for p in node.name.split("/") if p]
    last = parts.pop() if parts else node.op
    segs = []
    for p in parts:   # a Sequential's children repeat its name: 'features', 'features.1', 'conv', 'conv.0'
        if segs and p.startswith(segs[-1] + "."):
            segs[-1] = p
        else:
            segs.append(p)
    qual = SAFE_NAME.sub("_", ".".join(segs)).strip("_")
    op = SAFE_NAME.sub("_", last).strip("_").lower() or node.op.lower()
    return (qual or op), (op if qual else "")


def assign_names(nodes):
    """{node index: unique gradvis node name} for the nodes that may become layers."""
    bases = {n.index: scope_name(n) for n in nodes}
    count = {}
    for base, _ in bases.values():
        count[base] = count.get(base, 0) + 1
    scoped = {base for base, op in bases.values() if op}
    # a scope that contains other scopes is a container (a residual block): an op at
    # its level was called in its forward (the residual Add), not the block's output
    containers = {q.rsplit(".", k)[0] for q in scoped for k in range(1, q.count(".") + 1)}
    names, used = {}, {INPUT}
    for n in nodes:
        base, op = bases[n.index]
        name = f"{base}.{op}" if op and (count[base] > 1 or base in containers) else base
        cand, k = name, 2
        while cand in used:
            cand, k = f"{name}_{k}", k + 1
        used.add(cand)
        names[n.index] = cand
    return names


def const_eval(node, vals):
    """Evaluate a node whose inputs are all constants (shape arithmetic), or return None."""
    op, a = node.op, node.attr
    x = vals[0] if vals else None
    if op == "Identity":
        return x
    if op == "Cast":
        from onnx import helper
        return x.astype(helper.tensor_dtype_to_np_dtype(a("to")))
    if op == "Gather":
        return np.take(x, vals[1].astype(np.int64), axis=a("axis", 0))
    if op in ("Unsqueeze", "Squeeze"):
        axes = a("axes") if len(vals) < 2 else vals[1].tolist()
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(axes))
        out = x
        rank = x.ndim + len(axes)
        for ax in sorted(ax % rank for ax in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in vals], axis=a("axis"))
    if op == "Slice":
        starts, ends = vals[1].tolist(), vals[2].tolist()
        axes = vals[3].tolist() if len(vals) > 3 else list(range(len(starts)))
        steps = vals[4].tolist() if len(vals) > 4 else [1] * len(starts)
        idx = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            idx[ax] = slice(s, e, st)
        return x[tuple(idx)]
    if op in ("Add", "Sub", "Mul", "Div"):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
             "Div": np.floor_divide if x.dtype.kind in "iu" else np.divide}[op]
        return f(vals[0], vals[1]).astype(np.result_type(vals[0], vals[1]))
    if op == "Reshape":
        return x.reshape([d if d != 0 else x.shape[i] for i, d in enumerate(vals[1].tolist())])
    if op == "Flatten":
        ax = a("axis", 1)
        return x.reshape(int(np.prod(x.shape[:ax])), -1)
    return None


def f32(v):
    """A C-contiguous float32 array (copied only when needed: VGG's weights are 0.5 GB)."""
    a = np.asarray(v, np.float32)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)
