"""Winograd (F(4x4) and F(2x2)) against the direct gemm, when the weights of
several layers are used in turn, as in a network.

A 3x3 convolution at batch 1 on a small map (7x7 to 14x14: 16-31 Winograd tiles)
takes Winograd only with its transformed filters kept across calls (4x or 1.8x
the weights). Timed on one layer called again and again, those filters stay in
cache; in a network every layer's filters come back from memory. This script
times ``--layers`` distinct weight arrays of the same shape called in turn, for
each algorithm, and prints milliseconds per call, the algorithm ``auto`` picks
there, and the ratio direct / auto (above 1: auto's pick beats the direct gemm).

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

# (C, F, HW): 3x3 convolutions at batch 1 with 16 F(2x2) tiles (7x7, 8x8) or 16
# F(4x4) tiles (14x14)
SHAPES = [(512, 512, 7), (384, 384, 7), (256, 256, 7), (256, 256, 8), (128, 256, 8), (128, 128, 14),
          (256, 256, 14), (512, 512, 14)]
ALGOS = ("direct", "winograd", "winograd2x2")


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
    print(f"gradvis SIMD {gradvis.simd_level()}; ms per call, best pass; ratio = direct / auto's pick")
    print(f"{'shape':14s} {'thr':>3s} {'layers':>6s} {'direct':>8s} {'F(4x4)':>8s} {'F(2x2)':>8s} {'auto':>12s} "
          f"{'ratio':>6s}")
    try:
        for threads in args.threads:
            gradvis.set_num_threads(threads)
            for c, f, hw in SHAPES:
                x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
                b = np.zeros(f, np.float32)
                for n in args.layers:
                    ws = [(0.05 * rng.standard_normal((f, c, 3, 3))).astype(np.float32) for _ in range(n)]
                    times, outs = {}, {}
                    for a in ALGOS + ("auto",):
                        # Each algorithm starts from an empty filter cache: the entries of the
                        # rows before would fill it, and filters it cannot admit are
                        # transformed on every call, which is not what a network sees.
                        limit = _core.winograd_cache_info()["limit"]
                        _core.set_winograd_cache_limit(0)
                        _core.set_winograd_cache_limit(limit)
                        _core.set_conv_algorithm(a)
                        per_call(x, ws, b, 1)                 # warm-up (and the filter transforms)
                        times[a] = per_call(x, ws, b, max(6, 40 // n))
                        outs[a] = _core.conv2d_forward(x, ws[0], b, 1, 1)
                    pick = next(a for a in ALGOS if np.array_equal(outs[a], outs["auto"]))
                    r = {"C": c, "F": f, "hw": hw, "threads": threads, "layers": n, "auto": pick,
                         **{f"{a}_ms": 1e3 * times[a] for a in ALGOS}}
                    rows.append(r)
                    print(f"{c}->{f} {hw}x{hw}".ljust(14) + f" {threads:3d} {n:6d} {r['direct_ms']:8.3f} "
                          f"{r['winograd_ms']:8.3f} {r['winograd2x2_ms']:8.3f} {pick:>12s} "
                          f"{times['direct'] / times[pick]:6.2f}", flush=True)
    finally:
        _core.set_conv_algorithm("auto")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simd": gradvis.simd_level(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
