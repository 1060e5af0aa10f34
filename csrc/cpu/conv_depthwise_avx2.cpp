// The depthwise kernels' AVX2 bodies (conv_depthwise_body.inc). Compiled for
// baseline x86-64 like the rest; only these functions carry the AVX2 target,
// and conv_depthwise.cpp calls them only when cpu_level() says so.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/conv_depthwise.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GV_TARGET __attribute__((target("avx2,fma")))
#define GV_INLINE GV_TARGET __attribute__((always_inline)) static inline

namespace gradvis {
namespace conv_detail {
namespace {

struct V256f {
  using T = float;
  using reg = __m256;
  static constexpr int W = 8;
  GV_INLINE reg zero() { return _mm256_setzero_ps(); }
  GV_INLINE reg load(const float* p) { return _mm256_loadu_ps(p); }
  GV_INLINE void store(float* p, reg r) { _mm256_storeu_ps(p, r); }
  GV_INLINE reg set1(float x) { return _mm256_set1_ps(x); }
  GV_INLINE reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  GV_INLINE reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  GV_INLINE reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  GV_INLINE void store_n(float* p, reg r, int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx), r);
  }
  GV_INLINE float hsum(reg r) {  // in lane order: the same bits on every run
    alignas(64) float t[W];
    _mm256_store_ps(t, r);
    float s = 0;
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }
};

struct V256d {
  using T = double;
  using reg = __m256d;
  static constexpr int W = 4;
  GV_INLINE reg zero() { return _mm256_setzero_pd(); }
  GV_INLINE reg load(const double* p) { return _mm256_loadu_pd(p); }
  GV_INLINE void store(double* p, reg r) { _mm256_storeu_pd(p, r); }
  GV_INLINE reg set1(double x) { return _mm256_set1_pd(x); }
  GV_INLINE reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  GV_INLINE reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  GV_INLINE reg max(reg a, reg b) { return _mm256_max_pd(a, b); }
  GV_INLINE void store_n(double* p, reg r, int n) {
    const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
    _mm256_maskstore_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), idx), r);
  }
  GV_INLINE double hsum(reg r) {
    alignas(64) double t[W];
    _mm256_store_pd(t, r);
    double s = 0;
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }
};

#include "cpu/conv_depthwise_body.inc"

}  // namespace

template <class T>
DwKernels<T> dw_kernels_avx2() {
  using V = std::conditional_t<sizeof(T) == 4, V256f, V256d>;
  return {&dw_fwd_plane<V>, &dw_dx_plane<V>, &dw_dw_channel<V>, V::W, &dw_fwd_plane_flat<V>,
          &dw_fwd_lanes<V>, &dw_dx_lanes<V>};
}
template DwKernels<float> dw_kernels_avx2<float>();
template DwKernels<double> dw_kernels_avx2<double>();

}  // namespace conv_detail
}  // namespace gradvis

#endif
