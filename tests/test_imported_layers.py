"""The layers imported graphs use beyond the CS231n set (LayerNorm, GELU, Erf, Pow,
Sqrt, Neg, Abs, Exp, Transpose, Reshape, Slice, GatherND, Resize (nearest, linear,
cubic, by scales), Reduce, Softmax, LogSoftmax, MatMul, Concat on any axis): forward
and backward in float32 and float64 against PyTorch autograd, float64 gradients
against central finite differences, and a save/load round trip."""
import math

import numpy as np
import pytest

import gradvis
from conftest import require_torch
from helpers import rel_err
from gradvis.nn import (GELU, Abs, BatchMatMul, Concat, Erf, Exp, GatherND, LayerNorm, LogSoftmax, MatMul, Model, Neg, Pow,
                        Reduce, Reshape, Resize, Slice, Softmax, Sqrt, Transpose)
from gradvis.nn.pointwise import erf


def cases():
    """(id, layer, input shape, params {name: shape}, torch function, input transform)."""
    F = lambda: require_torch().nn.functional   # noqa: E731
    T = require_torch
    return [
        ("gelu", GELU(), (2, 6, 5, 4), {}, lambda t: F().gelu(t), None),
        ("gelu_tanh", GELU("tanh"), (2, 6, 5, 4), {}, lambda t: F().gelu(t, approximate="tanh"), None),
        ("erf", Erf(), (2, 6, 5, 4), {}, lambda t: T().erf(t), None),
        ("pow3", Pow(3.0), (2, 6, 5, 4), {}, lambda t: t ** 3, None),
        ("pow_half", Pow(0.5), (2, 6, 5, 4), {}, lambda t: t ** 0.5, np.abs),
        ("sqrt", Sqrt(), (2, 6, 5, 4), {}, lambda t: T().sqrt(t), lambda x: np.abs(x) + 0.2),
        ("neg", Neg(), (2, 6, 5, 4), {}, lambda t: -t, None),
        ("abs", Abs(), (2, 6, 5, 4), {}, lambda t: T().abs(t), None),
        ("exp", Exp(), (2, 6, 5, 4), {}, lambda t: T().exp(t), None),
        ("layernorm_channels", LayerNorm((1,), (6, 1, 1), 1e-6), (2, 6, 5, 4), {"weight": (6, 1, 1), "bias": (6, 1, 1)},
         lambda t, weight, bias: F().layer_norm(t.permute(0, 2, 3, 1), (6,), weight.reshape(6), bias.reshape(6),
                                                1e-6).permute(0, 3, 1, 2), None),
        ("layernorm_last", LayerNorm((3,), (4,)), (2, 6, 5, 4), {"weight": (4,), "bias": (4,)},
         lambda t, weight, bias: F().layer_norm(t, (4,), weight, bias), None),
        ("layernorm_trailing", LayerNorm((2, 3), (5, 4)), (2, 6, 5, 4), {"weight": (5, 4), "bias": (5, 4)},
         lambda t, weight, bias: F().layer_norm(t, (5, 4), weight, bias), None),
        ("transpose", Transpose((0, 2, 3, 1)), (2, 6, 5, 4), {}, lambda t: t.permute(0, 2, 3, 1), None),
        ("shuffle", Transpose((0, 2, 1, 3, 4)), (2, 2, 3, 5, 4), {}, lambda t: t.transpose(1, 2), None),
        ("reshape", Reshape((2, 3, 20)), (2, 6, 5, 4), {}, lambda t: t.reshape(2, 2, 3, 20), None),
        ("slice_channels", Slice((1,), (2,), (None,)), (2, 6, 5, 4), {}, lambda t: t[:, 2:], None),
        ("slice_steps", Slice((1, 3), (1, 3), (None, 0), (2, -2)), (2, 6, 5, 4), {},
         lambda t: t[:, 1::2][..., [3, 1]], None),
        ("resize_nearest", Resize((10, 8), "nearest", "asymmetric", "floor"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(10, 8), mode="nearest"), None),
        ("resize_bilinear", Resize((9, 7), "linear", "half_pixel"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(9, 7), mode="bilinear", align_corners=False), None),
        ("resize_align_corners", Resize((9, 7), "linear", "align_corners"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(9, 7), mode="bilinear", align_corners=True), None),
        ("resize_down", Resize((3, 3), "linear", "half_pixel"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(3, 3), mode="bilinear", align_corners=False), None),
        ("resize_cubic", Resize((9, 7), "cubic", "half_pixel"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(9, 7), mode="bicubic", align_corners=False), None),
        ("resize_cubic_align_corners", Resize((4, 11), "cubic", "align_corners"), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, size=(4, 11), mode="bicubic", align_corners=True), None),
        ("resize_cubic_down", Resize((3, 2), "cubic", "half_pixel"), (2, 3, 7, 5), {},
         lambda t: F().interpolate(t, size=(3, 2), mode="bicubic", align_corners=False), None),
        ("resize_scale_factor", Resize((7, 6), "linear", "half_pixel", scales=(1.5, 1.5)), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, scale_factor=1.5, mode="bilinear", align_corners=False), None),
        ("resize_cubic_scale_factor", Resize((3, 2), "cubic", "half_pixel", scales=(0.7, 0.7)), (2, 3, 5, 4), {},
         lambda t: F().interpolate(t, scale_factor=0.7, mode="bicubic", align_corners=False), None),
        # adaptive pooling's windows of a 5x4 map (pixels shared by two windows, a repeated one)
        ("gathernd_windows", GatherND((2, 3), GATHER_IDX), (2, 3, 5, 4), {},
         lambda t: t[:, :, GATHER_IDX[..., 0], GATHER_IDX[..., 1]].permute(0, 2, 3, 1), None),
        ("gathernd_one_axis", GatherND((1,), np.array([[2], [0], [2]])), (2, 3, 5, 4), {},
         lambda t: t[:, [2, 0, 2]], None),
        ("reduce_mean", Reduce("mean", (2, 3), False), (2, 6, 5, 4), {}, lambda t: t.mean((2, 3)), None),
        ("reduce_sum", Reduce("sum", (1,), True), (2, 6, 5, 4), {}, lambda t: t.sum(1, keepdim=True), None),
        ("reduce_max", Reduce("max", (1, 3), True), (2, 6, 5, 4), {}, lambda t: t.amax((1, 3), keepdim=True), None),
        ("reduce_l2", Reduce("l2", (2, 3), True), (2, 6, 5, 4), {},
         lambda t: T().linalg.vector_norm(t, 2, (2, 3), keepdim=True), None),
        ("reduce_l1", Reduce("l1", (1,), False), (2, 6, 5, 4), {}, lambda t: t.abs().sum(1), None),
        ("reduce_sum_square", Reduce("sum_square", (1, 2, 3), True), (2, 6, 5, 4), {},
         lambda t: (t * t).sum((1, 2, 3), keepdim=True), None),
        ("softmax", Softmax(1), (2, 6, 5, 4), {}, lambda t: T().softmax(t, 1), None),
        ("log_softmax", LogSoftmax(3), (2, 6, 5, 4), {}, lambda t: T().log_softmax(t, 3), None),
        ("matmul_last", MatMul(4, 7, -1, bias=True), (2, 6, 5, 4), {"weight": (4, 7), "bias": (7,)},
         lambda t, weight, bias: t @ weight + bias, None),
        ("matmul_channels", MatMul(6, 3, 1), (2, 6, 5, 4), {"weight": (6, 3)},
         lambda t, weight: T().einsum("nchw,cm->nmhw", t, weight), None),
    ]


GATHER_IDX = np.array([[[0, 0], [1, 1], [2, 1]], [[2, 2], [3, 3], [4, 3]], [[4, 0], [4, 0], [0, 3]]])
CASES = {c[0]: c for c in cases()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_autograd(case, dtype):
    torch = require_torch()
    _, layer, shape, pshapes, fn, tf = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    x = rng.standard_normal(shape) * 1.5
    x = tf(x) if tf else x
    params = {k: rng.standard_normal(s) for k, s in pshapes.items()}
    out, cache = layer.forward([x.astype(dtype)], {k: v.astype(dtype) for k, v in params.items()}, {},
                               "test", None)
    assert out.dtype == dtype and out.shape[1:] == tuple(layer.output_shape([shape[1:]]))
    R = rng.standard_normal(out.shape)
    dx, dp = layer.backward(R.astype(dtype), cache)
    assert dx[0].dtype == dtype and dx[0].shape == x.shape
    tx = torch.tensor(x, requires_grad=True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    (fn(tx, **tp) * torch.tensor(R)).sum().backward()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    ref = fn(tx.detach(), **{k: v.detach() for k, v in tp.items()}).numpy()
    assert rel_err(out, ref) < tol
    assert rel_err(dx[0], tx.grad.numpy()) < tol
    assert set(dp) == set(tp)
    for k in tp:
        assert dp[k].shape == params[k].shape and rel_err(dp[k], tp[k].grad.numpy()) < tol
    assert rel_err(layer.backward_inputs(R.astype(dtype), cache)[0], dx[0]) == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case):
    _, layer, shape, pshapes, _, tf = CASES[case]
    rng = np.random.default_rng(100 + sorted(CASES).index(case))
    x = rng.standard_normal(shape) * 1.5
    x = tf(x) if tf else x
    if layer.type == "Reduce" and layer.op == "max":
        x = x + np.arange(x.size).reshape(x.shape) * 1e-3   # no ties within the step
    params = {k: rng.standard_normal(s) for k, s in pshapes.items()}
    out, cache = layer.forward([x], params, {}, "test", None)
    R = rng.standard_normal(out.shape)
    dx = layer.backward(R, cache)[0][0]
    h = 1e-6
    flat = x.reshape(-1)
    for i in rng.choice(flat.size, size=min(12, flat.size), replace=False):
        xp, xm = flat.copy(), flat.copy()
        xp[i] += h
        xm[i] -= h
        fp = (layer.forward([xp.reshape(x.shape)], params, {}, "test", None)[0] * R).sum()
        fm = (layer.forward([xm.reshape(x.shape)], params, {}, "test", None)[0] * R).sum()
        num = (fp - fm) / (2 * h)
        assert abs(num - dx.reshape(-1)[i]) <= 1e-6 * max(1.0, abs(num)), (case, i, num, dx.reshape(-1)[i])


def test_erf_is_exact_in_float64():
    """erf of a float64 array agrees with math.erf to ~1 ulp; float32 stays float32."""
    x = np.concatenate([np.linspace(-7, 7, 5001), [0.0, -0.0, 3.0, -3.0, 1e-300, 30.0, -np.inf, np.inf]])
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - ref).max() < 3e-15
    assert erf(np.float32([0.5])).dtype == np.float32


@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 5, 6)), ((2, 1, 4, 5), (2, 3, 5, 2)),
                                    ((2, 3, 4, 5), (2, 1, 5, 6)), ((2, 7, 3), (2, 3, 7))])
def test_batch_matmul_of_two_activations_matches_torch(shapes):
    """a @ b per sample, the axes between broadcast (attention's heads against a
    shared operand): values and both gradients, float64 against torch.matmul's and
    float32 to rounding."""
    torch = require_torch()
    rng = np.random.default_rng(sum(map(sum, shapes)))
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    layer = BatchMatMul()
    out, cache = layer.forward([a, b], {}, {}, "test", None)
    assert out.shape[1:] == layer.output_shape([a.shape[1:], b.shape[1:]])
    dout = rng.standard_normal(out.shape)
    da, db = layer.backward(dout, cache)[0]
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    yt = torch.matmul(at, bt)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(da, at.grad.numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-13, atol=1e-13)
    out32, cache32 = layer.forward([a.astype(np.float32), b.astype(np.float32)], {}, {}, "test", None)
    assert out32.dtype == np.float32 and rel_err(out32, out) < 1e-5
    assert all(g.dtype == np.float32 for g in layer.backward(dout.astype(np.float32), cache32)[0])


def test_concat_with_constant_parts_trains_them_and_saves(tmp_path):
    """Concat(axis, constants={position: shape}): parameters joined among the inputs
    for every sample (a class token before the patch tokens); the inputs' gradients
    are their slices, the constants' the slices summed over the batch."""
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 2, 4))
    layer = Concat(1, {0: (1, 4), 2: (2, 4)})
    params = {"const0": rng.standard_normal((1, 4)), "const2": rng.standard_normal((2, 4))}
    out, cache = layer.forward([x, y], params, {}, "test", None)
    want = np.concatenate([np.broadcast_to(params["const0"], (3, 1, 4)), x,
                           np.broadcast_to(params["const2"], (3, 2, 4)), y], axis=1)
    np.testing.assert_array_equal(out, want)
    assert layer.output_shape([x.shape[1:], y.shape[1:]]) == out.shape[1:] == (10, 4)
    dout = rng.standard_normal(out.shape)
    dins, dparams = layer.backward(dout, cache)
    np.testing.assert_array_equal(dins[0], dout[:, 1:6])
    np.testing.assert_array_equal(dins[1], dout[:, 8:])
    np.testing.assert_allclose(dparams["const0"], dout[:, :1].sum(0), rtol=1e-15)
    np.testing.assert_allclose(dparams["const2"], dout[:, 6:8].sum(0), rtol=1e-15)
    assert Concat(**layer.config()).constants == layer.constants and "2 constants" in layer.describe()
    assert Concat(2).config() == {"axis": 2}
    m = Model(input_shape=(5, 4, 3))
    m.add("cat", Concat(1, {0: (1, 4, 3)}), inputs=["input"])
    m.params["cat.const0"] = rng.standard_normal((1, 4, 3)).astype(np.float32)
    back = gradvis.load_model(m.save(tmp_path / "m.npz"))
    X = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(X)[0], m.forward(X)[0])
    with pytest.raises(ValueError, match="constant positions"):
        Concat(1, {3: (1, 4)}).output_shape([(5, 4)])


def test_batch_matmul_refuses_shapes_it_cannot_multiply():
    layer = BatchMatMul()
    with pytest.raises(ValueError, match="inner sizes differ"):
        layer.output_shape([(3, 4, 5), (3, 4, 5)])
    with pytest.raises(ValueError, match="as many axes"):
        layer.output_shape([(3, 4, 5), (5, 2)])
    with pytest.raises(ValueError, match="do not broadcast"):
        layer.output_shape([(3, 4, 5), (2, 5, 2)])


def test_layers_save_and_load_in_model_files(tmp_path):
    """Every new layer type is in the registry: a model using them round-trips through
    the .npz format and computes the same."""
    rng = np.random.default_rng(1)
    m = Model(input_shape=(6, 5, 4), seed=0)
    m.add("ln", LayerNorm((1,), (6, 1, 1), 1e-6)).add("gelu", GELU()).add("t", Transpose((0, 2, 3, 1)))
    m.add("mm", MatMul(6, 8, -1, bias=True)).add("erf", Erf()).add("back", Transpose((0, 3, 1, 2)))
    m.add("up", Resize((10, 8), "linear", "half_pixel")).add("cut", Slice((1, 3), (0, 1), (4, None), (1, 2)))
    m.add("sq", Pow(2.0)).add("rt", Sqrt()).add("neg", Neg()).add("abs", Abs()).add("exp", Exp())
    m.add("r", Reshape((4, 10, 4))).add("sm", Softmax(2)).add("lsm", LogSoftmax(1))
    m.add("rc", Resize((5, 3), "cubic", "align_corners", cubic_coeff_a=-0.5, exclude_outside=True,
                       scales=(1.3, 0.8)))
    m.add("g", GatherND((2,), [[1], [0], [3]])).add("cat", Concat(2), inputs=["g", "g"])
    m.add("catT", Transpose((0, 1, 3, 2)), inputs=["cat"]).add("bmm", BatchMatMul(), inputs=["cat", "catT"])
    m.add("red", Reduce("max", (2, 3), keepdims=False))
    for k in m.params:
        m.params[k] = rng.standard_normal(m.params[k].shape).astype(np.float32) * 0.5
    X = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    path = m.save(tmp_path / "m.npz")
    m2 = gradvis.load_model(path)
    assert [n.layer.config() for n in m2.nodes] == [n.layer.config() for n in m.nodes]
    np.testing.assert_array_equal(m.forward(X)[0], m2.forward(X)[0])


def test_l2_norm_of_a_zero_plane_passes_no_gradient_as_torch():
    torch = require_torch()
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 4))
    x[1, 2] = 0.0
    layer = Reduce("l2", (2, 3))
    out, cache = layer.forward([x], {}, {}, "test", None)
    dout = np.ones_like(out)
    dx = layer.backward(dout, cache)[0][0]
    xt = torch.tensor(x, requires_grad=True)
    torch.linalg.vector_norm(xt, 2, (2, 3), keepdim=True).backward(torch.tensor(dout))
    assert np.isfinite(dx).all() and not dx[1, 2].any()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-13)


@pytest.mark.parametrize("make, match", [
    (lambda: GELU("erf"), "approximate"),
    (lambda: LayerNorm((0,), (3,)), "axes"),
    (lambda: LayerNorm((1,), (3,), eps=float("nan")), "eps"),
    (lambda: Transpose((1, 0, 2)), "batch axis"),
    (lambda: Reshape((0, 3)), "Reshape: shape"),
    (lambda: Slice((1,), (0,), (2,), (0,)), "step"),
    (lambda: Resize((4, 4), "bicubic"), "mode"),
    (lambda: Resize((4, 4), "cubic", cubic_coeff_a=float("nan")), "cubic_coeff_a"),
    (lambda: Resize((4, 4), scales=(2, 0)), "scales"),
    (lambda: GatherND((0, 1), [[0, 1]]), "axes"),
    (lambda: GatherND((1, 2), [[0, -1]]), ">= 0"),
    (lambda: GatherND((1, 2), [[0.5, 1]]), "integer"),
    (lambda: GatherND((1, 2), [[0, 1, 2]]), "shape"),
    (lambda: Concat(0), "axis"),
    (lambda: Reduce("prod", (1,)), "op"),
    (lambda: Softmax(0), "axis"),
    (lambda: MatMul(3, 4, axis=0), "axis"),
    (lambda: Pow(float("inf")), "finite"),
])
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_errors():
    with pytest.raises(ValueError, match="cannot reshape"):
        Reshape((7,)).output_shape([(2, 3)])
    with pytest.raises(ValueError, match="empty"):
        Slice((1,), (5,), (None,)).output_shape([(3, 4)])
    with pytest.raises(ValueError, match="expects 4 features"):
        MatMul(4, 2).output_shape([(3, 5)])
    with pytest.raises(ValueError, match="out of range"):
        GatherND((2,), [[5]]).output_shape([(3, 5)])
    with pytest.raises(ValueError, match="all but axis 2"):
        Concat(2).output_shape([(3, 5), (4, 5)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_on_any_axis_matches_torch(axis, dtype):
    torch = require_torch()
    rng = np.random.default_rng(axis)
    shapes = [(2, 3, 4, 5), (2, 3, 4, 5)]
    shapes[1] = tuple(7 if i == axis else d for i, d in enumerate(shapes[1]))
    xs = [rng.standard_normal(s) for s in shapes]
    layer = Concat(axis)
    out, cache = layer.forward([x.astype(dtype) for x in xs], {}, {}, "test", None)
    assert out.dtype == dtype and out.shape[1:] == layer.output_shape([s[1:] for s in shapes])
    R = rng.standard_normal(out.shape)
    dxs = layer.backward(R.astype(dtype), cache)[0]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    ref = torch.cat(ts, axis)
    (ref * torch.tensor(R)).sum().backward()
    assert rel_err(out, ref.detach().numpy()) < 1e-6
    for d, t in zip(dxs, ts):
        assert d.dtype == dtype and rel_err(d, t.grad.numpy()) < 1e-6


def test_nearest_resize_reads_the_rows_pytorch_reads():
    """F.interpolate(mode='nearest') takes source index floor(o * in / out) with the
    product in float32, by size or by scale_factor; in float64 o / (out / in) fell
    just under an integer for some sizes (14 -> 18: row 9 read row 6, not 7)."""
    torch = require_torch()
    from gradvis.nn import Resize
    for n_in in range(1, 33):
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, n_in, 1)
        for n_out in range(1, 49):
            got = Resize((n_out, 1), "nearest", "asymmetric", "floor").forward([x], {}, {}, "test", None)[0]
            want = torch.nn.functional.interpolate(torch.tensor(x), size=(n_out, 1), mode="nearest").numpy()
            np.testing.assert_array_equal(got, want, err_msg=f"{n_in} -> {n_out}")
        for f in (0.5, 1.5, 2.0, 2.5, 3.0, 0.75, 1.3):
            n_out = int(np.floor(n_in * f))
            if n_out < 1:
                continue
            got = Resize((n_out, 1), "nearest", "asymmetric", "floor", scales=(f, 1.0)).forward(
                [x], {}, {}, "test", None)[0]
            want = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=(f, 1.0), mode="nearest").numpy()
            np.testing.assert_array_equal(got, want, err_msg=f"{n_in} x {f}")
