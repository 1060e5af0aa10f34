// The AVX-512 packing routines of conv2d_pack.h, compiled for that target only
// (the library targets baseline x86-64; callers check cpu_level() first).
#include "cpu/conv2d_pack.h"

namespace gradvis {
namespace conv_detail {

#ifdef GV_HAVE_X86
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

__attribute__((target("avx2"))) void gather_stride2_avx2(float* d, const float* src, index_t n) {
  index_t t = 0;
  for (; t + 8 < n; t += 8) {  // strictly: the second load's last element, src[2 t + 15], is needed
    const __m256 a = _mm256_loadu_ps(src + 2 * t), b = _mm256_loadu_ps(src + 2 * t + 8);
    // a0 a2 b0 b2 | a4 a6 b4 b6, then its 64-bit quarters in the order 0 2 1 3
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    _mm256_storeu_ps(d + t, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
  }
  for (; t < n; ++t) d[t] = src[2 * t];
}

__attribute__((target("avx512f"))) void gather_stride4_avx512(float* d, const float* src, index_t n) {
  // every fourth of 32 values (two loads) into lanes 0-7, twice, then the halves joined
  const __m512i by4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  auto mask_of = [](index_t m) { return m >= 16 ? __mmask16(0xFFFF) : m > 0 ? __mmask16((1u << m) - 1) : __mmask16(0); };
  index_t t = 0;
  for (; t + 16 < n; t += 16) {  // strictly: src[4 t + 60] is the last element needed; the loads end at 4 t + 63
    const float* p = src + 4 * t;
    const __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(p), by4, _mm512_loadu_ps(p + 16));
    const __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(p + 32), by4, _mm512_loadu_ps(p + 48));
    _mm512_storeu_ps(d + t, _mm512_shuffle_f32x4(lo, hi, 0x44));
  }
  if (t < n) {
    const index_t m = 4 * (n - t) - 3;  // source elements still needed: src[4 t .. 4 n - 4]
    const float* p = src + 4 * t;
    const __m512 lo = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mask_of(m), p), by4,
                                             _mm512_maskz_loadu_ps(mask_of(m - 16), p + 16));
    const __m512 hi = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mask_of(m - 32), p + 32), by4,
                                             _mm512_maskz_loadu_ps(mask_of(m - 48), p + 48));
    _mm512_mask_storeu_ps(d + t, __mmask16((1u << (n - t)) - 1), _mm512_shuffle_f32x4(lo, hi, 0x44));
  }
}

__attribute__((target("avx512f"))) void transpose16_avx512(float* d, index_t ldd, const float* src, index_t lds,
                                                           index_t rows, index_t cols) {
  for (index_t j = 0; j < rows; j += 16)
    for (index_t c = 0; c < cols; c += 16) {
      const float* sp = src + j * lds + c;
      __m512 r[16], t[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(sp + i * lds);
      for (int i = 0; i < 8; ++i) {  // pairs of rows interleaved
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 4; ++i) {  // then fours
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 2; ++i)  // 128-bit lanes of eights
        for (int k = 0; k < 4; ++k) {
          t[8 * i + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
          t[8 * i + 4 + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0xdd);
        }
      float* dp = d + c * ldd + j;
      for (int k = 0; k < 8; ++k) {  // register k holds column c + k
        _mm512_storeu_ps(dp + k * ldd, _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88));
        _mm512_storeu_ps(dp + (8 + k) * ldd, _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd));
      }
    }
}

__attribute__((target("avx512f"))) void transpose_out_avx512(float* d, index_t ldd, const float* src,
                                                             index_t lds, index_t rows, index_t cols,
                                                             const OutEpilogue& e) {
  const __m512 lo = _mm512_set1_ps(e.lo), hi = _mm512_set1_ps(e.hi), zero = _mm512_setzero_ps();
  for (index_t j = 0; j < rows; j += 16) {
    const index_t rr = std::min<index_t>(16, rows - j);
    const __mmask16 rmask = __mmask16(rr == 16 ? 0xFFFF : (1u << rr) - 1);
    for (index_t c = 0; c < cols; c += 16) {
      const index_t cc = std::min<index_t>(16, cols - c);
      const __mmask16 cmask = __mmask16(cc == 16 ? 0xFFFF : (1u << cc) - 1);
      const float* sp = src + j * lds + c;
      __m512 r[16], t[16];
      for (int i = 0; i < 16; ++i) r[i] = i < rr ? _mm512_maskz_loadu_ps(cmask, sp + i * lds) : zero;
      for (int i = 0; i < 8; ++i) {  // as transpose16_avx512
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 4; ++k) {
          t[8 * i + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0x88);
          t[8 * i + 4 + k] = _mm512_shuffle_f32x4(r[8 * i + k], r[8 * i + 4 + k], 0xdd);
        }
      for (int k = 0; k < 8; ++k) {  // r[k]: column c + k
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
      }
      for (index_t k = 0; k < cc; ++k) {
        __m512 v = r[k];
        if (e.bias) v = _mm512_add_ps(v, _mm512_set1_ps(e.bias[c + k]));
        if (e.clamp) v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
        const index_t off = (c + k) * ldd + j;
        if (e.ref) {
          v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(rmask, e.ref + off));
          if (e.ref_relu) v = _mm512_max_ps(zero, v);
        }
        _mm512_mask_storeu_ps(d + off, rmask, v);
      }
    }
  }
}

__attribute__((target("avx2"))) void transpose_out_avx2(float* d, index_t ldd, const float* src, index_t lds,
                                                        index_t rows, index_t cols, const OutEpilogue& e) {
  const __m256 lo = _mm256_set1_ps(e.lo), hi = _mm256_set1_ps(e.hi), zero = _mm256_setzero_ps();
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);   // lanes < n: cmpgt(set1(n), iota)
  for (index_t j = 0; j < rows; j += 8) {
    const index_t rr = std::min<index_t>(8, rows - j);
    const __m256i rmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(rr)), iota);
    for (index_t c = 0; c < cols; c += 8) {
      const index_t cc = std::min<index_t>(8, cols - c);
      const __m256i cmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(cc)), iota);
      const float* sp = src + j * lds + c;
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i)
        r[i] = i >= rr ? zero : cc == 8 ? _mm256_loadu_ps(sp + i * lds) : _mm256_maskload_ps(sp + i * lds, cmask);
      for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 2; ++i) {
        r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int k = 0; k < 4; ++k) {  // t[k]: column c + k, t[4 + k]: c + 4 + k
        t[k] = _mm256_permute2f128_ps(r[k], r[4 + k], 0x20);
        t[4 + k] = _mm256_permute2f128_ps(r[k], r[4 + k], 0x31);
      }
      for (index_t k = 0; k < cc; ++k) {
        __m256 v = t[k];
        if (e.bias) v = _mm256_add_ps(v, _mm256_set1_ps(e.bias[c + k]));
        if (e.clamp) v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
        const index_t off = (c + k) * ldd + j;
        if (e.ref) {
          v = _mm256_add_ps(v, rr == 8 ? _mm256_loadu_ps(e.ref + off) : _mm256_maskload_ps(e.ref + off, rmask));
          if (e.ref_relu) v = _mm256_max_ps(zero, v);
        }
        if (rr == 8)
          _mm256_storeu_ps(d + off, v);
        else
          _mm256_maskstore_ps(d + off, rmask, v);
      }
    }
  }
}

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

}  // namespace conv_detail
}  // namespace gradvis
