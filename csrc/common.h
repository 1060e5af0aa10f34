// Shared helpers for the CPU kernels: index types, the thread team's wrappers, the memory
// limit and the per-thread scratch arena. Nothing here knows about Python.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#ifdef GRADVIS_HAVE_OPENMP
#include <omp.h>
#endif

namespace gradvis {

using index_t = std::int64_t;

// ---- threading --------------------------------------------------------------
// The kernels' thread count is one process-wide setting (set_num_threads), read
// by every parallel region: OpenMP's own count is per calling
// thread (a Python thread pool would see the default) and is shared with other
// libraries on the same runtime (torch.set_num_threads), so it is read once, at
// the first use, and never again.
inline int omp_default_threads() {
#ifdef GRADVIS_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline std::atomic<int>& thread_count() {
  static std::atomic<int> n{omp_default_threads()};
  return n;
}
inline int max_threads() { return thread_count().load(std::memory_order_relaxed); }
// The thread team (team.cpp): a pool of workers whose waits yield their core, or
// OpenMP's regions with GRADVIS_TEAM=openmp in the environment (read once).
namespace team_detail {
using JobFn = void (*)(void* ctx, index_t t, index_t nt);
// fn(ctx, t, nt') on nt' threads (the caller is t = 0; nt' = nt, fewer when the
// system refuses threads, 1 when nested); a region of another thread holding the
// pool is waited for. Returns when all have finished, rethrowing the first exception.
void run(index_t nt, JobFn fn, void* ctx);
void barrier();  // among the threads of the region this thread runs (none: no-op)
bool in_team();  // inside a region of run()
inline bool use_pool() {
  static const bool pool = [] {
    const char* v = std::getenv("GRADVIS_TEAM");
    return !(v && v[0] == 'o');  // "openmp"
  }();
  return pool;
}
}  // namespace team_detail

inline bool in_parallel() {
  if (team_detail::in_team()) return true;
#ifdef GRADVIS_HAVE_OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}
inline void set_num_threads(int n) {
#ifdef GRADVIS_HAVE_OPENMP
  if (n > 0) thread_count().store(n, std::memory_order_relaxed);
#else
  (void)n;
#endif
}

// A cap on the team of the calling thread's next kernels (TeamCap), set by an op
// whose work is too small for the whole team; kernels that split their work
// themselves read it through team_size().
inline int& team_cap() {
  thread_local int cap = 1 << 30;
  return cap;
}
class TeamCap {
 public:
  explicit TeamCap(int n) : old_(team_cap()) { team_cap() = n < old_ ? (n < 1 ? 1 : n) : old_; }
  ~TeamCap() { team_cap() = old_; }
  TeamCap(const TeamCap&) = delete;
  TeamCap& operator=(const TeamCap&) = delete;

 private:
  int old_;
};

// Threads a kernel may use from here: the team outside a parallel region (at most
// the cap), 1 inside.
inline index_t team_size() {
  if (in_parallel()) return 1;
  const int n = max_threads(), cap = team_cap();
  return n < cap ? n : cap;
}

// The calling thread's team: f(t, nthreads) on each of nt threads, one parallel
// region (serial when nt == 1). Phases inside are separated with team_barrier().
// f must not throw past a team_barrier (the others would wait there): kernels
// catch inside (ErrorTrap) and rethrow after the region.
template <class F>
inline void team_run(index_t nt, F&& f) {
  if (nt > 1) {
    using Fn = std::remove_reference_t<F>;
    if (team_detail::use_pool())
      return team_detail::run(
          nt, [](void* c, index_t t, index_t n) { (*static_cast<Fn*>(c))(t, n); },
          const_cast<void*>(static_cast<const void*>(&f)));
#ifdef GRADVIS_HAVE_OPENMP
#pragma omp parallel num_threads(int(nt))
    f(index_t(omp_get_thread_num()), index_t(omp_get_num_threads()));
    return;
#endif
  }
  f(index_t(0), index_t(1));
}

inline void team_barrier() {
  if (team_detail::use_pool()) return team_detail::barrier();
#ifdef GRADVIS_HAVE_OPENMP
#pragma omp barrier
#endif
}


// Threads for `work` units (multiply-adds or element visits) so that each gets at
// least `grain` of them: small work stays on the calling thread, where a parallel
// region would cost more than it saves. At most team_size() and at most `items`.
inline int grain_threads(double work, double grain, index_t items) {
  const index_t team = team_size();
  index_t nt = index_t(work / grain);
  if (nt > team) nt = team;
  if (nt > items) nt = items;
  return nt < 1 ? 1 : int(nt);
}

// Run f(i) for i in [0, n) over at most nt threads (nt from grain_threads), in
// contiguous chunks; serial when nested or tiny.
template <class F>
inline void parallel_for_nt(int nt, index_t n, F&& f) {
  if (nt > 1 && n > 1 && !in_parallel())
    return team_run(std::min<index_t>(nt, n), [&](index_t t, index_t nth) {
      for (index_t i = n * t / nth, e = n * (t + 1) / nth; i < e; ++i) f(i);
    });
  for (index_t i = 0; i < n; ++i) f(i);
}

// parallel_for_nt over the whole team.
template <class F>
inline void parallel_for(index_t n, F&& f) {
  parallel_for_nt(int(team_size()), n, f);
}

// Split [0, n) into contiguous chunks, one per thread: f(begin, end, tid).
template <class F>
inline void parallel_chunks(index_t n, F&& f) {
  const index_t nt_max = team_size();
  if (n > 1 && nt_max > 1)
    return team_run(nt_max, [&](index_t t, index_t nt) {
      const index_t b = n * t / nt, e = n * (t + 1) / nt;
      if (b < e) f(b, e, int(t));
    });
  f(index_t(0), n, 0);
}

// ---- memory limit -------------------------------------------------------------
// Outputs and workspaces larger than this are refused before anything is
// allocated (set_memory_limit; default: the machine's physical memory), so a
// shape whose size overflows or is absurd ends in an error, not in swapping.
inline std::size_t physical_memory() {
#if defined(__unix__) || defined(__APPLE__)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return std::size_t(pages) * std::size_t(page);
#endif
  return std::size_t(1) << 36;  // unknown: 64 GiB
}
inline std::atomic<std::size_t>& memory_limit_ref() {
  static std::atomic<std::size_t> limit{physical_memory()};
  return limit;
}
inline std::size_t memory_limit() { return memory_limit_ref().load(std::memory_order_relaxed); }
inline void set_memory_limit(std::size_t bytes) { memory_limit_ref().store(bytes, std::memory_order_relaxed); }

// a * b, or false when it overflows std::size_t.
inline bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) { return !__builtin_mul_overflow(a, b, &out); }

// Bytes of an array of `item` bytes per element and dimensions dims[0, ndim), or
// false when the product overflows or a dimension is negative.
inline bool checked_bytes(const std::int64_t* dims, int ndim, std::size_t item, std::size_t& out) {
  std::size_t n = item;
  for (int i = 0; i < ndim; ++i) {
    if (dims[i] < 0 || !checked_mul(n, std::size_t(dims[i]), n)) return false;
  }
  out = n;
  return true;
}

// ---- scratch memory -----------------------------------------------------------
// Per-thread, 64-byte aligned buffers that grow and are never given back, so a
// gradient loop that calls the same kernel thousands of times does not pay
// for fresh pages (glibc returns large blocks to the OS on free) every call.
// One kernel holds several buffers at once, each in its own slot. Kernels that
// never run nested in one another share slot numbers; a kernel that holds
// buffers across a gemm_cpu call uses slots other than the gemm's.
enum class ScratchSlot : int {
  // gemm_cpu's packed panels
  gemm_a = 0,
  gemm_b = 1,
  // conv2d (implicit gemm, gemm + col2im); calls gemm_cpu
  conv_cols = 2,       // per thread: im2col columns; calling thread: the phase-split image
  conv_partial = 3,    // calling thread: per-thread partial filter gradients
  conv_amx_sub = 3,    // calling thread: the AMX path's copied positions, column matrix or strided dx
                       // (never live with a filter gradient)
  conv_pack_a = 4,     // calling thread: the packed weights (transposed 1x1 path: the packed positions),
                       // shared by the team
  conv_pack_b = 5,     // per thread: packed B block
  conv_pack_a2 = 6,    // per thread: packed A block (weight gradient)
  conv_panel = 7,      // per thread: output panel of a chunk (small maps)
  conv_dx_split = 7,   // per thread: input gradient's phase-split planes (never live with a panel)
  // depthwise conv (never nested in the above)
  depthwise_prep = 2,  // per thread: the prepared input plane (or dout, input gradient)
  depthwise_dy = 3,    // per thread: dout rows (weight gradient)
  depthwise_taps = 4,  // per thread: tap offsets (input gradient)
  depthwise_w = 5,     // per thread: tap weights (input gradient) or vector sums (weight gradient)
  depthwise_row = 6,   // per thread: a row of a strided input gradient
  depthwise_flip = 7,  // calling thread: the flipped filters of a stride-1 input gradient
  // Winograd (calls gemm_cpu)
  winograd_u = 2,      // calling thread: transformed filters (shared)
  winograd_v = 3,      // transformed inputs of a block (calling thread's when shared)
  winograd_m = 4,      // products of a block (calling thread's when shared)
  winograd_local = 5,  // every thread: transform buffers
  // pooling
  pool_row = 0,        // max pool: a row of maxima; avg pool: a row's column sums or gradients
  pool_count = 1,      // max pool: a row's window counts
  pool_even = 2,       // max pool: the row's even/odd split (stride 2)
  pool_cell = 3,       // max pool: window cell offsets
  // batch norm
  batchnorm_acc = 0,   // per-block running sums
  // fully connected
  affine_part = 0,     // calling thread: the few-rows product's partial sums (shared by the team)
  // gaussian blur
  blur_mid = 0,        // the intermediate image
  blur_row = 1,        // per thread: a padded row
  blur_v_plan = 2,     // the vertical pass's plan (CSR)
  blur_v_plan_t = 3,   // its transpose (adjoint)
  blur_plan_tmp = 4,   // plan construction
  blur_h_plan = 5,     // the horizontal pass's plan
  blur_h_plan_t = 6,   // its transpose, or the reflected column index
  blur_row2 = 7,       // per thread: the adjoint's second row buffer
};

class Scratch {
 public:
  static constexpr int kSlots = 8;
  ~Scratch() {
    for (auto& b : bufs_) std::free(b.ptr);
  }
  void* get(ScratchSlot slot, std::size_t bytes) {
    Buf& b = bufs_[int(slot)];
    if (bytes > memory_limit() || bytes > (std::size_t(-1) >> 2))
      throw std::length_error("a workspace of " + std::to_string(bytes) + " bytes is above the memory limit of " +
                              std::to_string(memory_limit()) + " bytes (gradvis.set_memory_limit)");
    if (b.size < bytes) {
      std::free(b.ptr);
      b.ptr = nullptr;
      b.size = 0;
      std::size_t sz = (bytes + 63) / 64 * 64;
      b.ptr = std::aligned_alloc(64, sz);
      if (!b.ptr) throw std::bad_alloc();
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
inline T* scratch(ScratchSlot slot, std::size_t count) {
  std::size_t bytes;
  if (!checked_mul(count, sizeof(T), bytes)) bytes = std::size_t(-1);
  return static_cast<T*>(thread_scratch().get(slot, bytes));
}

// ---- shapes -----------------------------------------------------------------------
// Output size of a sliding window along one axis (floor or ceil mode).
inline index_t window_out_size(index_t in, index_t k, index_t stride, index_t pad_lo, index_t pad_hi,
                               index_t dilation = 1, bool ceil_mode = false) {
  const index_t eff = dilation * (k - 1) + 1;
  const index_t span = in + pad_lo + pad_hi - eff;
  // A window past the padded input: none in floor mode; in ceil mode the first
  // one if it starts inside (PyTorch and ONNX: a 3x3 window on a 2x2 map gives 1)
  if (span < 0 && !(ceil_mode && span + stride > 0)) return 0;
  index_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // As in PyTorch/ONNX: the last window must start inside the input or left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad_lo) --out;
  return out;
}

}  // namespace gradvis
