// The weight key and the packed-weights cache (weight_cache.h).
#include "cpu/weight_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace gradvis {

namespace {
thread_local WeightKey t_key;

constexpr std::uint64_t kStaleLookups = 4096;  // a network's layers, many times over

class PackedCache {
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
    e->data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!e->data) return nullptr;
    e->id = id, e->token = token, e->src = src, e->bytes = bytes;
    return e;
  }
  void put(std::shared_ptr<PackedEntry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    e->last_used = clock_;
    entries_.push_back(std::move(e));
  }
  void drop(std::uint64_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e->token == token; }),
                   entries_.end());
  }
  void set_limit(std::size_t bytes) {
    limit_.store(bytes, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mu_);
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
    std::size_t held = 0;
    for (const auto& e : entries_) held += e->bytes;
    auto it = entries_.begin();
    for (; it != entries_.end() && held > bytes; ++it) held -= (*it)->bytes;
    entries_.erase(entries_.begin(), it);
  }
  PackedCacheInfo info() {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t held = 0;
    for (const auto& e : entries_) held += e->bytes;
    return {limit_.load(std::memory_order_relaxed), held, entries_.size()};
  }

 private:
  std::mutex mu_;
  std::uint64_t clock_ = 0;
  std::atomic<std::size_t> limit_{std::size_t(512) << 20};
  std::vector<std::shared_ptr<PackedEntry>> entries_;
};

PackedCache& cache() {
  static PackedCache* c = new PackedCache();  // never destroyed: no order-of-exit issues
  return *c;
}
}  // namespace

WeightKey current_weight_key() { return t_key; }

WeightKeyScope::WeightKeyScope(WeightKey k) : prev_(t_key) { t_key = k; }
WeightKeyScope::~WeightKeyScope() { t_key = prev_; }

PackedEntry::~PackedEntry() { std::free(data); }

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
