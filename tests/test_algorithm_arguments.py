"""What the five algorithms share: clear errors for bad arguments, float64 inputs, inputs never
modified."""
import numpy as np
import pytest

from gradvis import compute_saliency_maps, create_class_visualization, deepdream, make_fooling_image
from helpers import images


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
