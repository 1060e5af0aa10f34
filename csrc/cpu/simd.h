// Run-time choice of the widest SIMD path the CPU has. The library is built
// for baseline x86-64; kernels that have AVX2/AVX-512 bodies compile them with
// __attribute__((target(...))) and pick one with cpu_level() at run time.
#pragma once

namespace gradvis {

enum class SimdLevel { scalar = 0, avx2 = 1, avx512 = 2 };

SimdLevel cpu_level();          // detected once, cached; GRADVIS_SIMD=scalar|avx2|avx512 caps it
const char* simd_level_name(SimdLevel level);

}  // namespace gradvis
