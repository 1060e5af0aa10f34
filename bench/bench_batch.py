"""Batch runs on Dask against the best in-process loop: saliency on the bundled model.

- overhead: images/s of ``gradvis.batch.run('saliency', ...)`` with its default
  local cluster next to the best in-process batched loop computing the same
  outputs (class scores, predictions and saliency maps of the predicted class)
  with every core, batches of 64 and 256;
- scaling: 2 workers over 1 worker, each worker with the same OpenMP threads;
- memory: each worker's peak resident memory after every chunk, over a long run.

Data: the TinyImageNet held-out split (5,000 images) when the archive is found,
else (or with --synthetic N) seeded random uint8 images of the model's size:
saliency's cost does not depend on the pixels.

    python bench/bench_batch.py [--images 5000] [--synthetic N] [--memory-images 20000]
        [--repeats 2] [--scaling-images 5000] [--threads-per-worker 1] [--json out.json]
"""
import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def held_out_or_synthetic(n, synthetic, seed=0):
    if not synthetic:
        try:
            from gradvis.io.datasets import load_tiny_imagenet
            X = load_tiny_imagenet().X_val
            return X[:n], "TinyImageNet held-out"
        except (FileNotFoundError, ValueError):
            pass
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), "synthetic"


def in_process(model, imgs, batch):
    """The same outputs as a batch run, in one loop: (images/s, seconds)."""
    from gradvis.batch.methods import _saliency_fused   # the loop a batch worker runs
    from gradvis.nn.losses import softmax
    t = time.perf_counter()
    for i in range(0, len(imgs), batch):
        X = model.preprocess(imgs[i:i + batch])
        scores, maps = _saliency_fused(X, lambda s: s.argmax(axis=1), model, batch_size=64)
        softmax(scores)
    dt = time.perf_counter() - t
    return len(imgs) / dt, dt


def batch_run(imgs, tmp, **kw):
    import gradvis.batch as gb
    out = os.path.join(tmp, f"run-{time.monotonic_ns()}")
    np.save(out + ".npy", imgs)
    t = time.perf_counter()
    doc = gb.run("saliency", out + ".npy", out, progress=False, **kw)
    wall = time.perf_counter() - t
    s = doc["sessions"][-1]
    res = {"images": len(imgs), "wall_s": wall, "compute_s": s["compute_seconds"],
           "images_per_s_wall": len(imgs) / wall, "images_per_s_compute": len(imgs) / s["compute_seconds"],
           "peak_rss_per_worker_mb": {p: v / 2**20 for p, v in s["peak_rss_per_worker"].items()},
           "chunks": s["chunks"]}
    shutil.rmtree(out)
    os.remove(out + ".npy")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--synthetic", action="store_true", help="random images instead of the held-out split")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scaling-images", type=int, default=5000,
                    help="images of the scaling runs: with few chunks, each worker's first chunk weighs more")
    ap.add_argument("--threads-per-worker", type=int, default=1, help="for the 1-vs-2-worker scaling")
    ap.add_argument("--memory-images", type=int, default=0, help="a long run for the memory trace (0: none)")
    ap.add_argument("--layouts", nargs="*", default=[], metavar="WxT",
                    help="other local clusters to time like the default: workers x threads, e.g. 16x1 2x8")
    ap.add_argument("--skip", nargs="*", default=[], choices=["overhead", "scaling"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import gradvis
    from gradvis.batch import default_workers
    from gradvis.batch.run import _local_cores
    cores = _local_cores()
    model = gradvis.load_pretrained()
    imgs, what = held_out_or_synthetic(a.images, a.synthetic)
    tmp = tempfile.mkdtemp(prefix="bench-batch-")
    report = {"host": platform.node(), "cores": cores, "data": what, "images": len(imgs),
              "default_workers": default_workers(cores), "runs": []}
    class Rows(list):
        def append(self, row):       # shown as it comes, so that a cut-short run still tells
            super().append(row)
            print("  ".join(str(round(v, 1) if isinstance(v, float) else v) for v in row), flush=True)
    rows = Rows()
    try:
        if "overhead" not in a.skip:
            gradvis.set_num_threads(cores)
            in_process(model, imgs[:128], 64)     # warm-up: plans, caches
            for r in range(a.repeats):
                best = max((in_process(model, imgs, b) + (b,) for b in (64, 256)), key=lambda t: t[0])
                res = batch_run(imgs, tmp)
                report["runs"].append({"kind": "overhead", "repeat": r, "loop_images_per_s": best[0],
                                       "loop_batch": best[2], **res})
                rows.append((f"loop (batch {best[2]}, {cores} threads)", len(imgs), best[0], "", ""))
                rows.append((f"batch.run default ({default_workers(cores)} workers)", len(imgs),
                             res["images_per_s_compute"], res["images_per_s_wall"],
                             f"{res['images_per_s_compute'] / best[0]:.2f}x"))
                for lay in a.layouts:
                    w, t = (int(v) for v in lay.split("x"))
                    res = batch_run(imgs, tmp, workers=w, threads_per_worker=t)
                    report["runs"].append({"kind": "layout", "repeat": r, "layout": lay, **res})
                    rows.append((f"batch.run {w} workers x {t} threads", len(imgs), res["images_per_s_compute"],
                                 res["images_per_s_wall"], f"{res['images_per_s_compute'] / best[0]:.2f}x"))
        if "scaling" not in a.skip:
            sub = imgs[:a.scaling_images]
            for r in range(a.repeats):
                one = batch_run(sub, tmp, workers=1, threads_per_worker=a.threads_per_worker)
                two = batch_run(sub, tmp, workers=2, threads_per_worker=a.threads_per_worker)
                report["runs"].append({"kind": "scaling", "repeat": r, "one": one, "two": two})
                rows.append((f"1 worker x {a.threads_per_worker} threads", len(sub),
                             one["images_per_s_compute"], one["images_per_s_wall"], ""))
                rows.append((f"2 workers x {a.threads_per_worker} threads", len(sub), two["images_per_s_compute"],
                             two["images_per_s_wall"],
                             f"{two['images_per_s_compute'] / one['images_per_s_compute']:.2f}x"))
        if a.memory_images:
            big = np.resize(imgs, (a.memory_images,) + imgs.shape[1:])
            res = batch_run(big, tmp)
            trace = {}
            for c in res["chunks"]:
                trace.setdefault(str(c["pid"]), []).append(c["peak_rss"] / 2**20)
            report["runs"].append({"kind": "memory", **{k: v for k, v in res.items() if k != "chunks"},
                                   "peak_rss_mb_after_each_chunk": trace})
            for pid, t in trace.items():
                q = max(1, len(t) // 4)
                rows.append((f"memory: worker {pid} peak MB, first/last quarter of its chunks", len(big),
                             max(t[:q]), max(t[-q:]), f"{len(t)} chunks"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print(f"\n{cores} cores, {what} images, bundled model, saliency of the predicted class")
    print(f"{'what':<62} {'images':>7} {'img/s':>9} {'img/s wall':>10} {'ratio':>8}")
    for name, n, v, w, ratio in rows:
        w = f"{w:.1f}" if isinstance(w, float) else w
        print(f"{name:<62} {n:>7} {v:>9.1f} {w:>10} {ratio:>8}")


if __name__ == "__main__":
    main()
