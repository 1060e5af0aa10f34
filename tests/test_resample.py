"""The bilinear resize and rotation kernels of optvis's random transforms
(_core.resize_bilinear_*, _core.rotate_bilinear_*): against the float64 numpy
reference (tests/reference_resample.py), the adjoint identity
<A x, y> = <x, A^T y>, central differences, the thread count, and bad input."""
import numpy as np
import pytest

import gradvis
from gradvis import _core
import reference_resample as ref

SIZES = [((2, 3, 16, 16), (18, 18)), ((1, 3, 64, 64), (58, 58)), ((1, 2, 7, 12), (9, 5)),
         ((3, 1, 5, 1), (4, 3)), ((1, 1, 1, 1), (2, 2)), ((2, 3, 21, 17), (21, 17))]
ANGLES = [0.0, 7.0, -10.0, 33.3, 90.0, 181.0]


def _rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape,size", SIZES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_resize_matches_the_reference(shape, size, dtype, tol):
    x = _rng(0).standard_normal(shape).astype(dtype)
    y = _core.resize_bilinear_forward(x, size)
    assert y.dtype == dtype and y.shape == shape[:2] + size
    np.testing.assert_allclose(y, ref.resize(x, size), rtol=0, atol=tol * 4)
    dy = _rng(1).standard_normal(y.shape).astype(dtype)
    dx = _core.resize_bilinear_adjoint(dy, shape)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, ref.resize_adjoint(dy, shape[2:]), rtol=0, atol=tol * 16)
    np.testing.assert_array_equal(dx, _core.resize_bilinear_adjoint(dy, shape[2:]))


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 13, 20), (1, 1, 1, 5), (2, 2, 64, 64)])
@pytest.mark.parametrize("degrees", ANGLES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_rotate_matches_the_reference(shape, degrees, dtype, tol):
    x = _rng(2).standard_normal(shape).astype(dtype)
    y = _core.rotate_bilinear_forward(x, degrees)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, ref.rotate(x, degrees), rtol=0, atol=tol * 4)
    dy = _rng(3).standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(_core.rotate_bilinear_adjoint(dy, degrees), ref.rotate_adjoint(dy, degrees),
                               rtol=0, atol=tol * 16)


@pytest.mark.parametrize("case", ["resize", "rotate"])
def test_adjoint_identity_and_central_differences(case):
    rng = _rng(4)
    x = rng.standard_normal((2, 3, 11, 14))
    if case == "resize":
        def fwd(v):
            return _core.resize_bilinear_forward(v, (13, 9))

        def adj(g):
            return _core.resize_bilinear_adjoint(g, x.shape)
    else:
        def fwd(v):
            return _core.rotate_bilinear_forward(v, 12.5)

        def adj(g):
            return _core.rotate_bilinear_adjoint(g, 12.5)
    y = rng.standard_normal(fwd(x).shape)
    lhs, rhs = np.vdot(fwd(x), y), np.vdot(x, adj(y))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), (lhs, rhs)
    # the gradient of <fwd(x), y> is adj(y): central differences at a few entries
    g = adj(y)
    for idx in [(0, 0, 0, 0), (1, 2, 5, 7), (0, 1, 10, 13), (1, 0, 3, 0)]:
        e = np.zeros_like(x)
        e[idx] = 1e-6
        fd = (np.vdot(fwd(x + e), y) - np.vdot(fwd(x - e), y)) / 2e-6
        assert abs(fd - g[idx]) < 1e-7, (idx, fd, g[idx])


def test_results_do_not_depend_on_the_thread_count():
    x = _rng(5).standard_normal((4, 3, 70, 66)).astype(np.float32)
    before = gradvis.get_num_threads()
    try:
        outs = []
        for n in (1, 3):
            gradvis.set_num_threads(n)
            y = _core.resize_bilinear_forward(x, (77, 59))
            r = _core.rotate_bilinear_forward(x, -8.0)
            outs.append((y, _core.resize_bilinear_adjoint(y, x.shape), r, _core.rotate_bilinear_adjoint(r, -8.0)))
    finally:
        gradvis.set_num_threads(before)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_bad_input_is_named():
    x = np.zeros((1, 3, 8, 8), np.float32)
    cases = [
        (lambda: _core.resize_bilinear_forward(x, (0, 4)), ValueError, "size"),
        (lambda: _core.resize_bilinear_forward(x, (4,)), ValueError, "size"),
        (lambda: _core.resize_bilinear_forward(x, (4.0, 4)), TypeError, "size"),
        (lambda: _core.resize_bilinear_forward(x[0], (4, 4)), ValueError, "x"),
        (lambda: _core.resize_bilinear_forward(x.astype(np.int32), (4, 4)), TypeError, "x"),
        (lambda: _core.resize_bilinear_forward(np.zeros((1, 3, 0, 8), np.float32), (4, 4)), ValueError, "empty"),
        (lambda: _core.resize_bilinear_adjoint(x, (2, 3, 4, 4)), ValueError, "input_size"),
        (lambda: _core.resize_bilinear_forward(x, (1 << 40, 4)), ValueError, "size"),
        (lambda: _core.resize_bilinear_forward(x, (1 << 20, 1 << 20)), ValueError, "memory limit|too large"),
        (lambda: _core.rotate_bilinear_forward(x, float("nan")), ValueError, "degrees"),
        (lambda: _core.rotate_bilinear_adjoint(x, float("inf")), ValueError, "degrees"),
        (lambda: _core.rotate_bilinear_forward(x, "10"), TypeError, "incompatible"),
    ]
    for call, exc, word in cases:
        with pytest.raises(exc, match=word):
            call()


def test_reused_output_blocks_are_fully_overwritten():
    # outputs of 256 KiB and more come from the block cache, which hands back a
    # previous array's memory: fill it with NaN first, every output must be written
    import gc
    x = _rng(6).standard_normal((2, 3, 150, 160)).astype(np.float32)
    ops = [lambda: _core.resize_bilinear_forward(x, (151, 149)),
           lambda: _core.resize_bilinear_adjoint(x, (2, 3, 149, 171)),
           lambda: _core.rotate_bilinear_forward(x, 9.0), lambda: _core.rotate_bilinear_adjoint(x, -9.0)]
    limit = gradvis.array_pool_info()["limit"]
    try:
        for op in ops:
            gradvis.set_array_pool_limit(0)
            ref = op().copy()
            gradvis.set_array_pool_limit(1 << 30)
            n = ref.nbytes // 4
            held = [_core.gemm(np.full((n, 1), np.nan, np.float32), np.ones((1, 1), np.float32)) for _ in range(3)]
            del held
            gc.collect()
            before = gradvis.array_pool_info()["reused"]
            out = op()
            assert gradvis.array_pool_info()["reused"] > before
            np.testing.assert_array_equal(out, ref)
    finally:
        gradvis.set_array_pool_limit(limit)
