"""conv2d forward/backward against a float64 numpy reference, finite differences,
the adjoint identity and PyTorch; input validation; threads; every SIMD path."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from gradvis import _core
import reference_conv as ref
from conftest import run_at_simd_level, simd_paths_test
from helpers import close

DTYPES = [np.float32, np.float64]
KINDS = ["plain", "stride2", "asym_pad", "dilation2", "groups2", "depthwise", "pointwise", "pointwise_stride2",
         "nonsquare", "kernel5"]


def draw_configs(n=20, seed=20240601):
    """n configurations drawn with a seeded generator, cycling over KINDS so each
    feature is covered; sizes are odd/small/random, batch 1 and > 1."""
    rng = np.random.default_rng(seed)
    cfgs = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        N = 1 if i % 3 == 0 else int(rng.integers(2, 4))
        C = int(rng.integers(1, 6))
        F = int(rng.integers(1, 7))
        H, W = int(rng.integers(5, 13)), int(rng.integers(5, 13))
        k = int(rng.integers(1, 4))
        KH = KW = k
        stride, dilation, groups = 1, 1, 1
        padding = int(rng.integers(0, k))
        if kind == "stride2":
            stride = 2
        elif kind == "asym_pad":
            KH, KW = 3, 2
            padding = tuple(int(v) for v in rng.integers(0, 3, 4))
        elif kind == "dilation2":
            dilation, KH, KW = 2, 3, 3
            padding = 2
        elif kind == "groups2":
            groups = 2
            C, F = 2 * C, 2 * F
        elif kind == "depthwise":
            C = F = groups = int(rng.integers(2, 7))
            KH = KW = 3
            stride = int(rng.integers(1, 3))
            padding = 1
        elif kind == "pointwise":
            KH = KW = 1
            padding = 0
        elif kind == "pointwise_stride2":
            KH = KW = 1
            stride, padding = 2, 0
        elif kind == "nonsquare":
            KH, KW = 2, 4
            stride = (1, 2)
            dilation = (2, 1)
            padding = (1, 2)
            H, W = H + 3, W + 5
        elif kind == "kernel5":
            KH = KW = 5
            padding = 2
        cfgs.append(dict(kind=kind, N=N, C=C, H=H, W=W, F=F, KH=KH, KW=KW, stride=stride, padding=padding,
                         dilation=dilation, groups=groups))
    return cfgs


CONFIGS = draw_configs()
IDS = [f"{i}-{c['kind']}" for i, c in enumerate(CONFIGS)]


def conv_kwargs(cfg):
    return dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])


def make_inputs(cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["F"], cfg["C"] // cfg["groups"], cfg["KH"], cfg["KW"])).astype(dtype)
    b = rng.standard_normal(cfg["F"]).astype(dtype)
    out_shape = ref.conv2d_forward(x[:1, :, :, :], w, None, **conv_kwargs(cfg)).shape
    dout = rng.standard_normal((cfg["N"],) + out_shape[1:]).astype(dtype)
    return x, w, b, dout




def run_all(x, w, b, dout, cfg):
    kw = conv_kwargs(cfg)
    out = _core.conv2d_forward(x, w, b, **kw)
    dx = _core.conv2d_backward_input(dout, w, (cfg["H"], cfg["W"]), **kw)
    dw, db = _core.conv2d_backward_weight(dout, x, (cfg["KH"], cfg["KW"]), **kw)
    return out, dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_reference(cfg, dtype):
    x, w, b, dout = make_inputs(cfg, dtype, seed=1)
    out, dx, dw, db = run_all(x, w, b, dout, cfg)
    for a in (out, dx, dw, db):
        assert a.dtype == dtype
    kw = conv_kwargs(cfg)
    taps = w.shape[1] * cfg["KH"] * cfg["KW"]
    close(out, ref.conv2d_forward(x, w, b, **kw), dtype, taps)
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w, **kw)
    close(dx, rdx, dtype, cfg["F"] * cfg["KH"] * cfg["KW"])
    close(dw, rdw, dtype, dout[:, 0].size)
    close(db, rdb, dtype, dout[:, 0].size)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_adjoint_identity(cfg):
    # <conv(x, w), dout> = <x, dx(dout)> = <w, dw(dout, x)>  (conv is bilinear)
    x, w, _, dout = make_inputs(cfg, np.float64, seed=2)
    out, dx, dw, db = run_all(x, w, None, dout, cfg)
    lhs = np.vdot(out, dout)
    scale = np.abs(out).sum() * np.abs(dout).max() + 1.0
    assert abs(lhs - np.vdot(x, dx)) < 1e-12 * scale
    assert abs(lhs - np.vdot(w, dw)) < 1e-12 * scale
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS[:10], ids=IDS[:10])
def test_finite_differences(cfg):
    # L = sum(conv(x, w, b) * dout); centred differences at random entries, float64.
    x, w, b, dout = make_inputs(cfg, np.float64, seed=3)
    kw = conv_kwargs(cfg)
    _, dx, dw, db = run_all(x, w, b, dout, cfg)
    rng = np.random.default_rng(4)
    h = 1e-5

    def loss(xx, ww, bb):
        return float(np.vdot(_core.conv2d_forward(xx, ww, bb, **kw), dout))

    for arr, grad, which in ((x, dx, 0), (w, dw, 1), (b, db, 2)):
        for _ in range(5):
            idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
            args_p = [x.copy(), w.copy(), b.copy()]
            args_m = [x.copy(), w.copy(), b.copy()]
            args_p[which][idx] += h
            args_m[which][idx] -= h
            num = (loss(*args_p) - loss(*args_m)) / (2 * h)
            assert abs(num - grad[idx]) < 1e-6 * max(1.0, abs(num)), (which, idx, num, grad[idx])


def torch_conv(torch, x, w, b, cfg):
    F = torch.nn.functional
    p = cfg["padding"]
    if np.isscalar(p):
        p = (p, p, p, p)
    elif len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    xp = F.pad(xt, (p[2], p[3], p[0], p[1]))  # F.pad: (left, right, top, bottom)
    out = F.conv2d(xp, wt, bt, stride=cfg["stride"], dilation=cfg["dilation"], groups=cfg["groups"])
    return xt, wt, bt, out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_torch(cfg, dtype, torch):
    x, w, b, dout = make_inputs(cfg, dtype, seed=5)
    out, dx, dw, db = run_all(x, w, b, dout, cfg)
    xt, wt, bt, ot = torch_conv(torch, x, w, b, cfg)
    ot.backward(torch.from_numpy(dout))
    taps = w.shape[1] * cfg["KH"] * cfg["KW"]
    close(out, ot.detach().numpy().astype(np.float64), dtype, taps)
    close(dx, xt.grad.numpy().astype(np.float64), dtype, cfg["F"] * cfg["KH"] * cfg["KW"])
    close(dw, wt.grad.numpy().astype(np.float64), dtype, dout[:, 0].size)
    close(db, bt.grad.numpy().astype(np.float64), dtype, dout[:, 0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [((2, 16, 33, 31), (24, 16, 3, 3), 1, 1), ((1, 8, 70, 70), (16, 8, 3, 3), 1, 1),
                                   ((3, 32, 20, 20), (64, 32, 1, 1), 0, 1), ((5, 12, 17, 17), (12, 1, 3, 3), 1, 12),
                                   ((2, 32, 9, 9), (12, 16, 3, 3), 1, 2)])
def test_larger_shapes(shape, dtype):
    # Sizes that cross the gemm's tile/panel edges, the im2col chunking and the
    # batch-parallel split (batch 5 on 2 threads runs serial-over-images).
    xs, ws, pad, groups = shape
    rng = np.random.default_rng(6)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out = _core.conv2d_forward(x, w, b, padding=pad, groups=groups)
    taps = ws[1] * ws[2] * ws[3]
    close(out, ref.conv2d_forward(x, w, b, padding=pad, groups=groups), dtype, taps)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = _core.conv2d_backward_input(dout, w, xs[2:], padding=pad, groups=groups)
    dw, db = _core.conv2d_backward_weight(dout, x, ws[2:], padding=pad, groups=groups)
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w, padding=pad, groups=groups)
    close(dx, rdx, dtype, ws[0] * ws[2] * ws[3])
    close(dw, rdw, dtype, out[:, 0].size)
    close(db, rdb, dtype, out[:, 0].size)


def random_layer(xs, ws, dtype, rng):
    """x (shape xs), w (shape ws) and a bias, standard normal, of dtype."""
    return (rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
            rng.standard_normal(ws[0]).astype(dtype))


def check_all_passes(xs, ws, dtype, threads, seed, **geometry):
    """Forward, input gradient and weight/bias gradient at a thread count, each
    against the float64 reference."""
    import gradvis

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        out = _core.conv2d_forward(x, w, b, **geometry)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx = _core.conv2d_backward_input(dout, w, xs[2:], **geometry)
        dw, db = _core.conv2d_backward_weight(dout, x, ws[2:], **geometry)
    finally:
        gradvis.set_num_threads(old)
    close(out, ref.conv2d_forward(x, w, b, **geometry), dtype, ws[1] * ws[2] * ws[3])
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w, **geometry)
    close(dx, rdx, dtype, ws[0] * ws[2] * ws[3])
    close(dw, rdw, dtype, out[:, 0].size)
    close(db, rdb, dtype, out[:, 0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [((1, 20, 4, 4), (28, 20, 3, 3), 1, 1), ((3, 17, 7, 7), (40, 17, 3, 3), 1, 1),
                                   ((2, 3, 16, 16), (19, 3, 5, 5), 2, 2), ((1, 16, 6, 5), (34, 16, 3, 3), (0, 2, 1, 0), 1)])
def test_small_maps_and_thread_splits(shape, dtype, threads):
    # Tiny position counts (the forward splits the filters across threads, backward
    # weight splits dW tiles), maps whose size is not a multiple of the micro-tile
    # (the output panel), several images per chunk, and stride 2 with a 5x5 filter.
    xs, ws, pad, stride = shape
    check_all_passes(xs, ws, dtype, threads, seed=11, padding=pad, stride=stride)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [((1, 40, 5, 5), (37, 40, 3, 3), 1, 1), ((1, 40, 4, 6), (38, 20, 3, 3), 1, 2),
                                   ((2, 33, 3, 3), (13, 33, 3, 3), 1, 1), ((1, 40, 3, 5), (37, 40, 3, 3), 1, 1),
                                   ((1, 40, 4, 4), (38, 20, 3, 3), 1, 2)])
def test_weights_read_in_place(shape, dtype, threads):
    # Few output columns: forward and the flipped backward-input read the weights in
    # place (no packing), with partial row slivers (37, 19, 13 filters), several K
    # blocks (K = 360 forward, 333 flipped), groups, and two images in one tile; at
    # most 16 columns (the last two) take the one-vector-wide AVX-512 tiles.
    xs, ws, pad, groups = shape
    check_all_passes(xs, ws, dtype, threads, seed=12, padding=pad, groups=groups)


# At most 16 output positions with rows of at most 8: the float32 AVX-512 path
# packs the column matrix by gathers, or by permutes of one channel's plane when
# the positions lie in one image of at most 16 pixels. (x shape, w shape, geometry)
SHORT_ROWS = [
    ((1, 24, 4, 4), (30, 24, 3, 3), dict(padding=1)),                 # one 4x4 plane: permutes
    ((4, 12, 2, 2), (20, 12, 3, 3), dict(padding=1)),                 # four images in a sliver: gathers
    ((1, 10, 7, 7), (18, 10, 3, 3), dict(padding=1, stride=2)),       # 49-pixel planes
    ((1, 9, 4, 4), (17, 9, 3, 3), dict(padding=2, dilation=2)),       # dilated, in one plane
    ((2, 20, 2, 4), (22, 20, 1, 1), dict(padding=0)),                 # 1x1 across two images
    ((1, 16, 3, 3), (21, 16, 3, 3), dict(padding=(0, 2, 1, 0))),      # asymmetric padding
    ((1, 24, 4, 4), (19, 24, 7, 7), dict(padding=3)),                 # 49 taps
    ((1, 16, 4, 4), (18, 16, 9, 9), dict(padding=4)),                 # 81 taps: run-by-run packing
    ((4, 16, 2, 2), (24, 4, 3, 3), dict(padding=1, groups=4)),        # groups across images
    ((1, 8, 16, 1), (12, 8, 3, 3), dict(padding=1)),                  # one column, 16 rows
    ((3, 20, 5, 1), (14, 20, 3, 1), dict(padding=(1, 1, 0, 0))),      # 15 positions, three images
]


# 1x1 stride-1 layers pack B row by row from the channel planes: chunks that start
# inside a sliver where an image ends, K split into blocks, maps of a few pixels.
POINTWISE = [
    ((3, 300, 7, 9), (37, 300, 1, 1)),     # 63-pixel planes, two K blocks
    ((5, 40, 11, 13), (70, 40, 1, 1)),     # 143-pixel planes, chunks across images
    ((2, 520, 3, 3), (9, 520, 1, 1)),      # three K blocks, a 9-pixel map
    ((1, 96, 56, 56), (40, 96, 1, 1)),     # many chunks in one image
    ((1, 960, 1, 1), (240, 960, 1, 1)),    # 1x1 maps at batch <= 4: vector products
    ((4, 37, 1, 1), (19, 37, 1, 1)),
    ((5, 37, 1, 1), (19, 37, 1, 1)),       # batch 5: the gemm again
    # small maps computed transposed (positions in 7- or 8-row tiles, filters in vectors)
    ((1, 300, 7, 7), (96, 300, 1, 1)),     # 49 positions, two K blocks; dx: 300 outputs, a partial sliver
    ((1, 64, 14, 14), (45, 64, 1, 1)),     # 196 positions; dx transposed, the forward not (45 filters)
    ((1, 1800, 7, 7), (300, 1800, 1, 1)),  # dx: 57 slivers (the last partial) packed in 2-3 groups a thread
    ((8, 48, 3, 3), (64, 48, 1, 1)),       # 8-row tiles across 9-pixel images
    ((1, 520, 10, 10), (64, 520, 1, 1)),   # 100 positions, three K blocks
    ((1, 200, 14, 14), (96, 200, 1, 1)),   # 3 slivers, one K block: row blocks reuse their thread's packed sliver
    ((2, 192, 7, 7), (200, 192, 1, 1)),    # 7 slivers (the last partial) at batch 2
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", POINTWISE, ids=[f"{c[0]}-{c[1]}" for c in POINTWISE])
def test_pointwise_packing(case, dtype, threads):
    xs, ws = case
    check_all_passes(xs, ws, dtype, threads, seed=17)


# 1x1 layers with few filters: at AVX-512 float the micro-kernel reads x's whole
# 32-position tiles in place (rows HW apart) instead of packing them, 2-8 slivers
# of filters (MobileNets' projections, their expansions' input gradients); tiles
# at a chunk's end or across two images are packed (28x28, 20x20 at batch 2, and
# 15x15 at batch 3, whose outputs go through a panel).
# The sums are those of the packed path (a layer with more filters, whose first
# filters' outputs must come out the same bits), forward with every fused
# epilogue and input gradient with its masks, against the float64 reference too.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, c, hw, f", [(1, 40, 32, 24), (2, 96, 24, 20), (1, 16, 40, 64), (3, 300, 16, 40),
                                         (1, 40, 28, 24), (2, 48, 20, 32), (3, 24, 15, 16)])
def test_pointwise_in_place(n, c, hw, f, threads):
    import gradvis

    rng = np.random.default_rng(n * c + f)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    wide = rng.standard_normal((f + 72, c, 1, 1)).astype(np.float32)   # 12 slivers or more: packed
    bwide = rng.standard_normal(f + 72).astype(np.float32)
    w, b = wide[:f].copy(), bwide[:f].copy()
    res = rng.standard_normal((n, f + 72, hw, hw)).astype(np.float32)
    dout = rng.standard_normal((n, f, hw, hw)).astype(np.float32)
    # dx of a layer with more input channels: its first c channels' sums are the same
    wc = np.concatenate([w, rng.standard_normal((f, 72, 1, 1)).astype(np.float32)], axis=1)
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        pairs = [(_core.conv2d_forward(x, w, b), _core.conv2d_forward(x, wide, bwide)),
                 (_core.conv2d_forward(x, w, b, relu=True), _core.conv2d_forward(x, wide, bwide, relu=True)),
                 (_core.conv2d_forward_add(x, w, b, res[:, :f].copy(), relu=True),
                  _core.conv2d_forward_add(x, wide, bwide, res, relu=True))]
        for act, lo, hi in (("clamp", 0.0, 6.0), ("hardswish", 0.0, 0.0), ("silu", 0.0, 0.0)):
            o, pre = _core.conv2d_forward_act(x, w, b, activation=act, lo=lo, hi=hi, return_pre=True)
            ow, prew = _core.conv2d_forward_act(x, wide, bwide, activation=act, lo=lo, hi=hi, return_pre=True)
            pairs += [(o, ow), (pre, prew)]
        ref_x = np.clip(x, 0.5, 6.0) * (rng.random(x.shape) < 0.9)   # ties at the clamp's ends, and zeros
        refc = np.concatenate([ref_x, np.zeros((n, 72, hw, hw), np.float32)], axis=1)
        pairs.append((_core.conv2d_backward_input(dout, w, (hw, hw)),
                      _core.conv2d_backward_input(dout, wc, (hw, hw))))
        pairs.append((_core.conv2d_backward_input_act(dout, w, ref_x, activation="clamp", lo=0.5, hi=6.0),
                      _core.conv2d_backward_input_act(dout, wc, refc, activation="clamp", lo=0.5, hi=6.0)))
    finally:
        gradvis.set_num_threads(old)
    for got, want in pairs:
        np.testing.assert_array_equal(got, want[:, :got.shape[1]])
    close(pairs[0][0], ref.conv2d_forward(x, w, b), np.float32, c)
    close(pairs[-2][0], ref.conv2d_backward(dout, x, w)[0], np.float32, f)


# Other ungrouped layers on small maps computed transposed, on a zero-padded copy
# of x (AVX-512 float, where its tiles are fuller: 7x7 outputs and the like; the
# other levels and float64 take forward_tiled):
# strides, dilation, asymmetric padding, several images, partial slivers, K
# blocks across channels. (x shape, w shape, geometry)
TRANSPOSED = [
    ((1, 64, 14, 14), (96, 64, 3, 3), dict(padding=1, stride=2)),            # 49 positions, 3 slivers
    ((1, 300, 14, 14), (64, 300, 3, 3), dict(padding=1, stride=2)),          # K = 2700: many K blocks
    ((2, 40, 9, 9), (128, 40, 3, 3), dict(padding=(0, 2, 1, 0), stride=2)),  # asymmetric, two images
    ((1, 48, 14, 14), (160, 48, 2, 2), dict(stride=2)),                      # ConvNeXt's downsampling
    ((1, 40, 7, 7), (124, 40, 5, 5), dict(padding=2)),                       # 5x5, a partial sliver
    ((1, 32, 11, 11), (64, 32, 3, 3), dict(dilation=2)),                     # dilated
    ((3, 16, 5, 5), (64, 16, 3, 2), dict(padding=(1, 1, 0, 1), stride=(1, 2))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", TRANSPOSED, ids=[f"{c[0]}-{c[1]}" for c in TRANSPOSED])
def test_transposed_small_maps(case, dtype, threads):
    xs, ws, geometry = case
    check_all_passes(xs, ws, dtype, threads, seed=23, **geometry)
    # the fused epilogues: relu, a clamp, SiLU keeping its input, a residual sum
    import gradvis
    rng = np.random.default_rng(29)
    x, w, b = random_layer(xs, ws, dtype, rng)
    g = {"stride": 1, "padding": 0, "dilation": 1, **geometry}
    args = (g["stride"], g["padding"], g["dilation"], 1)
    want = ref.conv2d_forward(x, w, b, **geometry)
    terms = ws[1] * ws[2] * ws[3]
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        close(_core.conv2d_forward(x, w, b, *args, True), np.maximum(want, 0), dtype, terms)
        close(_core.conv2d_forward_act(x, w, b, *args, "clamp", 0.0, 6.0, False), np.clip(want, 0, 6), dtype, terms)
        out, pre = _core.conv2d_forward_act(x, w, b, *args, "silu", 0.0, 0.0, True)
        close(pre, want, dtype, terms)
        close(out, want / (1 + np.exp(-want)), dtype, terms)
        r = rng.standard_normal(want.shape).astype(dtype)
        close(_core.conv2d_forward_add(x, w, b, r, *args, True), np.maximum(want + r, 0), dtype, terms)
    finally:
        gradvis.set_num_threads(old)


@pytest.mark.parametrize("threads", [3, 4])
@pytest.mark.parametrize("case", POINTWISE[7:], ids=[f"{c[0]}-{c[1]}" for c in POINTWISE[7:]])
def test_pointwise_transposed_odd_teams(case, threads):
    """The transposed path's items (slivers x row blocks) shared by teams that
    do not divide them."""
    xs, ws = case
    check_all_passes(xs, ws, np.float32, threads, seed=19)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", SHORT_ROWS, ids=[f"{c[0]}-{c[1]}-{sorted(c[2].items())}" for c in SHORT_ROWS])
def test_short_output_rows(case, dtype, threads):
    xs, ws, geometry = case
    check_all_passes(xs, ws, dtype, threads, seed=13, **geometry)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [
    # (x, w, geometry): few input channels per group take the phase-split image
    ((3, 3, 64, 64), (32, 3, 5, 5), dict(stride=2, padding=2)),  # the model's first layer, batch 3
    ((1, 3, 64, 64), (32, 3, 5, 5), dict(stride=2, padding=2)),  # ... at batch 1
    ((2, 1, 9, 7), (5, 1, 3, 3), dict(padding=1)),
    ((3, 2, 11, 13), (7, 2, 4, 4), dict(stride=3)),
    ((1, 4, 19, 21), (40, 4, 3, 3), dict(stride=2, padding=1)),  # partial slivers, tiles across rows
    ((2, 3, 17, 17), (9, 3, 5, 5), dict(stride=(2, 1), padding=(2, 1, 0, 3))),
    ((2, 3, 23, 20), (6, 3, 3, 3), dict(stride=2, dilation=2, padding=2)),
    ((2, 4, 20, 20), (8, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 4, 40, 40), (17, 4, 9, 9), dict(stride=1, padding=4)),  # K = 324: two K blocks
    ((5, 2, 70, 70), (16, 2, 2, 2), dict(stride=2)),  # stride = kernel
    # batch 1, at most 4 channels: the input gradient in bands of input rows
    ((1, 3, 64, 64), (32, 3, 3, 3), dict(padding=1)),  # the bundled model's first layer
    ((1, 3, 37, 45), (16, 3, 7, 7), dict(stride=2, padding=3)),  # a stem, rows not a multiple of the bands
    ((1, 2, 33, 35), (5, 2, 3, 3), dict(dilation=2, padding=(3, 1, 2, 0))),
    ((2, 2, 40, 9), (3, 2, 5, 3), dict(stride=(3, 1), padding=(4, 0, 1, 1))),  # padding wider than half the kernel
])
def test_few_input_channels(shape, dtype, threads):
    xs, ws, geometry = shape
    check_all_passes(xs, ws, dtype, threads, seed=13, **geometry)
    x, w, b = random_layer(xs, ws, dtype, np.random.default_rng(14))
    fused = _core.conv2d_forward(x, w, b, relu=True, **geometry)
    np.testing.assert_array_equal(fused, np.maximum(_core.conv2d_forward(x, w, b, **geometry), 0))
    close(fused, np.maximum(ref.conv2d_forward(x, w, b, **geometry), 0), dtype, ws[1] * ws[2] * ws[3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [
    # column strides > 1 sum the input gradient in column-phase planes: tiny and
    # odd widths, columns no window covers, padding wider than the stride, dilation
    ((2, 3, 5, 1), (4, 3, 3, 1), dict(stride=(1, 2), padding=(1, 1, 0, 0))),
    ((1, 2, 6, 2), (3, 2, 2, 2), dict(stride=3)),
    ((1, 2, 7, 7), (3, 2, 2, 2), dict(stride=3)),                  # last column uncovered
    ((2, 5, 9, 10), (4, 5, 3, 3), dict(stride=(1, 3), padding=(0, 0, 2, 0))),
    ((1, 17, 9, 11), (6, 17, 3, 5), dict(stride=2, padding=(1, 0, 3, 1), dilation=(1, 2))),
    ((1, 3, 8, 8), (2, 3, 1, 1), dict(stride=2)),
])
def test_strided_input_gradient_edges(shape, dtype):
    xs, ws, geometry = shape
    for threads in (1, 2):
        check_all_passes(xs, ws, dtype, threads, seed=15, **geometry)


# Patches that neither overlap nor leave the image (strides at least the kernel,
# no padding, 16+ values per patch): the input gradient is the 1x1 product on the
# output's grid, put in place. Images the patches tile, a last row and column no
# patch reads, gaps between patches, a patch embedding, a strided 1x1 layer.
PATCHES = [
    ((1, 8, 12, 12), (16, 8, 2, 2), dict(stride=2)),
    ((2, 6, 13, 11), (10, 6, 2, 2), dict(stride=2)),
    ((1, 4, 17, 19), (7, 4, 2, 3), dict(stride=(3, 4))),
    ((1, 3, 16, 16), (12, 3, 4, 4), dict(stride=4)),
    ((1, 20, 9, 9), (24, 20, 1, 1), dict(stride=2)),
]


# Strided 1x1 layers run as the stride-1 layer on a copy of the positions they read:
# ResNet's downsampling layers (stride 2 on an even and an odd map, batch 2: the
# copy's planes across images), strides that differ by axis, padding (positions
# of zeros in the copy), and enough filters for the transposed 7-row tiles.
STRIDED_POINTWISE = [
    ((2, 24, 14, 14), (40, 24, 1, 1), dict(stride=2)),
    ((1, 33, 15, 15), (70, 33, 1, 1), dict(stride=2)),
    ((1, 16, 13, 17), (20, 16, 1, 1), dict(stride=(3, 2))),
    ((1, 16, 10, 17), (20, 16, 1, 1), dict(stride=(2, 3))),
    ((2, 9, 8, 7), (12, 9, 1, 1), dict(stride=2, padding=(1, 0, 2, 1))),
    ((1, 64, 14, 14), (300, 64, 1, 1), dict(stride=2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PATCHES + STRIDED_POINTWISE)
def test_patch_and_strided_pointwise_layers(shape, dtype):
    xs, ws, geometry = shape
    for threads in (1, 2):
        check_all_passes(xs, ws, dtype, threads, seed=16, **geometry)
    # the fused ReLU mask over the whole input gradient is the separate one
    rng = np.random.default_rng(17)
    x = np.maximum(rng.standard_normal(xs), 0).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = _core.conv2d_forward(x, w, b, **geometry)
    dout = rng.standard_normal(y.shape).astype(dtype)
    dx = _core.conv2d_backward_input(dout, w, xs[2:], **geometry)
    fused = _core.conv2d_backward_input_act(dout, w, x, activation="relu", **geometry)
    np.testing.assert_array_equal(fused, _core.relu_backward(dx, x))
    # a fused activation, its input kept, is the separate one's
    s = geometry["stride"] if isinstance(geometry["stride"], tuple) else (geometry["stride"],) * 2
    p = geometry.get("padding", 0)
    p = (p,) * 4 if isinstance(p, int) else p
    out, pre = _core.conv2d_forward_act(x, w, b, s, p, (1, 1), 1, "silu", 0.0, 0.0, True)
    np.testing.assert_array_equal(pre, y)
    np.testing.assert_array_equal(out, _core.silu_forward(y))


@pytest.mark.parametrize("shape", [((1, 3, 64, 64), (32, 3, 3, 3), dict(padding=1)),
                                   ((1, 4, 50, 41), (8, 4, 5, 5), dict(stride=2, padding=2))])
def test_banded_input_gradient_does_not_depend_on_the_thread_count(shape):
    import gradvis

    xs, ws, geometry = shape
    rng = np.random.default_rng(16)
    w = rng.standard_normal(ws).astype(np.float32)
    out_shape = ref.conv2d_forward(np.zeros((1,) + xs[1:]), w.astype(np.float64), None, **geometry).shape
    dout = rng.standard_normal(out_shape).astype(np.float32)
    old = gradvis.get_num_threads()
    try:
        got = []
        for threads in (1, 2, 3):
            gradvis.set_num_threads(threads)
            got.append(_core.conv2d_backward_input(dout, w, xs[2:], **geometry))
    finally:
        gradvis.set_num_threads(old)
    np.testing.assert_array_equal(got[1], got[0])
    np.testing.assert_array_equal(got[2], got[0])


FEW_CHANNELS_SCRIPT = r"""
import numpy as np, sys
sys.path.insert(0, {tests!r})
import reference_conv as ref
import gradvis
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
rng = np.random.default_rng(1)
cases = [((2, 3, 64, 64), (32, 3, 5, 5), dict(stride=2, padding=2)), ((1, 1, 13, 9), (7, 1, 3, 3), dict(padding=1)),
         ((2, 4, 19, 21), (40, 4, 3, 3), dict(stride=2, padding=1)),
         ((1, 4, 30, 30), (13, 4, 9, 9), dict(stride=1, padding=(4, 3, 2, 4))),
         # stride 4 (the split copy gathers every fourth value): a patch embedding on
         # rows of 2 x 16 + 5 patches, and a padded 5x5; batches of 8 and 3 (whole
         # images per thread, or the batch's copy shared out)
         ((2, 3, 12, 150), (8, 3, 4, 4), dict(stride=4)),
         ((1, 3, 30, 70), (6, 3, 5, 5), dict(stride=4, padding=(2, 1, 3, 2))),
         ((8, 3, 20, 24), (16, 3, 3, 3), dict(stride=2, padding=1)),
         ((3, 3, 20, 24), (16, 3, 3, 3), dict(stride=2, padding=1))]
for threads in (1, 2):
    gradvis.set_num_threads(threads)
    for dt, tol in ((np.float32, 1e-4), (np.float64, 1e-11)):
        for xs, ws, geo in cases:
            x = rng.standard_normal(xs).astype(dt)
            w = rng.standard_normal(ws).astype(dt)
            b = rng.standard_normal(ws[0]).astype(dt)
            r = ref.conv2d_forward(x, w, b, **geo)
            o = _core.conv2d_forward(x, w, b, **geo)
            assert np.abs(o - r).max() < tol * np.abs(r).max(), ("forward", xs, dt)
            o = _core.conv2d_forward(x, w, b, relu=True, **geo)
            assert np.abs(o - np.maximum(r, 0)).max() < tol * np.abs(r).max(), ("forward relu", xs, dt)
            dout = rng.standard_normal(r.shape).astype(dt)
            _, rdw, rdb = ref.conv2d_backward(dout, x, w, **geo)
            dw, db = _core.conv2d_backward_weight(dout, x, ws[2:], **geo)
            assert np.abs(dw - rdw).max() < tol * np.abs(rdw).max(), ("dw", xs, dt)
            assert np.abs(db - rdb).max() < tol * np.abs(rdb).max(), ("db", xs, dt)
print("ok")
"""


@pytest.mark.parametrize("level", ["avx512", "avx2", "scalar"])
def test_few_input_channels_simd_levels(level):
    import gradvis

    if level == "avx512" and gradvis.simd_level() != "avx512":
        pytest.skip("this CPU has no AVX-512")
    run_at_simd_level(level, FEW_CHANNELS_SCRIPT)


def test_bias_false_and_none():
    x, w, b, dout = make_inputs(CONFIGS[1], np.float32, seed=7)
    dw, db = _core.conv2d_backward_weight(dout, x, w.shape[2:], **conv_kwargs(CONFIGS[1]), bias=False)
    assert db is None and dw.shape == w.shape
    out = _core.conv2d_forward(x, w, None, **conv_kwargs(CONFIGS[1]))
    close(out, ref.conv2d_forward(x, w, None, **conv_kwargs(CONFIGS[1])), np.float32, w[0].size)


# ---- validation -------------------------------------------------------------------
X = np.zeros((2, 4, 9, 9), np.float32)
Wt = np.zeros((8, 4, 3, 3), np.float32)
DOUT = np.zeros((2, 8, 7, 7), np.float32)

BAD = [
    ("ndim x", _core.conv2d_forward, (X[0], Wt), {}, ValueError, r"x must be 4-D"),
    ("ndim w", _core.conv2d_forward, (X, Wt[0]), {}, ValueError, r"w must be 4-D"),
    ("channels", _core.conv2d_forward, (X, np.zeros((8, 3, 3, 3), np.float32)), {}, ValueError,
     r"w expects 3 input channels per group but x has 4 channels \(groups=1\); x shape \(2, 4, 9, 9\), "
     r"w shape \(8, 3, 3, 3\)"),
    ("F % groups", _core.conv2d_forward, (X, np.zeros((7, 2, 3, 3), np.float32)), {"groups": 2}, ValueError,
     r"F=7 is not divisible by groups=2"),
    ("C % groups", _core.conv2d_forward, (X, np.zeros((6, 1, 3, 3), np.float32)), {"groups": 3}, ValueError,
     r"C=4 is not divisible by groups=3"),
    ("groups 0", _core.conv2d_forward, (X, Wt), {"groups": 0}, ValueError, r"groups must be >= 1"),
    ("stride 0", _core.conv2d_forward, (X, Wt), {"stride": 0}, ValueError, r"stride must be >= 1"),
    ("dilation 0", _core.conv2d_forward, (X, Wt), {"dilation": (1, 0)}, ValueError, r"dilation must be >= 1"),
    ("padding < 0", _core.conv2d_forward, (X, Wt), {"padding": (0, 1, -1, 0)}, ValueError,
     r"padding must be non-negative"),
    ("padding len 3", _core.conv2d_forward, (X, Wt), {"padding": (1, 1, 1)}, ValueError, r"padding must be"),
    ("stride str", _core.conv2d_forward, (X, Wt), {"stride": "2"}, TypeError, r"stride must be"),
    ("stride float", _core.conv2d_forward, (X, Wt), {"stride": 1.5}, TypeError, r"stride must be"),
    ("kernel too big", _core.conv2d_forward, (X, np.zeros((8, 4, 12, 3), np.float32)), {}, ValueError,
     r"larger than the padded input"),
    ("kernel too big dil", _core.conv2d_forward, (X, Wt), {"dilation": 5}, ValueError,
     r"larger than the padded input"),
    ("empty x", _core.conv2d_forward, (np.zeros((0, 4, 9, 9), np.float32), Wt), {}, ValueError, r"x is empty"),
    ("empty w", _core.conv2d_forward, (X, np.zeros((0, 4, 3, 3), np.float32)), {}, ValueError, r"w is empty"),
    ("bias length", _core.conv2d_forward, (X, Wt, np.zeros(7)), {}, ValueError, r"b must have shape \(8,\)"),
    ("bias 2-D", _core.conv2d_forward, (X, Wt, np.zeros((8, 1))), {}, ValueError, r"b must have shape \(8,\)"),
    ("x int", _core.conv2d_forward, (X.astype(np.int32), Wt), {}, TypeError, r"x must be float32 or float64"),
    ("x bool", _core.conv2d_forward, (X.astype(bool), Wt), {}, TypeError, r"x must be float32 or float64"),
    ("x complex", _core.conv2d_forward, (X.astype(np.complex64), Wt), {}, TypeError, r"x must be float32"),
    ("x float16", _core.conv2d_forward, (X.astype(np.float16), Wt), {}, TypeError, r"x must be float32"),
    ("x list of ints", _core.conv2d_forward, ([[[[1]]]], Wt), {}, TypeError, r"x must be float32"),
    ("w complex", _core.conv2d_forward, (X, Wt.astype(np.complex64)), {}, TypeError, r"w has unsupported dtype"),
    ("bi dout shape", _core.conv2d_backward_input, (DOUT[:, :, :6], Wt, (9, 9)), {}, ValueError,
     r"dout must have shape \(2, 8, 7, 7\)"),
    ("bi dout F", _core.conv2d_backward_input, (DOUT[:, :5], Wt, (9, 9)), {}, ValueError, r"dout must have shape"),
    ("bi hw", _core.conv2d_backward_input, (DOUT, Wt, (9, 0)), {}, ValueError, r"input_hw must be >= 1"),
    ("bi hw small", _core.conv2d_backward_input, (DOUT, Wt, (2, 9)), {}, ValueError, r"larger than the padded"),
    ("bi dout int", _core.conv2d_backward_input, (DOUT.astype(np.int64), Wt, (9, 9)), {}, TypeError,
     r"dout must be float32 or float64"),
    ("bi ndim", _core.conv2d_backward_input, (DOUT[0], Wt, (9, 9)), {}, ValueError, r"dout must be 4-D"),
    ("bw dout shape", _core.conv2d_backward_weight, (DOUT[:, :, :, :5], X, (3, 3)), {}, ValueError,
     r"dout must have shape \(2, 8, 7, 7\)"),
    ("bw batch", _core.conv2d_backward_weight, (DOUT[:1], X, (3, 3)), {}, ValueError, r"dout must have shape"),
    ("bw kernel", _core.conv2d_backward_weight, (DOUT, X, (0, 3)), {}, ValueError, r"kernel_hw must be >= 1"),
    ("bw C % groups", _core.conv2d_backward_weight, (DOUT, X, (3, 3)), {"groups": 3}, ValueError,
     r"C=4 is not divisible by groups=3"),
    ("bw F % groups", _core.conv2d_backward_weight, (DOUT[:, :6], X, (3, 3)), {"groups": 4}, ValueError,
     r"F=6 is not divisible by groups=4"),
    ("bw empty x", _core.conv2d_backward_weight, (DOUT, X[:, :, :0], (3, 3)), {}, ValueError, r"x is empty"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises(case):
    _, fn, args, kwargs, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


@pytest.mark.parametrize("c", [3, 16])   # 3: the few-channel path, whose buffers are laid out by stride
@pytest.mark.parametrize("stride", [(2 ** 30, 2 ** 30), (2 ** 31, 1), (1, 2 ** 28), (7, 5)])
def test_stride_past_the_input(c, stride):
    """A stride larger than the padded input leaves one output along that axis: the
    results are the reference's, and memory does not grow with the stride (2**31
    used to allocate gigabytes or fail with bad_alloc)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, c, 6, 7))
    w = rng.standard_normal((4, c, 3, 3))
    kw = dict(stride=stride, padding=1)
    want = ref.conv2d_forward(x, w, None, **kw)
    assert want.shape[2] == 1 or want.shape[3] == 1
    dout = rng.standard_normal(want.shape)
    rdx, rdw, _ = ref.conv2d_backward(dout, x, w, **kw)
    for dtype in DTYPES:
        xd, wd, dd = (a.astype(dtype) for a in (x, w, dout))
        close(_core.conv2d_forward(xd, wd, None, **kw), want, dtype, w[0].size)
        close(_core.conv2d_backward_input(dd, wd, (6, 7), **kw), rdx, dtype, w[:, 0].size)
        close(_core.conv2d_backward_weight(dd, xd, (3, 3), **kw, bias=False)[0], rdw, dtype, dout[:, 0].size)


def test_numpy_integer_geometry():
    """Geometry arguments take numpy integers and 0-d integer arrays like ints."""
    x, w = X + 1, Wt + 1
    want = _core.conv2d_forward(x, w, None, stride=2, padding=(1, 0))
    got = _core.conv2d_forward(x, w, None, stride=np.int64(2), padding=(np.int32(1), np.array(0)),
                               dilation=np.uint8(1), groups=np.int16(1))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: _core.set_num_threads(0), ValueError, r"n must be in \[1, \d+\], got 0"),
    (lambda: _core.set_num_threads(100000), ValueError, r"n must be in \[1, \d+\], got 100000"),
    (lambda: _core.set_num_threads(2 ** 70), ValueError, r"n is out of range"),
    (lambda: _core.set_num_threads(2.0), TypeError, r"n must be an int, got 2.0"),
    (lambda: _core.set_winograd_cache_limit(-1), ValueError, r"nbytes must be in \[0, "),
    (lambda: _core.set_winograd_cache_limit(2 ** 70), ValueError, r"nbytes is out of range"),
    (lambda: _core.set_array_pool_limit(2 ** 63), ValueError, r"nbytes is out of range"),
    (lambda: _core.set_array_pool_limit("1G"), TypeError, r"nbytes must be an int"),
])
def test_process_settings_refuse_bad_values(call, exc, match):
    """Thread counts the OpenMP runtime cannot create (it ends the process) and byte
    limits that overflow are refused; the settings stay as they were."""
    before = (_core.get_num_threads(), _core.winograd_cache_info()["limit"])
    with pytest.raises(exc, match=match):
        call()
    assert (_core.get_num_threads(), _core.winograd_cache_info()["limit"]) == before


def test_process_settings_take_numpy_integers():
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(np.int64(1))
        assert _core.get_num_threads() == 1
    finally:
        _core.set_num_threads(before)


def test_secondary_args_are_converted_and_inputs_untouched():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 6, 3, 3)).transpose(1, 0, 3, 2)  # float64, not contiguous: (6, 4, 3, 3)
    b = np.arange(12, dtype=np.int64)[::2]  # int, strided
    x_nc = np.asfortranarray(x)  # primary argument non-contiguous too
    copies = [a.copy() for a in (x_nc, w, b)]
    out = _core.conv2d_forward(x_nc, w, b, padding=1)
    assert out.dtype == np.float32
    close(out, ref.conv2d_forward(x, w, b, padding=1), np.float32, 36)
    for a, c in zip((x_nc, w, b), copies):
        np.testing.assert_array_equal(a, c)
    w16 = w.astype(np.float16)
    out16 = _core.conv2d_forward(x, w16, None, padding=1)
    close(out16, ref.conv2d_forward(x, w16.astype(np.float64), None, padding=1), np.float32, 36)
    dout = rng.standard_normal(out.shape)[:, :, :, ::-1]  # negative strides, float64 primary
    d0 = dout.copy()
    dx = _core.conv2d_backward_input(dout, w.astype(np.float32), [9, 8], padding=1)
    dw, db = _core.conv2d_backward_weight(dout, x, np.array([3, 3]), padding=1)
    assert dx.dtype == dw.dtype == db.dtype == np.float64
    rdx, rdw, rdb = ref.conv2d_backward(dout, x, w.astype(np.float32), padding=1)
    close(dx, rdx, np.float64, 54)
    close(dw, rdw, np.float64, 72)
    np.testing.assert_array_equal(dout, d0)


# Layers whose chunks of positions (and so which tiles are partial, or span two
# images, or are computed at all in the batch-1 "direct" way) move with the thread
# count and the batch, with a bias, each way it can be applied: every output must
# be the same bits at 1, 2 and 3 threads, and each image's that of the image alone
# (with the direct algorithm: the automatic choice may turn on the batch's tile
# count). A tile started from the bias rounded differently from one given it at
# the end.
CHUNK_CASES = [
    # x shape, w shape, stride, padding
    ((3, 4, 24, 11), (10, 4, 7, 7), 1, 3),
    ((5, 3, 9, 30), (16, 3, 5, 5), 1, 2),
    ((5, 2, 23, 18), (26, 2, 5, 5), 1, 2),
    ((4, 4, 3, 37), (35, 4, 5, 5), 1, 4),
    ((2, 2, 33, 14), (21, 2, 7, 7), 1, 5),
    ((3, 6, 17, 13), (12, 6, 3, 3), 2, 1),
]


def check_chunk_bits(case, seed=0):
    import gradvis

    xs, ws, stride, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    runs = {
        "bias": lambda: _core.conv2d_forward(x, w, b, stride, pad),
        "relu": lambda: _core.conv2d_forward(x, w, b, stride, pad, 1, 1, True),
        "clamp": lambda: _core.conv2d_forward_act(x, w, b, stride, pad, 1, 1, "clamp", -0.5, 0.7),
        "silu": lambda: _core.conv2d_forward_act(x, w, b, stride, pad, 1, 1, "silu"),
    }
    y = _core.conv2d_forward(x, w, b, stride, pad)
    res = rng.standard_normal(y.shape).astype(np.float32)
    runs["add_relu"] = lambda: _core.conv2d_forward_add(x, w, b, res, stride, pad, 1, 1, True)
    old, algo = gradvis.get_num_threads(), gradvis.get_conv_algorithm()
    try:
        for a in ("auto", "direct"):
            gradvis.set_conv_algorithm(a)
            for name, run in runs.items():
                got = []
                for threads in (1, 2, 3):
                    gradvis.set_num_threads(threads)
                    got.append(run())
                for t, g in zip((2, 3), got[1:]):
                    assert np.array_equal(g, got[0]), (case, a, name, t, int((g != got[0]).sum()))
        gradvis.set_conv_algorithm("direct")
        whole = runs["bias"](), runs["relu"](), runs["clamp"]()
        for i in range(xs[0]):
            xi = x[i:i + 1]
            alone = (_core.conv2d_forward(xi, w, b, stride, pad), _core.conv2d_forward(xi, w, b, stride, pad, 1, 1, True),
                     _core.conv2d_forward_act(xi, w, b, stride, pad, 1, 1, "clamp", -0.5, 0.7))
            for k, (wh, al) in enumerate(zip(whole, alone)):
                assert np.array_equal(wh[i], al[0]), (case, "image alone", i, k)
    finally:
        gradvis.set_num_threads(old)
        gradvis.set_conv_algorithm(algo)


@pytest.mark.parametrize("case", CHUNK_CASES)
def test_forward_bits_do_not_depend_on_the_thread_count(case):
    check_chunk_bits(case)


test_forward_thread_bits_simd_paths = simd_paths_test("""
from test_conv import CHUNK_CASES, check_chunk_bits
for case in CHUNK_CASES:
    check_chunk_bits(case)
""")

def test_threads_give_serial_results():
    rng = np.random.default_rng(10)
    jobs = []
    for i in range(4):
        x = rng.standard_normal((2 + i % 2, 8, 20 + i, 19)).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        jobs.append((x, w))
    serial = [_core.conv2d_forward(x, w, None, padding=1) for x, w in jobs]
    results = [None] * 4
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = _core.conv2d_forward(jobs[i][0], jobs[i][1], None, padding=1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r, s in zip(results, serial):
        np.testing.assert_array_equal(r, s)


SIMD_SCRIPT = r"""
import numpy as np, sys
sys.path.insert(0, {tests!r})
import reference_conv as ref
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
rng = np.random.default_rng(0)
for dt, tol in ((np.float32, 1e-4), (np.float64, 1e-11)):
    x = rng.standard_normal((2, 5, 13, 11)).astype(dt)
    w = rng.standard_normal((7, 5, 3, 3)).astype(dt)
    b = rng.standard_normal(7).astype(dt)
    r = ref.conv2d_forward(x, w, b, stride=(1, 2), padding=(1, 0, 2, 1))
    o = _core.conv2d_forward(x, w, b, stride=(1, 2), padding=(1, 0, 2, 1))
    assert np.abs(o - r).max() < tol * np.abs(r).max(), ("forward", dt)
    dout = rng.standard_normal(o.shape).astype(dt)
    rdx, rdw, _ = ref.conv2d_backward(dout, x, w, stride=(1, 2), padding=(1, 0, 2, 1))
    dx = _core.conv2d_backward_input(dout, w, (13, 11), stride=(1, 2), padding=(1, 0, 2, 1))
    dw, _ = _core.conv2d_backward_weight(dout, x, (3, 3), stride=(1, 2), padding=(1, 0, 2, 1))
    assert np.abs(dx - rdx).max() < tol * np.abs(rdx).max(), ("dx", dt)
    assert np.abs(dw - rdw).max() < tol * np.abs(rdw).max(), ("dw", dt)
    # stride 1, >= 16 channels: backward-input runs as a forward conv with flipped filters
    x = rng.standard_normal((2, 17, 13, 11)).astype(dt)
    w = rng.standard_normal((7, 17, 3, 3)).astype(dt)
    o1 = _core.conv2d_forward(x, w, b, padding=(1, 0, 2, 1))
    d1 = rng.standard_normal(o1.shape).astype(dt)
    rdx1, _, _ = ref.conv2d_backward(d1, x, w, padding=(1, 0, 2, 1))
    dx1 = _core.conv2d_backward_input(d1, w, (13, 11), padding=(1, 0, 2, 1))
    assert np.abs(dx1 - rdx1).max() < tol * np.abs(rdx1).max(), ("dx stride 1", dt)
    # batch 1 on a 4x4 map: weights read in place (forward and flipped backward-input)
    x = rng.standard_normal((1, 19, 4, 4)).astype(dt)
    w = rng.standard_normal((21, 19, 3, 3)).astype(dt)
    b = rng.standard_normal(21).astype(dt)
    o2 = _core.conv2d_forward(x, w, b, padding=1)
    r2 = ref.conv2d_forward(x, w, b, padding=1)
    assert np.abs(o2 - r2).max() < tol * np.abs(r2).max(), ("forward 4x4", dt)
    d2 = rng.standard_normal(o2.shape).astype(dt)
    rdx2, rdw2, _ = ref.conv2d_backward(d2, x, w, padding=1)
    dx2 = _core.conv2d_backward_input(d2, w, (4, 4), padding=1)
    assert np.abs(dx2 - rdx2).max() < tol * np.abs(rdx2).max(), ("dx 4x4", dt)
    dw2, _ = _core.conv2d_backward_weight(d2, x, (3, 3), padding=1)
    assert np.abs(dw2 - rdw2).max() < tol * np.abs(rdw2).max(), ("dw 4x4", dt)
    # 1x1: (a) B packed row by row from the channel planes, chunks starting inside
    # a sliver where an image ends (3 images of 7x9), two K blocks (300 channels);
    # (b) a 7x7 map at batch 1, computed transposed (the input gradient at every level;
    # at AVX2 float in 5-row tiles, its positions packed, the last tile's rows past
    # the map zero);
    # (c) the input gradient of two 7x7 images transposed, a tile across both;
    # (d) 14x14 maps, transposed at AVX2 float: 3 and 4 slivers with the positions
    # read in place (two K blocks), 15 with them packed (a run of 32 tiles, then a
    # partial one); (e) 7x7 with 2 slivers of filters: at AVX2 float 5-row tiles
    # with the positions read in place; (f) two 10x10 images, 10 slivers: tiles
    # packed in runs, and one across both images; (g) maps over 400 positions with
    # 16 and 32 filters and up to 48 input channels (at AVX2 float not transposed:
    # a last sliver of 4 or 2 filters, forward and input gradient), and 64 channels
    # (transposed)
    for xs, f, bias in (((3, 300, 7, 9), 37, False), ((1, 300, 7, 7), 96, True), ((2, 192, 7, 7), 200, False),
                        ((1, 64, 14, 14), 45, True), ((1, 384, 14, 14), 64, True), ((1, 160, 14, 14), 240, False),
                        ((1, 40, 7, 7), 32, True), ((2, 96, 10, 10), 160, True), ((1, 32, 24, 24), 16, True),
                        ((1, 16, 21, 23), 32, False), ((1, 48, 22, 22), 16, True), ((1, 64, 22, 22), 32, True)):
        x = rng.standard_normal(xs).astype(dt)
        w = rng.standard_normal((f, xs[1], 1, 1)).astype(dt)
        b = rng.standard_normal(f).astype(dt) if bias else None
        o3 = _core.conv2d_forward(x, w, b)
        r3 = ref.conv2d_forward(x, w, b)
        assert np.abs(o3 - r3).max() < tol * np.abs(r3).max(), ("forward 1x1", xs, dt)
        d3 = rng.standard_normal(o3.shape).astype(dt)
        rdx3, _, _ = ref.conv2d_backward(d3, x, w)
        dx3 = _core.conv2d_backward_input(d3, w, xs[2:])
        assert np.abs(dx3 - rdx3).max() < tol * np.abs(rdx3).max(), ("dx 1x1", xs, dt)
    # patches that tile the image (2x2 stride 2) and with gaps (2x3, strides 3, 4)
    for xs, ws, st in (((1, 8, 13, 12), (16, 8, 2, 2), 2), ((1, 4, 17, 19), (7, 4, 2, 3), (3, 4))):
        x = rng.standard_normal(xs).astype(dt)
        w = rng.standard_normal(ws).astype(dt)
        o4 = _core.conv2d_forward(x, w, stride=st)
        d4 = rng.standard_normal(o4.shape).astype(dt)
        rdx4, _, _ = ref.conv2d_backward(d4, x, w, stride=st)
        dx4 = _core.conv2d_backward_input(d4, w, xs[2:], stride=st)
        assert np.abs(dx4 - rdx4).max() < tol * np.abs(rdx4).max(), ("dx patches", xs, dt)
    a = rng.standard_normal((37, 45)).astype(dt)
    c = rng.standard_normal((45, 29)).astype(dt)
    assert np.abs(_core.gemm(a, c) - a.astype(np.float64) @ c).max() < tol * 10, ("gemm", dt)
print("ok")
"""


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_simd_paths(level):
    run_at_simd_level(level, SIMD_SCRIPT)


def test_scratch_sized_for_the_largest_k_block():
    """Regression: K split into blocks of unequal size (K = 1152 into 5) once packed
    more than the buffer held at 2 threads and corrupted the heap; run such shapes
    in a child process so a crash fails the test instead of the test run."""
    code = (
        "import numpy as np\n"
        "from gradvis import _core\n"
        "rng = np.random.default_rng(0)\n"
        "for c, f, hw in [(128, 128, 16), (128, 256, 8), (160, 96, 8)]:\n"
        "    for n in (1, 3, 5):\n"
        "        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)\n"
        "        w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)\n"
        "        ref = _core.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 1)\n"
        "        for _ in range(10):\n"
        "            out = _core.conv2d_forward(x, w, None, 1, 1)\n"
        "            junk = [np.ones(100000, np.float32) for _ in range(4)]\n"
        "        assert np.allclose(out, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())\n"
        "print('ok')\n")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_geometry_arguments_of_every_form():
    """The bindings read Python ints and tuples of them without the general
    sequence path; every other form the general path took still gives the same
    result or the same refusal (bools, floats, overflowing ints, numpy integers,
    lists, wrong lengths)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    want = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, stride=(2, 1),
                              padding=(1, 1, 0, 2), dilation=1, groups=1)
    forms = [((2, 1), (1, 1, 0, 2), 1), ([2, 1], [1, 1, 0, 2], (1,)), ((np.int64(2), 1), (1, 1, 0, 2), np.int32(1)),
             (np.array([2, 1]), np.array([1, 1, 0, 2]), (1, 1))]
    for stride, pad, dil in forms:
        out = _core.conv2d_forward(x, w, None, stride, pad, dil, 1)
        close(out, want, np.float32, 18)
    sym = _core.conv2d_forward(x, w, None, 1, (1, 2), 1, 1)   # (pad_h, pad_w)
    close(sym, ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, stride=1, padding=(1, 1, 2, 2),
                                  dilation=1, groups=1), np.float32, 18)
    for stride in [(True, 1), (2.0, 1), 2.0, True, "2", (1, 2, 3), (), (1, None)]:
        with pytest.raises((TypeError, ValueError), match="stride"):
            _core.conv2d_forward(x, w, None, stride, 0, 1, 1)
    for stride in [2**70, (1, 2**70), (0, 1), (-1, 1)]:
        with pytest.raises(ValueError, match="stride"):
            _core.conv2d_forward(x, w, None, stride, 0, 1, 1)
    for pad in [(1, 2, 3), (1, 1, 1, 1, 1), (-1, 0), 2**64, (0, False)]:
        with pytest.raises((TypeError, ValueError), match="padding"):
            _core.conv2d_forward(x, w, None, 1, pad, 1, 1)
    # arrays the kernels read as they are and arrays they need converted give the same
    for xx in (x.astype(np.float64).astype(np.float32), np.asfortranarray(x), x.astype(">f4"),
               np.frombuffer(b"\0" + x.tobytes(), np.float32, x.size, 1).reshape(x.shape)):
        np.testing.assert_array_equal(_core.conv2d_forward(xx, w, None, 1, 1, 1, 1),
                                      _core.conv2d_forward(x, w, None, 1, 1, 1, 1))
