"""Where do the instructions of a batch-1 conv go? Callgrind instruction counts per call.

Runs the bundled net's seven convs at batch 1 (float32, one thread) through
_core.conv2d_forward / conv2d_backward_input / conv2d_backward_weight under
valgrind --tool=callgrind, collecting only inside the C++ kernels
(gradvis::conv2d_*), one dump per call. Every op is called twice; the second
(warm: scratch grown, SIMD level detected) call is the one reported.
Instruction counts are repeatable whatever else the machine runs, which makes
them the measure for code changes on a loaded machine; they ignore memory
stalls and the width of the instructions, so read them next to timings.

    python bench/callgrind_conv_b1.py [--json out.json] [--keep DIR]
    python bench/callgrind_conv_b1.py --workload      # what valgrind runs
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

# (name, C, F, H=W, K, pad, stride): the bundled TinyImageNet model's convs.
LAYERS = [("3->32 5x5s2 64", 3, 32, 64, 5, 2, 2), ("32->64 32", 32, 64, 32, 3, 1, 1),
          ("64->128 16", 64, 128, 16, 3, 1, 1), ("128->128 16", 128, 128, 16, 3, 1, 1),
          ("128->256 8", 128, 256, 8, 3, 1, 1), ("256->256 8", 256, 256, 8, 3, 1, 1),
          ("256->384 4", 256, 384, 4, 3, 1, 1)]
OPS = ["fwd", "bwd_in", "bwd_w"]
# --dump-after matches exact (demangled) names only.
_SHAPE = "gradvis::Conv2dShape const&"
KERNELS = [f"void gradvis::{sig}" for sig in (
    f"conv2d_forward<float>(float*, float const*, float const*, float const*, {_SHAPE})",
    f"conv2d_backward_input<float>(float*, float const*, float const*, {_SHAPE})",
    f"conv2d_backward_weight<float>(float*, float*, float const*, float const*, {_SHAPE})")]
# One toggle pattern that matches the three kernels but not their lambdas
# (gradvis::conv2d_...::{lambda...}::operator()... const): entering a nested
# match would toggle collection off. (Several exact --toggle-collect names
# sharing a prefix collected nothing with valgrind 3.19.)
TOGGLES = ["--toggle-collect=void gradvis::conv2d_*Conv2dShape const&)"] + [f"--dump-after={k}" for k in KERNELS]
REPS = 2  # calls per op; the last is reported


def workload():
    import numpy as np
    from gradvis import _core
    rng = np.random.default_rng(0)
    for _name, c, f, hw, k, pad, st in LAYERS:
        x = rng.standard_normal((1, c, hw, hw), dtype=np.float32)
        w = rng.standard_normal((f, c, k, k), dtype=np.float32)
        b = rng.standard_normal(f, dtype=np.float32)
        out = _core.conv2d_forward(x, w, b, st, pad)
        dout = rng.standard_normal(out.shape, dtype=np.float32)
        for _ in range(REPS):
            _core.conv2d_forward(x, w, b, st, pad)
        for _ in range(REPS):
            _core.conv2d_backward_input(dout, w, (hw, hw), st, pad)
        for _ in range(REPS):
            _core.conv2d_backward_weight(dout, x, (k, k), st, pad)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--keep", help="keep the callgrind dumps in this directory")
    args = ap.parse_args()
    if args.workload:
        workload()
        return
    out_dir = args.keep or tempfile.mkdtemp(prefix="cg_conv_")
    os.makedirs(out_dir, exist_ok=True)
    for f in glob.glob(os.path.join(out_dir, "cg.out*")):
        os.remove(f)
    # Valgrind has no AVX-512: cpu_level() sees AVX2 there; say so explicitly.
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADVIS_SIMD="avx2")
    # The first forward (to get dout's shape) is collected too: skip it.
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--compress-strings=no", *TOGGLES,
           f"--callgrind-out-file={out_dir}/cg.out", sys.executable,
           os.path.abspath(__file__), "--workload"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dumps = sorted(glob.glob(os.path.join(out_dir, "cg.out.*")), key=lambda p: int(re.findall(r"\.(\d+)(?:-\d+)?$", p)[0]))
    totals = []
    for p in dumps:
        with open(p) as fh:
            txt = fh.read()
        m = re.search(r"^(?:summary|totals):\s*(\d+)", txt, re.M)
        totals.append(int(m.group(1)) if m else 0)
    per_layer = 1 + REPS * len(OPS)
    if len(totals) < per_layer * len(LAYERS):
        sys.exit(f"expected {per_layer * len(LAYERS)} dumps, got {len(totals)} in {out_dir}")
    rows = {}
    for li, layer in enumerate(LAYERS):
        base = li * per_layer + 1
        rows[layer[0]] = {op: totals[base + oi * REPS + REPS - 1] for oi, op in enumerate(OPS)}
    print(f"{'layer (batch 1, f32, 1 thread)':32s}" + "".join(f"{op + ' Minstr':>14s}" for op in OPS))
    for name, r in rows.items():
        print(f"{name:32s}" + "".join(f"{r[op] / 1e6:14.3f}" for op in OPS))
    tot = {op: sum(r[op] for r in rows.values()) for op in OPS}
    print(f"{'total':32s}" + "".join(f"{tot[op] / 1e6:14.3f}" for op in OPS))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"instructions": rows, "dumps": out_dir}, fh, indent=1)


if __name__ == "__main__":
    main()
