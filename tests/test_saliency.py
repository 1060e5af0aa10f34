"""Saliency maps and SmoothGrad (Simonyan et al. 2013; Smilkov et al. 2017): gradients checked by
finite differences on a small net, and on the bundled model the map falls on the object."""
import numpy as np
import pytest

import gradvis
from gradvis import compute_saliency_maps, smoothgrad_saliency_maps
from helpers import images


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


@pytest.mark.data
def test_saliency_falls_on_the_object(pretrained_model, held_out):
    # Images whose box leaves room around it, so "inside" means something.
    b = held_out.boxes_val
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) / 64.0 ** 2
    rng = np.random.default_rng(0)
    idx = rng.choice(np.flatnonzero(area < 0.5), 48, replace=False)
    X = pretrained_model.preprocess(held_out.X_val[idx])
    y = held_out.y_val[idx]
    sal = gradvis.compute_saliency_maps(X, y, pretrained_model)
    assert sal.shape == (48, 64, 64) and sal.dtype == np.float32
    share, box_share = [], []
    for i, k in enumerate(idx):
        x0, y0, x1, y1 = b[k]
        mask = np.zeros((64, 64), bool)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        share.append(sal[i][mask].sum() / sal[i].sum())
        box_share.append(mask.mean())
    assert np.mean(share) > np.mean(box_share) + 0.05, (np.mean(share), np.mean(box_share))
