// The compiled core, gradvis._core. Each op family binds itself in its own
// file under bindings/; this file adds the build and machine facts.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <thread>

#include "bindings/array_pool.h"
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
  m.def("get_num_threads", &gradvis::max_threads, "Threads the kernels use.");
  m.def("set_num_threads", [](py::object n) {
    gradvis::set_num_threads(int(gradvis::int_arg(n, "set_num_threads", "n", 1, thread_limit())));
  }, py::arg("n"),
  "Set the number of threads the kernels use (OpenMP builds): 1 up to 1024 or 4 per logical CPU,\n"
  "whichever is more.");
  m.def("simd_level", []() { return std::string(gradvis::simd_level_name(gradvis::cpu_level())); },
        "The SIMD path chosen at run time: 'avx512', 'avx2' or 'scalar' (capped by GRADVIS_SIMD).");
  m.def(
      "set_array_pool_limit",
      [](py::object nbytes) {
        gradvis::set_pool_limit(std::size_t(gradvis::int_arg(nbytes, "set_array_pool_limit", "nbytes", 0, kMaxBytes)));
      },
      py::arg("nbytes"),
      "Limit the memory kept for reuse by the kernels' large outputs (default 512 MiB). Output arrays of\n"
      "256 KiB or more are taken from a pool and go back to it when the array is freed, so a loop that\n"
      "allocates the same activations every iteration reuses warm pages instead of having the OS zero\n"
      "fresh ones. Lowering the limit frees the least recently released blocks; 0 frees all and keeps\n"
      "none. Arrays in use are never affected.");
  m.def(
      "array_pool_info",
      []() {
        const gradvis::PoolInfo i = gradvis::pool_info();
        py::dict d;
        d["limit"] = i.limit;
        d["free_bytes"] = i.free_bytes;
        d["free_blocks"] = i.free_blocks;
        d["used_bytes"] = i.used_bytes;
        d["reused"] = i.reused;
        d["fresh"] = i.fresh;
        return d;
      },
      "The output pool: {'limit', 'free_bytes', 'free_blocks' (kept for reuse), 'used_bytes' (held by\n"
      "live arrays), 'reused', 'fresh' (blocks handed out from the pool / newly mapped)}.");
  gradvis::register_gemm(m);
  gradvis::register_conv(m);
  gradvis::register_affine(m);
  gradvis::register_pool(m);
  gradvis::register_activation(m);
  gradvis::register_batchnorm(m);
  gradvis::register_blur(m);
}
