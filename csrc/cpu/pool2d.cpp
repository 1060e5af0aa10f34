// Pooling kernels: raw pointers, parallel over the N*C independent planes so
// the backward passes scatter without atomics.
#include "ops/pool2d.h"

#include "cpu/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <type_traits>

namespace gradvis {

namespace {

// Below this much work per call the OpenMP fork/join costs more than it saves.
constexpr index_t kSerialWork = 1 << 14;

template <class F>
void for_planes(index_t planes, index_t work_per_plane, F&& f) {
  if (planes * work_per_plane < kSerialWork) {
    for (index_t p = 0; p < planes; ++p) f(p);
  } else {
    parallel_for(planes, f);
  }
}

// The running-max update PyTorch uses: a larger value or a NaN wins, so the
// first maximum in row-major window order is kept and NaNs propagate.
template <class T>
inline bool takes_max(T v, T m) {
  return (v > m) | (v != v);  // no short-circuit branch: keeps the selects branch-free
}

// ---- max pool -------------------------------------------------------------------

// 2x2 stride 2, no padding, every window complete: x (H,W) -> out (OH,OW).
template <class T>
[[gnu::always_inline]] inline void max_pool_plane_2x2_body(T* out, std::int64_t* am, const T* x,
                                                            const Pool2dShape& s) {
  const index_t W = s.W, OW = s.OW;
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const T* r0 = x + 2 * oh * W;
    const T* r1 = r0 + W;
    const std::int64_t base = 2 * oh * W;
    T* o = out + oh * OW;
    std::int64_t* a = am + oh * OW;
    for (index_t ow = 0; ow < OW; ++ow) {
      const T v0 = r0[2 * ow], v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
      // Selects, not branches: random data would mispredict every other window.
      T m = v0;
      std::int64_t id = base + 2 * ow;
      bool t = takes_max(v1, m);
      m = t ? v1 : m;
      id = t ? base + 2 * ow + 1 : id;
      t = takes_max(v2, m);
      m = t ? v2 : m;
      id = t ? base + W + 2 * ow : id;
      t = takes_max(v3, m);
      m = t ? v3 : m;
      id = t ? base + W + 2 * ow + 1 : id;
      o[ow] = m;
      a[ow] = id;
    }
  }
}

// The same body compiled for wider vectors, chosen at run time (the library
// itself is built for baseline x86-64).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <class T>
__attribute__((target("avx2,fma"))) void max_pool_plane_2x2_avx2(T* out, std::int64_t* am, const T* x,
                                                                  const Pool2dShape& s) {
  max_pool_plane_2x2_body(out, am, x, s);
}
template <class T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void max_pool_plane_2x2_avx512(
    T* out, std::int64_t* am, const T* x, const Pool2dShape& s) {
  max_pool_plane_2x2_body(out, am, x, s);
}
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// float32 with AVX-512, explicitly: 16 windows per step, each row's last step
// masked. The compiler vectorizes the body above only over whole vectors, so rows
// of fewer than 16 windows (maps of 30x30 and less: most of a small CNN's pools)
// ran scalar at ~4.6 cycles a window. Needs the plane to have < 2^31 cells.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void max_pool_plane_2x2_avx512_f32(
    float* out, std::int64_t* am, const float* x, const Pool2dShape& s) {
  const index_t W = s.W, OW = s.OW;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i dW = _mm512_set1_epi32(std::int32_t(W));
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const float* r0 = x + 2 * oh * W;
    const float* r1 = r0 + W;
    float* o = out + oh * OW;
    std::int64_t* a = am + oh * OW;
    const __m512i base = _mm512_set1_epi64(2 * oh * W);
    for (index_t ow0 = 0; ow0 < OW; ow0 += 16) {
      const index_t n = std::min<index_t>(16, OW - ow0);
      const __mmask16 m = __mmask16((1u << n) - 1);
      const __mmask16 mlo = __mmask16((1u << std::min<index_t>(16, 2 * n)) - 1);
      const __mmask16 mhi = __mmask16(n > 8 ? (1u << (2 * n - 16)) - 1 : 0);
      const __m512 a0 = _mm512_maskz_loadu_ps(mlo, r0 + 2 * ow0), a1 = _mm512_maskz_loadu_ps(mhi, r0 + 2 * ow0 + 16);
      const __m512 b0 = _mm512_maskz_loadu_ps(mlo, r1 + 2 * ow0), b1 = _mm512_maskz_loadu_ps(mhi, r1 + 2 * ow0 + 16);
      const __m512 v1 = _mm512_permutex2var_ps(a0, odd, a1), v2 = _mm512_permutex2var_ps(b0, even, b1),
                   v3 = _mm512_permutex2var_ps(b0, odd, b1);
      __m512 mx = _mm512_permutex2var_ps(a0, even, a1);
      // cell offsets from the window's corner: 0, 1, W, W + 1 (takes_max: larger or NaN)
      __m512i d = _mm512_setzero_si512();
      __mmask16 t = _mm512_cmp_ps_mask(v1, mx, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
      mx = _mm512_mask_mov_ps(mx, t, v1);
      d = _mm512_mask_mov_epi32(d, t, _mm512_set1_epi32(1));
      t = _mm512_cmp_ps_mask(v2, mx, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v2, v2, _CMP_UNORD_Q);
      mx = _mm512_mask_mov_ps(mx, t, v2);
      d = _mm512_mask_mov_epi32(d, t, dW);
      t = _mm512_cmp_ps_mask(v3, mx, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v3, v3, _CMP_UNORD_Q);
      mx = _mm512_mask_mov_ps(mx, t, v3);
      d = _mm512_mask_mov_epi32(d, t, _mm512_add_epi32(dW, _mm512_set1_epi32(1)));
      _mm512_mask_storeu_ps(o + ow0, m, mx);
      // index = 2 oh W + 2 ow + d
      const __m512i col = _mm512_add_epi32(_mm512_add_epi32(even, _mm512_set1_epi32(std::int32_t(2 * ow0))), d);
      const __m512i lo = _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(col)));
      const __m512i hi = _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(col, 1)));
      _mm512_mask_storeu_epi64(a + ow0, __mmask8(m & 0xff), lo);
      _mm512_mask_storeu_epi64(a + ow0 + 8, __mmask8(m >> 8), hi);
    }
  }
}
#endif

template <class T>
void max_pool_plane_2x2(T* out, std::int64_t* am, const T* x, const Pool2dShape& s, SimdLevel level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (sizeof(T) == 4) {
    if (level == SimdLevel::avx512 && s.H * s.W < (index_t(1) << 31))
      return max_pool_plane_2x2_avx512_f32(out, am, x, s);
  }
  if (level == SimdLevel::avx512) return max_pool_plane_2x2_avx512(out, am, x, s);
  if (level == SimdLevel::avx2) return max_pool_plane_2x2_avx2(out, am, x, s);
#endif
  max_pool_plane_2x2_body(out, am, x, s);
}

// Columns [owa, owb) have windows entirely inside the row; the others are clipped.
inline void interior_cols(const Pool2dShape& s, index_t& owa, index_t& owb) {
  owa = std::min<index_t>((s.pl + s.sw - 1) / s.sw, s.OW);
  const index_t last = s.W + s.pl - ((s.kw - 1) * s.dw + 1);  // ow*sw <= last
  owb = last >= 0 ? std::min<index_t>(last / s.sw + 1, s.OW) : 0;
  if (owb < owa) owb = owa;
}

// The taps [lo, hi) of a window starting at `start` (dilation d, k taps) that
// fall inside [0, n); empty when none does.
inline void real_taps(index_t start, index_t k, index_t d, index_t n, index_t& lo, index_t& hi) {
  lo = start >= 0 ? 0 : (-start + d - 1) / d;
  hi = start >= n ? 0 : std::min<index_t>(k, (n - 1 - start) / d + 1);
  if (hi < lo) hi = lo;
}

// The interior windows [owa, owb) of one output row at column stride 2 and column
// dilation 1, float32, AVX-512 (AVX2 below; see max_pool_plane_body): 16 windows at a time,
// each window cell's 16 values taken from two loads by one permute, the running
// max and its cell kept in registers. The cells go in the generic sweep's
// row-major order with the same comparison, so values and argmax are its bits.
// The window's real rows are hs + i dh, i < rows; x is the plane. The generic
// sweep de-interleaved each row, then swept the running max through memory once
// per cell: ResNet's 3x3 stride-2 pool (64x112x112) took 0.58 ms on 1 thread.
using MaxPoolRowS2 = void (*)(float*, std::int64_t*, const float*, index_t, index_t, index_t, index_t, index_t,
                              index_t, index_t, index_t, index_t);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void max_pool_row_s2_avx512_f32(
    float* o, std::int64_t* a, const float* x, index_t W, index_t hs, index_t rows, index_t dh, index_t kw,
    index_t owa, index_t owb, index_t pl, index_t /*end: masked loads throughout*/) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 1);
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (index_t ow0 = owa; ow0 < owb; ow0 += 16) {
    const index_t n = std::min<index_t>(16, owb - ow0), span = 2 * (n - 1) + 1;   // columns a cell's loads need
    const __mmask16 m = __mmask16((1u << n) - 1);
    const __mmask16 mlo = __mmask16(span >= 16 ? 0xffff : (1u << span) - 1);
    const __mmask16 mhi = __mmask16(span > 16 ? (1u << (span - 16)) - 1 : 0);
    __m512 mx = neg_inf;
    __m512i cell = _mm512_setzero_si512();
    for (index_t i = 0; i < rows; ++i) {
      const float* r = x + (hs + i * dh) * W + 2 * ow0 - pl;
      for (index_t j = 0; j < kw; ++j) {
        const __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mlo, r + j), even,
                                                _mm512_maskz_loadu_ps(mhi, r + j + 16));
        const __mmask16 t = _mm512_cmp_ps_mask(v, mx, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        mx = _mm512_mask_mov_ps(mx, t, v);
        cell = _mm512_mask_mov_epi32(cell, t, _mm512_set1_epi32(std::int32_t(i * dh * W + j)));
      }
    }
    _mm512_mask_storeu_ps(o + ow0, m, mx);
    // argmax = hs W + 2 ow - pl + cell
    const __m512i col = _mm512_add_epi32(cell, lane2);
    const __m512i base = _mm512_set1_epi64(hs * W + 2 * ow0 - pl);
    _mm512_mask_storeu_epi64(a + ow0, __mmask8(m & 0xff),
                             _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(col))));
    _mm512_mask_storeu_epi64(a + ow0 + 8, __mmask8(m >> 8),
                             _mm512_add_epi64(base, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(col, 1))));
  }
}

// max_pool_row_s2_avx512_f32 at AVX2: 8 windows a step, each cell's 8 values from
// two loads by a shuffle and a permute; the same bits. The loads of a full step
// read one value past the last one it needs, so only where that stays inside the
// plane (H*W values, `end`); elsewhere, and for the row's last part-filled step,
// masked loads (vmaskmovps: slow on AMD's cores from memory, 2x slower at batch
// 16 when every load was masked) and scalar stores.
__attribute__((target("avx2,fma"))) void max_pool_row_s2_avx2_f32(float* o, std::int64_t* a, const float* x,
                                                                  index_t W, index_t hs, index_t rows, index_t dh,
                                                                  index_t kw, index_t owa, index_t owb, index_t pl,
                                                                  index_t end) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i lane8 = _mm256_add_epi32(lane, _mm256_set1_epi32(8));
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (index_t ow0 = owa; ow0 < owb; ow0 += 8) {
    const index_t n = std::min<index_t>(8, owb - ow0);
    const __m256i span = _mm256_set1_epi32(std::int32_t(2 * (n - 1) + 1));   // columns a cell's loads need
    const __m256i mlo = _mm256_cmpgt_epi32(span, lane), mhi = _mm256_cmpgt_epi32(span, lane8);
    // whole loads: a full step whose last row's last load ends inside the plane
    const bool whole = n == 8 && (hs + (rows - 1) * dh) * W + 2 * ow0 - pl + (kw - 1) + 16 <= end;
    __m256 mx = neg_inf;
    __m256 cell = _mm256_setzero_ps();   // the cells' tags, as int32 bits
    for (index_t i = 0; i < rows; ++i) {
      const float* r = x + (hs + i * dh) * W + 2 * ow0 - pl;
      for (index_t j = 0; j < kw; ++j) {
        const __m256 lo = whole ? _mm256_loadu_ps(r + j) : _mm256_maskload_ps(r + j, mlo);
        const __m256 hi = whole ? _mm256_loadu_ps(r + j + 8) : _mm256_maskload_ps(r + j + 8, mhi);
        const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));   // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6
        const __m256 v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
        const __m256 t = _mm256_or_ps(_mm256_cmp_ps(v, mx, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        mx = _mm256_blendv_ps(mx, v, t);
        cell = _mm256_blendv_ps(cell, _mm256_castsi256_ps(_mm256_set1_epi32(std::int32_t(i * dh * W + j))), t);
      }
    }
    // argmax = hs W + 2 ow - pl + cell
    const __m256i col = _mm256_add_epi32(_mm256_castps_si256(cell), _mm256_slli_epi32(lane, 1));
    const __m256i base = _mm256_set1_epi64x(hs * W + 2 * ow0 - pl);
    const __m256i a0 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(col)));
    const __m256i a1 = _mm256_add_epi64(base, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(col, 1)));
    if (n == 8) {
      _mm256_storeu_ps(o + ow0, mx);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + ow0), a0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + ow0 + 4), a1);
      continue;
    }
    alignas(32) float ov[8];
    alignas(32) std::int64_t av[8];
    _mm256_store_ps(ov, mx);
    _mm256_store_si256(reinterpret_cast<__m256i*>(av), a0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(av + 4), a1);
    for (index_t t = 0; t < n; ++t) o[ow0 + t] = ov[t], a[ow0 + t] = av[t];
  }
}
#endif

template <class T>
[[gnu::always_inline]] inline void max_pool_plane_body(T* out, std::int64_t* am, const T* x, const Pool2dShape& s,
                                                       MaxPoolRowS2 row_s2 = nullptr) {
  const index_t H = s.H, W = s.W, OW = s.OW, kw = s.kw, sw = s.sw, pl = s.pl, dh = s.dh, dw = s.dw;
  const index_t ke = (kw - 1) * dw + 1;  // the window's width, dilation included
  // Per-thread row buffers of the interior sweep: running max and window cell,
  // and for strides 1 and 2 the input row in hand (stride 2: its even and odd
  // columns), padded with -inf so every cell's loop runs whole vectors (with 55
  // windows a row, the scalar remainder loops were more than half the time).
  constexpr index_t kLanes = 16;
  T* mrow = scratch<T>(ScratchSlot::pool_row, std::size_t(OW + kLanes));
  std::int32_t* crow = scratch<std::int32_t>(ScratchSlot::pool_count, std::size_t(OW + kLanes));
  const index_t half = OW + ke + 2 * kLanes;
  T* even = sw <= 2 ? scratch<T>(ScratchSlot::pool_even, std::size_t(2 * half)) : nullptr;  // stride 1: the row itself
  T* odd = sw <= 2 ? even + half : nullptr;
  std::int64_t* celloff = scratch<std::int64_t>(ScratchSlot::pool_cell, std::size_t(s.kh * kw));
  const T neg_inf = -std::numeric_limits<T>::infinity();
  index_t owa, owb;
  interior_cols(s, owa, owb);
  for (index_t oh = 0; oh < s.OH; ++oh) {
    // The window's rows inside the map: hs + a dh for a in [a0, a1) (every window
    // has one: the binding refuses geometries that leave a window empty).
    const index_t h0 = oh * s.sh - s.pt;
    index_t a0, a1;
    real_taps(h0, s.kh, dh, H, a0, a1);
    const index_t hs = h0 + a0 * dh;
    T* o = out + oh * OW;
    std::int64_t* a = am + oh * OW;
    // Clipped border windows, one at a time.
    auto border = [&](index_t ow) {
      const index_t w0 = ow * s.sw - s.pl;
      index_t b0, b1;
      real_taps(w0, kw, dw, W, b0, b1);
      T m = neg_inf;
      std::int64_t id = hs * W + w0 + b0 * dw;  // padded cells never win: start at the first real one
      for (index_t i = a0; i < a1; ++i)
        for (index_t j = b0; j < b1; ++j) {
          const std::int64_t c = (h0 + i * dh) * W + w0 + j * dw;
          const T v = x[c];
          if (takes_max(v, m)) { m = v; id = c; }
        }
      o[ow] = m;
      a[ow] = id;
    };
    for (index_t ow = 0; ow < owa; ++ow) border(ow);
    for (index_t ow = owb; ow < OW; ++ow) border(ow);
    // Interior: for each window cell in row-major order, update the running max
    // of every interior window of the row at once. The lanes are independent, so
    // the loop vectorizes (a window at a time is a chain of dependent selects, 3-4x
    // slower), and each window still sees its cells in row-major order, so ties keep
    // the first maximum and NaNs win exactly as before. Cells are counted from the
    // window's first real row: c -> (hs + (c / kw) dh, ws + (c % kw) dw).
    const index_t n_in = owb - owa;
    if constexpr (std::is_same_v<T, float>) {
      if (n_in > 0 && row_s2 && sw == 2 && dw == 1 && ((s.kh - 1) * dh + 1) * W < (index_t(1) << 31)) {
        row_s2(o, a, x, W, hs, a1 - a0, dh, kw, owa, owb, pl, H * W);
        continue;
      }
    }
    if (n_in > 0) {
      const T* x0 = x + owa * sw - pl;  // column of the first interior window's corner
      const index_t n_run = sw <= 2 ? (n_in + kLanes - 1) / kLanes * kLanes : n_in;
      for (index_t k = 0; k < n_run; ++k) {
        mrow[k] = neg_inf;
        crow[k] = 0;
      }
      // One cell: the running max of lanes [0, n_run) against src[k * step].
      auto sweep = [&](const T* src, index_t step, std::int32_t cell) {
#pragma GCC ivdep
        for (index_t k = 0; k < n_run; ++k) {
          const T v = src[k * step];
          const bool t = takes_max(v, mrow[k]);
          mrow[k] = t ? v : mrow[k];
          crow[k] = t ? cell : crow[k];
        }
      };
      // Each lane keeps the tag of its winning cell: the cell's offset from the
      // window's first real cell, (i - hs) W + j (so the argmax needs no table or
      // division), or, on windows too tall for 32 bits, the cell's index.
      const bool offsets = ((s.kh - 1) * dh + 1) * W < (index_t(1) << 31);
      std::int32_t cell = 0;
      auto tag = [&](index_t i, index_t j) { return offsets ? std::int32_t((i - hs) * W + j) : cell; };
      for (index_t i = hs; i < h0 + a1 * dh; i += dh) {
        const T* r = x0 + i * W;
        if (sw == 1) {
          // The row's interior columns [0, n_in + ke - 1), then -inf.
          const index_t n = n_in + ke - 1;
          std::copy(r, r + n, even);
          std::fill(even + n, even + n_run + ke, neg_inf);
          for (index_t j = 0; j < ke; j += dw, ++cell) sweep(even + j, 1, tag(i, j));
        } else if (sw == 2) {
          // De-interleave the row once (the interior windows read columns up to
          // 2 (n_in - 1) + ke - 1 of it); then every cell's loop is contiguous.
          const index_t ne = n_in + (ke - 1) / 2, no = ke >= 2 ? n_in + (ke - 2) / 2 : 0;
          const index_t both = std::min(ne, no);
          for (index_t k = 0; k < both; ++k) {
            even[k] = r[2 * k];
            odd[k] = r[2 * k + 1];
          }
          for (index_t k = both; k < ne; ++k) even[k] = r[2 * k];
          for (index_t k = both; k < no; ++k) odd[k] = r[2 * k + 1];
          std::fill(even + ne, even + n_run + ke, neg_inf);
          std::fill(odd + no, odd + n_run + ke, neg_inf);
          for (index_t j = 0; j < ke; j += dw, ++cell) sweep((j % 2 == 0 ? even : odd) + j / 2, 1, tag(i, j));
        } else {
          for (index_t j = 0; j < ke; j += dw, ++cell) sweep(r + j, sw, tag(i, j));
        }
      }
      const std::int64_t base = hs * W + owa * sw - pl;
      for (index_t k = 0; k < n_in; ++k) o[owa + k] = mrow[k];
      if (offsets) {
        for (index_t k = 0; k < n_in; ++k) a[owa + k] = base + k * sw + crow[k];
      } else {
        for (index_t c = 0; c < cell; ++c) celloff[c] = (c / kw) * dh * W + (c % kw) * dw;
        for (index_t k = 0; k < n_in; ++k) a[owa + k] = base + k * sw + celloff[crow[k]];
      }
    }
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <class T>
__attribute__((target("avx2,fma"))) void max_pool_plane_avx2(T* out, std::int64_t* am, const T* x,
                                                             const Pool2dShape& s) {
  if constexpr (std::is_same_v<T, float>)
    max_pool_plane_body(out, am, x, s, s.H * s.W < (index_t(1) << 31) ? max_pool_row_s2_avx2_f32 : nullptr);
  else
    max_pool_plane_body(out, am, x, s);
}
template <class T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void max_pool_plane_avx512(
    T* out, std::int64_t* am, const T* x, const Pool2dShape& s) {
  if constexpr (std::is_same_v<T, float>)
    max_pool_plane_body(out, am, x, s, s.H * s.W < (index_t(1) << 31) ? max_pool_row_s2_avx512_f32 : nullptr);
  else
    max_pool_plane_body(out, am, x, s);
}
#endif

template <class T>
void max_pool_plane(T* out, std::int64_t* am, const T* x, const Pool2dShape& s, SimdLevel level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (level == SimdLevel::avx512) return max_pool_plane_avx512(out, am, x, s);
  if (level == SimdLevel::avx2) return max_pool_plane_avx2(out, am, x, s);
#endif
  max_pool_plane_body(out, am, x, s);
}

// ---- average pool ---------------------------------------------------------------

// PyTorch's window and divisor along one axis: the window is first clipped to
// the padded extent (this is what matters for ceil_mode), then to the input.
struct Window {
  index_t lo, hi;   // clipped to the input
  index_t padded;   // size counting padding (clipped at the padded border)
};
inline Window window_at(index_t o, index_t stride, index_t k, index_t pad_lo, index_t pad_hi, index_t n) {
  const index_t s = o * stride - pad_lo;
  const index_t e = std::min(s + k, n + pad_hi);
  return {std::max<index_t>(s, 0), std::min(e, n), e - s};
}

template <class T>
void avg_pool_plane(T* out, const T* x, const Pool2dShape& s, bool count_include_pad, T* colsum) {
  const index_t W = s.W;
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const Window wh = window_at(oh, s.sh, s.kh, s.pt, s.pb, s.H);
    // Column sums over the window's rows, then short row sums per output.
    std::fill(colsum, colsum + W, T(0));
    for (index_t i = wh.lo; i < wh.hi; ++i) {
      const T* r = x + i * W;
      for (index_t w = 0; w < W; ++w) colsum[w] += r[w];
    }
    T* o = out + oh * s.OW;
    for (index_t ow = 0; ow < s.OW; ++ow) {
      const Window ww = window_at(ow, s.sw, s.kw, s.pl, s.pr, W);
      T sum = 0;
      for (index_t w = ww.lo; w < ww.hi; ++w) sum += colsum[w];
      const index_t div = count_include_pad ? wh.padded * ww.padded : (wh.hi - wh.lo) * (ww.hi - ww.lo);
      o[ow] = div > 0 ? sum / T(div) : T(0);
    }
  }
}

template <class T>
void avg_pool_plane_backward(T* dx, const T* dout, const Pool2dShape& s, bool count_include_pad, T* rowgrad) {
  const index_t W = s.W;
  std::fill(dx, dx + s.H * W, T(0));
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const Window wh = window_at(oh, s.sh, s.kh, s.pt, s.pb, s.H);
    std::fill(rowgrad, rowgrad + W, T(0));
    const T* g = dout + oh * s.OW;
    for (index_t ow = 0; ow < s.OW; ++ow) {
      const Window ww = window_at(ow, s.sw, s.kw, s.pl, s.pr, W);
      const index_t div = count_include_pad ? wh.padded * ww.padded : (wh.hi - wh.lo) * (ww.hi - ww.lo);
      if (div <= 0) continue;
      const T v = g[ow] / T(div);
      for (index_t w = ww.lo; w < ww.hi; ++w) rowgrad[w] += v;
    }
    for (index_t i = wh.lo; i < wh.hi; ++i) {
      T* r = dx + i * W;
      for (index_t w = 0; w < W; ++w) r[w] += rowgrad[w];
    }
  }
}

}  // namespace

template <class T>
void max_pool2d_forward_cpu(T* out, std::int64_t* argmax, const T* x, const Pool2dShape& s) {
  const index_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  const bool fast = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.pt == 0 && s.pb == 0 && s.pl == 0 &&
                    s.pr == 0 && s.dh == 1 && s.dw == 1 && 2 * s.OH <= s.H && 2 * s.OW <= s.W;
  const SimdLevel level = cpu_level();
  for_planes(s.N * s.C, in_plane, [&](index_t p) {
    if (fast)
      max_pool_plane_2x2(out + p * out_plane, argmax + p * out_plane, x + p * in_plane, s, level);
    else
      max_pool_plane(out + p * out_plane, argmax + p * out_plane, x + p * in_plane, s, level);
  });
}

template <class T>
bool max_pool2d_backward_cpu(T* dx, const T* dout, const std::int64_t* argmax, const Pool2dShape& s) {
  const index_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  std::atomic<bool> ok{true};
  for_planes(s.N * s.C, in_plane, [&](index_t p) {
    T* d = dx + p * in_plane;
    const T* g = dout + p * out_plane;
    const std::int64_t* a = argmax + p * out_plane;
    std::memset(d, 0, sizeof(T) * in_plane);
    bool plane_ok = true;
    for (index_t k = 0; k < out_plane; ++k) {
      const std::uint64_t idx = static_cast<std::uint64_t>(a[k]);
      if (idx < static_cast<std::uint64_t>(in_plane))
        d[idx] += g[k];
      else
        plane_ok = false;
    }
    if (!plane_ok) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}

template <class T>
void avg_pool2d_forward_cpu(T* out, const T* x, const Pool2dShape& s, bool count_include_pad) {
  const index_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  for_planes(s.N * s.C, in_plane, [&](index_t p) {
    T* colsum = scratch<T>(ScratchSlot::pool_row, s.W);
    avg_pool_plane(out + p * out_plane, x + p * in_plane, s, count_include_pad, colsum);
  });
}

template <class T>
void avg_pool2d_backward_cpu(T* dx, const T* dout, const Pool2dShape& s, bool count_include_pad) {
  const index_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  for_planes(s.N * s.C, in_plane, [&](index_t p) {
    T* rowgrad = scratch<T>(ScratchSlot::pool_row, s.W);
    avg_pool_plane_backward(dx + p * in_plane, dout + p * out_plane, s, count_include_pad, rowgrad);
  });
}

namespace {

// The sum of r[0, n) in double: L running sums (32, or 8 below 256 values), one per
// position mod L, then a fixed tree. The order depends on n alone, so every SIMD level
// (each compiles this body with its own vectors: 4 x 8 doubles on AVX-512) gives
// the same bits. One double chain in SSE2 registers had held a plane at ~0.5
// values a cycle (EfficientNet-B0's squeeze-and-excitation pools: 0.74 ms of its
// 13 ms forward pass on 1 thread).
template <int L, class T>
inline double lanes_sum(const T* r, index_t n) {
  double acc[L] = {};
  index_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) acc[j] += double(r[i + j]);
  const index_t rem = n - i;   // the tail into the lanes (loops of fixed length keep acc in registers)
  for (int j = 0; j < L; ++j) acc[j] += j < rem ? double(r[i + j]) : 0.0;
  for (int w = L / 2; w >= 1; w /= 2)   // then a fixed tree
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}
template <class T>
inline double plane_sum_body(const T* r, index_t n) {
  return n >= 256 ? lanes_sum<32>(r, n) : lanes_sum<8>(r, n);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <class T>
__attribute__((target("avx2,fma"))) double plane_sum_avx2(const T* r, index_t n) {
  return plane_sum_body(r, n);
}
template <class T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) double plane_sum_avx512(const T* r, index_t n) {
  return plane_sum_body(r, n);
}
#endif

template <class T>
double plane_sum(const T* r, index_t n, SimdLevel level) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (level == SimdLevel::avx512) return plane_sum_avx512(r, n);
  if (level == SimdLevel::avx2) return plane_sum_avx2(r, n);
#endif
  (void)level;
  return plane_sum_body(r, n);
}

}  // namespace

template <class T>
void global_avg_pool_forward_cpu(T* out, const T* x, index_t planes, index_t HW) {
  const SimdLevel level = cpu_level();
  for_planes(planes, HW, [&](index_t p) { out[p] = static_cast<T>(plane_sum(x + p * HW, HW, level) / double(HW)); });
}

template <class T>
void global_avg_pool_backward_cpu(T* dx, const T* dout, index_t planes, index_t HW) {
  for_planes(planes, HW, [&](index_t p) {
    const T v = static_cast<T>(double(dout[p]) / double(HW));
    std::fill(dx + p * HW, dx + (p + 1) * HW, v);
  });
}

#define GRADVIS_INSTANTIATE(T)                                                                   \
  template void max_pool2d_forward_cpu<T>(T*, std::int64_t*, const T*, const Pool2dShape&);      \
  template bool max_pool2d_backward_cpu<T>(T*, const T*, const std::int64_t*, const Pool2dShape&); \
  template void avg_pool2d_forward_cpu<T>(T*, const T*, const Pool2dShape&, bool);               \
  template void avg_pool2d_backward_cpu<T>(T*, const T*, const Pool2dShape&, bool);              \
  template void global_avg_pool_forward_cpu<T>(T*, const T*, index_t, index_t);                  \
  template void global_avg_pool_backward_cpu<T>(T*, const T*, index_t, index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
