// Internal to conv2d: the column matrix (im2col) of a convolution, never
// materialized, and its packing into the gemm micro-kernel's operands:
//   Geometry      the per-group sizes of the column matrix
//   Tap           one row k = (c, kh, kw) of a group's column matrix
//   pack_b_cols   B = rows of the column matrix x a chunk of output positions,
//                 gathered from the image into NR-wide k-major slivers
//   pack_b_pointwise  pack_b_cols of a 1x1 stride-1 unpadded layer, row by row
//   pack_b_cols_t the same, transposed (the weight gradient's A operand)
//   pack_a_dout   MR-row slivers of dout (the weight gradient's A operand)
//   Split         the image zero-padded and split by column phase, for layers of
//                 few channels per group (the RGB layer): B is then a plain copy
//                 (pack_b_split), or read in place by the offset micro-kernels
// Positions run over the whole batch: pos = n*OH*OW + oh*OW + ow.
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GV_HAVE_X86 1
#endif

#include "cpu/conv_bias.h"
#include "cpu/conv_depthwise.h"
#include "cpu/gemm_kernels.h"
#include "cpu/simd.h"
#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

struct Geometry {
  index_t G, Cg, Fg, KK, CK, HW, OHW;
  bool pointwise;  // 1x1, stride 1, no padding: the image is its own column matrix
};

inline Geometry geometry(const Conv2dShape& s) {
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

inline std::vector<Tap> make_taps(const Conv2dShape& s, index_t Cg) {
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
__attribute__((target("avx512f"))) void gather_stride2_avx512(float* d, const float* src, index_t n);
// d[t] = src[4 t] for t in [0, n), reading nothing past src[4 n - 4]: four loads
// and three permutes per 16 values (the split copy of ConvNeXt's 4x4 stride-4
// stem, a scalar loop, was a third of the layer's time at batch 16).
__attribute__((target("avx512f"))) void gather_stride4_avx512(float* d, const float* src, index_t n);
// gather_stride2_avx512 at AVX2: two loads, a shuffle and a permute per 8 values
// (the scalar loop was a tenth of the 3->32 stride-2 stem at 224x224).
__attribute__((target("avx2"))) void gather_stride2_avx2(float* d, const float* src, index_t n);
#endif

#ifdef GV_HAVE_X86
// transpose_block of whole 16 x 16 blocks (rows and cols multiples of 16): 16
// loads, 64 shuffles and 16 stores a block, half the instructions of the 4 x 4
// SSE transposes (which were 25-37% of a 5x5 or 7x7 depthwise layer at 14x14 on
// the channels-in-lanes kernels).
__attribute__((target("avx512f"))) void transpose16_avx512(float* d, index_t ldd, const float* src, index_t lds,
                                                           index_t rows, index_t cols);
#endif

// What transpose_out does to each value it writes (the transposed 1x1 path's
// write-out of a panel, filters in its columns): + bias[t] for source column t
// (bias given), then max(lo, v) and min(hi, v) (clamp; hi = +inf for a ReLU), then
// + ref at the value's own destination offset and max(0, v) (ref_relu). The
// order and the operations of panel_bias_relu, clamp_inplace_f32 and add_ref_f32
// (NaN and -0 fall through alike), so fused or not the outputs are the same bits.
struct OutEpilogue {
  const float* bias = nullptr;
  bool clamp = false;
  float lo = 0.f, hi = 0.f;
  const float* ref = nullptr;   // indexed as d
  bool ref_relu = false;
};

#ifdef GV_HAVE_X86
// d[t*ldd + j] = epi(src[j*lds + t]) for j < rows, t < cols, any sizes: whole 16 x
// 16 blocks (AVX-512) or 8 x 8 blocks (AVX2), masked at the edges. The epilogue
// applied to registers on their way out saves the passes over the panel that it
// took in L1 before the transpose (a bias pass in 4-wide vectors, the clamp's,
// the residual sum's over the written output).
__attribute__((target("avx512f"))) void transpose_out_avx512(float* d, index_t ldd, const float* src,
                                                             index_t lds, index_t rows, index_t cols,
                                                             const OutEpilogue& e);
__attribute__((target("avx2"))) void transpose_out_avx2(float* d, index_t ldd, const float* src, index_t lds,
                                                        index_t rows, index_t cols, const OutEpilogue& e);
#endif

// transpose_block in 4 x 4 SSE blocks (float on x86), the rest element by element.
template <class T>
void transpose_block_sse(T* d, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
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

// d[t*ldd + j] = src[j*lds + t] for j in [0, rows), t in [0, cols).
template <class T>
void transpose_block(T* d, index_t ldd, const T* src, index_t lds, index_t rows, index_t cols) {
#ifdef GV_HAVE_X86
  if constexpr (std::is_same_v<T, float>) {
    if (rows >= 16 && cols >= 16 && cpu_level() == SimdLevel::avx512) {
      const index_t r16 = rows / 16 * 16, c16 = cols / 16 * 16;
      transpose16_avx512(d, ldd, src, lds, r16, c16);
      transpose_block_sse(d + c16 * ldd, ldd, src + c16, lds, r16, cols - c16);   // columns past c16
      transpose_block_sse(d + r16, ldd, src + r16 * lds, lds, rows - r16, cols);  // rows past r16
      return;
    }
  }
#endif
  transpose_block_sse(d, ldd, src, lds, rows, cols);
}

// d[t*ds] = xr[iw0 + t*sw] for t in [0, run), 0 where the column is outside [0, W)
// or the whole row is (xr == nullptr). level: the CPU's SIMD level, where the
// caller has it (else the baseline loops).
template <class T>
inline void gather_row(T* d, index_t ds, const T* xr, index_t iw0, index_t sw, index_t W, index_t run,
                       SimdLevel level = SimdLevel::scalar) {
  const bool wide = level == SimdLevel::avx512;
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
    } else if (std::is_same_v<T, float> && sw == 2 && level == SimdLevel::avx2) {
      if (hi > lo)
        gather_stride2_avx2(reinterpret_cast<float*>(d) + lo, reinterpret_cast<const float*>(xr) + iw0 + 2 * lo,
                            hi - lo);
    } else if (std::is_same_v<T, float> && sw == 4 && wide) {
      if (hi > lo)
        gather_stride4_avx512(reinterpret_cast<float*>(d) + lo, reinterpret_cast<const float*>(xr) + iw0 + 4 * lo,
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
                                                             index_t q0, index_t P);
#endif

// B = rows taps[0, kc) x positions [q0, q0+P) of the column matrix, packed into
// NR-wide k-major slivers (the last one zero-padded). x is the group's first channel
// of image 0; images are img_stride apart.
template <class T, int NR>
void pack_b_cols(T* out, const T* x, index_t img_stride, const Conv2dShape& s, const Tap* taps, index_t kc,
                 index_t q0, index_t P) {
  const auto& p = s.p;
  const SimdLevel level = cpu_level();
  const bool wide = level == SimdLevel::avx512;
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
                 s.W, run, level);
    }
  });
  if (const index_t tail = P % NR) {
    T* dst = out + (P / NR) * kc * NR;
    for (index_t k = 0; k < kc; ++k)
      for (index_t j = tail; j < NR; ++j) dst[k * NR + j] = T(0);
  }
}

// pack_b_cols for a pointwise layer (1x1, stride 1, no padding), whose column-matrix
// row k is channel k's plane: each row's run of positions is read once, front to
// back, and dealt out to the slivers. Gathered sliver by sliver instead (kc rows of
// NR values, then the next NR), a cold input (the 4C x H*W map a ConvNeXt block's
// second 1x1 layer reads) was read as kc interleaved short streams, and packing
// took 38% of the call.
template <class T, int NR>
void pack_b_pointwise(T* out, const T* x, index_t img_stride, index_t HW, const Tap* taps, index_t kc, index_t q0,
                      index_t P) {
  const index_t sl = kc * NR;  // one sliver
  for (index_t q = q0; q < q0 + P;) {
    const index_t n = q / HW, r = q % HW, len = std::min(HW - r, q0 + P - q), i0 = q - q0;
    const T* xn = x + n * img_stride + r;
    constexpr index_t ahead = 4;  // rows prefetched ahead: each run is only a few KiB
    constexpr index_t line = 64 / sizeof(T);
    for (index_t k = 0; k < kc; ++k) {
      const T* src = xn + taps[k].xoff;
      if (k + ahead < kc)
        for (const T *f = xn + taps[k + ahead].xoff, *e = f + len; f < e; f += line) __builtin_prefetch(f);
      T* row = out + k * NR;
      index_t i = i0, t = 0;
      for (; i % NR != 0 && t < len; ++i, ++t) row[(i / NR) * sl + i % NR] = src[t];  // into a sliver begun before
      for (; t + NR <= len; i += NR, t += NR) std::memcpy(row + (i / NR) * sl, src + t, sizeof(T) * NR);
      for (; t < len; ++i, ++t) row[(i / NR) * sl + i % NR] = src[t];
    }
    q += len;
  }
  if (const index_t tail = P % NR) {
    T* dst = out + (P / NR) * sl;
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

// Whether a copy of n elements is small next to the call's input and output (at
// most 4 times both, plus 1 MiB): copies laid out over the padding are not made
// where padding or strides are far larger than the image (their sizes could even
// overflow); n is computed in double for that reason.
inline bool copy_is_modest(double n, const Conv2dShape& s) {
  const double io = double(s.N) * (double(s.C) * double(s.H) * double(s.W) + double(s.F) * double(s.OH) * double(s.OW));
  return n <= 4.0 * io + double(1 << 18);
}

// Not for a stride with one output along the row: its rows would be stride_w
// floats long (a stride past the input is legal), and the plain packing reads the
// one window directly; nor where the split image would be mostly padding.
inline bool use_split(const Conv2dShape& s, const Geometry& g) {
  if (g.pointwise || g.Cg > kSplitMaxChannels || !(s.OW > 1 || s.p.stride_w == 1)) return false;
  const auto& p = s.p;
  const double Hp = double(s.OH - 1) * double(p.stride_h) + double(s.KH - 1) * double(p.dilation_h) + 1;
  const double Wq = double(s.OW) + double((s.KW - 1) * p.dilation_w / p.stride_w);
  return copy_is_modest(double(s.N) * double(s.C) * Hp * double(p.stride_w) * Wq, s);
}

inline Split split_geometry(const Conv2dShape& s) {
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
inline std::vector<index_t> split_roff(const Conv2dShape& s, const Split& sp, index_t Cg) {
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

// rows [u0, u1) of the split image, row u = (n * C + c) * Hp + r (threads split the rows:
// at batch 1 a split by images left one thread copying while the other waited).
template <class T>
void build_split(T* split, const T* x, const Conv2dShape& s, const Split& sp, index_t u0, index_t u1) {
  const auto& p = s.p;
  const SimdLevel level = cpu_level();
  for (index_t u = u0; u < u1; ++u) {   // row u = (n * C + c) * Hp + r of the split image
    const index_t r = u % sp.Hp, nc = u / sp.Hp, n = nc / s.C, c = nc % s.C;
    const index_t ih = r - p.pad_top;
    const T* xr = ih >= 0 && ih < s.H ? x + nc * s.H * s.W + ih * s.W : nullptr;
    T* d = split + n * sp.SI + c * sp.SC + r * sp.SH;
    for (index_t ph = 0; ph < p.stride_w; ++ph, d += sp.Wq)
      gather_row(d, 1, xr, ph - p.pad_left, p.stride_w, s.W, sp.Wq, level);
  }
}

#ifdef GV_HAVE_X86
// dst[k * 32 + t] = src[roff[k] + t] for t < run <= 32, k < kc: a run of a 32-wide
// sliver that is cut by the end of an output row (rows of 28 or 56 outputs put
// every sliver across two), by masked loads and stores; the per-run memmove it
// replaces cost about as much as the micro-kernel on these slivers (K = 75).
__attribute__((target("avx512f"))) void copy_run32_avx512(float* dst, const float* src, const index_t* roff,
                                                          index_t kc, index_t run);
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

}  // namespace conv_detail
}  // namespace gradvis
