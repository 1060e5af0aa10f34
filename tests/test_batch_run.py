"""gradvis.batch.run: results equal to direct calls, chunking-independent bytes,
resume, refusal of other settings, failed rows, bad input."""
import json
import os

import numpy as np
import pytest

from batch_helpers import client, direct, need_dask, read_run, slow_method, uint8_images  # noqa: F401
from helpers import small_net

need_dask()

import gradvis.batch as gb  # noqa: E402

# Options that keep each registered method quick on 16x16 images; a method not
# listed runs with its defaults.
QUICK = {"smoothgrad": {"num_samples": 3}, "fool": {"max_iter": 4}}
TARGET = {"fool": 2}


@pytest.fixture(scope="module")
def model():
    return small_net()


@pytest.fixture(scope="module")
def imgs():
    return uint8_images(22)


@pytest.mark.parametrize("name", gb.method_names())
def test_every_method_equals_direct_calls(name, model, imgs, client, tmp_path):
    m = gb.get_method(name)
    opts = dict(QUICK.get(name, {}), batch_size=4)
    target = TARGET.get(name, "predicted")
    doc = gb.run(name, imgs, tmp_path / "r", model=model, scheduler=client, chunk_size=8,
                 progress=False, seed=5, target=target, **opts)
    assert doc["status"] == "complete" and doc["chunks"] == 3
    arrays, index = read_run(tmp_path / "r")
    want, report = direct(m, model.preprocess(imgs), model, opts, seed=5, target=target)
    assert sorted(arrays) == sorted(want)
    for k in want:
        assert arrays[k].shape == want[k].shape
        assert np.array_equal(arrays[k], want[k]), k
    for k in m.report:
        assert index[k] == report[k], k
    assert index["id"] == list(range(22))
    assert index["chunk"] == [i // 8 for i in range(22)]
    assert set(index["status"]) == {"ok"}
    scores = model.predict(model.preprocess(imgs), batch_size=4)
    assert index["prediction"] == scores.argmax(axis=1).tolist()


def test_rechunked_run_gives_the_same_bytes(model, imgs, client, tmp_path):
    runs = []
    for cs in (4, 12):
        gb.run("smoothgrad", imgs, tmp_path / f"c{cs}", model=model, scheduler=client, chunk_size=cs,
               batch_size=4, num_samples=2, progress=False, seed=9)
        runs.append(read_run(tmp_path / f"c{cs}"))
    (a1, i1), (a2, i2) = runs
    assert a1["saliency"].tobytes() == a2["saliency"].tobytes()
    for col in i1:
        if col != "chunk":
            assert i1[col] == i2[col], col
    # another seed gives other maps
    gb.run("smoothgrad", imgs, tmp_path / "s", model=model, scheduler=client, chunk_size=12,
           batch_size=4, num_samples=2, progress=False, seed=10)
    assert not np.array_equal(read_run(tmp_path / "s")[0]["saliency"], a1["saliency"])


def test_resume_recomputes_only_unfinished_chunks(model, imgs, client, tmp_path):
    out = tmp_path / "r"
    gb.run("saliency", imgs, out, model=model, scheduler=client, chunk_size=8, batch_size=4, progress=False)
    ref, ref_index = read_run(out)
    # chunk 1 cut short: its record gone, its arrays half written
    os.remove(out / "parts" / "chunk-000001.parquet")
    import zarr
    z = zarr.open_array(str(out / "maps.zarr" / "saliency"), mode="r+")
    z[8:12] = -1.0
    doc = gb.run("saliency", imgs, out, model=model, scheduler=client, chunk_size=8, batch_size=4,
                 progress=False)
    s = doc["sessions"][-1]
    assert (s["chunks_computed"], s["chunks_skipped"], s["resumed"]) == (1, 2, True)
    arrays, index = read_run(out)
    assert np.array_equal(arrays["saliency"], ref["saliency"])
    assert index == ref_index
    # everything done: nothing recomputed
    doc = gb.run("saliency", imgs, out, model=model, scheduler=client, chunk_size=8, batch_size=4,
                 progress=False)
    assert doc["sessions"][-1]["chunks_computed"] == 0 and len(doc["sessions"]) == 3


@pytest.mark.parametrize("change", [
    {"batch_size": 8}, {"chunk_size": 16}, {"seed": 1}, {"target": 3}, {"model": "other"}, {"data": "other"}])
def test_rerun_with_other_settings_is_refused(change, model, imgs, client, tmp_path):
    out = tmp_path / "r"
    base = dict(model=model, scheduler=client, chunk_size=8, batch_size=4, progress=False)
    gb.run("saliency", imgs[:8], out, **base)
    before = {p: (out / p).read_bytes() for p in ("run.json", "index.parquet")}
    kw = dict(base, **change)
    data = imgs[:8]
    if change.get("model") == "other":
        kw["model"] = small_net(seed=1)
    if change.get("data") == "other":
        del kw["data"]
        data = imgs[8:16]
    with pytest.raises(ValueError, match="other settings") as e:
        gb.run("saliency", data, out, **kw)
    key = {"model": "model_digest"}.get(next(iter(change)), next(iter(change)))
    assert key in str(e.value) or "options" in str(e.value)
    assert {p: (out / p).read_bytes() for p in before} == before
    with pytest.raises(ValueError, match="already holds a run"):
        gb.run("saliency", imgs[:8], out, resume=False, **base)
    with pytest.raises(ValueError, match="other settings"):
        gb.run("predict", imgs[:8], out, **base)


def test_unreadable_images_are_failed_rows(model, client, tmp_path):
    from PIL import Image
    root = tmp_path / "photos"
    rgb = uint8_images(5, size=20)
    for i, cls in enumerate(["c1", "c3", "c3", "unknown", "c0"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[i]).save(root / cls / f"im{i}.png")
    (root / "c3" / "broken.jpg").write_bytes(b"not a jpeg at all")
    named = small_net(class_names=True)
    doc = gb.run("saliency", root, tmp_path / "r", model=named, scheduler=client, chunk_size=4,
                 batch_size=2, progress=False)
    assert doc["status"] == "complete" and doc["failed_images"] == 1
    arrays, index = read_run(tmp_path / "r")
    rows = {os.path.relpath(p, root): (lab, st, err) for p, lab, st, err in
            zip(index["path"], index["label"], index["status"], index["error"])}
    assert rows["c3/broken.jpg"][1] == "failed" and "broken.jpg" in rows["c3/broken.jpg"][2]
    assert rows["c1/im0.png"] == (1, "ok", None) and rows["c0/im4.png"][0] == 0
    assert rows["unknown/im3.png"][0] == -1
    bad = index["path"].index(str(root / "c3" / "broken.jpg"))
    assert np.isnan(arrays["saliency"][bad]).all()
    good = [i for i in range(len(index["id"])) if i != bad]
    assert np.isfinite(arrays["saliency"][good]).all()


def test_bad_input_writes_nothing(model, imgs, client, tmp_path, monkeypatch):
    out = tmp_path / "r"
    kw = dict(model=model, scheduler=client, progress=False, batch_size=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gb.run("saliency", tmp_path / "missing", out, **kw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        gb.run("saliency", tmp_path / "empty", out, **kw)
    with pytest.raises(ValueError, match="chunk_size"):
        gb.run("saliency", imgs, out, chunk_size=0, **kw)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        gb.run("saliency", imgs, out, chunk_size=6, **kw)
    with pytest.raises(ValueError, match="unknown batch method 'nope'"):
        gb.run("nope", imgs, out, **kw)
    with pytest.raises(TypeError, match="no option 'num_samples'"):
        gb.run("saliency", imgs, out, num_samples=3, **kw)
    with pytest.raises(ValueError, match="max_iter"):
        gb.run("fool", imgs, out, max_iter=-1, target=1, **kw)
    with pytest.raises(ValueError, match="target"):
        gb.run("saliency", imgs, out, target="label", **kw)
    assert not out.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        gb.run("saliency", imgs, afile, **kw)
    import importlib
    runmod = importlib.import_module("gradvis.batch.run")   # the module, not the function
    monkeypatch.setattr(runmod, "CONNECT_TIMEOUT", 1)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OSError, match=f"tcp://127.0.0.1:{port} within 1 s"):
        gb.run("saliency", imgs, out, model=model, scheduler=f"tcp://127.0.0.1:{port}", progress=False,
               batch_size=4)
    assert not out.exists()


def test_scheduler_address_and_a_registered_method(model, imgs, client, tmp_path):
    """An existing cluster by its address; a method added with one register() call."""
    m = gb.register(slow_method(), replace=True)
    try:
        gb.run(m.name, imgs[:8], tmp_path / "r", model=model, scheduler=client.scheduler.address,
               chunk_size=4, batch_size=4, delay=0.0, progress=False)
    finally:
        gb.METHODS.pop(m.name)
    arrays, index = read_run(tmp_path / "r")
    X = model.preprocess(imgs[:8])
    want, _ = direct(gb.get_method("saliency"), X, model, {"batch_size": 4})
    assert np.array_equal(arrays["saliency"], want["saliency"])
    doc = json.loads((tmp_path / "r" / "run.json").read_text())
    assert doc["settings"]["options"] == {"batch_size": 4, "delay": 0.0}
    assert doc["settings"]["model_digest"] == gb.model_digest(model)
    # the workers' kernel threads: cores / Dask threads on the host (the nanny's
    # OMP_NUM_THREADS=1 overridden in each task), or as given
    from gradvis.batch.worker import local_cores
    cores = max(client.run(local_cores).values())
    assert {c["threads"] for c in doc["sessions"][-1]["chunks"]} == {max(1, cores // 2)}
    doc = gb.run("saliency", imgs[:8], tmp_path / "t3", model=model, scheduler=client, chunk_size=4,
                 batch_size=4, threads_per_worker=3, progress=False)
    assert {c["threads"] for c in doc["sessions"][-1]["chunks"]} == {3}


def test_sources_npy_zarr_list(model, client, tmp_path):
    from PIL import Image
    imgs = uint8_images(6)
    np.save(tmp_path / "a.npy", imgs)
    import zarr
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=imgs.shape, chunks=(4, 16, 16, 3), dtype="uint8")
    z[:] = imgs
    for i in range(6):
        Image.fromarray(imgs[i]).save(tmp_path / f"{i}.png")
    (tmp_path / "list.txt").write_text("# images\n" + "".join(f"{i}.png\t{i % 5}\n" for i in range(6)))
    X = model.preprocess(imgs)
    X64 = X.astype(np.float64)   # float model inputs are used as they are
    np.save(tmp_path / "x.npy", X64)
    results = {}
    for name in ("a.npy", "a.zarr", "list.txt", "x.npy"):
        gb.run("predict", tmp_path / name, tmp_path / f"out-{name}", model=model, scheduler=client,
               chunk_size=4, batch_size=2, progress=False)
        results[name] = read_run(tmp_path / f"out-{name}")
    want = model.predict(X, batch_size=2).argmax(axis=1).tolist()
    for name in ("a.npy", "a.zarr", "list.txt"):
        assert results[name][1]["prediction"] == want, name
        assert np.array_equal(results[name][0]["probabilities"], results["a.npy"][0]["probabilities"])
    assert results["list.txt"][1]["label"] == [i % 5 for i in range(6)]
    assert results["x.npy"][1]["prediction"] == model.predict(X64, batch_size=2).argmax(axis=1).tolist()


@pytest.mark.data
def test_tiny_imagenet_held_out_source(held_out):
    """'tinyimagenet:val': the 5,000 held-out images, named by their archive members,
    labelled by the model's classes (matched by wnid)."""
    import gradvis
    pre = gradvis.load_pretrained()
    src = gb.open_source("tinyimagenet:val", pre)
    assert len(src) == len(held_out.X_val) == 5000
    assert src.paths[0].endswith(f"train/{held_out.wnids[0]}/images/{held_out.wnids[0]}_450.JPEG")
    assert src.paths[49].endswith("_499.JPEG") and src.paths[50].endswith(f"{held_out.wnids[1]}_450.JPEG")
    by_wnid = {w: i for i, w in enumerate(pre.wnids)}
    want = np.array([by_wnid[held_out.wnids[c]] for c in held_out.y_val])
    assert np.array_equal(src.labels, want)
    assert src.description["split"] == "val"
    X, errors = gb.data.load_payload(src.payload(10, 14), pre)
    assert np.array_equal(X, pre.preprocess(held_out.X_val[10:14])) and errors == [""] * 4
    assert len(gb.open_source("tinyimagenet", pre)) == 50000
