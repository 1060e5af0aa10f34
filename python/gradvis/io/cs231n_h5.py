"""CS231n 2016's ``pretrained_model.h5`` (TinyImageNet-100-A), read as a :class:`~gradvis.nn.graph.Model`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_cs231n_h5"]


def load_cs231n_h5(path, class_names=None, wnids=None, mean=None):
    """Load CS231n 2016's ``pretrained_model.h5`` as a frozen :class:`Model` (:meth:`Model.freeze`).

    The file holds ``W0..W10``, ``b0..b10``, ``gamma0..gamma9``, ``beta0..beta9``,
    ``running_mean0..9``, ``running_var0..9`` (conv weights (F, C, k, k), affine
    weights (D, M)); widths and filter sizes are read from the shapes. The input
    is mean-image subtracted: ``mean`` if given (a (3, 64, 64) / (64, 64, 3) mean
    image, e.g. ``ds.X_train.mean(0)``, or a per-channel (3,) mean), else
    ``mean_image`` from the file if present, else TinyImageNet-100-A's
    per-channel mean. Requires h5py.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("load_cs231n_h5 needs h5py: pip install h5py "
                          "(or pip install 'gradvis[h5]')") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None
    with f:
        def dataset(key, ndim=None):
            """The dataset ``key``, checked before anything of its size is read or built."""
            d = f.get(key)
            if d is None:
                raise ValueError(f"{path}: missing dataset {key!r} (not a CS231n 2016 model file?)")
            if not isinstance(d, h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is a {type(d).__name__}, not a dataset")
            if ndim is not None and d.ndim != ndim:
                raise ValueError(f"{path}: {key!r} must be {ndim}-D, got shape {d.shape}")
            if d.dtype.kind not in "fiu":
                raise ValueError(f"{path}: {key!r} holds {d.dtype} values, not numbers")
            if d.size and d.id.get_storage_size() == 0:   # declared, never written
                raise ValueError(f"{path}: {key!r} declares shape {d.shape} but holds no data")
            return d

        def get(key):
            arr = np.asarray(dataset(key), dtype=np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: {key!r} has NaN or infinite values")
            return arr
        convs = 0
        while f"W{convs}" in f and np.ndim(f[f"W{convs}"]) == 4:
            convs += 1
        if convs == 0:
            raise ValueError(f"{path}: no 4-D 'W0' convolution weights; not a CS231n 2016 model file")
        widths = [dataset(f"W{i}", 4).shape[0] for i in range(convs)]
        filters = [f[f"W{i}"].shape[2] for i in range(convs)]
        last = f"W{convs + 1}"
        if f"W{convs}" not in f or last not in f:
            raise ValueError(f"{path}: missing affine weights W{convs}/W{convs + 1}")
        hidden = dataset(f"W{convs}", 2).shape[1]
        num_classes = dataset(last, 2).shape[1]
        # every array the model needs, present and holding data, before the model (of
        # the sizes these declare) is built
        for i in range(convs + 1):
            for key in (f"b{i}", f"gamma{i}", f"beta{i}", f"running_mean{i}", f"running_var{i}"):
                dataset(key, 1)
        dataset(f"b{convs + 1}", 1)
        for key in (() if mean is not None else ("mean_image", "mean")):
            if key in f:
                mean = np.asarray(f[key], dtype=np.float32)
                break
        if mean is not None:
            mean = np.asarray(mean, np.float32)
        if mean is not None and mean.ndim == 3 and mean.shape[-1] == 3 and mean.shape[0] != 3:
            mean = mean.transpose(2, 0, 1)
        input_size = mean.shape[-1] if mean is not None and mean.ndim == 3 else 64
        if mean is None:
            mean = np.array([121.55, 113.05, 99.85], np.float32)   # TinyImageNet-100-A train mean
        try:
            from ..nn.architectures import cs231n_2016
            model = cs231n_2016(num_classes, widths, hidden, input_size, filters, mean=mean,
                                             class_names=class_names, wnids=wnids)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        expect = {}
        for i in range(convs):
            expect[f"conv{i}.weight"], expect[f"conv{i}.bias"] = f"W{i}", f"b{i}"
            expect[f"bn{i}.gamma"], expect[f"bn{i}.beta"] = f"gamma{i}", f"beta{i}"
        expect[f"fc{convs}.weight"], expect[f"fc{convs}.bias"] = f"W{convs}", f"b{convs}"
        expect[f"bn{convs}.gamma"], expect[f"bn{convs}.beta"] = f"gamma{convs}", f"beta{convs}"
        expect[f"fc{convs + 1}.weight"], expect[f"fc{convs + 1}.bias"] = f"W{convs + 1}", f"b{convs + 1}"
        for name, key in expect.items():
            arr = get(key)
            want = model.params[name].shape
            if arr.shape != want:
                raise ValueError(f"{path}: {key!r} has shape {arr.shape}, expected {want}")
            model.params[name] = arr
        for i in range(convs + 1):
            for stat in ("running_mean", "running_var"):
                arr = get(f"{stat}{i}")
                want = model.buffers[f"bn{i}.{stat}"].shape
                if arr.shape != want:
                    raise ValueError(f"{path}: '{stat}{i}' has shape {arr.shape}, expected {want}")
                if stat == "running_var" and (arr < 0).any():
                    raise ValueError(f"{path}: 'running_var{i}' has negative entries (min {arr.min():g})")
                model.buffers[f"bn{i}.{stat}"] = arr
    return model.freeze()
