"""The ONNX operators the importer turns into gradvis layers, and the patterns it
fuses (see :mod:`gradvis.io.onnx_import` for the list)."""
from __future__ import annotations

import math

import numpy as np

from ...nn import (Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Bias, Clip, Concat, Conv2d, Div, Flatten,
                   GlobalAvgPool, HardSigmoid, HardSwish, LeakyReLU, Linear, MaxPool2d, Mul, Pad, ReLU,
                   ReLU6, Scale, SiLU, Sigmoid, Sub, Tanh)
from ...nn.layernorm import LayerNorm
from ...nn.matmul import MatMul
from ...nn.pointwise import GELU, Abs, Erf, Exp, Neg, Pow, Sqrt
from ...nn.reduce import LogSoftmax, Reduce, Softmax
from ...nn.tensor import Reshape, Resize, Slice, Transpose
from .constants import slice_bounds
from .reader import ONNXImportError, UnsupportedOperatorError

__all__ = ["LayerOps", "SUPPORTED_OPS", "CONSTANT_INPUTS"]

SUPPORTED_OPS = (
    "Conv", "BatchNormalization", "LayerNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "Swish (alpha 1)", "Gelu", "Erf", "Pow (constant exponent)", "Sqrt", "Neg",
    "Abs", "Exp", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax",
    "Softmax", "LogSoftmax", "Gemm", "MatMul (by a constant)", "Flatten", "Reshape", "Transpose",
    "Squeeze", "Unsqueeze", "Slice", "Split", "Gather (constant indices)", "Resize", "Upsample", "Add",
    "Sub", "Mul", "Div", "Concat (channels)", "Dropout", "Pad", "Identity", "Cast (to float)",
)

_SQRT2 = math.sqrt(2.0)
# elementwise operators that commute with moving the channel axis
_UNARY = {"Relu", "Sigmoid", "Tanh", "Gelu", "Erf", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu",
          "Identity", "Dropout", "Sqrt", "Neg", "Abs", "Exp", "Pow"}
_BINARY = {"Add", "Sub", "Mul", "Div"}


# inputs that must be known at import time, by operator
CONSTANT_INPUTS = {
    "Conv": {1: "the weight", 2: "the bias"}, "Gemm": {1: "B (the weight)", 2: "C (the bias)"},
    "BatchNormalization": {1: "scale", 2: "bias", 3: "running mean", 4: "running variance"},
    "LayerNormalization": {1: "scale", 2: "bias"}, "Reshape": {1: "the target shape"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"}, "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {2: "scales", 3: "sizes"}, "Upsample": {1: "scales"}, "Split": {1: "split"},
    "Gather": {1: "the indices"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "ReduceMean": {1: "axes"},
    "ReduceSum": {1: "axes"}, "ReduceMax": {1: "axes"}, "Clip": {1: "the lower bound", 2: "the upper bound"},
    "Pow": {1: "the exponent"},
}


def _fmt(s):
    return f"(N, {', '.join(map(str, s))})"


class LayerOps:
    """Operator handlers ``op_<Type>(node)`` and the pattern finder, mixed into the importer."""

    # ------------------------------------------------------------------ patterns
    def find_fusions(self):
        """{node index: (kind, ...)} of the patterns fused into one layer, with the other
        nodes of each pattern added to ``self.skip``:

        - ``x * sigmoid(x)`` -> SiLU, ``x * hardsigmoid(x)`` (PyTorch's 1/6, 1/2) -> HardSwish;
        - ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (the TorchScript exporter's GELU) -> GELU;
        - channels-last regions: Transpose (0, 2, 3, 1), then only layer norms over the
          last axis, MatMuls by constants, elementwise ops, back through Transpose
          (0, 3, 1, 2) (ConvNeXt's LayerNorm2d and blocks) run channels-first: the
          layer norm over channels, the MatMuls as 1x1 convolutions, no transposes.
        """
        fused = {}
        self.nhwc = set()        # nodes of channels-last regions, imported channels-first
        self.nhwc_edges = set()  # the Transposes that bound those regions (imported as nothing)
        for n in self.nodes:
            if n.index not in self.live or self.is_static_node(n) or n.index in self.skip:
                continue
            if n.op in ("Sigmoid", "HardSigmoid"):
                if n.op == "HardSigmoid" and (np.float32(n.attr("alpha", 0.2)) != np.float32(1 / 6)
                                              or np.float32(n.attr("beta", 0.5)) != np.float32(0.5)):
                    continue
                mul = self.sole_consumer(n.outputs[0])
                if mul is not None and mul.op == "Mul" and sorted(mul.inputs) == sorted([n.inputs[0], n.outputs[0]]):
                    fused[n.index] = ("gate", mul)
                    self.skip.add(mul.index)
            elif n.op == "Erf":
                parts = self._erf_gelu(n)
                if parts is not None:
                    fused[n.index] = ("gelu",) + parts
                    self.skip.update(p.index for p in parts[1:])
            elif n.op == "Transpose" and list(n.attr("perm") or []) == [0, 2, 3, 1]:
                self._channels_last_region(n)
        return fused

    def _scalar_const(self, node, t):
        """The value of a one-element constant input t of ``node``, or None."""
        v = self.const.get(t)
        if v is None or np.size(v) != 1 or np.asarray(v).dtype.kind not in "fiu":
            return None
        return float(np.asarray(v).reshape(-1)[0])

    def _erf_gelu(self, erf):
        """(x tensor, div, add, mul, half) of ``half(mul(x, add(erf(div(x)), 1)))``, or None."""
        div = self.producer.get(erf.inputs[0])
        if div is None or div.op not in ("Div", "Mul") or self.sole_consumer(div.outputs[0]) is not erf:
            return None
        x, c = div.inputs[0], div.inputs[1]
        k = self._scalar_const(div, c)
        if k is None or not np.isclose(k if div.op == "Div" else 1 / k, _SQRT2, rtol=1e-6):
            return None
        add = self.sole_consumer(erf.outputs[0])
        if add is None or add.op != "Add":
            return None
        one = [t for t in add.inputs if t != erf.outputs[0]]
        if len(one) != 1 or self._scalar_const(add, one[0]) != 1.0:
            return None
        mul = self.sole_consumer(add.outputs[0])
        if mul is None or mul.op != "Mul" or sorted(mul.inputs) != sorted([x, add.outputs[0]]):
            return None
        half = self.sole_consumer(mul.outputs[0])
        if half is None or half.op != "Mul":
            return None
        h = [t for t in half.inputs if t != mul.outputs[0]]
        if len(h) != 1 or self._scalar_const(half, h[0]) != 0.5:
            return None
        return (x, div, add, mul, half)

    def _channels_last_region(self, t1):
        """Mark the region after Transpose ``t1`` (0, 2, 3, 1) if it can run channels-first."""
        region, exits, stack = set(), set(), [t1.outputs[0]]
        seen_t = set()
        while stack:
            t = stack.pop()
            if t in seen_t:
                continue
            seen_t.add(t)
            if t == self.output or t in self.other_outputs:
                return
            for r in self.consumers.get(t, []):
                if r.index not in self.live:
                    continue
                if r.op == "Transpose" and list(r.attr("perm") or []) == [0, 3, 1, 2]:
                    exits.add(r.index)
                    continue
                if not self._channels_last_ok(r):
                    return
                if r.index not in region:
                    region.add(r.index)
                    stack.extend(o for o in r.outputs[:1])
        if not exits:
            return
        # every non-constant input of a region node comes from the region (or t1)
        inside = {t1.outputs[0]} | {self.nodes[i].outputs[0] for i in region}
        for i in region:
            for t in self.nodes[i].inputs[:2 if self.nodes[i].op in _BINARY else 1]:
                if t and t not in self.static and t not in inside:
                    return
        for i in exits:
            if self.nodes[i].inputs[0] not in inside:
                return
        self.nhwc.update(region)
        self.nhwc_edges.update({t1.index} | exits)

    def _channels_last_ok(self, r):
        if r.op in _UNARY:
            if r.op == "Pow" and self._scalar_const(r, r.inputs[1] if len(r.inputs) > 1 else "") is None:
                return False
            return len([o for o in r.outputs[1:] if o and self.consumers.get(o)]) == 0
        if r.op in _BINARY:
            a, b = r.inputs[:2]
            for t in (a, b):
                if t in self.static:
                    c = self.const.get(t)
                    if c is None:
                        return False    # computed later: keep it simple
                    c = np.asarray(c)
                    if c.size != 1 and (c.ndim == 0 or any(d != 1 for d in c.shape[:-1]) or c.ndim > 4):
                        return False
            return True
        if r.op == "LayerNormalization":
            return int(r.attr("axis", -1)) in (-1, 3) and not any(self.consumers.get(o) for o in r.outputs[1:] if o)
        if r.op == "MatMul":
            w = self.const.get(r.inputs[1])
            return w is not None and np.ndim(w) == 2 and r.inputs[0] not in self.static
        return False

    def run_fused(self, node):
        kind = self.fused[node.index]
        if kind[0] == "gate":
            mul = kind[1]
            layer = SiLU() if node.op == "Sigmoid" else HardSwish()
            self.emit(node, layer, [self.activation(node, node.inputs[0])], out=mul.outputs[0])
            self.info["folded"].append(f"{mul.name} (Mul) and {node.name} ({node.op}) into one {layer.type}")
        elif kind[0] == "gelu":
            x, div, add, mul, half = kind[1:]
            self.emit(node, GELU(), [self.activation(node, x)], out=half.outputs[0])
            self.info["folded"].append(f"{div.name}, {node.name}, {add.name}, {mul.name}, {half.name} "
                                       "(x * 0.5 * (1 + erf(x / sqrt(2)))) into one GELU")

    def pass_transpose(self, node):
        """A Transpose at the edge of a channels-last region: its output is its input."""
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))
        self.info["folded"].append(f"{node.name} (Transpose {list(node.attr('perm'))}): the region it "
                                   "bounds runs channels-first")

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
            raise ONNXImportError(f"{node.where()}: expects (N, C, H, W) input, got {_fmt(self.shape[src])} "
                                  f"from {t!r}")
        return src

    def _rank(self, src):
        """Rank of the full (N, ...) tensor of gradvis tensor ``src``."""
        return len(self.shape[src]) + 1

    def _axes(self, node, axes, rank, what="axes"):
        """ONNX axes (possibly negative) of a rank-``rank`` tensor -> sorted axes >= 1."""
        out = []
        for a in axes:
            a = int(a)
            if not -rank <= a < rank:
                raise ONNXImportError(f"{node.where()}: {what} {list(axes)} out of range for a {rank}-D tensor")
            out.append(a % rank)
        if 0 in out:
            raise self.unsupported(node, f"{what} {list(axes)} include the batch axis 0 (each sample is "
                                         "computed on its own in gradvis)")
        return sorted(set(out))

    # ------------------------------------------------------------------ convolution and norms
    def op_Conv(self, node):
        extra = (0, 0, 0, 0)
        t = node.inputs[0]
        if t in self.pending_pad:
            src, extra = self.pending_pad.pop(t)
        else:
            src = self._input4(node, t)
        w = np.asarray(self.constant(node, 1, "the weight"))
        b = self.optional_constant(node, 2, "the bias")
        has_bias = b is not None
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
        b = np.zeros(w.shape[0]) if b is None else np.asarray(b, np.float64).reshape(-1)
        if b.shape != (w.shape[0],):
            raise ONNXImportError(f"{node.where()}: bias of shape {b.shape} for {w.shape[0]} output channels")
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
        c = np.asarray(self.const[other[0]])
        if c.dtype.kind not in "fiu":
            return None
        c = c.astype(np.float64)
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
            raise self.unsupported(node, f"batch norm of {_fmt(s)} inputs")
        layer = cls(s[0], eps=float(node.attr("epsilon", 1e-5)))
        self.emit(node, layer, [src], {"gamma": gamma, "beta": beta},
                  {"running_mean": mean, "running_var": var})

    def op_LayerNormalization(self, node):
        if any(self.consumers.get(o) for o in node.outputs[1:] if o):
            raise self.unsupported(node, "LayerNormalization's Mean / InvStdDev outputs are not supported")
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        eps = float(node.attr("epsilon", 1e-5))
        scale = np.asarray(self.constant(node, 1, "scale"), np.float64)
        bias = self.optional_constant(node, 2, "bias")
        bias = np.zeros(scale.shape) if bias is None else np.asarray(bias, np.float64)
        if node.index in self.nhwc:       # a channels-last layer norm over the last axis, run over channels
            c = self.shape[src][0]
            if scale.size != c or bias.size != c:
                raise ONNXImportError(f"{node.where()}: scale/bias of {scale.size}/{bias.size} values for "
                                      f"{c} channels")
            shape = (c,) + (1,) * (rank - 2)
            self.emit(node, LayerNorm((1,), shape, eps), [src],
                      {"weight": scale.reshape(shape), "bias": bias.reshape(shape)})
            return
        axis = int(node.attr("axis", -1))
        if not -rank <= axis < rank or axis % rank == 0:
            raise self.unsupported(node, f"LayerNormalization axis {axis} of a {rank}-D tensor (normalizing "
                                         "over the batch axis is not supported)")
        axis %= rank
        want = tuple(self.shape[src][axis - 1:])
        try:
            scale = np.broadcast_to(scale, want)
            bias = np.broadcast_to(bias, want)
        except ValueError:
            raise ONNXImportError(f"{node.where()}: scale {scale.shape} does not match the normalized "
                                  f"axes {want}") from None
        self.emit(node, LayerNorm(tuple(range(axis, rank)), want, eps), [src], {"weight": scale, "bias": bias})

    # ------------------------------------------------------------------ activations
    def _single(self, node, layer):
        self.emit(node, layer, [self.activation(node, node.inputs[0])])

    def op_Relu(self, node):
        self._single(node, ReLU())

    def op_LeakyRelu(self, node):
        self._single(node, LeakyReLU(float(node.attr("alpha", 0.01))))

    def op_Sigmoid(self, node):
        self._single(node, Sigmoid())

    def op_HardSigmoid(self, node):
        self._single(node, HardSigmoid(float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))))

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

    def op_Gelu(self, node):
        approx = node.attr("approximate", "none")
        if approx not in ("none", "tanh"):
            raise self.unsupported(node, f"Gelu approximate={approx!r}")
        self._single(node, GELU(approx))

    def op_Erf(self, node):
        self._single(node, Erf())

    def op_Sqrt(self, node):
        self._single(node, Sqrt())

    def op_Neg(self, node):
        self._single(node, Neg())

    def op_Abs(self, node):
        self._single(node, Abs())

    def op_Exp(self, node):
        self._single(node, Exp())

    def op_Pow(self, node):
        if node.inputs[0] in self.static:
            raise self.unsupported(node, "a constant raised to the power of activations is not supported "
                                         "(activations to a constant power are)")
        if node.inputs[1] not in self.const:
            raise self.not_constant(node, node.inputs[1], "the exponent")
        e = np.asarray(self.const[node.inputs[1]])
        if e.size != 1:
            raise self.unsupported(node, f"Pow with an exponent of shape {e.shape} (one number is supported)")
        self._single(node, Pow(float(e.reshape(-1)[0])))

    def op_Clip(self, node):
        if len(node.inputs) > 1:   # opset >= 11: min and max are optional inputs
            lo = self.optional_constant(node, 1, "the lower bound")
            hi = self.optional_constant(node, 2, "the upper bound")
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

    def op_Softmax(self, node, cls=Softmax):
        src = self.activation(node, node.inputs[0])
        if cls is Softmax and node.outputs[0] == self.output:
            self.alias(node, node.outputs[0], src)
            self.info["dropped"].append(f"{node.name} (Softmax at the output: the model returns scores)")
            return
        rank = self._rank(src)
        default = -1 if self.opset is None or self.opset >= 13 else 1
        axis = int(node.attr("axis", default)) % rank
        if self.opset is not None and self.opset < 13 and axis != rank - 1:
            # before opset 13 Softmax normalized over all axes from `axis` on, flattened
            raise self.unsupported(node, f"{node.op} over axes {axis}.. of a {rank}-D tensor (opset "
                                         f"{self.opset} semantics); re-export with opset >= 13")
        if axis == 0:
            raise self.unsupported(node, f"{node.op} over the batch axis")
        self.emit(node, cls(axis), [src])

    def op_LogSoftmax(self, node):
        self.op_Softmax(node, LogSoftmax)

    # ------------------------------------------------------------------ pooling and reductions
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

    def _reduce(self, node, op):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        if len(node.inputs) > 1 and node.inputs[1]:     # axes as an input (ReduceSum 13, others 18)
            axes = [int(a) for a in np.asarray(self.constant(node, 1, "axes")).reshape(-1)]
        else:
            axes = node.attr("axes")
            axes = [] if axes is None else [int(a) for a in axes]
        keep = bool(int(node.attr("keepdims", 1)))
        if not axes:
            if int(node.attr("noop_with_empty_axes", 0)):
                self.alias(node, node.outputs[0], src)
                return
            raise self.unsupported(node, f"{node.op} over all axes, the batch axis included")
        axes = self._axes(node, axes, rank)
        if op == "mean" and rank == 4 and axes == [2, 3]:    # global average pooling: the C++ kernel
            self.emit(node, GlobalAvgPool(keepdims=keep), [src])
            return
        self.emit(node, Reduce(op, axes, keep), [src])

    def op_ReduceMean(self, node):
        self._reduce(node, "mean")

    def op_ReduceSum(self, node):
        self._reduce(node, "sum")

    def op_ReduceMax(self, node):
        self._reduce(node, "max")

    # ------------------------------------------------------------------ shapes
    def op_Flatten(self, node):
        src = self.activation(node, node.inputs[0])
        s = self.shape[src]
        rank = len(s) + 1
        axis = int(node.attr("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:     # ONNX Flatten's output is 2-D: (d0 * ... * d_{axis-1}, the rest)
            raise self.unsupported(node, f"Flatten with axis={node.attr('axis')} merges the batch axis "
                                         "with others (only axis 1 keeps it)")
        if rank == 2:
            self.alias(node, node.outputs[0], src)
            return
        self.emit(node, Flatten(), [src])

    def _reshape_to(self, node, src, shape, out=None):
        shape = tuple(int(v) for v in shape)
        if shape == tuple(self.shape[src]):
            self.alias(node, out or node.outputs[0], src)
        elif len(shape) == 1:
            self.emit(node, Flatten(), [src], out=out)
        else:
            self.emit(node, Reshape(shape), [src], out=out)

    def op_Reshape(self, node):
        src = self.activation(node, node.inputs[0])
        target = [int(v) for v in np.asarray(self.constant(node, 1, "the target shape")).reshape(-1)]
        s = self.shape[src]
        size = int(np.prod(s, dtype=np.int64))
        allowzero = int(node.attr("allowzero", 0))
        if len(target) == 1 and target[0] in (-1, size * self.batch):
            self._flat_then_gather(node, src, target)   # the batch merged in: a batch-1 export
            return
        if not target or target[0] not in (0, -1, self.batch) or (target[0] == 0 and allowzero):
            raise self.unsupported(node, f"Reshape of {_fmt(s)} to {target} changes the batch axis "
                                         f"(its first entry must be 0, -1 or the exported batch size {self.batch})")
        rest = [s[i - 1] if (d == 0 and not allowzero and i - 1 < len(s)) else d
                for i, d in enumerate(target)][1:]
        if target[0] == -1 and -1 in rest:
            raise self.unsupported(node, f"Reshape of {_fmt(s)} to {target}: two inferred dimensions")
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
            if rest.count(-1) > 1 or known == 0 or size % known:
                raise ONNXImportError(f"{node.where()}: cannot reshape {_fmt(s)} to {target}")
            rest[rest.index(-1)] = size // known
        if any(d <= 0 for d in rest) or int(np.prod(rest, dtype=np.int64)) != size:
            raise ONNXImportError(f"{node.where()}: cannot reshape {_fmt(s)} ({size} values a sample) "
                                  f"to {target}")
        self._reshape_to(node, src, rest)

    def _flat_then_gather(self, node, src, target):
        """A Reshape to 1-D (batch and features merged, as a batch-1 export writes
        ``as_strided``) is supported when a Gather on axis 0 by indices (B, ...) that
        enumerate the values in order (a plain reshape) is its only reader."""
        g = self.sole_consumer(node.outputs[0])
        idx = self.const.get(g.inputs[1]) if g is not None and g.op == "Gather" else None
        size = int(np.prod(self.shape[src], dtype=np.int64))
        if (idx is None or int(g.attr("axis", 0)) != 0 or np.ndim(idx) < 2 or np.shape(idx)[0] != self.batch
                or not np.array_equal(np.asarray(idx).reshape(-1), np.arange(size * self.batch))):
            raise self.unsupported(node, f"Reshape of {_fmt(self.shape[src])} to {target} merges the batch "
                                         "axis into the features")
        self.skip.add(g.index)
        self.info["folded"].append(f"{node.name} (Reshape to 1-D) and {g.name} (Gather in order) into one Reshape")
        self._reshape_to(node, src, np.shape(idx)[1:], out=g.outputs[0])
        self.alias(node, node.outputs[0], None)

    def op_Squeeze(self, node):
        src = self.activation(node, node.inputs[0])
        s = self.shape[src]
        axes = self.optional_constant(node, 1, "axes") if len(node.inputs) > 1 else node.attr("axes")
        if axes is None:
            axes = [i + 1 for i, d in enumerate(s) if d == 1]
        axes = self._axes(node, np.asarray(axes).reshape(-1), len(s) + 1)
        if any(s[a - 1] != 1 for a in axes):
            raise ONNXImportError(f"{node.where()}: cannot squeeze axes {axes} of {_fmt(s)}")
        self._reshape_to(node, src, [d for i, d in enumerate(s) if i + 1 not in axes])

    def op_Unsqueeze(self, node):
        src = self.activation(node, node.inputs[0])
        s = list(self.shape[src])
        axes = self.optional_constant(node, 1, "axes") if len(node.inputs) > 1 else node.attr("axes")
        if axes is None:
            raise ONNXImportError(f"{node.where()}: Unsqueeze without axes")
        rank = len(s) + 1 + int(np.size(axes))
        full = ["N"] + s
        for a in sorted(int(a) % rank for a in np.asarray(axes).reshape(-1)):
            if a == 0:
                raise self.unsupported(node, "Unsqueeze before the batch axis")
            full.insert(a, 1)
        self._reshape_to(node, src, full[1:])

    def op_Transpose(self, node):
        if node.index in self.nhwc_edges:
            self.pass_transpose(node)
            return
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        perm = node.attr("perm")
        perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
        if sorted(perm) != list(range(rank)):
            raise ONNXImportError(f"{node.where()}: perm {perm} is not a permutation of {rank} axes")
        if perm[0] != 0:
            raise self.unsupported(node, f"Transpose {perm} moves the batch axis")
        if perm == list(range(rank)):
            self.alias(node, node.outputs[0], src)
            return
        self.emit(node, Transpose(perm), [src])

    def _slice_layer(self, node, src, axes, starts, ends, steps, out, name=None):
        """A Slice layer (or nothing, for a slice that keeps everything) for ONNX's
        clamped bounds on per-sample ``axes`` (>= 1)."""
        full = (self.batch,) + tuple(self.shape[src])
        keep = []
        for ax, s, e, st in zip(axes, starts, ends, steps):
            sl = slice_bounds(full[ax], s, e, st)
            if ax == 0:
                if sl.indices(full[0]) != (0, full[0], 1):
                    raise self.unsupported(node, "slicing the batch axis")
                continue
            if sl.indices(full[ax]) == (0, full[ax], 1):
                continue
            keep.append((ax, sl.start, sl.stop, sl.step))
        if not keep:
            self.alias(node, out, src)
            return
        ax, st, sp, sd = zip(*keep)
        self.emit(node, Slice(ax, st, sp, sd), [src], out=out, name=name)

    def op_Slice(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        if len(node.inputs) > 1:
            starts = np.asarray(self.constant(node, 1, "starts")).reshape(-1).tolist()
            ends = np.asarray(self.constant(node, 2, "ends")).reshape(-1).tolist()
            axes = self.optional_constant(node, 3, "axes")
            steps = self.optional_constant(node, 4, "steps")
        else:
            starts, ends = list(node.attr("starts")), list(node.attr("ends"))
            axes, steps = node.attr("axes"), None
        axes = list(range(len(starts))) if axes is None else np.asarray(axes).reshape(-1).tolist()
        steps = [1] * len(starts) if steps is None else np.asarray(steps).reshape(-1).tolist()
        if not len(axes) == len(starts) == len(ends) == len(steps):
            raise ONNXImportError(f"{node.where()}: starts, ends, axes and steps differ in length")
        axes = [int(a) % rank if -rank <= int(a) < rank else None for a in axes]
        if None in axes:
            raise ONNXImportError(f"{node.where()}: axes out of range for a {rank}-D tensor")
        self._slice_layer(node, src, axes, starts, ends, steps, node.outputs[0])

    def op_Split(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        axis = int(node.attr("axis", 0)) % rank
        n = (self.batch,) + tuple(self.shape[src])
        split = self.optional_constant(node, 1, "split") if len(node.inputs) > 1 else node.attr("split")
        k = len(node.outputs)
        if split is None:
            size = -(-n[axis] // int(node.attr("num_outputs", k)))
            split = [min(size, n[axis] - i * size) for i in range(k)]
        split = [int(v) for v in np.asarray(split).reshape(-1)]
        if len(split) != k or sum(split) != n[axis] or min(split) < 0:
            raise ONNXImportError(f"{node.where()}: split {split} of an axis of length {n[axis]} into {k} outputs")
        start = 0
        base = self.names[node.index]
        for j, (t, m) in enumerate(zip(node.outputs, split)):
            if t and self.readers(t) or t == self.output:
                self._slice_layer(node, src, [axis], [start], [start + m], [1], t,
                                  name=self.fresh_name(f"{base}.{j}") if j else base)
            start += m

    def op_Gather(self, node):
        src = self.activation(node, node.inputs[0])
        rank = self._rank(src)
        axis = int(node.attr("axis", 0)) % rank
        idx = np.asarray(self.constant(node, 1, "the indices")).astype(np.int64)
        if axis == 0:
            raise self.unsupported(node, "Gather along the batch axis")
        n = self.shape[src][axis - 1]
        flat = np.where(idx < 0, idx + n, idx).reshape(-1)
        if flat.size == 0 or flat.min() < 0 or flat.max() >= n:
            raise ONNXImportError(f"{node.where()}: indices out of range for an axis of length {n}")
        step = int(flat[1] - flat[0]) if flat.size > 1 else 1
        if step == 0 or not np.array_equal(flat, flat[0] + step * np.arange(flat.size)):
            raise self.unsupported(node, "Gather by indices that are not evenly spaced (a Slice)")
        stop = int(flat[-1]) + step
        keep = list(self.shape[src])
        keep[axis - 1] = flat.size
        out_shape = keep[:axis - 1] + list(idx.shape) + keep[axis:]
        if out_shape == keep:
            self._slice_layer(node, src, [axis], [int(flat[0])], [stop if stop >= 0 else -n - 1], [step],
                              node.outputs[0])
            return
        # a scalar index drops the axis: slice, then reshape
        tmp = node.outputs[0] + "#slice"
        self._slice_layer(node, src, [axis], [int(flat[0])], [stop if stop >= 0 else -n - 1], [step], tmp,
                          name=self.fresh_name(self.names[node.index] + ".slice"))
        self._reshape_to(node, self.tensor[tmp], out_shape)

    def op_Resize(self, node):
        src = self._input4(node, node.inputs[0])
        mode = node.attr("mode", "nearest")
        if mode not in ("nearest", "linear"):
            raise self.unsupported(node, f"Resize mode {mode!r} (nearest and linear are supported)")
        if int(node.attr("antialias", 0)):
            raise self.unsupported(node, "Resize with antialias=1")
        if node.op == "Upsample":
            coord, nearest = "asymmetric", "floor"
            scales = node.attr("scales") if len(node.inputs) < 2 else self.constant(node, 1, "scales")
            sizes = None
        else:
            coord = node.attr("coordinate_transformation_mode", "half_pixel")
            nearest = node.attr("nearest_mode", "round_prefer_floor")
            if self.opset is not None and self.opset < 11:
                scales, sizes = self.constant(node, 1, "scales"), None
            else:
                scales = self.optional_constant(node, 2, "scales")
                sizes = self.optional_constant(node, 3, "sizes")
            if node.attr("axes") is not None:
                raise self.unsupported(node, "Resize with an axes attribute")
        c, h, w = self.shape[src]
        if sizes is not None and np.size(sizes):
            out = [int(v) for v in np.asarray(sizes).reshape(-1)]
            if len(out) != 4 or out[1] != c:
                raise self.unsupported(node, f"Resize to sizes {out} (only H and W may change)")
            hw = tuple(out[2:])
        elif scales is not None and np.size(scales):
            sc = [float(v) for v in np.asarray(scales).reshape(-1)]
            if len(sc) != 4 or sc[0] != 1 or sc[1] != 1:
                raise self.unsupported(node, f"Resize by scales {sc} (only H and W may change)")
            hw = (int(math.floor(h * sc[2])), int(math.floor(w * sc[3])))
        else:
            raise ONNXImportError(f"{node.where()}: neither scales nor sizes are given")
        try:
            layer = Resize(hw, mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest)
        except ValueError as e:
            raise self.unsupported(node, str(e).replace("Resize: ", "")) from None
        self.emit(node, layer, [src])

    def op_Upsample(self, node):
        self.op_Resize(node)

    def op_Cast(self, node):
        from onnx import helper
        to = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attr("to"))))
        if to.kind != "f":
            raise self.unsupported(node, f"Cast of activations to {to} (only to floating point)")
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))

    # ------------------------------------------------------------------ matrix products
    def _linear(self, node, src, w, b):
        s = self.shape[src]
        if len(s) != 1:
            return self._matmul_axis(node, src, w, b, -1)
        if w.shape[0] != s[0]:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight maps {w.shape[0]} features to "
                                  f"{w.shape[1]}, the input {src!r} has {s[0]}")
        out, b = self._fold_bias(node, w.shape[1], b)
        params = {"weight": w} if b is None else {"weight": w, "bias": b}
        name = self.emit(node, Linear(w.shape[0], w.shape[1], bias=b is not None), [src], params, out=out)
        self._alias_chain(node.outputs[0], out, name)

    def _fold_bias(self, node, m, b):
        """(output tensor, bias) with a following Add of a (m,) constant folded in."""
        out = node.outputs[0]
        nxt = self.sole_consumer(out)
        if nxt is not None and nxt.op == "Add":
            cb = self._channel_constant(nxt, out, m, spatial=False)
            if cb is not None:
                b = cb if b is None else b + cb
                self.skip.add(nxt.index)
                self.info["folded"].append(f"{nxt.name} (Add of a constant) into {node.name} ({node.op})")
                out = nxt.outputs[0]
        return out, b

    def _matmul_axis(self, node, src, w, b, axis):
        """Activations (N, ..., K at axis, ...) times the constant (K, M) along ``axis``."""
        s = self.shape[src]
        rank = len(s) + 1
        a = axis % rank
        if s[a - 1] != w.shape[0]:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight {w.shape} on axis {axis} of "
                                  f"{_fmt(s)}")
        out, b = self._fold_bias(node, w.shape[1], b) if a == rank - 1 else (node.outputs[0], b)
        params = {"weight": w} if b is None else {"weight": w, "bias": b}
        name = self.emit(node, MatMul(w.shape[0], w.shape[1], axis=axis, bias=b is not None), [src], params,
                         out=out)
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
        c = self.optional_constant(node, 2, "C (the bias)")
        if c is not None:
            c = np.asarray(c, np.float64) * float(node.attr("beta", 1.0))
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
        a, b = node.inputs[:2]
        if a in self.static and b in self.static:
            raise self.unsupported(node, "MatMul of two constants")   # evaluated earlier; unreachable
        if a not in self.static and b not in self.static:
            raise self.unsupported(node, "MatMul of two activation tensors (one operand must be a constant)")
        if a in self.static:      # W (M, K) @ x (N, ..., K, L): along the second-to-last axis
            w = np.asarray(self.constant(node, 0, "the constant operand"))
            src = self.activation(node, b)
            if w.ndim != 2 or self._rank(src) < 3:
                raise self.unsupported(node, f"MatMul of a {w.ndim}-D constant by a {self._rank(src)}-D "
                                             "activation tensor")
            self._matmul_axis(node, src, w.T, None, -2)
            return
        src = self.activation(node, a)
        w = np.asarray(self.constant(node, 1, "the weight"))
        if w.ndim != 2:
            raise self.unsupported(node, f"MatMul with a {w.ndim}-D weight {w.shape}")
        if node.index in self.nhwc:     # channels-last MatMul, run as a 1x1 convolution over channels
            c = self.shape[src][0]
            if w.shape[0] != c or len(self.shape[src]) != 3:
                raise ONNXImportError(f"{node.where()}: weight {w.shape} for {_fmt(self.shape[src])}")
            out, bias = self._fold_bias(node, w.shape[1], None)
            layer = Conv2d(c, w.shape[1], 1, bias=bias is not None)
            params = {"weight": np.ascontiguousarray(w.T)[:, :, None, None]}
            if bias is not None:
                params["bias"] = bias
            name = self.emit(node, layer, [src], params, out=out)
            self._alias_chain(node.outputs[0], out, name)
            return
        self._linear(node, src, w, None)

    # ------------------------------------------------------------------ elementwise
    def _elementwise_const(self, node):
        """(gradvis source, constant reshaped per sample, constant is 2nd operand) or None."""
        a, b = node.inputs[:2]
        if (a in self.static) == (b in self.static):
            return None
        ci = 1 if b in self.static else 0
        act = node.inputs[1 - ci]
        c = np.asarray(self.constant(node, ci, "the constant operand"), np.float64)
        src = self.activation(node, act)
        if node.index in self.nhwc and c.size != 1:   # (..., C) channels-last -> (C, 1, 1)
            c = c.reshape(-1).reshape((-1,) + (1,) * (len(self.shape[src]) - 1))
        rank = len(self.shape[src]) + 1
        if c.ndim == rank:
            if c.shape[0] != 1:
                raise ONNXImportError(f"{node.where()}: constant of shape {c.shape} varies over the "
                                      "batch axis")
            c = c[0]
        elif c.ndim > rank:
            raise ONNXImportError(f"{node.where()}: constant of shape {c.shape} has more axes than the "
                                  f"input {_fmt(self.shape[src])}")
        return src, c, ci == 1

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
            cv = self.optional_constant(node, 2, "constant_value")
            if cv is not None:
                value = float(np.asarray(cv).reshape(-1)[0])
            ax = self.optional_constant(node, 3, "axes")
            if ax is not None:
                axes = [int(a) % 4 for a in np.asarray(ax).reshape(-1)]
                full = [0] * 8
                for j, a in enumerate(axes):
                    full[a], full[4 + a] = pads[j], pads[len(axes) + j]
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
