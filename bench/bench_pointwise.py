"""How fast are the pointwise and layer-norm kernels next to PyTorch, on 1 and 2 threads?

    python bench/bench_pointwise.py [--threads 1 2] [--reps 20] [--json out.json]

The ops and shapes of ConvNeXt-T (GELU on the 4x expanded maps, the channel
LayerNorm, the layer scale) and EfficientNet-B0 (SiLU, the squeeze-and-excitation
gate multiply), batch 1, float32, forward and backward (input gradient; LayerNorm's
backward also gives the weight and bias gradients in PyTorch, not in gradvis, as a
model's input-gradient pass does). Each library runs in a process of its own that
never imports the other (they would share one OpenMP runtime); each time is the
best of --reps calls. The table gives milliseconds, gradvis's GB/s of compulsory
traffic (inputs read and outputs written once), and torch ms / gradvis ms (above
1: gradvis is faster); "2t/1t" is gradvis's 2-thread time over its 1-thread time.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# (name, op, shape): op in gelu, gelu_tanh, silu, layernorm (channels of NCHW),
# scale (per-channel constant), gate ((1, C, 1, 1) * (1, C, H, W))
CASES = [
    ("convnext gelu s1", "gelu", (1, 384, 56, 56)),
    ("convnext gelu s3", "gelu", (1, 1536, 14, 14)),
    ("convnext gelu s4", "gelu", (1, 3072, 7, 7)),
    ("gelu tanh s1", "gelu_tanh", (1, 384, 56, 56)),
    ("convnext ln s1", "layernorm", (1, 96, 56, 56)),
    ("convnext ln s3", "layernorm", (1, 384, 14, 14)),
    ("convnext ln s4", "layernorm", (1, 768, 7, 7)),
    ("convnext scale s1", "scale", (1, 96, 56, 56)),
    ("effnet silu 112", "silu", (1, 96, 112, 112)),
    ("effnet silu 14", "silu", (1, 480, 14, 14)),
    ("effnet gate 112", "gate", (1, 96, 112, 112)),
    ("effnet gate 14", "gate", (1, 480, 14, 14)),
]


def best(fn, reps):
    fn()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def gradvis_side(threads, reps):
    import gradvis
    from gradvis import _core
    rng = np.random.default_rng(0)
    res = {}
    for name, op, shape in CASES:
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        C = shape[1]
        w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
        s = rng.standard_normal((1, C)).astype(np.float32)
        if op in ("gelu", "gelu_tanh"):
            ap = "tanh" if op == "gelu_tanh" else "none"
            fwd, bwd = (lambda: _core.gelu_forward(x, ap)), (lambda: _core.gelu_backward(g, x, ap))
        elif op == "silu":
            fwd, bwd = (lambda: _core.silu_forward(x)), (lambda: _core.silu_backward(g, x))
        elif op == "layernorm":
            _, mean, rstd = _core.layernorm_forward(x, w, b, 1, 2)
            fwd = lambda: _core.layernorm_forward(x, w, b, 1, 2)   # noqa: E731
            bwd = lambda: _core.layernorm_backward(g, x, mean, rstd, w, 1, 2)  # noqa: E731
        elif op == "scale":
            fwd = lambda: _core.channel_scale_forward(x, w)   # noqa: E731
            bwd = lambda: _core.channel_scale_backward(g, x, w, True, False)  # noqa: E731
        else:
            fwd = lambda: _core.channel_scale_forward(x, s)   # noqa: E731
            bwd = lambda: _core.channel_scale_backward(g, x, s)  # noqa: E731
        for nt in threads:
            gradvis.set_num_threads(nt)
            res[f"{name}|fwd|{nt}"] = best(fwd, reps)
            res[f"{name}|bwd|{nt}"] = best(bwd, reps)
    print(json.dumps({"ms": {k: v * 1e3 for k, v in res.items()}, "simd": gradvis.simd_level()}))


def torch_side(threads, reps):
    import torch
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    res = {}
    for name, op, shape in CASES:
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        g = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        C = shape[1]
        w = torch.from_numpy(rng.standard_normal(C).astype(np.float32))
        b = torch.from_numpy(rng.standard_normal(C).astype(np.float32))
        s = torch.from_numpy(rng.standard_normal((1, C, 1, 1)).astype(np.float32))
        if op in ("gelu", "gelu_tanh", "silu"):
            f = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu}[op]
        elif op == "layernorm":   # ConvNeXt's channel norm as torchvision writes it (permute, norm, permute)
            w.requires_grad_(True)
            b.requires_grad_(True)
            f = lambda t: F.layer_norm(t.permute(0, 2, 3, 1), (C,), w, b, 1e-6).permute(0, 3, 1, 2)  # noqa: E731
        elif op == "scale":
            sc = w.reshape(C, 1, 1)
            f = lambda t: sc * t   # noqa: E731
        else:
            s.requires_grad_(True)
            f = lambda t: t * s   # noqa: E731

        def fwd():
            with torch.no_grad():
                return f(x)

        xr = x.clone().requires_grad_(True)

        def bwd():   # the backward alone: a fresh graph each call, its forward not timed
            out = f(xr)
            t0 = time.perf_counter()
            torch.autograd.grad(out, [xr], g)
            return time.perf_counter() - t0

        for nt in threads:
            torch.set_num_threads(nt)
            res[f"{name}|fwd|{nt}"] = best(fwd, reps)
            bwd()
            res[f"{name}|bwd|{nt}"] = min(bwd() for _ in range(reps))
    print(json.dumps({"ms": {k: v * 1e3 for k, v in res.items()}, "torch": torch.__version__}))


def traffic_bytes(op, shape, pas):
    n = int(np.prod(shape)) * 4
    if pas == "fwd":
        return 2 * n          # read x, write out
    return 3 * n              # read dout and x, write dx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["torch", "gradvis"], help=argparse.SUPPRESS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.worker:
        (torch_side if a.worker == "torch" else gradvis_side)(a.threads, a.reps)
        return
    out = {}
    for side in ("gradvis", "torch"):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--threads",
               *map(str, a.threads), "--reps", str(a.reps)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if r.returncode:
            raise SystemExit(f"{side} worker failed:\n{r.stderr[-3000:]}")
        out[side] = json.loads(r.stdout.strip().splitlines()[-1])
    gv, pt = out["gradvis"]["ms"], out["torch"]["ms"]
    print(f"batch 1, float32, best of {a.reps}; gradvis SIMD {out['gradvis']['simd']}, torch {out['torch']['torch']}")
    head = f"{'case':<20} {'shape':<18} {'pass':<4} {'thr':>3} {'gradvis ms':>10} {'GB/s':>6} {'torch ms':>9} " \
           f"{'torch/gv':>8} {'2t/1t':>6}"
    print(head)
    print("-" * len(head))
    for name, op, shape in CASES:
        for pas in ("fwd", "bwd"):
            for nt in a.threads:
                k = f"{name}|{pas}|{nt}"
                k1 = f"{name}|{pas}|{a.threads[0]}"
                gbs = traffic_bytes(op, shape, pas) / (gv[k] * 1e-3) / 1e9
                rel = f"{gv[k] / gv[k1]:6.2f}" if nt != a.threads[0] else f"{'':>6}"
                print(f"{name:<20} {'x'.join(map(str, shape[1:])):<18} {pas:<4} {nt:>3} {gv[k]:10.3f} {gbs:6.1f} "
                      f"{pt[k]:9.3f} {pt[k] / gv[k]:8.2f} {rel}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
