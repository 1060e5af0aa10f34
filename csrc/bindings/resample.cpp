// Bindings for the bilinear resize and rotation of (N, C, H, W) and their adjoints.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/resample.h"

namespace gradvis {

namespace {

constexpr std::int64_t kMaxSide = std::int64_t(1) << 31;

// (H, W) from a pair of ints, or from a 4-D shape (N, C, H, W) whose N and C
// must then match dy's.
std::pair<index_t, index_t> size_arg(const py::handle& obj, const py::array& dy, const char* fn, const char* name) {
  const auto v = int_values(obj, fn, name, "a pair (H, W) of ints or a shape (N, C, H, W)");
  if (v.size() != 2 && v.size() != 4)
    throw py::value_error(cat(fn, ": ", name, " must be a pair (H, W) or a shape (N, C, H, W), got ",
                              std::string(py::repr(obj))));
  if (v.size() == 4 && (v[0] != dy.shape(0) || v[1] != dy.shape(1)))
    throw py::value_error(cat(fn, ": ", name, " ", std::string(py::repr(obj)), " does not match dy of shape ",
                              shape_str(dy), " in N and C"));
  const std::int64_t h = v[v.size() - 2], w = v[v.size() - 1];
  if (h < 1 || w < 1 || h > kMaxSide || w > kMaxSide)
    throw py::value_error(cat(fn, ": ", name, " must hold sizes in [1, ", kMaxSide, "], got ",
                              std::string(py::repr(obj))));
  return {index_t(h), index_t(w)};
}

double degrees_arg(double degrees, const char* fn) {
  if (!std::isfinite(degrees)) throw py::value_error(cat(fn, ": degrees must be finite, got ", degrees));
  return degrees;
}

template <class T>
py::array resize(const py::handle& xo, const py::handle& size, bool adjoint, const char* fn) {
  auto x = as_array<T>(xo, fn, adjoint ? "dy" : "x");
  check_ndim(x, 4, fn, adjoint ? "dy" : "x", "(N, C, H, W)");
  check_nonempty(x, fn, adjoint ? "dy" : "x");
  const auto hw = size_arg(size, x, fn, adjoint ? "input_size" : "size");
  const index_t N = x.shape(0), C = x.shape(1);
  // forward: x (N, C, H, W) -> (N, C, OH, OW); adjoint: dy (N, C, OH, OW) -> (N, C, H, W)
  const index_t H = adjoint ? hw.first : x.shape(2), W = adjoint ? hw.second : x.shape(3);
  const index_t OH = adjoint ? x.shape(2) : hw.first, OW = adjoint ? x.shape(3) : hw.second;
  auto out = empty_array<T>({N, C, adjoint ? H : OH, adjoint ? W : OW});
  T* po = out.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    if (adjoint)
      resize_bilinear_adjoint_cpu<T>(po, px, N * C, H, W, OH, OW);
    else
      resize_bilinear_forward_cpu<T>(po, px, N * C, H, W, OH, OW);
  }
  return out;
}

template <class T>
py::array rotate(const py::handle& xo, double degrees, bool adjoint, const char* fn) {
  auto x = as_array<T>(xo, fn, adjoint ? "dy" : "x");
  check_ndim(x, 4, fn, adjoint ? "dy" : "x", "(N, C, H, W)");
  check_nonempty(x, fn, adjoint ? "dy" : "x");
  degrees = degrees_arg(degrees, fn);
  const index_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  auto out = empty_array<T>({N, C, H, W});
  T* po = out.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    if (adjoint)
      rotate_bilinear_adjoint_cpu<T>(po, px, N * C, H, W, degrees);
    else
      rotate_bilinear_forward_cpu<T>(po, px, N * C, H, W, degrees);
  }
  return out;
}

py::array resize_dispatch(const py::object& x, const py::object& size, bool adjoint, const char* fn) {
  return float_kind(x, fn, adjoint ? "dy" : "x") == FloatKind::f32 ? resize<float>(x, size, adjoint, fn)
                                                                     : resize<double>(x, size, adjoint, fn);
}

py::array rotate_dispatch(const py::object& x, double degrees, bool adjoint, const char* fn) {
  return float_kind(x, fn, adjoint ? "dy" : "x") == FloatKind::f32 ? rotate<float>(x, degrees, adjoint, fn)
                                                                     : rotate<double>(x, degrees, adjoint, fn);
}

}  // namespace

void register_resample(py::module_& m) {
  m.def(
      "resize_bilinear_forward",
      [](py::object x, py::object size) { return resize_dispatch(x, size, false, "resize_bilinear_forward"); },
      py::arg("x"), py::arg("size"),
      "Bilinear resize of x (N, C, H, W) to size = (OH, OW): half-pixel centres, sources clamped to the\n"
      "image (torch's interpolate(mode='bilinear', align_corners=False) when enlarging).");
  m.def(
      "resize_bilinear_adjoint",
      [](py::object dy, py::object input_size) {
        return resize_dispatch(dy, input_size, true, "resize_bilinear_adjoint");
      },
      py::arg("dy"), py::arg("input_size"),
      "The transpose of resize_bilinear_forward: dy (N, C, OH, OW) -> (N, C, H, W), with input_size\n"
      "(H, W) or x's shape (N, C, H, W). <resize(x), y> == <x, resize_bilinear_adjoint(y, x.shape)>.");
  m.def(
      "rotate_bilinear_forward",
      [](py::object x, double degrees) { return rotate_dispatch(x, degrees, false, "rotate_bilinear_forward"); },
      py::arg("x"), py::arg("degrees"),
      "x (N, C, H, W) rotated by degrees (counter-clockwise as displayed) about the centre, bilinear,\n"
      "zeros where the rotated image has no source.");
  m.def(
      "rotate_bilinear_adjoint",
      [](py::object dy, double degrees) { return rotate_dispatch(dy, degrees, true, "rotate_bilinear_adjoint"); },
      py::arg("dy"), py::arg("degrees"),
      "The transpose of rotate_bilinear_forward for the same angle: <rot(x), y> == <x, adjoint(y)>.");
}

}  // namespace gradvis
