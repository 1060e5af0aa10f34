"""A 1x1 convolution and the stride-2 3x3 depthwise convolution that alone reads
its output, run by a _core.ConvChain as one pass (conv2d_pw_dw_forward_cpu, on
maps of 2 MiB and more): the same bits as the two layers called one by one, a
float64 reference, the 1x1 layer's output never allocated, and the pairs it
leaves to the layers (smaller maps, stride 1, a second reader of the map, a mask
kept for a lean pass, float64)."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
from conftest import simd_paths_test
from test_conv_chain import one_by_one


def act_spec(a):
    """A chain layer's (activation, lo, hi); "clamp" is ReLU6's."""
    return ("clamp", 0.0, 6.0) if a == "clamp" else (a, 0.0, 0.0)


def act64(v, a):
    """Activation `a` (None, "relu", "clamp" to [0, 6], "silu", "hardswish") in float64."""
    if a == "silu":
        return v / (1 + np.exp(-v))
    if a == "hardswish":
        return v * np.clip(v + 3, 0, 6) / 6
    return np.clip(v, 0, 6) if a == "clamp" else np.maximum(v, 0) if a == "relu" else v


def with_neighbours(rng, x, pair, ws, bs, c, m, lead, third):
    """(inputs, layers, weights, biases, outputs) of a chain of the two layers
    `pair` (the first reading slot int(lead)) on x: with `lead`, a 1x1 layer of the
    chain computes their input from x (then in the chain's arena, beside the pair's
    output), c -> c channels; with `third`, a 1x1 layer reads the pair's output of
    m channels."""
    layers, ws, bs = list(pair), list(ws), list(bs)
    if lead:
        layers.insert(0, ("conv", 0, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False))
        ws.insert(0, (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32))
        bs.insert(0, None)
    if third:
        layers.append(("conv", len(layers), -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, True))
        ws.append((rng.standard_normal((8, m, 1, 1)) / np.sqrt(m)).astype(np.float32))
        bs.append(None)
    return [x], layers, ws, bs, [len(layers)]


def pair_chain(rng, n, c, m, h, w, pad=1, acts=("clamp", "clamp"), bias=True, stride=2, third=False, lead=False):
    """(inputs, layers, weights, biases, outputs): x (n, c, h, w) -> 1x1 conv to m
    channels -> 3x3 depthwise, stride 2; `lead` and `third` as with_neighbours."""
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w1 = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((m, 1, 3, 3)) / 3).astype(np.float32)
    b1, b2 = (rng.standard_normal(m).astype(np.float32) if bias else None for _ in range(2))
    s = int(lead)
    pair = [("conv", s, -1, -1, 1, 0, 1, 1) + act_spec(acts[0]) + (False,),
            ("conv", s + 1, -1, -1, stride, pad, 1, m) + act_spec(acts[1]) + (False,)]
    return with_neighbours(rng, x, pair, [w1, w2], [b1, b2], c, m, lead, third)


def reference(x, w1, b1, a1, w2, b2, a2, pad):
    """float64: act2(dwconv3x3_s2(act1(w1 x + b1)) + b2); pad = (top, bottom, left, right)."""
    x, w1, w2 = (np.asarray(a, np.float64) for a in (x, w1, w2))
    t = np.einsum("mc,nchw->nmhw", w1[:, :, 0, 0], x) + (0 if b1 is None else b1[None, :, None, None])
    t = act64(t, a1)
    pt, pb, pl, pr = pad
    tp = np.pad(t, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = (tp.shape[2] - 3) // 2 + 1, (tp.shape[3] - 3) // 2 + 1
    y = np.zeros(t.shape[:2] + (oh, ow)) + (0 if b2 is None else b2[None, :, None, None])
    for kh in range(3):
        for kw in range(3):
            y += w2[None, :, 0, kh, kw, None, None] * tp[:, :, kh:kh + 2 * oh:2, kw:kw + 2 * ow:2]
    return act64(y, a2)


# (n, c, m, h, w, pad, acts, bias): MobileNetV2's, MobileNetV3-L's and
# EfficientNet-B0's first stride-2 blocks, odd and unaligned widths, a last sliver
# of filters under the tile's rows, padding only after (TensorFlow's "same" at
# stride 2) or only before, none, or two wide, a single input row, images that the
# threads split mid-way; ReLU, clamps, SiLU and HardSwish on either layer
PAIRS = [
    (1, 16, 96, 112, 112, 1, ("clamp", "clamp"), True),
    (1, 16, 64, 112, 112, 1, ("relu", "relu"), True),
    (1, 16, 96, 112, 112, 1, ("silu", "silu"), True),
    (2, 9, 66, 95, 93, (0, 1, 0, 1), ("hardswish", "silu"), True),
    (1, 20, 72, 90, 91, 1, ("clamp", "hardswish"), False),
    (1, 3, 100, 81, 77, 1, (None, "relu"), False),
    (2, 24, 70, 97, 101, (0, 1, 0, 1), ("clamp", None), True),
    (1, 8, 64, 92, 90, (1, 0, 1, 0), ("relu", "clamp"), True),
    (3, 5, 128, 64, 65, 0, (None, None), True),
    (1, 40, 64, 90, 95, 2, ("clamp", "clamp"), False),
    (1, 7, 128, 1, 4099, 1, ("relu", "clamp"), True),
    (1, 12, 1100, 23, 22, (2, 1, 1, 2), ("clamp", "relu"), True),
]


def pad4(pad):
    return (pad,) * 4 if isinstance(pad, int) else pad


def check_pair_chains(pairs, seed, build, ref_fn, fused):
    """Each pair of `pairs` as build(rng, n, c, m, h, w, pad, acts, bias, third,
    lead) makes it, with a layer before it (odd pairs) or after it (every third
    pair): the chain's bits against the layers one by one, and where it stands
    alone, ref_fn's float64 values; fused(c, m, h, w) must hold (a pair the chain
    fuses)."""
    rng = np.random.default_rng(seed)
    for i, (n, c, m, h, w, pad, acts, bias) in enumerate(pairs):
        lead, third = i % 2 == 1, i % 3 == 2
        inputs, layers, ws, bs, outputs = build(rng, n, c, m, h, w, pad4(pad), acts, bias, third=third, lead=lead)
        assert fused(c, m, h, w)
        got = _core.ConvChain(1, layers, outputs).run(inputs, ws, bs)[0]
        want = one_by_one(inputs, layers, ws, bs, outputs)[0]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{(n, c, m, h, w, pad)}")
        if not lead and not third:
            ref = ref_fn(inputs[0], ws[0], bs[0], acts[0], ws[1], bs[1], acts[1], pad4(pad))
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def check_pairs(pairs=PAIRS, seed=0):
    check_pair_chains(pairs, seed, pair_chain, reference, lambda c, m, h, w: m * h * w * 4 >= 2 << 20)


def on_threads(threads, fn):
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        fn()
    finally:
        gradvis.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
def test_pair_equals_the_layers_one_by_one(threads):
    on_threads(threads, check_pairs)


test_pair_simd_paths = simd_paths_test("""
from test_conv_pw_dw import check_pairs, PAIRS
check_pairs(PAIRS[:5], seed=1)
""")


def arena_blocks(chain, inputs, ws, bs):
    """Blocks the block cache hands out for one run (the output's, and the
    arena's when an intermediate is placed)."""
    chain.run(inputs, ws, bs)   # warm
    before = gradvis.block_cache_info()
    out = chain.run(inputs, ws, bs)
    after = gradvis.block_cache_info()
    del out
    return after["reused"] + after["fresh"] - before["reused"] - before["fresh"]


def check_first_map_never_allocated(inputs, layers, ws, bs, outputs):
    """A fused pair's chain takes one block (its output), and asked for the first
    layer's map too, it writes it and runs the two layers, with their bits."""
    assert arena_blocks(_core.ConvChain(1, layers, outputs), inputs, ws, bs) == 1   # the output only
    chain = _core.ConvChain(1, layers, [1, 2])
    t, y = chain.run(inputs, ws, bs)
    want_t, want_y = one_by_one(inputs, layers, ws, bs, [1, 2])
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(y, want_y)


def test_the_1x1_output_is_never_allocated():
    rng = np.random.default_rng(2)
    check_first_map_never_allocated(*pair_chain(rng, 1, 16, 96, 112, 112))   # a 4.8 MB map


@pytest.mark.parametrize("case", ["small map", "stride 1", "kept bits", "residual", "float64"])
def test_pairs_left_to_the_layers(case):
    """Pairs the fused pass does not take run as two layers: the same bits, and
    the 1x1 layer's map placed in the arena (two blocks: it and the output)."""
    rng = np.random.default_rng(3)
    h, stride, acts = (56 if case == "small map" else 112), (1 if case == "stride 1" else 2), ("clamp", "clamp")
    inputs, layers, ws, bs, outputs = pair_chain(rng, 1, 24, 144 if h == 56 else 96, h, h, 1, acts, stride=stride)
    if case == "residual":   # a second reader of the 1x1 output: its sum with the depthwise layer's input
        layers.append(("conv", 1, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False))
        ws.append((rng.standard_normal((96, 96, 1, 1)) / 10).astype(np.float32))
        bs.append(None)
        outputs = [2, 3]
    check_left_to_layers(case, inputs, layers, ws, bs, outputs, case not in ("residual", "kept bits"))


def check_left_to_layers(case, inputs, layers, ws, bs, outputs, placed):
    """The chain of a pair it does not fuse (`case`: "float64" runs it in float64,
    "kept bits" keeps the first layer's clamp mask for a lean pass): the same bits
    as the layers one by one, and where `placed`, the first layer's map placed in
    the arena (two blocks: it and the output)."""
    if case == "float64":
        inputs = [inputs[0].astype(np.float64)]
        ws = [w.astype(np.float64) for w in ws]
        bs = [None if b is None else b.astype(np.float64) for b in bs]
    want = one_by_one(inputs, layers, ws, bs, outputs)
    if case == "kept bits":   # a lean pass keeps the first layer's clamp mask as bits
        chain = _core.ConvChain(1, layers, outputs, [("bits", 1, "clamp", 0.0, 6.0)], False)
        before = gradvis.block_cache_info()
        got, (bits,), _ = chain.run_kept(inputs, ws, bs)
        after = gradvis.block_cache_info()
        t = one_by_one(inputs, layers, ws, bs, [1])[0]
        np.testing.assert_array_equal(bits, _core.activation_mask(t, "clamp", 0.0, 6.0))
        assert after["reused"] + after["fresh"] - before["reused"] - before["fresh"] == 2
    else:
        chain = _core.ConvChain(1, layers, outputs)
        got = chain.run(inputs, ws, bs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    if placed:
        assert arena_blocks(chain, inputs, ws, bs) == 2
