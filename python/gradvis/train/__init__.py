"""Training gradvis models on gradvis's own kernels (see :mod:`gradvis.train.trainer`).

Run from the command line: ``python -m gradvis.train --help`` or ``gradvis train``.
"""
from .trainer import (SGD, AdamW, CosineWarmup, OneCycle, StepLR, TrainConfig, WeightAverage,
                      add_config_arguments, alternating_flips, apply_whitening, augment_batch, balanced_subset,
                      check_sizes, config_from_args, decays, evaluate, init_from, main, make_schedule,
                      random_crop, random_flip, read_checkpoint, train, whitening_filters)
from .trainer import __all__ as _trainer_all

__all__ = list(_trainer_all) + ["main"]
