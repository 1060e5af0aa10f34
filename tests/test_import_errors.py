"""Imported models (ONNX, PyTorch, CS231n HDF5) that cannot be used are refused with
errors that name the node, dataset or file; usable ones load wherever they are read from."""
import numpy as np
import pytest

from conftest import require, require_onnx, require_torch
from gradvis import load_cs231n_h5, load_onnx
from test_serialization import _write_cs231n_h5


# ---------------------------------------------------------------------------- ONNX
def _conv_graph(weight, extra_nodes=(), extra_inits=(), out="y"):
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(weight, "W")] + list(extra_inits)
    nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv")] + list(extra_nodes)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    return onnx, helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_external_weights_are_read_beside_the_file_whatever_the_working_directory(tmp_path, monkeypatch):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    onnx, m = _conv_graph(w)
    d = tmp_path / "model"
    d.mkdir()
    onnx.save_model(m, str(d / "net.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.weights", size_threshold=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = load_onnx(d / "net.onnx")
    np.testing.assert_array_equal(model.params["conv.weight"], w)
    with pytest.raises(ValueError, match=r"external data files \(net\.weights\).*from its \.onnx path"):
        load_onnx((d / "net.onnx").read_bytes())
    (d / "net.weights").unlink()
    with pytest.raises(ValueError, match=r"net\.onnx: cannot read its external weight data"):
        load_onnx(d / "net.onnx")


def test_non_finite_weights_are_refused(tmp_path):
    w = np.ones((4, 3, 3, 3), np.float32)
    w[1, 2, 0, 0] = np.nan
    onnx, m = _conv_graph(w)
    onnx.save_model(m, str(tmp_path / "nan.onnx"))
    with pytest.raises(ValueError, match=r"nan\.onnx: 'conv\.weight' \(shape \(4, 3, 3, 3\)\) has NaN"):
        load_onnx(tmp_path / "nan.onnx")


def test_a_negative_variance_is_refused_before_folding():
    onnx = require_onnx()
    from onnx import helper, numpy_helper
    ones = np.ones(4, np.float32)
    var = np.array([1, -0.5, 1, 1], np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((ones, "g"), (0 * ones, "b"), (0 * ones, "m"), (var, "v"))]
    bn = helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["z"], name="bn")
    _, m = _conv_graph(np.ones((4, 3, 3, 3), np.float32), [bn], inits, out="z")
    with pytest.raises(ValueError, match=r"ONNX node 'bn' \(BatchNormalization\): running variance has negative"):
        load_onnx(m)


@pytest.mark.parametrize("make, node", [
    (lambda h: h.make_node("MaxPool", ["y"], ["z"], name="mp"), "'mp' \\(MaxPool\\)"),   # no kernel_shape
    (lambda h: h.make_node("Concat", ["y", "y"], ["z"], name="cat"), "'cat' \\(Concat\\)"),   # no axis
])
def test_malformed_nodes_are_named(make, node):
    from onnx import helper
    _, m = _conv_graph(np.ones((4, 3, 3, 3), np.float32), [make(helper)], out="z")
    with pytest.raises(ValueError, match=f"ONNX node {node}: malformed or unsupported node"):
        load_onnx(m)


def test_from_torch_restores_each_submodule_mode():
    torch = require_torch()
    require_onnx()
    import gradvis
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Dropout(0.5))
    net.train()
    net[1].eval()
    net[3].eval()
    before = [m.training for m in net.modules()]
    gradvis.from_torch(net, torch.zeros(1, 3, 8, 8))
    assert [m.training for m in net.modules()] == before


# ---------------------------------------------------------------------------- CS231n HDF5
def _edit_h5(path, edit):
    h5py = require("h5py")
    with h5py.File(path, "a") as f:
        edit(f)
    return path


@pytest.mark.parametrize("edit, message", [
    # declared at a huge size and never written: refused before a layer of that size is built
    (lambda f: (f.__delitem__("W1"), f.create_dataset("W1", shape=(10 ** 6, 4, 3, 3), dtype="f4")),
     r"'W1' declares shape \(1000000, 4, 3, 3\) but holds no data"),
    (lambda f: (f.__delitem__("W10"), f.__setitem__("W10", np.ones(16, np.float32))), r"'W10' must be 2-D"),
    (lambda f: f.__delitem__("running_var2"), r"missing dataset 'running_var2'"),
    (lambda f: f["b0"].__setitem__(0, np.inf), r"'b0' has NaN or infinite values"),
    (lambda f: f["running_var1"].__setitem__(0, -1.0), r"'running_var1' has negative entries"),
    (lambda f: (f.__delitem__("gamma0"), f.__setitem__("gamma0", np.array([b"a", b"b", b"c", b"d"]))),
     r"'gamma0' holds \|S1 values, not numbers"),
])
def test_cs231n_h5_files_that_cannot_be_used(tmp_path, edit, message):
    p = _write_cs231n_h5(tmp_path / "m.h5", (4, 4, 6, 6, 8, 8, 8, 8, 10), hidden=12, classes=5)
    load_cs231n_h5(p)
    _edit_h5(p, edit)
    with pytest.raises(ValueError, match=r"m\.h5: " + message):
        load_cs231n_h5(p)
