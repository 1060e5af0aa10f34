"""Adversarial examples: inputs changed imperceptibly so that the network's answer changes.

- :func:`make_fooling_image` (CS231n's targeted fooling image; Szegedy et al. 2014).
"""
from .fooling import make_fooling_image

__all__ = ["make_fooling_image"]
