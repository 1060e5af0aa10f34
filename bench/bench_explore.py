"""gradvis explore: the server's part of a saliency round trip, and the page's first view.

Round trip (in process, through Starlette's test client, so no network and no
browser): upload a photo (POST /api/images), start a saliency map (POST
/api/run), poll the job until it is done (GET /api/jobs/{id}, no sleep), fetch the
map and the model's input the page draws it over (GET map.f32, input.png). Also
the same with the photo already uploaded (a second method on the same photo),
and POST /api/predict with the photo as the body. Each row: the median and 90th
percentile of ``--repeat`` round trips after two warm-ups.

First view (``--page``, needs Chromium, chromedriver and selenium): ``gradvis
explore --no-browser`` in a child process, headless Chromium loads the page;
DOMContentLoaded, load, and the moment the model line is filled in (the page's
first useful view, after GET /api/model), from the browser's performance clock.
No peer is timed: no other package has such a page (Captum Insights, the only
one, was removed in Captum 0.9.0).

    python bench/bench_explore.py [--repeat 30] [--page] [--threads N] [--json out.json]
"""
import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", category=DeprecationWarning)


def photo_bytes():
    import matplotlib
    return (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes()


def round_trips(repeat):
    from starlette.testclient import TestClient

    from gradvis.explore.server import create_app
    c = TestClient(create_app())
    data = photo_bytes()

    def wait(job_id):
        while True:
            d = c.get(f"/api/jobs/{job_id}").json()
            if d["status"] not in ("queued", "running"):
                assert d["status"] == "done", d
                return d

    def full(method="saliency", image=None):
        t0 = time.perf_counter()
        if image is None:
            image = c.post("/api/images?name=hopper.jpg", content=data).json()["id"]
        job = c.post("/api/run", json={"method": method, "image": image, "target": 74}).json()["id"]
        d = wait(job)
        m = c.get(d["urls"]["map"]).content
        inp = c.get(d["urls"]["input"]).content
        assert len(m) == 64 * 64 * 4 and inp[:4] == b"\x89PNG"
        return time.perf_counter() - t0, d["compute_s"]

    def predict():
        t0 = time.perf_counter()
        r = c.post("/api/predict", content=data)
        assert r.status_code == 200
        return time.perf_counter() - t0, None

    def uploaded():
        return c.post("/api/images?name=hopper.jpg", content=data).json()["id"]
    kept = []
    rows = {}
    for name, f in [("saliency: upload + run + poll + map", lambda: full()),
                    ("saliency, photo already uploaded", lambda: full(image=kept[0])),
                    ("predict with the photo as the body", predict)]:
        kept[:] = [uploaded()]
        for _ in range(2):
            f()
        ts, cs = [], []
        for _ in range(repeat):
            t, comp = f()
            ts.append(t)
            if comp is not None:
                cs.append(comp)
        rows[name] = {"median_ms": 1e3 * float(np.median(ts)), "p90_ms": 1e3 * float(np.percentile(ts, 90)),
                      "compute_median_ms": 1e3 * float(np.median(cs)) if cs else None}
    return rows


def first_view(repeat):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    p = subprocess.Popen([sys.executable, "-m", "gradvis", "explore", "--no-browser", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True).start()
    t0 = time.monotonic()
    url = None
    while url is None and time.monotonic() - t0 < 60:
        for ln in list(lines):
            m = re.search(r"serving on (http://\S+)", ln)
            if m:
                url = m.group(1)
        time.sleep(0.05)
    if url is None:
        p.kill()
        raise SystemExit("gradvis explore did not start:\n" + "".join(lines))
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"]:
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    out = []
    try:
        for k in range(repeat + 1):
            d.get("about:blank")
            d.get(url)
            t = None
            t_end = time.monotonic() + 10
            while t is None and time.monotonic() < t_end:
                t = d.execute_script(
                    "return document.getElementById('model-line').textContent.startsWith('Model:')"
                    " ? performance.now() : null")
                if t is None:
                    time.sleep(0.005)
            nav = d.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                   "return [n.domContentLoadedEventEnd, n.loadEventEnd];")
            if k:                   # the first load warms the browser's caches
                out.append((nav[0], nav[1], t))
    finally:
        d.quit()
        p.terminate()
        p.wait(10)
    a = np.array(out, dtype=float)
    return {"DOMContentLoaded_ms": float(np.median(a[:, 0])), "load_ms": float(np.median(a[:, 1])),
            "model_line_shown_ms": float(np.median(a[:, 2])), "model_line_shown_max_ms": float(a[:, 2].max())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--page", action="store_true", help="also time the page's first view in headless Chromium")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import gradvis
    if args.threads:
        gradvis.set_num_threads(args.threads)
    res = {"machine": platform.processor() or platform.machine(), "threads": gradvis.get_num_threads(),
           "round_trips": round_trips(args.repeat)}
    if args.page:
        res["first_view"] = first_view(min(args.repeat, 10))
    print(f"gradvis explore, {res['threads']} thread(s), {args.repeat} repeats")
    print(f"{'round trip (server side, in process)':44s} {'median ms':>10s} {'p90 ms':>8s} {'compute ms':>11s}")
    for k, v in res["round_trips"].items():
        comp = f"{v['compute_median_ms']:11.1f}" if v["compute_median_ms"] is not None else f"{'-':>11s}"
        print(f"{k:44s} {v['median_ms']:10.1f} {v['p90_ms']:8.1f} {comp}")
    if "first_view" in res:
        f = res["first_view"]
        print(f"page first view (headless Chromium, median): DOMContentLoaded {f['DOMContentLoaded_ms']:.0f} ms, "
              f"load {f['load_ms']:.0f} ms, model line shown {f['model_line_shown_ms']:.0f} ms "
              f"(max {f['model_line_shown_max_ms']:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
