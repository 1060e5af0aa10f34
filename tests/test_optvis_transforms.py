"""Transforms of gradvis.optvis: each backward is the exact adjoint of the map
applied, <A x, y> = <x, A^T y>; sizes; Lucid's standard list sized to the input."""
import numpy as np
import pytest

from gradvis.optvis import transforms as T


def adjoint_pair(t, x, seed=1):
    """<A x, y> and <x, A^T y> for the linear part of transform t (one random draw)."""
    rng = np.random.default_rng(seed)
    y0, _ = t.apply(np.zeros_like(x), np.random.default_rng(seed))   # the affine offset (pad value)
    y, back = t.apply(x, np.random.default_rng(seed))
    z = rng.standard_normal(y.shape)
    lhs = ((y - y0).astype(np.float64) * z).sum()
    rhs = (x.astype(np.float64) * back(z)).sum()
    return lhs, rhs


TRANSFORMS = [T.pad(3), T.pad(2, value=0.0), T.jitter(2), T.jitter(5), T.random_scale([0.9]),
              T.random_scale([1.1]), T.random_scale([0.5, 1.37]), T.random_rotate([7]),
              T.random_rotate([-10]), T.random_rotate([90]), T.random_rotate([0.3], units="radians"),
              T.resize((40, 11)), T.standard_transforms(64), T.standard_transforms(224)]


@pytest.mark.parametrize("t", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("shape", [(2, 3, 17, 20), (1, 3, 32, 32)])
def test_adjoint_identity(t, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    for seed in range(3):
        lhs, rhs = adjoint_pair(t, x, seed)
        assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("t", TRANSFORMS, ids=repr)
def test_size_range_covers_outputs(t):
    x = np.zeros((1, 3, 30, 26))
    lo, hi = t.size_range(30, 26)
    for seed in range(20):
        y, _ = t.apply(x, np.random.default_rng(seed))
        assert lo[0] <= y.shape[2] <= hi[0] and lo[1] <= y.shape[3] <= hi[1]


def test_rotation_turns_the_image():
    """A bright pixel right of the centre goes above it under +90 degrees (counter-clockwise)."""
    x = np.zeros((1, 1, 9, 9))
    x[0, 0, 4, 7] = 1.0
    y, _ = T.random_rotate([90]).apply(x, np.random.default_rng(0))
    assert y[0, 0, 1, 4] == pytest.approx(1.0)
    assert y.sum() == pytest.approx(1.0)


def test_scale_is_separable_bilinear_interpolation():
    """The resize equals R_y x R_x^T with torch's align_corners=False weights."""
    def matrix(n_in, n_out):
        M = np.zeros((n_out, n_in))
        for i in range(n_out):
            s = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            lo = int(np.floor(s))
            M[i, lo] += 1 - (s - lo)
            M[i, min(lo + 1, n_in - 1)] += s - lo
        return M
    x = np.random.default_rng(0).standard_normal((2, 3, 13, 17))
    y, _ = T.resize((19, 11)).apply(x, None)
    np.testing.assert_allclose(y, matrix(13, 19) @ x @ matrix(17, 11).T, rtol=1e-6, atol=1e-6)


def test_scale_keeps_a_constant_image():
    x = np.full((1, 3, 20, 20), 0.3)
    y, _ = T.random_scale([1.1]).apply(x, np.random.default_rng(0))
    assert y.shape == (1, 3, 22, 22)
    np.testing.assert_allclose(y, 0.3)


def test_pad_and_jitter():
    x = np.ones((1, 3, 10, 10), np.float32)
    y, back = T.pad(2).apply(x, None)
    assert y.shape == (1, 3, 14, 14) and y[0, 0, 0, 0] == 0.5 and y.dtype == np.float32
    y, back = T.jitter(3).apply(x, np.random.default_rng(0))
    assert y.shape == (1, 3, 7, 7)
    assert back(np.ones_like(y)).sum() == 3 * 49


def test_standard_transforms_are_sized_to_the_input():
    names = repr(T.standard_transforms(224))
    assert "pad(12" in names and "jitter(8)" in names and "jitter(4)" in names
    names = repr(T.standard_transforms(64))
    assert "pad(3" in names and "jitter(2)" in names and "jitter(1)" in names


def test_transforms_are_seeded():
    x = np.random.default_rng(0).random((1, 3, 32, 32))
    t = T.standard_transforms(32)
    a = [t.apply(x, np.random.default_rng(7))[0] for _ in range(2)]
    assert a[0].shape == a[1].shape and np.array_equal(a[0], a[1])


@pytest.mark.parametrize("make, err", [
    (lambda: T.pad(-1), ValueError), (lambda: T.jitter(1.5), TypeError),
    (lambda: T.random_scale([]), ValueError), (lambda: T.random_scale([0.0]), ValueError),
    (lambda: T.random_scale("1.1"), TypeError), (lambda: T.random_rotate([np.nan]), ValueError),
    (lambda: T.random_rotate([1], units="turns"), ValueError), (lambda: T.compose([1]), TypeError),
    (lambda: T.standard_transforms(0), ValueError),
])
def test_bad_arguments(make, err):
    with pytest.raises(err):
        make()


def test_jitter_larger_than_the_image():
    with pytest.raises(ValueError, match="jitter"):
        T.jitter(8).apply(np.zeros((1, 3, 8, 8)), np.random.default_rng(0))
