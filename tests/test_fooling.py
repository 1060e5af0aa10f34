"""Fooling images (CS231n; Szegedy et al. 2014): the target is reached within the budget and the
valid pixel range, on a small net and on held-out images for the bundled model."""
import numpy as np
import pytest

import gradvis
from gradvis import make_fooling_image
from helpers import images, sample


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


@pytest.mark.data
def test_fooling_succeeds_with_a_small_change(pretrained_model, held_out):
    idx = sample(held_out, 20, seed=1)
    X = pretrained_model.preprocess(held_out.X_val[idx])
    before = X.copy()
    rng = np.random.default_rng(2)
    pred = pretrained_model.predict(X).argmax(1)
    target = (pred + rng.integers(1, 100, len(idx))) % 100   # never the predicted class
    X_fool, rep = gradvis.make_fooling_image(X, target, pretrained_model, return_report=True)
    assert np.array_equal(X, before)
    assert rep["success"].mean() >= 0.95
    assert np.array_equal(pretrained_model.predict(X_fool).argmax(1)[rep["success"]], target[rep["success"]])
    # "a change the eye can hardly see": a few grey levels out of 255
    assert np.median(rep["linf_pixels"]) < 8, rep["linf_pixels"]
    imgs = pretrained_model.deprocess(X_fool)
    assert imgs.dtype == np.uint8 and imgs.shape == (20, 64, 64, 3)


@pytest.mark.data
def test_fooling_with_a_budget(pretrained_model, held_out):
    idx = sample(held_out, 8, seed=3)
    X = pretrained_model.preprocess(held_out.X_val[idx])
    pred = pretrained_model.predict(X).argmax(1)
    target = (pred + np.random.default_rng(4).integers(1, 100, len(idx))) % 100
    X_fool, rep = gradvis.make_fooling_image(X, target, pretrained_model, eps=8.0, max_iter=300, return_report=True)
    assert (rep["linf_pixels"] <= 8.0 + 1e-3).all()
    assert rep["success"].mean() >= 0.75, rep["success"]
