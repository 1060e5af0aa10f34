"""The activations and elementwise layers other networks bring (ELU, SELU, CELU,
Softplus, Softsign, Mish, ThresholdedReLU, Log, Reciprocal, PReLU, Maximum,
Minimum, a minimum reduction): float64 references, finite differences, PyTorch's
values and gradients (ties and kinks included), dtypes, extreme inputs, saving and
DeepLIFT's summation to delta; instance and group norms, reflect, replicate and
circular padding, torch.where on conditions of the activations (Compare, Select),
and repeat / expand_as of activations (Tile) imported from PyTorch.
Their ONNX graphs are in test_onnx_ops.py, DeepLIFT against Captum on ELU and
Softplus in test_attribution_reference.py."""
import math
import warnings

import numpy as np
import pytest

import gradvis
from gradvis.nn import (CELU, ELU, SELU, Compare, Conv2d, Flatten, Linear, Log, LogSigmoid, Maximum, Minimum, Mish,
                        Model, Pad, PReLU, Reciprocal, Reduce, Select, Softplus, Softsign, ThresholdedReLU, Tile)
from conftest import require, require_onnx, require_torch


def _elu(x, a):
    return x if x > 0 else a * math.expm1(x)


def _softplus(x):
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


# name: (layer, float64 reference of one value, its kinks, PyTorch's function)
def cases():
    import torch.nn.functional as tf
    import torch
    return {
        "elu": (ELU(0.7), lambda x: _elu(x, 0.7), [0.0], lambda t: tf.elu(t, 0.7)),
        "selu": (SELU(), lambda x: SELU.GAMMA * _elu(x, SELU.ALPHA), [0.0], tf.selu),
        "celu": (CELU(1.3), lambda x: max(0.0, x) + min(0.0, 1.3 * math.expm1(x / 1.3)), [0.0],
                 lambda t: tf.celu(t, 1.3)),
        # PyTorch's threshold (20): past it x itself, within e^-20 of log(1 + e^x)
        "softplus": (Softplus(), _softplus, [], tf.softplus),
        "softplus_threshold": (Softplus(2.5), lambda x: x if x > 2.5 else _softplus(x), [2.5],
                               lambda t: tf.softplus(t, threshold=2.5)),
        "softsign": (Softsign(), lambda x: x / (1 + abs(x)), [0.0], tf.softsign),
        "mish": (Mish(), lambda x: x * math.tanh(_softplus(x)), [], tf.mish),
        "thresholded_relu": (ThresholdedReLU(0.3), lambda x: x if x > 0.3 else 0.0, [0.3],
                             lambda t: tf.threshold(t, 0.3, 0.0)),
        "log": (Log(), lambda x: math.log(x) if x > 0 else float("nan"), [0.0], torch.log),
        "reciprocal": (Reciprocal(), lambda x: 1 / x if x != 0 else float("inf"), [0.0], torch.reciprocal),
        "logsigmoid": (LogSigmoid(), lambda x: -_softplus(-x), [], tf.logsigmoid),
    }


NAMES = ["elu", "selu", "celu", "softplus", "softplus_threshold", "softsign", "mish", "thresholded_relu", "log",
         "reciprocal", "logsigmoid"]


def _positive_only(name):
    return name in ("log",)


def _draw(name, rng, shape=(2, 3, 5, 7)):
    x = rng.standard_normal(shape) * 3
    if _positive_only(name):
        x = np.abs(x) + 0.05
    if name == "reciprocal":
        x = np.where(np.abs(x) < 0.05, 0.5, x)
    return x


def _run(layer, x):
    return layer.forward([x], {}, {}, "test", None)


# The torch.export-based exporter's variants of the slowest tests here (6-9 s each)
# run with -m slow; CI keeps its other variants
EXPORTERS_SLOW_DYNAMO = ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", NAMES)
def test_values_match_float64_reference_and_keep_the_dtype(name):
    layer, ref, _, _ = cases()[name]
    rng = np.random.default_rng(NAMES.index(name))
    x = _draw(name, rng)
    out, _ = _run(layer, x)
    want = np.vectorize(ref)(x)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-15)
    out32, _ = _run(layer, x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    layer, _, kinks, _ = cases()[name]
    rng = np.random.default_rng(10 + NAMES.index(name))
    x = _draw(name, rng, (40,))
    for k in kinks:     # central differences across a kink are meaningless
        x = np.where(np.abs(x - k) < 1e-3, x + 0.01, x)
    out, cache = _run(layer, x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout, cache)[0][0]
    h = 1e-6
    num = (_run(layer, x + h)[0] - _run(layer, x - h)[0]) / (2 * h) * dout
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_values_and_gradients_match_pytorch_at_kinks_and_extremes(name):
    torch = require_torch()
    layer, _, kinks, tfun = cases()[name]
    rng = np.random.default_rng(20 + NAMES.index(name))
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 50.0, -50.0, 1e4, -1e4, 88.0, -88.0, *kinks])
    x = np.concatenate([_draw(name, rng, (50,)), special])
    if _positive_only(name):
        x = np.abs(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = tfun(xt)
    dout = rng.standard_normal(x.shape)
    yt.backward(torch.tensor(dout))
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # no overflow or invalid-value warnings on finite input
        with np.errstate(divide="ignore") if name in ("log", "reciprocal") else np.errstate():
            out, cache = _run(layer, x)
            dx = layer.backward(dout, cache)[0][0]
    rtol = 1e-9 if name in ("softplus", "logsigmoid") else 1e-12
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=rtol, atol=1e-300)
    # PyTorch's CELU backward takes 1 / alpha of alpha rounded to float32, even in
    # float64: exp(x / alpha) off by about 3e-8 relative per unit of |x| (ours is
    # exp(x / alpha), as the float64 reference and finite differences above check)
    rtol = 5e-6 if name == "celu" else rtol
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=1e-300)
    # NaN stays NaN
    nan_out, _ = _run(layer, np.array([np.nan]))
    assert np.isnan(nan_out).all()


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="CELU: alpha must be a finite positive number"):
        CELU(0.0)
    with pytest.raises(ValueError, match="ELU: alpha must be a finite number"):
        ELU(float("inf"))
    with pytest.raises(ValueError, match="Softplus: threshold"):
        Softplus(float("nan"))
    with pytest.raises(ValueError, match="PReLU: shape"):
        PReLU((0,))
    with pytest.raises(ValueError, match="slope of shape \\(4, 1, 1\\) does not broadcast"):
        PReLU((4, 1, 1)).output_shape([(3, 5, 5)])


@pytest.mark.parametrize("shape", [(3, 1, 1), (1,), (3, 5, 1)])
def test_prelu_matches_pytorch_with_its_slope_gradient(shape):
    torch = require_torch()
    rng = np.random.default_rng(30)
    x = rng.standard_normal((2, 3, 5, 4))
    x[0, 0, 0, :2] = 0.0                      # PyTorch's slope side at 0
    slope = rng.standard_normal(shape) * 0.3
    layer = PReLU(shape)
    out, cache = layer.forward([x], {"slope": slope}, {}, "test", None)
    dout = rng.standard_normal(out.shape)
    (dx,), dparams = layer.backward(dout, cache)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(slope, requires_grad=True)
    yt = torch.where(xt > 0, xt, wt * xt)     # F.prelu's definition, any broadcastable slope
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(dparams["slope"], wt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward_inputs(dout, cache)[0], dx)
    if shape == (3, 1, 1):   # nn.PReLU(C) itself
        mod = torch.nn.PReLU(3).double()
        mod.weight.data = torch.tensor(slope.reshape(3))
        np.testing.assert_allclose(out, mod(torch.tensor(x)).detach().numpy(), rtol=1e-14)


@pytest.mark.parametrize("cls,tfun", [(Maximum, "maximum"), (Minimum, "minimum")])
@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (2, 3, 1, 1)),
                                    ((1, 3, 1, 5), (2, 3, 4, 1))])
def test_maximum_minimum_match_pytorch_with_ties(cls, tfun, shapes):
    torch = require_torch()
    rng = np.random.default_rng(40)
    a = np.round(rng.standard_normal(shapes[0]), 1)     # many exact ties
    b = np.round(rng.standard_normal(shapes[1]), 1)
    layer = cls()
    out, cache = layer.forward([a, b], {}, {}, "test", None)
    assert out.shape == layer.output_shape([a.shape, b.shape]) and out.shape[1:] == layer.output_shape(
        [a.shape[1:], b.shape[1:]])
    dout = rng.standard_normal(out.shape)
    (da, db), _ = layer.backward(dout, cache)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    yt = getattr(torch, tfun)(at, bt)
    yt.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, yt.detach().numpy())
    np.testing.assert_allclose(da, at.grad.numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-14, atol=1e-15)


def test_minimum_reduction_matches_torch_amin_with_ties():
    torch = require_torch()
    rng = np.random.default_rng(50)
    x = np.round(rng.standard_normal((2, 3, 4, 5)), 0)
    for axes, keep in (((2, 3), True), ((1,), False), ((1, 3), True)):
        layer = Reduce("min", axes, keep)
        out, cache = layer.forward([x], {}, {}, "test", None)
        dout = rng.standard_normal(out.shape)
        dx = layer.backward(dout, cache)[0][0]
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.amin(xt, dim=axes, keepdim=keep)
        yt.backward(torch.tensor(dout))
        np.testing.assert_array_equal(out, yt.detach().numpy())
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-14)


def _net(seed=0, extremum=True):
    m = Model(input_shape=(3, 8, 8), seed=seed)
    m.add("conv1", Conv2d(3, 6, 3, padding=1))
    m.add("prelu", PReLU((6, 1, 1)))
    m.add("elu", ELU(0.5))
    m.add("conv2", Conv2d(6, 6, 3, padding=1))
    m.add("mish", Mish())
    if extremum:     # (two activations: DeepLIFT has no rule for it, as Captum has none)
        m.add("max", Maximum(), inputs=["mish", "elu"])
    m.add("sp", Softplus(20.0))
    m.add("flat", Flatten())
    m.add("fc", Linear(6 * 64, 5))
    m.add("selu", SELU())
    rng = np.random.default_rng(seed + 7)
    for k in m.params:
        m.params[k] = (rng.standard_normal(m.params[k].shape) * 0.3).astype(m.params[k].dtype)
    return m


def test_model_with_them_saves_loads_and_trains(tmp_path):
    m = _net()
    X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    m2 = gradvis.load_model(m.save(tmp_path / "m.npz"))
    assert [n.layer.config() for n in m2.nodes] == [n.layer.config() for n in m.nodes]
    np.testing.assert_array_equal(m2.forward(X)[0], m.forward(X)[0])
    # the slope's gradient reaches the parameters
    out, cache = m.forward(X, mode="train")
    _, grads = m.backward(np.ones_like(out), cache)
    assert np.abs(grads["prelu.slope"]).sum() > 0


def test_deeplift_sums_to_the_score_difference_through_them():
    import gradvis.attribution as A
    m = _net(extremum=False).astype(np.float64)
    X = np.random.default_rng(2).standard_normal((3, 3, 8, 8))
    attr, delta = A.deeplift(X, [0, 2, 4], m, baselines=0.1, return_convergence_delta=True)
    assert attr.shape == X.shape and np.abs(attr).sum() > 0
    assert np.abs(delta).max() < 1e-9


def _export_matches_pytorch(torch, net, exporter, example_shape, X, what):
    """Export ``net`` with ``exporter``, import it, and check its float64 values and
    input gradients on X against PyTorch's (the ONNX file holds float32 weights).
    Returns the imported model (float64)."""
    import copy
    import io
    example = (torch.zeros(*example_shape),)
    if exporter == "dynamo":
        proto = torch.onnx.export(copy.deepcopy(net), example, dynamo=True, verbose=False).model_proto
    else:
        buf = io.BytesIO()
        torch.onnx.export(copy.deepcopy(net), example, buf, dynamo=False, opset_version=19 if "pad" in what else 17,
                          input_names=["input"], output_names=["output"])
        proto = buf.getvalue()
    model = gradvis.load_onnx(proto).astype(np.float64)
    netd = copy.deepcopy(net).double()
    xt = torch.tensor(X, requires_grad=True)
    y = netd(xt)
    R = np.random.default_rng(1).standard_normal(tuple(y.shape))
    (y * torch.tensor(R)).sum().backward()
    out, cache = model.forward(X)
    dx = model.backward(R, cache, param_grads=False)[0]
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-6, atol=1e-7, err_msg=what)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-7, err_msg=what)
    return model


def _exporter_ready(exporter):
    torch = require_torch()
    require_onnx()
    if exporter == "dynamo":
        require("onnxscript")
    return torch


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_instance_and_group_norms_import_and_match_pytorch(exporter):
    """InstanceNorm2d (with and without affine) and GroupNorm (1, some and one
    channel per group), through both exporters: outputs and input gradients in
    float64 against PyTorch's."""
    torch = _exporter_ready(exporter)
    nn = torch.nn
    torch.manual_seed(0)
    for norm in (nn.InstanceNorm2d(8, affine=True), nn.InstanceNorm2d(8), nn.GroupNorm(4, 8), nn.GroupNorm(1, 8),
                 nn.GroupNorm(8, 8)):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, 4, 1),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
        X = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
        _export_matches_pytorch(torch, net, exporter, (2, 3, 7, 9), X, repr(norm))

@pytest.mark.parametrize("mode", ["reflect", "edge", "wrap"])
def test_pad_modes_match_numpy_and_finite_differences(mode):
    rng = np.random.default_rng(60)
    x = rng.standard_normal((2, 3, 4, 5))
    pads = (3, 1, 0, 4)
    layer = Pad(pads, mode=mode)
    out, cache = layer.forward([x], {}, {}, "test", None)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]), mode=mode))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout, cache)[0][0]
    # the adjoint identity: <pad(x), dout> == <x, dx> for every x
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        assert np.isclose((layer.forward([v], {}, {}, "test", None)[0] * dout).sum(), (v * dx).sum(), rtol=1e-12)



def test_pad_modes_refuse_what_they_cannot_copy():
    with pytest.raises(ValueError, match="reflect padding .* smaller than the side"):
        Pad((4, 0, 0, 0), mode="reflect").output_shape([(3, 4, 4)])   # as PyTorch
    assert Pad((4, 0, 0, 0), mode="wrap").output_shape([(3, 4, 4)]) == (3, 8, 4)
    with pytest.raises(ValueError, match="wrap padding .* at most the side"):
        Pad((0, 0, 0, 5), mode="wrap").output_shape([(3, 4, 4)])
    with pytest.raises(ValueError, match="mode must be one of"):
        Pad(1, mode="symmetric")


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_reflect_replicate_circular_padding_import_and_match_pytorch(exporter):
    torch = _exporter_ready(exporter)
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self, mode, pads):
            super().__init__()
            self.c1, self.c2, self.mode, self.pads = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3), mode, pads

        def forward(self, x):
            return self.c2(F.pad(self.c1(x), self.pads, mode=self.mode)).flatten(1)

    for mode, pads in [("reflect", (1, 2, 3, 1)), ("reflect", (4, 4, 4, 4)), ("replicate", (2, 0, 1, 3)),
                       ("circular", (1, 2, 2, 1))]:
        X = np.random.default_rng(0).standard_normal((2, 3, 8, 9))
        _export_matches_pytorch(torch, Net(mode, pads).eval(), exporter, (2, 3, 8, 9), X, f"pad {mode}")

@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_dilated_max_pooling_imports_and_matches_pytorch(exporter):
    """MaxPool2d with a dilation (square, rectangular, in ceil mode, with padding)
    through both exporters: values and input gradients against PyTorch's."""
    torch = _exporter_ready(exporter)
    nn = torch.nn
    torch.manual_seed(0)
    for pool in (nn.MaxPool2d(3, 1, 1, dilation=2), nn.MaxPool2d((2, 3), (2, 1), (1, 0), dilation=(3, 2)),
                 nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)):
        net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), pool, nn.ReLU(), nn.Conv2d(6, 4, 1), nn.Flatten()).eval()
        X = np.random.default_rng(0).standard_normal((2, 3, 11, 12))
        _export_matches_pytorch(torch, net, exporter, (2, 3, 11, 12), X, repr(pool))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_logsigmoid_imports_as_one_layer_finite_where_sigmoid_underflows(exporter):
    """nn.LogSigmoid, exported as Log(Sigmoid(x)): one LogSigmoid layer, whose float32
    values stay finite (and equal PyTorch's) at inputs far below -88, where sigmoid
    rounds to 0 and the exported graph itself gives -inf."""
    torch = _exporter_ready(exporter)
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LogSigmoid(), nn.Conv2d(4, 2, 1), nn.Flatten()).eval()
    with torch.no_grad():
        net[0].weight.mul_(200.0)
    X = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    model = _export_matches_pytorch(torch, net, exporter, (2, 3, 5, 5), X, "logsigmoid").astype(np.float32)
    assert [n.layer.type for n in model.nodes] == ["Conv2d", "LogSigmoid", "Conv2d", "Flatten"]
    X32 = X.astype(np.float32)
    pre = net[0](torch.tensor(X32))
    assert float(pre.min()) < -200       # sigmoid(x) is 0 in float32 there
    out = model.forward(X32)[0]
    want = net(torch.tensor(X32)).detach().numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_one_dimensional_convolutions_import_and_match_pytorch(exporter):
    """Conv1d on (N, C, L): ECA-Net's channel attention (a Conv1d across the pooled
    channels) and Conv1d over flattened maps with stride, dilation, groups, bias and
    'same' padding."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class ECA(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.eca, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv1d(1, 1, 5, padding=2, bias=False), \
                nn.Conv2d(8, 2, 1)

        def forward(self, x):
            x = self.c1(x)
            y = self.eca(x.mean((2, 3)).view(x.shape[0], 1, -1))
            return self.c2(x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1)).flatten(1)

    class Seq(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.c1, self.conv = nn.Conv2d(3, 4, 3), conv

        def forward(self, x):
            return torch.relu(self.conv(self.c1(x).flatten(2))).flatten(1)

    torch.manual_seed(0)
    nets = [ECA(), Seq(nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=1, groups=2)),
            Seq(nn.Conv1d(4, 4, 4, padding="same", groups=4, bias=False)), Seq(nn.Conv1d(4, 3, 1))]
    for net in nets:
        X = np.random.default_rng(0).standard_normal((3, 3, 7, 6))
        _export_matches_pytorch(torch, net.eval(), exporter, (2, 3, 7, 6), X, repr(net))


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_one_dimensional_pools_and_batch_norm_import_and_match_pytorch(exporter):
    """MaxPool1d, AvgPool1d and BatchNorm1d on (N, C, L) (NextViT's pooled keys and
    values: a map flattened to tokens, pooled along them, batch-normalized): each the
    2-D layer on (N, C, 1, L) between Reshapes. Strides, padding, ceil mode, a
    dilated max pool, count_include_pad both ways."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class Seq(nn.Module):
        def __init__(self, *layers):
            super().__init__()
            self.c1, self.layers = nn.Conv2d(3, 4, 3), nn.Sequential(*layers)

        def forward(self, x):
            return torch.relu(self.layers(self.c1(x).flatten(2))).flatten(1)

    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4) * 0.1)
        bn.running_var.copy_(torch.rand(4) + 0.5)
        bn.weight.copy_(torch.rand(4) + 0.5)
        bn.bias.copy_(torch.randn(4))
    nets = [Seq(nn.AvgPool1d(4, 4)), Seq(nn.AvgPool1d(3, 2, padding=1, ceil_mode=True)),
            Seq(nn.AvgPool1d(3, 2, padding=1, count_include_pad=False)), Seq(nn.MaxPool1d(3, 2, padding=1)),
            Seq(nn.MaxPool1d(2, 3, dilation=2, ceil_mode=True)), Seq(bn, nn.MaxPool1d(2))]
    for net in nets:
        X = np.random.default_rng(0).standard_normal((3, 3, 7, 6))
        model = _export_matches_pytorch(torch, net.eval(), exporter, (2, 3, 7, 6), X, repr(net))
        types = [n.layer.type for n in model.nodes]
        assert types.count("Reshape") >= 2 and ("MaxPool2d" in types or "AvgPool2d" in types), types


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_norms_import_and_match_pytorch(exporter):
    """ConvNeXt-V2's global response normalization (torch.norm over the map: ONNX
    ReduceL2), an L1 norm and a sum of squares over the channels."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class GRN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 1)
            self.gamma, self.beta = nn.Parameter(torch.randn(1, 8, 1, 1)), nn.Parameter(torch.randn(1, 8, 1, 1))

        def forward(self, x):
            x = nn.functional.gelu(self.c1(x))
            gx = torch.norm(x, p=2, dim=(2, 3), keepdim=True)
            nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
            x = x + torch.addcmul(self.beta, self.gamma, x * nx)
            return self.c2(x * torch.linalg.vector_norm(x, 1, dim=1, keepdim=True)
                           + x.pow(2).sum(1, keepdim=True)).flatten(1)

    torch.manual_seed(0)
    X = np.random.default_rng(0).standard_normal((3, 3, 6, 5))
    _export_matches_pytorch(torch, GRN().eval(), exporter, (2, 3, 6, 5), X, "norms")


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_attention_between_convolutions_imports_and_matches_pytorch(exporter):
    """Self-attention over a conv feature map (MobileViT's kind: heads split by a
    reshape that keeps the batch first, q @ k^T, softmax, @ v), the same with q, k, v
    taken as timm's attention takes them (``qkv.permute(2, 0, 3, 1, 4).unbind(0)``,
    or indexed: the permute moves the batch axis second), and ReLU linear attention
    (EfficientViT's k^T v): MatMul of two activation tensors."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self, linear, split="reshape"):
            super().__init__()
            self.c1, self.qkv, self.c2, self.linear = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 24, 1), \
                nn.Conv2d(8, 2, 1), linear
            self.split = split

        def forward(self, x):
            x = self.c1(x)
            n, c, h, w = x.shape
            if self.split == "reshape":
                q, k, v = self.qkv(x).reshape(n, 3, 2, c // 2, h * w).unbind(1)     # (n, heads, d, hw)
            else:      # timm's: (n, hw, 3, heads, d) -> (3, n, heads, d, hw)
                qkv = self.qkv(x).flatten(2).transpose(1, 2).reshape(n, h * w, 3, 2, c // 2).permute(2, 0, 3, 4, 1)
                q, k, v = qkv.unbind(0) if self.split == "unbind" else (qkv[0], qkv[1], qkv[2])
            if self.linear:
                q, k = torch.relu(q), torch.relu(k)
                kv = torch.matmul(v, k.transpose(-1, -2))                       # (n, heads, d, d)
                y = torch.matmul(kv, q) / (q.sum(2, keepdim=True) + 1.0)
            else:
                a = torch.softmax(torch.matmul(q.transpose(-1, -2), k) * 0.5, dim=-1)   # (n, heads, hw, hw)
                y = torch.matmul(v, a.transpose(-1, -2))
            return self.c2(x + y.reshape(n, c, h, w)).flatten(1)

    torch.manual_seed(0)
    for linear, split in ((False, "reshape"), (True, "reshape"), (False, "unbind"), (True, "index")):
        X = np.random.default_rng(0).standard_normal((3, 3, 5, 6))
        _export_matches_pytorch(torch, Attention(linear, split).eval(), exporter, (2, 3, 5, 6), X,
                                f"linear={linear}, {split}")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_class_token_and_transformer_block_import_and_match_pytorch(exporter):
    """A vision transformer's front and one block: patch embedding by a strided conv,
    a learned class token expanded to the batch and joined before the patch tokens
    (Concat with a constant part), position embeddings, a layer norm, timm's attention
    (qkv unbound from a permute that moves the batch), an MLP, and the class token's
    output through a Linear head."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            d, self.heads = 8, 2
            self.patch = nn.Conv2d(3, d, 2, stride=2)
            self.cls = nn.Parameter(torch.randn(1, 1, d))
            self.pos = nn.Parameter(torch.randn(1, 1 + 9, d) * 0.1)
            self.norm, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp, self.head = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d)), nn.Linear(d, 4)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)                       # (n, 9, d)
            n, t, d = x.shape
            x = torch.cat([self.cls.expand(n, -1, -1), x], dim=1) + self.pos
            q, k, v = self.qkv(self.norm(x)).reshape(n, t + 1, 3, self.heads, d // self.heads) \
                .permute(2, 0, 3, 1, 4).unbind(0)
            a = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(n, t + 1, d))
            x = x + self.mlp(x)
            return self.head(x[:, 0])

    torch.manual_seed(0)
    X = np.random.default_rng(0).standard_normal((3, 3, 6, 6))
    model = _export_matches_pytorch(torch, TinyViT().eval(), exporter, (2, 3, 6, 6), X, "tiny vit")
    assert any(n.layer.type == "Concat" and n.layer.constants for n in model.nodes)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_batch_norm_over_tokens_imports_and_matches_pytorch(exporter):
    """LeViT's Linear + BatchNorm1d over the tokens: (N, T, C) flattened to (N*T, C)
    for the batch norm and reshaped back (merging the batch axis, which gradvis's
    layers never do): a per-channel scale and bias on the last axis."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.fc, self.bn, self.head = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 8), \
                nn.BatchNorm1d(8), nn.Linear(8, 3)

        def forward(self, x):
            x = self.c1(x).flatten(2).transpose(1, 2)                 # (n, t, 6)
            y = self.fc(x)
            y = self.bn(y.flatten(0, 1)).reshape_as(y)
            return self.head(torch.relu(y)).mean(1)

    torch.manual_seed(0)
    net = Tokens().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_(0, 0.3)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.normal_(0, 0.2)
    X = np.random.default_rng(0).standard_normal((3, 3, 5, 4))
    model = _export_matches_pytorch(torch, net, exporter, (2, 3, 5, 4), X, "batch norm over tokens")
    assert "BatchNorm" not in " ".join(n.layer.type for n in model.nodes)


def test_dilated_average_pooling_is_refused_by_name():
    require_onnx()
    from onnx import TensorProto, helper
    node = helper.make_node("AveragePool", ["input"], ["output"], kernel_shape=[3, 3], dilations=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 9, 9])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 5, 5])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(gradvis.io.onnx_import.ONNXImportError, match="dilated average pooling"):
        gradvis.load_onnx(proto.SerializeToString())


def _select_against_torch(torch, layer, ins, params, buffers, cond, a, b, rng):
    """Run ``layer`` (a Select) forward and backward; check its values against
    torch.where(cond != 0, a, b); return (out, input gradients, parameter gradients,
    torch's gradients of a and b)."""
    out, cache = layer.forward(ins, params, buffers, "test", None)
    dout = rng.standard_normal(out.shape)
    dins, dparams = layer.backward(dout, cache)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    yt = torch.where(torch.tensor(cond) != 0, at, bt)
    yt.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, yt.detach().numpy())
    return out, dins, dparams, at.grad.numpy(), bt.grad.numpy()


def test_compare_and_select_match_torch_where_with_broadcasting_and_constants():
    torch = require_torch()
    rng = np.random.default_rng(70)
    x = rng.standard_normal((2, 3, 4, 5))
    y = rng.standard_normal((2, 3, 1, 5))
    t = np.array([0.1, -0.2, 0.3]).reshape(3, 1, 1)
    mask, mcache = Compare("greater", t.shape).forward([x], {"value": t}, {}, "test", None)
    np.testing.assert_array_equal(mask, (x > t).astype(x.dtype))
    assert mask.dtype == x.dtype
    m2, _ = Compare("less_equal").forward([x, y], {}, {}, "test", None)
    np.testing.assert_array_equal(m2, (x <= y).astype(x.dtype))
    dins, dparams = Compare("greater", t.shape).backward(np.ones_like(mask), mcache)
    assert not dins[0].any() and not dparams["value"].any()      # a mask has no gradient
    assert Compare("equal", (1,)).forward([np.array([[np.nan, 0.0]])], {"value": np.zeros(1)}, {}, "test",
                                          None)[0].tolist() == [[0.0, 1.0]]
    for a_shape, b_shape in ((None, None), (None, (3, 1, 1)), ((1,), None)):
        layer = Select(a_shape, b_shape)
        params, ins = {}, [mask]
        a = rng.standard_normal(a_shape) if a_shape else x
        b = rng.standard_normal(b_shape) if b_shape else y
        for key, shape, v in (("a", a_shape, a), ("b", b_shape, b)):
            if shape:
                params[key] = v
            else:
                ins.append(v)
        out, dins, dparams, ga, gb = _select_against_torch(torch, layer, ins, params, {}, mask, a, b, rng)
        got = dict(zip([k for k, sh in (("a", a_shape), ("b", b_shape)) if not sh], dins[1:]), **dparams)
        np.testing.assert_allclose(got["a"], ga, rtol=1e-14)
        np.testing.assert_allclose(got["b"], gb, rtol=1e-14)
        assert not dins[0].any()
    with pytest.raises(ValueError, match="Compare: op must be one of"):
        Compare("greater_than")


@pytest.mark.parametrize("exporter", EXPORTERS_SLOW_DYNAMO)
def test_where_on_conditions_of_the_activations_imports_and_matches_pytorch(exporter):
    """Hand-written leaky ReLU, threshold, sign and mask products, conditions with
    not/and/or, a constant compared first: values and input gradients in float64,
    at another batch than the export's."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self, f):
            super().__init__()
            self.c1, self.c2, self.f = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1), f

        def forward(self, x):
            return self.c2(self.f(self.c1(x))).flatten(1)

    fs = [lambda x: torch.where(x > 0, x, 0.1 * x), lambda x: torch.where(x >= 0.2, x, torch.zeros_like(x)),
          lambda x: (x > 0).float() * x, lambda x: torch.where(x > 0, 1.0, -1.0) * x,
          lambda x: torch.where((x > -0.5) & ~(x > 0.5), x, x * x), lambda x: torch.where(0.3 < x, x, -x),
          lambda x: torch.where((x > 0.5) | (x < -0.5), x, 0.0 * x)]
    for i, f in enumerate(fs):
        torch.manual_seed(i)
        X = np.random.default_rng(0).standard_normal((3, 3, 6, 6))
        _export_matches_pytorch(torch, Net(f).eval(), exporter, (2, 3, 6, 6), X, f"where pattern {i}")


def test_select_on_a_constant_condition_matches_torch_where(tmp_path):
    """Select(cond_shape=...): the condition a 0/1 buffer broadcast against each
    sample, both branches activations or one a constant; values and gradients as
    torch.where's; saved and loaded with its mask."""
    torch = require_torch()
    rng = np.random.default_rng(81)
    x, y = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    for cond_shape, b_shape in (((3, 4, 5), None), ((1, 1, 5), None), ((3, 1, 1), (1,))):
        cond = (rng.random(cond_shape) < 0.5).astype(np.float64)
        layer = Select(b_shape=b_shape, cond_shape=cond_shape)
        b = rng.standard_normal(b_shape) if b_shape else y
        ins = [x] + ([] if b_shape else [y])
        params = {"b": b} if b_shape else {}
        out, dins, dparams, ga, gb = _select_against_torch(torch, layer, ins, params, {"cond": cond}, cond, x, b,
                                                           rng)
        assert layer.output_shape([t.shape[1:] for t in ins]) == out.shape[1:]
        np.testing.assert_allclose(dins[0], ga, rtol=1e-14)
        np.testing.assert_allclose(dparams["b"] if b_shape else dins[1], gb, rtol=1e-14)
        assert len(dins) == len(ins)
    m = Model(input_shape=(3, 4, 5))
    m.add("conv", Conv2d(3, 3, 1))
    m.add("select", Select(cond_shape=(3, 1, 5)), inputs=["conv", "input"])
    m.buffers["select.cond"] = (rng.random((3, 1, 5)) < 0.5).astype(np.float32)
    back = gradvis.load_model(m.save(tmp_path / "m.npz"))
    np.testing.assert_array_equal(back.buffers["select.cond"], m.buffers["select.cond"])
    assert back["select"].cond_shape == (3, 1, 5)
    with pytest.raises(ValueError, match="condition and both branches are constants"):
        Select((1,), (1,), (1,))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_where_on_a_constant_condition_with_two_activation_branches_imports(exporter):
    """torch.where(mask, a, b) with a fixed mask (a buffer) and both branches computed
    from the image, the mask per position and per channel."""
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
            self.register_buffer("mask", mask)

        def forward(self, x):
            return self.c3(torch.where(self.mask, self.c1(x), torch.relu(self.c2(x)))).flatten(1)

    g = torch.Generator().manual_seed(0)
    for mask in (torch.rand(1, 4, 6, 6, generator=g) < 0.5, torch.rand(4, 1, 1, generator=g) < 0.5):
        torch.manual_seed(1)
        X = np.random.default_rng(0).standard_normal((3, 3, 6, 6))
        _export_matches_pytorch(torch, Net(mask).eval(), exporter, (2, 3, 6, 6), X, f"mask {tuple(mask.shape)}")


def test_tile_repeats_and_sums_its_gradient():
    rng = np.random.default_rng(80)
    x = rng.standard_normal((2, 3, 1, 4))
    layer = Tile((2, 5, 1))
    out, cache = layer.forward([x], {}, {}, "test", None)
    np.testing.assert_array_equal(out, np.tile(x, (1, 2, 5, 1)))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout, cache)[0][0]
    v = rng.standard_normal(x.shape)
    assert np.isclose((layer.forward([v], {}, {}, "test", None)[0] * dout).sum(), (v * dx).sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="one per axis after the batch"):
        Tile((2, 2)).output_shape([(3, 1, 4)])


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_repeat_and_expand_as_of_activations_import_and_match_pytorch(exporter):
    torch = _exporter_ready(exporter)
    nn = torch.nn

    class SE(nn.Module):     # a gate written with expand_as, then a channel repeat
        def __init__(self):
            super().__init__()
            self.c1, self.fc, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            x = self.c1(x)
            g = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
            return self.c2((x * g.expand_as(x)).repeat(1, 2, 1, 1)).flatten(1)

    torch.manual_seed(0)
    X = np.random.default_rng(0).standard_normal((3, 3, 6, 6))
    _export_matches_pytorch(torch, SE().eval(), exporter, (2, 3, 6, 6), X, "expand_as and repeat")
