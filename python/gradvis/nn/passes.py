"""Running the steps of a :class:`~gradvis.nn.graph.Model` pass (nn/fusion.py plans
them): one node on the tensors computed so far, and the whole of a pass that keeps
nothing for a backward pass, whose convolutions call their kernels directly or run
as chains (:func:`chain_steps`: runs of them, with their SE blocks, in one call of
the compiled core); the steps of a pass that keeps a cache, full or lean (for a
backward pass of input gradients only); and a convolution's input gradient by its
kernel, for backward passes that want no parameter gradients."""
from __future__ import annotations

import numpy as np

from .. import _checks, _core
from .conv import Conv2d, fused_act_cache
from .elementwise import Clip
from .activation import HardSigmoid, ReLU, ReLU6, Sigmoid
from .fold import Folded, GateFold, folded_conv_forward, gate_fold
from .fusion import (ACT as _ACT, FOLD as _FOLD, LCHAIN as _LCHAIN, LCONV as _LCONV, LNODE as _LNODE,
                     LTAKE as _LTAKE, RADD as _RADD, RUN as _RUN, SKIP as _SKIP, TAKE as _TAKE, light_steps)
from .module import Layer
from .pooling import GlobalAvgPool

__all__ = ["node_forward", "forward_cached", "forward_light", "chain_steps", "lean_steps", "conv_input_grad",
           "lean_cache", "InputSpec", "ActBits", "check_rules"]

_LEAN = "lean"   # lean_steps' chain entries (step kinds are fusion's small integers)


def node_forward(model, step, tensors, first, fused, mode, rng, act_caches=None, done=None):
    """One node of a pass (a RUN, RELU, ACT, FOLD or RADD step of
    fusion.forward_steps) on the tensors computed so far: (out, its cache).
    act_caches: None in a pass that keeps nothing for a backward pass, else where
    the caches of the batch norm or activation a convolution applied go (by node
    index). done: the pass's set of the residual Adds (node indices) their
    convolution made (None: every Add runs itself)."""
    kind, i, node, inputs, pkeys, bkeys, gate_key, _, res = step
    try:
        ins = [tensors[t] for t in inputs]
    except KeyError:
        t = next(t for t in inputs if t not in tensors)
        raise ValueError(
            f"layer {node.name!r} needs {t!r}, which is computed before the start of this "
            f"pass ({first.name!r}); a skip connection crosses the cut, start earlier") from None
    if kind == _RADD and done is not None and i in done:   # the convolution made the sum (and its ReLU)
        done.discard(i)
        return tensors[res[0]], [x.shape for x in ins]
    P = model.params
    params = {k: P[pk] for k, pk in pkeys}
    buffers = {k: model.buffers[bk] for k, bk in bkeys} if bkeys else {}
    # a per-channel gate the next convolution folds into its weights (nn/fold.py)
    if act_caches is None and gate_key is not None:
        gf = gate_fold(ins, P[gate_key])
        if gf is not None:
            return gf, None
    if ins and type(ins[0]) is GateFold:
        params, ins = dict(params, weight=ins[0].weight(params["weight"])), [ins[0].x]
    try:
        if res is not None and kind in (_RUN, _FOLD) and done is not None:   # it may add its residual
            ref, j, relu = res
            r = tensors.get(ref)
            if kind == _FOLD:
                out, cache, second, added = folded_conv_forward(model, i, ins[0], False, r, relu)
                if act_caches is not None:
                    act_caches[i + 1] = second
            elif node.layer.residual_fits(ins[0], r):
                out, cache = node.layer.forward(ins, params, buffers, mode, rng, relu=relu, residual=r)
                added = True
            else:
                out, cache = node.layer.forward(ins, params, buffers, mode, rng)
                added = False
            if added:
                done.add(j)
            return out, cache
        if kind == _RUN:
            return node.layer.forward(ins, params, buffers, mode, rng)
        if kind == _ACT:
            act = fused[i]
            out, pre, cache = node.layer.forward_act(ins, params, act, keep_pre=act_caches is not None)
            if act_caches is not None:
                act_caches[i + 1] = fused_act_cache(act, out, pre)
            return out, cache
        if kind == _FOLD:
            out, cache, second, _ = folded_conv_forward(model, i, ins[0], i + 1 in fused)
            if act_caches is not None:
                act_caches[i + 1] = second
            return out, cache
        if kind == _RADD:                    # the sum the convolution did not make
            return node.layer.forward(ins, params, buffers, mode, rng, relu=res[1])
        return node.layer.forward(ins, params, buffers, mode, rng, relu=True)   # _RELU
    except (ValueError, TypeError) as err:
        raise type(err)(f"layer {node.name!r} ({node.layer.type}): {err}") from None


def forward_cached(model, steps, tensors, first, fused, mode, rng, masks, frees, s):
    """The steps (fusion.forward_steps) of a pass that keeps a cache for a backward
    pass: (each node's cache, tensor shapes). ``frees``: None for a full cache, else
    the plan's frees, for a lean one (Model.forward), whose backward pass takes
    input gradients only: caches as lean_cache keeps them (ReLU and clamp masks as
    bits, which the convolution after each reads instead of the activation's
    output), and each activation only until its last reader, so that later layers
    write into memory still in cache (the block cache hands out the block released
    last); the steps are then lean_steps', whose chains run runs of layers in one
    call."""
    lean = frees is not None
    shapes, caches, act_caches = {}, [], {}
    done = set()       # the residual Adds their convolutions made
    todo = list(reversed(steps))
    while todo:
        step = todo.pop()
        kind = step[0]
        if kind == _LEAN:   # (lean_steps) a chain, else the steps it covers one by one
            if not _run_lean(model, step, tensors, caches, shapes, masks, s, done):
                todo.extend(reversed(step[-1]))
            continue
        if kind == _TAKE:      # the convolution before it applied this batch norm or activation
            _, i, conv, name, folded = step
            out = tensors[name] = tensors.pop(conv)
            shapes[conv] = out.shape
            # a fused relu's backward masks with out > 0, as with its input; the others
            # get the cache their own forward returns (conv.fused_act_cache)
            cache = act_caches.pop(i) if folded else act_caches.pop(i, out)
        elif kind == _SKIP:    # a branch the requested outputs do not depend on
            caches.append(None)
            continue
        else:
            i = step[1]
            out, cache = node_forward(model, step, tensors, first, fused, mode, rng, act_caches, done)
            tensors[step[2].name] = out
        if lean:
            cache = lean_cache(model.nodes[i], cache, masks.get(i), caches, s)
            for t in frees.get(i, ()):
                v = tensors.pop(t, None)
                if v is not None:
                    shapes[t] = v.shape
        caches.append(cache)
    return caches, shapes


def forward_light(model, light, tensors, first, fused, mode, rng, done):
    """The nodes of a pass that keeps nothing for a backward pass (fusion.light_steps),
    each tensor dropped after its last reader; a convolution whose input and
    parameters are arrays of one dtype, of the shape it last accepted, calls its
    kernel directly (what Conv2d.forward and forward_act call then). done: as
    node_forward's (an empty set)."""
    P = model.params
    conv, conv_act, conv_add = _core.conv2d_forward, _core.conv2d_forward_act, _core.conv2d_forward_add
    for ls in light:
        kind = ls[0]
        if kind == _LTAKE:
            tensors[ls[2]] = tensors.pop(ls[1])
            continue
        if kind == _LCHAIN:
            _, chain, ext, wkeys, bkeys, outs, ext_frees, open_adds, steps = ls
            try:
                got = chain.run([tensors[t] for t in ext], [P[k] if k else None for k in wkeys],
                                [P[k] if k else None for k in bkeys])
            except (KeyError, ValueError, TypeError):
                # what the chain does not take (another dtype, a residual that casts or
                # broadcasts, a missing tensor, a bad shape) runs, or fails, step by step
                forward_light(model, steps, tensors, first, fused, mode, rng, done)
                continue
            for names, out in zip(outs, got):
                for name in names:
                    tensors[name] = out
            for t in ext_frees:
                tensors.pop(t, None)
            done.update(open_adds)
            continue
        step = ls[1]
        if kind == _LCONV:
            _, _, layer, inp, wkey, bkey, act, lo, hi, relu, res = ls
            x, w = tensors.get(inp), P[wkey]
            b = P[bkey] if bkey else None
            if (type(x) is np.ndarray and type(w) is np.ndarray and x.dtype is w.dtype and x.ndim == 4
                    and x.shape[1:] == layer._checked_input
                    and (b is None or (type(b) is np.ndarray and b.dtype is w.dtype))):
                # its residual Add (the step's kind is RUN), where the operand fits
                r = tensors.get(res[0]) if res is not None else None
                if r is not None and not layer.residual_fits(x, r):
                    r = None
                try:
                    if r is not None:
                        out = conv_add(x, w, b, r, layer.stride, layer.padding, layer.dilation, layer.groups,
                                       res[2])
                        done.add(res[1])
                    elif act is None:
                        out = conv(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups, relu)
                    else:
                        out = conv_act(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups, act,
                                       lo, hi, False)
                except (ValueError, TypeError) as err:
                    raise type(err)(f"layer {step[2].name!r} ({layer.type}): {err}") from None
            else:
                out, _ = node_forward(model, step, tensors, first, fused, mode, rng, None, done)
        else:
            out, _ = node_forward(model, step, tensors, first, fused, mode, rng, None, done)
        tensors[step[2].name] = out
        for t in step[7]:
            tensors.pop(t, None)


def chain_steps(light):
    """light (fusion.light_steps) with each run of two or more layers a chain takes
    as one ``(LCHAIN, chain, inputs, weight keys, bias keys, output names, tensors
    to free after it, residual Adds made in it whose step follows it, its steps)``
    entry: ``chain`` a :class:`_core.ConvChain` that runs them in one call (in a
    pass at batch 1 each layer's Python step and binding cost more than some of
    the layers). It takes the convolutions run directly (their fused activations'
    and residual Adds' names, from TAKE steps and the Adds they make, are names of
    its tensors), and squeeze-and-excitation blocks: global average pools that
    keep their axes, sigmoids, hard sigmoids, and a per-channel gate's Mul with
    the convolution that alone reads it."""
    out, i = [], 0
    while i < len(light):
        j, entry = _chain_at(light, i)
        if entry is None:
            out.append(light[i])
            i += 1
        else:
            out.append(entry)
            i = j
    return out


def _se_op(ls):
    """The chain's op for an SE block's step (a global average pool keeping its
    axes, a sigmoid, a hard sigmoid), else None."""
    if ls[0] != _LNODE or ls[1][0] != _RUN or len(ls[1][3]) != 1 or ls[1][6] is not None:
        return None
    layer = ls[1][2].layer
    t = type(layer)
    if t is GlobalAvgPool and layer.keepdims:
        return ("gap", 0.0, 0.0)
    if t is Sigmoid:
        return ("sigmoid", 0.0, 0.0)
    if t is HardSigmoid:
        return ("hardsigmoid", float(layer.alpha), float(layer.beta))
    return None


def _chain_at(light, i, lean=None):
    """(the index after the chain that starts at light[i], its LCHAIN entry), or
    (i + 1, None) where fewer than two layers would form it. lean: (steps, the
    step of each light entry, the model's nodes, fused) for a chain of a pass
    that keeps a lean cache (:func:`lean_steps`): its entry is then ``(LEAN,
    chain, inputs, weight keys, bias keys, output slots, their names, tensors to
    free after it, residual Adds made in it whose step follows it, its recipes,
    the names it defines and their refs)``, the chain built to return the masks
    as bits, the SiLU / HardSwish inputs and the SE blocks' arrays the caches
    keep, and its gates applied to the maps, as the layers do."""
    live, ext, layers, wkeys, bkeys, frees, adds = {}, [], [], [], [], [], {}
    keep, recipes, names, need = [], [], [], []   # (lean) kept values, node caches' recipes, names, slots returned

    def ref(name):   # ("x", k): the chain's input k; ("l", k): layer k's output
        if name in live:
            return live[name]
        if name not in ext:
            ext.append(name)
        return ("x", ext.index(name))

    def free(names_, skip=None):
        for t in names_:
            if t != skip and live.pop(t, None) is None:
                frees.append(t)

    def conv(ls, inp, gate=None):
        _, step, layer, _, wkey, bkey, act, lo, hi, relu, res = ls
        r = None
        if res is not None:
            r, relu = ref(res[0]), res[2]
            adds[res[1]] = step[2].name
        g = None if gate is None else ref(gate)
        x = ref(inp)
        layers.append(("conv", x, r, g, layer.stride, layer.padding, layer.dilation, layer.groups, act,
                       lo, hi, bool(relu)))
        wkeys.append(wkey)
        bkeys.append(bkey)
        recipes.append(("conv", step[1], layer, wkey, bkey is not None, x if g is None else ("g", x, g)))
        out = ("l", len(layers) - 1)
        live[step[2].name] = out
        names.append((step[2].name, out))

    j = i
    while j < len(light):
        ls = light[j]
        se = _se_op(ls)
        if ls[0] == _LCONV:
            if lean is not None and ls[6] is not None and _lean_act(lean, light, j + 1, ls[1][2].name) is None:
                break   # (its activation's cache is not one a lean chain makes)
            conv(ls, ls[3])
            free(ls[1][7])
        elif se is not None:
            step = ls[1]
            x = ref(step[3][0])
            layers.append((se[0], x, None, None, 1, 0, 1, 1, None, se[1], se[2], False))
            wkeys.append(None)
            bkeys.append(None)
            out = live[step[2].name] = ("l", len(layers) - 1)
            names.append((step[2].name, out))
            recipes.append(("gap", x) if se[0] == "gap" else ("out", out) if se[0] == "sigmoid"
                           else ("hsig", x, step[2].layer))
            need.append(x if se[0] == "hardsigmoid" else out)
            free(step[7])
        elif (ls[0] == _LNODE and ls[1][0] == _RUN and ls[1][6] is not None and len(ls[1][3]) == 2
              and j + 1 < len(light)
              and light[j + 1][0] == _LCONV and light[j + 1][3] == ls[1][2].name):
            # a gate's Mul and the convolution that alone reads its product
            mul, nxt = ls[1], light[j + 1]
            if lean is not None:
                if nxt[6] is not None and _lean_act(lean, light, j + 2, nxt[1][2].name) is None:
                    break
                ra, rb = ref(mul[3][0]), ref(mul[3][1])
                recipes.append(("mul", ra, rb))
                names.append((mul[2].name, ("g", ra, rb)))
                need.extend((ra, rb))
            conv(nxt, mul[3][0], mul[3][1])
            free(mul[7])
            free(nxt[1][7], skip=mul[2].name)
            j += 1
        elif ls[0] == _LTAKE and ls[1] in live:
            if lean is not None:
                act = _lean_act(lean, light, j, ls[1])
                if act is None:
                    break
                src = live[ls[1]]   # (a "pre" comes from a conv layer with its activation: ACT)
                keep.append(("pre", src[1]) if act[0] == "pre" else ("bits", src) + act[1:])
                recipes.append((act[0], len(keep) - 1))
                names.append((ls[2], src))
            live[ls[2]] = live.pop(ls[1])
        elif ls[0] == _LNODE and ls[1][0] == _RADD and ls[1][1] in adds:   # a sum the chain made
            step = ls[1]
            out = live[step[2].name] = live[adds.pop(step[1])]
            recipes.append(("shapes", out, len(step[3])))
            names.append((step[2].name, out))
            free(step[7])
        else:
            break
        j += 1
    if len(layers) < 2:
        return i + 1, None
    n = len(ext)
    slot = lambda r: -1 if r is None else r[1] if r[0] == "x" else n + r[1]   # noqa: E731
    spec = [(op, slot(a), slot(r), slot(g), *rest) for op, a, r, g, *rest in layers]
    outs = {}
    for name, r in live.items():
        outs.setdefault(slot(r), []).append(name)
    if lean is None:
        chain = _core.ConvChain(n, spec, list(outs))
        return j, (_LCHAIN, chain, tuple(ext), tuple(wkeys), tuple(bkeys), tuple(outs.values()), tuple(frees),
                   tuple(adds), tuple(light[i:j]))
    for r in need:
        if r[0] == "l":
            outs.setdefault(slot(r), [])
    kept = [(k[0], slot(k[1])) + k[2:] if k[0] == "bits" else k for k in keep]
    chain = _core.ConvChain(n, spec, list(outs), kept, False)
    return j, (_LEAN, chain, tuple(ext), tuple(wkeys), tuple(bkeys), tuple(outs), tuple(outs.values()),
               tuple(frees), tuple(adds), tuple(recipes), tuple(names))


def _lean_act(lean, light, j, conv):
    """What a lean cache keeps of the activation light[j] applies (the TAKE of
    ``conv``'s output): ("bits", "relu" or "clamp", lo, hi) for a ReLU, ReLU6 or
    Clip (as lean_cache makes ActBits), ("pre",) for a SiLU or HardSwish (its
    input), else None."""
    if j >= len(light) or light[j][0] != _LTAKE or light[j][1] != conv:
        return None
    steps, pos, nodes, fused = lean
    _, i, _, _, folded = steps[pos[j]]
    if folded or i - 1 not in fused:
        return None
    act, t = fused[i - 1], type(nodes[i].layer)
    if act is None:
        return ("bits", "relu", 0.0, 0.0) if t is ReLU else None
    if act[0] == "clamp":
        return ("bits", "clamp", float(act[1]), float(act[2])) if t is ReLU6 or t is Clip else None
    return ("pre",) if act[0] in ("silu", "hardswish") else None


def lean_steps(steps, fused, nodes):
    """steps (fusion.forward_steps) for a pass that keeps a lean cache: each run of
    them that a chain takes (:func:`_chain_at`) as one LEAN entry, followed by the
    steps it covers (run one by one where the chain does not take the pass's
    arrays) and their caches' recipes (a SKIP step's: None)."""
    light = light_steps(steps, fused)
    pos = [k for k, st in enumerate(steps) if st[0] != _SKIP]
    out, i, done = [], 0, 0
    while i < len(light):
        j, entry = _chain_at(light, i, (steps, pos, nodes, fused))
        if entry is None:
            i += 1
            continue
        a, b = pos[i], pos[j - 1] + 1
        out.extend(steps[done:a])
        it = iter(entry[9])
        recipes = tuple(("skip",) if st[0] == _SKIP else next(it) for st in steps[a:b])
        out.append(entry[:9] + (recipes, entry[10], tuple(steps[a:b])))
        done, i = b, j
    out.extend(steps[done:])
    return out


def _run_lean(model, entry, tensors, caches, shapes, masks, s, done):
    """A LEAN entry of lean_steps: its chain, each covered node's cache as a lean
    pass keeps it (lean_cache's), the tensors it leaves. False (nothing done)
    where the chain does not take the arrays (another dtype, a bad shape...)."""
    _, chain, ext, wkeys, bkeys, slots, outs, ext_frees, open_adds, recipes, names, _ = entry
    P = model.params
    try:
        xs = [tensors[t] for t in ext]
        got, kept, sh = chain.run_kept(xs, [P[k] if k else None for k in wkeys], [P[k] if k else None for k in bkeys])
    except (KeyError, ValueError, TypeError):
        return False
    n, dt = len(xs), xs[0].dtype
    by_slot = dict(zip(slots, got))
    arr = lambda r: xs[r[1]] if r[0] == "x" else by_slot[n + r[1]]   # noqa: E731

    def shape(r):
        if r[0] == "g":   # a gated map: the larger operand's
            a, b = shape(r[1]), shape(r[2])
            return a if np.prod(a) >= np.prod(b) else b
        return sh[r[1]] if r[0] == "x" else sh[n + r[1]]

    for rc in recipes:
        kind = rc[0]
        if kind == "conv":
            _, i, layer, wkey, has_b, r = rc
            c = (None, P[wkey], has_b, layer.stride, layer.padding, layer.dilation, layer.groups)
            if r[0] == "x":   # the chain's input: as a node's cache (its mask's activation ran before)
                c = lean_cache(model.nodes[i], (arr(r),) + c[1:], masks.get(i), caches, s)
            else:
                c = (InputSpec.of(shape(r), dt),) + c[1:]
        elif kind == "bits":
            c = ActBits.of(kept[rc[1]], dt)
        elif kind == "pre":
            c = kept[rc[1]]
        elif kind == "shapes":
            c = [shape(rc[1])] * rc[2]
        elif kind == "gap":
            c = (shape(rc[1]), dt)
        elif kind == "out":
            c = arr(rc[1])
        elif kind == "hsig":
            c = (arr(rc[1]), _checks.number(rc[2].alpha, "alpha"), _checks.number(rc[2].beta, "beta"))
        elif kind == "mul":   # Mul's gate cache: (the map, the gate, whether the gate came first)
            a, b = arr(rc[1]), arr(rc[2])   # (the chain took one as the other's gate: the smaller)
            c = ("gate", a, b, False) if b.size < a.size else ("gate", b, a, True)
        else:   # skip
            c = None
        caches.append(c)
    for name, r in names:
        shapes[name] = shape(r)
    for ns, a in zip(outs, got):
        for name in ns:
            tensors[name] = a
    for t in ext_frees:
        v = tensors.pop(t, None)
        if v is not None:
            shapes[t] = v.shape
    done.update(open_adds)
    return True


class InputSpec:
    """A convolution's input as a lean cache keeps it (Model.forward): its shape and
    dtype, all that the input gradient reads of it."""
    __slots__ = ("shape", "dtype")

    def __init__(self, x):
        self.shape, self.dtype = x.shape, x.dtype

    @classmethod
    def of(cls, shape, dtype):
        """The spec of an array of ``shape`` and ``dtype`` (a lean chain's slot)."""
        spec = cls.__new__(cls)
        spec.shape, spec.dtype = tuple(shape), dtype
        return spec


class ActBits:
    """A ReLU's, ReLU6's or Clip's cache as a lean cache keeps it (Model.forward):
    its mask as _core.activation_mask's bits, made from the array its backward
    compares (the same selection), and that array's dtype."""
    __slots__ = ("bits", "dtype")

    def __init__(self, ref, spec):
        self.bits, self.dtype = _core.activation_mask(ref, *spec), ref.dtype

    @classmethod
    def of(cls, bits, dtype):
        """A mask already made as bits (a lean chain's), of an array of ``dtype``."""
        m = cls.__new__(cls)
        m.bits, m.dtype = bits, dtype
        return m

    def backward(self, g):
        """The activation's input gradient from its output gradient g."""
        return _core.activation_mask_backward(g if g.dtype is self.dtype else g.astype(self.dtype), self.bits)


def lean_cache(node, cache, mask, caches, s):
    """A node's cache as a lean pass keeps it (Model.forward): a ReLU's, ReLU6's or
    Clip's as ActBits (also where the convolution after it applies the mask); a
    Conv2d's with its input as an InputSpec where conv_input_grad will not need the
    input itself (the weights are an array of its dtype, and the ReLU / clamp before
    it keeps ActBits, or the SiLU / HardSwish its array); a folded batch norm's
    without the convolution's input; else as it is. caches: the pass's so far,
    from node s."""
    if isinstance(cache, Folded):
        return cache.lean()
    t = type(node.layer)
    if t is ReLU and type(cache) is np.ndarray and cache.dtype.char in "fd":   # relu_backward's x
        return ActBits(cache, ("relu", 0.0, 0.0))
    if ((t is ReLU6 or t is Clip) and type(cache) is tuple and len(cache) == 3 and type(cache[0]) is np.ndarray
            and cache[0].dtype.char in "fd"):   # clamp_backward's (x, lo, hi)
        return ActBits(cache[0], ("clamp", float(cache[1]), float(cache[2])))
    if type(cache) is not tuple or t is not Conv2d or len(cache) != 7:
        return cache
    x, w = cache[0], cache[1]
    if type(x) is not np.ndarray or type(w) is not np.ndarray or w.dtype is not x.dtype:
        return cache
    if mask is not None:
        ref = caches[mask[0] - s]
        if mask[1][0] in ("silu", "hardswish"):
            if type(ref) is not np.ndarray or ref.dtype is not x.dtype:
                return cache
        elif type(ref) is not ActBits:
            return cache
    return (InputSpec(x),) + cache[1:]


def conv_input_grad(g, c, mask, caches, s):
    """A Conv2d's input gradient from its output gradient g and forward cache c,
    masked by the activation before it (mask: backward_masks' (node, spec) or None;
    a ReLU's or clamp's cache in a lean pass is ActBits, its mask as bits), by the
    kernel directly; None where g, the activation's cache or the weights are not
    arrays of the input's dtype (the layer's own path converts them)."""
    x, w, _, stride, pad, dilation, groups = c
    dt = x.dtype
    if type(w) is not np.ndarray or w.dtype is not dt:
        return None
    if g.dtype is not dt:
        if type(x) is not InputSpec:
            return None
        g = g.astype(dt)   # (a lean cache's convolution has no other path)
    if mask is None:
        return _core.conv2d_backward_input(g, w, x.shape, stride, pad, dilation, groups)
    a, (kind, lo, hi) = mask
    ref = caches[a - s]
    if type(ref) is ActBits:
        return _core.conv2d_backward_input_mask(g, w, ref.bits, x.shape, stride, pad, dilation, groups)
    if kind not in ("silu", "hardswish"):
        ref = x
    if type(ref) is not np.ndarray or ref.dtype is not dt:
        return None
    return _core.conv2d_backward_input_act(g, w, ref, stride, pad, dilation, groups, kind, lo, hi)


def check_rules(rules):
    """Model.backward's ``rules``: None, or a dict node name or Layer subclass -> callable."""
    if rules is None:
        return
    if not isinstance(rules, dict):
        raise TypeError(f"rules must be a dict (node name or Layer subclass -> callable), "
                        f"got {type(rules).__name__}")
    for k, v in rules.items():
        if not (isinstance(k, str) or (isinstance(k, type) and issubclass(k, Layer))):
            raise TypeError(f"rules keys must be node names or Layer subclasses, got {k!r}")
        if not callable(v):
            raise TypeError(f"rules[{k!r}] must be callable, got {type(v).__name__}")
