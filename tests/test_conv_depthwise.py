"""Depthwise convolutions (groups == C, F = m*C) and grouped convolutions with few
channels per group, against the float64 reference, finite differences and PyTorch,
at every SIMD level; odd sizes (row ends inside a vector, 1x1 images, padding wider
than the kernel, strides larger than the kernel); equal bits on 1 and 2 threads."""
import sys

import numpy as np
import pytest

import reference_conv as ref
from conftest import simd_paths_test
from helpers import close
from gradvis import _core

# (N, C, H, W, m, K, stride, padding, dilation): groups = C, F = m*C, a KxK kernel
CASES = [
    (2, 3, 9, 13, 1, 3, 1, 1, 1),                 # MobileNet's block, odd width
    (1, 4, 17, 33, 1, 3, 2, 1, 1),                # stride 2, row ends inside a vector
    (2, 3, 12, 20, 1, 5, 1, 2, 1),                # EfficientNet's 5x5
    (1, 2, 11, 19, 1, 5, 2, 2, 1),
    (1, 3, 14, 14, 1, 7, 1, 3, 1),                # ConvNeXt's 7x7
    (1, 2, 9, 10, 1, 7, 2, 3, 1),
    (2, 3, 10, 11, 1, 3, 1, 2, 2),                # dilation 2
    (1, 3, 13, 18, 1, 3, 2, 3, 3),                # dilation 3, stride 2
    (2, 2, 8, 9, 2, 3, 1, 1, 1),                  # multiplier 2
    (1, 3, 7, 8, 3, 5, 2, 2, 1),                  # multiplier 3, stride 2
    (3, 2, 1, 1, 1, 3, 1, 1, 1),                  # 1x1 images
    (1, 2, 1, 1, 2, 5, 2, 2, 1),                  # 1x1 images, stride 2
    (1, 3, 6, 7, 1, 3, 1, 4, 1),                  # padding wider than the kernel
    (1, 2, 9, 9, 1, 3, 1, (0, 5, 3, 0), 1),       # uneven padding
    (2, 3, 11, 17, 1, 3, 4, 1, 1),                # stride larger than the kernel
    (1, 2, 10, 10, 1, 1, 3, 0, 1),                # 1x1 kernel, stride 3
    (1, 2, 9, 9, 1, 1, 2, 0, 1),                  # 1x1 kernel, stride 2: odd columns get no tap
    (2, 3, 15, 31, 1, 3, 2, (0, 1, 0, 1), 1),     # stride 2, even left padding, odd width
    (1, 2, 16, 40, 1, 3, (1, 2), 1, 1),           # strides differ per axis
    (1, 16, 5, 5, 1, 4, 1, (1, 2, 2, 1), 1),      # even kernel
    # 5x5 and 7x7 at stride 1 on wider maps: two-vector blocks, then a partial one
    (1, 2, 9, 37, 1, 5, 1, 2, 1),
    (2, 2, 6, 50, 2, 7, 1, 3, 1),                 # multiplier 2, 6 rows: a block of 4 + 2
    (1, 1, 11, 16, 1, 5, 1, (0, 4, 1, 3), 1),     # uneven padding, one vector wide
    (1, 2, 5, 20, 1, 7, 1, (3, 0, 6, 1), 1),      # padding wider than half the kernel
    (1, 2, 13, 28, 1, 7, 1, 3, 1),                # 13 rows: blocks of 4 then 1; 28 = 16 + 12 columns
    (1, 2, 12, 21, 1, 5, 1, 4, 2),                # dilation 2: the tap-offset kernel, not the unit one
    (1, 2, 9, 30, 1, 7, (1, 2), 3, 1),            # column stride 2
    # 3x3 on rows of 4 vectors or more (AVX2: the plane kernel with its weights
    # held in registers), last vector partial, rows in blocks of 4 then fewer
    (1, 3, 10, 45, 1, 3, 1, 1, 1),
    (2, 2, 13, 70, 1, 3, 2, 1, 1),                # stride 2: 35 columns, 7 rows
    (1, 2, 14, 36, 2, 3, 1, 1, 1),                # multiplier 2
    (1, 2, 9, 40, 1, 3, 1, (0, 2, 1, 0), 1),      # uneven padding: 39 columns, 11 rows
    (1, 2, 5, 67, 1, 3, 2, (0, 1, 1, 0), 1),      # stride 2: 2 output rows of 33 columns
    # small maps at stride 1: the flat forward path (rows shorter than a vector)
    (2, 5, 7, 7, 1, 3, 1, 1, 1),                  # MobileNet's last 7x7 blocks
    (1, 4, 7, 7, 2, 5, 1, 2, 1),                  # 5x5, multiplier 2
    (1, 3, 7, 7, 1, 7, 1, 3, 1),                  # ConvNeXt's 7x7 at 7x7
    (1, 3, 6, 5, 1, 3, 1, 2, 2),                  # dilation 2
    (1, 2, 4, 3, 1, 3, 1, (4, 1, 0, 5), 1),       # padding wider than the kernel, uneven
    (1, 3, 3, 3, 1, 7, 1, 3, 1),                  # kernel wider than the map
    # small maps, 8 or more channels: the channels-in-lanes forward path
    (2, 20, 7, 7, 1, 3, 1, 1, 1),                 # a partial block of channels
    (2, 24, 7, 7, 1, 7, 1, 3, 1),                 # 7x7 on 7x7: blocks of 4 + 3 rows sharing inputs
    (1, 17, 14, 14, 1, 5, 1, 2, 1),               # 5x5 on 14x14, 1 channel in the last block
    (3, 16, 6, 9, 1, 3, 1, 0, 1),                 # no padding: smaller output than input
    (1, 8, 5, 5, 1, 3, 1, (2, 0, 1, 1), 1),       # uneven padding
    (1, 9, 9, 11, 1, 5, 2, 2, 1),                 # stride 2, odd sizes
    (3, 20, 9, 11, 1, 5, 2, 2, 1),                # stride 2, a full block then 4 channels, 3 images each
    (1, 16, 6, 5, 1, 3, 1, 2, 2),                 # dilation 2
    (1, 12, 3, 4, 1, 3, 2, (4, 0, 1, 5), 1),      # padding wider than the kernel, uneven
    (2, 16, 1, 1, 1, 3, 1, 1, 1),                 # 1x1 images
    (1, 8, 9, 9, 1, 3, 4, 1, 1),                  # stride larger than the kernel
    (1, 32, 16, 16, 1, 3, 1, 1, 1),               # whole 16 x 16 blocks of the planes' transposes
    # at AVX2 float the lanes forward path also on up to 784 outputs, strided or
    # 5x5 and larger (MobileNet's stride-2 layers from 56x56, EfficientNet's 5x5 at
    # 28x28): a partial block of channels, odd sizes, two images
    (1, 20, 56, 56, 1, 3, 2, 1, 1),
    (2, 12, 27, 25, 1, 5, 1, 2, 1),
    (1, 9, 45, 53, 1, 5, 2, 2, 1),
    # 7x7 on at most 7 rows: rows and columns of taps that read only the padding
    # (skipped), padding wider than half the kernel
    (2, 24, 3, 3, 1, 7, 1, (5, 3, 6, 2), 1),
    (1, 16, 5, 4, 1, 7, 1, (1, 4, 6, 0), 1),
    (1, 20, 6, 2, 1, 7, 1, (2, 5, 6, 5), 1),
    (1, 16, 4, 6, 1, 5, 1, (4, 1, 0, 4), 1),
    # two or more blocks of channels: the channels-in-lanes weight gradient too
    (2, 40, 7, 7, 1, 7, 1, 3, 1),                 # 7x7: three kernel rows at a time, then one; 8 channels left
    (2, 33, 9, 11, 1, 5, 2, 2, 1),                # stride 2, 1 channel in the last block
    (1, 48, 14, 14, 1, 5, 1, 2, 1),               # 5x5 at 14x14
    (1, 32, 10, 10, 1, 3, 1, 2, 2),               # dilation 2
    (2, 36, 6, 5, 1, 4, 1, (1, 2, 2, 1), 1),      # even kernel: the generic sums
    (1, 32, 4, 3, 1, 3, 2, (4, 0, 1, 5), 1),      # padding wider than the kernel, uneven
    # left padding beyond the taps' reach: no column of x is read (the lanes kernels
    # once copied a negative count of columns there)
    (2, 32, 1, 1, 1, 3, 4, (2, 0, 4, 0), 1),
    (2, 32, 3, 1, 1, 3, 4, (0, 0, 4, 0), 1),
    (1, 8, 1, 1, 1, 3, 4, (2, 0, 4, 0), 1),
]
IDS = [f"N{c[0]}C{c[1]}_{c[2]}x{c[3]}_m{c[4]}_k{c[5]}_s{c[6]}_p{c[7]}_d{c[8]}".replace(" ", "") for c in CASES]
DTYPES = [np.float32, np.float64]


def make(case, dtype, seed):
    N, C, H, W, m, K, stride, pad, dil = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((m * C, 1, K, K)).astype(dtype)
    b = rng.standard_normal(m * C).astype(dtype)
    kw = dict(stride=stride, padding=pad, dilation=dil, groups=C)
    out_shape = ref.conv2d_forward(x[:1, :, :, :], w, None, **kw).shape
    dout = rng.standard_normal((N,) + out_shape[1:]).astype(dtype)
    return x, w, b, dout, kw


def check_case(case, dtype, seed=1):
    """Every pass of one case against the float64 reference (raises AssertionError)."""
    x, w, b, dout, kw = make(case, dtype, seed)
    K = case[5]
    out = _core.conv2d_forward(x, w, b, **kw)
    r = ref.conv2d_forward(x, w, b, **kw)
    assert out.dtype == dtype
    close(out, r, dtype, K * K)
    close(_core.conv2d_forward(x, w, b, relu=True, **kw), np.maximum(r, 0), dtype, K * K)
    dx = _core.conv2d_backward_input(dout, w, x.shape[2:], **kw)
    dw, db = _core.conv2d_backward_weight(dout, x, (K, K), **kw)
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w, **kw)
    close(dx, rdx, dtype, case[4] * K * K)
    close(dw, rdw, dtype, dout[:, 0].size)
    close(db, rdb, dtype, dout[:, 0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_depthwise_matches_reference(case, dtype):
    check_case(case, dtype)


def check_finite_differences(x, w, b, dout, kw, rng):
    """The float64 gradients of <conv(x, w, b), dout> against central differences
    at four random entries of each of x, w and b."""
    K = w.shape[2]
    dx = _core.conv2d_backward_input(dout, w, x.shape[2:], **kw)
    dw, db = _core.conv2d_backward_weight(dout, x, (K, K), **kw)
    h = 1e-5

    def loss(xx, ww, bb):
        return float(np.vdot(_core.conv2d_forward(xx, ww, bb, **kw), dout))

    for which, (arr, grad) in enumerate(((x, dx), (w, dw), (b, db))):
        for _ in range(4):
            idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
            plus, minus = [x.copy(), w.copy(), b.copy()], [x.copy(), w.copy(), b.copy()]
            plus[which][idx] += h
            minus[which][idx] -= h
            num = (loss(*plus) - loss(*minus)) / (2 * h)
            assert abs(num - grad[idx]) < 1e-6 * max(1.0, abs(num)), (which, idx, num, grad[idx])


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_depthwise_finite_differences(case):
    x, w, b, dout, kw = make(case, np.float64, seed=3)
    check_finite_differences(x, w, b, dout, kw, np.random.default_rng(4))


SIMD_CHECKS = r"""
from test_conv_depthwise import CASES, GROUPED, check_case, check_grouped
for case in CASES:
    for dt in (np.float32, np.float64):
        check_case(case, dt)
for case in GROUPED:
    for dt in (np.float32, np.float64):
        check_grouped(case, dt)
from test_conv_depthwise import random_grouped_cases
for case in random_grouped_cases(seed=5, count=40):
    check_grouped(case, np.float32)
from test_conv_depthwise import random_lanes_dx_cases
for case in random_lanes_dx_cases(seed=9, count=30):
    check_grouped(case, np.float32)
"""


# the widest level the CPU has runs in this process (the tests above)
test_depthwise_simd_paths = simd_paths_test(SIMD_CHECKS)


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7], CASES[9]], ids=[IDS[0], IDS[3], IDS[7], IDS[9]])
def test_depthwise_matches_torch(case, torch):
    x, w, b, dout, kw = make(case, np.float32, seed=5)
    K, pad = case[5], kw["padding"]
    p = (pad,) * 4 if np.isscalar(pad) else pad
    F = torch.nn.functional
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ot = F.conv2d(F.pad(xt, (p[2], p[3], p[0], p[1])), wt, bt, stride=kw["stride"], dilation=kw["dilation"],
                  groups=kw["groups"])
    ot.backward(torch.from_numpy(dout))
    out = _core.conv2d_forward(x, w, b, **kw)
    dx = _core.conv2d_backward_input(dout, w, x.shape[2:], **kw)
    dw, db = _core.conv2d_backward_weight(dout, x, (K, K), **kw)
    close(out, ot.detach().numpy().astype(np.float64), np.float32, K * K)
    close(dx, xt.grad.numpy().astype(np.float64), np.float32, case[4] * K * K)
    close(dw, wt.grad.numpy().astype(np.float64), np.float32, dout[:, 0].size)
    close(db, bt.grad.numpy().astype(np.float64), np.float32, dout[:, 0].size)


def check_same_bits_on_1_and_2_threads(x, w, dout, kw):
    """The forward pass and both gradients give equal bits on 1 and 2 threads."""
    import gradvis
    K, hw = w.shape[2], x.shape[2:]
    before = gradvis.get_num_threads()
    try:
        res = []
        for nt in (1, 2):
            gradvis.set_num_threads(nt)
            res.append((_core.conv2d_forward(x, w, None, **kw), _core.conv2d_backward_input(dout, w, hw, **kw),
                        *_core.conv2d_backward_weight(dout, x, (K, K), **kw)))
    finally:
        gradvis.set_num_threads(before)
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


def test_depthwise_bits_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 24, 30, 30)).astype(np.float32)
    w = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((4, 24, 15, 15)).astype(np.float32)
    check_same_bits_on_1_and_2_threads(x, w, dout, dict(stride=2, padding=2, groups=24))


@pytest.mark.parametrize("N,C,g,H,st", [(3, 48, 6, 20, 1), (1, 48, 6, 12, 1), (2, 64, 4, 7, 1), (2, 48, 6, 14, 2)])
def test_grouped_bits_do_not_depend_on_the_thread_count(N, C, g, H, st):
    # groups of 8 and 16 filters in the lanes; the weight gradient of fewer than 8
    # blocks in two parts (the images' halves, or one image's rows' halves); a
    # strided input gradient with the input channels in the lanes
    rng = np.random.default_rng(8)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = rng.standard_normal((C, C // g, 3, 3)).astype(np.float32)
    OH = (H - 1) // st + 1
    dout = rng.standard_normal((N, C, OH, OH)).astype(np.float32)
    check_same_bits_on_1_and_2_threads(x, w, dout, dict(stride=st, padding=1, groups=g))


# ---------------------------------------------------------------------------- grouped, few channels per group
# (N, C, F, groups, H, W, K, stride, padding)
GROUPED = [
    (2, 16, 16, 8, 9, 11, 3, 1, 1),               # 2 channels per group
    (1, 24, 24, 6, 13, 17, 3, 1, 1),              # 4 (ResNeXt)
    (2, 32, 32, 4, 10, 10, 3, 2, 1),              # 8 (RegNetY), stride 2
    (1, 48, 48, 3, 7, 9, 3, 1, 1),                # 16
    (1, 12, 24, 4, 5, 6, 3, 1, 1),                # 3 in, 6 out per group
    (2, 8, 8, 2, 1, 1, 3, 1, 1),                  # 1x1 images
    # weight gradients of four filters at a time: a block and one left over, taps
    # of 5- and 7-wide rows in runs of 3, the flat plan of 7x7 maps, a depthwise
    # multiplier of 4
    (1, 10, 10, 2, 9, 8, 5, 1, 2),
    (1, 8, 8, 2, 12, 12, 7, 1, 3),
    (2, 16, 16, 2, 7, 7, 3, 1, 1),
    (2, 6, 24, 6, 9, 9, 3, 1, 1),
    # filters in the lanes (dw_fwd_glanes): groups of 16 filters (one group a
    # block, inputs broadcast), of 8 (AVX-512: two groups a block, pairs), of 4
    # (AVX2 pairs); an odd number of groups (the last block half empty), strides
    # 2 and 3, a 1x1 kernel at stride 2, padding wider than half the kernel
    (2, 40, 40, 5, 7, 7, 3, 1, 1),
    (1, 64, 64, 4, 6, 5, 3, 1, 1),
    (2, 24, 48, 3, 5, 7, 3, 2, 2),
    (1, 32, 32, 8, 6, 6, 3, 1, 1),
    (1, 16, 32, 2, 7, 7, 5, 1, 3),
    (1, 32, 32, 4, 7, 7, 1, 2, 0),
    (3, 36, 24, 3, 5, 4, 3, 3, 1),
    # strided input gradients with the input channels in the lanes: groups of 4
    # channels (AVX2 pairs), of 16 (one group a block)
    (2, 16, 32, 4, 9, 8, 3, 2, 1),
    (1, 32, 32, 2, 9, 9, 3, 2, 1),
    # 17-32 channels and filters a group, whole vectors of filters (the lanes
    # kernels; ResNeXt-50's last stage has 32): stride 1, 2 and a 1x1 kernel
    (1, 64, 64, 2, 7, 7, 3, 1, 1),
    (2, 48, 64, 2, 6, 5, 3, 2, 1),
    (1, 40, 32, 2, 5, 5, 1, 1, 0),
    # strided input gradients gathered phase by phase (dw_dx_glanes): 32 channels a
    # group at stride 2, groups of 8 (AVX-512 pairs) on a map past 56x56, 24 filters
    # of 16 channels, stride larger than the kernel (phases no tap reaches), a 2x2
    # kernel at stride 3 with padding wider than the kernel, a 5x5 kernel
    (1, 64, 64, 2, 15, 13, 3, 2, 1),
    (1, 16, 16, 2, 59, 58, 3, 2, 1),
    (2, 32, 48, 2, 9, 10, 3, 2, 1),
    (1, 32, 64, 2, 9, 7, 2, 4, 0),
    (2, 16, 16, 2, 7, 8, 2, 3, 3),
    (1, 32, 32, 2, 11, 9, 5, 2, 2),
]


def check_grouped(case, dtype, seed=7):
    N, C, F, g, H, W, K, st, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C // g, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    kw = dict(stride=st, padding=pad, groups=g)
    out = _core.conv2d_forward(x, w, b, **kw)
    r = ref.conv2d_forward(x, w, b, **kw)
    close(out, r, dtype, C // g * K * K)
    dout = rng.standard_normal(r.shape).astype(dtype)
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w, **kw)
    close(_core.conv2d_backward_input(dout, w, (H, W), **kw), rdx, dtype, F // g * K * K)
    dw, db = _core.conv2d_backward_weight(dout, x, (K, K), **kw)
    close(dw, rdw, dtype, dout[:, 0].size)
    close(db, rdb, dtype, dout[:, 0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GROUPED)
def test_grouped_matches_reference(case, dtype):
    check_grouped(case, dtype)


# ---------------------------------------------------------------------------- bad arguments
def test_groups_that_do_not_divide_the_channels():
    x = np.zeros((1, 6, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"C=6 is not divisible by groups=4"):
        _core.conv2d_forward(x, np.zeros((4, 1, 3, 3), np.float32), None, padding=1, groups=4)
    with pytest.raises(ValueError, match=r"groups"):
        _core.conv2d_backward_weight(np.zeros((1, 4, 8, 8), np.float32), x, (3, 3), padding=1, groups=4)


def test_kernel_larger_than_the_padded_input():
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"kernel \(7, 7\).*larger than the padded input \(6, 6\)"):
        _core.conv2d_forward(x, np.zeros((3, 1, 7, 7), np.float32), None, padding=1, groups=3)
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) with dilation \(3, 3\).*larger than the padded input"):
        _core.conv2d_forward(x, np.zeros((3, 1, 3, 3), np.float32), None, dilation=3, groups=3)


# ---------------------------------------------------------------------------- a wide sweep
@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_sweep(dtype):
    rng = np.random.default_rng(8)
    for K in (1, 2, 3, 4, 5, 6, 7, 9):
        for stride in (1, 2, 3):
            for dil in (1, 2):
                for m in (1, 2):
                    for H, W in ((1, 1), (5, 31), (15, 16), (20, 37)):
                        for pad in (0, K // 2 * dil, K + 1):
                            eff = dil * (K - 1) + 1
                            if H + 2 * pad < eff or W + 2 * pad < eff:
                                continue
                            check_case((2, 3, H, W, m, K, stride, pad, dil), dtype, seed=int(rng.integers(1 << 30)))


def random_cases(seed, count):
    """count shapes drawn from a seeded generator, each valid: channel counts on
    both sides of the lane blocks (8, 16, 32), uneven padding up to 5 on each
    side (wider than the taps reach, too), strides up to 4, dilation 1 or 2."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        C = int(rng.choice([1, 2, 3, 8, 9, 16, 17, 32, 33, 40]))
        m = int(rng.choice([1, 1, 1, 2]))
        K, stride, dil = int(rng.integers(1, 8)), int(rng.integers(1, 5)), int(rng.integers(1, 3))
        H, W, N = int(rng.integers(1, 20)), int(rng.integers(1, 40)), int(rng.integers(1, 4))
        pad = tuple(int(v) for v in rng.integers(0, 6, size=4))   # top, bottom, left, right
        eff = dil * (K - 1) + 1
        if H + pad[0] + pad[1] < eff or W + pad[2] + pad[3] < eff:
            continue
        cases.append((N, C, H, W, m, K, stride, pad, dil))
    return cases


@pytest.mark.parametrize("case", [GROUPED[10], GROUPED[13], GROUPED[15], GROUPED[17], (1, 16, 16, 2, 9, 8, 3, 2, 1)])
def test_grouped_finite_differences(case):
    # float64: 8 lanes, so groups of 8 and 16 filters broadcast, groups of 4 pair;
    # the strided input gradient in the lanes: 4 channels a group (pairs), 8
    # (broadcast)
    N, C, F, g, H, W, K, st, pad = case
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C // g, K, K))
    b = rng.standard_normal(F)
    kw = dict(stride=st, padding=pad, groups=g)
    dout = rng.standard_normal(_core.conv2d_forward(x, w, b, **kw).shape)
    check_finite_differences(x, w, b, dout, kw, rng)


def grouped_cases(seed, count, draw):
    """count grouped shapes (N, C, F, groups, H, W, K, stride, pad) from a seeded
    generator: draw(rng) -> (cg, m, g, K, stride, pad, H, W, N), kept where the
    layer is valid."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        cg, m, g, K, stride, pad, H, W, N = draw(rng)
        if g == 1 or H + 2 * pad < K or W + 2 * pad < K:
            continue
        cases.append((N, cg * g, m * g, g, H, W, K, stride, pad))
    return cases


def random_grouped_cases(seed, count):
    """2-16 channels and 4, 8 or 16 filters per group (the lanes kernels' blocks:
    one group, two, or four), maps up to 16x16, strides 1-3, padding up to 3."""
    def draw(rng):
        cg, m, g = int(rng.integers(2, 17)), int(rng.choice([4, 8, 16])), int(rng.integers(1, 6))
        K, stride, pad = int(rng.choice([1, 3, 5])), int(rng.integers(1, 4)), int(rng.integers(0, 4))
        H, W, N = int(rng.integers(1, 17)), int(rng.integers(1, 17)), int(rng.integers(1, 3))
        return cg, m, g, K, stride, pad, H, W, N
    return grouped_cases(seed, count, draw)


def test_grouped_random_shapes():
    for case in random_grouped_cases(seed=5, count=40):
        check_grouped(case, np.float32)


def random_lanes_dx_cases(seed, count):
    """Input channels that fill the lanes kernels' blocks at some SIMD level (4, 8,
    16 or 32 a group), 4-32 filters a group, kernels 1-5, strides 1-4 (stride 1
    with padding past the kernel's reach takes the gathering kernel too), padding
    up to 4, maps up to 20x20."""
    def draw(rng):
        cg, m, g = int(rng.choice([4, 8, 16, 32])), int(rng.integers(4, 33)), int(rng.integers(2, 4))
        K, stride = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        H, W, N = int(rng.integers(1, 21)), int(rng.integers(1, 21)), int(rng.integers(1, 3))
        return cg, m, g, K, stride, int(rng.integers(0, 5)), H, W, N
    return grouped_cases(seed, count, draw)


def test_grouped_lanes_input_gradient_random_shapes():
    for case in random_lanes_dx_cases(seed=9, count=30):
        check_grouped(case, np.float32)
        check_grouped(case, np.float64)


def test_depthwise_random_shapes():
    for case in random_cases(seed=21, count=150):
        check_case(case, np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_random_shapes_many(dtype):
    for case in random_cases(seed=22, count=3000):
        check_case(case, dtype)
