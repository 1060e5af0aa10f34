"""from_torch: VGG, ResNet-18, MobileNetV2, SqueezeNet, MobileNetV3 and EfficientNet style
nets (random weights, plain torch.nn, small widths) imported and checked against PyTorch
autograd: logits, intermediate activations, gradients w.r.t. the input and intermediate
layers; the five algorithms on an imported ResNet and EfficientNet; errors; save/load with
the preprocessing metadata."""
import numpy as np
import pytest

import gradvis
from conftest import require, require_onnx, require_torch

TOL = 1e-4
# the node names these tests probe are the TorchScript exporter's; the torch.export-based
# one (from_torch's default with onnxscript) names fused conv+batch-norm layers after the
# batch norm. Both exporters' graphs are checked numerically in test_onnx_zoo.py and in
# test_family_matches_pytorch_both_exporters below.
EXPORTER = "torchscript"


@pytest.fixture(scope="module")
def tt():
    require_onnx()
    torch = require_torch()
    torch.set_num_threads(1)
    return torch


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ============================================================================ the families
def build(torch, family, seed=0):
    nn = torch.nn
    torch.manual_seed(seed)

    def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)

    if family == "vgg":
        class VGG(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(
                    nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                    nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, 2))
                self.classifier = nn.Sequential(nn.Linear(16 * 8 * 8, 32), nn.ReLU(True), nn.Dropout(),
                                                nn.Linear(32, 10))

            def forward(self, x):
                x = self.features(x)
                return self.classifier(x.view(x.size(0), -1))
        net = VGG()
        # torch module -> gradvis node whose output it is
        probes = {"features.4": "features.4", "features.7": "features.7"}
    elif family == "resnet":
        class BasicBlock(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(cout)
                self.relu = nn.ReLU(inplace=True)
                self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(cout)
                self.downsample = None
                if stride != 1 or cin != cout:
                    self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                    nn.BatchNorm2d(cout))

            def forward(self, x):
                identity = x if self.downsample is None else self.downsample(x)
                out = self.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                return self.relu(out + identity)

        class ResNet(nn.Module):
            def __init__(self, widths=(8, 16, 24, 32), num_classes=10):
                super().__init__()
                self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(widths[0])
                self.relu = nn.ReLU(inplace=True)
                self.maxpool = nn.MaxPool2d(3, 2, 1)
                cin = widths[0]
                for i, w in enumerate(widths):
                    stride = 1 if i == 0 else 2
                    setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
                    cin = w
                self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
                self.fc = nn.Linear(cin, num_classes)

            def forward(self, x):
                x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
                x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
                return self.fc(torch.flatten(self.avgpool(x), 1))
        net = ResNet()
        probes = {"layer1": "layer1.1.relu_1", "layer2.0": "layer2.0.relu_1", "layer3": "layer3.1.relu_1"}
    elif family == "mobilenet":
        class InvertedResidual(nn.Module):
            def __init__(self, cin, cout, stride, expand):
                super().__init__()
                hid = cin * expand
                self.use_res = stride == 1 and cin == cout
                self.conv = nn.Sequential(conv_bn(cin, hid, 1, act=nn.ReLU6),
                                          conv_bn(hid, hid, 3, stride, groups=hid, act=nn.ReLU6),
                                          conv_bn(hid, cout, 1, act=None))

            def forward(self, x):
                return x + self.conv(x) if self.use_res else self.conv(x)

        class MobileNetV2(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(
                    conv_bn(3, 8, 3, 2, act=nn.ReLU6), InvertedResidual(8, 8, 1, 1),
                    InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3),
                    InvertedResidual(12, 16, 2, 3), conv_bn(16, 32, 1, act=nn.ReLU6))
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

            def forward(self, x):
                return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        net = MobileNetV2()
        probes = {"features.1": "features.1.add", "features.3": "features.3.add",
                  "features.5": "features.5.2"}
    elif family == "squeezenet":
        class Fire(nn.Module):
            def __init__(self, cin, squeeze, e1, e3):
                super().__init__()
                self.squeeze = nn.Conv2d(cin, squeeze, 1)
                self.squeeze_activation = nn.ReLU(inplace=True)
                self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
                self.expand1x1_activation = nn.ReLU(inplace=True)
                self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
                self.expand3x3_activation = nn.ReLU(inplace=True)

            def forward(self, x):
                x = self.squeeze_activation(self.squeeze(x))
                return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                                  self.expand3x3_activation(self.expand3x3(x))], 1)

        class SqueezeNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(
                    nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 4, 8, 8), Fire(16, 4, 8, 8),
                    nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 6, 12, 12),
                    nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
                self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(24, 10, 1), nn.ReLU(inplace=True),
                                                nn.AdaptiveAvgPool2d((1, 1)))

            def forward(self, x):
                return torch.flatten(self.classifier(self.features(x)), 1)
        net = SqueezeNet()
        with torch.no_grad():   # keep the final ReLU alive so gradients reach the features
            net.classifier[1].bias.fill_(0.5)
        probes = {"features.3": "features.3.concat", "features.6": "features.6.concat", "features.7": "features.7"}
    elif family in ("mobilenetv3", "efficientnet"):
        class SqueezeExcitation(nn.Module):
            """torchvision's SE block; pool_by_mean: x.mean((2, 3), keepdim=True) (ReduceMean)
            instead of AdaptiveAvgPool2d (GlobalAveragePool)."""
            def __init__(self, c, squeeze, act, gate, pool_by_mean=False):
                super().__init__()
                self.avgpool = None if pool_by_mean else nn.AdaptiveAvgPool2d(1)
                self.fc1 = nn.Conv2d(c, squeeze, 1)
                self.fc2 = nn.Conv2d(squeeze, c, 1)
                self.activation = act()
                self.scale_activation = gate()

            def forward(self, x):
                s = x.mean((2, 3), keepdim=True) if self.avgpool is None else self.avgpool(x)
                s = self.scale_activation(self.fc2(self.activation(self.fc1(s))))
                return s * x

        class Block(nn.Module):
            """MobileNetV3's inverted residual / EfficientNet's MBConv: expand, depthwise, SE, project."""
            def __init__(self, cin, hid, cout, k, stride, act, se):
                super().__init__()
                self.use_res = stride == 1 and cin == cout
                layers = [conv_bn(cin, hid, 1, act=act)] if hid != cin else []
                layers.append(conv_bn(hid, hid, k, stride, groups=hid, act=act))
                if se is not None:
                    layers.append(se(hid))
                layers.append(conv_bn(hid, cout, 1, act=None))
                self.block = nn.Sequential(*layers)

            def forward(self, x):
                return x + self.block(x) if self.use_res else self.block(x)

        if family == "mobilenetv3":
            HS = nn.Hardswish

            def se(c):
                return SqueezeExcitation(c, max(c // 4, 4), nn.ReLU, nn.Hardsigmoid)

            class MobileNetV3(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.features = nn.Sequential(
                        conv_bn(3, 8, 3, 2, act=HS), Block(8, 8, 8, 3, 1, nn.ReLU, se),
                        Block(8, 24, 16, 3, 2, nn.ReLU, None), Block(16, 48, 16, 5, 1, HS, se),
                        conv_bn(16, 32, 1, act=HS))
                    self.avgpool = nn.AdaptiveAvgPool2d(1)
                    self.classifier = nn.Sequential(nn.Linear(32, 24), HS(), nn.Dropout(0.2), nn.Linear(24, 10))

                def forward(self, x):
                    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
            net = MobileNetV3()
            probes = {"features.1.block.1": "features.1.block.1.mul", "features.3": "features.3.add",
                      "features.4": "features.4.2"}
        else:
            def se(c):
                return SqueezeExcitation(c, max(c // 4, 2), nn.SiLU, nn.Sigmoid, pool_by_mean=True)

            class EfficientNet(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.features = nn.Sequential(
                        conv_bn(3, 8, 3, 2, act=nn.SiLU), Block(8, 8, 8, 3, 1, nn.SiLU, se),
                        Block(8, 32, 16, 3, 2, nn.SiLU, se), Block(16, 64, 16, 5, 1, nn.SiLU, se),
                        conv_bn(16, 32, 1, act=nn.SiLU))
                    self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

                def forward(self, x):
                    return self.classifier(self.features(x).mean((2, 3)))    # ReduceMean, keepdims=0
            net = EfficientNet()
            probes = {"features.2.block.2": "features.2.block.2.mul", "features.3": "features.3.add",
                      "features.4": "features.4.2"}
    else:
        raise ValueError(family)

    # non-trivial batch-norm statistics and affine parameters
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return net.eval(), probes


def torch_reference(torch, net, probes, X, R, probe_for_grad):
    """Logits, probe activations, d(sum(R * logits))/dX and /d(probe activation)."""
    acts = {}
    hooks = [dict(net.named_modules())[name].register_forward_hook(
        lambda mod, inp, out, name=name: acts.__setitem__(name, out)) for name in probes]
    x = torch.from_numpy(X).requires_grad_(True)
    try:
        logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    h = acts[probe_for_grad]
    dX, dh = torch.autograd.grad((logits * torch.from_numpy(R)).sum(), [x, h])
    return (logits.detach().numpy(), {k: v.detach().numpy() for k, v in acts.items()},
            dX.numpy(), dh.numpy())


SIZES = {"vgg": 32, "resnet": 32, "mobilenet": 32, "squeezenet": 35,   # 35: ceil_mode pools round up
         "mobilenetv3": 32, "efficientnet": 32}


@pytest.mark.parametrize("family", ["vgg", "resnet", "mobilenet", "squeezenet", "mobilenetv3", "efficientnet"])
def test_family_matches_pytorch(tt, family):
    torch = tt
    net, probes = build(torch, family)
    size = SIZES[family]
    model = gradvis.from_torch(net, torch.zeros(1, 3, size, size), exporter=EXPORTER)
    assert not net.training
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    R = rng.standard_normal((2, 10)).astype(np.float32)
    probe = list(probes)[-1]
    logits, acts, dX_ref, dh_ref = torch_reference(torch, net, probes, X, R, probe)

    # logits and intermediate activations in one pass
    out, cache = model.forward(X, outputs=list(probes.values()) + [model.layer_names[-1]])
    errs = {"logits": rel_err(out[model.layer_names[-1]], logits)}
    for tname, gname in probes.items():
        errs[tname] = rel_err(out[gname], acts[tname])
    # gradient w.r.t. the input
    dX, _ = model.backward({model.layer_names[-1]: R}, cache, param_grads=False)
    errs["dX"] = rel_err(dX, dX_ref)
    # gradient w.r.t. an intermediate layer: the second half of the net, started after it
    gname = probes[probe]
    h, _ = model.forward(X, end=gname)
    s2, cache2 = model.forward(h, start=model.index(gname) + 1)
    dh, _ = model.backward(R, cache2, param_grads=False)
    errs["d" + probe] = rel_err(dh, dh_ref)
    assert np.abs(dh_ref).max() > 0 and np.abs(dX_ref).max() > 0
    errs["logits_from_" + probe] = rel_err(s2, logits)
    print(family, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) < TOL, errs
    assert model.layer_names[-1] in model.info["tensors"].values()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("family", ["vgg", "resnet", "mobilenet", "squeezenet", "mobilenetv3", "efficientnet"])
def test_family_matches_pytorch_both_exporters(tt, family, exporter):
    """Logits and input gradients, whichever exporter wrote the graph (node names aside)."""
    if exporter == "dynamo":
        require("onnxscript")
    torch = tt
    net, _ = build(torch, family)
    size = SIZES[family]
    model = gradvis.from_torch(net, torch.zeros(1, 3, size, size), exporter=exporter)
    assert model.info["exporter"] == exporter
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    R = rng.standard_normal((3, 10)).astype(np.float32)
    x = torch.from_numpy(X).requires_grad_(True)
    logits = net(x)
    (dx,) = torch.autograd.grad((logits * torch.from_numpy(R)).sum(), [x])
    scores, cache = model.forward(X)
    dX, _ = model.backward(R, cache, param_grads=False)
    assert rel_err(scores, logits.detach().numpy()) < TOL and rel_err(dX, dx.numpy()) < TOL


def test_batchnorm_folding_and_depthwise_fast_path(tt):
    """PyTorch's exporter folds eval-mode BN itself; nothing of it is left, and the
    depthwise convs keep groups == channels (the core's depthwise kernel)."""
    torch = tt
    net, _ = build(torch, "mobilenet")
    model = gradvis.from_torch(net, torch.zeros(1, 3, 32, 32), exporter=EXPORTER)
    types = {n.layer.type for n in model.nodes}
    assert "BatchNorm2d" not in types and {"ReLU6", "Add", "Conv2d"} <= types
    dw = [n.layer for n in model.nodes if n.layer.type == "Conv2d" and n.layer.groups > 1]
    assert dw and all(c.groups == c.in_channels == c.out_channels for c in dw)


def test_squeeze_excitation_nets_import_as_gates(tt):
    """MobileNetV3: Hardswish, Hardsigmoid SE gates on GlobalAveragePool; EfficientNet: SiLU
    (exported as x * sigmoid(x)) fused into one layer, Sigmoid SE gates on x.mean((2, 3))."""
    torch = tt
    v3 = gradvis.from_torch(build(torch, "mobilenetv3")[0], torch.zeros(1, 3, 32, 32), exporter=EXPORTER)
    eff = gradvis.from_torch(build(torch, "efficientnet")[0], torch.zeros(1, 3, 32, 32), exporter=EXPORTER)
    count = lambda m, t: sum(n.layer.type == t for n in m.nodes)   # noqa: E731
    assert count(v3, "HardSwish") == 5 and count(v3, "HardSigmoid") == 2 and count(v3, "Mul") == 2
    assert count(eff, "SiLU") == 10 and count(eff, "Sigmoid") == 3 and count(eff, "Mul") == 3
    # every Mul is an SE gate: (C, 1, 1) times the (C, H, W) feature map
    for m in (v3, eff):
        shapes = m.output_shapes()
        for n in m.nodes:
            if n.layer.type == "Mul":
                gate, feat = (shapes[i] for i in n.inputs)
                assert gate[1:] == (1, 1) and len(feat) == 3 and feat[1:] != (1, 1)
    assert eff.nodes[-2].layer.type == "GlobalAvgPool" and not eff.nodes[-2].layer.keepdims
    assert sum("into one SiLU" in f for f in eff.info["folded"]) == 10


@pytest.fixture(scope="module")
def resnet(tt):
    torch = tt
    net, _ = build(torch, "resnet", seed=5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = gradvis.from_torch(net, torch.zeros(1, 3, 32, 32), mean=mean, std=std, scale=255,
                               class_names=[f"class{i}" for i in range(10)], exporter=EXPORTER)
    return net, model


def test_preprocessing_matches_torchvision_normalize(tt, resnet):
    torch = tt
    net, model = resnet
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x_t = (torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255 - mean) / std
    X = model.preprocess(img)
    assert rel_err(X, x_t.numpy()) < 1e-5
    assert np.array_equal(model.deprocess(X), img)
    with torch.no_grad():
        assert rel_err(model.forward(X)[0], net(x_t).numpy()) < TOL
    lo, hi = model.input_range()
    assert np.allclose(lo[:, 0, 0], (0 - mean.numpy().ravel()) / std.numpy().ravel(), atol=1e-5)


def test_save_load_round_trip(tt, resnet, tmp_path):
    net, model = resnet
    path = model.save(tmp_path / "resnet.npz")
    back = gradvis.load_model(path)
    assert back.layer_names == model.layer_names
    np.testing.assert_array_equal(back.mean, model.mean)
    np.testing.assert_array_equal(back.std, model.std)
    assert back.class_names == model.class_names and back.channel_order == "RGB"
    assert back.input_shape == (3, 32, 32)
    assert back.info["source"] == "torch" and back.info["scale"] == 255.0
    assert back.info["tensors"] == model.info["tensors"]
    X = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(X)[0], model.forward(X)[0])
    assert gradvis.load_any(path).layer_names == model.layer_names


# ============================================================================ the five algorithms
def check_five_algorithms(model, invert_layer, dream_layer):
    """Each algorithm runs on an imported model and moves its objective the right way."""
    rng = np.random.default_rng(0)
    X = model.preprocess(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    y = np.array([1, 2])

    sal = gradvis.compute_saliency_maps(X, y, model)
    assert sal.shape == (2, 32, 32) and np.all(sal >= 0) and sal.max() > 0

    scores = model.forward(X[:1])[0]
    # a random-weight net is not very sensitive to its input: aim for the runner-up
    target = int(np.argsort(scores[0])[-2])
    X_fool = gradvis.make_fooling_image(X[:1], target, model, learning_rate=1.0, max_iter=200)
    assert int(model.forward(X_fool)[0].argmax()) == target

    cv_scores = []
    gradvis.create_class_visualization(3, model, num_iterations=15, image_size=(32, 32), seed=0,
                                       callback=lambda t, img, info: cv_scores.append(
                                           float(model.forward(img)[0][0, 3])))
    assert cv_scores[-1] > cv_scores[0]

    feats, _ = model.forward(X[:1], end=invert_layer)
    errs = []
    gradvis.invert_features(feats, invert_layer, model, num_iterations=20,
                            callback=lambda t, img, info: errs.append(float(info["feature_error"][0])))
    assert errs[-1] < 0.8 * errs[0]

    X_dream = gradvis.deepdream(X[:1], dream_layer, model, num_iterations=5)
    norm = lambda img: np.linalg.norm(model.forward(img, end=dream_layer)[0].astype(np.float64))  # noqa: E731
    assert X_dream.shape == X[:1].shape and norm(X_dream) > 1.1 * norm(X[:1])
    return X, y, sal


def test_five_algorithms_on_imported_resnet(tt, resnet):
    check_five_algorithms(resnet[1], "layer2.1.relu_1", "layer3.0.relu_1")


def test_five_algorithms_on_imported_efficientnet(tt, tmp_path):
    """SiLU, SE gates (Sigmoid * feature map) and ReduceMean pooling: the new layers'
    input gradients drive every algorithm, after a save and load."""
    torch = tt
    net, _ = build(torch, "efficientnet", seed=2)
    model = gradvis.from_torch(net, torch.zeros(1, 3, 32, 32), exporter=EXPORTER)
    model = gradvis.load_model(model.save(tmp_path / "eff.npz"))
    X, y, sal = check_five_algorithms(model, "features.2.block.2.mul", "features.3.add")
    # the saliency map is the max over channels of |d score_y / dX|, as torch computes it
    x_t = torch.from_numpy(X).requires_grad_(True)
    net(x_t).gather(1, torch.from_numpy(y)[:, None]).sum().backward()
    assert rel_err(sal, x_t.grad.abs().amax(1).numpy()) < TOL


# ============================================================================ errors
def test_unsupported_operators_are_named(tt):
    torch = tt
    nn = torch.nn

    class Sine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sin(self.conv(x))

    with pytest.raises(gradvis.io.onnx_import.UnsupportedOperatorError, match=r"'Sin'.*|Sin") as e:
        gradvis.from_torch(Sine(), torch.zeros(1, 3, 8, 8), exporter=EXPORTER)
    assert "Sin" in str(e.value) and "node" in str(e.value)

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 4, batch_first=True)

        def forward(self, x):
            return self.lstm(x.flatten(2))[0].flatten(1)

    with pytest.raises(ValueError, match="LSTM"):
        gradvis.from_torch(Recurrent(), torch.zeros(1, 3, 2, 4), exporter=EXPORTER)


def test_shape_mismatch_is_clear(tt):
    torch = tt
    net, _ = build(torch, "vgg")
    # the flatten -> Linear(16*8*8) only fits 32x32 inputs
    with pytest.raises(ValueError, match=r"shape mismatch.*1024|1024.*features") as e:
        gradvis.from_torch(net, torch.zeros(1, 3, 32, 32), input_shape=(3, 40, 40), exporter=EXPORTER)
    assert "ONNX node" in str(e.value)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_adaptive_pooling_resizing_and_concat_match_pytorch(tt, exporter):
    """What the exporters write for AdaptiveAvgPool2d to sizes that do not divide the
    input (the torch.export-based exporter's GatherND of the windows, masked and summed;
    the TorchScript exporter refuses such sizes, so it gets dividing ones), bicubic and
    1.5x bilinear upsampling, and a concatenation along the width: logits and the input
    gradient in float64 against PyTorch autograd."""
    torch = tt
    if exporter == "dynamo":
        require("onnxscript")
    nn, F = torch.nn, torch.nn.functional
    odd = exporter == "dynamo"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.pool_a = nn.AdaptiveAvgPool2d((3, 4) if odd else (4, 5))
            self.pool_b = nn.AdaptiveAvgPool2d((5, 2) if odd else (2, 2))
            self.fc = nn.Linear(self.features(torch.zeros(1, 3, 8, 10)).shape[1], 4)

        def features(self, x):
            x = torch.relu(self.conv(x))                           # (N, 6, 8, 10)
            a = self.pool_a(x)
            b = self.pool_b(F.interpolate(x, size=(5, 7) if odd else (6, 8), mode="bicubic", align_corners=False))
            c = F.interpolate(a, scale_factor=1.5, mode="bilinear", align_corners=False)
            h = a.shape[2]
            d = torch.cat([a, F.interpolate(x[:, :, :3, :4], size=(h, 3), mode="bicubic", align_corners=True)], 3)
            return torch.cat([d.flatten(1), c.flatten(1), b.flatten(1)], 1)

        def forward(self, x):
            return self.fc(self.features(x))

    torch.manual_seed(0)
    net = Net().eval()
    model = gradvis.from_torch(net, torch.zeros(1, 3, 8, 10), exporter=exporter).astype(np.float64)
    types = {n.layer.type for n in model.nodes}
    assert "Resize" in types and ("GatherND" in types) == odd
    net.double()
    X = np.random.default_rng(3).standard_normal((2, 3, 8, 10))
    x = torch.from_numpy(X).requires_grad_(True)
    out = net(x)
    R = np.random.default_rng(4).standard_normal(tuple(out.shape))
    (dx,) = torch.autograd.grad((out * torch.from_numpy(R)).sum(), [x])
    scores, cache = model.forward(X)
    dX = model.backward(R, cache, param_grads=False)[0]
    # float32 weights and ONNX's float32 scales (1.5) on both sides: rounding only
    assert rel_err(scores, out.detach().numpy()) < 1e-6 and rel_err(dX, dx.numpy()) < 1e-6
