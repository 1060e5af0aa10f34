"""Reading an ONNX file: the protobuf, its external data, its initializers and nodes
in plain Python, and readable node names."""
from __future__ import annotations

import ast
import re
from pathlib import Path


from ...nn import INPUT

__all__ = ["ONNXImportError", "UnsupportedOperatorError", "require_onnx", "read_proto", "OnnxNode",
           "read_initializers", "tensor_value", "torch_scopes", "assign_names"]


class ONNXImportError(ValueError):
    """The ONNX graph cannot be turned into a gradvis model (the message says which node and why)."""


class UnsupportedOperatorError(ONNXImportError, NotImplementedError):
    """The graph uses an operator gradvis has no layer for."""


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
    _load_external_data(onnx, proto, label, base)
    if not proto.graph.node or not proto.graph.output:
        raise ValueError(f"{label} is not an ONNX model (no graph nodes or outputs); "
                         "corrupt or a different kind of file?")
    # onnx.checker is not run: it rejects usable files over details (an output
    # without a declared shape); the import checks what it relies on itself
    if not any(i.type.HasField("tensor_type") for i in proto.graph.input):
        raise ValueError(f"{label} is not a usable ONNX model (no tensor input); corrupt or a "
                         "different kind of file?")
    return proto, label


def _load_external_data(onnx, proto, label, base):
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


def tensor_value(tensor, what):
    """A TensorProto as a numpy array; complex and string tensors are refused (no
    layer computes with them, and casting would drop the imaginary part)."""
    from onnx import numpy_helper
    try:
        a = numpy_helper.to_array(tensor)
    except Exception as e:    # a truncated raw_data, an unknown data type
        raise ONNXImportError(f"{what} cannot be read ({type(e).__name__}: {e})") from None
    if a.dtype.kind == "c":
        raise ONNXImportError(f"{what} is a complex tensor ({a.dtype}, shape {a.shape}); gradvis "
                              "computes with real numbers only")
    if a.dtype.kind in "OSU":
        raise ONNXImportError(f"{what} is a string tensor (shape {a.shape}); gradvis computes with numbers only")
    return a


def read_initializers(graph):
    """{name: array} of the graph's initializers."""
    return {t.name: tensor_value(t, f"initializer {t.name!r}") for t in graph.initializer}


class OnnxNode:
    """An ONNX node in plain Python: op, name, inputs, outputs, attributes."""
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "index", "scope")

    def __init__(self, proto, index):
        from onnx import helper
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else f"{proto.op_type}_{index}")
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.index = index
        self.scope = _torch_scope(proto)
        if proto.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(
                f"ONNX node {self.name!r}: operator {proto.domain}::{self.op} is from a custom "
                "domain, which gradvis cannot run")

    def attr(self, key, default=None):
        v = self.attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    def where(self):
        return f"ONNX node {self.name!r} ({self.op})"


def _torch_scope(proto):
    """PyTorch's torch.export-based exporter names nodes 'node_Conv_12' and keeps the
    module path in metadata: ['', 'layer1', 'layer1.0', 'layer1.0.relu', 'relu_3'] ->
    (('layer1', 'layer1.0', 'layer1.0.relu'), 'relu') (the graph-wide counter of the
    last entry dropped), or None. :func:`torch_scopes` turns these into the
    TorchScript exporter's '/layer1/layer1.0/relu_1/Relu' form."""
    for p in proto.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, list) and len(scopes) > 1 and all(isinstance(s, str) for s in scopes):
                return tuple(s for s in scopes[1:-1] if s), re.sub(r"_\d+$", "", scopes[-1])
    return None


def torch_scopes(nodes):
    """Give the nodes with torch.export metadata the TorchScript exporter's scoped
    names: the k-th call (k >= 2) of one module gets '_{k-1}' on its last path entry,
    as in '/layer1/layer1.0/relu_1/Relu'."""
    calls = {}
    for n in nodes:
        if isinstance(n.scope, tuple):
            paths, op = n.scope
            k = calls[(paths, op)] = calls.get((paths, op), 0) + 1
            if k > 1 and paths:
                paths = paths[:-1] + (f"{paths[-1]}_{k - 1}",)
            n.scope = "/" + "/".join(paths + (op,))


_SAFE = re.compile(r"[^A-Za-z0-9_.:\-]+")


def _scope_name(node):
    """PyTorch's '/layer1/layer1.0/conv1/Conv' -> ('layer1.0.conv1', 'conv'); else (sanitized, '')."""
    name = node.scope or node.name
    if "/" not in name:
        return _SAFE.sub("_", name).strip("_") or node.op.lower(), ""
    parts = [p for p in name.split("/") if p]
    last = parts.pop() if parts else node.op
    segs = []
    for p in parts:   # a Sequential's children repeat its name: 'features', 'features.1', 'conv', 'conv.0'
        if segs and p.startswith(segs[-1] + "."):
            segs[-1] = p
        else:
            segs.append(p)
    qual = _SAFE.sub("_", ".".join(segs)).strip("_")
    op = _SAFE.sub("_", last).strip("_").lower() or node.op.lower()
    return (qual or op), (op if qual else "")


def assign_names(nodes):
    """{node index: unique gradvis node name} for the nodes that may become layers."""
    bases = {n.index: _scope_name(n) for n in nodes}
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
