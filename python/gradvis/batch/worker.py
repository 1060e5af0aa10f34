"""What runs on the Dask workers of a batch run: the model plugin and the chunk task.

Imported by :func:`gradvis.batch.run` once dask is known to be installed.
"""
from __future__ import annotations

import os
import pickle
import resource
import time

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from .. import _core
from ..nn.losses import softmax
from .data import load_payload
from .methods import image_seed
from .store import RunStore

__all__ = ["ModelPlugin", "run_chunk", "choose_classes", "local_cores", "host_of"]

# The models held by this worker process, by run key, and the kernel threads its
# tasks use (set by ModelPlugin).
WORKER_MODELS = {}
WORKER_THREADS = {}


def local_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def host_of(address):
    """'tcp://10.0.0.5:40123' -> '10.0.0.5'."""
    return str(address).split("://")[-1].rsplit(":", 1)[0]


class ModelPlugin(WorkerPlugin):
    """Gives every worker, including one that joins or restarts later, the model
    once (unpickled into :data:`WORKER_MODELS`), and chooses gradvis's kernel
    threads for its tasks: Dask's nanny starts workers with
    ``OMP_NUM_THREADS=1``, so without this each worker would compute on one
    core. Each task applies the count again (:func:`run_chunk`).

    Args:
        key: the run's key for the model on the workers (one per run, so that
            the end of one run never removes another's model).
        model_bytes: the pickled model.
        threads: {host: kernel threads per worker}, and ``None`` for hosts not
            listed (those use their cores divided by the worker's Dask threads).
    """

    def __init__(self, key, model_bytes, threads):
        self.key = key
        self.model_bytes = model_bytes
        self.threads = threads

    def setup(self, worker):
        # what writing a chunk imports (Zarr's codecs, Parquet), loaded with the
        # worker rather than inside its first chunk
        import pyarrow.parquet  # noqa: F401
        import zarr  # noqa: F401
        import zarr.codecs  # noqa: F401
        n = self.threads.get(host_of(worker.address))
        if n is None:
            n = max(1, local_cores() // max(1, worker.state.nthreads))
        WORKER_THREADS[self.key] = int(n)
        WORKER_MODELS[self.key] = pickle.loads(self.model_bytes)

    def teardown(self, worker):
        WORKER_MODELS.pop(self.key, None)
        WORKER_THREADS.pop(self.key, None)


def choose_classes(target, ids, labels, seed, num_classes):
    """A function scores (m, K) -> classes (m,) for the images ``ids`` (see
    :func:`gradvis.batch.run`'s ``target``)."""
    def choose(scores):
        pred = scores.argmax(axis=1)
        if target == "predicted":
            return pred
        if target == "label":
            return np.asarray(labels, np.int64)
        if target == "random":
            # uniform over the classes other than the predicted one, from the image's own stream
            out = np.empty(len(ids), np.int64)
            for j, i in enumerate(ids):
                r = np.random.default_rng(np.random.SeedSequence([int(seed), int(i), 1]))
                k = int(r.integers(num_classes - 1))
                out[j] = k + (k >= pred[j])
            return out
        return np.full(len(ids), int(target), np.int64)
    return choose


def run_chunk(store_dir, method, options, key, payload, k, lo, paths, labels, target, seed, model=None):
    """Read, compute and write chunk ``k`` (images lo..lo+m-1). Returns a summary
    dict (chunk, images, failed, seconds, start and end wall times, the worker's
    peak resident memory so far in bytes, pid)."""
    t0, wall0 = time.perf_counter(), time.time()
    if model is None:
        model = WORKER_MODELS.get(key)
        if model is None:
            raise RuntimeError("the model was not sent to this worker (its plugin did not run)")
    threads = WORKER_THREADS.get(key)
    if threads is not None and _core.get_num_threads() != threads:
        _core.set_num_threads(threads)
    X, errors = load_payload(payload, model)
    m = X.shape[0]
    ids = np.arange(lo, lo + m)
    labels = np.asarray(labels, np.int64)
    if target == "label":
        for j in np.flatnonzero(labels < 0):
            errors[j] = errors[j] or "no label for this image (target='label')"
    ok = np.array([not e for e in errors], dtype=bool)
    b = options["batch_size"]
    arrays = {o.name: np.full((m,) + o.image_shape(model), np.nan if np.dtype(o.dtype).kind == "f" else 0,
                              dtype=o.dtype) for o in method.outputs}
    pred = np.full(m, -1, np.int64)
    score = np.full(m, np.nan)
    chosen = np.full(m, -1, np.int64)
    rep = {c: [None] * m for c in method.report}
    # blocks of batch_size images aligned to the image ids, whatever the chunking
    start = lo
    while start < lo + m:
        stop = min(lo + m, (start // b + 1) * b)
        sel = np.flatnonzero(ok[start - lo:stop - lo]) + (start - lo)
        start = stop
        if sel.size == 0:
            continue
        if sel[-1] - sel[0] + 1 == sel.size:   # every image of the block read: views, not copies
            sel = slice(int(sel[0]), int(sel[-1]) + 1)
        bid = ids[sel]
        choose = choose_classes(target, bid, labels[sel], seed, model.num_classes)
        seeds = [image_seed(seed, i) for i in bid] if method.seeded else None
        scores, y, outs, r = method.call_scored(X[sel], choose, model, options, seeds)
        pred[sel] = scores.argmax(axis=1)
        score[sel] = softmax(scores)[np.arange(len(scores)), pred[sel]]
        chosen[sel] = y
        for o, a in zip(method.outputs, outs):
            arrays[o.name][sel] = a
        for c in method.report:
            for j, v in zip(range(sel.start, sel.stop) if isinstance(sel, slice) else sel, r[c].tolist()):
                rep[c][j] = v
    rows = {"id": ids, "path": [str(p) for p in paths], "label": labels, "prediction": pred, "score": score, "target": chosen,
            "status": ["ok" if o else "failed" for o in ok], "error": [e or None for e in errors],
            "chunk": np.full(m, k, np.int64), **rep}
    RunStore(store_dir).write_chunk(k, lo, arrays, rows, method.report)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kB on Linux
    return {"chunk": k, "images": m, "failed": int((~ok).sum()), "seconds": time.perf_counter() - t0,
            "start": wall0, "end": time.time(), "peak_rss": int(peak), "pid": os.getpid(),
            "threads": _core.get_num_threads()}
