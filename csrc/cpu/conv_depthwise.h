// Internal to conv2d: direct kernels for depthwise convolution (groups == C == F),
// where im2col + gemm would run a 1-row gemm per channel.
#pragma once

#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

inline bool is_depthwise(const Conv2dShape& s) { return s.p.groups > 1 && s.p.groups == s.C && s.C == s.F; }

template <class T>
void depthwise_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu);
template <class T>
void depthwise_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s);
template <class T>
void depthwise_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s);

// Output columns ow whose input column iw = iw0 + ow*stride lies in [0, W): [lo, hi).
inline void valid_range(index_t iw0, index_t stride, index_t W, index_t n_out, index_t& lo, index_t& hi) {
  lo = iw0 >= 0 ? 0 : (-iw0 + stride - 1) / stride;
  hi = iw0 >= W ? 0 : (W - iw0 + stride - 1) / stride;
  if (lo > n_out) lo = n_out;
  if (hi > n_out) hi = n_out;
  if (hi < lo) hi = lo;
}

}  // namespace conv_detail
}  // namespace gradvis
