// Run-time choice of the widest SIMD path the CPU has. The library is built
// for baseline x86-64; kernels that have AVX2/AVX-512 bodies compile them with
// __attribute__((target(...))) and pick one with cpu_level() at run time.
#pragma once

// Whether this compiler builds the AMX kernels (conv_amx.cpp): GCC 11+, Clang 12+.
#if defined(__x86_64__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || (defined(__clang__) && __clang_major__ >= 12))
#define GRADVIS_AMX_BUILD 1
#endif

namespace gradvis {

enum class SimdLevel { scalar = 0, avx2 = 1, avx512 = 2 };

SimdLevel cpu_level();          // detected once, cached; GRADVIS_SIMD=scalar|avx2|avx512 caps it
const char* simd_level_name(SimdLevel level);

// Whether the CPU is an AMD one (cost models whose measurements differ between
// AMD's and Intel's cores: conv_winograd.cpp). Detected once, cached.
bool cpu_is_amd();

// Whether large float32 convolutions may use the AMX tile unit (bfloat16 tiles,
// conv_amx.h): the CPU has AMX-TILE and AMX-BF16, the level is avx512, the OS
// grants the tile state (Linux 5.16+: arch_prctl ARCH_REQ_XCOMP_PERM), and
// GRADVIS_SIMD, if set, is "amx" (any other value, "avx512" included, leaves the
// tiles unused), and the compiler built the AMX kernels. Detected once, cached.
bool amx_enabled();

}  // namespace gradvis
