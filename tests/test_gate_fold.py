"""A per-channel gate (the Mul that ends a squeeze-and-excitation block) folded into
the weights of the ungrouped convolution after it, in test-mode forward passes that
keep nothing for a backward pass (nn/fold.py's GateFold): the separate layers'
outputs up to rounding, and the separate layers wherever the fold would not pay or
would change what a name means."""
import numpy as np
import pytest

from gradvis.nn import Conv2d, Flatten, GlobalAvgPool, Linear, Model, Mul, ReLU, SiLU, Sigmoid
from gradvis.nn import elementwise, passes
from helpers import random_biases


def _se_net(c=8, f=6, hw=10, k=1, groups=1, gate_first=True, dtype=np.float64, tail_act=None):
    """conv -> SiLU -> SE (avgpool, fc, relu, fc, sigmoid) -> Mul -> conv (k x k) -> ... -> fc"""
    m = Model(input_shape=(3, hw, hw), seed=0)
    m.add("c0", Conv2d(3, c, 3, padding=1)).add("a0", SiLU())
    m.add("gap", GlobalAvgPool()).add("fc1", Conv2d(c, 4, 1)).add("r1", ReLU())
    m.add("fc2", Conv2d(4, c, 1)).add("sig", Sigmoid())
    m.add("mul", Mul(), inputs=["sig", "a0"] if gate_first else ["a0", "sig"])
    m.add("proj", Conv2d(c, f, k, padding=k // 2, groups=groups))
    if tail_act is not None:
        m.add("act", tail_act)
    m.add("pool", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(f, 5))
    m.init_params(seed=0, dtype=dtype)
    return random_biases(m)


def _x(n=1, hw=10, dtype=np.float64, seed=2):
    return np.random.default_rng(seed).standard_normal((n, 3, hw, hw)).astype(dtype)


class _CountMul:
    """Counts the Mul layer's own forward calls (a folded gate makes none)."""

    def __init__(self, monkeypatch):
        self.n = 0
        orig = elementwise.Mul.forward

        def counted(layer, *a, **k):
            self.n += 1
            return orig(layer, *a, **k)
        monkeypatch.setattr(elementwise.Mul, "forward", counted)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("gate_first", [True, False])
@pytest.mark.parametrize("k, tail", [(1, None), (3, None), (1, ReLU()), (1, SiLU())],
                         ids=["1x1", "3x3", "relu_after", "silu_after"])
def test_folded_gate_gives_the_separate_layers_output(dtype, tol, gate_first, k, tail, monkeypatch):
    m = _se_net(k=k, gate_first=gate_first, dtype=dtype, tail_act=tail)
    x = _x(dtype=dtype)
    want, _ = m.forward(x)                       # a pass that keeps its caches runs the Mul
    count = _CountMul(monkeypatch)
    got, cache = m.forward(x, cache=False)
    assert cache is None and count.n == 0        # folded: the gated tensor is never made
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # inner outputs too: the convolution's, and a pass that ends at it
    got_p, _ = m.forward(x, cache=False, end="proj")
    want_p, _ = m.forward(x, end="proj")
    np.testing.assert_allclose(got_p, want_p, rtol=tol, atol=tol * np.abs(want_p).max())


def test_gradients_and_cached_passes_do_not_fold(monkeypatch):
    m = _se_net()
    x = _x()
    count = _CountMul(monkeypatch)
    out, cache = m.forward(x)
    assert count.n == 1
    dx, _ = m.backward(np.ones_like(out), cache, param_grads=False)
    assert dx.shape == x.shape
    m.forward(x, mode="train", cache=False)
    assert count.n == 2


@pytest.mark.parametrize("case", ["batch2", "grouped", "weights_larger", "mul_asked_for", "not_a_gate",
                                  "fold_off"])
def test_no_fold_where_it_would_not_pay_or_change_a_name(case, monkeypatch):
    kw, n, outputs = {}, 1, None
    if case == "grouped":
        kw = dict(c=8, f=8, groups=2)
    elif case == "weights_larger":
        kw = dict(c=8, f=40, hw=2)                # 320 weights against 32 values of the gated map
    m = _se_net(**kw)
    hw = kw.get("hw", 10)
    if case == "batch2":
        n = 2
    elif case == "mul_asked_for":
        outputs = ["mul", "fc"]
    elif case == "not_a_gate":                    # two full maps multiplied
        m = Model(input_shape=(3, 6, 6), seed=0)
        m.add("a", Conv2d(3, 4, 1)).add("b", Conv2d(3, 4, 1), inputs=["input"])
        m.add("mul", Mul(), inputs=["a", "b"]).add("proj", Conv2d(4, 2, 1))
        m.init_params(seed=0, dtype=np.float64)
        hw = 6
    elif case == "fold_off":
        m.fold_batchnorm = False
    x = _x(n=n, hw=hw)
    want, _ = m.forward(x, outputs=outputs)
    count = _CountMul(monkeypatch)
    # the steps one by one (a ConvChain makes the product itself: tests/test_conv_chain.py)
    monkeypatch.setattr(passes, "chain_steps", lambda light: light)
    m.__dict__.pop("_plans", None)
    got, _ = m.forward(x, outputs=outputs, cache=False)
    assert count.n == 1
    if outputs is None:
        np.testing.assert_array_equal(got, want)  # the same layers: the same bits
    else:
        for name in outputs:
            np.testing.assert_array_equal(got[name], want[name])


def test_changed_gate_weights_take_effect_at_once():
    m = _se_net()
    x = _x()
    a, _ = m.forward(x, cache=False)
    m.params["fc2.bias"][...] += 1.0
    b, _ = m.forward(x, cache=False)
    want, _ = m.forward(x)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
