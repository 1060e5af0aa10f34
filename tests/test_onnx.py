"""load_onnx on hand-written ONNX graphs, checked against onnx's own reference
evaluator (onnx.reference, numpy): every supported operator and attribute, batch-norm
folding, pad folding, dropped softmax, node naming, errors, load_any, and a branchy
graph's partial passes. Needs only onnx (no torch)."""
import sys

import numpy as np
import pytest

import gradvis
from conftest import require_onnx
from gradvis.nn import INPUT

F32 = np.float32


@pytest.fixture(scope="module")
def ox():
    onnx = require_onnx()
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    return onnx, helper, numpy_helper, ReferenceEvaluator


def make(ox, nodes, inits, in_shape=(1, 3, 12, 12), outputs=("y",), opset=17):
    onnx, helper, numpy_helper, _ = ox
    init = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()]
    graph = helper.make_graph(
        nodes, "test_graph", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs], initializer=init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def reference(ox, proto, X, outputs=None):
    return ox[3](proto).run(outputs, {"x": X})


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def rand(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(F32)


def bn_params(rng, c, prefix):
    return {f"{prefix}_s": (rng.random(c) + 0.5).astype(F32), f"{prefix}_b": rand(rng, c),
            f"{prefix}_m": rand(rng, c), f"{prefix}_v": (rng.random(c) + 0.5).astype(F32)}


def bn_node(helper, x, y, prefix, eps=1e-3):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m",
                                                   f"{prefix}_v"], [y], name=prefix, epsilon=eps)


def softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ============================================================================ a CNN with every op
def every_op_graph(ox, seed=0):
    _, helper, _, _ = ox
    rng = np.random.default_rng(seed)
    n = helper.make_node
    inits = {"w1": rand(rng, 8, 3, 3, 3), "b1": rand(rng, 8),
             "w2": rand(rng, 8, 4, 3, 3),                      # groups=2, dilation 2
             "w3": rand(rng, 8, 1, 3, 3), "b3": rand(rng, 8),  # depthwise, SAME_UPPER stride 2
             "w4": rand(rng, 6, 8, 2, 2),                      # SAME_LOWER even kernel
             "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
             "pads_v": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pv": np.array(0.5, F32),
             "cmin": np.array(-0.5, F32), "cmax": np.array(0.7, F32),
             "cb": rand(rng, 1, 14, 1, 1), "cs": (rng.random((14, 1, 1)) + 0.5).astype(F32),
             "csub": rand(rng, 14, 1, 1), "cdiv": np.array(2.0, F32),
             "fc1": rand(rng, 10, 14 * 3 * 3), "fc1b": rand(rng, 10),
             "mm": rand(rng, 10, 7), "mmb": rand(rng, 7), "gw": rand(rng, 5, 7), "gb": rand(rng, 1, 5)}
    inits.update(bn_params(rng, 8, "bn1"))
    inits.update(bn_params(rng, 14, "bn2"))
    inits.update(bn_params(rng, 10, "bn3"))
    nodes = [
        n("Pad", ["x", "pads"], ["p0"], name="pad0"),                                  # folded
        n("Conv", ["p0", "w1", "b1"], ["c1"], name="/block/conv1/Conv", pads=[1, 0, 0, 1]),
        bn_node(helper, "c1", "c1n", "bn1"),                                           # folded
        n("Relu", ["c1n"], ["r1"], name="/block/relu/Relu"),
        n("Conv", ["r1", "w2"], ["c2"], name="conv2", group=2, dilations=[2, 2], pads=[2, 1, 2, 3]),
        n("Clip", ["c2", "cmin", "cmax"], ["k2"], name="clip_general"),
        n("Conv", ["k2", "w3", "b3"], ["c3"], name="dw", group=8, strides=[2, 2], auto_pad="SAME_UPPER"),
        n("Clip", ["c3", "", "cmax"], ["k3"], name="clip_max_only"),
        n("Conv", ["r1", "w4"], ["c4"], name="same_lower", strides=[2, 2], auto_pad="SAME_LOWER"),
        n("LeakyRelu", ["c4"], ["l4"], name="leaky", alpha=0.2),
        n("Concat", ["k3", "l4"], ["cat"], name="cat", axis=-3),
        bn_node(helper, "cat", "catn", "bn2"),                                         # a BN layer
        n("Add", ["catn", "cb"], ["a1"], name="add_const"),
        n("Mul", ["a1", "cs"], ["m1"], name="mul_const"),
        n("Sub", ["m1", "csub"], ["s1"], name="sub_const"),
        n("Div", ["s1", "cdiv"], ["d1"], name="div_const"),
        n("Pad", ["d1", "pads_v", "pv"], ["p1"], name="pad_value"),                    # a Pad layer
        n("MaxPool", ["p1"], ["mp"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        n("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[2, 2], pads=[1, 1, 0, 0],
          strides=[2, 2]),                                                             # count_include_pad=0
        n("Identity", ["ap"], ["id"], name="identity"),
        n("Shape", ["id"], ["shp"], name="shape"),
        n("Gather", ["shp", "zero"], ["n0"], name="gather", axis=0),
        n("Unsqueeze", ["n0", "ax0"], ["n1"], name="unsq"),
        n("Concat", ["n1", "minus1"], ["newshape"], name="shape_cat", axis=0),
        n("Reshape", ["id", "newshape"], ["flat"], name="reshape"),
        n("Gemm", ["flat", "fc1", "fc1b"], ["g1"], name="fc1", transB=1),
        bn_node(helper, "g1", "g1n", "bn3"),                                           # BatchNorm1d
        n("Dropout", ["g1n"], ["dr"], name="dropout"),
        n("MatMul", ["dr", "mm"], ["mmo"], name="matmul"),
        n("Add", ["mmo", "mmb"], ["mma"], name="matmul_bias"),                         # folded
        n("Relu", ["mma"], ["r2"], name="relu2"),
        n("Gemm", ["r2", "gw", "gb"], ["logits"], name="fc2", transB=1, alpha=0.5, beta=2.0),
        n("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    inits.update({"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64),
                  "minus1": np.array([-1], np.int64)})
    return make(ox, nodes, inits, in_shape=(1, 3, 13, 13), outputs=("y", "r1", "cat"))


@pytest.mark.parametrize("fold", [True, False])
def test_every_op_matches_reference(ox, fold):
    proto = every_op_graph(ox)
    model = gradvis.load_onnx(proto, fold_batchnorm=fold)
    X = np.random.default_rng(1).standard_normal((2, 3, 13, 13)).astype(F32)
    y_ref, r1_ref, cat_ref = reference(ox, proto, X)
    scores = model.forward(X)[0]
    assert scores.shape == (2, 5)
    assert rel_err(softmax(scores.astype(np.float64)), y_ref) < 1e-5
    tensors = model.info["tensors"]
    out = model.forward(X, outputs=[tensors["r1"], tensors["cat"]])[0]
    assert rel_err(out[tensors["r1"]], r1_ref) < 1e-5
    assert rel_err(out[tensors["cat"]], cat_ref) < 1e-5

    types = [nd.layer.type for nd in model.nodes]
    layers = {nd.name: nd.layer for nd in model.nodes}
    assert "Softmax" not in types and any("softmax" in d for d in model.info["dropped"])
    assert ("pad0 (Pad) into /block/conv1/Conv (Conv)" in model.info["folded"])
    assert layers["block.conv1"].padding == (2, 2, 2, 2)       # Pad (t1 b2 l2 r1) + Conv (t1 b0 l0 r1)
    assert layers["conv2"].padding == (2, 2, 1, 3)
    assert types.count("BatchNorm2d") == (1 if fold else 2) and types.count("BatchNorm1d") == 1
    assert tensors["c1n"] == ("block.conv1" if fold else "bn1")
    assert layers["matmul"].bias                               # the Add folded into the MatMul
    assert isinstance(layers["clip_general"], gradvis.Clip) and layers["clip_general"].min == -0.5
    assert layers["clip_max_only"].min == -np.inf
    assert isinstance(layers["pad_value"], gradvis.Pad) and layers["pad_value"].value == 0.5
    assert layers["avgpool"].count_include_pad is False and layers["maxpool"].ceil_mode
    assert isinstance(layers["reshape"], gradvis.Flatten)
    assert {"add_const": gradvis.Bias, "sub_const": gradvis.Bias, "mul_const": gradvis.Scale,
            "div_const": gradvis.Scale}.items() <= {k: type(v) for k, v in layers.items()}.items()
    assert INPUT == model.nodes[0].inputs[0] and model.layer_names[-1] == "fc2"

    # gradients flow through every layer type: the input gradient matches finite differences
    check_input_gradient(model, X[:1])


def check_input_gradient(model, X, points=5, h=1e-5):
    """d(sum(R * scores))/dX of the float64 model against centred differences at a few pixels."""
    m64 = model.astype(np.float64)
    X64 = X.astype(np.float64)
    s, cache = m64.forward(X64)
    R = np.random.default_rng(2).standard_normal(s.shape)
    dX, _ = m64.backward(R, cache, param_grads=False)
    rng = np.random.default_rng(3)
    for _ in range(points):
        idx = tuple(rng.integers(0, d) for d in X64.shape)
        Xp, Xm = X64.copy(), X64.copy()
        Xp[idx] += h
        Xm[idx] -= h
        num = ((m64.forward(Xp)[0] - m64.forward(Xm)[0]) * R).sum() / (2 * h)
        assert abs(num - dX[idx]) < 1e-5 * max(1.0, abs(num))


def test_opset10_attributes_and_save_round_trip(ox, tmp_path):
    """Clip bounds and Pad pads as attributes (opset < 11); saved and reloaded."""
    _, helper, _, _ = ox
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Pad", ["x"], ["p"], name="pad", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0),
             n("Conv", ["p", "w"], ["c"], name="conv"),
             n("Clip", ["c"], ["r6"], name="relu6", min=0.0, max=6.0),
             n("Clip", ["r6"], ["k"], name="clip", min=0.5, max=3.0),
             n("GlobalAveragePool", ["k"], ["g"], name="gap"),
             n("Flatten", ["g"], ["y"], name="flatten")]
    proto = make(ox, nodes, {"w": rand(rng, 4, 3, 3, 3, scale=2.0)}, opset=10)
    model = gradvis.load_onnx(proto, class_names=list("abcd"), mean=(0.5, 0.4, 0.3), std=0.2, scale=255,
                              channel_order="BGR")
    assert [nd.layer.type for nd in model.nodes] == ["Conv2d", "ReLU6", "Clip", "GlobalAvgPool", "Flatten"]
    X = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(F32)
    assert rel_err(model.forward(X)[0], reference(ox, proto, X)[0]) < 1e-5
    back = gradvis.load_model(model.save(tmp_path / "m.npz"))
    np.testing.assert_allclose(back.mean, [127.5, 102.0, 76.5], rtol=1e-6)
    np.testing.assert_allclose(back.std, [51.0] * 3, rtol=1e-6)
    assert back.channel_order == "BGR" and back.class_names == list("abcd")
    assert back["clip"].min == 0.5 and back.info["opset"] == 10
    np.testing.assert_array_equal(back.forward(X)[0], model.forward(X)[0])


def test_clip_with_min_above_max_gives_max_everywhere(ox):
    """ONNX and PyTorch: a Clip whose min exceeds its max sets every value to max
    (the gradient is 0)."""
    _, helper, _, _ = ox
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["c"], name="conv"),
             n("Clip", ["c", "lo", "hi"], ["k"], name="clip"),
             n("Flatten", ["k"], ["y"], name="flatten")]
    rng = np.random.default_rng(0)
    consts = {"w": rand(rng, 2, 3, 3, 3), "lo": np.array(0.5, F32), "hi": np.array(-0.25, F32)}
    proto = make(ox, nodes, consts)
    model = gradvis.load_onnx(proto)
    X = rng.standard_normal((2, 3, 12, 12)).astype(F32)
    out, cache = model.forward(X)
    np.testing.assert_array_equal(out, np.full(out.shape, -0.25, F32))
    np.testing.assert_array_equal(out, reference(ox, proto, X)[0])
    assert not model.backward(np.ones_like(out), cache, param_grads=False)[0].any()


def test_names_are_readable_and_unique(ox):
    _, helper, _, _ = ox
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w"], ["a"], name="/layer1/layer1.0/conv1/Conv", pads=[1, 1, 1, 1]),
             n("Relu", ["a"], ["b"], name="/layer1/layer1.0/relu/Relu"),
             n("Add", ["b", "x4"], ["c"], name="/layer1/layer1.0/Add"),
             n("Relu", ["c"], ["d"], name="/layer1/layer1.0/relu_1/Relu"),
             n("Relu", ["d"], ["e"], name=""),                   # no name: the output's
             n("Relu", ["e"], ["y"], name="weird name:stuff!")]
    proto = make(ox, nodes, {"w": rand(rng, 3, 3, 3, 3), "x4": rand(rng, 1, 3, 12, 12)})
    model = gradvis.load_onnx(proto)
    assert model.layer_names == ["layer1.0.conv1", "layer1.0.relu", "layer1.0.add", "layer1.0.relu_1",
                                 "e", "weird_name:stuff"]


def test_partial_passes_on_a_branchy_graph(ox):
    """end= stops at a node; side branches listed before it are not computed."""
    _, helper, _, _ = ox
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             n("Conv", ["a", "w2"], ["b"], name="branch_b", pads=[1, 1, 1, 1]),
             n("Relu", ["a"], ["c"], name="branch_c"),
             n("Add", ["b", "c"], ["y"], name="merge")]
    proto = make(ox, nodes, {"w1": rand(rng, 4, 3, 3, 3), "w2": rand(rng, 4, 4, 3, 3)})
    model = gradvis.load_onnx(proto)
    X = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(F32)
    calls = []
    layer = model["branch_b"]
    orig = layer.forward
    layer.forward = lambda *a: (calls.append(1), orig(*a))[1]
    c, cache = model.forward(X, end="branch_c")       # branch_b comes before it but is not needed
    assert not calls
    dX, grads = model.backward(np.ones_like(c), cache)
    assert np.all(grads["branch_b.weight"] == 0) and np.abs(grads["stem.weight"]).sum() > 0
    # starting after the stem: both branches read the bound tensor
    a = model.forward(X, end="stem")[0]
    y, _ = model.forward(a, start="branch_b")
    assert rel_err(y, reference(ox, proto, X)[0]) < 1e-5 and calls


# ============================================================================ gates, SE blocks, ReduceMean
def se_graph(ox, opset=17, seed=0):
    """MobileNetV3 / EfficientNet pieces: SiLU as PyTorch exports it, Mul(x, Sigmoid(x));
    the same pattern with a second reader of the sigmoid (not fused); x * hardsigmoid(x);
    HardSwish, Tanh; a squeeze-and-excitation gate (N, C, H, W) * (N, C, 1, 1); Sub, Div
    and a broadcasting Add of activations; ReduceMean with axes as an attribute (opset
    17) or an input (opset 18), keepdims 1 and 0."""
    _, helper, _, _ = ox
    rng = np.random.default_rng(seed)
    n = helper.make_node

    def reduce_mean(x, y, name, keepdims):
        if opset >= 18:
            return n("ReduceMean", [x, "axes23"], [y], name=name, keepdims=keepdims)
        return n("ReduceMean", [x], [y], name=name, keepdims=keepdims, axes=[-1, 2])

    inits = {"w1": rand(rng, 8, 3, 3, 3, scale=0.5), "b1": rand(rng, 8), "w2": rand(rng, 8, 1, 3, 3, scale=0.5),
             "se1": rand(rng, 4, 8, 1, 1, scale=0.5), "se1b": rand(rng, 4),
             "se2": rand(rng, 8, 4, 1, 1, scale=0.5), "se2b": rand(rng, 8),
             "one": np.array(1.0, F32), "fc": rand(rng, 8, 5), "axes23": np.array([2, 3], np.int64)}
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="/stem/conv/Conv", pads=[1, 1, 1, 1]),
        n("Sigmoid", ["c1"], ["s1"], name="/stem/act/Sigmoid"),
        n("Mul", ["c1", "s1"], ["a1"], name="/stem/act/Mul"),                 # SiLU
        n("Conv", ["a1", "w2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1]),
        n("HardSwish", ["c2"], ["h2"], name="hswish"),
        n("HardSigmoid", ["h2"], ["hs"], name="hsig_torch", alpha=1 / 6, beta=0.5),
        n("Mul", ["hs", "h2"], ["h3"], name="hswish_by_hand"),                # HardSwish
        reduce_mean("h3", "p1", "se_pool", 1),
        n("Conv", ["p1", "se1", "se1b"], ["q1"], name="se_fc1"),
        n("Relu", ["q1"], ["q2"], name="se_relu"),
        n("Conv", ["q2", "se2", "se2b"], ["q3"], name="se_fc2"),
        n("HardSigmoid", ["q3"], ["gate"], name="se_gate"),                   # ONNX's alpha 0.2
        n("Mul", ["h3", "gate"], ["se"], name="se_mul"),
        n("Sigmoid", ["se"], ["s2"], name="sig2"),
        n("Mul", ["se", "s2"], ["m2"], name="silu_shared"),                   # s2 is read again
        n("Tanh", ["s2"], ["t2"], name="tanh"),
        n("Sub", ["m2", "t2"], ["d1"], name="sub"),
        n("Add", ["s2", "one"], ["den"], name="den"),
        n("Div", ["d1", "den"], ["d2"], name="div"),
        n("Add", ["d2", "gate"], ["d3"], name="add_gate"),                    # broadcast
        reduce_mean("d3", "p2", "pool", 0),
        n("MatMul", ["p2", "fc"], ["y"], name="fc"),
    ]
    return make(ox, nodes, inits, in_shape=(1, 3, 10, 10), outputs=("y", "se", "m2"), opset=opset)


@pytest.mark.parametrize("opset", [17, 18])
def test_se_graph_matches_reference(ox, opset):
    proto = se_graph(ox, opset)
    model = gradvis.load_onnx(proto)
    X = np.random.default_rng(1).standard_normal((2, 3, 10, 10)).astype(F32)
    y_ref, se_ref, m2_ref = reference(ox, proto, X)
    tensors = model.info["tensors"]
    out = model.forward(X, outputs=[tensors["se"], tensors["m2"], "fc"])[0]
    assert out["fc"].shape == (2, 5) and rel_err(out["fc"], y_ref) < 1e-5
    assert rel_err(out[tensors["se"]], se_ref) < 1e-5 and rel_err(out[tensors["m2"]], m2_ref) < 1e-5

    layers = {nd.name: nd.layer for nd in model.nodes}
    types = {k: v.type for k, v in layers.items()}
    assert {"stem.act": "SiLU", "hswish": "HardSwish", "hsig_torch": "HardSwish", "se_gate": "HardSigmoid",
            "se_mul": "Mul", "sig2": "Sigmoid", "silu_shared": "Mul", "tanh": "Tanh", "sub": "Sub",
            "den": "Bias", "div": "Div", "add_gate": "Add", "se_pool": "GlobalAvgPool",
            "pool": "GlobalAvgPool"}.items() <= types.items()
    assert "stem.act.mul" not in layers and "hswish_by_hand" not in layers
    assert tensors["a1"] == "stem.act" and tensors["h3"] == "hsig_torch"
    assert np.isclose(layers["se_gate"].alpha, 0.2) and layers["se_gate"].beta == 0.5
    assert layers["se_pool"].keepdims and not layers["pool"].keepdims
    assert model.node("se_mul").inputs == ["hsig_torch", "se_gate"]
    assert sum("into one SiLU" in f for f in model.info["folded"]) == 1
    assert sum("into one HardSwish" in f for f in model.info["folded"]) == 1
    check_input_gradient(model, X[:1])


def test_swish_and_noop_reduce_mean(ox):
    _, helper, _, _ = ox
    n = helper.make_node
    proto = make(ox, [n("Swish", ["x"], ["s"], name="swish"),
                      n("ReduceMean", ["s"], ["y"], name="noop", noop_with_empty_axes=1)], {}, opset=24)
    model = gradvis.load_onnx(proto)
    assert [nd.layer.type for nd in model.nodes] == ["SiLU"]
    X = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(F32) * 3
    assert rel_err(model.forward(X)[0], reference(ox, proto, X)[0]) < 1e-6


@pytest.mark.parametrize("node_kw, match", [
    (dict(), r"'bad_mean'.*over all axes, the batch axis included"),
    (dict(axes=[0, 1]), r"'bad_mean'.*axes \[0, 1\] include the batch axis"),
    (dict(axes=[2, 4]), r"'bad_mean'.*axes \[2, 4\] out of range"),
])
def test_reduce_mean_over_the_batch_is_refused(ox, node_kw, match):
    _, helper, _, _ = ox
    proto = make(ox, [helper.make_node("ReduceMean", ["x"], ["y"], name="bad_mean", **node_kw)], {})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match=match):
        gradvis.load_onnx(proto)


def test_elementwise_errors(ox):
    _, helper, _, _ = ox
    rng = np.random.default_rng(0)
    n = helper.make_node
    swish2 = make(ox, [n("Swish", ["x"], ["y"], name="swish2", alpha=2.0)], {}, opset=24)
    with pytest.raises(gradvis.io.onnx_import.UnsupportedOperatorError, match=r"'swish2'.*alpha=2"):
        gradvis.load_onnx(swish2)
    # a constant that enlarges the activations it divides
    const_div = make(ox, [n("Div", ["c", "x"], ["y"], name="rdiv")], {"c": np.ones((2, 3, 1, 1), F32)})
    with pytest.raises(ValueError, match=r"'rdiv'.*constant of shape \(2, 3, 1, 1\) has a batch axis of 2, the "
                                         r"graph's input 1"):
        gradvis.load_onnx(const_div)
    bad_mul = make(ox, [n("Conv", ["x", "w"], ["a"], name="conv", strides=[2, 2]),
                        n("Mul", ["a", "x"], ["y"], name="mul_bad")], {"w": rand(rng, 3, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"'mul_bad'.*shape mismatch.*do not broadcast"):
        gradvis.load_onnx(bad_mul)


# ============================================================================ errors
def test_unsupported_operator_names_op_and_node(ox):
    _, helper, _, _ = ox
    proto = make(ox, [helper.make_node("Acosh", ["x"], ["s"], name="my_acosh"),
                      helper.make_node("Relu", ["s"], ["y"], name="relu")], {})
    with pytest.raises(gradvis.io.onnx_import.UnsupportedOperatorError, match=r"'Acosh' \(node 'my_acosh'\)"):
        gradvis.load_onnx(proto)


def test_shape_mismatches_are_clear(ox):
    _, helper, _, _ = ox
    rng = np.random.default_rng(0)
    n = helper.make_node
    bad_conv = make(ox, [n("Conv", ["x", "w"], ["y"], name="conv_bad")], {"w": rand(rng, 4, 5, 3, 3)})
    with pytest.raises(ValueError, match=r"conv_bad.*shape mismatch.*5 input channels.*has 3"):
        gradvis.load_onnx(bad_conv)
    bad_add = make(ox, [n("Conv", ["x", "w"], ["a"], name="conv", strides=[2, 2]),
                        n("Conv", ["x", "w"], ["b"], name="conv_s1"),
                        n("Add", ["a", "b"], ["y"], name="add_bad")], {"w": rand(rng, 4, 3, 3, 3)})
    with pytest.raises(ValueError, match=r"add_bad.*shape mismatch"):
        gradvis.load_onnx(bad_add)
    bad_reshape = make(ox, [n("Reshape", ["x", "s"], ["y"], name="reshape3d")],
                       {"s": np.array([0, 5, -1], np.int64)})
    with pytest.raises(ValueError, match=r"reshape3d.*cannot reshape \(N, 3, 12, 12\)"):
        gradvis.load_onnx(bad_reshape)
    windows = make(ox, [n("Reshape", ["x", "s"], ["y"], name="windows")], {"s": np.array([-1, 3, 6, 6], np.int64)})
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError,
                       match=r"'windows'.*merges the batch axis with others \(its first entry would hold N x 4\)"):
        gradvis.load_onnx(windows)
    bad_gemm = make(ox, [n("Flatten", ["x"], ["f"], name="flat"),
                         n("Gemm", ["f", "w"], ["y"], name="fc", transB=1)], {"w": rand(rng, 10, 400)})
    with pytest.raises(ValueError, match=r"'fc'.*400.*432"):
        gradvis.load_onnx(bad_gemm)


def test_dynamic_input_needs_input_shape(ox):
    _, helper, _, _ = ox
    proto = make(ox, [helper.make_node("Relu", ["x"], ["y"], name="relu")], {}, in_shape=("N", 3, "H", "W"))
    with pytest.raises(ValueError, match="input_shape"):
        gradvis.load_onnx(proto)
    assert gradvis.load_onnx(proto, input_shape=(3, 20, 20)).input_shape == (3, 20, 20)


def test_bad_files(ox, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="garbage.onnx"):
        gradvis.load_onnx(garbage)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(ValueError, match="notes.onnx"):
        gradvis.load_onnx(text)
    good = every_op_graph(ox).SerializeToString()
    cut = tmp_path / "truncated.onnx"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated.onnx"):
        gradvis.load_onnx(cut)
    with pytest.raises(FileNotFoundError):
        gradvis.load_onnx(tmp_path / "missing.onnx")


def test_load_any_dispatches_onnx(ox, tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(every_op_graph(ox).SerializeToString())
    model = gradvis.load_any(path, scale=255, mean=0.5, std=0.25)
    assert model.info["source"] == "onnx" and model.name == "test_graph"
    np.testing.assert_allclose(model.std, [63.75] * 3)
    saved = model.save(tmp_path / "net.npz")
    assert gradvis.load_any(saved).layer_names == model.layer_names
    with pytest.raises(TypeError):
        gradvis.load_any(saved, scale=2)


def test_missing_onnx_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        gradvis.load_onnx("whatever.onnx")
