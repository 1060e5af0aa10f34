// The kernels' thread team (common.h: team_run and the loops built on it).
//
// One pool of worker threads for the process; a parallel region hands each of its
// threads a job through that worker's own slot and the caller runs share 0. A
// waiting thread spins on what it waits for (with the CPU's pause hint), gives its
// core away every few turns (sched_yield), and after a while sleeps on a condition
// variable: a worker between regions after GRADVIS_SPIN_US (2 ms), a thread inside
// one (a barrier, the end of the region) after kInnerSpin. The yields are what
// OpenMP's waits lack: when another process holds one of the cores, a waiting
// thread hands its time slice to the thread it waits for instead of burning it
// (libgomp's long default spin made batch-1 loops of short regions 2-40x slower
// there), and a short spin (GOMP_SPINCOUNT=1000) sends workers to sleep between
// the layers of a pass, each region then paying a wake-up that a VM makes long and
// uneven.
//
// A region of a second calling thread waits while another runs (a call's team, and
// so its rounding, never depends on what else runs); a nested one runs on its
// caller alone.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "common.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#endif

namespace gradvis {
namespace team_detail {
namespace {

thread_local int tl_index = -1;  // this thread's index in the region it runs (-1: none)
thread_local int tl_size = 0;    // that region's thread count

inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
inline void yield_core() {
#if defined(__unix__) || defined(__APPLE__)
  sched_yield();
#else
  std::this_thread::yield();
#endif
}

// Spins of the pause hint between yields, and how long a worker waits awake.
constexpr int kPausesPerYield = 16;
std::chrono::microseconds spin_time() {
  static const std::chrono::microseconds t = [] {
    if (const char* s = std::getenv("GRADVIS_SPIN_US")) {
      char* end = nullptr;
      const long v = std::strtol(s, &end, 10);
      if (end != s && v >= 0 && v <= 10000000) return std::chrono::microseconds(v);
    }
    return std::chrono::microseconds(2000);
  }();
  return t;
}

// Waits (pause, yield) until done() holds; false if it did not within `limit`
// (the caller may then sleep).
template <class Done>
bool spin_until(Done done, std::chrono::microseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned turn = 0;; ++turn) {
    for (int i = 0; i < kPausesPerYield; ++i) {
      if (done()) return true;
      cpu_pause();
    }
    if (done()) return true;
    yield_core();
    if ((turn & 15) == 15 && std::chrono::steady_clock::now() - start >= limit) return done();
  }
}

struct Slot {  // one worker's mailbox
  std::atomic<std::uint64_t> gen{0};
  JobFn fn = nullptr;
  void* ctx = nullptr;
  int nt = 0;
};

struct Pool {
  std::mutex region;  // held by the thread whose region runs on the pool
  std::vector<std::unique_ptr<Slot>> slots;  // worker i + 1 reads slots[i]; grown by the region's caller
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int> sleepers{0};
  std::atomic<int> pending{0};                 // workers of the current region still running
  std::atomic<int> bar_count{0};
  std::atomic<std::uint64_t> bar_phase{0};
  std::mutex err_mu;
  std::exception_ptr err;

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(err_mu);
    if (!err) err = e;
  }
};

// Waits for done() (whose loads must be sequentially consistent): spinning for
// `spin`, then asleep until a wake() after the state it reads changed.
template <class Done>
void wait_for(Pool& P, Done done, std::chrono::microseconds spin) {
  if (spin_until(done, spin)) return;
  std::unique_lock<std::mutex> lock(P.mu);
  P.sleepers.fetch_add(1, std::memory_order_seq_cst);
  P.cv.wait(lock, done);
  P.sleepers.fetch_sub(1, std::memory_order_relaxed);
}
// After a sequentially consistent store that a waiter's done() reads: either the
// waiter sees it before sleeping, or it is counted in sleepers and woken here.
void wake(Pool& P) {
  if (P.sleepers.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(P.mu); }
    P.cv.notify_all();
  }
}

// Waits inside a region (a barrier, the end of the region) spin this long, then
// sleep: a peer that has not arrived by then has lost its core, and a sleeping
// waiter frees its own for it (spinning on, waits under load ran 2-4x longer).
constexpr std::chrono::microseconds kInnerSpin{100};

Pool* g_pool = nullptr;
std::once_flag g_once;

void worker_main(Pool* P, Slot* slot, int index) {
  std::uint64_t seen = 0;
  for (;;) {
    wait_for(*P, [&] { return slot->gen.load(std::memory_order_seq_cst) != seen; }, spin_time());
    seen = slot->gen.load(std::memory_order_acquire);
    tl_index = index, tl_size = slot->nt;
    try {
      slot->fn(slot->ctx, index, slot->nt);
    } catch (...) {
      P->record(std::current_exception());
    }
    tl_index = -1, tl_size = 0;
    if (P->pending.fetch_sub(1, std::memory_order_seq_cst) == 1) wake(*P);
  }
}

#if defined(__unix__) || defined(__APPLE__)
// A forked child has only the thread that forked: it starts a pool of its own
// (the parent's, whose workers did not come along, is left as it was).
void after_fork_child() { g_pool = new Pool(); }
#endif

Pool& pool() {
  std::call_once(g_once, [] {
    g_pool = new Pool();  // never destroyed: workers may still wait on it at exit
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, after_fork_child);
#endif
  });
  return *g_pool;
}

// Starts workers until there are `want` (fewer if the system refuses threads).
int ensure_workers(Pool& P, int want) {
  while (int(P.slots.size()) < want) {
    auto slot = std::make_unique<Slot>();
    Slot* s = slot.get();
    const int index = int(P.slots.size()) + 1;
    try {
      std::thread(worker_main, &P, s, index).detach();
    } catch (const std::system_error&) {
      break;
    }
    P.slots.push_back(std::move(slot));
  }
  return int(P.slots.size());
}

}  // namespace

bool in_team() { return tl_index >= 0; }

// Sets this thread's region state for a region it runs and restores the one before
// (a nested region, run serially, leaves the outer one's as it was).
struct TeamState {
  int index = tl_index, size = tl_size;
  TeamState(int i, int n) { tl_index = i, tl_size = n; }
  ~TeamState() { tl_index = index, tl_size = size; }
  TeamState(const TeamState&) = delete;
  TeamState& operator=(const TeamState&) = delete;
};

void run(index_t nt_req, JobFn fn, void* ctx) {
  if (nt_req <= 1 || tl_index >= 0) {  // one thread, or nested in a region
    const TeamState state(0, 1);
    fn(ctx, 0, 1);
    return;
  }
  Pool& P = pool();
  // Another Python thread's region holds the pool: wait for it (rather than run on
  // fewer threads), so that a call's team, and with it the rounding of the kernels
  // whose sums are split by thread, never depends on what else is running.
  std::unique_lock<std::mutex> region(P.region, std::try_to_lock);
  if (!region.owns_lock()) {
    spin_until([&] { return region.try_lock(); }, kInnerSpin);
    if (!region.owns_lock()) region.lock();
  }
  const int nt = 1 + std::min<int>(int(nt_req) - 1, ensure_workers(P, int(nt_req) - 1));
  if (nt == 1) {
    region.unlock();
    const TeamState state(0, 1);
    fn(ctx, 0, 1);
    return;
  }
  P.err = nullptr;
  P.bar_count.store(0, std::memory_order_relaxed);
  P.pending.store(nt - 1, std::memory_order_relaxed);
  for (int i = 0; i < nt - 1; ++i) {
    Slot& s = *P.slots[std::size_t(i)];
    s.fn = fn, s.ctx = ctx, s.nt = nt;
    s.gen.fetch_add(1, std::memory_order_seq_cst);
  }
  wake(P);
  {
    const TeamState state(0, nt);
    try {
      fn(ctx, 0, nt);
    } catch (...) {
      P.record(std::current_exception());
    }
  }
  wait_for(P, [&] { return P.pending.load(std::memory_order_seq_cst) == 0; }, kInnerSpin);
  std::exception_ptr err = P.err;
  P.err = nullptr;
  region.unlock();
  if (err) std::rethrow_exception(err);
}

void barrier() {
  if (tl_size <= 1) return;
  Pool& P = *g_pool;
  const std::uint64_t phase = P.bar_phase.load(std::memory_order_acquire);
  if (P.bar_count.fetch_add(1, std::memory_order_acq_rel) == tl_size - 1) {
    P.bar_count.store(0, std::memory_order_relaxed);
    P.bar_phase.fetch_add(1, std::memory_order_seq_cst);
    wake(P);
    return;
  }
  wait_for(P, [&] { return P.bar_phase.load(std::memory_order_seq_cst) != phase; }, kInnerSpin);
}

}  // namespace team_detail
}  // namespace gradvis
