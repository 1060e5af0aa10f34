"""Backward rules that redefine ReLU's gradient (guided backpropagation and
deconvolution), for :meth:`gradvis.Model.backward`'s ``rules``.

The rules apply to every :class:`gradvis.nn.ReLU` node, including the ReLUs the
model fuses into the convolution or batch norm before them (such a node's cache
is its output, whose sign is that of its input). Other activations (ReLU6,
LeakyReLU, ...) keep their gradient, as in Captum, whose rules hook
``torch.nn.ReLU`` modules only.
"""
from __future__ import annotations

from ..nn import functional as F
from ..nn.activation import ReLU

__all__ = ["guided_backprop_rules", "deconvolution_rules"]


def _relu_input(cache):
    # an unfused ReLU caches its input, a fused one its output: same sign pattern
    return cache


# Both rules run on every ReLU of every backward pass: they call the compiled
# element-wise kernels (multi-threaded, one output array each) instead of numpy
# expressions with full-size temporaries. relu_backward(g, x) is g where x > 0,
# else 0, to the bit; relu_forward(g) is max(g, 0) with NaN kept, and keeps a
# -0.0 entry as -0.0 where numpy's maximum gives +0.0 (an equal value).
def _guided(layer, dout, cache):
    # Springenberg et al. 2015: the gradient's mask (input > 0) and only positive gradients
    x = _relu_input(cache)
    return [F.relu_backward(F.relu_forward(dout)[0], x)]


def _deconv(layer, dout, cache):
    # Zeiler & Fergus 2014: ReLU applied to the gradient, the forward's mask ignored
    return [F.relu_forward(dout)[0]]


def guided_backprop_rules():
    """{ReLU: rule}: dx = max(dout, 0) where x > 0, else 0."""
    return {ReLU: _guided}


def deconvolution_rules():
    """{ReLU: rule}: dx = max(dout, 0)."""
    return {ReLU: _deconv}
