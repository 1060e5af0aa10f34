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

``--transforms`` times instead the transforms' bilinear resampling alone, forward
plus adjoint: gradvis's C++ kernels (``_core.resize_bilinear_*``,
``_core.rotate_bilinear_*``) against the numpy implementation they replaced
(4 float32 taps per pixel gathered with fancy indexing, scattered back with
``np.bincount``; tap tables cached as it did), calls alternated, median of
``--reps`` x 20 calls each:

    python bench/bench_optvis.py --transforms [--threads 2] [--reps 5] [--json out.json]
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
    from torch_compat import import_torchvision
    import_torchvision()            # Lucent imports it
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


# ---------------------------------------------------------------------------- transforms alone
def _numpy_resampler():
    """The numpy resize/rotation (forward, adjoint) that the C++ kernels replaced."""
    import math
    import numpy as np
    cache = {}

    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        frac = (src - lo).astype(np.float32)
        return lo, np.minimum(lo + 1, n_in - 1), np.float32(1.0) - frac, frac

    def scale_taps(h, w, size):
        key = ("s", h, w) + size
        if key not in cache:
            ly, hy, wly, why = axis(h, size[0])
            lx, hx, wlx, whx = axis(w, size[1])
            idx = np.stack([(ys[:, None] * w + xs[None, :]).ravel() for ys in (ly, hy) for xs in (lx, hx)])
            wts = np.stack([(a[:, None] * b[None, :]).ravel() for a in (wly, why) for b in (wlx, whx)])
            cache[key] = (idx, wts.astype(np.float32))
        return cache[key]

    def rot_taps(h, w, deg):
        key = ("r", h, w, deg)
        if key not in cache:
            a = math.radians(deg)
            ca, sa = math.cos(a), math.sin(a)
            cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
            yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
            xs, ys = ca * xx - sa * yy + cx, sa * xx + ca * yy + cy
            x0, y0 = np.floor(xs), np.floor(ys)
            fx, fy = xs - x0, ys - y0
            idx, wts = [], []
            for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                               (1, 1, fy * fx)):
                yi, xi = y0 + dy, x0 + dx
                inside = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
                idx.append((np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)).astype(np.int64).ravel())
                wts.append(np.where(inside, wt, 0.0).astype(np.float32).ravel())
            cache[key] = (np.stack(idx), np.stack(wts))
        return cache[key]

    def gather(x, idx, wts, size):
        n, c, h, w = x.shape
        flat = x.reshape(n * c, h * w)
        y = flat[:, idx[0]] * wts[0]
        for k in range(1, 4):
            y += flat[:, idx[k]] * wts[k]

        def back(dy):
            g = dy.reshape(n * c, -1)
            rows = np.arange(n * c, dtype=np.int64)[:, None, None] * (h * w)
            dx = np.bincount((rows + idx[None]).ravel(), weights=(g[:, None, :] * wts[None]).ravel(),
                             minlength=n * c * h * w)
            return dx.astype(dy.dtype, copy=False).reshape(n, c, h, w)
        return y.reshape(n, c, *size), back

    def scale(x, size):
        return gather(x, *scale_taps(x.shape[2], x.shape[3], size), size)

    def rotate(x, deg):
        return gather(x, *rot_taps(x.shape[2], x.shape[3], deg), x.shape[2:])
    return scale, rotate


def transform_times(threads, reps):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import numpy as np
    import gradvis
    from gradvis import _core
    gradvis.set_num_threads(threads)
    np_scale, np_rotate = _numpy_resampler()

    def cpp_scale(x, size):
        return _core.resize_bilinear_forward(x, size), lambda dy: _core.resize_bilinear_adjoint(dy, x.shape)

    def cpp_rotate(x, deg):
        return _core.rotate_bilinear_forward(x, deg), lambda dy: _core.rotate_bilinear_adjoint(dy, deg)

    rows = []
    for shape in [(1, 3, 64, 64), (16, 3, 64, 64), (1, 3, 224, 224), (1, 3, 248, 248)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        h = shape[2]
        for op, arg in (("scale 1.1", (round(1.1 * h), round(1.1 * h))), ("rotate 7", 7.0)):
            impls = {"numpy": np_scale if op.startswith("scale") else np_rotate,
                     "gradvis": cpp_scale if op.startswith("scale") else cpp_rotate}
            times = {k: [] for k in impls}
            cpu = {k: [] for k in impls}
            outs = {}
            for _ in range(reps):
                for k, f in impls.items():      # alternated, so load changes hit both
                    for _ in range(20):
                        t0, c0 = time.perf_counter(), time.process_time()
                        y, back = f(x, arg)
                        dx = back(y)
                        times[k].append(time.perf_counter() - t0)
                        cpu[k].append(time.process_time() - c0)
                    outs[k] = dx
            err = float(np.abs(outs["numpy"] - outs["gradvis"]).max() / np.abs(outs["numpy"]).max())
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            cmed = {k: float(np.median(v)) * 1e3 for k, v in cpu.items()}
            rows.append({"shape": list(shape), "op": op, "numpy_ms": med["numpy"], "gradvis_ms": med["gradvis"],
                         "speedup": med["numpy"] / med["gradvis"], "numpy_cpu_ms": cmed["numpy"],
                         "gradvis_cpu_ms": cmed["gradvis"], "cpu_speedup": cmed["numpy"] / cmed["gradvis"],
                         "rel_diff": err})
            print(f"  {str(shape):18s} {op:10s} numpy {med['numpy']:8.3f} ms  gradvis {med['gradvis']:8.3f} ms",
                  flush=True)
    return rows


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
    ap.add_argument("--transforms", action="store_true",
                    help="time the transforms' resampling (C++ against the former numpy) instead")
    ap.add_argument("--side", choices=["gradvis", "lucent", "export"], help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    ap.add_argument("--npz", default=os.path.join(ROOT, "python", "gradvis", "models", "default.npz"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    if args.transforms:
        rows = transform_times(args.threads, args.reps)
        print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
              f"float32, forward + adjoint, median of {args.reps} x 20 alternated calls; wall time and "
              f"the process's CPU time (less sensitive to other processes on a busy host)")
        print(f"{'shape':18s} {'op':10s} {'numpy ms':>9s} {'gradvis ms':>11s} {'speed-up':>9s} "
              f"{'numpy cpu':>10s} {'gradvis cpu':>12s} {'cpu x':>7s}")
        for r in rows:
            print(f"{str(tuple(r['shape'])):18s} {r['op']:10s} {r['numpy_ms']:9.3f} {r['gradvis_ms']:11.3f} "
                  f"{r['speedup']:8.1f}x {r['numpy_cpu_ms']:10.3f} {r['gradvis_cpu_ms']:12.3f} "
                  f"{r['cpu_speedup']:6.1f}x")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return
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
