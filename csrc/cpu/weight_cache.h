// Weights known not to change, and the packed forms kernels keep of them.
//
// A WeightKey names a call's weights as immutable: the bindings give one to a
// call whose weights are a read-only view of a `bytes` object (numpy cannot make
// such an array writeable again, so its values are fixed while it lives; that is
// what Model.freeze makes), with a token unique to that array for the life of the
// process. Kernels that pack or transform their weights on every call then find
// their packed form by token and address, without reading the weights: the
// digest by which Winograd's cache recognises unchanged weights (conv_winograd.cpp)
// reads all of them on every call, 4.5% of ResNet-50's forward pass at batch 1,
// and the 1x1 and strided layers' packing of their weights another 2-3%.
//
// The key is thread-local state of the calling thread, set by the bindings around
// one call (WeightKeyScope) and read by the kernel before it starts its team;
// weight_token(w) gives the token only for the array the key was made for.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "common.h"

namespace gradvis {

// Memory for a kept entry of `bytes` (64-byte aligned), and its release. Entries of
// 2 MiB and more are mapped on their own, 2 MiB aligned, with transparent huge
// pages asked for (madvise): a network's pass streams its weights' kept forms from
// memory (ResNet-50: over 100 MB, some 30,000 pages of 4 KiB), and with huge pages
// its forward pass ran 3% faster (weight_cache.cpp).
void* cache_alloc(std::size_t bytes);
void cache_free(void* p, std::size_t bytes);

// What the caches of prepared weights share (the packed weights below and
// Winograd's transformed filters): entries held by shared pointer, so that an
// entry dropped while a call uses it lives until that call ends, and a clock of
// lookups for recency. E provides `token`, `last_used` and `size_bytes()`.
template <class E>
class KeptEntries {
 public:
  void put(std::shared_ptr<E> e) {
    std::lock_guard<std::mutex> lock(mu_);
    e->last_used = clock_;
    entries_.push_back(std::move(e));
  }
  // Drops the entries made from the weights with this token.
  void drop(std::uint64_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e->token == token; }),
                   entries_.end());
  }
  // Drops the least recently used entries until at most `limit` bytes remain.
  void trim(std::size_t limit) {
    std::lock_guard<std::mutex> lock(mu_);
    std::stable_sort(entries_.begin(), entries_.end(),
                     [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
    std::size_t held = 0;
    for (const auto& e : entries_) held += e->size_bytes();
    auto it = entries_.begin();
    for (; it != entries_.end() && held > limit; ++it) held -= (*it)->size_bytes();
    entries_.erase(entries_.begin(), it);
  }
  // (bytes held, entries)
  std::pair<std::size_t, std::size_t> usage() {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t held = 0;
    for (const auto& e : entries_) held += e->size_bytes();
    return {held, entries_.size()};
  }

 protected:
  std::mutex mu_;
  std::uint64_t clock_ = 0;
  std::vector<std::shared_ptr<E>> entries_;
};

struct WeightKey {
  std::uint64_t token = 0;     // 0: no key
  const void* data = nullptr;  // the weights' first byte
};

WeightKey current_weight_key();

// The current key's token when its weights start at w, else 0.
inline std::uint64_t weight_token(const void* w) {
  const WeightKey k = current_weight_key();
  return k.data == w ? k.token : 0;
}

class WeightKeyScope {
 public:
  explicit WeightKeyScope(WeightKey k);
  ~WeightKeyScope();
  WeightKeyScope(const WeightKeyScope&) = delete;
  WeightKeyScope& operator=(const WeightKeyScope&) = delete;

 private:
  WeightKey prev_;
};

// ---- packed weights of keyed calls --------------------------------------------
// What a kernel packed from keyed weights, found by the kernel's layout (`kind`
// and up to six sizes that fix it) plus the token and address. Entries unused for
// many lookups, or past the limit (set_packed_cache_limit, default 512 MiB; at
// most half of it one entry), are dropped, the least recently used first; a call
// whose packed weights do not fit packs them into scratch memory as without a key
// (same values: packing is a copy).
struct PackedId {
  int kind = 0;
  index_t d[6] = {0, 0, 0, 0, 0, 0};
  bool operator==(const PackedId& o) const {
    if (kind != o.kind) return false;
    for (int i = 0; i < 6; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
};

struct PackedEntry {
  PackedId id;
  std::uint64_t token = 0;
  const void* src = nullptr;
  void* data = nullptr;  // 64-byte aligned
  std::size_t bytes = 0;
  std::uint64_t last_used = 0;
  std::size_t size_bytes() const { return bytes; }
  PackedEntry() = default;
  PackedEntry(const PackedEntry&) = delete;
  PackedEntry& operator=(const PackedEntry&) = delete;
  ~PackedEntry();
};

std::shared_ptr<const PackedEntry> packed_find(const PackedId& id, std::uint64_t token, const void* src);
// A new entry of `bytes` to fill and then offer with packed_put, or null when it
// would not fit beside the entries in recent use.
std::shared_ptr<PackedEntry> packed_reserve(const PackedId& id, std::uint64_t token, const void* src,
                                            std::size_t bytes);
void packed_put(std::shared_ptr<PackedEntry> e);

// Drops every cached form of the weights with this token (the packed entries and
// Winograd's transformed filters): their array is gone.
void drop_weight_token(std::uint64_t token);

void set_packed_cache_limit(std::size_t bytes);  // drops the least recently used above it (0: all)
struct PackedCacheInfo {
  std::size_t limit, bytes, entries;
};
PackedCacheInfo packed_cache_info();

namespace conv_detail {
void winograd_drop_token(std::uint64_t token);  // conv_winograd.cpp
}

}  // namespace gradvis
