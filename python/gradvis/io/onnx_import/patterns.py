"""The patterns the ONNX importer fuses into one layer: the SiLU / HardSwish gates,
the TorchScript exporter's GELU, and channels-last regions (ConvNeXt) imported
channels-first without their transposes."""
from __future__ import annotations

import math

import numpy as np

from ...nn import HardSwish, SiLU
from ...nn.pointwise import GELU, LogSigmoid, Softplus

__all__ = ["Patterns"]

_SQRT2 = math.sqrt(2.0)
# elementwise operators that commute with moving the channel axis
_UNARY = {"Relu", "Sigmoid", "Tanh", "Gelu", "Erf", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu",
          "Identity", "Dropout", "Sqrt", "Neg", "Abs", "Exp", "Pow", "Log", "Reciprocal", "Elu", "Selu", "Celu",
          "Softplus", "Softsign", "Mish", "ThresholdedRelu"}
_BINARY = {"Add", "Sub", "Mul", "Div"}


class Patterns:
    """The pattern finder and the fused layers' emission, mixed into the importer."""

    # ------------------------------------------------------------------ patterns
    def find_fusions(self):
        """{node index: (kind, ...)} of the patterns fused into one layer, with the other
        nodes of each pattern added to ``self.skip``:

        - ``x * sigmoid(x)`` -> SiLU, ``x * hardsigmoid(x)`` (PyTorch's 1/6, 1/2) -> HardSwish;
        - ``log(sigmoid(x))`` (both exporters' LogSigmoid) -> LogSigmoid, finite where
          sigmoid(x) rounds to 0;
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
                elif n.op == "Sigmoid" and mul is not None and mul.op == "Log":
                    fused[n.index] = ("logsigmoid", mul)
                    self.skip.add(mul.index)
            elif n.op == "Erf":
                parts = self._erf_gelu(n)
                if parts is not None:
                    fused[n.index] = ("gelu",) + parts
                    self.skip.update(p.index for p in parts[1:])
            elif n.op == "Softplus":
                parts = self._thresholded_softplus(n)
                if parts is not None:
                    fused[n.index] = ("softplus",) + parts
                    self.skip.update(p.index for p in parts[:2])
            elif n.op == "Transpose" and list(n.attr("perm") or []) == [0, 2, 3, 1]:
                self._channels_last_region(n)
        return fused

    def _thresholded_softplus(self, sp):
        """(where, greater, threshold) of ``Where(Greater(x, T), x, Softplus(x))`` (the
        torch.export-based exporter's nn.Softplus), or None."""
        x = sp.inputs[0]
        where = self.sole_consumer(sp.outputs[0])
        if where is None or where.op != "Where" or list(where.inputs[1:]) != [x, sp.outputs[0]]:
            return None
        gt = self.producer.get(where.inputs[0])
        if gt is None or gt.op != "Greater" or gt.inputs[0] != x or self.sole_consumer(gt.outputs[0]) is not where:
            return None
        t = self._scalar_const(gt, gt.inputs[1])
        return None if t is None or not math.isfinite(t) else (where, gt, t)

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
        elif kind[0] == "logsigmoid":
            log = kind[1]
            self.emit(node, LogSigmoid(), [self.activation(node, node.inputs[0])], out=log.outputs[0])
            self.info["folded"].append(f"{node.name} (Sigmoid) and {log.name} (Log) into one LogSigmoid")
        elif kind[0] == "gelu":
            x, div, add, mul, half = kind[1:]
            self.emit(node, GELU(), [self.activation(node, x)], out=half.outputs[0])
            self.info["folded"].append(f"{div.name}, {node.name}, {add.name}, {mul.name}, {half.name} "
                                       "(x * 0.5 * (1 + erf(x / sqrt(2)))) into one GELU")
        elif kind[0] == "softplus":
            where, gt, t = kind[1:]
            self.emit(node, Softplus(t), [self.activation(node, node.inputs[0])], out=where.outputs[0])
            self.info["folded"].append(f"{node.name} (Softplus), {gt.name} (Greater) and {where.name} (Where) "
                                       f"into one Softplus with threshold {t:g}")

    def pass_transpose(self, node):
        """A Transpose at the edge of a channels-last region: its output is its input."""
        self.alias(node, node.outputs[0], self.activation(node, node.inputs[0]))
        self.info["folded"].append(f"{node.name} (Transpose {list(node.attr('perm'))}): the region it "
                                   "bounds runs channels-first")
