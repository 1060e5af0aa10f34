// Element-wise activations: ReLU, clamp (ReLU6 = clamp(0, 6)), leaky ReLU, and the
// smooth and gated ones of MobileNetV3 / EfficientNet: sigmoid, tanh, hard sigmoid,
// hard swish and SiLU (swish).
#pragma once

#include "common.h"

namespace gradvis {

// All arrays are n contiguous elements of any shape.
template <class T> void relu_forward_cpu(T* out, const T* x, index_t n);
template <class T> void relu_backward_cpu(T* dx, const T* dout, const T* x, index_t n);        // dout where x > 0
template <class T> void clamp_forward_cpu(T* out, const T* x, T lo, T hi, index_t n);
template <class T> void clamp_backward_cpu(T* dx, const T* dout, const T* x, T lo, T hi, index_t n);  // lo < x < hi
template <class T> void leaky_relu_forward_cpu(T* out, const T* x, T alpha, index_t n);
template <class T> void leaky_relu_backward_cpu(T* dx, const T* dout, const T* x, T alpha, index_t n);

// sigmoid(x) = 1 / (1 + exp(-x)); the backward takes the forward's output y:
// dx = dout * (1 - y) * y.
template <class T> void sigmoid_forward_cpu(T* out, const T* x, index_t n);
template <class T> void sigmoid_backward_cpu(T* dx, const T* dout, const T* y, index_t n);
// tanh(x); the backward takes the output y: dx = dout * (1 - y * y).
template <class T> void tanh_forward_cpu(T* out, const T* x, index_t n);
template <class T> void tanh_backward_cpu(T* dx, const T* dout, const T* y, index_t n);
// clamp(alpha * x + beta, 0, 1) (ONNX HardSigmoid; PyTorch's is alpha = 1/6, beta = 1/2);
// dx = alpha * dout where 0 < alpha * x + beta < 1.
template <class T> void hardsigmoid_forward_cpu(T* out, const T* x, T alpha, T beta, index_t n);
template <class T> void hardsigmoid_backward_cpu(T* dx, const T* dout, const T* x, T alpha, T beta, index_t n);
// x * clamp(x + 3, 0, 6) / 6 (ONNX HardSwish, PyTorch's Hardswish).
template <class T> void hardswish_forward_cpu(T* out, const T* x, index_t n);
template <class T> void hardswish_backward_cpu(T* dx, const T* dout, const T* x, index_t n);
// x * sigmoid(x) (SiLU, swish with beta 1).
template <class T> void silu_forward_cpu(T* out, const T* x, index_t n);
template <class T> void silu_backward_cpu(T* dx, const T* dout, const T* x, index_t n);

}  // namespace gradvis
