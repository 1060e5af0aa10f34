// The WeightKey of a call's weights (cpu/weight_cache.h), found with the GIL held.
#pragma once

#include "bindings/util.h"
#include "cpu/weight_cache.h"

namespace gradvis {

// A key for w when its values cannot change while it lives: w is read-only and its
// chain of bases ends in a `bytes` object (numpy refuses to make such an array, or
// any view of it, writeable). The token belongs to the array over the bytes; it is
// dropped, with every cached form of those weights, when that array is collected,
// and never given again. Any other array (writeable, owning its data, over a
// bytearray, a memory map or another buffer): no key.
WeightKey immutable_key(const py::array& w);

}  // namespace gradvis
