// Packed, cache-blocked gemm (Goto/BLIS style) over row-major matrices.
//
// Loops, outer to inner, for one thread's block of C:
//   jc over N by NC   -> pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide k-major slivers (L2)
//   pc over K by KC
//   ic over M by MC   -> pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall k-major slivers
//   ir over MC by MR  (the A sliver, MR x KC, stays in L1)
//   jr over NC by NR  -> micro-kernel on an MR x NR tile of C (B slivers streamed from L2)
// Edge tiles are packed with zeros, computed into a local tile and copied out, so
// the micro-kernels only ever see full tiles.
#include "ops/gemm.h"

#include <algorithm>
#include <cstring>

#include "cpu/gemm_kernels.h"
#include "cpu/simd.h"

namespace gradvis {
namespace gemm_detail {
namespace {

// ---- portable fallback micro-kernel (baseline x86-64 / any CPU) ----
template <class TT>
struct VScalar {
  using T = TT;
  using reg = TT;
  static constexpr int W = 1;
  static inline reg zero() { return TT(0); }
  static inline reg load(const TT* p) { return *p; }
  static inline void store(TT* p, reg r) { *p = r; }
  static inline reg set1(TT x) { return x; }
  static inline reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static inline reg mul(reg a, reg b) { return a * b; }
  static inline reg max(reg a, reg b) { return a > b ? a : b; }
  static inline reg min(reg a, reg b) { return a < b ? a : b; }
};

#define GV_TARGET
#include "cpu/gemm_ukernel.inc"
#undef GV_TARGET


// ---- packing ----
// op(A)[i0:i0+mc, p0:p0+kc] -> slivers of MR rows, each kc x MR (k-major), zero-padded rows.
template <class T, int MR>
void pack_a(bool trans, const T* A, index_t lda, index_t i0, index_t mc, index_t p0, index_t kc, T* out) {
  for (index_t is = 0; is < mc; is += MR) {
    const index_t mr = std::min<index_t>(MR, mc - is);
    T* o = out + is * kc;
    if (!trans) {
      if (mr == MR) {
        const T* src[MR];
        for (int i = 0; i < MR; ++i) src[i] = A + (i0 + is + i) * lda + p0;
        for (index_t k = 0; k < kc; ++k)
          for (int i = 0; i < MR; ++i) o[k * MR + i] = src[i][k];
      } else {
        for (index_t k = 0; k < kc; ++k)
          for (int i = 0; i < MR; ++i) o[k * MR + i] = i < mr ? A[(i0 + is + i) * lda + p0 + k] : T(0);
      }
    } else {
      for (index_t k = 0; k < kc; ++k) {
        const T* src = A + (p0 + k) * lda + i0 + is;
        for (int i = 0; i < MR; ++i) o[k * MR + i] = i < mr ? src[i] : T(0);
      }
    }
  }
}

// op(B)[p0:p0+kc, j0:j0+nc] -> slivers of NR columns, each kc x NR (k-major), zero-padded columns.
template <class T, int NR>
void pack_b(bool trans, const T* B, index_t ldb, index_t p0, index_t kc, index_t j0, index_t nc, T* out) {
  for (index_t js = 0; js < nc; js += NR) {
    const index_t nr = std::min<index_t>(NR, nc - js);
    T* o = out + js * kc;
    if (!trans) {
      for (index_t k = 0; k < kc; ++k) {
        const T* src = B + (p0 + k) * ldb + j0 + js;
        T* d = o + k * NR;
        if (nr == NR) {
          for (int j = 0; j < NR; ++j) d[j] = src[j];
        } else {
          for (int j = 0; j < NR; ++j) d[j] = j < nr ? src[j] : T(0);
        }
      }
    } else if (nr == NR) {
      // A transpose, in blocks of one cache line of each source row so that both
      // the reads and the writes stay within a few KiB (power-of-two ldb would
      // otherwise alias NR rows onto the same cache sets).
      constexpr index_t KB = 64 / sizeof(T);
      for (index_t k0 = 0; k0 < kc; k0 += KB) {
        const index_t kb = std::min(KB, kc - k0);
        for (int j = 0; j < NR; ++j) {
          const T* src = B + (j0 + js + j) * ldb + p0 + k0;
          T* d = o + k0 * NR + j;
          for (index_t k = 0; k < kb; ++k) d[k * NR] = src[k];
        }
      }
    } else {
      for (index_t k = 0; k < kc; ++k)
        for (int j = 0; j < NR; ++j) o[k * NR + j] = j < nr ? B[(j0 + js + j) * ldb + p0 + k] : T(0);
    }
  }
}

struct Problem {
  bool ta, tb;
  index_t M, N, K, lda, ldb, ldc;
};

// One thread's rectangle C[m0:m1, n0:n1], single-threaded.
template <class T, int MR, int NR>
void gemm_block(ukernel_fn<T> kern, const Problem& P, T alpha, const T* A, const T* B, T beta, T* C, index_t m0,
                index_t m1, index_t n0, index_t n1) {
  // Blocking: the packed B block (KC x NC) should sit in L2 (1-2 MiB), the A sliver in L1.
  constexpr index_t KC = 256;
  constexpr index_t NC = (sizeof(T) == 4 ? 1024 : 512) / NR * NR;
  constexpr index_t MC = 16 * MR;
  const index_t K = P.K;
  const index_t kc_max = std::min(KC, K);
  const index_t nc_max = std::min<index_t>(NC, (n1 - n0 + NR - 1) / NR * NR);
  const index_t mc_max = std::min<index_t>(MC, (m1 - m0 + MR - 1) / MR * MR);
  T* ap = scratch<T>(ScratchSlot::gemm_a, std::size_t(mc_max * kc_max));
  T* bp = scratch<T>(ScratchSlot::gemm_b, std::size_t(nc_max * kc_max));
  alignas(64) T tile[MR * NR];

  for (index_t jc = n0; jc < n1; jc += NC) {
    const index_t nc = std::min(NC, n1 - jc);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const T beta_k = pc == 0 ? beta : T(1);
      pack_b<T, NR>(P.tb, B, P.ldb, pc, kc, jc, nc, bp);
      for (index_t ic = m0; ic < m1; ic += MC) {
        const index_t mc = std::min(MC, m1 - ic);
        pack_a<T, MR>(P.ta, A, P.lda, ic, mc, pc, kc, ap);
        for (index_t ir = 0; ir < mc; ir += MR) {
          const index_t mr = std::min<index_t>(MR, mc - ir);
          const T* a = ap + ir * kc;
          for (index_t jr = 0; jr < nc; jr += NR) {
            const index_t nr = std::min<index_t>(NR, nc - jr);
            T* c = C + (ic + ir) * P.ldc + jc + jr;
            if (mr == MR && nr == NR) {
              kern(kc, a, bp + jr * kc, c, P.ldc, alpha, beta_k);
            } else {
              kern(kc, a, bp + jr * kc, tile, NR, T(1), T(0));
              for (index_t i = 0; i < mr; ++i)
                for (index_t j = 0; j < nr; ++j) {
                  T& dst = c[i * P.ldc + j];
                  dst = beta_k == T(0) ? alpha * tile[i * NR + j] : alpha * tile[i * NR + j] + beta_k * dst;
                }
            }
          }
        }
      }
    }
  }
}

// C = beta * C for the degenerate K == 0 (or alpha == 0) case.
template <class T>
void scale_c(index_t M, index_t N, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0))
      std::fill(c, c + N, T(0));
    else
      for (index_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

template <class T, int MR, int NR>
void gemm_driver(ukernel_fn<T> kern, const Problem& P, T alpha, const T* A, const T* B, T beta, T* C) {
  const index_t M = P.M, N = P.N;
  int nt = int(team_size());
  // Below ~1 MFLOP the fork/join costs more than it saves.
  const double flops = 2.0 * double(M) * double(N) * double(P.K);
  if (flops < 1.0e6) nt = 1;
  const index_t mt = (M + MR - 1) / MR, ntiles = (N + NR - 1) / NR;
  nt = int(std::min<index_t>(nt, mt * ntiles));
  if (nt <= 1) {
    gemm_block<T, MR, NR>(kern, P, alpha, A, B, beta, C, 0, M, 0, N);
    return;
  }
  // Split C into a tm x tn grid of rectangles, one per thread, picking the
  // factorization with the smallest largest rectangle (whole tiles; ties prefer
  // splitting N, which keeps every thread's A panel whole).
  int best_tm = 1;
  index_t best_cost = -1;
  for (int tm = 1; tm <= nt; ++tm) {
    if (nt % tm) continue;
    const int tn = nt / tm;
    const index_t cost = ((mt + tm - 1) / tm) * ((ntiles + tn - 1) / tn);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_tm = tm;
    }
  }
  const int tm = best_tm, tn = nt / tm;
  ErrorTrap trap;
  team_run(nt, [&](index_t t0, index_t nth) {
    for (index_t t = t0; t < nt; t += nth) {  // every block, whatever team the region got
      const index_t ti = t / tn, tj = t % tn;
      const index_t m0 = std::min(M, mt * ti / tm * MR), m1 = std::min(M, mt * (ti + 1) / tm * MR);
      const index_t n0 = std::min(N, ntiles * tj / tn * NR), n1 = std::min(N, ntiles * (tj + 1) / tn * NR);
      if (m0 < m1 && n0 < n1)
        trap.run([&] { gemm_block<T, MR, NR>(kern, P, alpha, A, B, beta, C, m0, m1, n0, n1); });
    }
  });
  trap.rethrow();
}

}  // namespace

template <class T>
void ukernel_scalar(index_t kc, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta) {
  ukernel<VScalar<T>, kMRScalar, kNRScalar>(kc, a, b, c, ldc, alpha, beta);
}
template void ukernel_scalar<float>(index_t, const float*, const float*, float*, index_t, float, float);
template void ukernel_scalar<double>(index_t, const double*, const double*, double*, index_t, double, double);

template <class T>
void ukernel_rows_scalar(index_t kc, const T* a, index_t lda, index_t mr, const index_t* koff, const T* b, T* c,
                         index_t ldc, T alpha, T beta) {
  ukernel_rows<VScalar<T>, kMRScalar, kNRScalar>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}
template void ukernel_rows_scalar<float>(GV_ROWS_ARGS(float));
template void ukernel_rows_scalar<double>(GV_ROWS_ARGS(double));

template <class T>
void ukernel_offs_scalar(index_t kc, const T* a, const index_t* roff, index_t mr, const index_t* koff, const T* b,
                         T* c, index_t ldc, T alpha, T beta) {
  ukernel_offs<VScalar<T>, kMRScalar, kNRScalar>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
template void ukernel_offs_scalar<float>(GV_OFFS_ARGS(float));
template void ukernel_offs_scalar<double>(GV_OFFS_ARGS(double));

template <class T>
void ukernel_boffs_scalar(index_t kc, const T* a, const T* b, const index_t* boff, T* c, index_t ldc, const T* bias,
                          const T* clamp, T beta, const T* ref) {
  ukernel_boffs<VScalar<T>, kMRScalar, kNRScalar>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
template void ukernel_boffs_scalar<float>(GV_BOFFS_ARGS(float));
template void ukernel_boffs_scalar<double>(GV_BOFFS_ARGS(double));

}  // namespace gemm_detail

template <class T>
void gemm_cpu(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
              const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  using namespace gemm_detail;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const Problem P{trans_a, trans_b, M, N, K, lda, ldb, ldc};
  constexpr bool f32 = sizeof(T) == 4;
  switch (cpu_level()) {
    case SimdLevel::avx512:
      if constexpr (f32)
        gemm_driver<T, kMR512, kNR512_f32>(ukernel_avx512_f32, P, alpha, A, B, beta, C);
      else
        gemm_driver<T, kMR512, kNR512_f64>(ukernel_avx512_f64, P, alpha, A, B, beta, C);
      return;
    case SimdLevel::avx2:
      if constexpr (f32)
        gemm_driver<T, kMR256, kNR256_f32>(ukernel_avx2_f32, P, alpha, A, B, beta, C);
      else
        gemm_driver<T, kMR256, kNR256_f64>(ukernel_avx2_f64, P, alpha, A, B, beta, C);
      return;
    default:
      gemm_driver<T, kMRScalar, kNRScalar>(ukernel_scalar<T>, P, alpha, A, B, beta, C);
      return;
  }
}

template void gemm_cpu<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t, const float*, index_t,
                              float, float*, index_t);
template void gemm_cpu<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t, const double*,
                               index_t, double, double*, index_t);

}  // namespace gradvis
