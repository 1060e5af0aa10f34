import numpy as np
import pytest

from gradvis import _core
from helpers import rel_err
import reference_conv as ref

DTYPES = [np.float32, np.float64]


def tol(dtype, k):
    # Accumulated rounding grows ~sqrt(k); generous constant, still far below a wrong answer.
    eps = np.finfo(dtype).eps
    return 20 * eps * np.sqrt(k + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_matches_numpy_odd_sizes(dtype, trans_a, trans_b):
    rng = np.random.default_rng(100 + 2 * trans_a + trans_b)
    sizes = [(1, 1, 1), (1, 7, 3), (5, 1, 9), (3, 5, 1), (17, 33, 65), (31, 257, 129), (300, 65, 7), (97, 300, 300)]
    for M, N, K in sizes:
        a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
        c = _core.gemm(a, b, trans_a, trans_b)
        assert c.dtype == dtype and c.shape == (M, N)
        assert rel_err(c, ref.gemm(a, b, trans_a, trans_b)) < tol(dtype, K), (M, N, K)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_large(dtype):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((512, 512)).astype(dtype)
    b = rng.standard_normal((512, 512)).astype(dtype)
    assert rel_err(_core.gemm(a, b), ref.gemm(a, b)) < tol(dtype, 512)
    assert rel_err(_core.gemm(a, b, True, True), ref.gemm(a, b, True, True)) < tol(dtype, 512)


def test_gemm_converts_b_and_keeps_inputs():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((40, 30)).astype(np.float32)
    b = np.asfortranarray(rng.integers(-3, 4, (30, 20)))  # int64, not C-contiguous
    a0, b0 = a.copy(), b.copy()
    c = _core.gemm(a, b)
    assert c.dtype == np.float32
    assert rel_err(c, ref.gemm(a, b)) < tol(np.float32, 30)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_gemm_bad_input():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.gemm(a, np.ones((5, 2), np.float32))
    with pytest.raises(TypeError, match="a must be float32 or float64"):
        _core.gemm(np.ones((3, 4), np.int32), a.T)
    with pytest.raises(ValueError, match="b must be 2-D"):
        _core.gemm(a, np.ones(4, np.float32))
