"""Objectives for feature visualization, maximized by :func:`gradvis.optvis.render`
(Olah et al., "Feature Visualization", Distill 2017; Lucid's
``lucid.optvis.objectives``).

An objective maps the activations of some layers of a batch of images to a number
and gives its gradient with respect to each of those activations. Objectives
compose as Lucid's do: ``a + b``, ``a - b``, ``2 * a``, ``a / 2``, ``-a`` and
``a * b`` are objectives, named for figures (``str(obj)``). Activation terms
(``channel``, ``neuron``, ``direction``, ``deepdream``, ``class_logit``) are
rewards; ``diversity`` and the image priors (``l1``, ``l2``, ``total_variation``,
``blur_input``) are penalties to subtract, as in Lucid::

    obj = channel('relu5', 7) - 0.5 * channel('relu5', 3)
    obj = channel('relu5', 7) - 100 * diversity('relu5')      # a batch of varied images

Each activation term takes ``batch=None`` (every image of the batch) or an image
index; :func:`per_image` turns a list of N objectives into one objective for a
batch of N images, one each (render does this for a list).

The layer name ``"input"`` (:data:`INPUT`) stands for the rendered images
themselves, RGB in [0, 1], (N, 3, H, W), before the random transforms.
"""
from __future__ import annotations

import numbers
import re

import numpy as np

from .. import _checks

__all__ = ["Objective", "INPUT", "channel", "neuron", "class_logit", "direction", "direction_cosine", "deepdream",
           "diversity", "l1", "l2", "total_variation", "blur_input", "per_image", "parse",
           "as_objective"]

INPUT = "input"
LOGITS = "logits"      # resolved to the model's last node


class Objective:
    """Base of every objective. ``value(acts, n) -> (float, {layer: gradient})``
    with ``acts`` a dict layer name -> activation array of the batch of ``n``
    images; ``layers()`` lists the layer names it reads; ``check(shapes, n,
    model)`` raises ValueError for what cannot be evaluated (channel out of range,
    a spatial term on a non-spatial layer, an image index beyond the batch)."""
    name = "objective"

    def layers(self):
        return set()

    def check(self, shapes, n, model):
        pass

    def value(self, acts, n):
        raise NotImplementedError

    def restrict(self, b):
        """This objective on image ``b`` of the batch alone (terms with a batch
        index keep theirs)."""
        return self

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Objective {self.name}>"

    # composition ------------------------------------------------------------
    def __add__(self, other):
        other = as_objective(other, "+")
        return _Sum([(1.0, self), (1.0, other)])

    def __radd__(self, other):
        if isinstance(other, numbers.Number) and other == 0:     # sum([...])
            return self
        return as_objective(other, "+") + self

    def __sub__(self, other):
        other = as_objective(other, "-")
        return _Sum([(1.0, self), (-1.0, other)])

    def __rsub__(self, other):
        return as_objective(other, "-") - self

    def __neg__(self):
        return _Sum([(-1.0, self)])

    def __mul__(self, other):
        if isinstance(other, Objective):
            return _Product(self, other)
        return _Sum([(_scalar(other, "*"), self)])

    __rmul__ = __mul__

    def __truediv__(self, other):
        c = _scalar(other, "/")
        if c == 0:
            raise ZeroDivisionError("an objective divided by 0")
        return _Sum([(1.0 / c, self)])


def _scalar(v, op):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"objectives combine with {op} by numbers and other objectives, got "
                        f"{type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"an objective's coefficient must be finite, got {v}")
    return v


def as_objective(obj, op="render"):
    """``obj`` itself if it is an :class:`Objective`, a constant for a number, else TypeError."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, (numbers.Real, np.floating, np.integer)) and not isinstance(obj, bool):
        return _Constant(_scalar(obj, op))
    raise TypeError(f"expected a gradvis.optvis objective, got {type(obj).__name__}")


def _fmt(c):
    return f"{c:g}"


class _Constant(Objective):
    def __init__(self, c):
        self.c = c
        self.name = _fmt(c)

    def value(self, acts, n):
        return self.c, {}


def _add_grad(grads, layer, g):
    if layer in grads:
        grads[layer] = grads[layer] + g
    else:
        grads[layer] = g


class _Sum(Objective):
    def __init__(self, terms):
        flat = []
        for c, t in terms:
            if isinstance(t, _Sum):
                flat.extend((c * c2, t2) for c2, t2 in t.terms)
            else:
                flat.append((c, t))
        self.terms = flat
        parts = []
        for i, (c, t) in enumerate(flat):
            s = str(t)
            if isinstance(t, (_Product,)):
                s = f"({s})"
            mag = abs(c)
            body = s if mag == 1 else f"{_fmt(mag)}*{s}"
            if i == 0:
                parts.append(body if c >= 0 else f"-{body}")
            else:
                parts.append(("+ " if c >= 0 else "- ") + body)
        self.name = " ".join(parts)

    def layers(self):
        return set().union(*(t.layers() for _, t in self.terms))

    def check(self, shapes, n, model):
        for _, t in self.terms:
            t.check(shapes, n, model)

    def restrict(self, b):
        return _Sum([(c, t.restrict(b)) for c, t in self.terms])

    def value(self, acts, n):
        total, grads = 0.0, {}
        for c, t in self.terms:
            v, g = t.value(acts, n)
            total += c * v
            for k, gk in g.items():
                _add_grad(grads, k, c * gk)
        return total, grads


class _Product(Objective):
    def __init__(self, a, b):
        self.a, self.b = a, b
        wrap = lambda o: f"({o})" if isinstance(o, _Sum) and len(o.terms) > 1 else str(o)  # noqa: E731
        self.name = f"{wrap(a)} * {wrap(b)}"

    def layers(self):
        return self.a.layers() | self.b.layers()

    def check(self, shapes, n, model):
        self.a.check(shapes, n, model)
        self.b.check(shapes, n, model)

    def restrict(self, b):
        return _Product(self.a.restrict(b), self.b.restrict(b))

    def value(self, acts, n):
        va, ga = self.a.value(acts, n)
        vb, gb = self.b.value(acts, n)
        grads = {}
        for k, g in ga.items():
            _add_grad(grads, k, vb * g)
        for k, g in gb.items():
            _add_grad(grads, k, va * g)
        return va * vb, grads


# ---------------------------------------------------------------------------- terms
class _Term(Objective):
    """A term on one layer's activations, over image ``batch`` or all images."""
    spatial = False          # needs (N, C, H, W)
    needs_channels = True    # reads an axis of channels (rank >= 2)

    def __init__(self, layer, batch=None):
        if not isinstance(layer, (str, int, np.integer)) or isinstance(layer, bool):
            raise TypeError(f"layer must be a layer name (str) or index, got {type(layer).__name__}")
        self.layer = layer
        self.batch = None if batch is None else _checks.integer(batch, "batch", 0)

    def layers(self):
        return {self.layer}

    def restrict(self, b):
        if self.batch is not None:
            return self
        import copy
        t = copy.copy(self)
        t.batch = b
        t.name = f"{self.name}[{b}]"
        return t

    def _sel(self, a):
        return a if self.batch is None else a[self.batch:self.batch + 1]

    def check(self, shapes, n, model):
        shape = shapes[self.layer]
        if self.batch is not None and self.batch >= n:
            raise ValueError(f"{self.name}: image index batch={self.batch} is beyond the batch of {n}")
        if self.spatial and len(shape) != 3:
            raise ValueError(f"{self.name}: layer {self.layer!r} outputs (N, {', '.join(map(str, shape))}), "
                             f"not a spatial (N, C, H, W) map; pick a convolutional layer")
        if self.needs_channels and len(shape) < 1:
            raise ValueError(f"{self.name}: layer {self.layer!r} has no channel axis")

    def _grad_full(self, a, g_sel):
        if self.batch is None:
            return g_sel
        g = np.zeros_like(a)
        g[self.batch:self.batch + 1] = g_sel
        return g


def _channel_index(n, name):
    return _checks.integer(n, name, 0)


def _check_channel(term, shapes, n_channel):
    c = shapes[term.layer][0]
    if n_channel >= c:
        raise ValueError(f"{term.name}: channel {n_channel} is out of range for layer {term.layer!r} "
                         f"with {c} channels (0..{c - 1})")


class _Channel(_Term):
    def __init__(self, layer, n, batch=None):
        super().__init__(layer, batch)
        self.n = _channel_index(n, "channel: n")
        self.name = f"channel:{layer}:{self.n}"

    def check(self, shapes, n, model):
        super().check(shapes, n, model)
        _check_channel(self, shapes, self.n)

    def value(self, acts, n):
        a = acts[self.layer]
        s = self._sel(a)
        ch = s[:, self.n]
        g = np.zeros_like(s)
        g[:, self.n] = 1.0 / ch.size
        return float(ch.mean(dtype=np.float64)), {self.layer: self._grad_full(a, g)}


class _Neuron(_Term):
    spatial = True

    def __init__(self, layer, n, x=None, y=None, batch=None):
        super().__init__(layer, batch)
        self.n = _channel_index(n, "neuron: n")
        self.x = None if x is None else _checks.integer(x, "neuron: x", 0)
        self.y = None if y is None else _checks.integer(y, "neuron: y", 0)
        where = "" if x is None and y is None else f"@{'c' if y is None else y},{'c' if x is None else x}"
        self.name = f"neuron:{layer}:{self.n}{where}"

    def check(self, shapes, n, model):
        super().check(shapes, n, model)
        _check_channel(self, shapes, self.n)
        _, h, w = shapes[self.layer]
        if (self.y is not None and self.y >= h) or (self.x is not None and self.x >= w):
            raise ValueError(f"{self.name}: position (y={self.y}, x={self.x}) is outside layer "
                             f"{self.layer!r}'s {h}x{w} map")

    def value(self, acts, n):
        a = acts[self.layer]
        s = self._sel(a)
        h, w = s.shape[2:]
        # a random scale changes the map's size from step to step: positions are clamped to it
        y = h // 2 if self.y is None else min(self.y, h - 1)
        x = w // 2 if self.x is None else min(self.x, w - 1)
        v = s[:, self.n, y, x]
        g = np.zeros_like(s)
        g[:, self.n, y, x] = 1.0 / v.size
        return float(v.mean(dtype=np.float64)), {self.layer: self._grad_full(a, g)}


class _ClassLogit(_Term):
    needs_channels = False

    def __init__(self, n, batch=None):
        super().__init__(LOGITS, batch)
        self.n = _channel_index(n, "class_logit: n")
        self.name = f"class_logit:{self.n}"

    def check(self, shapes, n, model):
        super().check(shapes, n, model)
        shape = shapes[LOGITS]
        if len(shape) != 1:
            raise ValueError(f"{self.name}: the model's last layer outputs (N, {', '.join(map(str, shape))}), "
                             f"not class scores (N, num_classes)")
        if self.n >= shape[0]:
            raise ValueError(f"{self.name}: class {self.n} is out of range for {shape[0]} classes "
                             f"(0..{shape[0] - 1})")

    def value(self, acts, n):
        a = acts[LOGITS]
        s = self._sel(a)
        v = s[:, self.n]
        g = np.zeros_like(s)
        g[:, self.n] = 1.0 / v.size
        return float(v.mean(dtype=np.float64)), {LOGITS: self._grad_full(a, g)}


class _Direction(_Term):
    def __init__(self, layer, vector, batch=None, name=None):
        super().__init__(layer, batch)
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
            raise ValueError(f"direction: vector must be a finite 1-D array (one entry per channel), "
                             f"got shape {v.shape}")
        self.vector = v
        self.name = name or f"direction:{layer}"

    def check(self, shapes, n, model):
        super().check(shapes, n, model)
        c = shapes[self.layer][0]
        if self.vector.size != c:
            raise ValueError(f"{self.name}: vector has {self.vector.size} entries but layer "
                             f"{self.layer!r} has {c} channels")

    def value(self, acts, n):
        a = acts[self.layer]
        s = self._sel(a)
        shape = (1, -1) + (1,) * (s.ndim - 2)
        v = self.vector.astype(s.dtype).reshape(shape)
        dots = (s * v).sum(axis=1)
        g = np.broadcast_to(v / dots.size, s.shape).astype(s.dtype)
        return float(dots.mean(dtype=np.float64)), {self.layer: self._grad_full(a, g)}


class _DirectionCosine(_Direction):
    """Mean cosine similarity, as ``torch.nn.CosineSimilarity(dim=1)`` computes it:
    (x / max(|x|, eps)) . (v / max(|v|, eps)), eps = 1e-8."""
    EPS = 1e-8

    def __init__(self, layer, vector, batch=None):
        super().__init__(layer, vector, batch, name=f"direction_cosine:{layer}")

    def value(self, acts, n):
        a = acts[self.layer]
        s = self._sel(a).astype(np.float64)
        shape = (1, -1) + (1,) * (s.ndim - 2)
        u = (self.vector / max(np.linalg.norm(self.vector), self.EPS)).reshape(shape)
        norm = np.sqrt((s * s).sum(axis=1, keepdims=True))
        den = np.maximum(norm, self.EPS)
        cos = (s * u).sum(axis=1, keepdims=True) / den
        # d cos / d x = (u - cos x / |x|) / |x|; u / eps where |x| < eps
        g = (u - np.where(norm < self.EPS, 0.0, cos / den) * s) / den
        g /= cos.size
        return float(cos.mean()), {self.layer: self._grad_full(a, g.astype(a.dtype))}


class _DeepDream(_Term):
    def __init__(self, layer, batch=None):
        super().__init__(layer, batch)
        self.name = f"deepdream:{layer}"

    def value(self, acts, n):
        a = acts[self.layer]
        s = self._sel(a)
        return (float((s.astype(np.float64) ** 2).mean()),
                {self.layer: self._grad_full(a, (2.0 / s.size) * s)})


class _Diversity(Objective):
    """Lucid's diversity: mean over images of the summed cosine similarity of
    their Gram matrices with every other image's (a penalty: subtract it)."""

    def __init__(self, layer):
        if not isinstance(layer, (str, int, np.integer)) or isinstance(layer, bool):
            raise TypeError(f"layer must be a layer name (str) or index, got {type(layer).__name__}")
        self.layer = layer
        self.name = f"diversity:{layer}"

    def layers(self):
        return {self.layer}

    def check(self, shapes, n, model):
        shape = shapes[self.layer]
        if len(shape) != 3:
            raise ValueError(f"{self.name}: layer {self.layer!r} outputs (N, {', '.join(map(str, shape))}), "
                             f"not a spatial (N, C, H, W) map; pick a convolutional layer")
        if n < 2:
            raise ValueError(f"{self.name}: diversity compares the images of a batch; it needs a batch "
                             f"of 2 or more, got {n}")

    def restrict(self, b):
        raise ValueError("diversity acts on the whole batch, not on one image; add it to the per-image "
                         "objectives' sum instead (per_image([...]) - w * diversity(layer))")

    def value(self, acts, n):
        a = acts[self.layer]
        N, C = a.shape[:2]
        F = a.reshape(N, C, -1).astype(np.float64)
        G = F @ F.transpose(0, 2, 1)                                  # (N, C, C)
        norms = np.sqrt((G * G).sum(axis=(1, 2)))
        norms = np.maximum(norms, 1e-10)
        g = G / norms[:, None, None]
        total_g = g.sum(axis=0)
        value = float(sum(((g[i] * (total_g - g[i])).sum()) for i in range(N)) / N)
        # d value / d g_i = 2 / N * sum_{j != i} g_j (each pair appears twice)
        U = 2.0 / N * (total_g[None] - g)
        dG = (U - g * (g * U).sum(axis=(1, 2))[:, None, None]) / norms[:, None, None]
        dF = (dG + dG.transpose(0, 2, 1)) @ F
        return value, {self.layer: dF.reshape(a.shape).astype(a.dtype)}


class _InputPrior(Objective):
    """A penalty on the rendered images (layer 'input') or a layer's activations."""

    def __init__(self, layer, batch):
        self.layer = layer
        self.batch = None if batch is None else _checks.integer(batch, "batch", 0)

    def layers(self):
        return {self.layer}

    def check(self, shapes, n, model):
        if self.batch is not None and self.batch >= n:
            raise ValueError(f"{self.name}: image index batch={self.batch} is beyond the batch of {n}")

    def restrict(self, b):
        if self.batch is not None:
            return self
        import copy
        t = copy.copy(self)
        t.batch = b
        t.name = f"{self.name}[{b}]"
        return t

    def value(self, acts, n):
        a = acts[self.layer]
        s = a if self.batch is None else a[self.batch:self.batch + 1]
        v, g = self._penalty(s.astype(np.float64))
        g = g.astype(a.dtype)
        if self.batch is not None:
            full = np.zeros_like(a)
            full[self.batch:self.batch + 1] = g
            g = full
        return v, {self.layer: g}


class _L1(_InputPrior):
    def __init__(self, layer=INPUT, constant=0.0, batch=None):
        super().__init__(layer, batch)
        self.constant = _checks.finite_float(constant, "l1: constant")
        self.name = f"l1:{layer}"

    def _penalty(self, s):
        d = s - self.constant
        return float(np.abs(d).sum()), np.sign(d)


class _L2(_InputPrior):
    def __init__(self, layer=INPUT, constant=0.0, epsilon=1e-6, batch=None):
        super().__init__(layer, batch)
        self.constant = _checks.finite_float(constant, "l2: constant")
        self.epsilon = _checks.nonneg_float(epsilon, "l2: epsilon", positive=True)
        self.name = f"l2:{layer}"

    def _penalty(self, s):
        d = s - self.constant
        v = float(np.sqrt(self.epsilon + (d * d).sum()))
        return v, d / v


class _TotalVariation(_InputPrior):
    def __init__(self, layer=INPUT, batch=None):
        super().__init__(layer, batch)
        self.name = f"total_variation:{layer}"

    def check(self, shapes, n, model):
        super().check(shapes, n, model)
        if len(shapes[self.layer]) != 3:
            raise ValueError(f"{self.name}: layer {self.layer!r} is not a spatial (N, C, H, W) map")

    def _penalty(self, s):
        dy = s[:, :, 1:, :] - s[:, :, :-1, :]
        dx = s[:, :, :, 1:] - s[:, :, :, :-1]
        v = float(np.abs(dy).sum() + np.abs(dx).sum())
        sy, sx = np.sign(dy), np.sign(dx)
        g = np.zeros_like(s)
        g[:, :, 1:, :] += sy
        g[:, :, :-1, :] -= sy
        g[:, :, :, 1:] += sx
        g[:, :, :, :-1] -= sx
        return v, g


_BLUR_KERNEL = np.array([[0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 0.5]])


def _blur3(x):
    """Lucid's ``_tf_blur``: the 3x3 kernel above (the pixel 1, its eight
    neighbours 0.5), zero padding, normalized by the kernel mass inside the image
    (so edges are not darkened)."""
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    ones = np.pad(np.ones((h, w)), 1)
    num = np.zeros_like(x)
    den = np.zeros((h, w))
    for i in range(3):
        for j in range(3):
            k = _BLUR_KERNEL[i, j]
            num += k * p[..., i:i + h, j:j + w]
            den += k * ones[i:i + h, j:j + w]
    return num / den


class _BlurInput(_InputPrior):
    """Lucid's ``blur_input_each_step``: 0.5 * sum((x - blur(x))^2) with blur(x)
    held constant, so the gradient step moves x towards its blur."""

    def __init__(self, batch=None):
        super().__init__(INPUT, batch)
        self.name = "blur_input"

    def _penalty(self, s):
        d = s - _blur3(s)
        return float(0.5 * (d * d).sum()), d


# ---------------------------------------------------------------------------- public
def channel(layer, n, batch=None):
    """Mean activation of channel ``n`` of ``layer`` (over positions and images)."""
    return _Channel(layer, n, batch)


def neuron(layer, n, x=None, y=None, batch=None):
    """Activation of channel ``n`` at one position (default the centre) of a spatial layer."""
    return _Neuron(layer, n, x, y, batch)


def class_logit(n, batch=None):
    """Score (pre-softmax) of class ``n``: the model's last layer's output n."""
    return _ClassLogit(n, batch)


def direction(layer, vector, batch=None):
    """Mean over positions of the dot product of ``layer``'s activation vector with
    ``vector`` (C,) (Lucid's ``direction``)."""
    return _Direction(layer, vector, batch)


def direction_cosine(layer, vector, batch=None):
    """Mean over images and positions of the cosine similarity between the
    activation vector (channels) and ``vector`` (C,) (Lucent's ``direction``):
    unlike :func:`direction`, it rewards the angle alone, not the activation's
    size. Where an activation vector is zero the similarity is 0 and its
    gradient ``vector / (|vector| eps)`` (eps = 1e-8), as in PyTorch."""
    return _DirectionCosine(layer, vector, batch)


def deepdream(layer, batch=None):
    """Mean squared activation of ``layer`` (DeepDream's objective)."""
    return _DeepDream(layer, batch)


def diversity(layer):
    """Similarity of the batch's images' Gram matrices at ``layer`` (a penalty: write
    ``obj - w * diversity(layer)``, Lucid uses w = 1e2..1e3)."""
    return _Diversity(layer)


def l1(layer=INPUT, constant=0.0, batch=None):
    """sum |x - constant| (a penalty)."""
    return _L1(layer, constant, batch)


def l2(layer=INPUT, constant=0.0, epsilon=1e-6, batch=None):
    """sqrt(epsilon + sum (x - constant)^2) (a penalty)."""
    return _L2(layer, constant, epsilon, batch)


def total_variation(layer=INPUT, batch=None):
    """Anisotropic total variation, sum of |neighbour differences| (a penalty)."""
    return _TotalVariation(layer, batch)


def blur_input(batch=None):
    """Pulls each image towards its 3x3 blur at every step (a penalty)."""
    return _BlurInput(batch)


def per_image(objectives):
    """One objective for a batch of N = len(objectives) images: image i gets
    objectives[i] (their terms restricted to image i)."""
    objs = [as_objective(o) for o in objectives]
    if not objs:
        raise ValueError("per_image needs at least one objective")
    total = _Sum([(1.0, o.restrict(i)) for i, o in enumerate(objs)])   # a new object, always
    total.batch_size = len(objs)
    return total


# ---------------------------------------------------------------------------- parsing
_ATOMS = {"channel": (channel, 2, 2), "neuron": (neuron, 2, 4), "class_logit": (class_logit, 1, 1),
          "deepdream": (deepdream, 1, 1), "diversity": (diversity, 1, 1), "l1": (l1, 0, 1),
          "l2": (l2, 0, 1), "total_variation": (total_variation, 0, 1), "blur_input": (blur_input, 0, 0)}


def _atom(text):
    parts = text.split(":")
    kind, args = parts[0].strip(), [p.strip() for p in parts[1:]]
    if kind not in _ATOMS:
        raise ValueError(f"unknown objective {kind!r} in {text!r}; known: {', '.join(sorted(_ATOMS))}")
    fn, lo, hi = _ATOMS[kind]
    if not lo <= len(args) <= hi:
        raise ValueError(f"objective {text!r}: {kind} takes {lo if lo == hi else f'{lo} to {hi}'} "
                         f"':'-separated arguments, got {len(args)}")
    conv = []
    for i, a in enumerate(args):
        if i == 0 and kind not in ("class_logit",):
            conv.append(a)           # a layer name
        else:
            try:
                conv.append(int(a))
            except ValueError:
                raise ValueError(f"objective {text!r}: {a!r} must be an integer") from None
    return fn(*conv)


_EXPONENT = re.compile(r"(.*\*)?[0-9.]+[eE]")


def parse(text):
    """An objective from text: terms ``kind:arg:arg`` joined by + and -, each
    optionally multiplied by a number, e.g. ``"channel:relu5:7 - 0.5*channel:relu5:3"``
    or ``"class_logit:76 - 0.01*total_variation"``. Kinds: channel:LAYER:N,
    neuron:LAYER:N[:X:Y], class_logit:N, deepdream:LAYER, diversity:LAYER,
    l1[:LAYER], l2[:LAYER], total_variation[:LAYER], blur_input."""
    if not isinstance(text, str):
        raise TypeError(f"objective text must be a str, got {type(text).__name__}")
    s = text.replace(" ", "")
    if not s:
        raise ValueError("empty objective")
    sign, pieces = 1.0, []
    buf = ""
    for ch in s:
        if ch in "+-" and not buf.endswith("*") and not _EXPONENT.fullmatch(buf):
            if buf:
                pieces.append((sign, buf))
            sign = 1.0 if ch == "+" else -1.0
            buf = ""
        else:
            buf += ch
    if not buf:
        raise ValueError(f"objective {text!r} ends with an operator")
    pieces.append((sign, buf))
    total = None
    for sign, piece in pieces:
        coef = sign
        factors = piece.split("*")
        atom = None
        for f in factors:
            try:
                coef *= float(f)
                continue
            except ValueError:
                pass
            if atom is not None:
                raise ValueError(f"objective {text!r}: products of two objectives are not parsed; "
                                 f"build them in Python")
            atom = _atom(f)
        if atom is None:
            raise ValueError(f"objective {text!r}: term {piece!r} has no objective")
        term = coef * atom
        total = term if total is None else total + term
    return total
