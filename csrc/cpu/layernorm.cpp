// Layer normalization over the middle axis of (outer, R, inner); see
// ops/layernorm.h. The work is split into units fixed by the shape (runs of
// tiles of a strided group, or runs of rows), a thread per `kGrain` elements;
// weight and bias gradients are summed per unit in double and the units added
// in order, so nothing depends on the thread count.
#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/simd.h"

namespace gradvis {

namespace {

constexpr index_t kTile = 1024;           // positions of a strided group normalized together, at most
constexpr double kTileBytes = 256 * 1024;  // bytes a tile holds, at most (16 positions are the least)

template <class T>
struct LnKernels {
  void (*fwd_tile)(T*, T*, T*, const T*, const T*, const T*, index_t, index_t, index_t, T);
  void (*fwd_row)(T*, T*, T*, const T*, const T*, const T*, index_t, T);
  void (*bwd_tile)(T*, double*, double*, const T*, const T*, const T*, const T*, const T*, index_t, index_t, index_t);
  void (*bwd_row)(T*, T*, T*, const T*, const T*, T, T, const T*, index_t);
};

}  // namespace

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GV_LN_WIDE 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,prefer-vector-width=512")
namespace ln_avx512 {
#include "cpu/layernorm_kernels.inc"
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace ln_avx2 {
#include "cpu/layernorm_kernels.inc"
}
#pragma GCC pop_options
#endif
namespace ln_base {
#include "cpu/layernorm_kernels.inc"
}
#pragma GCC diagnostic pop

namespace {

template <class T>
const LnKernels<T>& kernels() {
#ifdef GV_LN_WIDE
  switch (cpu_level()) {
    case SimdLevel::avx512:
      return ln_avx512::kKernels<T>;
    case SimdLevel::avx2:
      return ln_avx2::kKernels<T>;
    default:
      break;
  }
#endif
  return ln_base::kKernels<T>;
}

// Elements per thread. At 16K, 768 channels at 7x7 took 30 us on 2 threads
// against 20 on 1 (a second thread's wake-up); at 64K, ConvNeXt-T's 384-channel
// norms at 14x14 ran on one thread, whose reads of a cold input (a backward pass
// reads what the forward wrote long before) a second core's share of the memory
// traffic halves: its norms took 4.75 ms a pass on 2 threads, 4.2 at 32K.
constexpr double kGrain = 32768;
constexpr index_t kMaxUnits = 256;    // units of work (and of partial sums) at most

// The split of (outer, R, inner) into units: a strided group into an even number
// of tiles of B positions (a multiple of 16), each R x B elements of at most
// kTileBytes, so that a tile stays in the L2 cache between its passes; a
// contiguous one into rows; `per` tiles or rows a unit. Each of a tile's R rows
// is a run of B contiguous elements: tiles of one cache line a row (B = 16, as
// when the tile had to fit L1) made every row a separate cold miss in a network
// pass, whose norms read what was written long before; ConvNeXt-T's norms took
// 5.8 ms a forward + input-gradient pass on 1 thread and 4.1 on 2, 4.6 and 3.3
// with these tiles.
struct LnPlan {
  index_t B = 1, tiles_per_outer = 1, items = 0, per = 1, units = 0;
  LnPlan(index_t outer, index_t R, index_t inner, std::size_t item) {
    if (inner > 1) {
      index_t n = index_t(std::ceil(double(R) * double(inner) * double(item) / kTileBytes));
      n = std::max<index_t>(n, std::min<index_t>(2, (inner + 15) / 16));
      if (n > 1) n += n & 1;
      B = std::min<index_t>(inner, std::min<index_t>(kTile, ((inner + n - 1) / n + 15) / 16 * 16));
      tiles_per_outer = (inner + B - 1) / B;
      items = outer * tiles_per_outer;
    } else {
      items = outer;
    }
    per = std::max<index_t>((items + kMaxUnits - 1) / kMaxUnits, inner > 1 ? 1 : 8);
    units = (items + per - 1) / per;
  }
};

template <class F>
void run_units(const LnPlan& plan, index_t total, F&& f) {
  const int nt = grain_threads(double(total), kGrain, plan.units);
  parallel_for_nt(nt, plan.units, f);
}

}  // namespace

template <class T>
void layernorm_forward_cpu(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t outer, index_t R,
                           index_t inner, double eps) {
  const LnKernels<T>& k = kernels<T>();
  const LnPlan plan(outer, R, inner, sizeof(T));
  run_units(plan, outer * R * inner, [&](index_t u) {
    const index_t i1 = std::min(plan.items, (u + 1) * plan.per);
    for (index_t i = u * plan.per; i < i1; ++i) {
      if (inner > 1) {
        const index_t o = i / plan.tiles_per_outer, p0 = (i % plan.tiles_per_outer) * plan.B;
        const index_t B = std::min(plan.B, inner - p0);
        const index_t off = o * R * inner + p0;
        k.fwd_tile(out + off, mean + o * inner + p0, rstd + o * inner + p0, x + off, w, b, R, inner, B, T(eps));
      } else {
        k.fwd_row(out + i * R, mean + i, rstd + i, x + i * R, w, b, R, T(eps));
      }
    }
  });
}

template <class T>
void layernorm_backward_cpu(T* dx, T* dw, T* db, const T* dout, const T* x, const T* mean, const T* rstd,
                            const T* w, index_t outer, index_t R, index_t inner) {
  const LnKernels<T>& k = kernels<T>();
  const LnPlan plan(outer, R, inner, sizeof(T));
  const bool sums = dw != nullptr;
  // Per unit: R sums of dout * xhat, then R sums of dout.
  std::vector<double> part(sums ? std::size_t(plan.units) * std::size_t(2 * R) : 0, 0.0);
  run_units(plan, outer * R * inner, [&](index_t u) {
    double* pw = sums ? part.data() + std::size_t(u) * std::size_t(2 * R) : nullptr;
    double* pb = sums ? pw + R : nullptr;
    std::vector<T> row_sums(sums && inner == 1 ? std::size_t(2 * R) : 0, T(0));
    const index_t i1 = std::min(plan.items, (u + 1) * plan.per);
    for (index_t i = u * plan.per; i < i1; ++i) {
      if (inner > 1) {
        const index_t o = i / plan.tiles_per_outer, p0 = (i % plan.tiles_per_outer) * plan.B;
        const index_t B = std::min(plan.B, inner - p0);
        const index_t off = o * R * inner + p0;
        k.bwd_tile(dx + off, pw, pb, dout + off, x + off, mean + o * inner + p0, rstd + o * inner + p0, w, R, inner,
                   B);
      } else {
        k.bwd_row(dx + i * R, sums ? row_sums.data() : nullptr, sums ? row_sums.data() + R : nullptr, dout + i * R,
                  x + i * R, mean[i], rstd[i], w, R);
      }
    }
    if (sums && inner == 1)
      for (index_t r = 0; r < 2 * R; ++r) pw[r] = double(row_sums[std::size_t(r)]);
  });
  if (sums) {
    for (index_t r = 0; r < R; ++r) {
      double sw = 0, sb = 0;
      for (index_t u = 0; u < plan.units; ++u) {
        sw += part[std::size_t(u) * std::size_t(2 * R) + std::size_t(r)];
        sb += part[std::size_t(u) * std::size_t(2 * R) + std::size_t(R + r)];
      }
      dw[r] = T(sw);
      if (db) db[r] = T(sb);
    }
  }
}

#define GRADVIS_INSTANTIATE(T)                                                                                  \
  template void layernorm_forward_cpu<T>(T*, T*, T*, const T*, const T*, const T*, index_t, index_t, index_t, \
                                         double);                                                            \
  template void layernorm_backward_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, index_t, \
                                          index_t, index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
