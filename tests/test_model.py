"""gradvis.Model: gradients (finite differences, PyTorch), partial passes, errors, pre-processing."""
import numpy as np
import pytest

import gradvis
from conftest import require_torch
from gradvis.nn.architectures import default_net
from gradvis.nn import (Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten,
                        GlobalAvgPool, LeakyReLU, Linear, MaxPool2d, Model, ReLU, ReLU6)
from helpers import numeric_partial


def graph_net(seed=0, dropout=0.0):
    """A small net with every layer type, a residual Add and a Concat branch."""
    m = Model(input_shape=(3, 12, 12), mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0),
              class_names=[f"c{i}" for i in range(7)], seed=seed)
    m.add("conv1", Conv2d(3, 6, 3, stride=1, padding=1))
    m.add("bn1", BatchNorm2d(6))
    m.add("relu1", ReLU())
    m.add("conv2", Conv2d(6, 6, 3, padding=(1, 1, 1, 1), groups=2, bias=False))
    m.add("bn2", BatchNorm2d(6))
    m.add("add", Add(), inputs=["bn2", "relu1"])                 # residual
    m.add("leaky", LeakyReLU(0.1))
    m.add("branch_a", Conv2d(6, 4, 1), inputs="leaky")
    m.add("branch_b", Conv2d(6, 3, 3, padding=2, dilation=2), inputs="leaky")
    m.add("cat", Concat(), inputs=["branch_a", "branch_b"])
    m.add("relu6", ReLU6())
    m.add("pool", MaxPool2d(2))                                    # 6x6
    m.add("conv3", Conv2d(7, 8, 3, stride=2, padding=(1, 0, 1, 0)))  # 3x3
    m.add("apool", AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
    m.add("flatten", Flatten())
    m.add("fc1", Linear(72, 10))
    m.add("bn3", BatchNorm1d(10))
    m.add("relu3", ReLU())
    m.add("drop", Dropout(dropout))
    m.add("fc2", Linear(10, 7))
    rng = np.random.default_rng(seed + 100)
    for k in m.params:
        if k.endswith(("gamma", "beta", "bias")):
            m.params[k] = (rng.standard_normal(m.params[k].shape) * 0.3 + (1.0 if k.endswith("gamma") else 0.0)).astype(np.float32)
    for k in m.buffers:
        m.buffers[k] = (rng.random(m.buffers[k].shape) + (0.5 if k.endswith("var") else -0.5)).astype(np.float32)
    return m




@pytest.mark.parametrize("mode", ["train", "test"])
def test_gradients_match_finite_differences(mode):
    m = graph_net(dropout=0.3).astype(np.float64)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 3, 12, 12))
    R = rng.standard_normal((4, 7))

    def f():
        m.seed(5)   # the same dropout mask in every pass
        out, _ = m.forward(X, mode=mode)
        return float((out * R).sum())

    m.seed(5)
    out, cache = m.forward(X, mode=mode)
    assert out.dtype == np.float64
    dX, grads = m.backward(R, cache)
    assert dX.shape == X.shape and dX.dtype == np.float64
    assert set(grads) == set(m.params)
    for i in range(8):
        idx = tuple(rng.integers(0, s) for s in X.shape)
        assert numeric_partial(f, X, idx) == pytest.approx(dX[idx], rel=1e-5, abs=1e-7)
    for name, p in m.params.items():
        for _ in range(2):
            idx = tuple(rng.integers(0, s) for s in p.shape)
            num = numeric_partial(f, p, idx)
            assert num == pytest.approx(grads[name][idx], rel=1e-5, abs=1e-7), name


def torch_forward(torch, m, X, mode, buffers=None):
    """The same graph in PyTorch's functional API (weights as leaves, BN buffers copied
    from ``buffers``, default the model's)."""
    F = torch.nn.functional
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in m.params.items()}
    bufs = {k: torch.tensor(v, dtype=torch.float64) for k, v in (buffers or m.buffers).items()}
    x0 = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    t = {"input": x0}
    for node in m.nodes:
        lay, n = node.layer, node.name
        ins = [t[i] for i in node.inputs]
        x = ins[0]
        if isinstance(lay, Conv2d):
            pt, pb, pl, pr = lay.padding
            x = F.pad(x, (pl, pr, pt, pb))
            y = F.conv2d(x, params[n + ".weight"], params.get(n + ".bias"), lay.stride, 0, lay.dilation, lay.groups)
        elif isinstance(lay, (BatchNorm2d, BatchNorm1d)):
            y = F.batch_norm(x, bufs[n + ".running_mean"], bufs[n + ".running_var"], params[n + ".gamma"],
                             params[n + ".beta"], training=(mode == "train"), momentum=1 - lay.momentum, eps=lay.eps)
        elif isinstance(lay, ReLU6):
            y = F.relu6(x)
        elif isinstance(lay, ReLU):
            y = F.relu(x)
        elif isinstance(lay, LeakyReLU):
            y = F.leaky_relu(x, lay.alpha)
        elif isinstance(lay, MaxPool2d):
            y = F.max_pool2d(x, lay.kernel_size, lay.stride)
        elif isinstance(lay, AvgPool2d):
            y = F.avg_pool2d(x, lay.kernel_size, lay.stride, lay.padding[0], count_include_pad=lay.count_include_pad)
        elif isinstance(lay, GlobalAvgPool):
            y = x.mean((2, 3), keepdim=True)
        elif isinstance(lay, Flatten):
            y = x.reshape(x.shape[0], -1)
        elif isinstance(lay, Linear):
            y = x @ params[n + ".weight"] + params[n + ".bias"]
        elif isinstance(lay, Dropout):
            y = x
        elif isinstance(lay, Add):
            y = ins[0] + ins[1]
        elif isinstance(lay, Concat):
            y = torch.cat(ins, 1)
        t[n] = y
    return x0, params, bufs, t


@pytest.mark.parametrize("mode", ["train", "test"])
def test_matches_torch(mode):
    torch = require_torch()
    m = graph_net()
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 3, 12, 12)).astype(np.float32) * 3
    before = {k: v.copy() for k, v in m.buffers.items()}
    out, cache = m.forward(X, mode=mode)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dX, grads = m.backward(dout, cache)

    x0, params, bufs, t = torch_forward(torch, m, X, mode, before)
    ref = t["fc2"]
    ref.backward(torch.tensor(dout, dtype=torch.float64))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dX, x0.grad.numpy(), rtol=1e-3, atol=1e-4)
    for k, p in params.items():
        np.testing.assert_allclose(grads[k], p.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=k)
    for k in m.buffers:
        if mode == "test":
            np.testing.assert_array_equal(m.buffers[k], before[k])
            continue
        node = k.split(".")[0]
        xin = t[m.node(node).inputs[0]].detach()
        axes = (0, 2, 3) if xin.ndim == 4 else (0,)
        if k.endswith("mean"):
            # PyTorch's running mean uses momentum 1 - ours: the same update.
            np.testing.assert_allclose(m.buffers[k], bufs[k].numpy(), rtol=1e-4, atol=1e-5)
        else:
            # CS231n updates the running variance with the *biased* batch variance (PyTorch: unbiased).
            want = 0.9 * before[k] + 0.1 * xin.var(axes, unbiased=False).numpy()
            np.testing.assert_allclose(m.buffers[k], want, rtol=1e-4, atol=1e-5)


def test_default_net_matches_torch_and_keeps_float32():
    torch = require_torch()
    m = default_net(num_classes=10, widths=(8, 8, 16, 16, 16, 16, 24), dropout=0.0, seed=3)
    X = np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32) * 50
    out, cache = m.forward(X, mode="train")
    assert out.dtype == np.float32 and out.shape == (3, 10)
    dX, grads = m.backward(np.ones_like(out), cache)
    assert dX.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    x0, params, _, t = torch_forward(torch, default_net(num_classes=10, widths=(8, 8, 16, 16, 16, 16, 24),
                                                        dropout=0.0, seed=3), X, "train")
    t["fc"].sum().backward()
    np.testing.assert_allclose(out, t["fc"].detach().numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(grads["conv1.weight"], params["conv1.weight"].grad.numpy(), rtol=1e-3, atol=1e-3)


def test_partial_forward_backward_compose():
    m = graph_net().astype(np.float64)
    X = np.random.default_rng(4).standard_normal((2, 3, 12, 12))
    full, cache = m.forward(X)
    # end is inclusive: 'pool' is run, and its output is what 'conv3' reads
    mid, c1 = m.forward(X, end="pool")
    assert mid.shape == (2, 7, 6, 6)
    rest, c2 = m.forward(mid, start="conv3")
    np.testing.assert_allclose(rest, full)
    same, _ = m.forward(mid, start=m.index("conv3"), end=len(m) - 1)
    np.testing.assert_allclose(same, full)
    dout = np.random.default_rng(5).standard_normal(full.shape)
    dX_full, g_full = m.backward(dout, cache)
    dmid, g2 = m.backward(dout, c2)
    assert set(g2) == {k for k in m.params if m.index(k.split(".")[0]) >= m.index("conv3")}
    dX, g1 = m.backward(dmid, c1)
    np.testing.assert_allclose(dX, dX_full, rtol=1e-10, atol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g_full[k], rtol=1e-10, atol=1e-12)
    # a single layer
    one, c = m.forward(mid, start="conv3", end="conv3")
    assert one.shape == (2, 8, 3, 3)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_input_gradient_alone_matches_the_full_backward(mode):
    # param_grads=False takes each layer's backward_inputs (batch norm in test
    # mode: dx = dout * gamma / sqrt(running_var + eps) alone).
    for dtype in (np.float32, np.float64):
        m = graph_net().astype(dtype)
        X = np.random.default_rng(7).standard_normal((4, 3, 12, 12)).astype(dtype) * 3
        out, cache = m.forward(X, mode=mode)
        dout = np.random.default_rng(8).standard_normal(out.shape).astype(dtype)
        dX_full, _ = m.backward(dout, cache)
        dX, grads = m.backward(dout, cache, param_grads=False)
        assert grads == {} and dX.dtype == dtype
        np.testing.assert_array_equal(dX, dX_full)


def test_outputs_option():
    m = graph_net().astype(np.float64)
    X = np.random.default_rng(6).standard_normal((2, 3, 12, 12))
    outs, cache = m.forward(X, outputs=["relu1", "pool"])
    assert set(outs) == {"relu1", "pool"}
    np.testing.assert_allclose(outs["pool"], m.forward(X, end="pool")[0])
    g = {"relu1": np.ones_like(outs["relu1"]), "pool": np.ones_like(outs["pool"])}
    dX, _ = m.backward(g, cache)
    # linear in dout: the sum of the two single-output backward passes
    d1 = m.backward(np.ones_like(outs["relu1"]), m.forward(X, end="relu1")[1])[0]
    d2 = m.backward(np.ones_like(outs["pool"]), m.forward(X, end="pool")[1])[0]
    np.testing.assert_allclose(dX, d1 + d2, rtol=1e-10, atol=1e-12)


def test_loss_and_scores():
    m = graph_net()
    X = np.random.default_rng(7).standard_normal((4, 3, 12, 12)).astype(np.float32)
    scores = m.loss(X)
    assert scores.shape == (4, 7)
    loss, grads = m.loss(X, np.array([0, 1, 2, 3]))
    assert 0 < loss < 10 and set(grads) == set(m.params)
    assert m.num_classes == 7


def test_errors_are_clear():
    m = graph_net()
    X = np.zeros((2, 3, 12, 12), np.float32)
    with pytest.raises(KeyError, match="did you mean 'conv1'"):
        m.forward(X, end="cnv1")
    with pytest.raises(ValueError, match="comes after end"):
        m.forward(X, start="pool", end="conv1")
    with pytest.raises(ValueError, match="skip connection crosses the cut"):
        m.forward(np.zeros((2, 6, 12, 12), np.float32), start="bn2", end="add")
    # starting at conv2 binds X to relu1, which the residual reads: allowed
    assert m.forward(np.zeros((2, 6, 12, 12), np.float32), start="conv2", end="add")[0].shape == (2, 6, 12, 12)
    with pytest.raises(ValueError, match="reads several"):
        m.forward(X, start="add")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        m.forward(np.zeros((2, 4, 12, 12), np.float32))
    with pytest.raises(ValueError, match="conv3"):
        m.forward(np.zeros((2, 5, 6, 6), np.float32), start="conv3")
    with pytest.raises(ValueError, match="fc1"):
        m.forward(np.zeros((2, 3, 16, 16), np.float32))    # wrong size reaches the Linear layer
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.forward(bad)
    with pytest.raises(TypeError, match="floating-point"):
        m.forward(X.astype(np.uint8))
    with pytest.raises(ValueError, match="mode"):
        m.forward(X, mode="eval")
    with pytest.raises(ValueError, match="end: layer index 99 is out of range"):
        m.forward(X, end=99)
    with pytest.raises(ValueError, match="already exists"):
        m.add("conv1", ReLU())
    with pytest.raises(ValueError, match="not an earlier node"):
        m.add("x", ReLU(), inputs="nope")


def test_lookup_and_metadata():
    m = graph_net()
    assert m.layer_names[0] == "conv1" and m["conv1"] is m[0]
    assert isinstance(m["fc2"], Linear) and m.index(-1) == len(m) - 1
    assert m.layer_params("conv1").keys() == {"weight", "bias"}
    assert m.output_shapes()["pool"] == (7, 6, 6)
    assert "conv1" in m.summary() and "total parameters" in m.summary()


def test_preprocess_deprocess_round_trip():
    m = graph_net()
    img = np.random.default_rng(8).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    X = m.preprocess(img)
    assert X.shape == (2, 3, 12, 12) and X.dtype == np.float32
    np.testing.assert_allclose(X[0, 1, 2, 3], (img[0, 2, 3, 1] - 110.0) / 60.0, rtol=1e-6)
    np.testing.assert_array_equal(m.deprocess(X), img)
    assert m.preprocess(img[0]).shape == (1, 3, 12, 12)      # one image -> a batch of one
    np.testing.assert_array_equal(m.deprocess(m.preprocess(img[0])[0]), img[0])
    lo, hi = m.input_range()
    assert lo.shape == (3, 1, 1)
    np.testing.assert_allclose(lo.ravel(), [-2.0, -110 / 60, -100 / 60], rtol=1e-6)
    np.testing.assert_allclose(hi.ravel(), [135 / 60, 145 / 60, 155 / 60], rtol=1e-6)
    # values outside the range are clipped to valid pixels
    assert m.deprocess(np.full((1, 3, 2, 2), 100.0)).max() == 255


def test_dropout_is_seeded_and_off_in_test_mode():
    m = Model(input_shape=(3, 4, 4))
    m.add("flat", Flatten()).add("drop", Dropout(0.5))
    X = np.ones((3, 3, 4, 4), np.float32)
    a = m.seed(1).forward(X, mode="train")[0]
    b = m.seed(1).forward(X, mode="train")[0]
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 2.0} and 0 < (a == 0).mean() < 1
    np.testing.assert_array_equal(m.forward(X, mode="test")[0], X.reshape(3, -1))


def test_every_layer_type_is_public_and_registered():
    """A saved model can name any layer type, and users can build any of them."""
    from gradvis.nn import LAYER_TYPES, Layer
    exported = {name: getattr(gradvis, name) for name in gradvis.__all__}
    layer_classes = {c for c in exported.values() if isinstance(c, type) and issubclass(c, Layer) and c is not Layer}
    assert layer_classes, "gradvis exports no layer classes"
    for cls in layer_classes:
        assert LAYER_TYPES.get(cls.type) is cls, cls
    for type_name, cls in LAYER_TYPES.items():
        assert cls.type == type_name and exported.get(cls.__name__) is cls, type_name


def test_passes_follow_changes_to_the_graph():
    """What a pass computes is kept per range and setting (a gradient loop repeats
    one pass); adding a node, turning ReLU fusion off or copying the model must not
    reuse a stale plan."""
    rng = np.random.default_rng(4)
    m = Model(input_shape=(3, 8, 8), seed=0)
    m.add("conv", Conv2d(3, 4, 3, padding=1)).add("relu", ReLU())
    X = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    out, _ = m.forward(X)
    feats, cache = m.forward(X, outputs=["conv", "relu"])
    np.testing.assert_array_equal(feats["relu"], np.maximum(feats["conv"], 0))
    np.testing.assert_array_equal(out, feats["relu"])
    m.add("pool", MaxPool2d(2)).add("flat", Flatten()).add("fc", Linear(64, 5))
    scores, cache = m.forward(X)
    assert scores.shape == (2, 5)
    dX, grads = m.backward(np.ones_like(scores), cache)
    assert dX.shape == X.shape and set(grads) == set(m.params)
    m.fuse_relu = False
    np.testing.assert_array_equal(m.forward(X)[0], scores)
    m.fuse_relu = True
    c = m.copy()
    c.add("extra", ReLU())
    assert c.forward(X)[0].shape == (2, 5) and m.forward(X)[0].shape == (2, 5)
    np.testing.assert_array_equal(c.forward(X)[0], np.maximum(scores, 0))
    np.testing.assert_array_equal(m.forward(X, end="relu")[0], out)


@pytest.mark.parametrize("mode", ["test", "train"])
def test_forward_without_cache_gives_the_same_outputs(mode):
    """cache=False keeps nothing for backward and drops tensors after their last
    reader; the outputs (also of a branching graph, of requested outputs, and of
    a pass starting inside) are those of a cached pass."""
    m = graph_net().astype(np.float64)
    X = np.random.default_rng(3).standard_normal((3, 3, 12, 12))
    a, c = m.forward(X, mode=mode, rng=np.random.default_rng(0))
    b, none = m.forward(X, mode=mode, cache=False, rng=np.random.default_rng(0))
    assert none is None and c is not None
    np.testing.assert_array_equal(a, b)
    names = m.layer_names
    want = [names[1], names[len(names) // 2], names[-1]]
    ra, _ = m.forward(X, outputs=want)
    rb, _ = m.forward(X, outputs=want, cache=False)
    for k in want:
        np.testing.assert_array_equal(ra[k], rb[k])
    mid, _ = m.forward(X, end=names[2])
    np.testing.assert_array_equal(m.forward(mid, start=names[3])[0], m.forward(mid, start=names[3], cache=False)[0])
    np.testing.assert_array_equal(m.predict(X, batch_size=2), m.forward(X)[0])
    with pytest.raises(TypeError, match="cache"):
        m.forward(X, cache="no")
    with pytest.raises(TypeError, match="cache=False"):
        m.backward(b, none)


def test_forward_without_cache_calls_convolution_kernels_directly(monkeypatch):
    """A pass without a cache runs a convolution's kernel itself (nn/passes.py) once
    the layer has accepted its input shape: the outputs are the cached pass's bits,
    with fused ReLU, ReLU6 and SiLU, plain convolutions and a residual Add; weights
    of another dtype or an input of another shape take the layer's own path;
    errors name the layer."""
    from gradvis.nn import SiLU
    m = Model(input_shape=(4, 10, 10), seed=1)
    m.add("c1", Conv2d(4, 8, 3, padding=1)).add("r1", ReLU6())
    m.add("c2", Conv2d(8, 8, 3, padding=1, groups=8)).add("r2", ReLU())
    m.add("c3", Conv2d(8, 8, 1)).add("s3", SiLU())
    m.add("c4", Conv2d(8, 4, 1, bias=False))
    m.add("sum", Add(), inputs=["c4", "input"])
    X = (8 * np.random.default_rng(2).standard_normal((2, 4, 10, 10))).astype(np.float32)
    assert (m.forward(X, end="c1")[0] > 6).any()     # ReLU6 clamps some
    want = m.forward(X)[0]
    for _ in range(2):
        np.testing.assert_array_equal(m.forward(X, cache=False)[0], want)
    calls = []
    for name in ("forward", "forward_act"):
        orig = getattr(Conv2d, name)
        monkeypatch.setattr(Conv2d, name, lambda self, *a, _orig=orig, **k: calls.append(1) or _orig(self, *a, **k))
    np.testing.assert_array_equal(m.forward(X, cache=False)[0], want)
    assert not calls
    m.forward(X)
    assert len(calls) == 4
    m.params["c3.weight"] = m.params["c3.weight"].astype(np.float64)   # converted by the layer, as cached
    np.testing.assert_array_equal(m.forward(X, cache=False)[0], m.forward(X)[0])
    m.params["c3.weight"] = np.zeros((8, 7, 1, 1), np.float32)
    with pytest.raises(ValueError, match="layer 'c3'"):
        m.forward(X, cache=False)
    with pytest.raises(ValueError, match="layer 'c1'"):
        m.forward(X[:, :3], start="c1", cache=False)


def test_input_gradient_calls_convolution_kernels_directly(monkeypatch):
    """backward without parameter gradients or rules runs a convolution's input-
    gradient kernel itself (nn/passes.py), masked by the ReLU, ReLU6, SiLU or
    HardSwish before it: the bits of the layer's own path (which a pass with
    parameter gradients takes); a gradient of another dtype is converted first."""
    from gradvis.nn import HardSwish, SiLU
    m = Model(input_shape=(4, 9, 9), seed=3)
    m.add("c1", Conv2d(4, 8, 3, padding=1)).add("a1", ReLU6())
    m.add("c2", Conv2d(8, 8, 3, padding=1, groups=8)).add("a2", SiLU())
    m.add("c3", Conv2d(8, 8, 1)).add("a3", HardSwish())
    m.add("c4", Conv2d(8, 8, 3, stride=2, padding=1)).add("a4", ReLU())
    m.add("c5", Conv2d(8, 4, 1, bias=False))
    m.add("pool", GlobalAvgPool()).add("sum", Add(), inputs=["pool", "pool"])
    X = (4 * np.random.default_rng(4).standard_normal((2, 4, 9, 9))).astype(np.float32)
    dout = np.random.default_rng(5).standard_normal((2, 4, 1, 1)).astype(np.float32)
    out, cache = m.forward(X)
    want, _ = m.backward(dout, cache)          # parameter gradients: the layers' own path
    calls = []
    for name in ("backward_inputs", "backward_inputs_act"):
        orig = getattr(Conv2d, name)
        monkeypatch.setattr(Conv2d, name, lambda self, *a, _orig=orig, **k: calls.append(1) or _orig(self, *a, **k))
    got, grads = m.backward(dout, m.forward(X)[1], param_grads=False)
    assert not calls and grads == {}
    np.testing.assert_array_equal(got, want)
    got64, _ = m.backward(dout.astype(np.float64), m.forward(X)[1], param_grads=False)
    np.testing.assert_array_equal(got64, want)
    m.backward(dout, m.forward(X)[1], param_grads=False, rules={"a4": lambda layer, g, c: [g]})
    assert calls                               # a rule: the layers' own path
