"""The command line with ONNX exports: --labels / --labels-offset, the warning for a
model that records no input normalization, and ``gradvis convert``."""
import re

import numpy as np
import pytest

import gradvis
from conftest import require_onnx
from gradvis import cli


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def onnx_file(tmp_path):
    """A 3-class classifier: Conv -> GlobalAveragePool -> Flatten."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                           helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
                           helper.make_node("Flatten", ["p"], ["y"], name="flat")], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    path = tmp_path / "tiny.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def photo(tmp_path):
    from PIL import Image
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_labels_name_the_predictions(capsys, onnx_file, photo, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("background\ncat\ndog\nlampshade\n\n")
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file, "--labels", labels, "--top-k", "3",
                         "--scale", "255", "--mean", "0.5", "--std", "0.25")
    assert code == 2 and "add --labels-offset 1" in err and err.count("\n") == 1
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file, "--labels", labels,
                         "--labels-offset", "1", "--top-k", "3", "--scale", "255", "--mean", "0.5", "--std", "0.25")
    assert code == 0 and {"cat", "dog", "lampshade"} <= set(re.findall(r"[a-z]+", out)), out
    assert "warning" not in err
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file, "--labels", tmp_path / "none.txt")
    assert code == 2 and "none.txt" in err
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file, "--labels-offset", "1")
    assert code == 2 and "--labels-offset needs --labels" in err


def test_warning_when_no_normalization_is_recorded(capsys, onnx_file, photo, tmp_path):
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file)
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert code == 0 and len(warnings) == 1
    assert "records no input normalization" in warnings[0] and "--mean" in warnings[0] and "--scale" in warnings[0]
    code, out, err = run(capsys, "predict", photo, "--model", onnx_file, "--quiet")
    assert "warning" not in err
    # a converted .npz that carries its normalization: no warning
    out_npz = tmp_path / "tiny.npz"
    code, out, err = run(capsys, "convert", onnx_file, "--out", out_npz, "--scale", "255",
                         "--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225")
    assert code == 0 and "wrote" in out and "warning" not in err
    code, out, err = run(capsys, "predict", photo, "--model", out_npz)
    assert code == 0 and "warning" not in err
    # one converted without: the warning again
    bare = tmp_path / "bare.npz"
    assert run(capsys, "convert", onnx_file, "--out", bare, "--quiet")[0] == 0
    assert "records no input normalization" in run(capsys, "predict", photo, "--model", bare)[2]


def test_convert_writes_a_self_contained_model(capsys, onnx_file, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nlampshade\n")
    out_npz = tmp_path / "tiny.npz"
    argv = ["convert", onnx_file, "--out", out_npz, "--labels", labels, "--scale", "255", "--mean", "0.5",
            "--std", "0.25"]
    code, out, err = run(capsys, *argv)
    assert code == 0 and "3 classes with class names" in out
    m = gradvis.load_model(out_npz)
    ref = gradvis.load_onnx(onnx_file, mean=0.5, std=0.25, scale=255)
    assert m.class_names == ["cat", "dog", "lampshade"]
    np.testing.assert_allclose(m.mean, [127.5] * 3)
    X = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(m.forward(X)[0], ref.forward(X)[0])
    code, out, err = run(capsys, *argv)
    assert code == 2 and "exists" in err and "--force" in err
    assert run(capsys, *argv, "--force")[0] == 0
    code, out, err = run(capsys, "convert", onnx_file, "--out", tmp_path / "x.onnx")
    assert code == 2 and ".npz" in err
    code, out, err = run(capsys, "convert", tmp_path / "missing.onnx", "--out", tmp_path / "m.npz")
    assert code == 2 and "no such model file" in err
