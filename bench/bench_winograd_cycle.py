"""Winograd with cached transformed filters against the direct gemm, when the
weights of several layers are used in turn, as in a network.

A 3x3 convolution at batch 1 on a small map (7x7 to 14x14: 16-31 Winograd tiles)
takes Winograd only with its transformed filters kept across calls (4x or 1.8x
the weights). Timed on one layer called again and again, those filters stay in
cache; in a network every layer's filters come back from memory. This script
times ``--layers`` distinct weight arrays of the same shape called in turn, for
each algorithm, and prints milliseconds per call and the ratio direct / Winograd
(above 1: Winograd is faster).

    python bench/bench_winograd_cycle.py [--threads 1 2] [--layers 1 3 8] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import gradvis  # noqa: E402
from gradvis import _core  # noqa: E402

# (C, F, HW, the Winograd variant auto picks there)
SHAPES = [(512, 512, 7, "winograd2x2"), (384, 384, 7, "winograd2x2"), (256, 256, 7, "winograd2x2"),
          (256, 256, 8, "winograd2x2"), (128, 256, 8, "winograd2x2"), (256, 256, 14, "winograd"),
          (512, 512, 14, "winograd")]


def per_call(x, ws, b, calls):
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        for w in ws:
            _core.conv2d_forward(x, w, b, 1, 1)
        best = min(best, (time.perf_counter() - t0) / len(ws))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--layers", nargs="+", type=int, default=[1, 3, 8])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(f"gradvis SIMD {gradvis.simd_level()}; ms per call, best pass; ratio = direct / Winograd")
    print(f"{'shape':22s} {'thr':>3s} {'layers':>6s} {'direct':>8s} {'winograd':>9s} {'ratio':>6s}")
    try:
        for threads in args.threads:
            gradvis.set_num_threads(threads)
            for c, f, hw, algo in SHAPES:
                x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
                b = np.zeros(f, np.float32)
                for n in args.layers:
                    ws = [(0.05 * rng.standard_normal((f, c, 3, 3))).astype(np.float32) for _ in range(n)]
                    times = {}
                    for a in ("direct", algo):
                        _core.set_conv_algorithm(a)
                        per_call(x, ws, b, 1)                 # warm-up (and the filter transforms)
                        times[a] = per_call(x, ws, b, max(6, 40 // n))
                    r = {"C": c, "F": f, "hw": hw, "threads": threads, "layers": n, "algo": algo,
                         "direct_ms": 1e3 * times["direct"], "winograd_ms": 1e3 * times[algo]}
                    rows.append(r)
                    label = "F(2x2)" if algo == "winograd2x2" else "F(4x4)"
                    print(f"{c}->{f} {hw}x{hw} {label}".ljust(22) +
                          f" {threads:3d} {n:6d} {r['direct_ms']:8.3f} {r['winograd_ms']:9.3f} "
                          f"{times['direct'] / times[algo]:6.2f}", flush=True)
    finally:
        _core.set_conv_algorithm("auto")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simd": gradvis.simd_level(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
