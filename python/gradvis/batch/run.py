"""Dataset-scale runs of a per-image method on Dask: :func:`run`."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .. import _checks
from ..nn.graph import check_classifier
from .data import load_payload, open_source
from .methods import get_method, image_seed
from .store import RunStore, model_digest, need_dask

__all__ = ["run", "default_workers", "CONNECT_TIMEOUT"]

# Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT = 10


def _local_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def default_workers(cores=None):
    """Worker processes of the default local cluster: one per 4 cores (at least 1);
    each runs one chunk at a time with cores // workers kernel threads."""
    cores = _local_cores() if cores is None else cores
    return max(1, cores // 4)


def _settings(method, options, source, model, digest, seed, target, chunk_size):
    import json
    return json.loads(json.dumps({
        "method": method.name, "options": options, "seed": seed, "target": target,
        "chunk_size": chunk_size, "data": source.description, "model_digest": digest,
        "model_name": model.name}, default=str))


def _probe(method, options, source, model, target, seed):
    """The method on the first image that loads, in this process: bad options
    fail here, before anything is written."""
    from .worker import choose_classes
    for lo in range(0, min(len(source), 64), 8):
        X, errors = load_payload(source.payload(lo, min(len(source), lo + 8)), model)
        for j, e in enumerate(errors):
            if not e:
                ids = np.array([lo + j])
                labels = source.labels[lo + j:lo + j + 1]
                if target == "label" and labels[0] < 0:
                    continue
                choose = choose_classes(target, ids, labels, seed, model.num_classes)
                seeds = [image_seed(seed, lo + j)] if method.seeded else None
                method.call_scored(X[j:j + 1], choose, model, dict(options, batch_size=1), seeds)
                return
    raise ValueError("data: none of the first 64 images could be read or used; the first reason: "
                     f"{next((e for e in errors if e), 'no label')}")


def _connect(scheduler, workers, dashboard):
    """(client, cluster or None): a client of the scheduler at ``scheduler``, or
    of a new local cluster of ``workers`` single-threaded worker processes."""
    import logging
    from distributed import Client, LocalCluster
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError) as e:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT} s "
                          f"({type(e).__name__}: {e})") from None
        except ValueError as e:
            raise ValueError(f"scheduler: {scheduler!r} is not a scheduler address ({e})") from None
    n = default_workers() if workers is None else workers
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=":0" if dashboard else None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _threads(client, threads_per_worker):
    """{host: kernel threads per worker}: the given number, or each host's cores
    divided by the Dask threads of its workers (workers x threads = cores)."""
    from .worker import host_of, local_cores
    info = _workers(client)
    per_host = {}
    for addr, w in info.items():
        per_host.setdefault(host_of(addr), []).append(addr)
    if threads_per_worker is not None:
        return {h: threads_per_worker for h in per_host}
    cores = client.run(local_cores) if per_host else {}
    out = {}
    for h, addrs in per_host.items():
        dask_threads = sum(info[a].get("nthreads", 1) for a in addrs)
        out[h] = max(1, max(cores.get(a, 1) for a in addrs) // max(1, dask_threads))
    return out


def _workers(client):
    """{address: info} of every worker the scheduler knows."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:       # older distributed: no n_workers, all workers
        return client.scheduler_info()["workers"]


def run(method, data, out, model=None, scheduler=None, workers=None, chunk_size=256, resume=True,
        progress=True, seed=0, target="predicted", threads_per_worker=None, dashboard=False,
        **method_kwargs):
    """Apply a per-image method to every image of a data set, on a Dask cluster.

    Images are taken in chunks of ``chunk_size``; each chunk is one task, which a
    worker reads, computes in blocks of ``batch_size`` images (aligned to the
    image ids) and writes into ``out`` (see :mod:`gradvis.batch.store`). A rerun
    with the same arguments resumes: finished chunks are skipped.

    Args:
        method: a registered method name ('predict', 'saliency', 'smoothgrad',
            'fool', ...; :func:`gradvis.batch.method_names`) or a :class:`Method`.
        data: an image folder, the TinyImageNet archive (``'tinyimagenet'`` or
            its path, ``:val`` for the held-out split), a ``.npy`` file, a Zarr
            array, a text file of image paths, or a numpy array
            (:func:`gradvis.batch.open_source`).
        out: the run directory (created; resumed when it holds this run).
        model: a classifier :class:`gradvis.Model` (default: the bundled model).
        scheduler: address of an existing Dask scheduler ('tcp://host:8786'),
            or a ``distributed.Client``; default a local cluster.
        workers: worker processes of the local cluster (default
            :func:`default_workers`: one per 4 cores).
        chunk_size: images per task and per Zarr chunk (>= 1, a multiple of
            ``batch_size``).
        resume: continue a run found in ``out``; False refuses one.
        progress: a progress bar on stderr.
        seed: the run's seed; image i's seed is ``image_seed(seed, i)``
            (SeedSequence of (seed, i)), so results do not depend on the chunking.
        target: the class each image's method works on: 'predicted' (default),
            'label' (the data's label; images without one fail), 'random' (a
            class other than the predicted one, seeded per image) or a class index.
        threads_per_worker: gradvis's kernel threads per worker (default: the
            cores shared out so that workers x threads = cores).
        dashboard: print the Dask dashboard's address (local cluster).
        **method_kwargs: the method's options (e.g. ``num_samples`` for
            smoothgrad; ``batch_size``, default 64, for every method).

    Returns:
        The run's ``run.json`` document (dict): settings, counts, timings.

    Raises:
        ValueError / TypeError / FileNotFoundError / OSError for bad arguments,
        missing data, an unreachable scheduler or a directory holding another
        run; all before anything is written. RuntimeError if chunks failed
        (the others are kept; rerun to retry).

    The results are those of calling the method on each block of
    ``batch_size`` images directly (on one image at a time with its seed for
    seeded methods); for methods that themselves process ``batch_size`` images
    a pass (saliency), that is one direct call on all the images.
    """
    t_start = time.time()
    m = get_method(method)
    options = m.resolve_options(method_kwargs)
    options["batch_size"] = _checks.positive_int(options["batch_size"], "batch_size")
    chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    if chunk_size % options["batch_size"]:
        raise ValueError(f"chunk_size ({chunk_size}) must be a multiple of batch_size "
                         f"({options['batch_size']}), so that blocks of images do not depend on the chunking")
    seed = _checks.integer(seed, "seed", lo=0)
    if threads_per_worker is not None:
        threads_per_worker = _checks.positive_int(threads_per_worker, "threads_per_worker")
    if workers is not None:
        workers = _checks.positive_int(workers, "workers")
    if scheduler is not None and not isinstance(scheduler, str) and not hasattr(scheduler, "submit"):
        raise TypeError(f"scheduler must be an address such as 'tcp://host:8786' or a distributed.Client, "
                        f"got {type(scheduler).__name__}")
    if scheduler is not None and workers is not None:
        raise ValueError("give workers (a local cluster) or scheduler (an existing one), not both")
    RunStore.check_out(out)
    need_dask()
    if model is None:
        from ..io.pretrained import load_pretrained
        model = load_pretrained()
    check_classifier(model, f"batch method {m.name!r}")
    if isinstance(target, str):
        if target not in ("predicted", "label", "random"):
            raise ValueError(f"target must be 'predicted', 'label', 'random' or a class index, got {target!r}")
        if target == "random" and model.num_classes < 2:
            raise ValueError("target='random' needs a model with at least 2 classes")
    else:
        target = _checks.integer(target, "target", lo=0, hi=model.num_classes - 1)
    source = open_source(data, model)
    if target == "label" and not (source.labels >= 0).any():
        raise ValueError("target='label' but the data have no labels the model knows")
    _probe(m, options, source, model, target, seed)
    digest = model_digest(model)
    settings = _settings(m, options, source, model, digest, seed, target, chunk_size)
    store = RunStore(out)
    resuming = store.check(settings, resume)

    n = len(source)
    n_chunks = -(-n // chunk_size)
    import contextlib
    import dask
    env = contextlib.nullcontext()
    if scheduler is None:
        env = dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ(
            threads_per_worker or max(1, _local_cores() // (workers or default_workers()))),
            **_quiet_config(dashboard)})
    with env:
        return _run_on(client_args=(scheduler, workers, dashboard), scheduler=scheduler, m=m, options=options,
                       source=source, model=model, digest=digest, settings=settings, store=store,
                       resuming=resuming, n=n,
                       n_chunks=n_chunks, chunk_size=chunk_size, target=target, seed=seed, progress=progress,
                       dashboard=dashboard, threads_per_worker=threads_per_worker, t_start=t_start)


def _quiet_config(dashboard):
    """Dask settings for a local cluster this run starts: fewer wake-ups of the
    processes' event loops while the workers compute. Dask's defaults sample
    every worker thread's stack each 10 ms for the dashboard's profile page,
    check the event loop each 20 ms and record the host's CPU and memory each
    0.5 s; each wake-up takes a core from gradvis's threads, which wait
    for each other. Together they cost a 2-core host 5-7% of a run's speed
    (bench/RESULTS.md). With ``dashboard=True`` the profiler and the system
    monitor keep Dask's defaults."""
    conf = {"distributed.admin.tick.interval": "1s"}
    if not dashboard:
        conf["distributed.worker.profile.enabled"] = False
        conf["distributed.admin.system-monitor.interval"] = "5s"
    return conf


def _worker_environ(threads):
    """The environment the nannies of a local cluster give their workers: Dask's
    defaults, with OpenMP's threads as this run shares the cores out (Dask sets
    1), and without Dask's MALLOC_TRIM_THRESHOLD_=65536, which makes glibc give
    memory back after every large free so that each pass faults its buffers in
    again (chunks took about 1.7x as long; bench/RESULTS.md)."""
    import dask
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env["OMP_NUM_THREADS"] = int(threads)
    return env


def _run_on(client_args, scheduler, m, options, source, model, digest, settings, store, resuming, n, n_chunks,
            chunk_size, target, seed, progress, dashboard, threads_per_worker, t_start):
    if isinstance(scheduler, str) or scheduler is None:
        client, cluster = _connect(*client_args)
        own = True
    else:
        client, cluster, own = scheduler, None, False
    try:
        from .worker import ModelPlugin
        threads = _threads(client, threads_per_worker)
        if dashboard and progress:
            print(f"gradvis batch: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
        outputs = [(o.name, o.image_shape(model), o.dtype) for o in m.outputs]
        if not resuming:
            store.create(settings, outputs, n, chunk_size, m.report)
        done = store.done_chunks()
        todo = [k for k in range(n_chunks) if k not in done]
        import pickle
        import uuid
        plugin_name = f"gradvis-model-{digest[:16]}-{uuid.uuid4().hex[:12]}"
        client.register_plugin(ModelPlugin(plugin_name, pickle.dumps(model), threads), name=plugin_name)
        stats, errors = _submit_all(client, store, m, options, plugin_name, source, todo, chunk_size, target,
                                    seed, progress)
        try:
            client.unregister_worker_plugin(plugin_name)
        except Exception:   # noqa: BLE001 - a worker gone at the end keeps nothing
            pass
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    t_end = time.time()
    computed = sum(s["images"] for s in stats)
    session = {"started": t_start, "ended": t_end, "seconds": t_end - t_start,
               "chunks_computed": len(stats), "images_computed": computed,
               "images_per_second": computed / max(t_end - t_start, 1e-9),
               "chunk_seconds_mean": float(np.mean([s["seconds"] for s in stats])) if stats else 0.0,
               # from the first chunk's start to the last one's end: the run without
               # the cluster's start and the checks before it
               "compute_seconds": (max(s["end"] for s in stats) - min(s["start"] for s in stats)) if stats else 0.0,
               "peak_rss_per_worker": {str(pid): int(max(s["peak_rss"] for s in stats if s["pid"] == pid))
                                       for pid in {s["pid"] for s in stats}},
               "chunks": [{k: s[k] for k in ("chunk", "pid", "threads", "seconds", "peak_rss")} for s in
                          sorted(stats, key=lambda s: s["end"])],
               "resumed": resuming, "chunks_skipped": n_chunks - len(todo), "errors": errors[:10]}
    doc = store.finish(session, m.report)
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(todo)} chunks failed (the others are saved; rerun to "
                           f"retry): {errors[0]}")
    return doc


def _submit_all(client, store, method, options, key, source, todo, chunk_size, target, seed, progress):
    """Run the chunks ``todo``, a bounded number at a time (so that a chunk's
    payload and results are held only while it runs, however many chunks there
    are); returns (the workers' summaries, error messages of failed chunks)."""
    from distributed import as_completed
    from .worker import run_chunk
    n = len(source)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(min(n, (k + 1) * chunk_size) - k * chunk_size for k in todo),
                   desc=f"batch {method.name}", unit="img", file=sys.stderr, dynamic_ncols=True)
    slots = sum(w.get("nthreads", 1) for w in _workers(client).values())
    in_flight = max(4, 2 * slots)
    futures = {}

    def submit(k):
        lo, hi = k * chunk_size, min(n, (k + 1) * chunk_size)
        f = client.submit(run_chunk, str(store.root), method, options, key, source.payload(lo, hi), k, lo,
                          source.paths[lo:hi], source.labels[lo:hi], target, seed, pure=False,
                          key=f"{key}-chunk-{k}")
        futures[f] = k
        return f
    queue = list(todo)
    stats, errors = [], []
    try:
        running = as_completed([submit(k) for k in queue[:in_flight]])
        queue = queue[in_flight:]
        for f in running:
            k = futures.pop(f)
            if queue:
                running.add(submit(queue.pop(0)))
            try:
                s = f.result()
            except Exception as e:   # noqa: BLE001 - reported per chunk; the others go on
                errors.append(f"chunk {k}: {type(e).__name__}: {e}")
                continue
            finally:
                f.release()
            stats.append(s)
            if bar is not None:
                bar.update(s["images"])
    finally:
        if bar is not None:
            bar.close()
    return stats, errors
