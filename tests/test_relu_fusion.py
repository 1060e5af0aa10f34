"""A ReLU applied by the convolution or batch norm before it: the kernel flag on
every conv path and both batch-norm modes, the CS231n-style conv_relu pair, and
the model's fusion (same results as running the layers one by one; never when
the pre-activation is asked for)."""
import numpy as np
import pytest

import gradvis
from gradvis import _core, layers as L
from gradvis.nn import (Add, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d,
                           Model, ReLU)


# (x shape, w shape, padding, groups, algorithm): direct gemm, Winograd, the
# small-map output panel, depthwise, float64
CASES = [
    ((2, 3, 17, 17), (8, 3, 5, 5), 2, 1, "auto"),
    ((2, 32, 24, 24), (32, 32, 3, 3), 1, 1, "winograd"),
    ((3, 16, 7, 7), (20, 16, 3, 3), 1, 1, "direct"),
    ((2, 12, 9, 9), (12, 1, 3, 3), 1, 12, "auto"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=["gemm", "winograd", "panel", "depthwise"])
def test_kernel_flag_equals_separate_relu(case, dtype):
    xs, ws, pad, groups, algo = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    old = gradvis.get_conv_algorithm()
    gradvis.set_conv_algorithm(algo)
    try:
        plain = _core.conv2d_forward(x, w, b, padding=pad, groups=groups)
        fused = _core.conv2d_forward(x, w, b, padding=pad, groups=groups, relu=True)
    finally:
        gradvis.set_conv_algorithm(old)
    assert (plain < 0).any() and (plain > 0).any()
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))


def test_conv_relu_pair():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((6, 4, 3, 3))
    b = rng.standard_normal(6)
    param = {"stride": 1, "pad": 1}
    out, cache = L.conv_relu_forward(x, w, b, param)
    a, ca = L.conv_forward(x, w, b, param)
    r, cr = L.relu_forward(a)
    np.testing.assert_array_equal(out, r)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(L.conv_relu_backward(dout, cache), L.conv_backward(L.relu_backward(dout, cr), ca)):
        np.testing.assert_array_equal(got, want)


def _pair_of_models(model):
    unfused = model.copy()
    unfused.fuse_relu = False
    return model, unfused


def _vgg_like():
    """conv -> relu pairs (as an imported network has them after batch-norm folding),
    with Winograd-sized and small layers."""
    m = Model(input_shape=(3, 32, 32), seed=0)
    m.add("conv1", Conv2d(3, 16, 3, padding=1)).add("relu1", ReLU())
    m.add("conv2", Conv2d(16, 32, 3, padding=1)).add("relu2", ReLU())
    m.add("pool", MaxPool2d(2, 2))
    m.add("conv3", Conv2d(32, 32, 3, padding=1)).add("relu3", ReLU())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(32, 10))
    m.init_params(seed=0)
    for k, v in m.params.items():   # biases that make some pre-activations negative
        if k.endswith("bias"):
            v[...] = np.random.default_rng(1).standard_normal(v.shape)
    return m


def test_model_fused_equals_unfused():
    model, unfused = _pair_of_models(_vgg_like())
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4,) + model.input_shape).astype(np.float32)
    fusions = model._relu_fusions(0, len(model) - 1, set(range(len(model))), None)
    assert {model.nodes[i].name for i in fusions} == {"conv1", "conv2", "conv3"}
    results = []
    for m in (model, unfused):
        scores, cache = m.forward(X, mode="train")
        dX, grads = m.backward(np.ones_like(scores), cache)
        results.append((scores, dX, grads))
    (s1, d1, g1), (s2, d2, g2) = results
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(d1, d2)
    assert g1.keys() == g2.keys()
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_pre_activation_stays_addressable():
    model = _vgg_like()
    conv = next(n.name for i, n in enumerate(model.nodes[:-1])
                if n.layer.type == "Conv2d" and model.nodes[i + 1].layer.type == "ReLU")
    relu = model.nodes[model.index(conv) + 1].name
    X = np.random.default_rng(3).standard_normal((2,) + model.input_shape).astype(np.float32)
    pre, _ = model.forward(X, end=conv)
    assert (pre < 0).any()
    acts, cache = model.forward(X, outputs=[conv, relu])
    np.testing.assert_array_equal(acts[conv], pre)
    np.testing.assert_array_equal(acts[relu], np.maximum(pre, 0))
    # gradients into both the pre-activation and the activation
    g = {conv: np.ones_like(pre), relu: np.ones_like(pre)}
    dX, _ = model.backward(g, cache, param_grads=False)
    unfused = model.copy()
    unfused.fuse_relu = False
    _, cache2 = unfused.forward(X, outputs=[conv, relu])
    dX2, _ = unfused.backward(g, cache2, param_grads=False)
    np.testing.assert_array_equal(dX, dX2)


def test_conv_read_by_another_node_is_not_fused():
    m = Model(input_shape=(3, 8, 8), seed=0)
    m.add("conv", Conv2d(3, 4, 3, padding=1)).add("relu", ReLU())
    m.add("sum", Add(), inputs=["conv", "relu"])
    m.add("pool", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(4, 2))
    m.init_params(seed=0)
    assert m._relu_fusions(0, len(m) - 1, set(range(len(m))), None) == set()
    X = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    acts, _ = m.forward(X, outputs=["conv", "relu", "sum"])
    np.testing.assert_allclose(acts["sum"], acts["conv"] + np.maximum(acts["conv"], 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 70, 4, 4), (6, 33), (1, 3, 1, 1)])
def test_batchnorm_flag_equals_separate_relu(shape, mode, dtype):
    # every walk of the kernels: long planes, many short planes (channel-vector
    # steps), the 2-D (N, D) case, scalar tails; NaN falls through like relu_forward
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3 + 0.5).astype(dtype)
    x.flat[x.size // 2] = np.nan
    C = shape[1]
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    if mode == "train":
        plain = _core.batchnorm_forward_train(x, gamma, beta, 1e-5)
        fused = _core.batchnorm_forward_train(x, gamma, beta, 1e-5, relu=True)
        for a, b in zip(plain[1:], fused[1:]):   # the same statistics
            np.testing.assert_array_equal(a, b)
        plain, fused = plain[0], fused[0]
    else:
        plain = _core.batchnorm_forward_test(x, gamma, beta, rm, rv, 1e-5)
        fused = _core.batchnorm_forward_test(x, gamma, beta, rm, rv, 1e-5, relu=True)
    finite = plain[np.isfinite(plain)]
    assert (finite < 0).any() and (finite > 0).any()
    np.testing.assert_array_equal(fused, _core.relu_forward(plain))


def _bn_net():
    """conv -> batch norm -> relu blocks, and a batch norm 1-d -> relu head."""
    m = Model(input_shape=(3, 16, 16), seed=0)
    m.add("conv1", Conv2d(3, 16, 3, padding=1, bias=False)).add("bn1", BatchNorm2d(16)).add("relu1", ReLU())
    m.add("pool", MaxPool2d(2, 2))
    m.add("conv2", Conv2d(16, 32, 3, padding=1, bias=False)).add("bn2", BatchNorm2d(32)).add("relu2", ReLU())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten())
    m.add("bn3", BatchNorm1d(32)).add("relu3", ReLU()).add("fc", Linear(32, 10))
    m.init_params(seed=0)
    rng = np.random.default_rng(6)
    for k, v in m.params.items():   # shifts that make some normalized values negative
        if k.endswith("beta"):
            v[...] = rng.standard_normal(v.shape)
    for k, v in m.buffers.items():
        v[...] = rng.uniform(0.5, 1.5, v.shape) if k.endswith("var") else rng.standard_normal(v.shape)
    return m


@pytest.mark.parametrize("mode", ["train", "test"])
def test_model_fuses_batchnorm_relu(mode):
    model, unfused = _pair_of_models(_bn_net())
    model.fold_batchnorm = False     # folding into the conv rounds differently (test_batchnorm_fold.py)
    fusions = model._relu_fusions(0, len(model) - 1, set(range(len(model))), None)
    assert {model.nodes[i].name for i in fusions} == {"bn1", "bn2", "bn3"}
    X = np.random.default_rng(7).standard_normal((4,) + model.input_shape).astype(np.float32)
    results = []
    for m in (model, unfused):
        scores, cache = m.forward(X, mode=mode)
        dX, grads = m.backward(np.ones_like(scores), cache)
        results.append((scores, dX, grads, {k: v.copy() for k, v in m.buffers.items()}))
    (s1, d1, g1, b1), (s2, d2, g2, b2) = results
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(d1, d2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    for k in b1:   # running statistics updated the same way in train mode
        np.testing.assert_array_equal(b1[k], b2[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 16, 17, 100003])
def test_add_relu_flag_equals_separate_relu(n, dtype):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    if n >= 3:   # NaN passes, -0 + -0 stays -0, -inf + 1 gives 0
        a[:3], b[:3] = [np.nan, -0.0, -np.inf], [1.0, -0.0, 1.0]
    fused = _core.add_forward(a, b, relu=True)
    want = _core.relu_forward(_core.add_forward(a, b))
    np.testing.assert_array_equal(fused, want)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(want))   # -0 stays -0


def _residual_net():
    """ResNet's block ending: conv -> bn, plus the shortcut, -> Add -> ReLU."""
    m = Model(input_shape=(4, 10, 10), seed=0)
    m.add("c1", Conv2d(4, 4, 3, padding=1)).add("b1", BatchNorm2d(4)).add("r1", ReLU())
    m.add("c2", Conv2d(4, 4, 3, padding=1)).add("b2", BatchNorm2d(4))
    m.add("sum", Add(), inputs=["b2", "input"]).add("r2", ReLU())
    m.add("c3", Conv2d(4, 4, 1)).add("sum2", Add(), inputs=["c3", "r2"]).add("r3", ReLU())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(4, 3))
    m.init_params(seed=0)
    return m


def test_model_fuses_add_relu():
    model, unfused = _pair_of_models(_residual_net())
    model.fold_batchnorm = False     # folding into the conv rounds differently (test_batchnorm_fold.py)
    fusions = model._relu_fusions(0, len(model) - 1, set(range(len(model))), None)
    assert {"sum", "sum2"} <= {model.nodes[i].name for i in fusions}
    X = np.random.default_rng(8).standard_normal((3,) + model.input_shape).astype(np.float32)
    for mode in ("test", "train"):
        s1, c1 = model.forward(X, mode=mode)
        s2, c2 = unfused.forward(X, mode=mode)
        np.testing.assert_array_equal(s1, s2)
        d1, g1 = model.backward(np.ones_like(s1), c1)
        d2, g2 = unfused.backward(np.ones_like(s2), c2)
        np.testing.assert_array_equal(d1, d2)
        for k in g1:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    # asking for the sum keeps it the plain sum
    out, _ = model.forward(X, outputs=["sum", "fc"], cache=False)
    ref, _ = unfused.forward(X, outputs=["sum", "fc"], cache=False)
    np.testing.assert_array_equal(out["sum"], ref["sum"])
    assert (out["sum"] < 0).any()
