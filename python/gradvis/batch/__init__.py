"""Dataset-scale runs: a per-image method over every image of a data set, on Dask.

:func:`run` applies a registered method (:mod:`~gradvis.batch.methods`:
predict, saliency, smoothgrad, fool, ...) to the images of a source
(:mod:`~gradvis.batch.data`: an image folder, the TinyImageNet archive, a
``.npy`` or Zarr array, a text file of paths) in chunks, one Dask task each, on
a local cluster by default or an existing one, and writes ``maps.zarr``,
``index.parquet`` and ``run.json`` into a directory it can resume
(:mod:`~gradvis.batch.store`).

Needs the extra ``gradvis[dask]`` (dask[distributed], zarr, pyarrow).
"""
from .data import Source, open_source
from .methods import METHODS, Method, Output, get_method, image_seed, method_names, register
from .run import default_workers, run
from .store import RunStore, model_digest

__all__ = ["run", "default_workers", "Method", "Output", "register", "get_method", "method_names",
           "image_seed", "METHODS", "Source", "open_source", "RunStore", "model_digest"]
