// The depthwise kernels' AVX512 bodies (conv_depthwise_body.inc). Compiled for
// baseline x86-64 like the rest; only these functions carry the AVX512 target,
// and conv_depthwise.cpp calls them only when cpu_level() says so.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/conv2d_pack.h"
#include "cpu/conv_depthwise.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GV_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define GV_INLINE GV_TARGET __attribute__((always_inline)) static inline

namespace gradvis {
namespace conv_detail {
namespace {

#include "cpu/simd_vec_avx512.inc"

// (GCC 12 reports the intrinsics' own undefined-register idiom in max(0, x) as
// possibly uninitialized once inlined here.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "cpu/conv_depthwise_body.inc"
#pragma GCC diagnostic pop

}  // namespace

template <class T>
DwKernels<T> dw_kernels_avx512() {
  using V = std::conditional_t<sizeof(T) == 4, V512f, V512d>;
  return {&dw_fwd_plane<V>, &dw_dx_plane<V>, &dw_dw_channel<V>, V::W, &dw_fwd_plane_flat<V>,
          &dw_fwd_lanes<V>, &dw_dx_lanes<V>, &dw_dw_lanes<V>, &dw_fwd_glanes<V>,
          &dw_dw_glanes<V>, &dw_dx_glanes<V>, &dw_ring_pack<V>, &dw_ring_row<V>,
          &dw_ring_rows2<V>};
}
template DwKernels<float> dw_kernels_avx512<float>();
template DwKernels<double> dw_kernels_avx512<double>();

}  // namespace conv_detail
}  // namespace gradvis

#endif
