"""Random small CNNs, as JSON-able specs, for differential tests of the ONNX import.

``random_case(seed)`` draws a *case* from ``numpy.random.default_rng(seed)`` and nothing
else: an input shape (C, H, W), a list of *blocks*, the exporter (the TorchScript-based
``dynamo=False`` or the torch.export-based ``dynamo=True``) and its opset, the batch of the
export and the (other) batch of the run, the convolution algorithm and the seed of the
input. ``build(case)`` turns the blocks into a ``torch.nn.Module`` in eval mode.

A block is a dict whose ``"t"`` names its kind. Blocks with weights carry their own
``"seed"``, so a case written out as JSON rebuilds the same network, and removing or
editing one block by hand leaves the others' weights alone. The kinds:

- ``conv``: Conv2d with square, rectangular and 1xk kernels, stride and dilation (also
  different along H and W), explicit, "half" or ``padding='same'`` padding, the reflect,
  replicate and circular padding modes, an F.pad in front (constant, reflect, replicate),
  groups (plain, depthwise with channel multiplier 1 or 2, grouped), with or without bias;
  usually followed by ``bn`` (BatchNorm2d in eval mode: running statistics drawn at random,
  affine or not, so the importer's batch-norm folding meets every conv shape) and ``act``.
- ``act``: the torch.nn activations (ReLU ... Mish, PReLU with one or C slopes, clamps);
  ``fn``: formulas written with torch ops (x * sigmoid(x), 1 / (1 + x^2), where(x > 0, ...),
  minimum, exp, log, sqrt, RMS and instance normalisation by hand, ...), which reach the
  importer as chains of ONNX elementwise and reduce nodes instead of one named operator.
- graph shapes: ``res`` (a residual add, sub or mul, operands in either order, with a
  strided projection shortcut), ``cat`` (inception-like branches, a max-pool branch, the
  identity), ``se`` and ``cbam`` (channel and spatial gates), ``mm`` (elementwise max/min of
  two branches, one possibly pooled to (N, C, 1, 1), and of a constant), ``reduce`` (a
  mean/amax/amin/sum over some axes, broadcast back with +, -, *, /), ``chunk`` (the two
  channel halves combined: GLU, +, *, max).
- layout and resampling: max/avg ``pool`` (ceil mode, count_include_pad, dilation),
  adaptive ``apool``, ``up`` (nearest, bilinear, bicubic; scale or size; align_corners),
  ``shuffle`` (channel shuffle), ``unshuffle`` (PixelUnshuffle, also spelled out with
  view/permute), ``transpose`` (H and W), ``slice`` (channels, or strided rows and columns),
  ``pad``, ``softmax`` (softmax or log-softmax over channels or width), ``scale`` (a
  per-channel affine of constants), ``ln`` (channels-last LayerNorm with an MLP, a layer
  scale and a residual, as in ConvNeXt), ``gn`` (GroupNorm), ``dropout`` (identity in eval);
- ``head``: global average/max/amax/amin pooling or a flatten, then Linear layers (with a
  hidden layer and dropout or not): the output is (N, classes) instead of a feature map.

The generator keeps out what the import cannot be asked to do: networks whose ONNX
files are inconsistent (a ceil-mode pool whose last window starts in the padding, which
the exporters' shape inference counts and PyTorch drops; adaptive pooling to a size that
does not divide the input, which the TorchScript exporter cannot write), a softmax at the
output (the import drops it on purpose: scores are wanted, not probabilities), identity
networks, and identity channel shuffles (1 or C groups, where PyTorch's own autograd is
wrong for a LayerNorm that follows).
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------- elementwise

ACTIVATIONS = {   # name -> how often it is drawn (relative)
    "relu": 6, "relu6": 2, "leaky": 4, "silu": 5, "hardswish": 4, "hardsigmoid": 3, "sigmoid": 3,
    "gelu": 3, "gelu_tanh": 2, "tanh": 3, "hardtanh": 3, "clamp": 2, "clamp_min": 1, "clamp_max": 1,
    "softsign": 2, "elu": 3, "selu": 2, "celu": 2, "softplus": 3, "mish": 3, "prelu": 3, "logsigmoid": 2,
}

FORMULAS = {
    "square": lambda x: x ** 2,
    "abs": torch.abs,
    "erf": torch.erf,
    "neg": torch.neg,
    "sqrt_abs": lambda x: torch.sqrt(torch.abs(x) + 0.1),
    "sqrt_sq": lambda x: torch.sqrt(x * x + 1.0),
    "x_sigmoid": lambda x: x * torch.sigmoid(x),
    "x_hardsigmoid": lambda x: x * F.hardsigmoid(x),
    "x_over_exp": lambda x: x * torch.reciprocal(1.0 + torch.exp(-x)),
    "div_sigmoid": lambda x: x / (1.0 + torch.sigmoid(x)),
    "recip_sq": lambda x: 1.0 / (1.0 + x * x),
    "recip_abs": lambda x: torch.reciprocal(x.abs() + 1.0),
    "div_abs": lambda x: x / (1 + x.abs()),
    "log_sq": lambda x: torch.log(x * x + 1.0),
    "log_sigmoid": lambda x: torch.log(torch.sigmoid(x)),
    "gauss": lambda x: torch.exp(-x * x),
    "exp_tanh": lambda x: torch.exp(torch.tanh(x)),
    "min_tanh": lambda x: torch.minimum(x, torch.tanh(x)),
    "where": lambda x: torch.where(x > 0, x, 0.1 * x),
    "sub_min": lambda x: x - x.amin((2, 3), keepdim=True),
    "add_channel_sum": lambda x: x + x.sum(1, keepdim=True),
    "rms_norm": lambda x: x * torch.rsqrt((x * x).mean(1, keepdim=True) + 1e-5),
    "instance_norm": lambda x: (x - x.mean((2, 3), keepdim=True))
    / torch.sqrt(((x - x.mean((2, 3), keepdim=True)) ** 2).mean((2, 3), keepdim=True) + 1e-3),
}


def activation(s, channels):
    """The module of an ``act`` spec (``channels``: the input's, for a per-channel PReLU)."""
    k = s["kind"]
    if k == "prelu":
        m = nn.PReLU(channels if s["per_channel"] else 1)
        with _seeded(s["seed"]), torch.no_grad():
            m.weight.uniform_(-0.5, 1.2)
        return m
    fixed = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
             "hardsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
             "selu": nn.SELU, "softplus": nn.Softplus, "mish": nn.Mish, "softsign": nn.Softsign,
             "logsigmoid": nn.LogSigmoid}
    if k in fixed:
        return fixed[k]()
    return {"gelu_tanh": lambda: nn.GELU(approximate="tanh"),
            "leaky": lambda: nn.LeakyReLU(s["slope"]),
            "elu": lambda: nn.ELU(s["alpha"]), "celu": lambda: nn.CELU(s["alpha"]),
            "hardtanh": lambda: nn.Hardtanh(s["lo"], s["hi"]),
            "clamp": lambda: Fn(lambda x: torch.clamp(x, s["lo"], s["hi"])),
            "clamp_min": lambda: Fn(lambda x: torch.clamp(x, min=s["lo"])),
            "clamp_max": lambda: Fn(lambda x: torch.clamp(x, max=s["hi"]))}[k]()


# ---------------------------------------------------------------------------- the draw

class _Draw:
    """The random choices of one case, all from one numpy Generator."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.wide = self.chance(0.3)             # up to 64 channels a conv (else 16)
        self.max_channels = 64 if self.wide else 16

    def chance(self, p):
        return bool(self.rng.random() < p)

    def int(self, lo, hi):
        """An int in [lo, hi], both included."""
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, options, weights=None):
        p = None if weights is None else np.asarray(weights, float) / sum(weights)
        return options[self.rng.choice(len(options), p=p)]

    def real(self, lo, hi, digits=2):
        return float(np.round(self.rng.uniform(lo, hi), digits))

    def seed(self):
        return int(self.rng.integers(1 << 30))

    # -- single layers
    def act(self):
        s = {"t": "act", "kind": self.pick(list(ACTIVATIONS), list(ACTIVATIONS.values()))}
        k = s["kind"]
        if k == "leaky":
            s["slope"] = self.pick([0.01, 0.1, 0.2, 0.3])
        elif k in ("hardtanh", "clamp"):
            s["lo"] = self.real(-2, 0.5)
            s["hi"] = round(s["lo"] + self.real(0.1, 3), 2)
            if k == "clamp" and self.chance(0.1):      # min > max: max everywhere
                s["lo"], s["hi"] = s["hi"], s["lo"]
        elif k == "clamp_min":
            s["lo"] = self.real(-1, 1)
        elif k == "clamp_max":
            s["hi"] = self.real(-1, 1.5)
        elif k in ("elu", "celu"):
            s["alpha"] = self.real(0.1, 2.5, 3)
        elif k == "prelu":
            s["per_channel"], s["seed"] = self.chance(0.6), self.seed()
        return s

    def conv(self, C, cout=None, same=False):
        """A Conv2d spec on C channels; ``same``: stride 1 and the input's size kept."""
        r = self.rng.random()
        if r < 0.15:
            k = self.pick([[1, 3], [3, 1], [1, 5], [5, 1], [1, 7], [7, 1], [2, 3], [3, 2]])
        elif r < 0.25:
            k = [self.int(1, 7), self.int(1, 7)]
        else:
            k = [self.pick([1, 1, 3, 3, 3, 3, 5, 7, 2, 4])] * 2
        if same:
            k = [x | 1 for x in k]
        d = [1, 1]
        if self.chance(0.2):
            d = [self.int(2, 3)] * 2
            if self.chance(0.2):
                d[1] = self.int(1, 3)
        s = [1, 1]
        if not same and self.chance(0.35):
            s = [self.pick([2, 2, 3])] * 2
            if self.chance(0.15):
                s[1] = self.int(1, 3)
        half = [d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2]
        if same:
            p = "same" if self.chance(0.1) else half
        else:
            p = half if self.chance(0.4) else [self.int(0, k[0]), self.int(0, k[1])]
        r = self.rng.random()
        if r < 0.6 or C < 2:
            g = 1
        elif r < 0.85:
            g = C                                       # depthwise
        else:
            g = self.pick([g for g in range(2, C) if C % g == 0] or [1])
        if cout is None:
            cout = (C * self.pick([1, 1, 1, 1, 2]) if g == C else g * self.int(1, 3) if g > 1
                    else self.int(2, self.max_channels))
        elif cout % g:
            g = 1
        spec = {"t": "conv", "cout": cout, "k": k, "s": s, "p": p, "d": d, "g": g, "bias": self.chance(0.5),
                "seed": self.seed()}
        if not same and self.chance(0.15):
            spec["prepad"] = [self.int(0, 3) for _ in range(4)]
            spec["prepad_mode"] = self.pick(["constant"] * 8 + ["reflect", "replicate"])
        if self.chance(0.03):
            spec["padding_mode"] = self.pick(["reflect", "replicate", "circular"])
        return spec

    def bn(self):
        return {"t": "bn", "eps": self.pick([1e-5, 1e-3, 0.1]), "affine": self.chance(0.9), "seed": self.seed()}

    def conv_bn_act(self, C, cout=None, same=False):
        out = [self.conv(C, cout, same)]
        if self.chance(0.6):
            out.append(self.bn())
        if self.chance(0.7):
            out.append(self.act())
        return out

    def gate(self):
        return self.pick(["sigmoid", "sigmoid", "hardsigmoid"])

    def hidden_act(self, p):
        return self.act() if self.chance(p) else {"t": "act", "kind": "relu"}

    # -- blocks: each returns a list of specs for an input of shape (C, H, W)
    def b_residual(self, C, H, W):
        short = []
        if self.chance(0.2):     # projection shortcut, strided on both paths
            st, co = self.pick([1, 2]), self.int(2, 12)
            body = [dict(self.conv(C, co, same=True), s=[st, st])] + ([self.bn()] if self.chance(0.5) else [])
            short = [{"t": "conv", "cout": co, "k": [1, 1], "s": [st, st], "p": [0, 0], "d": [1, 1], "g": 1,
                      "bias": False, "seed": self.seed()}]
        elif self.chance(0.5):
            body = self.conv_bn_act(C, same=True)
            body += self.conv_bn_act(body[0]["cout"], C, same=True)
        else:
            body = self.conv_bn_act(C, C, same=True)
        res = {"t": "res", "body": body, "short": short, "op": self.pick(["add"] * 6 + ["sub", "mul"]),
               "swap": self.chance(0.3)}
        return [res] + ([self.act()] if self.chance(0.3) else [])

    def b_reduce(self, C, H, W):
        red = self.pick(["mean", "mean", "amax", "amin", "sum"])
        # a sum over one axis only: sums over whole maps grow too large for float32 exp/log
        dims = self.pick([[1], [2], [3]] if red == "sum" else [[2, 3], [2, 3], [1], [2], [3], [1, 2, 3]])
        spec = {"t": "reduce", "red": red, "dims": dims, "op": self.pick(["add", "sub", "mul", "div"]),
                "body": []}
        if dims == [1] and self.chance(0.2):
            spec["op"] = "only"        # the reduced map itself: (N, 1, H, W)
        if dims == [2, 3] and self.chance(0.5):
            spec["body"] = [{"t": "conv", "cout": C, "k": [1, 1], "s": [1, 1], "p": [0, 0], "d": [1, 1], "g": 1,
                             "bias": True, "seed": self.seed()}]
        return [spec]

    def b_se(self, C, H, W):
        return [{"t": "se", "mid": self.int(1, 8), "act": self.hidden_act(0.3), "gate": self.gate(),
                 "pool": self.pick(["mean", "adaptive"]), "seed": self.seed()}]

    def b_cbam(self, C, H, W):
        return [{"t": "cbam", "mid": self.int(1, max(2, C // 2)), "act": self.hidden_act(0.4), "gate": self.gate(),
                 "spatial": self.chance(0.3), "seed": self.seed()}]

    def b_cat(self, C, H, W):
        st = 1 if self.chance(0.7) else 2
        branches = []
        for _ in range(self.int(1, 2)):
            c = dict(self.conv(C, same=True), s=[st, st])
            branches.append([c] + ([self.act()] if self.chance(0.5) else []))
        if st == 2 and self.chance(0.5):
            branches.append([{"t": "pool", "kind": "max", "k": [3, 3], "s": [2, 2], "p": [1, 1], "ceil": False}])
        ident = st == 1 and (len(branches) == 1 or self.chance(0.5))
        return [{"t": "cat", "branches": branches, "ident": ident}]

    def b_maxmin(self, C, H, W):
        def branch():
            q = self.rng.random()
            return [] if q < 0.3 else [self.act()] if q < 0.55 else self.conv_bn_act(C, C, same=True)
        spec = {"t": "mm", "op": self.pick(["max", "min"]), "a": branch(), "b": branch(), "pooled": None}
        if self.chance(0.35):    # b: a (N, C, 1, 1) map broadcast against a
            spec["pooled"] = self.pick(["mean", "amax", "amin", "adaptive_max", "adaptive_avg"])
            spec["b"] = [self.act()] if self.chance(0.5) else []
        if self.chance(0.15):
            spec["const"] = self.real(-1, 1)
        return [spec]

    def b_chunk(self, C, H, W):
        return [{"t": "chunk", "op": self.pick(["glu", "add", "mul", "max"])}] if C % 2 == 0 else []

    def b_shuffle(self, C, H, W):
        groups = [g for g in range(2, C) if C % g == 0]
        return [{"t": "shuffle", "g": self.pick(groups)}] if groups else []

    def b_pool(self, C, H, W):
        kind = "max" if self.chance(0.55) else "avg"
        k = [self.int(1, 5)] * 2 if self.chance(0.8) else [self.int(1, 5), self.int(1, 5)]
        s = [self.int(1, max(k))] * 2 if self.chance(0.85) else [self.int(1, 3), self.int(1, 3)]
        spec = {"t": "pool", "kind": kind, "k": k, "s": s, "p": [self.int(0, k[0] // 2), self.int(0, k[1] // 2)],
                "ceil": self.chance(0.35)}
        if kind == "avg":
            spec["count_pad"] = self.chance(0.5)
        elif self.chance(0.1):
            spec["dil"] = 2
        return [spec]

    def b_adaptive_pool(self, C, H, W):
        if self.chance(0.6):
            out = [1, 1]
        else:
            out = [self.pick([d for d in (1, 2, 3, 4) if n % d == 0]) for n in (H, W)]
        return [{"t": "apool", "out": out, "kind": self.pick(["avg"] * 8 + ["max"] * 2)}]

    def b_upsample(self, C, H, W):
        spec = {"t": "up", "mode": self.pick(["nearest", "nearest", "bilinear", "bilinear", "bicubic"])}
        if self.chance(0.7):
            spec["scale"] = self.pick([2.0, 2.0, 3.0, 1.5, 0.5])
        else:
            spec["size"] = [self.int(max(1, H // 2), 2 * H), self.int(max(1, W // 2), 2 * W)]
        if spec["mode"] != "nearest":
            spec["align_corners"] = self.chance(0.4)
        return [spec]

    def b_layer_norm(self, C, H, W):
        return [{"t": "ln", "eps": self.pick([1e-6, 1e-5]), "seed": self.seed(),
                 "mlp": self.int(2, 16) if self.chance(0.5) else 0, "layer_scale": self.chance(0.5),
                 "res": self.chance(0.5)}]

    def b_group_norm(self, C, H, W):
        return [{"t": "gn", "g": self.pick([g for g in range(1, C + 1) if C % g == 0]), "seed": self.seed()}]

    def b_slice(self, C, H, W):
        if C >= 2 and self.chance(0.5):
            ch = [self.int(0, C - 2)]
            ch.append(self.int(ch[0] + 1, C))
            return [{"t": "slice", "ch": ch}] if ch != [0, C] else []
        h = [self.int(0, 2), H - self.int(0, 2), self.int(1, 2)]
        w = [self.int(0, 2), W - self.int(0, 2), self.int(1, 2)]
        return [] if h == [0, H, 1] and w == [0, W, 1] else [{"t": "slice", "h": h, "w": w}]

    def b_pad(self, C, H, W):
        pad = [self.int(0, 2) for _ in range(4)]
        return [{"t": "pad", "pad": pad, "value": self.pick([0.0, 0.0, 0.5, -1.0]),
                 "mode": self.pick(["constant"] * 6 + ["reflect", "replicate"])}] if any(pad) else []

    def b_unshuffle(self, C, H, W):
        return [{"t": "unshuffle", "manual": self.chance(0.7)}] if H % 2 == 0 and W % 2 == 0 else []

    def block(self, shape):
        kinds = {   # name -> (weight, the specs of one on (C, H, W))
            "cba": (20, lambda C, H, W: self.conv_bn_act(C)), "act": (8, lambda C, H, W: [self.act()]),
            "bn": (3, lambda C, H, W: [self.bn()]), "res": (7, self.b_residual), "reduce": (6, self.b_reduce),
            "se": (4, self.b_se), "cbam": (5, self.b_cbam), "cat": (4, self.b_cat), "mm": (7, self.b_maxmin),
            "chunk": (1.5, self.b_chunk), "shuffle": (2, self.b_shuffle), "pool": (6, self.b_pool),
            "apool": (2, self.b_adaptive_pool), "up": (3, self.b_upsample), "ln": (3, self.b_layer_norm),
            "gn": (2, self.b_group_norm), "slice": (2, self.b_slice), "pad": (1.5, self.b_pad),
            "unshuffle": (1, self.b_unshuffle),
            "fn": (8, lambda C, H, W: [{"t": "fn", "kind": self.pick(list(FORMULAS))}]),
            "scale": (1.5, lambda C, H, W: [{"t": "scale", "seed": self.seed(), "bias": self.chance(0.5)}]),
            "softmax": (1, lambda C, H, W: [{"t": "softmax", "dim": self.pick([1, 1, 3]), "log": self.chance(0.3)}]),
            "transpose": (1, lambda C, H, W: [{"t": "transpose"}]),
            "dropout": (0.5, lambda C, H, W: [{"t": "dropout"}]),
        }
        _, specs = kinds[self.pick(list(kinds), [w for w, _ in kinds.values()])]
        return specs(*shape)

    def head(self, C, H, W):
        pools = ["gap", "gap", "mean", "gmp", "amax", "amin"] + (["flatten", "flatten"] if C * H * W <= 4096 else [])
        return {"t": "head", "pool": self.pick(pools), "hidden": self.int(4, 16) if self.chance(0.3) else 0,
                "act": self.hidden_act(0.9), "classes": self.int(2, 10),
                "dropout": self.chance(0.3), "seed": self.seed()}


def random_case(seed):
    """The case of ``seed`` (a JSON-able dict, see the module's docstring)."""
    draw = _Draw(seed)
    C = draw.pick([1, 2, 3, 3, 3, 4, 6, 8] + ([16, 24, 32, 48] if draw.wide else []))
    H = draw.int(8, 40 if draw.wide else 32)
    W = H if draw.chance(0.7) else draw.int(8, 40 if draw.wide else 32)
    shape, blocks = (C, H, W), []
    for _ in range(draw.int(1, 7)):
        for _attempt in range(12):
            candidate = draw.block(shape)
            out = out_shape(candidate, shape) if candidate else None
            if out and len(out) == 3 and out[0] <= (96 if draw.wide else 64) and out[1] * out[2] <= 4096:
                blocks, shape = blocks + candidate, out
                break
    if not [b for b in blocks if b["t"] not in ("dropout", "slice", "pad", "up")] or \
            [b for b in blocks if b["t"] != "dropout"][-1]["t"] == "softmax":
        blocks.append({"t": "act", "kind": "tanh"})   # no identity network, no softmax at the output
    if draw.chance(0.6):
        head = draw.head(*shape)
        if out_shape([head], shape):
            blocks.append(head)
    case = {"seed": int(seed), "input": [C, H, W], "blocks": blocks,
            "export_batch": draw.pick([1, 1, 2]), "batch": draw.pick([1, 2, 2, 3, 4]),
            "conv_algorithm": draw.pick(["auto", "auto", "auto", "direct", "winograd", "winograd2x2"]),
            "input_seed": draw.seed()}
    case["exporter"] = draw.pick(["torchscript", "dynamo"])
    case["opset"] = draw.pick([13, 14, 16, 17, 17, 17, 18] if case["exporter"] == "torchscript" else [18, 20])
    return case


# ---------------------------------------------------------------------------- spec -> torch

@contextlib.contextmanager
def _seeded(seed):
    """torch's default generator seeded with ``seed`` inside, and left as it was outside."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Fn(nn.Module):
    """A parameter-free block: ``f(x)``."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


class Chain(nn.Sequential):
    """The blocks of ``specs`` in a row, on inputs of shape (C, H, W) ``shape``."""

    def __init__(self, specs, shape):
        super().__init__()
        for i, s in enumerate(specs):
            block = make_block(s, shape)
            shape = _probe(block, shape)
            self.add_module(str(i), block)
        self.out_shape = tuple(shape)


def _probe(module, shape):
    with torch.no_grad():
        out = tuple(module(torch.zeros((1,) + tuple(shape))).shape[1:])
    if 0 in out:
        raise ValueError(f"empty output {out}")
    return out


def _conv(s, C):
    with _seeded(s["seed"]):
        conv = nn.Conv2d(C, s["cout"], tuple(s["k"]), tuple(s["s"]),
                         s["p"] if isinstance(s["p"], str) else tuple(s["p"]), tuple(s["d"]), s["g"], s["bias"],
                         padding_mode=s.get("padding_mode", "zeros"))
        if s["bias"]:
            with torch.no_grad():
                conv.bias.uniform_(-0.5, 0.5)
    if not s.get("prepad"):
        return conv
    return nn.Sequential(Fn(lambda x: F.pad(x, s["prepad"], mode=s["prepad_mode"])), conv)


def _bn(s, C):
    bn = nn.BatchNorm2d(C, eps=s["eps"], affine=s["affine"]).eval()
    with _seeded(s["seed"]), torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 2.0)
        if s["affine"]:
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.normal_(0, 0.3)
    return bn


def _pool_size(n, k, s, p, d):
    """PyTorch's ceil-mode output size, and whether its last window starts in the padding
    (PyTorch drops that window; ONNX shape inference keeps it)."""
    out = math.ceil((n + 2 * p - d * (k - 1) - 1) / s) + 1
    return out, (out - 1) * s >= n + p


def _pool(s, shape):
    k, st, p, d = s["k"], s["s"], s["p"], s.get("dil", 1)
    if s["ceil"] and any(_pool_size(n, *a, d)[1] for n, *a in zip(shape[1:], k, st, p)):
        raise ValueError("a ceil-mode window starts in the padding")
    if s["kind"] == "max":
        return nn.MaxPool2d(k, st, p, d, ceil_mode=s["ceil"])
    return nn.AvgPool2d(k, st, p, ceil_mode=s["ceil"], count_include_pad=s["count_pad"])


class Residual(nn.Module):
    def __init__(self, s, shape):
        super().__init__()
        self.body, self.short = Chain(s["body"], shape), Chain(s["short"], shape)
        self.op, self.swap = s["op"], s["swap"]
        if self.body.out_shape != self.short.out_shape:
            raise ValueError("residual paths differ in shape")

    def forward(self, x):
        a, b = self.body(x), self.short(x)
        a, b = (b, a) if self.swap else (a, b)
        return a + b if self.op == "add" else a - b if self.op == "sub" else a * b


class Reduce(nn.Module):
    def __init__(self, s, shape):
        super().__init__()
        self.s = s
        self.body = Chain(s["body"], tuple(1 if i + 1 in s["dims"] else n for i, n in enumerate(shape)))

    def forward(self, x):
        s = self.s
        r = self.body(getattr(x, s["red"])(tuple(s["dims"]), keepdim=True))
        return {"add": lambda: x + r, "sub": lambda: x - r, "mul": lambda: x * r,
                "div": lambda: x / (r.abs() + 1.0), "only": lambda: r}[s["op"]]()


class Gate(nn.Module):
    """Squeeze-and-excitation (``se``) and CBAM's channel and spatial attention (``cbam``)."""

    def __init__(self, s, shape):
        super().__init__()
        C = shape[0]
        self.s = s
        with _seeded(s["seed"]):
            bias = s["t"] == "se"
            self.mlp = nn.Sequential(nn.Conv2d(C, s["mid"], 1, bias=bias), activation(s["act"], s["mid"]),
                                     nn.Conv2d(s["mid"], C, 1, bias=bias))
            self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False) if s.get("spatial") else None
        self.gate = nn.Sigmoid() if s["gate"] == "sigmoid" else nn.Hardsigmoid()
        self.avg, self.max = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        if self.s["t"] == "se":
            p = x.mean((2, 3), keepdim=True) if self.s["pool"] == "mean" else self.avg(x)
            return x * self.gate(self.mlp(p))
        x = x * self.gate(self.mlp(self.avg(x)) + self.mlp(self.max(x)))
        if self.spatial is not None:
            x = x * torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x


class Concat(nn.Module):
    def __init__(self, s, shape):
        super().__init__()
        self.branches = nn.ModuleList(Chain(b, shape) for b in s["branches"])
        self.ident = s["ident"]
        shapes = [b.out_shape for b in self.branches] + ([tuple(shape)] if self.ident else [])
        if len({sh[1:] for sh in shapes}) != 1:
            raise ValueError("branches differ in size")

    def forward(self, x):
        return torch.cat(([x] if self.ident else []) + [b(x) for b in self.branches], 1)


class MaxMin(nn.Module):
    """torch.maximum or torch.minimum of two branches (b possibly pooled to (N, C, 1, 1))."""

    def __init__(self, s, shape):
        super().__init__()
        self.s = s
        bshape = (shape[0], 1, 1) if s["pooled"] else tuple(shape)
        self.a, self.b = Chain(s["a"], shape), Chain(s["b"], bshape)
        self.pools = nn.ModuleDict({"adaptive_max": nn.AdaptiveMaxPool2d(1), "adaptive_avg": nn.AdaptiveAvgPool2d(1)})
        if self.a.out_shape != tuple(shape) or self.b.out_shape != bshape:
            raise ValueError("branch shapes")

    def forward(self, x):
        pooled = self.s["pooled"]
        if pooled in self.pools:
            b = self.pools[pooled](x)
        else:
            b = getattr(x, pooled)((2, 3), keepdim=True) if pooled else x
        f = torch.maximum if self.s["op"] == "max" else torch.minimum
        y = f(self.a(x), self.b(b))
        return y if self.s.get("const") is None else f(y, torch.tensor(self.s["const"], dtype=y.dtype))


class LayerNorm(nn.Module):
    """A ConvNeXt-style block: permute to channels-last, LayerNorm over C, an MLP, a layer
    scale, permute back, a residual."""

    def __init__(self, s, shape):
        super().__init__()
        C = shape[0]
        self.res = s["res"]
        with _seeded(s["seed"]), torch.no_grad():
            self.ln = nn.LayerNorm(C, eps=s["eps"])
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.normal_(0, 0.2)
            self.mlp = nn.Sequential(nn.Linear(C, s["mlp"]), nn.GELU(), nn.Linear(s["mlp"], C)) if s["mlp"] else None
            self.scale = nn.Parameter(torch.rand(C) * 0.5 + 0.1) if s["layer_scale"] else None

    def forward(self, x):
        y = self.ln(x.permute(0, 2, 3, 1))
        y = self.mlp(y) if self.mlp is not None else y
        y = (self.scale * y if self.scale is not None else y).permute(0, 3, 1, 2)
        return x + y if self.res else y


class Head(nn.Module):
    def __init__(self, s, shape):
        super().__init__()
        C, H, W = shape
        self.pool = s["pool"]
        D = C * H * W if self.pool == "flatten" else C
        with _seeded(s["seed"]):
            layers = [nn.Dropout(0.2)] if s["dropout"] else []
            if s["hidden"]:
                layers += [nn.Linear(D, s["hidden"]), activation(s["act"], s["hidden"]),
                           nn.Linear(s["hidden"], s["classes"])]
            else:
                layers.append(nn.Linear(D, s["classes"]))
            self.fc = nn.Sequential(*layers)

    def forward(self, x):
        p = self.pool
        if p in ("gap", "gmp"):
            x = (F.adaptive_avg_pool2d if p == "gap" else F.adaptive_max_pool2d)(x, 1)
        elif p != "flatten":
            x = getattr(x, p)((2, 3))
        return self.fc(torch.flatten(x, 1))


def _shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def _unshuffle(x):
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)


def _scale(s, C):
    with _seeded(s["seed"]):
        a, b = torch.rand(1, C, 1, 1) * 4 - 2, torch.randn(1, C, 1, 1)
    return Fn(lambda x: x * a + b if s["bias"] else x * a)


def _group_norm(s, C):
    gn = nn.GroupNorm(s["g"], C)
    with _seeded(s["seed"]), torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.normal_(0, 0.2)
    return gn


def _slice(s):
    if "ch" in s:
        return Fn(lambda x: x[:, s["ch"][0]:s["ch"][1]])
    (h0, h1, hs), (w0, w1, ws) = s["h"], s["w"]
    return Fn(lambda x: x[:, :, h0:h1:hs, w0:w1:ws])


def _upsample(s):
    kw = {"mode": s["mode"], "align_corners": s.get("align_corners")}
    kw.update({"scale_factor": s["scale"]} if "scale" in s else {"size": tuple(s["size"])})
    return Fn(lambda x: F.interpolate(x, **kw))


def _pad(s):
    if s["mode"] == "constant":
        return Fn(lambda x: F.pad(x, s["pad"], value=s["value"]))
    return Fn(lambda x: F.pad(x, s["pad"], mode=s["mode"]))


def _chunk(s):
    combine = {"glu": lambda a, b: a * torch.sigmoid(b), "add": torch.add, "mul": torch.mul,
               "max": torch.maximum}[s["op"]]
    return Fn(lambda x: combine(*x.chunk(2, 1)))


def _adaptive_pool(s, shape):
    if shape[1] % s["out"][0] or shape[2] % s["out"][1]:
        raise ValueError("adaptive pooling to a size that does not divide the input")
    return (nn.AdaptiveAvgPool2d if s["kind"] == "avg" else nn.AdaptiveMaxPool2d)(tuple(s["out"]))


def make_block(s, shape):
    """The module of block spec ``s`` on inputs of shape (C, H, W) ``shape``."""
    C = shape[0]
    if (s["t"] == "shuffle" and C % s["g"]) or (s["t"] == "chunk" and C % 2):
        raise ValueError(f"{s['t']} does not divide {C} channels")
    return {
        "conv": lambda: _conv(s, C), "bn": lambda: _bn(s, C), "act": lambda: activation(s, C),
        "fn": lambda: Fn(FORMULAS[s["kind"]]), "res": lambda: Residual(s, shape), "reduce": lambda: Reduce(s, shape),
        "se": lambda: Gate(s, shape), "cbam": lambda: Gate(s, shape), "cat": lambda: Concat(s, shape),
        "mm": lambda: MaxMin(s, shape), "chunk": lambda: _chunk(s),
        "shuffle": lambda: Fn(lambda x: _shuffle(x, s["g"])), "pool": lambda: _pool(s, shape), "apool": lambda: _adaptive_pool(s, shape), "up": lambda: _upsample(s),
        "ln": lambda: LayerNorm(s, shape), "gn": lambda: _group_norm(s, C), "slice": lambda: _slice(s),
        "pad": lambda: _pad(s), "unshuffle": lambda: Fn(_unshuffle) if s["manual"] else nn.PixelUnshuffle(2),
        "scale": lambda: _scale(s, C), "transpose": lambda: Fn(lambda x: x.transpose(2, 3)),
        "softmax": lambda: Fn(lambda x: (F.log_softmax if s["log"] else F.softmax)(x, s["dim"])),
        "dropout": lambda: nn.Dropout(0.3), "head": lambda: Head(s, shape),
    }[s["t"]]()


def build(case):
    """The case's network (a ``torch.nn.Module`` in eval mode, float32)."""
    return Chain(case["blocks"], tuple(case["input"])).eval()


def out_shape(blocks, shape):
    """The output shape (without the batch) of ``blocks`` on inputs of ``shape``, or None
    where PyTorch rejects them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Chain(blocks, shape).out_shape
    except (ValueError, RuntimeError):
        return None


def export_onnx(net, case):
    """The ONNX model of ``net`` (bytes, or a ModelProto) exported as ``case`` says."""
    example = (torch.zeros((case["export_batch"],) + tuple(case["input"])),)
    names = {"input_names": ["input"], "output_names": ["output"], "opset_version": case["opset"]}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if case["exporter"] == "dynamo":
            return torch.onnx.export(net, example, dynamo=True, verbose=False, optimize=True, **names).model_proto
        buf = io.BytesIO()
        torch.onnx.export(net, example, buf, dynamo=False, do_constant_folding=True, **names)
        return buf.getvalue()
