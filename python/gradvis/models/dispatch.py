"""One entry point for every model file gradvis reads (the CLI's ``--model``)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["load_any"]


def load_any(path, **kwargs):
    """Load a model by file type.

    - ``'default'``: the bundled model (:func:`gradvis.load_pretrained`);
    - ``.onnx``: :func:`gradvis.load_onnx` (``kwargs`` are its preprocessing
      arguments: ``mean``, ``std``, ``scale``, ``input_shape``, ``class_names``, ...);
    - ``.h5``: CS231n 2016's model file (:func:`gradvis.load_cs231n_h5`);
    - ``.npz``: a gradvis model file or training checkpoint (:func:`gradvis.load_model`).

    Raises FileNotFoundError for a missing file, ValueError for an unreadable one
    or an unknown extension,
    TypeError for keyword arguments the file type does not take.
    """
    if str(path) == "default":
        from . import load_pretrained
        if kwargs:
            raise TypeError(f"the bundled model takes no options, got {sorted(kwargs)}")
        return load_pretrained()
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        from ..onnx_import import load_onnx
        return load_onnx(path, **kwargs)
    if suffix in (".h5", ".hdf5"):
        from ..serialization import load_cs231n_h5
        return load_cs231n_h5(path, **kwargs)
    if suffix != ".npz":
        raise ValueError(f"unknown model format {suffix or '(no extension)'!r} of {path}; expected "
                         "'.npz' (gradvis), '.onnx' or '.h5' (CS231n 2016)")
    from ..serialization import load_model
    if kwargs:
        raise TypeError(f"a gradvis model file carries its own preprocessing; unexpected {sorted(kwargs)}")
    return load_model(path)
