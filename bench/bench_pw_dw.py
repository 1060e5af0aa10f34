"""Two layers that a chain runs as one kernel, against the same two layers called
one after the other, gradvis only, interleaved in one process (first quartile and
best, ms):
- a 1x1 layer and the 3x3 stride-2 depthwise layer after it
  (conv2d_pw_dw_forward_cpu, on maps of 2 MiB and more an image);
- a 3x3 stride-1 depthwise layer and the 1x1 layer after it
  (conv2d_dw_pw_forward_cpu, on inputs of 1 MiB and more an image).

    python bench/bench_pw_dw.py [--threads 1 2] [--rounds 200]

The first kind: the first stride-2 blocks of MobileNetV2 (16->96 at 112x112,
ReLU6 both), MobileNetV3-L (16->64, ReLU) and EfficientNet-B0 (16->96, SiLU), and
MobileNetV2's 24->144 at 56x56 and 32->192 at 28x28, which stay two layers. The
second: MobileNetV2's and MnasNet's first block (32@112 -> 16, ReLU6 then none),
the same at 224x224, a 56x56 block without its residual (144@56 -> 24, fused) and
a 28x28 one (192@28 -> 32, two layers). The outputs are compared bit for bit.
"""
import argparse
import time

import numpy as np

import gradvis
from gradvis import _core

PAIRS = [("mnv2 16->96@112", 16, 96, 112, "clamp"), ("mnv3 16->64@112", 16, 64, 112, "relu"),
         ("effb0 16->96@112", 16, 96, 112, "silu"), ("mnv2 24->144@56", 24, 144, 56, "clamp"),
         ("mnv2 32->192@28", 32, 192, 28, "clamp")]
# (name, channels, filters of the 1x1 layer, size): depthwise then 1x1
DW_PW = [("mnv2 dw32@112->16", 32, 16, 112), ("dw32@224->16", 32, 16, 224), ("dw144@56->24", 144, 24, 56),
         ("dw192@28->32", 192, 32, 28)]


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
        layers = [("conv", 0, -1, -1, 1, 0, 1, 1) + a + (False,), ("conv", 1, -1, -1, 2, 1, 1, m) + a + (False,)]
        compare(name, x, layers, [w1, w2], [b1, b2], [(1, 0, 1, a), (2, 1, m, a)], args)
    for name, c, m, hw in DW_PW:
        a1, a2 = ("clamp", 0.0, 6.0), (None, 0.0, 0.0)
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w1 = (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32)
        w2 = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        b1, b2 = rng.standard_normal(c).astype(np.float32), rng.standard_normal(m).astype(np.float32)
        layers = [("conv", 0, -1, -1, 1, 1, 1, c) + a1 + (False,), ("conv", 1, -1, -1, 1, 0, 1, 1) + a2 + (False,)]
        compare(name, x, layers, [w1, w2], [b1, b2], [(1, 1, c, a1), (1, 0, 1, a2)], args)


def compare(name, x, layers, ws, bs, steps, args):
    """The chain of `layers` against conv2d_forward_act's `steps` (stride, padding,
    groups, activation) one after the other."""
    chain = _core.ConvChain(1, layers, [2])

    def fused():
        return chain.run([x], ws, bs)[0]

    def two():
        t = x
        for w, b, (stride, pad, groups, a) in zip(ws, bs, steps):
            t = (_core.conv2d_forward_act(t, w, b, stride, pad, 1, groups, *a, False) if a[0]
                 else _core.conv2d_forward(t, w, b, stride, pad, 1, groups))
        return t

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
