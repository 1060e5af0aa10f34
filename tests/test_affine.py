import numpy as np
import pytest

from gradvis import _core
import reference_conv as ref
from helpers import close

DTYPES = [np.float32, np.float64]
# N <= 4 reads w without the gemm: weights below 2 MB in cache, columns over
# threads (the wide ones cross its 64-column blocks and the thread split); larger
# ones (the last two) in one stream per thread, forward in groups of 64 rows
# over threads then their partial sums (the long ones cross the row groups), dx
# a row at a time for one image. Rows over threads for dx.
SHAPES = [(1, 1, 1), (3, 7, 5), (17, 33, 10), (64, 300, 101), (4, 1000, 130), (1, 5000, 67), (5, 40, 9),
          (1, 64, 5), (3, 65, 70), (2, 130, 9), (2, 1, 3), (1, 1030, 600), (3, 1030, 600)]




def inputs(N, D, M, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, D)).astype(dtype), rng.standard_normal((D, M)).astype(dtype),
            rng.standard_normal(M).astype(dtype), rng.standard_normal((N, M)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_affine_matches_reference(shape, dtype):
    N, D, M = shape
    x, w, b, dout = inputs(N, D, M, dtype, 1)
    out = _core.affine_forward(x, w, b)
    assert out.dtype == dtype
    close(out, ref.affine_forward(x, w, b), dtype, D)
    close(_core.affine_forward(x, w), ref.affine_forward(x, w), dtype, D)
    dx, dw, db = _core.affine_backward(dout, x, w)
    rdx, rdw, rdb = ref.affine_backward(dout, x, w)
    close(dx, rdx, dtype, M)
    close(dw, rdw, dtype, N)
    close(db, rdb, dtype, N)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("N", [1, 4, 9])
def test_affine_gradients_on_request(N, threads):
    import gradvis

    x, w, b, dout = inputs(N, 700, 150, np.float32, 3)
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        full = _core.affine_backward(dout, x, w)
        dx, dw, db = _core.affine_backward(dout, x, w, True, False)
        assert dw is None and db is None
        np.testing.assert_array_equal(dx, full[0])
        dx, dw, db = _core.affine_backward(dout, x, w, param_grads=True, input_grad=False)
        assert dx is None
        np.testing.assert_array_equal(dw, full[1])
        np.testing.assert_array_equal(db, full[2])
    finally:
        gradvis.set_num_threads(old)
    rdx, rdw, _ = ref.affine_backward(dout, x, w)
    close(full[0], rdx, np.float32, 150)
    close(full[1], rdw, np.float32, N)


@pytest.mark.parametrize("N", [1, 2, 3, 4])
def test_affine_few_rows_same_bits_on_any_team(N):
    """The few-rows forward product sums each output in an order fixed by its shape."""
    import gradvis

    x, w, b, dout = inputs(N, 1030, 600, np.float32, 4)   # 2.4 MB: the streamed path
    old = gradvis.get_num_threads()
    try:
        outs, dxs = [], []
        for t in (1, 2, 3, 4):
            gradvis.set_num_threads(t)
            outs.append(_core.affine_forward(x, w, b))
            dxs.append(_core.affine_backward(dout, x, w, True, False)[0])
    finally:
        gradvis.set_num_threads(old)
    for o, dx in zip(outs[1:], dxs[1:]):
        np.testing.assert_array_equal(o, outs[0])
        np.testing.assert_array_equal(dx, dxs[0])
    close(outs[0], ref.affine_forward(x, w, b), np.float32, 1030)
    close(dxs[0], ref.affine_backward(dout, x, w)[0], np.float32, 600)


def test_affine_finite_differences():
    x, w, b, dout = inputs(4, 6, 5, np.float64, 2)
    dx, dw, db = _core.affine_backward(dout, x, w)
    rng = np.random.default_rng(3)
    h = 1e-6

    def loss(xx, ww, bb):
        return float(np.vdot(_core.affine_forward(xx, ww, bb), dout))

    for which, grad in ((0, dx), (1, dw), (2, db)):
        for _ in range(5):
            arrs_p, arrs_m = [x.copy(), w.copy(), b.copy()], [x.copy(), w.copy(), b.copy()]
            idx = tuple(int(rng.integers(0, s)) for s in arrs_p[which].shape)
            arrs_p[which][idx] += h
            arrs_m[which][idx] -= h
            num = (loss(*arrs_p) - loss(*arrs_m)) / (2 * h)
            assert abs(num - grad[idx]) < 1e-7 * max(1.0, abs(num))


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_matches_torch(dtype, torch):
    x, w, b, dout = inputs(9, 40, 13, dtype, 4)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ot = xt @ wt + bt
    ot.backward(torch.from_numpy(dout))
    close(_core.affine_forward(x, w, b), ot.detach().numpy().astype(np.float64), dtype, 40)
    dx, dw, db = _core.affine_backward(dout, x, w)
    close(dx, xt.grad.numpy().astype(np.float64), dtype, 13)
    close(dw, wt.grad.numpy().astype(np.float64), dtype, 9)
    close(db, bt.grad.numpy().astype(np.float64), dtype, 9)


def test_affine_converts_secondary_and_keeps_inputs():
    x, w, b, dout = inputs(5, 8, 3, np.float32, 5)
    w64 = np.asfortranarray(w.astype(np.float64))
    bi = np.arange(3)
    c = [a.copy() for a in (x, w64, bi)]
    out = _core.affine_forward(x, w64, bi)
    assert out.dtype == np.float32
    close(out, ref.affine_forward(x, w, bi), np.float32, 8)
    for a, a0 in zip((x, w64, bi), c):
        np.testing.assert_array_equal(a, a0)


X = np.zeros((4, 6), np.float32)
W = np.zeros((6, 5), np.float32)
BAD = [
    ("x 4-D", _core.affine_forward, (np.zeros((4, 2, 3, 1), np.float32), W), ValueError, r"x must be 2-D"),
    ("w 1-D", _core.affine_forward, (X, np.zeros(6, np.float32)), ValueError, r"w must be 2-D"),
    ("D mismatch", _core.affine_forward, (X, np.zeros((7, 5), np.float32)), ValueError,
     r"w expects 7 input features but x has 6; x shape \(4, 6\), w shape \(7, 5\)"),
    ("b length", _core.affine_forward, (X, W, np.zeros(4)), ValueError, r"b must have shape \(5,\)"),
    ("x int", _core.affine_forward, (X.astype(np.int64), W), TypeError, r"x must be float32 or float64"),
    ("empty x", _core.affine_forward, (X[:0], W), ValueError, r"x is empty"),
    ("dout shape", _core.affine_backward, (np.zeros((4, 4), np.float32), X, W), ValueError,
     r"dout must have shape \(4, 5\)"),
    ("dout int", _core.affine_backward, (np.zeros((4, 5), np.int32), X, W), TypeError, r"dout must be float32"),
    ("bwd D", _core.affine_backward, (np.zeros((4, 5), np.float32), X, np.zeros((3, 5))), ValueError,
     r"w expects 3 input features"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_affine_bad_input(case):
    _, fn, args, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        fn(*args)
