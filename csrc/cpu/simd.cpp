#include "cpu/simd.h"

#include <cstdlib>
#include <cstring>

namespace gradvis {

static SimdLevel detect() {
  SimdLevel level = SimdLevel::scalar;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = SimdLevel::avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    level = SimdLevel::avx512;
#endif
  // An environment cap, for testing every path on one machine.
  if (const char* cap = std::getenv("GRADVIS_SIMD")) {
    SimdLevel c = level;
    if (!std::strcmp(cap, "scalar")) c = SimdLevel::scalar;
    else if (!std::strcmp(cap, "avx2")) c = SimdLevel::avx2;
    else if (!std::strcmp(cap, "avx512")) c = SimdLevel::avx512;
    if (static_cast<int>(c) < static_cast<int>(level)) level = c;
  }
  return level;
}

SimdLevel cpu_level() {
  static const SimdLevel level = detect();
  return level;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace gradvis
