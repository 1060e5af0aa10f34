// The compiled core, gradvis._core. Each op family binds itself in its own
// file under bindings/; this file adds the build and machine facts.
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "common.h"
#include "cpu/simd.h"

namespace py = pybind11;

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
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1");
    gradvis::set_num_threads(n);
  }, py::arg("n"), "Set the number of threads the kernels use (OpenMP builds).");
  m.def("simd_level", []() { return std::string(gradvis::simd_level_name(gradvis::cpu_level())); },
        "The SIMD path chosen at run time: 'avx512', 'avx2' or 'scalar' (capped by GRADVIS_SIMD).");
  gradvis::register_gemm(m);
  gradvis::register_conv(m);
  gradvis::register_affine(m);
  gradvis::register_pool(m);
  gradvis::register_activation(m);
  gradvis::register_batchnorm(m);
  gradvis::register_blur(m);
}
