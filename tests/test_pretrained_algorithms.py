"""The five algorithms do what they are for, on the shipped model and held-out
images (TinyImageNet-100-A images 450-499), with their default settings."""
import os

import numpy as np
import pytest

import gradvis
from gradvis.nn.losses import softmax
from gradvis.generation.inversion import feature_error
from gradvis.io.pretrained import DEFAULT_WEIGHTS

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def model():
    if not DEFAULT_WEIGHTS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the bundled weights {DEFAULT_WEIGHTS} are missing")
        pytest.skip("bundled weights not trained yet")
    return gradvis.load_pretrained()


@pytest.fixture(scope="module")
def held_out():
    from gradvis.io.datasets import find_tiny_imagenet, load_tiny_imagenet
    try:
        find_tiny_imagenet()
    except FileNotFoundError:
        if os.environ.get("CI"):
            raise
        pytest.skip("TinyImageNet archive not found")
    return load_tiny_imagenet()


def sample(held_out, n, seed):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(held_out.X_val), n, replace=False)
    return idx


def test_saliency_falls_on_the_object(model, held_out):
    # Images whose box leaves room around it, so "inside" means something.
    b = held_out.boxes_val
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) / 64.0 ** 2
    rng = np.random.default_rng(0)
    idx = rng.choice(np.flatnonzero(area < 0.5), 48, replace=False)
    X = model.preprocess(held_out.X_val[idx])
    y = held_out.y_val[idx]
    sal = gradvis.compute_saliency_maps(X, y, model)
    assert sal.shape == (48, 64, 64) and sal.dtype == np.float32
    share, box_share = [], []
    for i, k in enumerate(idx):
        x0, y0, x1, y1 = b[k]
        mask = np.zeros((64, 64), bool)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        share.append(sal[i][mask].sum() / sal[i].sum())
        box_share.append(mask.mean())
    assert np.mean(share) > np.mean(box_share) + 0.05, (np.mean(share), np.mean(box_share))


def test_fooling_succeeds_with_a_small_change(model, held_out):
    idx = sample(held_out, 20, seed=1)
    X = model.preprocess(held_out.X_val[idx])
    before = X.copy()
    rng = np.random.default_rng(2)
    pred = model.predict(X).argmax(1)
    target = (pred + rng.integers(1, 100, len(idx))) % 100   # never the predicted class
    X_fool, rep = gradvis.make_fooling_image(X, target, model, return_report=True)
    assert np.array_equal(X, before)
    assert rep["success"].mean() >= 0.95
    assert np.array_equal(model.predict(X_fool).argmax(1)[rep["success"]], target[rep["success"]])
    # "a change the eye can hardly see": a few grey levels out of 255
    assert np.median(rep["linf_pixels"]) < 8, rep["linf_pixels"]
    imgs = model.deprocess(X_fool)
    assert imgs.dtype == np.uint8 and imgs.shape == (20, 64, 64, 3)


def test_fooling_with_a_budget(model, held_out):
    idx = sample(held_out, 8, seed=3)
    X = model.preprocess(held_out.X_val[idx])
    pred = model.predict(X).argmax(1)
    target = (pred + np.random.default_rng(4).integers(1, 100, len(idx))) % 100
    X_fool, rep = gradvis.make_fooling_image(X, target, model, eps=8.0, max_iter=300, return_report=True)
    assert (rep["linf_pixels"] <= 8.0 + 1e-3).all()
    assert rep["success"].mean() >= 0.75, rep["success"]


@pytest.mark.parametrize("target", [3, 42, 76])
def test_class_visualization_is_recognized(model, target):
    X = gradvis.create_class_visualization(target, model, seed=0)
    assert X.shape == (1, 3, 64, 64)
    p = softmax(model.forward(X)[0])[0, target]
    assert p >= 0.9, p


def test_inverting_an_early_layer_matches_its_features(model, held_out):
    idx = sample(held_out, 3, seed=4)
    X = model.preprocess(held_out.X_val[idx])
    layer = "relu2"
    feats, _ = model.forward(X, end=layer)
    X_rec = gradvis.invert_features(feats, layer, model, seed=0)
    err = feature_error(X_rec, feats, layer, model)
    assert (err < 0.1).all(), err


def test_deepdream_amplifies_the_layer(model, held_out):
    idx = sample(held_out, 2, seed=5)
    X = model.preprocess(held_out.X_val[idx])
    layer = "relu5"
    a0 = np.linalg.norm(model.forward(X, end=layer)[0].reshape(2, -1), axis=1)
    X_dream = gradvis.deepdream(X, layer, model, num_iterations=10, seed=0)
    a1 = np.linalg.norm(model.forward(X_dream, end=layer)[0].reshape(2, -1), axis=1)
    assert (a1 > 1.3 * a0).all(), (a0, a1)


def test_deepdream_on_a_large_photo_with_octaves(model):
    from matplotlib import cbook
    from PIL import Image
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        photo = np.asarray(im.convert("RGB").resize((160, 200)))
    X = model.preprocess(photo)
    assert X.shape == (1, 3, 200, 160)
    X_dream = gradvis.deepdream(X, "relu4", model, num_iterations=4, octaves=3, seed=0)
    assert X_dream.shape == X.shape
    a0 = np.linalg.norm(model.forward(X, end="relu4")[0])
    a1 = np.linalg.norm(model.forward(X_dream, end="relu4")[0])
    assert a1 > a0
