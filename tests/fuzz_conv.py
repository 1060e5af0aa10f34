"""Random convolution geometries for the kernel fuzz tests (tests/test_fuzz_conv.py).

``draw(seed)`` gives one case: a layer drawn from one of the kernel families the
engine chooses between (depthwise, 2-16 channels a group, 1x1 on small and large
maps, strided 1x1, 3x3 Winograd candidates, anything else), at an odd or real
size, batch, dtype, thread count and convolution algorithm. ``check(case)`` runs
every entry point of the compiled convolution on it (forward, with a ReLU, with a
fused activation and its input kept, with a residual sum, input gradient, input
gradient with an activation's backward, weight and bias gradients) against the
float64 reference of tests/reference_conv.py, and checks that the forward pass
and the input gradient give the same bits on 1 and 2 threads (or on a larger
team and 1 thread). It returns the list of what failed (empty: the case passed).

The bound on an entry's error is ``eps * (S + 0.01 max S)``, S the same pass on
|x|, |w| and |b| (the sum of the magnitudes of the terms: float32 rounding is a
fraction of it), eps 1e-4 in float32 and 1e-11 in float64. A kernel mistake (a
tap, a channel or a position missed or doubled) is a whole term or more, far
past it; Winograd's transforms round at the tile's scale, inside it.
"""
import numpy as np

import reference_conv as R
from gradvis import _core

KINDS = ("depthwise", "depthwise-net", "grouped", "pointwise", "pointwise-net", "pointwise-strided", "3x3",
         "any")
ACTS = ("none", "relu", "clamp", "silu", "hardswish")
MASKS = ("relu", "clamp", "silu", "hardswish")
ALGOS = ("auto", "direct", "winograd", "winograd2x2")
MAX_MACS = 3e7


def draw(seed):
    """The case of ``seed`` (a dict), or None when the drawn geometry has no output
    or is too large for the reference."""
    rng = np.random.default_rng(seed)
    kind = str(rng.choice(KINDS, p=[.2, .08, .15, .15, .07, .05, .15, .15]))
    n = int(rng.choice([1, 1, 1, 2, 3, 5, 16]))
    stride, dil, pad = (1, 1), (1, 1), (0, 0, 0, 0)
    if kind in ("depthwise", "depthwise-net"):
        c = int(rng.integers(1, 70)) if kind == "depthwise" else int(rng.choice([32, 96, 144, 192, 384, 576, 960]))
        groups, f = c, c * int(rng.choice([1, 1, 1, 2]))
        k = int(rng.choice([3, 5, 7, 1, 2, 4, 9]))
        kh, kw = (k, k) if rng.random() < .85 else (k, int(rng.integers(1, 8)))
        stride = (int(rng.choice([1, 1, 2, 2, 3])),) * 2
        if rng.random() < .15:
            dil = (int(rng.integers(2, 4)),) * 2
        h = (int(rng.choice([1, 2, 3, 5, 7, 8, 13, 14, 17, 28, 31, 56])) if kind == "depthwise"
             else int(rng.choice([7, 14, 28, 56, 112])))
        if kind == "depthwise-net":
            n = int(rng.choice([1, 1, 2]))
        w = h if rng.random() < .8 else int(rng.integers(1, 60))
        ph, pw = (kh - 1) * dil[0] // 2, (kw - 1) * dil[1] // 2
        pad = (ph, ph, pw, pw) if rng.random() < .8 else tuple(int(v) for v in rng.integers(0, 5, 4))
    elif kind == "grouped":
        cg, groups = int(rng.integers(2, 17)), int(rng.integers(1, 40))
        c, f = cg * groups, groups * int(rng.integers(1, 17))
        kh = kw = int(rng.choice([1, 3, 3, 3, 5]))
        stride = (int(rng.choice([1, 1, 2])),) * 2
        h = int(rng.choice([1, 3, 7, 14, 15, 28, 56]))
        w = h if rng.random() < .8 else int(rng.integers(1, 40))
        p = kh // 2
        pad = (p,) * 4 if rng.random() < .8 else tuple(int(v) for v in rng.integers(0, 4, 4))
    elif kind in ("pointwise", "pointwise-net"):
        groups, kh, kw = 1, 1, 1
        if kind == "pointwise":
            c, f = int(rng.integers(1, 200)), int(rng.integers(1, 200))
            h = int(rng.choice([1, 2, 4, 7, 9, 12, 14, 16, 18, 20, 28, 33]))
            w = h if rng.random() < .8 else int(rng.integers(1, 30))
        else:   # the 1x1 layers of real networks on 7x7 and 14x14 maps at batch 1
            c = int(rng.choice([96, 160, 256, 512, 960, 1024]))
            f = int(rng.choice([24, 64, 160, 320, 512, 1280, 2048]))
            n, h = 1, int(rng.choice([7, 14]))
            w = h
    elif kind == "pointwise-strided":
        groups, kh, kw = 1, 1, 1
        c, f = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        stride = (int(rng.choice([2, 3])),) * 2
        h = w = int(rng.integers(1, 40))
        if rng.random() < .3:
            pad = tuple(int(v) for v in rng.integers(0, 2, 4))
    elif kind == "3x3":
        groups, kh, kw = 1, 3, 3
        c, f = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        h = int(rng.choice([1, 2, 4, 6, 7, 8, 13, 14, 16, 28, 30]))
        w = h if rng.random() < .8 else int(rng.integers(1, 32))
        pad = (1, 1, 1, 1) if rng.random() < .8 else tuple(int(v) for v in rng.integers(0, 3, 4))
    else:
        kh, kw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        groups = int(rng.choice([1, 1, 2, 3, 4]))
        c, f = groups * int(rng.integers(1, 20)), groups * int(rng.integers(1, 20))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        pad = tuple(int(v) for v in rng.integers(0, 5, 4))
    oh = R.out_size(h, kh, stride[0], pad[0], pad[1], dil[0])
    ow = R.out_size(w, kw, stride[1], pad[2], pad[3], dil[1])
    if oh < 1 or ow < 1 or n * f * oh * ow * (c // groups) * kh * kw > MAX_MACS or n * c * h * w > 4e6:
        return None
    lo, hi = (0.0, 6.0) if rng.random() < .7 else (-0.5, 0.7)
    return dict(seed=int(seed), kind=kind, x=(n, c, h, w), w=(f, c // groups, kh, kw), stride=stride,
                padding=pad, dilation=dil, groups=groups,
                dtype=str(rng.choice(["float32"] * 6 + ["float64"])), threads=int(rng.choice([1, 2])),
                algo=str(rng.choice(ALGOS, p=[.67, .11, .11, .11])), bias=bool(rng.random() < .7),
                shift=bool(rng.random() < .2), act=str(rng.choice(ACTS)), mask=str(rng.choice(MASKS)),
                lo=lo, hi=hi, relu=bool(rng.random() < .5))


def _act(kind, z, lo, hi):
    if kind == "relu":
        return np.maximum(z, 0)
    if kind == "clamp":
        return np.clip(z, lo, hi)
    if kind == "silu":
        return z / (1 + np.exp(-z))
    if kind == "hardswish":
        return z * np.clip(z + 3, 0, 6) / 6
    return z


def _act_grad(kind, x, lo, hi):
    """The activation's derivative at x (its output for relu and clamp, whose masks
    compare in x's dtype, as the kernels do; its input for silu and hardswish)."""
    if kind == "relu":
        return (x > 0).astype(np.float64)
    if kind == "clamp":
        return ((x > x.dtype.type(lo)) & (x < x.dtype.type(hi))).astype(np.float64)
    x = x.astype(np.float64)
    if kind == "silu":
        s = 1 / (1 + np.exp(-x))
        return s * (1 + x * (1 - s))
    return np.where(x < -3, 0.0, np.where(x > 3, 1.0, (2 * x + 3) / 6))


def check(case, team=None):
    """The failures of every convolution entry point on ``case`` (see the module's
    docstring); leaves the thread count and algorithm as it found them. ``team``: run
    at that many threads instead of the case's, and compare the bits with 1 thread
    (a team of 3-8 splits the work as on a larger machine; oversubscribed here, it
    still has to give the same bits)."""
    rng = np.random.default_rng(case["seed"] + 10**6)
    dt = np.dtype(case["dtype"])
    eps = 1e-4 if dt == np.float32 else 1e-11
    (n, c, h, w), ws = case["x"], case["w"]
    geo = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    x = rng.standard_normal(case["x"]) + (3.0 if case["shift"] else 0.0)
    wt = rng.standard_normal(ws) / np.sqrt(ws[1] * ws[2] * ws[3])
    b = rng.standard_normal(ws[0]) if case["bias"] else None
    ref = R.conv2d_forward(x, wt, b, **geo)
    dout = rng.standard_normal(ref.shape)
    res = rng.standard_normal(ref.shape)
    scale = R.conv2d_forward(np.abs(x), np.abs(wt), None if b is None else np.abs(b), **geo)
    dx_ref, dw_ref, db_ref = R.conv2d_backward(dout, x, wt, **geo)
    dx_scale, dw_scale, _ = R.conv2d_backward(np.abs(dout), np.abs(x), np.abs(wt), **geo)
    xs, ws_, bs, ds = x.astype(dt), wt.astype(dt), None if b is None else b.astype(dt), dout.astype(dt)
    errors = []

    def expect(name, got, want, scale):
        got = np.asarray(got, np.float64)
        if got.shape != want.shape:
            errors.append(f"{name}: shape {got.shape}, expected {want.shape}")
            return
        bound = eps * (scale + 0.01 * float(scale.max()) + 1e-6)
        err = np.abs(got - want)
        if not np.isfinite(got).all() or (err > bound).any():
            i = np.unravel_index(np.argmax(np.where(np.isfinite(err), err / bound, np.inf)), want.shape)
            errors.append(f"{name}: {int((~(err <= bound)).sum())} of {err.size} entries off, worst at {i}: "
                          f"{got[i]!r} against {want[i]!r} (bound {bound[i]:.3g})")

    threads, algo = _core.get_num_threads(), _core.get_conv_algorithm()
    try:
        _core.set_num_threads(team or case["threads"])
        _core.set_conv_algorithm(case["algo"])
        out = _core.conv2d_forward(xs, ws_, bs, **geo)
        expect("forward", out, ref, scale)
        expect("forward with relu", _core.conv2d_forward(xs, ws_, bs, **geo, relu=True), np.maximum(ref, 0), scale)
        act, lo, hi = case["act"], case["lo"], case["hi"]
        got, pre = _core.conv2d_forward_act(xs, ws_, bs, **geo, activation=act, lo=lo, hi=hi, return_pre=True)
        expect(f"forward with {act}", got, _act(act, ref, lo, hi), 1.5 * scale)
        expect(f"forward with {act}: its input", pre, ref, scale)
        want = ref + res
        expect(f"forward with a residual (relu={case['relu']})",
               _core.conv2d_forward_add(xs, ws_, bs, res.astype(dt), **geo, relu=case["relu"]),
               np.maximum(want, 0) if case["relu"] else want, scale + np.abs(res))
        dx = _core.conv2d_backward_input(ds, ws_, (h, w), **geo)
        expect("input gradient", dx, dx_ref, dx_scale)
        mask = case["mask"]
        d = _act_grad(mask, xs, lo, hi)
        expect(f"input gradient through {mask}",
               _core.conv2d_backward_input_act(ds, ws_, xs, **geo, activation=mask, lo=lo, hi=hi),
               dx_ref * d, dx_scale * np.abs(d) * 1.01)
        gw, gb = _core.conv2d_backward_weight(ds, xs, ws[2:], **geo)
        expect("weight gradient", gw, dw_ref, dw_scale)
        expect("bias gradient", gb, db_ref, np.abs(dout).sum(axis=(0, 2, 3)))
        other = 1 if team else 3 - case["threads"]
        _core.set_num_threads(other)
        if not np.array_equal(out, _core.conv2d_forward(xs, ws_, bs, **geo), equal_nan=True):
            errors.append(f"forward: other bits on {other} thread(s)")
        if not np.array_equal(dx, _core.conv2d_backward_input(ds, ws_, (h, w), **geo), equal_nan=True):
            errors.append(f"input gradient: other bits on {other} thread(s)")
    finally:
        _core.set_num_threads(threads)
        _core.set_conv_algorithm(algo)
    return errors
