"""Feature visualization by optimization: :func:`render` (Olah, Mordvintsev &
Schubert, "Feature Visualization", Distill 2017; Lucid's ``render_vis``).

Each step draws the images from their parameterization (:mod:`.param`), shows the
network a randomly transformed copy (:mod:`.transforms`), evaluates the objective
(:mod:`.objectives`) on the activations it reads, carries the gradient back through
the network, the transforms and the parameterization exactly, and takes an Adam
step up the objective. In the first ``redirected_relu_steps`` steps ReLUs pass
gradients that would otherwise all be blocked (Lucid's redirected ReLU), so that
units dead at the start can come alive.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _checks
from ..nn.activation import ReLU, ReLU6
from ..nn.graph import check_model
from . import objectives as objectives_
from .objectives import INPUT, LOGITS, Objective, as_objective, per_image
from .param import ImageParam, color_correlation, image
from .transforms import Transform, compose, resize, standard_transforms

__all__ = ["render", "Adam", "redirected_relu", "redirected_relu6", "REDIRECTED_RULES",
           "to_model_input", "from_model_input", "images_grad", "model_input_grad", "as_transform",
           "fit_transforms"]


# ---------------------------------------------------------------------------- redirected ReLU
def _choose(relu_grad, redirected):
    """Per image: the plain gradient, or the redirected one where the plain one is all zero."""
    dead = ~relu_grad.reshape(relu_grad.shape[0], -1).any(axis=1)
    if dead.any():
        relu_grad[dead] = redirected[dead]
    return relu_grad


def redirected_relu(layer, dout, cache):
    """Lucid's ``redirected_relu_grad`` as a :meth:`Model.backward` rule for ReLU.

    The gradient of the objective (being maximized) with respect to the ReLU's
    input: the usual ``dout * (x > 0)``, except for an image whose gradient this
    gives is zero everywhere; there, ``dout`` passes wherever it does not push an
    already negative input further down (x <= 0 and dout < 0 are blocked).
    ``cache`` is the ReLU's input, or its output for a ReLU fused into a
    convolution: both are > 0 where the ReLU passes.
    """
    passes = cache > 0
    relu_grad = np.where(passes, dout, 0).astype(dout.dtype, copy=False)
    redirected = np.where(~passes & (dout < 0), 0, dout).astype(dout.dtype, copy=False)
    return [_choose(relu_grad, redirected)]


def redirected_relu6(layer, dout, cache):
    """Lucid's ``redirected_relu6_grad`` for clamps (ReLU6): below ``lo`` gradients
    that push down and above ``hi`` gradients that push up are blocked."""
    x, lo, hi = cache
    outside = (x <= lo) | (x >= hi)
    relu_grad = np.where(outside, 0, dout).astype(dout.dtype, copy=False)
    blocked = ((x <= lo) & (dout < 0)) | ((x >= hi) & (dout > 0))
    redirected = np.where(blocked, 0, dout).astype(dout.dtype, copy=False)
    return [_choose(relu_grad, redirected)]


REDIRECTED_RULES = {ReLU: redirected_relu, ReLU6: redirected_relu6}


# ---------------------------------------------------------------------------- optimizer
class Adam:
    """Adam (Kingma & Ba 2015) stepping *up* the objective, in place on a float32 array."""

    def __init__(self, learning_rate=0.05, beta1=0.9, beta2=0.999, eps=1e-8):
        self.learning_rate = _checks.nonneg_float(learning_rate, "learning_rate", positive=True)
        self.beta1 = _checks.finite_float(beta1, "beta1")
        self.beta2 = _checks.finite_float(beta2, "beta2")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
        self.eps = _checks.nonneg_float(eps, "eps", positive=True)
        self.t = 0
        self.m = self.v = None

    def step(self, params, grad):
        if self.m is None:
            self.m = np.zeros_like(params)
            self.v = np.zeros_like(params)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m *= b1
        self.m += (1 - b1) * grad
        self.v *= b2
        self.v += (1 - b2) * (grad * grad)
        lr = self.learning_rate * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        params += (lr * self.m / (np.sqrt(self.v) + self.eps)).astype(params.dtype, copy=False)


# ---------------------------------------------------------------------------- model input
def _channel_mean(model, size):
    m = np.asarray(model.mean, np.float32)
    if m.ndim == 1:
        return m[:, None, None]
    if tuple(m.shape[1:]) == tuple(size):
        return m
    return m.mean(axis=(1, 2))[:, None, None]


def to_model_input(images01, model):
    """RGB images in [0, 1], (N, 3, H, W), as the model's input (its channel order,
    mean and std): ``model.deprocess`` of the result gives the uint8 images."""
    x = np.asarray(images01, dtype=np.float32)
    if model.channel_order == "BGR":
        x = x[:, ::-1]
    return np.ascontiguousarray((255.0 * x - _channel_mean(model, x.shape[2:])) / model.std[:, None, None],
                                dtype=np.float32)


def from_model_input(X, model):
    """The inverse of :func:`to_model_input`: images in the model's input space,
    (N, 3, H, W), as float32 RGB values in [0, 1] (not clipped)."""
    x = (np.asarray(X, np.float32) * model.std[:, None, None].astype(np.float32)
         + _channel_mean(model, np.shape(X)[2:])) / np.float32(255.0)
    if model.channel_order == "BGR":
        x = x[:, ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def images_grad(dX, model):
    """The gradient with respect to the [0, 1] RGB images of :func:`to_model_input`
    from the gradient ``dX`` (N, 3, H, W) with respect to its result (the
    transposed Jacobian of that affine map)."""
    g = dX * (255.0 / model.std[:, None, None]).astype(dX.dtype)
    if model.channel_order == "BGR":
        g = g[:, ::-1]
    return g


def model_input_grad(d_images, model):
    """The gradient with respect to the model's input X from the gradient
    ``d_images`` with respect to ``from_model_input(X)`` (the transposed Jacobian
    of :func:`from_model_input`)."""
    g = d_images
    if model.channel_order == "BGR":
        g = g[:, ::-1]
    return g * (model.std[:, None, None] / 255.0).astype(g.dtype)


# ---------------------------------------------------------------------------- checks
def _node_shapes(model, size, names):
    """Output shapes (without the batch axis) of the nodes up to the last of
    ``names`` for (C, *size) inputs; raises the first layer's ValueError."""
    shapes = {"input": (model.input_shape[0],) + tuple(size)}
    last = max(model.index(n) for n in names)
    for node in model.nodes[:last + 1]:
        try:
            shapes[node.name] = tuple(node.layer.output_shape([shapes[i] for i in node.inputs]))
        except ValueError as e:
            raise ValueError(f"layer {node.name!r} ({node.layer.type}): {e}") from None
    return shapes


def _fit_error(model, size, names):
    """None if the model computes ``names`` from (C, *size) images, else its ValueError."""
    try:
        _node_shapes(model, size, names)
        return None
    except ValueError as e:
        return e


def _thresholds(thresholds, steps):
    if thresholds is None:
        return (steps,)
    if isinstance(thresholds, (numbers.Integral, np.integer)) and not isinstance(thresholds, bool):
        thresholds = (thresholds,)
    if isinstance(thresholds, (str, bytes)):
        raise TypeError(f"thresholds must be a sequence of step counts, got {thresholds!r}")
    try:
        vals = [_checks.integer(t, "thresholds", 1) for t in thresholds]
    except TypeError as e:
        raise TypeError(f"thresholds must be a sequence of step counts: {e}") from None
    if not vals:
        raise ValueError("thresholds must name at least one step")
    bad = [t for t in vals if t > steps]
    if bad:
        raise ValueError(f"thresholds {bad} are beyond steps={steps}; a snapshot is taken after "
                         f"step t for each t in thresholds (1 <= t <= steps)")
    return tuple(sorted(set(vals)))


def _layer_names(obj, model):
    """{objective's layer key: model node name} for the keys that are model layers."""
    names = {}
    for key in obj.layers():
        if key == INPUT:
            continue
        if key == LOGITS:
            names[key] = model.nodes[-1].name
        else:
            names[key] = model.nodes[model.index(key)].name
    return names


# ---------------------------------------------------------------------------- transforms
def as_transform(transforms, model):
    """The :class:`Transform` that ``transforms`` names for ``model``: ``"standard"``
    (Lucid's list sized to the model's input, :func:`standard_transforms`), None or
    ``[]`` for none, one Transform, or a list of them (composed in order)."""
    if isinstance(transforms, str):
        if transforms != "standard":
            raise ValueError(f"transforms must be 'standard', None, a Transform or a list of them, "
                             f"got {transforms!r}")
        return standard_transforms(min(model.input_shape[1:]))
    if transforms is None:
        return compose([])
    if isinstance(transforms, Transform):
        return transforms
    try:
        items = list(transforms)
    except TypeError:
        raise TypeError(f"transforms must be 'standard', None, a gradvis.optvis.transforms.Transform "
                        f"or a list of them, got {type(transforms).__name__}") from None
    return compose(items)


def fit_transforms(tf, model, size, nodes):
    """Check that ``model`` computes the nodes ``nodes`` from (H, W) = ``size``
    images seen through the transforms ``tf``, and return ``(tf, shapes_at)``:
    ``tf`` with a resize to the model's input size appended for a network that only
    takes that size (a Flatten before a Linear), and the size the model then sees
    (for its layers' shapes). Raises a ValueError naming the size otherwise."""
    h, w = size
    lo, hi = tf.size_range(h, w)
    if min(lo) < 1:
        raise ValueError(f"the transforms {tf} leave nothing of a {h}x{w} image (down to {lo[0]}x{lo[1]}); "
                         f"render a larger image or use smaller transforms")
    shapes_at = (h, w)
    if nodes:
        in_hw = model.input_shape[1:]
        fixed = _fit_error(model, in_hw, nodes) is None and \
            _fit_error(model, (in_hw[0] + 8, in_hw[1] + 8), nodes) is not None
        if fixed:
            tf = compose([tf, resize(in_hw)])   # a network of one input size
            shapes_at = in_hw
        else:
            err = _fit_error(model, (h, w), nodes)
            if err is not None:
                raise ValueError(f"the image size {h}x{w} is too small for this model: {err}")
            for s in (lo, hi):
                err = _fit_error(model, s, nodes)
                if err is not None:
                    raise ValueError(f"the transforms turn a {h}x{w} image into one of {s[0]}x{s[1]}, "
                                     f"which the model cannot take ({err}); render a larger image")
    return tf, shapes_at


# ---------------------------------------------------------------------------- render
def render(objective, model, param=None, transforms="standard", optimizer="adam", learning_rate=0.05,
           steps=512, thresholds=None, seed=0, redirected_relu_steps=16, callback=None):
    """Optimize images to maximize ``objective`` on ``model`` (Lucid's ``render_vis``).

    Args:
        objective: an :class:`~gradvis.optvis.objectives.Objective`, its text form
            (:func:`~gradvis.optvis.objectives.parse`, e.g. ``"channel:relu5:7"``), or a
            list of N objectives rendered as a batch of N images, one each.
        model: a :class:`gradvis.Model` taking RGB images.
        param: an :class:`~gradvis.optvis.param.ImageParam` (default
            ``param.image(H, W, batch=N)`` at the model's input size, FFT and
            decorrelated with the model's colour matrix).
        transforms: ``"standard"`` (Lucid's list sized to the model's input,
            :func:`~gradvis.optvis.transforms.standard_transforms`), None or ``[]``
            for none, a list of transforms or one :class:`Transform`. For a network
            that takes one input size only, a resize to it is appended.
        optimizer: ``"adam"`` or an object with ``step(params, grad)`` that moves
            ``params`` up ``grad`` in place (e.g. :class:`Adam` with other betas).
        learning_rate: Adam's step size (with ``optimizer="adam"``).
        steps: number of steps (>= 1). Images meant to be read by people or
            by other networks gain from fewer: class images of the bundled
            model were recognized by two other networks 61% of the time after
            128 steps, 47% after 256 and 37% after 512, where the render adds
            what only this model responds to (docs/optvis.md, "Legibility").
        thresholds: the steps after which a snapshot is kept (each in 1..steps);
            default ``(steps,)``.
        seed: int or numpy Generator for the starting parameters and the transforms.
        redirected_relu_steps: steps (from the first) that use redirected ReLU
            gradients (:func:`redirected_relu`); 0 never.
        callback: ``callback(t, X, info)`` after every step, t = 0, 1, ... as in
            the other algorithms, with X the images after the step, in the model's
            input space, and info ``{'objective': value}`` (the value the step's
            gradient was taken at).

    Returns:
        list of float32 arrays (N, 3, H, W), one per threshold in increasing order,
        in the model's input space: ``model.deprocess(X)`` gives uint8 images.

    Example:
        >>> from gradvis.optvis import render, objectives as obj
        >>> X, = render(obj.channel('relu5', 7) - 0.5 * obj.channel('relu5', 3), model, steps=256)
        >>> plt.imshow(model.deprocess(X)[0])
    """
    check_model(model)
    if model.input_shape[0] != 3:
        raise ValueError(f"render draws RGB images; the model takes {model.input_shape[0]} channels")
    if not isinstance(objective, (Objective, str, list, tuple)):
        raise TypeError(f"objective must be a gradvis.optvis objective, its text form or a list of "
                        f"them, got {type(objective).__name__}")
    if isinstance(objective, str):
        objective = objectives_.parse(objective)
    if isinstance(objective, (list, tuple)):
        objective = per_image(objective)
    objective = as_objective(objective)
    steps = _checks.integer(steps, "steps", 1)
    thresholds = _thresholds(thresholds, steps)
    redirected_relu_steps = _checks.integer(redirected_relu_steps, "redirected_relu_steps", 0)
    rng = _checks.rng_from(seed)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")

    n_images = getattr(objective, "batch_size", None)
    if param is None:
        param = image(*model.input_shape[1:], batch=n_images or 1, seed=rng)
    if not isinstance(param, ImageParam):
        raise TypeError(f"param must be a gradvis.optvis.param.ImageParam, got {type(param).__name__}")
    n, _, h, w = param.shape
    if n_images is not None and n_images != n:
        raise ValueError(f"the objective list has {n_images} objectives but param has a batch of {n}")
    if not param.color_given:
        param.set_color(color_correlation(model))

    tf = as_transform(transforms, model)
    names = _layer_names(objective, model)       # raises for unknown layers
    nodes = sorted(set(names.values()), key=model.index)
    tf, shapes_at = fit_transforms(tf, model, (h, w), nodes)
    shapes = {}
    if nodes:
        node_shapes = _node_shapes(model, shapes_at, nodes)
        shapes = {k: node_shapes[v] for k, v in names.items()}
    shapes[INPUT] = (3, h, w)
    objective.check(shapes, n, model)

    if optimizer == "adam":
        opt = Adam(learning_rate)
    elif hasattr(optimizer, "step") and not isinstance(optimizer, str):
        opt = optimizer
    else:
        raise ValueError(f"optimizer must be 'adam' or an object with step(params, grad), got {optimizer!r}")

    outputs = nodes
    keys_of = {}
    for k, v in names.items():
        keys_of.setdefault(v, []).append(k)
    snapshots = []
    for t in range(1, steps + 1):
        img, pctx = param.forward()
        acts = {INPUT: img}
        if outputs:
            xt, back = tf.apply(img, rng)
            X = to_model_input(xt, model)
            # (the redirected ReLUs' rules read the activations: a full cache)
            out, cache = model.forward(X, outputs=outputs, mode="test",
                                       cache="full" if t <= redirected_relu_steps else True)
            for node_name, keys in keys_of.items():
                for k in keys:
                    acts[k] = out[node_name]
        value, grads = objective.value(acts, n)
        dimg = grads.pop(INPUT, None)
        if outputs and grads:
            dout = {}
            for k, g in grads.items():
                node_name = names[k]
                dout[node_name] = dout[node_name] + g if node_name in dout else g
            rules = REDIRECTED_RULES if t <= redirected_relu_steps else None
            dX, _ = model.backward(dout, cache, param_grads=False, rules=rules)
            g_img = back(images_grad(dX, model))
            dimg = g_img if dimg is None else dimg + g_img
        if dimg is None:
            dimg = np.zeros_like(img)
        opt.step(param.params, param.backward(dimg, pctx))
        if callback is not None or t in thresholds:
            X = to_model_input(param.forward()[0], model)
            if t in thresholds:
                snapshots.append(X)
            if callback is not None:
                callback(t - 1, X, {"objective": value})
    return snapshots
