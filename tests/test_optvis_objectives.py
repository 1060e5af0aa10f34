"""Objectives of gradvis.optvis: values, gradients against finite differences,
composition with + - * and their names, the text form, per-image batches."""
import numpy as np
import pytest

from gradvis.optvis import objectives as O

N = 3
SHAPES = {"conv": (4, 5, 6), "fc": (7,), O.LOGITS: (10,), O.INPUT: (3, 6, 5)}


def acts_for(seed=0):
    rng = np.random.default_rng(seed)
    acts = {k: rng.standard_normal((N,) + s) for k, s in SHAPES.items()}
    acts[O.INPUT] = rng.random((N,) + SHAPES[O.INPUT])
    return acts


CASES = [
    O.channel("conv", 2), O.channel("fc", 6), O.channel("conv", 1, batch=2),
    O.neuron("conv", 3), O.neuron("conv", 0, x=1, y=4, batch=0), O.class_logit(9),
    O.direction("conv", np.arange(4.0) - 1.5), O.direction("fc", np.ones(7), batch=1),
    O.direction_cosine("conv", np.arange(4.0) - 1.5), O.direction_cosine("fc", np.ones(7), batch=1),
    O.deepdream("conv"), O.diversity("conv"), O.l1(), O.l1("conv", constant=0.2), O.l2(),
    O.total_variation(),
    O.channel("conv", 2) - 0.5 * O.channel("conv", 3), -O.deepdream("fc") / 4 + 2,
    O.channel("conv", 1) * O.deepdream("fc"), 1e2 * O.diversity("conv") - O.l2(batch=1),
]


@pytest.mark.parametrize("obj", CASES, ids=str)
def test_gradient_matches_finite_differences(obj):
    obj.check(SHAPES, N, None)
    acts = acts_for()
    value, grads = obj.value(acts, N)
    assert set(grads) <= obj.layers()
    rng = np.random.default_rng(1)
    dirs = {k: rng.standard_normal(a.shape) for k, a in acts.items()}
    eps = 1e-6
    plus = {k: a + eps * dirs[k] for k, a in acts.items()}
    minus = {k: a - eps * dirs[k] for k, a in acts.items()}
    num = (obj.value(plus, N)[0] - obj.value(minus, N)[0]) / (2 * eps)
    ana = sum(float((g * dirs[k]).sum()) for k, g in grads.items())
    assert num == pytest.approx(ana, rel=1e-5, abs=1e-7)


def test_blur_input_pulls_towards_the_blur():
    """Lucid's blur_input_each_step holds the blurred image constant: its gradient
    is x - blur(x), which vanishes on a constant image."""
    acts = acts_for()
    x = acts[O.INPUT]
    v, g = O.blur_input().value(acts, N)
    d = g[O.INPUT]
    assert v == pytest.approx(0.5 * (d ** 2).sum())
    inner = x[:, :, 1:-1, 1:-1]
    k = np.array([[0.5, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 0.5]])     # Lucid's _tf_blur
    h, w = inner.shape[2:]
    blur = sum(k[i, j] * x[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / k.sum()
    np.testing.assert_allclose(d[:, :, 1:-1, 1:-1], inner - blur)
    flat = {O.INPUT: np.full((1, 3, 6, 5), 0.3)}
    assert O.blur_input().value(flat, 1)[0] == pytest.approx(0.0, abs=1e-20)


def test_composition_values_and_names():
    acts = acts_for()
    a, b = O.channel("conv", 2), O.channel("conv", 3)
    va, vb = a.value(acts, N)[0], b.value(acts, N)[0]
    assert (a - 0.5 * b).value(acts, N)[0] == pytest.approx(va - 0.5 * vb)
    assert (2 * a + b / 4).value(acts, N)[0] == pytest.approx(2 * va + vb / 4)
    assert (a * b).value(acts, N)[0] == pytest.approx(va * vb)
    assert sum([a, b]).value(acts, N)[0] == pytest.approx(va + vb)
    assert str(a - 0.5 * b) == "channel:conv:2 - 0.5*channel:conv:3"
    assert str(-a + b) == "-channel:conv:2 + channel:conv:3"
    assert va == pytest.approx(acts["conv"][:, 2].mean())


def test_batch_index_selects_one_image():
    acts = acts_for()
    v, g = O.channel("conv", 2, batch=1).value(acts, N)
    assert v == pytest.approx(acts["conv"][1, 2].mean())
    assert np.count_nonzero(g["conv"][[0, 2]]) == 0


def test_per_image():
    acts = acts_for()
    obj = O.per_image([O.channel("conv", 0), O.channel("conv", 1) - O.l1(), O.neuron("conv", 2)])
    assert obj.batch_size == 3
    v, g = obj.value(acts, N)
    expect = (acts["conv"][0, 0].mean() + acts["conv"][1, 1].mean() - np.abs(acts[O.INPUT][1]).sum()
              + acts["conv"][2, 2, 2, 3])
    assert v == pytest.approx(expect)
    assert np.count_nonzero(g[O.INPUT][[0, 2]]) == 0
    with pytest.raises(ValueError, match="whole batch"):
        O.per_image([O.diversity("conv")])


def test_diversity_is_lowest_for_different_images():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((1, 4, 5, 6)), 3, axis=0)
    diff = rng.random((3, 4, 5, 6)) ** np.array([1, 4, 9])[:, None, None, None]
    d = O.diversity("conv")
    assert d.value({"conv": same}, 3)[0] == pytest.approx(2.0)     # two identical others, cosine 1
    assert d.value({"conv": diff}, 3)[0] < 2.0


def test_parse():
    obj = O.parse("channel:relu5:7 - 0.5*channel:relu5:3")
    assert str(obj) == "channel:relu5:7 - 0.5*channel:relu5:3"
    assert str(O.parse("class_logit:76-1e-3*total_variation+2*neuron:c:1:2:3")) == \
        "class_logit:76 - 0.001*total_variation:input + 2*neuron:c:1@3,2"
    assert str(O.parse("-deepdream:x")) == "-deepdream:x"
    for bad in ["", "chanel:x:1", "channel:x", "channel:x:a", "channel:x:1 -", "0.5*2",
                "channel:x:1*channel:x:2"]:
        with pytest.raises(ValueError):
            O.parse(bad)
    with pytest.raises(TypeError):
        O.parse(3)


@pytest.mark.parametrize("obj, match", [
    (O.channel("conv", 4), "out of range"), (O.channel("fc", 7), "out of range"),
    (O.neuron("fc", 1), "spatial"), (O.neuron("conv", 1, x=6), "outside"),
    (O.class_logit(10), "out of range"), (O.direction("conv", np.ones(3)), "channels"),
    (O.diversity("fc"), "spatial"), (O.channel("conv", 0, batch=3), "beyond the batch"),
    (O.total_variation("fc"), "spatial"),
])
def test_check_errors(obj, match):
    with pytest.raises(ValueError, match=match):
        obj.check(SHAPES, N, None)


def test_diversity_needs_a_batch():
    with pytest.raises(ValueError, match="batch of 2"):
        O.diversity("conv").check(SHAPES, 1, None)


def test_bad_arguments():
    with pytest.raises(ValueError):
        O.channel("conv", -1)
    with pytest.raises(TypeError):
        O.channel("conv", 1.5)
    with pytest.raises(TypeError):
        O.channel(None, 1)
    with pytest.raises(ValueError):
        O.direction("conv", [np.nan, 1])
    with pytest.raises(TypeError):
        O.channel("conv", 1) + "x"
    with pytest.raises(TypeError):
        O.channel("conv", 1) * [2]
    with pytest.raises(ZeroDivisionError):
        O.channel("conv", 1) / 0
