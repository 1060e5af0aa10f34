// conv2d as an implicit gemm: the column matrix (im2col) is never materialized.
// The gemm's B operand is packed straight from the image into the micro-kernel's
// NR-wide k-major slivers, one K block (<= kKC rows) and one chunk of output
// positions at a time, so it is written once and read from L2 by the micro-kernel.
//   forward          out[f][pos]  = sum_k W[f][k] cols[k][pos]       (A = W, packed once per call)
//   backward input   stride 1: the forward conv of dout with the flipped, transposed
//                    weights and "full" padding (no col2im); otherwise gemm + col2im
//   backward weight  dW[f][k] = sum_pos dout[f][pos] cols[k][pos]   (K of the gemm = positions)
// Output positions run over the whole batch (pos = n*OH*OW + oh*OW + ow), so small
// feature maps fill a chunk with several images and every thread gets work at batch 1.
// Few input channels per group (the RGB layer): the column matrix is read in place
// from a zero-padded, column-phase-split copy of the image (see Split) instead of
// being gathered per tap: the forward's B tiles and the weight gradient's A rows.
// Depthwise convs use the direct kernels in conv_depthwise.cpp.
//
// Threads: one OpenMP region per call. Forward/backward-input items are (position
// chunk, block of filters), statically partitioned; the weights are packed by all
// threads first. Backward weight splits the positions across threads (per-thread
// partial dW, summed in thread order: deterministic for a thread count) when there
// are many, else the dW tiles.
#include "ops/conv2d.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GV_HAVE_X86 1
#endif

#include "cpu/conv_depthwise.h"
#include "cpu/conv_bias.h"
#include "cpu/conv_winograd.h"
#include "cpu/gemm_kernels.h"
#include "cpu/simd.h"
#include "ops/gemm.h"

namespace gradvis {
namespace {


struct Geometry {
  index_t G, Cg, Fg, KK, CK, HW, OHW;
  bool pointwise;  // 1x1, stride 1, no padding: the image is its own column matrix
};

Geometry geometry(const Conv2dShape& s) {
  Geometry g;
  g.G = s.p.groups;
  g.Cg = s.C / g.G;
  g.Fg = s.F / g.G;
  g.KK = s.KH * s.KW;
  g.CK = g.Cg * g.KK;
  g.HW = s.H * s.W;
  g.OHW = s.OH * s.OW;
  g.pointwise = s.KH == 1 && s.KW == 1 && s.p.stride_h == 1 && s.p.stride_w == 1 && s.p.pad_top == 0 &&
                s.p.pad_bottom == 0 && s.p.pad_left == 0 && s.p.pad_right == 0;
  return g;
}

// Output columns per im2col chunk: the chunk (CK x P) should stay in L2 between
// being written and being packed by the gemm, and there should be at least
// `min_chunks` chunks per image so that a small batch still feeds every thread.
template <class T>
index_t chunk_cols(const Geometry& g, index_t min_chunks) {
  const index_t budget = index_t(1) << 19;  // bytes
  index_t P = budget / (g.CK * index_t(sizeof(T)));
  P = std::max<index_t>(128, P / 64 * 64);
  if (min_chunks > 1) P = std::min(P, std::max<index_t>(64, (g.OHW + min_chunks - 1) / min_chunks));
  return std::min(P, g.OHW);
}

// Runs f(i) for i in [0, n) over the team (serially when nested or n == 1),
// rethrowing the first exception after the loop.
template <class F>
void for_each_item(index_t n, F&& f) {
  ErrorTrap trap;
  parallel_for(n, [&](index_t i) { trap.run([&] { f(i); }); });
  trap.rethrow();
}

// col2im: x[c][ih][iw] += cols[row][p - p0], for the channels [c0, c1) of the
// group, whose rows start at cols (row 0 is channel c0's first tap).
template <class T>
void col2im_add(T* x, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0, index_t P) {
  const auto& p = s.p;
  for (index_t c = c0; c < c1; ++c) {
    T* xc = x + c * s.H * s.W;
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const T* src = cols + (((c - c0) * s.KH + kh) * s.KW + kw) * P;
        index_t oh = p0 / s.OW, ow = p0 % s.OW;
        for (index_t q = 0; q < P;) {
          const index_t run = std::min(s.OW - ow, P - q);
          const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih >= 0 && ih < s.H) {
            T* xr = xc + ih * s.W;
            const T* d = src + q;
            const index_t iw0 = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            index_t lo, hi;
            conv_detail::valid_range(iw0, p.stride_w, s.W, run, lo, hi);
            if (p.stride_w == 1) {
              T* xs = xr + (iw0 + lo);
              const T* ds = d + lo;
              for (index_t t = 0; t < hi - lo; ++t) xs[t] += ds[t];
            } else {
              for (index_t t = lo; t < hi; ++t) xr[iw0 + t * p.stride_w] += d[t];
            }
          }
          q += run;
          ow = 0;
          ++oh;
        }
      }
  }
}

// Column strides > 1: col2im into planes split by column phase, where each tap's
// run of positions is a contiguous add (the direct scatter was a scalar loop with
// stride_w). S[c - c0][ih][ph][j] collects x[c][ih][j * stride_w + ph - pad_left]
// (for the padded columns too); unsplit_planes adds it into x.
template <class T>
void col2im_add_split(T* S, index_t Wq, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0,
                      index_t P) {
  const auto& p = s.p;
  const index_t sw = p.stride_w, plane = s.H * sw * Wq;
  for (index_t c = c0; c < c1; ++c) {
    T* Sc = S + (c - c0) * plane;
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const T* src = cols + (((c - c0) * s.KH + kh) * s.KW + kw) * P;
        const index_t ph = (kw * p.dilation_w) % sw, j0 = (kw * p.dilation_w) / sw;
        index_t oh = p0 / s.OW, ow = p0 % s.OW;
        for (index_t q = 0; q < P;) {
          const index_t run = std::min(s.OW - ow, P - q);
          const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih >= 0 && ih < s.H) {
            T* d = Sc + (ih * sw + ph) * Wq + j0 + ow;
            const T* a = src + q;
            for (index_t t = 0; t < run; ++t) d[t] += a[t];
          }
          q += run;
          ow = 0;
          ++oh;
        }
      }
  }
}

template <class T>
void unsplit_planes(T* x, const T* S, index_t Wq, const Conv2dShape& s, index_t c0, index_t c1) {
  const index_t sw = s.p.stride_w, pl = s.p.pad_left;
  for (index_t c = c0; c < c1; ++c)
    for (index_t ih = 0; ih < s.H; ++ih) {
      const T* Sr = S + ((c - c0) * s.H + ih) * sw * Wq;
      T* xr = x + (c * s.H + ih) * s.W;
      for (index_t ph = 0; ph < sw; ++ph) {  // iw = j * sw + ph - pl
        const index_t j0 = pl > ph ? (pl - ph + sw - 1) / sw : 0;
        const index_t last = s.W - 1 + pl - ph;  // j * sw <= last
        const index_t j1 = last >= 0 ? std::min(Wq, last / sw + 1) : 0;
        const T* a = Sr + ph * Wq;
        for (index_t j = j0; j < j1; ++j) xr[j * sw + ph - pl] += a[j];
      }
    }
}

// ---- backward input: item = (image, block of channels [c0, c1) in every group) ----
template <class T>
void backward_input_block(T* dx, const T* dout, const T* w, const Conv2dShape& s, const Geometry& g, index_t n,
                          index_t c0, index_t c1, index_t P) {
  const index_t nc = c1 - c0;
  for (index_t gi = 0; gi < g.G; ++gi) {
    T* xg = dx + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK + c0 * g.KK;  // op(A) = rows c0*KK.. of W_g^T
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW;
    if (g.pointwise) {
      gemm_cpu<T>(true, false, nc, g.HW, g.Fg, T(1), wg, g.CK, dg, g.OHW, T(0), xg + c0 * g.HW, g.HW);
      continue;
    }
    std::fill(xg + c0 * g.HW, xg + c1 * g.HW, T(0));
    T* cols = scratch<T>(ScratchSlot::conv_cols, std::size_t(nc * g.KK * P));
    // column phases of the padded row: iw + pad_left = j * stride_w + phase, j < Wq
    const index_t sw = s.p.stride_w;
    const index_t Wq = std::max(s.OW + ((s.KW - 1) * s.p.dilation_w) / sw, (s.W - 1 + s.p.pad_left) / sw + 1);
    T* S = nullptr;
    if (sw > 1 && s.OW > 1) {  // (one output per row: col2im_add, whatever the stride)
      const std::size_t n = std::size_t(nc * s.H * sw * Wq);
      S = scratch<T>(ScratchSlot::conv_dx_split, n);
      std::fill(S, S + n, T(0));
    }
    for (index_t p0 = 0; p0 < g.OHW; p0 += P) {
      const index_t pc = std::min(P, g.OHW - p0);
      gemm_cpu<T>(true, false, nc * g.KK, pc, g.Fg, T(1), wg, g.CK, dg + p0, g.OHW, T(0), cols, pc);
      if (S)
        col2im_add_split(S, Wq, cols, s, c0, c1, p0, pc);
      else
        col2im_add(xg, cols, s, c0, c1, p0, pc);
    }
    if (S) unsplit_planes(xg, S, Wq, s, c0, c1);
  }
}

// ---- implicit gemm ------------------------------------------------------------------

using gemm_detail::ukernel_fn;
using gemm_detail::ukernel_rows_fn;
using gemm_detail::ukernel_offs_fn;
using gemm_detail::ukernel_boffs_fn;

using gemm_detail::kblocks;
using gemm_detail::KBlocks;
using gemm_detail::kKC;

// One row of a group's column matrix, k = (c, kh, kw): the channel's offset in the
// image and the tap's displacement from the window's corner (padding included).
struct Tap {
  index_t xoff, dh, dw;
};

std::vector<Tap> make_taps(const Conv2dShape& s, index_t Cg) {
  std::vector<Tap> taps(std::size_t(Cg * s.KH * s.KW));
  std::size_t k = 0;
  for (index_t c = 0; c < Cg; ++c)
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw)
        taps[k++] = {c * s.H * s.W, kh * s.p.dilation_h - s.p.pad_top, kw * s.p.dilation_w - s.p.pad_left};
  return taps;
}

// Calls f(n, oh, ow, i, run) for the runs of output positions [q0, q0+len) (over the
// batch) that lie in one output row and do not cross a multiple of `cut` counted
// from q0; i is the run's offset from q0.
template <class F>
inline void for_runs(const Conv2dShape& s, index_t q0, index_t len, index_t cut, F&& f) {
  const index_t OHW = s.OH * s.OW;
  index_t n = q0 / OHW, r = q0 % OHW, oh = r / s.OW, ow = r % s.OW;
  for (index_t i = 0; i < len;) {
    const index_t run = std::min(std::min(s.OW - ow, len - i), cut - i % cut);
    f(n, oh, ow, i, run);
    i += run;
    ow += run;
    if (ow == s.OW) {
      ow = 0;
      if (++oh == s.OH) oh = 0, ++n;
    }
  }
}

#ifdef GV_HAVE_X86
// d[t] = src[2 t] for t in [0, n), reading nothing past src[2 n - 2]: two loads
// and one two-source permute per 16 values (the stride-2 first layer's packing
// was 40% of its time as a scalar loop).
__attribute__((target("avx512f"))) void gather_stride2_avx512(float* d, const float* src, index_t n) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  index_t t = 0;
  for (; t + 16 < n; t += 16) {  // strictly: the second load's last element, src[2 t + 31], is needed
    const __m512 a = _mm512_loadu_ps(src + 2 * t), b = _mm512_loadu_ps(src + 2 * t + 16);
    _mm512_storeu_ps(d + t, _mm512_permutex2var_ps(a, even, b));
  }
  if (t < n) {
    const index_t m = 2 * (n - t) - 1;  // source elements still needed: src[2 t .. 2 n - 2]
    const __mmask16 ma = m >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1);
    const __mmask16 mb = m > 16 ? __mmask16((1u << (m - 16)) - 1) : __mmask16(0);
    const __m512 a = _mm512_maskz_loadu_ps(ma, src + 2 * t), b = _mm512_maskz_loadu_ps(mb, src + 2 * t + 16);
    _mm512_mask_storeu_ps(d + t, __mmask16((1u << (n - t)) - 1), _mm512_permutex2var_ps(a, even, b));
  }
}
#endif

// d[t*ldd + j] = src[j*lds + t] for j in [0, rows), t in [0, cols).
template <class T>
void transpose_block(T* d, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
  index_t j = 0;
#ifdef GV_HAVE_X86
  if constexpr (std::is_same_v<T, float>) {  // 4x4 SSE transposes (baseline x86-64)
    for (; j + 4 <= rows; j += 4) {
      index_t t = 0;
      for (; t + 4 <= cols; t += 4) {
        const float* sp = src + j * lds + t;
        __m128 r0 = _mm_loadu_ps(sp), r1 = _mm_loadu_ps(sp + lds), r2 = _mm_loadu_ps(sp + 2 * lds),
               r3 = _mm_loadu_ps(sp + 3 * lds);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        float* dp = d + t * ldd + j;
        _mm_storeu_ps(dp, r0);
        _mm_storeu_ps(dp + ldd, r1);
        _mm_storeu_ps(dp + 2 * ldd, r2);
        _mm_storeu_ps(dp + 3 * ldd, r3);
      }
      for (; t < cols; ++t)
        for (index_t i = 0; i < 4; ++i) d[t * ldd + j + i] = src[(j + i) * lds + t];
    }
  }
#endif
  for (; j < rows; ++j)
    for (index_t t = 0; t < cols; ++t) d[t * ldd + j] = src[j * lds + t];
}

// d[t*ds] = xr[iw0 + t*sw] for t in [0, run), 0 where the column is outside [0, W)
// or the whole row is (xr == nullptr). wide: the CPU has AVX-512.
template <class T>
inline void gather_row(T* d, index_t ds, const T* xr, index_t iw0, index_t sw, index_t W, index_t run,
                       bool wide = false) {
  index_t lo = run, hi = run;
  if (xr) conv_detail::valid_range(iw0, sw, W, run, lo, hi);
  if (ds == 1) {
    for (index_t t = 0; t < lo; ++t) d[t] = T(0);
    if (sw == 1) {
      for (index_t t = lo; t < hi; ++t) d[t] = xr[iw0 + t];  // (lo == hi when xr is null)
#ifdef GV_HAVE_X86
    } else if (std::is_same_v<T, float> && sw == 2 && wide) {
      if (hi > lo)
        gather_stride2_avx512(reinterpret_cast<float*>(d) + lo, reinterpret_cast<const float*>(xr) + iw0 + 2 * lo,
                              hi - lo);
#endif
    } else {
      for (index_t t = lo; t < hi; ++t) d[t] = xr[iw0 + t * sw];
    }
    for (index_t t = hi; t < run; ++t) d[t] = T(0);
  } else {
    for (index_t t = 0; t < lo; ++t) d[t * ds] = T(0);
    for (index_t t = lo; t < hi; ++t) d[t * ds] = xr[iw0 + t * sw];
    for (index_t t = hi; t < run; ++t) d[t * ds] = T(0);
  }
}

#ifdef GV_HAVE_X86
// Output rows of at most this many positions pack by gathers (below): run by run,
// a 4x4 map copied 4 floats at a time and packing was 11% of the batch-1 4x4
// layer's forward pass.
constexpr index_t kGatherMaxOW = 8;
constexpr index_t kGatherMaxTaps = 64;

// pack_b_cols for 16-wide float slivers by one masked gather per tap row: for each
// sliver, every (kh, kw) gets the 16 positions' offsets from a channel's origin and
// a mask of those inside the image (and inside [q0, q0+P)). When the sliver lies in
// one image whose planes have at most 16 pixels (a 4x4 map), each channel's plane
// is loaded once and its rows are permutes of it instead (gathers cost about 25
// cycles each here). False when the offsets would not fit in 32 bits or the kernel
// has too many taps (the caller packs run by run instead).
__attribute__((target("avx512f"))) bool pack_b_gather_avx512(float* out, const float* x, index_t img_stride,
                                                             const Conv2dShape& s, const Tap* taps, index_t kc,
                                                             index_t q0, index_t P) {
  const auto& p = s.p;
  const index_t KK = s.KH * s.KW, OHW = s.OH * s.OW;
  if (KK > kGatherMaxTaps) return false;
  const index_t n_last = (q0 + P - 1) / OHW, n_first = q0 / OHW;
  if ((n_last - n_first + 1) * img_stride >= (index_t(1) << 31)) return false;
  const float* xb = x + n_first * img_stride;  // offsets from image n_first
  const index_t HW = s.H * s.W;
  // per (kh, kw): the positions' offsets, within the plane for permutes, else from
  // image n_first's channel origin for gathers; mask: those inside the image
  alignas(64) std::int32_t off[kGatherMaxTaps][16];
  __mmask16 mask[kGatherMaxTaps];
  for (index_t sb = 0; sb * 16 < P; ++sb) {
    const index_t i0 = sb * 16, i1 = std::min(P, i0 + 16);
    const index_t n0 = (q0 + i0) / OHW;
    const bool one_plane = HW <= 16 && (q0 + i1 - 1) / OHW == n0;
    for (index_t t = 0; t < KK; ++t) mask[t] = 0;
    for (index_t j = 0; j < 16; ++j) {
      const index_t i = i0 + j;
      if (i >= P) {
        for (index_t t = 0; t < KK; ++t) off[t][j] = 0;
        continue;
      }
      const index_t q = q0 + i, n = q / OHW, r = q % OHW, oh = r / s.OW, ow = r % s.OW;
      for (index_t kh = 0, t = 0; kh < s.KH; ++kh)
        for (index_t kw = 0; kw < s.KW; ++kw, ++t) {
          const index_t ih = oh * p.stride_h + kh * p.dilation_h - p.pad_top;
          const index_t iw = ow * p.stride_w + kw * p.dilation_w - p.pad_left;
          const bool in = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
          off[t][j] = in ? std::int32_t((one_plane ? 0 : (n - n_first) * img_stride) + ih * s.W + iw) : 0;
          if (in) mask[t] = __mmask16(mask[t] | (1u << j));
        }
    }
    float* dst = out + sb * kc * 16;
    auto tap_index = [&](const Tap& tp) {
      return ((tp.dh + p.pad_top) / p.dilation_h) * s.KW + (tp.dw + p.pad_left) / p.dilation_w;
    };
    if (one_plane) {
      const float* xn = xb + (n0 - n_first) * img_stride;
      const __mmask16 whole = __mmask16((1u << HW) - 1);
      index_t plane_off = -1;
      __m512 plane = _mm512_setzero_ps();
      for (index_t k = 0; k < kc; ++k) {
        const Tap& tp = taps[k];
        if (tp.xoff != plane_off) plane = _mm512_maskz_loadu_ps(whole, xn + tp.xoff), plane_off = tp.xoff;
        const index_t t = tap_index(tp);
        _mm512_storeu_ps(dst + k * 16, _mm512_maskz_permutexvar_ps(mask[t], _mm512_load_si512(off[t]), plane));
      }
      continue;
    }
    for (index_t k = 0; k < kc; ++k) {
      const Tap& tp = taps[k];
      const index_t t = tap_index(tp);
      const __m512i o = _mm512_load_si512(off[t]);
      _mm512_storeu_ps(dst + k * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask[t], o, xb + tp.xoff, 4));
    }
  }
  return true;
}
#endif

// B = rows taps[0, kc) x positions [q0, q0+P) of the column matrix, packed into
// NR-wide k-major slivers (the last one zero-padded). x is the group's first channel
// of image 0; images are img_stride apart.
template <class T, int NR>
void pack_b_cols(T* out, const T* x, index_t img_stride, const Conv2dShape& s, const Tap* taps, index_t kc,
                 index_t q0, index_t P) {
  const auto& p = s.p;
  const bool wide = cpu_level() == SimdLevel::avx512;
#ifdef GV_HAVE_X86
  if constexpr (std::is_same_v<T, float> && NR == 16) {
    if (wide && s.OW <= kGatherMaxOW &&
        pack_b_gather_avx512(reinterpret_cast<float*>(out), reinterpret_cast<const float*>(x), img_stride, s, taps,
                             kc, q0, P))
      return;
  }
#endif
  for_runs(s, q0, P, NR, [&](index_t n, index_t oh, index_t ow, index_t i, index_t run) {
    T* dst = out + (i / NR) * kc * NR + i % NR;
    const T* xn = x + n * img_stride;
    const index_t ih0 = oh * p.stride_h, iw0 = ow * p.stride_w;
    for (index_t k = 0; k < kc; ++k) {
      const Tap& tp = taps[k];
      const index_t ih = ih0 + tp.dh;
      gather_row(dst + k * NR, 1, (ih >= 0 && ih < s.H) ? xn + tp.xoff + ih * s.W : nullptr, iw0 + tp.dw, p.stride_w,
                 s.W, run, wide);
    }
  });
  if (const index_t tail = P % NR) {
    T* dst = out + (P / NR) * kc * NR;
    for (index_t k = 0; k < kc; ++k)
      for (index_t j = tail; j < NR; ++j) dst[k * NR + j] = T(0);
  }
}

// B = positions [q0, q0+kc) x column-matrix rows taps[0, nc) (the transposed column
// matrix), packed into NR-wide k-major slivers over the taps.
template <class T, int NR>
void pack_b_cols_t(T* out, const T* x, index_t img_stride, const Conv2dShape& s, const Tap* taps, index_t nc,
                   index_t q0, index_t kc) {
  const auto& p = s.p;
  for (index_t js = 0; js < nc; js += NR) {
    T* o = out + js * kc;
    for (index_t j = 0; j < NR; ++j) {
      if (js + j >= nc) {
        for (index_t k = 0; k < kc; ++k) o[k * NR + j] = T(0);
        continue;
      }
      const Tap tp = taps[js + j];
      for_runs(s, q0, kc, kc, [&](index_t n, index_t oh, index_t ow, index_t i, index_t run) {
        const index_t ih = oh * p.stride_h + tp.dh;
        gather_row(o + i * NR + j, NR, (ih >= 0 && ih < s.H) ? x + n * img_stride + tp.xoff + ih * s.W : nullptr,
                   ow * p.stride_w + tp.dw, p.stride_w, s.W, run);
      });
    }
  }
}

// A = dout rows [m0, m0+mc) of group gi x positions [q0, q0+kc), in MR-tall k-major slivers.
template <class T, int MR>
void pack_a_dout(T* out, const T* dout, const Conv2dShape& s, index_t row0, index_t mc, index_t q0, index_t kc) {
  const index_t OHW = s.OH * s.OW;
  for (index_t is = 0; is < mc; is += MR) {
    T* o = out + is * kc;
    for (index_t q = q0; q < q0 + kc;) {
      const index_t n = q / OHW, r = q % OHW, len = std::min(OHW - r, q0 + kc - q);
      T* d = o + (q - q0) * MR;
      for (index_t i = 0; i < MR; ++i) {
        if (is + i < mc) {
          const T* src = dout + (n * s.F + row0 + is + i) * OHW + r;
          for (index_t t = 0; t < len; ++t) d[t * MR + i] = src[t];
        } else {
          for (index_t t = 0; t < len; ++t) d[t * MR + i] = T(0);
        }
      }
      q += len;
    }
  }
}

// Few input channels per group (the RGB layer): the column matrix has few rows, each
// output position reads C*KH*KW scattered taps, and gathering them per (tap, run of
// positions) costs more than the product. There the image is first laid out once,
// zero-padded and split by column phase (iw mod stride):
//   split[n][c][r][ph][j] = xpad[n][c][r][j * stride_w + ph]    (xpad: x with the padding)
// so that column-matrix element (tap, position) = split[roff(tap) + koff(position)],
// with koff contiguous along an output row: packing B is a plain copy, and the
// backward weight reads the taps in place (ukernel_offs).
constexpr index_t kSplitMaxChannels = 4;

struct Split {
  index_t Hp, Wq, SH, SC, SI;  // rows, columns per phase; row, channel, image strides
};

// Not for a stride with one output along the row: its rows would be stride_w
// floats long (a stride past the input is legal), and the plain packing reads the
// one window directly.
inline bool use_split(const Conv2dShape& s, const Geometry& g) {
  return !g.pointwise && g.Cg <= kSplitMaxChannels && (s.OW > 1 || s.p.stride_w == 1);
}

Split split_geometry(const Conv2dShape& s) {
  const auto& p = s.p;
  Split sp;
  sp.Hp = (s.OH - 1) * p.stride_h + (s.KH - 1) * p.dilation_h + 1;
  sp.Wq = s.OW + ((s.KW - 1) * p.dilation_w) / p.stride_w;
  sp.SH = p.stride_w * sp.Wq;
  sp.SC = sp.Hp * sp.SH;
  sp.SI = s.C * sp.SC;
  return sp;
}

// Offsets of the taps (c, kh, kw) of one group in the split image.
std::vector<index_t> split_roff(const Conv2dShape& s, const Split& sp, index_t Cg) {
  const auto& p = s.p;
  std::vector<index_t> roff;
  roff.reserve(std::size_t(Cg * s.KH * s.KW));
  for (index_t c = 0; c < Cg; ++c)
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const index_t d = kw * p.dilation_w;
        roff.push_back(c * sp.SC + kh * p.dilation_h * sp.SH + (d % p.stride_w) * sp.Wq + d / p.stride_w);
      }
  return roff;
}

// split rows of images [n0, n1), all channels.
template <class T>
void build_split(T* split, const T* x, const Conv2dShape& s, const Split& sp, index_t n0, index_t n1) {
  const auto& p = s.p;
  const bool wide = cpu_level() == SimdLevel::avx512;
  for (index_t n = n0; n < n1; ++n)
    for (index_t c = 0; c < s.C; ++c) {
      const T* xc = x + (n * s.C + c) * s.H * s.W;
      T* d = split + n * sp.SI + c * sp.SC;
      for (index_t r = 0; r < sp.Hp; ++r) {
        const index_t ih = r - p.pad_top;
        const T* xr = ih >= 0 && ih < s.H ? xc + ih * s.W : nullptr;
        for (index_t ph = 0; ph < p.stride_w; ++ph, d += sp.Wq)
          gather_row(d, 1, xr, ph - p.pad_left, p.stride_w, s.W, sp.Wq, wide);
      }
    }
}

#ifdef GV_HAVE_X86
// dst[k * 32 + t] = src[roff[k] + t] for t < run <= 32, k < kc: a run of a 32-wide
// sliver that is cut by the end of an output row (rows of 28 or 56 outputs put
// every sliver across two), by masked loads and stores; the per-run memmove it
// replaces cost about as much as the micro-kernel on these slivers (K = 75).
__attribute__((target("avx512f"))) void copy_run32_avx512(float* dst, const float* src, const index_t* roff,
                                                          index_t kc, index_t run) {
  const __mmask16 lo = __mmask16(run >= 16 ? 0xFFFF : (1u << run) - 1);
  const __mmask16 hi = __mmask16(run >= 32 ? 0xFFFF : run > 16 ? (1u << (run - 16)) - 1 : 0);
  for (index_t k = 0; k < kc; ++k) {
    const float* a = src + roff[k];
    float* d = dst + k * 32;
    _mm512_mask_storeu_ps(d, lo, _mm512_maskz_loadu_ps(lo, a));
    _mm512_mask_storeu_ps(d + 16, hi, _mm512_maskz_loadu_ps(hi, a + 16));
  }
}
#endif

// pack_b_cols from the split image of the group (sg), the taps' offsets roff[0, kc).
// skip_full: leave out the tiles that lie in one output row (read in place).
template <class T, int NR>
void pack_b_split(T* out, const T* sg, const Conv2dShape& s, const Split& sp, const index_t* roff, index_t kc,
                  index_t q0, index_t P, bool skip_full) {
#ifdef GV_HAVE_X86
  constexpr bool vec32 = std::is_same_v<T, float> && NR == 32;
  const bool vec = vec32 && cpu_level() == SimdLevel::avx512;
#endif
  for_runs(s, q0, P, NR, [&](index_t n, index_t oh, index_t ow, index_t i, index_t run) {
    T* dst = out + (i / NR) * kc * NR + i % NR;
    const T* src = sg + n * sp.SI + oh * s.p.stride_h * sp.SH + ow;
    if (run == NR && skip_full) return;
#ifdef GV_HAVE_X86
    if constexpr (vec32) {
      if (vec) return copy_run32_avx512(dst, src, roff, kc, run);
    }
#endif
    if (run == NR) {
      for (index_t k = 0; k < kc; ++k) {
        const T* a = src + roff[k];
        T* d = dst + k * NR;
        for (int t = 0; t < NR; ++t) d[t] = a[t];
      }
    } else {
      for (index_t k = 0; k < kc; ++k) std::copy(src + roff[k], src + roff[k] + run, dst + k * NR);
    }
  });
  if (const index_t tail = P % NR) {
    T* dst = out + (P / NR) * kc * NR;
    for (index_t k = 0; k < kc; ++k)
      for (index_t j = tail; j < NR; ++j) dst[k * NR + j] = T(0);
  }
}

// The ukernel_offs whose tile is MR x NR, if any.
template <class T, int MR, int NR>
ukernel_offs_fn<T> offs_ukernel() {
  using namespace gemm_detail;
  constexpr bool f32 = sizeof(T) == 4;
  if constexpr (MR == kMR512 && NR == (f32 ? kNR512_f32 : kNR512_f64)) {
    if constexpr (f32) return ukernel_offs_avx512_f32; else return ukernel_offs_avx512_f64;
  } else if constexpr (MR == kMR256 && NR == (f32 ? kNR256_f32 : kNR256_f64)) {
    if constexpr (f32) return ukernel_offs_avx2_f32; else return ukernel_offs_avx2_f64;
  } else if constexpr (MR == kMRScalar && NR == kNRScalar) {
    return ukernel_offs_scalar<T>;
  } else {
    return nullptr;
  }
}

// The ukernel_boffs whose tile is MR x NR, if any.
template <class T, int MR, int NR>
ukernel_boffs_fn<T> boffs_ukernel() {
  using namespace gemm_detail;
  constexpr bool f32 = sizeof(T) == 4;
  if constexpr (MR == kMR512 && NR == (f32 ? kNR512_f32 : kNR512_f64)) {
    if constexpr (f32) return ukernel_boffs_avx512_f32; else return ukernel_boffs_avx512_f64;
  } else if constexpr (MR == kMR256 && NR == (f32 ? kNR256_f32 : kNR256_f64)) {
    if constexpr (f32) return ukernel_boffs_avx2_f32; else return ukernel_boffs_avx2_f64;
  } else if constexpr (MR == kMRScalar && NR == kNRScalar) {
    return ukernel_boffs_scalar<T>;
  } else {
    return nullptr;
  }
}

// out (N,F,OH,OW) = conv(x, W) + b for the shape s, where W[f][k] (per group) is
// w's row f, or, when `flipped`, the transposed and flipped filters of the conv
// whose backward-input this is: W[c][(f,kh,kw)] = w[f][c][KH-1-kh][KW-1-kw].
template <class T, int MR, int NR>
void implicit_forward(ukernel_fn<T> pack_kern, ukernel_rows_fn<T> rows_kern, T* out, const T* x, const T* w,
                      const T* b, const Conv2dShape& s, bool flipped, bool relu) {
  const Geometry g = geometry(s);
  const index_t M = g.Fg, K = g.CK, Q = s.N * g.OHW;
  const index_t mslivers = (M + MR - 1) / MR, Mpad = mslivers * MR;
  const KBlocks kb = kblocks(K);
  const index_t kc_max = kb.max_size();
  const std::vector<Tap> taps = make_taps(s, g.Cg);

  // Positions per chunk: the B block (kc x P) and the C panel (M x P) in L2.
  const index_t nt = team_size();
  const index_t budget = (index_t(3) << 17) / index_t(sizeof(T));  // 384 KiB
  index_t P = std::max<index_t>(NR, std::min<index_t>(4096, budget / std::max(kc_max, M)) / NR * NR);
  index_t chunks = (Q + P - 1) / P;
  if (chunks < 8 * nt) {  // few chunks: make their count a multiple of the team
    chunks = std::max<index_t>(1, (chunks + nt - 1) / nt * nt);
    P = ((Q + chunks - 1) / chunks + NR - 1) / NR * NR;
    chunks = (Q + P - 1) / P;
  }
  const index_t mblocks = chunks >= nt ? 1 : std::min(mslivers, (nt + chunks - 1) / chunks);
  const index_t items = chunks * mblocks;

  // Few output columns (batch 1 on small maps): each weight would be used by at
  // most kDirectTiles column tiles, so packing the weights (up to 3.5 MB) costs as
  // much as the product; the micro-kernel then reads them in place, row m of A at
  // arow(gi, m), its k-th element at koff[k].
  constexpr index_t kDirectTiles = 16;
  const bool direct = (Q + NR - 1) / NR <= kDirectTiles;
  const index_t lda = flipped ? g.KK : K;
  auto arow = [&](index_t gi, index_t m) { return flipped ? w + (gi * g.Cg * M + m) * g.KK : w + (gi * M + m) * K; };
  std::vector<index_t> koff(direct ? std::size_t(K) : 0);
  for (index_t k = 0; k < index_t(koff.size()); ++k)  // flipped: k = (f, tap) reads w[f][m][KK-1-tap]
    koff[std::size_t(k)] = flipped ? (k / g.KK) * M * g.KK + (g.KK - 1 - k % g.KK) : k;

  T* ap = direct ? nullptr : scratch<T>(ScratchSlot::conv_pack_a, std::size_t(g.G * Mpad * K));
  const index_t a_slivers = direct ? 0 : g.G * kb.n * mslivers;
  auto pack_a = [&](index_t id) {
    const index_t gi = id / (kb.n * mslivers), bk = (id / mslivers) % kb.n, is = id % mslivers;
    const index_t k0 = kb.begin(bk), kc = kb.begin(bk + 1) - k0, m0 = is * MR;
    T* o = ap + gi * Mpad * K + k0 * Mpad + m0 * kc;
    const index_t mr = std::min<index_t>(MR, M - m0);
    if (!flipped) {
      const T* src = w + (gi * M + m0) * K + k0;
      for (index_t k = 0; k < kc; ++k, o += MR) {
        for (index_t i = 0; i < mr; ++i) o[i] = src[i * K + k];
        for (index_t i = mr; i < MR; ++i) o[i] = T(0);
      }
    } else {
      // k = f * KK + tap; w is the original (F' = s.C, C'/G = M, KH, KW), f < F'/G = Cg,
      // and row m of A reads w[f][m][flipped tap]: rows are KK apart.
      index_t f = k0 / g.KK, tap = k0 % g.KK;
      for (index_t k = 0; k < kc; ++k, o += MR) {
        const T* src = w + ((gi * g.Cg + f) * M + m0) * g.KK + (g.KK - 1 - tap);
        for (index_t i = 0; i < mr; ++i) o[i] = src[i * g.KK];
        for (index_t i = mr; i < MR; ++i) o[i] = T(0);
        if (++tap == g.KK) tap = 0, ++f;
      }
    }
  };

  const bool split = use_split(s, g);
  const Split sp = split ? split_geometry(s) : Split{};
  const std::vector<index_t> roff = split ? split_roff(s, sp, g.Cg) : std::vector<index_t>();
  T* xs = split ? scratch<T>(ScratchSlot::conv_cols, std::size_t(s.N * sp.SI)) : nullptr;
  const ukernel_boffs_fn<T> boffs_kern = boffs_ukernel<T, MR, NR>();
  const bool inplace = split && !direct && boffs_kern;

  // Small maps whose size is not a multiple of NR (4x4, 7x7...) would put most tiles
  // across two images: those chunks are computed into a contiguous panel (M x P)
  // and copied out once, instead of scattering every tile after every K block.
  const bool panel = g.OHW % NR != 0 && g.OHW < 8 * NR;

  // o[0, len) of output channel f: + bias, relu.
  auto finish = [&](T* o, index_t len, index_t f) {
    const T bv = b ? b[f] : T(0);
    if (relu) {
      for (index_t t = 0; t < len; ++t) o[t] = std::max(o[t] + bv, T(0));
    } else {
      for (index_t t = 0; t < len; ++t) o[t] = o[t] + bv;
    }
  };

  auto item = [&](index_t id, T* bp, T* cp, T* tile) {
    const index_t chunk = id / mblocks, mb = id % mblocks;
    const index_t q0 = chunk * P, pc = std::min(P, Q - q0);
    const index_t is0 = mslivers * mb / mblocks, is1 = mslivers * (mb + 1) / mblocks;
    const index_t f0 = std::min(M, is0 * MR), f1 = std::min(M, is1 * MR);
    for (index_t gi = 0; gi < g.G; ++gi) {
      const T* xg = x + gi * g.Cg * g.HW;
      const T* ag = ap + gi * Mpad * K;
      const index_t row0 = gi * M;  // first output channel of the group
      for (index_t bk = 0; bk < kb.n; ++bk) {
        const index_t k0 = kb.begin(bk), kc = kb.begin(bk + 1) - k0;
        if (split)
          pack_b_split<T, NR>(bp, xs + gi * g.Cg * sp.SC, s, sp, roff.data() + k0, kc, q0, pc, inplace);
        else
          pack_b_cols<T, NR>(bp, xg, s.C * g.HW, s, taps.data() + k0, kc, q0, pc);
        const T beta = bk == 0 ? T(0) : T(1);
        for (index_t is = is0; is < is1; ++is) {
          const index_t m = is * MR, mr = std::min<index_t>(MR, M - m);
          const T* a = direct ? arow(gi, m) : ag + k0 * Mpad + m * kc;
          // C tile (MR x NR at c, row stride ldc) from B's tile at jr: in place in
          // the split image when the tile lies in one output row, else packed.
          // fuse (a full tile into the output): bias and relu may be applied by the
          // micro-kernel; returns whether they were.
          auto kern = [&](index_t jr, T* c, index_t ldc, T beta_c, bool fuse = false) {
            const T* bs = bp + jr * kc;
            if (direct) return rows_kern(kc, a, lda, mr, koff.data() + k0, bs, c, ldc, T(1), beta_c), false;
            const index_t q = q0 + jr;
            if (inplace && pc - jr >= NR && q % s.OW + NR <= s.OW) {
              const index_t n = q / g.OHW, r = q % g.OHW;
              const T* src = xs + gi * g.Cg * sp.SC + n * sp.SI + (r / s.OW) * s.p.stride_h * sp.SH + r % s.OW;
              const T* bias = fuse && b && bk == 0 ? b + row0 + m : nullptr;
              boffs_kern(kc, a, src, roff.data() + k0, c, ldc, bias, fuse && relu && bk == kb.n - 1, beta_c);
              return fuse;
            }
            return pack_kern(kc, a, bs, c, ldc, T(1), beta_c), false;
          };
          for (index_t jr = 0; jr < pc; jr += NR) {
            const index_t nr = std::min<index_t>(NR, pc - jr), q = q0 + jr;
            if (panel) {  // cp is M x P (ldc P), P a multiple of NR: only the last rows can be partial
              if (mr == MR) {
                kern(jr, cp + m * P + jr, P, beta);
              } else {
                kern(jr, tile, NR, T(0));
                for (index_t i = 0; i < mr; ++i)
                  for (index_t j = 0; j < NR; ++j) {
                    T& d = cp[(m + i) * P + jr + j];
                    d = beta == T(0) ? tile[i * NR + j] : d + tile[i * NR + j];
                  }
              }
              continue;
            }
            const index_t n = q / g.OHW, r = q % g.OHW;
            // Bias and relu are applied to each tile after the last K block, while it is in L1.
            const bool last = bk == kb.n - 1 && (b || relu);
            if (mr == MR && nr == NR && r + NR <= g.OHW) {
              T* c = out + (n * s.F + row0 + m) * g.OHW + r;
              if (kern(jr, c, g.OHW, beta, true)) continue;
              if (last)
                for (index_t i = 0; i < MR; ++i) finish(c + i * g.OHW, NR, row0 + m + i);
              continue;
            }
            kern(jr, tile, NR, T(0));
            for (index_t j = 0; j < nr; ++j) {
              const index_t nn = (q + j) / g.OHW, rr = (q + j) % g.OHW;
              T* d = out + (nn * s.F + row0 + m) * g.OHW + rr;
              for (index_t i = 0; i < mr; ++i) {
                d[i * g.OHW] = beta == T(0) ? tile[i * NR + j] : d[i * g.OHW] + tile[i * NR + j];
                if (last) finish(d + i * g.OHW, 1, row0 + m + i);
              }
            }
          }
        }
      }
      if (panel) {
        // Per image of the chunk: copy the panel out and add the bias, relu.
        for (index_t q = q0; q < q0 + pc;) {
          const index_t n = q / g.OHW, r = q % g.OHW, len = std::min(g.OHW - r, q0 + pc - q);
          for (index_t f = f0; f < f1; ++f) {
            T* o = out + (n * s.F + row0 + f) * g.OHW + r;
            const T bv = b ? b[row0 + f] : T(0);
            const T* src = panel ? cp + f * P + (q - q0) : o;
            if (relu) {
              for (index_t t = 0; t < len; ++t) o[t] = std::max(src[t] + bv, T(0));
            } else {
              for (index_t t = 0; t < len; ++t) o[t] = src[t] + bv;
            }
          }
          q += len;
        }
      }
    }
  };

  ErrorTrap trap;
  team_run(nt, [&](index_t t, index_t nth) {
    trap.run([&] {
      for (index_t i = a_slivers * t / nth; i < a_slivers * (t + 1) / nth; ++i) pack_a(i);
      if (split) build_split(xs, x, s, sp, s.N * t / nth, s.N * (t + 1) / nth);
    });
    if (!direct || split) team_barrier();
    trap.run([&] {
      T* bp = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(kc_max * P));
      T* cp = panel ? scratch<T>(ScratchSlot::conv_panel, std::size_t(Mpad * P)) : nullptr;
      alignas(64) T tile[MR * NR];
      for (index_t i = items * t / nth; i < items * (t + 1) / nth; ++i) item(i, bp, cp, tile);
    });
  });
  trap.rethrow();
}

// dw (F, CK) = sum over positions of dout[f][pos] * cols[k][pos], per group.
template <class T, int MR, int NR>
void implicit_backward_weight(ukernel_fn<T> kern, T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  const Geometry g = geometry(s);
  const index_t M = g.Fg, N = g.CK, Q = s.N * g.OHW, wsize = s.F * g.CK;
  const std::vector<Tap> taps = make_taps(s, g.Cg);
  constexpr index_t KCq = kKC;                                     // positions per block
  constexpr index_t NC = (sizeof(T) == 4 ? 512 : 256) / NR * NR;  // taps per B block (L2)
  constexpr index_t MC = 128 / MR * MR;                            // filters per A block

  auto zero_rect = [&](T* C, index_t m0, index_t m1, index_t n0, index_t n1) {
    for (index_t gi = 0; gi < g.G; ++gi)
      for (index_t m = m0; m < m1; ++m) std::fill(C + (gi * M + m) * N + n0, C + (gi * M + m) * N + n1, T(0));
  };
  // C[m0:m1, n0:n1] of every group (ldc = CK) = the sum over positions [qa, qb).
  // The first position block overwrites C: no zeroing pass over dW (at 4x4 and
  // batch 1 that memset was a third of the call).
  auto block = [&](T* C, index_t m0, index_t m1, index_t n0, index_t n1, index_t qa, index_t qb) {
    if (m0 >= m1 || n0 >= n1) return;
    if (qa >= qb) return zero_rect(C, m0, m1, n0, n1);
    T* bp = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(KCq * std::min(NC, (n1 - n0 + NR - 1) / NR * NR)));
    T* apk = scratch<T>(ScratchSlot::conv_pack_a2, std::size_t(KCq * std::min(MC, (m1 - m0 + MR - 1) / MR * MR)));
    alignas(64) T tile[MR * NR];
    for (index_t gi = 0; gi < g.G; ++gi) {
      const T* xg = x + gi * g.Cg * g.HW;
      T* Cg = C + gi * M * N;
      for (index_t jc = n0; jc < n1; jc += NC) {
        const index_t nc = std::min(NC, n1 - jc);
        for (index_t pc = qa; pc < qb; pc += KCq) {
          const index_t kc = std::min(KCq, qb - pc);
          const T beta = pc == qa ? T(0) : T(1);
          pack_b_cols_t<T, NR>(bp, xg, s.C * g.HW, s, taps.data() + jc, nc, pc, kc);
          for (index_t ic = m0; ic < m1; ic += MC) {
            const index_t mc = std::min(MC, m1 - ic);
            pack_a_dout<T, MR>(apk, dout, s, gi * M + ic, mc, pc, kc);
            for (index_t ir = 0; ir < mc; ir += MR) {
              const index_t mr = std::min<index_t>(MR, mc - ir);
              for (index_t jr = 0; jr < nc; jr += NR) {
                const index_t nr = std::min<index_t>(NR, nc - jr);
                T* c = Cg + (ic + ir) * N + jc + jr;
                if (mr == MR && nr == NR) {
                  kern(kc, apk + ir * kc, bp + jr * kc, c, N, T(1), beta);
                } else {
                  kern(kc, apk + ir * kc, bp + jr * kc, tile, NR, T(1), T(0));
                  for (index_t i = 0; i < mr; ++i)
                    for (index_t j = 0; j < nr; ++j)
                      c[i * N + j] = beta == T(0) ? tile[i * NR + j] : c[i * N + j] + tile[i * NR + j];
                }
              }
            }
          }
        }
      }
    }
  };

  // Few input channels (see Split): dw^T (taps x filters) as a gemm whose A (the
  // column matrix, MR taps x positions) is read in place from the split image and
  // whose B is dout transposed per block of positions (positions x NR filters);
  // C = the sum over positions [qa, qa+len) for the whole of dw.
  const index_t nt = team_size();
  const bool split_positions = nt == 1 || Q >= 512 * nt;
  const ukernel_offs_fn<T> offs_kern = offs_ukernel<T, MR, NR>();
  const bool split = split_positions && offs_kern && use_split(s, g);
  const Split sp = split ? split_geometry(s) : Split{};
  const std::vector<index_t> roff = split ? split_roff(s, sp, g.Cg) : std::vector<index_t>();
  T* xs = split ? scratch<T>(ScratchSlot::conv_cols, std::size_t(s.N * sp.SI)) : nullptr;
  auto split_block = [&](T* C, index_t qa, index_t qb) {
    if (qa >= qb) return zero_rect(C, 0, M, 0, N);
    constexpr index_t KCs = 128;  // positions per block: B (KCs x NR) stays in L1
    const index_t Mp = (M + NR - 1) / NR * NR, Np = (N + MR - 1) / MR * MR;
    T* ct = scratch<T>(ScratchSlot::conv_pack_a2, std::size_t(Np * Mp));
    T* bt = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(KCs * NR));
    index_t koff[KCs];
    for (index_t gi = 0; gi < g.G; ++gi) {
      const T* sg = xs + gi * g.Cg * sp.SC;
      for (index_t pc = qa; pc < qb; pc += KCs) {
        const index_t kc = std::min(KCs, qb - pc);
        const T beta = pc == qa ? T(0) : T(1);
        for_runs(s, pc, kc, kc, [&](index_t n, index_t oh, index_t ow, index_t i, index_t run) {
          const index_t o = n * sp.SI + oh * s.p.stride_h * sp.SH + ow;
          for (index_t t = 0; t < run; ++t) koff[i + t] = o + t;
        });
        for (index_t f0 = 0; f0 < M; f0 += NR) {
          const index_t fr = std::min<index_t>(NR, M - f0);
          for (index_t q = pc; q < pc + kc;) {  // bt[p][j] = dout[n][gi*M + f0 + j][r]
            const index_t n = q / g.OHW, r = q % g.OHW, len = std::min(g.OHW - r, pc + kc - q);
            T* d = bt + (q - pc) * NR;
            const T* src = dout + (n * s.F + gi * M + f0) * g.OHW + r;
            transpose_block(d, NR, src, g.OHW, fr, len);
            for (index_t j = fr; j < NR; ++j)
              for (index_t t = 0; t < len; ++t) d[t * NR + j] = T(0);
            q += len;
          }
          for (index_t ts = 0; ts < N; ts += MR)
            offs_kern(kc, sg, roff.data() + ts, std::min<index_t>(MR, N - ts), koff, bt, ct + ts * Mp + f0, Mp, T(1),
                      beta);
        }
      }
      for (index_t f = 0; f < M; ++f)
        for (index_t k = 0; k < N; ++k) C[(gi * M + f) * N + k] = ct[k * Mp + f];
    }
  };

  // db[f] (db may be null): filters split over the team inside the same region,
  // each summed over images and positions in a fixed order.
  auto bias_grad = [&](index_t t, index_t nth) {
    if (!db) return;
    for (index_t f = s.F * t / nth; f < s.F * (t + 1) / nth; ++f) db[f] = conv_detail::bias_sum(dout, s.N, s.F, g.OHW, f);
  };

  ErrorTrap trap;
  if (split_positions) {
    // Positions split across the team; thread 0 sums into dw, the others into
    // partials that are then added in thread order.
    T* parts = nt > 1 ? scratch<T>(ScratchSlot::conv_partial, std::size_t(wsize) * std::size_t(nt - 1)) : nullptr;
    team_run(nt, [&](index_t t, index_t nth) {
      T* C = t == 0 ? dw : parts + std::size_t(t - 1) * std::size_t(wsize);
      if (split) {
        trap.run([&] { build_split(xs, x, s, sp, s.N * t / nth, s.N * (t + 1) / nth); });
        team_barrier();
      }
      trap.run([&] {
        bias_grad(t, nth);
        if (split)
          split_block(C, Q * t / nth, Q * (t + 1) / nth);
        else
          block(C, 0, M, 0, N, Q * t / nth, Q * (t + 1) / nth);
      });
      team_barrier();
      trap.run([&] {
        const index_t i0 = wsize * t / nth, i1 = wsize * (t + 1) / nth;
        for (index_t u = 1; u < nth; ++u) {
          const T* part = parts + std::size_t(u - 1) * std::size_t(wsize);
          for (index_t i = i0; i < i1; ++i) dw[i] += part[i];
        }
      });
    });
  } else {
    // Few positions: split the dw tiles instead (a tm x tn grid, the one whose
    // largest rectangle is smallest), every thread over all positions.
    const index_t mt = (M + MR - 1) / MR, ntl = (N + NR - 1) / NR;
    team_run(nt, [&](index_t t, index_t nth) {
      index_t tm = 1, best = -1;
      for (index_t a = 1; a <= nth; ++a) {
        if (nth % a) continue;
        const index_t cost = ((mt + a - 1) / a) * ((ntl + nth / a - 1) / (nth / a));
        if (best < 0 || cost < best) best = cost, tm = a;
      }
      const index_t tn = nth / tm, ti = t / tn, tj = t % tn;
      const index_t m0 = std::min(M, mt * ti / tm * MR), m1 = std::min(M, mt * (ti + 1) / tm * MR);
      const index_t n0 = std::min(N, ntl * tj / tn * NR), n1 = std::min(N, ntl * (tj + 1) / tn * NR);
      trap.run([&] {
        bias_grad(t, nth);
        block(dw, m0, m1, n0, n1, 0, Q);
      });
    });
  }
  trap.rethrow();
}

// Calls f(kern, rows_kern, MR, NR) with the micro-kernels (packed A, A in place) of
// the CPU's SIMD level.
template <class T, class F>
void with_ukernel(F&& f) {
  using namespace gemm_detail;
  using std::integral_constant;
  constexpr bool f32 = sizeof(T) == 4;
  switch (cpu_level()) {
    case SimdLevel::avx512:
      if constexpr (f32)
        return f(ukernel_avx512_f32, ukernel_rows_avx512_f32, integral_constant<int, kMR512>{}, integral_constant<int, kNR512_f32>{});
      else
        return f(ukernel_avx512_f64, ukernel_rows_avx512_f64, integral_constant<int, kMR512>{}, integral_constant<int, kNR512_f64>{});
    case SimdLevel::avx2:
      if constexpr (f32)
        return f(ukernel_avx2_f32, ukernel_rows_avx2_f32, integral_constant<int, kMR256>{}, integral_constant<int, kNR256_f32>{});
      else
        return f(ukernel_avx2_f64, ukernel_rows_avx2_f64, integral_constant<int, kMR256>{}, integral_constant<int, kNR256_f64>{});
    default:
      return f(ukernel_scalar<T>, ukernel_rows_scalar<T>, integral_constant<int, kMRScalar>{}, integral_constant<int, kNRScalar>{});
  }
}

// out = conv(x, W) + b by Winograd (float32, eligible shapes the cost model picks)
// or the implicit gemm; `flipped` as in implicit_forward.
template <class T>
void forward_any(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool flipped, bool relu) {
  with_ukernel<T>([&](gemm_detail::ukernel_fn<T> kern, gemm_detail::ukernel_rows_fn<T> rows, auto MR, auto NR) {
    if constexpr (sizeof(T) == 4) {
      if (const auto c = conv_detail::winograd_choice(s)) {
        // At most 16 tiles (16x16 maps at batch 1): one-vector-wide gemm tiles.
        if (decltype(NR)::value == gemm_detail::kNR512_f32 && cpu_level() == SimdLevel::avx512 &&
            conv_detail::winograd_tiles(s, c.tm) <= gemm_detail::kNR512n_f32)
          return conv_detail::winograd_forward<gemm_detail::kMR512n, gemm_detail::kNR512n_f32>(
              gemm_detail::ukernel_avx512_f32_narrow, c, out, x, w, b, s, flipped, relu);
        return conv_detail::winograd_forward<decltype(MR)::value, decltype(NR)::value>(kern, c, out, x, w, b, s,
                                                                                         flipped, relu);
      }
      // At most 16 output columns (4x4 maps at batch 1): one-vector tiles, A in place.
      if (decltype(NR)::value == gemm_detail::kNR512_f32 && cpu_level() == SimdLevel::avx512 &&
          s.N * s.OH * s.OW <= gemm_detail::kNR512n_f32)
        return implicit_forward<T, gemm_detail::kMR512n, gemm_detail::kNR512n_f32>(
            nullptr, gemm_detail::ukernel_rows_avx512_f32_narrow, out, x, w, b, s, flipped, relu);
    }
    implicit_forward<T, decltype(MR)::value, decltype(NR)::value>(kern, rows, out, x, w, b, s, flipped, relu);
  });
}

}  // namespace

template <class T>
void conv2d_forward_cpu(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_forward(out, x, w, b, s, relu);
  forward_any(out, x, w, b, s, false, relu);
}

template <class T>
void conv2d_backward_input_cpu(T* dx, const T* dout, const T* w, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_backward_input(dx, dout, w, s);
  const auto& p = s.p;
  const index_t eh = p.dilation_h * (s.KH - 1), ew = p.dilation_w * (s.KW - 1);
  // Few channels per group (the RGB layer) would leave most of the flipped gemm's
  // MR-row tiles empty: there gemm + col2im is cheaper.
  if (p.stride_h == 1 && p.stride_w == 1 && p.pad_top <= eh && p.pad_bottom <= eh && p.pad_left <= ew &&
      p.pad_right <= ew && s.C / p.groups >= 16) {
    // Stride 1: dx is the convolution of dout with the flipped, transposed filters
    // and "full" padding (dilation*(K-1) - pad on each side), whose output is H x W.
    Conv2dParams q = p;
    q.pad_top = eh - p.pad_top, q.pad_bottom = eh - p.pad_bottom;
    q.pad_left = ew - p.pad_left, q.pad_right = ew - p.pad_right;
    const Conv2dShape t = conv2d_shape(s.N, s.F, s.OH, s.OW, s.C, s.KH, s.KW, q);
    return forward_any<T>(dx, dout, w, nullptr, t, true, false);
  }
  const Geometry g = geometry(s);
  const index_t nt = team_size();
  const index_t blocks = std::min(g.Cg, (nt + s.N - 1) / s.N);
  const index_t P = chunk_cols<T>(g, 1);
  for_each_item(s.N * blocks, [&](index_t i) {
    const index_t n = i / blocks, k = i % blocks;
    backward_input_block(dx, dout, w, s, g, n, g.Cg * k / blocks, g.Cg * (k + 1) / blocks, P);
  });
}

template <class T>
void conv2d_backward_weight_cpu(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_backward_weight(dw, db, dout, x, s);
  if constexpr (sizeof(T) == 4) {
    if (const auto c = conv_detail::winograd_choice(s, true))
      return conv_detail::winograd_backward_weight(c.tm, dw, db, dout, x, s);
  }
  with_ukernel<T>([&](gemm_detail::ukernel_fn<T> kern, gemm_detail::ukernel_rows_fn<T>, auto MR, auto NR) {
    implicit_backward_weight<T, decltype(MR)::value, decltype(NR)::value>(kern, dw, db, dout, x, s);
  });
}

template void conv2d_forward_cpu<float>(float*, const float*, const float*, const float*, const Conv2dShape&, bool);
template void conv2d_forward_cpu<double>(double*, const double*, const double*, const double*, const Conv2dShape&,
                                     bool);
template void conv2d_backward_input_cpu<float>(float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_input_cpu<double>(double*, const double*, const double*, const Conv2dShape&);
template void conv2d_backward_weight_cpu<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_weight_cpu<double>(double*, double*, const double*, const double*, const Conv2dShape&);

}  // namespace gradvis
