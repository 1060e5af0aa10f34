"""Shared pieces of the attribution methods: argument checks, targets, batching and
the gradient passes through a :class:`gradvis.Model`.

Every method takes images ``X`` (N, C, H, W) in the model's input space, a
``target`` (an int, an (N,) array of ints, a class name of the model, or None
for the predicted class) and a ``model``. Work is split into chunks of
``internal_batch_size`` rows (images times steps or samples), whose default
comes from the model's activation size (:func:`default_batch_size`), so memory
stays bounded whatever the number of steps or samples.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _checks
from ..nn.graph import check_classifier
from ..nn.module import LayerNotFoundError

# Bytes a chunk of a gradient pass may hold by default: activations, their
# caches and gradients of all layers (counted as three arrays per node output;
# fused activations and folded batch norms store less, so this is an upper
# bound). 576 MiB gives enough rows per pass for full-speed kernels (72 images
# of the bundled model, 8 of a 224x224 ResNet-18, 2 of a ResNet-50) and keeps
# the peak below the references' at equal batching (bench/RESULTS.md).
DEFAULT_MEMORY_BYTES = 576 << 20
_ARRAYS_PER_OUTPUT = 3


def check_model(model, what):
    return check_classifier(model, what)


def check_images(X, model, name="X"):
    return _checks.images(X, model, name)


def default_batch_size(model, shape, dtype, budget=DEFAULT_MEMORY_BYTES):
    """Rows per forward/backward pass so that one pass over images of ``shape``
    (C, H, W) holds about ``budget`` bytes: all node outputs, their caches and
    their gradients. At least 1.

    The count is rounded down to a multiple of 8, or below 8 to a power of two.
    For a 224x224 ResNet-50 (about 23 M activation values per image, 276 MB
    counted three times in float32) this is 2 images per pass: integrated
    gradients with 200 steps then run in 100 passes and hold well under 2 GB,
    never the 200 images at once.
    """
    try:
        shapes = model.output_shapes(tuple(shape))
    except ValueError:
        return 1
    per_row = sum(int(np.prod(s)) for k, s in shapes.items()) * np.dtype(dtype).itemsize
    per_row *= _ARRAYS_PER_OUTPUT
    b = int(max(1, min(4096, budget // max(per_row, 1))))
    # A multiple of 8, or below 8 a power of two: the kernels block the batch
    # (Winograd tiles of a 7x7 map come 4 per image, gemm columns 16 at a time),
    # and at 5-7 images a 224x224 ResNet's 7x7 layers keep their transformed
    # filters across calls (about 150 MB more at 7 images than at 8, and slower).
    return b - b % 8 if b >= 8 else 1 << (b.bit_length() - 1)


def batch_size_arg(value, model, X, name="internal_batch_size"):
    """``value`` checked (an int >= 1), or the default for images like X."""
    if value is None:
        return default_batch_size(model, X.shape[1:], X.dtype)
    return _checks.positive_int(value, name)


def forward_batch_arg(value, model, X, name="internal_batch_size"):
    """``value`` checked, or the default rows of a pass without a backward pass
    (Score-CAM, Ablation-CAM, occlusion): it holds about one array per node
    output, a third of what :func:`default_batch_size` counts, so it takes three
    times the rows (kernels run faster per image at larger batches)."""
    if value is None:
        return min(4096, _ARRAYS_PER_OUTPUT * default_batch_size(model, X.shape[1:], X.dtype))
    return _checks.positive_int(value, name)


def resolve_target(target, X, model, scores=None, name="target", defer=False):
    """(N,) int64 class indices from an int, an array, a class name, a list of
    class names, or None (the predicted class: one forward pass unless
    ``scores`` of X are given). With ``defer``, None stays None: the caller's
    gradient passes run X itself and take each chunk's predicted class from
    their own scores (:func:`one_hot`), a forward pass saved."""
    n = X.shape[0]
    if target is None and defer:
        return None
    if target is None:
        if scores is None:
            scores = predict(model, X)
        return np.asarray(scores).argmax(axis=1).astype(np.int64)
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and target
                                    and all(isinstance(t, str) for t in target)):
        names = [target] * n if isinstance(target, str) else list(target)
        if len(names) != n:
            raise ValueError(f"{name} names {len(names)} classes for {n} images")
        return np.asarray([_class_index(model, t, name) for t in names], np.int64)
    if isinstance(target, (float, np.floating)) and not float(target).is_integer():
        raise TypeError(f"{name} must be an int, an array of ints, a class name or None, got {target!r}")
    try:
        return _checks.labels(target, n, model, name)
    except TypeError:
        raise TypeError(f"{name} must be an int, an array of ints, a class name or None, "
                        f"got {target!r}") from None


def _class_index(model, label, name):
    for names in (model.class_names, model.wnids):
        if names and label in names:
            return names.index(label)
    for i, names in enumerate(model.class_names or ()):
        # TinyImageNet names hold synonyms: "goldfish, Carassius auratus"
        if label in [p.strip() for p in names.split(",")]:
            return i
    if not model.class_names and not model.wnids:
        raise ValueError(f"{name}={label!r} is a class name, but the model has no class names; "
                         f"give a class index")
    raise ValueError(f"{name}={label!r} is not a class of the model (see model.class_names)")


def predict(model, X, batch_size=None):
    """Class scores (N, K) in chunks."""
    b = batch_size or default_batch_size(model, X.shape[1:], X.dtype)
    return np.concatenate([model.forward(X[i:i + b], cache=False)[0] for i in range(0, len(X), b)])


def target_scores(model, X, target, batch_size=None):
    """The target's score per row, (N,), in chunks."""
    b = batch_size or default_batch_size(model, X.shape[1:], X.dtype)
    out = np.empty(len(X), np.float64)
    for i in range(0, len(X), b):
        s = model.forward(X[i:i + b], cache=False)[0]
        out[i:i + b] = s[np.arange(len(s)), target[i:i + b]]
    return out


def one_hot(n, k, target, dtype, scores=None):
    """(n, k) with 1 at each row's target; target None: at the argmax of ``scores``
    (the predicted class of a deferred target, :func:`resolve_target`)."""
    if target is None:
        target = np.asarray(scores).argmax(axis=1)
    d = np.zeros((n, k), dtype)
    d[np.arange(n), target] = 1
    return d


def rows(target, i, b):
    """Rows i .. i + b of resolved targets (None, a deferred target, stays None)."""
    return None if target is None else target[i:i + b]


def gradient(model, X, target, rules=None):
    """(scores, d score_target / dX) for one chunk, test mode, no weight gradients.
    ``rules`` replace backward rules (see :meth:`gradvis.Model.backward`)."""
    # (a backward pass with rules reads the activations: a full cache)
    scores, cache = model.forward(X, mode="test", cache="full" if rules else True)
    dout = one_hot(len(X), scores.shape[1], target, scores.dtype, scores)
    dX, _ = model.backward(dout, cache, param_grads=False, rules=rules)
    return scores, dX


def chunked_gradient(model, X, target, batch, rules=None):
    """d score_target / dX for all rows of X, ``batch`` rows per pass."""
    out = np.empty_like(X)
    for i in range(0, len(X), batch):
        out[i:i + batch] = gradient(model, X[i:i + batch], rows(target, i, batch), rules)[1]
    return out


def baselines_arg(baselines, X, name="baselines"):
    """A baseline broadcast to X's shape: None = zeros, a number, or an array
    broadcastable to X (e.g. (C, 1, 1), (1, C, H, W), (N, C, H, W))."""
    if baselines is None:
        return np.zeros_like(X)
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        v = float(baselines)
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {baselines!r}")
        return np.full_like(X, v)
    b = np.asarray(baselines)
    if b.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be None, a number or a numeric array, got dtype {b.dtype}")
    try:
        b = np.broadcast_to(b, X.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {b.shape} does not broadcast to X's shape {X.shape}") from None
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(b, dtype=X.dtype)


def add_rows(acc, idx, values):
    """acc[idx[k]] += values[k] for sorted ``idx`` (rows of one image are adjacent)."""
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    acc[idx[starts]] += np.add.reduceat(values, starts, axis=0, dtype=acc.dtype)


# ---------------------------------------------------------------- layers
def layer_index(model, layer, name="layer"):
    """Index of a node given by name or index; LayerNotFoundError names the layers."""
    if isinstance(layer, bool) or not isinstance(layer, (str, numbers.Integral)):
        raise TypeError(f"{name} must be a node name or index, got {layer!r}")
    return model.index(layer)


def spatial_layers(model, shape):
    """Names of the nodes whose output for images of ``shape`` (C, H, W) is a
    (C', h, w) map with h * w > 1."""
    shapes = model.output_shapes(tuple(shape))
    return [n.name for n in model.nodes if len(shapes[n.name]) == 3 and shapes[n.name][1] * shapes[n.name][2] > 1]


def default_cam_layer(model, shape=None):
    """The default layer for CAMs: the last node with a spatial (C, h, w) output
    (h * w > 1), i.e. the output of the last convolutional block."""
    names = spatial_layers(model, shape or model.input_shape)
    if not names:
        raise ValueError("the model has no layer with a spatial (C, h, w) output for a CAM")
    return names[-1]


def cam_layer(model, layer, X, name="layer"):
    """The node name of a spatial layer (default: :func:`default_cam_layer`)."""
    if layer is None:
        return default_cam_layer(model, X.shape[1:])
    try:
        i = layer_index(model, layer, name)
    except IndexError as e:
        raise ValueError(f"{name}: {e}") from None
    node = model.nodes[i]
    ok = spatial_layers(model, X.shape[1:])
    if node.name not in ok:
        shape = model.output_shapes(tuple(X.shape[1:]))[node.name]
        raise ValueError(f"{name}={node.name!r} outputs {shape}, not a spatial (C, h, w) map; "
                         f"layers that work: {', '.join(ok)}")
    return node.name


def clean_cut(model, layer_name):
    """Names of tensors, other than ``layer_name``'s output, that nodes after the
    layer read from nodes at or before it (empty: the model can restart there)."""
    i = model.index(layer_name)
    before = {"input"} | {n.name for n in model.nodes[:i + 1]}
    return sorted({t for n in model.nodes[i + 1:] for t in n.inputs if t in before and t != layer_name})


class GradientRead(Exception):
    """Raised by the backward rule of :func:`read_gradient` once it has the
    gradient it was placed for: the rest of that backward pass is not needed."""


def read_gradient(model, dout, cache, layer_name):
    """The gradient at node ``layer_name``'s output in the backward pass of
    ``cache`` (whose forward asked for that output), stopping there; None when the
    output gradient does not reach it."""
    seen = {}

    def read(layer, g, c):
        seen["g"] = g
        raise GradientRead

    try:
        model.backward(dout, cache, param_grads=False, rules={layer_name: read})
    except GradientRead:
        pass
    return seen.get("g")


def activation_and_gradient(model, X, target, layer_name):
    """(scores, A, dA): the layer's output and d score_target / d output, for a chunk.

    When only the layer's output crosses it, the model runs in two parts (input
    to layer, layer to scores) and the backward pass stops at the layer.
    Otherwise (a skip connection crosses the layer) the layer's output is
    requested from one forward pass (so a ReLU is not fused into it) and its
    gradient is read by a backward rule on that node, which ends the backward
    pass there (:func:`read_gradient`)."""
    last = model.nodes[-1].name
    i = model.index(layer_name)
    if layer_name != last and not clean_cut(model, layer_name):
        A, _ = model.forward(X, mode="test", end=layer_name)
        scores, cache = model.forward(A, mode="test", start=i + 1)
        dout = one_hot(len(X), scores.shape[1], target, scores.dtype, scores)
        dA, _ = model.backward(dout, cache, param_grads=False)
        return scores, A, dA
    outs = [layer_name] if layer_name == last else [layer_name, last]
    res, cache = model.forward(X, mode="test", outputs=outs, cache="full")   # read_gradient's rule
    scores, A = res[last], res[layer_name]
    dout = {last: one_hot(len(X), scores.shape[1], target, scores.dtype, scores)}
    dA = read_gradient(model, dout, cache, layer_name)
    if dA is None:
        dA = np.zeros_like(A)
    return scores, A, dA


# ---------------------------------------------------------------- resizing
def resize_bilinear(a, size, align_corners=False):
    """Bilinear resize of (..., h, w) to (..., H, W): align_corners=False is
    torch's default / OpenCV's, True is torch's UpsamplingBilinear2d."""
    H, W = size
    h, w = a.shape[-2:]
    ys, y0, y1 = _axis_weights(h, H, align_corners)
    xs, x0, x1 = _axis_weights(w, W, align_corners)
    ys = ys.astype(a.dtype)[:, None]
    xs = xs.astype(a.dtype)[None, :]
    top = a[..., y0, :][..., :, x0] * (1 - xs) + a[..., y0, :][..., :, x1] * xs
    bot = a[..., y1, :][..., :, x0] * (1 - xs) + a[..., y1, :][..., :, x1] * xs
    return (top * (1 - ys) + bot * ys).astype(a.dtype, copy=False)


def _axis_weights(n_in, n_out, align_corners):
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out, dtype=np.float64) * scale
    else:
        scale = n_in / n_out
        src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return src - i0, i0, i1


def resize_nearest(a, size):
    """Nearest resize of (..., h, w) as torch's mode='nearest' (floor(dst * in / out))."""
    H, W = size
    h, w = a.shape[-2:]
    yi = np.minimum(np.floor(np.arange(H) * (h / H)).astype(np.int64), h - 1)
    xi = np.minimum(np.floor(np.arange(W) * (w / W)).astype(np.int64), w - 1)
    return a[..., yi, :][..., :, xi]


__all__ = ["default_batch_size", "default_cam_layer", "spatial_layers", "LayerNotFoundError"]
