"""Turning an ONNX graph into gradvis layers: one ``op_<OpType>`` method per operator,
with the import-time folds described in :mod:`gradvis.io.onnx_import`."""
from __future__ import annotations

import math

import numpy as np

from ...nn import (INPUT, Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Bias, Clip, Concat, Conv2d, Div,
                   Flatten, GlobalAvgPool, HardSigmoid, HardSwish, LeakyReLU, Linear, MaxPool2d,
                   Mul, Pad, ReLU, ReLU6, Scale, SiLU, Sigmoid, Sub, Tanh)
from .reader import (SUPPORTED_OPS, ONNXImportError, OnnxNode, UnsupportedOperatorError, assign_names, const_eval, f32)

__all__ = ["Importer", "preprocessing", "check_arrays"]


class Importer:
    def __init__(self, proto, label, input_shape, output, fold_batchnorm):
        from onnx import numpy_helper
        self.label = label
        self.fold_batchnorm = fold_batchnorm
        g = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        self.const = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.const[""] = None   # an omitted optional input
        inputs = [i for i in g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ONNXImportError(f"{label}: gradvis models take one image input; this graph has "
                                  f"{len(inputs)}: {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.input_shape = self._input_shape(inputs[0], input_shape)
        outs = [o.name for o in g.output]
        if output is None:
            output = outs[0]
        elif output not in outs:
            raise ONNXImportError(f"{label}: output {output!r} is not a graph output ({outs})")
        self.output = output
        self.other_outputs = [o for o in outs if o != output]
        self.nodes = [OnnxNode(n, i) for i, n in enumerate(g.node)]
        self.producer = {o: n for n in self.nodes for o in n.outputs}
        self.consumers = {}
        for n in self.nodes:
            for t in n.inputs:
                self.consumers.setdefault(t, []).append(n)
        self.live = self._live_nodes()
        self.gated = self._gated_muls()          # gate node index -> the Mul folded into it
        folded_muls = {m.index for m in self.gated.values()}
        self.names = assign_names([n for n in self.nodes if n.index in self.live
                                    and not self._is_shape_arithmetic(n) and n.index not in folded_muls])
        self.tensor = {self.input_name: INPUT}   # ONNX tensor -> gradvis tensor (node name or INPUT)
        self.shape = {INPUT: self.input_shape}   # gradvis tensor -> shape without the batch axis
        self.pending_pad = {}                    # ONNX tensor -> (gradvis source, (t, b, l, r))
        self.skip = set(folded_muls)             # node indices folded into an earlier layer
        self.info = {"source": "onnx", "file": label, "opset": self.opset, "input": self.input_name,
                     "output": output, "folded": [], "dropped": [], "tensors": {}}
        if self.other_outputs:
            self.info["ignored_outputs"] = self.other_outputs

    # ------------------------------------------------------------------ set-up
    def _input_shape(self, vi, given):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if given is not None:
            given = tuple(int(v) for v in given)
            if len(given) != 3:
                raise ValueError(f"input_shape must be (C, H, W), got {given}")
            if dims and len(dims) == 4 and dims[1] is not None and dims[1] != given[0]:
                raise ONNXImportError(f"{self.label}: input_shape {given} has {given[0]} channels but the "
                                      f"graph input {vi.name!r} has {dims[1]}")
            return given
        if len(dims) != 4:
            raise ONNXImportError(f"{self.label}: the graph input {vi.name!r} has shape {dims}; gradvis "
                                  "models take (N, C, H, W) images")
        if any(d is None or d <= 0 for d in dims[1:]):
            raise ONNXImportError(f"{self.label}: the graph input {vi.name!r} has dynamic dims {dims}; "
                                  "pass input_shape=(C, H, W) (the CLI's --input-shape C H W)")
        return tuple(dims[1:])

    def _is_shape_arithmetic(self, node):
        """Constants and shape computations (evaluated at import time, never layers)."""
        if not hasattr(self, "_static"):
            self._static = set(self.const)
            for n in self.nodes:
                if n.op in ("Constant", "Shape") or (n.inputs and all(t in self._static for t in n.inputs)):
                    self._static.update(n.outputs)
        return all(t in self._static for t in node.outputs)

    def _live_nodes(self):
        """Indices of the nodes the chosen output depends on (dead branches are not imported)."""
        live, stack = set(), [self.output]
        while stack:
            n = self.producer.get(stack.pop())
            if n is not None and n.index not in live:
                live.add(n.index)
                stack.extend(t for t in n.inputs if t)
        return live

    def _gated_muls(self):
        """{index of a Sigmoid or PyTorch-HardSigmoid g: the Mul computing x * g(x)} where
        that Mul is the gate's only reader: x * sigmoid(x) is SiLU, x * hardsigmoid(x) HardSwish."""
        out = {}
        for n in self.nodes:
            if n.index not in self.live or n.op not in ("Sigmoid", "HardSigmoid") or self._is_shape_arithmetic(n):
                continue
            if n.op == "HardSigmoid" and (np.float32(n.attr("alpha", 0.2)) != np.float32(1 / 6)
                                          or np.float32(n.attr("beta", 0.5)) != np.float32(0.5)):
                continue
            mul = self.sole_consumer(n.outputs[0])
            if mul is not None and mul.op == "Mul" and sorted(mul.inputs) == sorted([n.inputs[0], n.outputs[0]]):
                out[n.index] = mul
        return out

    # ------------------------------------------------------------------ helpers
    def is_const(self, t):
        return t in self.const

    def sole_consumer(self, t):
        """The one node that reads ONNX tensor t, if exactly one does and t is not the output."""
        users = [n for n in self.consumers.get(t, []) if n.index in self.live]
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

    def constant(self, node, i, what):
        t = node.inputs[i] if i < len(node.inputs) else ""
        if t == "" or t not in self.const:
            raise ONNXImportError(f"{node.where()}: {what} (input {i}, {t!r}) must be a constant "
                                  "(an initializer); computed weights are not supported")
        return self.const[t]

    def alias(self, node, onnx_out, gv_tensor):
        self.tensor[onnx_out] = gv_tensor

    def emit(self, node, layer, inputs, params=None, buffers=None, out=None):
        """Add a gradvis node for ONNX ``node``; its value is ONNX tensor ``out``."""
        name = self.names[node.index]
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
    def _malformed(node, err):
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
    def run(self, model):
        self.model = model
        missing = {}
        for node in self.nodes:   # every unsupported operator at once, not just the first
            if node.index in self.live and not self._is_shape_arithmetic(node) \
                    and node.op != "Constant" and not hasattr(self, "op_" + node.op):
                missing.setdefault(node.op, node.name)
        if missing:
            listed = ", ".join(f"{op!r} (node {name!r})" for op, name in missing.items())
            raise UnsupportedOperatorError(
                f"{self.label}: unsupported ONNX operator{'s' if len(missing) > 1 else ''} {listed}; "
                f"gradvis's importer supports {', '.join(SUPPORTED_OPS)}")
        for node in self.nodes:
            if node.index not in self.live or node.index in self.skip:
                continue
            if node.op == "Constant":
                self.const[node.outputs[0]] = self._constant_value(node)
                continue
            if node.inputs and all(t in self.const for t in node.inputs) and node.op != "Shape":
                try:
                    val = const_eval(node, [self.const[t] for t in node.inputs])
                except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                    raise self._malformed(node, e) from None
                if val is None:
                    raise self.unsupported(node, f"cannot evaluate {node.op!r} on constants at import time")
                self.const[node.outputs[0]] = np.asarray(val)
                continue
            handler = getattr(self, "op_" + node.op, None)
            if handler is None:
                raise self.unsupported(node)
            try:
                handler(node)
            except ONNXImportError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
                raise self._malformed(node, e) from None
        if self.output not in self.tensor or self.tensor[self.output] == INPUT:
            raise ONNXImportError(f"{self.label}: the output {self.output!r} is not computed from the "
                                  "input by any layer")
        last = self.tensor[self.output]
        if not model.nodes or model.nodes[-1].name != last:
            raise ONNXImportError(f"{self.label}: internal error: output node {last!r} is not the last node")
        self.info["tensors"] = {k: v for k, v in self.tensor.items()}
        return model

    def _constant_value(self, node):
        from onnx import numpy_helper
        a = node.attrs
        if "value" in a:
            return numpy_helper.to_array(a["value"])
        for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                      ("value_int", np.int64), ("value_ints", np.int64)):
            if k in a:
                return np.asarray(a[k], dt)
        raise self.unsupported(node, f"Constant with attributes {sorted(a)} is not supported")

    # ------------------------------------------------------------------ geometry
    def _window(self, node, kernel, in_hw):
        """(strides, dilations, (top, bottom, left, right)) of a Conv/Pool node."""
        strides = tuple(node.attr("strides", [1, 1]))
        dil = tuple(node.attr("dilations", [1, 1]))
        if len(kernel) != 2 or len(strides) != 2 or len(dil) != 2:
            raise self.unsupported(node, f"only 2-D windows are supported (kernel {kernel})")
        auto = node.attr("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            p = list(node.attr("pads", [0, 0, 0, 0]))
            if len(p) != 4:
                raise self.unsupported(node, f"pads {p} are not 2-D")
            pads = (p[0], p[2], p[1], p[3])
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pp = []
            for size, k, s, d in zip(in_hw, kernel, strides, dil):
                total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
                small = total // 2
                pp.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
            pads = (pp[0][0], pp[0][1], pp[1][0], pp[1][1])
        else:
            raise self.unsupported(node, f"auto_pad {auto!r} is not supported")
        if min(pads) < 0:
            raise self.unsupported(node, f"negative pads {pads}")
        return strides, dil, tuple(int(v) for v in pads)

    def _input4(self, node, t):
        src = self.activation(node, t)
        if len(self.shape[src]) != 3:
            raise ONNXImportError(f"{node.where()}: expects (N, C, H, W) input, got (N, "
                                  f"{', '.join(map(str, self.shape[src]))}) from {t!r}")
        return src

    # ------------------------------------------------------------------ ops
    def op_Conv(self, node):
        extra = (0, 0, 0, 0)
        t = node.inputs[0]
        if t in self.pending_pad:
            src, extra = self.pending_pad.pop(t)
        else:
            src = self._input4(node, t)
        w = np.asarray(self.constant(node, 1, "the weight"))
        b = self.const.get(node.inputs[2]) if len(node.inputs) > 2 else None
        if w.ndim != 4:
            raise self.unsupported(node, f"only 2-D convolutions are supported (weight shape {w.shape})")
        groups = int(node.attr("group", 1))
        c = self.shape[src][0]
        if w.shape[1] * groups != c:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight {w.shape} with group={groups} "
                                  f"expects {w.shape[1] * groups} input channels, the input {src!r} has {c}")
        kernel = tuple(node.attr("kernel_shape", w.shape[2:]))
        if kernel != w.shape[2:]:
            raise ONNXImportError(f"{node.where()}: kernel_shape {kernel} disagrees with the weight {w.shape}")
        in_hw = (self.shape[src][1] + extra[0] + extra[1], self.shape[src][2] + extra[2] + extra[3])
        strides, dil, pads = self._window(node, kernel, in_hw)
        pads = tuple(p + q for p, q in zip(pads, extra))
        b = np.zeros(w.shape[0]) if b is None else np.asarray(b, np.float64)
        has_bias = len(node.inputs) > 2 and node.inputs[2] != ""
        out = node.outputs[0]
        nxt = self.sole_consumer(out)
        if (self.fold_batchnorm and nxt is not None and nxt.op == "BatchNormalization"
                and all(self.is_const(x) for x in nxt.inputs[1:5])
                and not any(self.consumers.get(o) for o in nxt.outputs[1:] if o)):
            gamma, beta, mean, var = (np.asarray(self.const[x], np.float64) for x in nxt.inputs[1:5])
            if (var < 0).any():
                raise ONNXImportError(f"{nxt.where()}: running variance has negative entries "
                                      f"(min {var.min():g}); a variance is >= 0")
            scale = gamma / np.sqrt(var + float(nxt.attr("epsilon", 1e-5)))
            w = w.astype(np.float64) * scale[:, None, None, None]
            b = (b - mean) * scale + beta
            has_bias = True
            self.skip.add(nxt.index)
            self.info["folded"].append(f"{nxt.name} (BatchNormalization) into {node.name} (Conv)")
            out = nxt.outputs[0]
        nxt = self.sole_consumer(out)
        if nxt is not None and nxt.op == "Add":
            cb = self._channel_constant(nxt, out, w.shape[0])
            if cb is not None:
                b = b + cb
                has_bias = True
                self.skip.add(nxt.index)
                self.info["folded"].append(f"{nxt.name} (Add of a constant) into {node.name} (Conv)")
                out = nxt.outputs[0]
        layer = Conv2d(c, w.shape[0], kernel, stride=strides, padding=pads, dilation=dil, groups=groups,
                       bias=has_bias)
        params = {"weight": w}
        if has_bias:
            params["bias"] = b
        name = self.emit(node, layer, [src], params, out=out)
        if t in self.tensor and self.tensor[t] is None:
            self.tensor[t] = name     # a folded Pad's output
        self._alias_chain(node.outputs[0], out, name)

    def _alias_chain(self, first, last, name):
        """Every ONNX tensor folded into one layer names that layer's output."""
        t = first
        while True:
            self.tensor[t] = name
            if t == last:
                return
            nxt = self.sole_consumer(t)
            if nxt is None:
                return
            t = nxt.outputs[0]

    def _channel_constant(self, add, src_tensor, channels, spatial=True):
        """The (channels,) vector of a constant added per channel to src_tensor by ``add``, or None."""
        other = [t for t in add.inputs if t != src_tensor]
        if len(other) != 1 or other[0] not in self.const:
            return None
        c = np.asarray(self.const[other[0]], np.float64)
        if c.dtype.kind not in "f" and c.dtype.kind not in "iu":
            return None
        if spatial:
            while c.ndim > 3 and c.shape[0] == 1:
                c = c[0]
            if c.ndim == 3 and c.shape[1:] == (1, 1) and c.shape[0] in (1, channels):
                return np.broadcast_to(c[:, 0, 0], (channels,)).copy()
            if c.ndim == 0 or (c.ndim == 1 and c.shape[0] == 1):
                return np.full(channels, float(c.reshape(-1)[0]))
            return None
        while c.ndim > 1 and c.shape[0] == 1:
            c = c[0]
        if c.ndim <= 1 and c.size in (1, channels):
            return np.broadcast_to(c.reshape(-1), (channels,)).copy()
        return None

    def op_BatchNormalization(self, node):
        if any(self.consumers.get(o) for o in node.outputs[1:] if o):
            raise self.unsupported(node, "training-mode BatchNormalization (running-stat outputs are read)")
        src = self.activation(node, node.inputs[0])
        gamma = self.constant(node, 1, "scale")
        beta = self.constant(node, 2, "bias")
        mean = self.constant(node, 3, "running mean")
        var = self.constant(node, 4, "running variance")
        s = self.shape[src]
        cls = BatchNorm2d if len(s) == 3 else BatchNorm1d if len(s) == 1 else None
        if cls is None:
            raise self.unsupported(node, f"batch norm of (N, {', '.join(map(str, s))}) inputs")
        layer = cls(s[0], eps=float(node.attr("epsilon", 1e-5)))
        self.emit(node, layer, [src], {"gamma": gamma, "beta": beta},
                  {"running_mean": mean, "running_var": var})

    def _single(self, node, layer):
        self.emit(node, layer, [self.activation(node, node.inputs[0])])

    def op_Relu(self, node):
        self._single(node, ReLU())

    def op_LeakyRelu(self, node):
        self._single(node, LeakyReLU(float(node.attr("alpha", 0.01))))

    def _gate(self, node, layer, fused):
        """``node`` as ``layer``; or, with the Mul(x, node(x)) found by _gated_muls, both as ``fused``."""
        mul = self.gated.get(node.index)
        if mul is None:
            self._single(node, layer)
            return
        self.emit(node, fused, [self.activation(node, node.inputs[0])], out=mul.outputs[0])
        self.info["folded"].append(f"{mul.name} (Mul) and {node.name} ({node.op}) into one {fused.type}")

    def op_Sigmoid(self, node):
        self._gate(node, Sigmoid(), SiLU())

    def op_HardSigmoid(self, node):
        self._gate(node, HardSigmoid(float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))), HardSwish())

    def op_HardSwish(self, node):
        self._single(node, HardSwish())

    def op_Swish(self, node):
        alpha = float(node.attr("alpha", 1.0))
        if alpha != 1.0:
            raise UnsupportedOperatorError(f"{node.where()}: Swish with alpha={alpha:g} is not supported "
                                           "(only alpha 1, SiLU)")
        self._single(node, SiLU())

    def op_Tanh(self, node):
        self._single(node, Tanh())

    def op_Clip(self, node):
        if len(node.inputs) > 1:   # opset >= 11: min and max are optional inputs
            lo = self.const.get(node.inputs[1]) if len(node.inputs) > 1 else None
            hi = self.const.get(node.inputs[2]) if len(node.inputs) > 2 else None
            for t in node.inputs[1:3]:
                if t and t not in self.const:
                    raise self.unsupported(node, f"Clip bound {t!r} must be a constant")
        else:
            lo, hi = node.attrs.get("min"), node.attrs.get("max")
        lo = -math.inf if lo is None else float(np.asarray(lo).reshape(-1)[0])
        hi = math.inf if hi is None else float(np.asarray(hi).reshape(-1)[0])
        if lo == 0.0 and hi == 6.0:
            layer = ReLU6()
        elif lo == 0.0 and math.isinf(hi):
            layer = ReLU()
        else:
            layer = Clip(None if math.isinf(lo) else lo, None if math.isinf(hi) else hi)
        self._single(node, layer)

    def _pool(self, node, cls):
        if len(node.outputs) > 1 and any(self.consumers.get(o) for o in node.outputs[1:] if o):
            raise self.unsupported(node, "MaxPool's indices output is not supported")
        src = self._input4(node, node.inputs[0])
        kernel = tuple(node.attr("kernel_shape"))
        strides, dil, pads = self._window(node, kernel, self.shape[src][1:])
        if dil != (1, 1):
            raise self.unsupported(node, f"dilated pooling (dilations {dil})")
        kw = dict(stride=strides, padding=pads, ceil_mode=bool(node.attr("ceil_mode", 0)))
        if cls is AvgPool2d:
            kw["count_include_pad"] = bool(node.attr("count_include_pad", 0))
        self.emit(node, cls(kernel, **kw), [src])

    def op_MaxPool(self, node):
        self._pool(node, MaxPool2d)

    def op_AveragePool(self, node):
        self._pool(node, AvgPool2d)

    def op_GlobalAveragePool(self, node):
        self.emit(node, GlobalAvgPool(), [self._input4(node, node.inputs[0])])

    def op_ReduceMean(self, node):
        src = self.activation(node, node.inputs[0])
        rank = len(self.shape[src]) + 1
        if len(node.inputs) > 1 and node.inputs[1]:     # opset 18: axes is an input
            axes = [int(a) for a in np.asarray(self.constant(node, 1, "axes")).reshape(-1)]
        else:
            axes = node.attr("axes")
            axes = [] if axes is None else [int(a) for a in axes]
        if not axes and int(node.attr("noop_with_empty_axes", 0)):
            self.alias(node, node.outputs[0], src)
            return
        axes_n = sorted({a % rank for a in axes if -rank <= a < rank}) if axes else list(range(rank))
        if rank != 4 or axes_n != [2, 3] or len(axes_n) != len(set(axes)):
            what = f"axes {axes}" if axes else "all axes"
            raise UnsupportedOperatorError(
                f"{node.where()}: ReduceMean over {what} of an (N, {', '.join(map(str, self.shape[src]))}) "
                "tensor is not supported; only the mean over the spatial axes [2, 3] of (N, C, H, W) "
                "(global average pooling) is")
        self.emit(node, GlobalAvgPool(keepdims=bool(int(node.attr("keepdims", 1)))), [src])

    def op_Flatten(self, node):
        src = self.activation(node, node.inputs[0])
        rank = len(self.shape[src]) + 1
        axis = int(node.attr("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:
            raise self.unsupported(node, f"Flatten with axis={node.attr('axis')} (only axis 1, "
                                         "keeping the batch axis, is supported)")
        if rank == 2:
            self.alias(node, node.outputs[0], src)
            return
        self.emit(node, Flatten(), [src])

    def op_Reshape(self, node):
        src = self.activation(node, node.inputs[0])
        target = [int(v) for v in np.asarray(self.constant(node, 1, "the target shape")).reshape(-1)]
        s = self.shape[src]
        feat = int(np.prod(s, dtype=np.int64))
        allowzero = int(node.attr("allowzero", 0))
        rest = [s[i - 1] if (d == 0 and not allowzero and 1 <= i <= len(s)) else d
                for i, d in enumerate(target)][1:]
        lead = target[0] if target else None
        lead_ok = lead in (0, -1) or (lead is not None and lead > 0)
        if lead == -1 and -1 in rest:
            lead_ok = False
        if lead_ok and len(rest) == 1 and rest[0] in (-1, feat):
            if len(s) == 1:
                self.alias(node, node.outputs[0], src)
            else:
                self.emit(node, Flatten(), [src])
            return
        if lead_ok and tuple(rest) == tuple(s):
            self.alias(node, node.outputs[0], src)
            return
        raise self.unsupported(node, f"Reshape of (N, {', '.join(map(str, s))}) to {target}: only "
                                     "flattening to (N, -1) is supported")

    def _linear(self, node, src, w, b):
        s = self.shape[src]
        if len(s) != 1:
            raise ONNXImportError(f"{node.where()}: expects (N, D) input, got (N, {', '.join(map(str, s))}) "
                                  "(flatten it first)")
        if w.shape[0] != s[0]:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight maps {w.shape[0]} features to "
                                  f"{w.shape[1]}, the input {src!r} has {s[0]}")
        out = node.outputs[0]
        nxt = self.sole_consumer(out)
        if nxt is not None and nxt.op == "Add":
            cb = self._channel_constant(nxt, out, w.shape[1], spatial=False)
            if cb is not None:
                b = cb if b is None else b + cb
                self.skip.add(nxt.index)
                self.info["folded"].append(f"{nxt.name} (Add of a constant) into {node.name} ({node.op})")
                out = nxt.outputs[0]
        params = {"weight": w} if b is None else {"weight": w, "bias": b}
        name = self.emit(node, Linear(w.shape[0], w.shape[1], bias=b is not None), [src], params, out=out)
        self._alias_chain(node.outputs[0], out, name)

    def op_Gemm(self, node):
        if int(node.attr("transA", 0)):
            raise self.unsupported(node, "Gemm with transA=1 (the activations must be (N, D))")
        src = self.activation(node, node.inputs[0])
        w = np.asarray(self.constant(node, 1, "B (the weight)"))
        if w.ndim != 2:
            raise ONNXImportError(f"{node.where()}: weight B must be 2-D, got {w.shape}")
        if int(node.attr("transB", 0)):
            w = w.T
        alpha = float(node.attr("alpha", 1.0))
        if alpha != 1.0:
            w = w.astype(np.float64) * alpha
        b = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = np.asarray(self.constant(node, 2, "C (the bias)"), np.float64) * float(node.attr("beta", 1.0))
            if c.size == 1:
                c = np.full(w.shape[1], float(c.reshape(-1)[0]))
            elif c.shape in ((w.shape[1],), (1, w.shape[1])):
                c = c.reshape(-1)
            else:
                raise ONNXImportError(f"{node.where()}: bias C of shape {c.shape} must broadcast per "
                                      f"output feature ({w.shape[1]},)")
            b = c
        self._linear(node, src, w, b)

    def op_MatMul(self, node):
        if node.inputs[0] in self.const:
            raise self.unsupported(node, "MatMul of a constant by activations (only x @ W with a "
                                         "constant W is supported)")
        src = self.activation(node, node.inputs[0])
        w = np.asarray(self.constant(node, 1, "the weight"))
        if w.ndim != 2:
            raise self.unsupported(node, f"MatMul with a {w.ndim}-D weight {w.shape}")
        self._linear(node, src, w, None)

    def _elementwise_const(self, node):
        """(gradvis source, constant reshaped per sample, constant is 2nd operand) or None."""
        a, b = node.inputs[:2]
        if (a in self.const) == (b in self.const):
            return None
        act, c = (a, self.const[b]) if b in self.const else (b, self.const[a])
        src = self.activation(node, act)
        c = np.asarray(c, np.float64)
        rank = len(self.shape[src]) + 1
        if c.ndim == rank:
            if c.shape[0] != 1:
                raise ONNXImportError(f"{node.where()}: constant of shape {c.shape} varies over the "
                                      "batch axis")
            c = c[0]
        elif c.ndim > rank:
            raise ONNXImportError(f"{node.where()}: constant of shape {c.shape} has more axes than the "
                                  f"input (N, {', '.join(map(str, self.shape[src]))})")
        return src, c, b in self.const

    def _elementwise(self, node, layer, const_layer, const_params, const_first_ok=True):
        """Add/Sub/Mul/Div: of two activation tensors ``layer`` (broadcasting); with one
        constant operand c, ``const_layer`` with the parameters ``const_params(c)``."""
        ec = self._elementwise_const(node)
        if ec is None:
            self.emit(node, layer, [self.activation(node, t) for t in node.inputs])
            return
        src, c, const_second = ec
        if not (const_second or const_first_ok):
            op = {"Sub": "-", "Div": "/"}[node.op]
            raise self.unsupported(node, f"constant {op} activations is not supported (activations {op} "
                                         f"a constant and activations {op} activations are)")
        self.emit(node, const_layer(c.shape), [src], const_params(c))

    def op_Add(self, node):
        self._elementwise(node, Add(), Bias, lambda c: {"bias": c})

    def op_Sub(self, node):
        self._elementwise(node, Sub(), Bias, lambda c: {"bias": -c}, const_first_ok=False)

    def op_Mul(self, node):
        self._elementwise(node, Mul(), Scale, lambda c: {"scale": c})

    def op_Div(self, node):
        self._elementwise(node, Div(), Scale, lambda c: {"scale": 1.0 / c}, const_first_ok=False)

    def op_Concat(self, node):
        ins = [self.activation(node, t) for t in node.inputs]
        rank = len(self.shape[ins[0]]) + 1
        axis = int(node.attr("axis"))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:
            raise self.unsupported(node, f"Concat along axis {node.attr('axis')} (only the channel "
                                         "axis 1 is supported)")
        self.emit(node, Concat(), ins)

    def op_Dropout(self, node):
        if len(node.outputs) > 1 and any(self.consumers.get(o) for o in node.outputs[1:] if o):
            raise self.unsupported(node, "Dropout's mask output is not supported")
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))
        self.info["dropped"].append(f"{node.name} (Dropout: identity at inference)")

    def op_Identity(self, node):
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))

    def op_Softmax(self, node):
        if node.outputs[0] != self.output:
            raise self.unsupported(node, "Softmax inside the network (only a Softmax producing the "
                                         "output is supported, and dropped)")
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))
        self.info["dropped"].append(f"{node.name} (Softmax at the output: the model returns scores)")

    def op_Pad(self, node):
        src = self._input4(node, node.inputs[0])
        mode = node.attr("mode", "constant")
        if mode != "constant":
            raise self.unsupported(node, f"Pad mode {mode!r} (only 'constant' is supported)")
        if self.opset is not None and self.opset < 11:
            pads, value = list(node.attr("pads")), float(node.attr("value", 0.0))
        else:
            pads = [int(v) for v in np.asarray(self.constant(node, 1, "pads")).reshape(-1)]
            value = 0.0
            if len(node.inputs) > 2 and node.inputs[2]:
                value = float(np.asarray(self.constant(node, 2, "constant_value")).reshape(-1)[0])
            if len(node.inputs) > 3 and node.inputs[3]:
                axes = [int(a) % 4 for a in np.asarray(self.constant(node, 3, "axes")).reshape(-1)]
                full = [0] * 8
                for j, ax in enumerate(axes):
                    full[ax], full[4 + ax] = pads[j], pads[len(axes) + j]
                pads = full
        if len(pads) != 8:
            raise self.unsupported(node, f"pads {pads} are not for an (N, C, H, W) tensor")
        if pads[0] or pads[1] or pads[4] or pads[5]:
            raise self.unsupported(node, f"padding the batch or channel axis (pads {pads})")
        p4 = (pads[2], pads[6], pads[3], pads[7])
        if min(p4) < 0:
            raise self.unsupported(node, f"negative pads (cropping) {pads}")
        nxt = self.sole_consumer(node.outputs[0])
        if value == 0.0 and nxt is not None and nxt.op == "Conv" and nxt.inputs[0] == node.outputs[0]:
            self.pending_pad[node.outputs[0]] = (src, p4)
            self.tensor[node.outputs[0]] = None
            self.info["folded"].append(f"{node.name} (Pad) into {nxt.name} (Conv)")
            return
        self.emit(node, Pad(p4, value), [src])

    def op_Shape(self, node):
        src = self.activation(node, node.inputs[0])
        # the batch size is unknown at import time; 0 is Reshape's "copy this dimension"
        shape = np.array((0,) + tuple(self.shape[src]), np.int64)
        start, end = node.attr("start", 0), node.attr("end", None)
        self.const[node.outputs[0]] = shape[start:end]


def preprocessing(channels, mean, std, scale):
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    m = np.zeros(channels) if mean is None else np.asarray(mean, np.float64)
    s = np.ones(channels) if std is None else np.asarray(std, np.float64)
    if m.ndim == 0:
        m = np.full(channels, float(m))
    if s.ndim == 0:
        s = np.full(channels, float(s))
    return (m * scale).astype(np.float32), (s * scale).astype(np.float32)


def check_arrays(model, label):
    """Every parameter and buffer finite, and each layer's own checks (e.g. batch norm's
    variances >= 0): a file with NaN weights would give NaN scores, never an error."""
    for table in (model.params, model.buffers):
        for k, v in table.items():
            if not np.isfinite(v).all():
                raise ONNXImportError(f"{label}: {k!r} (shape {v.shape}) has NaN or infinite values")
    for node in model.nodes:
        lay = node.layer
        try:
            lay.check_arrays({k: model.params[f"{node.name}.{k}"] for k in lay.param_shapes},
                             {k: model.buffers[f"{node.name}.{k}"] for k in lay.buffer_shapes})
        except ValueError as e:
            raise ONNXImportError(f"{label}: node {node.name!r}: {e}") from None
