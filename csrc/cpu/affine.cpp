#include "ops/affine.h"

#include <algorithm>

#include "ops/gemm.h"

namespace gradvis {

template <class T>
void affine_forward(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M) {
  gemm<T>(false, false, N, M, D, T(1), x, D, w, M, T(0), out, M);
  if (b)
    parallel_for(N, [&](index_t n) {
      T* o = out + n * M;
      for (index_t m = 0; m < M; ++m) o[m] += b[m];
    });
}

template <class T>
void affine_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t N, index_t D, index_t M) {
  gemm<T>(false, true, N, D, M, T(1), dout, M, w, M, T(0), dx, D);
  gemm<T>(true, false, D, M, N, T(1), x, D, dout, M, T(0), dw, M);
  if (db)
    // Columns split over threads; each column summed over rows in order (deterministic).
    parallel_chunks(M, [&](index_t m0, index_t m1, int) {
      std::fill(db + m0, db + m1, T(0));
      for (index_t n = 0; n < N; ++n) {
        const T* d = dout + n * M;
        for (index_t m = m0; m < m1; ++m) db[m] += d[m];
      }
    });
}

template void affine_forward<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t);
template void affine_forward<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t);
template void affine_backward<float>(float*, float*, float*, const float*, const float*, const float*, index_t,
                                     index_t, index_t);
template void affine_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                      index_t, index_t, index_t);

}  // namespace gradvis
