"""``gradvis batch``: a run end to end, its method options, and mistakes that write nothing."""
import socket

import numpy as np
import pytest

from batch_helpers import client, direct, need_dask, read_run, uint8_images  # noqa: F401
from helpers import assert_usage_error, run_cli, small_net

need_dask()

import gradvis.batch as gb  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("batchcli")
    model = small_net(class_names=True)
    model.save(d / "small.npz")
    imgs = uint8_images(10)
    np.save(d / "imgs.npy", imgs)
    return d, model, imgs


def test_batch_command_runs_and_resumes(capsys, setup, client):
    d, model, imgs = setup
    out = d / "run"
    args = ["batch", "smoothgrad", d / "imgs.npy", "--out", out, "--scheduler", client.scheduler.address,
            "--chunk-size", 4, "--batch-size", 2, "--num-samples", 3, "--noise-level", 0.2, "--seed", 4,
            "--model", d / "small.npz", "-q"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "10 images in 3 chunks, 0 failed" in stdout
    arrays, index = read_run(out)
    want, _ = direct(gb.get_method("smoothgrad"), model.preprocess(imgs), model,
                     {"batch_size": 2, "num_samples": 3, "noise_level": 0.2}, seed=4)
    assert np.array_equal(arrays["saliency"], want["saliency"])
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0 and "skipped 3 finished chunks" in stdout
    code, _, err = run_cli(capsys, *args[:-1], "--num-samples", 4)
    assert_usage_error(code, err, "other settings.*num_samples|other settings.*options")


def test_batch_fool_with_a_named_target_on_a_local_cluster(capsys, setup):
    d, model, imgs = setup
    out = d / "fool"
    code, stdout, err = run_cli(capsys, "batch", "fool", d / "imgs.npy", "--out", out, "--workers", 1,
                                "--chunk-size", 8, "--batch-size", 4, "--max-iter", 3, "--norm", "2",
                                "--eps", 8, "--target", "c2", "--model", d / "small.npz", "-q")
    assert code == 0, err
    arrays, index = read_run(out)
    want, report = direct(gb.get_method("fool"), model.preprocess(imgs), model,
                          {"batch_size": 4, "max_iter": 3, "norm": "2", "eps": 8}, target=2)
    assert np.array_equal(arrays["fooling"], want["fooling"])
    assert index["target"] == [2] * 10 and index["iterations"] == report["iterations"]


def test_batch_mistakes_write_nothing(capsys, setup, tmp_path):
    d, _, _ = setup
    out = tmp_path / "o"
    base = ["--out", out, "--model", d / "small.npz", "-q", "--batch-size", 2]
    data = d / "imgs.npy"
    cases = [
        (["batch", "nope", data, *base], "unknown batch method 'nope'"),
        (["batch", "saliency", tmp_path / "missing", *base], "does not exist"),
        (["batch", "saliency", data, *base, "--chunk-size", 0], "chunk-size.*must be >= 1"),
        (["batch", "saliency", data, *base, "--num-samples", 3], "takes no option --num-samples"),
        (["batch", "saliency", data, *base, "--workers", 2, "--scheduler", "tcp://127.0.0.1:1"],
         "not allowed with"),
        (["batch", "fool", data, *base, "--target", "nosuchclass"], "unknown class"),
    ]
    for argv, pattern in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_usage_error(code, err, pattern)
        assert not out.exists()
    afile = tmp_path / "f"
    afile.write_text("")
    code, _, err = run_cli(capsys, "batch", "saliency", data, "--out", afile, "--model", d / "small.npz")
    assert_usage_error(code, err, "not a directory")


def test_batch_unreachable_scheduler(capsys, setup, tmp_path, monkeypatch):
    import importlib
    monkeypatch.setattr(importlib.import_module("gradvis.batch.run"), "CONNECT_TIMEOUT", 1)
    d, _, _ = setup
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, _, err = run_cli(capsys, "batch", "saliency", d / "imgs.npy", "--out", tmp_path / "o",
                           "--scheduler", f"tcp://127.0.0.1:{port}", "--model", d / "small.npz",
                           "--batch-size", 2, "-q")
    assert_usage_error(code, err, f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 1 s")
    assert not (tmp_path / "o").exists()
