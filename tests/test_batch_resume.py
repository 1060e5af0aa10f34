"""Batch runs survive a killed worker and a killed run; more workers than cores stay correct."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from batch_helpers import (client, direct, need_dask, read_run, settings_method, slow_method,  # noqa: F401
                           uint8_images)
from helpers import small_net

need_dask()

import gradvis.batch as gb  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def model():
    return small_net()


@pytest.fixture
def slow():
    m = gb.register(slow_method(), replace=True)
    yield m
    gb.METHODS.pop(m.name, None)


def finished(out):
    return [f for f in os.listdir(out / "parts") if f.startswith("chunk-") and f.endswith(".parquet")]


def check_complete(out, model, imgs, n):
    """Every image exactly once, with the maps a direct call gives."""
    arrays, index = read_run(out)
    assert index["id"] == list(range(n))
    assert set(index["status"]) == {"ok"}
    want, _ = direct(gb.get_method("saliency"), model.preprocess(imgs), model, {"batch_size": 4})
    assert np.array_equal(arrays["saliency"], want["saliency"])


def test_killed_worker_loses_only_its_chunk(model, client, slow, tmp_path):
    imgs = uint8_images(24)
    out = tmp_path / "r"
    result = {}

    def go():
        try:
            result["doc"] = gb.run(slow.name, imgs, out, model=model, scheduler=client, chunk_size=4,
                                   batch_size=4, delay=0.4, progress=False)
        except BaseException as e:   # noqa: BLE001 - reported by the assertion below
            result["error"] = e
    t = threading.Thread(target=go)
    t.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if any("chunk" in str(k) for k in keys):
                victim = addr
                break
        time.sleep(0.05)
    assert victim is not None, "no chunk was seen running"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=120)
    assert not t.is_alive(), "the run did not finish after a worker was killed"
    assert "error" not in result, result.get("error")
    assert result["doc"]["status"] == "complete"
    check_complete(out, model, imgs, 24)
    assert pid not in client.run(os.getpid).values()    # the nanny started a new worker


def test_killed_run_resumes_without_loss_or_duplicates(model, client, slow, tmp_path):
    imgs = uint8_images(32)
    np.save(tmp_path / "imgs.npy", imgs)
    out = tmp_path / "r"
    script = f"""
import sys
sys.path[:0] = [{HERE!r}]
from batch_helpers import slow_method
from helpers import small_net
import gradvis.batch as gb
if __name__ == "__main__":
    gb.register(slow_method())
    gb.run("slow-saliency", {str(tmp_path / 'imgs.npy')!r}, {str(out)!r}, model=small_net(), workers=1,
           chunk_size=4, batch_size=4, delay=0.4, progress=False)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "parts").is_dir() and len(finished(out)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)     # the run and its cluster, mid-chunk
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    done_before = len(finished(out))
    assert 2 <= done_before < 8
    doc = gb.run(slow.name, tmp_path / "imgs.npy", out, model=model, scheduler=client, chunk_size=4,
                 batch_size=4, delay=0.4, progress=False)
    s = doc["sessions"][-1]
    assert s["chunks_skipped"] == done_before and s["chunks_computed"] == 8 - done_before
    assert doc["status"] == "complete"
    check_complete(out, model, imgs, 32)


@pytest.mark.parametrize("workers", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_more_workers_than_cores_stay_correct(workers, model, tmp_path):
    imgs = uint8_images(4 * workers)
    doc = gb.run("saliency", imgs, tmp_path / "r", model=model, workers=workers, chunk_size=4, batch_size=4,
                 progress=False)
    assert doc["status"] == "complete"
    check_complete(tmp_path / "r", model, imgs, 4 * workers)


def test_local_cluster_workers_compute_undisturbed(model, tmp_path):
    """The local cluster a run starts shares the cores out (workers x threads =
    cores) and turns off Dask's stack sampler, which would wake every 10 ms."""
    m = gb.register(settings_method(), replace=True)
    try:
        doc = gb.run(m, uint8_images(8), tmp_path / "r", model=model, workers=2, chunk_size=4, batch_size=4,
                     progress=False)
    finally:
        gb.METHODS.pop(m.name, None)
    assert doc["status"] == "complete"
    _, table = read_run(tmp_path / "r")
    cores = len(os.sched_getaffinity(0))
    assert table["profiler"] == [False] * 8
    assert table["omp_threads"] == [max(1, cores // 2)] * 8
