"""DeepDream (Mordvintsev et al. 2015): the layer's activations grow, at any image size and over
octaves, reproducibly."""
import numpy as np
import pytest

import gradvis
from gradvis import deepdream
from helpers import images, sample


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


@pytest.mark.data
def test_deepdream_amplifies_the_layer(pretrained_model, held_out):
    idx = sample(held_out, 2, seed=5)
    X = pretrained_model.preprocess(held_out.X_val[idx])
    layer = "relu5"
    a0 = np.linalg.norm(pretrained_model.forward(X, end=layer)[0].reshape(2, -1), axis=1)
    X_dream = gradvis.deepdream(X, layer, pretrained_model, num_iterations=10, seed=0)
    a1 = np.linalg.norm(pretrained_model.forward(X_dream, end=layer)[0].reshape(2, -1), axis=1)
    assert (a1 > 1.3 * a0).all(), (a0, a1)


@pytest.mark.data
def test_deepdream_on_a_large_photo_with_octaves(pretrained_model):
    from matplotlib import cbook
    from PIL import Image
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        photo = np.asarray(im.convert("RGB").resize((160, 200)))
    X = pretrained_model.preprocess(photo)
    assert X.shape == (1, 3, 200, 160)
    X_dream = gradvis.deepdream(X, "relu4", pretrained_model, num_iterations=4, octaves=3, seed=0)
    assert X_dream.shape == X.shape
    a0 = np.linalg.norm(pretrained_model.forward(X, end="relu4")[0])
    a1 = np.linalg.norm(pretrained_model.forward(X_dream, end="relu4")[0])
    assert a1 > a0
