"""Bad arguments, inputs and files give clear errors that name the problem,
before any work (and before any large allocation)."""
import json
import warnings

import numpy as np
import pytest

import gradvis
from gradvis import cli
from gradvis.cli import common as cli_common
from gradvis import layers as L
from gradvis.nn.imageops import blur
from gradvis.nn import (AvgPool2d, BatchNorm2d, Bias, Conv2d, Flatten, GlobalAvgPool, Linear,
                           MaxPool2d, Model, Pad, ReLU)
from gradvis.nn.losses import softmax_cross_entropy
from gradvis.generation.regularizers import total_variation
from gradvis.io.model_file import load_model
from gradvis.train import TrainConfig
from test_serialization import _rewrite
from helpers import run_cli, tiny_net




def fully_conv_net():
    m = Model(input_shape=(3, 8, 8), seed=0)
    m.add("c", Conv2d(3, 4, 3))
    return m


def images(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _edit_header(edit):
    def apply(arrays):
        h = json.loads(arrays["__gradvis__"].tobytes())
        edit(h)
        arrays["__gradvis__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
    return apply


# ---------------------------------------------------------------------------- model inputs
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_forward_and_predict_refuse_non_finite_inputs(value):
    m = tiny_net()
    X = images()
    X[1, 2, 3, 4] = value
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        m.forward(X)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.predict(X)


def test_preprocess_refuses_infinite_and_non_numeric_images():
    m = tiny_net()
    with pytest.raises(ValueError, match="images contain NaN or infinite values"):
        m.preprocess(np.full((8, 8, 3), np.inf))
    with pytest.raises(TypeError, match="images must be a numeric array"):
        m.preprocess(np.full((8, 8, 3), None, dtype=object))


@pytest.mark.parametrize("batch_size, exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                             ("4", TypeError)])
def test_predict_batch_size_is_checked(batch_size, exc):
    with pytest.raises(exc, match="batch_size"):
        tiny_net().predict(images(), batch_size=batch_size)


def test_predict_batch_size_takes_numpy_integers_but_not_negative_ones():
    m = tiny_net()
    np.testing.assert_array_equal(m.predict(images(3), batch_size=np.int64(2)), m.predict(images(3)))
    with pytest.raises(ValueError, match="batch_size must be > 0, got -2"):
        m.predict(images(3), batch_size=np.int64(-2))


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float16, bool, "complex64"])
def test_astype_accepts_only_float32_and_float64(dtype):
    m = tiny_net()
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        m.astype(dtype)
    assert all(v.dtype == np.float64 for v in m.astype(np.float64).params.values())


def test_forward_outputs_must_name_a_node():
    with pytest.raises(ValueError, match="outputs must name at least one node"):
        tiny_net().forward(images(), outputs=[])


def test_backward_needs_this_models_cache():
    m = tiny_net()
    with pytest.raises(TypeError, match="cache must be the cache returned by this model's forward"):
        m.backward(np.ones((2, 5), np.float32), {})
    with pytest.raises(TypeError, match="cache must be"):
        m.backward(np.ones((2, 5), np.float32), None)
    other = Model(input_shape=(3, 8, 8))
    other.add("flat", Flatten()).add("fc", Linear(192, 5))
    _, cache = other.forward(images())
    with pytest.raises(ValueError, match="another model"):
        m.backward(np.ones((2, 5), np.float32), cache)
    # the cache of a copy of the same model is fine
    out, cache = m.copy().forward(images())
    m.backward(np.ones_like(out), cache)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 5, float("nan"), float("inf")])
def test_label_smoothing_must_be_in_0_1(smoothing):
    m = tiny_net()
    with pytest.raises(ValueError, match="label_smoothing"):
        m.loss(images(), np.array([1, 2]), label_smoothing=smoothing)
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([1, 2]), smoothing)


def test_label_smoothing_of_a_string_is_a_type_error():
    with pytest.raises(TypeError, match="label_smoothing"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([1, 2]), "0.1")


# ---------------------------------------------------------------------------- model construction
@pytest.mark.parametrize("shape", [(), (3,), (3, 8), (3, 8, 8, 1), "abc", 5])
def test_model_input_shape_must_be_c_h_w(shape):
    with pytest.raises(ValueError, match="input_shape must be"):
        Model(input_shape=shape)


@pytest.mark.parametrize("shape, exc", [((0, 8, 8), ValueError), ((3, -8, 8), ValueError),
                                        ((3, 8.5, 8), TypeError)])
def test_model_input_shape_entries_are_positive_ints(shape, exc):
    with pytest.raises(exc, match="input_shape"):
        Model(input_shape=shape)


@pytest.mark.parametrize("kw", [dict(mean=[np.nan, 0, 0]), dict(mean=[np.inf, 0, 0]),
                                dict(std=[np.inf, 1, 1])])
def test_model_mean_and_std_must_be_finite(kw):
    with pytest.raises(ValueError, match="mean|std"):
        Model(input_shape=(3, 8, 8), **kw)


@pytest.mark.parametrize("names", ["abc", {"a": 1}, [1, 2, 3]])
def test_model_class_names_must_be_a_list_of_strings(names):
    with pytest.raises(TypeError, match="class_names must be a list of strings"):
        Model(input_shape=(3, 8, 8), class_names=names)


@pytest.mark.parametrize("seed", ["abc", 1.5, -1, True])
def test_a_bad_seed_is_named(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        Model(input_shape=(3, 8, 8), seed=seed)
    with pytest.raises((TypeError, ValueError), match="seed"):
        gradvis.create_class_visualization(1, tiny_net(), num_iterations=1, seed=seed)


# ---------------------------------------------------------------------------- layer geometry
@pytest.mark.parametrize("make, exc, name", [
    (lambda: Conv2d(3, 4, 0), ValueError, "kernel_size"),
    (lambda: Conv2d(3, 4, (3, -1)), ValueError, "kernel_size"),
    (lambda: Conv2d(3, 4, 3, stride=0), ValueError, "stride"),
    (lambda: Conv2d(3, 4, 3, padding=-1), ValueError, "padding"),
    (lambda: Conv2d(3, 4, 3, dilation=0), ValueError, "dilation"),
    (lambda: Conv2d(0, 4, 3), ValueError, "in_channels"),
    (lambda: Conv2d(3, -4, 3), ValueError, "out_channels"),
    (lambda: Conv2d(3.7, 4, 3), TypeError, "in_channels"),
    (lambda: Conv2d(3, 4, 2.9), TypeError, "kernel_size"),
    (lambda: Conv2d(3, 4, 3, stride=1.9), TypeError, "stride"),
    (lambda: Conv2d(3, 4, 3, padding=0.9), TypeError, "padding"),
    (lambda: Conv2d(3, 4, 3, stride="2"), TypeError, "stride"),
    (lambda: Conv2d(3, 4, True), TypeError, "kernel_size"),
    (lambda: Conv2d(3, 4, 3, groups=2.0), TypeError, "groups"),
    (lambda: MaxPool2d(0), ValueError, "kernel_size"),
    (lambda: MaxPool2d(2, stride=0), ValueError, "stride"),
    (lambda: MaxPool2d(2.9), TypeError, "kernel_size"),
    (lambda: AvgPool2d(2, padding=-1), ValueError, "padding"),
    (lambda: AvgPool2d(2, stride="2"), TypeError, "stride"),
    (lambda: Linear(0, 4), ValueError, "in_features"),
    (lambda: Linear(4, 2.5), TypeError, "out_features"),
    (lambda: BatchNorm2d(0), ValueError, "num_features"),
    (lambda: BatchNorm2d(4, eps=-1), ValueError, "eps"),
    (lambda: BatchNorm2d(4, eps=float("nan")), ValueError, "eps"),
    (lambda: BatchNorm2d(4, momentum=2), ValueError, "momentum"),
    (lambda: Pad(1.5), TypeError, "padding"),
    (lambda: Bias((4, 0, 1)), ValueError, "shape"),
    (lambda: Bias((4, 1.5)), TypeError, "shape"),
])
def test_layer_geometry_is_checked(make, exc, name):
    with pytest.raises(exc, match=name):
        make()


def test_layer_geometry_accepts_numpy_integers_and_refuses_floats():
    conv = Conv2d(np.int64(3), np.int32(4), np.int64(3), stride=(np.int64(2), 2), padding=np.int16(1))
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1, 1, 1)
    assert type(conv.in_channels) is int and type(conv.stride[0]) is int
    assert MaxPool2d(np.int64(2)).kernel_size == (2, 2)
    json.dumps(conv.config())     # plain ints: the config stays JSON-able
    with pytest.raises(TypeError, match="stride must be an integer, got 2.0"):
        Conv2d(3, 4, 3, stride=(np.int64(2), 2.0))


def test_zero_stride_never_reaches_the_shape_arithmetic():
    m = Model(input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="stride"):
        m.add("p", MaxPool2d(2, stride=0))
    assert len(m) == 0


@pytest.mark.parametrize("conv_param, exc, name", [
    ({"stride": 1.5}, TypeError, r"conv_param\['stride'\]"),
    ({"pad": 0.9}, TypeError, r"conv_param\['pad'\]"),
    ({"pad": 1.0}, TypeError, r"conv_param\['pad'\]"),
    ({"stride": "2"}, TypeError, r"conv_param\['stride'\]"),
    ({"stride": 0}, ValueError, r"conv_param\['stride'\]"),
    ({"pad": -1}, ValueError, r"conv_param\['pad'\]"),
    ({"dilation": 0}, ValueError, r"conv_param\['dilation'\]"),
    ({"groups": 1.0}, TypeError, r"conv_param\['groups'\]"),
])
def test_conv_forward_geometry_is_checked(conv_param, exc, name):
    x = np.random.rand(1, 3, 8, 8).astype(np.float32)
    w = np.random.rand(4, 3, 3, 3).astype(np.float32)
    with pytest.raises(exc, match=name):
        L.conv_forward(x, w, None, conv_param)


@pytest.mark.parametrize("pool_param, exc, name", [
    ({"pool_height": 2.9, "pool_width": 2, "stride": 2}, TypeError, "pool_height"),
    ({"pool_height": 2, "pool_width": 0, "stride": 2}, ValueError, "pool_width"),
    ({"pool_height": 2, "pool_width": 2, "stride": "2"}, TypeError, "stride"),
    ({"pool_height": 2, "pool_width": 2, "stride": 2, "pad": 0.5}, TypeError, "pad"),
])
def test_pool_forward_geometry_is_checked(pool_param, exc, name):
    x = np.random.rand(1, 3, 8, 8).astype(np.float32)
    with pytest.raises(exc, match=name):
        L.max_pool_forward(x, pool_param)
    with pytest.raises(exc, match=name):
        L.avg_pool_forward(x, pool_param)


def test_functional_geometry_accepts_numpy_integers_and_refuses_floats():
    x = np.random.rand(1, 3, 8, 8).astype(np.float32)
    w = np.random.rand(4, 3, 3, 3).astype(np.float32)
    a, _ = L.conv_forward(x, w, None, {"stride": np.int64(2), "pad": np.int32(1)})
    b, _ = L.conv_forward(x, w, None, {"stride": 2, "pad": 1})
    np.testing.assert_array_equal(a, b)
    out, _ = L.max_pool_forward(x, {"pool_height": np.int64(2), "pool_width": 2, "stride": np.int64(2)})
    assert out.shape == (1, 3, 4, 4)
    with pytest.raises(TypeError, match="pool_width"):
        L.max_pool_forward(x, {"pool_height": np.int64(2), "pool_width": 2.0, "stride": 2})


# ---------------------------------------------------------------------------- algorithm arguments
def test_algorithms_name_a_model_that_is_not_a_model():
    X = images()
    for run in (lambda: gradvis.compute_saliency_maps(X, 1, None),
                lambda: gradvis.make_fooling_image(X, 1, "model"),
                lambda: gradvis.create_class_visualization(1, None),
                lambda: gradvis.invert_features(X, "conv1", None),
                lambda: gradvis.deepdream(X, "conv1", object())):
        with pytest.raises(TypeError, match="model must be a gradvis.Model"):
            run()


def test_class_algorithms_need_class_scores():
    X = images(1)
    with pytest.raises(ValueError, match="class scores"):
        gradvis.compute_saliency_maps(X, 1, fully_conv_net())
    with pytest.raises(ValueError, match="class scores"):
        gradvis.make_fooling_image(X, 1, fully_conv_net())
    no_params = Model(input_shape=(3, 8, 8))
    no_params.add("r", ReLU())
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        gradvis.create_class_visualization(1, no_params, num_iterations=1)


@pytest.mark.parametrize("channel, exc", [(2.7, TypeError), ("a", TypeError), (True, TypeError),
                                          (np.float64(1.0), TypeError)])
def test_deepdream_channel_must_be_an_integer_in_range(channel, exc):
    with pytest.raises(exc, match="channel"):
        gradvis.deepdream(images(1), "conv1", tiny_net(), num_iterations=1, channel=channel)


def test_deepdream_channel_takes_numpy_integers_but_not_floats():
    m = tiny_net()
    a = gradvis.deepdream(images(1), "conv1", m, num_iterations=2, channel=np.int64(1))
    b = gradvis.deepdream(images(1), "conv1", m, num_iterations=2, channel=1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="channel must be an integer"):
        gradvis.deepdream(images(1), "conv1", m, num_iterations=2, channel=1.0)


@pytest.mark.parametrize("size, exc", [((63.7, 64.9), TypeError), ((8, 8, 3), ValueError),
                                       ((-5, 8), ValueError), ((0, 8), ValueError), ("8", TypeError),
                                       (8.0, TypeError)])
def test_image_size_must_be_positive_ints(size, exc):
    with pytest.raises(exc, match="image_size"):
        gradvis.create_class_visualization(1, tiny_net(), num_iterations=1, image_size=size)


def test_one_int_image_size_is_a_square():
    m = tiny_net()
    a = gradvis.create_class_visualization(1, m, num_iterations=1, image_size=12)
    b = gradvis.create_class_visualization(1, m, num_iterations=1, image_size=(12, 12))
    assert a.shape == (1, 3, 12, 12)
    np.testing.assert_array_equal(a, b)


def test_image_size_must_agree_with_init():
    m = tiny_net()
    init = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="image_size .* conflicts with init"):
        gradvis.create_class_visualization(1, m, num_iterations=1, init=init, image_size=(4, 4))
    feats, _ = m.forward(images(1), end="relu1")
    with pytest.raises(ValueError, match="conflicts with init"):
        gradvis.invert_features(feats, "relu1", m, num_iterations=1, init=init, image_size=6)
    out = gradvis.create_class_visualization(1, m, num_iterations=1, init=init, image_size=(8, 8))
    assert out.shape == (1, 3, 8, 8)


@pytest.mark.parametrize("scale, exc", [(float("inf"), ValueError), (float("nan"), ValueError),
                                        (-1.0, ValueError), ("10", TypeError)])
def test_init_scale_must_be_finite_and_non_negative(scale, exc):
    m = tiny_net()
    with pytest.raises(exc, match="init_scale"):
        gradvis.create_class_visualization(1, m, num_iterations=1, init_scale=scale, clip=False)
    feats, _ = m.forward(images(1), end="relu1")
    with pytest.raises(exc, match="init_scale"):
        gradvis.invert_features(feats, "relu1", m, num_iterations=1, init_scale=scale)


@pytest.mark.parametrize("beta, exc", [(float("nan"), ValueError), (float("inf"), ValueError),
                                       (0.5, ValueError), ("2", TypeError)])
def test_tv_beta_is_checked(beta, exc):
    m = tiny_net()
    feats, _ = m.forward(images(1), end="relu1")
    with pytest.raises(exc, match="tv_beta"):
        gradvis.invert_features(feats, "relu1", m, num_iterations=1, tv_beta=beta)


@pytest.mark.parametrize("beta", [float("nan"), float("inf"), "2"])
def test_total_variation_beta_is_checked(beta):
    with pytest.raises(ValueError, match="beta"):
        total_variation(images(1), beta)


@pytest.mark.parametrize("sigma, exc", [(-1.0, ValueError), (float("nan"), ValueError),
                                        ("1", TypeError), ((0.0, -1.0), ValueError)])
def test_blur_sigma_must_be_finite_and_non_negative(sigma, exc):
    with pytest.raises(exc, match="sigma"):
        blur(images(1), sigma)


def test_blur_sigma_zero_and_pairs():
    X = images(1)
    assert blur(X, 0.0) is X
    assert blur(X, (0, 0)) is X
    np.testing.assert_array_equal(blur(X, (1.0, 1.0)), blur(X, 1.0))


def test_huge_max_jitter_is_refused_before_any_work():
    with pytest.raises(ValueError, match="max_jitter"):
        gradvis.create_class_visualization(1, tiny_net(), max_jitter=2**70)
    with pytest.raises(ValueError, match="max_jitter"):
        gradvis.deepdream(images(1), "conv1", tiny_net(), max_jitter=2**40)


def test_blur_kind_is_checked_before_any_work():
    with pytest.raises(ValueError, match="blur_kind"):
        gradvis.create_class_visualization(1, tiny_net(), num_iterations=1, blur_kind="box")


# ---------------------------------------------------------------------------- model files
def test_a_declared_layer_is_checked_against_the_stored_arrays_before_it_is_built(tmp_path):
    good = tiny_net().save(tmp_path / "good.npz")

    def huge(h):
        h["nodes"].append({"name": "big", "type": "Linear", "inputs": ["fc"],
                           "config": {"in_features": 10**6, "out_features": 10**6, "bias": False}})
    p = _rewrite(good, tmp_path / "huge.npz", _edit_header(huge))
    # a 10**12-value weight is never allocated: the missing array is reported at once
    with pytest.raises(ValueError, match="missing array 'param/big.weight'"):
        load_model(p)

    def wide(h):
        h["nodes"][0]["config"]["out_channels"] = 10**9
    with pytest.raises(ValueError, match=r"array 'param/conv1.weight' has shape \(4, 3, 3, 3\)"):
        load_model(_rewrite(good, tmp_path / "wide.npz", _edit_header(wide)))


@pytest.mark.parametrize("key, value", [("meta/mean", [np.nan, 0, 0]), ("meta/mean", [np.inf, 0, 0]),
                                        ("meta/std", [np.inf, 1, 1])])
def test_model_file_normalization_must_be_finite(tmp_path, key, value):
    good = tiny_net().save(tmp_path / "good.npz")
    p = _rewrite(good, tmp_path / "bad.npz", lambda a: a.__setitem__(key, np.array(value, np.float32)))
    with pytest.raises(ValueError, match=r"bad\.npz.*(mean|std)"):
        load_model(p)


def test_model_file_variances_must_not_be_negative(tmp_path):
    m = Model(input_shape=(3, 8, 8), seed=0)
    m.add("conv1", Conv2d(3, 4, 3, padding=1)).add("bn1", BatchNorm2d(4)).add("gap", GlobalAvgPool())
    m.add("flat", Flatten()).add("fc", Linear(4, 5))
    good = m.save(tmp_path / "good.npz")
    load_model(good)
    var = np.array([1, 0.5, -0.25, 2], np.float32)
    p = _rewrite(good, tmp_path / "bad.npz", lambda a: a.__setitem__("buffer/bn1.running_var", var))
    with pytest.raises(ValueError, match=r"bad\.npz: node 'bn1': BatchNorm2d: running_var has negative entries"):
        load_model(p)


@pytest.mark.parametrize("field, names", [("class_names", ["a"]), ("class_names", [f"c{i}" for i in range(6)]),
                                          ("wnids", ["n1", "n2"])])
def test_model_file_names_must_match_the_classes(tmp_path, field, names):
    good = tiny_net().save(tmp_path / "good.npz")
    p = _rewrite(good, tmp_path / "bad.npz", _edit_header(lambda h: h.__setitem__(field, names)))
    with pytest.raises(ValueError, match=rf"bad\.npz: {field} has {len(names)} entries but the model has 5 classes"):
        load_model(p)


@pytest.mark.parametrize("edit, what", [
    (lambda h: h["nodes"][0]["config"].__setitem__("stride", [0, 0]), "stride"),
    (lambda h: h["nodes"][0]["config"].__setitem__("kernel_size", [0, 0]), "kernel_size"),
    (lambda h: h["nodes"][2]["config"].__setitem__("stride", [0, 0]), "stride"),
    (lambda h: h.__setitem__("input_shape", []), "input_shape"),
    (lambda h: h.__setitem__("class_names", {"a": 1}), "class_names"),
    (lambda h: h.__setitem__("nodes", "abc"), "nodes"),
    (lambda h: h["nodes"][0].__setitem__("config", [1, 2]), "config"),
    (lambda h: h.__setitem__("version", 0), "version"),
])
def test_broken_model_file_descriptions_are_named(tmp_path, edit, what):
    good = tiny_net().save(tmp_path / "good.npz")
    p = _rewrite(good, tmp_path / "bad.npz", _edit_header(edit))
    with pytest.raises(ValueError, match=rf"bad\.npz.*{what}"):
        load_model(p)


def test_version_as_a_string_is_not_called_newer(tmp_path):
    good = tiny_net().save(tmp_path / "good.npz")
    p = _rewrite(good, tmp_path / "bad.npz", _edit_header(lambda h: h.__setitem__("version", "1")))
    with pytest.raises(ValueError, match="unknown file format version '1'") as info:
        load_model(p)
    assert "newer" not in str(info.value)


@pytest.mark.parametrize("content, what", [(b"", "an empty file"), (b"hello", "not a zip archive"),
                                           (bytes(range(256)) * 20, "not a zip archive")])
def test_files_that_are_not_archives_get_a_plain_message(tmp_path, content, what):
    p = tmp_path / "m.npz"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=what) as info:
        load_model(p)
    assert "allow_pickle" not in str(info.value) and str(p) in str(info.value)


def test_pickled_arrays_get_the_packages_own_message(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, __gradvis__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled") as info:
        load_model(p)
    assert "allow_pickle" not in str(info.value) and "unsafely" not in str(info.value)


# ---------------------------------------------------------------------------- training options
@pytest.mark.parametrize("field, value", [("batch_size", 0), ("lr", float("nan")), ("lr", 0.0),
                                          ("label_smoothing", 1.5), ("num_threads", 100000),
                                          ("momentum", -0.1), ("checkpoint_every", 0), ("crop", -1),
                                          ("optimizer", "adam"), ("epochs", float("inf"))])
def test_train_config_is_checked(field, value):
    with pytest.raises((TypeError, ValueError), match=field if field != "optimizer" else "optimizer"):
        TrainConfig(**{field: value}).validate()


def test_default_train_config_is_valid():
    assert TrainConfig().validate() == TrainConfig()


# ---------------------------------------------------------------------------- command line


def _photo(tmp_path, size=(8, 8)):
    from PIL import Image
    p = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size + (3,), dtype=np.uint8)).save(p)
    return p


@pytest.mark.parametrize("threads", [1025, 100000, 99999999999])
def test_cli_threads_has_an_upper_limit(tmp_path, capsys, threads):
    code, _, err = run_cli(capsys, "predict", _photo(tmp_path), "--threads", threads)
    assert code == 2
    assert err.startswith("gradvis: error: argument --threads: must be <= 1024")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("edit", [
    lambda h: h["nodes"][0]["config"].__setitem__("stride", [0, 0]),
    lambda h: h["nodes"][0]["config"].__setitem__("kernel_size", [0, 0]),
    lambda h: h.__setitem__("input_shape", []),
    lambda h: h.__setitem__("class_names", ["a"]),
])
def test_cli_broken_model_files_end_in_one_line(tmp_path, capsys, edit):
    good = tiny_net().save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", _edit_header(edit))
    for argv in (["predict", _photo(tmp_path), "--model", bad, "-q"], ["classes", "--model", bad],
                 ["layers", "--model", bad]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, err
        assert err.startswith("gradvis: error: cannot load model") and len(err.strip().splitlines()) == 1


def test_cli_model_with_nan_mean_ends_in_one_line(tmp_path, capsys):
    good = tiny_net().save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz",
                   lambda a: a.__setitem__("meta/mean", np.array([np.nan, 0, 0], np.float32)))
    code, _, err = run_cli(capsys, "saliency", _photo(tmp_path), "--model", bad, "-q", "-o", tmp_path / "out")
    assert code == 2 and "mean" in err and len(err.strip().splitlines()) == 1


def test_cli_model_without_class_scores_ends_in_one_line(tmp_path, capsys):
    p = fully_conv_net().save(tmp_path / "fc.npz")
    for argv in (["predict", _photo(tmp_path), "--model", p, "-q"], ["classes", "--model", p]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "class scores" in err and len(err.strip().splitlines()) == 1


def test_cli_decompression_bomb_ends_in_one_line(tmp_path, capsys, monkeypatch):
    from PIL import Image
    photo = _photo(tmp_path, (16, 16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)      # 256 pixels > 2 x the limit: an error
    code, _, err = run_cli(capsys, "predict", photo, "-q")
    assert code == 2 and "too large" in err and len(err.strip().splitlines()) == 1


def test_cli_decompression_bomb_warning_as_error_ends_in_one_line(tmp_path, capsys, monkeypatch):
    from PIL import Image
    photo = _photo(tmp_path, (16, 16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)      # 256 pixels: only a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(cli.UsageError, match="too large"):
            cli_common.read_image(photo)


def test_cli_train_options_are_checked(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    code, _, err = run_cli(capsys, "train", tmp_path / "data", "--label-smoothing", "5", "-o", tmp_path / "out",
                           "-q")
    assert code == 2 and "label_smoothing" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", tmp_path / "data", "--num-threads", "100000", "-o",
                           tmp_path / "out", "-q")
    assert code == 2 and "num_threads" in err
