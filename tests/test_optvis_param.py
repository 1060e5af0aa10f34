"""Image parameterizations of gradvis.optvis: exact gradients through the
Fourier spectrum, the colour matrix and the sigmoid; the colour matrix itself."""
import numpy as np
import pytest

from gradvis.optvis import param


def directional_check(p, rng, eps=1e-6):
    """d/ds of <forward(params + s d), W> at s = 0, by central differences and by backward."""
    p.params = p.params.astype(np.float64)
    W = rng.standard_normal(p.shape)
    img, ctx = p.forward()
    grad = p.backward(W, ctx)
    d = rng.standard_normal(p.params.shape)
    base = p.params.copy()
    p.params = base + eps * d
    fp = (p.forward()[0] * W).sum()
    p.params = base - eps * d
    fm = (p.forward()[0] * W).sum()
    p.params = base
    return (fp - fm) / (2 * eps), float((grad * d).sum())


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("size", [(16, 16), (15, 17), (8, 9), (1, 5)])
def test_gradient_matches_finite_differences(fft, decorrelate, size):
    rng = np.random.default_rng(sum(size) + 2 * fft + decorrelate)
    p = param.image(*size, batch=2, fft=fft, decorrelate=decorrelate, sd=0.5, seed=rng)
    num, ana = directional_check(p, rng)
    assert num == pytest.approx(ana, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("size", [(16, 16), (15, 17), (6, 7)])
def test_irfft2_adjoint_identity(size):
    """The linear part (spectrum -> image before colour) is irfft2; backward applies
    its exact transpose: <A x, y> = <x, A^T y>."""
    rng = np.random.default_rng(3)
    h, w = size
    p = param.image(h, w, batch=2, fft=True, decorrelate=False, seed=1)
    x = rng.standard_normal(p.params.shape)
    y = rng.standard_normal(p.shape)
    spec = (x[0] + 1j * x[1]) * p._scale
    Ax = np.fft.irfft2(spec, s=(h, w), norm="ortho")
    # backward of the sigmoid at img = 0.5 multiplies by 1/4: undo it
    ATy = p.backward(4.0 * y, np.full(p.shape, 0.5))
    assert (Ax * y).sum() == pytest.approx((x * ATy.astype(np.float64)).sum(), rel=1e-5)


def test_images_are_in_range_and_seeded():
    a = param.image(32, 24, batch=3, seed=5)
    b = param.image(32, 24, batch=3, seed=5)
    img, _ = a.forward()
    assert img.shape == (3, 3, 32, 24) and img.dtype == np.float32
    assert (img > 0).all() and (img < 1).all()
    assert np.array_equal(img, b.forward()[0])
    assert not np.array_equal(img, param.image(32, 24, batch=3, seed=6).forward()[0])
    assert a.params.shape == (2, 3, 3, 32, 13)
    assert param.image(8, fft=False).params.shape == (1, 3, 8, 8)


def test_fft_spectrum_is_scaled_by_inverse_frequency():
    """Equal spectrum entries give low frequencies 1/f more amplitude (Lucid's scale)."""
    p = param.image(32, fft=True, decorrelate=False)
    f = param.rfft2d_freqs(32, 32)
    s = p._scale
    assert s[0, 1] / s[0, 8] == pytest.approx(f[0, 8] / f[0, 1])
    assert s[0, 0] == pytest.approx(s[0, 1])    # the DC term is clamped to 1/max(h, w)


def test_color_matrix_from_images_is_a_covariance_square_root():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.2, 0.1], [0.9, 0.3, 0.0], [0.8, 0.1, 0.3]])
    px = np.clip(rng.standard_normal((20000, 3)) @ mix.T * 30 + 120, 0, 255).astype(np.uint8)
    M = param.color_correlation_from_images(px.reshape(100, 200, 3))
    cov = np.cov((px / 255.0).T, bias=True)
    np.testing.assert_allclose(M @ M.T, cov, rtol=1e-6, atol=1e-10)
    norms = np.linalg.norm(M, axis=0)
    assert norms[0] >= norms[1] >= norms[2]
    assert (M[0] >= 0).all()


def test_color_matrix_of_a_model():
    class Stub:
        info = {}
    np.testing.assert_array_equal(param.color_correlation(Stub()), param.IMAGENET_COLOR_CORRELATION)
    Stub.info = {param.COLOR_INFO_KEY: np.eye(3).tolist()}
    np.testing.assert_array_equal(param.color_correlation(Stub()), np.eye(3))
    Stub.info = {param.COLOR_INFO_KEY: [[1, 2], [3, 4]]}
    with pytest.raises(ValueError, match="3x3"):
        param.color_correlation(Stub())


def test_bundled_model_carries_its_training_colour_matrix():
    import gradvis
    m = gradvis.load_pretrained()
    M = param.color_correlation(m)
    assert not np.allclose(M, param.IMAGENET_COLOR_CORRELATION)
    # TinyImageNet's photos are ImageNet's: the matrices agree to about 0.01
    np.testing.assert_allclose(M, param.IMAGENET_COLOR_CORRELATION, atol=0.03)


@pytest.mark.parametrize("kwargs, err", [
    (dict(h=0), ValueError), (dict(h=8.5), TypeError), (dict(h=8, batch=0), ValueError),
    (dict(h=8, sd=-1), ValueError), (dict(h=8, color=np.ones((2, 2))), ValueError),
    (dict(h=8, color=np.zeros((3, 3))), ValueError), (dict(h=8, seed="x"), TypeError),
])
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        param.image(**kwargs)


@pytest.mark.slow
def test_bundled_colour_matrix_is_that_of_its_training_images():
    import gradvis
    from gradvis.io.datasets import find_tiny_imagenet, load_tiny_imagenet
    try:
        archive = find_tiny_imagenet()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    M = param.color_correlation_from_images(load_tiny_imagenet(archive).X_train)
    np.testing.assert_allclose(param.color_correlation(gradvis.load_pretrained()), M, atol=1e-6)


@pytest.mark.parametrize("fft,decorrelate", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("hw", [(16, 16), (15, 22), (1, 7)])
def test_set_images_is_the_inverse_of_forward(fft, decorrelate, hw):
    p = param.image(*hw, batch=2, fft=fft, decorrelate=decorrelate, seed=0)
    x = np.random.default_rng(1).uniform(0.01, 0.99, (2, 3) + hw)
    p.set_images(x)
    np.testing.assert_allclose(p.forward()[0], x, atol=1e-6)
    p.set_images(np.clip(x * 2 - 0.5, 0, 1))            # values at 0 and 1 are clipped to (0, 1)
    assert np.isfinite(p.params).all()
    with pytest.raises(ValueError, match="shape"):
        p.set_images(x[:1])


def test_linear_is_the_pre_sigmoid_map_and_backward_its_adjoint():
    p = param.image(12, 10, batch=2, seed=3, sd=0.3)
    rng = np.random.default_rng(4)
    img, ctx = p.forward()
    np.testing.assert_allclose(1 / (1 + np.exp(-p.linear(p.params))), img, rtol=1e-6)
    d_img, v = rng.standard_normal(img.shape), rng.standard_normal(p.params.shape).astype(np.float32)
    lhs = float(np.sum(p.backward(d_img, ctx).astype(np.float64) * v))
    rhs = float(np.sum(d_img * img * (1 - img) * p.linear(v)))
    assert lhs == pytest.approx(rhs, rel=1e-4)
