"""gradvis.layers: the CS231n contract (names, arguments, caches, bn_param
semantics, dtypes) and gradient checks of composed layers."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from gradvis import layers
from reference_ops import numeric_grad as num_grad
from conftest import require


def conv_ref(x, w, b, stride, pad):
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum("nchwij,fcij->nfhw", win, w.astype(np.float64))
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(a) + np.abs(b)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_forward_matches_reference_and_keeps_dtype(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out, _ = layers.conv_forward(x, w, b, {"stride": 2, "pad": 1})
    assert out.dtype == dtype
    assert out.shape == (2, 4, 5, 4)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(out, conv_ref(x, w, b, 2, 1)) < tol


def test_float16_is_computed_in_float32_and_ints_are_refused():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float16)
    w = rng.standard_normal((3, 2, 3, 3))
    out, _ = layers.conv_forward(x, w, None, {"stride": 1, "pad": 0})
    assert out.dtype == np.float32
    with pytest.raises(TypeError, match="x"):
        layers.conv_forward(np.ones((1, 2, 5, 5), dtype=np.int32), w, None, {"stride": 1, "pad": 0})
    with pytest.raises(TypeError, match="x"):
        layers.relu_forward(np.ones((2, 2), dtype=np.complex64))


def test_conv_param_unknown_key_is_an_error():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown"):
        layers.conv_forward(x, np.zeros((1, 1, 3, 3)), None, {"stride": 1, "padding": 1})


def test_non_contiguous_inputs_are_accepted_and_not_modified():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2, 3, 10, 12))
    x = base[:, :, ::2, ::2]          # a strided view
    w = rng.standard_normal((3, 3, 3, 2)).transpose(0, 1, 3, 2)  # non-contiguous weights
    x_copy, w_copy = x.copy(), w.copy()
    out, cache = layers.conv_forward(x, w, None, {"stride": 1, "pad": 1})
    assert np.allclose(out, conv_ref(x, w, None, 1, 1))
    layers.conv_backward(np.ones_like(out), cache)
    assert np.array_equal(x, x_copy) and np.array_equal(w, w_copy)


def test_affine_flattens_and_restores_shape():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3, 5))
    w = rng.standard_normal((30, 7))
    b = rng.standard_normal(7)
    out, cache = layers.affine_forward(x, w, b)
    assert np.allclose(out, x.reshape(4, -1) @ w + b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = layers.affine_backward(dout, cache)
    assert dx.shape == x.shape
    assert np.allclose(dw, x.reshape(4, -1).T @ dout)
    assert np.allclose(db, dout.sum(0))
    assert np.allclose(dx, (dout @ w.T).reshape(x.shape))


def test_spatial_batchnorm_train_updates_running_stats_as_new_arrays():
    rng = np.random.default_rng(4)
    x = 3 + 2 * rng.standard_normal((5, 3, 4, 6))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = np.ones(3), np.full(3, 2.0)
    bn_param = {"mode": "train", "momentum": 0.8, "running_mean": rm, "running_var": rv}
    out, _ = layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))  # biased
    xhat = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + 1e-5)
    assert np.allclose(out, gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1))
    assert np.allclose(bn_param["running_mean"], 0.8 * 1 + 0.2 * mean)
    assert np.allclose(bn_param["running_var"], 0.8 * 2 + 0.2 * var)
    assert np.array_equal(rm, np.ones(3)) and np.array_equal(rv, np.full(3, 2.0))
    assert bn_param["running_mean"] is not rm


def test_batchnorm_running_stats_start_at_zero_and_test_mode_uses_them():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4))
    gamma, beta = np.ones(4), np.zeros(4)
    bn_param = {"mode": "train"}
    layers.batchnorm_forward(x, gamma, beta, bn_param)
    assert np.allclose(bn_param["running_mean"], 0.1 * x.mean(0))
    bn_param["mode"] = "test"
    out, _ = layers.batchnorm_forward(x, gamma, beta, bn_param)
    expect = (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-5)
    assert np.allclose(out, expect)


def test_softmax_loss_value_and_gradient():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 5, 6)
    loss, dx = layers.softmax_loss(x, y)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.isclose(loss, -np.mean(np.log(p[np.arange(6), y])))
    g = num_grad(lambda z: np.array(layers.softmax_loss(z, y)[0]), x.copy(), 1.0)
    assert rel_err(dx, g) < 1e-7
    with pytest.raises(ValueError, match="labels"):
        layers.softmax_loss(x, np.full(6, 5))
    with pytest.raises(TypeError, match="y"):
        layers.softmax_loss(x, np.zeros(6))


def test_cs231n_blur_is_the_course_kernel_with_zero_padding():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 7))
    k = np.array([[1, 2, 1], [2, 188, 2], [1, 2, 1]]) / 200.0
    w = np.zeros((3, 3, 3, 3))
    for c in range(3):
        w[c, c] = k
    assert np.allclose(layers.cs231n_blur(x), conv_ref(x, w, None, 1, 1))
    y = rng.standard_normal(x.shape)
    assert np.isclose(np.sum(layers.cs231n_blur(x) * y), np.sum(x * layers.cs231n_blur_adjoint(y)))


def test_gaussian_blur_matches_scipy_and_adjoint_identity():
    ndimage = require("scipy.ndimage")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 11, 9))
    for s in (0.5, 1.0, 2.5):
        assert np.allclose(layers.gaussian_blur(x, s), ndimage.gaussian_filter(x, (0, 0, s, s)), atol=1e-12)
        y = rng.standard_normal(x.shape)
        assert np.isclose(np.sum(layers.gaussian_blur(x, s) * y),
                          np.sum(x * layers.gaussian_blur_adjoint(y, s)))


def test_max_pool_cs231n_params_and_backward_routes_to_max():
    rng = np.random.default_rng(9)
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(np.float64)
    out, cache = layers.max_pool_forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert np.array_equal(out, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    dx = layers.max_pool_backward(np.ones_like(out), cache)
    assert dx.sum() == out.size
    assert np.array_equal(np.sort(x[dx == 1]), np.sort(out.ravel()))


def test_conv_bn_relu_pool_affine_chain_gradient_check():
    """The whole chain the default model is made of, against finite differences."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 8, 8))
    w1 = 0.3 * rng.standard_normal((4, 3, 3, 3))
    b1 = rng.standard_normal(4)
    gamma, beta = 1 + 0.1 * rng.standard_normal(4), 0.1 * rng.standard_normal(4)
    w2 = 0.3 * rng.standard_normal((4 * 4 * 4, 5))
    b2 = rng.standard_normal(5)
    y = np.array([1, 3])
    cp = {"stride": 1, "pad": 1}
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}

    def loss_of(x, w1):
        a, c1 = layers.conv_forward(x, w1, b1, cp)
        bn, c2 = layers.spatial_batchnorm_forward(a, gamma, beta, {"mode": "train"})
        r, c3 = layers.relu_forward(bn)
        p, c4 = layers.max_pool_forward(r, pp)
        s, c5 = layers.affine_forward(p, w2, b2)
        loss, ds = layers.softmax_loss(s, y)
        return loss, (c1, c2, c3, c4, c5, ds)

    loss, (c1, c2, c3, c4, c5, ds) = loss_of(x, w1)
    dp, _, _ = layers.affine_backward(ds, c5)
    dr = layers.max_pool_backward(dp, c4)
    dbn = layers.relu_backward(dr, c3)
    da, _, _ = layers.spatial_batchnorm_backward(dbn, c2)
    dx, dw1, db1 = layers.conv_backward(da, c1)
    gx = num_grad(lambda z: np.array(loss_of(z, w1)[0]), x.copy(), 1.0)
    gw = num_grad(lambda z: np.array(loss_of(x, z)[0]), w1.copy(), 1.0)
    assert rel_err(dx, gx) < 1e-5
    assert rel_err(dw1, gw) < 1e-5
