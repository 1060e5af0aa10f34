// Internal to conv2d: the activation a convolution applies to its output while it
// is in cache (ConvAct in ops/conv2d.h), written as activation.cpp writes each
// activation (the same bits as the separate layer; float32 SiLU: within 2 ulp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

// v / (1 + exp(-v)) on o[0, n) in place, float32, exp by Cephes' expf (range
// reduction by ln 2 in two parts, a degree-5 polynomial, 2^k from the exponent
// bits; within 2 ulp), written so that the compiler vectorizes the loop: the
// C library's expf is called one value at a time. The argument is clamped where
// exp(-v) would pass 2^127 (v < -88: silu(v) is then -0 to float precision).
inline void silu_inplace_f32(float* __restrict o, index_t n) {
  for (index_t i = 0; i < n; ++i) {
    const float v = o[i];
    float x = -v;
    x = x > 88.f ? 88.f : (x < -87.3365447504f ? -87.3365447504f : x);
    float k = float(int(x * 1.44269504088896341f + 0.5f));  // floor(x / ln 2 + 1/2): int() truncates
    k -= k > x * 1.44269504088896341f + 0.5f ? 1.f : 0.f;
    float r = x - k * 0.693359375f;
    r -= k * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.f;
    const std::int32_t bits = (std::int32_t(k) + 127) << 23;
    float p2;
    std::memcpy(&p2, &bits, sizeof(float));
    o[i] = v / (1.f + y * p2);
  }
}

// o[0, n) = act(o[0, n)); pre[0, n) = the values before (when pre is not null).
template <class T>
inline void apply_act(T* __restrict o, T* __restrict pre, index_t n, const ConvAct& a) {
  if (pre) std::memcpy(pre, o, sizeof(T) * std::size_t(n));
  switch (a.kind) {
    case ConvAct::none:
      break;
    case ConvAct::relu:
      for (index_t i = 0; i < n; ++i) o[i] = o[i] < T(0) ? T(0) : o[i];
      break;
    case ConvAct::clamp: {
      const T lo = T(a.lo), hi = T(a.hi);
      for (index_t i = 0; i < n; ++i) {
        const T v = o[i];
        o[i] = v < lo ? lo : (v > hi ? hi : v);
      }
      break;
    }
    case ConvAct::hardswish:
      for (index_t i = 0; i < n; ++i) {
        const T v = o[i], u = v + T(3);
        o[i] = v * (u < T(0) ? T(0) : (u > T(6) ? T(6) : u)) / T(6);
      }
      break;
    case ConvAct::silu:
      if constexpr (sizeof(T) == 4)
        silu_inplace_f32(o, n);
      else
        for (index_t i = 0; i < n; ++i) o[i] = o[i] / (T(1) + std::exp(-o[i]));
      break;
  }
}

}  // namespace conv_detail
}  // namespace gradvis
