// Internal to conv2d: the activation a convolution applies to its output while it
// is in cache (ConvAct in ops/conv2d.h), written as activation.cpp writes each
// activation (the same bits as the separate layer).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "ops/conv2d.h"
#include "ops/pointwise.h"

namespace gradvis {
namespace conv_detail {

// pre[0, n) = o[0, n); with `stream`, by streaming stores (16-byte blocks that
// bypass the caches, and no read of pre's lines from memory first), then a fence.
template <class T>
inline void copy_pre(T* __restrict pre, const T* __restrict o, index_t n, bool stream) {
  std::size_t bytes = sizeof(T) * static_cast<std::size_t>(n);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (stream && bytes >= 64) {
    char* d = reinterpret_cast<char*>(pre);
    const char* src = reinterpret_cast<const char*>(o);
    const std::size_t head = (16 - reinterpret_cast<std::uintptr_t>(d) % 16) % 16;
    std::memcpy(d, src, head);
    std::size_t i = head;
    for (; i + 16 <= bytes; i += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    std::memcpy(d + i, src + i, bytes - i);
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(pre, o, bytes);
}

// v / (1 + exp(-v)) on o[0, n) in place, float32: the SiLU layer's own SIMD body
// (pointwise.cpp, AVX-512 / AVX2 / SSE2 chosen at run time), so the fused and the
// separate layer give the same bits; pre (or null) receives the values before.
inline void silu_inplace_f32(float* o, float* pre, index_t n, bool stream) {
  if (pre) copy_pre(pre, o, n, stream);
  silu_forward_f32(o, o, n);
}

// v * clamp(v + 3, 0, 6) / 6 on o[0, n) in place, float32: the HardSwish layer's
// own SIMD body, as silu_inplace_f32; the clamp is clamp_inplace_f32 (pointwise.h,
// AVX-512 / AVX2 / SSE2 chosen at run time).
inline void hardswish_inplace_f32(float* o, float* pre, index_t n, bool stream) {
  if (pre) copy_pre(pre, o, n, stream);
  hardswish_forward_f32(o, o, n);
}

// Brings the run of len values at p toward L2 ahead of its use: runs read from
// memory too short for the hardware prefetchers (the 1x1 path's weight slivers;
// the backward masks' references, the forward pass's activations, one filter's
// positions at a time). runs_ahead gives how many runs of len make about 4 KB,
// the distance the masks use.
template <class T>
inline void prefetch_run(const T* p, index_t len) {
  for (const T *f = p, *e = p + len; f < e; f += 64 / sizeof(T)) __builtin_prefetch(f, 0, 2);
}
inline index_t runs_ahead(index_t len, std::size_t item) {
  return std::max<index_t>(1, index_t(4096 / item) / std::max<index_t>(1, len));
}

inline bool is_mask(ConvAct::Kind k) {
  return k == ConvAct::mask_pos || k == ConvAct::mask_range || k == ConvAct::mask_silu ||
         k == ConvAct::mask_hardswish || k == ConvAct::mask_bits;
}

// The kinds whose `pre` is a read-only reference array at the output's own
// positions (the backward masks, the residual sums), never written.
inline bool reads_ref(ConvAct::Kind k) { return is_mask(k) || k == ConvAct::add || k == ConvAct::add_relu; }

// Whether that reference holds values to read (worth prefetching): mask_bits
// passes the output itself in its place (ConvAct).
inline bool ref_values(ConvAct::Kind k) { return reads_ref(k) && k != ConvAct::mask_bits; }

// The backward masks: o[i] kept where ref[i] > 0 (mask_pos) or lo < ref[i] < hi
// (mask_range), else 0; NaN references give 0, as relu_backward and clamp_backward.
// mask_bits: o[i] kept where its bit is set (ConvAct).
// mask_silu / mask_hardswish: o[i] times the derivative at ref[i] (the activation's
// input), by the SiLU and HardSwish layers' own backward code (the same bits).
// add / add_relu: o[i] + ref[i], then for add_relu v < 0 ? 0 : v, as add_cpu
// (a NaN falls through).
template <class T>
inline void mask_inplace(T* __restrict o, const T* __restrict ref, index_t n, const ConvAct& a) {
  if (a.kind == ConvAct::mask_bits) {   // ref is o's own place: its index in the gradient
    const index_t off = index_t(ref - static_cast<const T*>(a.base));
    if constexpr (sizeof(T) == 4) return mask_bits_f32(o, a.bits, off, n);
    for (index_t i = 0; i < n; ++i) {
      const index_t p = off + i;
      o[i] = (a.bits[p >> 6] >> (p & 63)) & 1 ? o[i] : T(0);
    }
    return;
  }
  if (a.kind == ConvAct::add || a.kind == ConvAct::add_relu) {
    const bool relu = a.kind == ConvAct::add_relu;
    if constexpr (sizeof(T) == 4) return add_ref_f32(o, ref, n, relu);   // SIMD at the CPU's level
    for (index_t i = 0; i < n; ++i) {
      const T v = o[i] + ref[i];
      o[i] = relu && v < T(0) ? T(0) : v;
    }
    return;
  }
  if (a.kind == ConvAct::mask_pos) {
    if constexpr (sizeof(T) == 4) return mask_pos_f32(o, ref, n);   // SIMD at the CPU's level
    for (index_t i = 0; i < n; ++i) o[i] = ref[i] > T(0) ? o[i] : T(0);
    return;
  }
  if (a.kind == ConvAct::mask_silu) {
    if constexpr (sizeof(T) == 4) return silu_backward_f32(o, o, ref, n);
    for (index_t i = 0; i < n; ++i) {   // activation.cpp's float64 silu_backward
      const T s = T(1) / (T(1) + std::exp(-ref[i]));
      o[i] = o[i] * s * (T(1) + ref[i] * (T(1) - s));
    }
    return;
  }
  if (a.kind == ConvAct::mask_hardswish) {
    if constexpr (sizeof(T) == 4) return hardswish_backward_f32(o, o, ref, n);
    for (index_t i = 0; i < n; ++i) {   // activation.cpp's float64 hardswish_backward
      const T g = o[i], v = ref[i];
      o[i] = v < T(-3) ? T(0) : (v <= T(3) ? g * (v / T(3) + T(0.5)) : g);
    }
    return;
  }
  if constexpr (sizeof(T) == 4) return mask_range_f32(o, ref, n, float(a.lo), float(a.hi));
  const T lo = T(a.lo), hi = T(a.hi);
  for (index_t i = 0; i < n; ++i) o[i] = ((ref[i] > lo) & (ref[i] < hi)) ? o[i] : T(0);
}

// o[0, n) = act(o[0, n)); pre[0, n) = the values before (when pre is not null).
// For the backward masks and the residual sums pre is the reference array, read only.
template <class T>
inline void apply_act(T* __restrict o, T* __restrict pre, index_t n, const ConvAct& a) {
  if (reads_ref(a.kind)) return mask_inplace(o, pre, n, a);
  if constexpr (sizeof(T) == 4) {
    if (a.kind == ConvAct::silu) return silu_inplace_f32(o, pre, n, a.stream_pre);
    if (a.kind == ConvAct::hardswish) return hardswish_inplace_f32(o, pre, n, a.stream_pre);
    if (a.kind == ConvAct::clamp) return clamp_inplace_f32(o, pre, n, float(a.lo), float(a.hi));
  }
  if (pre) copy_pre(pre, o, n, a.stream_pre);
  switch (a.kind) {
    case ConvAct::none:
    case ConvAct::mask_pos:    // handled above
    case ConvAct::mask_range:
    case ConvAct::mask_silu:
    case ConvAct::mask_hardswish:
    case ConvAct::mask_bits:
    case ConvAct::add:
    case ConvAct::add_relu:
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
