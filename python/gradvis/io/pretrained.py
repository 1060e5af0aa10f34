"""The bundled model, and one entry point for every model file gradvis reads (the CLI's ``--model``)."""
from __future__ import annotations

from pathlib import Path

from .cs231n_h5 import load_cs231n_h5
from .model_file import load_model
from .onnx_import import load_onnx

__all__ = ["load_pretrained", "load_any", "DEFAULT_WEIGHTS"]

# The weights ship inside the package, in gradvis/models/.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "default.npz"


def load_pretrained(name="default"):
    """The bundled TinyImageNet-100-A model (gradvis's default net, trained by
    ``python -m gradvis.train``; see :func:`gradvis.nn.architectures.default_net`).

    Returns a :class:`gradvis.Model` with ``class_names``, ``wnids``, ``preprocess``,
    ``deprocess`` and ``input_range``. Input: 64x64 RGB, 0-255 minus the per-channel
    training mean.

    Raises FileNotFoundError (saying how to make it) if the weights are not there.
    """
    if name != "default":
        raise ValueError(f"unknown pretrained model {name!r}; available: 'default'")
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the bundled weights {DEFAULT_WEIGHTS} are missing (not trained yet, or not "
            "installed with the package). Train them with `python -m gradvis.train --run-dir "
            f"runs/default --export {DEFAULT_WEIGHTS}`, or load another file with gradvis.load_model(path)")
    return load_model(DEFAULT_WEIGHTS)


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
        if kwargs:
            raise TypeError(f"the bundled model takes no options, got {sorted(kwargs)}")
        return load_pretrained()
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return load_onnx(path, **kwargs)
    if suffix in (".h5", ".hdf5"):
        return load_cs231n_h5(path, **kwargs)
    if suffix != ".npz":
        raise ValueError(f"unknown model format {suffix or '(no extension)'!r} of {path}; expected "
                         "'.npz' (gradvis), '.onnx' or '.h5' (CS231n 2016)")
    if kwargs:
        raise TypeError(f"a gradvis model file carries its own preprocessing; unexpected {sorted(kwargs)}")
    return load_model(path)
