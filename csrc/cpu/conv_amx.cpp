// Float32 convolutions on AMX tiles (see conv_amx.h for the arithmetic): 1x1
// layers, strided 1x1 layers through a copy of the positions they read, and
// others through their column matrix (im2col_forward).
//
// The layer is the product out_n (M x P) = A (M x K) x_n (K x P) per image, with
// A = w's rows (forward) or their transpose (input gradient). Both operands are
// packed as three bfloat16 parts:
//   A  per 16-row tile and 32-wide k-step: hi, mid, lo tiles of 16 rows x 32 k,
//      packed every call: once by the team when they are few (they then serve
//      many chunks of columns), else 32 rows at a time by the thread that uses
//      them, just before (keeping them across calls needed a digest of the
//      weights every call, which read as many bytes as packing does, and the
//      packed parts read from memory are 1.5x the float32 weights);
//   x  per 16-column tile and k-step: hi, mid, lo tiles of 16 k-pairs x 16
//      columns, each 32-bit lane a pair of k (the tile unit's layout), packed per
//      image by the team (filters outside), or per chunk of columns by the thread
//      that uses it (columns outside).
// The input gradient of large filters instead walks K in chunks, keeping float32
// sums in a buffer between chunks: at batch 1 on up to 256 positions computed
// transposed, w's rows the B operand (input_gradient_transposed), else with each
// thread packing its filters' part of a chunk from whole runs of w's rows
// (input_gradient_chunked).
// A micro-kernel computes 32 x 32 outputs (2 x 2 tiles of 16 x 16 float32 sums,
// the other 4 tile registers holding operands) over all of K, 24 tile products per
// k-step, and stores them straight into the output (through a small buffer at the
// edges). Bias and activation follow per block of outputs while it is in cache.
// Every output is the same sequence of products whatever the thread count.
#include "cpu/conv_amx.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#include "cpu/conv2d_pack.h"
#include "cpu/conv_epilogue.h"
#include "cpu/simd.h"

#ifdef GRADVIS_AMX_BUILD
#include <immintrin.h>
#endif

namespace gradvis {
namespace conv_detail {

#ifdef GRADVIS_AMX_BUILD
namespace {

#define GV_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-bf16")))

using u16 = std::uint16_t;
constexpr index_t kTile = 512;        // bfloat16s in a tile (16 rows x 64 bytes)
constexpr index_t kStep = 3 * kTile;  // a tile's three parts for one k-step of 32

// Fraction of the tile products that must be real (M and P padded to 32, K to
// 32), and the least work, for the tile unit to beat the float32 kernels. Alone,
// every 1x1 layer of MobileNetV2 and EfficientNet-B0 of 4.8M+ multiply-adds ran
// 1.0-2.0x faster on it (1 thread); within those networks, whose 1x1 layers
// alternate with depthwise ones, the whole forward + input gradient ran 3-7%
// slower with their 4.8-10.8M layers on the tile unit. Layers of 16.8M+ (all
// of ResNet-50's and ConvNeXt-T's) gain in the network too.
constexpr double kMinUse = 0.6;
constexpr double kMinMacs = double(1 << 24);
constexpr double kThreadMacs = double(1 << 21);  // the least work per thread
constexpr double kMaxBytes = double(32 << 20);

struct alignas(64) TileConfig {
  std::uint8_t palette, start_row, reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};

GV_AMX inline void load_config() {
  TileConfig c;
  std::memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int i = 0; i < 8; ++i) c.colsb[i] = 64, c.rows[i] = 16;
  // GCC does not see ldtilecfg read the struct and would drop the stores above.
  __asm__ volatile("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

GV_AMX inline __m512i top16(__m512i u) { return _mm512_and_si512(u, _mm512_set1_epi32(int(0xFFFF0000u))); }

// Splitting a number of magnitude below ~1e-33 leaves parts in float32's subnormal
// range, and each instruction that makes or reads one costs a microcode assist:
// GELU outputs of large negative inputs made a 384->96 layer at 56x56 1.4x
// slower. The tile unit reads bfloat16 subnormals as 0, so flushing them (FTZ,
// DAZ) while packing changes no result. Restores the thread's MXCSR on exit.
struct FlushDenormals {
  unsigned saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// x = h + m + l exactly, each part a float32 whose low 16 bits are zero (its top
// half is the bfloat16). Parts below float32's normal range are bfloat16
// subnormals, which the tile unit reads as 0: an absolute error under 2^-118.
// `bad` collects the lanes whose x is an infinity or NaN.
GV_AMX inline void split3(__m512 x, __m512i& h, __m512i& m, __m512i& l, __mmask16& bad) {
  const __m512i u = _mm512_castps_si512(x), e = _mm512_set1_epi32(0x7F800000);
  bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, e), e);
  h = top16(u);
  const __m512 r1 = _mm512_sub_ps(x, _mm512_castsi512_ps(h));
  m = top16(_mm512_castps_si512(r1));
  l = top16(_mm512_castps_si512(_mm512_sub_ps(r1, _mm512_castsi512_ps(m))));
}

// Row k of x (rows ldx apart, K of them) at columns [n0, n0 + 16) under mk, zeros
// past K.
GV_AMX inline __m512 load_row(const float* x, index_t k, index_t K, index_t ldx, index_t n0, __mmask16 mk) {
  return k < K ? _mm512_maskz_loadu_ps(mk, x + k * ldx + n0) : _mm512_setzero_ps();
}
inline __mmask16 cols_mask(index_t N, index_t nt) {
  return __mmask16((1u << std::max<index_t>(0, std::min<index_t>(16, N - nt * 16))) - 1);
}

// One row pair (k, k + 1: a and c, zeros past K) of 16 columns packed into row r
// of a tile's three parts at o.
GV_AMX inline void pack_pair(std::uint32_t* o, index_t r, __m512 a, __m512 c, __mmask16& bad) {
  __m512i ah, am, al, ch, cm, cl;
  split3(a, ah, am, al, bad);
  split3(c, ch, cm, cl, bad);
  _mm512_store_si512(o + r * 16, _mm512_or_si512(_mm512_srli_epi32(ah, 16), ch));
  _mm512_store_si512(o + 256 + r * 16, _mm512_or_si512(_mm512_srli_epi32(am, 16), cm));
  _mm512_store_si512(o + 512 + r * 16, _mm512_or_si512(_mm512_srli_epi32(al, 16), cl));
}

// x's columns [16 nt0, 16 nt1) (x: K rows of N, ldx apart) packed: tile (nt, ks)
// at bp + ((nt - nt0) * KS + ks) * kStep; row r of a part holds, per column, the
// pair of k = 32 ks + 2r, + 1 (low half first). Zeros past K and N. False when an
// element is not finite. `by_rows` walks each pair of rows along all its columns
// before the next (rows far apart in memory: the filters of the transposed input
// gradient), else each column tile down all of K.
GV_AMX bool pack_b(u16* bp, const float* x, index_t K, index_t N, index_t ldx, index_t nt0, index_t nt1,
                   bool by_rows = false) {
  const FlushDenormals ftz;
  const index_t KS = (K + 31) / 32;
  __mmask16 bad = 0;
  if (by_rows) {
    for (index_t ks = 0; ks < KS; ++ks)
      for (index_t r = 0; r < 16; ++r) {
        const index_t k = ks * 32 + 2 * r;
        for (index_t nt = nt0; nt < nt1; ++nt) {
          const __mmask16 mk = cols_mask(N, nt);
          pack_pair(reinterpret_cast<std::uint32_t*>(bp + ((nt - nt0) * KS + ks) * kStep), r,
                    load_row(x, k, K, ldx, nt * 16, mk), load_row(x, k + 1, K, ldx, nt * 16, mk), bad);
        }
      }
    return bad == 0;
  }
  for (index_t nt = nt0; nt < nt1; ++nt) {
    const __mmask16 mk = cols_mask(N, nt);
    for (index_t ks = 0; ks < KS; ++ks) {
      std::uint32_t* o = reinterpret_cast<std::uint32_t*>(bp + ((nt - nt0) * KS + ks) * kStep);
      for (index_t r = 0; r < 16; ++r) {
        const index_t k = ks * 32 + 2 * r;
        pack_pair(o, r, load_row(x, k, K, ldx, nt * 16, mk), load_row(x, k + 1, K, ldx, nt * 16, mk), bad);
      }
    }
  }
  return bad == 0;
}

// The 16 x 16 transpose of r (32-bit lanes): r[i][j] <- r[j][i].
GV_AMX inline void transpose16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // s[4i + j], 128-bit lane L: column 4L + j, rows 4i..4i+3
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // row 4L + j = lane L of s[j], s[4+j], s[8+j], s[12+j]
    const __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44), u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xEE);
    const __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44),
                  u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xEE);
    t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
    t[4 + j] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
    t[8 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
    t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Rows [16 mt0, 16 mt1) of A (M x K, A[m][k] = a[m * lda + k]) packed: tile
// (mt, ks) at ap + ((mt - mt0) * KS + ks) * kStep, row i of a part the 32 k of row
// 16 mt + i. Zeros past M and K. False when an element is not finite.
GV_AMX bool pack_a(u16* ap, const float* a, index_t M, index_t K, index_t lda, index_t mt0, index_t mt1) {
  const FlushDenormals ftz;
  const index_t KS = (K + 31) / 32;
  __mmask16 bad = 0;
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25,
                                       23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (index_t mt = mt0; mt < mt1; ++mt) {
    const index_t m0 = mt * 16;
    for (index_t ks = 0; ks < KS; ++ks) {
      u16* o = ap + ((mt - mt0) * KS + ks) * kStep;
      const index_t k0 = ks * 32;
      const index_t n0 = std::min<index_t>(16, K - k0), n1 = std::max<index_t>(0, std::min<index_t>(16, K - k0 - 16));
      const __mmask16 c0 = __mmask16((1u << n0) - 1), c1 = __mmask16((1u << n1) - 1);
      for (index_t i = 0; i < 16; ++i) {
        const index_t m = m0 + i;
        __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
        if (m < M) {
          v0 = _mm512_maskz_loadu_ps(c0, a + m * lda + k0);
          v1 = _mm512_maskz_loadu_ps(c1, a + m * lda + k0 + 16);
        }
        __m512i p0[3], p1[3];
        split3(v0, p0[0], p0[1], p0[2], bad);
        split3(v1, p1[0], p1[1], p1[2], bad);
        // The top halves of v0's parts, then v1's: one word permute per part (two
        // 32 -> 16 bit narrowings were four shuffle-port operations).
        for (int part = 0; part < 3; ++part)
          _mm512_store_si512(o + part * kTile + i * 32, _mm512_permutex2var_epi16(p0[part], odd, p1[part]));
      }
    }
  }
  return bad == 0;
}

// Cache lines fetched into L2 a few at a time along the tile products: rows of
// row_lines contiguous lines, ld bytes apart (one row for a contiguous run),
// walked in order without a division per line.
struct LinePrefetch {
  const char* p = nullptr;
  index_t ld = 0, row_lines = 1, r = 0, c = 0, left = 0;
  LinePrefetch() = default;
  LinePrefetch(const void* base, index_t ld_bytes, index_t lines_per_row, index_t rows)
      : p(static_cast<const char*>(base)), ld(ld_bytes), row_lines(lines_per_row), left(lines_per_row * rows) {}
  void issue(index_t n) {
    for (; n > 0 && left > 0; --n, --left) {
      _mm_prefetch(p + r * ld + c * 64, _MM_HINT_T1);
      if (++c == row_lines) {
        c = 0;
        ++r;
      }
    }
  }
};

// c (32 x 32, rows ldc floats apart) = the product of A tiles a (rows 0-15) and
// a + KS * kStep (16-31) with x tiles b (columns 0-15) and b + KS * kStep (16-31),
// over KS k-steps: the six products of parts per pair of tiles; with `accumulate`,
// added to c.
// `pf_lines` of pf's cache lines are prefetched into L2 along the way, spread over
// the k-steps (the next filter block's rows or the next chunk's columns, so that
// packing them does not wait on memory while the tile unit idles).
GV_AMX void kernel_2x2(const u16* a, const u16* b, index_t KS, float* c, index_t ldc, bool accumulate = false,
                       LinePrefetch* pf = nullptr, index_t pf_lines = 0) {
  const u16* a1 = a + KS * kStep;
  const u16* b1 = b + KS * kStep;
  const index_t s = ldc * index_t(sizeof(float));
  if (accumulate) {  // c += the product (c holds the sums of earlier k-steps)
    _tile_loadd(0, c, s);
    _tile_loadd(1, c + 16, s);
    _tile_loadd(2, c + 16 * ldc, s);
    _tile_loadd(3, c + 16 * ldc + 16, s);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
#define GV_DP4              \
  _tile_dpbf16ps(0, 4, 6); \
  _tile_dpbf16ps(1, 4, 7); \
  _tile_dpbf16ps(2, 5, 6); \
  _tile_dpbf16ps(3, 5, 7)
  for (index_t ks = 0; ks < KS; ++ks) {
    const u16 *A0 = a + ks * kStep, *A1 = a1 + ks * kStep, *B0 = b + ks * kStep, *B1 = b1 + ks * kStep;
    if (pf_lines > 0) pf->issue(pf_lines * (ks + 1) / KS - pf_lines * ks / KS);
    _tile_loadd(4, A0, 64);  // hi x hi
    _tile_loadd(5, A1, 64);
    _tile_loadd(6, B0, 64);
    _tile_loadd(7, B1, 64);
    GV_DP4;
    _tile_loadd(6, B0 + kTile, 64);  // hi x mid
    _tile_loadd(7, B1 + kTile, 64);
    GV_DP4;
    _tile_loadd(6, B0 + 2 * kTile, 64);  // hi x lo
    _tile_loadd(7, B1 + 2 * kTile, 64);
    GV_DP4;
    _tile_loadd(4, A0 + kTile, 64);  // mid x mid
    _tile_loadd(5, A1 + kTile, 64);
    _tile_loadd(6, B0 + kTile, 64);
    _tile_loadd(7, B1 + kTile, 64);
    GV_DP4;
    _tile_loadd(6, B0, 64);  // mid x hi
    _tile_loadd(7, B1, 64);
    GV_DP4;
    _tile_loadd(4, A0 + 2 * kTile, 64);  // lo x hi
    _tile_loadd(5, A1 + 2 * kTile, 64);
    GV_DP4;
  }
#undef GV_DP4
  _tile_stored(0, c, s);
  _tile_stored(1, c + 16, s);
  _tile_stored(2, c + 16 * ldc, s);
  _tile_stored(3, c + 16 * ldc + 16, s);
}

GV_AMX void release_tiles() { _tile_release(); }

// Bias (b: the block's first filter's, or null), then the values kept in pre
// (rows ldp apart; or null), then max(v, lo) and min(v, hi) where asked, on a
// block of rows x cols outputs (rows ldo apart) just stored, while it is in L1.
// max(lo, v) and min(hi, v) keep a NaN and -0, as the float32 kernels' ReLU and
// clamp.
GV_AMX void bias_act_block(float* o, index_t ldo, const float* b, index_t rows, index_t cols, float* pre,
                           index_t ldp, bool use_lo, float lo, bool use_hi, float hi) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (index_t r = 0; r < rows; ++r) {
    const __m512 bv = _mm512_set1_ps(b ? b[r] : 0.f);
    for (index_t c = 0; c < cols; c += 16) {
      const __mmask16 mk = __mmask16((1u << std::min<index_t>(16, cols - c)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(mk, o + r * ldo + c);
      if (b) v = _mm512_add_ps(v, bv);
      if (pre) _mm512_mask_storeu_ps(pre + r * ldp + c, mk, v);
      if (use_lo) v = _mm512_max_ps(vlo, v);
      if (use_hi) v = _mm512_min_ps(vhi, v);
      _mm512_mask_storeu_ps(o + r * ldo + c, mk, v);
    }
  }
}

// Bias and activation on rows [m0, m1) x columns [c0, c1) of one image's output
// (P columns; pre as out, the same offsets).
void epilogue(float* out, float* pre, const float* b, index_t m0, index_t m1, index_t c0, index_t c1, index_t P,
              bool relu, const ConvAct* act) {
  const index_t len = c1 - c0;
  for (index_t m = m0; m < m1; ++m) {
    float* __restrict o = out + m * P + c0;
    if (b) {
      const float bv = b[m];
      for (index_t i = 0; i < len; ++i) o[i] += bv;
    }
    if (act)
      apply_act(o, pre ? pre + (o - out) : nullptr, len, *act);
    else if (relu)
      for (index_t i = 0; i < len; ++i) o[i] = o[i] < 0.f ? 0.f : o[i];
  }
}

// Rows [16 mt0, 16 mt1) of A = a transposed (A[m][k] = a[k * lda + m]: the input
// gradient's filters), packed as pack_a does, reading each row of a once along its
// whole run of columns: every tile's pairs of k are staged (stage: 48 vectors per
// tile), then transposed.
GV_AMX bool pack_a_rows(u16* ap, const float* a, index_t M, index_t K, index_t lda, index_t mt0, index_t mt1,
                        __m512i* stage) {
  const FlushDenormals ftz;
  const index_t KS = (K + 31) / 32, tiles = mt1 - mt0;
  __mmask16 bad = 0;
  for (index_t ks = 0; ks < KS; ++ks) {
    for (index_t q = 0; q < 16; ++q) {
      const index_t k = ks * 32 + 2 * q;
      for (index_t t = 0; t < tiles; ++t) {
        const index_t m0 = (mt0 + t) * 16;
        const __mmask16 mm = __mmask16((1u << std::max<index_t>(0, std::min<index_t>(16, M - m0))) - 1);
        const __m512 v0 = k < K ? _mm512_maskz_loadu_ps(mm, a + k * lda + m0) : _mm512_setzero_ps();
        const __m512 v1 = k + 1 < K ? _mm512_maskz_loadu_ps(mm, a + (k + 1) * lda + m0) : _mm512_setzero_ps();
        __m512i p0[3], p1[3];
        split3(v0, p0[0], p0[1], p0[2], bad);
        split3(v1, p1[0], p1[1], p1[2], bad);
        for (int part = 0; part < 3; ++part)
          stage[t * 48 + part * 16 + q] = _mm512_or_si512(_mm512_srli_epi32(p0[part], 16), p1[part]);
      }
    }
    for (index_t t = 0; t < tiles; ++t) {
      u16* o = ap + (t * KS + ks) * kStep;
      for (int part = 0; part < 3; ++part) {
        __m512i* r = stage + t * 48 + part * 16;
        transpose16(r);
        for (int i = 0; i < 16; ++i) _mm512_store_si512(o + part * kTile + i * 32, r[i]);
      }
    }
  }
  return bad == 0;
}

// The input gradient of a 1x1 layer whose packed filters are large: out_n (M x P)
// = A x_n with A = w transposed (w: K x M). Each thread owns a range of 32-filter
// blocks and walks K in chunks of kChunkSteps k-steps: it packs its filters' part
// of the chunk (rows of w read along its whole range of columns, not 32 at a
// time) and the chunk of x_n, and adds the chunk's products to its sums (float32
// tiles stored and loaded between chunks, the same operations in the same order
// as one pass over K). Same contract as amx_forward.
bool input_gradient_chunked(float* out, const float* x, const float* w, const float* b, index_t NI, index_t M,
                            index_t K, index_t P, bool relu, const ConvAct* act, float* pre) {
  constexpr index_t kChunkSteps = 8;  // 256 k per chunk
  const index_t KS = (K + 31) / 32, Mp = (M + 31) / 32 * 32, Pp = (P + 31) / 32 * 32;
  const index_t NT = Pp / 16, mblocks = Mp / 32, pairs = NT / 2;
  const double macs = double(NI) * double(M) * double(P) * double(K);
  const index_t nt = std::max<index_t>(1, std::min<index_t>({team_size(), mblocks, index_t(macs / kThreadMacs)}));
  std::atomic<bool> bad{false};
  team_run(nt, [&](index_t t, index_t nth) {
    const index_t mb0 = mblocks * t / nth, mb1 = mblocks * (t + 1) / nth, tiles = 2 * (mb1 - mb0);
    u16 *apk = nullptr, *bpk = nullptr;
    float* acc = nullptr;
    __m512i* stage = nullptr;
    try {  // (no barriers below: a thread that cannot allocate only sends the call back)
      apk = scratch<u16>(ScratchSlot::conv_pack_a2, std::size_t(tiles * kChunkSteps * kStep));
      bpk = scratch<u16>(ScratchSlot::conv_pack_b, std::size_t(NT * kChunkSteps * kStep));
      acc = scratch<float>(ScratchSlot::conv_panel, std::size_t((mb1 - mb0) * 32 * Pp));
      stage = scratch<__m512i>(ScratchSlot::conv_cols, std::size_t(tiles * 48));
    } catch (...) {
      bad = true;
    }
    if (bad || mb0 == mb1) return;
    load_config();
    for (index_t n = 0; n < NI && !bad; ++n) {
      const float* xn = x + n * K * P;
      for (index_t c0 = 0; c0 < KS && !bad; c0 += kChunkSteps) {
        const index_t k0 = c0 * 32, kn = std::min(K - k0, kChunkSteps * 32), ksn = (kn + 31) / 32;
        // Each thread packs the chunk of x itself: packed once for all of K and
        // shared, it outgrew L2 (384<-1536 at 14x14: 1.14 -> 1.26 ms on 1 thread,
        // 0.67 -> 0.76 on 2).
        if (!pack_a_rows(apk, w + k0 * M, M, kn, M, 2 * mb0, 2 * mb1, stage) ||
            !pack_b(bpk, xn + k0 * P, kn, P, P, 0, NT)) {
          bad = true;
          break;
        }
        for (index_t mb = mb0; mb < mb1; ++mb)
          for (index_t pr = 0; pr < pairs; ++pr)
            kernel_2x2(apk + 2 * (mb - mb0) * ksn * kStep, bpk + 2 * pr * ksn * kStep, ksn,
                       acc + (mb - mb0) * 32 * Pp + pr * 32, Pp, c0 > 0);
      }
      if (bad) break;
      float* on = out + n * M * P;
      const index_t m1 = std::min(M, mb1 * 32);
      for (index_t m = mb0 * 32; m < m1; ++m)
        std::memcpy(on + m * P, acc + (m - mb0 * 32) * Pp, sizeof(float) * std::size_t(P));
      epilogue(on, pre ? pre + n * M * P : nullptr, b, mb0 * 32, m1, 0, P, P, relu, act);
    }
    release_tiles();
  });
  return !bad;
}

// Bytes of M x K filters packed (three parts of M and K padded to 32).
std::size_t packed_filter_bytes(index_t M, index_t K) {
  return std::size_t((M + 31) / 32 * 2 * ((K + 31) / 32) * kStep) * sizeof(u16);
}

// Whether the forward product of M x K filters sums K in two halves
// (forward_k_halves): filters that outgrow L2 packed (so packed per block by
// the thread that uses them), narrowing (K >= 4 M).
bool sums_k_halves(index_t M, index_t K) {
  return packed_filter_bytes(M, K) > (std::size_t(1) << 20) && K >= 4 * M && K > 32;
}

// out[m][.] += second[m][.] for the rows [m0, m1) of M x P outputs, then bias
// and activation: the end of a product summed in two halves of K.
void add_second_half(float* out, const float* second, float* pre, const float* b, index_t m0, index_t m1,
                     index_t P, bool relu, const ConvAct* act) {
  for (index_t m = m0; m < m1; ++m) {
    float* __restrict o = out + m * P;
    const float* __restrict h = second + m * P;
    for (index_t q = 0; q < P; ++q) o[q] += h[q];
  }
  epilogue(out, pre, b, m0, m1, 0, P, P, relu, act);
}

// The input gradient of a 1x1 layer with large filters on few positions (7x7 at
// batch 1), computed transposed: out^T (P x M) = x^T (P x K) w (K x M), x the
// output gradient and w's K rows of M the B operand. Read 32 columns at a time
// for all of K, w's rows (kilobytes apart, each on its own page) made the packing
// 2.3x the products; so each thread walks K in chunks of 128 rows and, per chunk,
// packs its columns of those rows (up to 768 at a time) and x^T's chunk, adding
// the chunk's products to float32 sums kept in L2 (stored and loaded between
// chunks: the same operations in the same order as one pass over K). Each 32 x 32
// block of sums is then transposed into out. Same contract as amx_forward (out:
// M x P).
//
// Where K is at least 4 M (ConvNeXt-T's and ResNet-50's narrowing layers), K is
// cut in two halves, each summed on its own and the second added to the first at
// the end: split by columns, each thread packed all of x^T and read its half of
// every row of w (runs too short for the prefetchers), and 2 threads ran those
// layers only 1.4-1.5x faster than 1. The halves do not depend on the thread
// count (1 thread sums them one after the other), so neither do the results.
bool input_gradient_transposed(float* out, const float* x, const float* w, index_t M, index_t K, index_t P,
                               bool relu, const ConvAct* act, float* pre) {
  constexpr index_t kChunkSteps = 4, kSuperBlocks = 24;  // 128 k, 768 columns
  const index_t KS = (K + 31) / 32, Pp = (P + 31) / 32 * 32, PT = Pp / 16, Mp = (M + 31) / 32 * 32;
  const index_t cblocks = Mp / 32, rpairs = PT / 2;
  const index_t chunks = (KS + kChunkSteps - 1) / kChunkSteps;
  const index_t parts = K >= 4 * M && chunks >= 2 ? 2 : 1;
  const index_t items = parts * cblocks;  // (part, column block), part-major
  const index_t sb = std::min(kSuperBlocks, cblocks);
  const double macs = double(M) * double(P) * double(K);
  const index_t nt = std::max<index_t>(1, std::min<index_t>({team_size(), items, index_t(macs / kThreadMacs)}));
  // the second half's sums (M x P), shared: taken before the region
  float* second = parts > 1 ? scratch<float>(ScratchSlot::conv_pack_a, std::size_t(M * P)) : nullptr;
  std::atomic<bool> bad{false};
  team_run(nt, [&](index_t t, index_t nth) {
    const index_t i0 = items * t / nth, i1 = items * (t + 1) / nth;
    u16 *apk = nullptr, *bpk = nullptr;
    float* acc = nullptr;
    __m512i* stage = nullptr;
    try {  // (a thread that cannot allocate skips its work, and the call is sent back)
      apk = scratch<u16>(ScratchSlot::conv_pack_a2, std::size_t(PT * kChunkSteps * kStep));
      bpk = scratch<u16>(ScratchSlot::conv_pack_b, std::size_t(2 * sb * kChunkSteps * kStep));
      acc = scratch<float>(ScratchSlot::conv_panel, std::size_t(sb * rpairs * 32 * 32));
      stage = scratch<__m512i>(ScratchSlot::conv_cols, std::size_t(PT * 48));
    } catch (...) {
      bad = true;
    }
    if (!bad && i0 < i1) {
      load_config();
      // the items [i0, i1) as runs of column blocks within one part, each run in
      // superblocks of up to kSuperBlocks
      for (index_t i = i0; i < i1 && !bad;) {
        const index_t part = i / cblocks, cb_end = std::min(i1 - part * cblocks, cblocks);
        const index_t s0 = i - part * cblocks, s1 = std::min(cb_end, s0 + sb);
        i = part * cblocks + s1;
        float* dst = part == 0 ? out : second;
        const index_t c_begin = chunks * part / parts * kChunkSteps, c_end = chunks * (part + 1) / parts * kChunkSteps;
        for (index_t c0 = c_begin; c0 < std::min(KS, c_end) && !bad; c0 += kChunkSteps) {
          const index_t k0 = c0 * 32, kn = std::min(K - k0, kChunkSteps * 32), ksn = (kn + 31) / 32;
          if (!pack_a_rows(apk, x + k0 * P, P, kn, P, 0, PT, stage) ||
              !pack_b(bpk, w + k0 * M, kn, M, M, 2 * s0, 2 * s1, true)) {
            bad = true;
            break;
          }
          for (index_t cb = s0; cb < s1; ++cb)
            for (index_t rp = 0; rp < rpairs; ++rp)
              kernel_2x2(apk + 2 * rp * ksn * kStep, bpk + 2 * (cb - s0) * ksn * kStep, ksn,
                         acc + ((cb - s0) * rpairs + rp) * 1024, 32, c0 > c_begin);
        }
        if (bad) break;
        for (index_t cb = s0; cb < s1; ++cb) {
          const index_t m0 = cb * 32, rows = std::min<index_t>(32, M - m0);
          for (index_t rp = 0; rp < rpairs; ++rp) {
            const float* blk = acc + ((cb - s0) * rpairs + rp) * 1024;
            const index_t p0 = rp * 32, cols = std::min<index_t>(32, P - p0);
            transpose_block(dst + m0 * P + p0, P, blk, index_t(32), cols, rows);  // dst[m0 + i][p0 + j] = blk[j][i]
          }
          if (parts == 1) epilogue(out, pre, nullptr, m0, m0 + rows, 0, P, P, relu, act);
        }
      }
      release_tiles();
    }
    if (parts == 1) return;
    team_barrier();  // every thread reaches it: both halves are written
    if (bad) return;
    add_second_half(out, second, pre, nullptr, M * t / nth, M * (t + 1) / nth, P, relu, act);
  });
  return !bad;
}

// The forward of a 1x1 layer whose packed filters outgrow L2, with K >= 4 M
// (ConvNeXt-T's and ResNet-50's narrowing layers): K in two halves, as
// input_gradient_transposed. Split by filters, each thread swept the whole packed
// image (2 MB at 1536->384 on 14x14), half of it packed by the other core; here a
// thread packs the image's half of K it needs and its filters' part of that half,
// the second half's sums are added to the first's, then bias and activation.
// 1 thread sums the halves one after the other: the same bits on any count.
bool forward_k_halves(float* out, const float* x, const float* w, const float* b, index_t NI, index_t M, index_t K,
                      index_t P, bool relu, const ConvAct* act, float* pre) {
  const index_t KS = (K + 31) / 32, Mp = (M + 31) / 32 * 32, Pp = (P + 31) / 32 * 32;
  const index_t NT = Pp / 16, mblocks = Mp / 32, pairs = NT / 2, half = (KS + 1) / 2;
  const index_t items = 2 * mblocks;  // (half, filter block), half-major
  const double macs = double(M) * double(P) * double(K);
  const index_t nt = std::max<index_t>(1, std::min<index_t>({team_size(), items, index_t(macs / kThreadMacs)}));
  float* second = scratch<float>(ScratchSlot::conv_pack_a, std::size_t(M * P));  // shared: taken before the region
  std::atomic<bool> bad{false};
  team_run(nt, [&](index_t t, index_t nth) {
    const index_t i0 = items * t / nth, i1 = items * (t + 1) / nth;
    u16 *apk = nullptr, *bpk = nullptr;
    alignas(64) float edge[32 * 32];
    try {
      apk = scratch<u16>(ScratchSlot::conv_panel, std::size_t(2 * half * kStep));
      bpk = scratch<u16>(ScratchSlot::conv_pack_b, std::size_t(NT * half * kStep));
    } catch (...) {
      bad = true;
    }
    const bool tiles = !bad && i0 < i1;
    if (tiles) load_config();
    for (index_t n = 0; n < NI; ++n) {
      const float* xn = x + n * K * P;
      float* on = out + n * M * P;
      index_t packed = -1;  // the half of K whose columns bpk holds
      for (index_t i = i0; i < i1 && tiles && !bad; ++i) {
        const index_t part = i / mblocks, mb = i - part * mblocks;
        const index_t ks0 = part * half, ksn = part == 0 ? half : KS - half;
        const index_t k0 = ks0 * 32, kn = std::min(K - k0, ksn * 32);
        if (packed != part && !pack_b(bpk, xn + k0 * P, kn, P, P, 0, NT)) {
          bad = true;
          break;
        }
        packed = part;
        if (!pack_a(apk, w + k0, M, kn, K, 2 * mb, 2 * mb + 2)) {
          bad = true;
          break;
        }
        float* dst = part == 0 ? on : second;
        const index_t m0 = mb * 32, rows = std::min<index_t>(32, M - m0);
        for (index_t pr = 0; pr < pairs; ++pr) {
          const index_t col = pr * 32, cols = std::min<index_t>(32, P - col);
          const bool full = rows == 32 && cols == 32;
          kernel_2x2(apk, bpk + 2 * pr * ksn * kStep, ksn, full ? dst + m0 * P + col : edge, full ? P : 32);
          if (!full)
            for (index_t r = 0; r < rows; ++r)
              std::memcpy(dst + (m0 + r) * P + col, edge + r * 32, sizeof(float) * std::size_t(cols));
        }
      }
      team_barrier();  // both halves written (every thread reaches it)
      if (!bad)
        add_second_half(on, second, pre ? pre + n * M * P : nullptr, b, M * t / nth, M * (t + 1) / nth, P, relu,
                        act);
      team_barrier();  // second is rewritten for the next image
    }
    if (tiles) release_tiles();
  });
  return !bad;
}

// Whether a product of M x K filters over P positions of NI images takes the tiles.
bool takes_tiles(index_t M, index_t K, index_t P, index_t NI) {
  const index_t Mp = (M + 31) / 32 * 32, Pp = (P + 31) / 32 * 32, KS = (K + 31) / 32;
  // The tile unit runs the six bfloat16 products at 1.1-1.5x the float32 peak of
  // the vector units (Intel Xeon, 2026-12-05: 125-180 G multiply-adds/s per core on
  // ConvNeXt-T's layers, against the vector kernels' 65-100), so it pays where at
  // least ~60% of its padded products are real and the layer is not tiny.
  const double macs = double(NI) * double(M) * double(P) * double(K);
  const double use = double(M) * double(P) * double(K) / (double(Mp) * double(Pp) * double(KS * 32));
  // Half as many where both sides of the filters are 200+ wide (RegNetY-400MF's
  // 440 -> 440 at 7x7, 208 -> 208 at 14x14: 137 -> 110 and 110 -> 88 us, the
  // network's forward pass 5% faster on 1 thread); MobileNetV2's and
  // EfficientNet-B0's expansions and projections (one side 80-192 wide) of that
  // size ran 2-3% slower in their networks on the tiles.
  const bool wide = std::min(M, K) >= 200;
  if (use < kMinUse || macs < (wide ? kMinMacs / 2 : kMinMacs)) return false;
  // Calls whose input and output pass kMaxBytes stream them through memory, and
  // the packed columns add to that traffic: at batch 16 on 56x56 maps the tile
  // unit was 0.89-0.91x the vector kernels on 2 threads (96<->384, 1 thread 0.89
  // for the input gradient).
  return double(NI) * double(K + M) * double(P) * sizeof(float) <= kMaxBytes;
}

// Copies the positions a strided 1x1 layer reads (rows and columns sh, sw apart)
// of one plane xp (H x W) into sp (OH x OW), or back (`scatter`: sp into those
// positions of xp, zeros elsewhere; the input gradient).
GV_AMX void subsample_plane(float* sp, float* xp, index_t H, index_t W, index_t OH, index_t OW, index_t sh,
                            index_t sw, bool scatter) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  const __m512 zero = _mm512_setzero_ps();
  if (scatter) std::memset(xp, 0, sizeof(float) * std::size_t(H * W));
  for (index_t oh = 0; oh < OH; ++oh) {
    float* xr = xp + oh * sh * W;
    float* sr = sp + oh * OW;
    index_t ow = 0;
    if (sw == 2) {  // 16 outputs from 32 inputs (all 32 in the row)
      for (; ow + 16 <= OW && 2 * ow + 32 <= W; ow += 16) {
        if (scatter) {
          const __m512 v = _mm512_loadu_ps(sr + ow);
          _mm512_storeu_ps(xr + 2 * ow, _mm512_permutex2var_ps(v, lo, zero));
          _mm512_storeu_ps(xr + 2 * ow + 16, _mm512_permutex2var_ps(v, hi, zero));
        } else {
          _mm512_storeu_ps(sr + ow, _mm512_permutex2var_ps(_mm512_loadu_ps(xr + 2 * ow), even,
                                                           _mm512_loadu_ps(xr + 2 * ow + 16)));
        }
      }
    }
    for (; ow < OW; ++ow) {
      if (scatter)
        xr[ow * sw] = sr[ow];
      else
        sr[ow] = xr[ow * sw];
    }
  }
}

// subsample_plane over planes of xs and x, split by plane.
void subsample(float* xs, float* x, index_t planes, index_t H, index_t W, index_t OH, index_t OW, index_t sh,
               index_t sw, bool scatter) {
  parallel_for_nt(grain_threads(double(planes) * double(H * W), double(1 << 17), planes), planes, [&](index_t i) {
    subsample_plane(xs + i * OH * OW, x + i * H * W, H, W, OH, OW, sh, sw, scatter);
  });
}

// Rows [k0, k1) of one image's column matrix (rows k = (c, kh, kw), as w's
// rows; columns the output positions): cols[k * P + p] = x[c][oh sh + kh dh - pt]
// [ow sw + kw dw - pl], 0 outside the image.
GV_AMX void im2col_rows(float* cols, const float* xn, const Conv2dShape& s, index_t k0, index_t k1) {
  const auto& p = s.p;
  const index_t KK = s.KH * s.KW, OW = s.OW, sw = p.stride_w;
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (index_t k = k0; k < k1; ++k) {
    const index_t c = k / KK, kh = (k % KK) / s.KW, kw = k % s.KW;
    const float* xc = xn + c * s.H * s.W;
    const index_t off = kw * p.dilation_w - p.pad_left;  // iw = ow sw + off
    // the output columns whose iw lies in [0, W)
    const index_t lo = off >= 0 ? 0 : std::min<index_t>(OW, (-off + sw - 1) / sw);
    const index_t hi = std::max<index_t>(lo, std::min<index_t>(OW, s.W - 1 - off >= 0 ? (s.W - 1 - off) / sw + 1 : 0));
    for (index_t oh = 0; oh < s.OH; ++oh) {
      float* o = cols + k * s.OH * OW + oh * OW;
      const index_t ih = oh * p.stride_h + kh * p.dilation_h - p.pad_top;
      if (ih < 0 || ih >= s.H) {
        std::memset(o, 0, sizeof(float) * std::size_t(OW));
        continue;
      }
      const float* xr = xc + ih * s.W + off;  // xr[ow sw] for ow in [lo, hi)
      for (index_t ow = 0; ow < lo; ++ow) o[ow] = 0.f;
      index_t ow = lo;
      if (sw == 1) {
        std::memcpy(o + lo, xr + lo, sizeof(float) * std::size_t(hi - lo));
        ow = hi;
      } else if (sw == 2) {  // 16 outputs (or the n left) from the 2n - 1 inputs they read
        for (; ow < hi; ow += 16) {
          const index_t n = std::min<index_t>(16, hi - ow), need = 2 * n - 1;
          const __mmask16 m0 = __mmask16((1u << std::min<index_t>(16, need)) - 1);
          const __mmask16 m1 = __mmask16((1u << std::max<index_t>(0, need - 16)) - 1);
          const __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, xr + 2 * ow), even,
                                                  _mm512_maskz_loadu_ps(m1, xr + 2 * ow + 16));
          _mm512_mask_storeu_ps(o + ow, __mmask16((1u << n) - 1), v);
        }
      }
      for (; ow < hi; ++ow) o[ow] = xr[ow * sw];
      for (ow = hi; ow < OW; ++ow) o[ow] = 0.f;
    }
  }
}

// A convolution larger than 1x1 (groups 1, 16+ channels) as the 1x1 product of
// its filters with its column matrix, built per image: for the shapes Winograd
// does not take (strided 3x3 layers, 3x3 layers on 7x7 maps). Forward only: the
// input gradient's filters would have to be transposed and flipped every call.
bool im2col_forward(float* out, const float* x, const float* w, const float* b, const Conv2dShape& s, bool relu,
                    const ConvAct* act, float* pre) {
  const index_t K = s.C * s.KH * s.KW, P = s.OH * s.OW, M = s.F;
  // With few positions (7x7 outputs) the filters, packed every call, cost as much
  // as the products: ResNet-50's 512-channel 3x3 layers at 7x7 ran 0.88x the
  // vector kernels on 2 threads. Summed in two halves of K (forward_k_halves:
  // filters over 1 MB, K >= 4 M), they run 1.5x faster than the vector kernels on
  // 1 thread and 1.3-1.4x on 2 (2.03 -> 1.32-1.37 ms, 1.19-1.40 -> 0.82-0.89).
  // Patches that do not overlap (ConvNeXt's 2x2 stride-2 downsampling: 384->768
  // at 14->7, 0.94 -> 0.71 ms on 1 thread) gain on fewer positions.
  if (s.p.groups != 1 || s.C < 16 || (P < 128 && !is_patch_conv(s) && !sums_k_halves(M, K)) ||
      !takes_tiles(M, K, P, 1))
    return false;
  if (double(K) * double(P) * sizeof(float) > kMaxBytes / 2) return false;
  float* cols = scratch<float>(ScratchSlot::conv_amx_sub, std::size_t(K * P));
  const Conv2dShape t = conv2d_shape(1, K, s.OH, s.OW, M, 1, 1, Conv2dParams{});
  for (index_t n = 0; n < s.N; ++n) {
    const float* xn = x + n * s.C * s.H * s.W;
    const index_t rows_grain = std::max<index_t>(1, index_t(1 << 16) / std::max<index_t>(1, P));
    parallel_for_nt(grain_threads(double(K) * double(P), double(1 << 17), K), (K + rows_grain - 1) / rows_grain,
                    [&](index_t i) { im2col_rows(cols, xn, s, i * rows_grain, std::min(K, (i + 1) * rows_grain)); });
    if (!amx_forward(out + n * M * P, cols, w, b, t, false, relu, act, pre ? pre + n * M * P : nullptr))
      return false;
  }
  return true;
}

// A strided 1x1 layer (a residual branch's downsampling) as the unstrided one of
// the positions it reads, copied first.
bool strided_forward(float* out, const float* x, const float* w, const float* b, const Conv2dShape& s, bool relu,
                     const ConvAct* act, float* pre) {
  if (!takes_tiles(s.F, s.C, s.OH * s.OW, s.N)) return false;
  float* xs = scratch<float>(ScratchSlot::conv_amx_sub, std::size_t(s.N * s.C * s.OH * s.OW));
  subsample(xs, const_cast<float*>(x), s.N * s.C, s.H, s.W, s.OH, s.OW, s.p.stride_h, s.p.stride_w, false);
  Conv2dShape t = s;
  t.H = s.OH, t.W = s.OW, t.p.stride_h = t.p.stride_w = 1;
  return amx_forward(out, xs, w, b, t, false, relu, act, pre);
}

}  // namespace

bool amx_forward(float* out, const float* x, const float* w, const float* b, const Conv2dShape& s, bool flipped,
                 bool relu, const ConvAct* act, float* pre) {
  const auto& p = s.p;
  if (!amx_enabled()) return false;
  if (s.KH * s.KW > 1) return !flipped && im2col_forward(out, x, w, b, s, relu, act, pre);
  if (!(p.groups == 1 && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0)) return false;
  if (p.stride_h != 1 || p.stride_w != 1) return !flipped && strided_forward(out, x, w, b, s, relu, act, pre);
  const index_t M = s.F, K = s.C, P = s.OH * s.OW, NI = s.N;
  const index_t Mp = (M + 31) / 32 * 32, Pp = (P + 31) / 32 * 32, KS = (K + 31) / 32;
  if (!takes_tiles(M, K, P, NI)) return false;
  const double macs = double(NI) * double(M) * double(P) * double(K);

  const index_t MT = Mp / 16, NT = Pp / 16, mblocks = Mp / 32, pairs = NT / 2;
  // Loop order: the filters outside when packed they outgrow L2's share (each
  // block of 32 filters, packed by its thread, then sweeps the image's packed
  // columns), else chunks of columns outside (each packed by its thread as it
  // goes) and all the filters, packed once by the team, inside.
  const bool a_outer = packed_filter_bytes(M, K) > (std::size_t(1) << 20);
  if (!flipped && sums_k_halves(M, K)) return forward_k_halves(out, x, w, b, NI, M, K, P, relu, act, pre);
  // The input gradient of large filters walks K in chunks: its A, w transposed,
  // read 32 columns at a time from rows kilobytes apart, had made ConvNeXt-T's
  // forward + input gradient 6-9% slower than the float32 kernels (1 thread,
  // 172-177 against 160-163 ms).
  if (a_outer && flipped) {
    // Per image, the filters are packed again: at batch 16 (512<->2048 at 7x7)
    // that made the input gradient 0.58-0.79x the vector kernels.
    // On up to 256 positions computing it transposed gained 1.15-1.3x over the
    // vector kernels at 7x7 and 1.14-1.17x over the chunks at 14x14 (1 thread;
    // 1.2-1.35x and 1.0-1.2x on 2).
    if (NI > 1) return false;
    if (P <= 256) return b == nullptr && input_gradient_transposed(out, x, w, M, K, P, relu, act, pre);
    return input_gradient_chunked(out, x, w, b, NI, M, K, P, relu, act, pre);
  }
  constexpr index_t kChunkPairs = 4;  // 128 columns per chunk
  const index_t items = a_outer ? mblocks : (pairs + kChunkPairs - 1) / kChunkPairs;
  const index_t nt = std::max<index_t>(1, std::min<index_t>({team_size(), items, index_t(macs / kThreadMacs)}));
  u16* ap = a_outer ? nullptr : scratch<u16>(ScratchSlot::conv_pack_a, std::size_t(MT * KS * kStep));
  u16* bp = a_outer ? scratch<u16>(ScratchSlot::conv_pack_b, std::size_t(NT * KS * kStep)) : nullptr;
  // A[m][k]: w's rows, or for the input gradient (w is K x M) its columns
  // (pack_a_rows; the input gradient of filters over 1 MB returned above).

  // ReLU (relu without act, or act relu) and clamp: max(v, lo) / min(v, hi).
  const bool inline_act = !act ? relu : (act->kind == ConvAct::relu || act->kind == ConvAct::clamp);
  const bool use_lo = inline_act, use_hi = act && act->kind == ConvAct::clamp;
  const float lo = act && act->kind == ConvAct::clamp ? float(act->lo) : 0.f;
  const float hi = use_hi ? float(act->hi) : 0.f;

  // Nothing in the region throws (the shared buffers are allocated above, a
  // thread's own below, where a failure only sends the call to the caller's
  // path), and every thread reaches every barrier: `bad` (a failed allocation, a
  // value that is not finite) only skips work, the caller then redoes the call.
  std::atomic<bool> bad{false};
  team_run(nt, [&](index_t t, index_t nth) {
    u16* mine = nullptr;  // a thread's packed filter block or column chunk
    alignas(64) float edge[32 * 32];
    const index_t mt0 = MT * t / nth, mt1 = MT * (t + 1) / nth;  // (columns outside) this thread's filter tiles
    __m512i* stage = nullptr;                                      // (input gradient) pack_a_rows' staging
    try {
      mine = scratch<u16>(ScratchSlot::conv_panel, std::size_t(2 * (a_outer ? 1 : kChunkPairs) * KS * kStep));
      if (flipped) stage = scratch<__m512i>(ScratchSlot::conv_cols, std::size_t((mt1 - mt0) * 48 + 1));
    } catch (...) {
      bad = true;
    }
    if (!a_outer) {
      u16* dst = ap + mt0 * KS * kStep;
      if (!bad && !(flipped ? pack_a_rows(dst, w, M, K, M, mt0, mt1, stage) : pack_a(dst, w, M, K, K, mt0, mt1)))
        bad = true;
      team_barrier();
    }
    const bool tiles = !bad;
    if (tiles) load_config();
    for (index_t n = 0; n < NI; ++n) {
      const float* xn = x + n * K * P;
      float* on = out + n * M * P;
      float* pn = pre ? pre + n * M * P : nullptr;
      // Blocks (mb, pr), pr in [pr0, pr1), from A's tiles a and the pairs' B tiles
      // bcol(pr), each over all of K; then bias, ReLU and clamp while the block
      // is in L1 (other activations, act, per chunk of columns: epilogue). Blocks
      // at the output's edge go through `edge`. (Walking K in chunks instead, so
      // that a chunk of A stayed in L1 across the pairs, with the sums of earlier
      // chunks loaded back into the tiles, ran 1.0-1.55x slower: ConvNeXt-T's
      // 1536->384 at 14x14 1.05 -> 1.43 ms on 1 thread.)
      // pf_lines of pf's cache lines are prefetched over the block's products.
      auto sweep = [&](index_t mb, const u16* a, index_t pr0, index_t pr1, auto&& bcol, LinePrefetch* pf = nullptr,
                       index_t pf_lines = 0) {
        const index_t m0 = mb * 32, rows = std::min<index_t>(32, M - m0);
        for (index_t pr = pr0; pr < pr1; ++pr) {
          const index_t col = pr * 32, cols = std::min<index_t>(32, P - col);
          const bool full = rows == 32 && cols == 32;
          float* o = full ? on + m0 * P + col : edge;
          const index_t ld = full ? P : 32;
          const index_t l0 = pf_lines * (pr - pr0) / (pr1 - pr0), l1 = pf_lines * (pr + 1 - pr0) / (pr1 - pr0);
          kernel_2x2(a, bcol(pr), KS, o, ld, false, pf, l1 - l0);
          if (b || inline_act)
            bias_act_block(o, ld, b ? b + m0 : nullptr, rows, cols, inline_act && pn ? pn + m0 * P + col : nullptr,
                           P, use_lo, lo, use_hi, hi);
          if (!full)
            for (index_t r = 0; r < rows; ++r) std::memcpy(on + (m0 + r) * P + col, edge + r * 32, sizeof(float) * cols);
        }
      };
      if (a_outer) {
        const index_t nt0 = NT * t / nth;
        if (!bad && !pack_b(bp + nt0 * KS * kStep, xn, K, P, P, nt0, NT * (t + 1) / nth)) bad = true;
        team_barrier();
        const index_t mb1 = items * (t + 1) / nth;
        for (index_t mb = items * t / nth; mb < mb1 && !bad; ++mb) {
          if (!pack_a(mine, w, M, K, K, 2 * mb, 2 * mb + 2)) {
            bad = true;
            break;
          }
          // the next block's filters (32 rows of K, contiguous), read from memory
          // in a network pass: fetched while the tile unit works on this block,
          // where they fit in L2 beside the packed columns and this block (cold
          // filters: 384->1536 at 14x14 1.13-1.22 -> 1.0 ms on 1 thread, 768->3072
          // at 7x7 1.55-1.67 -> 1.33; with 1 MB of packed columns or more they
          // evicted them, 1536->384 at 14x14 5-10% slower)
          const bool fits = (NT + 2) * KS * kStep * index_t(sizeof(u16)) + 32 * K * index_t(sizeof(float)) <=
                            (index_t(1) << 20);
          const index_t nrows = fits && mb + 1 < mb1 ? std::min<index_t>(32, M - (mb + 1) * 32) : 0;
          const index_t next_lines = (nrows * K * index_t(sizeof(float)) + 63) / 64;
          LinePrefetch next(w + std::min(M, (mb + 1) * 32) * K, 0, next_lines, 1);
          sweep(mb, mine, 0, pairs, [&](index_t pr) { return bp + 2 * pr * KS * kStep; }, &next, next_lines);
          if (act && !inline_act) epilogue(on, pn, nullptr, mb * 32, std::min(M, mb * 32 + 32), 0, P, P, false, act);
        }
        team_barrier();  // the packed columns are rewritten for the next image
      } else {
        // Each chunk packed just before its products, while they are in L2.
        for (index_t it = items * t / nth; it < items * (t + 1) / nth && !bad; ++it) {
          const index_t pr0 = it * kChunkPairs, pr1 = std::min(pairs, pr0 + kChunkPairs);
          if (!pack_b(mine, xn, K, P, P, 2 * pr0, 2 * pr1)) {
            bad = true;
            break;
          }
          // the next chunk's columns of x, rows P apart: fetched into L2 while the
          // tile unit works on this chunk (hardware prefetchers do not follow runs
          // of 512 bytes from hundreds of rows)
          const index_t nc0 = std::min(P, (pr1 + (it + 1 < items * (t + 1) / nth ? 0 : P)) * 32);
          const index_t ncn = std::max<index_t>(0, std::min<index_t>(P - nc0, kChunkPairs * 32));
          const index_t lines_row = (ncn * index_t(sizeof(float)) + 63) / 64, lines = K * lines_row;
          LinePrefetch next(xn + nc0, P * index_t(sizeof(float)), lines_row, ncn > 0 ? K : 0);
          for (index_t mb = 0; mb < mblocks; ++mb)
            sweep(mb, ap + 2 * mb * KS * kStep, pr0, pr1,
                  [&](index_t pr) { return mine + 2 * (pr - pr0) * KS * kStep; }, &next,
                  lines * (mb + 1) / mblocks - lines * mb / mblocks);
          if (act && !inline_act) epilogue(on, pn, nullptr, 0, M, pr0 * 32, std::min(P, pr1 * 32), P, false, act);
        }
      }
    }
    if (tiles) release_tiles();
  });
  return !bad;
}

bool amx_strided_input_gradient(float* dx, const float* dout, const float* w, const Conv2dShape& s,
                                const ConvAct* act, const float* ref) {
  const auto& p = s.p;
  if (!(s.KH == 1 && s.KW == 1 && is_patch_conv(s))) return false;
  if (!amx_enabled() || !takes_tiles(s.C, s.F, s.OH * s.OW, s.N)) return false;
  float* ds = scratch<float>(ScratchSlot::conv_amx_sub, std::size_t(s.N * s.C * s.OH * s.OW));
  // the unstrided layer's input gradient: the forward of dout with w transposed
  const Conv2dShape t = conv2d_shape(s.N, s.F, s.OH, s.OW, s.C, 1, 1, Conv2dParams{});
  if (!amx_forward(ds, dout, w, nullptr, t, true, false, nullptr, nullptr)) return false;
  const index_t planes = s.N * s.C, HW = s.H * s.W;
  subsample(ds, dx, planes, s.H, s.W, s.OH, s.OW, p.stride_h, p.stride_w, true);
  if (act)
    parallel_for_nt(grain_threads(double(planes) * double(HW), double(1 << 17), planes), planes, [&](index_t i) {
      apply_act(dx + i * HW, const_cast<float*>(ref) + i * HW, HW, *act);
    });
  return true;
}

#else

bool amx_forward(float*, const float*, const float*, const float*, const Conv2dShape&, bool, bool, const ConvAct*,
                 float*) {
  return false;
}

bool amx_strided_input_gradient(float*, const float*, const float*, const Conv2dShape&, const ConvAct*,
                                const float*) {
  return false;
}

#endif

}  // namespace conv_detail
}  // namespace gradvis
