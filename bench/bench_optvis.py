"""Feature-visualization steps per second: gradvis.optvis.render next to Lucent's
render_vis (torch-lucent, PyTorch CPU) with the same settings.

Both sides: the image parameterized by a 1/f-scaled Fourier spectrum with
decorrelated colour and a sigmoid, Lucid's standard transforms for 224-pixel
images (pad 12, jitter 8, random scale 0.9-1.1, random rotation -10..10 degrees,
jitter 4) followed by a resize to the network's size, Adam at 0.05, a channel
objective, batch 1, no redirected ReLU (Lucent has none). Cases:

- ``default128``: the bundled TinyImageNet model at 128x128 (Lucent runs a torch
  copy built here from the same .npz arrays), objective channel 7 of relu5;
- ``mobilenet224``: torchvision's MobileNetV2 (random weights, seed 0, no download)
  at 224x224, exported to ONNX and imported by gradvis.load_onnx; objective channel 5
  of the last ReLU6 (Lucent's ``features_18``).

Each library runs in a process of its own that never imports the other (they
would share one libgomp). A rate is 1 / the median time between the starts of
successive steps after 3 warm-up steps (gradvis: its callback; Lucent: a forward
pre-hook on the network), robust to steps stalled by other processes on a shared
host; the best of ``--reps`` runs is kept. (gradvis's callback also converts the
images to the model's input space each step, which Lucent's loop does not do: a
small handicap for gradvis.)

    python bench/bench_optvis.py [--cases default128 mobilenet224] [--steps 20] [--reps 3]
                                 [--threads 2] [--json out.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARM = 3


# ---------------------------------------------------------------------------- torch side
def _torch_setup(threads):
    import torch
    torch.set_num_threads(threads)
    for n in ("nms", "qnms"):      # torchvision's C ops cannot load beside the CPU torch
        try:
            torch.library.define(f"torchvision::{n}",
                                 "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass
    return torch


def torch_default_net(npz_path):
    """The bundled model as a torch.nn.Sequential whose module names are its node
    names, read from the .npz arrays and header alone (no gradvis import)."""
    import numpy as np
    import torch.nn as nn
    import torch
    z = np.load(npz_path)
    hdr = json.loads(bytes(z["__gradvis__"]).decode())
    mods = []
    for node in hdr["nodes"]:
        n, t, c = node["name"], node["type"], node.get("config", {})
        if t == "Conv2d":
            pt, pb, pl, pr = c["padding"]
            m = nn.Conv2d(c["in_channels"], c["out_channels"], tuple(c["kernel_size"]), tuple(c["stride"]),
                          (pt, pl), tuple(c["dilation"]), c["groups"], bias=c["bias"])
            m.weight.data = torch.from_numpy(z[f"param/{n}.weight"].copy())
            if c["bias"]:
                m.bias.data = torch.from_numpy(z[f"param/{n}.bias"].copy())
        elif t == "BatchNorm2d":
            m = nn.BatchNorm2d(c["num_features"], eps=c["eps"])
            m.weight.data = torch.from_numpy(z[f"param/{n}.gamma"].copy())
            m.bias.data = torch.from_numpy(z[f"param/{n}.beta"].copy())
            m.running_mean.data = torch.from_numpy(z[f"buffer/{n}.running_mean"].copy())
            m.running_var.data = torch.from_numpy(z[f"buffer/{n}.running_var"].copy())
        elif t == "ReLU":
            m = nn.ReLU()
        elif t == "MaxPool2d":
            m = nn.MaxPool2d(tuple(c["kernel_size"]), tuple(c["stride"] or c["kernel_size"]))
        elif t == "GlobalAvgPool":
            m = nn.AdaptiveAvgPool2d(1)
        elif t == "Flatten":
            m = nn.Flatten()
        elif t == "Dropout":
            m = nn.Dropout(c.get("p", 0.5))
        elif t == "Linear":
            m = nn.Linear(c["in_features"], c["out_features"], bias=c.get("bias", True))
            m.weight.data = torch.from_numpy(z[f"param/{n}.weight"].T.copy())
            if c.get("bias", True):
                m.bias.data = torch.from_numpy(z[f"param/{n}.bias"].copy())
        else:
            raise ValueError(f"no torch copy for layer type {t}")
        mods.append((n, m))
    from collections import OrderedDict
    mean = np.asarray(z["meta/mean"], np.float32).reshape(1, 3, 1, 1)
    return nn.Sequential(OrderedDict(mods)).eval(), torch.from_numpy(mean)


def mobilenet(torch):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def export_mobilenet(path, threads):
    torch = _torch_setup(threads)
    net = mobilenet(torch)
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), path, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"])


def lucent_rates(case, steps, reps, threads, npz):
    import numpy as np
    torch = _torch_setup(threads)
    from lucent.optvis import param, render, transform
    if case == "default128":
        net, mean = torch_default_net(npz)
        size, objective = 128, "relu5:7"
        pre = [lambda x: x * 255.0 - mean]
    else:
        net, size, objective = mobilenet(torch), 224, "features_18:5"
        pre = [transform.normalize()]
    for p in net.parameters():
        p.requires_grad_(False)

    stamps = []
    net.register_forward_pre_hook(lambda module, inputs: stamps.append(time.perf_counter()))

    def run(n):
        np.random.seed(0)
        torch.manual_seed(0)
        stamps.clear()
        render.render_vis(net, objective, param_f=lambda: param.image(size),
                          transforms=transform.standard_transforms + pre, thresholds=(n,),
                          preprocess=False, progress=False, show_image=False, fixed_image_size=size)
        return list(stamps)
    return [_rate(run(WARM + steps)) for _ in range(reps)]


def _rate(stamps):
    """Steps per second from the times at which successive steps started: 1 / the
    median step after the warm-up (robust to a step stalled by other processes)."""
    import numpy as np
    return float(1.0 / np.median(np.diff(stamps[WARM:])))


# ---------------------------------------------------------------------------- gradvis side
def gradvis_rates(case, steps, reps, threads, onnx_path):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import gradvis
    from gradvis.optvis import objectives as O, param, render, transforms as T
    gradvis.set_num_threads(threads)
    if case == "default128":
        model, size, layer = gradvis.load_pretrained(), 128, "relu5"
    else:
        model = gradvis.load_onnx(onnx_path, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
        size = 224
        shapes = model.output_shapes()
        layer = [n for n in model.layer_names if shapes[n] == (1280, 7, 7)][-1]
    tf = T.compose([T.standard_transforms(224), T.resize((size, size))])

    def run(n):
        stamps = [time.perf_counter()]
        render(O.channel(layer, 7 if case == "default128" else 5), model, param=param.image(size, seed=0),
               transforms=tf, steps=n, seed=0, redirected_relu_steps=0,
               callback=lambda t, X, info: stamps.append(time.perf_counter()))
        return stamps
    return [_rate(run(WARM + steps)) for _ in range(reps)]


# ---------------------------------------------------------------------------- driver
def child(args):
    if args.side == "export":
        export_mobilenet(args.onnx, args.threads)
        return
    fn = lucent_rates if args.side == "lucent" else gradvis_rates
    extra = args.npz if args.side == "lucent" else args.onnx
    print(json.dumps(fn(args.case, args.steps, args.reps, args.threads, extra)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["default128", "mobilenet224"],
                    choices=["default128", "mobilenet224"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--side", choices=["gradvis", "lucent", "export"], help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--npz", default=os.path.join(ROOT, "python", "gradvis", "models", "default.npz"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    tmp = tempfile.mkdtemp(prefix="bench_optvis_")
    onnx_path = os.path.join(tmp, "mobilenet_v2.onnx")
    common = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps), "--reps", str(args.reps),
              "--threads", str(args.threads), "--onnx", onnx_path, "--npz", args.npz]
    if "mobilenet224" in args.cases:
        subprocess.run(common + ["--side", "export"], check=True, capture_output=True)
    rows = []
    for case in args.cases:
        r = {"case": case, "threads": args.threads, "steps": args.steps}
        for side in ("gradvis", "lucent"):
            out = subprocess.run(common + ["--side", side, "--case", case], check=True, capture_output=True,
                                 text=True)
            r[side] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {case} {side}: {['%.2f' % v for v in r[side]]} steps/s", flush=True)
        r["ratio"] = max(r["gradvis"]) / max(r["lucent"])
        rows.append(r)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"batch 1, best of {args.reps} runs of 1 / median step time over {args.steps} steps")
    print(f"{'case':14s} {'gradvis steps/s':>16s} {'Lucent steps/s':>15s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['case']:14s} {max(r['gradvis']):16.2f} {max(r['lucent']):15.2f} {r['ratio']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
