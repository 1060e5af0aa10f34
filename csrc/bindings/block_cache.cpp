// The output block cache (see block_cache.h). Blocks are rounded up to size
// classes an eighth of a power of two apart (at most 12.5% unused), so arrays
// of nearly the same size share blocks; each class keeps a list of free blocks.
#include "bindings/block_cache.h"

#include <algorithm>
#include <limits>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define GV_POOL_MMAP 1
#endif

namespace gradvis {
namespace {

constexpr std::size_t kPage = 4096;

// The size class of `bytes`, or 0 when rounding up would overflow (the caller
// refuses such sizes long before; this keeps the loop finite whatever it gets).
std::size_t size_class(std::size_t bytes) {
  constexpr std::size_t kMax = std::numeric_limits<std::size_t>::max() / 4;
  if (bytes == 0 || bytes > kMax) return 0;
  bytes = (bytes + kPage - 1) / kPage * kPage;
  std::size_t top = 1;
  while (top <= bytes / 2) top <<= 1;
  const std::size_t step = std::max(kPage, top / 8);
  return (bytes + step - 1) / step * step;
}

void* map_block(std::size_t bytes) {
#ifdef GV_POOL_MMAP
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
  // as numpy does for its own arrays of 4 MiB and more
  if (bytes >= (std::size_t(4) << 20)) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
#else
  return std::aligned_alloc(kPage, bytes);
#endif
}

void unmap_block(void* p, std::size_t bytes) {
#ifdef GV_POOL_MMAP
  munmap(p, bytes);
#else
  (void)bytes;
  std::free(p);
#endif
}

class BlockCache {
 public:
  CachedBlock* acquire(std::size_t bytes) {
    const std::size_t cls = size_class(bytes);
    if (cls == 0) throw std::bad_alloc();
    auto* b = new CachedBlock{nullptr, cls};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        b->ptr = it->second.back().ptr;  // the most recently released: likeliest still in cache
        it->second.pop_back();
        free_bytes_ -= cls;
        --free_blocks_;
        used_bytes_ += cls;
        ++reused_;
        return b;
      }
    }
    b->ptr = map_block(cls);
    if (!b->ptr) {
      delete b;
      throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> lock(mu_);
    used_bytes_ += cls;
    ++fresh_;
    return b;
  }

  void release(CachedBlock* b) noexcept {
    std::vector<Free> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      used_bytes_ -= b->bytes;
      try {
        free_[b->bytes].push_back({b->ptr, ++clock_});
        free_bytes_ += b->bytes;
        ++free_blocks_;
        evict(limit_, drop);
      } catch (...) {  // no memory for the list entry: give the block back to the OS
        drop.push_back({b->ptr, 0, b->bytes});
      }
    }
    for (const Free& f : drop) unmap_block(f.ptr, f.bytes);
    delete b;
  }

  void set_limit(std::size_t limit) {
    std::vector<Free> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = limit;
      evict(limit, drop);
    }
    for (const Free& f : drop) unmap_block(f.ptr, f.bytes);
  }

  BlockCacheInfo info() {
    std::lock_guard<std::mutex> lock(mu_);
    return {limit_, free_bytes_, free_blocks_, used_bytes_, reused_, fresh_};
  }

 private:
  struct Free {
    void* ptr;
    std::uint64_t released;
    std::size_t bytes = 0;  // filled in when the block is dropped
  };

  // Moves the least recently released free blocks into `drop` until at most
  // `limit` bytes remain free. Few blocks are free at a time (a network's
  // activations), so a scan per dropped block is cheap.
  void evict(std::size_t limit, std::vector<Free>& drop) {
    while (free_bytes_ > limit) {
      auto oldest = free_.end();
      std::size_t idx = 0;
      for (auto it = free_.begin(); it != free_.end(); ++it)
        for (std::size_t i = 0; i < it->second.size(); ++i)
          if (oldest == free_.end() || it->second[i].released < oldest->second[idx].released) oldest = it, idx = i;
      Free f = oldest->second[idx];
      f.bytes = oldest->first;
      oldest->second.erase(oldest->second.begin() + std::ptrdiff_t(idx));
      if (oldest->second.empty()) free_.erase(oldest);
      free_bytes_ -= f.bytes;
      --free_blocks_;
      drop.push_back(f);
    }
  }

  std::mutex mu_;
  std::map<std::size_t, std::vector<Free>> free_;  // size class -> free blocks, oldest first
  std::size_t limit_ = std::size_t(512) << 20;
  std::size_t free_bytes_ = 0, free_blocks_ = 0, used_bytes_ = 0;
  std::uint64_t clock_ = 0, reused_ = 0, fresh_ = 0;
};

BlockCache& cache() {
  static BlockCache* p = new BlockCache();  // never destroyed: arrays may outlive the module's teardown
  return *p;
}

}  // namespace

CachedBlock* block_acquire(std::size_t bytes) { return cache().acquire(bytes); }
void block_release(CachedBlock* b) noexcept { cache().release(b); }
void set_block_cache_limit(std::size_t bytes) { cache().set_limit(bytes); }
BlockCacheInfo block_cache_info() { return cache().info(); }

}  // namespace gradvis
