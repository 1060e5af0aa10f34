"""The graph walk of the ONNX importer: which nodes are constants, which are layers,
and the bookkeeping between ONNX tensors and gradvis nodes. The operators themselves
are in :mod:`.ops`."""
from __future__ import annotations

import numpy as np

from ...nn import INPUT
from .constants import CONSTANT_OPS, ConstantEvaluationError, evaluate
from .ops import CONSTANT_INPUTS, SUPPORTED_OPS, LayerOps
from .reader import (ONNXImportError, OnnxNode, UnsupportedOperatorError, assign_names, read_initializers,
                     tensor_value, torch_scopes)

__all__ = ["Importer", "FOLDING_HINT"]

FOLDING_HINT = ("fold the graph's constants first, e.g. with onnxsim (pip install onnxsim; "
                "onnxsim model.onnx model-folded.onnx) or onnxruntime's optimizer "
                "(SessionOptions.graph_optimization_level = ORT_ENABLE_BASIC and "
                "SessionOptions.optimized_model_filepath)")


def f32(v):
    """A C-contiguous float32 array (copied only when needed: VGG's weights are 0.5 GB)."""
    a = np.asarray(v, np.float32)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class Importer(LayerOps):
    """One import: reads the graph in __init__, builds the gradvis model in :meth:`run`."""

    def __init__(self, proto, label, input_shape, output, fold_batchnorm):
        self.label = label
        self.fold_batchnorm = fold_batchnorm
        g = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        self.const = read_initializers(g)
        self.const[""] = None   # an omitted optional input
        inputs = [i for i in g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ONNXImportError(f"{label}: gradvis models take one image input; this graph has "
                                  f"{len(inputs)}: {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.input_shape, self.batch = self._input_shape(inputs[0], input_shape)
        outs = [o.name for o in g.output]
        if output is None:
            output = outs[0]
        elif output not in outs:
            raise ONNXImportError(f"{label}: output {output!r} is not a graph output ({outs})")
        self.output = output
        self.other_outputs = [o for o in outs if o != output]
        self.nodes = [OnnxNode(n, i) for i, n in enumerate(g.node)]
        torch_scopes(self.nodes)
        self.producer = {o: n for n in self.nodes for o in n.outputs if o}
        self.consumers = {}
        for n in self.nodes:
            for t in n.inputs:
                self.consumers.setdefault(t, []).append(n)
        self.live = self._live_nodes()
        self.info = {"source": "onnx", "file": label, "opset": self.opset, "input": self.input_name,
                     "output": output, "folded": [], "dropped": [], "tensors": {}}
        self.static = self._static_tensors()
        for n in self.nodes:      # constants first (Shape of activations waits for their shapes)
            if n.index in self.live and (n.op == "Constant" or (
                    n.op not in ("Shape", "Size") and n.inputs and all(t in self.const for t in n.inputs))):
                self._evaluate(n)
        self.skip = set()                        # node indices folded into an earlier layer
        self.fused = self.find_fusions()         # see LayerOps.find_fusions
        self.names = assign_names([n for n in self.nodes if n.index in self.live
                                   and not self.is_static_node(n) and n.index not in self.skip])
        self.used_names = set(self.names.values()) | {INPUT}
        self.tensor = {self.input_name: INPUT}   # ONNX tensor -> gradvis tensor (node name or INPUT)
        self.shape = {INPUT: self.input_shape}   # gradvis tensor -> shape without the batch axis
        self.pending_pad = {}                    # ONNX tensor -> (gradvis source, (t, b, l, r))
        self.transposed = {}                     # ONNX tensor (N, D)^T read by a transA Gemm -> gradvis source
        if self.other_outputs:
            self.info["ignored_outputs"] = self.other_outputs

    # ------------------------------------------------------------------ set-up
    def _input_shape(self, vi, given):
        """((C, H, W), the batch size the graph was exported with, or 1)."""
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        batch = dims[0] if dims and dims[0] else 1
        if given is not None:
            given = tuple(int(v) for v in given)
            if len(given) != 3:
                raise ValueError(f"input_shape must be (C, H, W), got {given}")
            if dims and len(dims) == 4 and dims[1] is not None and dims[1] != given[0]:
                raise ONNXImportError(f"{self.label}: input_shape {given} has {given[0]} channels but the "
                                      f"graph input {vi.name!r} has {dims[1]}")
            return given, batch
        if len(dims) != 4:
            raise ONNXImportError(f"{self.label}: the graph input {vi.name!r} has shape {dims}; gradvis "
                                  "models take (N, C, H, W) images")
        if any(d is None or d <= 0 for d in dims[1:]):
            raise ONNXImportError(f"{self.label}: the graph input {vi.name!r} has dynamic dims {dims}; "
                                  "pass input_shape=(C, H, W) (the CLI's --input-shape C H W)")
        return tuple(dims[1:]), batch

    def _live_nodes(self):
        """Indices of the nodes the chosen output depends on (dead branches are not imported)."""
        live, stack = set(), [self.output]
        while stack:
            n = self.producer.get(stack.pop())
            if n is not None and n.index not in live:
                live.add(n.index)
                stack.extend(t for t in n.inputs if t)
        return live

    def _static_tensors(self):
        """The tensors known at import time: initializers, Constant outputs, the Shape of
        anything (every activation's shape is known), and what is computed from those."""
        static = set(self.const)
        for n in self.nodes:
            if n.op in ("Constant", "Shape", "Size") or (n.inputs and all(t in static for t in n.inputs)):
                static.update(n.outputs)
        return static

    def is_static_node(self, node):
        return bool(node.outputs) and all(t in self.static for t in node.outputs if t)

    # ------------------------------------------------------------------ helpers
    def is_const(self, t):
        return t in self.const

    def readers(self, t):
        """The live nodes reading the values of ONNX tensor t (Shape only reads its shape)."""
        return [n for n in self.consumers.get(t, []) if n.index in self.live and n.op not in ("Shape", "Size")]

    def sole_consumer(self, t):
        """The one node that reads ONNX tensor t, if exactly one does and t is not the output."""
        users = self.readers(t)
        if len(users) != 1 or t == self.output:
            return None
        return users[0]

    def activation(self, node, t):
        if t not in self.tensor or self.tensor[t] is None:
            if t in self.const:
                raise ONNXImportError(f"{node.where()}: input {t!r} is a constant where gradvis needs "
                                      "the image's activations")
            raise ONNXImportError(f"{node.where()}: input {t!r} is not produced by any node before it")
        return self.tensor[t]

    def value_source(self, t):
        """The node where the image's values enter the computation of non-constant t:
        of t's non-constant ancestors, the nearest that reads the graph input or a
        tensor of an operator that only computes on values (a Conv, a Relu), not on
        shapes."""
        def real(x):
            p = self.producer.get(x)
            return x == self.input_name or (p is not None and p.op not in CONSTANT_OPS)
        seen, stack, found = set(), [t], []
        while stack:
            n = self.producer.get(stack.pop())
            if n is None or n.index in seen:
                continue
            seen.add(n.index)
            if n.op not in CONSTANT_OPS:
                found.append(n)
                continue
            dyn = [x for x in n.inputs if x and x not in self.static]
            if any(real(x) for x in dyn):
                found.append(n)
            stack.extend(dyn)
        return max(found, key=lambda n: n.index) if found else self.producer.get(t)

    def not_constant(self, node, t, what):
        """The error for a node input that must be known at import time but is not."""
        if t not in self.producer and t != self.input_name:
            return ONNXImportError(f"{node.where()}: {what} {t!r} names no initializer and no node "
                                   "output (a missing initializer?)")
        return ONNXImportError(f"{node.where()}: {what} {t!r} must be known at import time, but it {self._depends(t)}; "
                               f"gradvis evaluates shape arithmetic on constants and static shapes only. "
                               f"If the graph only looks dynamic, {FOLDING_HINT}")

    def _depends(self, t):
        """How tensor t depends on the image, for errors."""
        src = self.value_source(t) if t != self.input_name else None
        return ("is the image input itself" if src is None else
                f"depends on the image's values through ONNX node {src.name!r} ({src.op})")

    def constant(self, node, i, what):
        t = node.inputs[i] if i < len(node.inputs) else ""
        if t == "":
            raise ONNXImportError(f"{node.where()}: {what} (input {i}) is missing")
        if t not in self.const:
            raise self.not_constant(node, t, f"{what} (input {i})")
        return self.const[t]

    def optional_constant(self, node, i, what):
        """A constant input that may be omitted (None then); given but not constant is an error."""
        if i >= len(node.inputs) or node.inputs[i] == "":
            return None
        return self.constant(node, i, what)

    def alias(self, node, onnx_out, gv_tensor):
        self.tensor[onnx_out] = gv_tensor

    def one_sample(self, node, c, what):
        """One sample's rows of constant ``c`` that has the batch axis: its only row, or,
        for a constant an exporter computed at the exported batch (torch.zeros_like(x),
        position embeddings), its equal rows; else an ONNXImportError (the constant
        would change the batch)."""
        if c.shape[0] == 1:
            return c[0]
        if c.shape[0] != self.batch:
            raise ONNXImportError(f"{node.where()}: {what} of shape {c.shape} has a batch axis of {c.shape[0]}, "
                                  f"the graph's input {self.batch}")
        if not (c == c[:1]).all():
            raise ONNXImportError(f"{node.where()}: {what} of shape {c.shape} varies over the batch axis")
        return c[0]

    def fresh_name(self, base):
        cand, k = base, 2
        while cand in self.used_names:
            cand, k = f"{base}_{k}", k + 1
        self.used_names.add(cand)
        return cand

    def emit(self, node, layer, inputs, params=None, buffers=None, out=None, name=None):
        """Add a gradvis node for ONNX ``node``; its value is ONNX tensor ``out``."""
        name = name or self.names[node.index]
        params = {k: f32(v) for k, v in (params or {}).items()}
        for k, want in layer.param_shapes.items():
            if k not in params:
                raise ONNXImportError(f"{node.where()}: missing parameter {k!r}")
            if params[k].shape != tuple(want):
                raise ONNXImportError(f"{node.where()}: parameter {k!r} has shape {params[k].shape}, "
                                      f"the layer needs {tuple(want)}")
        try:
            shape = tuple(layer.output_shape([self.shape[i] for i in inputs]))
        except ValueError as e:
            ins = ", ".join(f"{i} (N, {', '.join(map(str, self.shape[i]))})" for i in inputs)
            raise ONNXImportError(f"{node.where()}: shape mismatch: {layer.describe()} on {ins}: {e}") from None
        # skip Model.add's random initialization (100M+ numbers for a VGG): the
        # parameters are known
        layer.init_params = lambda rng, dtype: params
        try:
            self.model.add(name, layer, inputs=inputs)
        finally:
            del layer.init_params
        for k, v in (buffers or {}).items():
            self.model.buffers[f"{name}.{k}"] = f32(v)
        self.shape[name] = shape
        self.tensor[out if out is not None else node.outputs[0]] = name
        return name

    @staticmethod
    def malformed(node, err):
        """A node the importer could not read (a required attribute or input missing, an
        index out of range), named with the error it raised."""
        return ONNXImportError(f"{node.where()}: malformed or unsupported node ({type(err).__name__}: {err})")

    def unsupported(self, node, why=""):
        if why:
            return ONNXImportError(f"{node.where()}: {why}")
        return UnsupportedOperatorError(
            f"{node.where()}: operator {node.op!r} is not supported by gradvis's ONNX importer "
            f"(supported: {', '.join(SUPPORTED_OPS)})")

    # ------------------------------------------------------------------ run
    def _check_operators(self):
        missing, on_values = {}, {}
        for node in self.nodes:   # every unsupported operator at once, not just the first
            if node.index not in self.live or node.index in self.skip or self.is_static_node(node):
                continue
            if hasattr(self, "op_" + node.op):
                continue
            if node.op in CONSTANT_OPS:
                # an operator evaluated on constants only, here given the image's values
                dyn = next(t for t in node.inputs if t and t not in self.static)
                if dyn not in self.producer and dyn != self.input_name:
                    raise self.not_constant(node, dyn, "input")
                on_values.setdefault(node.op, (node.name, dyn))
                continue
            missing.setdefault(node.op, node.name)
        if on_values:   # the cause of any input below that is not constant
            self._refuse_operators(missing, on_values)
        for node in self.nodes:   # then, in graph order, inputs that must be constants but are not
            if node.index not in self.live or node.index in self.skip or self.is_static_node(node):
                continue
            for i, what in CONSTANT_INPUTS.get(node.op, {}).items():
                t = node.inputs[i] if i < len(node.inputs) else ""
                if t and t not in self.static and not (node.op == "MatMul"):
                    raise self.not_constant(node, t, f"{what} (input {i})")
        if missing:
            self._refuse_operators(missing, on_values)

    def _refuse_operators(self, missing, on_values):
        """Raises the error that names every operator the graph needs and gradvis lacks:
        ``missing`` {op: node name}, ``on_values`` {op: (node name, image-dependent input)}."""
        parts = []
        if missing:
            listed = ", ".join(f"{op!r} (node {name!r})" for op, name in missing.items())
            parts.append(f"unsupported ONNX operator{'s' if len(missing) > 1 else ''} {listed}")
        if on_values:
            listed = ", ".join(f"{op!r} (node {name!r}, input {t!r}, which {self._depends(t)})"
                               for op, (name, t) in on_values.items())
            parts.append(f"ONNX operator{'s' if len(on_values) > 1 else ''} {listed} applied to values "
                         f"computed from the image, which gradvis evaluates on constants only")
        raise UnsupportedOperatorError(
            f"{self.label}: {'; '.join(parts)}; gradvis's importer supports {', '.join(SUPPORTED_OPS)}")

    def run(self, model):
        self.model = model
        self._check_operators()
        for node in self.nodes:
            if node.index not in self.live or node.index in self.skip:
                continue
            if all(t in self.const for t in node.outputs if t):
                continue      # evaluated in __init__
            if node.index in self.fused:
                self.run_fused(node)
                continue
            if self.is_static_node(node):
                self._evaluate(node)
                continue
            try:
                getattr(self, "op_" + node.op)(node)
            except ONNXImportError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                raise self.malformed(node, e) from None
        if self.output not in self.tensor or self.tensor[self.output] == INPUT:
            raise ONNXImportError(f"{self.label}: the output {self.output!r} is not computed from the "
                                  "input by any layer")
        last = self.tensor[self.output]
        if not model.nodes or model.nodes[-1].name != last:
            raise ONNXImportError(f"{self.label}: internal error: output node {last!r} is not the last node")
        self.info["tensors"] = {k: v for k, v in self.tensor.items()}
        return model

    def _evaluate(self, node):
        """Compute a node whose inputs are all known (see :mod:`.constants`)."""
        if node.op == "Constant":
            self.const[node.outputs[0]] = self._constant_value(node)
            return
        if node.op in ("Shape", "Size") and node.inputs and node.inputs[0] not in self.const:
            src = self.activation(node, node.inputs[0])
            full = np.array((self.batch,) + tuple(self.shape[src]), np.int64)
            if node.op == "Size":
                self.const[node.outputs[0]] = np.array(int(np.prod(full)), np.int64)
            else:
                self.const[node.outputs[0]] = full[node.attr("start", 0):node.attr("end", None)]
            return
        vals = [self.const.get(t) if t else None for t in node.inputs]
        try:
            out = evaluate(node.op, vals, node.attr, len(node.outputs))
        except (ConstantEvaluationError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                ArithmeticError) as e:
            raise self.malformed(node, e) from None
        if out is None:
            raise UnsupportedOperatorError(
                f"{node.where()}: all its inputs are constants, but gradvis cannot evaluate {node.op!r} "
                f"at import time (it evaluates {', '.join(CONSTANT_OPS)}); {FOLDING_HINT}")
        for t, v in zip(node.outputs, out):
            if t:
                if np.asarray(v).dtype.kind == "c":
                    raise ONNXImportError(f"{node.where()}: computes a complex tensor; gradvis computes "
                                          "with real numbers only")
                self.const[t] = np.asarray(v)

    def _constant_value(self, node):
        a = node.attrs
        if "value" in a:
            return tensor_value(a["value"], f"{node.where()}: its value")
        for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                      ("value_int", np.int64), ("value_ints", np.int64)):
            if k in a:
                return np.asarray(a[k], dt)
        raise self.unsupported(node, f"Constant with attributes {sorted(a)} is not supported")
