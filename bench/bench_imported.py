"""How fast is an imported network in gradvis next to the same network in PyTorch?

VGG-16 and ResNet-18 (random weights, written in plain torch.nn here: no downloads,
no torchvision) are imported with ``gradvis.from_torch``; then, at 224x224, batch 1,
float32, 1 and 2 threads, the time of one forward pass plus the backward pass to the
input (what saliency, fooling, class visualization, inversion and DeepDream do each
step; no weight gradients on either side) is measured for gradvis and PyTorch in
the same run. Prints a table (best-of-reps ms and the gradvis / PyTorch ratio) last.

``--zoo`` adds torchvision models (default ConvNeXt-T, ShuffleNetV2 x1.0 and
EfficientNet-B0; torchvision 0.28 installed with --no-deps): each library is timed in
a process of its own that imports only it (bench/imported_worker.py), the ONNX file
written by the TorchScript exporter passing between them.

    python bench/bench_imported.py [--models vgg16 resnet18] [--threads 1 2] [--reps 3] [--json out.json]
    python bench/bench_imported.py --models --zoo [convnext_tiny shufflenet_v2_x1_0 efficientnet_b0]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

import gradvis
from bench_conv import warm_malloc


# ---------------------------------------------------------------------------- the networks
def vgg16(num_classes=1000):
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))

        def forward(self, x):
            # torchvision's adaptive 7x7 pool is the identity at 224x224; left out
            x = self.features(x)
            return self.classifier(torch.flatten(x, 1))
    return VGG()


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
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, w in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


MODELS = {"vgg16": vgg16, "resnet18": ResNet18}


def randomize_bn(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


# ---------------------------------------------------------------------------- timing
def best_time(fn, reps):
    fn()   # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pass_gflop(net, x):
    """Direct-equivalent GFLOP of one forward pass plus the backward pass to the input:
    2 flops per multiply-add of every convolution and linear layer, once forward and once
    for the input gradient (the first layer's included: the algorithms need the image's
    gradient). Winograd does fewer multiplies, so its GFLOP/s can pass the FMA peak."""
    macs = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs.append(out.numel() * (m.in_channels // m.groups) * kh * kw)
        elif isinstance(m, nn.Linear):
            macs.append(out.numel() * m.in_features)

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    return 4 * sum(macs) / 1e9


def rel_err(a, b):
    """||a - b|| / ||b||. (A max-norm error is dominated by the few max-pool windows
    whose argmax flips between two float32 implementations: a kink, not an error.)"""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bench(name, threads, reps, size=224):
    torch.manual_seed(0)
    net = MODELS[name]().eval()
    randomize_bn(net)
    for p in net.parameters():
        p.requires_grad_(False)   # input gradients only, as in the algorithms
    t0 = time.perf_counter()
    model = gradvis.from_torch(net, torch.zeros(1, 3, size, size))
    t_import = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    R = rng.standard_normal((1, 1000)).astype(np.float32)
    gflop = pass_gflop(net, torch.from_numpy(X))

    def gv():
        s, cache = model.forward(X)
        return s, model.backward(R, cache, param_grads=False)[0]

    xt, rt = torch.from_numpy(X), torch.from_numpy(R)

    def tr():
        x = xt.clone().requires_grad_(True)
        s = net(x)
        (dx,) = torch.autograd.grad((s * rt).sum(), [x])
        return s.detach().numpy(), dx.numpy()

    rows = []
    for nt in threads:
        gradvis.set_num_threads(nt)
        torch.set_num_threads(nt)
        t_g = best_time(gv, reps)
        t_t = best_time(tr, reps)
        rows.append({"model": name, "threads": nt, "gradvis_ms": 1e3 * t_g, "torch_ms": 1e3 * t_t,
                     "ratio": t_g / t_t, "import_s": t_import, "gflop": gflop,
                     "gradvis_gflops": gflop / t_g, "torch_gflops": gflop / t_t,
                     "layers": len(model.nodes), "params": model.num_parameters()})
        print(f"  {name} threads={nt}: gradvis {1e3 * t_g:.1f} ms, torch {1e3 * t_t:.1f} ms "
              f"({gflop:.1f} GFLOP)", flush=True)

    # accuracy: both float32 results against PyTorch in float64 (the float32 input
    # gradients of the two differ from each other more than either differs from float64)
    s_g, dx_g = gv()
    s_t, dx_t = tr()
    net.double()
    x = torch.from_numpy(X.astype(np.float64)).requires_grad_(True)
    s64 = net(x)
    (dx64,) = torch.autograd.grad((s64 * rt.double()).sum(), [x])
    s64, dx64 = s64.detach().numpy(), dx64.numpy()
    for r in rows:
        r["err_gradvis"] = max(rel_err(s_g, s64), rel_err(dx_g, dx64))
        r["err_torch"] = max(rel_err(s_t, s64), rel_err(dx_t, dx64))
    return rows


ZOO = ["convnext_tiny", "shufflenet_v2_x1_0", "efficientnet_b0"]


def bench_zoo(name, threads, reps):
    """A torchvision model's rows, each library timed in its own process."""
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imported_worker.py")
    with tempfile.TemporaryDirectory() as d:
        res = {}
        for side in ("torch", "gradvis"):
            out = subprocess.run([sys.executable, worker, side, name, d, "--threads", *map(str, threads),
                                  "--reps", str(reps)], capture_output=True, text=True, check=True).stdout
            res[side] = json.loads(out.strip().splitlines()[-1])
    t, g = res["torch"], res["gradvis"]
    rows = []
    for nt in threads:
        tg, tt = g["ms"][str(nt)], t["ms"][str(nt)]
        rows.append({"model": name, "threads": nt, "gradvis_ms": tg, "torch_ms": tt, "ratio": tg / tt,
                     "import_s": t["export_s"] + g["import_s"], "gflop": t["gflop"],
                     "gradvis_gflops": t["gflop"] / tg * 1e3, "torch_gflops": t["gflop"] / tt * 1e3,
                     "layers": g["layers"], "err_gradvis": g["err"], "err_torch": t["err"],
                     "separate_processes": True})
        print(f"  {name} threads={nt}: gradvis {tg:.1f} ms, torch {tt:.1f} ms ({t['gflop']:.1f} GFLOP)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--zoo", nargs="*", default=None, metavar="NAME",
                    help=f"torchvision models, each library in its own process (default {' '.join(ZOO)})")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    warm_malloc()

    rows = []
    for name in args.models:
        rows += bench(name, args.threads, args.reps)
    for name in ([] if args.zoo is None else args.zoo or ZOO):
        rows += bench_zoo(name, args.threads, args.reps)

    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "simd": gradvis.simd_level(),
                "torch": torch.__version__, "gradvis": gradvis.__version__}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)

    print(f"\nforward + backward to the input, 224x224, batch 1, float32 (best of {args.reps}); "
          f"simd {gradvis.simd_level()}, torch {torch.__version__}.\nerr gv / err pt: L2-relative error of "
          "the float32 logits and input gradient (the larger) against PyTorch in float64; "
          "import s: from_torch (export + load_onnx); torchvision rows: each library timed in its own process; GFLOP: direct-equivalent flops of the convolutions and\n"
          "linear layers, forward and input gradient (2 per multiply-add; Winograd's GF/s can pass the FMA peak)")
    head = f"{'model':<18} {'threads':>7} {'GFLOP':>6} {'gradvis ms':>11} {'GF/s':>6} {'torch ms':>9} {'GF/s':>6} " \
           f"{'gradvis/torch':>13} {'err gv':>8} {'err pt':>8} {'import s':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<18} {r['threads']:>7} {r['gflop']:>6.1f} {r['gradvis_ms']:>11.1f} "
              f"{r['gradvis_gflops']:>6.0f} {r['torch_ms']:>9.1f} {r['torch_gflops']:>6.0f} {r['ratio']:>13.2f} {r['err_gradvis']:>8.1e} {r['err_torch']:>8.1e} {r['import_s']:>8.1f}")


if __name__ == "__main__":
    main()
