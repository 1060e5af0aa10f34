// _core.gemm(a, b, trans_a=False, trans_b=False) -> op(a) @ op(b), for tests and benchmarks.
#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/gemm.h"

namespace gradvis {
namespace {

constexpr const char* kFn = "gemm";

template <class T>
py::array gemm_impl(const py::handle& a_obj, const py::handle& b_obj, bool ta, bool tb) {
  auto a = as_array<T>(a_obj, kFn, "a");
  auto b = as_array<T>(b_obj, kFn, "b");
  check_ndim(a, 2, kFn, "a", "matrix");
  check_ndim(b, 2, kFn, "b", "matrix");
  const index_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
  const index_t Kb = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
  if (K != Kb)
    throw py::value_error(cat(kFn, ": inner dimensions differ: op(a) is (", M, ", ", K, ") but op(b) is (", Kb, ", ",
                              N, "); a shape ", shape_str(a), ", b shape ", shape_str(b), ", trans_a=", ta,
                              ", trans_b=", tb));
  auto c = empty_array<T>({py::ssize_t(M), py::ssize_t(N)});
  const T* pa = a.data();
  const T* pb = b.data();
  T* pc = c.mutable_data();
  {
    py::gil_scoped_release release;
    gemm_cpu<T>(ta, tb, M, N, K, T(1), pa, a.shape(1), pb, b.shape(1), T(0), pc, N);
  }
  return c;
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](const py::object& a, const py::object& b, bool trans_a, bool trans_b) -> py::array {
        if (float_kind(a, kFn, "a") == FloatKind::f32) return gemm_impl<float>(a, b, trans_a, trans_b);
        return gemm_impl<double>(a, b, trans_a, trans_b);
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      "op(a) @ op(b) with the packed gemm (op = transpose when trans_*); dtype from a, b is converted.");
}

}  // namespace gradvis
