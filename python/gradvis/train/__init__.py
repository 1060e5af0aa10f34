"""Training gradvis models on gradvis's own kernels (see :mod:`gradvis.train.trainer`).

Run from the command line: ``python -m gradvis.train --help`` or ``gradvis train``.
"""
from .trainer import (SGD, AdamW, CosineWarmup, OneCycle, StepLR, TrainConfig, add_config_arguments,
                      augment_batch, check_sizes, config_from_args, decays, evaluate, main,
                      make_schedule, random_crop, random_flip, read_checkpoint, train)

__all__ = ["SGD", "AdamW", "OneCycle", "CosineWarmup", "StepLR", "make_schedule",
           "random_crop", "random_flip", "augment_batch", "evaluate", "TrainConfig", "train",
           "decays", "add_config_arguments", "config_from_args", "read_checkpoint", "check_sizes",
           "main"]
