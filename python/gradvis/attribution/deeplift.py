"""DeepLift with the rescale rule (Captum ``DeepLift``)."""
from __future__ import annotations

import numpy as np

from . import _common as C
from ..nn.activation import HardSigmoid, HardSwish, LeakyReLU, ReLU, ReLU6, SiLU, Sigmoid, Tanh
from ..nn.conv import Conv2d
from ..nn.elementwise import Add, Bias, Clip, Concat, Pad, PReLU, Scale, Sub
from ..nn.linear import Dropout, Flatten, Linear
from ..nn.norm import BatchNorm1d, BatchNorm2d
from ..nn.pointwise import CELU, ELU, SELU, LogSigmoid, Mish, Softplus, Softsign, ThresholdedReLU
from ..nn.pooling import AvgPool2d, GlobalAvgPool, MaxPool2d

__all__ = ["deeplift", "DEEPLIFT_LINEAR", "DEEPLIFT_RESCALE"]

# Layers that are linear (affine) in each input at test time: the gradient is the multiplier.
DEEPLIFT_LINEAR = (Conv2d, BatchNorm2d, BatchNorm1d, Linear, AvgPool2d, GlobalAvgPool, Flatten, Dropout,
                   Add, Sub, Concat, Pad, Bias, Scale)
# Elementwise nonlinearities: the rescale rule, multiplier = delta_out / delta_in.
DEEPLIFT_RESCALE = (ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, HardSigmoid, HardSwish, SiLU, Clip, ELU, SELU, CELU,
                    Softplus, LogSigmoid, Softsign, Mish, ThresholdedReLU, PReLU)

_EPS = 1e-10    # Captum's: below it, |delta_in| is taken as 0 and the gradient is used


def _halves(a):
    n = a.shape[0] // 2
    return a[:n], a[n:]


# The images and their baselines run as one batch of 2n rows: rows i and n + i
# share delta_in and delta_out, so the rules compute them on n rows and apply
# them to both halves of the gradient (viewed as (2, n, ...)), without
# full-size concatenations. The layer's own gradient is needed only where
# |delta_in| < eps, so it is computed only when such entries exist. The
# operations and their order are Captum's: the results are the same bits as
# with the concatenated arrays.
def _pair(a):
    return a.reshape((2, a.shape[0] // 2) + a.shape[1:])


def _gradient_where_no_delta(layer, dout, cache, d_in, res):
    """res (2n, ...) takes the layer's gradient where |delta_in| < eps."""
    small = np.abs(d_in) < _EPS
    if small.any():
        grad = layer.backward_inputs(dout, cache)[0]
        np.copyto(_pair(res), _pair(np.asarray(grad, res.dtype)), where=small)
    return res


def _rescale_rule(tensors, xin, yout):
    def rule(layer, dout, cache):
        x, xr = _halves(tensors[xin])
        y, yr = _halves(tensors[yout])
        d_in = x - xr
        res = np.empty(dout.shape, dout.dtype)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # dout * delta_out / delta_in, as Captum
            np.multiply(_pair(dout), y - yr, out=_pair(res))
            np.divide(_pair(res), d_in, out=_pair(res))
        return [_gradient_where_no_delta(layer, dout, cache, d_in, res)]
    return rule


def _maxpool_rule(tensors, xin, yout):
    # Captum's rule: route dout * (max(y, y_ref) - y_ref) through the input's argmax and
    # dout * (y - max(y, y_ref)) through the reference's, add, divide by delta_in.
    def rule(layer, dout, cache):
        x, xr = _halves(tensors[xin])
        y, yr = _halves(tensors[yout])
        n = y.shape[0]
        ymax = np.maximum(y, yr)
        scaled = np.empty(dout.shape, dout.dtype)
        np.subtract(ymax, yr, out=scaled[:n])
        np.subtract(y, ymax, out=scaled[n:])
        scaled *= dout
        routed = layer.backward_inputs(scaled, cache)[0]
        d_in = x - xr
        summed = routed[:n] + routed[n:]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            summed /= d_in
        res = np.concatenate([summed, summed])
        return [_gradient_where_no_delta(layer, dout, cache, d_in, res)]
    return rule


def _check_layers(model):
    bad = [f"{n.name!r} ({n.layer.type})" for n in model.nodes
           if not isinstance(n.layer, DEEPLIFT_LINEAR + DEEPLIFT_RESCALE + (MaxPool2d,))]
    if bad:
        raise ValueError(
            f"deeplift has no rule for layer(s) {', '.join(bad)}; it covers linear layers "
            f"({', '.join(sorted({c.type for c in DEEPLIFT_LINEAR}))}), the rescale rule for "
            f"{', '.join(sorted({c.type for c in DEEPLIFT_RESCALE}))} and MaxPool2d")


def deeplift(X, target, model, baselines=None, internal_batch_size=None, return_convergence_delta=False):
    """DeepLift, rescale rule (Captum ``DeepLift``); (N, C, H, W).

    The images and their baselines run through the model together; each
    elementwise nonlinearity passes back ``dout * (y - y_ref) / (x - x_ref)``
    (its gradient where ``|x - x_ref| < 1e-10``), max pooling uses Captum's
    rule, linear layers their gradient; the multipliers at the input times
    ``X - baseline`` are the attributions, which sum to
    ``score(X) - score(baseline)`` (summation to delta).

    Covered layers: convolution, batch norm, linear, pools, flatten, dropout,
    add/sub/concat/pad/bias/scale, and the elementwise activations (ReLU,
    ReLU6, LeakyReLU, Sigmoid, Tanh, HardSigmoid, HardSwish, SiLU, Clip, ELU,
    SELU, CELU, Softplus, LogSigmoid, Softsign, Mish, ThresholdedReLU, PReLU; Captum
    applies the rescale rule to its ReLU, LeakyReLU, Sigmoid, Tanh, ELU and
    Softplus modules and the plain gradient to others such as ReLU6). A model
    with other layers (e.g. Mul of two activations) raises ValueError naming
    them.

    Args:
        X, target, model: as :func:`gradvis.attribution.saliency`.
        baselines: None (zeros), a number or an array broadcastable to X.
        internal_batch_size: images per pass (each pass also runs their baselines).
        return_convergence_delta: also return ``sum(attr) - (score(X) -
            score(baseline))`` per image (N,).

    Reference: Shrikumar, Greenside & Kundaje, "Learning Important Features
    Through Propagating Activation Differences", ICML 2017.
    """
    C.check_model(model, "deeplift")
    X = C.check_images(X, model)
    _check_layers(model)
    base = C.baselines_arg(baselines, X)
    b = C.batch_size_arg(internal_batch_size, model, X)
    if internal_batch_size is None:
        b = max(1, b // 2)     # a pass holds the images and their baselines
    t = C.resolve_target(target, X, model)
    last = model.nodes[-1].name
    special = [n for n in model.nodes if isinstance(n.layer, DEEPLIFT_RESCALE + (MaxPool2d,))]
    names = sorted({n.inputs[0] for n in special} | {n.name for n in special} | {last})
    outs = [k for k in names if k != "input"]
    attr = np.empty_like(X)
    delta = np.empty(len(X), np.float64)
    for i in range(0, len(X), b):
        x, xb, tt = X[i:i + b], base[i:i + b], t[i:i + b]
        Z = np.concatenate([x, xb])
        res, cache = model.forward(Z, mode="test", outputs=outs, cache="full")   # for the rules
        tensors = dict(res)
        tensors["input"] = Z
        rules = {}
        for n in special:
            make = _maxpool_rule if isinstance(n.layer, MaxPool2d) else _rescale_rule
            rules[n.name] = make(tensors, n.inputs[0], n.name)
        scores = res[last]
        dout = {last: C.one_hot(len(Z), scores.shape[1], np.concatenate([tt, tt]), scores.dtype)}
        dZ, _ = model.backward(dout, cache, param_grads=False, rules=rules)
        a = (x - xb) * dZ[:len(x)]
        attr[i:i + b] = a
        k = np.arange(len(x))
        delta[i:i + b] = (a.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
                          - (scores[k, tt].astype(np.float64) - scores[len(x) + k, tt]))
    return (attr, delta) if return_convergence_delta else attr
