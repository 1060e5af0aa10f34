"""_core.ConvChain, forward convolutions run in one call, against the same layers
called one by one (the same bits), its argument checks, and the passes without a
cache that run a model's runs of convolutions as chains (nn/passes.chain_steps):
the unchained pass's outputs, and the step-by-step pass wherever a chain does
not take its inputs."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
from gradvis.nn import (Add, Conv2d, GlobalAvgPool, HardSigmoid, HardSwish, Model, Mul, ReLU, ReLU6, Sigmoid, SiLU,
                        fusion, passes)
from conftest import simd_paths_test
from helpers import random_biases


def random_chain(rng, dtype, n_layers=10):
    """(inputs, layer specs, weights, biases, outputs) of a random chain: 1x1,
    3x3, depthwise, grouped, strided and dilated layers, activations, residual
    sums of earlier tensors of the output's shape, and squeeze-and-excitation
    steps: global average pools, sigmoids, hard sigmoids and convolutions of a
    map times its per-channel gate (which go into the weights at batch 1 when
    there are no more weights than the map has values)."""
    n = int(rng.integers(1, 3))
    x = rng.standard_normal((n, 8, 11, 10)).astype(dtype)
    shapes = [x.shape]
    layers, ws, bs = [], [], []
    gates = []   # slots of (N or 1, C, 1, 1) tensors
    for i in range(n_layers):
        src = int(rng.integers(max(0, len(shapes) - 3), len(shapes)))
        n, c, h, w = shapes[src]
        kind = int(rng.integers(0, 8))
        if kind == 5 and h * w > 1:
            layers.append(("gap", src, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False))
            ws.append(None)
            bs.append(None)
            gates.append(len(shapes))
            shapes.append((n, c, 1, 1))
            continue
        if kind == 6 and gates:
            g = gates[-1]
            op, lo, hi = (("sigmoid", 0.0, 0.0), ("hardsigmoid", 1 / 6, 0.5))[int(rng.integers(0, 2))]
            layers.append((op, g, -1, -1, 1, 0, 1, 1, None, lo, hi, False))
            ws.append(None)
            bs.append(None)
            gates.append(len(shapes))
            shapes.append(shapes[g])
            continue
        gate = -1
        if kind == 7 and gates:
            gs = shapes[gates[-1]]
            cand = [s for s in range(len(shapes))
                    if shapes[s][1] == gs[1] and shapes[s][2] * shapes[s][3] > 1 and gs[0] in (1, shapes[s][0])]
            if cand:
                src, gate = int(rng.choice(cand)), gates[-1]
                n, c, h, w = shapes[src]
        f, k, groups, stride, pad, dil = int(rng.choice([8, 12, 16])), 1, 1, 1, 0, 1
        if kind == 1:
            k, pad = 3, 1
        elif kind == 2:
            f, k, groups, pad = c, 3, c, 1
        elif kind == 3 and c % 4 == 0:
            f, k, groups, pad = 16, 3, 4, 1
        elif kind == 4 and min(h, w) >= 5:
            k, pad, stride, dil = 3, (1, 2, 0, 1), 2, int(rng.integers(1, 3))
        if gate >= 0 and rng.random() < 0.5:
            k, pad = 3, 1     # 3x3 weights: more than a small map has values (the gate goes to the map)
        spec_geom = (stride, pad, dil, groups)
        wt = (rng.standard_normal((f, c // groups, k, k)) / np.sqrt(c // groups * k * k)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) if rng.random() < 0.8 else None
        out = _core.conv2d_forward(np.zeros((n, c, h, w), dtype), wt, None, *spec_geom)
        same = [s for s in range(len(shapes)) if shapes[s] == out.shape]
        act, lo, hi, relu, res = None, 0.0, 0.0, bool(rng.random() < 0.3), -1
        if same and rng.random() < 0.4:
            res = int(rng.choice(same))
        elif rng.random() < 0.6:
            act = str(rng.choice(["relu", "clamp", "silu", "hardswish"]))
            lo, hi = (0.0, 6.0) if act == "clamp" else (0.0, 0.0)
        ops = (src, gate) if gate < 0 or rng.random() < 0.5 else (gate, src)   # the gate either operand
        layers.append(("conv", ops[0], res, ops[1]) + spec_geom + (act, lo, hi, relu))
        ws.append(wt)
        bs.append(b)
        shapes.append(out.shape)
    outputs = [len(shapes) - 1] + [int(s) for s in rng.choice(np.arange(1, len(shapes)), 2)]
    return [x], layers, ws, bs, outputs


def one_by_one(inputs, layers, ws, bs, outputs):
    t = list(inputs)
    for (op, src, res, gate, stride, pad, dil, groups, act, lo, hi, relu), w, b in zip(layers, ws, bs):
        if op == "gap":
            t.append(_core.global_avg_pool_forward(t[src]))
            continue
        if op == "sigmoid":
            t.append(_core.sigmoid_forward(t[src]))
            continue
        if op == "hardsigmoid":
            t.append(_core.hardsigmoid_forward(t[src], lo, hi))
            continue
        x = t[src]
        if gate >= 0:   # what the layers do: nn/fold.py's gate_fold, else the Mul
            x, g = (t[src], t[gate]) if t[gate].size < t[src].size else (t[gate], t[src])
            if x.shape[0] == 1 and g.shape[0] == 1 and w.shape[1] == x.shape[1] and w.size <= x.size:
                w = _core.channel_scale_forward(w, g.reshape(-1))
            else:
                x = _core.channel_scale_forward(x, g.reshape(g.shape[:2]))
        if res >= 0:
            t.append(_core.conv2d_forward_add(x, w, b, t[res], stride, pad, dil, groups, relu))
        elif act is not None:
            t.append(_core.conv2d_forward_act(x, w, b, stride, pad, dil, groups, act, lo, hi, False))
        else:
            t.append(_core.conv2d_forward(x, w, b, stride, pad, dil, groups, relu))
    return [t[o] for o in outputs]


def check_random_chains(seeds, dtype=np.float32):
    ops = set()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        inputs, layers, ws, bs, outputs = random_chain(rng, dtype)
        chain = _core.ConvChain(len(inputs), layers, outputs)
        assert len(chain) == len(layers) and chain.n_inputs == 1
        got = chain.run(inputs, ws, bs)
        want = one_by_one(inputs, layers, ws, bs, outputs)
        assert len(got) == len(outputs)
        for g, w in zip(got, want):
            assert g.dtype == dtype and g.shape == w.shape
            np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8), err_msg=f"seed {seed}")
        ops |= {op for op, *_ in layers} | {"gated" for layer in layers if layer[3] >= 0}
    return ops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_chain_equals_the_layers_one_by_one(dtype, threads):
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        assert check_random_chains(range(16), dtype) == {"conv", "gap", "sigmoid", "hardsigmoid", "gated"}
    finally:
        gradvis.set_num_threads(old)


test_chain_simd_paths = simd_paths_test("""
from test_conv_chain import check_random_chains
check_random_chains(range(8))
""")


def _conv(src, res=-1, gate=-1, stride=1, act=None, relu=False):
    return ("conv", src, res, gate, stride, 0, 1, 1, act, 0.0, 0.0, relu)


def test_chain_returns_a_slot_asked_for_twice_and_frees_the_rest():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 80, 80)).astype(np.float32)     # 400 KB tensors: cached blocks
    w = rng.standard_normal((16, 4, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((16, 16, 1, 1)).astype(np.float32)
    layers = [_conv(0), _conv(1, act="relu"), _conv(2, res=1, relu=True), _conv(3)]
    chain = _core.ConvChain(1, layers, [3, 3])
    for run in range(2):   # the second run's blocks are the first's
        before = gradvis.block_cache_info()
        used = before["used_bytes"]
        a, b = chain.run([x], [w, w2, w2, w2], [None] * 4)
        after = gradvis.block_cache_info()
        # one block for the output, one (the arena) for all three intermediates
        assert after["reused"] + after["fresh"] - before["reused"] - before["fresh"] == 2
        if run == 0:
            del a, b
    assert after["fresh"] == before["fresh"]
    assert a is b
    # the output's block is held, the other layers' went back
    assert a.nbytes <= gradvis.block_cache_info()["used_bytes"] - used < 2 * a.nbytes
    t1 = _core.conv2d_forward(x, w)
    t2 = _core.conv2d_forward_act(t1, w2, None, activation="relu")
    t3 = _core.conv2d_forward_add(t2, w2, None, t1, relu=True)
    np.testing.assert_array_equal(a, t3)   # slot 3; layer 3's output, read by nothing, is dropped
    del a, b, t1, t2, t3
    assert gradvis.block_cache_info()["used_bytes"] == used


def test_chain_bad_arguments():
    ok = _conv(0)
    with pytest.raises(ValueError, match="n_inputs must be >= 1"):
        _core.ConvChain(0, [ok], [1])
    with pytest.raises(ValueError, match="layers is empty"):
        _core.ConvChain(1, [], [1])
    with pytest.raises(ValueError, match="each layer is"):
        _core.ConvChain(1, [(0, -1, 1)], [1])
    with pytest.raises(ValueError, match="op must be"):
        _core.ConvChain(1, [("pool",) + ok[1:]], [1])
    with pytest.raises(TypeError, match="op and activation must be strings"):
        _core.ConvChain(1, [(3,) + ok[1:]], [1])
    with pytest.raises(TypeError, match="op and activation must be strings"):
        _core.ConvChain(1, [ok[:8] + (1,) + ok[9:]], [1])
    with pytest.raises(ValueError, match="input slot"):
        _core.ConvChain(1, [_conv(1)], [1])          # a slot not yet written
    with pytest.raises(ValueError, match="residual slot"):
        _core.ConvChain(1, [ok, _conv(1, res=2)], [2])
    with pytest.raises(ValueError, match="gate slot"):
        _core.ConvChain(1, [ok, _conv(1, gate=-2)], [2])
    with pytest.raises(ValueError, match="output slot"):
        _core.ConvChain(1, [ok], [0])                # an input
    with pytest.raises(ValueError, match="output slot"):
        _core.ConvChain(1, [ok], [2])
    with pytest.raises(ValueError, match="both an activation and a residual"):
        _core.ConvChain(1, [ok, _conv(1, res=0, act="relu")], [2])
    with pytest.raises(ValueError, match="activation must be"):
        _core.ConvChain(1, [_conv(0, act="gelu")], [1])
    with pytest.raises(ValueError, match="groups must be >= 1"):
        _core.ConvChain(1, [ok[:7] + (0,) + ok[8:]], [1])
    with pytest.raises(ValueError, match=r"layer 1 \(gap\) takes no residual or gate"):
        _core.ConvChain(1, [ok, ("gap", 1, 0, -1) + ok[4:]], [2])
    with pytest.raises(ValueError, match="alpha and beta"):
        _core.ConvChain(1, [ok, ("hardsigmoid", 1, -1, -1, 1, 0, 1, 1, None, float("nan"), 0.5, False)], [2])
    with pytest.raises(ValueError, match="each kept value is"):
        _core.ConvChain(1, [ok], [1], [("mask", 1)])
    with pytest.raises(ValueError, match="kept bits' slot"):
        _core.ConvChain(1, [ok], [1], [("bits", 0, "relu", 0.0, 0.0)])     # an input
    with pytest.raises(ValueError, match="kept bits' activation must be 'relu' or 'clamp'"):
        _core.ConvChain(1, [ok], [1], [("bits", 1, "silu", 0.0, 0.0)])
    with pytest.raises(ValueError, match="kept pre's layer 0 is not a convolution with an activation"):
        _core.ConvChain(1, [ok], [1], [("pre", 0)])
    with pytest.raises(ValueError, match="kept pre's layer"):
        _core.ConvChain(1, [_conv(0, act="silu")], [1], [("pre", 1)])
    chain = _core.ConvChain(1, [ok, _conv(1, res=0, relu=True)], [2])
    x = np.ones((1, 3, 5, 5), np.float32)
    w = np.ones((3, 3, 1, 1), np.float32)
    assert chain.run([x], [w, w], [None, None])[0].shape == (1, 3, 5, 5)
    with pytest.raises(ValueError, match="expected 1 inputs"):
        chain.run([x, x], [w, w], [None, None])
    with pytest.raises(ValueError, match="expected 2 weights and biases"):
        chain.run([x], [w], [None, None])
    with pytest.raises(TypeError, match=r"weights\[1\] must be a numpy array of float32"):
        chain.run([x], [w, w.astype(np.float64)], [None, None])    # nothing is cast
    with pytest.raises(TypeError, match=r"biases\[0\] must be a numpy array of float64"):
        chain.run([x.astype(np.float64)], [w.astype(np.float64)] * 2, [np.ones(3, np.float32), None])
    with pytest.raises(TypeError, match="inputs"):
        chain.run([[1.0]], [w, w], [None, None])
    with pytest.raises(ValueError, match=r"layer 1: input shape \(1, 3, 5, 5\), w shape \(3, 2, 1, 1\)"):
        chain.run([x], [w, np.ones((3, 2, 1, 1), np.float32)], [None, None])
    with pytest.raises(ValueError, match=r"biases\[1\] must have shape \(3,\)"):
        chain.run([x], [w, w], [None, np.ones(4, np.float32)])
    with pytest.raises(ValueError, match="larger than the padded input"):
        chain.run([x], [w, np.ones((3, 3, 7, 7), np.float32)], [None, None])
    strided = _core.ConvChain(1, [ok, _conv(1, res=0, stride=2)], [2])
    with pytest.raises(ValueError, match="residual does not have its output's shape"):
        strided.run([x], [w, w], [None, None])
    # a gate: (N or 1, C, 1, 1) beside a larger map, either operand
    se = _core.ConvChain(1, [("gap", 0, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False), _conv(0, gate=1)], [2])
    with pytest.raises(ValueError, match="layer 0 takes no weights or bias"):
        se.run([x], [w, w], [None, None])
    got = se.run([x], [None, w], [None, None])[0]
    np.testing.assert_array_equal(got, _core.conv2d_forward(x, w))   # the mean of ones is 1
    pair = _core.ConvChain(1, [ok, _conv(0, gate=1)], [2])
    with pytest.raises(ValueError, match="not a map and its per-channel gate"):
        pair.run([x], [w, w], [None, None])


# ---------------------------------------------------------------------------- models
def mobilenet_like(dtype=np.float32):
    """Inverted residual blocks: 1x1 expansion + ReLU6, depthwise 3x3 + ReLU6, 1x1
    projection, the block's input added; then a squeeze-and-excitation gate."""
    m = Model((8, 12, 12), seed=0)
    m.add("stem", Conv2d(8, 16, 3, padding=1)).add("a", ReLU6())
    prev = "a"
    for i, stride in enumerate((1, 1, 2)):
        m.add(f"e{i}", Conv2d(16, 48, 1), inputs=prev).add(f"e{i}a", ReLU6())
        m.add(f"d{i}", Conv2d(48, 48, 3, padding=1, stride=stride, groups=48)).add(f"d{i}a", ReLU6())
        m.add(f"p{i}", Conv2d(48, 16, 1))
        if stride == 1:
            m.add(f"add{i}", Add(), inputs=[f"p{i}", prev])
        prev = m.nodes[-1].name
    m.add("s", SiLU(), inputs=prev)
    m.add("gap", GlobalAvgPool()).add("fc1", Conv2d(16, 4, 1)).add("r1", ReLU())
    m.add("fc2", Conv2d(4, 16, 1)).add("sig", Sigmoid())
    m.add("mul", Mul(), inputs=["sig", "s"]).add("last", Conv2d(16, 24, 1)).add("la", ReLU())
    m.init_params(seed=0, dtype=dtype)
    return random_biases(m)


def unchained(m, monkeypatch):
    u = m.copy()
    u.__dict__.pop("_plans", None)
    with monkeypatch.context() as mp:
        mp.setattr(passes, "chain_steps", lambda light: light)
        u.forward(np.zeros((1,) + tuple(m.input_shape), m.params["stem.weight"].dtype), cache=False)
    return u


def chains_of(m):
    return [len(ls[1]) for plan in m._plans.values() for ls in plan[8] if ls[0] == fusion.LCHAIN]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_chains_give_the_unchained_outputs(dtype, monkeypatch):
    m = mobilenet_like(dtype)
    u = unchained(m, monkeypatch)
    X = np.random.default_rng(2).standard_normal((2, 8, 12, 12)).astype(dtype)
    got = m.forward(X, cache=False)[0]
    # one chain: the stem, the three blocks, the SE block (pool, two convolutions,
    # sigmoid) and the convolution of the gated map
    assert chains_of(m) == [15]
    assert chains_of(u) == []
    np.testing.assert_array_equal(got.view(np.uint8), u.forward(X, cache=False)[0].view(np.uint8))
    np.testing.assert_array_equal(got.view(np.uint8), m.forward(X)[0].view(np.uint8))
    # one image: the gate goes into the last convolution's weights (a pass with a
    # cache runs the Mul: the same values up to rounding)
    got1 = m.forward(X[:1], cache=False)[0]
    np.testing.assert_array_equal(got1.view(np.uint8), u.forward(X[:1], cache=False)[0].view(np.uint8))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got1, m.forward(X[:1])[0], rtol=tol, atol=tol)
    # names asked for inside a chain are its outputs
    outs = m.forward(X, cache=False, outputs=["e1a", "add1", "la"])[0]
    want = u.forward(X, cache=False, outputs=["e1a", "add1", "la"])[0]
    for k in want:
        np.testing.assert_array_equal(outs[k], want[k])
    # a pass that starts inside the blocks
    a = m.forward(outs["add1"], start="e2", cache=False)[0]
    np.testing.assert_array_equal(a, u.forward(outs["add1"], start="e2", cache=False)[0])


def test_model_chains_fall_back_to_steps(monkeypatch):
    m = mobilenet_like()
    X = np.random.default_rng(3).standard_normal((1, 8, 12, 12)).astype(np.float32)
    want = m.forward(X, cache=False)[0]
    calls = []
    real = passes.forward_light

    def spy(model, light, *a):
        calls.append(len(light))
        return real(model, light, *a)
    monkeypatch.setattr(passes, "forward_light", spy)
    # weights of another dtype: the layers convert them one by one, the chain refuses
    m.params["p1.weight"] = m.params["p1.weight"].astype(np.float64)
    got = m.forward(X, cache=False)[0]
    assert len(calls) == 2            # the pass, then the chain's steps
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # an input too small for a layer: the step's own error
    with pytest.raises(ValueError, match=r"layer 'stem' \(Conv2d\): input 0x12 is too small"):
        m.forward(np.zeros((1, 8, 12, 12), np.float32)[:, :, :0], cache=False)
    # a skip connection that crosses the start of the pass
    with pytest.raises(ValueError, match="needs 'a'.*skip connection crosses the cut"):
        m.forward(np.zeros((1, 48, 12, 12), np.float32), start="d0", cache=False)


# ---------------------------------------------------------------------------- lean caches
def test_chain_keeps_bits_and_activation_inputs():
    """keep: the masks of chosen slots as activation_mask's bits, made as each is
    written (also of a slot nothing reads after, or that a later layer frees),
    and conv layers' activation inputs (conv2d_forward_act's pre); then every
    slot's shape."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w1, w2, w3 = (rng.standard_normal(s).astype(np.float32) for s in ((8, 4, 3, 3), (8, 1, 3, 3), (6, 8, 1, 1)))
    layers = [("conv", 0, -1, -1, 1, 1, 1, 1, "clamp", 0.0, 6.0, False),
              ("conv", 1, -1, -1, 2, 1, 1, 8, "silu", 0.0, 0.0, False), _conv(2, relu=True)]
    keep = [("bits", 1, "clamp", 0.0, 6.0), ("pre", 1), ("bits", 3, "relu", 0.0, 0.0)]
    chain = _core.ConvChain(1, layers, [2], keep, False)
    outs, kept, shapes = chain.run_kept([x], [w1, w2, w3], [None] * 3)
    t1 = _core.conv2d_forward_act(x, w1, None, (1, 1), (1, 1, 1, 1), activation="clamp", lo=0.0, hi=6.0)
    t2, pre = _core.conv2d_forward_act(t1, w2, None, (2, 2), (1, 1, 1, 1), groups=8, activation="silu",
                                       return_pre=True)
    t3 = _core.conv2d_forward(t2, w3, None, relu=True)
    np.testing.assert_array_equal(outs[0], t2)
    np.testing.assert_array_equal(kept[0], _core.activation_mask(t1, "clamp", 0.0, 6.0))
    np.testing.assert_array_equal(kept[1], pre)
    np.testing.assert_array_equal(kept[2], _core.activation_mask(t3, "relu"))
    assert kept[0].dtype == np.uint64 and kept[0].shape == ((t1.size + 63) // 64,)
    assert shapes == ((2, 4, 9, 9), (2, 8, 9, 9), (2, 8, 5, 5), (2, 6, 5, 5))
    # run: the outputs alone (the same values), whatever keep asks for; run_kept
    # without keep: still the three parts (here with three outputs)
    np.testing.assert_array_equal(chain.run([x], [w1, w2, w3], [None] * 3)[0], t2)
    assert len(chain.run([x], [w1, w2, w3], [None] * 3)) == 1
    outs, kept, shapes = _core.ConvChain(1, layers, [1, 2, 3]).run_kept([x], [w1, w2, w3], [None] * 3)
    assert len(outs) == 3 and kept == () and len(shapes) == 4
    with pytest.raises(TypeError):
        _core.ConvChain(1, layers, [2], 3)


def mobilenet_v3_like(dtype=np.float32):
    """HardSwish and ReLU after convolutions, a squeeze-and-excitation gate by a
    hard sigmoid (the map first), a residual Add with its ReLU."""
    m = Model((6, 10, 10), seed=0)
    m.add("stem", Conv2d(6, 16, 3, padding=1)).add("h0", HardSwish())
    m.add("e", Conv2d(16, 32, 1)).add("eh", HardSwish())
    m.add("d", Conv2d(32, 32, 5, padding=2, stride=2, groups=32)).add("dr", ReLU())
    m.add("gap", GlobalAvgPool()).add("fc1", Conv2d(32, 8, 1)).add("r1", ReLU())
    m.add("fc2", Conv2d(8, 32, 1)).add("hs", HardSigmoid())
    m.add("mul", Mul(), inputs=["dr", "hs"]).add("p", Conv2d(32, 16, 1))
    m.add("q", Conv2d(16, 16, 3, padding=1)).add("sum", Add(), inputs=["q", "p"]).add("r2", ReLU())
    m.add("last", Conv2d(16, 12, 1)).add("l6", ReLU6())
    m.init_params(seed=0, dtype=dtype)
    return random_biases(m)


def _same_cache(a, b):
    """Whether two node caches are the same: the same types, arrays and bits to the
    bit, InputSpecs of the same shape and dtype."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_cache(u, v) for u, v in zip(a, b))
    if type(a) is passes.ActBits:
        return a.dtype == b.dtype and np.array_equal(a.bits, b.bits)
    if type(a) is passes.InputSpec:
        return a.shape == b.shape and a.dtype == b.dtype
    return a == b


def _lean_entries(m):
    return [[m.nodes[st[1]].name for st in e[-1] if st[0] != fusion.SKIP]
            for plan in m._plans.values() for e in plan[9] if e[0] == passes._LEAN]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [mobilenet_like, mobilenet_v3_like])
def test_lean_passes_run_chains_with_the_node_caches(make, dtype, monkeypatch):
    """A gradient loop's forward passes run their layers as chains, which keep the
    caches the same pass one node at a time keeps, to the bit: the same masks as
    bits, activation inputs and SE arrays, the same shapes; so the same outputs
    and input gradients. At batch 1 too, where a pass without a cache folds a
    gate into the weights and a lean chain, as a Mul, applies it to the map."""
    m = make(dtype)
    for n in (2, 1):
        X = np.random.default_rng(n).standard_normal((n,) + tuple(m.input_shape)).astype(dtype)
        out, c = m.forward(X)
        dout = np.random.default_rng(9).standard_normal(out.shape).astype(dtype)
        m.backward(dout, c, param_grads=False)       # a gradient loop: lean caches from here on
        out1, lean = m.forward(X)
        assert "lean" in lean
        assert _lean_entries(m) == [[node.name for node in m.nodes]]     # one chain, every node
        with monkeypatch.context() as mp:
            mp.setattr(passes, "_run_lean", lambda *a: False)
            out0, ref = m.forward(X)
        np.testing.assert_array_equal(out1.view(np.uint8), out0.view(np.uint8))
        assert len(lean["caches"]) == len(ref["caches"])
        for j, (a, b) in enumerate(zip(lean["caches"], ref["caches"])):
            assert _same_cache(a, b), m.nodes[j].name
        assert lean["shapes"] == ref["shapes"]
        g1 = m.backward(dout, lean, param_grads=False)[0]
        g0 = m.backward(dout, ref, param_grads=False)[0]
        np.testing.assert_array_equal(g1.view(np.uint8), g0.view(np.uint8))
        full = m.forward(X, cache="full")[1]
        np.testing.assert_array_equal(m.backward(dout, full, param_grads=False)[0], g1)


def test_lean_chains_fall_back_to_steps(monkeypatch):
    """Where a lean chain does not take the pass's arrays (weights of another dtype
    here), its steps run one by one: the caches the layers keep."""
    m = mobilenet_v3_like()
    X = np.random.default_rng(3).standard_normal((1, 6, 10, 10)).astype(np.float32)
    out, c = m.forward(X)
    dout = np.ones_like(out)
    want = m.backward(dout, c, param_grads=False)[0]
    m.params["q.weight"] = m.params["q.weight"].astype(np.float64)
    calls = []
    real = passes._run_lean

    def spy(*a):
        calls.append(real(*a))
        return calls[-1]
    monkeypatch.setattr(passes, "_run_lean", spy)
    out2, lean = m.forward(X)
    assert calls == [False] and "lean" in lean
    assert type(lean["caches"][m.index("dr")]) is passes.ActBits
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.backward(dout, lean, param_grads=False)[0], want, rtol=1e-4, atol=1e-5)
