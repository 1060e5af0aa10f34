"""The gradvis command line, end to end in a temporary directory, on a real photo
(matplotlib's grace_hopper.jpg) and the bundled model."""
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import gradvis
from gradvis import cli
from gradvis.cli import common as cli_common
from helpers import assert_usage_error, require_weights, run_cli

# The command runs beside other work: one OpenMP thread avoids oversubscription stalls.
pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def model():
    require_weights()
    return gradvis.load_pretrained()


@pytest.fixture
def photo():
    return str(cli_common.sample_photo_path())






# ----------------------------------------------------------------------------- help
def test_module_help_subprocess():
    r = subprocess.run([sys.executable, "-m", "gradvis", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for sub in ("predict", "saliency", "fool", "classvis", "invert", "dream", "train", "evaluate", "demo"):
        assert sub in r.stdout


# ----------------------------------------------------------------------------- subcommands
def test_predict(capsys, model, photo, tmp_path):
    code, out, err = run_cli(capsys, "predict", photo, "-k", 3, "--out", tmp_path, "--save-npy")
    assert code == 0, err
    assert "grace_hopper.jpg" in out and len(re.findall(r"^\s+\d\.", out, re.M)) == 3
    assert "center-cropped to 64x64" in err        # says what it did to the photo
    probs = np.load(tmp_path / "predictions.npy")
    assert probs.shape == (1, model.num_classes) and abs(probs.sum() - 1) < 1e-4
    assert f"knows {model.num_classes} classes" in err and "--crops 5" in err and "--model" in err


@pytest.mark.parametrize("crops", [5, 10])
def test_predict_multi_crop_is_the_mean_of_the_views(capsys, model, photo, tmp_path, crops):
    from gradvis.io.images import multi_crops, read_rgb
    from gradvis.nn.losses import softmax
    code, out, err = run_cli(capsys, "predict", photo, "--crops", crops, "--out", tmp_path, "--save-npy")
    assert code == 0, err
    assert f"mean of {crops} views" in err
    views = multi_crops(read_rgb(photo)[0], tuple(model.input_shape[1:]), crops)
    want = softmax(model.predict(model.preprocess(views))).mean(0)
    np.testing.assert_allclose(np.load(tmp_path / "predictions.npy")[0], want, rtol=1e-5, atol=1e-7)
    code, out, err = run_cli(capsys, "predict", photo, "--crops", 3)
    assert code != 0 and "--crops" in err


def test_saliency_files_and_quiet(capsys, model, photo, tmp_path):
    code, out, err = run_cli(capsys, "saliency", photo, "--class", "goldfish", "--out", tmp_path,
                         "--save-npy", "--quiet")
    assert code == 0, err
    assert err == ""
    assert (tmp_path / "grace_hopper_saliency.png").stat().st_size > 1000
    sal = np.load(tmp_path / "grace_hopper_saliency.npy")
    assert sal.shape == (1, 64, 64) and (sal >= 0).all() and sal.max() > 0
    assert "goldfish" in out


def test_fool(capsys, model, photo, tmp_path):
    code, out, err = run_cli(capsys, "fool", photo, "--target", "n01443537", "--eps", 8, "--max-iter", 100,
                             "--out", tmp_path, "-q", "--save-npy")
    assert code == 0, err
    assert "fooled: yes" in out, out
    assert "within eps 8/255" in out
    m = re.search(r"max ([\d.]+)", out)
    assert float(m.group(1)) <= 8.0 + 1e-3
    assert (tmp_path / "grace_hopper_fooling.png").is_file()
    # what was saved is what fooled the model
    fooled = np.load(tmp_path / "grace_hopper_fooled.npy")
    assert model.predict(fooled).argmax(1)[0] == model.wnids.index("n01443537")
    from PIL import Image
    assert Image.open(tmp_path / "grace_hopper_fooled.png").size == (64, 64)


def test_classvis_snapshots(capsys, model, tmp_path):
    code, out, err = run_cli(capsys, "classvis", "22", "-n", 4, "--snapshots", 2, "--out", tmp_path, "-q")
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and any(f.endswith("_snapshots.png") for f in files)


def test_invert_shallow_and_deep(capsys, model, photo, tmp_path):
    code, out, err = run_cli(capsys, "invert", photo, "--layer", "relu2", "19", "-n", 3, "--out", tmp_path, "-q")
    assert code == 0, err
    assert (tmp_path / "grace_hopper_invert_relu2.png").is_file()
    assert (tmp_path / f"grace_hopper_invert_{model.layer_names[19]}.png").is_file()
    assert (tmp_path / "grace_hopper_inversion.png").is_file()


def test_dream_keeps_photo_size(capsys, model, tmp_path):
    from PIL import Image
    src = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(src)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "dream", src, "--layer", "relu3", "--octaves", 2, "-n", 1, "--out", out_dir)
    assert code == 0, err
    assert "own size, 70x50" in err and "RGBA" in err
    assert Image.open(out_dir / "odd_dream_relu3.png").size == (70, 50)
    assert (out_dir / "odd_dream_relu3_snapshots.png").is_file()
    code, out, err = run_cli(capsys, "dream", src, "--layer", "relu3", "--octaves", 2, "-n", 2, "--param", "fft",
                             "--out", tmp_path / "fft")
    assert code == 0, err
    assert "Fourier parameterization" in out + err
    assert Image.open(tmp_path / "fft" / "odd_dream_relu3.png").size == (70, 50)


def test_train_and_evaluate_image_folder(capsys, model, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    # folders named by two of the model's wnids, so the bundled model can be evaluated on them too
    for k, wnid in enumerate(model.wnids[:2]):
        (data / wnid).mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            img[..., k] = 255
            Image.fromarray(img).save(data / wnid / f"{i}.png")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", data, "--out", run_dir, "--epochs", 1, "--batch-size", 4,
                         "--image-size", 32, "--val-fraction", 0.34, "--eval-every", 0, "-q")
    assert code == 0, err
    assert (run_dir / "final.npz").is_file() and "held-out top-1" in out
    code, out, err = run_cli(capsys, "evaluate", data, "--model", run_dir / "final.npz", "-q")
    assert code == 0, err
    assert re.search(r"top-1 accuracy: [01]\.\d{4}", out) and "12 images" in out
    code, out, err = run_cli(capsys, "evaluate", data, "-q")     # the bundled model, by wnid
    assert code == 0, err
    # existing run outputs are not overwritten
    code, out, err = run_cli(capsys, "train", data, "--out", run_dir, "--epochs", 1, "--batch-size", 4)
    assert_usage_error(code, err, "already exists.*--force")


def test_demo_writes_complete_gallery(capsys, model, tmp_path):
    out_dir = tmp_path / "gallery"
    code, out, err = run_cli(capsys, "demo", "--out", out_dir, "--fast", "-q")
    assert code == 0, err
    index = out_dir / "index.html"
    assert index.is_file()

    class Imgs(HTMLParser):
        srcs = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    parser = Imgs()
    parser.feed(index.read_text())
    assert len(parser.srcs) >= 6
    for src in parser.srcs:
        p = out_dir / src
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    text = index.read_text()
    for title in ("Saliency", "Fooling", "Class visualization", "Feature inversion", "DeepDream"):
        assert title in text
    assert "iterations" in text            # settings are listed


# ----------------------------------------------------------------------------- --force
def test_force_semantics(capsys, model, photo, tmp_path):
    target = tmp_path / "grace_hopper_saliency.png"
    target.write_bytes(b"keep me")
    code, out, err = run_cli(capsys, "saliency", photo, "--out", tmp_path, "-q")
    assert_usage_error(code, err, "already exists.*--force")
    assert target.read_bytes() == b"keep me"
    code, out, err = run_cli(capsys, "saliency", photo, "--out", tmp_path, "-q", "--force")
    assert code == 0, err
    assert target.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- user errors
@pytest.mark.parametrize("argv, pattern", [
    (["predict", "{tmp}/missing.jpg"], "missing.jpg: no such file"),
    (["predict", "{tmp}/notanimage.jpg"], "not an image"),
    (["predict", "{tmp}"], "is a directory"),
    (["saliency", "{photo}", "--class", "no such class"], "unknown class 'no such class'"),
    (["saliency", "{photo}", "--class", "100"], "out of range"),
    (["fool", "{photo}", "--target", "b"], "ambiguous"),
    (["fool", "{photo}", "--target", "gold", "--eps", "abc"], "--eps.*'abc'"),
    (["fool", "{photo}", "--target", "gold", "--eps", "-1"], "--eps.*must be > 0"),
    (["fool", "{photo}", "--target", "gold", "--max-iter", "nan"], "--max-iter"),
    (["dream", "{photo}", "--layer", "relu99"], "no layer named 'relu99'"),
    (["dream", "{photo}", "--layer", "fc"], "no spatial output"),
    (["invert", "{photo}", "--layer", "1000"], "out of range"),
    (["saliency", "{photo}", "--out", "{tmp}/file.txt"], "exists and is not a directory"),
    (["predict", "{photo}", "--model", "{tmp}/missing.npz"], "no such model file"),
    (["predict", "{photo}", "--model", "{tmp}/file.txt"], "unknown model format"),
    (["predict", "{photo}", "--model", "{tmp}/bad.npz"], "cannot load model"),
    (["classvis"], "required"),
    (["frobnicate"], "invalid choice"),
    (["predict", "{photo}", "--mean", "0.5"], "--mean applies to .onnx models only; the bundled model"),
    (["layers", "--model", "{tmp}/bad.npz", "--std", "0.2", "--scale", "255"], "--std/--scale apply to .onnx"),
    (["layers", "--model", ""], "--model is empty"),
    (["layers", "--std", "0"], "--std.*must be > 0"),
])
def test_user_errors_exit_2_one_line(capsys, model, photo, tmp_path, argv, pattern):
    (tmp_path / "notanimage.jpg").write_text("hello")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    argv = [a.format(tmp=tmp_path, photo=photo) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert_usage_error(code, err, pattern)


# ----------------------------------------------------------------------------- lookups
def test_class_lookup(model):
    gold = model.class_names.index(next(n for n in model.class_names if n.startswith("goldfish")))
    assert cli_common.resolve_class(model, str(gold)) == gold
    assert cli_common.resolve_class(model, model.wnids[gold]) == gold
    assert cli_common.resolve_class(model, model.wnids[gold].upper()) == gold
    assert cli_common.resolve_class(model, "goldfish") == gold
    assert cli_common.resolve_class(model, "GOLDF") == gold               # prefix, any case
    assert cli_common.resolve_class(model, "carassius") == gold           # a synonym's prefix
    with pytest.raises(cli.UsageError, match="ambiguous.*matches"):
        cli_common.resolve_class(model, "b")
    with pytest.raises(cli.UsageError, match="out of range"):
        cli_common.resolve_class(model, "-1")


def test_layer_lookup(model):
    assert cli_common.resolve_layer(model, "relu2") == "relu2"
    assert cli_common.resolve_layer(model, "RELU2") == "relu2"
    assert cli_common.resolve_layer(model, "0") == model.layer_names[0]
    assert cli_common.resolve_layer(model, "-1") == model.layer_names[-1]
    with pytest.raises(cli.UsageError, match="did you mean"):
        cli_common.resolve_layer(model, "relu22")


def test_fit_image():
    img = np.zeros((600, 512, 3), np.uint8)
    out, what = cli_common.fit_image(img, (64, 64))
    assert out.shape == (64, 64, 3) and "center-cropped" in what
    out, what = cli_common.fit_image(np.zeros((64, 64, 3), np.uint8), (64, 64))
    assert what is None


def test_closed_pipe_is_not_an_error():
    """`gradvis layers | head -1`: the reader closes the pipe early; no traceback."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-m", "gradvis", "classes"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()   # before the child has written anything: its first write fails
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err


def test_onnx_models_take_their_preprocessing(capsys, model, tmp_path):
    """An ONNX export does not record its input normalization: --scale, --mean and
    --std give it (one value or one per channel); 'default' names the bundled model."""
    from conftest import require_onnx
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    path = tmp_path / "net.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    m = cli_common.model_from_args(cli.build_parser().parse_args(
        ["layers", "--model", str(path), "--scale", "255", "--mean", "0.5", "0.25", "0.125", "--std", "0.5"]))
    np.testing.assert_allclose(m.mean.ravel(), [127.5, 63.75, 31.875])
    np.testing.assert_allclose(m.std, [127.5] * 3)
    code, out, err = run_cli(capsys, "layers", "--model", path, "--mean", "1", "2")
    assert_usage_error(code, err, r"cannot load model .*net\.onnx: .*mean")
    g.input[0].type.tensor_type.shape.dim[2].dim_param = "height"   # a dynamic size
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, out, err = run_cli(capsys, "layers", "--model", path)
    assert_usage_error(code, err, r"dynamic dims.*--input-shape C H W")
    code, out, err = run_cli(capsys, "layers", "--model", path, "--input-shape", "3", "16", "8")
    assert code == 0 and out.split()[-1] == "4x16x8"
    code, out, err = run_cli(capsys, "classes", "--model", "default", "goldfish")
    assert code == 0 and "goldfish" in out


def test_multi_crops_views():
    from gradvis.io.images import fit_image, multi_crops
    rgb = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    one = multi_crops(rgb, (32, 32), 1, scale=1.0)
    np.testing.assert_array_equal(one[0], fit_image(rgb, (32, 32))[0])
    five = multi_crops(rgb, (32, 32), 5, scale=1.25)
    big, _ = fit_image(rgb, (40, 40))
    assert five.shape == (5, 32, 32, 3) and five.dtype == np.uint8
    np.testing.assert_array_equal(five[0], big[4:36, 4:36])         # centre
    np.testing.assert_array_equal(five[1], big[:32, :32])           # corners
    np.testing.assert_array_equal(five[4], big[8:, 8:])
    ten = multi_crops(rgb, (32, 32), 10, scale=1.25)
    np.testing.assert_array_equal(ten[:5], five)
    np.testing.assert_array_equal(ten[5:], five[:, :, ::-1])
    for kw, match in ((dict(n=4), "crops"), (dict(n=5, scale=0.5), "scale"), (dict(n=5, scale=float("nan")), "scale")):
        with pytest.raises(ValueError, match=match):
            multi_crops(rgb, (32, 32), **kw)
