// Fully connected layer on the gemm.
//   x is (N,D), w is (D,M), b is (M) or null, out is (N,M): out = x w + b
#pragma once

#include "common.h"

namespace gradvis {

// out (N,M) = x (N,D) @ w (D,M) + b (M)
template <class T>
void affine_forward_cpu(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M);

// dx (N,D) = dout w^T, dw (D,M) = x^T dout, db (M) = column sums of dout; any of
// dx, dw, db may be null (not computed; x is only read for dw).
// For a few rows (N <= 4: a network run on one image) the forward and dx stream w
// once without packing it: w is then most of the memory traffic (VGG-16's first
// classifier layer is 411 MB).
template <class T>
void affine_backward_cpu(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t N, index_t D, index_t M);

// The few-row bodies on their own (N <= 4, no bias), for 1x1 convolutions of 1x1
// maps (squeeze-and-excitation layers), whose weights are (F, C) rows:
//   out (N,M) = x (N,D) @ w (D,M)      affine_rows_forward_cpu  (w streamed by rows)
//   out (N,D) = x (N,M) @ w (D,M)^T    affine_rows_dot_cpu      (one dot product per row of w)
template <class T>
void affine_rows_forward_cpu(T* out, const T* x, const T* w, index_t N, index_t D, index_t M);
template <class T>
void affine_rows_dot_cpu(T* out, const T* x, const T* w, index_t N, index_t D, index_t M);
constexpr index_t kAffineFewRows = 4;

}  // namespace gradvis
