"""Batch normalization layers (CS231n momentum convention: running = 0.9 running + 0.1 batch)."""
from __future__ import annotations

import numpy as np

from .. import _checks
from . import functional as F
from .module import Layer

__all__ = ["BatchNorm2d", "BatchNorm1d"]


class _BatchNorm(Layer):
    fuses_relu = True
    spatial = True

    def __init__(self, num_features, eps=1e-5, momentum=0.9):
        self.num_features = _checks.integer(num_features, f"{self.type}: num_features", 1)
        self.eps = _checks.finite_float(eps, f"{self.type}: eps")
        self.momentum = _checks.finite_float(momentum, f"{self.type}: momentum")
        if self.eps <= 0:
            raise ValueError(f"{self.type}: eps must be > 0, got {eps!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"{self.type}: momentum must be in [0, 1], got {momentum!r}")

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum)

    def describe(self):
        return f"{self.type} {self.num_features}"

    @property
    def param_shapes(self):
        return {"gamma": (self.num_features,), "beta": (self.num_features,)}

    @property
    def buffer_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def init_params(self, rng, dtype):
        return {"gamma": np.ones(self.num_features, dtype), "beta": np.zeros(self.num_features, dtype)}

    def init_buffers(self, dtype):
        return {"running_mean": np.zeros(self.num_features, dtype),
                "running_var": np.ones(self.num_features, dtype)}

    def check_arrays(self, params, buffers):
        var = buffers["running_var"]
        if (var < 0).any():
            raise ValueError(f"{self.type}: running_var has negative entries (min {float(var.min()):g}); "
                             f"a variance is >= 0")

    def output_shape(self, input_shapes):
        s = input_shapes[0]
        want = 3 if self.spatial else 1
        if len(s) != want or s[0] != self.num_features:
            form = "(N, C, H, W)" if self.spatial else "(N, D)"
            raise ValueError(f"expects input {form} with {self.num_features} channels, "
                             f"got (N, {', '.join(map(str, s))})")
        return s

    def forward(self, inputs, params, buffers, mode, rng, relu=False):
        """relu=True returns max(batch norm, 0) (the model fuses a ReLU that only reads this layer)."""
        x = inputs[0]
        self.output_shape([x.shape[1:]])
        if mode == "test" and x.ndim == (4 if self.spatial else 2):
            return F.batchnorm_test_run(F.float_array(x, "x"), params["gamma"], params["beta"],
                                  buffers["running_mean"], buffers["running_var"], self.eps, relu)
        bn_param = {"mode": mode, "eps": self.eps, "momentum": self.momentum,
                    "running_mean": buffers["running_mean"], "running_var": buffers["running_var"]}
        fwd = F.spatial_batchnorm_forward if self.spatial else F.batchnorm_forward
        out, cache = fwd(x, params["gamma"], params["beta"], bn_param, relu=relu)
        if mode == "train":   # keep the buffers' identity and dtype
            buffers["running_mean"][...] = bn_param["running_mean"]
            buffers["running_var"][...] = bn_param["running_var"]
        return out, cache

    def backward(self, dout, cache):
        bwd = F.spatial_batchnorm_backward if self.spatial else F.batchnorm_backward
        dx, dgamma, dbeta = bwd(dout, cache)
        return [dx], {"gamma": dgamma, "beta": dbeta}

    def backward_inputs(self, dout, cache):
        # Gradients with respect to an image run in test mode: dx alone is one pass.
        return [F.batchnorm_backward_input(dout, cache)]


class BatchNorm2d(_BatchNorm):
    """Spatial batch norm of (N, C, H, W) over N, H, W; params gamma, beta; buffers
    running_mean, running_var. momentum is CS231n's (0.9 keeps 90% of the old value)."""
    type = "BatchNorm2d"
    spatial = True


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, D) features; as :class:`BatchNorm2d`."""
    type = "BatchNorm1d"
    spatial = False
