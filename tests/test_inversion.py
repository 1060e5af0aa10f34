"""Feature inversion (Mahendran & Vedaldi 2015): the reconstruction's features approach the target's."""
import pytest

import gradvis
from gradvis import invert_features
from gradvis.generation.inversion import feature_error
from helpers import images, sample


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


@pytest.mark.data
def test_inverting_an_early_layer_matches_its_features(pretrained_model, held_out):
    idx = sample(held_out, 3, seed=4)
    X = pretrained_model.preprocess(held_out.X_val[idx])
    layer = "relu2"
    feats, _ = pretrained_model.forward(X, end=layer)
    X_rec = gradvis.invert_features(feats, layer, pretrained_model, seed=0)
    err = feature_error(X_rec, feats, layer, pretrained_model)
    assert (err < 0.1).all(), err
