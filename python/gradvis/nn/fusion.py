"""Which layers of a :class:`~gradvis.nn.graph.Model` pass run fused, planned from
the graph alone (the model keeps each plan per range of nodes and outputs).

Each fusion applies only where the tensor between the two nodes has no other
reader and is not asked for (``end`` or ``outputs``), so every name keeps its
meaning and results are those of the separate layers:

- a ReLU applied by the Conv2d, batch norm or residual Add before it (its
  kernel's relu flag);
- a ReLU6 / Clip, HardSwish or SiLU applied by the Conv2d before it
  (:meth:`Conv2d.forward_act`);
- in test mode, a BatchNorm2d or a per-channel Scale folded into the Conv2d
  before it (nn/fold.py);
- in test-mode passes that keep nothing for a backward pass, a per-channel gate
  (a Mul of a (1, C, 1, 1) tensor, as squeeze-and-excitation blocks end) folded
  into the weights of the ungrouped Conv2d after it (nn/fold.py's GateFold);
- a residual Add (its ReLU included) whose one operand is a Conv2d's output (or
  that of the batch norm or scale folded into it) that nothing else reads, and
  whose other operand is computed before that convolution: the convolution adds it
  as it writes its output (:meth:`Conv2d.forward` with ``residual``; the sum
  and comparison of the Add's own kernel, so the same bits), where the shapes and
  dtypes allow at run time, else the Add runs as its own layer. The Add's cache
  (its input shapes) and the ReLU's (its output) are those of the separate layers;
- backward: the gradient of a ReLU, ReLU6, Clip, SiLU or HardSwish applied by the
  input-gradient kernel of the Conv2d that reads it (:meth:`Conv2d.backward_inputs_act`;
  the masks of the first three read the activation's output, which is the
  convolution's input, the derivatives of the others the activation's input, its
  cache), the activation node skipped.
"""
from __future__ import annotations

from collections import Counter

from .activation import ReLU
from .conv import Conv2d, fusible_act
from .elementwise import Add, Mul, Scale
from .fold import foldable_scale
from .norm import BatchNorm2d

__all__ = ["readers", "relu_fusions", "act_fusions", "batchnorm_folds", "gate_folds", "residual_fusions",
           "backward_masks", "forward_steps", "light_steps"]

# What Model.forward does at a node (forward_steps); RADD: a residual Add whose
# sum the convolution before it may have made
SKIP, TAKE, RUN, RELU, ACT, FOLD, RADD = range(7)
# ... in a pass that keeps nothing for a backward pass (light_steps; LCHAIN:
# passes.chain_steps)
LTAKE, LCONV, LNODE, LCHAIN = range(4)


def readers(nodes):
    """tensor name -> how many node inputs read it"""
    return Counter(t for node in nodes for t in node.inputs)


def _pairs(nodes, s, e, needed, outputs):
    """(i, node i, node i + 1) for i in [s, e) where node i + 1 reads node i alone,
    nothing else reads node i, node i is not asked for, and both are run."""
    count = readers(nodes)
    keep = set(outputs or ())
    for i in range(s, e):
        node, nxt = nodes[i], nodes[i + 1]
        if (nxt.inputs == [node.name] and count.get(node.name) == 1 and node.name not in keep
                and i in needed and i + 1 in needed):
            yield i, node, nxt


def relu_fusions(nodes, s, e, needed, outputs):
    """Indices i of Conv2d, batch-norm and Add nodes that apply the ReLU of node i + 1
    (their backward passes do not read their output; the pre-activation is never
    stored, the ReLU's cache is its output)."""
    return {i for i, node, nxt in _pairs(nodes, s, e, needed, outputs)
            if node.layer.fuses_relu and type(nxt.layer) is ReLU}


def act_fusions(nodes, s, e, needed, outputs):
    """{i: act} for the Conv2d nodes i that apply the ReLU6 / Clip, HardSwish or
    SiLU of node i + 1 as they write their output (the activation's backward gets
    the cache its own forward would return, :func:`~gradvis.nn.conv.fused_act_cache`)."""
    fused = {}
    for i, node, nxt in _pairs(nodes, s, e, needed, outputs):
        act = fusible_act(nxt.layer)
        if act is not None and getattr(node.layer, "fuses_activations", False):
            fused[i] = act
    return fused


def batchnorm_folds(nodes, s, e, needed, outputs):
    """Indices i of Conv2d nodes whose batch norm (node i + 1, a BatchNorm2d) or
    per-channel Scale is folded into them in test mode."""
    return {i for i, node, nxt in _pairs(nodes, s, e, needed, outputs)
            if type(node.layer) is Conv2d and (type(nxt.layer) is BatchNorm2d or (
                type(nxt.layer) is Scale and foldable_scale(nxt.layer, node.layer.out_channels)))}


def gate_folds(nodes, s, e, needed, outputs, folds):
    """Indices i of Mul nodes whose product only an ungrouped Conv2d (node i + 1,
    not itself folding a batch norm) reads: candidates for a per-channel gate
    folded into that convolution's weights (the shapes decide at run time)."""
    return {i for i, node, nxt in _pairs(nodes, s, e, needed, outputs)
            if type(node.layer) is Mul and type(nxt.layer) is Conv2d and nxt.layer.groups == 1
            and i + 1 not in folds}


def residual_fusions(nodes, index, s, e, needed, outputs, fused, folds, bound):
    """{i: (j, t, ref)} for the Conv2d nodes i in [s, e) whose output t (node i's, or
    node i + 1's where a batch norm or scale folds into it) only the Add node j
    right after reads, with one other operand ``ref`` computed before node i
    (or the pass's input ``bound``), t not asked for: the convolution may add
    ref as it writes its output (and apply the Add's fused ReLU)."""
    count = readers(nodes)
    keep = set(outputs or ())
    found = {}
    for i in range(s, e):
        node = nodes[i]
        if type(node.layer) is not Conv2d or i not in needed or i in fused or len(node.inputs) != 1:
            continue
        last = i + 1 if i in folds else i
        j = last + 1
        if j > e or j not in needed:
            continue
        t, add = nodes[last].name, nodes[j]
        if (type(add.layer) is not Add or len(add.inputs) != 2 or t not in add.inputs or count.get(t) != 1
                or t in keep):
            continue
        ref = add.inputs[1] if add.inputs[0] == t else add.inputs[0]
        a = index.get(ref)
        if ref == bound or (a is not None and s <= a < i and a in needed):
            found[i] = (j, t, ref)
    return found


def _mask(layer):
    if type(layer) is ReLU:
        return ("relu", 0.0, 0.0)
    act = fusible_act(layer)
    if act is None or act[0] == "clamp":
        return act
    return (act[0], 0.0, 0.0)   # SiLU, HardSwish: the kernel reads the activation's input


def backward_masks(nodes, index, s, e, needed, outputs):
    """{j: (a, spec)} for the Conv2d nodes j in (s, e] whose input is the output of
    node a in [s, j), a ReLU, ReLU6, Clip, SiLU or HardSwish that nothing else reads
    and that is not asked for; spec is ``("relu", 0, 0)``, ``("clamp", lo, hi)``,
    ``("silu", 0, 0)`` or ``("hardswish", 0, 0)``."""
    count = readers(nodes)
    keep = set(outputs or ())
    masks = {}
    for j in range(s + 1, e + 1):
        node = nodes[j]
        if type(node.layer) is not Conv2d or j not in needed or len(node.inputs) != 1:
            continue
        t = node.inputs[0]
        a = index.get(t)
        if a is None or not s <= a < j or a not in needed or count.get(t) != 1 or t in keep:
            continue
        spec = _mask(nodes[a].layer)
        if spec is not None:
            masks[j] = (a, spec)
    return masks


def forward_steps(nodes, s, e, needed, fused, keys, folds, frees, gates, residuals):
    """What Model.forward does at each node of s..e, decided once per plan (a pass
    over an ImageNet network's 200-odd nodes spent a tenth of its time outside the
    kernels, much of it re-deciding this per node): ``(SKIP,)`` for a node the
    outputs do not need; ``(TAKE, i, conv, name, folded)`` for a batch norm
    (``folded``) or activation the convolution before it applied; else ``(kind,
    i, node, inputs, param keys, buffer keys, gate weight key or None, tensors
    to free after it, residual)``, kind RUN, RELU (a fused ReLU), ACT (a fused
    activation), FOLD (a folded batch norm or scale) or RADD (an Add of
    ``residuals``). ``residual``: for a convolution of ``residuals``, (the Add's
    other operand, the Add's index, its fused ReLU); for an RADD, (the
    convolution's output it reads, its fused ReLU); else None. ``fused``,
    ``folds``, ``gates`` and ``residuals`` are the plan's, ``keys[i]`` node i's
    (parameter, buffer) key pairs, ``frees[i]`` the tensors node i reads last."""
    steps = []
    adds = {j: (t, j in fused) for j, t, _ in residuals.values()}
    for i in range(s, e + 1):
        node = nodes[i]
        if i not in needed:
            steps.append((SKIP,))
        elif i - 1 in folds or i - 1 in fused:
            steps.append((TAKE, i, nodes[i - 1].name, node.name, i - 1 in folds))
        else:
            kind = (RADD if i in adds else FOLD if i in folds else ACT if fused.get(i) is not None
                    else RELU if i in fused else RUN)
            gate_key = nodes[i + 1].name + ".weight" if i in gates else None
            pkeys, bkeys = keys[i]
            res = adds.get(i)
            if i in residuals:
                j, _, ref = residuals[i]
                res = (ref, j, j in fused)
            steps.append((kind, i, node, tuple(node.inputs), pkeys, bkeys, gate_key, tuple(frees.get(i, ())), res))
    return steps


def light_steps(steps, fused):
    """forward_steps for a pass that keeps nothing for a backward pass (``cache=False``),
    where Model.forward runs a convolution's kernel directly: per node, the
    layer's forward_act, its dtype conversions and the caches it builds cost about
    as much Python as the rest of the loop (3-4% of a MobileNetV2 pass at batch 1).
    Skipped nodes are dropped; ``(LTAKE, conv, name)`` for a TAKE step; ``(LCONV,
    step, layer, input, weight key, bias key or None, activation, lo, hi, relu,
    residual)`` for a Conv2d that reads one tensor (RUN, RELU or ACT; activation
    None or fusible_act's kind, lo and hi its clamp's bounds; residual the step's),
    which Model.forward runs directly while its input and parameters (and its
    residual operand) are arrays of one dtype, as its shape check allows;
    ``(LNODE, step)`` for the others."""
    light = []
    for step in steps:
        kind = step[0]
        if kind == SKIP:
            continue
        if kind == TAKE:
            light.append((LTAKE, step[2], step[3]))
            continue
        _, i, node, inputs, pkeys, _bkeys, gate_key, _free, res = step
        if type(node.layer) is Conv2d and kind in (RUN, RELU, ACT) and gate_key is None and len(inputs) == 1:
            keys = dict(pkeys)
            act = fused[i] if kind == ACT else None
            name, lo, hi = (None, 0.0, 0.0) if act is None else (act[0], 0.0, 0.0) if act[0] != "clamp" else act
            light.append((LCONV, step, node.layer, inputs[0], keys["weight"], keys.get("bias"), name, lo, hi,
                          kind == RELU, res))
        else:
            light.append((LNODE, step))
    return light
