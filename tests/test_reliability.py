"""Regression tests of the reliability checks: model files read member by member,
errors of the right kind naming the argument, strict parsing, and a first run
of the command line without surprises."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import gradvis
from gradvis.nn.fileformat import model_arrays, save_model, write_arrays


def small_model():
    m = gradvis.Model(input_shape=(3, 8, 8), class_names=["cat", "dog", "lemon"])
    m.add("conv", gradvis.Conv2d(3, 4, 3, padding=1)).add("relu", gradvis.ReLU())
    m.add("gap", gradvis.GlobalAvgPool()).add("flatten", gradvis.Flatten()).add("fc", gradvis.Linear(4, 3))
    return m.init_params(seed=0)


def _with_member(src, dst, name, data, compress=True):
    """Copy the zip ``src`` to ``dst`` adding member ``name`` (deflated when ``compress``)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr(zipfile.ZipInfo(name), data,
                      compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    return dst


def _zeros_npy(nbytes):
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)})
    return head.getvalue() + bytes(nbytes)


# ---------------------------------------------------------------------------- model files
@pytest.mark.parametrize("name", ["state/zeros.npy", "extra/zeros.npy", "param/conv.weight.npy"])
def test_a_zip_bomb_member_is_refused_before_decompression(tmp_path, name):
    src = small_model().save(tmp_path / "m.npz")
    if name.startswith("param/"):          # replace the real member by the bomb
        with zipfile.ZipFile(src) as z:
            keep = {i.filename: z.read(i.filename) for i in z.infolist() if i.filename != name}
        src = tmp_path / "m2.npz"
        with zipfile.ZipFile(src, "w") as z:
            for k, v in keep.items():
                z.writestr(k, v)
    bomb = _with_member(src, tmp_path / "bomb.npz", name, _zeros_npy(48 << 20))
    assert bomb.stat().st_size < (1 << 20)
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bomb.npz") as e:
            gradvis.load_model(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (8 << 20), f"{peak} bytes allocated before refusing"
    assert name[:-4].split("/")[0] in str(e.value) or "ratio" in str(e.value)


def test_unknown_and_duplicate_members_are_refused(tmp_path):
    src = small_model().save(tmp_path / "m.npz")
    f = _with_member(src, tmp_path / "u.npz", "notes.txt", b"hello", compress=False)
    with pytest.raises(ValueError, match="unexpected member 'notes.txt'"):
        gradvis.load_model(f)
    with pytest.warns(UserWarning, match="Duplicate"):
        f = _with_member(src, tmp_path / "d.npz", "param/fc.bias.npy", _zeros_npy(12), compress=False)
    with pytest.raises(ValueError, match="appears twice"):
        gradvis.load_model(f)


def test_a_member_whose_npy_header_disagrees_with_the_architecture_is_not_read(tmp_path):
    m = small_model()
    arrays = model_arrays(m)
    arrays["param/fc.weight"] = np.zeros((4, 4), np.float32)      # the architecture says (4, 3)
    write_arrays(tmp_path / "s.npz", arrays)
    with pytest.raises(ValueError, match=r"'param/fc.weight' has shape \(4, 4\), the architecture needs \(4, 3\)"):
        gradvis.load_model(tmp_path / "s.npz")


def test_training_state_must_match_the_parameters(tmp_path):
    m = small_model()
    ok = save_model(m, tmp_path / "ok.npz", extra_arrays={"sgd.v/fc.weight": np.zeros((4, 3), np.float32),
                                                   "perm": np.arange(10), "adamw.t": np.array(3)})
    state = gradvis.io.read_model_file(ok)[2]
    assert set(state) == {"sgd.v/fc.weight", "perm", "adamw.t"}
    for extra, match in (({"sgd.v/fc.weight": np.zeros((5, 3), np.float32)}, "architecture needs"),
                         ({"perm": np.zeros((2, 2), np.int64)}, "1-D"),
                         ({"blob/x": np.zeros(3)}, "unexpected training state"),
                         ({"counter": np.zeros(1000)}, "larger than")):
        f = save_model(m, tmp_path / "bad.npz", overwrite=True, extra_arrays=extra)
        with pytest.raises(ValueError, match=match):
            gradvis.io.read_model_file(f)


def test_a_nan_bias_flag_in_a_model_file_is_refused(tmp_path):
    arrays = model_arrays(small_model())
    header = json.loads(arrays["__gradvis__"].tobytes())
    header["nodes"][0]["config"]["bias"] = float("nan")
    arrays["__gradvis__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    write_arrays(tmp_path / "nan.npz", arrays)
    with pytest.raises(ValueError, match=r"Conv2d: bias must be True or False, got nan"):
        gradvis.load_model(tmp_path / "nan.npz")


# ---------------------------------------------------------------------------- errors of the right kind
@pytest.fixture(scope="module")
def model():
    return small_model()


def test_a_layer_index_out_of_range_is_a_value_error_naming_the_argument(model):
    X = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"^end: layer index 99 is out of range for a model with 5 layers"):
        model.forward(X, end=99)
    with pytest.raises(gradvis.LayerNotFoundError, match="^start: layer index -6"):
        model.forward(X, start=-6)
    feats, _ = model.forward(X, end="relu")
    with pytest.raises(ValueError, match="^layer: layer index 99"):
        gradvis.invert_features(feats, 99, model, num_iterations=1)
    with pytest.raises(ValueError, match="^layer: no layer named 'relu9'"):
        gradvis.deepdream(X, "relu9", model, num_iterations=1)


@pytest.mark.parametrize("tv_beta", [1e30, 16.5, 50.0])
def test_invert_features_refuses_a_tv_beta_that_overflows(model, tv_beta):
    feats, _ = model.forward(np.ones((1, 3, 8, 8), np.float32), end="relu")
    with pytest.raises(ValueError, match=r"^tv_beta must be between 1 and 16"):
        gradvis.invert_features(feats, "relu", model, num_iterations=3, tv_beta=tv_beta)


def test_invert_features_stays_finite_up_to_the_largest_tv_beta(model):
    X = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32) * 50
    feats, _ = model.forward(X, end="relu")
    with np.errstate(all="raise"):
        out = gradvis.invert_features(feats, "relu", model, num_iterations=5, tv_beta=16.0, tv_reg=1e3)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"gradient overflowed .*tv_reg=1e\+300"):
        gradvis.invert_features(feats, "relu", model, num_iterations=3, tv_reg=1e300)


# ---------------------------------------------------------------------------- strict parsing
@pytest.mark.parametrize("call,name", [
    (lambda x: gradvis.layers.gaussian_blur(x, 1.0, truncate="4"), "truncate"),
    (lambda x: gradvis.layers.gaussian_blur(x, "1"), "sigma"),
    (lambda x: gradvis.layers.leaky_relu_forward(x, "0.1"), "alpha"),
    (lambda x: gradvis.layers.hardsigmoid_forward(x, beta="0.5"), "beta"),
    (lambda x: gradvis.layers.relu6_forward(x, hi="6"), "hi"),
    (lambda x: gradvis.layers.batchnorm_forward(x[:, :, 0, 0], np.ones(1), np.zeros(1),
                                                {"mode": "train", "eps": "1e-5"}), "eps"),
    (lambda x: gradvis.layers.max_pool_forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2,
                                                   "ceil_mode": "False"}), "ceil_mode"),
    (lambda x: gradvis.Conv2d(1, 1, 3, bias=float("nan")), "bias"),
    (lambda x: gradvis.Linear(2, 2, bias=1), "bias"),
    (lambda x: gradvis.MaxPool2d(2, ceil_mode=0.0), "ceil_mode"),
    (lambda x: gradvis.HardSigmoid(alpha="0.2"), "alpha"),
])
def test_numeric_strings_and_nan_flags_are_refused(call, name):
    x = np.ones((2, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match=name):
        call(x)


def test_a_ragged_list_names_the_argument():
    with pytest.raises(ValueError, match="^x is not an array of numbers"):
        gradvis.layers.relu_forward([[1.0, 2.0], [3.0]])


def test_the_algorithms_take_class_names(model):
    X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    by_name = gradvis.compute_saliency_maps(X, ["lemon", "Cat"], model)
    np.testing.assert_array_equal(by_name, gradvis.compute_saliency_maps(X, [2, 0], model))
    np.testing.assert_array_equal(gradvis.compute_saliency_maps(X, "dog", model),
                                  gradvis.compute_saliency_maps(X, 1, model))
    a = gradvis.create_class_visualization(["lem", 1], model, num_iterations=2, seed=0)
    b = gradvis.create_class_visualization([2, 1], model, num_iterations=2, seed=0)
    np.testing.assert_array_equal(a, b)
    Xf = gradvis.make_fooling_image(X[:1], "dog", model, max_iter=2)
    assert Xf.shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^target_y: unknown class 'lemonade'"):
        gradvis.create_class_visualization("lemonade", model, num_iterations=1)
    bare = small_model()
    bare.class_names = None
    with pytest.raises(TypeError, match="no class names"):
        gradvis.compute_saliency_maps(X, ["lemon", "cat"], bare)


# ---------------------------------------------------------------------------- a first run
def test_load_image_returns_uint8_hwc(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    img = gradvis.load_image(tmp_path / "a.png")
    assert img.shape == (30, 50, 3) and img.dtype == np.uint8
    assert gradvis.load_image(tmp_path / "a.png", size=16).shape == (16, 16, 3)
    assert gradvis.load_image(tmp_path / "a.png", size=(8, 20)).shape == (8, 20, 3)
    with pytest.raises(FileNotFoundError):
        gradvis.load_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="size"):
        gradvis.load_image(tmp_path / "a.png", size="64")


def test_a_thin_strip_is_cropped_before_it_is_resized(tmp_path):
    import resource
    from PIL import Image
    Image.fromarray(np.full((1, 65000, 3), 100, np.uint8)).save(tmp_path / "strip.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    img = gradvis.load_image(tmp_path / "strip.png", size=64)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert img.shape == (64, 64, 3) and (img == 100).all()
    assert grown < (100 << 20), f"peak memory grew by {grown} bytes"


def test_the_smallest_input_size_comes_from_the_geometry():
    m = gradvis.Model(input_shape=(3, 32, 32))
    m.add("conv", gradvis.Conv2d(3, 2, 5)).add("pool", gradvis.MaxPool2d(2, 2))
    m.add("conv2", gradvis.Conv2d(2, 2, (3, 1), stride=2)).add("gap", gradvis.GlobalAvgPool())
    # H: 5x5 conv -> h - 4 >= 2 for the pool -> (h - 4) // 2 >= 3 for the 3-tall conv: h >= 10
    # W: w - 4 >= 2 -> (w - 4) // 2 >= 1: w >= 6
    assert m.min_input_size() == (10, 6)
    assert m.fits((10, 6)) and not m.fits((9, 6)) and not m.fits((10, 5))
    assert m.min_input_size(end="conv") == (5, 5)
    with pytest.raises(ValueError, match="^end: no layer named 'conv3'"):
        m.fits((10, 6), end="conv3")


def _cli(capsys, *argv):
    from gradvis import cli
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, pattern):
    import re
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gradvis: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("size", [(4, 4), (8, 8), (14, 64), (64, 3)])
def test_classvis_names_the_smallest_size_the_model_takes(capsys, tmp_path, size):
    code, out, err = _cli(capsys, "classvis", "lemon", "--size", *size, "-n", "1", "-q", "-o", tmp_path)
    least = gradvis.load_pretrained().min_input_size()
    _one_line_error(code, err, rf"--size {size[0]} {size[1]} is too small for the model, which needs "
                               rf"at least --size {least[0]} {least[1]}")
    assert not list(tmp_path.iterdir())


def test_dream_refuses_a_million_octaves_at_once(capsys, tmp_path):
    import time
    from PIL import Image
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "p.png")
    t = time.perf_counter()
    code, out, err = _cli(capsys, "dream", tmp_path / "p.png", "-l", "relu3", "--octaves", 1000000, "-q",
                          "-o", tmp_path)
    assert time.perf_counter() - t < 20
    _one_line_error(code, err, r"octaves=1000000 is too many for this 64x64 image: .* at most \d+ octave")


def test_classes_and_layers_take_quiet(capsys):
    code, out, err = _cli(capsys, "classes", "--quiet", "lemon")
    assert code == 0 and "lemon" in out and not err
    code, out, err = _cli(capsys, "layers", "-q")
    assert code == 0 and "relu1" in out


def test_demo_writes_into_its_own_directory_by_default():
    from gradvis.cli import build_parser
    args = build_parser().parse_args(["demo"])
    assert args.out == "gradvis-demo"
    assert build_parser().parse_args(["saliency", "x.png"]).out == "."


def test_smoothgrad_holds_at_most_a_batch_of_noisy_copies(model, monkeypatch):
    X = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    whole = gradvis.smoothgrad_saliency_maps(X, [1], model, num_samples=12, seed=5, batch_size=64)
    from gradvis.attribution import saliency_maps as saliency
    seen = []
    real = saliency.class_score_gradient
    monkeypatch.setattr(saliency, "class_score_gradient", lambda m, x, y: seen.append(len(x)) or real(m, x, y))
    chunked = gradvis.smoothgrad_saliency_maps(X, [1], model, num_samples=12, seed=5, batch_size=5)
    assert max(seen) <= 5 and sum(seen) == 12
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)   # the same noise, in chunks
    with pytest.raises(ValueError, match="^noise_level 1e\\+300"):
        gradvis.smoothgrad_saliency_maps(X, [1], model, num_samples=2, noise_level=1e300)


def test_strings_are_not_pixels_or_sizes(model):
    with pytest.raises(TypeError, match="X must be a real numeric array"):
        model.deprocess(np.full((1, 3, 8, 8), "0.5"))
    from gradvis.nn.imageops import resize
    with pytest.raises(TypeError, match="size must be an integer"):
        resize(np.zeros((1, 3, 4, 4), np.float32), ("4", 4))
    with pytest.raises(TypeError, match="size must be an integer"):
        resize(np.zeros((1, 3, 4, 4), np.float32), (4.5, 4))


@pytest.mark.parametrize("x", [0.75, np.float32(-0.5), np.array(1.5, np.float16), np.array(-2.0)],
                         ids=["float", "np.float32", "0-d float16", "0-d float64"])
def test_zero_d_inputs_stay_zero_d(x):
    for name in ("relu", "sigmoid", "tanh", "silu", "hardswish", "leaky_relu"):
        out, cache = getattr(gradvis.layers, f"{name}_forward")(x)
        assert out.shape == (), name
        dx = getattr(gradvis.layers, f"{name}_backward")(np.float32(1.0), cache)
        assert dx.shape == (), name
    ref = {"relu": max(float(x), 0.0)}
    assert float(gradvis.layers.relu_forward(x)[0]) == pytest.approx(ref["relu"], rel=1e-3)
