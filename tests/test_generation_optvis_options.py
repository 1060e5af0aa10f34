"""The CS231n generation functions with Lucid's tools (Olah et al., "Feature
Visualization", Distill 2017): class visualization with ``param="fft"`` (a Fourier,
colour-decorrelated parameterization) and ``transforms=`` (gradvis.optvis.transforms),
DeepDream with ``transforms=``; their defaults stay the CS231n loops."""
import numpy as np
import pytest

import gradvis
from gradvis import create_class_visualization, deepdream
from gradvis.nn.losses import softmax
from gradvis.optvis import param as P, transforms as T

# a zero pad, a jitter and a 0.9-1.1 rescale sized for the 16x16 test net
SMALL_TF = [T.pad(2), T.jitter(2), T.random_scale((0.9, 1.0, 1.1)), T.random_rotate((-5, 0, 5))]


def _scores(net, X):
    return net.forward(X)[0]


@pytest.mark.parametrize("kw", [dict(param="fft"), dict(param="fft", transforms=SMALL_TF),
                                dict(transforms=SMALL_TF), dict(transforms="standard")])
def test_class_visualization_options_raise_the_target_score(net, kw):
    seen = []
    X = create_class_visualization([1, 3], net, num_iterations=25, seed=2,
                                   callback=lambda t, X, info: seen.append(np.array(info["score"])), **kw)
    assert X.shape == (2, 3, 16, 16) and X.dtype == np.float32
    s = _scores(net, X)
    start = _scores(net, create_class_visualization([1, 3], net, num_iterations=0, seed=2, **kw))
    # the random test net's scores are small: the pixel loop raises these two by 0.37 and 0.21
    assert s[0, 1] > start[0, 1] + 0.15 and s[1, 3] > start[1, 3] + 0.15, (start, s)
    assert seen[-1][0] > seen[0][0] and seen[-1][1] > seen[0][1]
    lo, hi = net.input_range()
    assert (X >= lo - 1e-4).all() and (X <= hi + 1e-4).all()   # fft: the sigmoid keeps it valid
    again = create_class_visualization([1, 3], net, num_iterations=25, seed=2, **kw)
    assert np.array_equal(X, again)


def test_class_visualization_fft_is_not_the_pixel_loop(net):
    a = create_class_visualization(2, net, num_iterations=5, seed=0)
    b = create_class_visualization(2, net, num_iterations=5, seed=0, param="fft")
    assert not np.allclose(a, b)


def test_empty_transforms_give_the_default_loop(net):
    # no transform: the round trip through [0, 1] RGB values changes only rounding
    a = create_class_visualization([0, 4], net, num_iterations=10, seed=3)
    b = create_class_visualization([0, 4], net, num_iterations=10, seed=3, transforms=[])
    np.testing.assert_allclose(a, b, atol=2e-3)
    X = np.random.default_rng(0).normal(0, 0.5, (1, 3, 20, 24)).astype(np.float32)
    a = deepdream(X, "relu2", net, num_iterations=4, seed=1)
    b = deepdream(X, "relu2", net, num_iterations=4, seed=1, transforms=T.compose([]))
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_class_visualization_takes_an_image_param(net):
    p = P.image(20, 24, batch=2, decorrelate=False, seed=4)
    X = create_class_visualization([0, 1], net, num_iterations=3, param=p, max_jitter=0, blur_every=0)
    assert X.shape == (2, 3, 20, 24)


@pytest.mark.parametrize("kw", [dict(octaves=1), dict(octaves=2, octave_scale=1.3)])
def test_deepdream_with_transforms_amplifies_the_layer(net, kw):
    X = np.random.default_rng(1).normal(0, 0.5, (2, 3, 24, 20)).astype(np.float32)
    before = np.linalg.norm(net.forward(X, end="relu2")[0])
    Y = deepdream(X, "relu2", net, num_iterations=8, seed=0, transforms=SMALL_TF, **kw)
    assert Y.shape == X.shape and Y.dtype == np.float32
    assert np.linalg.norm(net.forward(Y, end="relu2")[0]) > 1.5 * before
    assert np.array_equal(Y, deepdream(X, "relu2", net, num_iterations=8, seed=0, transforms=SMALL_TF, **kw))


def test_bad_options_are_named(net):
    cases = [
        (dict(param="lucid"), ValueError, "param"),
        (dict(param=3), TypeError, "param"),
        (dict(param="fft", init=np.zeros((1, 3, 16, 16), np.float32)), ValueError, "init"),
        (dict(param=P.image(16, batch=2)), ValueError, "batch"),
        (dict(transforms="lucid"), ValueError, "transforms"),
        (dict(transforms=5), TypeError, "transforms"),
        (dict(transforms=[T.jitter(3), "pad"]), TypeError, "Transform"),
        (dict(transforms=[T.jitter(15)]), ValueError, "cannot take"),
        (dict(param="fft", learning_rate=-1), ValueError, "learning_rate"),
    ]
    for kw, exc, word in cases:
        with pytest.raises(exc, match=word):
            create_class_visualization(0, net, num_iterations=1, **kw)
    X = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="transforms"):
        deepdream(X, "relu2", net, num_iterations=1, transforms="lucid")
    with pytest.raises(ValueError, match="transforms"):
        deepdream(X, "relu2", net, num_iterations=1, transforms=[T.jitter(15)])


@pytest.mark.parametrize("target", [3, 76])
def test_fft_class_visualization_is_recognized(pretrained_model, target):
    X = gradvis.create_class_visualization(target, pretrained_model, num_iterations=60, seed=0,
                                           param="fft", transforms="standard")
    assert X.shape == (1, 3, 64, 64)
    p = softmax(pretrained_model.forward(X)[0])[0, target]
    assert p >= 0.9, p


def _photo(net, shape, seed):
    """Images in the net's input space whose RGB values lie inside (0, 1)."""
    from gradvis.optvis.render import to_model_input
    return to_model_input(np.random.default_rng(seed).uniform(0.1, 0.9, shape), net)


@pytest.mark.parametrize("kw", [dict(), dict(octaves=2, octave_scale=1.3), dict(transforms=SMALL_TF)])
def test_deepdream_fft_amplifies_the_layer(net, kw):
    X = _photo(net, (2, 3, 24, 20), 1)
    before = np.linalg.norm(net.forward(X, end="relu2")[0])
    Y = deepdream(X, "relu2", net, num_iterations=20, seed=0, param="fft", **kw)
    assert Y.shape == X.shape and Y.dtype == np.float32
    # the random test net answers less to the low frequencies this moves: 1.6-2.1x here
    assert np.linalg.norm(net.forward(Y, end="relu2")[0]) > 1.4 * before
    lo, hi = net.input_range()
    assert (Y >= lo - 1e-3).all() and (Y <= hi + 1e-3).all()    # the sigmoid keeps it valid
    assert np.array_equal(Y, deepdream(X, "relu2", net, num_iterations=20, seed=0, param="fft", **kw))
    assert not np.allclose(Y, deepdream(X, "relu2", net, num_iterations=20, seed=0, **kw), atol=1e-2)


def test_deepdream_fft_starts_from_the_photo_and_steps_in_grey_levels(net):
    from gradvis.optvis.render import from_model_input
    X = _photo(net, (2, 3, 20, 20), 3)
    np.testing.assert_allclose(deepdream(X, "relu2", net, num_iterations=0, param="fft"), X, atol=1e-3)
    Y = deepdream(X, "relu2", net, num_iterations=1, max_jitter=0, param="fft", learning_rate=1.5)
    moved = np.abs(from_model_input(Y, net) - from_model_input(X, net)).reshape(2, -1).mean(axis=1) * 255
    np.testing.assert_allclose(moved, 1.5, rtol=0.2)   # first order: 1.5 grey levels on average


def test_deepdream_param_errors_are_named(net):
    X = _photo(net, (1, 3, 16, 16), 0)
    for kw, exc in [(dict(param="lucid"), ValueError), (dict(param=3), TypeError),
                    (dict(param="fft", normalize_grad=False), ValueError)]:
        with pytest.raises(exc, match="param"):
            deepdream(X, "relu2", net, num_iterations=1, **kw)
