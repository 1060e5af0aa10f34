// A 64-bit digest of an array's bytes, for recognising weights that have not
// changed since a cache entry was made from them (conv_winograd.cpp).
//
// Words go round-robin to 64 lanes of 32-bit state, each updated by a bijection
// of (state, word): h = rotl(h ^ word * C1, 13) * 5 + C2. Lanes are folded into
// a 64-bit value by bijective rounds, per chunk of 2^16 words, and the chunks'
// values likewise. So any change confined to one lane of one chunk (one word,
// or words 64 apart within 256 KB) always changes the digest; other changes
// leave it equal with probability about 2^-64. The value does not depend on the
// SIMD path or the thread count (chunks are hashed in parallel when there are
// several and the caller is not already in a parallel region).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gradvis {

std::uint64_t digest_bytes(const void* data, std::size_t bytes);

}  // namespace gradvis
