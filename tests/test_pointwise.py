"""The pointwise and layer-norm kernels (GELU both forms, erf, SiLU, sigmoid, the
per-channel scale, the residual add, layer normalization), forward and backward:
against the float64 references of reference_pointwise.py, central finite
differences, PyTorch autograd, at every SIMD level, on odd sizes, and with bad input."""
import os
import sys

import numpy as np
import pytest

import gradvis
from conftest import require_torch, run_at_simd_level
from gradvis import _core
from gradvis.nn import GELU, Add, Erf, LayerNorm, Mul, Scale

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_pointwise as ref  # noqa: E402

# lengths around the vector widths (4, 8, 16 floats) and a few that split over threads
SIZES = (1, 3, 7, 15, 16, 17, 31, 33, 100, 257, 40001)
F32_TOL = 2e-6     # elementwise, relative to max(|reference|, 1e-3) (float32: about 1e-7 each step)
F64_TOL = 1e-13


def close(got, want, tol, floor=1e-3):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want) / np.maximum(np.abs(want), floor)
    assert err.max() <= tol, f"worst relative error {err.max():.3g} at {want.reshape(-1)[err.argmax()]}"


def inputs(n, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(dtype)


UNARY = {   # name -> (forward, backward(dout, x), reference f, reference f')
    "gelu": (lambda x: _core.gelu_forward(x), lambda g, x: _core.gelu_backward(g, x),
             ref.gelu, ref.gelu_grad),
    "gelu_tanh": (lambda x: _core.gelu_forward(x, "tanh"), lambda g, x: _core.gelu_backward(g, x, "tanh"),
                  lambda x: ref.gelu(x, "tanh"), lambda x: ref.gelu_grad(x, "tanh")),
    "erf": (_core.erf_forward, _core.erf_backward, ref.erf, ref.erf_grad),
    "silu": (_core.silu_forward, _core.silu_backward, lambda x: x * ref.sigmoid(x), ref.silu_grad),
    "sigmoid": (_core.sigmoid_forward, None, ref.sigmoid, None),
    "hardswish": (_core.hardswish_forward, _core.hardswish_backward, ref.hardswish, ref.hardswish_grad),
}


def check_unary_kernels():
    """Every unary kernel at every size, float32 and float64, against the reference;
    run in this process and in children at the other SIMD levels."""
    for name, (fwd, bwd, rf, rdf) in UNARY.items():
        for n in SIZES:
            for dt, tol in ((np.float32, F32_TOL), (np.float64, F64_TOL)):
                x = inputs(n, dt, seed=n)
                out = fwd(x)
                assert out.dtype == dt and out.shape == x.shape
                close(out, rf(x.astype(np.float64)), tol)
                if bwd is not None:
                    g = inputs(n, dt, seed=n + 1, scale=1.0)
                    dx = bwd(g, x)
                    assert dx.dtype == dt
                    # gelu' = Phi + x phi cancels near x = -0.75: absolute error there
                    close(dx, g.astype(np.float64) * rdf(x.astype(np.float64)), tol, floor=1.0)
        # the tails, large and special values: same answer as the element would get mid-array
        x = np.array([0.0, -0.0, 1e-30, -1e-30, 0.49, 0.51, -0.51, 5.0, -5.0, 9.0, -9.0, 30.0, -30.0, 88.0, -88.0,
                      100.0, -100.0, 1e4, -1e4], np.float32)
        out = fwd(x)
        ref_out = rf(x.astype(np.float64))
        # relative to the value down to 1e-30 (the tails of Phi are relatively exact), except
        # where float32 rounding of x^2 moves exp(-x^2 / 2) by more than that
        close(out[np.abs(x) < 6], ref_out[np.abs(x) < 6], F32_TOL, floor=1e-30)
        close(out, ref_out, F32_TOL, floor=1e-6)
        assert np.isnan(fwd(np.array([np.nan] * 17, np.float32))).all()


def check_layernorm_kernels():
    rng = np.random.default_rng(3)
    cases = [((1, 96, 7, 7), 1, 2), ((2, 5, 1, 1), 1, 2), ((3, 17, 5, 3), 1, 2), ((1, 200, 9, 9), 1, 2),
             ((1, 768, 3, 5), 1, 2), ((2, 3, 4, 37), 3, 4), ((5, 16), 1, 2), ((2, 6, 5, 4), 2, 4),
             ((1, 1, 3, 3), 1, 2), ((2, 6, 5, 4), 1, 4), ((300, 24), 1, 2),
             ((1, 8, 48, 48), 1, 2), ((2, 40, 50, 50), 1, 2), ((1, 96, 30, 30), 1, 2)]   # tiles of 1024, 3+ a group
    for shape, begin, end in cases:
        R = int(np.prod(shape[begin:end]))
        for dt, tol in ((np.float32, 2e-5), (np.float64, 1e-12)):
            x = (rng.standard_normal(shape) * 2 + 0.5).astype(dt)
            for affine in (True, False):
                w = (rng.standard_normal(R) + 1).astype(dt) if affine else None
                b = rng.standard_normal(R).astype(dt) if affine else None
                out, mean, rstd = _core.layernorm_forward(x, w, b, begin, end, 1e-5)
                r_out, r_mean, r_rstd = ref.layernorm(x, w, b, begin, end, 1e-5)
                assert out.dtype == dt and mean.shape == r_mean.shape
                close(out, r_out, tol, floor=1.0)
                close(mean, r_mean, tol, floor=1.0)
                close(rstd, r_rstd, tol, floor=1.0)
                g = rng.standard_normal(shape).astype(dt)
                dx, dw, db = _core.layernorm_backward(g, x, mean, rstd, w, begin, end, affine)
                r_dx, r_dw, r_db = ref.layernorm_backward(g, x, w, begin, end, 1e-5)
                close(dx, r_dx, 5 * tol, floor=max(np.abs(r_dx).max(), 1.0))
                if affine:
                    close(dw, r_dw, 5 * tol, floor=max(np.abs(r_dw).max(), 1e-6))
                    close(db, r_db, 5 * tol, floor=max(np.abs(r_db).max(), 1e-6))
                else:
                    assert dw is None and db is None
    # groups of equal values normalize to exactly 0, their mean exactly their value
    # (as PyTorch's layer norm), whatever their count and a small eps; a mean far
    # from 0 beside a small spread keeps its digits
    for shape, begin, end in ((2, 48, 3, 5), 1, 2), ((3, 7, 37), 2, 3), ((2, 1000, 1, 1), 1, 2):
        for dt in (np.float32, np.float64):
            x = np.broadcast_to(rng.uniform(-3, 3, shape[:begin] + (1,) * (len(shape) - begin)), shape).astype(dt)
            out, mean, rstd = _core.layernorm_forward(x, None, None, begin, end, 1e-6)
            assert not out.any(), (shape, dt, np.abs(out).max())
        d = rng.standard_normal(shape) * 1e-4     # float64 at 1e4: a plain sum would lose 8 digits
        out, _, _ = _core.layernorm_forward(1e4 + d, None, None, begin, end, 1e-15)
        close(out, ref.layernorm((1e4 + d) - 1e4, None, None, begin, end, 1e-15)[0], 5e-8, floor=1.0)


def check_channel_scale_kernels():
    rng = np.random.default_rng(4)
    for shape in ((1, 1, 1, 1), (1, 5, 1, 1), (2, 7, 3, 5), (3, 32, 17, 9), (1, 96, 56, 56), (4, 3), (33, 70, 1, 1),
                  (300, 1153)):
        for dt, tol in ((np.float32, 2e-6), (np.float64, 1e-13)):
            x = rng.standard_normal(shape).astype(dt)
            N, C = shape[:2]
            for s in (rng.standard_normal(C), rng.standard_normal((1, C)), rng.standard_normal((N, C))):
                s = s.astype(dt)
                close(_core.channel_scale_forward(x, s), ref.channel_scale(x, s), tol, floor=1.0)
                g = rng.standard_normal(shape).astype(dt)
                dx, ds = _core.channel_scale_backward(g, x, s)
                r_dx, r_ds = ref.channel_scale_backward(g, x, s)
                assert ds.shape == s.shape
                close(dx, r_dx, tol, floor=1.0)
                close(ds, r_ds, 10 * tol, floor=np.abs(r_ds).max())
            a = rng.standard_normal(shape).astype(dt)
            np.testing.assert_array_equal(_core.add_forward(x, a), x + a)


def check_gelu_forms():
    """float32 GELU has two forms: a block of 16 elements (8 on AVX2) all within
    (-1, 1) takes a polynomial, others the erfc form. Both stay within 5e-7 of the
    exact values, forward and backward. Where exp(-x^2 / 2) would leave float32's
    normal range (|x| > 13) results are 0 or normal numbers, never subnormals
    (computing those is a microcode assist per instruction)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.9999, 0.9999, 4096).astype(np.float32)
    mixed = x.copy()
    mixed[::16] = 3.0   # every block holds a larger value: the erfc form
    g = rng.standard_normal(x.shape).astype(np.float32)
    for v in (x, mixed):
        v64 = v.astype(np.float64)
        close(_core.gelu_forward(v), ref.gelu(v64), 5e-7, floor=1e-30)
        close(_core.gelu_backward(g, v), g * ref.gelu_grad(v64), 5e-7, floor=1.0)
    # the two forms run: the values both arrays share round differently somewhere
    same = mixed == x
    assert not np.array_equal(_core.gelu_forward(x)[same], _core.gelu_forward(mixed)[same])
    big = np.concatenate([np.linspace(-200, 200, 4001), np.linspace(-14, -12, 4001)]).astype(np.float32)
    for fwd, rf in ((_core.gelu_forward, ref.gelu), (_core.erf_forward, ref.erf)):
        out = fwd(big)
        assert not ((out != 0) & (np.abs(out) < np.finfo(np.float32).tiny)).any()
        close(out, rf(big.astype(np.float64)), F32_TOL, floor=1e-6)


def check_hardswish_bits():
    """float32 HardSwish is PyTorch's expression, x * clamp(x + 3, 0, 6) / 6, and its
    backward dout * (x / 3 + 1/2) inside [-3, 3]: the kernels divide by 3 and 6 by a
    reciprocal and one correction, which must give the division's bits, zeros'
    signs, infinities, NaNs and quotients below the normal range included."""
    rng = np.random.default_rng(9)
    f32 = np.float32
    tiny = np.finfo(f32).tiny
    parts = [rng.standard_normal(20000) * s for s in (1, 3, 30, 1e4, 1e30)]
    parts += [rng.uniform(-4, 4, 20000), rng.uniform(-3 * tiny, 3 * tiny, 4000),
              np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3, -3, 1e-45, -1e-45, tiny, -tiny, 2 * tiny,
                        3.4e38, -3.4e38])]
    x = np.concatenate(parts).astype(f32)
    x[rng.integers(0, x.size, 300)] = tiny / 4    # vectors with a subnormal quotient among normal ones
    with np.errstate(invalid="ignore", over="ignore"):
        want = x * np.minimum(np.maximum(x + f32(3), f32(0)), f32(6)) / f32(6)
        g = rng.standard_normal(x.size).astype(f32)
        mid = g * (x / f32(3) + f32(0.5))
        want_b = np.where(x < -3, f32(0), np.where(x <= 3, mid, g))
    np.testing.assert_array_equal(_core.hardswish_forward(x).view(np.uint32)[~np.isnan(x)],
                                  want.view(np.uint32)[~np.isnan(x)])
    assert np.isnan(_core.hardswish_forward(x)[np.isnan(x)]).all()
    got_b = _core.hardswish_backward(g, x)
    np.testing.assert_array_equal(got_b.view(np.uint32)[~np.isnan(x)], want_b.view(np.uint32)[~np.isnan(x)])


def check_all():
    check_unary_kernels()
    check_gelu_forms()
    check_hardswish_bits()
    check_layernorm_kernels()
    check_channel_scale_kernels()


def test_kernels_match_reference():
    check_all()


SIMD_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
import test_pointwise
test_pointwise.check_all()
print("ok")
"""


@pytest.mark.parametrize("level", ["avx2", "scalar"])
def test_simd_paths(level):
    run_at_simd_level(level, SIMD_SCRIPT)


def test_float32_erf_matches_the_rational_form_closely():
    """float32 erf and GELU stay within about 1e-6 of the exact values over the range
    a network sees, so imported graphs keep their accuracy."""
    x = np.linspace(-8, 8, 200001).astype(np.float32)
    close(_core.erf_forward(x), ref.erf(x), 1e-6, floor=1e-2)
    close(_core.gelu_forward(x), ref.gelu(x), 1e-6, floor=1e-2)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_finite_differences(approximate):
    x = inputs(101, np.float64, seed=7)
    g = inputs(101, np.float64, seed=8, scale=1.0)
    h = 1e-6
    num = g * (_core.gelu_forward(x + h, approximate) - _core.gelu_forward(x - h, approximate)) / (2 * h)
    close(_core.gelu_backward(g, x, approximate), num, 1e-7, floor=1.0)
    num = g * (_core.erf_forward(x + h) - _core.erf_forward(x - h)) / (2 * h)
    close(_core.erf_backward(g, x), num, 1e-7, floor=1.0)


@pytest.mark.parametrize("begin, end, shape", [(1, 2, (2, 5, 3, 4)), (3, 4, (2, 3, 4, 6)), (1, 4, (1, 3, 2, 2))])
def test_layernorm_finite_differences(begin, end, shape):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    R = int(np.prod(shape[begin:end]))
    w, b = rng.standard_normal(R), rng.standard_normal(R)
    g = rng.standard_normal(shape)
    out, mean, rstd = _core.layernorm_forward(x, w, b, begin, end, 1e-5)
    dx, dw, db = _core.layernorm_backward(g, x, mean, rstd, w, begin, end, True)
    h = 1e-6

    def loss(x_, w_, b_):
        return (_core.layernorm_forward(x_, w_, b_, begin, end, 1e-5)[0] * g).sum()

    for i in rng.choice(x.size, 10, replace=False):
        e = np.zeros(x.size)
        e[i] = h
        e = e.reshape(shape)
        num = (loss(x + e, w, b) - loss(x - e, w, b)) / (2 * h)
        assert abs(num - dx.reshape(-1)[i]) <= 1e-6 * max(1.0, abs(num))
    for i in range(min(R, 5)):
        e = np.zeros(R)
        e[i] = h
        assert abs((loss(x, w + e, b) - loss(x, w - e, b)) / (2 * h) - dw[i]) <= 1e-6 * max(1.0, abs(dw[i]))
        assert abs((loss(x, w, b + e) - loss(x, w, b - e)) / (2 * h) - db[i]) <= 1e-6 * max(1.0, abs(db[i]))


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 96, 56, 56)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    s = rng.standard_normal(96).astype(np.float32)
    rows = x.reshape(-1, 96)
    grow = g.reshape(-1, 96)

    def run():
        out, m, r = _core.layernorm_forward(x, w, b, 1, 2)
        out2, m2, r2 = _core.layernorm_forward(rows, w, b, 1, 2)
        return (out, _core.layernorm_backward(g, x, m, r, w, 1, 2, True),
                _core.layernorm_backward(grow, rows, m2, r2, w, 1, 2, True),
                _core.gelu_forward(x), _core.gelu_backward(g, x, "tanh"), _core.channel_scale_backward(g, x, s))

    n0 = gradvis.get_num_threads()
    try:
        gradvis.set_num_threads(1)
        one = run()
        gradvis.set_num_threads(2)
        two = run()
    finally:
        gradvis.set_num_threads(n0)

    def flat(t):
        return [a for v in t for a in (flat(v) if isinstance(v, tuple) else [v]) if a is not None]

    for a, c in zip(flat(one), flat(two)):
        np.testing.assert_array_equal(a, c)


# ---- the layers ------------------------------------------------------------------
def run_layer(layer, xs, params, dout):
    out, cache = layer.forward(xs, params, {}, "test", None)
    dins, dparams = layer.backward(dout, cache)
    return out, dins, dparams


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("gate_n", [1, 3])
def test_mul_gate_matches_numpy_broadcast(swap, gate_n):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 8, 5, 7)).astype(np.float32)
    s = rng.standard_normal((gate_n, 8, 1, 1)).astype(np.float32)
    xs = [s, a] if swap else [a, s]
    g = rng.standard_normal(a.shape).astype(np.float32)
    out, dins, _ = run_layer(Mul(), xs, {}, g)
    close(out, a.astype(np.float64) * s, 1e-6, floor=1.0)
    ds = (g.astype(np.float64) * a).sum(axis=(2, 3), keepdims=True)
    ds = ds.sum(0, keepdims=True) if gate_n == 1 else ds
    da, dsg = (dins[1], dins[0]) if swap else (dins[0], dins[1])
    assert dsg.shape == s.shape and da.shape == a.shape
    close(da, g.astype(np.float64) * s, 1e-6, floor=1.0)
    close(dsg, ds, 1e-5, floor=np.abs(ds).max())


def test_scale_and_add_layers():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 4, 5))
    layer = Scale((6, 1, 1))
    s = rng.standard_normal((6, 1, 1))
    g = rng.standard_normal(x.shape)
    out, dins, dparams = run_layer(layer, [x], {"scale": s}, g)
    close(out, x * s, 1e-14, floor=1.0)
    close(dins[0], g * s, 1e-14, floor=1.0)
    close(dparams["scale"], (g * x).sum(axis=(0, 2, 3)).reshape(6, 1, 1), 1e-13, floor=1.0)
    close(layer.backward_inputs(g, layer.forward([x], {"scale": s}, {}, "test", None)[1])[0], g * s, 1e-14)
    y = rng.standard_normal(x.shape)
    out, dins, _ = run_layer(Add(), [x, y], {}, g)
    np.testing.assert_array_equal(out, x + y)
    assert all(d is g for d in dins)


@pytest.mark.parametrize("axes, shape, pshape", [
    ((1,), (2, 6, 5, 4), (6, 1, 1)), ((3,), (2, 6, 5, 4), (4,)), ((2, 3), (2, 6, 5, 4), (5, 4)),
    ((1,), (2, 6, 5, 4), (1, 1, 1)), ((1, 3), (2, 6, 5, 4), (6, 1, 4)), ((3,), (2, 6, 5, 4), (5, 1))])
def test_layernorm_layer_kernel_and_numpy_paths_agree(axes, shape, pshape):
    """Layouts the kernel takes (consecutive axes, parameters along them) and those
    that take the numpy path (axes (1, 3); a weight varying along H) give the float64
    reference's values and gradients."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(pshape), rng.standard_normal(pshape)
    g = rng.standard_normal(shape)
    layer = LayerNorm(axes, pshape)
    out, dins, dparams = run_layer(layer, [x], {"weight": w, "bias": b}, g)
    mu = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + 1e-5)
    xhat = (x - mu) * rstd
    close(out, xhat * w + b, 1e-12, floor=1.0)
    gw = g * w
    r_dx = rstd * (gw - gw.mean(axis=axes, keepdims=True) - xhat * (gw * xhat).mean(axis=axes, keepdims=True))
    close(dins[0], r_dx, 1e-11, floor=1.0)
    lead = len(shape) - 1 - len(pshape)

    def reduce(t):
        t = t.sum(axis=tuple(range(1 + lead)))
        keep = tuple(i for i, n in enumerate(pshape) if n == 1)
        return t.sum(axis=keep, keepdims=True) if keep else t

    close(dparams["weight"], reduce(g * xhat), 1e-11, floor=1.0)
    close(dparams["bias"], reduce(g), 1e-11, floor=1.0)
    cache = layer.forward([x], {"weight": w, "bias": b}, {}, "test", None)[1]
    close(layer.backward_inputs(g, cache)[0], r_dx, 1e-11, floor=1.0)


# ---- against PyTorch autograd ------------------------------------------------------
def torch_grad(fn, x, g, *params):
    torch = require_torch()
    xt = torch.from_numpy(x).requires_grad_(True)
    pt = [torch.from_numpy(p).requires_grad_(True) for p in params]
    out = fn(xt, *pt)
    grads = torch.autograd.grad((out * torch.from_numpy(g)).sum(), [xt] + pt)
    return out.detach().numpy(), [t.numpy() for t in grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "hardswish"])
def test_activations_match_torch(name, dtype):
    """Forward and input gradient against torch autograd (in float64: float32 results
    are judged against the exact values)."""
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(10)
    x = (rng.standard_normal((2, 7, 9, 11)) * 3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tf = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
          "hardswish": F.hardswish}[name]
    # float32 against torch's float64 pass: torch's own float32 GELU is off by up to 7e-7
    t_out, (t_dx,) = torch_grad(tf, x.astype(np.float64), g.astype(np.float64))
    if name.startswith("gelu"):
        layer = GELU("tanh" if name == "gelu_tanh" else "none")
        out, dins, _ = run_layer(layer, [x], {}, g)
        dx = dins[0]
    else:
        out = getattr(_core, f"{name}_forward")(x)
        dx = getattr(_core, f"{name}_backward")(g, x)
    tol = 4e-6 if dtype == np.float32 else 1e-12
    assert out.dtype == dtype and dx.dtype == dtype
    close(out, t_out, tol, floor=1e-2)
    close(dx, t_dx, tol, floor=1.0)      # gelu' cancels near x = -0.75


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["channels", "last"])
def test_layernorm_matches_torch(form, dtype):
    torch = require_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    C = 24
    x = (rng.standard_normal((2, C, 7, 5)) * 2 + 1).astype(dtype)
    if form == "last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    if form == "channels":
        layer = LayerNorm((1,), (C, 1, 1), 1e-6)
        params = {"weight": w.reshape(C, 1, 1), "bias": b.reshape(C, 1, 1)}
        tf = lambda t, w_, b_: F.layer_norm(t.permute(0, 2, 3, 1), (C,), w_, b_, 1e-6).permute(0, 3, 1, 2)  # noqa
    else:
        layer = LayerNorm((3,), (C,), 1e-6)
        params = {"weight": w, "bias": b}
        tf = lambda t, w_, b_: F.layer_norm(t, (C,), w_, b_, 1e-6)  # noqa: E731
    t_out, (t_dx, t_dw, t_db) = torch_grad(tf, x, g, w, b)
    out, dins, dparams = run_layer(layer, [x], params, g)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    close(out, t_out, tol, floor=1.0)
    close(dins[0], t_dx, tol, floor=np.abs(t_dx).max())
    close(dparams["weight"].reshape(-1), t_dw, tol, floor=np.abs(t_dw).max())
    close(dparams["bias"].reshape(-1), t_db, tol, floor=np.abs(t_db).max())


# ---- bad input -------------------------------------------------------------------
@pytest.mark.parametrize("call, exc, match", [
    (lambda: _core.gelu_forward(np.zeros(3, np.int32)), TypeError, "x must be float32 or float64"),
    (lambda: _core.gelu_forward(np.zeros(3, np.float32), "erf"), ValueError, "approximate"),
    (lambda: _core.gelu_backward(np.zeros(3), np.zeros(4)), ValueError, "dout shape"),
    (lambda: _core.erf_forward(np.zeros(0, np.float32)), ValueError, "x is empty"),
    (lambda: _core.erf_backward(np.zeros(3, np.complex64), np.zeros(3)), TypeError, "dout"),
    (lambda: _core.add_forward(np.zeros(3), np.zeros(4)), ValueError, "a shape"),
    (lambda: _core.channel_scale_forward(np.zeros((2, 3, 4)), np.zeros(4)), ValueError, "s must be"),
    (lambda: _core.channel_scale_forward(np.zeros(3), np.zeros(3)), ValueError, "x must be"),
    (lambda: _core.channel_scale_backward(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(3)), ValueError, "x shape"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3, 4)), np.zeros(4)), ValueError, "weight must have shape"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3, 4)), None, np.zeros(2), 1, 2), ValueError, "bias"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3)), None, None, 2), ValueError, "begin"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3)), None, None, 1, None, -1.0), ValueError, "eps"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3), np.int64)), TypeError, "x must be float32"),
    (lambda: _core.layernorm_backward(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3), np.zeros(2)),
     ValueError, "mean must have shape"),
    (lambda: _core.layernorm_backward(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2), np.zeros(2)),
     ValueError, "x shape"),
])
def test_bad_input_is_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_erf_layer_keeps_dtype():
    for dt in (np.float32, np.float64):
        x = np.linspace(-3, 3, 24).reshape(1, 2, 3, 4).astype(dt)
        out, dins, _ = run_layer(Erf(), [x], {}, np.ones_like(x))
        assert out.dtype == dt and dins[0].dtype == dt
        close(out, ref.erf(x), 1e-6 if dt == np.float32 else 1e-15, floor=1e-2)


SAME_BITS_SCRIPT = r"""
import sys
import numpy as np
from gradvis import _core
assert _core.simd_level() == {level!r}, _core.simd_level()
x = np.load(sys.argv[1])
g = np.random.default_rng(12).standard_normal(x.size).astype(np.float32)
np.save(sys.argv[2], np.stack([_core.sigmoid_forward(x), _core.silu_forward(x), _core.silu_backward(g, x)]))
print("ok")
"""


def test_sigmoid_and_silu_bits_agree_across_simd_levels(tmp_path):
    """The float32 sigmoid, SiLU and SiLU's gradient give the same bits at AVX2 as
    at AVX-512 (the same reduction, rounding and polynomial; NaN stays NaN): a
    model's outputs do not change with the machine's vector width. Random bit
    patterns, normal and uniform values, the clamp's edges, and every float32
    where exp leaves the normal range (|x| in [87, 90]: AVX2 adds the power of two
    to the exponent bits and sets inf from 88.72284, AVX-512 scales)."""
    import subprocess
    import gradvis
    if gradvis.simd_level() != "avx512":
        pytest.skip("needs an AVX-512 CPU to compare with")
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, 1 << 18, dtype=np.uint32).view(np.float32)
    # -0x1.25e4f8p+4: x log2(e) within rounding of a half-integer, where a rounding
    # fused into a multiply-add once chose the other integer at AVX2 (an ulp off)
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -87.33, -87.34, 88.7, 88.8, 89.0, 89.5, -89.0, 1e-40,
                      3e38, -3e38, float.fromhex("-0x1.25e4f8p+4")], np.float32)
    lo, hi = np.float32(87.0).view(np.int32), np.float32(90.0).view(np.int32)
    dense = np.arange(lo, hi, dtype=np.int32).view(np.float32)
    x = np.concatenate([bits, (rng.standard_normal(1 << 18) * 30).astype(np.float32),
                        rng.uniform(-100, 100, 1 << 18).astype(np.float32), edges, dense, -dense])
    np.save(tmp_path / "x.npy", x)
    got = {}
    for level in ("avx512", "avx2"):
        env = dict(os.environ, GRADVIS_SIMD=level)
        out = tmp_path / f"{level}.npy"
        res = subprocess.run([sys.executable, "-c", SAME_BITS_SCRIPT.format(level=level), str(tmp_path / "x.npy"),
                              str(out)], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
        got[level] = np.load(out)
    a, b = got["avx512"], got["avx2"]
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.array_equal(a.view(np.uint32)[~np.isnan(a)], b.view(np.uint32)[~np.isnan(b)])
