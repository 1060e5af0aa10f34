"""A map's gradient kept as per-channel terms during a backward pass that takes
input gradients only (Model.backward with ``param_grads=False`` and no rules).

In a squeeze-and-excitation block (Hu et al. 2018, arXiv:1709.01507) the map
``h = act(pre)`` is read twice: by the gate's Mul (``h * gate``) and by the
global average pool that computes the gate. Its gradient is

    dh = dy * gate[n, c] + dpool[n, c] / (H W),

and the activation's input gradient is ``dh * act'(pre)``. Node by node that is
four passes over the map, each writing an array the next one reads:
channel_scale_backward's product, global_avg_pool_backward's broadcast, their
sum, and the activation's backward. Here the Mul and the pool hand back their
terms (:class:`ChannelGrad`), the sum keeps them, and the activation node makes
its input gradient from them and ``pre`` in one pass (``_core.channel_grad``),
with the same bits (a ReLU's or clamp's from its mask bits in a lean pass). Any
other reader gets the array, made in one pass too.

The same holds a residual block's output gradient (ResNet, RegNet): the block's
output is read by the next block and by its residual Add, and its two gradients
are kept as ``base + add`` until the ReLU that made it masks their sum, in one
pass where node by node the sum was written and read back.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .activation import HardSwish, SiLU
from .elementwise import Mul, add_arrays
from .passes import ActBits
from .pooling import GlobalAvgPool

__all__ = ["ChannelGrad", "channel_terms", "add_grads"]


class ChannelGrad:
    """The gradient of an (N, C, ...) map as ``base * scale[n, c] + pool[n, c] / HW +
    add`` (HW the product of the axes after C): ``base`` (the map's shape) with
    ``scale`` ((1, C) or (N, C); None: base itself), ``pool`` ((N, C)), ``add``
    (another reader's gradient, an array of the map's shape); absent terms are None."""
    __slots__ = ("shape", "dtype", "base", "scale", "pool", "add")

    def __init__(self, shape, dtype, base=None, scale=None, pool=None, add=None):
        self.shape, self.dtype = tuple(shape), dtype
        self.base, self.scale, self.pool, self.add = base, scale, pool, add

    def plus(self, other):
        """The sum with another ChannelGrad or an array as one ChannelGrad, where the
        two hold different terms; else None."""
        if other.shape != self.shape or other.dtype is not self.dtype or self.add is not None:
            return None
        if type(other) is np.ndarray:
            return ChannelGrad(self.shape, self.dtype, self.base, self.scale, self.pool, other) \
                if other.flags.c_contiguous else None
        if (other.add is not None or (self.base is None) == (other.base is None)
                or (self.pool is None) == (other.pool is None)):
            return None
        a, b = (self, other) if self.base is not None else (other, self)
        return ChannelGrad(self.shape, self.dtype, a.base, a.scale, b.pool)

    def array(self):
        """The gradient as an array (the values of the ops it stands for)."""
        return _core.channel_grad(self.shape, self.base, self.scale, self.pool, self.add)

    def through(self, layer, cache):
        """The input gradient of the activation ``layer`` whose output this is the
        gradient of, made in the same pass: a SiLU or HardSwish from its cache (its
        input), a ReLU, ReLU6 or Clip from a lean cache's mask bits (ActBits); None
        for other layers and caches."""
        t = type(cache)
        if t is ActBits:
            if cache.dtype is not self.dtype:
                return None
            return _core.channel_grad(self.shape, self.base, self.scale, self.pool, self.add, mask=cache.bits)
        lt = type(layer)
        if ((lt is SiLU or lt is HardSwish) and t is np.ndarray and cache.dtype is self.dtype
                and cache.shape == self.shape):
            return _core.channel_grad(self.shape, self.base, self.scale, self.pool, self.add, cache,
                                      activation="silu" if lt is SiLU else "hardswish")
        return None


def channel_terms(layer, g, cache):
    """The input gradients of a gate's Mul (the map's as a ChannelGrad, the gate's as
    an array) or of a GlobalAvgPool (a ChannelGrad), from the output gradient g and
    the node's cache; None where the node is neither or g is not an array of the
    input's dtype (the layer's own backward then runs)."""
    t = type(layer)
    if t is Mul and type(cache) is tuple and cache[0] == "gate":
        _, big, gate, swapped = cache
        if type(g) is not np.ndarray or g.dtype is not big.dtype or g.shape != big.shape:
            return None
        g2 = gate.reshape(gate.shape[0], gate.shape[1])
        dgate = _core.channel_scale_backward(g, big, g2, False, True)[1].reshape(gate.shape)
        dbig = ChannelGrad(big.shape, big.dtype, base=g, scale=g2)
        return [dgate, dbig] if swapped else [dbig, dgate]
    if t is GlobalAvgPool and type(cache) is tuple and len(cache) == 2:
        shape, dtype = cache
        if (type(g) is not np.ndarray or g.dtype is not dtype or len(shape) != 4
                or g.size != shape[0] * shape[1]):
            return None
        return [ChannelGrad(shape, dtype, pool=g.reshape(shape[0], shape[1]))]
    return None


def add_grads(a, b, lazy=False):
    """a + b for two gradients of one tensor, arrays or ChannelGrads: kept as terms
    where they fit one ChannelGrad, else added. With ``lazy`` (a pass that takes
    input gradients only) two float arrays (N, C, ...) of one dtype are kept too:
    ResNet's and RegNet's block outputs, read by the next block and by its residual
    Add, whose ReLU then masks the sum in the same pass."""
    ta, tb = type(a) is ChannelGrad, type(b) is ChannelGrad
    if ta or tb:
        s = a.plus(b) if ta else b.plus(a)
        if s is not None:
            return s
    elif (lazy and type(a) is np.ndarray and type(b) is np.ndarray and a.ndim >= 2 and a.shape == b.shape
          and a.dtype is b.dtype and a.dtype.char in "fd" and a.flags.c_contiguous and b.flags.c_contiguous):
        return ChannelGrad(a.shape, a.dtype, base=a, add=b)
    return add_arrays(a.array() if ta else a, b.array() if tb else b)
