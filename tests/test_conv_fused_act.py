"""Activations applied by the convolution as it writes its output (ReLU6 / Clip,
HardSwish, SiLU): the kernel entry point on every conv path and SIMD level against
the separate activation, the model's fusion against the unfused graph, finite
differences and PyTorch autograd, and when the fusion must not happen."""
import numpy as np
import pytest

import gradvis
from conftest import simd_paths_test
from gradvis import _core
from gradvis.nn import Clip, Conv2d, HardSwish, Model, ReLU, ReLU6, SiLU

# (x shape, w shape, padding, stride, groups, algorithm): the implicit gemm, 1x1 at
# batch 1, Winograd, the small-map output panel, depthwise (stride 1 and 2, a 7-wide
# map), grouped with few channels per group, 1x1 on 1x1 maps, 1x1 on small maps
# computed transposed (one 7x7 image; eight 3x3 images in 8-row tiles); the
# depthwise kernels that clamp as they store: row blocks (3x3 at strides 1 and 2,
# 7x7; widths past a vector, not a multiple of one), the flat plan, channels in
# the lanes, groups of 8 channels in the lanes; the gemm's full tiles, which
# clamp as they store, beside partial ones (1x1 and 3x3 on maps of more than 16
# column tiles); outputs of a MiB and more, whose pre is written by streaming
# stores (the gemm's tile runs and depthwise planes, at any alignment)
CASES = [
    ((2, 3, 17, 17), (8, 3, 5, 5), 2, 1, 1, "auto"),
    ((1, 24, 14, 14), (40, 24, 1, 1), 0, 1, 1, "auto"),
    ((2, 16, 20, 20), (16, 16, 3, 3), 1, 1, 1, "winograd"),
    ((3, 16, 7, 7), (20, 16, 3, 3), 1, 1, 1, "direct"),
    ((2, 12, 9, 11), (12, 1, 3, 3), 1, 1, 12, "auto"),
    ((1, 10, 7, 7), (10, 1, 5, 5), 2, 2, 10, "auto"),
    ((1, 16, 1, 1), (16, 1, 3, 3), 1, 1, 16, "auto"),
    ((2, 16, 9, 9), (16, 4, 3, 3), 1, 1, 4, "auto"),
    ((3, 48, 1, 1), (20, 48, 1, 1), 0, 1, 1, "auto"),
    ((1, 40, 7, 7), (96, 40, 1, 1), 0, 1, 1, "auto"),
    ((8, 24, 3, 3), (64, 24, 1, 1), 0, 1, 1, "auto"),
    ((1, 3, 19, 40), (3, 1, 3, 3), 1, 1, 3, "auto"),
    ((1, 3, 20, 35), (3, 1, 3, 3), 1, 2, 3, "auto"),
    ((1, 2, 13, 45), (2, 1, 7, 7), 3, 1, 2, "auto"),
    ((1, 3, 6, 7), (3, 1, 3, 3), 1, 1, 3, "auto"),
    ((1, 32, 7, 7), (32, 1, 3, 3), 1, 1, 32, "auto"),
    ((1, 64, 14, 14), (64, 8, 3, 3), 1, 1, 8, "auto"),
    ((1, 16, 23, 23), (44, 16, 1, 1), 0, 1, 1, "auto"),
    ((1, 16, 20, 21), (24, 16, 3, 3), 1, 1, 1, "direct"),
    ((1, 8, 66, 67), (64, 8, 3, 3), 1, 1, 1, "auto"),
    ((1, 64, 65, 67), (64, 1, 3, 3), 1, 1, 64, "auto"),
]
IDS = ["gemm", "1x1", "winograd", "panel", "depthwise", "depthwise_s2", "depthwise_1x1image", "grouped",
       "1x1_vector", "1x1_transposed", "1x1_transposed_images", "depthwise_rows", "depthwise_rows_s2",
       "depthwise_rows_7x7", "depthwise_flat", "depthwise_lanes", "grouped_lanes", "1x1_tiles", "gemm_tiles",
       "gemm_streamed_pre", "depthwise_streamed_pre"]
# (activation, lo, hi, the separate layer's forward)
ACTS = [
    ("relu", 0.0, 0.0, lambda a: _core.relu_forward(a)),
    ("clamp", 0.0, 6.0, lambda a: _core.clamp_forward(a, 0.0, 6.0)),
    ("clamp", -0.5, 0.75, lambda a: _core.clamp_forward(a, -0.5, 0.75)),
    ("hardswish", 0.0, 0.0, lambda a: _core.hardswish_forward(a)),
    ("silu", 0.0, 0.0, lambda a: _core.silu_forward(a)),
]
ACT_IDS = ["relu", "relu6", "clip", "hardswish", "silu"]


def check_kernel(case, dtype, seed=0, nan_filter=False):
    """conv2d_forward_act on one conv path, every activation, against the plain
    convolution and the separate activation (raises AssertionError). nan_filter:
    the first filter's bias is NaN, so its whole output channel is."""
    xs, ws, pad, stride, groups, algo = case
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal(xs)).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    if nan_filter:
        b[0] = np.nan
    kw = dict(padding=pad, stride=stride, groups=groups)
    old = gradvis.get_conv_algorithm()
    gradvis.set_conv_algorithm(algo)
    try:
        plain = _core.conv2d_forward(x, w, b, **kw)
        for name, lo, hi, act in ACTS:
            out = _core.conv2d_forward_act(x, w, b, activation=name, lo=lo, hi=hi, **kw)
            out2, pre = _core.conv2d_forward_act(x, w, b, activation=name, lo=lo, hi=hi, return_pre=True, **kw)
            assert out.dtype == dtype and out.shape == plain.shape
            np.testing.assert_array_equal(pre, plain)
            np.testing.assert_array_equal(out2, out)
            # the separate layer's own code on the same values: the same bits
            np.testing.assert_array_equal(out, act(plain), err_msg=name)
        np.testing.assert_array_equal(_core.conv2d_forward_act(x, w, b, **kw), plain)
    finally:
        gradvis.set_conv_algorithm(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_equals_separate_activation(case, dtype):
    check_kernel(case, dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_nan_passes_like_separate_activation(case):
    check_kernel(case, np.float32, seed=1, nan_filter=True)


SIMD_CHECKS = r"""
from test_conv_fused_act import CASES, check_kernel
for case in CASES:
    check_kernel(case, np.float32)
    check_kernel(case, np.float32, seed=1, nan_filter=True)
check_kernel(CASES[4], np.float64)
"""


test_kernel_simd_paths = simd_paths_test(SIMD_CHECKS)


def test_kernel_bad_arguments():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="activation must be"):
        _core.conv2d_forward_act(x, w, None, padding=1, groups=2, activation="gelu")
    with pytest.raises(ValueError, match=r"lo \(2\) and hi \(1\)"):
        _core.conv2d_forward_act(x, w, None, padding=1, groups=2, activation="clamp", lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match="conv2d_forward_act: .*not divisible by groups=3"):
        _core.conv2d_forward_act(x, w, None, groups=3, activation="silu")


# ---------------------------------------------------------------------------- the model's fusion
LAYERS = {"relu6": ReLU6, "clip": lambda: Clip(-0.5, 1.5), "hardswish": HardSwish, "silu": SiLU}


def block_model(act, dtype=np.float32, seed=0):
    """1x1 expand -> act -> depthwise 3x3 stride 2 -> act -> 1x1 project -> act ->
    depthwise 5x5 (7x7 map) -> ReLU: MobileNet's blocks, every conv fusible."""
    m = Model((4, 13, 13), seed=seed)
    m.add("expand", Conv2d(4, 12, 1)).add("a1", LAYERS[act]())
    m.add("dw", Conv2d(12, 12, 3, stride=2, padding=1, groups=12)).add("a2", LAYERS[act]())
    m.add("project", Conv2d(12, 8, 1)).add("a3", LAYERS[act]())
    m.add("dw5", Conv2d(8, 8, 5, padding=2, groups=8)).add("a4", ReLU())
    m.init_params(seed=seed, dtype=dtype)
    return m


@pytest.mark.parametrize("act", list(LAYERS))
def test_model_fusion_equals_unfused(act):
    m = block_model(act)
    plan = m._act_fusions(0, len(m) - 1, set(range(len(m))), None)
    assert sorted(plan) == [0, 2, 4]
    unfused = m.copy()
    unfused.fuse_relu = False
    X = 2 * np.random.default_rng(1).standard_normal((2, 4, 13, 13)).astype(np.float32)
    out, cache = m.forward(X)
    ref, rcache = unfused.forward(X)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m.forward(X, cache=False)[0], out)   # no pre-activation written
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    dx, grads = m.backward(dout, cache)
    rdx, rgrads = unfused.backward(dout, rcache)
    np.testing.assert_allclose(dx, rdx, rtol=1e-5, atol=1e-6)
    assert grads.keys() == rgrads.keys()
    for k in grads:
        np.testing.assert_allclose(grads[k], rgrads[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_model_fusion_finite_differences():
    m = block_model("silu", np.float64, seed=3)
    m.add("a5", Clip(-0.5, 1.5), inputs="a4")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((1, 4, 13, 13))
    out, cache = m.forward(X)
    assert len(m._act_fusions(0, len(m) - 1, set(range(len(m))), None)) == 3
    R = rng.standard_normal(out.shape)
    dx, _ = m.backward(R, cache, param_grads=False)
    h = 1e-6
    for _ in range(6):
        idx = tuple(int(rng.integers(0, s)) for s in X.shape)
        p, q = X.copy(), X.copy()
        p[idx] += h
        q[idx] -= h
        num = (np.vdot(m.forward(p)[0], R) - np.vdot(m.forward(q)[0], R)) / (2 * h)
        assert abs(num - dx[idx]) < 1e-6 * max(1.0, abs(num)), (idx, num, dx[idx])


def test_no_fusion_where_the_conv_output_is_needed():
    m = block_model("silu")
    every = set(range(len(m)))
    # the conv's own output asked for
    assert 2 not in m._act_fusions(0, len(m) - 1, every, ["dw", "a4"])
    # read by another node too (a residual branch)
    m2 = Model((4, 9, 9), seed=0)
    m2.add("c", Conv2d(4, 4, 3, padding=1)).add("s", SiLU()).add("c2", Conv2d(4, 4, 1), inputs="c")
    m2.init_params(seed=0)
    assert m2._act_fusions(0, len(m2) - 1, set(range(len(m2))), None) == {}
    m.fuse_relu = False
    assert m._act_fusions(0, len(m) - 1, every, None) == {}
    X = np.random.default_rng(5).standard_normal((1, 4, 13, 13)).astype(np.float32)
    outs, _ = block_model("silu").forward(X, outputs=["dw", "a2"])
    np.testing.assert_allclose(outs["a2"], _core.silu_forward(outs["dw"]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("act", list(LAYERS))
def test_model_fusion_matches_torch(act, torch):
    m = block_model(act, seed=6)
    X = 2 * np.random.default_rng(7).standard_normal((2, 4, 13, 13)).astype(np.float32)
    out, cache = m.forward(X)
    R = np.random.default_rng(8).standard_normal(out.shape).astype(np.float32)
    dx, _ = m.backward(R, cache, param_grads=False)
    nnf = torch.nn.functional
    acts = {"relu6": nnf.relu6, "clip": lambda t: torch.clamp(t, -0.5, 1.5), "hardswish": nnf.hardswish,
            "silu": nnf.silu}
    f = acts[act]
    p = {k: torch.from_numpy(v) for k, v in m.params.items()}
    xt = torch.from_numpy(X).requires_grad_(True)
    y = f(nnf.conv2d(xt, p["expand.weight"], p["expand.bias"]))
    y = f(nnf.conv2d(y, p["dw.weight"], p["dw.bias"], stride=2, padding=1, groups=12))
    y = f(nnf.conv2d(y, p["project.weight"], p["project.bias"]))
    y = torch.relu(nnf.conv2d(y, p["dw5.weight"], p["dw5.bias"], padding=2, groups=8))
    (g,) = torch.autograd.grad((y * torch.from_numpy(R)).sum(), [xt])
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, g.numpy(), rtol=1e-4, atol=1e-5)
