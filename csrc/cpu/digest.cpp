// The array digest (see digest.h): a scalar body that defines it, and AVX2 and
// AVX-512 bodies that compute the same lanes 8 or 16 at a time.
#include "cpu/digest.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"
#include "cpu/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GV_DIGEST_X86 1
#endif

namespace gradvis {
namespace {

constexpr int kLanes = 64;
constexpr std::size_t kChunkWords = std::size_t(1) << 16;
constexpr std::uint32_t kMul = 0xcc9e2d51u, kAdd = 0xe6546b64u;

inline std::uint32_t rotl32(std::uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
inline std::uint32_t step(std::uint32_t h, std::uint32_t w) { return rotl32(h ^ (w * kMul), 13) * 5u + kAdd; }
inline std::uint64_t fold(std::uint64_t acc, std::uint64_t v) {
  acc ^= v;
  acc *= 0xff51afd7ed558ccdULL;
  return acc ^ (acc >> 33);
}
inline void seed_lanes(std::uint32_t* h) {
  for (int l = 0; l < kLanes; ++l) h[l] = 0x9747b28cu + 0x61c88647u * std::uint32_t(l);
}
// Words [i, n) of the chunk, fewer than a full round of lanes, then the fold.
inline std::uint64_t finish(std::uint32_t* h, const std::uint32_t* p, std::size_t i, std::size_t n) {
  for (std::size_t l = 0; i + l < n; ++l) h[l] = step(h[l], p[i + l]);
  std::uint64_t acc = 0x9e3779b97f4a7c15ULL ^ n;
  for (int l = 0; l < kLanes; ++l) acc = fold(acc, h[l]);
  return acc;
}

std::uint64_t chunk_scalar(const std::uint32_t* p, std::size_t n) {
  std::uint32_t h[kLanes];
  seed_lanes(h);
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) h[l] = step(h[l], p[i + l]);
  return finish(h, p, i, n);
}

#ifdef GV_DIGEST_X86
#define GV_AVX512 __attribute__((target("avx512f")))
#define GV_AVX2 __attribute__((target("avx2")))

GV_AVX512 std::uint64_t chunk_avx512(const std::uint32_t* p, std::size_t n) {
  alignas(64) std::uint32_t h[kLanes];
  seed_lanes(h);
  __m512i v[4];
  for (int j = 0; j < 4; ++j) v[j] = _mm512_load_si512(h + 16 * j);
  const __m512i mul = _mm512_set1_epi32(int(kMul)), add = _mm512_set1_epi32(int(kAdd));
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < 4; ++j) {
      const __m512i w = _mm512_mullo_epi32(_mm512_loadu_si512(p + i + 16 * j), mul);
      const __m512i r = _mm512_rol_epi32(_mm512_xor_si512(v[j], w), 13);
      v[j] = _mm512_add_epi32(_mm512_add_epi32(r, _mm512_slli_epi32(r, 2)), add);
    }
  for (int j = 0; j < 4; ++j) _mm512_store_si512(h + 16 * j, v[j]);
  return finish(h, p, i, n);
}

GV_AVX2 std::uint64_t chunk_avx2(const std::uint32_t* p, std::size_t n) {
  alignas(32) std::uint32_t h[kLanes];
  seed_lanes(h);
  __m256i v[8];
  for (int j = 0; j < 8; ++j) v[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(h + 8 * j));
  const __m256i mul = _mm256_set1_epi32(int(kMul)), add = _mm256_set1_epi32(int(kAdd));
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < 8; ++j) {
      const __m256i w =
          _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8 * j)), mul);
      const __m256i x = _mm256_xor_si256(v[j], w);
      const __m256i r = _mm256_or_si256(_mm256_slli_epi32(x, 13), _mm256_srli_epi32(x, 19));
      v[j] = _mm256_add_epi32(_mm256_add_epi32(r, _mm256_slli_epi32(r, 2)), add);
    }
  for (int j = 0; j < 8; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(h + 8 * j), v[j]);
  return finish(h, p, i, n);
}
#endif

using chunk_fn = std::uint64_t (*)(const std::uint32_t*, std::size_t);

chunk_fn chunk_kernel() {
#ifdef GV_DIGEST_X86
  switch (cpu_level()) {
    case SimdLevel::avx512:
      return chunk_avx512;
    case SimdLevel::avx2:
      return chunk_avx2;
    default:
      break;
  }
#endif
  return chunk_scalar;
}

}  // namespace

std::uint64_t digest_bytes(const void* data, std::size_t bytes) {
  const chunk_fn kern = chunk_kernel();
  const auto* p = static_cast<const std::uint32_t*>(data);
  const std::size_t words = bytes / 4, nchunks = (words + kChunkWords - 1) / kChunkWords;
  std::vector<std::uint64_t> d(nchunks);
  auto one = [&](index_t c) {
    const std::size_t b = std::size_t(c) * kChunkWords;
    d[std::size_t(c)] = kern(p + b, std::min(kChunkWords, words - b));
  };
  if (nchunks > 1)
    parallel_for(index_t(nchunks), one);
  else if (nchunks == 1)
    one(0);
  std::uint64_t acc = 0x2545f4914f6cdd1dULL ^ bytes;
  for (std::uint64_t v : d) acc = fold(acc, v);
  if (bytes % 4) {  // trailing bytes, zero-padded to a word
    std::uint32_t last = 0;
    std::memcpy(&last, static_cast<const unsigned char*>(data) + words * 4, bytes % 4);
    acc = fold(acc, last);
  }
  return fold(acc, acc >> 29);
}

}  // namespace gradvis
