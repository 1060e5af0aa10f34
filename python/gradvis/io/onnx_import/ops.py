"""The ONNX operators the importer turns into gradvis layers: convolutions, norms,
activations, matrix products and elementwise arithmetic (see
:mod:`gradvis.io.onnx_import` for what each becomes); the shape operators are in
:mod:`.shapes`, pooling, reductions and softmax in :mod:`.reductions`, conditions in
:mod:`.masks`, the fused patterns in :mod:`.patterns`."""
from __future__ import annotations

import math

import numpy as np

from ...nn import (Add, BatchNorm1d, BatchNorm2d, Bias, Clip, Concat, Conv2d, Div, HardSigmoid, HardSwish,
                   LeakyReLU, Linear, Maximum, Minimum, Mul, Pad, PReLU, ReLU, ReLU6, Scale, SiLU, Sigmoid, Sub,
                   Tanh)
from ...nn.layernorm import LayerNorm
from ...nn.matmul import BatchMatMul, MatMul
from ...nn.pointwise import (CELU, ELU, GELU, SELU, Abs, Erf, Exp, Log, Mish, Neg, Pow, Reciprocal, Softplus,
                             Softsign, Sqrt, ThresholdedReLU)
from ...nn.tensor import Reshape
from .masks import MaskOps
from .patterns import Patterns
from .reader import ONNXImportError, UnsupportedOperatorError
from .reductions import ReduceOps
from .shapes import ShapeOps

__all__ = ["LayerOps", "SUPPORTED_OPS", "CONSTANT_INPUTS"]

SUPPORTED_OPS = (
    "Conv", "BatchNormalization", "LayerNormalization", "InstanceNormalization (also GroupNorm's export)",
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Swish (alpha 1)", "Gelu", "Erf",
    "Pow (constant exponent)", "Sqrt", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "ThresholdedRelu", "PRelu (constant slope)",
    "Max and Min (two tensors, or a tensor and a constant scalar)", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1",
    "ReduceL2", "ReduceSumSquare",
    "Softmax", "LogSoftmax", "Gemm", "MatMul", "Flatten", "Reshape", "Transpose",
    "Squeeze", "Unsqueeze", "Slice", "Split", "Tile", "Expand", "Gather (constant indices)",
    "GatherND (constant indices)", "Resize", "Upsample", "Add", "Sub", "Mul", "Div", "Where",
    "Greater, Less, GreaterOrEqual, LessOrEqual, Equal, Not, And, Or (conditions)", "Concat", "Dropout",
    "Pad (constant, reflect, edge, wrap)", "Identity", "Cast (to float)",
)



# inputs that must be known at import time, by operator
CONSTANT_INPUTS = {
    "Conv": {1: "the weight", 2: "the bias"}, "Gemm": {1: "B (the weight)", 2: "C (the bias)"},
    "BatchNormalization": {1: "scale", 2: "bias", 3: "running mean", 4: "running variance"},
    "LayerNormalization": {1: "scale", 2: "bias"}, "InstanceNormalization": {1: "scale", 2: "B (the bias)"},
    "Reshape": {1: "the target shape"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"}, "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {2: "scales", 3: "sizes"}, "Tile": {1: "repeats"}, "Expand": {1: "the shape"},
    "Upsample": {1: "scales"}, "Split": {1: "split"},
    "Gather": {1: "the indices"}, "GatherND": {1: "the indices"},
    "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "ReduceMean": {1: "axes"},
    "ReduceSum": {1: "axes"}, "ReduceMax": {1: "axes"}, "ReduceMin": {1: "axes"},
    "Clip": {1: "the lower bound", 2: "the upper bound"}, "Pow": {1: "the exponent"}, "PRelu": {1: "the slope"},
}


def _fmt(s):
    return f"(N, {', '.join(map(str, s))})"


class LayerOps(Patterns, ShapeOps, MaskOps, ReduceOps):
    """Operator handlers ``op_<Type>(node)`` (those of the shape operators in
    :mod:`.shapes`) and the pattern finder (:mod:`.patterns`), mixed into the importer."""

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
        w = np.asarray(self.constant(node, 1, "the weight"))
        if t not in self.pending_pad and w.ndim == 3:
            return self._conv1d(node, w)
        if t in self.pending_pad:
            src, extra = self.pending_pad.pop(t)
        else:
            src = self._input4(node, t)
        b = self.optional_constant(node, 2, "the bias")
        has_bias = b is not None
        if w.ndim != 4:
            raise self.unsupported(node, f"only 2-D convolutions are supported (weight shape {w.shape})")
        c = self.shape[src][0]
        groups, kernel = self._conv_weight(node, w, c, src)
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

    def _conv_weight(self, node, w, c, src):
        """(groups, kernel) of a Conv node whose weight ``w`` meets ``c`` input channels
        of ``src``, checked."""
        groups = int(node.attr("group", 1))
        if w.shape[1] * groups != c:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight {w.shape} with group={groups} "
                                  f"expects {w.shape[1] * groups} input channels, the input {src!r} has {c}")
        kernel = tuple(node.attr("kernel_shape", w.shape[2:]))
        if kernel != w.shape[2:]:
            raise ONNXImportError(f"{node.where()}: kernel_shape {kernel} disagrees with the weight {w.shape}")
        return groups, kernel

    def _conv1d(self, node, w):
        """A 1-D Conv on (N, C, L) (ECA-Net's channel attention, audio front ends): a
        Conv2d with a (1, k) kernel between Reshapes to (N, C, 1, L) and back."""
        src = self.activation(node, node.inputs[0])
        if len(self.shape[src]) != 2:
            raise ONNXImportError(f"{node.where()}: a 1-D convolution expects (N, C, L) input, got "
                                  f"{_fmt(self.shape[src])} from {node.inputs[0]!r}")
        c, length = self.shape[src]
        groups, k = self._conv_weight(node, w, c, src)
        s, d, p = self._window1d(node, k[0], length, "convolution")
        b = self.optional_constant(node, 2, "the bias")
        params = {"weight": np.asarray(w)[:, :, None, :]}
        if b is not None:
            params["bias"] = np.asarray(b, np.float64).reshape(-1)
        layer = Conv2d(c, w.shape[0], (1, k[0]), stride=(1, s), padding=(0, 0, p[0], p[1]),
                       dilation=(1, d), groups=groups, bias=b is not None)
        self._emit_on_1d(node, src, layer, params)

    def _emit_on_1d(self, node, src, layer, params=None, buffers=None):
        """Emit the 2-D ``layer`` for ``node`` on the (N, C, L) tensor ``src``: on
        (N, C, 1, L), between two Reshapes (a 1-D Conv, pool or batch norm)."""
        c, length = self.shape[src]
        base = self.names[node.index]
        wide = node.outputs[0] + "#2d"
        self.emit(node, Reshape((c, 1, length)), [src], out=wide + "in", name=self.fresh_name(base + ".to2d"))
        out = self.emit(node, layer, [self.tensor[wide + "in"]], params, buffers, out=wide)
        f, _, ol = self.shape[out]
        self.emit(node, Reshape((f, ol)), [out], name=self.fresh_name(base + ".to1d"))

    def _window1d(self, node, k, length, what):
        """(stride, dilation, (left, right) pads) of a 1-D Conv or pool of window k over
        ``length`` values."""
        s, d = (tuple(node.attr(a, [1])) for a in ("strides", "dilations"))
        if len(s) != 1 or len(d) != 1:
            raise self.unsupported(node, f"strides {s} or dilations {d} of a 1-D {what}")
        auto = node.attr("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            total = max((-(-length // s[0]) - 1) * s[0] + d[0] * (k - 1) + 1 - length, 0)
            small = total // 2
            p = (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
        elif auto == "VALID":
            p = (0, 0)
        elif auto in ("NOTSET", ""):
            p = tuple(int(v) for v in node.attr("pads", [0, 0]))
        else:
            raise self.unsupported(node, f"auto_pad {auto!r} is not supported")
        if len(p) != 2 or min(p) < 0:
            raise self.unsupported(node, f"pads {p} of a 1-D {what}")
        return int(s[0]), int(d[0]), (int(p[0]), int(p[1]))

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
        cls = BatchNorm2d if len(s) in (2, 3) else BatchNorm1d if len(s) == 1 else None
        if cls is None:
            raise self.unsupported(node, f"batch norm of {_fmt(s)} inputs")
        layer = cls(s[0], eps=float(node.attr("epsilon", 1e-5)))
        params, buffers = {"gamma": gamma, "beta": beta}, {"running_mean": mean, "running_var": var}
        if len(s) == 2:      # (N, C, L): BatchNorm1d over a sequence (NextViT's attention)
            self._emit_on_1d(node, src, layer, params, buffers)
        else:
            self.emit(node, layer, [src], params, buffers)

    def op_InstanceNormalization(self, node):
        """Normalization over the axes after the channels, per sample and channel, with a
        per-channel scale and bias (InstanceNorm2d; GroupNorm exports it between two
        Reshapes to (N, groups, -1) and back): a LayerNorm over those axes whose weight
        and bias vary along the channels."""
        src = self.activation(node, node.inputs[0])
        s = self.shape[src]
        if len(s) < 2:
            raise self.unsupported(node, f"InstanceNormalization of a {len(s) + 1}-D tensor (3-D or more are "
                                         "supported)")
        eps = float(node.attr("epsilon", 1e-5))
        c = s[0]
        scale = np.asarray(self.constant(node, 1, "scale"), np.float64)
        bias = np.asarray(self.constant(node, 2, "B (the bias)"), np.float64)
        if scale.size != c or bias.size != c:
            raise ONNXImportError(f"{node.where()}: scale/bias of {scale.size}/{bias.size} values for {c} channels")
        shape = (c,) + (1,) * (len(s) - 1)
        self.emit(node, LayerNorm(tuple(range(2, len(s) + 1)), shape, eps), [src],
                  {"weight": scale.reshape(shape), "bias": bias.reshape(shape)})

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

    def op_Log(self, node):
        self._single(node, Log())

    def op_Reciprocal(self, node):
        self._single(node, Reciprocal())

    def op_Elu(self, node):
        self._single(node, ELU(float(node.attr("alpha", 1.0))))

    def op_Selu(self, node):
        # ONNX's defaults are PyTorch's constants rounded to float32: those, unrounded
        f32 = np.float32
        alpha, gamma = float(node.attr("alpha", SELU.ALPHA)), float(node.attr("gamma", SELU.GAMMA))
        if f32(alpha) == f32(SELU.ALPHA):
            alpha = SELU.ALPHA
        if f32(gamma) == f32(SELU.GAMMA):
            gamma = SELU.GAMMA
        self._single(node, SELU(alpha, gamma))

    def op_Celu(self, node):
        self._single(node, CELU(float(node.attr("alpha", 1.0))))

    def op_Softplus(self, node):
        self._single(node, Softplus())

    def op_Softsign(self, node):
        self._single(node, Softsign())

    def op_Mish(self, node):
        self._single(node, Mish())

    def op_ThresholdedRelu(self, node):
        self._single(node, ThresholdedReLU(float(node.attr("alpha", 1.0))))

    def op_PRelu(self, node):
        src = self.activation(node, node.inputs[0])
        slope = np.asarray(self.constant(node, 1, "the slope"), np.float64)
        rank = len(self.shape[src]) + 1
        shape = slope.shape
        if len(shape) == rank:          # a leading batch axis of 1
            if shape[0] != 1:
                raise self.unsupported(node, f"PRelu with a slope {shape} that varies over the batch axis")
            shape = shape[1:]
        elif len(shape) > rank:
            raise ONNXImportError(f"{node.where()}: slope {slope.shape} has more axes than the input "
                                  f"{_fmt(self.shape[src])}")
        shape = shape or (1,)
        layer = PReLU(shape)
        try:
            layer.output_shape([self.shape[src]])
        except ValueError:
            raise ONNXImportError(f"{node.where()}: slope {slope.shape} does not broadcast to the input "
                                  f"{_fmt(self.shape[src])}") from None
        self.emit(node, layer, [src], {"slope": slope.reshape(shape)})

    def _extremum(self, node, cls):
        ins = [t for t in node.inputs if t]
        if len(ins) == 1:
            self.alias(node, node.outputs[0], self.activation(node, ins[0]))
            return
        if len(ins) != 2:
            raise self.unsupported(node, f"{node.op} of {len(ins)} inputs (two are supported)")
        const = [t in self.static for t in ins]
        if not any(const):
            self.emit(node, cls(), [self.activation(node, t) for t in ins])
            return
        src = self.activation(node, ins[const.index(False)])
        c = np.asarray(self.constant(node, const.index(True), "the constant operand"), np.float64)
        if c.size != 1 and not (c.size and (c == c.reshape(-1)[0]).all()):   # (torch.zeros_like(x) is one value)
            raise self.unsupported(node, f"{node.op} of activations and a constant of shape {c.shape} that "
                                         "varies (a constant scalar is supported)")
        c = float(c.reshape(-1)[0])
        self.emit(node, Clip(c, None) if cls is Maximum else Clip(None, c), [src])

    def op_Max(self, node):
        self._extremum(node, Maximum)

    def op_Min(self, node):
        self._extremum(node, Minimum)

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
        # min > max: every value becomes max (ONNX's Clip, PyTorch's clamp), with no
        # gradient; Clip(max, max) gives both (its gradient needs min < x < max)
        lo = min(lo, hi)
        if lo == 0.0 and hi == 6.0:
            layer = ReLU6()
        elif lo == 0.0 and math.isinf(hi):
            layer = ReLU()
        else:
            layer = Clip(None if math.isinf(lo) else lo, None if math.isinf(hi) else hi)
        self._single(node, layer)

    # ------------------------------------------------------------------ matrix products
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

    def _dense(self, node, src, w, b, axis=-1):
        """Activations (N, ..., K at axis, ...) times the constant (K, M) along ``axis``
        (and + b): a :class:`Linear` on (N, K), else a :class:`MatMul`; both hold the
        weight (K, M) as it multiplies. A following Add of an (M,) constant on the last
        axis becomes the bias."""
        s = self.shape[src]
        rank = len(s) + 1
        a = axis % rank
        if s[a - 1] != w.shape[0]:
            raise ONNXImportError(f"{node.where()}: shape mismatch: weight {w.shape} on axis {axis} of "
                                  f"{_fmt(s)} (the input {src!r})")
        out, b = self._fold_bias(node, w.shape[1], b) if a == rank - 1 else (node.outputs[0], b)
        params = {"weight": w} if b is None else {"weight": w, "bias": b}
        layer = (Linear(w.shape[0], w.shape[1], bias=b is not None) if rank == 2 else
                 MatMul(w.shape[0], w.shape[1], axis=axis, bias=b is not None))
        name = self.emit(node, layer, [src], params, out=out)
        self._alias_chain(node.outputs[0], out, name)

    def op_Gemm(self, node):
        if node.inputs[0] in self.static:
            raise self.unsupported(node, "Gemm whose A is a constant (the activations must be A)")
        if int(node.attr("transA", 0)):
            src = self.transposed.get(node.inputs[0])
            if src is None:
                raise self.unsupported(node, "Gemm with transA=1 on activations that are not the transpose of "
                                             "an (N, D) tensor (A^T would mix the batch into the features)")
        else:
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
        self._dense(node, src, w, b)

    def op_MatMul(self, node):
        a, b = node.inputs[:2]
        if a in self.static and b in self.static:
            raise self.unsupported(node, "MatMul of two constants")   # evaluated earlier; unreachable
        if a not in self.static and b not in self.static:
            sa, sb = self.activation(node, a), self.activation(node, b)
            if len(self.shape[sa]) != len(self.shape[sb]) or len(self.shape[sa]) < 2:
                raise self.unsupported(node, f"MatMul of activations {_fmt(self.shape[sa])} and "
                                             f"{_fmt(self.shape[sb])} (supported: as many axes, at least 3)")
            self.emit(node, BatchMatMul(), [sa, sb])
            return
        if a in self.static:      # W (M, K) @ x (N, ..., K, L): along the second-to-last axis
            w = np.asarray(self.constant(node, 0, "the constant operand"))
            src = self.activation(node, b)
            if w.ndim != 2 or self._rank(src) < 3:
                raise self.unsupported(node, f"MatMul of a {w.ndim}-D constant by a {self._rank(src)}-D "
                                             "activation tensor")
            self._dense(node, src, w.T, None, -2)
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
        self._dense(node, src, w, None)

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
            c = self.one_sample(node, c, "constant")
        elif c.ndim > rank:
            raise ONNXImportError(f"{node.where()}: constant of shape {c.shape} has more axes than the "
                                  f"input {_fmt(self.shape[src])}")
        return src, c, ci == 1

    def _elementwise(self, node, layer, const_layer, const_params, const_first_ok=True):
        """Add/Sub/Mul/Div: of two activation tensors ``layer`` (broadcasting); with one
        constant operand c, ``const_layer`` with the parameters ``const_params(c)``;
        c - x and c / x (``const_first_ok`` False) as Neg then Bias(c), Reciprocal then
        Scale(c)."""
        ec = self._elementwise_const(node)
        if ec is None:
            self.emit(node, layer, [self.activation(node, t) for t in node.inputs])
            return
        src, c, const_second = ec
        if not (const_second or const_first_ok):
            first, then, params = ((Neg(), Bias(c.shape), {"bias": c}) if node.op == "Sub" else
                                   (Reciprocal(), Scale(c.shape), {"scale": c}))
            tmp = node.outputs[0] + "#" + first.type.lower()
            self.emit(node, first, [src], out=tmp,
                      name=self.fresh_name(f"{self.names[node.index]}.{first.type.lower()}"))
            self.emit(node, then, [self.tensor[tmp]], params)
            return
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
        """Concat of activations, some parts possibly constants the same for every
        sample (a class token expanded to the batch): parameters of the layer."""
        acts = [t for t in node.inputs if t not in self.static]
        if not acts:
            raise self.unsupported(node, "Concat of constants only")    # evaluated earlier; unreachable
        ins = [self.activation(node, t) for t in acts]
        rank = len(self.shape[ins[0]]) + 1
        axis = int(node.attr("axis"))
        if not -rank <= axis < rank:
            raise ONNXImportError(f"{node.where()}: axis {axis} out of range for {rank}-D inputs")
        axis %= rank
        if axis == 0:
            raise self.unsupported(node, "Concat along the batch axis 0")
        consts, params = {}, {}
        for k, t in enumerate(node.inputs):
            if t in self.static:
                c = np.asarray(self.constant(node, k, f"input {k}"), np.float64)
                if c.ndim != rank:
                    raise ONNXImportError(f"{node.where()}: constant input {t!r} of shape {c.shape} for "
                                          f"{rank}-D activations")
                c = self.one_sample(node, c, f"constant input {t!r}")
                consts[k], params[f"const{k}"] = c.shape, c
        self.emit(node, Concat(axis, consts), ins, params)

    def op_Where(self, node):
        """Where(constant condition, X, Y) with one of X, Y activations and the other a
        constant c (PyTorch's masked_fill): x * mask + c * (1 - mask), a Scale by the
        0/1 mask, then a Bias where c is not 0. With both activations: a Select on the
        constant mask (:meth:`MaskOps.where_on_constant_condition`). A condition
        computed from the activations: :meth:`MaskOps.where_on_activations`."""
        if node.inputs[0] not in self.static:
            self.where_on_activations(node)
            return
        cond = np.asarray(self.constant(node, 0, "the condition")).astype(bool)
        xs = [t in self.static for t in node.inputs[1:3]]
        if xs[0] and xs[1]:
            raise self.unsupported(node, "Where with a constant condition and two constant branches")
        if not xs[0] and not xs[1]:
            self.where_on_constant_condition(node, cond)
            return
        ai = 1 if not xs[0] else 2
        src = self.activation(node, node.inputs[ai])
        c = np.asarray(self.constant(node, 3 - ai, "the constant branch"), np.float64)
        keep = cond if ai == 1 else ~cond          # where the activations are kept
        s = self.shape[src]
        rank = len(s) + 1
        try:
            full = np.broadcast_shapes((1,) + tuple(s), keep.shape, c.shape)
        except ValueError:
            raise ONNXImportError(f"{node.where()}: condition {cond.shape}, constant {c.shape} and "
                                  f"activations {_fmt(s)} do not broadcast") from None
        if full != (1,) + tuple(s):
            raise self.unsupported(node, f"Where whose condition {cond.shape} or constant {c.shape} enlarges "
                                         f"the activations {_fmt(s)}")
        small = np.broadcast_shapes(keep.shape, c.shape)      # the parameters' shape, per sample
        small = small[1:] if len(small) == rank else small
        mask = np.broadcast_to(keep, small).astype(np.float64)
        fill = np.broadcast_to(c, small) * (1.0 - mask)
        if not fill.any():
            self.emit(node, Scale(mask.shape), [src], {"scale": mask})
            return
        tmp = node.outputs[0] + "#mask"
        self.emit(node, Scale(mask.shape), [src], {"scale": mask}, out=tmp,
                  name=self.fresh_name(self.names[node.index] + ".mask"))
        self.emit(node, Bias(fill.shape), [self.tensor[tmp]], {"bias": fill})

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
        if mode not in Pad.MODES:
            raise self.unsupported(node, f"Pad mode {mode!r} (supported: {', '.join(Pad.MODES)})")
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
            # negative pads crop (NASNet's one-pixel shift: F.pad(x, (-1, 1, -1, 1))):
            # a Slice of the cropped sides, then the padding of the others
            if mode != "constant":
                raise self.unsupported(node, f"negative pads (cropping) {pads} in mode {mode!r}")
            h, w = self.shape[src][1:]
            t, b, l, r = (max(-v, 0) for v in p4)
            if t + b >= h or l + r >= w:
                raise ONNXImportError(f"{node.where()}: pads {pads} crop all of the {h}x{w} input")
            p4 = tuple(max(v, 0) for v in p4)
            cut = node.outputs[0] + ("#crop" if any(p4) else "")
            self._slice_layer(node, src, [2, 3], [t, l], [h - b, w - r], [1, 1], cut,
                              name=self.fresh_name(self.names[node.index] + ".crop") if any(p4) else None)
            if not any(p4):
                return
            src = self.tensor[cut]
        nxt = self.sole_consumer(node.outputs[0])
        if mode == "constant" and value == 0.0 and nxt is not None and nxt.op == "Conv" and \
                nxt.inputs[0] == node.outputs[0]:
            self.pending_pad[node.outputs[0]] = (src, p4)
            self.tensor[node.outputs[0]] = None
            self.info["folded"].append(f"{node.name} (Pad) into {nxt.name} (Conv)")
            return
        layer = Pad(p4, value if mode == "constant" else 0.0, mode)
        try:
            layer.output_shape([self.shape[src]])
        except ValueError as e:
            raise ONNXImportError(f"{node.where()}: {e}") from None
        self.emit(node, layer, [src])
