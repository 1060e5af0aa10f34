// Dense matrix multiply on row-major matrices:
//   C = alpha * op(A) * op(B) + beta * C,  op(A) is (M,K), op(B) is (K,N), C is (M,N).
// op(X) = X^T when trans_x; lda/ldb/ldc are the row strides of the stored matrices.
// beta == 0 never reads C (it may hold garbage or NaN).
// Multi-threaded over blocks of C when called outside an OpenMP parallel region;
// single-threaded when called from inside one (e.g. a conv parallel over images).
// Uses the scratch slots ScratchSlot::gemm_a and gemm_b for the packed panels.
#pragma once

#include "common.h"

namespace gradvis {

template <class T>
void gemm_cpu(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
              const T* B, index_t ldb, T beta, T* C, index_t ldc);

extern template void gemm_cpu<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                                     const float*, index_t, float, float*, index_t);
extern template void gemm_cpu<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t,
                                      const double*, index_t, double, double*, index_t);


}  // namespace gradvis
