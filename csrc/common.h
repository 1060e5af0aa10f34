// Shared helpers for the CPU kernels: index types, OpenMP wrappers and the
// per-thread scratch arena. Nothing here knows about Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef GRADVIS_HAVE_OPENMP
#include <omp.h>
#endif

namespace gradvis {

using index_t = std::int64_t;

// ---- threading --------------------------------------------------------------
inline int max_threads() {
#ifdef GRADVIS_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline int thread_id() {
#ifdef GRADVIS_HAVE_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
inline bool in_parallel() {
#ifdef GRADVIS_HAVE_OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}
inline void set_num_threads(int n) {
#ifdef GRADVIS_HAVE_OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Run f(i) for i in [0, n) over the OpenMP team; serial when nested or tiny.
template <class F>
inline void parallel_for(index_t n, F&& f) {
#ifdef GRADVIS_HAVE_OPENMP
  if (n > 1 && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i) f(i);
}

// Split [0, n) into contiguous chunks, one per thread: f(begin, end, tid).
template <class F>
inline void parallel_chunks(index_t n, F&& f) {
#ifdef GRADVIS_HAVE_OPENMP
  if (n > 1 && !omp_in_parallel() && omp_get_max_threads() > 1) {
#pragma omp parallel
    {
      const index_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const index_t b = n * t / nt, e = n * (t + 1) / nt;
      if (b < e) f(b, e, (int)t);
    }
    return;
  }
#endif
  f(index_t(0), n, 0);
}

// The calling thread's team: f(t, nthreads) on each of nt threads, one parallel
// region (serial when nt == 1). Phases inside are separated with team_barrier().
template <class F>
inline void team_run(index_t nt, F&& f) {
#ifdef GRADVIS_HAVE_OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads(int(nt))
    f(index_t(omp_get_thread_num()), index_t(omp_get_num_threads()));
    return;
  }
#endif
  f(index_t(0), index_t(1));
}

inline void team_barrier() {
#ifdef GRADVIS_HAVE_OPENMP
#pragma omp barrier
#endif
}

// Threads a kernel may use from here: the team outside a parallel region, 1 inside.
inline index_t team_size() { return in_parallel() ? 1 : max_threads(); }

// ---- scratch memory -----------------------------------------------------------
// Per-thread, 64-byte aligned buffers that grow and are never given back, so a
// gradient loop that calls the same kernel thousands of times does not pay
// for fresh pages (glibc returns large blocks to the OS on free) every call.
// `slot` lets one kernel hold several buffers at once.
class Scratch {
 public:
  static constexpr int kSlots = 8;
  ~Scratch() {
    for (auto& b : bufs_) std::free(b.ptr);
  }
  void* get(int slot, std::size_t bytes) {
    Buf& b = bufs_[slot];
    if (b.size < bytes) {
      std::free(b.ptr);
      std::size_t sz = (bytes + 63) / 64 * 64;
      b.ptr = std::aligned_alloc(64, sz);
      if (!b.ptr) {
        b.size = 0;
        throw std::bad_alloc();
      }
      b.size = sz;
    }
    return b.ptr;
  }

 private:
  struct Buf {
    void* ptr = nullptr;
    std::size_t size = 0;
  };
  Buf bufs_[kSlots];
};

inline Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

template <class T>
inline T* scratch(int slot, std::size_t count) {
  return static_cast<T*>(thread_scratch().get(slot, count * sizeof(T)));
}

// ---- shapes -----------------------------------------------------------------------
// Output size of a sliding window along one axis (floor or ceil mode).
inline index_t window_out_size(index_t in, index_t k, index_t stride, index_t pad_lo, index_t pad_hi,
                               index_t dilation = 1, bool ceil_mode = false) {
  const index_t eff = dilation * (k - 1) + 1;
  const index_t span = in + pad_lo + pad_hi - eff;
  if (span < 0) return 0;
  index_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // As in PyTorch/ONNX: the last window must start inside the input or left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad_lo) --out;
  return out;
}

}  // namespace gradvis
