"""Batch norm folded into the convolution before it in test-mode passes
(nn/fold.py): the same outputs, input gradients, parameter gradients and rule
behaviour as the separate layers; never in train mode, never when the
convolution's own output is asked for or read twice; changed parameters take
effect at once."""
import copy
import pickle

import numpy as np
import pytest

from gradvis.nn import (Add, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, ReLU, Scale)
from gradvis.nn.fold import Folded, FoldedBatchNorm


def _net(dtype=np.float64, seed=0):
    m = Model(input_shape=(3, 12, 12), seed=seed)
    m.add("c1", Conv2d(3, 8, 3, padding=1, bias=False)).add("b1", BatchNorm2d(8)).add("r1", ReLU())
    m.add("c2", Conv2d(8, 8, 3, padding=1, bias=True)).add("b2", BatchNorm2d(8))       # no ReLU after
    m.add("c3", Conv2d(8, 8, 3, padding=1)).add("b3", BatchNorm2d(8)).add("r3", ReLU())
    m.add("sum", Add(), inputs=["b2", "r3"])
    m.add("pool", MaxPool2d(2)).add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(8, 5))
    m.init_params(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for k in m.params:
        if k.endswith((".gamma", ".beta", ".bias")):
            m.params[k][...] = rng.uniform(0.5, 1.5, m.params[k].shape) * rng.choice([-1, 1], m.params[k].shape)
    for k in m.buffers:
        lo, hi = (0.2, 2.0) if k.endswith("var") else (-0.5, 0.5)
        m.buffers[k][...] = rng.uniform(lo, hi, m.buffers[k].shape)
    return m


def _pair(dtype=np.float64):
    m = _net(dtype)
    sep = m.copy()
    sep.fold_batchnorm = False
    return m, sep


def _X(dtype=np.float64, n=3):
    return np.random.default_rng(7).standard_normal((n, 3, 12, 12)).astype(dtype)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_same_results_as_separate_layers(dtype, tol):
    m, sep = _pair(dtype)
    X = _X(dtype)
    out, cache = m.forward(X)
    ref, rcache = sep.forward(X)
    assert sum(isinstance(c, FoldedBatchNorm) for c in cache["caches"]) == 3
    assert not any(isinstance(c, FoldedBatchNorm) for c in rcache["caches"])
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    for pg in (False, True):
        dX, grads = m.backward(dout, cache, param_grads=pg)
        rX, rgrads = sep.backward(dout, rcache, param_grads=pg)
        assert dX.dtype == dtype
        np.testing.assert_allclose(dX, rX, rtol=tol, atol=tol * np.abs(rX).max())
        assert sorted(grads) == sorted(rgrads)
        for k in rgrads:
            np.testing.assert_allclose(grads[k], rgrads[k], rtol=tol, atol=tol * (np.abs(rgrads[k]).max() + 1e-30),
                                       err_msg=k)


def test_input_gradient_matches_finite_differences():
    m = _net()
    X = _X(n=1)
    out, cache = m.forward(X)
    dX, _ = m.backward(np.eye(5)[[2]], cache, param_grads=False)
    rng = np.random.default_rng(5)
    for _ in range(6):
        idx = tuple(rng.integers(0, s) for s in X.shape)
        h = 1e-6
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        num = (m.forward(Xp)[0][0, 2] - m.forward(Xm)[0][0, 2]) / (2 * h)
        assert abs(num - dX[idx]) <= 1e-6 * max(1.0, abs(num))


def test_no_fold_in_train_mode_or_when_the_conv_output_is_asked_for():
    m = _net()
    X = _X()
    _, cache = m.forward(X, mode="train")
    assert not any(isinstance(c, FoldedBatchNorm) for c in cache["caches"])
    res, cache = m.forward(X, outputs=["c1", "fc"])
    assert not isinstance(cache["caches"][1], FoldedBatchNorm)       # b1 reads c1, which is asked for
    assert isinstance(cache["caches"][4], FoldedBatchNorm)           # b2 still folded
    ref, _ = m.forward(X, end="c1")
    np.testing.assert_array_equal(res["c1"], ref)
    # a convolution read by two nodes keeps its output
    m2 = Model(input_shape=(3, 8, 8), seed=0)
    m2.add("c", Conv2d(3, 4, 3, padding=1)).add("b", BatchNorm2d(4)).add("s", Add(), inputs=["b", "c"])
    m2.init_params(seed=0, dtype=np.float64)
    _, cache = m2.forward(_X(n=2)[:, :, :8, :8])
    assert not any(isinstance(c, FoldedBatchNorm) for c in cache["caches"])


def test_changed_parameters_take_effect():
    m, sep = _pair()
    X = _X()
    m.forward(X)
    for mod in (m, sep):
        mod.params["c3.weight"] *= -0.5
        mod.params["b3.gamma"][:] = 2.0
        mod.buffers["b1.running_var"][:] = 3.0
    np.testing.assert_allclose(m.forward(X)[0], sep.forward(X)[0], rtol=1e-12, atol=1e-12)


def test_rules_naming_a_folded_node_see_the_separate_layers():
    m, sep = _pair()
    X = _X()
    seen = {}

    def rule_for(tag):
        def rule(layer, dout, cache):
            seen.setdefault(tag, []).append((dout.copy(), cache[1].copy()))   # the bn's input / conv's x
            return layer.backward_inputs(dout, cache)
        return rule

    for mod, tag in ((m, "fold"), (sep, "sep")):
        out, cache = mod.forward(X)
        dX, _ = mod.backward(np.ones_like(out), cache, param_grads=False,
                             rules={BatchNorm2d: rule_for(tag), "c2": rule_for(tag + "c")})
        seen[tag + "X"] = dX
    assert len(seen["fold"]) == len(seen["sep"]) == 3
    for (ga, ca), (gb, cb) in zip(seen["fold"] + seen["foldc"], seen["sep"] + seen["sepc"]):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ca, cb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(seen["foldX"], seen["sepX"], rtol=1e-12, atol=1e-12)


def test_copies_and_pickles_do_not_carry_the_folded_weights():
    m = _net()
    m.forward(_X())
    assert m._folded
    for c in (m.copy(), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert not getattr(c, "_folded", {})
        np.testing.assert_array_equal(c.forward(_X())[0], m.forward(_X())[0])


def _scale_net(dtype=np.float64, seed=0):
    """Conv2d -> per-channel Scale (ConvNeXt's layer scale), Conv2d (no bias) ->
    scalar Scale, and a Scale whose shape is per column (never folded)."""
    m = Model(input_shape=(3, 10, 10), seed=seed)
    m.add("c1", Conv2d(3, 6, 1)).add("s1", Scale((6, 1, 1))).add("r1", ReLU())
    m.add("c2", Conv2d(6, 6, 3, padding=1, bias=False)).add("s2", Scale(()))
    m.add("sum", Add(), inputs=["s2", "r1"])
    m.add("c3", Conv2d(6, 6, 1)).add("s3", Scale((10,)))
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(6, 4))
    m.init_params(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 2)
    for k in m.params:
        if k.endswith(".scale"):
            m.params[k][...] = rng.uniform(0.5, 1.5, m.params[k].shape) * rng.choice([-1, 1], m.params[k].shape)
    return m


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_per_channel_scales_fold_like_batch_norm(dtype, tol):
    m = _scale_net(dtype)
    sep = m.copy()
    sep.fold_batchnorm = False
    X = np.random.default_rng(4).standard_normal((2, 3, 10, 10)).astype(dtype)
    out, cache = m.forward(X)
    ref, rcache = sep.forward(X)
    kinds = [type(c).__name__ for c in cache["caches"]]
    assert kinds.count("FoldedScale") == 2 and not any(isinstance(c, Folded) for c in rcache["caches"])
    assert not isinstance(cache["caches"][7], Folded)                 # s3 scales columns: not folded
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(dtype)
    for pg in (False, True):
        dX, grads = m.backward(dout, cache, param_grads=pg)
        rX, rgrads = sep.backward(dout, rcache, param_grads=pg)
        np.testing.assert_allclose(dX, rX, rtol=tol, atol=tol * np.abs(rX).max())
        assert sorted(grads) == sorted(rgrads)
        for k in rgrads:
            np.testing.assert_allclose(grads[k], rgrads[k], rtol=tol, atol=tol * (np.abs(rgrads[k]).max() + 1e-30),
                                       err_msg=k)
    # a rule naming the Scale sees its own input and output gradient
    res = {}
    for mod in (m, sep):
        calls = []

        def rule(layer, g, c):
            calls.append((layer.shape, g.copy()))
            return layer.backward_inputs(g, c)
        o, c = mod.forward(X)
        d, _ = mod.backward(dout, c, param_grads=False, rules={Scale: rule})
        res[mod is m] = (d, calls)
    np.testing.assert_allclose(res[True][0], res[False][0], rtol=tol, atol=tol * np.abs(res[False][0]).max())
    assert len(res[True][1]) == len(res[False][1]) == 3
    for (sa, ga), (sb, gb) in zip(res[True][1], res[False][1]):
        assert sa == sb
        np.testing.assert_allclose(ga, gb, rtol=tol, atol=tol * np.abs(gb).max())


@pytest.mark.parametrize("n,folded", [(1, False), (160, True)])
def test_weights_larger_than_the_output_are_not_folded(n, folded):
    """Folding rescales the weights on every pass: it is used only while they are no
    larger than the convolution's output (36,864 weights against 256 values per image)."""
    m = Model(input_shape=(64, 2, 2), seed=0)
    m.add("c", Conv2d(64, 64, 3, padding=1)).add("b", BatchNorm2d(64)).add("r", ReLU())
    m.add("s", Conv2d(64, 64, 3, padding=1)).add("k", Scale((64, 1, 1)))
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(64, 3))
    m.init_params(seed=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    m.buffers["b.running_var"][...] = rng.uniform(0.5, 2.0, 64)
    m.params["k.scale"][...] = rng.uniform(0.5, 1.5, (64, 1, 1))
    sep = m.copy()
    sep.fold_batchnorm = False
    X = rng.standard_normal((n, 64, 2, 2))
    out, cache = m.forward(X)
    ref, rcache = sep.forward(X)
    assert sum(isinstance(c, Folded) for c in cache["caches"]) == (2 if folded else 0)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dX, grads = m.backward(dout, cache)
    rX, rgrads = sep.backward(dout, rcache)
    np.testing.assert_allclose(dX, rX, rtol=1e-11, atol=1e-12)
    for k in rgrads:
        np.testing.assert_allclose(grads[k], rgrads[k], rtol=1e-10, atol=1e-12, err_msg=k)
