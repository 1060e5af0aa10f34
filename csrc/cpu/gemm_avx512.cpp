// AVX-512 gemm micro-kernels (float 8x32, double 8x16: 16 zmm accumulators).
// Compiled for baseline x86-64 like the rest; only these functions carry the
// AVX-512 target, and the driver calls them only when cpu_level() says so.
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GV_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define GV_INLINE GV_TARGET __attribute__((always_inline)) static inline

namespace gradvis {
namespace gemm_detail {
namespace {

#include "cpu/simd_vec_avx512.inc"

#include "cpu/gemm_ukernel.inc"

}  // namespace

void ukernel_avx512_f32(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel<V512f, kMR512, kNR512_f32 / 16>(kc, a, b, c, ldc, alpha, beta);
}
void ukernel_avx512_f32_pf(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                           float beta, const float* pf) {
  ukernel<V512f, kMR512, kNR512_f32 / 16, kPfStream>(kc, a, b, c, ldc, alpha, beta, pf);
}
void ukernel_avx512_f64(index_t kc, const double* a, const double* b, double* c, index_t ldc, double alpha,
                        double beta) {
  ukernel<V512d, kMR512, kNR512_f64 / 8>(kc, a, b, c, ldc, alpha, beta);
}

void ukernel_rows_avx512_f32(index_t kc, const float* a, index_t lda, index_t mr, const index_t* koff, const float* b,
                          float* c, index_t ldc, float alpha, float beta) {
  ukernel_rows<V512f, kMR512, kNR512_f32 / 16>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_avx512_f32_narrow(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                               float beta) {
  ukernel<V512f, kMR512n, kNR512n_f32 / 16>(kc, a, b, c, ldc, alpha, beta);
}
void ukernel_avx512_f32_narrow_pf(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                                  float beta, const float* pf) {
  ukernel<V512f, kMR512n, kNR512n_f32 / 16, kPfStream>(kc, a, b, c, ldc, alpha, beta, pf);
}
void ukernel_rows_avx512_f32_narrow(index_t kc, const float* a, index_t lda, index_t mr, const index_t* koff,
                                    const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_rows<V512f, kMR512n, kNR512n_f32 / 16>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_rows_avx512_f64(index_t kc, const double* a, index_t lda, index_t mr, const index_t* koff,
                          const double* b, double* c, index_t ldc, double alpha, double beta) {
  ukernel_rows<V512d, kMR512, kNR512_f64 / 8>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}

void ukernel_offs_avx512_f32(index_t kc, const float* a, const index_t* roff, index_t mr, const index_t* koff,
                          const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_offs<V512f, kMR512, kNR512_f32 / 16>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_offs_avx512_f32_7(index_t kc, const float* a, const index_t* roff, index_t mr, const index_t* koff,
                               const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_offs<V512f, kMR512r7, kNR512_f32 / 16>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_offs_avx512_f64(index_t kc, const double* a, const index_t* roff, index_t mr, const index_t* koff,
                          const double* b, double* c, index_t ldc, double alpha, double beta) {
  ukernel_offs<V512d, kMR512, kNR512_f64 / 8>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}

void ukernel_boffs_avx512_f32(index_t kc, const float* a, const float* b, const index_t* boff, float* c, index_t ldc,
                           const float* bias, const float* clamp, float beta, const float* ref) {
  ukernel_boffs<V512f, kMR512, kNR512_f32 / 16>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
void ukernel_boffs_avx512_f64(index_t kc, const double* a, const double* b, const index_t* boff, double* c, index_t ldc,
                           const double* bias, const double* clamp, double beta, const double* ref) {
  ukernel_boffs<V512d, kMR512, kNR512_f64 / 8>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
void ukernel_boffs_avx512_f32_ahead(index_t kc, const float* a, const float* b, const index_t* boff, float* c,
                                    index_t ldc, const float* bias, const float* clamp, float beta, const float* ref) {
  ukernel_boffs<V512f, kMR512, kNR512_f32 / 16, 16>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
}  // namespace gemm_detail
}  // namespace gradvis

#else  // not x86-64: never selected (cpu_level() is scalar), but must link.
#include <cstdlib>
namespace gradvis {
namespace gemm_detail {
void ukernel_avx512_f32(index_t, const float*, const float*, float*, index_t, float, float) { std::abort(); }
void ukernel_avx512_f64(index_t, const double*, const double*, double*, index_t, double, double) { std::abort(); }
void ukernel_avx512_f32_pf(GV_PF_ARGS(float)) { std::abort(); }
void ukernel_avx512_f32_narrow_pf(GV_PF_ARGS(float)) { std::abort(); }
void ukernel_rows_avx512_f32(GV_ROWS_ARGS(float)) { std::abort(); }
void ukernel_rows_avx512_f64(GV_ROWS_ARGS(double)) { std::abort(); }
void ukernel_rows_avx512_f32_narrow(GV_ROWS_ARGS(float)) { std::abort(); }
void ukernel_avx512_f32_narrow(index_t, const float*, const float*, float*, index_t, float, float) { std::abort(); }
void ukernel_offs_avx512_f32(GV_OFFS_ARGS(float)) { std::abort(); }
void ukernel_offs_avx512_f32_7(GV_OFFS_ARGS(float)) { std::abort(); }
void ukernel_offs_avx512_f64(GV_OFFS_ARGS(double)) { std::abort(); }
void ukernel_boffs_avx512_f32(GV_BOFFS_ARGS(float)) { std::abort(); }
void ukernel_boffs_avx512_f64(GV_BOFFS_ARGS(double)) { std::abort(); }
void ukernel_boffs_avx512_f32_ahead(GV_BOFFS_ARGS(float)) { std::abort(); }
}  // namespace gemm_detail
}  // namespace gradvis
#endif
