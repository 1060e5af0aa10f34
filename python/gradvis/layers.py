"""The CS231n layer functions (``conv_forward``, ``max_pool_backward``, ...), for course code.

``from gradvis import layers`` / ``from gradvis.layers import conv_forward`` work as the
course's ``layers.py`` and ``fast_layers.py`` do; the functions live in
:mod:`gradvis.nn.functional`, whose docstrings give their shapes.
"""
from .nn.functional import (  # noqa: F401
    affine_backward, affine_backward_input, affine_backward_params, affine_forward, avg_pool_backward,
    avg_pool_forward, batchnorm_backward, batchnorm_backward_input, batchnorm_forward, conv_backward,
    conv_backward_input, conv_backward_weight, conv_forward, conv_relu_backward, conv_relu_forward,
    cs231n_blur, cs231n_blur_adjoint, gaussian_blur, gaussian_blur_adjoint, global_avg_pool_backward,
    global_avg_pool_forward, hardsigmoid_backward, hardsigmoid_forward, hardswish_backward,
    hardswish_forward, leaky_relu_backward, leaky_relu_forward, max_pool_backward, max_pool_forward,
    relu6_backward, relu6_forward, relu_backward, relu_forward, sigmoid_backward, sigmoid_forward,
    silu_backward, silu_forward, softmax_loss, spatial_batchnorm_backward, spatial_batchnorm_forward,
    tanh_backward, tanh_forward)

__all__ = [
    "conv_forward", "conv_backward", "conv_backward_input", "conv_backward_weight",
    "conv_relu_forward", "conv_relu_backward",
    "max_pool_forward", "max_pool_backward",
    "avg_pool_forward", "avg_pool_backward",
    "global_avg_pool_forward", "global_avg_pool_backward",
    "relu_forward", "relu_backward",
    "relu6_forward", "relu6_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "hardsigmoid_forward", "hardsigmoid_backward",
    "hardswish_forward", "hardswish_backward",
    "silu_forward", "silu_backward",
    "affine_forward", "affine_backward", "affine_backward_input", "affine_backward_params",
    "batchnorm_forward", "batchnorm_backward",
    "spatial_batchnorm_forward", "spatial_batchnorm_backward", "batchnorm_backward_input",
    "softmax_loss",
    "gaussian_blur", "gaussian_blur_adjoint",
    "cs231n_blur", "cs231n_blur_adjoint",
]
