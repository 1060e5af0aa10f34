"""Pooling, reductions and softmax: MaxPool (dilated too), AveragePool, the global
pools, ReduceMean / Sum / Max / Min / L1 / L2 / SumSquare, Softmax and LogSoftmax."""
from __future__ import annotations

import numpy as np

from ...nn import AvgPool2d, GlobalAvgPool, MaxPool2d
from ...nn.reduce import LogSoftmax, Reduce, Softmax

__all__ = ["ReduceOps"]


class ReduceOps:
    """Operator handlers mixed into the importer (see :mod:`.ops`)."""

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
        kernel = tuple(node.attr("kernel_shape"))
        src = self.activation(node, node.inputs[0])
        if len(kernel) == 1 and len(self.shape[src]) == 2:
            return self._pool1d(node, cls, kernel[0], src)
        src = self._input4(node, node.inputs[0])
        strides, dil, pads = self._window(node, kernel, self.shape[src][1:])
        kw = dict(stride=strides, padding=pads, ceil_mode=bool(node.attr("ceil_mode", 0)))
        if cls is AvgPool2d:
            if dil != (1, 1):    # AveragePool's dilations (opset 19); PyTorch has no such pool
                raise self.unsupported(node, f"dilated average pooling (dilations {dil})")
            kw["count_include_pad"] = bool(node.attr("count_include_pad", 0))
        elif dil != (1, 1):
            kw["dilation"] = dil
        self.emit(node, cls(kernel, **kw), [src])

    def _pool1d(self, node, cls, k, src):
        """A 1-D MaxPool or AveragePool on (N, C, L) (NextViT's pooled keys and values,
        PyTorch's MaxPool1d / AvgPool1d): the 2-D pool with a (1, k) window between
        Reshapes to (N, C, 1, L) and back."""
        s, d, p = self._window1d(node, k, self.shape[src][1], "pool")
        kw = dict(stride=(1, s), padding=(0, 0, p[0], p[1]), ceil_mode=bool(node.attr("ceil_mode", 0)))
        if cls is AvgPool2d:
            if d != 1:
                raise self.unsupported(node, f"dilated average pooling (dilations {d})")
            kw["count_include_pad"] = bool(node.attr("count_include_pad", 0))
        elif d != 1:
            kw["dilation"] = (1, d)
        self._emit_on_1d(node, src, cls((1, k), **kw))

    def op_MaxPool(self, node):
        self._pool(node, MaxPool2d)

    def op_AveragePool(self, node):
        self._pool(node, AvgPool2d)

    def op_GlobalAveragePool(self, node):
        self.emit(node, GlobalAvgPool(), [self._input4(node, node.inputs[0])])

    def op_GlobalMaxPool(self, node):
        """A max pool whose window is the map (its gradient goes to the first maximum,
        as PyTorch's adaptive max pooling to 1x1)."""
        src = self._input4(node, node.inputs[0])
        hw = tuple(self.shape[src][1:])
        self.emit(node, MaxPool2d(hw, stride=hw), [src])

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

    def op_ReduceMin(self, node):
        self._reduce(node, "min")

    def op_ReduceL1(self, node):
        self._reduce(node, "l1")

    def op_ReduceL2(self, node):
        """ReduceL2 (``torch.norm``, ConvNeXt-V2's global response normalization)."""
        self._reduce(node, "l2")

    def op_ReduceSumSquare(self, node):
        self._reduce(node, "sum_square")
