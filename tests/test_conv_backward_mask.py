"""The convolution's input gradient with the backward of the activation before
it applied as dx is written (_core.conv2d_backward_input_act): the same values
as conv2d_backward_input followed by relu_backward / clamp_backward /
silu_backward / hardswish_backward on every kernel path, and the model's use of
it (same gradients as the separate layers, only where the activation's output
has no other reader)."""
import numpy as np
import pytest

import gradvis
from conftest import simd_paths_test
from gradvis import _core
from gradvis.nn import (Add, BatchNorm2d, Clip, Conv2d, Flatten, GlobalAvgPool, HardSwish, Linear, Model, ReLU,
                        ReLU6, SiLU)

# (x shape, w shape, stride, padding, groups, algorithm): the stride-1 flipped
# implicit gemm, Winograd, 1x1, col2im (stride 2 and the RGB layer), the
# depthwise lanes (7x7 maps) and plane kernels, a grouped layer, 1x1 on 1x1 maps
# and, transposed, on a 7x7 map
CASES = [
    ((2, 16, 9, 9), (24, 16, 3, 3), 1, 1, 1, "direct"),
    ((2, 32, 12, 12), (32, 32, 3, 3), 1, 1, 1, "winograd"),
    ((3, 24, 7, 5), (40, 24, 1, 1), 1, 0, 1, "auto"),
    ((2, 16, 11, 11), (8, 16, 3, 3), 2, 1, 1, "auto"),
    ((2, 3, 10, 10), (8, 3, 5, 5), 1, 2, 1, "auto"),
    ((2, 40, 7, 7), (40, 1, 3, 3), 1, 1, 40, "auto"),
    ((1, 12, 15, 13), (12, 1, 5, 5), 2, 2, 12, "auto"),
    ((2, 16, 8, 8), (32, 4, 3, 3), 1, 1, 4, "auto"),
    ((3, 48, 1, 1), (20, 48, 1, 1), 1, 0, 1, "auto"),
    ((1, 96, 7, 7), (40, 96, 1, 1), 1, 0, 1, "auto"),
    ((1, 3, 41, 36), (8, 3, 3, 3), 1, 1, 1, "auto"),
]
IDS = ["implicit", "winograd", "1x1", "col2im-s2", "rgb", "dw-lanes", "dw-plane-s2", "grouped", "1x1-vector",
       "1x1-transposed", "rgb-banded"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["relu", "clamp", "silu", "hardswish"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_backward_input_then_activation_backward(case, act, dtype):
    check_case(case, act, dtype)


def check_case(case, act, dtype):
    """conv2d_backward_input_act against conv2d_backward_input then the separate
    activation's backward: the same bits (raises AssertionError). relu / clamp
    read the activation's output, silu / hardswish its input (pre); relu / clamp
    also as activation_mask's bits (conv2d_backward_input_mask), whose words
    are checked against numpy's packbits."""
    xs, ws, stride, pad, groups, algo = case
    rng = np.random.default_rng(0)
    pre = rng.standard_normal(xs).astype(dtype) * 4
    x = {"relu": np.maximum(pre, 0), "clamp": np.clip(pre, 0, 6), "silu": _core.silu_forward(pre),
         "hardswish": _core.hardswish_forward(pre)}[act]
    w = rng.standard_normal(ws).astype(dtype)
    old = gradvis.get_conv_algorithm()
    gradvis.set_conv_algorithm(algo)
    try:
        out = _core.conv2d_forward(x, w, None, stride, pad, 1, groups)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = _core.conv2d_backward_input(dout, w, x.shape, stride, pad, 1, groups)
        want = {"relu": lambda: _core.relu_backward(dx, x), "clamp": lambda: _core.clamp_backward(dx, x, 0.0, 6.0),
                "silu": lambda: _core.silu_backward(dx, pre),
                "hardswish": lambda: _core.hardswish_backward(dx, pre)}[act]()
        ref = x if act in ("relu", "clamp") else pre
        got = _core.conv2d_backward_input_act(dout, w, ref, stride, pad, 1, groups, act, 0.0, 6.0)
        if act in ("relu", "clamp"):   # the mask as activation_mask's bits
            bits = _core.activation_mask(x, act, 0.0, 6.0)
            got_bits = _core.conv2d_backward_input_mask(dout, w, bits, x.shape, stride, pad, 1, groups)
    finally:
        gradvis.set_conv_algorithm(old)
    assert got.dtype == dtype and got.shape == x.shape
    assert (want == 0).any() or act == "silu"
    assert (want != 0).any()
    np.testing.assert_array_equal(got, want)
    if act in ("relu", "clamp"):
        np.testing.assert_array_equal(bits, packed_mask(x, act))
        assert got_bits.dtype == dtype and got_bits.shape == x.shape
        np.testing.assert_array_equal(got_bits, want)


def packed_mask(x, act, lo=0.0, hi=6.0):
    """activation_mask's layout by numpy: element i (C order) at bit i % 64 of
    word i // 64, the words little-endian."""
    keep = (x > lo) & (x < hi) if act == "clamp" else x > 0
    b = np.packbits(keep.ravel(), bitorder="little")
    return np.concatenate([b, np.zeros(-len(b) % 8, np.uint8)]).view("<u8").astype(np.uint64)


def check_mask_bits():
    """activation_mask against numpy's packbits: sizes around the 64-bit words and
    the vector widths, NaN, infinities, signed zeros and the bounds themselves,
    float32 and float64; and a map large enough to be split between threads."""
    rng = np.random.default_rng(7)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 6.0, 6.000001, 5.999999, 1e-45, -1e-45, 1.0, -1.0])
    for n in (1, 3, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 1000, 3 * 112 * 112 + 5):
        for dtype in (np.float32, np.float64):
            x = np.where(rng.random(n) < 0.3, rng.choice(special, size=n), rng.uniform(-2, 8, n)).astype(dtype)
            for act, lo, hi in (("relu", 0.0, 0.0), ("clamp", 0.0, 6.0), ("clamp", -1.0, 1.0)):
                got = _core.activation_mask(x, act, lo, hi)
                assert got.dtype == np.uint64 and got.shape == ((n + 63) // 64,)
                np.testing.assert_array_equal(got, packed_mask(x, act, lo, hi))
            # the activation's backward from them: relu_backward's / clamp_backward's values
            g = rng.standard_normal(n).astype(dtype)
            for act, lo, hi in (("relu", 0.0, 0.0), ("clamp", 0.0, 6.0)):
                want = _core.relu_backward(g, x) if act == "relu" else _core.clamp_backward(g, x, lo, hi)
                got = _core.activation_mask_backward(g, _core.activation_mask(x, act, lo, hi))
                assert got.dtype == dtype
                np.testing.assert_array_equal(got, want)
    # any shape and memory order: the elements in C order
    x = rng.uniform(-1, 1, (3, 5, 7, 9)).astype(np.float32)
    np.testing.assert_array_equal(_core.activation_mask(np.asfortranarray(x)), packed_mask(x, "relu"))
    np.testing.assert_array_equal(_core.activation_mask(x[:, :, ::2]), packed_mask(x[:, :, ::2], "relu"))


SIMD_CHECKS = r"""
from test_conv_backward_mask import CASES, check_case, check_mask_bits
from test_conv_backward_mask import check_special_references
for case in CASES:
    for act in ("relu", "clamp", "silu", "hardswish"):
        check_case(case, act, np.float32)
check_special_references()
check_mask_bits()
"""


test_masks_at_simd_levels = simd_paths_test(SIMD_CHECKS)


def check_special_references():
    """ReLU and clamp masks with NaN, infinite, signed-zero and boundary references
    on a 1x1 layer (the transposed path, whose masks run per filter row) and a 3x3
    one: the separate backward's bits."""
    rng = np.random.default_rng(5)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 6.0, 6.000001, 5.999999, 1e-45, -1e-45], np.float32)
    for xs, ws, pad in [((1, 64, 7, 7), (40, 64, 1, 1), 0), ((2, 8, 9, 9), (16, 8, 3, 3), 1)]:
        ref = np.where(rng.random(xs) < 0.5, rng.choice(special, size=xs), rng.uniform(-2, 8, xs)).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        dout = rng.standard_normal((xs[0], ws[0], xs[2], xs[3])).astype(np.float32)
        dx = _core.conv2d_backward_input(dout, w, xs, 1, pad, 1, 1)
        for act, want in [("relu", _core.relu_backward(dx, ref)), ("clamp", _core.clamp_backward(dx, ref, 0.0, 6.0))]:
            got = _core.conv2d_backward_input_act(dout, w, ref, 1, pad, 1, 1, act, 0.0, 6.0)
            np.testing.assert_array_equal(got, want)


def test_masks_with_special_references():
    check_special_references()


def test_activation_mask_bits():
    check_mask_bits()


def test_bit_masks_with_special_references():
    """The references of check_special_references as bits: the same bits again."""
    rng = np.random.default_rng(5)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 6.0, 6.000001, 5.999999, 1e-45, -1e-45], np.float32)
    for xs, ws, pad in [((1, 64, 7, 7), (40, 64, 1, 1), 0), ((2, 8, 9, 9), (16, 8, 3, 3), 1),
                        ((1, 24, 13, 11), (24, 1, 3, 3), 1)]:
        groups = xs[1] if ws[1] == 1 else 1
        ref = np.where(rng.random(xs) < 0.5, rng.choice(special, size=xs), rng.uniform(-2, 8, xs)).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        dout = rng.standard_normal((xs[0], ws[0], xs[2], xs[3])).astype(np.float32)
        for act in ("relu", "clamp"):
            want = _core.conv2d_backward_input_act(dout, w, ref, 1, pad, 1, groups, act, 0.0, 6.0)
            bits = _core.activation_mask(ref, act, 0.0, 6.0)
            got = _core.conv2d_backward_input_mask(dout, w, bits, xs, 1, pad, 1, groups)
            np.testing.assert_array_equal(got, want)


def test_bit_masks_on_two_threads():
    """Maps large enough for both threads (the bits and a mask's backward split by
    whole words, the gradient's planes between threads): the 1-thread bits."""
    rng = np.random.default_rng(9)
    x = np.clip(4 * rng.standard_normal((2, 48, 37, 29)), 0, 6).astype(np.float32)
    w = rng.standard_normal((48, 1, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, 48, 19, 15)).astype(np.float32)
    old = gradvis.get_num_threads()
    try:
        got = {}
        for nt in (1, 2):
            gradvis.set_num_threads(nt)
            bits = _core.activation_mask(x, "clamp", 0.0, 6.0)
            got[nt] = (bits, _core.conv2d_backward_input_mask(dout, w, bits, x.shape, 2, 1, 1, 48),
                       _core.activation_mask_backward(x - 3, bits))
    finally:
        gradvis.set_num_threads(old)
    np.testing.assert_array_equal(got[1][0], packed_mask(x, "clamp"))
    np.testing.assert_array_equal(got[2][0], got[1][0])
    np.testing.assert_array_equal(got[2][1], got[1][1])
    np.testing.assert_array_equal(got[2][2], got[1][2])
    np.testing.assert_array_equal(got[1][2], _core.clamp_backward(x - 3, x, 0.0, 6.0))
    want = _core.conv2d_backward_input_act(dout, w, x, 2, 1, 1, 48, "clamp", 0.0, 6.0)
    np.testing.assert_array_equal(got[1][1], want)


def test_float64_against_numpy_reference():
    """dx of sum(dout * conv(relu6(p))) with respect to p, by finite differences."""
    rng = np.random.default_rng(1)
    p = rng.uniform(-2, 8, (1, 4, 6, 6))
    w = rng.standard_normal((5, 4, 3, 3))
    dout = rng.standard_normal((1, 5, 6, 6))

    def f(q):
        return float((_core.conv2d_forward(np.clip(q, 0, 6), w, None, 1, 1) * dout).sum())
    got = _core.conv2d_backward_input_act(dout, w, np.clip(p, 0, 6), 1, 1, 1, 1, "clamp", 0.0, 6.0)
    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 2, 3), (0, 3, 5, 5), (0, 2, 4, 1)]:
        if min(abs(p[idx]), abs(p[idx] - 6)) < 1e-3:
            continue
        e = np.zeros_like(p)
        e[idx] = h
        assert abs((f(p + e) - f(p - e)) / (2 * h) - got[idx]) < 1e-6


def test_bad_arguments_are_named():
    x = np.zeros((1, 4, 6, 6), np.float32)
    w = np.zeros((5, 4, 3, 3), np.float32)
    d = np.zeros((1, 5, 6, 6), np.float32)
    with pytest.raises(ValueError, match="activation must be 'relu', 'clamp', 'silu' or 'hardswish'"):
        _core.conv2d_backward_input_act(d, w, x, 1, 1, 1, 1, "gelu")
    with pytest.raises(ValueError, match="lo .* and hi"):
        _core.conv2d_backward_input_act(d, w, x, 1, 1, 1, 1, "clamp", 6.0, 0.0)
    with pytest.raises(ValueError, match="conv2d_backward_input_act: dout must have shape"):
        _core.conv2d_backward_input_act(d, w, x[:, :, :5], 1, 1, 1, 1, "relu")
    with pytest.raises(ValueError, match="conv2d_backward_input_act: .*not the input shape"):
        _core.conv2d_backward_input_act(d, w, np.zeros((2, 4, 6, 6), np.float32), 1, 1, 1, 1, "relu")
    with pytest.raises(TypeError, match="x must be a numpy array"):
        _core.conv2d_backward_input_act(d, w, [1, 2], 1, 1, 1, 1, "relu")
    bits = _core.activation_mask(x)
    with pytest.raises(ValueError, match="activation_mask: activation must be 'relu' or 'clamp'"):
        _core.activation_mask(x, "silu")
    with pytest.raises(ValueError, match="activation_mask: lo .* and hi"):
        _core.activation_mask(x, "clamp", 6.0, 0.0)
    with pytest.raises(TypeError, match="activation_mask"):
        _core.activation_mask(x.astype(np.int32))
    with pytest.raises(ValueError, match="conv2d_backward_input_mask: mask must hold 3 words"):
        _core.conv2d_backward_input_mask(d, w, bits[:2], x.shape, 1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"activation_mask_backward: mask must hold 3 words .* \(1, 4, 6, 6\)"):
        _core.activation_mask_backward(x, bits[:2])
    with pytest.raises(TypeError, match="activation_mask_backward: mask must be the uint64 array"):
        _core.activation_mask_backward(x, bits.astype(np.float64))
    with pytest.raises(ValueError, match="conv2d_backward_input_mask: mask must hold 3 words"):
        _core.conv2d_backward_input_mask(d, w, np.zeros((3, 1), np.uint64), x.shape, 1, 1, 1, 1)
    with pytest.raises(TypeError, match="conv2d_backward_input_mask: mask must be the uint64 array"):
        _core.conv2d_backward_input_mask(d, w, bits.view(np.int64), x.shape, 1, 1, 1, 1)
    with pytest.raises(TypeError, match="conv2d_backward_input_mask: mask must be the uint64 array"):
        _core.conv2d_backward_input_mask(d, w, list(bits), x.shape, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="conv2d_backward_input_mask: input_shape must be the input's shape"):
        _core.conv2d_backward_input_mask(d, w, bits, (6, 6), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="conv2d_backward_input_mask: .*not the input shape"):
        _core.conv2d_backward_input_mask(d, w, bits, (2, 4, 6, 6), 1, 1, 1, 1)


def _net():
    m = Model(input_shape=(3, 10, 10), seed=0)
    m.add("c1", Conv2d(3, 8, 3, padding=1)).add("r1", ReLU())
    m.add("c2", Conv2d(8, 8, 3, padding=1)).add("r2", ReLU6())            # r2 read by c3 and the add
    m.add("c3", Conv2d(8, 8, 3, padding=1, groups=8)).add("bn", BatchNorm2d(8))
    m.add("clip", Clip(-1.0, 2.0)).add("c4", Conv2d(8, 8, 1))
    m.add("sum", Add(), inputs=["c4", "r2"])
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(8, 4))
    m.init_params(seed=0, dtype=np.float64)
    return m


def test_model_applies_the_masks_only_where_it_may():
    m = _net()
    X = np.random.default_rng(2).standard_normal((2, 3, 10, 10))
    out, cache = m.forward(X)
    # c2 reads r1 (ReLU), c4 reads clip; c3 reads r2, which the add also reads
    assert {m.nodes[j].name: m.nodes[a].name for j, (a, _) in cache["masks"].items()} == {"c2": "r1", "c4": "clip"}
    dout = np.random.default_rng(3).standard_normal(out.shape)
    sep = m.copy()
    sep.fuse_relu = False
    rout, rcache = sep.forward(X)
    assert rcache["masks"] == {}
    for pg in (False, True):
        dX, g = m.backward(dout, cache, param_grads=pg)
        rX, rg = sep.backward(dout, rcache, param_grads=pg)
        np.testing.assert_allclose(dX, rX, rtol=1e-12, atol=1e-14)
        for k in rg:
            np.testing.assert_allclose(g[k], rg[k], rtol=1e-12, atol=1e-14)
    # asking for the activation keeps it a node of its own
    _, c2 = m.forward(X, outputs=["r1", "fc"])
    assert all(m.nodes[a].name != "r1" for a, _ in c2["masks"].values())
    # a rule for the activation (by type or name) runs instead of the mask
    calls = []

    def rule(layer, d, c):
        calls.append(layer.type)
        return layer.backward_inputs(d, c)
    for key in (ReLU, "clip"):
        calls.clear()
        dX, _ = m.backward(dout, cache, param_grads=False, rules={key: rule})
        np.testing.assert_allclose(dX, sep.backward(dout, rcache, param_grads=False)[0], rtol=1e-12, atol=1e-14)
        assert calls == (["ReLU"] if key is ReLU else ["Clip"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_applies_silu_and_hardswish_derivatives(dtype):
    # EfficientNet's and MobileNetV3's pattern: conv -> SiLU / HardSwish (fused into
    # the conv before) -> conv; and a SiLU that is its own node (after a batch norm)
    m = Model(input_shape=(3, 12, 12), seed=0)
    m.add("c1", Conv2d(3, 8, 3, padding=1)).add("s1", SiLU())
    m.add("c2", Conv2d(8, 8, 3, padding=1, groups=8)).add("h2", HardSwish())
    m.add("c3", Conv2d(8, 6, 1)).add("bn", BatchNorm2d(6)).add("s3", SiLU())
    m.add("c4", Conv2d(6, 6, 3, stride=2, padding=1))
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(6, 4))
    m.init_params(seed=0, dtype=dtype)
    X = (2 * np.random.default_rng(2).standard_normal((2, 3, 12, 12))).astype(dtype)
    out, cache = m.forward(X)
    assert {m.nodes[j].name: m.nodes[a].name for j, (a, _) in cache["masks"].items()} == {
        "c2": "s1", "c3": "h2", "c4": "s3"}
    sep = m.copy()
    sep.fuse_relu = False
    rout, rcache = sep.forward(X)
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    for pg in (False, True):
        dX, g = m.backward(dout, cache, param_grads=pg)
        rX, rg = sep.backward(dout, rcache, param_grads=pg)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(dX, rX, rtol=tol, atol=tol * np.abs(rX).max())
        for k in rg:
            np.testing.assert_allclose(g[k], rg[k], rtol=tol, atol=tol * np.abs(rg[k]).max())


def _mask_bits(m, cache):
    """{activation name: its mask's bits} of a lean cache (its ActBits caches);
    None for a full cache."""
    from gradvis.nn.passes import ActBits
    if "lean" not in cache:
        return None
    return {m.nodes[cache["start"] + j].name: c for j, c in enumerate(cache["caches"]) if type(c) is ActBits}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_loop_masks_by_bits(dtype):
    """After a backward pass of input gradients only, test-mode forward passes keep
    the ReLU and clamp masks as bits, and the next such backward pass reads them:
    the same gradient, to the bit. Other passes make none."""
    m = _net().astype(dtype)
    X = np.random.default_rng(2).standard_normal((2, 3, 10, 10)).astype(dtype)
    out, c0 = m.forward(X)
    assert _mask_bits(m, c0) is None
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    d0 = m.backward(dout, c0, param_grads=False)[0]
    _, c1 = m.forward(X)
    bits = _mask_bits(m, c1)
    # the masks c2 and c4 apply (r1, clip), and r2's, which two layers read
    assert {"r1", "clip"} <= set(bits) and set(bits) == {"r1", "r2", "clip"}
    r1 = np.maximum(m.forward(X, end="r1", cache=False)[0], 0)
    np.testing.assert_array_equal(bits["r1"].bits, packed_mask(r1, "relu"))
    clip = m.forward(X, end="clip", cache=False)[0]
    np.testing.assert_array_equal(bits["clip"].bits, packed_mask(clip, "clamp", -1.0, 2.0))
    np.testing.assert_array_equal(m.backward(dout, c1, param_grads=False)[0], d0)
    # the backward reads them: a mask of zeros stops the gradient at c2's input
    _, c2 = m.forward(X)
    r1_bits = _mask_bits(m, c2)["r1"]
    r1_bits.bits = np.zeros_like(r1_bits.bits)
    np.testing.assert_array_equal(m.backward(dout, c2, param_grads=False)[0], np.zeros_like(d0))
    # after a backward pass with parameter gradients, and in train mode, none are made
    m.backward(dout, c1, param_grads=True)
    assert _mask_bits(m, m.forward(X)[1]) is None
    m.backward(dout, c1, param_grads=False)
    assert _mask_bits(m, m.forward(X, mode="train")[1]) is None
    assert _mask_bits(m, m.forward(X)[1]) is not None

def _se_net(dtype):
    """Convolutions with ReLU, ReLU6, SiLU and HardSwish before them, a squeeze-
    and-excitation gate, a residual Add and a batch norm that folds."""
    from gradvis.nn import HardSigmoid, Mul
    m = Model(input_shape=(3, 12, 12), seed=0)
    m.add("c1", Conv2d(3, 8, 3, padding=1)).add("b1", BatchNorm2d(8)).add("r1", ReLU())
    m.add("c2", Conv2d(8, 8, 3, padding=1, groups=8)).add("s2", SiLU())
    m.add("gap", GlobalAvgPool()).add("fc1", Conv2d(8, 4, 1)).add("r3", ReLU()).add("fc2", Conv2d(4, 8, 1))
    m.add("hs", HardSigmoid()).add("mul", Mul(), inputs=["s2", "hs"])
    m.add("c3", Conv2d(8, 8, 1)).add("r6", ReLU6()).add("c4", Conv2d(8, 8, 3, padding=1, groups=8))
    m.add("h4", HardSwish()).add("c5", Conv2d(8, 8, 1)).add("sum", Add(), inputs=["c5", "r1"])
    m.add("c6", Conv2d(8, 6, 3, stride=2, padding=1))
    m.add("gap2", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(6, 4))
    m.init_params(seed=0, dtype=dtype)
    return m


def _holds_batch_maps(c, n):
    """Whether cache c holds an array of n (N, C, H, W) maps."""
    if isinstance(c, np.ndarray):
        return c.ndim == 4 and c.shape[0] == n
    if isinstance(c, (tuple, list)):
        return any(_holds_batch_maps(v, n) for v in c)
    return any(_holds_batch_maps(getattr(c, k, None), n) for k in getattr(c, "__slots__", ()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lean_caches_give_the_same_gradients(dtype):
    """A gradient loop's forward passes keep convolutions' inputs as shapes and free
    the activations as a pass without a cache does; the input gradients are those
    of a full cache, to the bit. A backward pass that needs more (parameter
    gradients, rules, no input gradient) runs the forward pass again and gets the
    full cache's results."""
    from gradvis.nn.passes import ActBits, InputSpec
    m = _se_net(dtype)
    X = np.random.default_rng(4).standard_normal((2, 3, 12, 12)).astype(dtype)
    out, full = m.forward(X)
    assert "lean" not in full
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    want = m.backward(dout, full, param_grads=False)[0]
    want_pg = m.copy().backward(dout, full)
    out2, lean = m.forward(X)
    np.testing.assert_array_equal(out2, out)
    assert "lean" in lean
    assert "lean" not in m.forward(X, cache="full")[1]
    with pytest.raises(TypeError, match="cache must be True, False or 'full', got 'lean'"):
        m.forward(X, cache="lean")
    conv = [j for j, n in enumerate(m.nodes) if type(n.layer) is Conv2d]
    specs = [j for j in conv if type(lean["caches"][j][0]) is InputSpec]
    # the SE block's convolutions on 1x1 maps too; c2 keeps nothing of its input (r1's mask is bits)
    assert len(specs) == len(conv)
    np.testing.assert_array_equal(m.backward(dout, lean, param_grads=False)[0], want)
    # what keeps maps of the batch: the activations whose backward passes read their
    # values (s2, read twice; hs's and mul's inputs; h4's input, for c5's mask); r1,
    # read twice, keeps its mask as bits
    assert {m.nodes[j].name for j, c in enumerate(lean["caches"]) if _holds_batch_maps(c, 2)} == {
        "s2", "hs", "mul", "h4"}
    assert type(lean["caches"][m.index("r1")]) is ActBits
    # parameter gradients from a lean cache: the pass again, the full cache's values
    _, lean = m.forward(X)
    dX, g = m.backward(dout, lean)
    np.testing.assert_array_equal(dX, want_pg[0])
    for k, v in want_pg[1].items():
        np.testing.assert_array_equal(g[k], v)
    assert "lean" not in m.forward(X)[1]       # that backward pass wanted parameter gradients
    m.backward(dout, m.forward(X)[1], param_grads=False)
    _, lean = m.forward(X)
    assert "lean" in lean
    calls = []

    def rule(layer, d, c):
        calls.append(layer.type)
        return layer.backward_inputs(d, c)
    np.testing.assert_array_equal(m.backward(dout, lean, param_grads=False, rules={ReLU: rule})[0], want)
    assert calls == ["ReLU", "ReLU"]
    m.backward(dout, m.forward(X)[1], param_grads=False)
    _, lean = m.forward(X)
    assert m.backward(dout, lean, input_grad=False, param_grads=True)[0] is None
    # a pass that starts inside the network, asked for two outputs
    m.backward(dout, m.forward(X)[1], param_grads=False)
    h = m.forward(X, end="r1")[0]
    outs, c = m.forward(h, start="c2", outputs=["c5", "fc"])
    assert "lean" in c
    d = {"c5": np.ones_like(outs["c5"]), "fc": dout}
    got = m.backward(d, c, param_grads=False)[0]
    outs2, c2 = m.forward(h, start="c2", outputs=["c5", "fc"])
    np.testing.assert_array_equal(m.backward(d, c2, param_grads=True)[0], got)
