// AVX2+FMA gemm micro-kernels (float 6x16, double 6x8: 12 ymm accumulators).
// Compiled for baseline x86-64 like the rest; only these functions carry the
// AVX2 target, and the driver calls them only when cpu_level() says so.
#include "cpu/gemm_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define GV_TARGET __attribute__((target("avx2,fma")))
#define GV_INLINE GV_TARGET __attribute__((always_inline)) static inline

namespace gradvis {
namespace gemm_detail {
namespace {

#include "cpu/simd_vec_avx2.inc"

#include "cpu/gemm_ukernel.inc"

}  // namespace

void ukernel_avx2_f32(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel<V256f, kMR256, kNR256_f32 / 8>(kc, a, b, c, ldc, alpha, beta);
}
void ukernel_avx2_f32_pf(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta,
                         const float* pf) {
  ukernel<V256f, kMR256, kNR256_f32 / 8, kPfStream>(kc, a, b, c, ldc, alpha, beta, pf);
}
void ukernel_avx2_f64(index_t kc, const double* a, const double* b, double* c, index_t ldc, double alpha,
                        double beta) {
  ukernel<V256d, kMR256, kNR256_f64 / 4>(kc, a, b, c, ldc, alpha, beta);
}

void ukernel_rows_avx2_f32(index_t kc, const float* a, index_t lda, index_t mr, const index_t* koff, const float* b,
                          float* c, index_t ldc, float alpha, float beta) {
  ukernel_rows<V256f, kMR256, kNR256_f32 / 8>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_rows_avx2_f64(index_t kc, const double* a, index_t lda, index_t mr, const index_t* koff,
                          const double* b, double* c, index_t ldc, double alpha, double beta) {
  ukernel_rows<V256d, kMR256, kNR256_f64 / 4>(kc, a, lda, mr, koff, b, c, ldc, alpha, beta);
}

void ukernel_offs_avx2_f32(index_t kc, const float* a, const index_t* roff, index_t mr, const index_t* koff,
                          const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_offs<V256f, kMR256, kNR256_f32 / 8>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_offs_avx2_f32_ahead(index_t kc, const float* a, const index_t* roff, index_t mr, const index_t* koff,
                                 const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_offs<V256f, kMR256, kNR256_f32 / 8, 8>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_avx2_f32_lines(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                            float beta, const float* pf, index_t lines) {
  ukernel<V256f, kMR256, kNR256_f32 / 8, kPfLines>(kc, a, b, c, ldc, alpha, beta, pf, lines);
}
void ukernel_avx2_f32_5_lines(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha,
                              float beta, const float* pf, index_t lines) {
  ukernel<V256f, kMR256r5, kNR256_f32 / 8, kPfLines>(kc, a, b, c, ldc, alpha, beta, pf, lines);
}
void ukernel_avx2_f32_5(index_t kc, const float* a, const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel<V256f, kMR256r5, kNR256_f32 / 8>(kc, a, b, c, ldc, alpha, beta);
}
void ukernel_offs_avx2_f32_5(index_t kc, const float* a, const index_t* roff, index_t mr, const index_t* koff,
                             const float* b, float* c, index_t ldc, float alpha, float beta) {
  ukernel_offs<V256f, kMR256r5, kNR256_f32 / 8>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}
void ukernel_offs_avx2_f64(index_t kc, const double* a, const index_t* roff, index_t mr, const index_t* koff,
                          const double* b, double* c, index_t ldc, double alpha, double beta) {
  ukernel_offs<V256d, kMR256, kNR256_f64 / 4>(kc, a, roff, mr, koff, b, c, ldc, alpha, beta);
}

void ukernel_boffs_avx2_f32(index_t kc, const float* a, const float* b, const index_t* boff, float* c, index_t ldc,
                           const float* bias, const float* clamp, float beta, const float* ref) {
  ukernel_boffs<V256f, kMR256, kNR256_f32 / 8>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
void ukernel_boffs_avx2_f64(index_t kc, const double* a, const double* b, const index_t* boff, double* c, index_t ldc,
                           const double* bias, const double* clamp, double beta, const double* ref) {
  ukernel_boffs<V256d, kMR256, kNR256_f64 / 4>(kc, a, b, boff, c, ldc, bias, clamp, beta, ref);
}
ukernel_boffs_fn<float> ukernel_boffs_avx2_f32_rows(int mr) {
  constexpr int NV = kNR256_f32 / 8;
  switch (mr) {
    case 1: return ukernel_boffs<V256f, 1, NV, 0, kMR256>;
    case 2: return ukernel_boffs<V256f, 2, NV, 0, kMR256>;
    case 3: return ukernel_boffs<V256f, 3, NV, 0, kMR256>;
    case 4: return ukernel_boffs<V256f, 4, NV, 0, kMR256>;
    case 5: return ukernel_boffs<V256f, 5, NV, 0, kMR256>;
    default: return nullptr;
  }
}
}  // namespace gemm_detail
}  // namespace gradvis

#else  // not x86-64: never selected (cpu_level() is scalar), but must link.
#include <cstdlib>
namespace gradvis {
namespace gemm_detail {
void ukernel_avx2_f32(index_t, const float*, const float*, float*, index_t, float, float) { std::abort(); }
void ukernel_avx2_f32_pf(GV_PF_ARGS(float)) { std::abort(); }
void ukernel_avx2_f32_lines(index_t, const float*, const float*, float*, index_t, float, float, const float*, index_t) {
  std::abort();
}
void ukernel_avx2_f32_5_lines(index_t, const float*, const float*, float*, index_t, float, float, const float*,
                              index_t) {
  std::abort();
}
void ukernel_avx2_f64(index_t, const double*, const double*, double*, index_t, double, double) { std::abort(); }
void ukernel_rows_avx2_f32(GV_ROWS_ARGS(float)) { std::abort(); }
void ukernel_rows_avx2_f64(GV_ROWS_ARGS(double)) { std::abort(); }
void ukernel_offs_avx2_f32(GV_OFFS_ARGS(float)) { std::abort(); }
void ukernel_offs_avx2_f32_5(GV_OFFS_ARGS(float)) { std::abort(); }
void ukernel_offs_avx2_f32_ahead(GV_OFFS_ARGS(float)) { std::abort(); }
void ukernel_avx2_f32_5(index_t, const float*, const float*, float*, index_t, float, float) { std::abort(); }
void ukernel_offs_avx2_f64(GV_OFFS_ARGS(double)) { std::abort(); }
void ukernel_boffs_avx2_f32(GV_BOFFS_ARGS(float)) { std::abort(); }
void ukernel_boffs_avx2_f64(GV_BOFFS_ARGS(double)) { std::abort(); }
ukernel_boffs_fn<float> ukernel_boffs_avx2_f32_rows(int) { return nullptr; }
}  // namespace gemm_detail
}  // namespace gradvis
#endif
