"""ReLU, clamp (ReLU6) and leaky ReLU against numpy, finite differences and torch."""

import zlib

import numpy as np
import pytest

from gradvis import _core
import reference_ops as ref
from conftest import require_torch

DTYPES = [np.float32, np.float64]


OPS = {
    "relu": (lambda x: _core.relu_forward(x), lambda g, x: _core.relu_backward(g, x), ref.relu, [0.0]),
    "relu6": (
        lambda x: _core.clamp_forward(x, 0.0, 6.0),
        lambda g, x: _core.clamp_backward(g, x, 0.0, 6.0),
        lambda x: ref.clamp(x, 0.0, 6.0),
        [0.0, 6.0],
    ),
    "clamp": (
        lambda x: _core.clamp_forward(x, -1.5, 2.0),
        lambda g, x: _core.clamp_backward(g, x, -1.5, 2.0),
        lambda x: ref.clamp(x, -1.5, 2.0),
        [-1.5, 2.0],
    ),
    "leaky": (
        lambda x: _core.leaky_relu_forward(x, 0.1),
        lambda g, x: _core.leaky_relu_backward(g, x, 0.1),
        lambda x: ref.leaky_relu(x, 0.1),
        [0.0],
    ),
}

SHAPES = [(7,), (3, 5), (2, 3, 5, 7), (1, 3, 300, 301)]  # the last is large enough to use the threads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward(dtype, op, shape):
    fwd, bwd, reference, kinks = OPS[op]
    rng = np.random.default_rng(zlib.crc32(repr((op, shape)).encode()))   # the same draw in every process
    x = ref.away_from(rng, shape, kinks).astype(dtype)
    out = fwd(x)
    assert out.dtype == dtype and out.shape == x.shape
    # float32 kernels compute in float32 (alpha rounded), the reference in float64.
    np.testing.assert_allclose(out, reference(x), rtol=1e-6 if dtype == np.float32 else 0, atol=0)
    dout = rng.standard_normal(shape).astype(dtype)
    dx = bwd(dout, x)
    assert dx.dtype == dtype and dx.shape == x.shape
    if x.size <= 200:
        num = ref.numeric_grad(lambda v: reference(v), x.astype(np.float64), dout.astype(np.float64))
        np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-6)
    else:
        # Analytic: dout times the local slope.
        slope = (reference(x.astype(np.float64) + 1e-4) - reference(x.astype(np.float64) - 1e-4)) / 2e-4
        np.testing.assert_allclose(dx, dout.astype(np.float64) * slope, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(dtype):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    x = ref.away_from(rng, (2, 3, 9, 11), [0.0, 6.0]).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    cases = [
        (F.relu, _core.relu_forward(x), _core.relu_backward(dout, x)),
        (F.relu6, _core.clamp_forward(x, 0, 6), _core.clamp_backward(dout, x, 0, 6)),
        (lambda t: F.hardtanh(t, -1.0, 1.0), _core.clamp_forward(x, -1, 1), _core.clamp_backward(dout, x, -1, 1)),
        (lambda t: F.leaky_relu(t, 0.2), _core.leaky_relu_forward(x, 0.2), _core.leaky_relu_backward(dout, x, 0.2)),
    ]
    for f, out, dx in cases:
        xt = torch.tensor(x, requires_grad=True)
        yt = f(xt)
        yt.backward(torch.tensor(dout))
        np.testing.assert_array_equal(out, yt.detach().numpy())
        np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_nan_propagates_and_input_untouched():
    x = np.array([np.nan, -1.0, 2.0, 7.0])
    keep = x.copy()
    assert np.isnan(_core.relu_forward(x)[0])
    assert np.isnan(_core.clamp_forward(x, 0, 6)[0])
    assert np.isnan(_core.leaky_relu_forward(x, 0.1)[0])
    np.testing.assert_array_equal(_core.clamp_forward(x, 0, 6)[1:], [0, 2, 6])
    np.testing.assert_array_equal(x[1:], keep[1:])
    # The dtype comes from dout; x converts to it.
    dx = _core.relu_backward(np.ones(4, np.float32), x)
    assert dx.dtype == np.float32


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _core.relu_forward(np.zeros(3, np.int64)), "x must be float32 or float64"),
        (lambda: _core.relu_forward([1.0, 2.0]), "x must be a numpy array"),
        (lambda: _core.relu_forward(np.zeros((0, 3))), "x is empty"),
        (lambda: _core.relu_backward(np.zeros(3), np.zeros(4)), "dout shape"),
        (lambda: _core.relu_backward(np.zeros(3, np.int32), np.zeros(3)), "dout must be float32"),
        (lambda: _core.clamp_forward(np.zeros(3), 2.0, 1.0), "lo must be <= hi"),
        (lambda: _core.clamp_backward(np.zeros(3), np.zeros(3), np.nan, 1.0), "lo must be finite"),
        (lambda: _core.leaky_relu_forward(np.zeros(3), np.inf), "alpha must be finite"),
        (lambda: _core.leaky_relu_backward(np.zeros(3), np.zeros((3, 1)), 0.1), "dout shape"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
