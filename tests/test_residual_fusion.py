"""Residual Adds made by the convolution before them (conv2d_forward_add): the
kernel entry point on every conv path and SIMD level against the convolution
followed by the Add's own kernel (the same bits), and the model's fusion against
the unfused graph (forward, caches, backward), finite differences, and where it
must not happen."""
import numpy as np
import pytest

import gradvis
from conftest import simd_paths_test
from gradvis import _core
from gradvis.nn import Add, BatchNorm2d, Conv2d, Model, ReLU, Scale, fusion
from gradvis.nn import functional as F
from gradvis.nn import passes
from test_conv_fused_act import CASES, IDS

# the strided 1x1 layers (ResNet's downsampling), which run on a dense copy of their grid
CASES_ADD = CASES + [((2, 16, 14, 13), (24, 16, 1, 1), 0, 2, 1, "auto"),
                     ((1, 8, 9, 9), (12, 8, 1, 1), 1, 3, 1, "auto")]
IDS_ADD = IDS + ["1x1_stride2", "1x1_stride3_padded"]


def check_kernel(case, dtype, seed=0, nan=False):
    """conv2d_forward_add on one conv path, with and without the ReLU, against
    conv2d_forward then add_forward (raises AssertionError). nan: NaNs and -0 in
    the residual and a NaN bias, which pass as the Add's comparison passes them."""
    xs, ws, pad, stride, groups, algo = case
    rng = np.random.default_rng(seed)
    x = (2 * rng.standard_normal(xs)).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kw = dict(padding=pad, stride=stride, groups=groups)
    old = gradvis.get_conv_algorithm()
    gradvis.set_conv_algorithm(algo)
    try:
        plain = _core.conv2d_forward(x, w, b, **kw)
        r = rng.standard_normal(plain.shape).astype(dtype)
        if nan:
            b[0] = np.nan
            plain = _core.conv2d_forward(x, w, b, **kw)
            r.reshape(-1)[::7] = np.nan
            r.reshape(-1)[3::11] = -0.0
        for relu in (False, True):
            out = _core.conv2d_forward_add(x, w, b, r, relu=relu, **kw)
            assert out.dtype == dtype and out.shape == plain.shape
            ref = _core.add_forward(plain, r, relu)
            np.testing.assert_array_equal(out.view(np.uint8), ref.view(np.uint8), err_msg=f"relu={relu}")
        # no bias
        out = _core.conv2d_forward_add(x, w, None, r, relu=True, **kw)
        ref = _core.add_forward(_core.conv2d_forward(x, w, None, **kw), r, True)
        np.testing.assert_array_equal(out.view(np.uint8), ref.view(np.uint8))
    finally:
        gradvis.set_conv_algorithm(old)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES_ADD, ids=IDS_ADD)
def test_kernel_equals_conv_then_add(case, dtype):
    check_kernel(case, dtype)


@pytest.mark.parametrize("case", CASES_ADD, ids=IDS_ADD)
def test_kernel_nan_and_signed_zero_like_add(case):
    check_kernel(case, np.float32, seed=1, nan=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_threads(threads):
    old = gradvis.get_num_threads()
    gradvis.set_num_threads(threads)
    try:
        for case in [CASES_ADD[1], CASES_ADD[2], CASES_ADD[9], CASES_ADD[-2],
                     ((16, 32, 14, 14), (64, 32, 1, 1), 0, 1, 1, "auto")]:
            check_kernel(case, np.float32, seed=2)
    finally:
        gradvis.set_num_threads(old)


SIMD_CHECKS = r"""
from test_residual_fusion import CASES_ADD, check_kernel
for case in CASES_ADD:
    check_kernel(case, np.float32)
    check_kernel(case, np.float32, seed=1, nan=True)
check_kernel(CASES_ADD[1], np.float64)
"""


test_kernel_simd_paths = simd_paths_test(SIMD_CHECKS)


def test_kernel_bad_arguments():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward_add: residual must have the output's shape "
                                         r"\(1, 3, 3, 3\), got \(1, 3, 5, 5\)"):
        _core.conv2d_forward_add(x, w, None, np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="residual must be an array"):
        _core.conv2d_forward_add(x, w, None, None)
    with pytest.raises(ValueError, match="conv2d_forward_add: .*not divisible by groups=2"):
        _core.conv2d_forward_add(np.zeros((1, 3, 5, 5), np.float32), w, None, np.zeros((1, 3, 3, 3)), groups=2)
    # a residual of another float dtype is cast, as w and b are
    r = np.ones((1, 3, 3, 3))
    np.testing.assert_array_equal(_core.conv2d_forward_add(x, w, None, r), np.ones((1, 3, 3, 3), np.float32))


# ---------------------------------------------------------------------------- the model's fusion
def resnet_model(dtype=np.float32, seed=0, bn=True):
    """Two bottleneck-like blocks: conv (+ batch norm) -> Add(identity) -> ReLU, a
    downsampling block whose Add reads two convolutions, and a ConvNeXt-like
    block (conv -> per-channel scale -> Add, no ReLU)."""
    m = Model((8, 12, 12), seed=seed)
    m.add("stem", Conv2d(8, 16, 3, padding=1)).add("r0", ReLU())
    m.add("c1", Conv2d(16, 16, 3, padding=1)).add("a1", ReLU())
    m.add("c2", Conv2d(16, 16, 1))
    if bn:
        m.add("bn2", BatchNorm2d(16))
    m.add("add1", Add(), inputs=["bn2" if bn else "c2", "r0"]).add("r1", ReLU())
    m.add("ds", Conv2d(16, 24, 1, stride=2), inputs="r1")
    m.add("c3", Conv2d(16, 24, 3, stride=2, padding=1), inputs="r1")
    m.add("add2", Add(), inputs=["ds", "c3"]).add("r2", ReLU())
    m.add("c4", Conv2d(24, 24, 1)).add("ls", Scale((24, 1, 1)))
    m.add("add3", Add(), inputs=["r2", "ls"])
    m.init_params(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for k in m.params:
        if k.endswith("gamma") or k.endswith("scale"):
            m.params[k][...] = rng.uniform(0.5, 1.5, m.params[k].shape)
        if k.endswith("beta") or k.endswith("bias"):
            m.params[k][...] = 0.3 * rng.standard_normal(m.params[k].shape)
    for k in m.buffers:
        if k.endswith("running_mean"):
            m.buffers[k][...] = 0.2 * rng.standard_normal(m.buffers[k].shape)
        if k.endswith("running_var"):
            m.buffers[k][...] = rng.uniform(0.5, 2.0, m.buffers[k].shape)
    return m


def run_both(m, X, monkeypatch, **kw):
    """(fused, unfused) results of forward with and without a cache, and of
    backward with and without parameter gradients."""
    def run(model):
        light = model.forward(X, cache=False, **kw)[0]
        out, cache = model.forward(X, **kw)
        dout = ({k: np.cos(v) for k, v in out.items()} if isinstance(out, dict)
                else np.cos(out).astype(out.dtype))
        dx, _ = model.backward(dout, cache, param_grads=False)
        dx2, grads = model.backward(dout, cache)
        return light, out, dx, dx2, grads
    u = m.copy()
    u.__dict__.pop("_plans", None)
    fused = run(m)
    with monkeypatch.context() as mp:
        mp.setattr(fusion, "residual_fusions", lambda *a, **k: {})
        unfused = run(u)
    return fused, unfused


def assert_same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v)
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
        return
    np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


def plan_residuals(m, outputs=None, mode="test", start=0):
    steps = m._plan(start, len(m) - 1 if outputs is None else max(m.index(o) for o in outputs), outputs,
                    "input" if start == 0 else m.nodes[start].inputs[0], mode)[7]
    return sorted(m.nodes[s[1]].name for s in steps if s[0] == fusion.RADD)


class Spy:
    """Counts the residual sums convolutions make (the _core of nn/functional.py and
    nn/passes.py): conv2d_forward_add calls, and the layers with a residual of the
    ConvChains it builds (plans made before it was in place hold _core's own)."""
    def __init__(self):
        self.calls = 0

    def conv2d_forward_add(self, *a, **k):
        self.calls += 1
        return _core.conv2d_forward_add(*a, **k)

    def ConvChain(self, n_inputs, layers, outputs, *lean):
        spy, chain = self, _core.ConvChain(n_inputs, layers, outputs, *lean)
        sums = sum(layer[2] >= 0 for layer in layers)   # (op, input, residual, ...)

        class Counted:
            def run(self, *a):
                out = chain.run(*a)
                spy.calls += sums
                return out

            def run_kept(self, *a):
                out = chain.run_kept(*a)
                spy.calls += sums
                return out

        return Counted()

    def __getattr__(self, name):
        return getattr(_core, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bn", [True, False])
def test_model_fusion_equals_unfused(dtype, bn, monkeypatch):
    m = resnet_model(dtype, bn=bn)
    assert plan_residuals(m) == ["add1", "add2", "add3"]
    X = np.random.default_rng(3).standard_normal((2, 8, 12, 12)).astype(dtype)
    spy = Spy()
    monkeypatch.setattr(F, "_core", spy)
    monkeypatch.setattr(passes, "_core", spy)
    m.__dict__.pop("_plans", None)
    m.forward(X, cache=False)     # the layers' shape checks made: the kernels called directly
    spy.calls = 0
    fused, unfused = run_both(m, X, monkeypatch)
    # made by the convolutions: 3 Adds, in the pass without a cache and in the one with
    assert spy.calls == 6
    assert_same(fused, unfused)


def test_model_fusion_train_mode(monkeypatch):
    # no folded batch norm: only the Adds that read a convolution directly
    m = resnet_model()
    assert plan_residuals(m, mode="train") == ["add2"]
    m2 = resnet_model(bn=False)
    assert plan_residuals(m2, mode="train") == ["add1", "add2"]
    X = np.random.default_rng(4).standard_normal((3, 8, 12, 12)).astype(np.float32)
    for model in (m, m2):
        a = model.copy()
        out, cache = a.forward(X, mode="train")
        with monkeypatch.context() as mp:
            mp.setattr(fusion, "residual_fusions", lambda *args, **k: {})
            b = model.copy()
            ref, rcache = b.forward(X, mode="train")
        assert_same(out, ref)
        dout = np.ones_like(out)
        assert_same(a.backward(dout, cache), b.backward(dout, rcache))


def test_model_fusion_falls_back_where_the_operand_does_not_fit(monkeypatch):
    # an Add that broadcasts (a (1, C, 1, 1) operand), and one whose operand is
    # float64 while the pass is float32: the Add runs as its own layer
    m = Model((4, 6, 6), seed=0)
    m.add("c", Conv2d(4, 4, 3, padding=1)).add("g", Conv2d(4, 4, 6))
    m.add("add", Add(), inputs=["g", "c"]).add("r", ReLU())
    m.add("c2", Conv2d(4, 4, 1), inputs="c").add("add2", Add(), inputs=["c2", "r"])
    m.init_params(seed=0)
    assert plan_residuals(m) == ["add", "add2"]
    X = np.random.default_rng(5).standard_normal((2, 4, 6, 6)).astype(np.float32)
    spy = Spy()
    monkeypatch.setattr(F, "_core", spy)
    monkeypatch.setattr(passes, "_core", spy)
    m.__dict__.pop("_plans", None)
    fused, unfused = run_both(m, X, monkeypatch)
    assert_same(fused, unfused)
    assert spy.calls == 2        # add2 only (both passes); add broadcasts a 1x1 map
    assert fused[1].shape == (2, 4, 6, 6)


def test_no_fusion_where_it_must_not_happen(monkeypatch):
    m = resnet_model()
    # the convolution's output (here its batch norm's) asked for
    assert plan_residuals(m, outputs=["bn2", "r2"]) == ["add2"]
    # the operand computed after the convolution: c3 reads r1 after ds, so add2
    # (ds + c3) is made by c3, never by ds
    every = set(range(len(m)))
    found = fusion.residual_fusions(m.nodes, m._index, 0, len(m) - 1, every, None, {}, set(), "input")
    assert {m.nodes[i].name: m.nodes[j].name for i, (j, _, _) in found.items()} == {"c3": "add2"}
    # with the batch norm and the scale folded (test mode), their convolutions
    folds = {m.index("c2"), m.index("c4")}
    found = fusion.residual_fusions(m.nodes, m._index, 0, len(m) - 1, every, None, {}, folds, "input")
    assert {m.nodes[i].name: (m.nodes[j].name, t, ref) for i, (j, t, ref) in found.items()} == {
        "c2": ("add1", "bn2", "r0"), "c3": ("add2", "c3", "ds"), "c4": ("add3", "ls", "r2")}
    # read by another node too
    m2 = Model((4, 6, 6), seed=0)
    m2.add("c", Conv2d(4, 4, 3, padding=1)).add("d", Conv2d(4, 4, 1)).add("add", Add(), inputs=["d", "c"])
    m2.add("e", Conv2d(4, 4, 1), inputs="d").add("add2", Add(), inputs=["add", "e"])
    m2.init_params(seed=0)
    assert plan_residuals(m2) == ["add2"]
    # fusion off
    m.fuse_relu = False
    assert plan_residuals(m) == []
    # a pass that starts after the operand was computed: the same error as unfused
    m3 = resnet_model()
    X = np.random.default_rng(6).standard_normal((1, 16, 12, 12)).astype(np.float32)
    with pytest.raises(ValueError, match="needs 'r0'.*skip connection crosses the cut"):
        m3.forward(X, start="c2")
    # a pass that starts at the operand: it is the pass's input
    assert plan_residuals(m3, start=m3.index("c1")) == ["add1", "add2", "add3"]
    fused, unfused = run_both(m3, X, monkeypatch, start="c1")
    assert_same(fused, unfused)
    # an Add of a tensor with itself is left alone
    m4 = Model((4, 6, 6), seed=0)
    m4.add("c", Conv2d(4, 4, 1)).add("add", Add(), inputs=["c", "c"])
    m4.init_params(seed=0)
    assert plan_residuals(m4) == []
    X4 = np.random.default_rng(7).standard_normal((1, 4, 6, 6)).astype(np.float32)
    c = _core.conv2d_forward(X4, m4.params["c.weight"], m4.params["c.bias"])
    np.testing.assert_array_equal(m4.forward(X4)[0], c + c)


def test_model_fusion_finite_differences():
    m = resnet_model(np.float64, seed=8)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((1, 8, 12, 12))
    out, cache = m.forward(X)
    assert plan_residuals(m) == ["add1", "add2", "add3"]
    R = rng.standard_normal(out.shape)
    dx, _ = m.backward(R, cache, param_grads=False)
    h = 1e-6
    for _ in range(8):
        idx = tuple(int(rng.integers(0, s)) for s in X.shape)
        p, q = X.copy(), X.copy()
        p[idx] += h
        q[idx] -= h
        num = (np.vdot(m.forward(p)[0], R) - np.vdot(m.forward(q)[0], R)) / (2 * h)
        assert abs(num - dx[idx]) < 1e-6 * max(1.0, abs(num)), (idx, num, dx[idx])


def test_node_forward_without_a_done_set_runs_each_add():
    # nn/passes.node_forward called without the pass's set: every Add sums itself
    m = resnet_model(bn=False)
    X = np.random.default_rng(10).standard_normal((2, 8, 12, 12)).astype(np.float32)
    want = m.forward(X)[0]
    plan = m._plan(0, len(m) - 1, None, "input", "test")
    fused, steps = plan[1], plan[7]
    assert sum(st[0] == fusion.RADD for st in steps) == 3
    tensors = {"input": X}
    spy = Spy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "_core", spy)
        for st in steps:
            if st[0] == fusion.TAKE:
                tensors[st[3]] = tensors.pop(st[2])
                continue
            tensors[st[2].name] = passes.node_forward(m, st, tensors, m.nodes[0], fused, "test", None)[0]
    assert spy.calls == 0
    assert_same(tensors[m.nodes[-1].name], want)


def test_two_threads_with_other_input_sizes():
    # each layer remembers the shapes it last checked as one value: passes of two
    # sizes at once in two Python threads get their own results, fused or not
    import threading
    m = resnet_model(bn=False)
    rng = np.random.default_rng(11)
    Xs = [rng.standard_normal((1, 8, 12, 12)).astype(np.float32),
          rng.standard_normal((2, 8, 16, 20)).astype(np.float32)]
    want = [m.forward(X, cache=False)[0] for X in Xs]
    bad = []

    def run(k):
        for _ in range(40):
            out = m.forward(Xs[k], cache=False)[0]
            if not np.array_equal(out, want[k]):
                bad.append(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not bad
