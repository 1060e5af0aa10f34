"""Single convolution layers as a network runs them, next to PyTorch, on 1 and 2 threads.

    python bench/bench_conv_layers.py [--set pointwise|small] [--threads 1 2] [--layers 6]
                                      [--reps 10] [--json out.json]

--set pointwise (default): the 1x1 layers of ConvNeXt-T, ResNet-50 and MobileNetV2
at batch 1 and 224x224 input, forward (with bias, and with the activation that
follows them in the network fused: ReLU or ReLU6) and input gradient. PyTorch runs
each layer as its network does: ConvNeXt's as ``nn.Linear`` on channels-last
activations (forward ``F.linear``, input gradient ``dY @ W``), the others as
``F.conv2d`` and ``convolution_backward`` for the input only.

--set small: convolutions of 0.5-9.4M multiply-adds at batch 1 (first layers, small
maps): forward, input gradient and weight gradient of gradvis alone, on each thread
count, to check that 2 threads are never slower than 1 (the conv grain).

Every call cycles through --layers distinct weight arrays of the layer's shape, so
the weights come from memory as in a network, not from cache. Each library runs in
a process of its own that never imports the other (they share one OpenMP runtime);
a time is the best over --reps passes of the per-call mean. Ratios: torch ms /
gradvis ms (above 1: gradvis is faster).
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

# (network, C, F, map, activation after it, how many such layers the network has)
POINTWISE = [
    ("convnext", 96, 384, 56, "none", 3), ("convnext", 384, 96, 56, "none", 3),
    ("convnext", 192, 768, 28, "none", 3), ("convnext", 768, 192, 28, "none", 3),
    ("convnext", 384, 1536, 14, "none", 9), ("convnext", 1536, 384, 14, "none", 9),
    ("convnext", 768, 3072, 7, "none", 3), ("convnext", 3072, 768, 7, "none", 3),
    ("resnet50", 64, 256, 56, "relu", 3), ("resnet50", 256, 64, 56, "relu", 2),
    ("resnet50", 512, 2048, 7, "relu", 3), ("resnet50", 2048, 512, 7, "relu", 2),
    ("mnv2", 96, 576, 14, "relu6", 3), ("mnv2", 576, 96, 14, "none", 2),
    ("mnv2", 64, 384, 14, "relu6", 4), ("mnv2", 160, 960, 7, "relu6", 3),
    ("mnv2", 960, 160, 7, "none", 2), ("mnv2", 320, 1280, 7, "relu6", 1),
]
# (C, F, map, kernel, stride, padding)
SMALL = [
    (3, 32, 64, 3, 1, 1), (3, 32, 64, 5, 2, 2), (3, 32, 32, 3, 1, 1), (3, 16, 64, 5, 2, 2),
    (16, 16, 16, 3, 1, 1), (32, 32, 16, 3, 1, 1), (64, 64, 8, 3, 1, 1), (32, 64, 16, 1, 1, 0),
    (64, 128, 8, 1, 1, 0), (128, 128, 8, 3, 1, 1), (8, 8, 32, 3, 1, 1), (16, 32, 32, 3, 2, 1),
]


def timed(fns, reps):
    """Best over reps passes of the mean time of one call, each pass calling every fn once."""
    for f in fns:
        f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for f in fns:
            f()
        best = min(best, (time.perf_counter() - t0) / len(fns))
    return best


def worker(lib, which, threads, layers, reps):
    rng = np.random.default_rng(0)
    if lib == "gradvis":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
        import gradvis
        from gradvis import _core
    else:
        import torch
    out = {}
    for nt in threads:
        if lib == "gradvis":
            gradvis.set_num_threads(nt)
        else:
            torch.set_num_threads(nt)
        if which == "pointwise":
            for net, c, f, hw, act, _ in POINTWISE:
                x = rng.standard_normal((1, c, hw, hw), dtype=np.float32)
                d = rng.standard_normal((1, f, hw, hw), dtype=np.float32)
                b = rng.standard_normal(f, dtype=np.float32)
                ws = [0.1 * rng.standard_normal((f, c, 1, 1), dtype=np.float32) for _ in range(layers)]
                key = f"{net} {c}->{f}@{hw}"
                if lib == "gradvis":
                    if act == "none":
                        fwd = [lambda w=w: _core.conv2d_forward(x, w, b) for w in ws]
                    elif act == "relu":
                        fwd = [lambda w=w: _core.conv2d_forward(x, w, b, relu=True) for w in ws]
                    else:
                        fwd = [lambda w=w: _core.conv2d_forward_act(x, w, b, activation="clamp", lo=0.0, hi=6.0)
                               for w in ws]
                    bwd = [lambda w=w: _core.conv2d_backward_input(d, w, (hw, hw)) for w in ws]
                elif net == "convnext":   # nn.Linear on channels-last activations, as ConvNeXt-T runs them
                    xt = torch.from_numpy(x[0].reshape(c, -1).T.copy())
                    dt = torch.from_numpy(d[0].reshape(f, -1).T.copy())
                    wt = [torch.from_numpy(w[:, :, 0, 0].copy()) for w in ws]
                    bt = torch.from_numpy(b)
                    fwd = [lambda w=w: torch.nn.functional.linear(xt, w, bt) for w in wt]
                    bwd = [lambda w=w: dt @ w for w in wt]
                else:
                    xt, dt, bt = torch.from_numpy(x), torch.from_numpy(d), torch.from_numpy(b)
                    wt = [torch.from_numpy(w) for w in ws]
                    a = {"none": lambda y: y, "relu": torch.relu, "relu6": torch.nn.functional.relu6}[act]
                    fwd = [lambda w=w: a(torch.nn.functional.conv2d(xt, w, bt)) for w in wt]
                    bwd = [lambda w=w: torch.ops.aten.convolution_backward(
                        dt, xt, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])
                        for w in wt]
                with torch.no_grad() if lib == "torch" else contextlib.nullcontext():
                    out[f"{key}|fwd|{nt}"] = timed(fwd, reps)
                    out[f"{key}|bwd|{nt}"] = timed(bwd, reps)
        else:
            for c, f, hw, k, st, pad in SMALL:
                x = rng.standard_normal((1, c, hw, hw), dtype=np.float32)
                b = rng.standard_normal(f, dtype=np.float32)
                ws = [rng.standard_normal((f, c, k, k), dtype=np.float32) for _ in range(layers)]
                y = _core.conv2d_forward(x, ws[0], b, stride=st, padding=pad)
                d = rng.standard_normal(y.shape, dtype=np.float32)
                key = f"{c}->{f}@{hw} k{k}s{st}"
                out[f"{key}|fwd|{nt}"] = timed(
                    [lambda w=w: _core.conv2d_forward(x, w, b, stride=st, padding=pad) for w in ws], reps)
                out[f"{key}|bwd_in|{nt}"] = timed(
                    [lambda w=w: _core.conv2d_backward_input(d, w, (hw, hw), stride=st, padding=pad) for w in ws], reps)
                out[f"{key}|bwd_w|{nt}"] = timed(
                    [lambda w=w: _core.conv2d_backward_weight(d, x, (k, k), stride=st, padding=pad) for w in ws], reps)
    print(json.dumps(out))


def run(lib, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--set", args.set, "--layers", str(args.layers),
           "--reps", str(args.reps), "--threads", *map(str, args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=["pointwise", "small"], default="pointwise")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--layers", type=int, default=6, help="distinct weight arrays called in turn")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--worker", choices=["gradvis", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.set, args.threads, args.layers, args.reps)
    gv = run("gradvis", args)
    rows = []
    if args.set == "pointwise":
        pt = run("torch", args)
        print(f"{'layer':26s} {'act':5s} pass thr  gv ms   pt ms  speedup  gv GMAC/s")
        for net, c, f, hw, act, count in POINTWISE:
            key = f"{net} {c}->{f}@{hw}"
            for ps in ("fwd", "bwd"):
                for nt in args.threads:
                    g, t = gv[f"{key}|{ps}|{nt}"], pt[f"{key}|{ps}|{nt}"]
                    rows.append(dict(layer=key, act=act if ps == "fwd" else "-", count=count, pass_=ps, threads=nt,
                                     gradvis_ms=g * 1e3, torch_ms=t * 1e3, speedup=t / g))
                    print(f"{key:26s} {rows[-1]['act']:5s} {ps:4s} {nt:3d} {g * 1e3:6.3f} {t * 1e3:7.3f} {t / g:7.2f}"
                          f" {c * f * hw * hw / g / 1e9:9.1f}")
        for net in ("convnext", "resnet50", "mnv2"):
            for ps in ("fwd", "bwd"):
                for nt in args.threads:
                    g = sum(r["gradvis_ms"] * r["count"] for r in rows
                            if r["layer"].startswith(net + " ") and r["pass_"] == ps and r["threads"] == nt)
                    t = sum(r["torch_ms"] * r["count"] for r in rows
                            if r["layer"].startswith(net + " ") and r["pass_"] == ps and r["threads"] == nt)
                    print(f"{net} weighted by layer count, {ps}, {nt} thread(s): gradvis {g:.2f} ms, "
                          f"torch {t:.2f} ms, speedup {t / g:.2f}")
    else:
        print(f"{'layer':20s} {'MMAC':>6s} pass    " + "  ".join(f"{nt}t us" for nt in args.threads) + "   2t/1t")
        for c, f, hw, k, st, pad in SMALL:
            key = f"{c}->{f}@{hw} k{k}s{st}"
            oh = (hw + 2 * pad - k) // st + 1
            for ps in ("fwd", "bwd_in", "bwd_w"):
                ts = [gv[f"{key}|{ps}|{nt}"] * 1e6 for nt in args.threads]
                rows.append(dict(layer=key, pass_=ps, us=dict(zip(args.threads, ts))))
                ratio = f"{ts[-1] / ts[0]:7.2f}" if len(ts) > 1 else ""
                print(f"{key:20s} {c * f * k * k * oh * oh / 1e6:6.2f} {ps:7s} "
                      + "  ".join(f"{t:6.1f}" for t in ts) + f" {ratio}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(meta=dict(set=args.set, layers=args.layers, reps=args.reps, threads=args.threads),
                           rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
