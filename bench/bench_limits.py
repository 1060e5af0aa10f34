"""Where the convolutions that miss their speed targets stand against what the machine allows.

Three measurements, each in one run with PyTorch and numpy at the same thread count:

1. Batch-1 layers on small maps (the bundled model's 4x4 and 8x8 layers): gradvis's
   convolution next to the *bare* matrix product it has to do (the im2col gemm, without
   building the im2col matrix), as OpenBLAS (numpy) and PyTorch (``torch.mm``) run it,
   and next to the time the flops take at the FMA peak (``--peak`` GFLOP/s per thread).
   A direct convolution cannot beat the gemm it contains; where gradvis already matches
   the best bare gemm, the remaining distance to a target is the gemm's.
2. The first layer (3->32, 5x5, stride 2, 64x64, batch 64): the direct convolution
   next to its polyphase form, a 12->32 3x3 stride-1 convolution on the four 2x2
   phases of the padded input, which Winograd F(4x4, 3x3) can run (forward and weight
   gradient).

    python bench/bench_limits.py [--threads 1 2] [--peak 115]
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import gradvis
from gradvis import _core
from bench_conv import PEER_IDLE_S, SET_BLAS_THREADS, best_time, warm_malloc


def best_ms(fn, peer=False):
    """Best of as many calls as fit in 0.3 s (up to 2000), in ms; after a peer's calls,
    a pause while its idle threads stop spinning."""
    t = best_time(fn, 0.3, 2000)
    if peer:
        time.sleep(PEER_IDLE_S)
    return 1e3 * t


def set_threads(n):
    gradvis.set_num_threads(n)
    torch.set_num_threads(n)
    if SET_BLAS_THREADS is not None:
        SET_BLAS_THREADS(n)


def small_maps(threads, peak, rng):
    print("batch-1 3x3 layers: convolution vs the bare gemm it contains (ms, best of up to 2000 calls)")
    head = (f"{'layer':<18} {'op':<8} {'thr':>3} {'gradvis':>8} {'torch':>8} {'gemm np':>8} "
            f"{'gemm pt':>8} {'peak':>7} {'x torch':>8} {'x@peak':>7}")
    print(head + "\n" + "-" * len(head))
    for cin, cout, hw in [(256, 384, 4), (128, 256, 8), (256, 256, 8)]:
        x = rng.standard_normal((1, cin, hw, hw), dtype=np.float32)
        w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32)
        dy = rng.standard_normal((1, cout, hw, hw), dtype=np.float32)
        xt, wt, dyt = map(torch.from_numpy, (x, w, dy))
        p = hw * hw
        # forward: (cout x cin*9) @ (cin*9 x p); weight gradient: (cout x p) @ (p x cin*9)
        gemms = {"forward": (rng.standard_normal((cout, cin * 9), dtype=np.float32),
                             rng.standard_normal((cin * 9, p), dtype=np.float32)),
                 "weight": (rng.standard_normal((cout, p), dtype=np.float32),
                            rng.standard_normal((p, cin * 9), dtype=np.float32))}
        convs = {"forward": (lambda: _core.conv2d_forward(x, w, None, 1, 1),
                             lambda: F.conv2d(xt, wt, None, 1, 1)),
                 "weight": (lambda: _core.conv2d_backward_weight(dy, x, (3, 3), 1, 1),
                            lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, 1, 1))}
        flop = 2 * cout * cin * 9 * p
        for n in threads:
            set_threads(n)
            for op in ("forward", "weight"):
                a, b = gemms[op]
                at, bt = torch.from_numpy(a), torch.from_numpy(b)
                t_g, t_t = best_ms(convs[op][0]), best_ms(convs[op][1], True)
                t_np, t_pt = best_ms(lambda: a @ b, True), best_ms(lambda: at @ bt, True)
                t_peak = 1e3 * flop / (peak * 1e9 * n)
                print(f"{f'{cin}->{cout} {hw}x{hw}':<18} {op:<8} {n:>3} {t_g:>8.3f} {t_t:>8.3f} {t_np:>8.3f} "
                      f"{t_pt:>8.3f} {t_peak:>7.3f} {t_t / t_g:>8.2f} {t_t / t_peak:>7.2f}", flush=True)
    print("gemm np / gemm pt: the bare matrix product by numpy (OpenBLAS) and torch.mm; peak: the flops at\n"
          "--peak GFLOP/s per thread; x torch: PyTorch's convolution time / gradvis's; x@peak: the same ratio\n"
          "for a convolution running at the peak (the most any direct method can reach)\n")


def polyphase(x, w, pad):
    """x (N, C, H, W) padded by `pad`, split into its 2x2 phases: (N, 4C, ceil(H'/2), ceil(W'/2));
    w (F, C, K, K) on the same phases: (F, 4C, ceil(K/2), ceil(K/2)), so that a stride-2 convolution
    of x by w is the stride-1, unpadded convolution of the phases."""
    n, c, h, wd = x.shape
    hp, wp = -(-(h + 2 * pad) // 2) * 2, -(-(wd + 2 * pad) // 2) * 2
    xp = np.zeros((n, c, hp, wp), np.float32)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    xq = xp.reshape(n, c, hp // 2, 2, wp // 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, hp // 2, wp // 2)
    f, _, k, _ = w.shape
    kp = -(-k // 2) * 2
    wpad = np.zeros((f, c, kp, kp), np.float32)
    wpad[:, :, :k, :k] = w
    wq = wpad.reshape(f, c, kp // 2, 2, kp // 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(f, 4 * c, kp // 2, kp // 2)
    return np.ascontiguousarray(xq), np.ascontiguousarray(wq)


def first_layer(threads, rng):
    print("first layer 3->32 5x5 stride 2, 64x64, batch 64: direct vs polyphase 12->32 3x3 (ms)")
    x = rng.standard_normal((64, 3, 64, 64), dtype=np.float32)
    w = rng.standard_normal((32, 3, 5, 5), dtype=np.float32)
    xq, wq = polyphase(x, w, 2)
    y = _core.conv2d_forward(x, w, None, 2, 2)
    yq = _core.conv2d_forward(xq, wq, None, 1, 0)
    assert np.allclose(y, yq, rtol=1e-4, atol=1e-3), "polyphase form disagrees"
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    head = f"{'op':<8} {'thr':>3} {'direct':>8} {'poly F(4x4)':>12} {'poly F(2x2)':>12} {'poly direct':>12} {'torch':>8}"
    print(head + "\n" + "-" * len(head))
    xt, wt, dyt = map(torch.from_numpy, (x, w, dy))
    ops = {"forward": (lambda: _core.conv2d_forward(x, w, None, 2, 2),
                       lambda: _core.conv2d_forward(xq, wq, None, 1, 0),
                       lambda: F.conv2d(xt, wt, None, 2, 2)),
           "weight": (lambda: _core.conv2d_backward_weight(dy, x, (5, 5), 2, 2),
                      lambda: _core.conv2d_backward_weight(dy, xq, (3, 3), 1, 0),
                      lambda: torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, 2, 2))}
    algo = _core.get_conv_algorithm()
    try:
        for n in threads:
            set_threads(n)
            for op, (direct, poly, ref) in ops.items():
                _core.set_conv_algorithm("auto")
                t = [best_ms(direct)]
                for a in ("winograd", "winograd2x2", "direct"):
                    _core.set_conv_algorithm(a)
                    t.append(best_ms(poly))
                t.append(best_ms(ref, True))
                print(f"{op:<8} {n:>3} {t[0]:>8.3f} {t[1]:>12.3f} {t[2]:>12.3f} {t[3]:>12.3f} {t[4]:>8.3f}",
                      flush=True)
    finally:
        _core.set_conv_algorithm(algo)
    print("poly: the same layer as a 12->32 3x3 stride-1 convolution of the input's 2x2 phases (building the\n"
          "phases not counted), by Winograd F(4x4, 3x3), F(2x2, 3x3) and the direct gemm\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--peak", type=float, default=115.0, help="FMA peak GFLOP/s of one thread (default 115)")
    args = ap.parse_args()
    warm_malloc()
    print(f"# python bench/bench_limits.py --threads {' '.join(map(str, args.threads))} --peak {args.peak:g}  "
          f"(simd {gradvis.simd_level()}, torch {torch.__version__}, {os.cpu_count()} cpus)")
    rng = np.random.default_rng(0)
    small_maps(args.threads, args.peak, rng)
    first_layer(args.threads, rng)


if __name__ == "__main__":
    main()
