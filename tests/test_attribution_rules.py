"""Model.backward's ``rules``: per node name or layer type replacement of the
input-gradient rule (guided backpropagation reaches the ReLUs fused into
convolutions)."""
import numpy as np
import pytest

import gradvis.attribution as A
from gradvis.nn import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, Model, ReLU


def _net(seed=0):
    m = Model(input_shape=(3, 12, 12), seed=seed)
    m.add("conv1", Conv2d(3, 6, 3, padding=1)).add("relu1", ReLU())
    m.add("conv2", Conv2d(6, 8, 3, padding=1)).add("bn2", BatchNorm2d(8)).add("relu2", ReLU())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(8, 5))
    rng = np.random.default_rng(seed)
    m.buffers["bn2.running_mean"][:] = rng.standard_normal(8) * 0.1
    m.buffers["bn2.running_var"][:] = rng.random(8) + 0.5
    return m


def _X(n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, 12, 12))


def test_rules_by_type_reach_fused_relus():
    m = _net()
    X = _X()
    fused = A.guided_backprop(X, 1, m)
    m.fuse_relu = False
    separate = A.guided_backprop(X, 1, m)
    m.fuse_relu = True
    np.testing.assert_allclose(fused, separate, rtol=1e-12, atol=0)
    # and it differs from the plain gradient (the rule ran)
    assert np.abs(fused - A.saliency(X, 1, m, abs=False)).max() > 1e-3 * np.abs(fused).max()


def test_guided_backprop_by_hand():
    """dx of each ReLU = max(dout, 0) where x > 0: recomputed layer by layer."""
    m = _net()
    m.fuse_relu = False
    X = _X(1)
    out, cache = m.forward(X, outputs=m.layer_names)
    g = np.zeros((1, 5))
    g[0, 2] = 1
    names = m.layer_names
    for i in range(len(names) - 1, -1, -1):
        node = m.nodes[i]
        c = cache["caches"][i]
        if isinstance(node.layer, ReLU):
            x = out[node.inputs[0]]
            g = np.where(x > 0, np.maximum(g, 0), 0)
        else:
            g = node.layer.backward_inputs(g, c)[0]
    np.testing.assert_allclose(A.guided_backprop(X, 2, m), g, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rules_are_the_formulas(dtype):
    """The guided rule is max(dout, 0) where x > 0, the deconvolution rule
    max(dout, 0), on signs, zeros of both signs and large arrays (the kernels
    split those over threads), in the gradient's dtype."""
    from gradvis.attribution.relu_rules import deconvolution_rules, guided_backprop_rules
    rng = np.random.default_rng(5)
    for n in (7, 300_001):
        dout = rng.standard_normal(n).astype(dtype)
        x = rng.standard_normal(n).astype(dtype)
        dout[:3], x[:3] = [0.0, -0.0, -1.0], [1.0, 1.0, 0.0]
        guided = guided_backprop_rules()[ReLU](ReLU(), dout, x)[0]
        deconv = deconvolution_rules()[ReLU](ReLU(), dout, x)[0]
        assert guided.dtype == deconv.dtype == dtype
        np.testing.assert_array_equal(guided, np.where(x > 0, np.maximum(dout, 0), 0))
        np.testing.assert_array_equal(deconv, np.maximum(dout, 0))
        assert np.any(guided != deconv) and np.any(deconv != dout)


def test_rule_by_name_wins_and_reads_a_gradient():
    m = _net()
    X = _X()
    scores, cache = m.forward(X, outputs=["relu1", "fc"])
    seen = {}

    def read(layer, dout, c):
        seen["relu1"] = dout
        return layer.backward_inputs(dout, c)

    def zero(layer, dout, c):
        return [np.zeros_like(dout)]
    dout = {"fc": np.ones((2, 5))}
    dX, _ = m.backward(dout, cache, param_grads=False, rules={"relu1": read, ReLU: zero})
    assert seen["relu1"].shape == scores["relu1"].shape
    # relu2 (by type) passed nothing back, so nothing reached relu1 or the input
    assert not np.any(seen["relu1"]) and not np.any(dX)


def test_rules_leave_parameter_gradients():
    m = _net()
    X = _X()
    s, cache = m.forward(X, mode="test")
    _, g1 = m.backward(np.ones_like(s), cache)
    s, cache = m.forward(X, mode="test")
    _, g2 = m.backward(np.ones_like(s), cache, rules={"gap": lambda layer, d, c: layer.backward_inputs(d, c)})
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


@pytest.mark.parametrize("rules,err", [
    ([1], TypeError), ({3: lambda *a: None}, TypeError), ({"relu1": 5}, TypeError), ({int: lambda *a: None}, TypeError)])
def test_bad_rules(rules, err):
    m = _net()
    s, cache = m.forward(_X())
    with pytest.raises(err, match="rules"):
        m.backward(np.ones_like(s), cache, rules=rules)


def test_rule_returning_the_wrong_count():
    m = _net()
    s, cache = m.forward(_X())
    with pytest.raises(ValueError, match="'relu2' returned 2 gradient"):
        m.backward(np.ones_like(s), cache, rules={"relu2": lambda layer, d, c: [d, d]})
