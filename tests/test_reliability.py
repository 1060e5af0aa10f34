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
