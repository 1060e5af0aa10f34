// Internal to conv2d: the activation a convolution applies to its output while it
// is in cache (ConvAct in ops/conv2d.h), written as activation.cpp writes each
// activation (the same bits as the separate layer; float32 SiLU: within 2 ulp).
#pragma once

#include <cmath>
#include <cstring>

#include "ops/conv2d.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace gradvis {
namespace conv_detail {

// v / (1 + exp(-v)) on o[0, n) in place, float32, exp by Cephes' expf (range
// reduction by ln 2 in two parts, a degree-5 polynomial, 2^k from the exponent
// bits; within 2 ulp), four lanes at a time in SSE2 (the C library's expf runs
// one value at a time; the compiler's own vectorization of this loop ran at a
// third of this speed). The argument of exp is clamped to [-87.3, 88]: for
// v < -88, silu(v) is -0 to float precision. The last n % 4 values use std::exp.
inline void silu_inplace_f32(float* o, float* pre, index_t n) {
  index_t i = 0;
#ifdef __SSE2__
  const __m128 lo = _mm_set1_ps(-87.3365447504f), hi = _mm_set1_ps(88.f), l2e = _mm_set1_ps(1.44269504088896341f),
               magic = _mm_set1_ps(12582912.f), c1 = _mm_set1_ps(0.693359375f), c2 = _mm_set1_ps(-2.12194440e-4f),
               one = _mm_set1_ps(1.f);
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(o + i);
    if (pre) _mm_storeu_ps(pre + i, v);
    const __m128 x = _mm_min_ps(_mm_max_ps(_mm_sub_ps(_mm_setzero_ps(), v), lo), hi);
    const __m128 k = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(x, l2e), magic), magic);  // x / ln 2 rounded (1.5 * 2^23)
    __m128 r = _mm_sub_ps(x, _mm_mul_ps(k, c1));
    r = _mm_sub_ps(r, _mm_mul_ps(k, c2));
    __m128 y = _mm_set1_ps(1.9875691500e-4f);
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.3981999507e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(8.3334519073e-3f));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(4.1665795894e-2f));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.6666665459e-1f));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(5.0000001201e-1f));
    y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(y, _mm_mul_ps(r, r)), r), one);
    const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(k), _mm_set1_epi32(127)), 23);
    y = _mm_mul_ps(y, _mm_castsi128_ps(e));
    _mm_storeu_ps(o + i, _mm_div_ps(v, _mm_add_ps(one, y)));
  }
#endif
  for (; i < n; ++i) {
    if (pre) pre[i] = o[i];
    o[i] = o[i] / (1.f + std::exp(-o[i]));
  }
}

// clamp to [lo, hi] (NaN passes through, as clamp_nan) and hardswish
// v * clamp(v + 3, 0, 6) / 6 on o[0, n) in place, float32, in SSE2 (the
// compiler's vectorization of the ?: forms was slower than a separate pass);
// pre (or null) receives the values before.
inline void clamp_inplace_f32(float* o, float* pre, index_t n, float lo, float hi) {
  index_t i = 0;
#ifdef __SSE2__
  const __m128 vl = _mm_set1_ps(lo), vh = _mm_set1_ps(hi);
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(o + i);
    if (pre) _mm_storeu_ps(pre + i, v);
    _mm_storeu_ps(o + i, _mm_min_ps(vh, _mm_max_ps(vl, v)));  // the second operand wins when NaN
  }
#endif
  for (; i < n; ++i) {
    const float v = o[i];
    if (pre) pre[i] = v;
    o[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

inline void hardswish_inplace_f32(float* o, float* pre, index_t n) {
  index_t i = 0;
#ifdef __SSE2__
  const __m128 zero = _mm_setzero_ps(), three = _mm_set1_ps(3.f), six = _mm_set1_ps(6.f);
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(o + i);
    if (pre) _mm_storeu_ps(pre + i, v);
    const __m128 c = _mm_min_ps(six, _mm_max_ps(zero, _mm_add_ps(v, three)));
    _mm_storeu_ps(o + i, _mm_div_ps(_mm_mul_ps(v, c), six));
  }
#endif
  for (; i < n; ++i) {
    const float v = o[i], u = v + 3.f;
    if (pre) pre[i] = v;
    o[i] = v * (u < 0.f ? 0.f : (u > 6.f ? 6.f : u)) / 6.f;
  }
}

// o[0, n) = act(o[0, n)); pre[0, n) = the values before (when pre is not null).
template <class T>
inline void apply_act(T* __restrict o, T* __restrict pre, index_t n, const ConvAct& a) {
  if constexpr (sizeof(T) == 4) {
    if (a.kind == ConvAct::silu) return silu_inplace_f32(o, pre, n);
    if (a.kind == ConvAct::hardswish) return hardswish_inplace_f32(o, pre, n);
    if (a.kind == ConvAct::clamp) return clamp_inplace_f32(o, pre, n, float(a.lo), float(a.hi));
  }
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
      for (index_t i = 0; i < n; ++i) o[i] = o[i] / (T(1) + std::exp(-o[i]));
      break;
  }
}

}  // namespace conv_detail
}  // namespace gradvis
