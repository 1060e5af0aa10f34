// The output block cache: memory for the kernels' large output arrays, kept
// across calls.
//
// A training step or a gradient loop allocates the same activations and
// gradients every iteration. Large blocks from malloc are fresh mmap'd pages,
// which the OS zeroes on first touch: 5-10% of a training step went to the
// kernel doing that. Outputs of at least kCachedMinBytes come from this cache
// instead; the numpy array holds its block through a capsule (its `base`) whose
// destructor hands the block back. Free blocks are kept, least recently
// released dropped first, up to a limit (set_block_cache_limit, alias
// set_array_pool_limit; 0 keeps none).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gradvis {

constexpr std::size_t kCachedMinBytes = std::size_t(256) << 10;

struct CachedBlock {
  void* ptr;
  std::size_t bytes;  // the block's size class (>= the bytes asked for)
};

// A block of at least `bytes` bytes, 4096-byte aligned; throws std::bad_alloc
// (also when `bytes` is within a size class of SIZE_MAX).
CachedBlock* block_acquire(std::size_t bytes);
// Gives a block back (kept or unmapped); never throws.
void block_release(CachedBlock* b) noexcept;

struct BlockCacheInfo {
  std::size_t limit;       // bytes of free blocks kept at most
  std::size_t free_bytes;  // bytes held in free blocks
  std::size_t free_blocks;
  std::size_t used_bytes;  // bytes in blocks that arrays hold now
  std::uint64_t reused;    // acquisitions served from a free block
  std::uint64_t fresh;     // acquisitions that mapped a new block
};
void set_block_cache_limit(std::size_t bytes);  // drops the oldest free blocks above it
BlockCacheInfo block_cache_info();

}  // namespace gradvis
