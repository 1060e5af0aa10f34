"""A squeeze-and-excitation map's gradient made from its terms in one pass
(_core.channel_grad; nn/channel_grad.py): the bits of the ops it replaces, at every
SIMD level, against a float64 reference, its argument checks; and a model's
input-gradient pass that uses it, against the same pass node by node."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
from gradvis.nn import (Add, Conv2d, GlobalAvgPool, HardSigmoid, HardSwish, Model, Mul, ReLU, ReLU6, Sigmoid, SiLU,
                        Tanh)
from conftest import simd_paths_test
from helpers import random_biases

# (shape, gate shape): planes of 49 values, of more than the kernel's 1024-value
# chunks, 1x1 maps, per-image gates
CASES = [((1, 96, 7, 7), (1, 96)), ((2, 40, 13, 11), (2, 40)), ((1, 6, 40, 33), (6,)), ((3, 5, 1, 1), (1, 5)),
         ((2, 3, 9, 9), (1, 3))]


def _terms(rng, shape, gshape, dtype):
    base = rng.standard_normal(shape).astype(dtype)
    gate = rng.random(gshape).astype(dtype)
    pool = rng.standard_normal(shape[:2] + (1, 1)).astype(dtype)
    pre = (rng.standard_normal(shape) * 4).astype(dtype)
    pre.flat[::7] = rng.choice([-3.0, 3.0, 0.0, -0.0], size=pre.flat[::7].shape)   # hardswish's kinks
    return base, gate, pool, pre


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, gshape", CASES)
def test_same_bits_as_the_ops_it_replaces(shape, gshape, dtype):
    """base * s + pool / HW, through SiLU, HardSwish or a mask as bits: the bits of
    channel_scale_backward, global_avg_pool_backward, add_forward and the
    activation's backward called in turn, for each term alone and both."""
    rng = np.random.default_rng(sum(shape))
    base, gate, pool, pre = _terms(rng, shape, gshape, dtype)
    scaled = _core.channel_scale_backward(base, base, gate, True, False)[0]
    pooled = _core.global_avg_pool_backward(pool, shape[2:])
    other = rng.standard_normal(shape).astype(dtype)   # another reader's gradient
    bits = {"relu": _core.activation_mask(pre, "relu"), "clamp": _core.activation_mask(pre, "clamp", -1.0, 2.5)}
    both = _core.add_forward(scaled, pooled)
    for b, s, p, a, want in ((base, gate, pool, None, both), (base, gate, None, None, scaled),
                             (None, None, pool, None, pooled), (None, None, pool.reshape(shape[:2]), None, pooled),
                             (base, None, None, other, _core.add_forward(base, other)),
                             (base, gate, pool, other, _core.add_forward(both, other)),
                             (None, None, pool, other, _core.add_forward(other, pooled))):
        def same(got, ref):
            np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))
            assert got.dtype == dtype and got.shape == shape

        same(_core.channel_grad(shape, b, s, p, a), want)
        same(_core.channel_grad(shape, b, s, p, a, pre=pre, activation="silu"), _core.silu_backward(want, pre))
        same(_core.channel_grad(shape, b, s, p, a, pre=pre, activation="hardswish"),
             _core.hardswish_backward(want, pre))
        for m in bits.values():
            same(_core.channel_grad(shape, b, s, p, a, mask=m), _core.activation_mask_backward(want, m))


def test_against_float64_formulas():
    rng = np.random.default_rng(5)
    shape = (2, 7, 6, 5)
    base, gate, pool, pre = _terms(rng, shape, (2, 7), np.float64)
    g = base * gate[:, :, None, None] + pool / 30.0
    sig = 1.0 / (1.0 + np.exp(-pre))
    np.testing.assert_allclose(_core.channel_grad(shape, base, gate, pool), g, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(_core.channel_grad(shape, base, gate, pool, pre=pre, activation="silu"),
                               g * sig * (1 + pre * (1 - sig)), rtol=1e-12, atol=1e-14)
    dhs = np.where(pre < -3, 0.0, np.where(pre <= 3, pre / 3 + 0.5, 1.0))
    np.testing.assert_allclose(_core.channel_grad(shape, base, gate, pool, pre=pre, activation="hardswish"), g * dhs,
                               rtol=1e-14, atol=1e-15)
    m = _core.activation_mask(pre, "relu")
    np.testing.assert_array_equal(_core.channel_grad(shape, base, gate, pool, mask=m), np.where(pre > 0, g, 0.0))


def check_simd_bits():
    """float32 at the level the process runs (its SiLU, HardSwish and mask kernels)."""
    for shape, gshape in CASES:
        rng = np.random.default_rng(sum(shape))
        base, gate, pool, pre = _terms(rng, shape, gshape, np.float32)
        want = _core.add_forward(_core.channel_scale_backward(base, base, gate, True, False)[0],
                                 _core.global_avg_pool_backward(pool, shape[2:]))
        for act in ("silu", "hardswish"):
            got = _core.channel_grad(shape, base, gate, pool, pre=pre, activation=act)
            assert np.array_equal(got, getattr(_core, act + "_backward")(want, pre)), (shape, act)
        m = _core.activation_mask(pre, "relu")
        assert np.array_equal(_core.channel_grad(shape, base, gate, pool, mask=m),
                              _core.activation_mask_backward(want, m)), shape


test_simd_paths = simd_paths_test("""
from test_channel_grad import check_simd_bits
check_simd_bits()
""")


def test_bad_arguments():
    z = np.zeros((2, 3, 4, 4), np.float32)
    p = np.zeros((2, 3), np.float32)
    bad = [(dict(shape=(2, 3, 4, 4)), "give base \(with or without s\), pool, or both"),
           (dict(shape=(2, 3, 4, 4), s=p[0], pool=p), "s scales base, and base is None"),
           (dict(shape=(2, 3, 4, 4), base=z, add=z[:1]), "add must have shape"),
           (dict(shape=(2,), pool=p), r"shape must be \(N, C, ...\)"),
           (dict(shape=(2, 3, 0, 4), pool=p), "shape must have positive sizes"),
           (dict(shape=(2, 3, 4, 5), base=z, s=p), "base must have shape"),
           (dict(shape=(2, 3, 4, 4), base=z, s=np.zeros(4, np.float32)), "s must be"),
           (dict(shape=(2, 3, 4, 4), pool=np.zeros((2, 4), np.float32)), "pool must be"),
           (dict(shape=(2, 3, 4, 4), pool=np.zeros((2, 3, 2, 1), np.float32)), "pool must be"),
           (dict(shape=(2, 3, 4, 4), pool=p, activation="silu"), "pre .* is needed with activation 'silu'"),
           (dict(shape=(2, 3, 4, 4), pool=p, pre=z), "pre .* is needed with activation 'silu' and only then|"
                                                    "only then"),
           (dict(shape=(2, 3, 4, 4), pool=p, pre=z[:, :2], activation="silu"), "pre must have shape"),
           (dict(shape=(2, 3, 4, 4), pool=p, activation="gelu"), "activation must be"),
           (dict(shape=(2, 3, 4, 4), pool=p, mask=np.zeros(3, np.uint64)), "mask must hold 2 words"),
           (dict(shape=(2, 3, 4, 4), pool=p, pre=z, mask=np.zeros(2, np.uint64), activation="silu"),
            "mask goes with activation 'none'")]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            _core.channel_grad(**kw)
    with pytest.raises(TypeError, match="mask must be the uint64 array"):
        _core.channel_grad((2, 3, 4, 4), pool=p, mask=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="too large"):
        _core.channel_grad((2 ** 40, 2 ** 40, 4, 4), pool=p)


# ---------------------------------------------------------------------------- models
def se_net(act, gate_act, gate_first, third_reader=False, dtype=np.float32):
    """Squeeze-and-excitation blocks whose map comes from `act` (as EfficientNet's
    SiLU, MobileNetV3's HardSwish and ReLU, RegNet's ReLU), with the gate on either
    side of the Mul; optionally a third reader of the map (a residual)."""
    m = Model((6, 9, 9), seed=0)
    m.add("stem", Conv2d(6, 16, 3, padding=1)).add("s0", SiLU())
    m.add("e", Conv2d(16, 32, 1)).add("ea", SiLU())
    m.add("d", Conv2d(32, 32, 3, padding=1, groups=32)).add("h", act())
    m.add("gap", GlobalAvgPool()).add("fc1", Conv2d(32, 8, 1)).add("r1", ReLU())
    m.add("fc2", Conv2d(8, 32, 1)).add("g", gate_act())
    m.add("mul", Mul(), inputs=["g", "h"] if gate_first else ["h", "g"])
    if third_reader:
        m.add("res", Add(), inputs=["mul", "h"])
    m.add("p", Conv2d(32, 16, 1))
    m.add("head", Conv2d(16, 24, 1)).add("ha", SiLU()).add("pool", GlobalAvgPool(keepdims=False))
    m.init_params(seed=0, dtype=dtype)
    return random_biases(m)


def _as_node_by_node(m, dtype, monkeypatch):
    """At batch 1 and 2, with a lean cache and a full one: checks that a pass taking
    input gradients only gives the bits of the pass whose nodes run their own
    backward (parameter gradients asked for too); yields (cache mode,
    channel_grad's calls in that pass)."""
    for n in (1, 2):
        X = np.random.default_rng(n).standard_normal((n,) + tuple(m.input_shape)).astype(dtype)
        out, c = m.forward(X)
        dout = np.random.default_rng(9).standard_normal(out.shape).astype(dtype)
        want = m.backward(dout, c, param_grads=True)[0]
        for mode in ("lean", "full"):
            m.backward(dout, m.forward(X)[1], param_grads=False)   # a gradient loop: lean caches from here on
            _, c = m.forward(X) if mode == "lean" else m.forward(X, cache="full")
            assert ("lean" in c) == (mode == "lean")
            calls = _spy(monkeypatch)
            got = m.backward(dout, c, param_grads=False)[0]
            monkeypatch.undo()
            assert type(got) is np.ndarray and got.shape == X.shape
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
            yield mode, calls


def _spy(monkeypatch):
    calls = []
    real = _core.channel_grad

    def spy(*a, **k):
        calls.append(k.get("activation", "none") if "mask" not in k else "mask")
        return real(*a, **k)
    monkeypatch.setattr(_core, "channel_grad", spy)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act, gate_act, gate_first, third, fused", [
    (SiLU, Sigmoid, False, False, "silu"), (HardSwish, HardSigmoid, True, False, "hardswish"),
    (ReLU, Sigmoid, True, False, "mask"), (ReLU6, HardSigmoid, False, False, "mask"),
    (Tanh, Sigmoid, False, False, None), (SiLU, Sigmoid, True, True, None)])
def test_input_gradients_as_node_by_node(act, gate_act, gate_first, third, fused, dtype, monkeypatch):
    """Input gradients only (a gradient loop, lean caches and full ones, batch 1 and
    2): the same bits as the pass whose nodes run their own backward (parameter
    gradients asked for too), the map's gradient made through its activation in
    one pass where that is a SiLU, HardSwish, or a ReLU or ReLU6 kept as bits; as
    an array for any other activation (Tanh) and where something else reads the
    map too."""
    m = se_net(act, gate_act, gate_first, third, dtype)
    for mode, calls in _as_node_by_node(m, dtype, monkeypatch):
        # the head's SiLU from its pool's term alone; the block's map through its activation
        assert calls.count("silu") >= 1
        if fused is not None and not (fused == "mask" and mode == "full"):
            assert calls.count(fused) == (2 if fused == "silu" else 1), (mode, calls)


def test_a_pass_that_starts_at_the_map(monkeypatch):
    """The input of the pass is the map itself (read by the pool and the Mul): its
    gradient, held as terms, comes back as an array, the same as node by node."""
    m = se_net(SiLU, Sigmoid, False)
    X = np.random.default_rng(0).standard_normal((2, 32, 9, 9)).astype(np.float32)
    out, c = m.forward(X, start="gap")
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    want = m.backward(dout, c)[0]
    calls = _spy(monkeypatch)
    got = m.backward(dout, c, param_grads=False)[0]
    assert type(got) is np.ndarray and got.shape == X.shape
    np.testing.assert_array_equal(got, want)
    assert calls


def test_param_gradients_unchanged():
    """With parameter gradients the nodes run their own backward: no terms."""
    m = se_net(SiLU, Sigmoid, False)
    X = np.random.default_rng(0).standard_normal((1, 6, 9, 9)).astype(np.float32)
    out, c = m.forward(X)
    dX, grads = m.backward(np.ones_like(out), c)
    assert set(grads) == set(m.params) and np.isfinite(dX).all()


def test_threads_give_the_same_bits():
    m = se_net(SiLU, Sigmoid, True)
    X = np.random.default_rng(0).standard_normal((2, 6, 9, 9)).astype(np.float32)
    old = gradvis.get_num_threads()
    res = []
    try:
        for nt in (1, 2, 3):
            gradvis.set_num_threads(nt)
            out, c = m.forward(X)
            res.append(m.backward(np.ones_like(out), c, param_grads=False)[0])
    finally:
        gradvis.set_num_threads(old)
    for r in res[1:]:
        np.testing.assert_array_equal(r, res[0])


def resnet_like(dtype=np.float32):
    """Residual blocks whose outputs (a ReLU after the Add) are read by the next
    block and by its Add; the input read by two layers; a block without a ReLU
    after its Add (MobileNetV2's), whose sum a convolution reads."""
    m = Model((8, 10, 10), seed=0)
    m.add("stem", Conv2d(8, 8, 3, padding=1), inputs=["input"]).add("r0", ReLU())
    m.add("side", Conv2d(8, 8, 1), inputs=["input"]).add("mix", Add(), inputs=["r0", "side"]).add("rm", ReLU())
    prev = "rm"
    for i in range(2):
        m.add(f"a{i}", Conv2d(8, 8, 3, padding=1), inputs=[prev]).add(f"ar{i}", ReLU())
        m.add(f"b{i}", Conv2d(8, 8, 3, padding=1)).add(f"sum{i}", Add(), inputs=[f"b{i}", prev])
        prev = m.add(f"out{i}", ReLU()).nodes[-1].name
    m.add("e", Conv2d(8, 16, 1), inputs=[prev]).add("p", Conv2d(16, 8, 1)).add("lin", Add(), inputs=["p", prev])
    m.add("head", Conv2d(8, 12, 1)).add("pool", GlobalAvgPool(keepdims=False))
    m.init_params(seed=0, dtype=dtype)
    return random_biases(m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_residual_sums_masked_in_one_pass(dtype, monkeypatch):
    """Two gradients of a block output (the next block's and its Add's) are kept as
    terms and masked by the ReLU's bits in one pass in a lean pass, added into an
    array where a convolution reads them or the pass returns them; the same bits as
    node by node."""
    m = resnet_like(dtype)
    for mode, calls in _as_node_by_node(m, dtype, monkeypatch):
        # rm, out0 and out1 masked from their sums (lean); the input's and lin's sums as arrays
        assert calls.count("mask") == (3 if mode == "lean" else 0), (mode, calls)
        assert calls.count("none") >= 2
