// conv2d as an implicit gemm: the column matrix (im2col) is never materialized.
// The gemm's B operand is packed straight from the image into the micro-kernel's
// NR-wide k-major slivers (conv2d_pack.h), one K block (<= kKC rows) and one chunk
// of output positions at a time, so it is written once and read from L2 by the
// micro-kernel.
//   forward          out[f][pos]  = sum_k W[f][k] cols[k][pos]       (A = W, packed once per call)
//   backward weight  dW[f][k] = sum_pos dout[f][pos] cols[k][pos]   (K of the gemm = positions)
// (The input gradient of a stride-1 layer is a forward pass with flipped weights;
// see conv2d.cpp.) Output positions run over the whole batch, so small feature
// maps fill a chunk with several images and every thread gets work at batch 1.
// Few input channels per group (the RGB layer): the column matrix is read in place
// from a zero-padded, column-phase-split copy of the image (see Split) instead of
// being gathered per tap: the forward's B tiles and the weight gradient's A rows.
//
// Threads: one OpenMP region per call. Forward items are (position chunk, block of
// filters), statically partitioned; the weights are packed by all threads first.
// Backward weight splits the positions across threads (per-thread partial dW,
// summed in thread order: deterministic for a thread count) when there are many,
// else the dW tiles.
#include "cpu/conv2d_implicit.h"
#include "cpu/conv_amx.h"

#include <cstring>
#include <initializer_list>
#include <limits>

#include "cpu/conv_epilogue.h"

#include "cpu/conv2d_pack.h"
#include "cpu/weight_cache.h"

namespace gradvis {
namespace conv_detail {
namespace {

// PackedId kinds of the weights these kernels keep for keyed calls (weight_cache.h)
constexpr int kPackedTiled = 1, kPackedRows = 2;

// o[t] = max(o[t] + bv, 0) for t < len (src[t] for o[t] on the right when given),
// as std::max gives it (NaN and -0 kept: x86's max returns its second operand
// then). In vectors: the compiler left the scalar loop scalar, and after each
// AVX2 tile its 4-byte loads of the tile's 32-byte stores stalled (a 1x1 layer
// with relu took 10x the one without: 16->64 at 112x112, 4.9 against 0.50 ms).
template <class T>
inline void bias_relu(T* o, const T* src, index_t len, T bv) {
  index_t t = 0;
#ifdef GV_HAVE_X86
  if constexpr (std::is_same_v<T, float>) {
    const __m128 z = _mm_setzero_ps(), b = _mm_set1_ps(bv);
    for (; t + 4 <= len; t += 4) _mm_storeu_ps(o + t, _mm_max_ps(z, _mm_add_ps(_mm_loadu_ps(src + t), b)));
    for (; t < len; ++t) _mm_store_ss(o + t, _mm_max_ss(z, _mm_add_ss(_mm_load_ss(src + t), b)));
  } else {
    const __m128d z = _mm_setzero_pd(), b = _mm_set1_pd(bv);
    for (; t + 2 <= len; t += 2) _mm_storeu_pd(o + t, _mm_max_pd(z, _mm_add_pd(_mm_loadu_pd(src + t), b)));
    for (; t < len; ++t) _mm_store_sd(o + t, _mm_max_sd(z, _mm_add_sd(_mm_load_sd(src + t), b)));
  }
#endif
  for (; t < len; ++t) o[t] = std::max(src[t] + bv, T(0));   // other CPUs (x86 is done above)
}

// p[t][j] += bv[j] for `rows` rows of NR values, then max(., 0) with relu: the
// values bias_relu (or the plain bias add) gives, on a panel of filters per row.
template <class T, int NR>
inline void panel_bias_relu(T* p, index_t rows, const T* bv, bool relu) {
  for (index_t t = 0; t < rows; ++t) {
    T* o = p + t * NR;
#ifdef GV_HAVE_X86
    if constexpr (std::is_same_v<T, float>) {
      static_assert(NR % 4 == 0);
      const __m128 z = _mm_setzero_ps();
      for (int j = 0; j < NR; j += 4) {
        const __m128 v = _mm_add_ps(_mm_loadu_ps(o + j), _mm_loadu_ps(bv + j));
        _mm_storeu_ps(o + j, relu ? _mm_max_ps(z, v) : v);
      }
    } else {
      static_assert(NR % 2 == 0);
      const __m128d z = _mm_setzero_pd();
      for (int j = 0; j < NR; j += 2) {
        const __m128d v = _mm_add_pd(_mm_loadu_pd(o + j), _mm_loadu_pd(bv + j));
        _mm_storeu_pd(o + j, relu ? _mm_max_pd(z, v) : v);
      }
    }
#else
    for (int j = 0; j < NR; ++j) {
      const T v = o[j] + bv[j];
      o[j] = relu ? std::max(v, T(0)) : v;
    }
#endif
  }
}

// transpose_out_avx512 or _avx2 at the CPU's level (callers check it is one of them).
inline void transpose_out(float* d, index_t ldd, const float* src, index_t lds, index_t rows, index_t cols,
                          const OutEpilogue& e) {
#ifdef GV_HAVE_X86
  if (cpu_level() == SimdLevel::avx512) return transpose_out_avx512(d, ldd, src, lds, rows, cols, e);
  transpose_out_avx2(d, ldd, src, lds, rows, cols, e);
#else
  (void)d, (void)ldd, (void)src, (void)lds, (void)rows, (void)cols, (void)e;
#endif
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

// The ukernel_boffs for the first mr rows of an MR x NR tile whose A sliver is
// packed MR rows high, if any (AVX2 float).
template <class T, int MR, int NR>
ukernel_boffs_fn<T> boffs_rows_ukernel(index_t mr) {
  using namespace gemm_detail;
  if constexpr (std::is_same_v<T, float> && MR == kMR256 && NR == kNR256_f32)
    return ukernel_boffs_avx2_f32_rows(int(mr));
  else
    return (void)mr, nullptr;
}

// Thread t's share of the split image (build_split) out of nth: with fewer images
// than threads, the rows [t, t+1) * Hp / nth of every channel, the rows its own
// positions read (the positions go to the threads in order), so that each core
// reads what it wrote: split by channels instead, a 224x224 RGB layer at batch 1
// read two thirds of its split image from the other core's cache and ran 1.24x
// faster on 2 threads than on 1 (1.87x at 448x448, where neither cache holds it).
template <class T>
void build_split_share(T* xs, const T* x, const Conv2dShape& s, const Split& sp, index_t t, index_t nth) {
  if (s.N >= nth) return build_split(xs, x, s, sp, s.N * s.C * sp.Hp * t / nth, s.N * s.C * sp.Hp * (t + 1) / nth);
  for (index_t nc = 0; nc < s.N * s.C; ++nc)
    build_split(xs, x, s, sp, nc * sp.Hp + sp.Hp * t / nth, nc * sp.Hp + sp.Hp * (t + 1) / nth);
}

// out (N,F,OH,OW) = conv(x, W) + b for the shape s, where W[f][k] (per group) is
// w's row f, or, when `flipped`, the transposed and flipped filters of the conv
// whose backward-input this is: W[c][(f,kh,kw)] = w[f][c][KH-1-kh][KW-1-kw].
template <class T, int MR, int NR>
void forward_tiled(ukernel_fn<T> pack_kern, ukernel_rows_fn<T> rows_kern, T* out, const T* x, const T* w,
                      const T* b, const Conv2dShape& s, bool flipped, bool relu, const ConvAct* act, T* pre) {
  const Geometry g = geometry(s);
  const index_t M = g.Fg, K = g.CK, Q = s.N * g.OHW;
  const index_t mslivers = (M + MR - 1) / MR, Mpad = mslivers * MR;
  const KBlocks kb = kblocks(K);
  const index_t kc_max = kb.max_size();
  const std::vector<Tap> taps = make_taps(s, g.Cg);

  const bool split = use_split(s, g);   // B gathered from the split image (few input channels)
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
  index_t mblocks = chunks >= nt ? 1 : std::min(mslivers, (nt + chunks - 1) / chunks);
  // Few chunks of whole tiles rarely split evenly (a 14x14 map at batch 1 is 7
  // tiles: 4 for one thread, 3 for the other, the last one mostly empty): then
  // every thread takes all the positions for its share of the filters, when that
  // leaves the busiest thread fewer tiles to compute.
  // Counted in sliver x tile products; where B is gathered from the split image
  // (the RGB layers), packing a tile costs about one more, paid by every thread
  // that takes the tile: ignoring it, MobileNetV2's 3->32 layer at 224 (4 slivers)
  // split its filters and ran 1.23x faster on 2 threads than on 1.
  if (nt > 1 && chunks < 8 * nt && mslivers >= 2 * nt) {
    const index_t pack = split ? 1 : 0;
    auto tiles_of = [&](index_t c) { return (std::min(P, Q - c * P) + NR - 1) / NR; };
    index_t pos_cost = 0, all_tiles = 0;
    for (index_t t = 0; t < nt; ++t) {
      index_t tiles = 0;
      for (index_t c = chunks * t / nt; c < chunks * (t + 1) / nt; ++c) tiles += tiles_of(c);
      pos_cost = std::max(pos_cost, tiles * ((mslivers + mblocks - 1) / mblocks + pack));
    }
    for (index_t c = 0; c < chunks; ++c) all_tiles += tiles_of(c);
    if (mblocks == 1 && all_tiles * ((mslivers + nt - 1) / nt + pack) < pos_cost) mblocks = nt;
  }
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

  // Weights known immutable (a WeightKey): their packed slivers kept across calls
  // (packing ResNet-50's weights was about 1% of its forward pass).
  std::shared_ptr<const PackedEntry> kept;
  std::shared_ptr<PackedEntry> fresh;
  if (!direct)
    if (const std::uint64_t token = weight_token(w)) {
      const PackedId id{kPackedTiled, {index_t(sizeof(T)), M, K, g.G, flipped ? g.KK : 0, MR}};
      kept = packed_find(id, token, w);
      if (!kept) fresh = packed_reserve(id, token, w, std::size_t(g.G * Mpad * K) * sizeof(T));
    }
  T* ap = direct  ? nullptr
          : kept  ? static_cast<T*>(kept->data)
          : fresh ? static_cast<T*>(fresh->data)
                  : scratch<T>(ScratchSlot::conv_pack_a, std::size_t(g.G * Mpad * K));
  const index_t a_slivers = direct || kept ? 0 : g.G * kb.n * mslivers;
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

  const Split sp = split ? split_geometry(s) : Split{};
  const std::vector<index_t> roff = split ? split_roff(s, sp, g.Cg) : std::vector<index_t>();
  T* xs = split ? scratch<T>(ScratchSlot::conv_cols, std::size_t(s.N * sp.SI)) : nullptr;
  const ukernel_boffs_fn<T> boffs_kern = boffs_ukernel<T, MR, NR>();
  const bool inplace = split && !direct && boffs_kern;
  // A 1x1 layer with few filters (2-8 slivers), at AVX-512 float: the micro-kernel
  // reads x's whole tiles in place (row k at taps[k].xoff); only tiles at a chunk's
  // end or across two images are packed. Packing B costs about one pass of the
  // kernel over it, which few slivers do not repay (1 thread, in MobileNetV2's
  // pass: 32->16 at 112x112 0.234-0.253 -> 0.142-0.164 ms, 96->24 at 56x56
  // 0.225-0.246 -> 0.164-0.189, 144->24 0.285-0.300 -> 0.214-0.234; alone, 128->64
  // at 56 0.525 -> 0.478, at 28x28 (24 of 25 tiles in place) 192->32 0.113 ->
  // 0.097, 240->40 0.162 -> 0.147). With 12 slivers (16->96, 24->144) it measured
  // no faster; at AVX2 (16-position tiles, 6-row slivers) no faster or up to 15%
  // slower.
  const bool pw_inplace = sizeof(T) == 4 && NR == 32 && mslivers <= 8 && g.pointwise && !split && !direct &&
                          boffs_kern;
  // Its tiles' rows are HW apart, a line each k-step that the hardware prefetchers
  // do not follow: the kernel prefetches them 16 k-steps ahead (1 thread, alone:
  // 96->24 at 56x56 0.153 -> 0.147 ms, 128->64 at 56x56 0.61 -> 0.53-0.55, 32->16
  // at 112x112 2-4%, 28x28 within 1%; MobileNetV2's passes 0.4-1% faster). The
  // same prefetches made AVX2's 16-position tiles no faster in place than packed
  // (144->24 at 56x56 8% slower).
  ukernel_boffs_fn<T> pw_kern = boffs_kern;
  if constexpr (sizeof(T) == 4 && NR == 32 && MR == gemm_detail::kMR512)
    pw_kern = gemm_detail::ukernel_boffs_avx512_f32_ahead;
  // (a tile read in place: whole, in one image; the others, at the chunk's end or
  // across two images, are packed)
  // (r: the tile's first position in its image)
  auto in_place = [&](index_t pc, index_t jr, index_t r) {
    return pw_inplace && pc - jr >= NR && r + NR <= g.OHW;
  };
  std::vector<index_t> pwoff(pw_inplace ? std::size_t(K) : 0);
  for (index_t k = 0; k < index_t(pwoff.size()); ++k) pwoff[std::size_t(k)] = taps[std::size_t(k)].xoff;
  // Small maps whose size is not a multiple of NR (4x4, 7x7...) would put most tiles
  // across two images: those chunks are computed into a contiguous panel (M x P)
  // and copied out once, instead of scattering every tile after every K block.
  const bool panel = g.OHW % NR != 0 && g.OHW < 8 * NR;
  // The clamp each tile gets as it is stored: relu's (0, infinity), or a clamp
  // activation's whose input is not kept (outside panels), which then needs no
  // pass over each item's outputs (2% of MobileNetV2's forward pass)
  const bool clamp_act = act && act->kind == ConvAct::clamp && !pre && !panel;
  const T lohi[2] = {clamp_act ? T(act->lo) : T(0), clamp_act ? T(act->hi) : std::numeric_limits<T>::infinity()};
  if (clamp_act) act = nullptr;
  const T* clamp = relu || clamp_act ? lohi : nullptr;
  // The packed slivers read through the same kernel (row k at k * NR), so that
  // full tiles add the bias and apply the clamp as they are stored: a separate
  // pass over each tile cost 5-10% at K <= 96 (64->256 at 56x56, 1 thread). The
  // bias is added after the last K block's sums, as `finish` adds it to the other
  // tiles (partial ones, those across two images, direct and panel runs): which
  // positions fall in which kind of tile depends on the chunks, and so on the
  // batch and the thread count; a sum started from the bias rounded differently.
  //
  // A residual Add (act add or add_relu, its residual at pre) is made as each tile
  // is finished, while the tile is in L1: full tiles in the micro-kernel's store,
  // the residual's lines prefetched as the products begin, the others in finish.
  // A pass over each item's outputs read them back, and the residual cold. Six
  // layers' arrays in turn, 1 thread, with Add and ReLU: 64->256 at 56x56
  // 1.26-1.27 -> 1.10-1.12 ms (1.02 with the ReLU alone), 128->512 at 28x28
  // 1.12-1.16 -> 1.04-1.05; ResNet-50's passes 0.7% (forward) and 1.7% (forward +
  // input gradient) faster. Panels keep the pass. The same bits: (sum + bias) +
  // residual, then the ReLU.
  const bool res_tiles = act && (act->kind == ConvAct::add || act->kind == ConvAct::add_relu) && pre && !panel &&
                         !direct && boffs_kern;
  // (lohi is ReLU's [0, infinity) here: an Add is not a clamp activation)
  const T* res_clamp = res_tiles && act->kind == ConvAct::add_relu ? lohi : nullptr;
  // A last sliver of fewer than MR filters (16, 32 or 64 filters in AVX2's 6-row
  // slivers) is stored by a kernel of its own rows, full tiles straight into out:
  // computed as MR rows into a tile and copied out with the bias and clamp, the
  // copy alone was 13% of a 3->32 stem's time, and the stem runs 8% faster.
  const bool rows_tail = !direct && !panel && M % MR != 0 && boffs_rows_ukernel<T, MR, NR>(M % MR);
  std::vector<index_t> poff((b || clamp || res_tiles || rows_tail) && boffs_kern && !direct ? std::size_t(kc_max)
                                                                                             : 0);
  for (index_t k = 0; k < index_t(poff.size()); ++k) poff[std::size_t(k)] = k * NR;

  // o[0, len) of output channel f: + bias, relu or the clamp, or the residual Add
  // of res_tiles (other activations: at the end of the item).
  auto finish = [&](T* o, index_t len, index_t f) {
    const T bv = b ? b[f] : T(0);
    if (res_tiles) {
      if (b)
        for (index_t t = 0; t < len; ++t) o[t] = o[t] + bv;
      mask_inplace(o, pre + (o - out), len, *act);
    } else if (clamp_act) {
      for (index_t t = 0; t < len; ++t) {
        const T v = o[t] + bv, u = v < lohi[0] ? lohi[0] : v;
        o[t] = u > lohi[1] ? lohi[1] : u;
      }
    } else if (relu && !act) {
      bias_relu(o, o, len, bv);
    } else {
      for (index_t t = 0; t < len; ++t) o[t] = o[t] + bv;
    }
  };

  // Positions [q0, q0 + pc), filter block mb of mblocks.
  auto run = [&](index_t q0, index_t pc, index_t mb, T* bp, T* cp, T* tile) {
    const index_t is0 = mslivers * mb / mblocks, is1 = mslivers * (mb + 1) / mblocks;
    const index_t f0 = std::min(M, is0 * MR), f1 = std::min(M, is1 * MR);
    // Each tile's image n, first position r in it and, where B is read in place
    // from the split image, its offset there (-1: packed): the divisions once per
    // tile instead of per sliver, two or three each, were 17% of a 3->32 stem's
    // time at 224x224 (27-step products, 1 thread).
    const index_t ntiles = (pc + NR - 1) / NR;
    std::vector<index_t> tpos(std::size_t(3 * ntiles));
    for (index_t t = 0; t < ntiles; ++t) {
      const index_t q = q0 + t * NR, n = q / g.OHW, r = q % g.OHW, ow = r % s.OW;
      tpos[std::size_t(3 * t)] = n, tpos[std::size_t(3 * t + 1)] = r;
      tpos[std::size_t(3 * t + 2)] =
          inplace && pc - t * NR >= NR && ow + NR <= s.OW ? n * sp.SI + (r / s.OW) * s.p.stride_h * sp.SH + ow : -1;
    }
    for (index_t gi = 0; gi < g.G; ++gi) {
      const T* xg = x + gi * g.Cg * g.HW;
      const T* ag = ap + gi * Mpad * K;
      const index_t row0 = gi * M;  // first output channel of the group
      for (index_t bk = 0; bk < kb.n; ++bk) {
        const index_t k0 = kb.begin(bk), kc = kb.begin(bk + 1) - k0;
        if (split)
          pack_b_split<T, NR>(bp, xs + gi * g.Cg * sp.SC, s, sp, roff.data() + k0, kc, q0, pc, inplace);
        else if (pw_inplace)
          for (index_t jr = 0; jr < pc; jr += NR) {
            if (!in_place(pc, jr, tpos[std::size_t(3 * (jr / NR) + 1)]))
              pack_b_pointwise<T, NR>(bp + jr * kc, xg, s.C * g.HW, g.HW, taps.data() + k0, kc, q0 + jr,
                                      std::min<index_t>(NR, pc - jr));
          }
        else if (g.pointwise)
          pack_b_pointwise<T, NR>(bp, xg, s.C * g.HW, g.HW, taps.data() + k0, kc, q0, pc);
        else
          pack_b_cols<T, NR>(bp, xg, s.C * g.HW, s, taps.data() + k0, kc, q0, pc);
        const T beta = bk == 0 ? T(0) : T(1);
        for (index_t is = is0; is < is1; ++is) {
          const index_t m = is * MR, mr = std::min<index_t>(MR, M - m);
          const T* a = direct ? arow(gi, m) : ag + k0 * Mpad + m * kc;
          const ukernel_boffs_fn<T> rem = rows_tail && mr < MR ? boffs_rows_ukernel<T, MR, NR>(mr) : nullptr;
          // C tile (MR x NR at c, row stride ldc) from B's tile at jr: in place in
          // the split image when the tile lies in one output row, else packed.
          // fuse (a full tile into the output): bias and clamp may be applied by the
          // micro-kernel; returns whether they were.
          auto kern = [&](index_t jr, T* c, index_t ldc, T beta_c, bool fuse = false) {
            const T* bs = bp + jr * kc;
            if (direct) return rows_kern(kc, a, lda, mr, koff.data() + k0, bs, c, ldc, T(1), beta_c), false;
            const index_t* tp = &tpos[std::size_t(3 * (jr / NR))];
            const bool end = fuse && bk == kb.n - 1;   // the tile's last K block, stored into out
            const T* bias = end && b ? b + row0 + m : nullptr;
            const T* cl = end ? (res_tiles ? res_clamp : clamp) : nullptr;
            const T* ref = end && res_tiles ? pre + (c - out) : nullptr;
            if (in_place(pc, jr, tp[1])) {
              const T* src = xg + tp[0] * s.C * g.HW + tp[1];
              (fuse && rem ? rem : pw_kern)(kc, a, src, pwoff.data() + k0, c, ldc, bias, cl, beta_c, ref);
              return fuse;
            }
            if (tp[2] >= 0) {
              const T* src = xs + gi * g.Cg * sp.SC + tp[2];
              (fuse && rem ? rem : boffs_kern)(kc, a, src, roff.data() + k0, c, ldc, bias, cl, beta_c, ref);
              return fuse;
            }
            if (fuse && !poff.empty()) {  // (its extra offset load costs 2-3% where nothing is fused)
              if (bias || cl || ref || rem)
                (rem ? rem : boffs_kern)(kc, a, bs, poff.data(), c, ldc, bias, cl, beta_c, ref);
              else
                pack_kern(kc, a, bs, c, ldc, T(1), beta_c);
              return true;
            }
            return pack_kern(kc, a, bs, c, ldc, T(1), beta_c), false;
          };
          for (index_t jr = 0; jr < pc; jr += NR) {
            const index_t nr = std::min<index_t>(NR, pc - jr), q = q0 + jr;
            const index_t n = tpos[std::size_t(3 * (jr / NR))], r = tpos[std::size_t(3 * (jr / NR) + 1)];
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
            // Bias and clamp are applied to each tile after the last K block, while it is in L1.
            const bool last = bk == kb.n - 1 && (b || clamp || res_tiles);
            if ((mr == MR || rem) && nr == NR && r + NR <= g.OHW) {
              T* c = out + (n * s.F + row0 + m) * g.OHW + r;
              if (kern(jr, c, g.OHW, beta, true)) continue;
              if (last)
                for (index_t i = 0; i < mr; ++i) finish(c + i * g.OHW, NR, row0 + m + i);
              continue;
            }
            kern(jr, tile, NR, T(0));
            if (r + nr <= g.OHW) {   // one image: each filter's run of nr positions
              for (index_t i = 0; i < mr; ++i) {
                T* d = out + (n * s.F + row0 + m + i) * g.OHW + r;
                const T* t = tile + i * NR;
                if (beta == T(0))
                  for (index_t j = 0; j < nr; ++j) d[j] = t[j];
                else
                  for (index_t j = 0; j < nr; ++j) d[j] += t[j];
                if (last) finish(d, nr, row0 + m + i);
              }
              continue;
            }
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
            if (relu && !act) {
              bias_relu(o, src, len, bv);
            } else {
              for (index_t t = 0; t < len; ++t) o[t] = src[t] + bv;
              if (act) apply_act(o, pre ? pre + (o - out) : nullptr, len, *act);
            }
          }
          q += len;
        }
      } else if (act && !res_tiles) {
        // The item's outputs (in L2): the activation over runs of up to P positions
        // (per tile it cost more than a separate pass).
        const bool ref = pre && ref_values(act->kind);
        for (index_t q = q0; q < q0 + pc;) {
          const index_t n = q / g.OHW, r = q % g.OHW, len = std::min(g.OHW - r, q0 + pc - q);
          const index_t ahead = ref ? runs_ahead(len, sizeof(T)) : 0;
          for (index_t f = f0; f < f1; ++f) {
            T* o = out + (n * s.F + row0 + f) * g.OHW + r;
            if (ref && f + ahead < f1) prefetch_run(pre + (o - out) + ahead * g.OHW, len);
            apply_act(o, pre ? pre + (o - out) : nullptr, len, *act);
          }
          q += len;
        }
      }
    }
  };

  auto item = [&](index_t id, T* bp, T* cp, T* tile) {
    const index_t chunk = id % chunks, mb = id / chunks;  // threads take whole filter blocks
    run(chunk * P, std::min(P, Q - chunk * P), mb, bp, cp, tile);
  };

  // Batches of RGB images: each thread takes whole images, and builds an image's
  // split copy just before its products, which then read it from L2. Built for
  // the whole batch first (9.6 MB at 224, batch 16), the copy was read back from
  // L3 (its build 27% of MobileNetV3's stem at batch 16, the gathers from it 14%).
  const bool per_image = split && s.N > 1 && (s.N % nt == 0 || s.N >= 4 * nt);
  ErrorTrap trap;
  team_run(nt, [&](index_t t, index_t nth) {
    trap.run([&] {
      for (index_t i = a_slivers * t / nth; i < a_slivers * (t + 1) / nth; ++i) pack_a(i);
      if (split && !per_image) build_split_share(xs, x, s, sp, t, nth);
    });
    if (!direct || split) team_barrier();
    trap.run([&] {
      T* bp = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(kc_max * P));
      T* cp = panel ? scratch<T>(ScratchSlot::conv_panel, std::size_t(Mpad * P)) : nullptr;
      alignas(64) T tile[MR * NR];
      if (per_image) {
        for (index_t n = s.N * t / nth; n < s.N * (t + 1) / nth; ++n) {
          build_split(xs, x, s, sp, n * s.C * sp.Hp, (n + 1) * s.C * sp.Hp);
          for (index_t q = n * g.OHW; q < (n + 1) * g.OHW; q += P)
            for (index_t mb = 0; mb < mblocks; ++mb) run(q, std::min(P, (n + 1) * g.OHW - q), mb, bp, cp, tile);
        }
        return;
      }
      for (index_t i = items * t / nth; i < items * (t + 1) / nth; ++i) item(i, bp, cp, tile);
    });
  });
  trap.rethrow();
  if (fresh) packed_put(std::move(fresh));
}

// dw (F, CK) = sum over positions of dout[f][pos] * cols[k][pos], per group.
template <class T, int MR, int NR>
void backward_weight_tiled(ukernel_fn<T> kern, T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
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
        trap.run([&] { build_split_share(xs, x, s, sp, t, nth); });
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

// A 1x1, stride-1, unpadded, ungrouped convolution computed transposed:
//   out^T (positions x O) = x^T (positions x K) B (K x O),  B[k][o] = W[o][k]
// The positions of all images are the gemm's rows, in tiles of MR, and the
// filters its columns, in vectors of NR. forward_tiled puts the positions in the
// vectors instead, where 7x7 and 14x14 maps at batch 1 (49 and 196 positions)
// leave 23% and 12.5% of a 32-wide tile's products empty; 7-row tiles leave none.
// Row r = n*Q + q of A is x[n][.][q], its k-th element Q apart: read in place by
// `ikern`, or packed once per call by the team into MR-row slivers for `pkern`
// (given for AVX2's float tiles, used with 5 slivers or more for 6-row tiles, 3
// for 5-row ones; see below). In place, each k of a tile broadcasts MR values
// from a new cache line: at AVX2 the products of 7x7 maps ran 15-25% slower that
// way, forward and input gradient (1152->192 to 2048->512, AMD EPYC, 1 thread;
// no change at 14x14 and 28x28, before the in-place kernel prefetched its rows);
// at AVX-512 packing ran 0-10% slower. B is packed per item, one NR-filter sliver and K
// block at a time: the rows of w transposed, or, when `flipped` (the input
// gradient: w is (K, O, 1, 1)), segments of w's rows copied. An item is (sliver,
// block of row tiles); its products build up in a panel (rows x NR) that is then
// written out transposed, with bias, relu or act.
//
// Other ungrouped layers (any kernel, stride, dilation and padding; unflipped)
// take the same path on a zero-padded copy of x, xp (N, C, Hp, Wp): row r =
// (n, oh, ow) of A starts at n C Hp Wp + oh sh Wp + ow sw and its element k =
// (c, kh, kw) lies kh dh Wp + kw dw + c Hp Wp beyond (koff[k] over all of K), so
// that a 7x7 output (49 positions) fills seven 7-row tiles where forward_tiled's
// 32-wide ones leave 23% empty.
template <class T, int MR, int NR>
void pointwise_rows_forward(ukernel_fn<T> pkern, ukernel_offs_fn<T> ikern, T* out, const T* x, const T* w,
                            const T* b, const Conv2dShape& s, bool flipped, bool relu, const ConvAct* act, T* pre) {
  const auto& pp = s.p;
  const bool general = !(s.KH == 1 && s.KW == 1 && pp.stride_h == 1 && pp.stride_w == 1 && pp.pad_top == 0 &&
                         pp.pad_bottom == 0 && pp.pad_left == 0 && pp.pad_right == 0);
  const index_t K = s.C * s.KH * s.KW, O = s.F, Q = s.OH * s.OW, R = s.N * Q;
  const index_t Hp = s.H + pp.pad_top + pp.pad_bottom, Wp = s.W + pp.pad_left + pp.pad_right;
  const KBlocks kb = kblocks(K);
  const index_t kc_max = kb.max_size();
  const index_t slivers = (O + NR - 1) / NR, rtiles = (R + MR - 1) / MR;
  // Packing A reads it once more and writes it: with 2 slivers (A read twice in
  // place) it cost 7% (144->32 and 96->32 at 28x28), with 3 it broke even. AVX2's
  // 6-row tiles read in place by a kernel that prefetches A's rows 8 k-steps ahead
  // (ukernel_offs_avx2_f32_ahead) pay up to 4 slivers (1 thread, alone: 384->64 at
  // 14x14 0.110 -> 0.099 ms, at 20x20 0.224 -> 0.207, 192->64 at 14x14 0.053 ->
  // 0.051; from 5 slivers up within 2% either way, 7 slivers 1.5% slower), and
  // with fewer than 3 it runs faster than the same kernel without the prefetches
  // (384->32 and 672->32 at 14x14 5-6%); its 5-row tiles (7x7 maps) ran 5-13%
  // slower in place at 4-10 slivers.
  // AVX2's packed float tiles spread the prefetches of the next kept weights over
  // their k-steps (ukernel's kPfLines): MobileNetV2's forward pass 1% faster at AVX2,
  // RegNetY-400MF's 1.5% (interleaved, first quartile), the same bits.
  gemm_detail::ukernel_lines_fn<T> lines_kern = nullptr;
  if constexpr (sizeof(T) == 4 && NR == gemm_detail::kNR256_f32) {
    if (MR == gemm_detail::kMR256) lines_kern = gemm_detail::ukernel_avx2_f32_lines;
    if (MR == gemm_detail::kMR256r5) lines_kern = gemm_detail::ukernel_avx2_f32_5_lines;
  }
  const index_t pack_from = MR == gemm_detail::kMR256 ? 5 : 3;
  if (slivers < pack_from) pkern = nullptr;
  const index_t nt = team_size();
  // Row blocks of at most kMaxRows rows keep an item's panel in L2; more of them
  // while the items do not share out evenly over the team and are fewer than four
  // a thread. (Until four a thread whatever the count, 6 slivers on 2 threads
  // were 12 items, each packing its sliver again: 1152->192 at 7x7 ran 1.44x
  // faster on 2 threads than on 1; and 1 thread split 3 slivers in two.)
  constexpr index_t kMaxRows = 512;
  index_t rblocks = std::max<index_t>(1, (rtiles * MR + kMaxRows - 1) / kMaxRows);
  while (nt > 1 && rblocks < rtiles && (slivers * rblocks) % nt != 0 && slivers * rblocks < 4 * nt) ++rblocks;
  const index_t items = slivers * rblocks, block_rows = (rtiles + rblocks - 1) / rblocks * MR;
  // In place, row r of A (image r / Q, position r % Q) starts at roff[r] (computed
  // once rather than by two divisions per row in every tile of every K block), its
  // k-th element at koff[k].
  std::vector<index_t> koff, roff;
  // Packed, A's tile t: ap[(t K + k) MR + i] = x[n][k][q] for row r = t MR + i =
  // n Q + q (rows past R zero); a K block of it starts at ap + (t K + k0) MR.
  T* ap = nullptr;
  T* xp = nullptr;
  if (general) {
    pkern = nullptr;
    xp = scratch<T>(ScratchSlot::conv_cols, std::size_t(s.N * s.C * Hp * Wp));
    koff.resize(static_cast<std::size_t>(K));
    for (index_t k = 0; k < K; ++k) {
      const index_t c = k / (s.KH * s.KW), kh = k / s.KW % s.KH, kw = k % s.KW;
      koff[std::size_t(k)] = c * Hp * Wp + kh * pp.dilation_h * Wp + kw * pp.dilation_w;
    }
    roff.resize(static_cast<std::size_t>(R));
    for (index_t r = 0; r < R; ++r) {
      const index_t n = r / Q, oh = r % Q / s.OW, ow = r % s.OW;
      roff[std::size_t(r)] = n * s.C * Hp * Wp + oh * pp.stride_h * Wp + ow * pp.stride_w;
    }
  } else if (pkern) {
    ap = scratch<T>(ScratchSlot::conv_pack_a, std::size_t(rtiles * K * MR));
  } else {
    koff.resize(static_cast<std::size_t>(kc_max));
    for (index_t k = 0; k < kc_max; ++k) koff[std::size_t(k)] = k * Q;
    roff.resize(static_cast<std::size_t>(R));
    for (index_t r = 0; r < R; ++r) roff[std::size_t(r)] = (r / Q) * K * Q + r % Q;
  }
  // Whole tiles of one image are packed up to kPackRun at a time, k outer: row k
  // of x read once for all of them, each tile's MR values written where its
  // previous k's ended. Tile by tile (k inner), each k read MR values from a
  // new line of x: 0-3% slower at AVX2 (1 thread, 14x14 and 7x7 layers with 10
  // or more slivers, alone).
  constexpr index_t kPackRun = 32;
  auto pack_a = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1;) {
      const index_t r0 = t * MR, n0 = r0 / Q, q0 = r0 % Q;
      T* d = ap + t * K * MR;
      if (r0 + MR <= R && q0 + MR <= Q) {   // one image's consecutive positions: tiles [t, te)
        const index_t te = std::min({t1, t + kPackRun, std::min(R, (n0 + 1) * Q) / MR}), ts = K * MR;
        const T* src = x + n0 * K * Q + q0;
        for (index_t k = 0; k < K; ++k, src += Q, d += MR)
          for (index_t u = 0; u < te - t; ++u) std::memcpy(d + u * ts, src + u * MR, sizeof(T) * MR);
        t = te;
        continue;
      }
      for (int i = 0; i < MR; ++i) {
        const index_t r = r0 + i;
        const T* src = r < R ? x + (r / Q) * K * Q + r % Q : nullptr;
        for (index_t k = 0; k < K; ++k) d[k * MR + i] = src ? src[k * Q] : T(0);
      }
      ++t;
    }
  };

  // A thread's items run in groups of consecutive items; each K block is packed
  // for the whole group at once. Flipped, a group's packed slivers (kc x NR
  // each) and panels (rows x NR each) fill up to half of L2, so each row of w
  // is read in one run as wide as the group: one sliver at a time read 128
  // bytes per row, rows O apart, each on a new page for the prefetchers (768 <-
  // 3072 at 7x7, 1 thread: 2.8-3.1 ms, 2.1-2.3 in groups). Unflipped, the
  // transposes read runs of kc along w's rows either way: groups of one item.
  // Weights known immutable (a WeightKey): every sliver's K blocks packed by the
  // team before the products, kept across calls; sliver js's block at k0 is
  // kw + (js K + k0) NR (the transposes were 1-2% of ResNet-50's forward pass).
  std::shared_ptr<const PackedEntry> kept;
  std::shared_ptr<PackedEntry> fresh;
  if (const std::uint64_t token = weight_token(w)) {
    const PackedId id{kPackedRows, {index_t(sizeof(T)), O, K, NR, flipped ? 1 : 0, 0}};
    kept = packed_find(id, token, w);
    if (!kept) fresh = packed_reserve(id, token, w, std::size_t(slivers * K * NR) * sizeof(T));
  }
  T* const kw = kept ? static_cast<T*>(kept->data) : fresh ? static_cast<T*>(fresh->data) : nullptr;
  const index_t per_item = kc_max * NR + block_rows * NR;
  const index_t group = flipped ? std::max<index_t>(1, (index_t(1) << 20) / index_t(sizeof(T)) / per_item) : 1;

  // bp[k][j] for the slivers js0..js1 (each kc_max x NR, zero-padded columns)
  auto pack = [&](T* bp, index_t js0, index_t js1, index_t k0, index_t kc) {
    const index_t ob = std::min(O, js1 * NR);
    if (flipped) {
      for (index_t k = 0; k < kc; ++k) {
        const T* src = w + (k0 + k) * O;
        for (index_t js = js0; js < js1; ++js) {
          const index_t o0 = js * NR, nr = std::min<index_t>(NR, O - o0);
          std::memcpy(bp + (js - js0) * kc_max * NR + k * NR, src + o0, std::size_t(nr) * sizeof(T));
        }
      }
    } else {
      // bp[k][j] = w[o0 + j][k0 + k], 64 values of k at a time: that part of
      // bp (8 KB) stays in L1 while each group of 4 rows writes its columns
      for (index_t js = js0; js < js1; ++js) {
        const index_t o0 = js * NR, nr = std::min<index_t>(NR, O - o0);
        T* b0 = bp + (js - js0) * kc_max * NR;
        for (index_t k = 0; k < kc; k += 64)
          transpose_block(b0 + k * NR, NR, w + o0 * K + k0 + k, K, nr, std::min<index_t>(64, kc - k));
      }
    }
    if (ob < js1 * NR) {  // the last sliver of the layer is partial
      T* b0 = bp + (js1 - 1 - js0) * kc_max * NR;
      const index_t nr = ob - (js1 - 1) * NR;
      for (index_t k = 0; k < kc; ++k) std::fill(b0 + k * NR + nr, b0 + (k + 1) * NR, T(0));
    }
  };

  auto rows_of = [&](index_t id, index_t& r0, index_t& r1) {
    const index_t rb = id % rblocks;
    const index_t t0 = rtiles * rb / rblocks, t1 = rtiles * (rb + 1) / rblocks;
    r0 = t0 * MR, r1 = std::min(R, t1 * MR);
  };

  // The epilogues transpose_out applies (the others: on the panel, or on the output once written)
  const bool out_epi = std::is_same_v<T, float> && cpu_level() != SimdLevel::scalar &&
                       (!act || (!pre && (act->kind == ConvAct::clamp || act->kind == ConvAct::relu)) ||
                        act->kind == ConvAct::add || act->kind == ConvAct::add_relu);

  // items [i0, i1): their slivers packed into bp, products into panels cp;
  // `next`: the item this thread runs after them (-1: none); `packed`: the
  // sliver bp holds whole (one K block, one sliver a group), else -1.
  auto run_group = [&](index_t i0, index_t i1, T* bp, T* cp, index_t next, index_t& packed) {
    const index_t js0 = i0 / rblocks, js1 = (i1 - 1) / rblocks + 1;
    for (index_t bk = 0; bk < kb.n; ++bk) {
      const index_t k0 = kb.begin(bk), kc = kb.begin(bk + 1) - k0;
      if (!kw && !(packed == js0 && js1 == js0 + 1)) pack(bp, js0, js1, k0, kc);   // a row block of the same sliver
      packed = kb.n == 1 && js1 == js0 + 1 ? js0 : -1;
      // While these products run, the weights the next pack transposes (this
      // sliver's next K block, or the thread's next item's first) come toward L2:
      // the packs read w from memory in short runs, a pass apart, and waited for
      // it (192->1152 at 7x7: a tenth of the layer in the transposes' loads).
      // Not for `flipped` packs, whose groups already fill half of L2 (no faster).
      // Kept, the next block is its nkc rows of NR values.
      const T* nsrc = nullptr;
      index_t nrows = 0, nkc = 0, nstride = K;
      if (!flipped || kw) {
        const index_t nbk = bk + 1 < kb.n ? bk + 1 : 0, nid = bk + 1 < kb.n ? i0 : next;
        if (nid >= 0 && (nbk > 0 || nid / rblocks != js0)) {
          const index_t no0 = nid / rblocks * NR;
          nsrc = w + no0 * K + kb.begin(nbk);
          nrows = std::min<index_t>(NR, O - no0), nkc = kb.begin(nbk + 1) - kb.begin(nbk);
          if (kw) nsrc = kw + (nid / rblocks * K + kb.begin(nbk)) * NR, nrows = nkc, nkc = NR, nstride = NR;
        }
      }
      const T beta = bk == 0 ? T(0) : T(1);
      const bool spread = pkern && lines_kern && kw && nsrc;
      for (index_t id = i0; id < i1; ++id) {
        index_t r0, r1;
        rows_of(id, r0, r1);
        const T* bs = kw ? kw + (id / rblocks * K + k0) * NR : bp + (id / rblocks - js0) * kc_max * NR;
        T* panel = cp + (id - i0) * block_rows * NR;
        const index_t tiles = (r1 - r0 + MR - 1) / MR;
        for (index_t r = r0, t = 0; r < r1; r += MR, ++t) {
          const index_t q0 = nrows * t / tiles, q1 = nrows * (t + 1) / tiles;
          if (spread)
            lines_kern(kc, ap + (r / MR * K + k0) * MR, bs, panel + (r - r0) * NR, NR, T(1), beta, nsrc + q0 * nstride,
                       (q1 - q0) * nkc * index_t(sizeof(T)) / 64);
          else if (pkern)
            pkern(kc, ap + (r / MR * K + k0) * MR, bs, panel + (r - r0) * NR, NR, T(1), beta);
          else if (general)
            ikern(kc, xp, roff.data() + r, std::min<index_t>(MR, r1 - r), koff.data() + k0, bs,
                  panel + (r - r0) * NR, NR, T(1), beta);
          else
            ikern(kc, x + k0 * Q, roff.data() + r, std::min<index_t>(MR, r1 - r), koff.data(), bs,
                    panel + (r - r0) * NR, NR, T(1), beta);
          if (!spread)
            for (index_t q = q0; q < q1; ++q) prefetch_run(nsrc + q * nstride, nkc);
        }
      }
    }
    for (index_t id = i0; id < i1; ++id) {
      index_t r0, r1;
      rows_of(id, r0, r1);
      T* panel = cp + (id - i0) * block_rows * NR;
      const index_t o0 = id / rblocks * NR, nr = std::min<index_t>(NR, O - o0);
      // panel[t][j] -> dst[j*Q + t] per image: its rows [q, q + len) of each filter
      auto write = [&](T* dst) {
        for (index_t r = r0; r < r1;) {
          const index_t n = r / Q, q = r % Q, len = std::min(Q - q, r1 - r);
          transpose_block(dst + (n * O + o0) * Q + q, Q, panel + (r - r0) * NR, NR, len, nr);
          r += len;
        }
      };
      const bool ref = act && reads_ref(act->kind);
      // Float at AVX2 and up: the bias, a ReLU or clamp whose input is not kept,
      // and a residual sum, applied to the transposed registers as they are
      // written (transpose_out): their passes over the panel in L1 were 3% of
      // MobileNetV2's 64->384 and 96->576 layers at 14x14 (AVX-512, 1 thread).
      if constexpr (std::is_same_v<T, float>) {
        if (out_epi) {
          OutEpilogue e;
          T bv[NR];
          if (b || (relu && !act)) {
            for (index_t j = 0; j < NR; ++j) bv[j] = b && j < nr ? b[o0 + j] : T(0);
            e.bias = bv;
          }
          if ((relu && !act) || (act && (act->kind == ConvAct::clamp || act->kind == ConvAct::relu))) {
            const bool range = act && act->kind == ConvAct::clamp;
            e.clamp = true;
            e.lo = range ? float(act->lo) : 0.f;
            e.hi = range ? float(act->hi) : std::numeric_limits<float>::infinity();
          }
          for (index_t r = r0; r < r1;) {
            const index_t n = r / Q, q = r % Q, len = std::min(Q - q, r1 - r);
            T* dst = out + (n * O + o0) * Q + q;
            if (ref) e.ref = pre + (dst - out), e.ref_relu = act->kind == ConvAct::add_relu;
            transpose_out(dst, Q, panel + (r - r0) * NR, NR, len, nr, e);
            r += len;
          }
          continue;
        }
      }
      // Bias and activation on the panel, a filter per lane, before it is
      // written out: one pass, in L1, where per output row they were two more
      // passes over the output (scalar bias, then the activation).
      if (ref && b) {
        T bv[NR];
        for (index_t j = 0; j < NR; ++j) bv[j] = j < nr ? b[o0 + j] : T(0);
        panel_bias_relu<T, NR>(panel, r1 - r0, bv, false);
      }
      if (!ref) {
        const index_t n = (r1 - r0) * NR;
        if (b || (relu && !act)) {
          T bv[NR];
          for (index_t j = 0; j < NR; ++j) bv[j] = b && j < nr ? b[o0 + j] : T(0);
          panel_bias_relu<T, NR>(panel, r1 - r0, bv, relu && !act);
        }
        if (act) {
          if (pre) write(pre);
          apply_act(panel, static_cast<T*>(nullptr), n, *act);
        }
        write(out);
        continue;
      }
      // A backward mask (an input gradient: no bias, no relu) or a residual sum
      // reads its reference at the output's own positions: applied to each
      // filter's run once written.
      write(out);
      for (index_t r = r0; r < r1;) {
        const index_t n = r / Q, q = r % Q, len = std::min(Q - q, r1 - r), ahead = runs_ahead(len, sizeof(T));
        for (index_t j = 0; j < nr; ++j) {
          T* d = out + (n * O + o0 + j) * Q + q;
          if (j + ahead < nr && ref_values(act->kind)) prefetch_run(pre + (d - out) + ahead * Q, len);
          apply_act(d, pre + (d - out), len, *act);
        }
        r += len;
      }
    }
  };

  ErrorTrap trap;
  // xp's planes: zero borders, x's rows inside
  auto pad_planes = [&](index_t p0, index_t p1) {
    for (index_t pl = p0; pl < p1; ++pl) {
      T* d = xp + pl * Hp * Wp;
      const T* src = x + pl * s.H * s.W;
      std::fill(d, d + pp.pad_top * Wp, T(0));
      for (index_t h = 0; h < s.H; ++h) {
        T* row = d + (h + pp.pad_top) * Wp;
        std::fill(row, row + pp.pad_left, T(0));
        std::memcpy(row + pp.pad_left, src + h * s.W, std::size_t(s.W) * sizeof(T));
        std::fill(row + pp.pad_left + s.W, row + Wp, T(0));
      }
      std::fill(d + (pp.pad_top + s.H) * Wp, d + Hp * Wp, T(0));
    }
  };
  team_run(nt, [&](index_t t, index_t nth) {
    if (general) pad_planes(s.N * s.C * t / nth, s.N * s.C * (t + 1) / nth);
    if (pkern) pack_a(rtiles * t / nth, rtiles * (t + 1) / nth);
    if (fresh)
      for (index_t i = slivers * kb.n * t / nth; i < slivers * kb.n * (t + 1) / nth; ++i) {
        const index_t js = i / kb.n, k0 = kb.begin(i % kb.n);
        pack(kw + (js * K + k0) * NR, js, js + 1, k0, kb.begin(i % kb.n + 1) - k0);
      }
    if (pkern || fresh || general) team_barrier();
    trap.run([&] {
      const index_t i0 = items * t / nth, i1 = items * (t + 1) / nth;
      const index_t g = std::min(group, std::max<index_t>(1, i1 - i0));
      T* bp = scratch<T>(ScratchSlot::conv_pack_b, std::size_t((g / rblocks + 2) * kc_max * NR));
      T* cp = scratch<T>(ScratchSlot::conv_panel, std::size_t(g * block_rows * NR));
      index_t packed = -1;
      for (index_t i = i0; i < i1; i += g)
        run_group(i, std::min(i1, i + g), bp, cp, i + g < i1 ? i + g : -1, packed);
    });
  });
  trap.rethrow();
  if (fresh) packed_put(std::move(fresh));
}

// Fraction of a gemm's tile products that are not padding: n rows or columns in
// tiles of `tile`.
inline double tile_use(index_t n, index_t tile) { return double(n) / double((n + tile - 1) / tile * tile); }

// The rows of a tile of pointwise_rows_forward for R positions (0: that path
// does not pay), given the level's tiles: forward_tiled's (MR x NR, positions in
// NR), and the row counts the transposed path may use. Taken when its tiles are
// at least 5% fuller, net of packing the weights: copied rows (flipped) about
// 1/R of the product, transposed rows 6/R, or 12/R for weights larger than L2
// (2 MB), which come from memory in short runs; forward_tiled reads those in
// place, in long ones (weights from memory, 1 thread: ResNet-50's 512->2048 at
// 7x7 68.8 GF/s in place against 66.6 packed, ConvNeXt's 768->3072 71.7
// against 68.0), on an Intel Xeon. AMD's Zen 4 hides those short runs (8 layers'
// weights in turn, as in a network, 1 thread: 512->2048 1.43 -> 1.23 ms,
// 768->3072 3.18 -> 2.67 transposed; 2048->512 1.30 -> 1.27): 6/R there.
// `small_avx2`: AVX2's 6 x 16 float tiles, where on maps of up to
// 64 positions (7x7 at batch 1: 49 of the 64 columns of forward_tiled's tiles
// real, 49 of 54 rows here) the transposed path ran 5-20% faster alone whatever
// the weights' size (1 thread: 512->2048 1.57-1.60 -> 1.42 ms, 960->160 199-200
// -> 161-172 us; 2 threads: 2048->512 722-795 -> 626-632 us), packing included:
// there the products take twice AVX-512's time and packing weighs half as much.
// With the positions packed too (then 3 slivers or more), up to 400 positions it
// pays wherever its tiles are fuller, forward and input gradient (AMD EPYC, 1
// thread: 14x14 5-12% faster, 128->512 0.271 -> 0.253 ms, 1024->256 1.08 ->
// 0.99; 18x18 256->128 0.229 -> 0.206; 12x12 and 16x16, where both fill their
// tiles, and 28x28 at equal fill, no faster or slower).
// `general`: other ungrouped forward layers too, on the padded copy of x
// (AVX-512 float; 1 thread, six weight arrays in turn: ResNet-50's 512@14 3x3
// stride 2 3.09 -> 2.81 ms, 2.41 with its packed weights kept; 256@28 2.65 ->
// 2.26; ConvNeXt-T's 2x2 stride-2 384->768 1.53 -> 1.40; a 5x5 64->96 on 7x7
// 0.274 -> 0.170; on these layers the same bits as forward_tiled's, whose sums
// run in the same order).
inline int pointwise_rows_choice(const Conv2dShape& s, bool flipped, int MR, int NR,
                                 std::initializer_list<int> row_tiles, bool small_avx2 = false,
                                 bool general = false) {
  const auto& p = s.p;
  const bool pointwise = s.KH == 1 && s.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
                         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
  if (p.groups != 1 || !(pointwise || (general && !flipped))) return 0;
  const index_t R = s.N * s.OH * s.OW;
  const double now = tile_use(R, NR) * tile_use(s.F, MR);
  int best = 0;
  double best_use = 0;
  for (int mr : row_tiles) {
    const double use = tile_use(R, mr) * tile_use(s.F, NR);
    if (use > best_use) best_use = use, best = mr;
  }
  if (small_avx2 && R <= 400) return best_use > now + 0.03 ? best : 0;
  const bool long_runs = !cpu_is_amd() && double(s.F) * double(s.C) > double(1 << 19);
  const double pack = (flipped ? 1.0 : long_runs ? 12.0 : 6.0) / double(R);
  return best_use - pack > now + 0.05 ? best : 0;
}

}  // namespace

template <class T>
void implicit_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool flipped, bool relu,
                      const ConvAct* act, T* pre) {
  if constexpr (sizeof(T) == 4)
    if (conv_algo() != ConvAlgo::direct && amx_forward(out, x, w, b, s, flipped, relu, act, pre)) return;
  gemm_detail::with_ukernel<T>([&](ukernel_fn<T> kern, ukernel_rows_fn<T> rows, auto MR, auto NR) {
    constexpr int mr = decltype(MR)::value, nr = decltype(NR)::value;
    // AVX-512 float may also use 7-row tiles (49 and 196 positions)
    constexpr bool r7 = sizeof(T) == 4 && mr == gemm_detail::kMR512;
    // AVX2 float may also use 5-row tiles where they are clearly fuller: 49
    // positions in 10 tiles (98%) instead of 9 of 6 rows (91%); 1 thread, 7x7:
    // 320->1280 0.458 -> 0.443-0.453 ms, 960->160 0.178 -> 0.173-0.174, input
    // gradients 1-3% faster, on 2 threads 3-7%
    constexpr bool r5 = sizeof(T) == 4 && mr == gemm_detail::kMR256;
    if (cpu_level() != SimdLevel::scalar) {
      int rows = r7   ? pointwise_rows_choice(s, flipped, mr, nr, {mr, gemm_detail::kMR512r7}, false, true)
                 : r5 ? pointwise_rows_choice(s, flipped, mr, nr, {mr, gemm_detail::kMR256r5}, true)
                      : pointwise_rows_choice(s, flipped, mr, nr, {mr});
      const index_t R = s.N * s.OH * s.OW;
      // On maps over 400 positions, the transposed path's fuller tiles chose it
      // for 16 and 32 filters; with forward_tiled's own kernel for a last sliver
      // under 6 rows, products of up to 48 terms are faster there (AVX2, 1 thread:
      // 32->16 at 112x112 0.232 -> 0.210 ms, 16->16 0.147 -> 0.107, 48->32 at 56x56
      // 0.129 -> 0.121; their input gradients 32->16 0.319 -> 0.240, 16->16 0.149
      // -> 0.094), where each tile's few k-steps weigh little beside the transposes.
      // From 64 terms it keeps the transposed path (64->16 at 56x56 0.085 against
      // 0.106, 192->32 at 28x28 0.109 against 0.126; 16->96's input gradient at
      // 112x112 0.61 against 0.86).
      if (r5 && R > 400 && s.C * s.KH * s.KW <= 48) rows = 0;
      if (r5 && rows == gemm_detail::kMR256r5 && tile_use(R, gemm_detail::kMR256r5) < tile_use(R, mr) + 0.02)
        rows = mr;
      // A packed at AVX2 float (see pointwise_rows_forward), in place elsewhere
      // (AVX-512: packing ran 0-10% slower at 7x7 and 14x14)
      constexpr bool pack = sizeof(T) == 4 && mr == gemm_detail::kMR256;
      if (rows == mr) {
        ukernel_offs_fn<T> ikern = offs_ukernel<T, mr, nr>();
        if constexpr (pack) ikern = gemm_detail::ukernel_offs_avx2_f32_ahead;
        return pointwise_rows_forward<T, mr, nr>(pack ? kern : nullptr, ikern, out, x, w, b, s, flipped, relu, act,
                                                 pre);
      }
      if constexpr (r7)
        if (rows == gemm_detail::kMR512r7)
          return pointwise_rows_forward<T, gemm_detail::kMR512r7, nr>(
              nullptr, gemm_detail::ukernel_offs_avx512_f32_7, out, x, w, b, s, flipped, relu, act, pre);
      if constexpr (r5)
        if (rows == gemm_detail::kMR256r5)
          return pointwise_rows_forward<T, gemm_detail::kMR256r5, nr>(gemm_detail::ukernel_avx2_f32_5,
                                                                      gemm_detail::ukernel_offs_avx2_f32_5, out, x,
                                                                      w, b, s, flipped, relu, act, pre);
    }
    if constexpr (sizeof(T) == 4) {
      // At most 16 output columns (4x4 maps at batch 1): one-vector tiles, A in place.
      if (decltype(NR)::value == gemm_detail::kNR512_f32 && cpu_level() == SimdLevel::avx512 &&
          s.N * s.OH * s.OW <= gemm_detail::kNR512n_f32)
        return forward_tiled<T, gemm_detail::kMR512n, gemm_detail::kNR512n_f32>(
            nullptr, gemm_detail::ukernel_rows_avx512_f32_narrow, out, x, w, b, s, flipped, relu, act, pre);
    }
    forward_tiled<T, decltype(MR)::value, decltype(NR)::value>(kern, rows, out, x, w, b, s, flipped, relu, act, pre);
  });
}

template <class T>
void implicit_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  gemm_detail::with_ukernel<T>([&](ukernel_fn<T> kern, ukernel_rows_fn<T>, auto MR, auto NR) {
    backward_weight_tiled<T, decltype(MR)::value, decltype(NR)::value>(kern, dw, db, dout, x, s);
  });
}

template void implicit_forward<float>(float*, const float*, const float*, const float*, const Conv2dShape&, bool,
                                      bool, const ConvAct*, float*);
template void implicit_forward<double>(double*, const double*, const double*, const double*, const Conv2dShape&,
                                       bool, bool, const ConvAct*, double*);
template void implicit_backward_weight<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void implicit_backward_weight<double>(double*, double*, const double*, const double*, const Conv2dShape&);

}  // namespace conv_detail
}  // namespace gradvis

namespace gradvis {

namespace {
// The 1x1 layer's output per image from which its depthwise layer is fused
// (conv2d_pw_dw_takes), 2 MiB: each pair alone, AMD EPYC (Zen 3, AVX2), first
// quartiles: 16->96 at 112x112 (4.8 MB, MobileNetV2) 1.02 -> 0.73-0.75 ms on 1
// thread, 0.56 -> 0.43 on 2; 16->64 (3.2 MB, MobileNetV3-L) 0.68 -> 0.53 and 0.36
// -> 0.28; 24->144 at 56x56 (1.8 MB) 0.44 -> 0.43 on 1 thread, and MobileNetV2's
// pass no faster beyond noise with it; 32->192 at 28x28 0.18 -> 0.20. On the
// smaller maps the unfused layers read their input from L2 anyway, and rows of
// 56 positions leave an eighth of the product's 16-wide tiles empty.
constexpr double kPwDwMinBytes = double(2 << 20);

// The activations a layer of the pair applies as it writes: ReLU and clamps in
// the tiles' and the depthwise rows' stores, SiLU and HardSwish on each row after
// them (their layers' own SIMD bodies, whose bits do not depend on where a run
// starts or ends).
bool pair_act(const ConvAct& a) {
  return a.kind == ConvAct::none || a.kind == ConvAct::relu || a.kind == ConvAct::clamp ||
         a.kind == ConvAct::silu || a.kind == ConvAct::hardswish;
}
bool row_act(const ConvAct& a) { return a.kind == ConvAct::silu || a.kind == ConvAct::hardswish; }
}  // namespace

template <class T>
bool conv2d_pw_dw_takes(const Conv2dShape& s1, const ConvAct& a1, const Conv2dShape& s2, const ConvAct& a2) {
  const Conv2dParams &p = s1.p, &q = s2.p;
  constexpr index_t K = 3;
  const bool one = s1.KH == 1 && s1.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
                   p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0 && p.dilation_h == 1 &&
                   p.dilation_w == 1 && p.groups == 1 && s1.C <= gemm_detail::kKC;
  const bool dw = s2.N == s1.N && s2.C == s1.F && s2.H == s1.OH && s2.W == s1.OW && s2.F == s2.C &&
                  q.groups == s2.C && s2.KH == K && s2.KW == K && q.stride_h == 2 && q.stride_w == 2 &&
                  q.dilation_h == 1 && q.dilation_w == 1 && q.pad_top < K &&
                  q.pad_left < K && q.pad_bottom < K && q.pad_right < K && s2.OH > 0 && s2.OW > 0;
  return sizeof(T) == 4 && one && dw && pair_act(a1) && pair_act(a2) && s1.N > 0 && !amx_enabled() &&
         double(s1.F) * double(s1.OH) * double(s1.OW) * double(sizeof(T)) >= kPwDwMinBytes;
}

template <class T>
void conv2d_pw_dw_forward_cpu(T* out, const T* x, const T* w1, const T* b1, const ConvAct& a1, const T* w2,
                              const T* b2, const ConvAct& a2, const Conv2dShape& s1, const Conv2dShape& s2) {
  using namespace conv_detail;
  if (!conv2d_pw_dw_takes<T>(s1, a1, s2, a2))
    throw std::logic_error("conv2d_pw_dw_forward_cpu: a pair it does not take");
  const DwKernels<T>& dk = dw_kernels<T>();
  gemm_detail::with_ukernel<T>([&](ukernel_fn<T>, ukernel_rows_fn<T>, auto MR_, auto NR_) {
    constexpr int MR = decltype(MR_)::value, NR = decltype(NR_)::value;
    const ukernel_boffs_fn<T> kern = boffs_ukernel<T, MR, NR>();
    constexpr index_t K = 3, S = 2;
    const index_t N = s1.N, C = s1.C, M = s1.F, H = s2.H, W = s2.W;
    const index_t pt = s2.p.pad_top, pl = s2.p.pad_left, OH = s2.OH, OW = s2.OW;
    // Each thread keeps the K rows of the 1x1 layer's output that an output row
    // reads (row ih in slot ih % K: Mpad channels of RS values, the product's full
    // tiles, then room for the depthwise rows' last vectors), each computed from
    // one input row packed in column-phase order (C rows of XS). A thread's first
    // output row computes its K rows; each next one the S rows after them.
    const index_t Mpad = (M + MR - 1) / MR * MR, XS = (W + NR - 1) / NR * NR, RS = XS + 64;
    // A: w1 in MR-row slivers, k-major, the rows past M zero; the bias likewise
    std::vector<T> ap(std::size_t(Mpad * C), T(0)), bp(std::size_t(Mpad), T(0));
    for (index_t m = 0; m < M; ++m) {
      for (index_t c = 0; c < C; ++c) ap[std::size_t((m / MR) * MR * C + c * MR + m % MR)] = w1[m * C + c];
      if (b1) bp[std::size_t(m)] = b1[m];
    }
    std::vector<index_t> boff(static_cast<std::size_t>(C));
    for (index_t c = 0; c < C; ++c) boff[std::size_t(c)] = c * XS;
    // the 1x1 layer's clamp as its tiles apply it (ReLU: [0, infinity)), the
    // depthwise layer's as its stores do
    const T lohi[2] = {a1.kind == ConvAct::clamp ? T(a1.lo) : T(0),
                       a1.kind == ConvAct::clamp ? T(a1.hi) : std::numeric_limits<T>::infinity()};
    const T* clamp1 = a1.kind == ConvAct::relu || a1.kind == ConvAct::clamp ? lohi : nullptr;
    DwClamp<T> clamp2;
    if (a2.kind == ConvAct::relu) clamp2.kind = DwClamp<T>::low;
    if (a2.kind == ConvAct::clamp) clamp2 = {DwClamp<T>::range, T(a2.lo), T(a2.hi)};
    const index_t p0[2] = {0, W - W / 2};   // where each column phase starts in a row
    const index_t rows_all = N * OH;
    const double work = double(N) * double(M) * (double(H * W) * double(C) + double(OH * OW) * double(K * K));
    const int nt = grain_threads(work, double(1 << 19), rows_all);
    ErrorTrap trap;
    parallel_for_nt(nt, nt, [&](index_t t) { trap.run([&] {
      const index_t r0 = rows_all * t / nt, r1 = rows_all * (t + 1) / nt;
      T* ring = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(K * Mpad * RS + C * XS + RS));
      T* xb = ring + K * Mpad * RS;
      T* zrow = xb + C * XS;   // a row of the padding
      std::memset(zrow, 0, sizeof(T) * std::size_t(RS));
      index_t cur = -1, next = 0;   // the image, and its next row of the 1x1 output to compute
      const T* rows[K];
      index_t rstr[K];
      for (index_t r = r0; r < r1; ++r) {
        const index_t n = r / OH, oh = r % OH, ih0 = oh * S - pt;
        if (n != cur) cur = n, next = ih0;
        for (index_t ih = std::max(next, ih0); ih < ih0 + K; ++ih) {
          if (ih < 0 || ih >= H) continue;
          dk.ring_pack(xb, XS, x + (n * C * H + ih) * W, H * W, C, W);
          T* c0 = ring + ih % K * Mpad * RS;
          for (index_t is = 0; is < Mpad / MR; ++is)
            for (index_t q = 0; q < XS; q += NR)
              kern(C, ap.data() + is * MR * C, xb + q, boff.data(), c0 + is * MR * RS + q, RS,
                   b1 ? bp.data() + is * MR : nullptr, clamp1, T(0), nullptr);
          if (row_act(a1))
            for (index_t m = 0; m < M; ++m) apply_act(c0 + m * RS, static_cast<T*>(nullptr), W, a1);
        }
        next = std::max(next, ih0 + K);
        for (index_t kh = 0; kh < K; ++kh) {
          const index_t ih = ih0 + kh;
          const bool pad = ih < 0 || ih >= H;
          rows[kh] = pad ? zrow : ring + ih % K * Mpad * RS;
          rstr[kh] = pad ? 0 : RS;
        }
        T* o = out + (n * M * OH + oh) * OW;
        dk.ring_row(o, OH * OW, rows, rstr, p0, w2, b2, M, W, OW, pl, clamp2);
        if (row_act(a2))
          for (index_t m = 0; m < M; ++m) apply_act(o + m * OH * OW, static_cast<T*>(nullptr), OW, a2);
      }
    }); });
    trap.rethrow();
  });
}

namespace {
// The depthwise layer's input per image from which the 1x1 layer after it is
// fused (conv2d_dw_pw_takes), 1 MiB.
constexpr double kDwPwMinBytes = double(1 << 20);
}  // namespace

template <class T>
bool conv2d_dw_pw_takes(const Conv2dShape& s1, const ConvAct& a1, const Conv2dShape& s2, const ConvAct& a2) {
  const Conv2dParams &p = s1.p, &q = s2.p;
  constexpr index_t K = 3;
  // (one channel, one group: a plain convolution, whose kernels sum differently)
  const bool dw = s1.F == s1.C && p.groups == s1.C && s1.C > 1 && s1.KH == K && s1.KW == K && p.stride_h == 1 &&
                  p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 && p.pad_top < K && p.pad_bottom < K &&
                  p.pad_left < K && p.pad_right < K && s1.OH > 0 && s1.OW > 0;
  const bool one = s2.KH == 1 && s2.KW == 1 && q.stride_h == 1 && q.stride_w == 1 && q.pad_top == 0 &&
                   q.pad_bottom == 0 && q.pad_left == 0 && q.pad_right == 0 && q.dilation_h == 1 &&
                   q.dilation_w == 1 && q.groups == 1 && s2.N == s1.N && s2.C == s1.F && s2.H == s1.OH &&
                   s2.W == s1.OW && s2.C <= gemm_detail::kKC && s2.F > 0;
  return sizeof(T) == 4 && dw && one && pair_act(a1) && pair_act(a2) && s1.N > 0 && !amx_enabled() &&
         double(s1.C) * double(s1.H) * double(s1.W) * double(sizeof(T)) >= kDwPwMinBytes;
}

template <class T>
void conv2d_dw_pw_forward_cpu(T* out, const T* x, const T* w1, const T* b1, const ConvAct& a1, const T* w2,
                              const T* b2, const ConvAct& a2, const Conv2dShape& s1, const Conv2dShape& s2) {
  using namespace conv_detail;
  if (!conv2d_dw_pw_takes<T>(s1, a1, s2, a2))
    throw std::logic_error("conv2d_dw_pw_forward_cpu: a pair it does not take");
  const DwKernels<T>& dk = dw_kernels<T>();
  gemm_detail::with_ukernel<T>([&](ukernel_fn<T>, ukernel_rows_fn<T>, auto MR_, auto NR_) {
    constexpr int MR = decltype(MR_)::value, NR = decltype(NR_)::value;
    const ukernel_boffs_fn<T> kern = boffs_ukernel<T, MR, NR>();
    constexpr index_t K = 3;
    const index_t N = s1.N, C = s1.C, H = s1.H, W = s1.W, OH = s1.OH, OW = s1.OW, M = s2.F, OHW = OH * OW;
    const index_t pt = s1.p.pad_top, pl = s1.p.pad_left;
    // Per two output rows, the depthwise layer's rows of all C channels into d
    // (channel c's at c * 2 XS and c * 2 XS + XS: whole tiles of the product, the
    // columns past OW left zero), then the 1x1 layer's tiles from d in place,
    // stored straight into out where whole (into `tile` and copied where they would
    // pass the row's end). The depthwise rows read x in place: the last vector of a
    // row reads up to lanes - 1 values past it, within the image except at the last
    // channel's last row, so the last channel's 4 rows come from a copy with room
    // after them. A thread's last row of an image, alone, is computed with a row of
    // zeros after it into d's second row, which the product leaves.
    const index_t mslivers = (M + MR - 1) / MR, Mpad = mslivers * MR, XS = (OW + NR - 1) / NR * NR;
    const index_t RS = W + 64;
    std::vector<T> ap(std::size_t(Mpad * C), T(0)), bp(std::size_t(Mpad), T(0));
    for (index_t m = 0; m < M; ++m) {
      for (index_t c = 0; c < C; ++c) ap[std::size_t((m / MR) * MR * C + c * MR + m % MR)] = w2[m * C + c];
      if (b2) bp[std::size_t(m)] = b2[m];
    }
    std::vector<index_t> boff(static_cast<std::size_t>(C));
    for (index_t c = 0; c < C; ++c) boff[std::size_t(c)] = c * 2 * XS;
    const ukernel_boffs_fn<T> rem = M % MR ? boffs_rows_ukernel<T, MR, NR>(M % MR) : nullptr;
    DwClamp<T> clamp1;
    if (a1.kind == ConvAct::relu) clamp1.kind = DwClamp<T>::low;
    if (a1.kind == ConvAct::clamp) clamp1 = {DwClamp<T>::range, T(a1.lo), T(a1.hi)};
    const T lohi[2] = {a2.kind == ConvAct::clamp ? T(a2.lo) : T(0),
                       a2.kind == ConvAct::clamp ? T(a2.hi) : std::numeric_limits<T>::infinity()};
    const T* clamp2 = a2.kind == ConvAct::relu || a2.kind == ConvAct::clamp ? lohi : nullptr;
    const index_t rows_all = N * OH;
    const double work = double(N) * double(C) * double(OHW) * (double(M) + double(K * K));
    const int nt = grain_threads(work, double(1 << 19), rows_all);
    ErrorTrap trap;
    parallel_for_nt(nt, nt, [&](index_t t) { trap.run([&] {
      const index_t r0 = rows_all * t / nt, r1 = rows_all * (t + 1) / nt;
      T* d = scratch<T>(ScratchSlot::conv_pack_b, std::size_t(2 * C * XS + (K + 2) * RS));
      T* last = d + 2 * C * XS;   // the last channel's rows, then a row of the padding
      T* zrow = last + (K + 1) * RS;
      std::memset(d, 0, sizeof(T) * std::size_t(2 * C * XS + (K + 2) * RS));
      alignas(64) T tile[MR * NR];
      const T* rows[K + 1];
      const T* lrows[K + 1];
      index_t rstr[K + 1];
      for (index_t r = r0; r < r1;) {
        const index_t n = r / OH, oh = r % OH, nr = oh + 1 < OH && r + 1 < r1 ? 2 : 1;
        const T* xn = x + n * C * H * W;
        for (index_t kh = 0; kh < K + 1; ++kh) {
          const index_t ih = oh - pt + kh;
          const bool pad = ih < 0 || ih >= H || (kh == K && nr == 1);
          rows[kh] = pad ? zrow : xn + ih * W;
          rstr[kh] = pad ? 0 : H * W;
          lrows[kh] = pad ? zrow : last + kh * RS;
          if (!pad) std::memcpy(last + kh * RS, xn + ((C - 1) * H + ih) * W, sizeof(T) * std::size_t(W));
        }
        if (C > 1) dk.ring_rows2(d, 2 * XS, XS, rows, rstr, w1, b1, C - 1, W, OW, pl, clamp1);
        dk.ring_rows2(d + (C - 1) * 2 * XS, 2 * XS, XS, lrows, rstr, w1 + (C - 1) * K * K, b1 ? b1 + C - 1 : nullptr,
                      1, W, OW, pl, clamp1);
        if (row_act(a1))
          for (index_t c = 0; c < C; ++c)
            for (index_t j = 0; j < nr; ++j) apply_act(d + (2 * c + j) * XS, static_cast<T*>(nullptr), OW, a1);
        T* o = out + n * M * OHW + oh * OW;
        for (index_t is = 0; is < mslivers; ++is) {
          const index_t m0 = is * MR, mr = std::min<index_t>(MR, M - m0);
          const T* a = ap.data() + is * MR * C;
          const T* bias = b2 ? bp.data() + m0 : nullptr;
          for (index_t j = 0; j < nr; ++j)
            for (index_t q = 0; q < OW; q += NR) {
              T* c = o + m0 * OHW + j * OW + q;
              const T* bq = d + j * XS + q;
              if (q + NR <= OW && (mr == MR || rem)) {
                (mr == MR ? kern : rem)(C, a, bq, boff.data(), c, OHW, bias, clamp2, T(0), nullptr);
                continue;
              }
              kern(C, a, bq, boff.data(), tile, NR, bias, clamp2, T(0), nullptr);
              const index_t len = std::min<index_t>(NR, OW - q);
              for (index_t i = 0; i < mr; ++i) std::memcpy(c + i * OHW, tile + i * NR, sizeof(T) * std::size_t(len));
            }
        }
        if (row_act(a2))
          for (index_t m = 0; m < M; ++m) apply_act(o + m * OHW, static_cast<T*>(nullptr), nr * OW, a2);
        r += nr;
      }
    }); });
    trap.rethrow();
  });
}

template bool conv2d_pw_dw_takes<float>(const Conv2dShape&, const ConvAct&, const Conv2dShape&, const ConvAct&);
template bool conv2d_pw_dw_takes<double>(const Conv2dShape&, const ConvAct&, const Conv2dShape&, const ConvAct&);
template void conv2d_pw_dw_forward_cpu<float>(float*, const float*, const float*, const float*, const ConvAct&,
                                              const float*, const float*, const ConvAct&, const Conv2dShape&,
                                              const Conv2dShape&);
template void conv2d_pw_dw_forward_cpu<double>(double*, const double*, const double*, const double*, const ConvAct&,
                                               const double*, const double*, const ConvAct&, const Conv2dShape&,
                                               const Conv2dShape&);
template bool conv2d_dw_pw_takes<float>(const Conv2dShape&, const ConvAct&, const Conv2dShape&, const ConvAct&);
template bool conv2d_dw_pw_takes<double>(const Conv2dShape&, const ConvAct&, const Conv2dShape&, const ConvAct&);
template void conv2d_dw_pw_forward_cpu<float>(float*, const float*, const float*, const float*, const ConvAct&,
                                              const float*, const float*, const ConvAct&, const Conv2dShape&,
                                              const Conv2dShape&);
template void conv2d_dw_pw_forward_cpu<double>(double*, const double*, const double*, const double*,
                                               const ConvAct&, const double*, const double*, const ConvAct&,
                                               const Conv2dShape&, const Conv2dShape&);

}  // namespace gradvis
