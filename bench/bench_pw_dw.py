"""A 1x1 layer and the 3x3 stride-2 depthwise layer after it: as one chain (where
conv2d_pw_dw_forward_cpu fuses them, on maps of 2 MiB and more an image) against
the same two layers called one after the other, gradvis only, interleaved in one
process (first quartile and best, ms).

    python bench/bench_pw_dw.py [--threads 1 2] [--rounds 200]

The pairs are the first stride-2 blocks of MobileNetV2 (16->96 at 112x112, ReLU6
both), MobileNetV3-L (16->64, ReLU) and EfficientNet-B0 (16->96, SiLU), and
MobileNetV2's 24->144 at 56x56 and 32->192 at 28x28, which stay two layers. The
outputs are compared bit for bit.
"""
import argparse
import time

import numpy as np

import gradvis
from gradvis import _core

PAIRS = [("mnv2 16->96@112", 16, 96, 112, "clamp"), ("mnv3 16->64@112", 16, 64, 112, "relu"),
         ("effb0 16->96@112", 16, 96, 112, "silu"), ("mnv2 24->144@56", 24, 144, 56, "clamp"),
         ("mnv2 32->192@28", 32, 192, 28, "clamp")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"gradvis SIMD {gradvis.simd_level()}; ms, first quartile / best of {args.rounds} alternating calls")
    print(f"{'pair':<18} {'thr':>3} {'two layers':>16} {'one chain':>16} {'ratio':>6}")
    for name, c, m, hw, act in PAIRS:
        a = (act, 0.0, 6.0 if act == "clamp" else 0.0)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w1 = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        w2 = (rng.standard_normal((m, 1, 3, 3)) / 3).astype(np.float32)
        b1, b2 = rng.standard_normal(m).astype(np.float32), rng.standard_normal(m).astype(np.float32)
        chain = _core.ConvChain(1, [("conv", 0, -1, -1, 1, 0, 1, 1) + a + (False,),
                                    ("conv", 1, -1, -1, 2, 1, 1, m) + a + (False,)], [2])

        def fused():
            return chain.run([x], [w1, w2], [b1, b2])[0]

        def two():
            t = _core.conv2d_forward_act(x, w1, b1, 1, 0, 1, 1, *a, False)
            return _core.conv2d_forward_act(t, w2, b2, 2, 1, 1, m, *a, False)

        assert np.array_equal(fused().view(np.uint32), two().view(np.uint32))
        for nt in args.threads:
            gradvis.set_num_threads(nt)
            times = {fused: [], two: []}
            for r in range(args.rounds):
                for fn in (fused, two) if r % 2 == 0 else (two, fused):
                    t0 = time.perf_counter()
                    fn()
                    times[fn].append(time.perf_counter() - t0)
            q = {fn: (1e3 * np.percentile(t, 25), 1e3 * min(t)) for fn, t in times.items()}
            print(f"{name:<18} {nt:>3} {q[two][0]:>8.3f} / {q[two][1]:.3f} {q[fused][0]:>8.3f} / {q[fused][1]:.3f} "
                  f"{q[two][0] / q[fused][0]:>6.2f}")


if __name__ == "__main__":
    main()
