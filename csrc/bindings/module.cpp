// The compiled core, gradvis._core. Each op family binds itself in its own
// file under bindings/; this file adds the build and machine facts.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>

#include "bindings/block_cache.h"
#include "bindings/register.h"
#include "bindings/util.h"
#include "common.h"
#include "cpu/simd.h"

namespace py = pybind11;

namespace {
// More threads than this are refused: past a few per CPU they only cost, and far
// past it the OpenMP runtime cannot create them (and ends the process).
std::int64_t thread_limit() { return std::max<std::int64_t>(1024, 4 * std::int64_t(std::thread::hardware_concurrency())); }
// Byte limits past this are refused (they would overflow size arithmetic).
constexpr std::int64_t kMaxBytes = std::int64_t(1) << 62;
}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gradvis compiled kernels (C++17, OpenMP). Use gradvis.layers for the array-level API.";
  m.def("has_openmp", []() {
#ifdef GRADVIS_HAVE_OPENMP
    return true;
#else
    return false;
#endif
  }, "Whether the core was built with OpenMP.");
  m.def("has_cuda", []() {
#ifdef GRADVIS_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the core was built with CUDA kernels.");
  gradvis::max_threads();  // the process-wide count starts as OpenMP's default at import
  m.def("get_num_threads", &gradvis::max_threads, "Threads the kernels use (one count for the whole process).");
  m.def("set_num_threads", [](py::object n) {
    gradvis::set_num_threads(int(gradvis::int_arg(n, "set_num_threads", "n", 1, thread_limit())));
  }, py::arg("n"),
  "Set the number of threads the kernels use (OpenMP builds): 1 up to 1024 or 4 per logical CPU,\n"
  "whichever is more. The count holds for the whole process, for calls from any Python thread, and\n"
  "is not changed by other libraries' OpenMP settings (torch.set_num_threads).");
  m.def("simd_level", []() { return std::string(gradvis::simd_level_name(gradvis::cpu_level())); },
        "The SIMD path chosen at run time: 'avx512', 'avx2' or 'scalar' (capped by GRADVIS_SIMD).");
  m.def("amx_enabled", &gradvis::amx_enabled,
        "Whether large float32 convolutions (1x1 layers, strided ones, the forward pass of others that\n"
        "Winograd does not take) use the AMX tile unit (bfloat16 tiles, operands split in three parts:\n"
        "float32 accuracy). Needs AMX-TILE/AMX-BF16, the avx512 level and the OS's tile state;\n"
        "GRADVIS_SIMD set to anything but 'amx' turns it off.");
  const char* cache_limit_doc =
      "Limit the memory kept for reuse by the kernels' large outputs (default 512 MiB). Output arrays of\n"
      "256 KiB or more take their memory from a block cache and give it back when the array is freed, so\n"
      "a loop that allocates the same activations every iteration reuses warm pages instead of having the\n"
      "OS zero fresh ones. Lowering the limit frees the least recently released blocks; 0 frees all and\n"
      "keeps none. Arrays in use are never affected.";
  const char* cache_info_doc =
      "The output block cache: {'limit', 'free_bytes', 'free_blocks' (kept for reuse), 'used_bytes' (held\n"
      "by live arrays), 'reused', 'fresh' (blocks handed out from the cache / newly mapped)}.";
  for (const char* name : {"set_block_cache_limit", "set_array_pool_limit"}) {
    m.def(
        name,
        [name](py::object nbytes) {
          gradvis::set_block_cache_limit(std::size_t(gradvis::int_arg(nbytes, name, "nbytes", 0, kMaxBytes)));
        },
        py::arg("nbytes"), cache_limit_doc);
  }
  for (const char* name : {"block_cache_info", "array_pool_info"}) {
    m.def(
        name,
        []() {
          const gradvis::BlockCacheInfo i = gradvis::block_cache_info();
          py::dict d;
          d["limit"] = i.limit;
          d["free_bytes"] = i.free_bytes;
          d["free_blocks"] = i.free_blocks;
          d["used_bytes"] = i.used_bytes;
          d["reused"] = i.reused;
          d["fresh"] = i.fresh;
          return d;
        },
        cache_info_doc);
  }
  m.def(
      "set_memory_limit",
      [](py::object nbytes) {
        gradvis::set_memory_limit(std::size_t(gradvis::int_arg(nbytes, "set_memory_limit", "nbytes", 1, kMaxBytes)));
      },
      py::arg("nbytes"),
      "Refuse (ValueError naming the shape) any kernel output or workspace larger than nbytes bytes,\n"
      "before allocating it. The default is the machine's physical memory.");
  m.def(
      "get_memory_limit", []() { return gradvis::memory_limit(); },
      "The largest output or workspace, in bytes, the kernels allocate (set_memory_limit).");
  gradvis::register_gemm(m);
  gradvis::register_conv2d(m);
  gradvis::register_conv_chain(m);
  gradvis::register_affine(m);
  gradvis::register_pool2d(m);
  gradvis::register_activation(m);
  gradvis::register_batchnorm(m);
  gradvis::register_blur(m);
  gradvis::register_resample(m);
  gradvis::register_pointwise(m);
  gradvis::register_weight_key(m);
}
