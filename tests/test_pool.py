"""Max / average / global average pooling against the float64 references,
finite differences and torch.nn.functional."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from gradvis import _core
import reference_ops as ref
from conftest import require_torch, simd_paths_test

DTYPES = [np.float32, np.float64]



def tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# (kernel, stride, padding, ceil_mode): the fast 2x2/2 path, overlapping 3x3/2,
# stride 1 and 3, ceil_mode, asymmetric padding, rectangular windows.
CONFIGS = [
    (2, 2, 0, False),
    (2, 2, 0, True),
    (3, 2, 1, False),
    (3, 2, 1, True),
    (3, 1, 1, False),
    (3, 3, 0, True),
    ((3, 2), (2, 3), (1, 0, 1, 1), True),
    ((2, 3), 1, (0, 1, 1, 0), False),
    (4, 3, 2, True),
]


def draw_shape(rng):
    return (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(5, 12)), int(rng.integers(5, 12)))


def distinct(rng, shape):
    """Values with no ties, spaced 1/size apart: max pool is differentiable there."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) / n - 0.5).astype(np.float64)


def torch_pad(padding):
    """Symmetric padding as torch wants it, or None if it is asymmetric."""
    p = ref._pads(padding)
    return (p[0], p[2]) if p[0] == p[1] and p[2] == p[3] else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_max_pool_forward_matches_reference(dtype, cfg):
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    rng = np.random.default_rng(100 + cfg)
    for _ in range(2):
        x = distinct(rng, draw_shape(rng)).astype(dtype)
        out, am = _core.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
        rout, ram = ref.max_pool2d(x, kernel, stride, padding, ceil_mode)
        assert out.dtype == dtype and am.dtype == np.int64
        np.testing.assert_array_equal(out, rout.astype(dtype))
        np.testing.assert_array_equal(am, ram)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_and_infinities_pick_first_real_cell(dtype):
    x = np.full((1, 1, 4, 4), -np.inf, dtype)
    out, am = _core.max_pool2d_forward(x, 3, 2, 1, True)
    rout, ram = ref.max_pool2d(x, 3, 2, 1, True)
    np.testing.assert_array_equal(am, ram)
    assert np.all(np.isneginf(out))
    x = np.zeros((1, 1, 4, 4), dtype)
    for args in [(2, 2), (3, 1, 1)]:
        _, am = _core.max_pool2d_forward(x, *args)
        np.testing.assert_array_equal(am, ref.max_pool2d(x, *args)[1])


@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_max_pool_backward_matches_finite_differences(cfg):
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    rng = np.random.default_rng(200 + cfg)
    x = distinct(rng, (2, 2, 7, 8))
    out, am = _core.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    dout = rng.standard_normal(out.shape)
    dx = _core.max_pool2d_backward(dout, am, x.shape[2:])
    num = ref.numeric_grad(lambda v: _core.max_pool2d_forward(v, kernel, stride, padding, ceil_mode)[0], x, dout)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)
    dx32 = _core.max_pool2d_backward(dout.astype(np.float32), am, x.shape[2:])
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_max_pool_matches_torch(dtype, cfg):
    torch = require_torch()
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    tp = torch_pad(padding)
    if tp is None:
        pytest.skip("torch pads symmetrically only")
    rng = np.random.default_rng(300 + cfg)
    x = distinct(rng, draw_shape(rng)).astype(dtype)
    out, am = _core.max_pool2d_forward(x, kernel, stride, padding, ceil_mode)
    xt = torch.tensor(x, requires_grad=True)
    tout, tam = torch.nn.functional.max_pool2d(xt, kernel, stride, tp, 1, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(am, tam.numpy())
    dout = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    dx = _core.max_pool2d_backward(dout, am, x.shape[2:])
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_avg_pool_forward_matches_reference(dtype, count_include_pad, cfg):
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    rng = np.random.default_rng(400 + cfg)
    for _ in range(2):
        x = rng.standard_normal(draw_shape(rng)).astype(dtype)
        out = _core.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad)
        assert out.dtype == dtype
        rout = ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
        np.testing.assert_allclose(out, rout, **tol(dtype))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_avg_pool_backward_matches_finite_differences(count_include_pad, cfg):
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    rng = np.random.default_rng(500 + cfg)
    x = rng.standard_normal((1, 2, 7, 6))
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    out = _core.avg_pool2d_forward(x, *args)
    dout = rng.standard_normal(out.shape)
    dx = _core.avg_pool2d_backward(dout, x.shape[2:], *args)
    num = ref.numeric_grad(lambda v: _core.avg_pool2d_forward(v, *args), x, dout)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
    dx32 = _core.avg_pool2d_backward(dout.astype(np.float32), x.shape[2:], *args)
    np.testing.assert_allclose(dx32, dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_avg_pool_matches_torch(dtype, count_include_pad, cfg):
    torch = require_torch()
    kernel, stride, padding, ceil_mode = CONFIGS[cfg]
    tp = torch_pad(padding)
    if tp is None:
        pytest.skip("torch pads symmetrically only")
    rng = np.random.default_rng(600 + cfg)
    x = rng.standard_normal(draw_shape(rng)).astype(dtype)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    out = _core.avg_pool2d_forward(x, *args)
    xt = torch.tensor(x, requires_grad=True)
    tout = torch.nn.functional.avg_pool2d(xt, kernel, stride, tp, ceil_mode, count_include_pad)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(_core.avg_pool2d_backward(dout, x.shape[2:], *args), xt.grad.numpy(), **tol(dtype))


def global_avg_pool_planes():
    """Global average pools of planes whose sizes reach every part of the kernel's
    sums (8 or 32 lanes, a tail, none), as float64-rounded means."""
    rng = np.random.default_rng(7)
    outs = []
    for dtype in DTYPES:
        for h, w in ((5, 7), (1, 1), (2, 4), (7, 7), (16, 16), (17, 19), (56, 56), (1, 300)):
            x = (rng.standard_normal((2, 3, h, w)) + 0.5).astype(dtype)
            out = _core.global_avg_pool_forward(x)
            assert out.shape == (2, 3, 1, 1) and out.dtype == dtype
            np.testing.assert_allclose(out, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), **tol(dtype))
            outs.append(out)
    return outs


def test_global_avg_pool_plane_sizes():
    global_avg_pool_planes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_pool_backward(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    dout = rng.standard_normal((3, 4, 1, 1)).astype(dtype)
    dx = _core.global_avg_pool_backward(dout, (5, 7))
    np.testing.assert_allclose(dx, np.broadcast_to(dout.astype(np.float64) / 35, x.shape), **tol(dtype))


def test_caller_arrays_are_not_modified_and_array_likes_convert():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 6, 6))
    keep = x.copy()
    out, am = _core.max_pool2d_forward(x, 2, 2)
    am_keep, out_keep = am.copy(), out.copy()
    _core.max_pool2d_backward(out, am, [6, 6])
    _core.avg_pool2d_backward(out, (6, 6), 2, 2)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(am, am_keep)
    np.testing.assert_array_equal(out, out_keep)
    # Non-contiguous input works.
    xs = rng.standard_normal((1, 2, 12, 12))[:, :, ::2, ::2]
    np.testing.assert_array_equal(_core.max_pool2d_forward(xs, 2, 2)[0], ref.max_pool2d(xs, 2, 2)[0])


def tiny_cases(seed=7, n=400):
    """Maps of 1-5 rows and columns under windows of 1-5, strides 1-4 and padding up
    to half the window: many windows run past the input, some past both ends."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        H, W, kh, kw = (int(v) for v in rng.integers(1, 6, 4))
        sh, sw = (int(v) for v in rng.integers(1, 5, 2))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        yield (H, W), (kh, kw), (sh, sw), (ph, pw), bool(rng.random() < 0.7), bool(rng.random() < 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_maps_and_windows_past_the_input_match_torch(dtype):
    """Where PyTorch pools (in ceil mode a window may be larger than the padded
    input: a 3x3 window over a 2x2 map gives one output), gradvis gives its values
    and gradients; where PyTorch refuses, gradvis raises a ValueError."""
    torch = require_torch()
    rng = np.random.default_rng(8)
    pooled = 0
    for (H, W), k, st, (ph, pw), ceil_mode, include in tiny_cases():
        x = distinct(rng, (2, 2, H, W)).astype(dtype)
        pads = (ph, ph, pw, pw)
        for kind in ("max", "avg"):
            xt = torch.tensor(x, requires_grad=True)
            try:
                if kind == "max":
                    want = torch.nn.functional.max_pool2d(xt, k, st, (ph, pw), 1, ceil_mode)
                else:
                    want = torch.nn.functional.avg_pool2d(xt, k, st, (ph, pw), ceil_mode, include)
            except RuntimeError:
                with pytest.raises(ValueError, match="output would be empty|larger than the padded input"):
                    if kind == "max":
                        _core.max_pool2d_forward(x, k, st, pads, ceil_mode)
                    else:
                        _core.avg_pool2d_forward(x, k, st, pads, ceil_mode, include)
                continue
            if kind == "max":
                out, am = _core.max_pool2d_forward(x, k, st, pads, ceil_mode)
            else:
                out = _core.avg_pool2d_forward(x, k, st, pads, ceil_mode, include)
            np.testing.assert_allclose(out, want.detach().numpy(), **tol(dtype))
            dout = rng.standard_normal(out.shape).astype(dtype)
            want.backward(torch.tensor(dout))
            if kind == "max":
                dx = _core.max_pool2d_backward(dout, am, x.shape[2:])
            else:
                dx = _core.avg_pool2d_backward(dout, x.shape[2:], k, st, pads, ceil_mode, include)
            np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
            pooled += 1
    assert pooled > 400   # most cases pool; the rest were refused by both


def test_pool_layers_take_a_window_larger_than_the_input_in_ceil_mode():
    import gradvis

    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    mp = gradvis.MaxPool2d(3, 2, ceil_mode=True)
    assert mp.output_shape([(1, 2, 2)]) == (1, 1, 1)
    out, _ = mp.forward([x], {}, {}, "test", None)
    assert out.ravel().tolist() == [3.0]
    ap = gradvis.AvgPool2d(3, 3, ceil_mode=True)
    out, _ = ap.forward([x], {}, {}, "test", None)
    assert out.ravel().tolist() == [1.5]
    with pytest.raises(ValueError, match="too small for a \\(3, 3\\) window"):
        gradvis.MaxPool2d(3, 2).output_shape([(1, 2, 2)])
    # the last window must start inside the input or its leading padding
    assert gradvis.MaxPool2d(2, 2, padding=1, ceil_mode=True).output_shape([(1, 2, 2)]) == (1, 2, 2)
    # (asymmetric padding, as ONNX gives it: the leading side counts)
    lead = gradvis.MaxPool2d(2, 2, padding=(1, 0, 1, 0), ceil_mode=True)
    assert lead.output_shape([(1, 4, 4)]) == (1, 3, 3)
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert lead.forward([x], {}, {}, "test", None)[0].shape == (1, 1, 3, 3)

@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: _core.max_pool2d_forward(x[0], 2, 2), "x must be 4-D"),
        (lambda x: _core.max_pool2d_forward(x.astype(np.int32), 2, 2), "x must be float32 or float64"),
        (lambda x: _core.max_pool2d_forward(x, 0, 2), "kernel must be >= 1"),
        (lambda x: _core.max_pool2d_forward(x, 2, 0), "stride must be >= 1"),
        (lambda x: _core.max_pool2d_forward(x, 2, (1, 2, 3)), "stride"),
        (lambda x: _core.max_pool2d_forward(x, 3, 1, 2), "padding"),
        (lambda x: _core.max_pool2d_forward(x, 3, 1, -1), "padding"),
        (lambda x: _core.max_pool2d_forward(x, 9, 1), "kernel .* larger than the padded input"),
        (lambda x: _core.max_pool2d_forward(x, 9, 3, 0, True), "output would be empty .* kernel \\(9, 9\\)"),
        (lambda x: _core.max_pool2d_forward(x[:, :, :0], 2, 2), "x is empty"),
        (lambda x: _core.avg_pool2d_forward(x, (2, 9), 1), "kernel"),
        (lambda x: _core.avg_pool2d_backward(np.zeros((1, 2, 2, 2)), (6, 6), 2, 2), "dout shape"),
        (lambda x: _core.avg_pool2d_backward(np.zeros((1, 2, 3, 3)), (6, 6), 2, 2, 5), "padding"),
        (lambda x: _core.max_pool2d_backward(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 2), np.int64), (6, 6)),
         "argmax shape"),
        (lambda x: _core.max_pool2d_backward(np.zeros((1, 2, 3, 3)), np.full((1, 2, 3, 3), 36, np.int64), (6, 6)),
         "argmax has values outside"),
        (lambda x: _core.max_pool2d_backward(np.zeros((1, 2, 3, 3)), np.full((1, 2, 3, 3), -1, np.int64), (6, 6)),
         "argmax has values outside"),
        (lambda x: _core.max_pool2d_backward(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3)), (6, 6)), "argmax"),
        (lambda x: _core.max_pool2d_backward(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3), np.int64), (0, 6)),
         "input_hw"),
        (lambda x: _core.global_avg_pool_backward(np.zeros((1, 2, 3, 3)), (6, 6)), "dout must be"),
        (lambda x: _core.global_avg_pool_forward(x[0]), "x must be 4-D"),
        (lambda x: _core.max_pool2d_forward(x, 2.0, 2), "kernel must be an int or a pair of ints, got 2.0"),
        (lambda x: _core.max_pool2d_forward(x, 2, True), "stride must be an int"),
        (lambda x: _core.max_pool2d_forward(x, 2 ** 64, 1), "kernel is out of range"),
        (lambda x: _core.max_pool2d_forward(x, 2, 2 ** 40), "stride is too large"),
        (lambda x: _core.avg_pool2d_forward(x, 2, 2, (0, "1")), "padding must be"),
    ],
)
def test_bad_inputs_raise(call, match):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


def test_numpy_integer_geometry():
    """Kernel, stride and padding take numpy integers and 0-d integer arrays like ints."""
    x = np.random.default_rng(2).standard_normal((1, 2, 7, 7))
    out, am = _core.max_pool2d_forward(x, np.int64(3), (np.int32(2), 2), np.array(1))
    want, want_am = _core.max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(am, want_am)
    np.testing.assert_array_equal(_core.avg_pool2d_forward(x, np.uint8(2), np.int16(2)), _core.avg_pool2d_forward(x, 2, 2))


def test_concurrent_calls_equal_serial_results():
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((2, 3, 33, 29)).astype(np.float32) for _ in range(4)]
    serial = [(_core.max_pool2d_forward(x, 3, 2, 1), _core.gaussian_blur(x, 1.5)) for x in xs]
    results = [None] * 4
    errors = []

    def work(i):
        try:
            for _ in range(20):
                r = (_core.max_pool2d_forward(xs[i], 3, 2, 1), _core.gaussian_blur(xs[i], 1.5))
            results[i] = r
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (s_pool, s_blur), (r_pool, r_blur) in zip(serial, results):
        np.testing.assert_array_equal(s_pool[0], r_pool[0])
        np.testing.assert_array_equal(s_pool[1], r_pool[1])
        np.testing.assert_array_equal(s_blur, r_blur)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("args", [(3, 1, 0), (3, 2, 1), (3, 3, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 0, 1, 1))])
def test_max_pool_wide_rows_with_ties_and_nans(dtype, args):
    """Rows wide enough for the vectorized interior sweep, with many ties (as after
    a relu) and NaNs: the first maximum in row-major window order wins, NaN wins."""
    rng = np.random.default_rng(7)
    x = np.maximum(rng.integers(-3, 4, (2, 3, 9, 70)), 0).astype(dtype)   # half zeros, small ints
    out, am = _core.max_pool2d_forward(x, *args)
    rout, ram = ref.max_pool2d(x, *args)
    np.testing.assert_array_equal(out, rout.astype(dtype))
    np.testing.assert_array_equal(am, ram)
    xn = x.copy()
    xn[0, 1, 4, 33] = np.nan
    xn[1, 2, 5, 10] = np.nan
    out, am = _core.max_pool2d_forward(xn, *args)
    W = x.shape[3]
    for (n, c, i, j) in [(0, 1, 4, 33), (1, 2, 5, 10)]:
        hit = am[n, c] == i * W + j
        assert hit.any() and np.isnan(out[n, c][hit]).all()
    assert np.isnan(out).sum() == sum((am[n, c] == i * W + j).sum()
                                      for (n, c, i, j) in [(0, 1, 4, 33), (1, 2, 5, 10)])


POOL_2X2_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import gradvis
from test_pool import check_2x2_rows
assert gradvis.simd_level() == {level!r}, gradvis.simd_level()
check_2x2_rows()
print("ok")
"""


def check_2x2_rows():
    """2x2 stride-2 pooling (the vectorized path: 16 windows a step, the last step
    of each row masked) on every row width from 1 to 41 windows, odd widths and
    heights dropping their last column/row, ties (as after a relu) and NaNs."""
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        for W in list(range(2, 36)) + [63, 64, 65, 82, 83]:
            H = int(rng.integers(2, 6))
            x = np.maximum(rng.integers(-3, 4, (2, 3, H, W)), 0).astype(dtype)
            out, am = _core.max_pool2d_forward(x, 2, 2, 0, False)
            rout, ram = ref.max_pool2d(x, 2, 2, 0, False)
            np.testing.assert_array_equal(out, rout.astype(dtype))
            np.testing.assert_array_equal(am, ram)
            xn = x.copy()
            spots = [(0, 1, H - 1 - (H % 2), W - 1 - (W % 2)), (1, 2, 0, W // 2)]
            for n, c, i, j in spots:
                xn[n, c, i, j] = np.nan
            out, am = _core.max_pool2d_forward(xn, 2, 2, 0, False)
            for n, c, i, j in spots:
                hit = am[n, c] == i * W + j
                assert hit.sum() == 1 and np.isnan(out[n, c][hit]).all(), (W, H)
            assert np.isnan(out).sum() == len(spots)


def test_max_pool_2x2_every_row_width():
    check_2x2_rows()


GAP_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
import test_pool
np.save(sys.argv[1], np.concatenate([o.ravel().astype(np.float64) for o in test_pool.global_avg_pool_planes()]))
print("ok")
"""


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_global_avg_pool_bits_at_every_simd_level(level, tmp_path):
    """The sums' order depends on the plane's size alone: every level gives the same bits."""
    import gradvis
    if level == "avx2" and gradvis.simd_level() == "scalar":
        pytest.skip("this CPU has no AVX2")
    here = np.concatenate([o.ravel().astype(np.float64) for o in global_avg_pool_planes()])
    code = GAP_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)), level=level)
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.npy")], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, GRADVIS_SIMD=level))
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), here)


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_max_pool_2x2_simd_paths(level):
    from conftest import run_at_simd_level
    run_at_simd_level(level, POOL_2X2_SCRIPT)


# ---------------------------------------------------------------------------- dilated max pooling
def window_is_real(n, k, s, pad, d, o):
    """Whether window o along an axis reads at least one cell of [0, n)."""
    return any(0 <= o * s - pad + a * d < n for a in range(k))


def dilated_cases(seed, n):
    """Dilated max-pool geometries on maps of 1-21 rows and 1-40 columns (rows of
    interior windows past a vector and not a multiple of one): windows 1-4 with
    dilations 1-4, strides 1, 2 (each with its own interior sweep) and 3-5 (the
    strided one), padding up to half the window, floor and ceil mode. Yields
    ((H, W), kernel, stride, padding (t, b, l, r), dilation, ceil_mode, valid),
    valid when every output window reads some cell (the reference's rule)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        H, W = int(rng.integers(1, 22)), int(rng.integers(1, 41))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        dh, dw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(rng.choice([1, 1, 2, 2, 3, 5])) for _ in range(2))
        pads = tuple(int(rng.integers(0, k // 2 + 1)) for k in (kh, kh, kw, kw))
        ceil_mode = bool(rng.random() < 0.4)
        OH = ref.out_size(H, kh, sh, pads[0], pads[1], ceil_mode, dh)
        OW = ref.out_size(W, kw, sw, pads[2], pads[3], ceil_mode, dw)
        fits = ceil_mode or ((kh - 1) * dh < H + pads[0] + pads[1] and (kw - 1) * dw < W + pads[2] + pads[3])
        valid = fits and OH >= 1 and OW >= 1 and \
            all(window_is_real(H, kh, sh, pads[0], dh, o) for o in range(OH)) and \
            all(window_is_real(W, kw, sw, pads[2], dw, o) for o in range(OW))
        yield (H, W), (kh, kw), (sh, sw), pads, (dh, dw), ceil_mode, valid


def check_dilated_max_pool(seed=21, n=250):
    """Values and argmax against the float64 reference, bit for bit, in both
    precisions, with ties (values from a few integers) and a NaN that must win
    its windows; refused geometries raise a ValueError naming the cause."""
    rng = np.random.default_rng(seed)
    pooled = 0
    for (H, W), k, st, pads, dil, ceil_mode, valid in dilated_cases(seed, n):
        if not valid:
            with pytest.raises(ValueError, match="read only padding|output would be empty|larger than the padded"):
                _core.max_pool2d_forward(np.zeros((1, 1, H, W), np.float32), k, st, pads, ceil_mode, dil)
            continue
        for dtype in DTYPES:
            x = rng.integers(-4, 5, (2, 3, H, W)).astype(dtype)
            out, am = _core.max_pool2d_forward(x, k, st, pads, ceil_mode, dil)
            rout, ram = ref.max_pool2d(x, k, st, pads, ceil_mode, dil)
            np.testing.assert_array_equal(out, rout.astype(dtype))
            np.testing.assert_array_equal(am, ram)
            i, j = int(rng.integers(H)), int(rng.integers(W))
            x[1, 2, i, j] = np.nan
            out, am = _core.max_pool2d_forward(x, k, st, pads, ceil_mode, dil)
            hit = am[1, 2] == i * W + j
            assert np.isnan(out[1, 2][hit]).all() and np.isnan(out).sum() == hit.sum()
        pooled += 1
    assert pooled > n // 2


def test_dilated_max_pool_matches_reference():
    check_dilated_max_pool()


test_dilated_max_pool_simd_paths = simd_paths_test("""
from test_pool import check_dilated_max_pool
check_dilated_max_pool(seed=22, n=150)
""")


@pytest.mark.parametrize("dilation", [2, (1, 3), (3, 2)])
def test_dilated_max_pool_backward_matches_finite_differences(dilation):
    rng = np.random.default_rng(23)
    x = distinct(rng, (2, 2, 11, 13))
    args = (3, (1, 2), 1, False, dilation)
    out, am = _core.max_pool2d_forward(x, *args)
    dout = rng.standard_normal(out.shape)
    dx = _core.max_pool2d_backward(dout, am, x.shape)
    num = ref.numeric_grad(lambda v: _core.max_pool2d_forward(v, *args)[0], x, dout)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dilated_max_pool_matches_torch(dtype):
    """Values, indices and gradients against torch.nn.functional.max_pool2d on the
    geometries PyTorch takes (symmetric padding, no window of padding only:
    there PyTorch returns indices past the input)."""
    torch = require_torch()
    rng = np.random.default_rng(24)
    compared = 0
    for (H, W), k, st, pads, dil, ceil_mode, valid in dilated_cases(25, 300):
        if not valid or pads[0] != pads[1] or pads[2] != pads[3]:
            continue
        x = distinct(rng, (2, 2, H, W)).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        want, wam = torch.nn.functional.max_pool2d(xt, k, st, (pads[0], pads[2]), dil, ceil_mode,
                                                   return_indices=True)
        out, am = _core.max_pool2d_forward(x, k, st, pads, ceil_mode, dil)
        np.testing.assert_array_equal(out, want.detach().numpy())
        np.testing.assert_array_equal(am, wam.numpy())
        dout = rng.standard_normal(out.shape).astype(dtype)
        want.backward(torch.tensor(dout))
        dx = _core.max_pool2d_backward(dout, am, x.shape)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))
        compared += 1
    assert compared > 60


@pytest.mark.parametrize("args, match", [
    ((2, 1, 1, False, 6), "read only padding"),           # rows -1 and 5 of a 5-row map
    ((2, 1, 0, False, 0), "dilation must be >= 1"),
    ((3, 1, 0, False, (2, -1)), "dilation must be >= 1"),
    ((3, 1, 0, False, 3), "with dilation \\(3, 3\\) is larger than the padded input"),
    ((2, 1, 0, False, "2"), "dilation"),
])
def test_dilated_max_pool_bad_geometry(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _core.max_pool2d_forward(np.zeros((1, 1, 5, 5), np.float32), *args)


def test_max_pool_layer_dilation():
    """MaxPool2d(dilation=...): shape, values through the model, config round trip."""
    from gradvis.nn import MaxPool2d
    rng = np.random.default_rng(26)
    layer = MaxPool2d(3, stride=2, padding=1, dilation=(2, 3), ceil_mode=True)
    x = rng.standard_normal((2, 3, 15, 17))
    out, cache = layer.forward([x], {}, {}, "test", None)
    want = ref.max_pool2d(x, 3, 2, 1, True, (2, 3))[0]
    assert layer.output_shape([x.shape[1:]]) == want.shape[1:]
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(out.shape)
    num = ref.numeric_grad(lambda v: layer.forward([v], {}, {}, "test", None)[0], x, dout)
    np.testing.assert_allclose(layer.backward(dout, cache)[0][0], num, rtol=1e-6, atol=1e-7)
    again = MaxPool2d(**layer.config())
    assert again.dilation == (2, 3) and "dilation (2, 3)" in again.describe()
    assert "dilation" not in MaxPool2d(2).config()
    with pytest.raises(ValueError, match="dilation"):
        MaxPool2d(2, dilation=0)
    with pytest.raises(ValueError, match="dilation \\(1, 5\\)"):
        MaxPool2d(2, dilation=(1, 5)).output_shape([(3, 4, 4)])


def max_pool_takes_max_ref(x, kernel, stride, pads, ceil_mode=False, dilation=(1, 1)):
    """The float64 reference's windows with the kernels' (and PyTorch's) rule: a
    larger value or a NaN takes the window, so ties keep the first maximum and the
    last NaN in row-major order wins; padding never does."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = pads
    N, C, H, W = x.shape
    OH, OW = ref.out_size(H, kh, sh, pt, pb, ceil_mode, dh), ref.out_size(W, kw, sw, pl, pr, ceil_mode, dw)
    out, am = np.empty((N, C, OH, OW), x.dtype), np.empty((N, C, OH, OW), np.int64)
    for n, c, oh, ow in np.ndindex(N, C, OH, OW):
        best, bi = -np.inf, None
        for i in range(oh * sh - pt, oh * sh - pt + kh * dh, dh):
            for j in range(ow * sw - pl, ow * sw - pl + kw * dw, dw):
                if 0 <= i < H and 0 <= j < W:
                    v = x[n, c, i, j]
                    if bi is None:        # (-inf, the first real cell) until a cell takes it
                        bi = i * W + j
                    if v > best or v != v:
                        best, bi = v, i * W + j
        out[n, c, oh, ow], am[n, c, oh, ow] = best, bi
    return out, am


def check_stride2_rows(seed=31, n=120):
    """Column stride 2 (the 3x3 stride-2 pool after ResNet's stem, AlexNet's and
    Inception's pools): rows of 1 to 112 windows (vectors of 16 and their masked
    tails), windows 1-5 wide and 1-3 tall with row dilations 1-2, row strides 1-3,
    padding, ceil mode; values from a few integers with infinities (ties, a window
    of -inf) and NaNs, up to three in a window: values and argmax against
    max_pool_takes_max_ref, bit for bit."""
    rng = np.random.default_rng(seed)
    widths = list(range(1, 41)) + [63, 64, 65, 111, 112, 223, 224]
    done = 0
    for t in range(n):
        W = widths[t % len(widths)]
        H = int(rng.integers(1, 9))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        dh, sh = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        pads = (int(rng.integers(0, (kh - 1) * dh // 2 + 1)),) * 2 + (int(rng.integers(0, kw // 2 + 1)),) * 2
        ceil_mode = bool(rng.random() < 0.3)
        try:
            want = None
            x = rng.choice(np.array([-np.inf, -1, 0, 0, 1, 2, np.inf]), size=(2, 2, H, W))
            if t % 2:
                x[rng.random(x.shape) < 0.08] = np.nan
            for dtype in DTYPES:
                xd = x.astype(dtype)
                out, am = _core.max_pool2d_forward(xd, (kh, kw), (sh, 2), pads, ceil_mode, (dh, 1))
                if want is None:
                    want = max_pool_takes_max_ref(x, (kh, kw), (sh, 2), pads, ceil_mode, (dh, 1))
                np.testing.assert_array_equal(out, want[0].astype(dtype))
                np.testing.assert_array_equal(am, want[1])
            done += 1
        except ValueError as e:
            assert "padding" in str(e) or "empty" in str(e) or "larger" in str(e), e
    assert done > n // 2


def test_max_pool_stride2_rows():
    check_stride2_rows()


test_max_pool_stride2_rows_simd_paths = simd_paths_test("""
from test_pool import check_stride2_rows
check_stride2_rows(seed=32, n=60)
""")
