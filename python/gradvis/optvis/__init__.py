"""Lucid-style feature visualization: parameterizations, transformation robustness,
composable objectives and :func:`render` (Olah, Mordvintsev & Schubert, "Feature
Visualization", Distill 2017)."""
from . import objectives, param, transforms
from .render import Adam, from_model_input, render, to_model_input

__all__ = ["render", "Adam", "to_model_input", "from_model_input", "objectives", "param", "transforms"]
