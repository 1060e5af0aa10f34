"""The compiled core under hostile sizes and layouts: outputs whose size overflows
or exceeds the memory limit are refused up front (ValueError naming the shape),
backward passes check dout against the input's shape, misaligned arrays are
copied before the SIMD kernels read them, 0-d arrays keep their shape."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gradvis import _core

F32 = np.float32


@pytest.fixture
def memory_limit():
    """Restores the memory limit a test changes."""
    old = _core.get_memory_limit()
    yield
    _core.set_memory_limit(old)


def _run_child(code, timeout=60):
    """Runs code in a child process (a hang fails the test instead of stalling the run)."""
    env = dict(os.environ)
    try:
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s (hang):\n{code}")
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


# Each call's output size overflows 64 bits or is far above any machine's memory;
# they used to loop for ever in the output allocator with the GIL held.
HUGE_CALLS = {
    "conv_forward_padding": "_core.conv2d_forward(x1, x1, None, 1, (0, 2**31 - 1, 0, 2**30 - 1))",
    "global_avg_pool_backward": "_core.global_avg_pool_backward(x1, (2**31, 2**30))",
    "avg_pool_backward": "_core.avg_pool2d_backward(x1, (2**31, 2**30), (2**31, 2**30), (2**31, 2**30))",
    "max_pool_backward": "_core.max_pool2d_backward(x1, np.zeros((1, 1, 1, 1), np.int64), (2**31, 2**30))",
    "conv_backward_input": "_core.conv2d_backward_input(x1, x1, (2**31, 2**30), (2**31, 2**30))",
    "gemm": "_core.gemm(np.zeros((2**22, 1), np.float32), np.zeros((1, 2**22), np.float32))",
}


@pytest.mark.parametrize("name", sorted(HUGE_CALLS))
def test_huge_outputs_are_refused_quickly(name):
    out = _run_child(f"""
        import numpy as np
        from gradvis import _core
        x1 = np.ones((1, 1, 1, 1), np.float32)
        try:
            {HUGE_CALLS[name]}
        except ValueError as e:
            print("ValueError:", e)
        """)
    assert "ValueError:" in out, out
    assert "an output of shape (" in out and "memory limit" in out or "overflows" in out, out


def test_default_memory_limit_is_the_physical_memory():
    expected = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert _core.get_memory_limit() == expected


def test_output_above_the_memory_limit_names_the_shape(memory_limit):
    x = np.ones((2, 4, 64, 64), F32)  # 128 KiB
    _core.set_memory_limit(1 << 18)
    _core.relu_forward(x)  # below the limit: fine
    with pytest.raises(ValueError, match=r"output of shape \(2, 16, 64, 64\) \(float32\) needs 524288 bytes, "
                                         r"more than the memory limit of 262144 bytes"):
        _core.conv2d_forward(x, np.ones((16, 4, 1, 1), F32))  # 512 KiB
    _core.set_memory_limit(1 << 20)
    assert _core.conv2d_forward(x, np.ones((16, 4, 1, 1), F32)).shape == (2, 16, 64, 64)


def test_workspace_above_the_memory_limit_is_refused(memory_limit):
    # The packed weights (1.2 MB) are a workspace of the implicit gemm; the output is 288 KiB.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 24, 24)).astype(F32)
    w = rng.standard_normal((128, 256, 3, 3)).astype(F32)
    old_algo = _core.get_conv_algorithm()
    try:
        _core.set_conv_algorithm("direct")
        expected = _core.conv2d_forward(x, w, None, 1, 1)
        _core.set_memory_limit(1 << 20)
        with pytest.raises(ValueError, match=r"workspace of \d+ bytes is above the memory limit of 1048576 bytes"):
            _core.conv2d_forward(x, w, None, 1, 1)
        _core.set_memory_limit(64 << 20)
        np.testing.assert_array_equal(_core.conv2d_forward(x, w, None, 1, 1), expected)
    finally:
        _core.set_conv_algorithm(old_algo)


def test_memory_limit_arguments(memory_limit):
    with pytest.raises(ValueError, match=r"set_memory_limit: nbytes must be in \[1, "):
        _core.set_memory_limit(0)
    with pytest.raises(TypeError, match=r"nbytes must be an int"):
        _core.set_memory_limit("1G")
    _core.set_memory_limit(12345678)
    assert _core.get_memory_limit() == 12345678


def test_block_cache_names_are_aliases():
    limit = _core.block_cache_info()["limit"]
    try:
        _core.set_array_pool_limit(3 << 20)
        assert _core.block_cache_info()["limit"] == 3 << 20
        _core.set_block_cache_limit(5 << 20)
        assert _core.array_pool_info()["limit"] == 5 << 20
    finally:
        _core.set_block_cache_limit(limit)


# ---- dout against the input's shape ----------------------------------------------
def test_backward_bindings_check_dout_against_the_input_shape():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8)).astype(F32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(F32)
    dout = rng.standard_normal((2, 4, 8, 8)).astype(F32)
    # the full shape gives the same result as (H, W)
    np.testing.assert_array_equal(_core.conv2d_backward_input(dout, w, x.shape, 1, 1),
                                  _core.conv2d_backward_input(dout, w, x.shape[2:], 1, 1))
    with pytest.raises(ValueError, match=r"conv2d_backward_input: dout shape \(2, 4, 8, 8\) .* not the input "
                                         r"shape \(3, 3, 8, 8\)"):
        _core.conv2d_backward_input(dout, w, (3, 3, 8, 8), 1, 1)

    pooled = rng.standard_normal((2, 3, 4, 4)).astype(F32)
    np.testing.assert_array_equal(_core.avg_pool2d_backward(pooled, x.shape, 2, 2),
                                  _core.avg_pool2d_backward(pooled, x.shape[2:], 2, 2))
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: dout shape \(2, 3, 4, 4\) does not match the "
                                         r"input shape \(1, 3, 8, 8\)"):
        _core.avg_pool2d_backward(pooled, (1, 3, 8, 8), 2, 2)

    out, argmax = _core.max_pool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(_core.max_pool2d_backward(pooled, argmax, x.shape),
                                  _core.max_pool2d_backward(pooled, argmax, x.shape[2:]))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: dout shape \(2, 3, 4, 4\) does not match"):
        _core.max_pool2d_backward(pooled, argmax, (2, 5, 8, 8))

    g = rng.standard_normal((2, 3, 1, 1)).astype(F32)
    np.testing.assert_array_equal(_core.global_avg_pool_backward(g, x.shape),
                                  _core.global_avg_pool_backward(g, x.shape[2:]))
    with pytest.raises(ValueError, match=r"global_avg_pool_backward: dout shape \(2, 3, 1, 1\) does not match"):
        _core.global_avg_pool_backward(g, (4, 3, 8, 8))


# ---- layouts -----------------------------------------------------------------------
UNARY = ["relu_forward", "sigmoid_forward", "tanh_forward", "hardswish_forward", "silu_forward"]


def _misaligned(values, dtype):
    """A view of `values` at an odd byte offset (np.frombuffer(buf, offset=1))."""
    values = np.asarray(values, dtype)
    buf = bytearray(values.nbytes + 1)
    a = np.frombuffer(buf, dtype, values.size, offset=1)
    a[...] = values.ravel()
    assert a.ctypes.data % a.itemsize != 0
    return a.reshape(values.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_misaligned_arrays_give_the_aligned_result(dtype):
    rng = np.random.default_rng(2)
    v = rng.standard_normal(64)
    for name in UNARY:
        fn = getattr(_core, name)
        np.testing.assert_array_equal(fn(_misaligned(v, dtype)), fn(np.asarray(v, dtype)))
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_array_equal(_core.conv2d_forward(_misaligned(x, dtype), _misaligned(w, dtype), None, 1, 1),
                                  _core.conv2d_forward(x.astype(dtype), w.astype(dtype), None, 1, 1))
    np.testing.assert_array_equal(_core.max_pool2d_forward(_misaligned(x, dtype), 2, 2)[0],
                                  _core.max_pool2d_forward(x.astype(dtype), 2, 2)[0])
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3))
    np.testing.assert_array_equal(_core.gemm(_misaligned(a, dtype), _misaligned(b, dtype)),
                                  _core.gemm(a.astype(dtype), b.astype(dtype)))
    g = rng.standard_normal(3) + 2
    np.testing.assert_array_equal(
        _core.batchnorm_forward_test(_misaligned(x, dtype), _misaligned(g, dtype), _misaligned(g, dtype),
                                     _misaligned(g, dtype), _misaligned(g, dtype), 1e-5),
        _core.batchnorm_forward_test(x.astype(dtype), *(g.astype(dtype),) * 4, 1e-5))


@pytest.mark.parametrize("name", UNARY)
def test_zero_d_arrays_keep_their_shape(name):
    x = np.array(0.75, F32)
    out = getattr(_core, name)(x)
    assert out.shape == () and out.dtype == F32
    np.testing.assert_array_equal(out, getattr(_core, name)(x.reshape(1))[0])
    dx = _core.relu_backward(np.array(2.0, F32), x)
    assert dx.shape == () and dx == 2.0


@pytest.mark.parametrize("stride", [2**31, 2**30, 2**29 + 3])
def test_padding_far_beyond_a_few_channel_image(stride):
    # The RGB-layer paths lay out a padded copy of the image; with padding and
    # strides this far beyond the image they read it in place instead (the copy's
    # size overflowed 64 bits).
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 3, 1, 1)).astype(F32)
    w = rng.standard_normal((2, 3, 1, 1)).astype(F32)
    pad = 2**31
    out = _core.conv2d_forward(x, w, None, stride, pad)
    n = out.shape[2]
    assert out.shape == (1, 2, n, n) and n == (1 + 2 * pad - 1) // stride + 1
    # Only the window whose corner lands on the pixel sees it: oh * stride == pad.
    expected = np.zeros(out.shape, F32)
    if pad % stride == 0:
        expected[0, :, pad // stride, pad // stride] = w[:, :, 0, 0] @ x[0, :, 0, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    dout = rng.standard_normal(out.shape).astype(F32)
    dx = _core.conv2d_backward_input(dout, w, x.shape, stride, pad)
    want = np.zeros(x.shape, F32)
    if pad % stride == 0:
        want[0, :, 0, 0] = w[:, :, 0, 0].T @ dout[0, :, pad // stride, pad // stride]
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
