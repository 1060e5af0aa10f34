// Spatial batch normalization: statistics per channel over (N, H, W).
// A 2-D (N, D) input is the HW == 1 case.
#pragma once

#include "common.h"

namespace gradvis {

// x and out are (N,C,HW); gamma, beta, mean, var, inv_std are (C,).
// var is the biased batch variance, inv_std = 1/sqrt(var + eps). relu: out is
// max(batchnorm(x), 0), written in the same pass (bit-identical to relu_forward
// of the plain output).
template <class T>
void batchnorm_forward_train_cpu(T* out, T* mean, T* var, T* inv_std, const T* x, const T* gamma, const T* beta,
                                 double eps, index_t N, index_t C, index_t HW, bool relu = false);

// x and out are (N,C,HW); gamma, beta, running_mean, running_var are (C,).
template <class T>
void batchnorm_forward_test_cpu(T* out, const T* x, const T* gamma, const T* beta, const T* running_mean,
                                const T* running_var, double eps, index_t N, index_t C, index_t HW,
                                bool relu = false);

// Gradient through the batch statistics. dout, x, dx are (N,C,HW); the rest (C,).
template <class T>
void batchnorm_backward_train_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                  const T* mean, const T* inv_std, index_t N, index_t C, index_t HW);

// Test mode is affine in x. dout, x, dx are (N,C,HW); the rest (C,).
template <class T>
void batchnorm_backward_test_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                 const T* running_mean, const T* running_var, double eps, index_t N, index_t C,
                                 index_t HW);

// Only dx = dout * gamma / sqrt(running_var + eps): the gradient with respect to
// the input, which needs neither x nor sums. dout and dx are (N,C,HW).
template <class T>
void batchnorm_backward_test_input_cpu(T* dx, const T* dout, const T* gamma, const T* running_var, double eps,
                                       index_t N, index_t C, index_t HW);

}  // namespace gradvis
