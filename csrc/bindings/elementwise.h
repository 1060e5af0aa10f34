// What the element-wise bindings (activation.cpp, pointwise.cpp) share: a shape
// check, the dtype test, and one-array / two-array calls of a kernel over n values
// with the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/util.h"

namespace gradvis {
namespace elementwise {

inline void check_same_shape(const py::array& a, const py::array& b, const char* fn, const char* an,
                             const char* bn) {
  if (shape_of(a) != shape_of(b))
    throw py::value_error(cat(fn, ": ", an, " shape ", shape_str(a), " does not match ", bn, " shape ", shape_str(b)));
}

inline bool is_f32(const py::handle& a, const char* fn, const char* name) {
  return float_kind(a, fn, name) == FloatKind::f32;
}

// out = kernel(x) over x.size() values; out is a new array shaped like x.
template <class T, class K>
py::array unary(const py::handle& xo, const char* fn, K&& kernel) {
  auto x = as_array<T>(xo, fn, "x");
  check_nonempty(x, fn, "x");
  auto out = empty_like<T>(x);
  T* po = out.mutable_data();
  const T* px = x.data();
  const index_t n = x.size();
  {
    py::gil_scoped_release nogil;
    kernel(po, px, n);
  }
  return out;
}

// out = kernel(dout, x) for the backwards; `xname` names the second array in
// messages ("x", or "out" for the backwards that take the forward's output).
template <class T, class K>
py::array binary(const py::handle& douto, const py::handle& xo, const char* fn, const char* xname, K&& kernel) {
  auto dout = as_array<T>(douto, fn, "dout");
  auto x = as_array<T>(xo, fn, xname);
  check_nonempty(dout, fn, "dout");
  check_same_shape(dout, x, fn, "dout", xname);
  auto out = empty_like<T>(x);
  T* po = out.mutable_data();
  const T* pg = dout.data();
  const T* px = x.data();
  const index_t n = x.size();
  {
    py::gil_scoped_release nogil;
    kernel(po, pg, px, n);
  }
  return out;
}

}  // namespace elementwise
}  // namespace gradvis
