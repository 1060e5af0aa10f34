// The weight key and the packed-weights cache (weight_cache.h).
#include "cpu/weight_cache.h"

#include <atomic>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gradvis {

namespace {
// Entries of 2 MiB and more: mapped on their own, 2 MiB aligned, their length
// rounded to 4 KiB pages (a huge page backs each whole 2 MiB of them; none is
// rounded up, so that no memory is spent on it). ResNet-50, 1 thread,
// alternating processes: forward 68.3-69.1 -> 65.9-67.5 ms (AVX2 70.3-71.6 ->
// 69.8-70.0; 2 threads 35.7 -> 34.6-34.8), forward + input gradient 148.9-151.1 ->
// 143.1-145.5, ConvNeXt-T 1%; MobileNetV2, EfficientNet-B0 and RegNetY-400MF, whose
// entries are small, the same.
constexpr std::size_t kHuge = std::size_t(2) << 20, kSmallPage = 4096;
bool mapped(std::size_t bytes) { return bytes >= kHuge; }
std::size_t mapped_length(std::size_t bytes) { return (bytes + kSmallPage - 1) / kSmallPage * kSmallPage; }
}  // namespace

void* cache_alloc(std::size_t bytes) {
#if defined(__linux__)
  if (mapped(bytes)) {
    // map 2 MiB more, keep the aligned part
    const std::size_t len = mapped_length(bytes), span = len + kHuge;
    void* m = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    const auto base = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t start = (base + kHuge - 1) / kHuge * kHuge;
    if (start > base) munmap(m, start - base);
    if (base + span > start + len) munmap(reinterpret_cast<void*>(start + len), base + span - (start + len));
#ifdef MADV_HUGEPAGE
    madvise(reinterpret_cast<void*>(start), len, MADV_HUGEPAGE);   // advice only: its failure changes nothing
#endif
    return reinterpret_cast<void*>(start);
  }
#endif
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
}

void cache_free(void* p, std::size_t bytes) {
  if (!p) return;
#if defined(__linux__)
  if (mapped(bytes)) {
    munmap(p, mapped_length(bytes));
    return;
  }
#endif
  std::free(p);
}

namespace {
thread_local WeightKey t_key;

constexpr std::uint64_t kStaleLookups = 4096;  // a network's layers, many times over

class PackedCache : public KeptEntries<PackedEntry> {
 public:
  std::shared_ptr<const PackedEntry> find(const PackedId& id, std::uint64_t token, const void* src) {
    std::lock_guard<std::mutex> lock(mu_);
    ++clock_;
    for (auto& e : entries_)
      if (e->token == token && e->src == src && e->id == id) {
        e->last_used = clock_;
        return e;
      }
    return nullptr;
  }
  std::shared_ptr<PackedEntry> reserve(const PackedId& id, std::uint64_t token, const void* src,
                                       std::size_t bytes) {
    const std::size_t limit = limit_.load(std::memory_order_relaxed);
    if (bytes == 0 || bytes > limit / 2) return nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::size_t held = 0;
      for (auto it = entries_.begin(); it != entries_.end();) {
        if (clock_ - (*it)->last_used > kStaleLookups) {
          it = entries_.erase(it);  // users in flight hold their own reference
        } else {
          held += (*it)->bytes;
          ++it;
        }
      }
      if (held + bytes > limit) return nullptr;
    }
    auto e = std::make_shared<PackedEntry>();
    e->data = cache_alloc(bytes);
    if (!e->data) return nullptr;
    e->id = id, e->token = token, e->src = src, e->bytes = bytes;
    return e;
  }
  void set_limit(std::size_t bytes) {
    limit_.store(bytes, std::memory_order_relaxed);
    trim(bytes);
  }
  PackedCacheInfo info() {
    const auto u = usage();
    return {limit_.load(std::memory_order_relaxed), u.first, u.second};
  }

 private:
  std::atomic<std::size_t> limit_{std::size_t(512) << 20};
};

PackedCache& cache() {
  static PackedCache* c = new PackedCache();  // never destroyed: no order-of-exit issues
  return *c;
}
}  // namespace

WeightKey current_weight_key() { return t_key; }

WeightKeyScope::WeightKeyScope(WeightKey k) : prev_(t_key) { t_key = k; }
WeightKeyScope::~WeightKeyScope() { t_key = prev_; }

PackedEntry::~PackedEntry() { cache_free(data, bytes); }

std::shared_ptr<const PackedEntry> packed_find(const PackedId& id, std::uint64_t token, const void* src) {
  return cache().find(id, token, src);
}
std::shared_ptr<PackedEntry> packed_reserve(const PackedId& id, std::uint64_t token, const void* src,
                                            std::size_t bytes) {
  return cache().reserve(id, token, src, bytes);
}
void packed_put(std::shared_ptr<PackedEntry> e) { cache().put(std::move(e)); }

void drop_weight_token(std::uint64_t token) {
  if (token == 0) return;
  cache().drop(token);
  conv_detail::winograd_drop_token(token);
}

void set_packed_cache_limit(std::size_t bytes) { cache().set_limit(bytes); }
PackedCacheInfo packed_cache_info() { return cache().info(); }

}  // namespace gradvis
