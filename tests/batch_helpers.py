"""What the batch tests share: a small cluster, data, reading a run's outputs,
the direct calls a run must equal, and a slow method for the kill tests."""
import os
import time

import numpy as np
import pytest

from conftest import require


def need_dask():
    for mod in ("distributed", "zarr", "pyarrow"):
        require(mod)


def uint8_images(n, size=16, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def read_run(out):
    """({array name: array}, {column: list}) of a run directory."""
    import pyarrow.parquet as pq
    import zarr
    g = zarr.open_group(os.path.join(out, "maps.zarr"), mode="r")
    arrays = {name: np.asarray(a[:]) for name, a in g.arrays()}
    table = pq.read_table(os.path.join(out, "index.parquet")).to_pydict()
    return arrays, table


def direct(method, X, model, options, seed=0, target="predicted"):
    """What a run of ``method`` on float images X must give, by calling the
    registered function itself: each block of batch_size images (class: the
    predicted one, or ``target``), seeded methods one image at a time with the image's seed."""
    from gradvis.batch import image_seed
    b = options.get("batch_size", 64)
    arrays = [[] for _ in method.outputs]
    report = {k: [] for k in method.report}
    opts = {k: v for k, v in options.items() if k != "batch_size" or method.takes_batch_size}
    for lo in range(0, X.shape[0], b):
        Xb = X[lo:lo + b]
        y = model.predict(Xb, batch_size=Xb.shape[0]).argmax(axis=1)
        if target != "predicted":
            y = np.full(Xb.shape[0], target)
        if method.seeded:
            outs = [method.function(Xb[i:i + 1], y[i:i + 1], model, seed=image_seed(seed, lo + i),
                                    **opts, **method.fixed) for i in range(Xb.shape[0])]
        elif method.class_arg is None:
            outs = [method.function(Xb, model, **opts, **method.fixed)]
        else:
            outs = [method.function(Xb, y, model, **opts, **method.fixed)]
        for out in outs:
            out = out if isinstance(out, tuple) else (out,)
            for j in range(len(method.outputs)):
                arrays[j].append(np.asarray(out[j]))
            for k in method.report:
                report[k].extend(np.asarray(out[-1][k]).tolist())
    return {o.name: np.concatenate(a) for o, a in zip(method.outputs, arrays)}, report


def slow_saliency(X, y, model, batch_size=64, delay=0.3):
    """compute_saliency_maps, after a pause: a method slow enough to be killed mid-chunk."""
    from gradvis.attribution import compute_saliency_maps
    time.sleep(delay)
    return compute_saliency_maps(X, y, model, batch_size=batch_size)


def slow_method():
    from gradvis.batch import Method, Output
    return Method("slow-saliency", slow_saliency, options={"delay": 0.3},
                  outputs=(Output("saliency", "map"),))


def worker_settings(X, model, batch_size=64):
    """What a task sees on its worker: Dask's profiler setting and gradvis's threads."""
    import dask
    from gradvis import _core
    n = X.shape[0]
    return {"profiler": np.full(n, bool(dask.config.get("distributed.worker.profile.enabled"))),
            "omp_threads": np.full(n, _core.get_num_threads())}


def settings_method():
    from gradvis.batch import Method
    return Method("worker-settings", worker_settings, class_arg=None, outputs=(),
                  report={"profiler": "bool", "omp_threads": "int64"})


@pytest.fixture(scope="session")
def client():
    """A local Dask cluster on 127.0.0.1: two single-threaded worker processes."""
    need_dask()
    import logging
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
