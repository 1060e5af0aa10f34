"""Bundled model weights and their loaders."""
from __future__ import annotations

from pathlib import Path

from .dispatch import load_any

__all__ = ["load_pretrained", "load_any", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = Path(__file__).with_name("default.npz")


def load_pretrained(name="default"):
    """The bundled TinyImageNet-100-A model (gradvis's default net, trained by
    ``python -m gradvis.train``; see :func:`gradvis.architectures.default_net`).

    Returns a :class:`gradvis.Model` with ``class_names``, ``wnids``, ``preprocess``,
    ``deprocess`` and ``input_range``. Input: 64x64 RGB, 0-255 minus the per-channel
    training mean.

    Raises FileNotFoundError (saying how to make it) if the weights are not there.
    """
    from ..serialization import load_model
    if name != "default":
        raise ValueError(f"unknown pretrained model {name!r}; available: 'default'")
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the bundled weights {DEFAULT_WEIGHTS} are missing (not trained yet, or not "
            "installed with the package). Train them with `python -m gradvis.train --run-dir "
            f"runs/default --export {DEFAULT_WEIGHTS}`, or load another file with gradvis.load_model(path)")
    return load_model(DEFAULT_WEIGHTS)
