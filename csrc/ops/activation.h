// Element-wise activations: ReLU, clamp (ReLU6 = clamp(0, 6)) and leaky ReLU.
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

}  // namespace gradvis
