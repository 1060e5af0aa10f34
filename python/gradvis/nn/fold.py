"""Batch norm and per-channel scales folded into the convolution before them,
for test-mode passes.

In test mode a BatchNorm2d is an affine map per channel, ``y * s + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. When
it reads a Conv2d that nothing else reads, :meth:`Model.forward` runs the
convolution with weights ``W * s`` and bias ``b * s + t`` instead: one pass over
memory and one stored array fewer per layer (the convolution's own output is
never written), and the ReLU after the batch norm is applied by the
convolution. The folded weights are computed on every pass (about 0.1 ms per
million weights), so changed parameters or statistics take effect at once;
they are written into one array per layer that is kept, so that the
transformed filters the Winograd kernels keep across calls stay found. Where
the model is frozen (nn/frozen.py) they are computed once and frozen too, so
the kernels keep their packed forms without reading them.

Backward: the gradient at the batch norm's output is the folded convolution's
output gradient, so the input gradient is the folded convolution's. Parameter
gradients, and backward rules that name either node (or its type), need the
layers' own caches: :meth:`FoldedBatchNorm.unfold` recomputes the
convolution's output with the original weights and returns both caches, so
every result is that of the separate layers (up to float rounding of the
folded weights, about one unit in the last place).

A per-channel :class:`~gradvis.nn.elementwise.Scale` (a (C, 1, 1) or scalar
constant multiply, as ConvNeXt's layer scale imports) folds the same way, with
``s = scale`` and ``t = 0`` (:class:`FoldedScale`).

A pass folds a pair only while the weights are no larger than the convolution's
output (:func:`folded_conv_forward`); otherwise the two layers run one after the
other, with their own caches.

A per-channel gate before an ungrouped convolution (squeeze-and-excitation:
``conv(x * g)`` with g of shape (1, C, 1, 1)) is the convolution of x with weights
``W * g`` per input channel. A test-mode pass that keeps nothing for a backward
pass, on one image, runs it that way while the weights are no larger than x
(:func:`gate_fold`): the gated tensor, a pass over memory as large as x, is
never written (5-10% of EfficientNet-B0's forward pass at batch 1).
"""
from __future__ import annotations

import copy

import numpy as np

from .. import _core
from . import functional as F
from .frozen import immutable, is_immutable

__all__ = ["Folded", "FoldedBatchNorm", "FoldedScale", "GateFold", "folded_conv_forward", "foldable_scale",
           "gate_fold"]


class Folded:
    """The cache of a node folded into the convolution before it."""
    __slots__ = ()

    def lean(self):
        """A copy without the convolution's input, for a lean cache (Model.forward),
        whose backward pass takes input gradients only and reads none of it."""
        c = copy.copy(self)
        c.x = None
        return c


class FoldedBatchNorm(Folded):
    """The cache of a batch-norm node folded into the convolution before it."""
    __slots__ = ("conv", "bn", "x", "w", "b", "gamma", "mean", "var")

    def __init__(self, conv, bn, x, w, b, gamma, mean, var):
        self.conv, self.bn = conv, bn
        self.x, self.w, self.b = x, w, b
        self.gamma, self.mean, self.var = gamma, mean, var

    def unfold(self):
        """(conv cache, batch-norm cache) as the separate layers' test-mode
        forwards return them; recomputes the convolution's output."""
        c = self.conv
        y, conv_cache = F.conv2d_run(self.x, self.w, self.b, (c.stride, c.padding, c.dilation, c.groups), False)
        dt = y.dtype
        bn_cache = ("test", y, F._like(self.gamma, dt, "gamma"), F._like(self.mean, dt, "running_mean"),
                    F._like(self.var, dt, "running_var"), self.bn.eps)
        return conv_cache, bn_cache

    def param_grads(self, g, conv_grads):
        """(the convolution's parameter gradients, the batch norm's {gamma, beta})
        from ``conv_grads``, those of the folded convolution for its output
        gradient ``g`` (N, F, H, W): the original weights' are the folded ones'
        times the scale per output channel (their output gradient is g times it);
        gamma's needs the convolution's own output, recomputed."""
        s = (self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.bn.eps)).astype(g.dtype)
        out = {"weight": conv_grads["weight"] * s[:, None, None, None]}
        if "bias" in conv_grads:
            out["bias"] = conv_grads["bias"] * s
        _, bn_cache = self.unfold()
        _, dgamma, dbeta = F.spatial_batchnorm_backward(g, bn_cache)
        return out, {"gamma": dgamma, "beta": dbeta}


class FoldedScale(Folded):
    """The cache of a per-channel Scale node folded into the convolution before it."""
    __slots__ = ("conv", "layer", "x", "w", "b", "scale")

    def __init__(self, conv, layer, x, w, b, scale):
        self.conv, self.layer = conv, layer
        self.x, self.w, self.b, self.scale = x, w, b, scale

    def unfold(self):
        """(conv cache, scale cache) as the separate layers' forwards return them;
        recomputes the convolution's output."""
        c = self.conv
        y, conv_cache = F.conv2d_run(self.x, self.w, self.b, (c.stride, c.padding, c.dilation, c.groups), False)
        _, scale_cache = self.layer.forward([y], {"scale": self.scale}, {}, "test", None)
        return conv_cache, scale_cache

    def param_grads(self, g, conv_grads):
        """(the convolution's parameter gradients, the scale's {scale}) from
        ``conv_grads``, those of the folded convolution for its output gradient
        ``g``: the original weights' are the folded ones' times the scale per
        output channel; the scale's needs the convolution's own output, recomputed."""
        s = _channel_values(self.scale, g.shape[1]).astype(g.dtype)
        out = {"weight": conv_grads["weight"] * s[:, None, None, None]}
        if "bias" in conv_grads:
            out["bias"] = conv_grads["bias"] * s
        _, scale_cache = self.unfold()
        return out, self.layer.backward_params(g, scale_cache)


def foldable_scale(layer, channels):
    """Whether a Scale layer multiplies a (N, channels, H, W) tensor by one value
    per channel (shape (channels, 1, 1)) or by one value for all (a shape of ones)."""
    shape = tuple(layer.shape)
    if all(v == 1 for v in shape):
        return True
    return len(shape) == 3 and shape[0] == channels and shape[1:] == (1, 1)


def _channel_values(scale, channels):
    """A foldable Scale's values, one per channel, float64."""
    s = np.asarray(scale, np.float64).reshape(-1)
    return np.broadcast_to(s, (channels,)) if s.size == 1 else s


def folded_conv_forward(model, i, x, relu, residual=None, residual_relu=False):
    """Node i (a Conv2d) and node i + 1 (its BatchNorm2d or per-channel Scale) in
    one convolution: (out, conv cache, the second node's cache, whether
    ``residual`` was added). ``relu``: the second node's fused ReLU.
    ``residual``: None, or the other operand of the Add that alone reads node
    i + 1, added where the pair folds and :meth:`Conv2d.residual_fits`, followed
    by that Add's fused ReLU (``residual_relu``) in place of ``relu``.

    Folding writes the scaled weights on every pass, which pays only while the
    weights are no larger than the convolution's output (the separate layer's pass
    over it, forward and backward, is what folding saves): a late layer at batch 1
    (ResNet-50's 3x3 512 -> 512 on a 7x7 map: 2.4M weights against 25k outputs)
    runs the two layers one after the other instead, with their own caches."""
    node, second = model.nodes[i], model.nodes[i + 1]
    x = F.float_array(x, "x")
    dt = x.dtype
    w = model.params[f"{node.name}.weight"]
    b = model.params.get(f"{node.name}.bias")
    f, oh, ow = node.layer.output_shape([x.shape[1:]])
    if w.size > x.shape[0] * f * oh * ow:
        def own(nd, kind):
            return {k: getattr(model, kind)[f"{nd.name}.{k}"]
                    for k in (nd.layer.param_shapes if kind == "params" else nd.layer.buffer_shapes)}
        y, conv_cache = node.layer.forward([x], own(node, "params"), {}, "test", None)
        kw = {"relu": True} if relu else {}
        out, second_cache = second.layer.forward([y], own(second, "params"), own(second, "buffers"), "test", None,
                                                 **kw)
        return out, conv_cache, second_cache, False
    if second.layer.type == "Scale":
        scale = model.params[f"{second.name}.scale"]
        sources = (w, b, scale)
        folded = FoldedScale(node.layer, second.layer, x, w, b, scale)
    else:
        bn = second
        gamma, beta = model.params[f"{bn.name}.gamma"], model.params[f"{bn.name}.beta"]
        mean, var = model.buffers[f"{bn.name}.running_mean"], model.buffers[f"{bn.name}.running_var"]
        sources = (w, b, gamma, beta, mean, var)
        folded = FoldedBatchNorm(node.layer, bn.layer, x, w, b, gamma, mean, var)
    bufs = model.__dict__.setdefault("_folded", {})
    key = (node.name, dt.str)
    # Frozen arrays (nn/frozen.py) cannot change: their folded weights are made
    # once, frozen too, and kept while the layers hold the same arrays (a kept
    # tuple was made from frozen arrays only, so the same objects need no check).
    kept = bufs.get(key)
    if type(kept) is tuple and all(a is c for a, c in zip(kept[0], sources)):
        wf, tf = kept[1], kept[2]
    else:
        frozen = all(v is None or is_immutable(v) for v in sources)
        s, t = _scale_shift(second, sources, w.shape[0])
        wf = kept if type(kept) is np.ndarray and kept.shape == w.shape and not frozen else np.empty(w.shape, dt)
        np.multiply(w, s.astype(dt)[:, None, None, None], out=wf)
        tf = t.astype(dt)
        if frozen:
            wf, tf = immutable(wf), immutable(tf)
            bufs[key] = (sources, wf, tf)
        else:
            bufs[key] = wf
    add = residual is not None and node.layer.residual_fits(x, residual)
    out, cache = node.layer.forward([x], {"weight": wf, "bias": tf}, {}, "test", None,
                                    relu=residual_relu if add else relu, residual=residual if add else None)
    return out, cache, folded, add


def _scale_shift(second, sources, channels):
    """The per-channel (s, t), float64, of the layer ``second`` (a Scale or a
    BatchNorm2d) after a convolution with bias ``b``: ``sources`` as
    folded_conv_forward gathers them."""
    if second.layer.type == "Scale":
        _, b, scale = sources
        s = _channel_values(scale, channels)
        return s, (np.zeros(channels) if b is None else b.astype(np.float64) * s)
    _, b, gamma, beta, mean, var = sources
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + second.layer.eps)
    t = beta.astype(np.float64) - mean.astype(np.float64) * s
    if b is not None:
        t += b.astype(np.float64) * s
    return s, t


class GateFold:
    """A per-channel gate the next convolution applies to its weights: the value a
    folded Mul node leaves for the Conv2d that reads it (:func:`gate_fold`)."""
    __slots__ = ("x", "gate")

    def __init__(self, x, gate):
        self.x, self.gate = x, gate

    @property
    def shape(self):
        """The gated tensor's shape (x's)."""
        return self.x.shape

    def weight(self, w):
        """The convolution's weights (F, C, KH, KW) times the gate per input channel."""
        return _core.channel_scale_forward(w, self.gate.reshape(-1).astype(w.dtype, copy=False))


def gate_fold(operands, conv_weight):
    """A :class:`GateFold` for the product of the two ``operands`` read by a
    convolution with weights ``conv_weight``, or None where the pair does not
    fold: one operand a (1, C, 1, 1) gate and the other one image (1, C, H, W) of
    the same float dtype, and no more weights than that image has values."""
    a, b = operands
    for x, g in ((a, b), (b, a)):
        if (isinstance(x, np.ndarray) and isinstance(g, np.ndarray) and x.ndim == 4 and g.ndim == 4
                and x.shape[0] == 1 and g.shape == (1, x.shape[1], 1, 1) and x.shape[1] > 1
                and x.dtype == g.dtype and x.dtype.char in "fd" and conv_weight.ndim == 4
                and conv_weight.shape[1] == x.shape[1] and conv_weight.size <= x.size):
            return GateFold(x, g)
    return None
