"""A CNN as a graph of named layers, with the CS231n ``forward``/``backward`` contract.

A :class:`Model` is an ordered list of *nodes*. Each node has a unique name, a
layer object (:class:`Conv2d`, :class:`BatchNorm2d`, :class:`ReLU`, ...) and the
names of the tensors it reads: by default the output of the node before it (the
first node reads the model input, named ``"input"``); :class:`Add`,
:class:`Mul`, :class:`Sub`, :class:`Div` and :class:`Concat` read several, which
is how residual, multi-branch and squeeze-and-excitation nets are written. Nodes run in list order, so a node may only read tensors of nodes
listed before it.

The contract follows CS231n 2016's ``PretrainedCNN``::

    out, cache = model.forward(X, start=None, end=None, mode='test')
    dX, grads = model.backward(dout, cache)

``start`` and ``end`` are node indices or names and **end is inclusive**, as in
the course. When ``start`` is given, ``X`` is the *input of node start* (the
output of the node before it), so a pass can begin at an intermediate activation.
``dout`` is d(loss)/d(output of the last node run), ``dX`` is the gradient with
respect to the ``X`` that was passed in and ``grads`` maps parameter names
(``'conv1.weight'``) to gradients.

Arrays are NCHW. float32 is the default; a pass keeps the dtype of ``X``
(float64 inputs compute in float64, the parameters are cast on the fly).
Linear weights are stored as CS231n's ``(D, M)`` (the transpose of PyTorch's).
Batch-norm momentum follows CS231n: ``running = momentum * running + (1 -
momentum) * batch`` with momentum 0.9 (PyTorch's momentum 0.1).
"""
from __future__ import annotations

import difflib

import numpy as np

from .. import _checks
from .channel_grad import ChannelGrad, add_grads, channel_terms
from .conv import Conv2d
from .fileformat import save_model
from . import fusion, passes
from .fold import Folded
from .frozen import FrozenWeights, is_immutable
from .linear import Linear
from .losses import softmax_cross_entropy
from .module import INPUT, Layer, LayerNotFoundError

__all__ = ["Model", "Node", "check_model", "check_classifier"]


class Node:
    __slots__ = ("name", "layer", "inputs")

    def __init__(self, name, layer, inputs):
        self.name = name
        self.layer = layer
        self.inputs = inputs

    def __repr__(self):
        return f"Node({self.name!r}, {self.layer!r}, inputs={self.inputs})"


def _as_float_input(X, what="X"):
    X = _checks.as_array(X, what)
    if X.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array (float32 or float64), got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    return X


def _names(names, what):
    """A list of strings (one per class), or None."""
    if names is None:
        return None
    if isinstance(names, (str, bytes, dict)) or not hasattr(names, "__iter__"):
        raise TypeError(f"{what} must be a list of strings (one per class), got {type(names).__name__}")
    names = list(names)
    bad = [v for v in names if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what} must be a list of strings (one per class), got {bad[0]!r} "
                        f"({type(bad[0]).__name__})")
    return names


class Model(FrozenWeights):
    """A network of named nodes with CS231n ``forward``/``backward`` (see the module doc).

    Args:
        input_shape: (C, H, W) the model was made for (H, W are informative: fully
            convolutional prefixes accept any size).
        mean: per-channel mean (C,) or mean image (C, H, W) in 0-255 pixel units,
            subtracted by :meth:`preprocess`.
        std: per-channel (C,) divisor applied after the mean (default 1: CS231n 2016's
            "mean subtracted" input space).
        channel_order: 'RGB' or 'BGR' (of the model's input channels).
        class_names, wnids: one per class (index = label).
        name: a label for the model.
        seed: seeds the initial weights of added layers and the generator used by
            Dropout (``Model.rng``).

    Example:
        >>> m = Model(input_shape=(3, 8, 8))
        >>> m.add('conv1', Conv2d(3, 4, 3, padding=1)).add('relu1', ReLU())
        >>> m.add('pool', GlobalAvgPool()).add('flat', Flatten()).add('fc', Linear(4, 10))
        >>> scores, cache = m.forward(X)
    """

    def __init__(self, input_shape=(3, 64, 64), mean=None, std=None, channel_order="RGB",
                 class_names=None, wnids=None, name="model", seed=None):
        self.nodes = []
        self._index = {}
        self.params = {}    # 'node.local' -> array
        self.buffers = {}   # 'node.local' -> array
        try:
            ok = not isinstance(input_shape, (str, bytes)) and len(input_shape) == 3
        except TypeError:     # no length: a number, None, a 0-d array
            ok = False
        if not ok:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
        self.input_shape = tuple(_checks.integer(v, "input_shape", 1) for v in input_shape)
        c = self.input_shape[0]
        try:
            self.mean = np.zeros(c, np.float32) if mean is None else np.asarray(mean, np.float32)
            self.std = np.ones(c, np.float32) if std is None else np.asarray(std, np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"mean and std must be numbers, got mean {mean!r}, std {std!r}") from None
        if self.mean.shape not in ((c,), self.input_shape):
            raise ValueError(f"mean must have shape ({c},) or {self.input_shape}, got {self.mean.shape}")
        if not np.all(np.isfinite(self.mean)):
            raise ValueError(f"mean contains NaN or infinite values: {self.mean.ravel()[:5]}")
        if self.std.shape != (c,) or not np.all((self.std > 0) & np.isfinite(self.std)):
            raise ValueError(f"std must be {c} positive finite numbers, got {self.std}")
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.channel_order = channel_order
        self.class_names = _names(class_names, "class_names")
        self.wnids = _names(wnids, "wnids")
        self.name = name
        # JSON-able notes on where the model came from (e.g. what an importer folded or
        # dropped); saved with the model
        self.info = {}
        self.rng = _checks.rng_from(seed)
        self._init_rng = _checks.rng_from(seed)   # initial weights of added layers
        # A ReLU (Conv2d also: ReLU6, Clip, HardSwish, SiLU) that only reads a Conv2d
        # is applied by the convolution as it writes its output, unless the convolution's
        # own output is asked for; in test mode a BatchNorm2d that only reads a Conv2d is
        # folded into it (nn/fold.py). False runs every layer separately.
        self.fuse_relu = self.fold_batchnorm = True
        self._plans = {}    # see _plan

    # ------------------------------------------------------------------ building
    def add(self, name, layer, inputs=None):
        """Append a node; ``inputs`` (a name or list of names) defaults to the
        previous node (or the model input for the first node). Returns self."""
        inputs = self.check_node(name, layer, inputs)
        return self._append(name, layer, inputs, layer.init_params(self._init_rng, np.float32),
                            layer.init_buffers(np.float32))

    def check_node(self, name, layer, inputs):
        """The node's input list (names), after checking that :meth:`add` may append
        ``layer`` under ``name`` reading ``inputs``; raises ValueError otherwise."""
        if not isinstance(name, str) or not name or "/" in name or name == INPUT:
            raise ValueError(f"node name must be a non-empty string without '/', not {INPUT!r}; got {name!r}")
        if name in self._index:
            raise ValueError(f"a node named {name!r} already exists")
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a gradvis.nn.Layer, got {type(layer).__name__}")
        if inputs is None:
            inputs = [self.nodes[-1].name if self.nodes else INPUT]
        elif isinstance(inputs, str):
            inputs = [inputs]
        inputs = list(inputs)
        for i in inputs:
            if i != INPUT and i not in self._index:
                raise ValueError(f"node {name!r} reads {i!r}, which is not an earlier node"
                                 f"{self._suggest(i)}")
        n = layer.num_inputs
        if (n is not None and len(inputs) != n) or len(inputs) < 1:
            raise ValueError(f"node {name!r}: {layer.type} takes {n or 'one or more'} input(s), got {inputs}")
        return inputs

    def add_with_arrays(self, name, layer, inputs, params, buffers):
        """Append a node with the given parameter and buffer arrays ({local name:
        array}, of ``layer.param_shapes``/``buffer_shapes``) instead of freshly
        initialized ones: what loaders and importers build models with. Returns self."""
        inputs = self.check_node(name, layer, inputs)
        return self._append(name, layer, inputs, params, buffers)

    def _append(self, name, layer, inputs, params, buffers):
        """Append a checked node with its parameter and buffer arrays."""
        self._index[name] = len(self.nodes)
        self.nodes.append(Node(name, layer, inputs))
        self._plans = {}
        for k, v in params.items():
            self.params[f"{name}.{k}"] = v
        for k, b in buffers.items():
            self.buffers[f"{name}.{k}"] = b
        return self

    def init_params(self, seed=0, dtype=np.float32):
        """(Re)initialize all parameters (He-normal convs, uniform linears, BN 1/0)
        and buffers, with a seeded generator."""
        rng = _checks.rng_from(seed)
        for node in self.nodes:
            for k, v in node.layer.init_params(rng, dtype).items():
                self.params[f"{node.name}.{k}"] = v
            for k, v in node.layer.init_buffers(dtype).items():
                self.buffers[f"{node.name}.{k}"] = v
        return self

    def seed(self, seed):
        """Reseed the generator used by Dropout."""
        self.rng = _checks.rng_from(seed)
        return self

    # ------------------------------------------------------------------ lookup
    @property
    def layer_names(self):
        return [n.name for n in self.nodes]

    def __len__(self):
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def __contains__(self, name):
        return name in self._index

    def _suggest(self, name):
        close = difflib.get_close_matches(str(name), self.layer_names, n=3, cutoff=0.5)
        return f"; did you mean {', '.join(map(repr, close))}?" if close else ""

    def index(self, key, name="layer"):
        """Node index of a name or an index (negative indices count from the end).

        An unknown name or an index out of range raises :class:`LayerNotFoundError`
        (a ValueError and a KeyError) whose message starts with ``name``, the
        argument that gave ``key``; a key of another type raises TypeError.
        """
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key)
            n = len(self.nodes)
            if not -n <= k < n:
                span = f"0 to {n - 1}, or -{n} to -1 from the end" if n else "the model has no layers"
                raise LayerNotFoundError(f"{name}: layer index {k} is out of range for a model with "
                                         f"{n} layers ({span})")
            return k % n
        if isinstance(key, str):
            if key not in self._index:
                raise LayerNotFoundError(f"{name}: no layer named {key!r}{self._suggest(key)} "
                               f"(layers: {', '.join(self.layer_names)})")
            return self._index[key]
        raise TypeError(f"{name}: a layer is named by a str or an int index, got {type(key).__name__}")

    def __getitem__(self, key):
        """The layer object of a node, by name or index."""
        return self.nodes[self.index(key)].layer

    def node(self, key):
        return self.nodes[self.index(key)]

    def layer_params(self, key):
        """Parameters of one node, keyed by local name ('weight', ...)."""
        name = self.nodes[self.index(key)].name
        return {k.split(".", 1)[1]: v for k, v in self.params.items() if k.split(".", 1)[0] == name}

    def named_parameters(self):
        """[(name, array)] in node order."""
        return list(self.params.items())

    def parameters(self):
        return list(self.params.values())

    def num_parameters(self):
        return int(sum(p.size for p in self.params.values()))

    @property
    def num_classes(self):
        for node in reversed(self.nodes):
            if isinstance(node.layer, Linear):
                return node.layer.out_features
            if isinstance(node.layer, Conv2d):
                return node.layer.out_channels
        return None

    def output_shapes(self, input_shape=None, end=None):
        """{node name: output shape without the batch axis} for an input (C, H, W),
        for the nodes up to ``end`` (a name or index; default all)."""
        shapes = {INPUT: tuple(input_shape or self.input_shape)}
        last = len(self.nodes) - 1 if end is None else self.index(end, "end")
        for node in self.nodes[:last + 1]:
            try:
                shapes[node.name] = tuple(node.layer.output_shape([shapes[i] for i in node.inputs]))
            except ValueError as e:
                raise ValueError(f"layer {node.name!r} ({node.layer.type}): {e}") from None
        return shapes

    def fits(self, size, end=None):
        """True if (H, W) images pass the geometry of every layer (up to ``end``, a name or index)."""
        if end is not None:
            self.index(end, "end")      # an unknown layer is an error, not a misfit
        try:
            shapes = self.output_shapes((self.input_shape[0],) + tuple(size), end=end)
        except ValueError:
            return False
        return shapes is not None

    def min_input_size(self, end=None, limit=1 << 16):
        """The smallest (H, W) the layers accept (up to ``end``): H the least height that
        fits at the model's own width, W the least width at that height. Computed from the
        layers' geometry (kernels, strides, padding, pools). None if no size up to
        ``limit`` fits; a model ending in a Linear of fixed width may take one size only."""
        def least(fits_at, start):
            for v in range(1, start + 1):          # the sizes up to the model's own, one by one
                if fits_at(v):
                    return v
            lo, hi = start, start * 2              # beyond: doubling, then bisection
            while hi <= limit and not fits_at(hi):
                lo, hi = hi, hi * 2
            if hi > limit:
                return None
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits_at(mid) else (mid, hi)
            return hi
        h0, w0 = self.input_shape[1:]
        h = least(lambda v: self.fits((v, w0), end), h0)
        if h is None:
            return None
        w = least(lambda v: self.fits((h, v), end), w0)
        return None if w is None else (h, w)

    def summary(self):
        """A table of nodes, inputs, output shapes and parameter counts."""
        shapes = self.output_shapes()
        rows = [("name", "layer", "inputs", "output", "params")]
        for node in self.nodes:
            n = sum(self.params[f"{node.name}.{k}"].size for k in node.layer.param_shapes)
            ins = ",".join(node.inputs)
            rows.append((node.name, node.layer.describe(), ins, "x".join(map(str, shapes[node.name])), str(n)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"total parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<gradvis.Model {self.name!r}: {len(self.nodes)} layers, {self.num_parameters():,} parameters>"

    # ------------------------------------------------------------------ passes
    def _range(self, start, end):
        if not self.nodes:
            raise ValueError("the model has no layers")
        s = 0 if start is None else self.index(start, "start")
        e = len(self.nodes) - 1 if end is None else self.index(end, "end")
        if s > e:
            raise ValueError(f"start ({self.nodes[s].name!r}, index {s}) comes after end "
                             f"({self.nodes[e].name!r}, index {e})")
        return s, e

    def _ancestors(self, targets, s, bound):
        """Indices (>= s) of the nodes the tensors ``targets`` depend on, themselves included."""
        needed = set()
        stack = list(targets)
        while stack:
            name = stack.pop()
            if name == bound or name == INPUT:
                continue
            i = self._index[name]
            if i < s or i in needed:
                continue    # before the start: forward reports the crossing skip connection
            needed.add(i)
            stack.extend(self.nodes[i].inputs)
        return needed

    def forward(self, X, start=None, end=None, mode="test", outputs=None, rng=None, cache=True):
        """Run nodes ``start`` through ``end`` (inclusive, as CS231n).

        Only the nodes that ``end`` (or ``outputs``) depend on are computed: in a
        branching graph, side branches listed between start and end are skipped
        (and get zero parameter gradients in :meth:`backward`).

        Args:
            X: (N, C, H, W) float32/float64: the model input when ``start`` is None,
                else the input of node ``start`` (the output of the node before it).
            start, end: node index or name (default: first, last).
            mode: 'test' (batch norm uses running statistics, dropout off) or 'train'
                (batch statistics, running statistics updated, dropout on).
            outputs: optional list of node names; then ``out`` is a dict name -> tensor
                of those nodes (and ``end`` defaults to the last of them).
            rng: a numpy Generator for dropout (default: the model's ``rng``).
            cache: False keeps nothing for a backward pass and drops each tensor
                after its last reader: a pass then holds a few layers' outputs,
                not all of them (the returned cache is None).
                In test mode, once this model's last backward pass took input
                gradients only (a gradient loop), the cache is lean: it keeps
                the ReLU / clamp masks as bits and no activation the input
                gradient does not read, and a reference to X; a backward pass
                that needs more (rules, parameter gradients) runs this forward
                pass again. 'full' keeps a full cache whatever came before.

        Returns:
            (out, cache): the last node's output (or the dict), and the cache for
            :meth:`backward`.
        """
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if isinstance(cache, (bool, np.bool_)):
            cache_on, full = bool(cache), False
        elif isinstance(cache, str) and cache == "full":
            cache_on, full = True, True
        else:
            raise TypeError(f"cache must be True, False or 'full', got {cache!r}")
        X = _as_float_input(X)
        if outputs is not None:
            outputs = [outputs] if isinstance(outputs, str) else list(outputs)
            if not outputs:
                raise ValueError("outputs must name at least one node (or be None for the last node's output)")
            for o in outputs:
                self.index(o, "outputs")
            if end is None:
                end = max(self.index(o) for o in outputs)
        s, e = self._range(start, end)
        if outputs is not None:
            for o in outputs:
                if not s <= self.index(o) <= e:
                    raise ValueError(f"requested output {o!r} is not among the nodes run "
                                     f"({self.nodes[s].name!r} .. {self.nodes[e].name!r})")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        first = self.nodes[s]
        if s == 0 and start is None:
            bound = INPUT
            if X.ndim != 4 or X.shape[1] != self.input_shape[0]:
                raise ValueError(f"X must be (N, {self.input_shape[0]}, H, W) images, got shape {X.shape}")
        else:
            if len(first.inputs) != 1:
                raise ValueError(f"cannot start at {first.name!r}: it reads several tensors {first.inputs}")
            bound = first.inputs[0]
        rng = self.rng if rng is None else rng
        needed, fused, keys, folds, masks, frees, gates, steps, light, leans = self._plan(s, e, outputs, bound, mode)
        tensors = {bound: X}
        if not cache_on:
            passes.forward_light(self, light, tensors, first, fused, mode, rng, set())
            last = self.nodes[e].name
            return ({o: tensors[o] for o in outputs} if outputs is not None else tensors[last]), None
        # a lean cache where the backward pass will take input gradients only (test
        # mode, and this model's last backward pass was one: a gradient loop)
        lean = not full and mode == "test" and bool(self.__dict__.get("_input_grad_only"))
        caches, shapes = passes.forward_cached(self, leans if lean else steps, tensors, first, fused, mode, rng,
                                               masks, frees if lean else None, s)
        last = self.nodes[e].name
        result = {o: tensors[o] for o in outputs} if outputs is not None else tensors[last]
        shapes.update((k, v.shape) for k, v in tensors.items())
        cache = {"start": s, "end": e, "bound": bound, "caches": caches, "dtype": X.dtype, "masks": masks,
                 "X_shape": X.shape, "outputs": outputs, "shapes": shapes, "last": self.nodes[e]}
        if lean:   # what a backward pass that needs the activations runs again
            cache["lean"] = (X, start, end, outputs)
        return result, cache

    def _plan(self, s, e, outputs, bound, mode="test"):
        """What a forward pass over nodes s..e needs besides the tensors, which depends
        only on the graph: the nodes it computes, the ReLU fusions, the batch norms
        folded into convolutions (test mode), each node's parameter and buffer keys, and
        the steps: node by node, in chains without a cache, in chains that keep a lean
        cache (test mode). Kept per (range, outputs, mode, fusion settings); a gradient
        loop runs the same pass hundreds of times (rebuilding this was ~40 us a pass)."""
        fold = mode == "test" and self.fuse_relu and getattr(self, "fold_batchnorm", True)
        key = (s, e, None if outputs is None else tuple(outputs), bound, self.fuse_relu, fold)
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(key)
        if plan is None:
            needed = self._ancestors(outputs if outputs is not None else [self.nodes[e].name], s, bound)
            fused = dict.fromkeys(self._relu_fusions(s, e, needed, outputs))
            fused.update(self._act_fusions(s, e, needed, outputs))
            folds = fusion.batchnorm_folds(self.nodes, s, e, needed, outputs) if fold else set()
            gates = fusion.gate_folds(self.nodes, s, e, needed, outputs, folds) if fold else set()
            masks = fusion.backward_masks(self.nodes, self._index, s, e, needed, outputs) if self.fuse_relu else {}
            keys = [([(k, f"{n.name}.{k}") for k in n.layer.param_shapes],
                     [(k, f"{n.name}.{k}") for k in n.layer.buffer_shapes]) for n in self.nodes]
            if len(plans) >= 64:
                plans.clear()
            last_reader = {t: j for j in sorted(needed) for t in self.nodes[j].inputs}
            keep = set(outputs or ()) | {self.nodes[e].name}
            frees = {}
            for t, j in last_reader.items():
                if t not in keep:
                    frees.setdefault(j, []).append(t)
            residuals = (fusion.residual_fusions(self.nodes, self._index, s, e, needed, outputs, fused, folds, bound)
                         if self.fuse_relu else {})
            steps = fusion.forward_steps(self.nodes, s, e, needed, fused, keys, folds, frees, gates, residuals)
            plan = plans[key] = (needed, fused, keys, folds, masks, frees, gates, steps,
                                 passes.chain_steps(fusion.light_steps(steps, fused)),
                                 passes.lean_steps(steps, fused, self.nodes) if mode == "test" else steps)
        return plan

    def _relu_fusions(self, s, e, needed, outputs):
        """nn/fusion.py's relu_fusions (none when fuse_relu is off)."""
        return fusion.relu_fusions(self.nodes, s, e, needed, outputs) if self.fuse_relu else set()

    def _act_fusions(self, s, e, needed, outputs):
        """nn/fusion.py's act_fusions (none when fuse_relu is off)."""
        return fusion.act_fusions(self.nodes, s, e, needed, outputs) if self.fuse_relu else {}

    def backward(self, dout, cache, param_grads=True, input_grad=True, rules=None):
        """Backward of :meth:`forward`.

        Args:
            dout: d(loss)/d(out): an array shaped like the last node's output, or,
                when forward had ``outputs``, a dict name -> gradient (missing = 0).
            cache: from :meth:`forward`.
            param_grads: compute parameter gradients. The image-gradient
                algorithms pass False and skip the weight-gradient kernels.
            input_grad: compute dX. Training passes False and skips the first
                layer's input gradient.
            rules: None, or a dict that replaces the input-gradient rule of some
                nodes: keys are node names or Layer subclasses (matched by exact
                type; a name wins over a type), values are callables
                ``rule(layer, dout, cache) -> list`` returning one gradient per
                input of the node, as ``layer.backward_inputs`` does. Parameter
                gradients are unchanged. Attribution methods that redefine the
                backward pass use it (guided backpropagation and deconvolution
                replace ReLU's rule, fused ReLUs included: their cache is their
                output; DeepLift replaces the nonlinearities'; a rule that
                returns ``layer.backward_inputs(dout, cache)`` reads a layer's
                output gradient). A rule for a folded batch norm or its
                convolution gets the separate layers' caches (nn/fold.py).

        Returns:
            (dX, grads): the gradient w.r.t. forward's X (None when input_grad is False)
            and a dict parameter name -> gradient for every parameter of the nodes run
            (zeros where the loss does not depend on it; empty when param_grads is False).
        """
        if cache is None:
            raise TypeError("cache must be the cache returned by this model's forward, got None "
                            "(forward with cache=False keeps nothing for backward)")
        if not isinstance(cache, dict) or "last" not in cache:
            got = "a dict without forward's entries" if isinstance(cache, dict) else type(cache).__name__
            raise TypeError(f"cache must be the cache returned by this model's forward, got {got}")
        s, e = cache["start"], cache["end"]
        if e >= len(self.nodes) or self.nodes[e] is not cache["last"]:
            raise ValueError("cache comes from another model's forward (or from before this "
                             "model's layers changed); pass the cache of this model's forward")
        passes.check_rules(rules)
        dtype = cache["dtype"]
        shapes = cache["shapes"]
        masks = cache["masks"]
        caches, bound = cache["caches"], cache["bound"]
        grads_t = {}
        # input gradients only, no rules (the image-gradient methods): a convolution's
        # kernel called directly, as Model.forward does without a cache
        direct = not param_grads and input_grad and not rules

        def accumulate(name, g):
            if type(g) is not ChannelGrad:
                g = np.asarray(g)
            if g.shape != shapes[name]:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, expected {shapes[name]}")
            prev = grads_t.get(name)
            grads_t[name] = g if prev is None else add_grads(prev, g, direct)

        if cache["outputs"] is not None:
            if not isinstance(dout, dict):
                raise TypeError("forward ran with outputs=[...]; pass dout as a dict name -> gradient")
            for k, g in dout.items():
                if k not in cache["outputs"]:
                    raise ValueError(f"dout has {k!r}, which was not among forward's outputs {cache['outputs']}")
                accumulate(k, np.asarray(g, dtype=dtype))
        else:
            accumulate(self.nodes[e].name, np.asarray(dout, dtype=dtype))

        grads = {}
        folds, unfolded = {}, {}
        if "lean" in cache and not direct:   # the pass again, keeping what this backward reads
            X, start, end, outs = cache["lean"]
            cache = self.forward(X, start=start, end=end, mode="test", outputs=outs, cache="full")[1]
            caches, shapes = cache["caches"], cache["shapes"]
        self._input_grad_only = direct   # the next test-mode forward pass keeps a lean cache (forward)
        for i in range(e, s - 1, -1):
            node = self.nodes[i]
            g = grads_t.pop(node.name, None)
            if g is None:
                if param_grads:
                    for k, shp in node.layer.param_shapes.items():
                        grads[f"{node.name}.{k}"] = np.zeros(shp, dtype)
                continue
            c = caches[i - s]
            if type(g) is ChannelGrad:   # (direct) as terms: an SE block's map, a residual block's output
                d = g.through(node.layer, c)   # the activation's input gradient from them
                if d is not None:
                    accumulate(node.inputs[0], d)
                    continue
                g = g.array()
            if type(c) is passes.ActBits:   # (a lean cache: direct) the mask as bits
                accumulate(node.inputs[0], c.backward(g))
                continue
            if direct and type(node.layer) is Conv2d and type(c) is tuple and type(g) is np.ndarray:
                dx = passes.conv_input_grad(g, c, masks.get(i), caches, s)   # None: the layer's own path
                if dx is not None:
                    t = self.nodes[masks[i][0]].inputs[0] if i in masks else node.inputs[0]
                    prev = grads_t.get(t)
                    grads_t[t] = dx if prev is None else add_grads(prev, dx, True)
                    folds.pop(i, None)
                    continue
            if direct and (terms := channel_terms(node.layer, g, c)) is not None:   # a gate's Mul, a pool
                for t, d in zip(node.inputs, terms):
                    accumulate(t, d)
                continue
            need_inputs = input_grad or any(t != bound for t in node.inputs)
            rule = None if not rules else rules.get(node.name, rules.get(type(node.layer)))
            targets = node.inputs
            folded = folds.pop(i, None)       # this convolution applied the batch norm (or scale) after it
            if i in unfolded:
                c = unfolded.pop(i)
            elif isinstance(c, Folded):   # its gradient is the folded convolution's
                conv = self.nodes[i - 1]
                if rule is None and not (rules and (conv.name in rules or type(conv.layer) in rules)):
                    accumulate(conv.name, g)
                    folds[i - 1] = c
                    continue
                unfolded[i - 1], c = c.unfold()      # rules see the separate layers
            if rule is not None:
                dins = rule(node.layer, g, c) if need_inputs else []
                if need_inputs and len(dins) != len(node.inputs):
                    raise ValueError(f"the backward rule of {node.name!r} returned {len(dins)} "
                                     f"gradient(s) for {len(node.inputs)} input(s)")
                dparams = node.layer.backward_params(g, c) if param_grads and node.layer.param_shapes else {}
            elif i in masks and not (rules and (self.nodes[masks[i][0]].name in rules
                                                or type(self.nodes[masks[i][0]].layer) in rules)):
                targets = self.nodes[masks[i][0]].inputs   # the activation's backward runs in the kernel
                dins = node.layer.backward_inputs_act(g, c, masks[i][1], caches[masks[i][0] - s])
                dparams = node.layer.backward_params(g, c) if param_grads else {}
            elif param_grads and need_inputs:
                dins, dparams = node.layer.backward(g, c)
            elif param_grads:
                dins, dparams = [], node.layer.backward_params(g, c)
            else:
                dins, dparams = node.layer.backward_inputs(g, c), {}
            if folded is not None and param_grads:
                dparams, bn_grads = folded.param_grads(g, dparams)
                grads.update((f"{self.nodes[i + 1].name}.{k}", v) for k, v in bn_grads.items())
            for k, v in dparams.items():
                grads[f"{node.name}.{k}"] = v
            for t, d in zip(targets, dins):
                accumulate(t, d)
        if not input_grad:
            return None, grads
        dX = grads_t.get(bound)
        if dX is None:
            dX = np.zeros(cache["X_shape"], dtype)
        return (dX.array() if type(dX) is ChannelGrad else dX), grads

    # ------------------------------------------------------------------ loss
    def loss(self, X, y=None, mode="train", label_smoothing=0.0):
        """Scores, or the softmax cross-entropy loss and parameter gradients.

        As CS231n's ``PretrainedCNN.loss``: with ``y`` None return the class scores
        (test mode); else return ``(loss, grads)``. ``label_smoothing`` mixes the
        one-hot target with the uniform distribution. Weight decay is the
        optimizer's job (:mod:`gradvis.train`).
        """
        if y is None:
            scores, _ = self.forward(X, mode="test")
            return scores
        scores, cache = self.forward(X, mode=mode)
        loss, dscores = softmax_cross_entropy(scores, y, label_smoothing)
        _, grads = self.backward(dscores, cache, input_grad=False)
        return loss, grads

    def predict(self, X, batch_size=256):
        """Class scores of X in test mode, in batches of ``batch_size`` (an int >= 1)."""
        batch_size = _checks.positive_int(batch_size, "batch_size")
        X = _as_float_input(X)
        outs = [self.forward(X[i:i + batch_size], cache=False)[0] for i in range(0, len(X), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), X.dtype)

    # ------------------------------------------------------------------ copies
    def copy(self):
        import copy as _copy
        m = _copy.copy(self)
        m.nodes = list(self.nodes)
        m._index = dict(self._index)
        # frozen arrays cannot change: the copy shares them
        m.params = {k: v if is_immutable(v) else v.copy() for k, v in self.params.items()}
        m.buffers = {k: v if is_immutable(v) else v.copy() for k, v in self.buffers.items()}
        m.class_names = None if self.class_names is None else list(self.class_names)
        m.wnids = None if self.wnids is None else list(self.wnids)
        m.info = _copy.deepcopy(self.info)
        m.rng = _copy.deepcopy(self.rng)
        m._init_rng = _copy.deepcopy(self._init_rng)
        m._plans = {}
        m._folded = {}
        return m

    def __getstate__(self):
        # the per-pass plans and folded weights are rebuilt on use; frozen arrays
        # come back writeable from a pickle, so the model is frozen again
        state = {k: v for k, v in self.__dict__.items() if k not in ("_plans", "_folded", "_input_grad_only")}
        return dict(state, _refreeze=True) if self.frozen else state

    def __setstate__(self, state):
        refreeze = state.pop("_refreeze", False)
        self.__dict__.update(state)
        if refreeze:
            self.freeze()

    def astype(self, dtype):
        """A copy whose parameters and buffers are ``dtype``: float32 or float64 (e.g.
        float64 for gradient checks); other dtypes raise TypeError."""
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        m = self.copy()
        m.params = {k: v.astype(dtype) for k, v in m.params.items()}
        m.buffers = {k: v.astype(dtype) for k, v in m.buffers.items()}
        return m.freeze() if self.frozen else m

    # ------------------------------------------------------------------ pre/post-processing
    def _mean_for(self, h, w):
        if self.mean.ndim == 1:
            return self.mean[:, None, None]
        if self.mean.shape[1:] == (h, w):
            return self.mean
        return self.mean.mean(axis=(1, 2))[:, None, None]   # mean image, other size: its channel means

    def preprocess(self, images):
        """uint8 images (N, H, W, 3) or (H, W, 3), RGB, -> float32 (N, 3, H, W) model input."""
        img = np.asarray(images)
        single = img.ndim == 3
        if single:
            img = img[None]
        if img.ndim != 4 or img.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3), got shape {np.asarray(images).shape}")
        if img.dtype.kind not in "buif":
            raise TypeError(f"images must be a numeric array (uint8 pixel values), got dtype {img.dtype}")
        if img.dtype.kind == "f" and not np.isfinite(img).all():
            raise ValueError("images contain NaN or infinite values")
        x = img.astype(np.float32).transpose(0, 3, 1, 2)
        if self.channel_order == "BGR":
            x = x[:, ::-1]
        x = (x - self._mean_for(*x.shape[2:])) / self.std[:, None, None]
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, X):
        """Model input (N, 3, H, W) or (3, H, W) -> uint8 RGB images (N, H, W, 3) / (H, W, 3), clipped."""
        x = _checks.as_array(X, "X")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"X must be a real numeric array, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        single = x.ndim == 3
        if single:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"X must be (N, 3, H, W) or (3, H, W), got shape {np.asarray(X).shape}")
        img = x * self.std[:, None, None] + self._mean_for(*x.shape[2:])
        if self.channel_order == "BGR":
            img = img[:, ::-1]
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(img[0] if single else img)

    def input_range(self):
        """(lo, hi) of valid model inputs (images of pixel values 0..255), shaped
        (C, 1, 1) for a per-channel mean, or (C, H, W) for a mean image, so they
        broadcast against (N, C, H, W) in ``np.clip``."""
        m = self.mean[:, None, None] if self.mean.ndim == 1 else self.mean
        s = self.std[:, None, None]
        lo, hi = (0.0 - m) / s, (255.0 - m) / s
        return lo.astype(np.float32), hi.astype(np.float32)

    # ------------------------------------------------------------------ files
    def save(self, path, overwrite=False):
        """Write the model to one ``.npz`` file (no pickle); see :mod:`gradvis.nn.fileformat`."""
        return save_model(self, path, overwrite=overwrite)


def check_model(value, name="model"):
    """``value`` if it is a :class:`gradvis.Model`, else TypeError naming it."""
    if not isinstance(value, Model):
        raise TypeError(f"{name} must be a gradvis.Model, got {type(value).__name__}")
    return value


def check_classifier(value, what, name="model"):
    """``value`` if it is a Model whose output is one score per class, (N, num_classes);
    else an error saying that ``what`` needs such a model."""
    m = check_model(value, name)
    if m.num_classes is None:
        raise ValueError(f"{what} needs a classifier, but the model has no Linear or Conv2d layer "
                         f"to give class scores")
    try:
        out = m.output_shapes()[m.nodes[-1].name]
    except ValueError:
        return m    # its nominal input size does not fit; forward reports the problem
    if len(out) != 1:
        raise ValueError(f"{what} needs a model whose output is class scores (N, num_classes), but "
                         f"its last layer {m.nodes[-1].name!r} outputs (N, {', '.join(map(str, out))}) "
                         f"for its input size {m.input_shape}")
    return m
