"""render() of gradvis.optvis: what it is for (a channel objective drives its
channel far above the layer's average, diversity separates a batch, redirected
ReLU gradients wake a dead channel), snapshots, seeds, the Model.backward rules
it relies on, and the errors for bad input."""
import numpy as np
import pytest

import gradvis
from gradvis import Conv2d, Flatten, GlobalAvgPool, Linear, Model, ReLU
from gradvis.optvis import objectives as O
from gradvis.optvis import param, render, transforms
from gradvis.optvis.render import to_model_input


@pytest.fixture(scope="module")
def model():
    return gradvis.load_pretrained()


def layer_means(model, X, layer):
    a, _ = model.forward(X, end=layer)
    return a.mean(axis=(2, 3))          # (N, C)


def gram_cosines(model, X, layer):
    a, _ = model.forward(X, end=layer)
    F = a.reshape(a.shape[0], a.shape[1], -1).astype(np.float64)
    G = F @ F.transpose(0, 2, 1)
    G /= np.linalg.norm(G, axis=(1, 2), keepdims=True)
    n = len(G)
    return [float((G[i] * G[j]).sum()) for i in range(n) for j in range(i + 1, n)]


def test_channel_objective_raises_its_channel_far_above_the_layer(model):
    channels = [7, 100, 200]
    X, = render([O.channel("relu5", c) for c in channels], model, steps=48, seed=0)
    assert X.shape == (3, 3, 64, 64) and X.dtype == np.float32
    means = layer_means(model, X, "relu5")
    for i, c in enumerate(channels):
        assert means[i, c] > 4 * means[i].mean()
        assert means[i, c] >= np.sort(means[i])[-3]      # among the layer's top three
    start = layer_means(model, to_model_input(param.image(64, batch=3, seed=0).forward()[0], model), "relu5")
    assert (means[np.arange(3), channels] > 3 * start[np.arange(3), channels]).all()


def test_diversity_makes_the_batch_differ(model):
    obj = O.channel("relu4", 5)
    kw = dict(steps=32, seed=1, param=None)
    plain, = render(obj, model, param=param.image(64, batch=3, seed=1), steps=32, seed=1)
    varied, = render(obj - 1e2 * O.diversity("relu4"), model, param=param.image(64, batch=3, seed=1),
                     steps=32, seed=1)
    assert max(gram_cosines(model, varied, "relu4")) < min(gram_cosines(model, plain, "relu4"))


def dead_channel_net():
    """Channel 0 of relu2 is zero on every image the parameterization starts from,
    but an image brighter than those turns it on."""
    m = Model(input_shape=(3, 32, 32), mean=(0, 0, 0), std=(255, 255, 255), seed=0)
    m.add("conv1", Conv2d(3, 8, 3, padding=1)).add("relu1", ReLU())
    m.add("conv2", Conv2d(8, 4, 3, padding=1)).add("relu2", ReLU())
    m.add("gap", GlobalAvgPool()).add("flat", Flatten()).add("fc", Linear(4, 5))
    m.params["conv1.weight"][:] = np.abs(m.params["conv1.weight"])
    m.params["conv2.weight"][0] = np.abs(m.params["conv2.weight"][0])
    start = m.forward(to_model_input(param.image(32, seed=0).forward()[0], m), end="conv2")[0][:, 0].max()
    white = m.forward(np.ones((1, 3, 32, 32), np.float32), end="conv2")[0][:, 0].max()
    m.params["conv2.bias"][0] = -(start + white) / 2
    return m


def test_redirected_relu_lets_a_dead_channel_start():
    m = dead_channel_net()
    runs = {}
    for k in (0, 64):
        X, = render(O.channel("relu2", 0), m, param=param.image(32, seed=0), steps=64,
                    redirected_relu_steps=k, seed=0)
        runs[k] = m.forward(X, end="relu2")[0][:, 0].mean()
    assert runs[0] == 0.0            # no gradient ever reaches a dead unit
    assert runs[64] > 0.1


def test_thresholds_and_seeds(model):
    seen = []
    snaps = render("channel:relu3:4", model, steps=6, thresholds=(2, 6, 4), seed=3,
                   callback=lambda t, X, info: seen.append((t, X, info["objective"])))
    assert len(snaps) == 3 and [s[0] for s in seen] == list(range(6))
    np.testing.assert_array_equal(seen[1][1], snaps[0])      # after step 2 = threshold 2
    assert not np.array_equal(snaps[0], snaps[2])
    again = render("channel:relu3:4", model, steps=6, thresholds=(2, 4, 6), seed=3)
    for a, b in zip(snaps, again):
        np.testing.assert_array_equal(a, b)
    other = render("channel:relu3:4", model, steps=6, seed=4)[0]
    assert not np.array_equal(other, snaps[2])
    img = model.deprocess(snaps[2])
    assert img.shape == (1, 64, 64, 3) and img.dtype == np.uint8


def test_pixel_parameterization_and_no_transforms(model):
    p = param.image(48, 40, fft=False, decorrelate=False, seed=0)
    X, = render(O.channel("relu4", 3) - 1e-3 * O.l1(), model, param=p, transforms=None, steps=4)
    assert X.shape == (1, 3, 48, 40)
    X, = render(O.class_logit(5), model, param=param.image(64), transforms=[transforms.jitter(3)], steps=2)
    assert X.shape == (1, 3, 64, 64)


def test_input_only_objective_needs_no_model_pass(model):
    X, = render(-O.l2(constant=0.5), model, param=param.image(8, fft=False, seed=0), steps=50,
                learning_rate=0.1)
    np.testing.assert_allclose(model.deprocess(X), 128, atol=3)


def test_fixed_size_model_gets_a_resize():
    m = Model(input_shape=(3, 8, 8), seed=0)
    m.add("conv", Conv2d(3, 4, 3, padding=1)).add("relu", ReLU()).add("flat", Flatten())
    m.add("fc", Linear(4 * 64, 3))
    X, = render(O.class_logit(1), m, param=param.image(20, seed=0), steps=3)
    assert X.shape == (1, 3, 20, 20)


def test_backward_rules_replace_a_layer_type_input_gradient(model):
    """Model.backward(rules=...) is the extension point redirected ReLU uses; a
    rule that returns the plain gradient changes nothing, and a rule is called
    for ReLUs fused into convolutions too."""
    X = to_model_input(param.image(64, batch=2, seed=0).forward()[0], model)
    out, cache = model.forward(X, end="relu5")
    dout = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    plain, _ = model.backward(dout, cache, param_grads=False)
    calls = []

    def same(layer, g, c):
        calls.append(layer.type)
        return layer.backward_inputs(g, c)
    dx, _ = model.backward(dout, cache, param_grads=False, rules={ReLU: same})
    np.testing.assert_array_equal(dx, plain)
    assert calls == ["ReLU"] * 5
    guided = lambda layer, g, c: [np.where((c > 0) & (g > 0), g, 0).astype(g.dtype)]   # noqa: E731
    dg, grads = model.backward(dout, cache, rules={ReLU: guided})
    assert not np.allclose(dg, plain) and "conv1.weight" in grads


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(objective=O.channel("relu9", 0)), ValueError, "relu9"),
    (dict(objective=O.channel("relu5", 256)), ValueError, "out of range"),
    (dict(objective=O.neuron("fc", 3)), ValueError, "spatial"),
    (dict(objective=O.diversity("flatten")), ValueError, "spatial"),
    (dict(objective=O.class_logit(100)), ValueError, "out of range"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(steps=4, thresholds=(2, 5)), ValueError, "beyond steps"),
    (dict(thresholds=(0,)), ValueError, "thresholds"),
    (dict(objective=O.class_logit(0), param=param.image(8)), ValueError, "too small"),
    (dict(objective=O.channel("relu7", 0), param=param.image(20), transforms=[transforms.jitter(10)]),
     ValueError, "transforms"),
    (dict(param="fft"), TypeError, "param"),
    (dict(transforms="lucid"), ValueError, "transforms"),
    (dict(optimizer="sgd"), ValueError, "optimizer"),
    (dict(objective=[O.channel("relu5", 1)] * 2, param=param.image(64, batch=3)), ValueError, "batch"),
    (dict(objective="chanel:relu5:1"), ValueError, "unknown objective"),
    (dict(objective=3), TypeError, "objective"),
    (dict(model="model"), TypeError, "model"),
])
def test_bad_input(model, kwargs, err, match):
    args = dict(objective=O.channel("relu5", 0), model=model, steps=2)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        render(**args)


def test_model_input_follows_the_models_preprocessing():
    """render's images are in the model's input space: deprocess gives back the
    [0, 1] image's pixels, whatever the channel order, mean and std."""
    m = Model(input_shape=(3, 8, 8), mean=(100.0, 110.0, 120.0), std=(50.0, 60.0, 70.0),
              channel_order="BGR", seed=0)
    m.add("conv", Conv2d(3, 2, 3, padding=1))
    x01 = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    X = to_model_input(x01, m)
    np.testing.assert_array_equal(m.deprocess(X), np.rint(255 * x01).astype(np.uint8).transpose(0, 2, 3, 1))
