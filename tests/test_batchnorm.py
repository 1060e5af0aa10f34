"""Spatial batch norm (train and test mode) against the float64 reference,
finite differences and torch.nn.functional.batch_norm."""

import numpy as np
import pytest

import gradvis
from gradvis import _core
import reference_ops as ref
from conftest import require_torch

DTYPES = [np.float32, np.float64]
SHAPES = [(4, 3, 5, 7), (1, 2, 9, 4), (2, 5, 1, 1), (6, 4), (3, 17, 6, 5)]
# Large enough to run in parallel blocks: 4x4 planes (a block of all 64
# images), 3x3 (under a vector; the pivot reads whole planes), 7x7 (vector
# tails), planes longer than a block's float run (cut in pieces), one image,
# and (N, D) rows (channels in the vector lanes, and past the last full vector).
BIG_SHAPES = [(64, 24, 4, 4), (64, 40, 3, 3), (16, 20, 7, 7), (2, 3, 70, 70), (1, 40, 24, 24), (300, 70)]


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)


def params(rng, C):
    return (rng.standard_normal(C), rng.standard_normal(C), rng.standard_normal(C), rng.uniform(0.5, 2.0, C))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_train_and_test(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    gamma, beta, rm, rv = params(rng, shape[1])
    out, mean, var, inv_std = _core.batchnorm_forward_train(x, gamma, beta, 1e-5)
    r = ref.batchnorm_train(x, gamma, beta, 1e-5)
    for got, want in zip((out, mean, var, inv_std), r):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol(dtype))
    out = _core.batchnorm_forward_test(x, gamma, beta, rm, rv, 1e-3)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, ref.batchnorm_test(x, gamma, beta, rm, rv, 1e-3), **tol(dtype))


def test_variance_is_accurate_with_a_large_mean():
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((8, 2, 16, 16))).astype(np.float32)
    _, mean, var, _ = _core.batchnorm_forward_train(x, np.ones(2), np.zeros(2), 1e-5)
    want = x.astype(np.float64).var(axis=(0, 2, 3))
    np.testing.assert_allclose(var, want, rtol=1e-5)


def ref_backward_train(dout, x, gamma, mean, inv_std):
    """dx, dgamma, dbeta in float64 from the closed form."""
    dout, x = (np.asarray(a, np.float64) for a in (dout, x))
    axes, f = ref._bn_axes(x), lambda v: ref._bn_shape(x, np.asarray(v, np.float64))
    M = x.size // x.shape[1]
    xhat = (x - f(mean)) * f(inv_std)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dx = f(np.asarray(gamma, np.float64) * inv_std) * (dout - f(dbeta) / M - xhat * f(dgamma) / M)
    return dx, dgamma, dbeta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BIG_SHAPES)
def test_larger_shapes_match_float64(dtype, shape):
    rng = np.random.default_rng(int(np.prod(shape)))
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma, beta, rm, rv = (p.astype(dtype) for p in params(rng, shape[1]))
    out, mean, var, inv_std = _core.batchnorm_forward_train(x, gamma, beta, 1e-5)
    want = ref.batchnorm_train(x, gamma, beta, 1e-5)
    for got, w in zip((out, mean, var, inv_std), want):
        np.testing.assert_allclose(got, w, **tol(dtype))
    got = _core.batchnorm_backward_train(dout, x, gamma, mean, inv_std)
    for g, w in zip(got, ref_backward_train(dout, x, gamma, mean, inv_std)):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, **tol(dtype))
    np.testing.assert_allclose(_core.batchnorm_forward_test(x, gamma, beta, rm, rv, 1e-5),
                               ref.batchnorm_test(x, gamma, beta, rm, rv, 1e-5), **tol(dtype))
    k = gamma.astype(np.float64) / np.sqrt(rv.astype(np.float64) + 1e-5)
    dx, dgamma, dbeta = _core.batchnorm_backward_test(dout, x, gamma, rm, rv, 1e-5)
    axes, f = ref._bn_axes(x), lambda v: ref._bn_shape(x, v.astype(np.float64))
    np.testing.assert_allclose(dx, dout * f(k), **tol(dtype))
    np.testing.assert_allclose(dbeta, dout.astype(np.float64).sum(axis=axes), **tol(dtype))
    xhat = (x.astype(np.float64) - f(rm)) / np.sqrt(f(rv) + 1e-5)
    np.testing.assert_allclose(dgamma, (dout * xhat).sum(axis=axes), **tol(dtype))
    dx_only = _core.batchnorm_backward_test_input(dout, gamma, rv, 1e-5)
    assert dx_only.dtype == dtype and dx_only.shape == shape
    np.testing.assert_array_equal(dx_only, dx)


def test_variance_when_the_pivot_sample_is_far_from_the_mean():
    # The variance is taken about the mean of 16 elements spread over a
    # block's first plane (here rows 0, 16, .., 240 of column 0) and, when that
    # pivot turns out far from the mean, once more about the mean. Here the
    # sampled elements sit 100 standard deviations from most others.
    rng = np.random.default_rng(7)
    x = 0.01 * rng.standard_normal((1, 2, 256, 256)).astype(np.float32)
    x[0, :, ::8, 0] += 1
    x[0, 1] += 3e3
    # and every other image far from the rest
    y = rng.standard_normal((64, 4, 8, 8)).astype(np.float32)
    y[::2] += 50
    for a in (x, y):
        C = a.shape[1]
        _, mean, var, _ = _core.batchnorm_forward_train(a, np.ones(C), np.zeros(C), 1e-5)
        want = ref.batchnorm_train(a, np.ones(C), np.zeros(C), 1e-5)
        np.testing.assert_allclose(mean, want[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(var, want[2], rtol=1e-5)


def test_output_keeps_its_precision_with_a_large_mean():
    rng = np.random.default_rng(8)
    x = (1e4 + rng.standard_normal((16, 3, 8, 8))).astype(np.float32)
    g, b = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, -1.0])
    out, *_ = _core.batchnorm_forward_train(x, g, b, 1e-5)
    np.testing.assert_allclose(out, ref.batchnorm_train(x, g, b, 1e-5)[0], rtol=0, atol=2e-5)


@pytest.mark.parametrize("shape", [(64, 24, 8, 8), (3, 10, 40, 40), (8, 3, 40, 40), (300, 70)])
def test_results_do_not_depend_on_the_thread_count(shape):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) + 1).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    g, b = np.ones(shape[1], np.float32), np.zeros(shape[1], np.float32)
    old = gradvis.get_num_threads()
    runs = []
    try:
        for nt in (1, 2, 3):
            gradvis.set_num_threads(nt)
            out, mean, var, inv_std = _core.batchnorm_forward_train(x, g, b, 1e-5)
            runs.append((out, mean, var, inv_std) + tuple(_core.batchnorm_backward_train(dout, x, g, mean, inv_std)))
    finally:
        gradvis.set_num_threads(old)
    for other in runs[1:]:
        for a, b_ in zip(runs[0], other):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_backward_train_matches_finite_differences(shape):
    rng = np.random.default_rng(40 + len(shape))
    x = rng.standard_normal(shape) * 2 + 0.5
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    dout = rng.standard_normal(shape)
    eps = 1e-5
    _, mean, _, inv_std = _core.batchnorm_forward_train(x, gamma, beta, eps)
    dx, dgamma, dbeta = _core.batchnorm_backward_train(dout, x, gamma, mean, inv_std)
    f = lambda v: _core.batchnorm_forward_train(v, gamma, beta, eps)[0]
    np.testing.assert_allclose(dx, ref.numeric_grad(f, x, dout), rtol=1e-5, atol=1e-7)
    fg = lambda g: _core.batchnorm_forward_train(x, g, beta, eps)[0]
    np.testing.assert_allclose(dgamma, ref.numeric_grad(fg, gamma, dout), rtol=1e-6, atol=1e-7)
    fb = lambda b: _core.batchnorm_forward_train(x, gamma, b, eps)[0]
    np.testing.assert_allclose(dbeta, ref.numeric_grad(fb, beta, dout), rtol=1e-6, atol=1e-7)
    # float32 agrees with float64.
    d32 = _core.batchnorm_backward_train(dout.astype(np.float32), x, gamma, mean, inv_std)
    for a, b in zip(d32, (dx, dgamma, dbeta)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_backward_test_matches_finite_differences(shape):
    rng = np.random.default_rng(50 + len(shape))
    x = rng.standard_normal(shape)
    gamma, beta, rm, rv = params(rng, shape[1])
    dout = rng.standard_normal(shape)
    dx, dgamma, dbeta = _core.batchnorm_backward_test(dout, x, gamma, rm, rv, 1e-3)
    f = lambda v: _core.batchnorm_forward_test(v, gamma, beta, rm, rv, 1e-3)
    np.testing.assert_allclose(dx, ref.numeric_grad(f, x, dout), rtol=1e-6, atol=1e-8)
    fg = lambda g: _core.batchnorm_forward_test(x, g, beta, rm, rv, 1e-3)
    np.testing.assert_allclose(dgamma, ref.numeric_grad(fg, gamma, dout), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, dout.sum(axis=ref._bn_axes(x)), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (6, 4)])
def test_matches_torch(dtype, training, shape):
    torch = require_torch()
    rng = np.random.default_rng(60)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma, beta, rm, rv = (p.astype(dtype) for p in params(rng, shape[1]))
    dout = rng.standard_normal(shape).astype(dtype)
    eps = 1e-5
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yt = torch.nn.functional.batch_norm(xt, torch.tensor(rm), torch.tensor(rv), gt, bt, training, 0.1, eps)
    yt.backward(torch.tensor(dout))
    if training:
        out, mean, _, inv_std = _core.batchnorm_forward_train(x, gamma, beta, eps)
        grads = _core.batchnorm_backward_train(dout, x, gamma, mean, inv_std)
    else:
        out = _core.batchnorm_forward_test(x, gamma, beta, rm, rv, eps)
        grads = _core.batchnorm_backward_test(dout, x, gamma, rm, rv, eps)
    np.testing.assert_allclose(out, yt.detach().numpy(), **tol(dtype))
    for got, t in zip(grads, (xt, gt, bt)):
        np.testing.assert_allclose(got, t.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, c: _core.batchnorm_forward_train(x[0], c, c, 1e-5), "x must be 2-D .* or 4-D"),
        (lambda x, c: _core.batchnorm_forward_train(x.astype(np.int16), c, c, 1e-5), "x must be float32"),
        (lambda x, c: _core.batchnorm_forward_train(x[:0], c, c, 1e-5), "x is empty"),
        (lambda x, c: _core.batchnorm_forward_train(x, c[:2], c, 1e-5), "gamma must have shape \\(3,\\)"),
        (lambda x, c: _core.batchnorm_forward_train(x, c, c[:2], 1e-5), "beta must have shape"),
        (lambda x, c: _core.batchnorm_forward_train(x, c, c, 0.0), "eps must be positive"),
        (lambda x, c: _core.batchnorm_forward_test(x, c, c, c, c[:1], 1e-5), "running_var must have shape"),
        (lambda x, c: _core.batchnorm_forward_test(x, c, c, c, -c, 1e-5), "running_var must be non-negative"),
        (lambda x, c: _core.batchnorm_forward_test(x, c, c, c, c, -1.0), "eps"),
        (lambda x, c: _core.batchnorm_backward_train(x[:, :2], x, c, c, c), "dout shape"),
        (lambda x, c: _core.batchnorm_backward_train(x, x, c, c[:1], c), "mean must have shape"),
        (lambda x, c: _core.batchnorm_backward_train(x, x, c, c, c[:1]), "inv_std must have shape"),
        (lambda x, c: _core.batchnorm_backward_test(x, x[:1], c, c, c, 1e-5), "dout shape"),
        (lambda x, c: _core.batchnorm_backward_test(x, x, c, c[:2], c, 1e-5), "running_mean must have shape"),
        (lambda x, c: _core.batchnorm_backward_test_input(x[0], c, c, 1e-5), "dout must be 2-D .* or 4-D"),
        (lambda x, c: _core.batchnorm_backward_test_input(x, c[:2], c, 1e-5), "gamma must have shape"),
        (lambda x, c: _core.batchnorm_backward_test_input(x, c, -c, 1e-5), "running_var must be non-negative"),
        (lambda x, c: _core.batchnorm_backward_test_input(x, c, c, 0.0), "eps must be positive"),
    ],
)
def test_bad_inputs_raise(call, match):
    x = np.ones((2, 3, 4, 4))
    c = np.ones(3)
    with pytest.raises((ValueError, TypeError), match=match):
        call(x, c)
