#include "cpu/simd.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__) && defined(GRADVIS_AMX_BUILD)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define GV_AMX_DETECT 1
#endif

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
    else if (!std::strcmp(cap, "avx512") || !std::strcmp(cap, "amx")) c = SimdLevel::avx512;
    if (static_cast<int>(c) < static_cast<int>(level)) level = c;
  }
  return level;
}

SimdLevel cpu_level() {
  static const SimdLevel level = detect();
  return level;
}

#ifdef GV_AMX_DETECT
static bool detect_amx() {
  if (const char* cap = std::getenv("GRADVIS_SIMD"))
    if (std::strcmp(cap, "amx") != 0) return false;
  if (cpu_level() != SimdLevel::avx512) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
  if (!amx_bf16 || !amx_tile) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled by the OS
  // Ask for the tile data state (once per process; threads started later inherit it).
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}
#else
static bool detect_amx() { return false; }
#endif

bool amx_enabled() {
  static const bool on = detect_amx();
  return on;
}

bool cpu_is_amd() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool amd = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("amd") != 0;
  }();
  return amd;
#else
  return false;
#endif
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace gradvis
