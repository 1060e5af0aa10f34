// Winograd F(TM x TM, 3x3), TM = 4 or 2, for float32 (see conv_winograd.h).
//
// Tiles: output tile (n, th, tw) covers rows TM th.. and columns TM tw.. of image n
// and reads the A x A input patch 2 larger (A = TM + 2, P = A^2 points); tiles
// past the output's edge read zeros and are not stored. The tile rows (n, th) of the batch are cut into blocks; per
// block:
//   1. input transform  V[xi] (C x tiles), packed as the gemm's B operand
//   2. P gemms          M[xi] (F x tiles) = U[xi] (F x C) V[xi]
//   3. output transform out = A^T M A + bias, cropped to OH x OW
// U, the filters' transform, is computed once per call (split over the team by
// row sliver), packed as the gemm's A. Then either each thread runs all three
// stages on its own blocks (many tile rows: V and M stay near its L2), or the
// team works on one block at a time (inputs split by channel, gemms by point,
// outputs by filter, barriers between). Each output element is computed by the
// same operations in the same order either way: results do not depend on the
// thread count.
#include "cpu/conv_winograd.h"

#include "cpu/conv_bias.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/digest.h"
#include "cpu/weight_cache.h"
#include "cpu/simd.h"
#include "ops/gemm.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

namespace gradvis {
namespace conv_detail {

namespace {
// The shape of one call as the stages see it. Tile rows r = n * TH + th of the
// batch are cut into blocks; a block's tiles (at most TBp, a multiple of NR) are
// the columns of its gemms.
struct WgGeom {
  index_t TM, A, P;              // output tile, input tile (TM + 2), points (A^2)
  index_t H, W, OH, OW, pt, pl;  // input, output, top/left padding
  index_t TH, TW;                // tiles per image column / row
  index_t K, M, Mpad, MR, NR;    // input channels, filters (padded to MR), micro-kernel tile
  index_t TBp;                   // tile columns of a block's gemms
  index_t usz, vsz, msz;         // floats per point: U (Mpad x K), V (K x TBp), M (Mpad x TBp)
};

struct WinogradStages {
  void (*input)(const WgGeom& g, const float* x, index_t k, index_t k0, index_t kc, index_t r0, index_t r1, float* V,
                float* buf);
  void (*output)(const WgGeom& g, float* out, index_t m, float bias, bool relu, index_t r0, index_t r1,
                 const float* Mo, float* buf);
  void (*filter)(const WgGeom& g, const float* w, bool flipped, index_t is, index_t k0, index_t kc, float* U,
                 float* buf);
  // weight gradient
  void (*input_plain)(const WgGeom& g, const float* x, index_t k, index_t r0, index_t r1, float* V, float* buf);
  void (*grad)(const WgGeom& g, const float* dout, index_t m, index_t r0, index_t r1, float* Dm, float* buf);
  void (*filter_grad)(float* dw, const float* du, index_t ldu, index_t n, float* buf);
};
}  // namespace

// The transforms, compiled once per SIMD level (the library targets baseline x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GV_WINOGRAD_WIDE 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,prefer-vector-width=512")
#define GV_WG_AVX512 1
namespace wg_avx512 {
#include "cpu/winograd_transforms.inc"
}
#undef GV_WG_AVX512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace wg_avx2 {
#include "cpu/winograd_transforms.inc"
}
#pragma GCC pop_options
#endif
namespace wg_base {
#include "cpu/winograd_transforms.inc"
}

namespace {

// The stages for output tiles of tm (4 or 2) at the CPU's SIMD level.
const WinogradStages& stages(index_t tm) {
#ifdef GV_WINOGRAD_WIDE
  switch (cpu_level()) {
    case SimdLevel::avx512:
      return tm == 4 ? wg_avx512::kStages4 : wg_avx512::kStages2;
    case SimdLevel::avx2:
      return tm == 4 ? wg_avx2::kStages4 : wg_avx2::kStages2;
    default:
      break;
  }
#endif
  return tm == 4 ? wg_base::kStages4 : wg_base::kStages2;
}

std::atomic<int> g_algo{int(ConvAlgo::automatic)};

// Transformed filters kept across calls (see FilterCache): the limit on their
// bytes (set_winograd_cache_limit), half of it the largest entry.
std::atomic<std::size_t> g_cache_limit{std::size_t(512) << 20};
std::size_t cache_entry_max() { return g_cache_limit.load(std::memory_order_relaxed) / 2; }
// Calls with at most this many tiles keep their transformed filters: with more,
// the filter transform is about 1% of the call or less (with 128-1024 tiles
// keeping them made DeepDream on a 256x256 photo 5% faster).
constexpr index_t kCacheTiles = 1024;

}  // namespace


// The most bytes of transformed filters a forward pass with 16-31 tiles streams
// from memory (see winograd_choice): 6 MB but on AMD's cores, where the stream
// hides behind the gemms (no cap).
std::size_t winograd_stream_limit() {
  return cpu_is_amd() ? std::numeric_limits<std::size_t>::max() : std::size_t(6) << 20;
}

WinogradChoice winograd_choice(const Conv2dShape& s, bool weight_grad) {
  if (!winograd_eligible(s)) return {};
  switch (conv_algo()) {
    case ConvAlgo::direct:
      return {};
    case ConvAlgo::winograd:
      return {4, false};
    case ConvAlgo::winograd2x2:
      return {2, false};
    default:
      break;
  }
  // Measured on an AVX-512 machine (2 threads): the gemms need enough tiles to
  // amortize the transformed filters (36 F C floats, 4x the filters themselves)
  // and to fill the gemm's column tiles (16 wide when there are at most 16 tiles),
  // and enough channels to amortize the transforms. 8x8 maps at batch 1 (4 tiles)
  // run 3x slower than the direct gemm; 28x28 and up (49+ tiles) 2-2.6x faster.
  // With 16-31 tiles (14x14 and 16x16 maps at batch 1) the filter transform is
  // most of a call: it pays when the transformed filters fit the cache below, so
  // that a loop over the same weights transforms them once (then 1.35-2.6x the
  // direct gemm, 32x32 to 256x256 filters; 512x512 at 14x14: 2.2x); uncached,
  // 512x512 runs at 0.36x.
  // Below that, F(2x2) has 4x the tiles (16 for an 8x8 or 7x7 map at batch 1) and
  // transformed filters of 16 F C floats, less than half of F(4x4)'s: with 16 or
  // more tiles and its filters cached it runs forward passes 1.4-1.7x faster than
  // the direct gemm (8x8: 128x256 and 256x256; 7x7 and 14x14: 512x512, though at
  // 14x14 cached F(4x4) is faster still), with 8 tiles about as fast, with 4 (4x4
  // at batch 1) 0.6x. Its weight gradient sums over the tiles, a gemm with only as
  // many columns: with 16 tiles it runs 0.9-1.1x (256x256) and 0.6x (512x512) the
  // direct gemm, with 49 1.25x.
  // Where the filters should come from the cache but it is full, they are
  // transformed every call (slower, but the choice never depends on what the cache
  // holds: two threads, or two calls, with equal inputs get equal bits).
  // Those measurements called one layer again and again, its transformed filters in
  // cache. In a network each layer's come back from memory (bench_winograd_cycle.py:
  // 8 layers' weights in turn). How well that stream hides behind the gemms differs
  // by machine (winograd_stream_limit): on an Intel Xeon (AVX-512) F(2x2) ran at
  // 0.74-0.88x the direct gemm for 384x384 and 512x512 filters (9.4 and 16.8 MB
  // transformed), and with 16-31 tiles F(4x4)'s 9.4 MB at 256x256 lost to F(2x2) with
  // its 49 tiles at 14x14 (1.95 against 1.54 ms on 1 thread); ResNet-50 at batch 1 ran
  // 1-9% faster with both capped at 6 MB. On an AMD EPYC (Zen 4) the stream hides:
  // F(2x2) at 512x512 7x7 takes 2.2 ms against the direct gemm's 3.0 (input gradient
  // 2.2 against 3.7), F(4x4) at 256x256 14x14 1.2 against F(2x2)'s 1.7, and 512x512
  // at 14x14 4.5 against 6.4, on 1 thread, 1.3-1.6x on 2 and at AVX2; ResNet-50's
  // forward 5-7% and forward + input gradient 5% faster uncapped. So with 16-31
  // tiles the forward pass (and input gradient) takes F(2x2) only for transformed
  // filters of at most stream_max bytes, and F(4x4) likewise, giving way to F(2x2)
  // where that has 32+ tiles.
  const std::size_t stream_max = winograd_stream_limit();
  if (s.C < 16 || s.F < 16) return {};
  const std::size_t emax = cache_entry_max();
  const std::size_t bytes4 = std::size_t(36 * s.C * s.F) * sizeof(float);  // transformed filters
  const std::size_t bytes2 = std::size_t(16 * s.C * s.F) * sizeof(float);
  const index_t tiles4 = winograd_tiles(s, 4), tiles2 = winograd_tiles(s, 2);
  if (tiles4 >= 32) return {4, false};
  const bool stream4 = weight_grad || tiles2 < 32 || bytes4 <= stream_max;
  if (tiles4 >= 16 && bytes4 <= emax && stream4) return {4, !weight_grad};
  const bool stream2 = weight_grad || tiles2 >= 32 || bytes2 <= stream_max;
  if (tiles2 >= (weight_grad ? 32 : 16) && bytes2 <= emax && stream2) return {2, !weight_grad};
  return {};
}

namespace {

// The geometry of s for MR x NR micro-tiles (filters padded to MR; the block
// sizes TBp, usz, vsz and msz are the caller's).
WgGeom geom(const Conv2dShape& s, index_t tm, index_t MR, index_t NR) {
  WgGeom g{};
  g.TM = tm, g.A = tm + 2, g.P = g.A * g.A;
  g.H = s.H, g.W = s.W, g.OH = s.OH, g.OW = s.OW, g.pt = s.p.pad_top, g.pl = s.p.pad_left;
  g.TH = (s.OH + tm - 1) / tm, g.TW = (s.OW + tm - 1) / tm;
  g.K = s.C, g.M = s.F, g.MR = MR, g.NR = NR;
  g.Mpad = (s.F + MR - 1) / MR * MR;
  return g;
}

// ---- transformed filters kept across calls ----------------------------------------
// A gradient loop calls the same layers with the same weights hundreds of times;
// the filter transform writes 4x the weights (14 MB for a 384x256 layer) every
// call. Entries are found by shape, orientation, tile size and a digest of the
// weights' bytes (digest.h: read once, by all threads; comparing with a copy of
// the weights had read twice the bytes on one thread, a fifth of a batch-1 class
// visualization step), or, for weights known immutable (a WeightKey,
// weight_cache.h), by their token and address without reading them (the digest
// was 4.5% of ResNet-50's forward pass), so weights changed in place (training) are simply
// transformed again, replacing the entry made from the same array (in its
// memory when no other thread is using it). A
// new entry is made only for calls of few tiles (kCacheTiles) and only if it fits
// in the limit after dropping entries unused for kStaleCalls lookups: a network larger than the cache keeps its first layers
// cached and transforms the rest into scratch memory every call (or runs them
// direct, see winograd_choice), instead of evicting in a cycle (which would
// allocate, and page-fault, a fresh entry on every call).
struct FilterEntry {
  index_t F, C, MR, TM;
  bool flipped;
  const float* src = nullptr;  // the array the weights were read from
  std::uint64_t digest = 0;    // of the weights U was computed from (token 0)
  std::uint64_t token = 0;     // of their WeightKey, else 0
  float* U = nullptr;          // P x Mpad x C, 64-byte aligned
  std::size_t u_floats = 0;
  std::uint64_t last_used = 0;
  std::size_t size_bytes() const { return u_floats * sizeof(float); }
  ~FilterEntry() { cache_free(U, u_floats * sizeof(float)); }
};

constexpr std::uint64_t kStaleCalls = 512;

class FilterCache : public KeptEntries<FilterEntry> {
 public:
  // Whether an entry of this shape is held.
  bool holds(index_t F, index_t C, index_t MR, index_t TM, bool flipped) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& e : entries_)
      if (e->F == F && e->C == C && e->MR == MR && e->TM == TM && e->flipped == flipped) return true;
    return false;
  }
  // The entry for these weights, or null.
  // The entry for these weights, or null: by token and address where keyed, else by digest.
  std::shared_ptr<const FilterEntry> find(const float* w, std::uint64_t digest, std::uint64_t token, index_t F,
                                          index_t C, index_t MR, index_t TM, bool flipped) {
    std::lock_guard<std::mutex> lock(mu_);
    ++clock_;
    for (auto& e : entries_) {
      if (e->F == F && e->C == C && e->MR == MR && e->TM == TM && e->flipped == flipped && e->token == token &&
          (token ? e->src == w : e->digest == digest)) {
        e->last_used = clock_;
        return e;
      }
    }
    return nullptr;
  }
  // A fresh entry for these weights (U still to be computed; offer it with put()),
  // or null when it would not fit next to the entries in recent use.
  std::shared_ptr<FilterEntry> reserve(const float* w, std::uint64_t digest, std::uint64_t token, index_t F,
                                       index_t C, index_t MR, index_t TM, bool flipped, std::size_t u_floats) {
    const std::size_t need = u_floats * sizeof(float);
    const std::size_t limit = g_cache_limit.load(std::memory_order_relaxed);
    if (need > limit / 2) return nullptr;
    std::shared_ptr<FilterEntry> reuse;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::size_t bytes = 0;
      for (auto it = entries_.begin(); it != entries_.end();) {
        const FilterEntry& e = **it;
        const bool replaced =  // made from this array before its weights changed (find() missed)
            e.src == w && e.F == F && e.C == C && e.MR == MR && e.TM == TM && e.flipped == flipped;
        if (replaced && !reuse && it->use_count() == 1 && e.u_floats == u_floats) {
          reuse = *it;  // nobody else holds it: its memory takes the new transform (no page faults)
          it = entries_.erase(it);
        } else if (replaced || clock_ - e.last_used > kStaleCalls) {
          it = entries_.erase(it);  // users in flight hold their own reference
        } else {
          bytes += e.u_floats * sizeof(float);
          ++it;
        }
      }
      if (bytes + need > limit) return nullptr;
    }
    if (reuse) {
      reuse->digest = digest, reuse->token = token;
      return reuse;
    }
    auto e = std::make_shared<FilterEntry>();
    e->F = F, e->C = C, e->MR = MR, e->TM = TM, e->flipped = flipped, e->src = w, e->digest = digest;
    e->token = token;
    e->U = static_cast<float*>(cache_alloc(need));
    if (!e->U) return nullptr;
    e->u_floats = u_floats;
    return e;
  }
};

FilterCache& filter_cache() {
  static FilterCache* cache = new FilterCache();  // never destroyed: no order-of-exit issues
  return *cache;
}

// The level's MR x NR float micro-kernel that prefetches A's stream ahead (null: none).
template <int MR, int NR>
gemm_detail::ukernel_pf_fn<float> prefetching_kernel() {
  using namespace gemm_detail;
  if constexpr (MR == kMR512 && NR == kNR512_f32) return ukernel_avx512_f32_pf;
  if constexpr (MR == kMR512n && NR == kNR512n_f32) return ukernel_avx512_f32_narrow_pf;
  if constexpr (MR == kMR256 && NR == kNR256_f32) return ukernel_avx2_f32_pf;
  return nullptr;
}

// The gemms of points [xi0, xi1): M[xi] (Mpad x TBp) = U[xi] (Mpad x K) V[xi] (K x TBp).
// U is one stream (point, K block, sliver), read once per block of tiles: in a
// network pass it comes from memory (9.4 MB for 256x256 filters at F(4x4)), and
// with few tiles (14x14 and 7x7 maps at batch 1) each line of it feeds only 16-32
// products, too few to hide its latency. So the first column tile of each sliver
// prefetches the next sliver's (pkern, the same sums: the bits do not change).
// 12 layers' weights in turn, AVX-512, 1 thread: 256x256 at 14x14 1.11-1.15 ->
// 1.00-1.06 ms, 512x512 at 7x7 1.81 -> 1.46.
template <int MR, int NR>
void gemms(gemm_detail::ukernel_fn<float> kern, const WgGeom& g, const gemm_detail::KBlocks& kb, const float* U,
           const float* V, float* Mo, index_t xi0, index_t xi1) {
  const index_t TBp = g.TBp, Mpad = g.Mpad;
  const gemm_detail::ukernel_pf_fn<float> pkern = prefetching_kernel<MR, NR>();
  for (index_t xi = xi0; xi < xi1; ++xi) {
    const float* A = U + xi * g.usz;
    const float* B = V + xi * g.vsz;
    float* C = Mo + xi * g.msz;
    for (index_t bk = 0; bk < kb.n; ++bk) {
      const index_t k0 = kb.begin(bk), kc = kb.begin(bk + 1) - k0;
      const float beta = bk == 0 ? 0.f : 1.f;
      for (index_t m = 0; m < Mpad; m += MR) {
        const float* a = A + k0 * Mpad + m * kc;   // the next sliver of the stream at a + MR kc
        for (index_t jr = 0; jr < TBp; jr += NR) {
          if (pkern && jr == 0)
            pkern(kc, a, B + k0 * TBp, C + m * TBp, TBp, 1.f, beta, a + MR * kc);
          else
            kern(kc, a, B + k0 * TBp + jr * kc, C + m * TBp + jr, TBp, 1.f, beta);
        }
      }
    }
  }
}

}  // namespace

template <int MR, int NR>
void winograd_forward(gemm_detail::ukernel_fn<float> kern, WinogradChoice c, float* out, const float* x,
                      const float* w, const float* b, const Conv2dShape& s, bool flipped, bool relu) {
  const index_t tm = c.tm;
  const WinogradStages& st = stages(tm);
  WgGeom g = geom(s, tm, MR, NR);
  const index_t R = s.N * g.TH, K = g.K, M = g.M, TW = g.TW, P = g.P, A = g.A;  // R: tile rows of the batch
  const index_t mslivers = g.Mpad / MR;
  const gemm_detail::KBlocks kb = gemm_detail::kblocks(K);
  const index_t kc_max = kb.max_size();
  const index_t nt = team_size();

  // Blocks: private to a thread (all three stages on one core, V and M near its
  // L2) when there are enough tile rows for every thread and a block is wide enough
  // to amortize reading U again (measured: when Mpad K / (K + Mpad) <= 3 tiles of
  // the block), else shared by the team (V and M in the L3).
  constexpr index_t kPrivate = index_t(1) << 19, kShared = index_t(5) << 19;  // floats of V and M per block
  const index_t per_row = P * (K + g.Mpad) * TW;  // V and M floats per tile row
  index_t rpb = std::max<index_t>(1, kPrivate / per_row);
  const bool priv = nt > 1 && R >= 2 * nt * rpb && g.Mpad * K <= 3 * rpb * TW * (K + g.Mpad);
  if (!priv) rpb = std::max<index_t>(1, kShared / per_row);
  rpb = std::min(rpb, R);
  index_t nblocks = (R + rpb - 1) / rpb;
  if (priv) nblocks = (nblocks + nt - 1) / nt * nt;  // an equal count per thread
  rpb = (R + nblocks - 1) / nblocks;
  nblocks = (R + rpb - 1) / rpb;
  g.TBp = (rpb * TW + NR - 1) / NR * NR;
  g.usz = g.Mpad * K, g.vsz = K * g.TBp, g.msz = g.Mpad * g.TBp;

  // Transformed filters: from the cache, or computed below into a new entry.
  // (Calls of many tiles neither make entries nor, usually, find one of their
  // shape: they skip reading the weights for the digest.)
  const bool admit = c.cached_only || R * TW <= kCacheTiles;
  std::shared_ptr<const FilterEntry> cached;
  std::shared_ptr<FilterEntry> fresh;
  if (admit || filter_cache().holds(M, K, MR, tm, flipped)) {
    const std::uint64_t token = weight_token(w);
    const std::uint64_t digest = token ? 0 : digest_bytes(w, std::size_t(M * K * 9) * sizeof(float));
    cached = filter_cache().find(w, digest, token, M, K, MR, tm, flipped);
    if (!cached && admit)
      fresh = filter_cache().reserve(w, digest, token, M, K, MR, tm, flipped, std::size_t(P * g.usz));
  }
  // Filters neither cached nor admitted (the cache is full) are transformed into
  // scratch memory: slower, but the result is the same bits whatever the cache
  // holds, so the algorithm is a function of the shape and the settings only.
  float* U = cached ? cached->U : fresh ? fresh->U : scratch<float>(ScratchSlot::winograd_u, std::size_t(P * g.usz));
  float* Vs = priv ? nullptr : scratch<float>(ScratchSlot::winograd_v, std::size_t(P * g.vsz));
  float* Ms = priv ? nullptr : scratch<float>(ScratchSlot::winograd_m, std::size_t(P * g.msz));
  // transform buffers: filter, input, output stage (see winograd_transforms.inc)
  const std::size_t local = std::size_t(
      std::max((9 + 3 * A) * MR * kc_max, std::max(P * g.TBp + std::max(2 * A * (tm * TW + 2) + A * TW, 2 * P * g.TBp),
                                                   (tm * tm + tm * A) * g.TBp)));

  ErrorTrap trap;
  team_run(nt, [&](index_t t, index_t nth) {
    float *buf = nullptr, *V = Vs, *Mo = Ms;
    trap.run([&] {
      buf = scratch<float>(ScratchSlot::winograd_local, local);
      if (priv) {
        V = scratch<float>(ScratchSlot::winograd_v, std::size_t(P * g.vsz));
        Mo = scratch<float>(ScratchSlot::winograd_m, std::size_t(P * g.msz));
      }
    });
    const bool ok = buf && V && Mo;
    // ---- filters: U[xi] packed in MR-row slivers per K block, split by sliver ----
    if (ok && !cached) trap.run([&] {
      for (index_t is = mslivers * t / nth; is < mslivers * (t + 1) / nth; ++is)
        for (index_t bk = 0; bk < kb.n; ++bk)
          st.filter(g, w, flipped, is, kb.begin(bk), kb.begin(bk + 1) - kb.begin(bk), U, buf);
    });
    team_barrier();
    auto input = [&](index_t k, index_t r0, index_t r1) {
      index_t bk = 0;
      while (kb.begin(bk + 1) <= k) ++bk;
      st.input(g, x, k, kb.begin(bk), kb.begin(bk + 1) - kb.begin(bk), r0, r1, V, buf);
    };
    if (priv) {
      // ---- each thread its own blocks, all stages ----
      if (ok) trap.run([&] {
        for (index_t blk = nblocks * t / nth; blk < nblocks * (t + 1) / nth; ++blk) {
          const index_t r0 = blk * rpb, r1 = std::min(R, r0 + rpb);
          for (index_t k = 0; k < K; ++k) input(k, r0, r1);
          gemms<MR, NR>(kern, g, kb, U, V, Mo, 0, P);
          for (index_t m = 0; m < M; ++m) st.output(g, out, m, b ? b[m] : 0.f, relu, r0, r1, Mo, buf);
        }
      });
      return;
    }
    for (index_t blk = 0; blk < nblocks; ++blk) {
      const index_t r0 = blk * rpb, r1 = std::min(R, r0 + rpb);
      // ---- the team on one block: inputs by channel, gemms by point, outputs by filter ----
      if (ok) trap.run([&] {
        for (index_t k = K * t / nth; k < K * (t + 1) / nth; ++k) input(k, r0, r1);
      });
      team_barrier();
      if (ok) trap.run([&] { gemms<MR, NR>(kern, g, kb, U, V, Mo, P * t / nth, P * (t + 1) / nth); });
      team_barrier();
      if (ok) trap.run([&] {
        for (index_t m = M * t / nth; m < M * (t + 1) / nth; ++m)
          st.output(g, out, m, b ? b[m] : 0.f, relu, r0, r1, Mo, buf);
      });
      // No barrier: the next block's input stage writes V only, and its gemms
      // (which overwrite M) start after the next barrier.
    }
  });
  trap.rethrow();
  if (fresh) filter_cache().put(std::move(fresh));
}

void winograd_backward_weight(index_t tm, float* dw, float* db, const float* dout, const float* x,
                              const Conv2dShape& s) {
  const WinogradStages& st = stages(tm);
  WgGeom g = geom(s, tm, 1, 1);
  const index_t R = s.N * g.TH, K = g.K, M = g.M, TW = g.TW, P = g.P, A = g.A;
  // Blocks of tile rows as in the forward's shared schedule; their size does not
  // depend on the thread count, so neither do the sums.
  constexpr index_t kShared = index_t(5) << 19;
  index_t rpb = std::min(R, std::max<index_t>(1, kShared / (P * (K + M) * TW)));
  const index_t nblocks = (R + rpb - 1) / rpb;
  rpb = (R + nblocks - 1) / nblocks;
  g.TBp = (rpb * TW + 15) / 16 * 16;
  g.usz = M * K, g.vsz = K * g.TBp, g.msz = M * g.TBp;

  float* dU = scratch<float>(ScratchSlot::winograd_u, std::size_t(P * g.usz));
  float* V = scratch<float>(ScratchSlot::winograd_v, std::size_t(P * g.vsz));
  float* Dm = scratch<float>(ScratchSlot::winograd_m, std::size_t(P * g.msz));
  // transform buffers: input, gradient, filter-gradient stage (see winograd_transforms.inc)
  const std::size_t local = std::size_t(std::max(
      std::max(std::max(2 * A * (tm * TW + 2) + A * TW, 2 * P * g.TBp), (tm * tm + tm * A) * g.TBp), (3 * A + 9) * K));

  const index_t nt = team_size();
  ErrorTrap trap;
  team_run(nt, [&](index_t t, index_t nth) {
    float* buf = nullptr;
    trap.run([&] { buf = scratch<float>(ScratchSlot::winograd_local, local); });
    for (index_t blk = 0; blk < nblocks; ++blk) {
      const index_t r0 = blk * rpb, r1 = std::min(R, r0 + rpb), TB = (r1 - r0) * TW;
      // V[xi] (K x TB) by channel, dM[xi] (M x TB) by filter
      if (buf) trap.run([&] {
        for (index_t k = K * t / nth; k < K * (t + 1) / nth; ++k) st.input_plain(g, x, k, r0, r1, V, buf);
        for (index_t m = M * t / nth; m < M * (t + 1) / nth; ++m) st.grad(g, dout, m, r0, r1, Dm, buf);
      });
      team_barrier();
      // dU[xi] (M x K) += dM[xi] V[xi]^T, the sum over the block's tiles, by point
      trap.run([&] {
        for (index_t xi = P * t / nth; xi < P * (t + 1) / nth; ++xi)
          gemm_cpu<float>(false, true, M, K, TB, 1.f, Dm + xi * g.msz, g.TBp, V + xi * g.vsz, g.TBp,
                      blk == 0 ? 0.f : 1.f, dU + xi * g.usz, K);
      });
      team_barrier();
    }
    // dW = G^T dU G per filter; db = the sum of dout, by filter
    if (buf) trap.run([&] {
      for (index_t m = M * t / nth; m < M * (t + 1) / nth; ++m) {
        st.filter_grad(dw + m * K * 9, dU + m * K, g.usz, K, buf);
        if (db) db[m] = bias_sum(dout, s.N, M, s.OH * s.OW, m);
      }
    });
  });
  trap.rethrow();
}

template void winograd_forward<gemm_detail::kMR512, gemm_detail::kNR512_f32>(gemm_detail::ukernel_fn<float>, WinogradChoice, float*,
                                                                             const float*, const float*,
                                                                             const float*, const Conv2dShape&, bool, bool);
template void winograd_forward<gemm_detail::kMR512n, gemm_detail::kNR512n_f32>(gemm_detail::ukernel_fn<float>,
                                                                               WinogradChoice, float*, const float*, const float*,
                                                                               const float*, const Conv2dShape&,
                                                                               bool, bool);
template void winograd_forward<gemm_detail::kMR256, gemm_detail::kNR256_f32>(gemm_detail::ukernel_fn<float>, WinogradChoice, float*,
                                                                             const float*, const float*,
                                                                             const float*, const Conv2dShape&, bool, bool);
template void winograd_forward<gemm_detail::kMRScalar, gemm_detail::kNRScalar>(gemm_detail::ukernel_fn<float>,
                                                                               WinogradChoice, float*, const float*, const float*,
                                                                               const float*, const Conv2dShape&,
                                                                               bool, bool);

void winograd_drop_token(std::uint64_t token) { filter_cache().drop(token); }

}  // namespace conv_detail

void set_winograd_cache_limit(std::size_t bytes) {
  conv_detail::g_cache_limit.store(bytes, std::memory_order_relaxed);
  conv_detail::filter_cache().trim(bytes);
}

WinogradCacheInfo winograd_cache_info() {
  const auto u = conv_detail::filter_cache().usage();
  return {conv_detail::g_cache_limit.load(std::memory_order_relaxed), u.first, u.second,
          conv_detail::winograd_stream_limit()};
}

ConvAlgo conv_algo() { return ConvAlgo(conv_detail::g_algo.load(std::memory_order_relaxed)); }
void set_conv_algo(ConvAlgo a) { conv_detail::g_algo.store(int(a), std::memory_order_relaxed); }

}  // namespace gradvis
