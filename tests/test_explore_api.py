"""gradvis explore's HTTP API through Starlette's test client: every endpoint,
every refusal, cancelling, the queue, and every registered method on the bundled
model."""
import io
import os
import re
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from conftest import require

require("starlette")
require("httpx")
# Starlette 1.x suggests another HTTP client for its test client; httpx still works
warnings.filterwarnings("ignore", message=".*httpx.*")

from starlette.testclient import TestClient  # noqa: E402

import gradvis  # noqa: E402
from gradvis.explore import methods as M  # noqa: E402
from gradvis.explore.jobs import JobQueue, QueueFull  # noqa: E402
from gradvis.explore.server import create_app  # noqa: E402

WAIT = 60.0     # the longest any job of these tests may take


def encode(rgb, fmt="PNG", **kw):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(h=96, w=128, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return gradvis.load_pretrained()


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    (d / "cat.png").write_bytes(encode(photo(64, 64, 1)))
    (d / "sub").mkdir()
    (d / "sub" / "dog.jpg").write_bytes(encode(photo(80, 60, 2), "JPEG"))
    (d / "notes.txt").write_text("not an image")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(encode(photo(8, 8, 3)))
    os.symlink(outside / "secret.png", d / "link.png")
    app = create_app(model, images_dir=d, max_upload_bytes=200_000, max_pixels=1_000_000)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client):
    r = client.post("/api/images?name=photo.png", content=encode(photo()))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_job(client, job_id, until=("done", "failed", "cancelled", "error"), timeout=WAIT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = client.get(f"/api/jobs/{job_id}")
        if r.json()["status"] in until:
            return r
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {r.json()['status']} after {timeout} s")


def run(client, **body):
    r = client.post("/api/run", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


# ---------------------------------------------------------------------------- model, page, files
def test_model_endpoint(client, model):
    d = client.get("/api/model").json()
    assert d["name"] == model.name
    assert d["input_shape"] == [3, 64, 64] and d["num_classes"] == 100 == len(d["classes"])
    assert d["classes"][0]["name"] == model.class_names[0].split(",")[0].strip()
    assert d["classes"][0]["wnid"] == model.wnids[0]
    names = [m["name"] for m in d["methods"]]
    assert names == list(M.METHODS)
    dream = next(m for m in d["methods"] if m["name"] == "deepdream")
    layer = next(p for p in dream["params"] if p["kind"] == "layer")
    assert "relu4" in layer["choices"] and "fc" not in layer["choices"] and "gap" not in layer["choices"]
    assert client.get("/api/methods").json() == d["methods"]


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "gradvis" in r.text
    for name in re.findall(r'(?:src|href)="/static/([^"?]+)', r.text):
        assert client.get(f"/static/{name}").status_code == 200, name


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/server.py",
                                  "/static/..%2f..%2f..%2fetc%2fpasswd", "/static//etc/passwd",
                                  "/static/methods.py", "/etc/passwd", "/api/images/..%2f..%2fetc%2fpasswd/input.png"])
def test_no_path_traversal(client, path):
    r = client.get(path)
    assert r.status_code in (403, 404), (path, r.status_code)
    assert b"root:" not in r.content and b"def " not in r.content


def test_images_listing_stays_inside_the_directory(client):
    ids = [e["id"] for e in client.get("/api/images").json()]
    assert "dir:cat.png" in ids and "dir:sub/dog.jpg" in ids
    assert "dir:notes.txt" not in ids
    assert "dir:link.png" not in ids            # a link that leads outside is left out
    assert "sample:grace_hopper" in ids
    for bad in ["dir:../outside/secret.png", "dir:/etc/passwd", "dir:link.png", "dir:sub/../cat.png", "../x"]:
        r = client.post("/api/predict", json={"image": bad})
        assert r.status_code == 404, (bad, r.text)
    r = client.post("/api/predict", json={"image": "dir:sub/dog.jpg"})
    assert r.status_code == 200 and len(r.json()["top"]) == 5
    r = client.get("/api/images/dir:cat.png/input.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- uploads
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_upload_formats(client, fmt):
    r = client.post(f"/api/images?name=x.{fmt.lower()}", content=encode(photo(70, 90), fmt))
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["width"], d["height"]) == (90, 70)
    assert any("64x64" in n for n in d["notes"])


def test_upload_refusals(client):
    from PIL import Image
    gif = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(gif, format="GIF")
    cases = {
        "gif": (gif.getvalue(), 415, "GIF"),
        "text": (b"hello, this is not an image", 415, "PNG, JPEG, BMP or WebP"),
        "empty": (b"", 422, "empty"),
        "truncated": (encode(photo(64, 64))[:200], 422, "truncated.png"),
        "bytes": (os.urandom(250_000), 413, "200000"),
    }
    # a decompression bomb: 12 megapixels that compress to a few kilobytes
    bomb = encode(np.zeros((3000, 4000, 3), np.uint8), optimize=True)
    assert len(bomb) < 200_000
    cases["bomb"] = (bomb, 413, "pixels")
    for what, (data, status, words) in cases.items():
        r = client.post(f"/api/images?name={what}.png", content=data)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert words in r.json()["error"], (what, r.json())
        r = client.post("/api/predict", content=data)
        assert r.status_code == status, what


def test_kept_images_are_bounded(model):
    app = create_app(model, max_images=3, max_image_bytes=10 ** 9)
    ex = app.state.explorer
    with TestClient(app) as c:
        ids = [c.post("/api/images", content=encode(photo(seed=k))).json()["id"] for k in range(5)]
        assert list(ex.images) == ids[2:]
        assert c.post("/api/predict", json={"image": ids[0]}).status_code == 404
        ex.max_image_bytes = 1
        ids.append(c.post("/api/images", content=encode(photo())).json()["id"])
        assert list(ex.images) == ids[-1:]      # the newest is kept whatever its size


def test_upload_length_header_checked_before_reading(client):
    r = client.post("/api/images", content=b"x" * 10, headers={"content-length": "999999999"})
    assert r.status_code in (400, 413)


def test_large_photo_gets_a_note(client):
    smooth = np.broadcast_to(np.linspace(0, 255, 800).astype(np.uint8)[None, :, None], (600, 800, 3))
    d = client.post("/api/predict", content=encode(np.ascontiguousarray(smooth))).json()
    assert any("much larger" in n and "64x64" in n for n in d["notes"])
    d = client.post("/api/predict", content=encode(photo(64, 64))).json()
    assert d["notes"] == []


# ---------------------------------------------------------------------------- predict
def test_predict(client, model, image_id):
    r = client.post("/api/predict", json={"image": image_id, "k": 3})
    assert r.status_code == 200
    top = r.json()["top"]
    from gradvis.io.images import fit_image
    p = gradvis.nn.losses.softmax(model.predict(model.preprocess(fit_image(photo(), (64, 64))[0])))[0]
    assert [t["class"] for t in top] == list(np.argsort(-p)[:3])
    np.testing.assert_allclose([t["prob"] for t in top], np.sort(p)[::-1][:3], rtol=1e-5)
    assert top[0]["name"] == model.class_names[top[0]["class"]].split(",")[0].strip()
    for body, status in [({"image": image_id, "k": 0}, 422), ({"image": 5}, 422), ({}, 422),
                         ({"image": "upload:nope"}, 404)]:
        assert client.post("/api/predict", json=body).status_code == status, body
    assert client.post("/api/predict", content=b"{", headers={"content-type": "application/json"}).status_code == 400


# ---------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", list(M.METHODS))
def test_every_registered_method_runs(client, model, image_id, name):
    meth = M.METHODS[name]
    target = 7 if meth.needs_target else None
    job = run(client, method=name, image=image_id, target=target, params=meth.small_params)
    r = wait_job(client, job)
    d = r.json()
    assert r.status_code == 200 and d["status"] == "done", d
    assert d["output"] == meth.output
    assert f"{model.input_shape}" and d["python"].count("\n") >= 5
    compile(d["python"], "<export>", "exec")
    npy = client.get(d["urls"]["npy"])
    a = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert list(a.shape) == d["shape"] and np.isfinite(a).all()
    if meth.output in ("map", "image"):
        png = client.get(d["urls"]["png"])
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    if meth.output == "map":
        raw = client.get(d["urls"]["map"]).content
        m = np.frombuffer(raw, "<f4").reshape(d["size"][1], d["size"][0])
        if a.ndim == 2:
            np.testing.assert_array_equal(m, a)
        else:                   # a per-pixel attribution: the .npy keeps its channels
            assert m.shape == a.shape[-2:]
    if meth.command and d["cli"]:
        assert d["cli"].startswith("gradvis ")


def test_exported_python_reproduces_the_saliency(client, model, image_id, tmp_path):
    job = run(client, method="saliency", image=image_id, target=7, params={})
    d = wait_job(client, job).json()
    got = np.load(io.BytesIO(client.get(d["urls"]["npy"]).content))
    (tmp_path / "photo.png").write_bytes(encode(photo()))
    ns = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(d["python"], ns)
    finally:
        os.chdir(cwd)
    np.testing.assert_allclose(ns["saliency"], got, rtol=1e-5, atol=1e-7)
    assert d["cli"] == "gradvis saliency photo.png --class 7 --save-npy"


def test_fooling_says_whether_it_worked(client, image_id):
    d = wait_job(client, run(client, method="fooling", image=image_id, target=7,
                             params={"max_iter": 1, "eps": 0.5})).json()
    assert d["success"] is False and any(n.startswith("Attack failed within eps 0.5/255") for n in d["notes"])
    d = wait_job(client, run(client, method="fooling", image=image_id, target=7, params={"max_iter": 300})).json()
    assert d["success"] is True and any(n.startswith("Fooled") for n in d["notes"])
    assert d["stats"]["predicted"] == 7


# ---------------------------------------------------------------------------- bad parameters: 422
def test_bad_requests_are_422_with_a_message(client, image_id):
    cases = [
        ({"method": "nope", "image": image_id, "target": 1}, "unknown method 'nope'"),
        ({"method": "saliency", "image": image_id}, "needs a target class"),
        ({"method": "saliency", "image": image_id, "target": 100}, "out of range"),
        ({"method": "saliency", "image": image_id, "target": -1}, "out of range"),
        ({"method": "saliency", "image": image_id, "target": "cat"}, "class index"),
        ({"method": "saliency", "image": image_id, "target": 1, "params": {"steps": 3}}, "unknown parameter"),
        ({"method": "deepdream", "image": image_id, "params": {"layer": "nope"}}, "unknown layer 'nope'"),
        ({"method": "deepdream", "image": image_id, "params": {"layer": "fc"}}, "no spatial output"),
        ({"method": "deepdream", "image": image_id, "params": {"iterations": "ten"}}, "must be a number"),
        ({"method": "deepdream", "image": image_id, "params": {"iterations": 2.5}}, "must be an integer"),
        ({"method": "fooling", "image": image_id, "target": 1, "params": {"norm": "1"}}, "must be one of"),
        ({"method": "saliency", "image": image_id, "target": 1, "extra": 1}, "unknown field"),
        ({"method": "saliency", "target": 1}, "image must be"),
    ]
    for body, words in cases:
        r = client.post("/api/run", json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert words in r.json()["error"], (body, r.json())


@pytest.mark.parametrize("name,params,call", [
    ("deepdream", {"octaves": 0}, lambda m, X: gradvis.deepdream(X, "relu4", m, octaves=0)),
    ("classvis", {"iterations": -3}, lambda m, X: gradvis.create_class_visualization(1, m, num_iterations=-3)),
    ("smoothgrad", {"num_samples": 0},
     lambda m, X: gradvis.smoothgrad_saliency_maps(X, np.array([1]), m, num_samples=0)),
    ("fooling", {"eps": -1.0}, lambda m, X: gradvis.make_fooling_image(X, 1, m, eps=-1.0)),
])
def test_library_value_errors_are_422_with_its_message(client, model, image_id, name, params, call):
    with pytest.raises(ValueError) as e:
        call(model, np.zeros((1, 3, 64, 64), np.float32))
    job = run(client, method=name, image=image_id, target=1, params=params)
    r = wait_job(client, job)
    assert r.status_code == 422 and r.json()["status"] == "failed"
    assert r.json()["error"] == str(e.value)


def test_unexpected_errors_are_500_and_the_server_goes_on(client, image_id):
    def broken(model, image, target, params, progress, cancelled):
        raise RuntimeError("a bug")
    M.register(M.Method(name="broken_for_test", label="b", family="test", run=broken, needs_target=False))
    try:
        r = wait_job(client, run(client, method="broken_for_test", image=image_id))
        assert r.status_code == 500 and r.json()["status"] == "error"
    finally:
        del M.METHODS["broken_for_test"]
    assert wait_job(client, run(client, method="saliency", image=image_id, target=1)).json()["status"] == "done"


def test_unknown_job_and_result_not_ready(client, image_id):
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404
    assert client.delete("/api/jobs/0123456789abcdef").status_code == 404
    assert client.get("/api/nothing").status_code == 404
    assert client.put("/api/run").status_code == 405


# ---------------------------------------------------------------------------- cancel and the queue
def long_dream(client, image_id, iterations=2000):
    return run(client, method="deepdream", image=image_id,
               params={"iterations": iterations, "octaves": 1, "max_size": 64})


def test_cancel_stops_a_running_job_within_a_step(client, image_id):
    job = long_dream(client, image_id)
    d = wait_job(client, job, until=("running",)).json()
    t0 = time.monotonic()
    while client.get(f"/api/jobs/{job}").json()["step"] < 5:
        assert time.monotonic() - t0 < WAIT
        time.sleep(0.01)
    d = client.get(f"/api/jobs/{job}").json()
    assert "preview" in d and client.get(d["preview"]).content[:4] == b"\x89PNG"
    r = client.delete(f"/api/jobs/{job}")
    assert r.status_code == 200
    d = wait_job(client, job, timeout=5.0).json()
    assert d["status"] == "cancelled" and d["step"] < 2000
    assert client.get(f"/api/jobs/{job}/result.npy").status_code == 409


def test_queue_runs_long_jobs_in_turn_and_quick_ones_between_steps(client, image_id):
    first = long_dream(client, image_id)
    second = long_dream(client, image_id)
    wait_job(client, first, until=("running",))
    assert client.get(f"/api/jobs/{second}").json()["status"] == "queued"
    # a saliency and a prediction finish while the dream runs
    quick = run(client, method="saliency", image=image_id, target=3)
    assert wait_job(client, quick).json()["status"] == "done"
    assert client.post("/api/predict", json={"image": image_id}).status_code == 200
    assert client.get(f"/api/jobs/{first}").json()["status"] == "running"
    # a queued job is cancelled at once and never runs
    client.delete(f"/api/jobs/{second}")
    d = client.get(f"/api/jobs/{second}").json()
    assert d["status"] == "cancelled" and d["step"] == 0
    client.delete(f"/api/jobs/{first}")
    assert wait_job(client, first, timeout=5.0).json()["status"] == "cancelled"
    listed = {j["id"]: j["status"] for j in client.get("/api/jobs").json()["jobs"]}
    assert listed[first] == listed[second] == "cancelled"


def test_event_stream(client, image_id):
    job = run(client, method="deepdream", image=image_id, params={"iterations": 6, "octaves": 1, "max_size": 64})
    events = []
    with client.stream("GET", f"/api/jobs/{job}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    assert events[-1] == "result" and events.count("result") == 1
    assert client.get(f"/api/jobs/{job}").json()["status"] == "done"


def test_event_stream_ends_with_the_result_when_the_job_finishes_as_an_event_is_sent(client):
    """The job finishes right after the stream has read it as running (forced here on
    that read): the stream must still end with one result event, not on the progress
    event it was sending."""
    from gradvis.explore.jobs import Job, RUNNING
    ex = client.app.state.explorer
    gate = threading.Event()
    job = ex.queue.submit(lambda job: gate.wait(10) or 1, kind="racy", long=True)
    armed = [True]

    class Racy(Job):
        @property
        def done(self):
            # (only the stream's read: the queue reads it too, under its lock)
            if armed[0] and self.status == RUNNING and sys._getframe(1).f_code.co_name == "events":
                armed[0] = False
                gate.set()                      # it finishes now...
                t0 = time.monotonic()
                while not Job.done.fget(self) and time.monotonic() - t0 < 10:
                    time.sleep(0.002)
                return False                    # ...just after this read said it was running
            return Job.done.fget(self)
    job.__class__ = Racy
    t0 = time.monotonic()
    while job.status != RUNNING and time.monotonic() - t0 < 10:
        time.sleep(0.002)
    events = []
    with client.stream("GET", f"/api/jobs/{job.id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    assert not armed[0], "the stream never read the job as running"
    assert events[-1] == "result" and events.count("result") == 1, events

def test_queue_bounds_waiting_abandoned_and_finished_jobs():
    q = JobQueue(max_queued=2, max_finished=3, keep_s=600, abandon_s=0.3)
    gate = threading.Event()
    started = threading.Event()

    def blocker(job):
        started.set()
        while not gate.wait(0.01):
            if job.cancelled():
                raise M.Cancelled()
    try:
        a = q.submit(blocker, long=True)
        assert started.wait(5)
        b = q.submit(lambda job: 1, long=True)
        q.submit(lambda job: 2, long=True)
        with pytest.raises(QueueFull):
            q.submit(lambda job: 3, long=True)
        # nobody asks about them: the running job and the waiting ones are cancelled
        t0 = time.monotonic()
        while not (a.done and b.done):
            assert time.monotonic() - t0 < 5, (a.status, b.status)
            time.sleep(0.05)
        assert a.status == b.status == "cancelled"
        for k in range(10):
            job = q.submit(lambda job, k=k: k)
            t0 = time.monotonic()
            while not job.done:
                assert time.monotonic() - t0 < 5
                time.sleep(0.005)
            assert job.result == k
        with q._lock:
            q._cleanup_locked()
        assert sum(j.done for j in q.jobs.values()) <= 3 and len(q.jobs) <= 3
        # and at most max_bytes of results
        q.max_bytes = 3000
        for k in range(3):
            job = q.submit(lambda job: np.zeros(1000, np.uint8))
            t0 = time.monotonic()
            while not job.done:
                assert time.monotonic() - t0 < 5
                time.sleep(0.005)
            assert job.nbytes >= 1000
        with q._lock:
            q._cleanup_locked()
        assert sum(j.nbytes for j in q.jobs.values()) <= 3000 and job.id in q.jobs
    finally:
        gate.set()
        q.close()


# ---------------------------------------------------------------------------- token and host
def test_token_required(model):
    app = create_app(model, token="s3cret-token")
    with TestClient(app) as c:
        for path in ["/", "/api/model", "/static/app.js", "/api/jobs/x"]:
            r = c.get(path)
            assert r.status_code == 403 and "token" in r.json()["error"], path
        assert c.post("/api/predict", content=encode(photo())).status_code == 403
        assert c.get("/api/model?token=wrong").status_code == 403
        assert c.get("/api/model", headers={"Authorization": "token s3cret-token"}).status_code == 200
        assert c.get("/api/model", headers={"X-Gradvis-Token": "s3cret-token"}).status_code == 200
        r = c.get("/?token=s3cret-token")
        assert r.status_code == 200 and "gradvis_token" in r.headers["set-cookie"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/model").status_code == 200          # the cookie the page got
    c.close()


def test_host_check_without_token(model):
    app = create_app(model, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/model").status_code == 200
        assert c.get("/api/model", headers={"host": "localhost:8765"}).status_code == 200
        assert c.get("/api/model", headers={"host": "evil.example:8765"}).status_code == 403


def test_other_web_pages_cannot_use_the_server(model):
    app = create_app(model, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        body = encode(photo())
        evil = {"origin": "http://evil.example"}
        assert c.post("/api/images", content=body, headers=evil).status_code == 403
        assert c.post("/api/run", content=b'{"method": "classvis", "target": 1}',
                      headers={**evil, "content-type": "text/plain"}).status_code == 403
        assert c.delete("/api/jobs/x", headers=evil).status_code == 403
        ok = {"origin": "http://127.0.0.1:8765"}
        assert c.post("/api/images", content=body, headers=ok).status_code == 201
        assert c.post("/api/images", content=body).status_code == 201        # scripts send no Origin
        assert c.get("/api/model", headers=evil).status_code == 200          # reading: the browser's CORS rules


def _serve(args, timeout=60):
    """Start `gradvis explore` on a free port; returns (process, first line printed)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "gradvis", "explore", "--no-browser", "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = []
    t = threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, "")), daemon=True)
    t.start()
    t0 = time.monotonic()
    while not any("serving on" in ln for ln in out):
        if p.poll() is not None or time.monotonic() - t0 > timeout:
            p.kill()
            raise AssertionError("".join(out))
        time.sleep(0.05)
    return p, next(ln for ln in out if "serving on" in ln).strip()


def test_cli_other_address_needs_a_token():
    import urllib.error
    import urllib.request
    p, line = _serve(["--host", "0.0.0.0"])
    try:
        m = re.search(r"http://[^:/]+:(\d+)/\?token=([A-Za-z0-9_-]{20,})", line)
        assert m, line
        port, token = m.groups()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=10)
        assert e.value.code == 403
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model?token={token}", timeout=10) as r:
            assert r.status == 200
    finally:
        p.terminate()
        p.wait(10)


def test_cli_errors():
    from gradvis.cli import main
    assert main(["explore", "--no-browser", "--token", "short"]) == 2
    assert main(["explore", "--no-browser", "--images", "/no/such/dir"]) == 2
    assert main(["explore", "--no-browser", "--port", "70000"]) == 2


def test_cli_labels(tmp_path):
    from types import SimpleNamespace

    from gradvis.cli.common import UsageError, read_labels
    f = tmp_path / "labels.txt"
    f.write_text("\n".join(f"n{i:08d}\tthing {i}" for i in range(3)) + "\n")
    names, wnids = read_labels(f, 0, SimpleNamespace(num_classes=3, name="m"))
    assert names == ["thing 0", "thing 1", "thing 2"] and wnids[1] == "n00000001"
    with pytest.raises(UsageError, match="has 3 names, the model has 4 classes"):
        read_labels(f, 0, SimpleNamespace(num_classes=4, name="m"))


def test_missing_extra_is_a_clear_message(monkeypatch, capsys):
    from gradvis.cli import main
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["explore", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gradvis[explore]'" in err


def test_exported_code_names_the_model_file_and_its_preprocessing():
    m = M.METHODS["saliency"]
    opts = {"mean": [0.485, 0.456, 0.406], "scale": 255.0}
    code = M.python_code(m, {}, 3, "net.onnx", "a b.jpg", opts)
    assert "gradvis.load_any('net.onnx', mean=[0.485, 0.456, 0.406], scale=255.0)" in code
    assert "read_rgb('a b.jpg')" in code
    cli = M.cli_command(m, {}, 3, "net.onnx", "a b.jpg", opts)
    assert cli == "gradvis saliency 'a b.jpg' --class 3 --save-npy --model net.onnx --mean 0.485 0.456 0.406 --scale 255.0"
    # a parameter the command has no option for, away from its default: no command
    sg = M.METHODS["smoothgrad"]
    assert M.cli_command(sg, {"num_samples": 5, "noise_level": 0.3, "seed": 0}, 3) is None
    assert M.cli_command(sg, {"num_samples": 5, "noise_level": 0.15, "seed": 0}, 3).endswith("--smoothgrad 5 --seed 0")


def test_registry_refuses_bad_entries():
    with pytest.raises(ValueError, match="already registered"):
        M.register(M.METHODS["saliency"])
    with pytest.raises(TypeError):
        M.register({"name": "x"})
    with pytest.raises(ValueError, match="output"):
        M.register(M.Method(name="bad_output", label="x", family="x", run=None, output="video"))
    assert "bad_output" not in M.METHODS


def test_a_model_without_classes():
    m = gradvis.Model(input_shape=(3, 16, 16), name="features")
    m.add("conv", gradvis.Conv2d(3, 4, 3, padding=1)).add("relu", gradvis.ReLU())
    m.init_params(seed=0)
    with TestClient(create_app(m)) as c:
        assert c.get("/api/model").json()["name"] == "features"
        image = c.post("/api/images", content=encode(photo(32, 32))).json()["id"]
        r = c.post("/api/predict", json={"image": image})
        assert r.status_code == 422 and "class scores" in r.json()["error"]
        r = wait_job(c, run(c, method="saliency", image=image, target=0))
        assert r.status_code == 422 and "class scores" in r.json()["error"]
        job = run(c, method="deepdream", image=image, params={"iterations": 2, "octaves": 1, "max_size": 32})
        d = wait_job(c, job).json()
        assert d["status"] == "done" and d["shape"] == [1, 3, 32, 32]
