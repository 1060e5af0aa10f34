"""Small PyTorch nets for the attribution comparisons (VGG-like with max pools,
ResNet-like with residual adds, MobileNet-like with ReLU6 and depthwise
convolutions), imported into gradvis through ONNX, and the reference libraries
(Captum, pytorch-grad-cam) loaded as tests need them."""
import os

import numpy as np
import pytest

from conftest import require, require_torchvision
from helpers import rel_err  # noqa: F401 (the attribution tests import it from here)

NETS = ("vgg", "resnet", "mobilenet")
# the layer each CAM test explains: the output of the last block
CAM_LAYER = {"vgg": "features.10", "resnet": "layer2.relu2", "mobilenet": "features.5.5"}


def _define(torch):
    nn = torch.nn

    class VGGLike(nn.Module):
        def __init__(self, bn_between=False, nc=10):
            super().__init__()
            # bn_between: a batch norm between each ReLU and max pool. Captum's DeepLift
            # mishandles two hooked modules in a row (ReLU then MaxPool2d: the ReLU's hook
            # sees the max pool's gradient before its rule replaces it; summation to delta
            # then fails), so its DeepLift is compared on this variant.
            def act_pool(c):
                return [nn.ReLU(), nn.BatchNorm2d(c), nn.MaxPool2d(2)] if bn_between else [nn.ReLU(), nn.MaxPool2d(2)]
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1), *act_pool(8),
                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), *act_pool(16),
                nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(16, 32)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(32, nc)

        def forward(self, x):
            x = self.pool(self.features(x)).flatten(1)
            return self.fc2(self.relu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu2 = nn.ReLU()

        def forward(self, x):
            o = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.relu2(o + (x if self.short is None else self.short(x)))

    class ResNetLike(nn.Module):
        def __init__(self, nc=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.layer1 = Block(8, 8, 1)
            self.layer2 = Block(8, 16, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, nc)

        def forward(self, x):
            return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))

    class MobileLike(nn.Module):
        def __init__(self, nc=10):
            super().__init__()

            def dw(cin, cout, stride):
                return nn.Sequential(
                    nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                    nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                                          dw(8, 16, 1), dw(16, 24, 2), dw(24, 24, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, nc)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    class SmoothLike(nn.Module):
        """ELU and Softplus, the other activations Captum's DeepLift gives the rescale rule."""
        def __init__(self, nc=10):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ELU(0.8), nn.BatchNorm2d(8), nn.AvgPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.Softplus(), nn.BatchNorm2d(16), nn.AvgPool2d(2),
                nn.Conv2d(16, 16, 3, padding=1), nn.ELU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(16, 32)
            self.act = nn.Softplus()
            self.fc2 = nn.Linear(32, nc)

        def forward(self, x):
            x = self.pool(self.features(x)).flatten(1)
            return self.fc2(self.act(self.fc1(x)))

    return {"vgg": VGGLike, "resnet": ResNetLike, "mobilenet": MobileLike,
            "vgg_bn_between": lambda: VGGLike(bn_between=True), "smooth": SmoothLike}


def make_pair(name, dtype=np.float32, n=3, hw=32, seed=0):
    """(torch net, gradvis model, images X (n, 3, hw, hw), targets (n,)) with the
    same weights; batch norms get random statistics. In float64 batch norms are
    not folded into the convolutions (folding rounds the weights to float32)."""
    torch = require("torch")
    require("onnx")
    from gradvis.io.onnx_import import from_torch
    torch.manual_seed(seed)
    net = _define(torch)[name]()
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            k = mod.num_features
            mod.running_mean.copy_(torch.randn(k, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(k, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(k, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(k, generator=g) * 0.1)
    net.eval()
    model = from_torch(net, torch.zeros(1, 3, hw, hw), fold_batchnorm=dtype != np.float64)
    if dtype == np.float64:
        net = net.double()
        model = model.astype(np.float64)
    X = np.random.default_rng(seed + 1).standard_normal((n, 3, hw, hw)).astype(dtype)
    target = np.arange(n) * 3 % 10
    return net, model, X, target


def module(net, name):
    """The torch submodule of a dotted node name ('layer2.relu2', 'features.10')."""
    m = net
    for part in name.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def tensor(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(x))


def numpy(t):
    return t.detach().cpu().numpy()


TOL = {np.float32: 1e-4, np.float64: 1e-9}


def captum():
    return require("captum.attr")


def pytorch_grad_cam():
    """pytorch_grad_cam, with its torchvision dependency loaded by
    :func:`conftest.require_torchvision`."""
    require_torchvision()
    return require("pytorch_grad_cam")


def ci():
    return bool(os.environ.get("CI"))


__all__ = ["np", "NETS", "CAM_LAYER", "make_pair", "module", "tensor", "numpy", "rel_err", "TOL", "captum",
           "pytorch_grad_cam", "pytest"]
