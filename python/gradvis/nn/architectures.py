"""Network definitions: gradvis's default TinyImageNet net and CS231n 2016's.

Node names are meant for picking layers in DeepDream, feature inversion and
saliency: ``conv<k>``, ``bn<k>``, ``relu<k>``, ``pool<k>``, ``gap``, ``fc``.
"""
from __future__ import annotations

import numpy as np

from . import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear,
                    MaxPool2d, Model, ReLU)

__all__ = ["default_net", "DEFAULT_WIDTHS", "TINY_IMAGENET_MEAN",
           "cs231n_2016", "CS231N_WIDTHS", "CS231N_STRIDE2"]

# Mean RGB of TinyImageNet-100-A's training images (0-449 of each class).
TINY_IMAGENET_MEAN = (121.55, 113.05, 99.85)

# conv1 (5x5, stride 2), conv2, [pool], conv3, conv4, [pool], conv5, conv6, [pool], conv7
DEFAULT_WIDTHS = (32, 64, 128, 128, 256, 256, 384)
_POOL_AFTER = {2: 1, 4: 2, 6: 3}   # conv index -> pool index


def default_net(num_classes=100, widths=DEFAULT_WIDTHS, dropout=0.1, input_size=64,
                mean=TINY_IMAGENET_MEAN, seed=0, class_names=None, wnids=None):
    """gradvis's default TinyImageNet-100-A net: a VGG-style stack with batch norm.

    ``conv1`` 5x5 stride 2 (64 -> 32 px), ``conv2`` 3x3, ``pool1`` (16 px),
    ``conv3``-``conv4``, ``pool2`` (8 px), ``conv5``-``conv6``, ``pool3`` (4 px),
    ``conv7``; each conv is followed by ``bn<k>`` and ``relu<k>``; then global
    average pooling ``gap``, ``flatten``, ``dropout`` and the classifier ``fc``.
    Convs have no bias (batch norm follows). Input: RGB 0-255 minus the
    per-channel mean (CS231n 2016's input space, std 1).

    About 2.1M parameters and 150 MMACs per 64x64 image (115 at 56x56) with the default widths.
    """
    if len(widths) != 7:
        raise ValueError(f"widths must list 7 conv widths, got {widths}")
    m = Model(input_shape=(3, input_size, input_size), mean=mean, name="gradvis-default",
              class_names=class_names, wnids=wnids, seed=seed)
    c = 3
    for k, w in enumerate(widths, start=1):
        if k == 1:
            m.add("conv1", Conv2d(c, w, 5, stride=2, padding=2, bias=False))
        else:
            m.add(f"conv{k}", Conv2d(c, w, 3, padding=1, bias=False))
        m.add(f"bn{k}", BatchNorm2d(w))
        m.add(f"relu{k}", ReLU())
        if k in _POOL_AFTER:
            m.add(f"pool{_POOL_AFTER[k]}", MaxPool2d(2))
        c = w
    m.add("gap", GlobalAvgPool())
    m.add("flatten", Flatten())
    if dropout:
        m.add("dropout", Dropout(dropout))
    m.add("fc", Linear(c, num_classes))
    return m


# ---------------------------------------------------------------------------- CS231n 2016
CS231N_WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512, 1024)
CS231N_STRIDE2 = (0, 2, 4, 6, 8)


def cs231n_2016(num_classes=100, widths=CS231N_WIDTHS, hidden=512, input_size=64,
                filter_sizes=None, mean=None, class_names=None, wnids=None):
    """The CS231n 2016 TinyImageNet net: 9 x [conv - spatial BN - relu] (5x5 then 3x3,
    stride 2 at blocks 0, 2, 4, 6, 8, 'same' padding (k - 1) // 2), [affine 512 -
    BN - relu], [affine 100]. Node names follow the HDF5 file's numbering:
    conv0, bn0, relu0, ..., conv8, bn8, relu8, flatten, fc9, bn9, relu9, fc10.
    ``mean`` is a mean image (3, H, W) or per-channel mean (default: TinyImageNet's)."""
    filter_sizes = list(filter_sizes or [5] + [3] * (len(widths) - 1))
    if len(filter_sizes) != len(widths):
        raise ValueError(f"{len(widths)} widths but {len(filter_sizes)} filter sizes")
    mean = TINY_IMAGENET_MEAN if mean is None else np.asarray(mean, np.float32)
    m = Model(input_shape=(3, input_size, input_size), mean=mean, name="cs231n-2016",
              class_names=class_names, wnids=wnids)
    c, size = 3, input_size
    for i, (w, f) in enumerate(zip(widths, filter_sizes)):
        stride = 2 if i in CS231N_STRIDE2 else 1
        pad = (f - 1) // 2
        m.add(f"conv{i}", Conv2d(c, w, f, stride=stride, padding=pad))
        m.add(f"bn{i}", BatchNorm2d(w))
        m.add(f"relu{i}", ReLU())
        c = w
        size = (size + 2 * pad - f) // stride + 1
    n = len(widths)
    m.add("flatten", Flatten())
    m.add(f"fc{n}", Linear(c * size * size, hidden))
    m.add(f"bn{n}", BatchNorm1d(hidden))
    m.add(f"relu{n}", ReLU())
    m.add(f"fc{n + 1}", Linear(hidden, num_classes))
    return m
