"""The five algorithms on small random-weight models: mechanics, gradients,
reproducibility and errors. (What they achieve on the trained model is checked
in test_pretrained.py.)"""
import numpy as np
import pytest

import gradvis
from gradvis import (BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, ReLU,
                     compute_saliency_maps, create_class_visualization, deepdream, invert_features,
                     make_fooling_image, smoothgrad_saliency_maps)
from gradvis.generation.inversion import feature_error


def small_net(seed=0, size=16, classes=5):
    m = Model(input_shape=(3, size, size), mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0), seed=seed)
    m.add("conv1", Conv2d(3, 8, 3, padding=1))
    m.add("bn1", BatchNorm2d(8))
    m.add("relu1", ReLU())
    m.add("pool1", MaxPool2d(2))
    m.add("conv2", Conv2d(8, 12, 3, padding=1))
    m.add("relu2", ReLU())
    m.add("gap", GlobalAvgPool())
    m.add("flatten", Flatten())
    m.add("fc", Linear(12, classes))
    rng = np.random.default_rng(seed + 100)
    # Non-trivial batch-norm statistics, as a trained model has.
    m.buffers["bn1.running_mean"] = (0.1 * rng.standard_normal(8)).astype(np.float32)
    m.buffers["bn1.running_var"] = (1 + 0.2 * rng.random(8)).astype(np.float32)
    return m


def images(n, size=16, seed=1):
    """Images inside the small net's valid input range (about [-1.7, 2.2])."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.5, 1.5, (n, 3, size, size)).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    return small_net()


# ---------------------------------------------------------------------------- saliency
def test_saliency_is_abs_gradient_max_over_channels(net):
    X = images(3)
    y = np.array([0, 3, 1])
    sal = compute_saliency_maps(X, y, net)
    assert sal.shape == (3, 16, 16) and sal.dtype == np.float32 and (sal >= 0).all()
    # float64 finite differences of the unnormalized score of image 1
    m64 = net.astype(np.float64)
    x = X[1:2].astype(np.float64)
    g = np.zeros_like(x)
    h = 1e-5
    for idx in [(0, c, i, j) for c in range(3) for i in (0, 5, 15) for j in (2, 9)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (m64.forward(xp)[0][0, 3] - m64.forward(xm)[0][0, 3]) / (2 * h)
    sal64 = compute_saliency_maps(x, [3], m64)
    for i in (0, 5, 15):
        for j in (2, 9):
            assert np.isclose(sal64[0, i, j], np.abs(g[0, :, i, j]).max(), rtol=1e-4, atol=1e-9)


def test_saliency_batches_are_independent(net):
    X = images(5)
    y = np.array([0, 1, 2, 3, 4])
    full = compute_saliency_maps(X, y, net)
    chunked = compute_saliency_maps(X, y, net, batch_size=2)
    single = compute_saliency_maps(X[2:3], y[2:3], net)
    assert np.allclose(full, chunked, rtol=1e-5, atol=1e-7)
    assert np.allclose(full[2], single[0], rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_seeded(net):
    X = images(2)
    a = smoothgrad_saliency_maps(X, [1, 2], net, num_samples=4, seed=3)
    b = smoothgrad_saliency_maps(X, [1, 2], net, num_samples=4, seed=3)
    c = smoothgrad_saliency_maps(X, [1, 2], net, num_samples=4, seed=4)
    assert a.shape == (2, 16, 16)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------------------- fooling
def test_fooling_reaches_target_and_reports(net):
    X = images(4, seed=2)
    before = X.copy()
    pred = net.forward(X)[0].argmax(1)
    target = (pred + 1) % 5
    X_fool, rep = make_fooling_image(X, target, net, return_report=True, max_iter=200)
    assert np.array_equal(X, before)
    assert X_fool.shape == X.shape and X_fool.dtype == X.dtype
    assert rep["success"].all()
    assert np.array_equal(net.forward(X_fool)[0].argmax(1), target)
    for key in ("iterations", "target_prob", "l2", "linf", "predicted"):
        assert rep[key].shape == (4,)
    assert np.allclose(rep["linf"], np.abs(X_fool - X).reshape(4, -1).max(1), rtol=1e-5)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_fooling_budget_and_clipping_hold(net, norm):
    X = images(3, seed=3)
    eps = 3.0   # grey levels
    key = "linf_pixels" if norm == "inf" else "l2_pixels"
    X_fool, rep = make_fooling_image(X, 2, net, eps=eps, norm=norm, max_iter=30, learning_rate=1.0,
                                     return_report=True)
    assert (rep[key] <= eps * (1 + 1e-5)).all() and (rep[key] > 0.5 * eps).any()
    lo, hi = net.input_range()
    assert (X_fool >= lo - 1e-6).all() and (X_fool <= hi + 1e-6).all()
    assert np.allclose(rep["linf_pixels"], 60.0 * rep["linf"], rtol=1e-5)
    # Pixels that start outside the valid range are not dragged in beyond the budget.
    X_out = 3.0 * X
    X_fool, rep = make_fooling_image(X_out, 2, net, eps=eps, norm=norm, max_iter=30, return_report=True)
    assert (rep[key] <= eps * (1 + 1e-5)).all()


@pytest.mark.parametrize("normalize_step", ["sign", "rms", "l2", None])
def test_fooling_step_kinds(net, normalize_step):
    X = images(2, seed=9)
    target = np.argsort(net.forward(X)[0], axis=1)[:, -2]   # the runner-up: reachable in range
    lr = {"sign": 2.0, "rms": 1.0, "l2": 2.0, None: 50.0}[normalize_step]
    X_fool, rep = make_fooling_image(X, target, net, normalize_step=normalize_step, learning_rate=lr,
                                     max_iter=300, return_report=True)
    assert rep["success"].all()
    if normalize_step == "rms":
        # one step moves pixels by learning_rate grey levels, root mean square
        X1 = make_fooling_image(X[:1], target[:1], net, learning_rate=0.5, max_iter=1, clip=False)
        assert np.isclose(np.sqrt(np.mean(((X1 - X[:1]) * 60.0) ** 2)), 0.5, rtol=1e-4)
    if normalize_step == "sign":
        # every pixel moves by learning_rate grey levels (or none where g is 0)
        X1 = make_fooling_image(X[:1], target[:1], net, learning_rate=0.5, max_iter=1, clip=False)
        d = np.abs((X1 - X[:1]) * 60.0)
        assert np.allclose(d[d > 1e-3], 0.5, rtol=1e-4) and (d > 1e-3).mean() > 0.9


def test_fooling_stops_when_already_predicted(net):
    X = images(2, seed=4)
    pred = net.forward(X)[0].argmax(1)
    X_fool, rep = make_fooling_image(X, pred, net, return_report=True)
    assert np.array_equal(X_fool, X) and (rep["iterations"] == 0).all() and rep["success"].all()


# ---------------------------------------------------------------------------- class visualization
def test_class_visualization_raises_target_score_and_is_seeded(net):
    scores_seen = []
    X = create_class_visualization(3, net, num_iterations=30, seed=5,
                                   callback=lambda t, X, info: scores_seen.append(info["score"][0]))
    assert X.shape == (1, 3, 16, 16) and X.dtype == np.float32
    assert scores_seen[-1] > scores_seen[0]
    lo, hi = net.input_range()
    assert (X >= lo - 1e-6).all() and (X <= hi + 1e-6).all()
    again = create_class_visualization(3, net, num_iterations=30, seed=5)
    other = create_class_visualization(3, net, num_iterations=30, seed=6)
    assert np.array_equal(X, again) and not np.array_equal(X, other)


def test_class_visualization_several_classes_and_cs231n_blur(net):
    X = create_class_visualization([0, 4], net, num_iterations=4, blur_every=2, blur_kind="cs231n",
                                   normalize_grad=False, learning_rate=25.0, seed=0)
    assert X.shape == (2, 3, 16, 16)


# ---------------------------------------------------------------------------- inversion
def test_inversion_reduces_feature_error(net):
    X = images(2, seed=6)
    feats, _ = net.forward(X, end="relu1")
    errs = []
    X_rec = invert_features(feats, "relu1", net, num_iterations=60, seed=0,
                            callback=lambda t, X, info: errs.append(info["feature_error"].mean()))
    assert X_rec.shape == X.shape
    final = feature_error(X_rec, feats, "relu1", net)
    assert final.shape == (2,)
    assert final.mean() < 0.5 * errs[0]


def test_inversion_shape_mismatch_is_an_error(net):
    feats, _ = net.forward(images(1), end="relu1")
    with pytest.raises(ValueError, match="shape"):
        invert_features(feats, "relu2", net, num_iterations=1)
    with pytest.raises(ValueError, match="relu9"):
        invert_features(feats, "relu9", net, num_iterations=1)


# ---------------------------------------------------------------------------- deepdream
@pytest.mark.parametrize("octaves", [1, 3])
def test_deepdream_amplifies_the_layer_on_larger_images(net, octaves):
    X = images(1, size=40, seed=7)
    before = X.copy()
    act0 = np.linalg.norm(net.forward(X, end="relu2")[0])
    X_d = deepdream(X, "relu2", net, num_iterations=10, octaves=octaves, seed=0)
    assert np.array_equal(X, before)
    assert X_d.shape == X.shape
    assert np.linalg.norm(net.forward(X_d, end="relu2")[0]) > 1.2 * act0


def test_deepdream_channel_and_reproducible(net):
    X = images(1, size=24, seed=8)
    a = deepdream(X, "conv2", net, num_iterations=5, channel=3, seed=1)
    b = deepdream(X, "conv2", net, num_iterations=5, channel=3, seed=1)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="channel"):
        deepdream(X, "conv2", net, num_iterations=1, channel=12)


# ---------------------------------------------------------------------------- errors
def test_bad_arguments_get_clear_errors(net):
    X = images(2)
    with pytest.raises(ValueError, match="out of range"):
        compute_saliency_maps(X, [0, 5], net)
    with pytest.raises(ValueError, match="shape"):
        compute_saliency_maps(X, [0, 1, 2], net)
    with pytest.raises(ValueError, match="4-D"):
        compute_saliency_maps(X[0], [0], net)
    with pytest.raises(ValueError, match="channels"):
        compute_saliency_maps(X[:, :2], [0, 1], net)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_fooling_image(bad, 1, net)
    with pytest.raises(TypeError, match="float"):
        compute_saliency_maps(X.astype(np.int64), [0, 1], net)
    with pytest.raises(ValueError, match="empty"):
        compute_saliency_maps(X[:0], np.zeros(0, int), net)
    with pytest.raises(ValueError, match="relu7"):
        deepdream(X, "relu7", net)
    with pytest.raises(ValueError, match="out of range"):
        create_class_visualization(9, net, num_iterations=1)
    with pytest.raises(ValueError, match="norm"):
        make_fooling_image(X, 1, net, norm="l1")
    with pytest.raises(ValueError, match="learning_rate"):
        make_fooling_image(X, 1, net, learning_rate=-1)


def test_algorithms_accept_float64_and_keep_inputs(net):
    X = images(2).astype(np.float64)
    before = X.copy()
    sal = compute_saliency_maps(X, [0, 1], net)
    assert sal.dtype == np.float64
    make_fooling_image(X, 1, net, max_iter=2)
    deepdream(X, "relu1", net, num_iterations=2)
    assert np.array_equal(X, before)
