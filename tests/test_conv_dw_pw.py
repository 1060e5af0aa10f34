"""A stride-1 3x3 depthwise convolution and the 1x1 convolution that alone reads
its output, run by a _core.ConvChain as one pass (conv2d_dw_pw_forward_cpu, on
inputs of 1 MiB and more an image): the same bits as the two layers called one by
one, a float64 reference, the depthwise layer's output never allocated, and the
pairs it leaves to the layers (smaller maps, stride 2, a residual on the 1x1
layer, a second reader of the map, a mask kept for a lean pass, float64)."""
import numpy as np
import pytest

from conftest import simd_paths_test
from test_conv_pw_dw import act64, act_spec, check_first_map_never_allocated, check_left_to_layers, \
    check_pair_chains, on_threads, with_neighbours


def pair_chain(rng, n, c, m, h, w, pad=(1, 1, 1, 1), acts=("clamp", None), bias=True, stride=1, third=False,
               lead=False):
    """(inputs, layers, weights, biases, outputs): x (n, c, h, w) -> 3x3 depthwise
    -> 1x1 conv to m channels; `lead` and `third` as test_conv_pw_dw's
    with_neighbours."""
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w1 = (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32)
    w2 = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    b1, b2 = (rng.standard_normal(k).astype(np.float32) if bias else None for k in (c, m))
    s = int(lead)
    pair = [("conv", s, -1, -1, stride, pad, 1, c) + act_spec(acts[0]) + (False,),
            ("conv", s + 1, -1, -1, 1, 0, 1, 1) + act_spec(acts[1]) + (False,)]
    return with_neighbours(rng, x, pair, [w1, w2], [b1, b2], c, m, lead, third)


def reference(x, w1, b1, a1, w2, b2, a2, pad):
    """float64: act2(w2 act1(dwconv3x3(x) + b1) + b2); pad = (top, bottom, left, right)."""
    x, w1, w2 = (np.asarray(a, np.float64) for a in (x, w1, w2))
    pt, pb, pl, pr = pad
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    t = np.zeros(x.shape[:2] + (oh, ow)) + (0 if b1 is None else b1[None, :, None, None])
    for kh in range(3):
        for kw in range(3):
            t += w1[None, :, 0, kh, kw, None, None] * xp[:, :, kh:kh + oh, kw:kw + ow]
    t = act64(t, a1)
    y = np.einsum("mc,nchw->nmhw", w2[:, :, 0, 0], t) + (0 if b2 is None else b2[None, :, None, None])
    return act64(y, a2)


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
    check_pair_chains(pairs, seed, pair_chain, reference, lambda c, m, h, w: c * h * w * 4 >= 1 << 20)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pair_equals_the_layers_one_by_one(threads):
    on_threads(threads, check_pairs)


test_pair_simd_paths = simd_paths_test("""
from test_conv_dw_pw import check_pairs, PAIRS
check_pairs(PAIRS[:6], seed=1)
""")


def test_the_depthwise_output_is_never_allocated():
    rng = np.random.default_rng(2)
    check_first_map_never_allocated(*pair_chain(rng, 1, 32, 16, 112, 112))   # MobileNetV2's 1.6 MB map


@pytest.mark.parametrize("case", ["small map", "stride 2", "one channel", "kept bits", "residual", "second reader",
                                  "float64"])
def test_pairs_left_to_the_layers(case):
    """Pairs the fused pass does not take run as two layers: the same bits, and
    the depthwise layer's map placed in the arena (two blocks: it and the output)."""
    rng = np.random.default_rng(3)
    h, stride = (56 if case == "small map" else 112), (2 if case == "stride 2" else 1)
    # (64 filters: an output of the block cache's size, counted with the arena's)
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
    check_left_to_layers(case, inputs, layers, ws, bs, outputs, case not in ("second reader", "kept bits"))
