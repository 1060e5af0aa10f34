"""Gaussian blur against scipy.ndimage.gaussian_filter and a dense-matrix
reference; the adjoint by the identity <Ax, y> == <x, A^T y>."""
import numpy as np
import pytest

from gradvis import _core
import reference_ops as ref
from conftest import require

scipy_ndimage = require("scipy.ndimage")

DTYPES = [np.float32, np.float64]
# (shape, sigma): non-square images, sigma 0.5 / 1 / 2.5, per-axis sigmas,
# sigma 0 on an axis, and radii larger than the image (reflection repeats).
CASES = [
    ((2, 3, 17, 23), 0.5),
    ((1, 3, 32, 20), 1.0),
    ((2, 1, 19, 31), 2.5),
    ((1, 2, 7, 40), (2.5, 1.0)),
    ((1, 2, 12, 9), (0.0, 1.5)),
    ((1, 2, 12, 9), (1.5, 0.0)),
    ((1, 1, 5, 6), 3.0),  # radius 12 > H and > W
    ((2, 2, 3, 50), (4.0, 0.7)),
    ((1, 1, 1, 9), 2.0),  # a single row
    ((1, 2, 8, 8), 0.0),
]


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def sigmas(sigma):
    return (sigma, sigma) if np.isscalar(sigma) else sigma


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_blur_matches_scipy(dtype, case):
    shape, sigma = CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal(shape).astype(dtype)
    out = _core.gaussian_blur(x, sigma)
    assert out.dtype == dtype and out.shape == shape
    sh, sw = sigmas(sigma)
    want = scipy_ndimage.gaussian_filter(x.astype(np.float64), (0, 0, sh, sw), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(out, want, **tol(dtype))
    np.testing.assert_allclose(out, ref.gaussian_blur(x, sigma), **tol(dtype))


@pytest.mark.parametrize("truncate", [1.0, 2.5])
def test_truncate(truncate):
    x = np.random.default_rng(5).standard_normal((1, 2, 14, 11))
    want = scipy_ndimage.gaussian_filter(x, (0, 0, 1.7, 2.2), mode="reflect", truncate=truncate)
    np.testing.assert_allclose(_core.gaussian_blur(x, (1.7, 2.2), truncate), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_adjoint_identity(dtype, case):
    shape, sigma = CASES[case]
    rng = np.random.default_rng(100 + case)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    ax = _core.gaussian_blur(x, sigma).astype(np.float64)
    aty = _core.gaussian_blur_adjoint(y, sigma)
    assert aty.dtype == dtype
    lhs, rhs = np.sum(ax * y), np.sum(x.astype(np.float64) * aty)
    assert abs(lhs - rhs) <= (1e-4 if dtype == np.float32 else 1e-11) * np.sqrt(x.size)
    np.testing.assert_allclose(aty, ref.gaussian_blur(y, sigma, adjoint=True), **tol(dtype))


def test_reflect_blur_is_symmetric():
    # With scipy's half-sample 'reflect' the 1-D operator's matrix is symmetric
    # (entries w(j-i+2nt) + w(i+j+1+2nt)), so the adjoint, computed by its own
    # transposed path, must equal the blur up to rounding.
    y = np.random.default_rng(1).standard_normal((1, 2, 10, 13))
    for sigma in [(2.0, 0.8), 5.0]:
        A = ref.blur_matrix(10, sigmas(sigma)[0])
        assert np.allclose(A, A.T, rtol=0, atol=1e-15)
        np.testing.assert_allclose(_core.gaussian_blur_adjoint(y, sigma), _core.gaussian_blur(y, sigma), rtol=1e-12, atol=1e-13)


def test_input_untouched_and_noncontiguous():
    x = np.random.default_rng(2).standard_normal((1, 2, 20, 30))[:, :, ::2, ::3]
    keep = x.copy()
    out = _core.gaussian_blur(x, 1.0)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(out, scipy_ndimage.gaussian_filter(keep, (0, 0, 1, 1), mode="reflect"), rtol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: _core.gaussian_blur(x[0], 1.0), "x must be 4-D"),
        (lambda x: _core.gaussian_blur(x.astype(np.int32), 1.0), "x must be float32"),
        (lambda x: _core.gaussian_blur(x[:, :, :0], 1.0), "x is empty"),
        (lambda x: _core.gaussian_blur(x, -1.0), "sigma must be finite and non-negative"),
        (lambda x: _core.gaussian_blur(x, float("nan")), "sigma"),
        (lambda x: _core.gaussian_blur_adjoint(x, (1.0, float("inf"))), "sigma"),
        (lambda x: _core.gaussian_blur(x, (1.0, 2.0, 3.0)), "sigma"),
        (lambda x: _core.gaussian_blur(x, "big"), "sigma"),
        (lambda x: _core.gaussian_blur(x, 1.0, -1.0), "truncate"),
        (lambda x: _core.gaussian_blur(x, 1e12), "too large"),
        (lambda x: _core.gaussian_blur(x, np.array([1.0])), "sigma must be a number or a pair"),
        (lambda x: _core.gaussian_blur(x, [1.0, None]), "sigma must be a number or a pair"),
    ],
)
def test_bad_inputs_raise(call, match):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


def test_sigma_as_numpy_scalar_or_0d_array():
    x = np.random.default_rng(5).standard_normal((1, 2, 9, 9))
    want = _core.gaussian_blur(x, 1.5)
    for sigma in (np.float32(1.5), np.array(1.5), np.array([1.5, 1.5]), (np.float64(1.5), 1.5)):
        np.testing.assert_array_equal(_core.gaussian_blur(x, sigma), want)
