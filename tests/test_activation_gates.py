"""Sigmoid, tanh, hard sigmoid, hard swish and SiLU (the activations and gates of
MobileNetV3 and EfficientNet) against float64 numpy, finite differences and torch."""

import zlib

import numpy as np
import pytest

from gradvis import _core
import reference_ops as ref
from conftest import require_torch

DTYPES = [np.float32, np.float64]
ONNX_HS = (0.2, 0.5)   # ONNX HardSigmoid's default alpha, beta (PyTorch's is 1/6, 1/2)

# name: (forward, backward(dout, x), float64 reference, kinks to keep away from)
OPS = {
    "sigmoid": (_core.sigmoid_forward, lambda g, x: _core.sigmoid_backward(g, _core.sigmoid_forward(x)),
                ref.sigmoid, []),
    "tanh": (_core.tanh_forward, lambda g, x: _core.tanh_backward(g, _core.tanh_forward(x)), ref.tanh, []),
    "hardsigmoid": (lambda x: _core.hardsigmoid_forward(x, 1 / 6, 0.5),
                    lambda g, x: _core.hardsigmoid_backward(g, x, 1 / 6, 0.5), ref.hardsigmoid, [-3.0, 3.0]),
    "hardsigmoid_onnx": (lambda x: _core.hardsigmoid_forward(x, *ONNX_HS),
                         lambda g, x: _core.hardsigmoid_backward(g, x, *ONNX_HS),
                         lambda x: ref.hardsigmoid(x, *ONNX_HS), [-2.5, 2.5]),
    "hardswish": (_core.hardswish_forward, _core.hardswish_backward, ref.hardswish, [-3.0, 3.0]),
    "silu": (_core.silu_forward, _core.silu_backward, ref.silu, []),
}

SHAPES = [(7,), (2, 3, 5, 7), (1, 3, 300, 301)]  # the last is large enough to use the threads


def tolerances(dtype):
    return dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward(dtype, op, shape):
    fwd, bwd, reference, kinks = OPS[op]
    rng = np.random.default_rng(zlib.crc32(repr((op, shape)).encode()))   # the same draw in every process
    x = ref.away_from(rng, shape, kinks).astype(dtype)
    out = fwd(x)
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, reference(x), **tolerances(dtype))
    dout = rng.standard_normal(shape).astype(dtype)
    dx = bwd(dout, x)
    assert dx.dtype == dtype and dx.shape == x.shape
    x64, dout64 = x.astype(np.float64), dout.astype(np.float64)
    # atol: the dense differences sum every element's term, whose rounding reaches ~1e-8
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-6, atol=5e-8)
    if x.size <= 300:
        num = ref.numeric_grad(reference, x64, dout64)
    else:   # dout times the local slope, centred differences elementwise
        num = dout64 * (reference(x64 + 1e-5) - reference(x64 - 1e-5)) / 2e-5
    np.testing.assert_allclose(dx, num, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(dtype):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    x = ref.away_from(rng, (2, 3, 9, 11), [-3.0, 3.0]).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    exact = dict(rtol=0, atol=0)
    close = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    # 1 - y*y (and 1 - y) near saturation: a one-ulp difference in the float32 output y
    # is an absolute error of about |dout| * 1e-7 in dx
    grad = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else close
    cases = [
        (torch.sigmoid, "sigmoid", close, grad),
        (torch.tanh, "tanh", close, grad),
        # torch's float64 hardsigmoid backward multiplies by float32's 1/6
        (F.hardsigmoid, "hardsigmoid", close, close if dtype == np.float32 else dict(rtol=1e-7, atol=0)),
        (F.hardswish, "hardswish", exact, exact),   # written as PyTorch writes it
        (F.silu, "silu", close, grad),
    ]
    for f, op, tol_fwd, tol_bwd in cases:
        fwd, bwd, _, _ = OPS[op]
        xt = torch.tensor(x, requires_grad=True)
        yt = f(xt)
        yt.backward(torch.tensor(dout))
        np.testing.assert_allclose(fwd(x), yt.detach().numpy(), err_msg=op, **tol_fwd)
        np.testing.assert_allclose(bwd(dout, x), xt.grad.numpy(), err_msg=op, **tol_bwd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_large_values_saturate_and_input_untouched(dtype):
    x = np.array([np.nan, -1000.0, -1.0, 2.0, 1000.0], dtype)
    keep = x.copy()
    for op, (fwd, bwd, _, _) in OPS.items():
        out = fwd(x)
        assert np.isnan(out[0]), op
        assert np.all(np.isfinite(out[1:])), (op, out)
        assert np.all(np.isfinite(bwd(np.ones_like(x), x)[1:])), op
    np.testing.assert_array_equal(_core.sigmoid_forward(x)[[1, 4]], [0, 1])
    np.testing.assert_array_equal(_core.tanh_forward(x)[[1, 4]], [-1, 1])
    np.testing.assert_array_equal(_core.silu_forward(x)[[1, 4]], [0, 1000])
    np.testing.assert_array_equal(_core.hardswish_forward(x)[[1, 4]], [0, 1000])
    np.testing.assert_array_equal(x[1:], keep[1:])
    # the dtype comes from dout; the second array converts to it
    assert _core.silu_backward(np.ones(5, np.float32), x.astype(np.float64)).dtype == np.float32


def test_non_contiguous_inputs_give_the_contiguous_result():
    rng = np.random.default_rng(5)
    big = rng.standard_normal((4, 6, 10)) * 3
    x = big[:, ::2, 1::3]                       # strided view
    f = np.asfortranarray(big[1])               # column-major
    assert not x.flags.c_contiguous and not f.flags.c_contiguous
    for op, (fwd, bwd, _, _) in OPS.items():
        for a in (x, f):
            np.testing.assert_array_equal(fwd(a), fwd(np.ascontiguousarray(a)), err_msg=op)
            g = a[..., ::-1]                    # a reversed view as dout
            np.testing.assert_array_equal(bwd(g, a), bwd(np.ascontiguousarray(g), np.ascontiguousarray(a)),
                                          err_msg=op)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _core.sigmoid_forward(np.zeros(3, np.int64)), "sigmoid_forward: x must be float32 or float64"),
        (lambda: _core.tanh_forward(np.zeros(3, np.complex64)), "x must be float32 or float64"),
        (lambda: _core.silu_forward([1.0, 2.0]), "silu_forward: x must be a numpy array"),
        (lambda: _core.hardswish_forward(np.zeros((2, 0))), "hardswish_forward: x is empty"),
        (lambda: _core.sigmoid_backward(np.zeros(3), np.zeros(4)), r"dout shape \(3,\) does not match out shape"),
        (lambda: _core.tanh_backward(np.zeros(3, np.int32), np.zeros(3)), "tanh_backward: dout must be float32"),
        (lambda: _core.silu_backward(np.zeros((2, 3)), np.zeros((3, 2))), "x shape"),
        (lambda: _core.hardswish_backward(np.zeros(3), np.array(["a", "b", "c"])), "x has unsupported dtype"),
        (lambda: _core.hardsigmoid_forward(np.zeros(3), np.nan, 0.5), "alpha must be finite"),
        (lambda: _core.hardsigmoid_forward(np.zeros(3), 0.2, np.inf), "beta must be finite"),
        (lambda: _core.hardsigmoid_backward(np.zeros(3), np.zeros(3), 0.2, -np.inf), "beta must be finite"),
        (lambda: _core.hardsigmoid_backward(np.zeros(3), np.zeros(2), 0.2, 0.5), "dout shape"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
