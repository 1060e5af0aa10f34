"""How fast are the pooling, activation, batch-norm and blur kernels next to
PyTorch (same thread count) and numpy/scipy?

    python bench/bench_ops.py [--quick] [--json PATH] [--threads 1 2]

Times the best of repeated calls (float32), prints one row per
(op, shape, threads) with milliseconds, the effective bandwidth of gradvis
(bytes the op must read and write / time) and the peer/gradvis time ratios
(> 1 means gradvis is faster). The table is printed last.
"""
import argparse
import json
import platform
import time

import numpy as np

import gradvis
from bench_conv import warm_malloc
from gradvis import _core

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the benchmark still runs, without the torch column
    torch = None

try:
    import scipy.ndimage as ndi
except ImportError:
    ndi = None


def timeit(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    # Best of N: on a shared machine the median picks up other jobs' time slices.
    return float(np.min(ts)) * 1e3


# ---- numpy peers (vectorized, single-threaded) ---------------------------------------------
def np_max_pool(x, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf) if p else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(4, 5))


def np_max_pool_bwd(dout, am, shape):
    N, C, H, W = shape
    idx = am.reshape(N * C, -1) + (np.arange(N * C) * H * W)[:, None]
    return np.bincount(idx.ravel(), weights=dout.ravel(), minlength=N * C * H * W).reshape(shape)


def np_bn_fwd(x, g, b, eps):
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g[None, :, None, None] + b[None, :, None, None]


def np_bn_bwd(dout, x, g, mean, inv_std):
    M = x.shape[0] * x.shape[2] * x.shape[3]
    xhat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    db = dout.sum(axis=(0, 2, 3))
    dg = (dout * xhat).sum(axis=(0, 2, 3))
    dx = (g * inv_std)[None, :, None, None] * (dout - db[None, :, None, None] / M - xhat * dg[None, :, None, None] / M)
    return dx, dg, db


def torch_blur(xt, sigma):
    # Separable depthwise conv; torch has no scipy 'reflect' (half-sample) pad,
    # so its 'reflect' (whole-sample) stands in: same cost, slightly other border.
    w = torch.tensor(_gauss(sigma), dtype=xt.dtype)
    r = (len(w) - 1) // 2
    C = xt.shape[1]
    y = F.pad(xt, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, w.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(y, w.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _gauss(sigma, truncate=4.0):
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1)
    w = np.exp(-0.5 * t * t / sigma**2)
    return w / w.sum()


# Batch norm: the usual 112x112 image and the default net's layers at batch 64
# (bn1 .. bn7: 32..384 channels, 32x32 .. 4x4).
BN_SHAPES = [(1, 64, 112, 112), (64, 32, 32, 32), (64, 128, 16, 16), (64, 256, 8, 8), (64, 384, 4, 4)]


def bn_cases(rng, shape):
    """Train and test mode (running statistics), forward and backward. Test-mode
    backward is the input gradient only, which is what gradients with respect
    to an image need (Model.backward_inputs)."""
    f32 = np.float32
    C = shape[1]
    x = rng.standard_normal(shape).astype(f32)
    dout = rng.standard_normal(shape).astype(f32)
    g = rng.standard_normal(C).astype(f32)
    b = rng.standard_normal(C).astype(f32)
    rm = rng.standard_normal(C).astype(f32)
    rv = rng.uniform(0.5, 2.0, C).astype(f32)
    _, mean, var, inv_std = _core.batchnorm_forward_train(x, g, b, 1e-5)
    tf = tb = tfe = tbe = None
    if torch:
        xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
        gt, bt, rmt, rvt = (torch.from_numpy(a) for a in (g, b, rm, rv))
        tf = lambda: torch.ops.aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5)
        _, sm, si = torch.ops.aten.native_batch_norm(xt, gt, bt, None, None, True, 0.1, 1e-5)
        tb = lambda: torch.ops.aten.native_batch_norm_backward(dt, xt, gt, None, None, sm, si, True, 1e-5,
                                                               [True, True, True])
        tfe = lambda: torch.ops.aten.native_batch_norm(xt, gt, bt, rmt, rvt, False, 0.1, 1e-5)
        tbe = lambda: torch.ops.aten.native_batch_norm_backward(dt, xt, gt, rmt, rvt, None, None, False, 1e-5,
                                                                [True, False, False])
    scale = (g / np.sqrt(rv + np.float32(1e-5))).astype(f32)
    shift = (b - rm * scale).astype(f32)
    c4 = (None, slice(None), None, None)
    if hasattr(_core, "batchnorm_backward_test_input"):
        gv_bwd_test = lambda: _core.batchnorm_backward_test_input(dout, g, rv, 1e-5)
    else:  # older builds: the full backward (dx, dgamma, dbeta)
        gv_bwd_test = lambda: _core.batchnorm_backward_test(dout, x, g, rm, rv, 1e-5)
    return [
        ("batchnorm train fwd", shape, 2 * x.nbytes, lambda: _core.batchnorm_forward_train(x, g, b, 1e-5),
         tf, lambda: np_bn_fwd(x, g, b, 1e-5)),
        ("batchnorm train bwd", shape, 3 * x.nbytes,
         lambda: _core.batchnorm_backward_train(dout, x, g, mean, inv_std), tb,
         lambda: np_bn_bwd(dout, x, g, mean, inv_std)),
        ("batchnorm test fwd", shape, 2 * x.nbytes,
         lambda: _core.batchnorm_forward_test(x, g, b, rm, rv, 1e-5), tfe,
         lambda: x * scale[c4] + shift[c4]),
        ("batchnorm test bwd dx", shape, 2 * x.nbytes, gv_bwd_test, tbe, lambda: dout * scale[c4]),
    ]


# ---- cases ------------------------------------------------------------------------------------
def cases(rng):
    """(name, shape, bytes moved, gradvis fn, torch fn or None, numpy fn or None)."""
    out = []
    f32 = np.float32

    # VGG-sized maps, and the bundled model's second pool at batch 64 (8 windows a row)
    for k, s, p, shape in [(2, 2, 0, (1, 64, 112, 112)), (3, 2, 1, (1, 64, 112, 112)), (2, 2, 0, (64, 128, 16, 16))]:
        x = rng.standard_normal(shape).astype(f32)
        y, am = _core.max_pool2d_forward(x, k, s, p)
        dout = rng.standard_normal(y.shape).astype(f32)
        nbytes_f = x.nbytes + y.nbytes + am.nbytes
        nbytes_b = dout.nbytes + am.nbytes + x.nbytes
        xt = torch.from_numpy(x) if torch else None
        tf = tb = None
        if torch:
            tf = lambda xt=xt, k=k, s=s, p=p: F.max_pool2d(xt, k, s, p, return_indices=True)
            _, ti = F.max_pool2d(xt, k, s, p, return_indices=True)
            gt = torch.from_numpy(dout)
            tb = lambda gt=gt, xt=xt, ti=ti, k=k, s=s, p=p: torch.ops.aten.max_pool2d_with_indices_backward(
                gt, xt, [k, k], [s, s], [p, p], [1, 1], False, ti)
        out.append((f"max_pool {k}x{k}/{s} p{p} fwd", shape, nbytes_f,
                    lambda x=x, k=k, s=s, p=p: _core.max_pool2d_forward(x, k, s, p), tf,
                    lambda x=x, k=k, s=s, p=p: np_max_pool(x, k, s, p)))
        out.append((f"max_pool {k}x{k}/{s} p{p} bwd", shape, nbytes_b,
                    lambda d=dout, a=am, hw=shape[2:]: _core.max_pool2d_backward(d, a, hw), tb,
                    lambda d=dout, a=am, sh=shape: np_max_pool_bwd(d, a, sh)))

    shape = (1, 64, 112, 112)
    x = rng.standard_normal(shape).astype(f32)
    dout = rng.standard_normal(shape).astype(f32)
    xt, gt = (torch.from_numpy(x), torch.from_numpy(dout)) if torch else (None, None)
    out.append(("relu fwd", shape, 2 * x.nbytes, lambda: _core.relu_forward(x),
                (lambda: torch.relu(xt)) if torch else None, lambda: np.maximum(x, 0)))
    out.append(("relu bwd", shape, 3 * x.nbytes, lambda: _core.relu_backward(dout, x),
                (lambda: torch.ops.aten.threshold_backward(gt, xt, 0)) if torch else None,
                lambda: np.where(x > 0, dout, np.float32(0))))

    for shape in BN_SHAPES:
        out += bn_cases(rng, shape)

    for hw in (64, 224):
        shape = (1, 3, hw, hw)
        xb = rng.standard_normal(shape).astype(f32)
        xbt = torch.from_numpy(xb) if torch else None
        for sigma in (1.0, 2.5):
            out.append((f"gaussian_blur s={sigma}", shape, 2 * xb.nbytes,
                        lambda x=xb, s=sigma: _core.gaussian_blur(x, s),
                        (lambda xt=xbt, s=sigma: torch_blur(xt, s)) if torch else None,
                        (lambda x=xb, s=sigma: ndi.gaussian_filter(x, (0, 0, s, s), mode="reflect")) if ndi else None))
        out.append(("gaussian_blur_adj s=1.0", shape, 2 * xb.nbytes,
                    lambda x=xb: _core.gaussian_blur_adjoint(x, 1.0), None, None))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    warm_malloc()
    reps = 5 if args.quick else 25
    rng = np.random.default_rng(0)
    all_cases = cases(rng)
    rows = []
    for nt in args.threads:
        gradvis.set_num_threads(nt)
        if torch:
            torch.set_num_threads(nt)
        for name, shape, nbytes, fg, ft, fn in all_cases:
            tg = timeit(fg, reps)
            tt = timeit(ft, reps) if ft else None
            tn = timeit(fn, max(3, reps // 3)) if fn else None
            rows.append(dict(op=name, shape=list(shape), threads=nt, gradvis_ms=tg, torch_ms=tt, numpy_ms=tn,
                             gradvis_gbs=nbytes / tg / 1e6,
                             torch_over_gradvis=(tt / tg) if tt else None,
                             numpy_over_gradvis=(tn / tg) if tn else None))
    if args.json:
        meta = dict(machine=platform.machine(), processor=platform.processor(), simd=gradvis.simd_level(),
                    torch=torch.__version__ if torch else None, numpy=np.__version__, reps=reps)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=1)

    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
    head = f"{'op':<26}{'shape':<18}{'thr':>4}{'gradvis ms':>12}{'torch ms':>10}{'numpy ms':>10}{'GB/s':>7}" \
           f"{'torch/gv':>9}{'numpy/gv':>9}"
    print(f"simd={gradvis.simd_level()} openmp={gradvis.has_openmp()} reps={reps} (float32; ratio > 1: gradvis faster;"
          " numpy column is scipy.ndimage for the blur; torch blur uses whole-sample reflect)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['op']:<26}{'x'.join(map(str, r['shape'])):<18}{r['threads']:>4}{fmt(r['gradvis_ms']):>12}"
              f"{fmt(r['torch_ms']):>10}{fmt(r['numpy_ms']):>10}{fmt(r['gradvis_gbs'], 1):>7}"
              f"{fmt(r['torch_over_gradvis'], 2):>9}{fmt(r['numpy_over_gradvis'], 2):>9}")


if __name__ == "__main__":
    main()
