"""The layers added for imported graphs (Clip, Pad, Bias, Scale): gradients by finite
differences in float64, and a save/load round trip."""
import numpy as np

from gradvis.model import Bias, Clip, Conv2d, Flatten, Linear, Model, Pad, Scale
from gradvis.serialization import load_model


def net(seed=0):
    m = Model(input_shape=(2, 5, 5), seed=seed)
    m.add("pad", Pad((1, 0, 2, 1), value=0.3))
    m.add("bias", Bias((2, 1, 1)))
    m.add("conv", Conv2d(2, 3, 3))
    m.add("scale", Scale((3, 1, 6)))
    m.add("clip", Clip(-0.4, None))
    m.add("bias2", Bias(()))
    m.add("flat", Flatten())
    m.add("fc", Linear(3 * 4 * 6, 2))
    rng = np.random.default_rng(seed + 1)
    m.params["bias.bias"] = rng.standard_normal((2, 1, 1)).astype(np.float32)
    m.params["scale.scale"] = (rng.random((3, 1, 6)) + 0.5).astype(np.float32)
    m.params["bias2.bias"] = np.array(0.2, np.float32)
    return m


def test_gradients_match_finite_differences():
    m = net().astype(np.float64)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2, 2, 5, 5))
    R = rng.standard_normal((2, 2))
    out, cache = m.forward(X)
    dX, grads = m.backward(R, cache)
    f = lambda: (m.forward(X)[0] * R).sum()   # noqa: E731
    h = 1e-6
    for arr, g in [(X, dX)] + [(m.params[k], grads[k]) for k in ("bias.bias", "scale.scale", "bias2.bias")]:
        flat, gflat = arr.reshape(-1), np.asarray(g).reshape(-1)
        for i in rng.choice(flat.size, min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + h
            fp = f()
            flat[i] = old - h
            fm = f()
            flat[i] = old
            assert abs((fp - fm) / (2 * h) - gflat[i]) < 1e-6 * max(1.0, abs(gflat[i]))


def test_clip_with_open_ends_and_pad_shapes():
    x = np.linspace(-3, 3, 2 * 5 * 5, dtype=np.float32).reshape(1, 2, 5, 5)
    m = Model(input_shape=(2, 5, 5))
    m.add("clip", Clip(None, 1.0)).add("pad", Pad(1))
    y = m.forward(x)[0]
    assert y.shape == (1, 2, 7, 7) and y.max() == 1.0 and y.min() == -3.0 and y[0, 0, 0, 0] == 0


def test_round_trip(tmp_path):
    m = net()
    back = load_model(m.save(tmp_path / "g.npz"))
    assert back["clip"].min == -0.4 and back["clip"].max == np.inf
    assert back["pad"].padding == (1, 0, 2, 1) and back["pad"].value == 0.3
    X = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(X)[0], m.forward(X)[0])
