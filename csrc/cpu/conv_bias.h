// Internal to the conv drivers: the bias gradient of one filter.
#pragma once

#include "common.h"

namespace gradvis {
namespace conv_detail {

// sum over images and positions of dout[n][f][:] (dout is (N, F, OHW)), in an
// order fixed by the shape: 32 running sums (one serial chain of adds was most of
// the first layer's weight-gradient call), then the tail, then the lanes.
template <class T>
T bias_sum(const T* dout, index_t N, index_t F, index_t OHW, index_t f) {
  constexpr int L = 32;
  T lane[L] = {}, sum = 0;
  for (index_t n = 0; n < N; ++n) {
    const T* d = dout + (n * F + f) * OHW;
    index_t q = 0;
    for (; q + L <= OHW; q += L)
      for (int l = 0; l < L; ++l) lane[l] += d[q + l];
    for (; q < OHW; ++q) sum += d[q];
  }
  for (int l = 0; l < L; ++l) sum += lane[l];
  return sum;
}

}  // namespace conv_detail
}  // namespace gradvis
