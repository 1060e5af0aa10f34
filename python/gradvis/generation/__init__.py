"""Images made by gradient ascent, as CS231n's "image generation" lesson does them.

- :func:`create_class_visualization` (Simonyan et al. 2013; Yosinski et al. 2015);
- :func:`invert_features` (Mahendran & Vedaldi 2015) and :func:`feature_error`;
- :func:`deepdream` (Mordvintsev et al. 2015);
- :mod:`~gradvis.generation.regularizers`: the image priors (total variation).
"""
from .class_visualization import create_class_visualization
from .deepdream import deepdream
from .inversion import feature_error, invert_features

__all__ = ["create_class_visualization", "invert_features", "feature_error", "deepdream"]
