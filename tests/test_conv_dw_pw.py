"""A stride-1 3x3 depthwise convolution and the 1x1 convolution that alone reads
its output, run by a _core.ConvChain as one pass (conv2d_dw_pw_forward_cpu, on
inputs of 1 MiB and more an image): the same bits as the two layers called one by
one, a float64 reference, the depthwise layer's output never allocated, and the
pairs it leaves to the layers (smaller maps, stride 2, a residual on the 1x1
layer, a second reader of the map, a mask kept for a lean pass, float64)."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
from conftest import simd_paths_test
from test_conv_chain import one_by_one
from test_conv_pw_dw import arena_blocks, pad4


def pair_chain(rng, n, c, m, h, w, pad=(1, 1, 1, 1), acts=("clamp", None), bias=True, stride=1, third=False,
               lead=False):
    """(inputs, layers, weights, biases, outputs): x (n, c, h, w) -> 3x3 depthwise
    -> 1x1 conv to m channels; with `lead`, x comes from a 1x1 layer of the chain
    (then in the chain's arena, beside the pair's output), with `third` a 1x1
    layer reads the pair's output."""
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w1 = (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32)
    w2 = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    b1, b2 = (rng.standard_normal(k).astype(np.float32) if bias else None for k in (c, m))

    def act(a):
        return ("clamp", 0.0, 6.0) if a == "clamp" else (a, 0.0, 0.0)
    s = int(lead)
    layers = [("conv", s, -1, -1, stride, pad, 1, c) + act(acts[0]) + (False,),
              ("conv", s + 1, -1, -1, 1, 0, 1, 1) + act(acts[1]) + (False,)]
    ws, bs = [w1, w2], [b1, b2]
    if lead:
        layers.insert(0, ("conv", 0, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False))
        ws.insert(0, (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32))
        bs.insert(0, None)
    if third:
        layers.append(("conv", len(layers), -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, True))
        ws.append((rng.standard_normal((8, m, 1, 1)) / np.sqrt(m)).astype(np.float32))
        bs.append(None)
    return [x], layers, ws, bs, [len(layers)]


def reference(x, w1, b1, a1, w2, b2, a2, pad):
    """float64: act2(w2 act1(dwconv3x3(x) + b1) + b2); pad = (top, bottom, left, right)."""
    def act(v, a):
        if a == "silu":
            return v / (1 + np.exp(-v))
        if a == "hardswish":
            return v * np.clip(v + 3, 0, 6) / 6
        return np.clip(v, 0, 6) if a == "clamp" else np.maximum(v, 0) if a == "relu" else v
    x, w1, w2 = (np.asarray(a, np.float64) for a in (x, w1, w2))
    pt, pb, pl, pr = pad
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    t = np.zeros(x.shape[:2] + (oh, ow)) + (0 if b1 is None else b1[None, :, None, None])
    for kh in range(3):
        for kw in range(3):
            t += w1[None, :, 0, kh, kw, None, None] * xp[:, :, kh:kh + oh, kw:kw + ow]
    t = act(t, a1)
    y = np.einsum("mc,nchw->nmhw", w2[:, :, 0, 0], t) + (0 if b2 is None else b2[None, :, None, None])
    return act(y, a2)


# (n, c, m, h, w, pad, acts, bias): MobileNetV2's and MnasNet's first block (32@112
# -> 16), odd and unaligned widths and heights, a last sliver of filters under the
# tile's rows, padding only after or only before, none, or two wide, a single
# input row, two channels, images that the threads split mid-way and threads
# left with one row of an image; ReLU, clamps, SiLU and HardSwish on either layer
PAIRS = [
    (1, 32, 16, 112, 112, 1, ("clamp", None), True),
    (1, 32, 24, 112, 112, 1, ("relu", "relu"), True),
    (2, 33, 66, 95, 93, (0, 1, 0, 1), ("hardswish", "silu"), True),
    (1, 40, 13, 90, 95, 2, ("relu", "clamp"), False),
    (1, 36, 72, 90, 91, 1, ("silu", "hardswish"), False),
    (3, 24, 20, 110, 101, 0, (None, None), True),
    (1, 7, 128, 1, 40990, 1, ("relu", "clamp"), True),
    (1, 20, 100, 123, 122, (2, 1, 1, 2), ("silu", "relu"), True),
    (1, 2, 40, 531, 517, (1, 0, 1, 0), ("clamp", "clamp"), True),
    (3, 30, 7, 100, 99, 1, ("clamp", None), True),
]


def check_pairs(pairs=PAIRS, seed=0):
    rng = np.random.default_rng(seed)
    for i, (n, c, m, h, w, pad, acts, bias) in enumerate(pairs):
        lead, third = i % 2 == 1, i % 3 == 2
        inputs, layers, ws, bs, outputs = pair_chain(rng, n, c, m, h, w, pad4(pad), acts, bias, third=third,
                                                     lead=lead)
        assert c * h * w * 4 >= 1 << 20   # an input the pair is fused on
        got = _core.ConvChain(1, layers, outputs).run(inputs, ws, bs)[0]
        want = one_by_one(inputs, layers, ws, bs, outputs)[0]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{(n, c, m, h, w, pad)}")
        if not lead and not third:
            ref = reference(inputs[0], ws[0], bs[0], acts[0], ws[1], bs[1], acts[1], pad4(pad))
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pair_equals_the_layers_one_by_one(threads):
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        check_pairs()
    finally:
        gradvis.set_num_threads(old)


test_pair_simd_paths = simd_paths_test("""
from test_conv_dw_pw import check_pairs, PAIRS
check_pairs(PAIRS[:6], seed=1)
""")


def test_the_depthwise_output_is_never_allocated():
    rng = np.random.default_rng(2)
    inputs, layers, ws, bs, outputs = pair_chain(rng, 1, 32, 16, 112, 112)   # MobileNetV2's 1.6 MB map
    assert arena_blocks(_core.ConvChain(1, layers, outputs), inputs, ws, bs) == 1   # the output only
    # asked for as an output, the depthwise layer's map is written, and the pair runs as two layers
    chain = _core.ConvChain(1, layers, [1, 2])
    t, y = chain.run(inputs, ws, bs)
    want_t, want_y = one_by_one(inputs, layers, ws, bs, [1, 2])
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(y, want_y)


@pytest.mark.parametrize("case", ["small map", "stride 2", "one channel", "kept bits", "residual", "second reader",
                                  "float64"])
def test_pairs_left_to_the_layers(case):
    """Pairs the fused pass does not take run as two layers: the same bits, and
    the depthwise layer's map placed in the arena (two blocks: it and the output)."""
    rng = np.random.default_rng(3)
    h, stride = (56 if case == "small map" else 112), (2 if case == "stride 2" else 1)
    # (64 filters: an output of the block cache's size, counted by arena_blocks)
    inputs, layers, ws, bs, outputs = pair_chain(rng, 1, 32, 64, h, h, stride=stride)
    if case == "one channel":   # one group of one channel: a plain convolution
        inputs, layers, ws, bs, outputs = pair_chain(rng, 1, 1, 4, 600, 600)
    if case == "residual":   # the 1x1 layer adds the pair's input (MobileNetV2's later blocks)
        layers[1] = layers[1][:2] + (0,) + layers[1][3:]
        ws[1] = (rng.standard_normal((32, 32, 1, 1)) / 6).astype(np.float32)
        bs[1] = rng.standard_normal(32).astype(np.float32)
    if case == "second reader":   # a 1x1 layer reads the depthwise output too
        layers.append(("conv", 1, -1, -1, 1, 0, 1, 1, None, 0.0, 0.0, False))
        ws.append((rng.standard_normal((8, 32, 1, 1)) / 6).astype(np.float32))
        bs.append(None)
        outputs = [2, 3]
    if case == "float64":
        inputs = [inputs[0].astype(np.float64)]
        ws = [w.astype(np.float64) for w in ws]
        bs = [None if b is None else b.astype(np.float64) for b in bs]
    want = one_by_one(inputs, layers, ws, bs, outputs)
    if case == "kept bits":   # a lean pass keeps the depthwise output's clamp mask as bits
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
    if case not in ("second reader", "kept bits"):
        assert arena_blocks(chain, inputs, ws, bs) == 2
