// Internal to the gemm: the register-blocked micro-kernels, one set per SIMD level.
// A micro-kernel computes an MR x NR block of C from a packed A sliver (kc x MR,
// k-major) and a packed B sliver (kc x NR, k-major):
//   C[i][j] = alpha * sum_k a[k*MR+i] * b[k*NR+j] + beta * C[i][j]   (beta == 0: C not read)
#pragma once

#include <exception>
#include <mutex>

#include "common.h"
#include "cpu/simd.h"

namespace gradvis {
namespace gemm_detail {

template <class T>
using ukernel_fn = void (*)(index_t kc, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta);

// ukernel_fn's tile that also prefetches into L2 the stream at pf, one cache line
// for each one of A it reads (pf + k MR): the next slivers of an A that comes from
// memory, e.g. Winograd's transformed filters.
template <class T>
using ukernel_pf_fn = void (*)(index_t kc, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta, const T* pf);

// The same tile from an unpacked A (see ukernel_rows in gemm_ukernel.inc): row i
// at a + i*lda (rows >= mr repeat row 0), its k-th element at offset koff[k].
template <class T>
using ukernel_rows_fn = void (*)(index_t kc, const T* a, index_t lda, index_t mr, const index_t* koff, const T* b,
                                 T* c, index_t ldc, T alpha, T beta);

// The same tile with row i of A at a + roff[i] (rows >= mr repeat row 0), its k-th
// element at offset koff[k] (see ukernel_offs in gemm_ukernel.inc).
template <class T>
using ukernel_offs_fn = void (*)(index_t kc, const T* a, const index_t* roff, index_t mr, const index_t* koff,
                                 const T* b, T* c, index_t ldc, T alpha, T beta);

// The same tile from a packed A and B's k-th row at b + boff[k], rows started
// from bias[i] (if any), clamped to [clamp[0], clamp[1]] on store (if clamp is
// not null; ReLU: 0 and infinity), alpha 1, a residual ref (laid out as c) added
// before the clamp if not null (ukernel_boffs).
template <class T>
using ukernel_boffs_fn = void (*)(index_t kc, const T* a, const T* b, const index_t* boff, T* c, index_t ldc,
                                  const T* bias, const T* clamp, T beta, const T* ref);

// Tile sizes (MR rows x NR columns) per level; NR is a multiple of the vector width.
constexpr int kMR512 = 8, kNR512_f32 = 32, kNR512_f64 = 16;
constexpr int kMR256 = 6, kNR256_f32 = 16, kNR256_f64 = 8;
constexpr int kMRScalar = 4, kNRScalar = 4;
// AVX-512 float, A read in place, one vector wide: for at most 16 output columns
// (batch-1 4x4 maps), where a 32-wide tile would compute half zeros.
constexpr int kMR512n = 16, kNR512n_f32 = 16;
// AVX-512 float, 7 rows: the transposed 1x1 convolution of 7x7 and 14x14 maps,
// whose 49 and 196 positions are whole numbers of 7-row tiles.
constexpr int kMR512r7 = 7;
// AVX2 float, 5 rows: the transposed 1x1 convolution of 7x7 maps, whose 49
// positions fill 10 five-row tiles (98%) against 9 six-row ones (91%).
constexpr int kMR256r5 = 5;

void ukernel_avx512_f32(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta);
void ukernel_avx512_f64(index_t kc, const double* a, const double* b, double* c, index_t ldc, double alpha,
                        double beta);
#define GV_PF_ARGS(T) index_t, const T*, const T*, T*, index_t, T, T, const T*
void ukernel_avx512_f32_pf(GV_PF_ARGS(float));
void ukernel_avx512_f32_narrow_pf(GV_PF_ARGS(float));
void ukernel_avx2_f32_pf(GV_PF_ARGS(float));
// The 6- and 5-row AVX2 float tiles that also prefetch `lines` cache lines from
// pf, spread over their k-steps (ukernel's kPfLines)
template <class T>
using ukernel_lines_fn = void (*)(index_t kc, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta, const T* pf,
                                  index_t lines);
void ukernel_avx2_f32_lines(index_t, const float*, const float*, float*, index_t, float, float, const float*, index_t);
void ukernel_avx2_f32_5_lines(index_t, const float*, const float*, float*, index_t, float, float, const float*,
                              index_t);
void ukernel_avx2_f32(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta);
void ukernel_avx2_f64(index_t kc, const double* a, const double* b, double* c, index_t ldc, double alpha,
                      double beta);
template <class T>
void ukernel_scalar(index_t kc, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta);

#define GV_ROWS_ARGS(T) index_t, const T*, index_t, index_t, const index_t*, const T*, T*, index_t, T, T
void ukernel_rows_avx512_f32(GV_ROWS_ARGS(float));
void ukernel_rows_avx512_f64(GV_ROWS_ARGS(double));
void ukernel_rows_avx512_f32_narrow(GV_ROWS_ARGS(float));
void ukernel_avx512_f32_narrow(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                               float beta);
void ukernel_rows_avx2_f32(GV_ROWS_ARGS(float));
void ukernel_avx2_f32_5(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta);
void ukernel_rows_avx2_f64(GV_ROWS_ARGS(double));
template <class T>
void ukernel_rows_scalar(GV_ROWS_ARGS(T));

#define GV_OFFS_ARGS(T) index_t, const T*, const index_t*, index_t, const index_t*, const T*, T*, index_t, T, T
void ukernel_offs_avx512_f32(GV_OFFS_ARGS(float));
void ukernel_offs_avx512_f32_7(GV_OFFS_ARGS(float));
void ukernel_offs_avx2_f32_5(GV_OFFS_ARGS(float));
void ukernel_offs_avx512_f64(GV_OFFS_ARGS(double));
void ukernel_offs_avx2_f32(GV_OFFS_ARGS(float));
// ukernel_offs_avx2_f32 that prefetches the lines of A it reads 8 k-steps ahead
void ukernel_offs_avx2_f32_ahead(GV_OFFS_ARGS(float));
void ukernel_offs_avx2_f64(GV_OFFS_ARGS(double));
template <class T>
void ukernel_offs_scalar(GV_OFFS_ARGS(T));
#define GV_BOFFS_ARGS(T) index_t, const T*, const T*, const index_t*, T*, index_t, const T*, const T*, T, const T*
void ukernel_boffs_avx512_f32(GV_BOFFS_ARGS(float));
void ukernel_boffs_avx512_f64(GV_BOFFS_ARGS(double));
// ukernel_boffs_avx512_f32 that prefetches the lines of B it reads 16 k-steps ahead
void ukernel_boffs_avx512_f32_ahead(GV_BOFFS_ARGS(float));
void ukernel_boffs_avx2_f32(GV_BOFFS_ARGS(float));
void ukernel_boffs_avx2_f64(GV_BOFFS_ARGS(double));
// ukernel_boffs_avx2_f32 for the first mr (1 to 5) rows of a 6-row sliver: a
// layer's last filters when 6 does not divide their count
ukernel_boffs_fn<float> ukernel_boffs_avx2_f32_rows(int mr);
template <class T>
void ukernel_boffs_scalar(GV_BOFFS_ARGS(T));

constexpr index_t kKC = 256;  // K block: an A sliver (MR x kKC) stays in L1, the B block in L2

// [0, K) cut into near-equal blocks of at most kKC rows; block b is [begin(b), begin(b+1)).
struct KBlocks {
  index_t K, n;
  index_t begin(index_t b) const { return K * b / n; }
  // Blocks differ in size by at most one and the first is a smallest one: buffers
  // must be sized for this, not for begin(1).
  index_t max_size() const { return (K + n - 1) / n; }
};
inline KBlocks kblocks(index_t K) { return {K, (K + kKC - 1) / kKC}; }


// Calls f(kern, rows_kern, MR, NR) with the micro-kernels (packed A, A in place) of
// the CPU's SIMD level.
template <class T, class F>
void with_ukernel(F&& f) {
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

}  // namespace gemm_detail

// An exception must not escape an OpenMP region (that aborts the process): the
// work inside a region runs through trap.run(...), and the caller rethrows the
// first captured exception with trap.rethrow() after the region.
class ErrorTrap {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!err_) err_ = std::current_exception();
    }
  }
  void rethrow() {
    if (err_) std::rethrow_exception(err_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr err_;
};

}  // namespace gradvis
