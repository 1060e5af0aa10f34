"""Frozen weights: parameters and buffers that cannot change, so that the kernels
may keep what they prepare from them.

A frozen array is a read-only view of a ``bytes`` object. numpy refuses to make
such an array, or any view of it, writeable again, so its values are fixed for its
whole life, and the convolution kernels can recognise it without reading it
(``_core.weight_token``). They then keep their packed weights and Winograd's
transformed filters across calls, found by that token, instead of packing the
weights again on every call or reading them all to check a digest. A batch norm
folded into the convolution before it is likewise computed once for frozen
weights (nn/fold.py). Writeable weights keep working as before: packed on every
call, Winograd's filters found by a digest of their bytes.

This is the sense of ``torch.jit.freeze`` and of an ONNX Runtime session's
initializers: weights as constants of an inference graph. The loaders return
frozen models; training unfreezes the model it trains.
"""
from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["FrozenWeights", "immutable", "is_immutable"]


def is_immutable(a):
    """Whether ``a`` is an ndarray whose values cannot change (a read-only view of
    a ``bytes`` object)."""
    return type(a) is np.ndarray and _core.weight_token(a) != 0


def immutable(a):
    """A frozen copy of the array ``a`` (``a`` itself if it is frozen already):
    same dtype, shape and values, read-only, C-contiguous."""
    if is_immutable(a):
        return a
    return np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)   # tobytes: C order


def _numeric(a):
    return isinstance(a, np.ndarray) and a.dtype.kind in "fiucb"


class FrozenWeights:
    """:meth:`freeze`, :meth:`unfreeze` and :attr:`frozen` for a model's
    ``params`` and ``buffers`` (dicts of arrays)."""

    def freeze(self):
        """Make every parameter and buffer immutable (a read-only view of a
        ``bytes`` object; numpy cannot make it writeable again) and return the model.

        The convolutions then keep their packed weights and Winograd's transformed
        filters across calls without reading the weights to check them, and a batch
        norm is folded into the convolution before it once, not on every pass:
        ResNet-50's forward pass and its input gradient at batch 1 run 5-7%
        faster, the bundled model's 6-9% (bench/RESULTS.md). What is kept
        (``gradvis.packed_cache_info()``, ``gradvis.winograd_cache_info()``)
        goes with the arrays.

        Models from :func:`gradvis.load_onnx`, :func:`gradvis.from_torch`,
        :func:`gradvis.load_model`, :func:`gradvis.load_cs231n_h5` and
        :func:`gradvis.load_pretrained` come frozen. Writing into a frozen array
        raises numpy's ``ValueError: assignment destination is read-only``: call
        :meth:`unfreeze` first, or assign a new array (``model.params[k] = a``;
        it stays writeable until the next freeze). Training unfreezes the model.
        """
        for d in (self.params, self.buffers):
            for k, v in d.items():
                if _numeric(v):
                    d[k] = immutable(v)
        return self

    def unfreeze(self):
        """Give every frozen parameter and buffer back as a writeable copy (the
        others are left as they are) and return the model."""
        for d in (self.params, self.buffers):
            for k, v in d.items():
                if is_immutable(v):
                    d[k] = np.array(v)
        return self

    @property
    def frozen(self):
        """Whether every parameter and buffer is immutable (:meth:`freeze`)."""
        return all(is_immutable(v) for d in (self.params, self.buffers) for v in d.values())
