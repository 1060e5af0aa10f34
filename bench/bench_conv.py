"""How fast is gradvis conv2d next to PyTorch and a numpy im2col baseline?

Times forward, backward-input and backward-weight (float32) at 1 and 2 threads
on a few CNN-like shapes, in one run, and prints a table (ms, GFLOP/s, ratios).

    python bench/bench_conv.py [--quick] [--threads 1 2] [--json out.json]
"""
import argparse
import json
import platform
import time

import numpy as np

import gradvis
from gradvis import _core

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the table then has no torch columns
    torch = None

# (name, x shape, w shape, padding, stride)
SHAPES = [
    ("b1 3->32 64x64", (1, 3, 64, 64), (32, 3, 3, 3), 1, 1),
    ("b64 3->32 64x64", (64, 3, 64, 64), (32, 3, 3, 3), 1, 1),
    ("b64 32->64 32x32", (64, 32, 32, 32), (64, 32, 3, 3), 1, 1),
    ("b64 128->256 8x8", (64, 128, 8, 8), (256, 128, 3, 3), 1, 1),
    ("b1 64->64 224x224", (1, 64, 224, 224), (64, 64, 3, 3), 1, 1),
]
# The bundled TinyImageNet model's convs (batch 64 in training, 1 in the algorithms).
MODEL_LAYERS = [("3->32 5x5s2 64x64", 3, 32, 64, 5, 2, 2), ("32->64 32x32", 32, 64, 32, 3, 1, 1),
                ("64->128 16x16", 64, 128, 16, 3, 1, 1), ("128->128 16x16", 128, 128, 16, 3, 1, 1),
                ("128->256 8x8", 128, 256, 8, 3, 1, 1), ("256->256 8x8", 256, 256, 8, 3, 1, 1),
                ("256->384 4x4", 256, 384, 4, 3, 1, 1)]
MODEL = [(f"b{n} {name}", (n, c, hw, hw), (f, c, k, k), pad, st)
         for n in (64, 1) for name, c, f, hw, k, pad, st in MODEL_LAYERS]
# The same layers in a training step: batch 128 of 56x56 crops (bench_algorithms.py's
# training workload).
TRAIN = [(f"b128 {name.split(' ')[0]}{' 5x5s2' if k == 5 else ''} {hw * 56 // 64}x{hw * 56 // 64}",
          (128, c, hw * 56 // 64, hw * 56 // 64), (f, c, k, k), pad, st)
         for name, c, f, hw, k, pad, st in MODEL_LAYERS]
# VGG-16 layers at 224x224, batch 1.
VGG = [(f"vgg {c}->{c} {hw}x{hw}", (1, c, hw, hw), (c, c, 3, 3), 1, 1)
       for c, hw in ((64, 224), (128, 112), (256, 56), (512, 28), (512, 14))]
QUICK = [SHAPES[0], ("b16 32->64 32x32", (16, 32, 32, 32), (64, 32, 3, 3), 1, 1), SHAPES[3][:1] + ((16, 128, 8, 8),) + SHAPES[3][2:]]


# After a peer's calls its idle threads keep spinning for a while (OpenBLAS's for
# up to ~70 ms) on the cores the next gradvis measurement needs.
PEER_IDLE_S = 0.2


def best_time(fn, min_time, max_reps):
    """Best of as many calls as fit in min_time (at least 3, at most max_reps).
    Short 2-thread calls need many: after an idle pause the OS may run both
    threads on one core for a while (seen on the 2-vCPU host: 0.5-0.65 ms instead of
    0.23 for a batch-1 4x4 layer, PyTorch's rows alike)."""
    fn()  # warm-up (scratch, thread pool)
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _blas_thread_setter():
    """numpy's bundled OpenBLAS's set_num_threads, found by symbol in the loaded
    libraries (no extra package); None if there is none."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                return fn
    return None


def warm_malloc():
    """Raise glibc malloc's mmap threshold to its 32 MB ceiling, as a process that has
    freed a large array has it: until then every output of 128 KB or more that PyTorch
    allocates is a fresh mmap whose pages the kernel zeroes on first touch (a batch-64
    first-layer forward measured 12 ms instead of 3.3 on 1 thread), and which state a
    run is in would depend on what it happened to free before. gradvis's large outputs
    come from its own pool either way."""
    a = np.ones(30 << 18, np.float32)   # 30 MB: mmapped, then freed
    del a


np.ones((2, 2)) @ np.ones((2, 2))   # loads the BLAS
SET_BLAS_THREADS = _blas_thread_setter()


def numpy_im2col_forward(x, w, pad, stride):
    F, C, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))[:, :, ::stride, ::stride]
    N, _, OH, OW = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * KH * KW)
    return (cols @ w.reshape(F, -1).T).reshape(N, OH, OW, F).transpose(0, 3, 1, 2)


def run(shapes, threads, which_ops, min_time, max_reps):
    rows = []
    rng = np.random.default_rng(0)
    for name, xs, ws, pad, stride in shapes:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        out = _core.conv2d_forward(x, w, b, stride=stride, padding=pad)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        flops = 2.0 * out.size * ws[1] * ws[2] * ws[3]
        for nt in threads:
            gradvis.set_num_threads(nt)
            if SET_BLAS_THREADS is not None:
                # numpy at the same thread count; its idle BLAS threads would
                # otherwise spin on the core the next measurement needs
                SET_BLAS_THREADS(nt)
            ops = {
                "forward": lambda: _core.conv2d_forward(x, w, b, stride=stride, padding=pad),
                "backward_input": lambda: _core.conv2d_backward_input(dout, w, xs[2:], stride=stride, padding=pad),
                "backward_weight": lambda: _core.conv2d_backward_weight(dout, x, ws[2:], stride=stride, padding=pad),
            }
            t_ref = {}
            if torch is not None:
                torch.set_num_threads(nt)
                xt, wt, bt, dt = (torch.from_numpy(a) for a in (x, w, b, dout))
                gi = torch.nn.grad.conv2d_input
                gw = torch.nn.grad.conv2d_weight
                t_ref = {
                    "forward": lambda: TF.conv2d(xt, wt, bt, stride=stride, padding=pad),
                    "backward_input": lambda: gi(xs, wt, dt, stride=stride, padding=pad),
                    "backward_weight": lambda: gw(xt, ws, dt, stride=stride, padding=pad),
                }
            for op, fn in ops.items():
                if op not in which_ops:
                    continue
                t = best_time(fn, min_time, max_reps)
                row = dict(shape=name, x=xs, w=ws, op=op, threads=nt, ms=t * 1e3, gflops=flops / t / 1e9)
                if op in t_ref:
                    tt = best_time(t_ref[op], min_time, max_reps)
                    row.update(torch_ms=tt * 1e3, torch_gflops=flops / tt / 1e9, vs_torch=tt / t)
                    time.sleep(PEER_IDLE_S)
                if op == "forward":
                    tn = best_time(lambda: numpy_im2col_forward(x, w, pad, stride), min_time, max_reps)
                    row.update(numpy_ms=tn * 1e3, vs_numpy=tn / t)
                    time.sleep(PEER_IDLE_S)
                rows.append(row)
    return rows


def print_table(rows):
    hdr = f"{'shape':<20} {'op':<16} {'thr':>3} {'ms':>9} {'GF/s':>7} {'torch ms':>9} {'torch GF/s':>10} " \
          f"{'numpy ms':>9} {'x torch':>8} {'x numpy':>8}"
    print(hdr)
    print("-" * len(hdr))
    fmt = lambda r, k, f: (f % r[k]) if k in r else "-"
    for r in rows:
        print(f"{r['shape']:<20} {r['op']:<16} {r['threads']:>3} {r['ms']:>9.2f} {r['gflops']:>7.1f} "
              f"{fmt(r, 'torch_ms', '%.2f'):>9} {fmt(r, 'torch_gflops', '%.1f'):>10} {fmt(r, 'numpy_ms', '%.2f'):>9} "
              f"{fmt(r, 'vs_torch', '%.2f'):>8} {fmt(r, 'vs_numpy', '%.2f'):>8}")
    print("x torch / x numpy: peer time / gradvis time (> 1 means gradvis is faster). float32. GF/s counts the\n"
          "direct convolution's 2*N*F*C*KH*KW*OH*OW flops, so Winograd (fewer multiplies) can pass the FMA peak.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, few repetitions")
    ap.add_argument("--set", choices=["default", "model", "train", "vgg"], default="default",
                    help="shapes: a CNN-like mix, the bundled model's layers (batch 64 and 1), the same on a "
                         "training step's batch of 128 56x56 crops, or VGG-16 at 224")
    ap.add_argument("--ops", nargs="+", default=["forward", "backward_input", "backward_weight"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    ap.add_argument("--batch", type=int, help="only the shapes of this batch size")
    ap.add_argument("--conv-algorithm", choices=["auto", "direct", "winograd", "winograd2x2"], default="auto",
                    help="gradvis's float32 convolution algorithm (gradvis.set_conv_algorithm)")
    args = ap.parse_args()
    warm_malloc()
    gradvis.set_conv_algorithm(args.conv_algorithm)
    shapes = QUICK if args.quick else dict(default=SHAPES, model=MODEL, train=TRAIN, vgg=VGG)[args.set]
    if args.batch is not None:
        shapes = [s for s in shapes if s[1][0] == args.batch]
    rows = run(shapes, args.threads, args.ops, min_time=0.05 if args.quick else 0.3, max_reps=3 if args.quick else 2000)
    meta = dict(simd=gradvis.simd_level(), conv_algorithm=args.conv_algorithm, machine=platform.machine(),
                processor=platform.processor(), numpy_threads_set=SET_BLAS_THREADS is not None,
                torch=getattr(torch, "__version__", None), numpy=np.__version__)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print(f"gradvis conv2d benchmark; simd={meta['simd']}, conv algorithm={args.conv_algorithm}, "
          f"torch={meta['torch']}, numpy BLAS threads "
          + ("= the row's threads" if SET_BLAS_THREADS is not None else "not settable (numpy's default)"))
    print_table(rows)


if __name__ == "__main__":
    main()
