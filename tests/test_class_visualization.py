"""Class visualization (Simonyan et al. 2013; Yosinski et al. 2015): the target score rises, runs
are seeded, and the bundled model recognizes what it drew."""
import numpy as np
import pytest

import gradvis
from gradvis import create_class_visualization
from gradvis.nn.losses import softmax


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
    seen = []
    kw = dict(num_iterations=6, normalize_grad=False, learning_rate=25.0, seed=0)
    X = create_class_visualization([0, 4], net, blur_every=2, blur_kind="cs231n",
                                   callback=lambda t, X, info: seen.append(np.array(info["score"])), **kw)
    assert X.shape == (2, 3, 16, 16)
    assert (seen[-1] > seen[0]).all(), (seen[0], seen[-1])    # each image climbs its own class
    unblurred = create_class_visualization([0, 4], net, blur_every=0, **kw)

    def roughness(a):
        return np.abs(np.diff(a, axis=-1)).mean() + np.abs(np.diff(a, axis=-2)).mean()
    assert roughness(X) < 0.95 * roughness(unblurred)          # the 3x3 blur smooths


@pytest.mark.data
@pytest.mark.parametrize("target", [3, 42, 76])
def test_class_visualization_is_recognized(pretrained_model, target):
    X = gradvis.create_class_visualization(target, pretrained_model, seed=0)
    assert X.shape == (1, 3, 64, 64)
    p = softmax(pretrained_model.forward(X)[0])[0, target]
    assert p >= 0.9, p
