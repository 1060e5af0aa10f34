"""The output pool: large kernel outputs reuse freed blocks.

A reused block holds whatever its last array held, so every kernel must write
all of its output: each op below runs once on fresh (zeroed) pages, then again
after its output sizes were filled with NaN and handed back, and must give the
same result.
"""
import gc

import numpy as np
import pytest

import gradvis
from gradvis import _core

MIN_BYTES = 256 << 10


@pytest.fixture(autouse=True)
def restore_limit():
    limit = gradvis.array_pool_info()["limit"]
    yield
    gradvis.set_array_pool_limit(limit)


def arrays_in(result):
    if isinstance(result, np.ndarray):
        return [result]
    return [a for a in result if isinstance(a, np.ndarray)]


def poison(nbytes, copies=3):
    """Hands the pool `copies` NaN-filled blocks of each size."""
    held = []
    for nb in nbytes:
        n = nb // 4
        for _ in range(copies):
            # (n, 1) float32 = exactly nb bytes, every element NaN
            held.append(_core.gemm(np.full((n, 1), np.nan, np.float32), np.ones((1, 1), np.float32)))
    assert all(np.isnan(a).all() for a in held)
    del held
    gc.collect()


rng = np.random.default_rng(0)
F32 = np.float32


def randn(*shape, dtype=F32):
    return rng.standard_normal(shape).astype(dtype)


x_conv = randn(4, 32, 32, 32)
w_conv = randn(32, 32, 3, 3) * 0.1
b_conv = randn(32)
x_rgb = randn(8, 3, 64, 64)
w_rgb = randn(32, 3, 5, 5) * 0.1
dout_rgb = randn(8, 32, 32, 32)
x_wide = randn(4, 128, 16, 16)
x_conv64 = x_conv.astype(np.float64)
w_conv64 = w_conv.astype(np.float64)
x_aff = randn(512, 256)
w_aff = randn(256, 256) * 0.1
d_aff = randn(512, 256)
x_pool = randn(8, 32, 32, 32)
d_pool2 = randn(8, 32, 16, 16)
d_gap = randn(64, 32, 1, 1)
gamma, beta = randn(32), randn(32)
mean, var = randn(32), np.abs(randn(32)) + 0.5
mean_ln, rstd_ln = randn(8, 32, 32), np.abs(randn(8, 32, 32)) + 0.5

OPS = {
    "conv_forward": lambda: _core.conv2d_forward(x_conv, w_conv, b_conv, padding=1),
    "conv_forward_relu": lambda: _core.conv2d_forward(x_conv, w_conv, b_conv, padding=1, relu=True),
    "conv_forward_f64": lambda: _core.conv2d_forward(x_conv64, w_conv64, None, padding=1),
    "conv_backward_input": lambda: _core.conv2d_backward_input(x_conv, w_conv, (32, 32), padding=1),
    "conv_backward_input_stride2": lambda: _core.conv2d_backward_input(x_conv[:, :, :16, :16].copy(), w_conv,
                                                                       (32, 32), stride=2, padding=1),
    "conv_backward_weight": lambda: _core.conv2d_backward_weight(x_wide, x_wide, (3, 3), padding=1),
    "rgb_forward": lambda: _core.conv2d_forward(x_rgb, w_rgb, None, stride=2, padding=2),
    "rgb_backward_input": lambda: _core.conv2d_backward_input(dout_rgb, w_rgb, (64, 64), stride=2, padding=2),
    "depthwise_forward": lambda: _core.conv2d_forward(x_conv, w_conv[:, :1], None, padding=1, groups=32),
    "depthwise_backward_input": lambda: _core.conv2d_backward_input(x_conv, w_conv[:, :1].copy(), (32, 32),
                                                                    padding=1, groups=32),
    "gemm": lambda: _core.gemm(x_aff, w_aff),
    "affine_forward": lambda: _core.affine_forward(x_aff, w_aff, b_conv[:1].repeat(256)),
    "affine_backward": lambda: _core.affine_backward(d_aff, x_aff, w_aff),
    "max_pool_forward": lambda: _core.max_pool2d_forward(x_pool, 2, 2),
    "max_pool_backward": lambda: _core.max_pool2d_backward(d_pool2, _core.max_pool2d_forward(x_pool, 2, 2)[1],
                                                           (32, 32)),
    "max_pool_3x3s2_backward": lambda: _core.max_pool2d_backward(
        d_pool2[:, :, :15, :15].copy(), _core.max_pool2d_forward(x_pool, 3, 2)[1], (32, 32)),
    "avg_pool_forward": lambda: _core.avg_pool2d_forward(x_pool, 2, 2),
    "avg_pool_backward": lambda: _core.avg_pool2d_backward(d_pool2, (32, 32), 3, 2, padding=1),
    "global_avg_pool_backward": lambda: _core.global_avg_pool_backward(d_gap, (32, 32)),
    "relu": lambda: (_core.relu_forward(x_pool), _core.relu_backward(x_pool, x_pool)),
    "clamp": lambda: (_core.clamp_forward(x_pool, -0.5, 0.5), _core.clamp_backward(x_pool, x_pool, -0.5, 0.5)),
    "leaky_relu": lambda: (_core.leaky_relu_forward(x_pool, 0.1), _core.leaky_relu_backward(x_pool, x_pool, 0.1)),
    "sigmoid_tanh": lambda: (_core.sigmoid_forward(x_pool), _core.sigmoid_backward(x_pool, x_pool),
                             _core.tanh_forward(x_pool), _core.tanh_backward(x_pool, x_pool)),
    "hard_and_silu": lambda: (_core.hardsigmoid_forward(x_pool, 0.2, 0.5), _core.hardswish_forward(x_pool),
                              _core.hardswish_backward(x_pool, x_pool), _core.silu_forward(x_pool),
                              _core.silu_backward(x_pool, x_pool)),
    "batchnorm_train": lambda: _core.batchnorm_forward_train(x_pool, gamma, beta, 1e-5),
    "batchnorm_test": lambda: _core.batchnorm_forward_test(x_pool, gamma, beta, mean, var, 1e-5),
    "batchnorm_backward_train": lambda: _core.batchnorm_backward_train(x_pool, x_pool, gamma, mean, 1 / np.sqrt(var)),
    "batchnorm_backward_test": lambda: _core.batchnorm_backward_test(x_pool, x_pool, gamma, mean, var, 1e-5),
    "blur": lambda: (_core.gaussian_blur(x_pool, 1.5), _core.gaussian_blur_adjoint(x_pool, (1.0, 2.0))),
    "gelu_erf": lambda: (_core.gelu_forward(x_pool), _core.gelu_backward(x_pool, x_pool, "tanh"),
                         _core.erf_forward(x_pool), _core.erf_backward(x_pool, x_pool)),
    "channel_scale_add": lambda: (_core.channel_scale_forward(x_pool, gamma), _core.add_forward(x_pool, x_pool),
                                  _core.channel_scale_backward(x_pool, x_pool, gamma)[0]),
    "layernorm": lambda: (_core.layernorm_forward(x_pool, gamma, beta, 1, 2)[0],
                          _core.layernorm_backward(x_pool, x_pool, mean_ln, rstd_ln, gamma, 1, 2)[0]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_reused_blocks_are_fully_overwritten(name):
    op = OPS[name]
    gradvis.set_array_pool_limit(0)  # fresh pages: the reference result
    ref = [a.copy() for a in arrays_in(op())]
    assert any(a.nbytes >= MIN_BYTES for a in ref), "the op's outputs should be large enough to be pooled"
    gradvis.set_array_pool_limit(1 << 30)
    poison([a.nbytes for a in ref if a.nbytes >= MIN_BYTES])
    before = gradvis.array_pool_info()["reused"]
    out = arrays_in(op())
    assert gradvis.array_pool_info()["reused"] > before, "the op should have reused a pooled block"
    for r, o in zip(ref, out):
        assert o.shape == r.shape and o.dtype == r.dtype
        np.testing.assert_array_equal(o, r)


def test_large_outputs_come_from_the_pool_and_go_back():
    gradvis.set_array_pool_limit(1 << 30)
    gradvis.set_array_pool_limit(0)
    gradvis.set_array_pool_limit(1 << 30)
    info0 = gradvis.array_pool_info()
    assert info0["free_bytes"] == 0 and info0["free_blocks"] == 0
    y = _core.relu_forward(x_pool)  # 1 MiB
    assert y.flags.c_contiguous and y.flags.writeable and y.flags.aligned
    info1 = gradvis.array_pool_info()
    assert info1["used_bytes"] - info0["used_bytes"] >= y.nbytes
    assert info1["fresh"] == info0["fresh"] + 1
    view = y[1:3]
    del y
    gc.collect()
    # the view keeps the block alive
    assert gradvis.array_pool_info()["used_bytes"] == info1["used_bytes"]
    np.testing.assert_array_equal(view, np.maximum(x_pool[1:3], 0))
    del view
    gc.collect()
    info2 = gradvis.array_pool_info()
    assert info2["used_bytes"] == info0["used_bytes"]
    assert info2["free_blocks"] == 1 and info2["free_bytes"] >= x_pool.nbytes
    y = _core.relu_forward(-x_pool)  # same size: the same block again
    info3 = gradvis.array_pool_info()
    assert info3["reused"] == info2["reused"] + 1 and info3["free_blocks"] == 0
    np.testing.assert_array_equal(y, np.maximum(-x_pool, 0))
    # nearly the same size shares the block's size class
    del y
    gc.collect()
    z = _core.relu_forward(x_pool[:, :, :, :31].copy())
    assert gradvis.array_pool_info()["reused"] == info3["reused"] + 1
    np.testing.assert_array_equal(z, np.maximum(x_pool[:, :, :, :31], 0))


def test_small_outputs_are_plain_numpy_arrays():
    y = _core.relu_forward(randn(2, 3, 8, 8))
    assert y.base is None and y.flags.owndata


def test_limit_drops_oldest_free_blocks():
    gradvis.set_array_pool_limit(0)
    gradvis.set_array_pool_limit(1 << 30)
    a = _core.relu_forward(randn(1 << 18))  # 1 MiB
    b = _core.relu_forward(randn(1 << 19))  # 2 MiB
    del a
    gc.collect()
    del b
    gc.collect()
    info = gradvis.array_pool_info()
    assert info["free_blocks"] == 2 and info["free_bytes"] == 3 << 20
    gradvis.set_array_pool_limit(2 << 20)  # drops the 1 MiB block, released first
    info = gradvis.array_pool_info()
    assert info["free_blocks"] == 1 and info["free_bytes"] == 2 << 20 and info["limit"] == 2 << 20
    c = _core.relu_forward(randn(1 << 19))
    assert gradvis.array_pool_info()["free_blocks"] == 0
    gradvis.set_array_pool_limit(0)
    del c
    gc.collect()
    info = gradvis.array_pool_info()
    assert info["free_blocks"] == 0 and info["free_bytes"] == 0  # a limit of 0 keeps nothing


def test_limit_argument_is_checked():
    with pytest.raises(ValueError, match=r"nbytes must be in \[0, "):
        gradvis.set_array_pool_limit(-1)
    with pytest.raises(TypeError):
        gradvis.set_array_pool_limit("1GB")


def test_pooled_arrays_behave_like_numpy_arrays():
    gradvis.set_array_pool_limit(1 << 30)
    y = _core.relu_forward(x_pool)
    assert type(y.base).__name__ == "PyCapsule"  # a pooled block
    y += 1  # writeable
    import pickle
    z = pickle.loads(pickle.dumps(y))
    np.testing.assert_array_equal(z, y)
    assert np.shares_memory(y.reshape(-1), y)
    assert y.sum() == pytest.approx(float(np.maximum(x_pool, 0).sum(dtype=np.float64) + y.size), rel=1e-5)
