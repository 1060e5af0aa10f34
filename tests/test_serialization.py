"""Model files: round trip, refusal to overwrite, clear errors on bad files; CS231n 2016 HDF5."""
import json
import sys

import numpy as np
import pytest

import gradvis
from conftest import require
from gradvis.nn.architectures import cs231n_2016, default_net
from gradvis.io.cs231n_h5 import load_cs231n_h5
from gradvis.io.model_file import load_model
from gradvis.nn.fileformat import write_arrays

from test_model import graph_net


def test_round_trip(tmp_path):
    m = graph_net()
    m.wnids = [f"n{i:08d}" for i in range(7)]
    X = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    m.forward(X, mode="train")       # non-trivial running statistics
    path = m.save(tmp_path / "m.npz")
    m2 = gradvis.load_model(path)
    assert m2.layer_names == m.layer_names
    assert [n.inputs for n in m2.nodes] == [n.inputs for n in m.nodes]
    for k in m.params:
        np.testing.assert_array_equal(m2.params[k], m.params[k])
    for k in m.buffers:
        np.testing.assert_array_equal(m2.buffers[k], m.buffers[k])
    assert m2.class_names == m.class_names and m2.wnids == m.wnids
    np.testing.assert_array_equal(m2.mean, m.mean)
    np.testing.assert_array_equal(m2.std, m.std)
    assert m2.input_shape == m.input_shape
    np.testing.assert_array_equal(m2.forward(X)[0], m.forward(X)[0])
    # a plain numpy reader sees only arrays, no pickle
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["__gradvis__"].tobytes())
    assert header["format"] == "gradvis-model" and header["version"] == 1


def test_round_trip_mean_image_and_default_net(tmp_path):
    m = default_net(num_classes=5, widths=(4, 4, 8, 8, 8, 8, 8))
    p = m.save(tmp_path / "d.npz")
    assert load_model(p).layer_names == m.layer_names
    c = cs231n_2016(num_classes=3, widths=(4, 4, 4, 4, 4, 4, 4, 4, 8), hidden=6,
                    mean=np.full((3, 64, 64), 100.0, np.float32))
    c2 = load_model(c.save(tmp_path / "c.npz"))
    assert c2.mean.shape == (3, 64, 64)


def test_refuses_to_overwrite(tmp_path):
    m = graph_net()
    p = m.save(tmp_path / "m.npz")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        m.save(p)
    m.params["fc2.bias"][:] = 7
    m.save(p, overwrite=True)
    assert (load_model(p).params["fc2.bias"] == 7).all()
    assert [f.name for f in tmp_path.iterdir()] == ["m.npz"]   # no temporary left behind


def _corrupt_variants(good):
    data = good.read_bytes()
    yield "truncated", data[: len(data) // 2]
    yield "garbage", b"not a zip file at all" * 10
    yield "empty", b""
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    yield "flipped byte", bytes(flipped)


@pytest.mark.parametrize("which", ["truncated", "garbage", "empty", "flipped byte"])
def test_corrupt_files_raise_value_error(tmp_path, which):
    good = graph_net().save(tmp_path / "good.npz")
    content = dict(_corrupt_variants(good))[which]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="bad.npz"):
        load_model(bad)


def _rewrite(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    write_arrays(dst, arrays)
    return dst


def test_structural_problems_are_named(tmp_path):
    good = graph_net().save(tmp_path / "good.npz")
    p = _rewrite(good, tmp_path / "a.npz", lambda a: a.pop("param/conv1.weight"))
    with pytest.raises(ValueError, match="missing array 'param/conv1.weight'"):
        load_model(p)
    p = _rewrite(good, tmp_path / "b.npz", lambda a: a.__setitem__("param/fc2.weight", np.zeros((3, 3), np.float32)))
    with pytest.raises(ValueError, match="shape"):
        load_model(p)
    p = _rewrite(good, tmp_path / "c.npz", lambda a: a.pop("__gradvis__"))
    with pytest.raises(ValueError, match="not a gradvis model file"):
        load_model(p)

    def bump(a):
        h = json.loads(a["__gradvis__"].tobytes())
        h["version"] = 99
        a["__gradvis__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
    with pytest.raises(ValueError, match="version"):
        load_model(_rewrite(good, tmp_path / "d.npz", bump))

    def evil(a):
        h = json.loads(a["__gradvis__"].tobytes())
        h["nodes"][0]["type"] = "os.system"
        a["__gradvis__"] = np.frombuffer(json.dumps(h).encode(), np.uint8)
    with pytest.raises(ValueError, match="unknown layer type"):
        load_model(_rewrite(good, tmp_path / "e.npz", evil))
    # a pickled object array is refused, not executed
    np.savez(tmp_path / "f.npz", __gradvis__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="f.npz"):
        load_model(tmp_path / "f.npz")
    # an ordinary npz that is not a model
    np.savez(tmp_path / "g.npz", W0=np.zeros(3))
    with pytest.raises(ValueError, match="not a gradvis model file"):
        load_model(tmp_path / "g.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------- CS231n 2016 HDF5
def _write_cs231n_h5(path, widths, hidden, classes, seed=0, mean_image=True):
    h5py = require("h5py")
    rng = np.random.default_rng(seed)
    filters = [5] + [3] * (len(widths) - 1)
    with h5py.File(path, "w") as f:
        c = 3
        for i, (w, k) in enumerate(zip(widths, filters)):
            f[f"W{i}"] = rng.standard_normal((w, c, k, k)).astype(np.float32) * 0.2
            f[f"b{i}"] = rng.standard_normal(w).astype(np.float32) * 0.1
            f[f"gamma{i}"] = 1 + 0.1 * rng.standard_normal(w).astype(np.float32)
            f[f"beta{i}"] = 0.1 * rng.standard_normal(w).astype(np.float32)
            f[f"running_mean{i}"] = 0.1 * rng.standard_normal(w).astype(np.float32)
            f[f"running_var{i}"] = 1 + rng.random(w).astype(np.float32)
            c = w
        n = len(widths)
        f[f"W{n}"] = rng.standard_normal((c * 2 * 2, hidden)).astype(np.float32) * 0.1
        f[f"b{n}"] = np.zeros(hidden, np.float32)
        f[f"gamma{n}"] = np.ones(hidden, np.float32)
        f[f"beta{n}"] = np.zeros(hidden, np.float32)
        f[f"running_mean{n}"] = np.zeros(hidden, np.float32)
        f[f"running_var{n}"] = np.ones(hidden, np.float32)
        f[f"W{n + 1}"] = rng.standard_normal((hidden, classes)).astype(np.float32) * 0.1
        f[f"b{n + 1}"] = np.zeros(classes, np.float32)
        if mean_image:
            f["mean_image"] = rng.uniform(90, 130, (64, 64, 3)).astype(np.float32)
    return path


def test_load_cs231n_h5_matches_layer_by_layer(tmp_path):
    widths = (4, 4, 6, 6, 8, 8, 8, 8, 10)
    p = _write_cs231n_h5(tmp_path / "pretrained_model.h5", widths, hidden=12, classes=5)
    m = load_cs231n_h5(p)
    assert m.layer_names[:3] == ["conv0", "bn0", "relu0"] and m.layer_names[-1] == "fc10"
    assert m.num_classes == 5 and m.mean.shape == (3, 64, 64)
    import h5py
    from gradvis import layers as L
    X = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out, _ = m.forward(X)
    with h5py.File(p, "r") as f:
        np.testing.assert_allclose(m.mean, np.asarray(f["mean_image"]).transpose(2, 0, 1))
        h = X
        for i in range(9):
            k = f[f"W{i}"].shape[2]
            h, _ = L.conv_forward(h, f[f"W{i}"][()], f[f"b{i}"][()],
                                  {"stride": 2 if i % 2 == 0 else 1, "pad": (k - 1) // 2})
            h, _ = L.spatial_batchnorm_forward(h, f[f"gamma{i}"][()], f[f"beta{i}"][()], {
                "mode": "test", "running_mean": f[f"running_mean{i}"][()], "running_var": f[f"running_var{i}"][()]})
            h = np.maximum(h, 0)
        assert h.shape == (2, 10, 2, 2)
        h, _ = L.affine_forward(h, f["W9"][()], f["b9"][()])
        h, _ = L.batchnorm_forward(h, f["gamma9"][()], f["beta9"][()], {
            "mode": "test", "running_mean": f["running_mean9"][()], "running_var": f["running_var9"][()]})
        h = np.maximum(h, 0)
        h, _ = L.affine_forward(h, f["W10"][()], f["b10"][()])
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-4)


def test_load_cs231n_h5_errors(tmp_path, monkeypatch):
    h5py = require("h5py")
    p = _write_cs231n_h5(tmp_path / "m.h5", (4,) * 9, hidden=6, classes=3, mean_image=False)
    m = load_cs231n_h5(p)
    np.testing.assert_allclose(m.mean, [121.55, 113.05, 99.85])     # TinyImageNet's mean
    given = np.random.default_rng(0).uniform(0, 255, (64, 64, 3))
    np.testing.assert_allclose(load_cs231n_h5(p, mean=given).mean, given.transpose(2, 0, 1), rtol=1e-6)
    with h5py.File(p, "a") as f:
        del f["running_var3"]
    with pytest.raises(ValueError, match="running_var3"):
        load_cs231n_h5(p)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.h5"):
        load_cs231n_h5(tmp_path / "junk.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        load_cs231n_h5(p)
