"""How fast are gradvis's depthwise, grouped and stem convolutions next to PyTorch?

The op shapes of MobileNetV2/V3, EfficientNet-B0, RegNetY-400MF, ResNeXt-50 and
ConvNeXt-T (float32, batch 1 and 16, forward and backward = input + weight
gradients, 1 and 2 threads). Each library runs in a process of its own that never
imports the other (they would share one OpenMP runtime); the two alternate, and
each row keeps the best time over all repeats. For depthwise rows the table gives
the fraction of the memory bandwidth a numpy copy of the same bytes reaches in the
same gradvis process (a depthwise layer reads its input and writes its output once).
With --peak (a core's FMA peak in GFLOP/s, from bench/fma_peak.c), each row also
gives x@pk: PyTorch's time over the time of the row's multiply-adds at that peak
on the row's threads, the most any method doing those multiply-adds can reach.

    python bench/bench_modern.py [--quick] [--simd avx2] [--threads 1 2] [--repeats 3] [--peak 116]
                                 [--json out.json]
    python bench/bench_modern.py --networks [--simd avx2]   # whole torchvision networks via ONNX
    python bench/bench_modern.py --acts [--simd avx2]       # conv + activation, fused against separate

--simd avx2 sets GRADVIS_SIMD=avx2 for gradvis and, for PyTorch, ATEN_CPU_CAPABILITY=avx2,
ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2 (torch_compat.simd_env). --networks runs bench/imported_worker.py (forward, and forward + input
gradient, batch 1, 224x224) for mobilenet_v2, mobilenet_v3_large, efficientnet_b0,
regnet_y_400mf, resnet50 (and convnext_tiny where gradvis imports it).
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
from torch_compat import gradvis_origin, simd_env   # does not import torch

# (name, C, F, HW, K, stride, pad, groups): input (N, C, HW, HW), w (F, C/groups, K, K)
DEPTHWISE = [
    ("mnv2 dw3 32@112", 32, 32, 112, 3, 1, 1, 32),
    ("mnv2 dw3s2 96@112", 96, 96, 112, 3, 2, 1, 96),
    ("mnv2 dw3 144@56", 144, 144, 56, 3, 1, 1, 144),
    ("mnv2 dw3s2 144@56", 144, 144, 56, 3, 2, 1, 144),
    ("mnv2 dw3 192@28", 192, 192, 28, 3, 1, 1, 192),
    ("mnv2 dw3 384@14", 384, 384, 14, 3, 1, 1, 384),
    ("mnv2 dw3s2 576@14", 576, 576, 14, 3, 2, 1, 576),
    ("mnv2 dw3 960@7", 960, 960, 7, 3, 1, 1, 960),
    ("mnv3 dw5s2 72@56", 72, 72, 56, 5, 2, 2, 72),
    ("mnv3 dw5 120@28", 120, 120, 28, 5, 1, 2, 120),
    ("mnv3 dw5 960@7", 960, 960, 7, 5, 1, 2, 960),
    ("effb0 dw5s2 144@56", 144, 144, 56, 5, 2, 2, 144),
    ("effb0 dw5 240@28", 240, 240, 28, 5, 1, 2, 240),
    ("effb0 dw5 672@14", 672, 672, 14, 5, 1, 2, 672),
    ("effb0 dw5 1152@7", 1152, 1152, 7, 5, 1, 2, 1152),
    ("cnxt dw7 96@56", 96, 96, 56, 7, 1, 3, 96),
    ("cnxt dw7 192@28", 192, 192, 28, 7, 1, 3, 192),
    ("cnxt dw7 384@14", 384, 384, 14, 7, 1, 3, 384),
    ("cnxt dw7 768@7", 768, 768, 7, 7, 1, 3, 768),
]
GROUPED = [
    ("regy 3x3s2 48@112 g6", 48, 48, 112, 3, 2, 1, 6),
    ("regy 3x3 48@56 g6", 48, 48, 56, 3, 1, 1, 6),
    ("regy 3x3 104@28 g13", 104, 104, 28, 3, 1, 1, 13),
    ("regy 3x3 208@14 g26", 208, 208, 14, 3, 1, 1, 26),
    ("regy 3x3 440@7 g55", 440, 440, 7, 3, 1, 1, 55),
    ("rnx 3x3 128@56 g32", 128, 128, 56, 3, 1, 1, 32),
    ("rnx 3x3 256@28 g32", 256, 256, 28, 3, 1, 1, 32),
    ("rnx 3x3 512@14 g32", 512, 512, 14, 3, 1, 1, 32),
    # the stride-2 first blocks of RegNetY-400MF's and ResNeXt-50's stages, and
    # ResNeXt-50's last stage (32 channels a group)
    ("regy 3x3s2 104@56 g13", 104, 104, 56, 3, 2, 1, 13),
    ("regy 3x3s2 208@28 g26", 208, 208, 28, 3, 2, 1, 26),
    ("regy 3x3s2 440@14 g55", 440, 440, 14, 3, 2, 1, 55),
    ("rnx 3x3s2 256@56 g32", 256, 256, 56, 3, 2, 1, 32),
    ("rnx 3x3s2 512@28 g32", 512, 512, 28, 3, 2, 1, 32),
    ("rnx 3x3s2 1024@14 g32", 1024, 1024, 14, 3, 2, 1, 32),
    ("rnx 3x3 1024@7 g32", 1024, 1024, 7, 3, 1, 1, 32),
]
STEMS = [
    ("resnet 7x7s2 3->64", 3, 64, 224, 7, 2, 3, 1),
    ("mnv2 3x3s2 3->32", 3, 32, 224, 3, 2, 1, 1),
    ("mnv3 3x3s2 3->16", 3, 16, 224, 3, 2, 1, 1),
    ("cnxt 4x4s4 3->96", 3, 96, 224, 4, 4, 0, 1),
    ("gradvis 5x5s2 3->32@64", 3, 32, 64, 5, 2, 2, 1),
    ("3x3 3->32@64", 3, 32, 64, 3, 1, 1, 1),
]
QUICK = [DEPTHWISE[0], DEPTHWISE[3], DEPTHWISE[12], DEPTHWISE[16], GROUPED[2], GROUPED[5], STEMS[0], STEMS[5]]
NETWORKS = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "resnet50", "convnext_tiny"]


def best_time(fn, min_time=0.15, max_reps=200):
    """Best of as many calls as fit in min_time (at least 5)."""
    fn()
    best, t_end, n = float("inf"), time.perf_counter() + min_time, 0
    while n < 5 or (time.perf_counter() < t_end and n < max_reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def worker(side, shapes, batches, threads):
    """Times every (shape, batch, pass, threads) in this process; prints one JSON line."""
    rng = np.random.default_rng(0)
    res = {}
    if side == "torch":
        import torch
        info = {"torch": torch.__version__, "cap": torch.backends.cpu.get_cpu_capability()}
    else:
        import gradvis
        from gradvis import _core
        info = {"simd": gradvis.simd_level()}
    for name, C, F, HW, K, st, pad, g in shapes:
        for n in batches:
            x = rng.standard_normal((n, C, HW, HW)).astype(np.float32)
            w = (rng.standard_normal((F, C // g, K, K)) / np.sqrt(C // g * K * K)).astype(np.float32)
            b = rng.standard_normal(F).astype(np.float32)
            OH = (HW + 2 * pad - K) // st + 1
            dy = rng.standard_normal((n, F, OH, OH)).astype(np.float32)
            if side == "torch":
                xt, wt, bt, dyt = map(torch.from_numpy, (x, w, b, dy))
                fwd = lambda: torch.nn.functional.conv2d(xt, wt, bt, st, pad, 1, g)  # noqa: E731
                bwd = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                    dyt, xt, wt, [F], [st, st], [pad, pad], [1, 1], False, [0, 0], g, [True, True, True])
            else:
                fwd = lambda: _core.conv2d_forward(x, w, b, st, pad, 1, g)  # noqa: E731

                def bwd():
                    _core.conv2d_backward_input(dy, w, (HW, HW), st, pad, 1, g)
                    _core.conv2d_backward_weight(dy, x, (K, K), st, pad, 1, g)
            for nt in threads:
                if side == "torch":
                    torch.set_num_threads(nt)
                else:
                    gradvis.set_num_threads(nt)
                with_grad = torch.no_grad() if side == "torch" else None
                if with_grad:
                    with_grad.__enter__()
                res[f"{name}|{n}|fwd|{nt}"] = best_time(fwd)
                res[f"{name}|{n}|bwd|{nt}"] = best_time(bwd)
                if with_grad:
                    with_grad.__exit__(None, None, None)
            if side == "gradvis" and g == C and g > 1:
                # the same bytes as the layer reads and writes, copied once by numpy
                src = np.empty(x.size + n * F * OH * OH, np.float32)
                src[:] = 1
                half = src[: src.size // 2]
                dst = np.empty_like(half)
                res[f"{name}|{n}|copy"] = best_time(lambda: np.copyto(dst, half)) * 2 * half.size / src.size
    print(json.dumps({"info": info, "times": res}))


def run_side(side, shapes_arg, batches, threads, simd):
    env = dict(os.environ)
    if simd:
        env.update(simd_env(simd))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--shapes", shapes_arg,
           "--batches", *map(str, batches), "--threads", *map(str, threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_networks(args):
    """Whole networks through imported_worker.py, each library in its own process."""
    wk = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imported_worker.py")
    env = dict(os.environ, PYTHONFAULTHANDLER="1")   # a crash prints its traceback
    if args.simd:
        env.update(simd_env(args.simd))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models or NETWORKS:
            res = {"torch": [], "gradvis": []}
            ok = True
            for r in range(args.repeats):
                for side in (("torch", "gradvis") if r % 2 == 0 else ("gradvis", "torch")):
                    if side == "gradvis" and not os.path.exists(f"{d}/{name}.npz"):
                        continue
                    out = subprocess.run([sys.executable, wk, side, name, d, "--threads", *map(str, args.threads),
                                          "--reps", "5", "--passes", "fwd", "fwdgrad"],
                                         capture_output=True, text=True, env=env)
                    if out.returncode:
                        # (a signal leaves stderr empty: the exit status names it)
                        print(f"  {name} {side}: failed with exit status {out.returncode}: "
                              f"{out.stderr.strip().splitlines()[-3:]}", flush=True)
                        ok = False
                        break
                    res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
                if not ok:
                    break
            if not ok or not res["gradvis"]:
                continue
            for ps in ("fwd", "fwdgrad"):
                for nt in args.threads:
                    k = f"{ps}|{nt}"
                    tg = min(r["ms"][k] for r in res["gradvis"])
                    tt = min(r["ms"][k] for r in res["torch"])
                    rows.append({"model": name, "pass": ps, "threads": nt, "gradvis_ms": tg, "torch_ms": tt,
                                 "speedup": tt / tg, "err": res["gradvis"][-1]["err"]})
                    print(f"  {name} {ps} threads={nt}: gradvis {tg:.1f} ms, torch {tt:.1f} ms, "
                          f"torch/gradvis {tt / tg:.2f}", flush=True)
    simd = args.simd or "default"
    print(f"\nwhole networks, batch 1, 224x224, float32, best of 5 calls x {args.repeats} alternating runs; "
          f"SIMD {simd}; speedup = torch ms / gradvis ms")
    head = f"{'network':<20} {'pass':<8} {'thr':>3} {'gradvis ms':>10} {'torch ms':>9} {'speedup':>7} {'err':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<20} {r['pass']:<8} {r['threads']:>3} {r['gradvis_ms']:>10.2f} {r['torch_ms']:>9.2f} "
              f"{r['speedup']:>7.2f} {r['err']:>8.1e}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["torch", "gradvis"], help=argparse.SUPPRESS)
    ap.add_argument("--shapes", default="all", help="all, quick, depthwise, grouped or stems")
    ap.add_argument("--quick", action="store_true", help="a few shapes, batch 1 and 16")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each library")
    ap.add_argument("--simd", choices=["avx2", "avx512"], help="cap both libraries' SIMD level")
    ap.add_argument("--networks", action="store_true", help="whole torchvision networks instead of ops")
    ap.add_argument("--acts", action="store_true",
                    help="gradvis only: convolution + ReLU6/HardSwish/SiLU fused against separate calls")
    ap.add_argument("--models", nargs="*", help=f"networks for --networks (default {' '.join(NETWORKS)})")
    ap.add_argument("--peak", type=float,
                    help="a core's float32 FMA peak in GFLOP/s (bench/fma_peak.c): ops then also give "
                         "x@pk, the most any method doing the layer's multiply-adds could reach against "
                         "PyTorch's time (at the most threads)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    sets = {"all": DEPTHWISE + GROUPED + STEMS, "quick": QUICK, "depthwise": DEPTHWISE, "grouped": GROUPED,
            "stems": STEMS}
    if args.quick:
        args.shapes = "quick"
    if args.worker:
        return worker(args.worker, sets[args.shapes], args.batches, args.threads)
    env = dict(os.environ)
    if args.simd:
        env.update(simd_env(args.simd))
    origin = gradvis_origin(env)
    if args.acts:
        rows = run_acts(args)
    elif args.networks:
        rows = run_networks(args)
    else:
        rows = run_ops(args, sets[args.shapes])
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "simd": args.simd or "default",
                "gradvis": origin,
                "loaded": subprocess.run(["pgrep", "-f", "gradvis.train"], capture_output=True).returncode == 0}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


# (name, C, F, HW, K, stride, groups) x activation: a convolution and the activation
# after it, fused (conv2d_forward_act, with the pre-activation where the backward
# needs it) against the two separate calls
ACT_SHAPES = [
    ("mnv2 1x1 16->96@112", 16, 96, 112, 1, 1, 1),
    ("mnv2 dw3s2 96@112", 96, 96, 112, 3, 2, 96),
    ("effb0 1x1 40->240@28", 40, 240, 28, 1, 1, 1),
    ("effb0 dw5 240@28", 240, 240, 28, 5, 1, 240),
    ("effb0 dw5 1152@7", 1152, 1152, 7, 5, 1, 1152),
]


def run_acts(args):
    """gradvis only (no PyTorch in the process): fused conv + activation against the
    convolution and the activation layer's kernel called one after the other."""
    if args.simd:
        os.environ["GRADVIS_SIMD"] = args.simd     # read when the module loads
    import gradvis
    from gradvis import _core
    rng = np.random.default_rng(0)
    acts = [("relu6", "clamp", lambda y: _core.clamp_forward(y, 0.0, 6.0), False),
            ("hardswish", "hardswish", _core.hardswish_forward, True),
            ("silu", "silu", _core.silu_forward, True)]
    print(f"conv + activation, batch 1, float32, gradvis SIMD {gradvis.simd_level()}; ms, best of repeated calls; "
          f"fused keeps the pre-activation for hardswish and silu (what the backward reads)")
    head = f"{'shape':<24} {'act':<10}" + "".join(f" {'sep ' + str(t):>8} {'fused ' + str(t):>8} {'x' + str(t):>5}"
                                                   for t in args.threads)
    print(head)
    print("-" * len(head))
    rows = []
    for name, C, F, HW, K, st, g in ACT_SHAPES:
        x = rng.standard_normal((1, C, HW, HW)).astype(np.float32)
        w = (rng.standard_normal((F, C // g, K, K)) / np.sqrt(C // g * K * K)).astype(np.float32)
        b = rng.standard_normal(F).astype(np.float32)
        for act, kind, sep, pre in acts:
            row = {"shape": name, "act": act}
            for nt in args.threads:
                gradvis.set_num_threads(nt)
                row[f"sep{nt}"] = 1e3 * best_time(lambda: sep(_core.conv2d_forward(x, w, b, st, K // 2, 1, g)))
                row[f"fused{nt}"] = 1e3 * best_time(lambda: _core.conv2d_forward_act(
                    x, w, b, st, K // 2, 1, g, kind, 0.0, 6.0, pre))
            rows.append(row)
            print(f"{name:<24} {act:<10}" + "".join(
                f" {row[f'sep{t}']:>8.3f} {row[f'fused{t}']:>8.3f} {row[f'sep{t}'] / row[f'fused{t}']:>5.2f}"
                for t in args.threads), flush=True)
    return rows


def run_ops(args, shapes):
    runs = {"torch": [], "gradvis": []}
    for r in range(args.repeats):
        for side in (("gradvis", "torch") if r % 2 == 0 else ("torch", "gradvis")):
            runs[side].append(run_side(side, args.shapes, args.batches, args.threads, args.simd))
            print(f"  run {r + 1}/{args.repeats}: {side} done", flush=True)
    best = {s: {k: min(run["times"][k] for run in runs[s]) for k in runs[s][0]["times"]} for s in runs}
    spread = {s: {k: max(run["times"][k] for run in runs[s]) / best[s][k] - 1 for k in best[s]} for s in runs}
    rows = []
    for name, C, F, HW, K, st, pad, g in shapes:
        for n in args.batches:
            OH = (HW + 2 * pad - K) // st + 1
            for ps in ("fwd", "bwd"):
                # multiply-adds of the pass: the forward's, twice for bwd (input and weight gradients)
                macs = n * F * (C // g) * K * K * OH * OH * (1 if ps == "fwd" else 2)
                row = {"shape": name, "batch": n, "pass": ps, "macs": macs}
                for nt in args.threads:
                    k = f"{name}|{n}|{ps}|{nt}"
                    row[f"gv{nt}"], row[f"pt{nt}"] = best["gradvis"][k] * 1e3, best["torch"][k] * 1e3
                    row[f"spread_gv{nt}"], row[f"spread_pt{nt}"] = spread["gradvis"][k], spread["torch"][k]
                    if args.peak:   # PyTorch's ms / the ms of the multiply-adds at nt cores' peak
                        row[f"x_at_peak{nt}"] = row[f"pt{nt}"] / (2e-6 * macs / (args.peak * nt))
                if ps == "fwd" and g == C and g > 1:
                    copy = best["gradvis"][f"{name}|{n}|copy"]
                    nt = max(args.threads)
                    row["bw_frac"] = copy / best["gradvis"][f"{name}|{n}|fwd|{nt}"]
                    row["gbs"] = 4 * n * (C * HW * HW + F * OH * OH) / best["gradvis"][f"{name}|{n}|fwd|{nt}"] / 1e9
                rows.append(row)
    info = runs["gradvis"][0]["info"], runs["torch"][0]["info"]
    loaded = subprocess.run(["pgrep", "-f", "gradvis.train"], capture_output=True).returncode == 0
    print(f"\nfloat32 convolutions; gradvis SIMD {info[0]['simd']}, torch {info[1]['torch']} "
          f"(CPU capability {info[1]['cap']}); best over {args.repeats} alternating runs per library; "
          f"speedup = torch ms / gradvis ms; bwd = input + weight (+ bias) gradients; "
          f"bw = fraction of a numpy copy's bandwidth at {max(args.threads)} threads (depthwise forward); "
          f"spread = worst run / best run - 1; host {'LOADED (training running)' if loaded else 'idle'}"
          + (f"; x@pk = torch ms / ms of the multiply-adds at {args.peak:g} GFLOP/s a core, "
             f"{max(args.threads)} threads (a ceiling on x{max(args.threads)} for direct methods)"
             if args.peak else ""))
    cols = "".join(f" {'gv ms ' + str(t):>9} {'pt ms ' + str(t):>9} {'x' + str(t):>5}" for t in args.threads)
    head = f"{'shape':<24} {'N':>3} {'pass':<4}{cols} {'bw':>5} {'spr gv':>6} {'spr pt':>6}" + (
        f" {'x@pk':>5}" if args.peak else "")
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = "".join(f" {r[f'gv{t}']:>9.3f} {r[f'pt{t}']:>9.3f} {r[f'pt{t}'] / r[f'gv{t}']:>5.2f}"
                        for t in args.threads)
        bw = f"{r['bw_frac']:>5.2f}" if "bw_frac" in r else f"{'':>5}"
        t = max(args.threads)
        pk = f" {r[f'x_at_peak{t}']:>5.2f}" if args.peak else ""
        print(f"{r['shape']:<24} {r['batch']:>3} {r['pass']:<4}{cells} {bw} {r[f'spread_gv{t}']:>6.2f} "
              f"{r[f'spread_pt{t}']:>6.2f}{pk}")
    return rows


if __name__ == "__main__":
    main()
