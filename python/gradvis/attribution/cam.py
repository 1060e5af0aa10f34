"""Class activation maps of a spatial layer: Captum's ``LayerGradCam`` and
``GuidedGradCam``, and pytorch-grad-cam's GradCAM++, XGradCAM, LayerCAM,
HiResCAM, EigenCAM, ScoreCAM and AblationCAM.

CAMs are (N, h, w) at the layer's resolution, or (N, H, W) with
``upsample=True`` (bilinear, as torch's ``interpolate(align_corners=False)``).
pytorch-grad-cam's methods return its per-layer CAM before its min-max scaling
and resizing (after its ``max(cam, 0)``), so maps of different images and
methods stay comparable; nothing is normalized.

``layer`` is a node name or index whose output is a (C, h, w) map; None picks
the last such node (the last convolutional block, :func:`default_cam_layer`).
"""
from __future__ import annotations

import numpy as np

from . import _common as C
from ._common import default_cam_layer
from .relu_rules import guided_backprop_rules

__all__ = ["grad_cam", "guided_grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam",
           "eigen_cam", "score_cam", "ablation_cam", "default_cam_layer", "CAM_METHODS"]


def _prepare(X, target, model, layer, what, internal_batch_size=None, defer=True):
    """defer: a None target stays None for methods whose gradient passes run X
    itself (each chunk's predicted class comes from its own scores)."""
    C.check_model(model, what)
    X = C.check_images(X, model)
    name = C.cam_layer(model, layer, X)
    b = C.batch_size_arg(internal_batch_size, model, X)
    t = C.resolve_target(target, X, model, defer=defer)
    return X, t, name, b


def _acts_grads(model, X, t, name, b, need_grads=True):
    """(A, dA) of the layer for all images, in chunks (dA None when not needed)."""
    As, Gs = [], []
    for i in range(0, len(X), b):
        if need_grads:
            _, A, dA = C.activation_and_gradient(model, X[i:i + b], C.rows(t, i, b), name)
            Gs.append(dA)
        else:
            A = model.forward(X[i:i + b], end=name, cache=False)[0]
        As.append(A)
    return np.concatenate(As), (np.concatenate(Gs) if need_grads else None)


def _finish(cam, X, upsample):
    cam = cam.astype(X.dtype, copy=False)
    if upsample:
        return C.resize_bilinear(cam, X.shape[2:])
    return cam


def grad_cam(X, target, model, layer=None, relu_attributions=True, upsample=False, internal_batch_size=None):
    """Grad-CAM (Captum ``LayerGradCam``): sum over channels of the layer's
    activations weighted by their spatially averaged gradients.

    Args:
        X: (N, C, H, W) images; target, model as :func:`gradvis.attribution.saliency`.
        layer: node name or index of a spatial layer (default: the last one).
        relu_attributions: apply ReLU to the map (Captum's option; default on,
            as in the paper).
        upsample: resize to the input's (H, W), bilinear.

    Returns:
        (N, h, w), or (N, H, W) with ``upsample``, in X's dtype.

    Example:
        >>> cam = grad_cam(X, None, model, upsample=True)

    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", ICCV 2017.
    """
    X, t, name, b = _prepare(X, target, model, layer, "grad_cam", internal_batch_size)
    A, dA = _acts_grads(model, X, t, name, b)
    w = dA.mean(axis=(2, 3), keepdims=True)
    cam = (w * A).sum(axis=1)
    if relu_attributions:
        cam = np.maximum(cam, 0)
    return _finish(cam, X, upsample)


def guided_grad_cam(X, target, model, layer=None, interpolate_mode="nearest", internal_batch_size=None):
    """Guided Grad-CAM (Captum ``GuidedGradCam``): guided backpropagation times
    the Grad-CAM map resized to the input; (N, C, H, W).

    One forward pass per chunk of ``internal_batch_size`` images serves both
    factors; the layer may be one a skip connection crosses.

    Args:
        interpolate_mode: 'nearest' (Captum's default) or 'bilinear'.

    Reference: Selvaraju et al., ICCV 2017, section 3.2.
    """
    if interpolate_mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate_mode must be 'nearest' or 'bilinear', got {interpolate_mode!r}")
    X, t, name, b = _prepare(X, target, model, layer, "guided_grad_cam", internal_batch_size)
    size = X.shape[2:]
    out = np.empty_like(X)
    for i in range(0, len(X), b):
        A, dA, guided = _cam_and_guided_gradients(model, X[i:i + b], C.rows(t, i, b), name)
        cam = np.maximum((dA.mean(axis=(2, 3), keepdims=True) * A).sum(axis=1), 0)
        cam = C.resize_nearest(cam, size) if interpolate_mode == "nearest" else C.resize_bilinear(cam, size)
        np.multiply(guided, cam[:, None].astype(X.dtype), out=out[i:i + b])
    return out


def _cam_and_guided_gradients(model, X, target, name):
    """(A, dA, G) for one chunk from one forward pass: the layer's output A, the
    gradient dA of the target's score with respect to it, and the guided
    backpropagation gradient G with respect to X (N, C, H, W).

    When only the layer's output crosses it, the pass runs in two parts (input to
    layer, layer to scores): dA is the plain backward of the second part, G the
    guided backward of the second part then of the first. Otherwise (a skip
    connection crosses the layer) one pass returns the layer's output; a plain
    backward reads dA at the layer and stops there, and a guided backward runs
    through the whole graph. Backward passes do not consume a cache, so each
    part's cache serves both."""
    rules = guided_backprop_rules()
    last = model.nodes[-1].name
    if name != last and not C.clean_cut(model, name):
        # (full caches: the guided passes' rules read the activations)
        A, head = model.forward(X, mode="test", end=name, cache="full")
        scores, tail = model.forward(A, mode="test", start=model.index(name) + 1, cache="full")
        dout = C.one_hot(len(X), scores.shape[1], target, scores.dtype, scores)
        dA, _ = model.backward(dout, tail, param_grads=False)
        gA, _ = model.backward(dout, tail, param_grads=False, rules=rules)
        G, _ = model.backward(gA, head, param_grads=False, rules=rules)
        return A, dA, G
    res, cache = model.forward(X, mode="test", outputs=[name] if name == last else [name, last], cache="full")
    scores, A = res[last], res[name]
    dout = {last: C.one_hot(len(X), scores.shape[1], target, scores.dtype, scores)}
    dA = C.read_gradient(model, dout, cache, name)
    if dA is None:      # the target's score does not depend on the layer
        dA = np.zeros_like(A)
    G, _ = model.backward(dout, cache, param_grads=False, rules=rules)
    return A, dA, G


def _spatial_sum(a):
    return a.sum(axis=(2, 3), keepdims=True)


def grad_cam_plus_plus(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """Grad-CAM++ (pytorch-grad-cam ``GradCAMPlusPlus``): channel weights
    sum(relu(g) * g^2 / (2 g^2 + sum(A) g^3)), (N, h, w).

    Reference: Chattopadhyay et al., "Grad-CAM++", WACV 2018.
    """
    X, t, name, b = _prepare(X, target, model, layer, "grad_cam_plus_plus", internal_batch_size)
    A, g = _acts_grads(model, X, t, name, b)
    g2 = g * g
    g3 = g2 * g
    with np.errstate(divide="ignore", invalid="ignore"):
        aij = g2 / (2 * g2 + _spatial_sum(A) * g3 + 1e-6)
    aij = np.where(g != 0, aij, 0)
    w = (np.maximum(g, 0) * aij).sum(axis=(2, 3), keepdims=True)
    return _finish(np.maximum((w * A).sum(axis=1), 0), X, upsample)


def xgrad_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """XGrad-CAM (pytorch-grad-cam ``XGradCAM``): weights sum(g * A) / (sum(A) + 1e-7).

    Reference: Fu et al., "Axiom-based Grad-CAM", BMVC 2020.
    """
    X, t, name, b = _prepare(X, target, model, layer, "xgrad_cam", internal_batch_size)
    A, g = _acts_grads(model, X, t, name, b)
    w = (g * A / (_spatial_sum(A) + 1e-7)).sum(axis=(2, 3), keepdims=True)
    return _finish(np.maximum((w * A).sum(axis=1), 0), X, upsample)


def layer_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """LayerCAM (pytorch-grad-cam ``LayerCAM``): sum over channels of relu(g) * A.

    Reference: Jiang et al., "LayerCAM", IEEE TIP 2021.
    """
    X, t, name, b = _prepare(X, target, model, layer, "layer_cam", internal_batch_size)
    A, g = _acts_grads(model, X, t, name, b)
    return _finish(np.maximum((np.maximum(g, 0) * A).sum(axis=1), 0), X, upsample)


def hires_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """HiResCAM (pytorch-grad-cam ``HiResCAM``): sum over channels of g * A.

    Reference: Draelos & Carin, "Use HiResCAM instead of Grad-CAM", 2020.
    """
    X, t, name, b = _prepare(X, target, model, layer, "hires_cam", internal_batch_size)
    A, g = _acts_grads(model, X, t, name, b)
    return _finish(np.maximum((g * A).sum(axis=1), 0), X, upsample)


def eigen_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """EigenCAM (pytorch-grad-cam ``EigenCAM``): the activations' projection on
    their first principal component (class-agnostic; ``target`` is checked but
    unused). The sign of a principal component is arbitrary: as in
    pytorch-grad-cam, it is LAPACK's.

    Reference: Muhammad & Yeasin, "Eigen-CAM", IJCNN 2020.
    """
    C.check_model(model, "eigen_cam")
    X = C.check_images(X, model)
    name = C.cam_layer(model, layer, X)
    b = C.forward_batch_arg(internal_batch_size, model, X)
    if target is not None:
        C.resolve_target(target, X, model)
    A, _ = _acts_grads(model, X, None, name, b, need_grads=False)
    out = np.empty((A.shape[0],) + A.shape[2:], A.dtype)
    for i, a in enumerate(A):
        m = a.reshape(a.shape[0], -1).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        out[i] = (m @ vt[0]).reshape(a.shape[1:])
    return _finish(np.maximum(out, 0), X, upsample)


def score_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """Score-CAM (pytorch-grad-cam ``ScoreCAM``): channel weights are the softmax
    over channels of the target's score on the image masked by each channel's
    activation map (upsampled with align_corners=True, min-max scaled); one
    forward pass per channel and image.

    A channel whose map is all zero (a ReLU channel the image does not excite)
    masks the image to zero: its score is that of a zero image, computed once,
    instead of one pass per such channel.

    Reference: Wang et al., "Score-CAM", CVPR Workshops 2020.
    """
    X, t, name, b = _prepare(X, target, model, layer, "score_cam", internal_batch_size, defer=False)
    b = C.forward_batch_arg(internal_batch_size, model, X)
    A, _ = _acts_grads(model, X, t, name, b, need_grads=False)
    H, W = X.shape[2:]
    cams = np.empty((len(X),) + A.shape[2:], X.dtype)
    k = A.shape[1]
    zero_scores = None
    for i in range(len(X)):
        live = np.flatnonzero(A[i].reshape(k, -1).any(axis=1))
        scores = np.empty(k, np.float64)
        if len(live) < k:
            if zero_scores is None:
                zero_scores = model.forward(np.zeros((1,) + X.shape[1:], X.dtype), cache=False)[0][0]
            scores[:] = zero_scores[t[i]]
        if not len(live):
            cams[i] = 0
            continue
        step = -(-len(live) // max(1, -(-len(live) // b)))     # equal chunks of at most b
        for c0 in range(0, len(live), step):
            cs = live[c0:c0 + step]     # their maps upsampled and scaled per chunk (bounded memory)
            up = C.resize_bilinear(A[i][cs], (H, W), align_corners=True)
            flat = up.reshape(len(cs), -1)
            lo, hi = flat.min(axis=1), flat.max(axis=1)
            up -= lo[:, None, None]
            up /= (hi - lo + 1e-8)[:, None, None]
            masked = X[i][None] * up[:, None]
            s = model.forward(masked.astype(X.dtype, copy=False), cache=False)[0]
            scores[cs] = s[:, t[i]]
        w = np.exp(scores - scores.max())
        w /= w.sum()
        cams[i] = (w.astype(X.dtype)[:, None, None] * A[i]).sum(axis=0)
    return _finish(np.maximum(cams, 0), X, upsample)


def ablation_cam(X, target, model, layer=None, upsample=False, internal_batch_size=None):
    """Ablation-CAM (pytorch-grad-cam ``AblationCAM``): channel weights
    ``(score - score with the channel ablated) / score``; one pass from the
    layer to the output per channel and image.

    A channel is ablated to 0 when the image's activations at the layer have
    minimum 0 (a ReLU output), else to that minimum minus 1e7 (pytorch-grad-cam
    lowers each further ablation in a batch by another 1e7 there; here each
    channel is ablated alone). The passes restart at the layer, so the layer
    must be a cut of the graph: no skip connection may cross it.

    Reference: Desai & Ramaswamy, "Ablation-CAM", WACV 2020.
    """
    X, t, name, b = _prepare(X, target, model, layer, "ablation_cam", internal_batch_size, defer=False)
    crossing = C.clean_cut(model, name)
    if crossing:
        raise ValueError(f"ablation_cam restarts the model after layer {name!r}, but later layers also read "
                         f"{', '.join(map(repr, crossing))} (a skip connection crosses it); choose the "
                         f"output of a block")
    b = C.forward_batch_arg(internal_batch_size, model, X)
    A, _ = _acts_grads(model, X, t, name, b, need_grads=False)
    nxt = model.index(name) + 1
    if nxt >= len(model.nodes):
        raise ValueError(f"layer {name!r} is the model's output; choose an earlier layer")
    k = A.shape[1]
    orig = np.empty(len(X), np.float64)
    cams = np.empty((len(X),) + A.shape[2:], X.dtype)
    for i in range(len(X)):
        a = A[i]
        orig_score = model.forward(a[None], start=nxt, cache=False)[0][0, t[i]]
        orig[i] = orig_score
        value = 0.0 if a.min() == 0 else float(a.min()) - 1e7
        scores = np.empty(k, np.float64)
        for c0 in range(0, k, b):
            cs = np.arange(c0, min(k, c0 + b))
            batch = np.repeat(a[None], len(cs), axis=0)
            batch[np.arange(len(cs)), cs] = value
            scores[cs] = model.forward(batch, start=nxt, cache=False)[0][:, t[i]]
        w = ((orig_score - scores) / orig_score).astype(X.dtype)
        cams[i] = (w[:, None, None] * a).sum(axis=0)
    return _finish(np.maximum(cams, 0), X, upsample)


CAM_METHODS = {
    "grad_cam": grad_cam, "grad_cam_plus_plus": grad_cam_plus_plus, "xgrad_cam": xgrad_cam,
    "layer_cam": layer_cam, "hires_cam": hires_cam, "eigen_cam": eigen_cam,
    "score_cam": score_cam, "ablation_cam": ablation_cam,
}
