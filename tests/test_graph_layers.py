"""The layers added for imported graphs (Clip, Pad, Bias, Scale; the activations and
broadcasting Mul/Sub/Div/Add of squeeze-and-excitation nets): gradients by finite
differences in float64, and a save/load round trip."""
import numpy as np
import pytest

from gradvis.nn import (Add, Bias, Clip, Conv2d, Div, Flatten, GlobalAvgPool, HardSigmoid, HardSwish,
                           Linear, Model, Mul, Pad, Scale, SiLU, Sigmoid, Sub, Tanh)
from gradvis.io.model_file import load_model


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


def se_net(seed=0):
    """A squeeze-and-excitation block: every new activation, gates broadcast over H, W."""
    m = Model(input_shape=(3, 6, 6), seed=seed)
    m.add("conv", Conv2d(3, 4, 3, padding=1))
    m.add("hswish", HardSwish())
    m.add("silu", SiLU())
    m.add("pool", GlobalAvgPool())
    m.add("hsig", HardSigmoid(0.2, 0.5))                           # ONNX's defaults
    m.add("sig", Sigmoid(), inputs="pool")
    m.add("tanh", Tanh(), inputs="pool")
    m.add("den", Bias(()), inputs="sig")
    m.add("gate", Mul(), inputs=["silu", "hsig"])                  # (4, 6, 6) * (4, 1, 1)
    m.add("gate2", Mul(), inputs=["sig", "gate"])                  # (4, 1, 1) * (4, 6, 6)
    m.add("sub", Sub(), inputs=["gate2", "tanh"])
    m.add("div", Div(), inputs=["sub", "den"])
    m.add("add", Add(), inputs=["div", "tanh", "hswish"])          # broadcasting sum of three
    m.add("pool2", GlobalAvgPool(keepdims=False))
    m.add("fc", Linear(4, 3))
    m.params["den.bias"] = np.array(1.5, np.float32)
    return m


def check_finite_differences(m, X, R, param_names, h=1e-6):
    """d(sum(R * m(X))) w.r.t. X and the named parameters at a few random entries."""
    out, cache = m.forward(X)
    dX, grads = m.backward(R, cache)
    f = lambda: (m.forward(X)[0] * R).sum()   # noqa: E731
    rng = np.random.default_rng(0)
    for arr, g in [(X, dX)] + [(m.params[k], grads[k]) for k in param_names]:
        flat, gflat = arr.reshape(-1), np.asarray(g).reshape(-1)
        for i in rng.choice(flat.size, min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + h
            fp = f()
            flat[i] = old - h
            fm = f()
            flat[i] = old
            assert abs((fp - fm) / (2 * h) - gflat[i]) < 1e-6 * max(1.0, abs(gflat[i]))


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    check_finite_differences(net().astype(np.float64), rng.standard_normal((2, 2, 5, 5)),
                             rng.standard_normal((2, 2)), ("bias.bias", "scale.scale", "bias2.bias"))


def test_se_block_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    m = se_net().astype(np.float64)
    X = rng.standard_normal((2, 3, 6, 6))
    shapes = m.output_shapes()
    assert shapes["gate"] == shapes["gate2"] == (4, 6, 6) and shapes["pool2"] == (4,)
    check_finite_differences(m, X, rng.standard_normal((2, 3)), ("conv.weight", "den.bias", "fc.weight"))


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


def test_se_round_trip_and_summary(tmp_path):
    m = se_net()
    back = load_model(m.save(tmp_path / "se.npz"))
    assert [n.layer.type for n in back.nodes] == [n.layer.type for n in m.nodes]
    assert back["hsig"].alpha == 0.2 and back["hsig"].beta == 0.5 and back["pool2"].keepdims is False
    assert back.node("add").inputs == ["div", "tanh", "hswish"]
    X = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(X)[0], m.forward(X)[0])
    assert "HardSigmoid alpha 0.2 beta 0.5" in m.summary() and "GlobalAvgPool flattened" in m.summary()


def test_broadcasting_shape_errors():
    m = Model(input_shape=(3, 6, 6))
    m.add("conv", Conv2d(3, 4, 1)).add("pool", GlobalAvgPool(keepdims=False))
    m.add("conv3", Conv2d(3, 3, 1), inputs="input")
    m.add("bad_rank", Mul(), inputs=["conv", "pool"])
    with pytest.raises(ValueError, match=r"bad_rank.*same number of axes"):
        m.output_shapes()
    m2 = Model(input_shape=(3, 6, 6))
    m2.add("conv", Conv2d(3, 4, 1)).add("conv3", Conv2d(3, 3, 1), inputs="input")
    m2.add("bad", Sub(), inputs=["conv", "conv3"])
    with pytest.raises(ValueError, match=r"'bad' \(Sub\).*do not broadcast"):
        m2.forward(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="takes 2 input"):
        m2.add("three", Mul(), inputs=["conv", "conv", "conv"])


def test_conv_input_checks_after_a_pass():
    """A convolution remembers the last input shape it accepted (a gradient loop
    repeats the check on every pass); a pass with another size is checked again and
    a wrong channel count or a too-small image is refused with the layer's message."""
    m = Model(input_shape=(3, 8, 8))
    m.add("conv", Conv2d(3, 4, 5)).add("act", SiLU()).add("pool", GlobalAvgPool(keepdims=False))
    m.add("fc", Linear(4, 2))
    X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for _ in range(2):
        ok, _ = m.forward(X, cache=False)
        assert ok.shape == (2, 2)
    with pytest.raises(ValueError, match=r"'conv' \(Conv2d\): input 4x4 is too small for a 5x5 kernel"):
        m.forward(X[:, :, :4, :4])
    layer = m.node("conv").layer
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\), got \(N, 2, 8, 8\)"):
        layer.forward([X[:, :2]], {"weight": m.params["conv.weight"], "bias": m.params["conv.bias"]}, {}, "test",
                      None)
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\), got an array of shape \(2, 3, 8, 8, 1\)"):
        layer.forward_act([X[..., None]], {"weight": m.params["conv.weight"]}, ("silu",))
    assert np.array_equal(m.forward(X, cache=False)[0], ok)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_broadcasts_either_operand(dtype):
    # the smaller operand first or second: numpy's sum, and gradients summed back to each shape
    m = Model(input_shape=(3, 4, 5), seed=0)
    m.add("pool", GlobalAvgPool()).add("add", Add(), inputs=["pool", "input"])
    m.add("add2", Add(), inputs=["add", "pool"])
    X = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(dtype)
    out, cache = m.forward(X)
    p = X.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, p + X + p, rtol=1e-6, atol=1e-6)
    dx, _ = m.backward(np.ones_like(out), cache)
    np.testing.assert_allclose(dx, np.full(X.shape, 3.0), rtol=1e-6)   # 1 + two means of 20 ones
