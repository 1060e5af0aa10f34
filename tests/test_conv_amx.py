"""Float32 1x1 convolutions on the AMX tile unit (csrc/cpu/conv_amx.cpp): each
operand split exactly into three bfloat16 parts, six tile products summed in
float32. The results must be as accurate as the float32 vector kernels', against
a float64 reference, for odd sizes, batches, bias, ReLU and fused activations, on
either orientation (forward, input gradient); they must not depend on the thread
count; infinities and NaNs must give what the float32 kernels give."""
import os
import subprocess
import sys

import numpy as np
import pytest

from gradvis import _core

pytestmark = pytest.mark.skipif(not _core.amx_enabled(), reason="no AMX tile unit in use on this machine")

# (N, C, F, H, W): every shape takes the tile path (16.8M+ multiply-adds, >= 60%
# of the padded tile products real). The first ones pack the filters once per call
# (columns outside); the last three have packed filters over 1 MB (filters
# outside; the input gradient transposed in chunks of K at batch 1 on up to 256
# positions, else in chunks of K), the last one at a batch of 3.
SHAPES = [
    (1, 100, 200, 29, 29),
    (2, 130, 90, 27, 29),
    (1, 96, 384, 23, 23),
    (3, 90, 120, 25, 27),
    (1, 1024, 200, 12, 12),
    (1, 600, 900, 7, 9),
    (3, 700, 260, 9, 11),
]


def _rand(shape, rng, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _bound(wm, xs):
    """Per-output sum of |w||x| (the scale of a dot product's rounding)."""
    return np.einsum("fc,nchw->nfhw", np.abs(wm).astype(np.float64), np.abs(xs).astype(np.float64))


@pytest.fixture
def direct():
    """Runs a block with the float32 vector kernels only."""
    prev = _core.get_conv_algorithm()

    class _D:
        def __enter__(self):
            _core.set_conv_algorithm("direct")

        def __exit__(self, *a):
            _core.set_conv_algorithm(prev)

    return _D()


# SHAPES[4] (1024 -> 200, filters over 1 MB) sums K in two halves in the
# forward (K >= 4 M); this one does at a batch of 2, image by image. The last:
# 9.3M multiply-adds, under 16.8M but both sides of the filters 200+ wide.
FWD_SHAPES = SHAPES + [(2, 1024, 200, 12, 11), (1, 240, 230, 13, 13)]


@pytest.mark.parametrize("shape", [(1, 150, 400, 13, 13), (1, 240, 230, 9, 9)])
def test_smaller_layers_stay_on_the_vector_kernels(shape, direct):
    # 10.1M multiply-adds with one side 150 wide; 4.5M with both 200+
    N, C, F, H, W = shape
    rng = np.random.default_rng(3)
    x, w = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(C))
    out = _core.conv2d_forward(x, w)
    with direct:
        np.testing.assert_array_equal(out, _core.conv2d_forward(x, w))


@pytest.mark.parametrize("shape", FWD_SHAPES)
def test_forward_matches_float64(shape, direct):
    N, C, F, H, W = shape
    rng = np.random.default_rng(sum(shape))
    x, w, b = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(C)), _rand((F,), rng)
    ref = np.einsum("fc,nchw->nfhw", w[:, :, 0, 0].astype(np.float64), x.astype(np.float64)) + b[None, :, None, None]
    out = _core.conv2d_forward(x, w, b)
    with direct:
        vec = _core.conv2d_forward(x, w, b)
    assert not np.array_equal(out, vec), "the tile path was not taken"
    bound = _bound(w[:, :, 0, 0], x) + np.abs(b)[None, :, None, None]
    err, err_vec = (np.abs(out - ref) / bound).max(), (np.abs(vec - ref) / bound).max()
    assert err < 1e-6, err
    assert err < 4 * err_vec + 1e-7, (err, err_vec)
    # the fused ReLU is the same products, clipped
    relu = _core.conv2d_forward(x, w, b, relu=True)
    np.testing.assert_array_equal(relu, np.maximum(out, 0))


# An input gradient computed transposed with K (900) at least 4 M (200): its K
# is summed in two halves, added at the end (ConvNeXt-T's narrowing layers).
K_HALVES = (1, 200, 900, 9, 11)

# The input gradients of SHAPES, and where each runs: on the tiles, or (filters
# over 1 MB at a batch above 1, packed again per image) on the vector kernels.
GRAD_SHAPES = [(shape, True) for shape in SHAPES[:-1]] + [((1, 700, 260, 15, 17), True), ((1, 700, 260, 17, 17), True),
                                                           (K_HALVES, True), (SHAPES[-1], False)]


@pytest.mark.parametrize("shape,on_tiles", GRAD_SHAPES)
def test_input_gradient_matches_float64(shape, on_tiles, direct):
    N, C, F, H, W = shape
    rng = np.random.default_rng(7 + sum(shape))
    dy, w = _rand((N, F, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(F))
    wt = w[:, :, 0, 0].T
    ref = np.einsum("cf,nfhw->nchw", wt.astype(np.float64), dy.astype(np.float64))
    dx = _core.conv2d_backward_input(dy, w, (H, W))
    with direct:
        vec = _core.conv2d_backward_input(dy, w, (H, W))
    assert np.array_equal(dx, vec) != on_tiles, "the tile path was (not) taken"
    bound = _bound(wt, dy)
    err, err_vec = (np.abs(dx - ref) / bound).max(), (np.abs(vec - ref) / bound).max()
    assert err < 1e-6, err
    assert err < 4 * err_vec + 1e-7, (err, err_vec)


@pytest.mark.parametrize("activation,lo,hi", [("silu", 0, 0), ("hardswish", 0, 0), ("clamp", 0, 6), ("clamp", -0.5, 1),
                                               ("relu", 0, 0)])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[4], SHAPES[-1], FWD_SHAPES[-1]])
def test_fused_activation_is_the_separate_one(activation, lo, hi, shape):
    N, C, F, H, W = shape
    rng = np.random.default_rng(3)
    x, w, b = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(C)), _rand((F,), rng)
    pre = _core.conv2d_forward(x, w, b)
    out, kept = _core.conv2d_forward_act(x, w, b, activation=activation, lo=lo, hi=hi, return_pre=True)
    np.testing.assert_array_equal(kept, pre)
    sep = {"silu": lambda v: _core.silu_forward(v), "hardswish": lambda v: _core.hardswish_forward(v),
           "relu": lambda v: _core.relu_forward(v),
           "clamp": lambda v: _core.clamp_forward(v, lo, hi)}[activation](pre)
    np.testing.assert_array_equal(out, sep)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[4], SHAPES[-2], K_HALVES, FWD_SHAPES[-1]])
def test_thread_count_does_not_change_bits(shape):
    import gradvis

    N, C, F, H, W = shape
    rng = np.random.default_rng(11)
    x, w = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng)
    dy = _rand((N, F, H, W), rng)
    n0 = gradvis.get_num_threads()
    try:
        gradvis.set_num_threads(1)
        a, da = _core.conv2d_forward(x, w), _core.conv2d_backward_input(dy, w, (H, W))
        gradvis.set_num_threads(2)
        b, db = _core.conv2d_forward(x, w), _core.conv2d_backward_input(dy, w, (H, W))
    finally:
        gradvis.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da, db)


@pytest.mark.parametrize("where", ["input", "weights"])
def test_non_finite_values_give_the_float32_kernels_results(where, direct):
    N, C, F, H, W = SHAPES[0]
    rng = np.random.default_rng(5)
    x, w = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng, 0.1)
    if where == "input":
        x[0, 3, 4, 5], x[0, 7, 10, 11] = np.inf, np.nan
    else:
        w[5, 2, 0, 0], w[9, 1, 0, 0] = -np.inf, np.nan
    out = _core.conv2d_forward(x, w)
    with direct:
        vec = _core.conv2d_forward(x, w)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(vec))
    np.testing.assert_array_equal(out[np.isinf(vec)], vec[np.isinf(vec)])
    fin = np.isfinite(vec)
    assert fin.any() and not fin.all()
    np.testing.assert_array_equal(out[fin], vec[fin])   # the whole call ran on the float32 kernels


@pytest.mark.parametrize("where", ["gradient", "weights"])
@pytest.mark.parametrize("shape", [SHAPES[-2], K_HALVES])
def test_non_finite_values_in_the_transposed_input_gradient(where, shape, direct):
    N, C, F, H, W = shape   # filters over 1 MB on 63 or 99 positions
    rng = np.random.default_rng(6)
    dy, w = _rand((N, F, H, W), rng), _rand((F, C, 1, 1), rng, 0.1)
    if where == "gradient":
        dy[0, F - 1, 6, 8] = np.nan   # the last chunk of K (of its second half)
    else:
        w[3, C - 1, 0, 0] = np.inf    # the last thread's last column block (of the first half)
    dx = _core.conv2d_backward_input(dy, w, (H, W))
    with direct:
        vec = _core.conv2d_backward_input(dy, w, (H, W))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(vec))
    fin = np.isfinite(vec)
    assert fin.any() and not fin.all()
    np.testing.assert_array_equal(dx[fin], vec[fin])


def test_amx_off_below_its_level():
    code = "from gradvis import _core; print(_core.amx_enabled(), _core.simd_level())"
    for level, expect in (("avx512", "False avx512"), ("amx", "True avx512")):
        res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GRADVIS_SIMD=level),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == expect, (level, res.stdout)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[-2], SHAPES[-1], K_HALVES])
@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_input_gradient_with_activation_backward(shape, activation):
    N, C, F, H, W = shape
    rng = np.random.default_rng(13)
    dy, w, x = _rand((N, F, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(F)), _rand((N, C, H, W), rng)
    fused = _core.conv2d_backward_input_act(dy, w, x, activation=activation)
    dx = _core.conv2d_backward_input(dy, w, (H, W))
    sep = _core.relu_backward(dx, x) if activation == "relu" else _core.silu_backward(dx, x)
    np.testing.assert_array_equal(fused, sep)


NONFINITE_BATCH_SCRIPT = r"""
import numpy as np, gradvis
from gradvis import _core
gradvis.set_num_threads(2)
rng = np.random.default_rng(9)
N, C, F, H, W = {shape}
x = rng.standard_normal((N, C, H, W)).astype(np.float32)
w = (rng.standard_normal((F, C, 1, 1)) * 0.05).astype(np.float32)
w[F - 1, 0, 0, 0] = np.nan           # found by the last thread's last filter block
out = _core.conv2d_forward(x, w)
_core.set_conv_algorithm("direct")
ref = _core.conv2d_forward(x, w)
assert np.array_equal(np.isnan(out), np.isnan(ref))
fin = np.isfinite(ref)
assert np.array_equal(out[fin], ref[fin])
print("ok")
"""


def test_non_finite_filters_at_a_batch_on_two_threads():
    """Filters packed per block by each thread (over 1 MB), a batch of 3, 2 threads:
    a NaN that one thread finds must not leave the other waiting at a barrier."""
    code = NONFINITE_BATCH_SCRIPT.replace("{shape}", repr(SHAPES[-1]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout


# Strided 1x1 layers (residual downsampling): (N, C, F, H, W), stride. Odd sizes,
# a batch, stride 3.
STRIDED = [((1, 256, 128, 56, 56), 2), ((2, 130, 200, 35, 37), 2), ((1, 320, 320, 45, 46), 3)]


@pytest.mark.parametrize("shape,stride", STRIDED)
def test_strided_forward_and_input_gradient(shape, stride, direct):
    N, C, F, H, W = shape
    rng = np.random.default_rng(21)
    x, w, b = _rand((N, C, H, W), rng), _rand((F, C, 1, 1), rng, 1 / np.sqrt(C)), _rand((F,), rng)
    xs = x[:, :, ::stride, ::stride]
    OH, OW = xs.shape[2:]
    wm = w[:, :, 0, 0]
    out = _core.conv2d_forward(x, w, b, stride=stride)
    ref = np.einsum("fc,nchw->nfhw", wm.astype(np.float64), xs.astype(np.float64)) + b[None, :, None, None]
    bound = _bound(wm, xs) + np.abs(b)[None, :, None, None]
    assert (np.abs(out - ref) / bound).max() < 1e-6
    dy = _rand((N, F, OH, OW), rng)
    dx = _core.conv2d_backward_input(dy, w, (H, W), stride=stride)
    dref = np.zeros((N, C, H, W))
    dref[:, :, ::stride, ::stride] = np.einsum("fc,nfhw->nchw", wm.astype(np.float64), dy.astype(np.float64))
    dbound = np.zeros((N, C, H, W))
    dbound[:, :, ::stride, ::stride] = _bound(wm.T, dy)
    assert (np.abs(dx - dref) / np.maximum(dbound, 1e-30)).max() < 1e-6
    with direct:
        vec, dvec = _core.conv2d_forward(x, w, b, stride=stride), _core.conv2d_backward_input(dy, w, (H, W), stride=stride)
    assert not np.array_equal(out, vec) and not np.array_equal(dx, dvec), "the tile path was not taken"
    # the fused ReLU mask over the whole input gradient, as the separate backward
    xr = np.maximum(x, 0)
    fused = _core.conv2d_backward_input_act(dy, w, xr, stride=stride, activation="relu")
    np.testing.assert_array_equal(fused, _core.relu_backward(dx, xr))


# Patches that do not overlap (ConvNeXt's 2x2 stride-2 downsampling): the forward
# through the column matrix (also on a 7x7 output), the input gradient as the
# patches' products put in place; odd sizes leave a row and a column unread.
PATCHES = [((1, 96, 56, 56), 192), ((1, 384, 14, 14), 768), ((2, 128, 45, 47), 160)]


@pytest.mark.parametrize("xs,f", PATCHES)
def test_patch_forward_and_input_gradient(xs, f, direct):
    N, C, H, W = xs
    rng = np.random.default_rng(23)
    x, w, b = _rand(xs, rng), _rand((f, C, 2, 2), rng, 1 / np.sqrt(4 * C)), _rand((f,), rng)
    out = _core.conv2d_forward(x, w, b, stride=2)
    ref, bound = _conv_ref(x.astype(np.float64), w.astype(np.float64), 2, (0, 0, 0, 0), 1)
    assert (np.abs(out - ref - b[None, :, None, None]) / (bound + np.abs(b)[None, :, None, None])).max() < 1e-6
    dy = _rand(out.shape, rng)
    dx = _core.conv2d_backward_input(dy, w, (H, W), stride=2)
    OH, OW = out.shape[2:]
    dref, dbound = np.zeros(xs), np.zeros(xs)
    for kh in range(2):
        for kw in range(2):
            dref[:, :, kh:2 * OH:2, kw:2 * OW:2] = np.einsum("fc,nfhw->nchw", w[:, :, kh, kw].astype(np.float64), dy)
            dbound[:, :, kh:2 * OH:2, kw:2 * OW:2] = _bound(w[:, :, kh, kw].T, dy)
    assert (np.abs(dx - dref) / np.maximum(dbound, 1e-30)).max() < 1e-6
    with direct:
        vec = _core.conv2d_forward(x, w, b, stride=2)
    assert not np.array_equal(out, vec), "the tile path was not taken"
    xr = np.maximum(x, 0)
    fused = _core.conv2d_backward_input_act(dy, w, xr, stride=2, activation="relu")
    np.testing.assert_array_equal(fused, _core.relu_backward(dx, xr))


# Convolutions larger than 1x1 that Winograd does not take, as the 1x1 product
# with their column matrix: (N, C, H, W), (F, KH, KW), stride, padding
# (top, bottom, left, right), dilation. Strided 3x3 layers, a 5x5, a dilated and
# an asymmetric kernel with uneven padding, a batch, widths that do not fill a
# vector.
IM2COL = [
    ((1, 128, 56, 56), (128, 3, 3), 2, (1, 1, 1, 1), 1),
    ((2, 64, 37, 41), (96, 3, 3), 2, (1, 0, 1, 2), 1),
    ((1, 48, 30, 33), (64, 5, 5), 1, (2, 2, 2, 2), 1),
    ((1, 32, 28, 29), (80, 3, 3), 1, (2, 2, 2, 2), 2),
    ((1, 48, 60, 90), (128, 1, 7), 3, (0, 0, 3, 3), 1),
    # 63 positions (stride 2): taken only because K (2700) >= 4 M (160) with filters over
    # 1 MB, summed in two halves of K; a batch of 2, image by image
    ((2, 300, 13, 17), (160, 3, 3), 2, (1, 1, 1, 1), 1),
]


def _conv_ref(x, w, stride, pad, dil):
    """float64 cross-correlation and the sum of |w||x| over each window."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    xp = np.zeros((N, C, H + pad[0] + pad[1], W + pad[2] + pad[3]))
    xp[:, :, pad[0]:pad[0] + H, pad[2]:pad[2] + W] = x
    OH = (xp.shape[2] - dil * (KH - 1) - 1) // stride + 1
    OW = (xp.shape[3] - dil * (KW - 1) - 1) // stride + 1
    out, bound = np.zeros((N, F, OH, OW)), np.zeros((N, F, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            patch = xp[:, :, kh * dil:kh * dil + stride * (OH - 1) + 1:stride, kw * dil:kw * dil + stride * (OW - 1) + 1:stride]
            out += np.einsum("fc,nchw->nfhw", w[:, :, kh, kw], patch)
            bound += np.einsum("fc,nchw->nfhw", np.abs(w[:, :, kh, kw]), np.abs(patch))
    return out, bound


@pytest.mark.parametrize("xs,ws,stride,pad,dil", IM2COL)
def test_column_matrix_forward(xs, ws, stride, pad, dil, direct):
    rng = np.random.default_rng(31)
    x = _rand(xs, rng)
    w = _rand((ws[0], xs[1], ws[1], ws[2]), rng, 1 / np.sqrt(xs[1] * ws[1] * ws[2]))
    b = _rand((ws[0],), rng)
    kw = dict(stride=stride, padding=pad, dilation=dil)
    out = _core.conv2d_forward(x, w, b, **kw)
    ref, bound = _conv_ref(x.astype(np.float64), w.astype(np.float64), stride, pad, dil)
    ref += b[None, :, None, None]
    assert out.shape == ref.shape
    assert (np.abs(out - ref) / (bound + np.abs(b)[None, :, None, None])).max() < 1e-6
    with direct:
        vec = _core.conv2d_forward(x, w, b, **kw)
    assert not np.array_equal(out, vec), "the tile path was not taken"
    relu = _core.conv2d_forward(x, w, b, relu=True, **kw)
    np.testing.assert_array_equal(relu, np.maximum(out, 0))


# Strided layers' input gradient: each image's columns (W^T dout, the 1x1 product
# on the output's grid) on the tiles, then added into place. Strided 3x3 layers,
# uneven padding on a batch, a 1x7 kernel at stride 3, a dilated 3x3 at stride 2,
# a 7x7 map of 14x14 inputs (transposed product).
STRIDED_GRAD = [IM2COL[0], IM2COL[1], IM2COL[4], ((1, 64, 40, 41), (96, 3, 3), 2, (2, 2, 2, 2), 2),
                ((1, 512, 14, 14), (512, 3, 3), 2, (1, 1, 1, 1), 1)]


@pytest.mark.parametrize("xs,ws,stride,pad,dil", STRIDED_GRAD)
def test_strided_input_gradient(xs, ws, stride, pad, dil, direct):
    import reference_conv as refconv

    rng = np.random.default_rng(37)
    w = _rand((ws[0], xs[1], ws[1], ws[2]), rng, 1 / np.sqrt(ws[0] * ws[1] * ws[2]))
    kw = dict(stride=stride, padding=pad, dilation=dil)
    OH = (xs[2] + pad[0] + pad[1] - dil * (ws[1] - 1) - 1) // stride + 1
    OW = (xs[3] + pad[2] + pad[3] - dil * (ws[2] - 1) - 1) // stride + 1
    dy = _rand((xs[0], ws[0], OH, OW), rng)
    dx = _core.conv2d_backward_input(dy, w, xs[2:], **kw)
    x0 = np.zeros(xs)
    ref = refconv.conv2d_backward(dy, x0, w, **kw)[0]
    bound = refconv.conv2d_backward(np.abs(dy), x0, np.abs(w), **kw)[0]
    assert (np.abs(dx - ref) / np.maximum(bound, 1e-30)).max() < 1e-6
    with direct:
        vec = _core.conv2d_backward_input(dy, w, xs[2:], **kw)
    assert not np.array_equal(dx, vec), "the tile path was not taken"
    xr = np.maximum(_rand(xs, rng), 0)
    fused = _core.conv2d_backward_input_act(dy, w, xr, activation="relu", **kw)
    np.testing.assert_array_equal(fused, _core.relu_backward(dx, xr))


def test_column_matrix_forward_fused_activation():
    xs, ws, stride, pad, dil = IM2COL[1]   # a batch of 2
    rng = np.random.default_rng(33)
    x = _rand(xs, rng)
    w = _rand((ws[0], xs[1], ws[1], ws[2]), rng, 1 / np.sqrt(xs[1] * 9))
    b = _rand((ws[0],), rng)
    kw = dict(stride=stride, padding=pad, dilation=dil)
    pre = _core.conv2d_forward(x, w, b, **kw)
    out, kept = _core.conv2d_forward_act(x, w, b, activation="silu", return_pre=True, **kw)
    np.testing.assert_array_equal(kept, pre)
    np.testing.assert_array_equal(out, _core.silu_forward(pre))


def test_tiny_values_and_the_floating_point_mode(direct):
    """Values whose bfloat16 parts fall below float32's normal range (GELU outputs of
    large negative inputs, subnormal inputs) are packed with subnormals flushed,
    which the tile unit would read as 0 anyway: results stay within the float32
    bound, and the caller's floating-point mode (no flush to zero) is restored."""
    N, C, F, H, W = SHAPES[0]
    rng = np.random.default_rng(8)
    x = _core.gelu_forward((6 * rng.standard_normal((N, C, H, W))).astype(np.float32))
    x[0, 0, 0, :4] = [1e-39, -3e-40, 1e-45, 2e-38]
    assert ((x != 0) & (np.abs(x) < 1e-30)).mean() > 0.01
    w = _rand((F, C, 1, 1), rng, 1 / np.sqrt(C))
    out = _core.conv2d_forward(x, w)
    wm = w[:, :, 0, 0]
    ref = np.einsum("fc,nchw->nfhw", wm.astype(np.float64), x.astype(np.float64))
    assert (np.abs(out - ref) / _bound(wm, x)).max() < 1e-6
    with direct:
        assert not np.array_equal(out, _core.conv2d_forward(x, w)), "the tile path was not taken"
    tiny = np.array([1e-39], np.float32)
    assert (tiny * np.float32(1.0))[0] == tiny[0] and (tiny + np.float32(0.0))[0] != 0


def test_strided_input_gradient_thread_count():
    import gradvis

    xs, ws, stride, pad, dil = STRIDED_GRAD[1]
    rng = np.random.default_rng(39)
    w = _rand((ws[0], xs[1], ws[1], ws[2]), rng)
    kw = dict(stride=stride, padding=pad, dilation=dil)
    dy = _rand(_core.conv2d_forward(np.zeros(xs, np.float32), w, **kw).shape, rng)
    n0 = gradvis.get_num_threads()
    try:
        gradvis.set_num_threads(1)
        a = _core.conv2d_backward_input(dy, w, xs[2:], **kw)
        gradvis.set_num_threads(2)
        b = _core.conv2d_backward_input(dy, w, xs[2:], **kw)
    finally:
        gradvis.set_num_threads(n0)
    np.testing.assert_array_equal(a, b)
