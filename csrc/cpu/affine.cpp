#include "ops/affine.h"

#include <algorithm>

#include "ops/gemm.h"

namespace gradvis {

namespace {

constexpr index_t kFewRows = kAffineFewRows;

// Brings four rows of len values, ld apart from p, toward L2: the next four
// rows a few-rows product reads, while it reads these. The weights come from
// memory, four short streams at a time, which the hardware prefetchers followed
// at about half the rate of one long stream (1x1 layers of 1x1 maps, 1 thread:
// 12 GB/s, 15 with this; MobileNetV3-L's forward pass 7% faster).
template <class T>
inline void prefetch_rows(const T* p, index_t ld, index_t len) {
  for (const T *f = p, *e = p + len; f < e; f += 64 / sizeof(T)) {
    __builtin_prefetch(f, 0, 2);
    __builtin_prefetch(f + ld, 0, 2);
    __builtin_prefetch(f + 2 * ld, 0, 2);
    __builtin_prefetch(f + 3 * ld, 0, 2);
  }
}

// Weights of at least this many bytes, larger than L2, are taken to come from
// memory: the few-rows products then read them in one sequential stream per
// thread, a row per pass over the outputs. From cache they run faster four rows
// a pass (1 thread, 576x1024, 2.4 MB: called again, 47 us against 85; eight such
// arrays in turn, from L3, 79 against 89), from memory slower (1280x1000: 0.39 ms
// against 0.19-0.21).
constexpr std::size_t kStreamBytes = std::size_t(2) << 20;

// out (N,M) = x w (+ b) for N <= kFewRows and weights in cache (below
// kStreamBytes): the columns split over threads, each thread reading its slice
// of every row of w once, four rows a pass over its outputs (the sums over d run
// in order, whatever the thread count).
template <class T>
void few_rows_forward_cached(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M) {
  const index_t blocks = (M + 63) / 64;
  parallel_chunks(blocks, [&](index_t b0, index_t b1, int) {
    const index_t m0 = b0 * 64, m1 = std::min(M, b1 * 64), len = m1 - m0;
    for (index_t n = 0; n < N; ++n) {
      T* o = out + n * M + m0;
      for (index_t m = 0; m < len; ++m) o[m] = b ? b[m0 + m] : T(0);
    }
    index_t d = 0;
    for (; d + 4 <= D; d += 4) {  // four rows per pass over the outputs
      const T *r0 = w + d * M + m0, *r1 = r0 + M, *r2 = r1 + M, *r3 = r2 + M;
      if (d + 8 <= D) prefetch_rows(r0 + 4 * M, M, len);
      for (index_t n = 0; n < N; ++n) {
        const T* xn = x + n * D + d;
        const T a0 = xn[0], a1 = xn[1], a2 = xn[2], a3 = xn[3];
        T* o = out + n * M + m0;
#pragma omp simd
        for (index_t m = 0; m < len; ++m) o[m] += ((a0 * r0[m] + a1 * r1[m]) + a2 * r2[m]) + a3 * r3[m];
      }
    }
    for (; d < D; ++d) {
      const T* row = w + d * M + m0;
      for (index_t n = 0; n < N; ++n) {
        const T xv = x[n * D + d];
        T* o = out + n * M + m0;
#pragma omp simd
        for (index_t m = 0; m < len; ++m) o[m] += xv * row[m];
      }
    }
  });
}

// Rows of w per partial sum of the few-rows forward product: a constant, so that
// the sums do not depend on the thread count.
constexpr index_t kRowGroup = 64;

// out (N,M) = x w (+ b) for N <= kFewRows and weights from memory (kStreamBytes
// or more). w is read in one sequential stream per thread, a row per pass over
// the outputs: threads take groups of kRowGroup rows, each group's products
// summed in row order into a partial sum, and the partial sums are added to the
// bias in group order, the outputs split over the threads. (Four rows a pass, as
// few_rows_forward_cached, read four streams 4 KB apart: 1 thread, batch 1,
// 1280x1000 took 0.39 ms, 13 GB/s, against 0.19-0.21 now; one row a pass over
// each thread's slices ran 2.2x slower on 2 threads.) The sums are the same
// whatever the thread count.
template <class T>
void few_rows_forward_stream(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M) {
  const index_t groups = (D + kRowGroup - 1) / kRowGroup;
  // group g's sums for image n at part + (g N + n) M (one group: the output itself)
  T* part = groups > 1 ? scratch<T>(ScratchSlot::affine_part, std::size_t(groups * N * M)) : out;
  const index_t nt = std::min(team_size(), groups);
  team_run(nt, [&](index_t t, index_t nth) {
    for (index_t g = groups * t / nth; g < groups * (t + 1) / nth; ++g) {
      const index_t d0 = g * kRowGroup, d1 = std::min(D, d0 + kRowGroup);
      for (index_t n = 0; n < N; ++n) {
        T* o = part + (g * N + n) * M;
        const T* xn = x + n * D;
        if (groups == 1 && b) {
          for (index_t m = 0; m < M; ++m) o[m] = b[m];
        } else {
          const T xv = xn[d0];
          const T* row = w + d0 * M;
#pragma omp simd
          for (index_t m = 0; m < M; ++m) o[m] = xv * row[m];
        }
      }
      index_t d = groups == 1 && b ? d0 : d0 + 1;
      // Several images: four rows a pass, each output read and written once per
      // pass (a row a pass, four images were store-bound: 1280x1000 0.62 -> 0.68 ms),
      // the products added in the same order.
      for (; N > 1 && d + 4 <= d1; d += 4) {
        const T *r0 = w + d * M, *r1 = r0 + M, *r2 = r1 + M, *r3 = r2 + M;
        for (index_t n = 0; n < N; ++n) {
          const T* xn = x + n * D + d;
          const T a0 = xn[0], a1 = xn[1], a2 = xn[2], a3 = xn[3];
          T* o = part + (g * N + n) * M;
#pragma omp simd
          for (index_t m = 0; m < M; ++m) {
            T v = o[m];
            v += a0 * r0[m];
            v += a1 * r1[m];
            v += a2 * r2[m];
            v += a3 * r3[m];
            o[m] = v;
          }
        }
      }
      for (; d < d1; ++d) {
        const T* row = w + d * M;
        for (index_t n = 0; n < N; ++n) {
          const T xv = x[n * D + d];
          T* o = part + (g * N + n) * M;
#pragma omp simd
          for (index_t m = 0; m < M; ++m) o[m] += xv * row[m];
        }
      }
    }
    if (groups == 1) return;
    team_barrier();
    const index_t m0 = M * t / nth, m1 = M * (t + 1) / nth;
    for (index_t n = 0; n < N; ++n) {
      T* o = out + n * M;
      for (index_t m = m0; m < m1; ++m) o[m] = b ? b[m] : T(0);
      for (index_t g = 0; g < groups; ++g) {
        const T* p = part + (g * N + n) * M;
#pragma omp simd
        for (index_t m = m0; m < m1; ++m) o[m] += p[m];
      }
    }
  });
}

template <class T>
void few_rows_forward(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M) {
  if (std::size_t(D) * std::size_t(M) * sizeof(T) >= kStreamBytes)
    few_rows_forward_stream(out, x, w, b, N, D, M);
  else
    few_rows_forward_cached(out, x, w, b, N, D, M);
}

// sum of a[m] b[m] over m < n: kDotLanes running sums, one per position mod
// kDotLanes (enough to hide the additions' latency at SSE2's four floats a
// vector; 64 spilled them), added in order at the end.
constexpr int kDotLanes = 32;
template <class T>
T dot(const T* a, const T* b, index_t n) {
  T acc[kDotLanes] = {};
  index_t m = 0;
  for (; m + kDotLanes <= n; m += kDotLanes)
#pragma omp simd
    for (int j = 0; j < kDotLanes; ++j) acc[j] += a[m + j] * b[m + j];
  for (int j = 0; m < n; ++m, ++j) acc[j] += a[m] * b[m];
  T s = 0;
  for (int j = 0; j < kDotLanes; ++j) s += acc[j];
  return s;
}

// dx (N,D) = dout w^T for N <= kFewRows: one dot product per row of w and image;
// one image and weights from memory (kStreamBytes or more): a row at a time, so
// that each thread reads w in one sequential stream (1 thread, 1280x1000: 0.38 ->
// 0.22 ms); else four rows at a time (four independent sums: one would wait on
// its own additions).
template <class T>
void few_rows_backward_input(T* dx, const T* dout, const T* w, index_t N, index_t D, index_t M) {
  // Threads take whole groups of four rows, so that how a row is summed does not
  // depend on the thread count.
  if (N == 1 && std::size_t(D) * std::size_t(M) * sizeof(T) >= kStreamBytes)
    return parallel_chunks((D + 3) / 4, [&](index_t q0, index_t q1, int) {
      for (index_t d = q0 * 4, d1 = std::min(D, q1 * 4); d < d1; ++d) dx[d] = dot(dout, w + d * M, M);
    });
  parallel_chunks((D + 3) / 4, [&](index_t q0, index_t q1, int) {
    const index_t d1 = std::min(D, q1 * 4);
    index_t d = q0 * 4;
    for (; d + 4 <= d1; d += 4) {
      const T *r0 = w + d * M, *r1 = r0 + M, *r2 = r1 + M, *r3 = r2 + M;
      const T* nx = d + 8 <= d1 ? r0 + 4 * M : nullptr;
      for (index_t n = 0; n < N; ++n) {
        const T* g = dout + n * M;
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (n == 0 && nx) prefetch_rows(nx, M, M);
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (index_t m = 0; m < M; ++m) {
          s0 += g[m] * r0[m];
          s1 += g[m] * r1[m];
          s2 += g[m] * r2[m];
          s3 += g[m] * r3[m];
        }
        T* o = dx + n * D + d;
        o[0] = s0, o[1] = s1, o[2] = s2, o[3] = s3;
      }
    }
    for (; d < d1; ++d) {
      const T* row = w + d * M;
      for (index_t n = 0; n < N; ++n) {
        const T* g = dout + n * M;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (index_t m = 0; m < M; ++m) s += g[m] * row[m];
        dx[n * D + d] = s;
      }
    }
  });
}

}  // namespace

template <class T>
void affine_forward_cpu(T* out, const T* x, const T* w, const T* b, index_t N, index_t D, index_t M) {
  if (N <= kFewRows) return few_rows_forward(out, x, w, b, N, D, M);
  gemm_cpu<T>(false, false, N, M, D, T(1), x, D, w, M, T(0), out, M);
  if (b)
    parallel_for(N, [&](index_t n) {
      T* o = out + n * M;
      for (index_t m = 0; m < M; ++m) o[m] += b[m];
    });
}

template <class T>
void affine_backward_cpu(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, index_t N, index_t D, index_t M) {
  if (dx) {
    if (N <= kFewRows)
      few_rows_backward_input(dx, dout, w, N, D, M);
    else
      gemm_cpu<T>(false, true, N, D, M, T(1), dout, M, w, M, T(0), dx, D);
  }
  if (dw) gemm_cpu<T>(true, false, D, M, N, T(1), x, D, dout, M, T(0), dw, M);
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

template <class T>
void affine_rows_forward_cpu(T* out, const T* x, const T* w, index_t N, index_t D, index_t M) {
  few_rows_forward<T>(out, x, w, nullptr, N, D, M);
}
template <class T>
void affine_rows_dot_cpu(T* out, const T* x, const T* w, index_t N, index_t D, index_t M) {
  few_rows_backward_input<T>(out, x, w, N, D, M);
}
template void affine_rows_forward_cpu<float>(float*, const float*, const float*, index_t, index_t, index_t);
template void affine_rows_forward_cpu<double>(double*, const double*, const double*, index_t, index_t, index_t);
template void affine_rows_dot_cpu<float>(float*, const float*, const float*, index_t, index_t, index_t);
template void affine_rows_dot_cpu<double>(double*, const double*, const double*, index_t, index_t, index_t);

template void affine_forward_cpu<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t);
template void affine_forward_cpu<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t);
template void affine_backward_cpu<float>(float*, float*, float*, const float*, const float*, const float*, index_t,
                                     index_t, index_t);
template void affine_backward_cpu<double>(double*, double*, double*, const double*, const double*, const double*,
                                      index_t, index_t, index_t);

}  // namespace gradvis
