// Bindings for the Gaussian blur and its adjoint over H and W of (N, C, H, W).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <utility>
#include <vector>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/blur.h"

namespace gradvis {

namespace {

// Radii beyond this are refused: the work grows with the radius.
constexpr double kMaxRadius = 1e6;

std::pair<double, double> sigma_arg(const py::handle& obj, const char* fn) {
  double a, b;
  const bool scalar = !py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) ||
                      (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() == 0);
  if (scalar) {
    try {
      a = b = obj.cast<double>();
    } catch (const py::cast_error&) {
      throw py::type_error(cat(fn, ": sigma must be a number or a pair (sigma_h, sigma_w)"));
    }
  } else {
    // Parsed by hand: casting to std::vector needs pybind11/stl.h.
    std::vector<double> seq;
    try {
      for (auto item : py::reinterpret_borrow<py::sequence>(obj)) seq.push_back(item.cast<double>());
    } catch (const std::exception&) {  // a failed cast or an item that cannot be read
      throw py::type_error(cat(fn, ": sigma must be a number or a pair (sigma_h, sigma_w)"));
    }
    if (seq.size() != 2) throw py::value_error(cat(fn, ": sigma must be a number or a pair (sigma_h, sigma_w)"));
    a = seq[0];
    b = seq[1];
  }
  if (!std::isfinite(a) || !std::isfinite(b) || a < 0 || b < 0)
    throw py::value_error(cat(fn, ": sigma must be finite and non-negative, got (", a, ", ", b, ")"));
  return {a, b};
}

template <class T>
py::array blur(const py::handle& xo, const py::handle& sigma, double truncate, bool adjoint, const char* fn) {
  auto x = as_array<T>(xo, fn, "x");
  check_ndim(x, 4, fn, "x", "(N, C, H, W)");
  check_nonempty(x, fn, "x");
  const auto s = sigma_arg(sigma, fn);
  if (!std::isfinite(truncate) || truncate < 0)
    throw py::value_error(cat(fn, ": truncate must be finite and non-negative, got ", truncate));
  if (truncate * std::max(s.first, s.second) + 0.5 > kMaxRadius)
    throw py::value_error(cat(fn, ": truncate*sigma = ", truncate * std::max(s.first, s.second), " is too large"));
  const auto wh = gaussian_kernel1d(s.first, truncate);
  const auto ww = gaussian_kernel1d(s.second, truncate);
  const index_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  auto out = empty_array<T>({N, C, H, W});
  T* po = out.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    gaussian_blur_cpu<T>(po, px, N * C, H, W, wh, ww, adjoint);
  }
  return out;
}

py::array dispatch(const py::object& x, const py::object& sigma, double truncate, bool adjoint, const char* fn) {
  return float_kind(x, fn, "x") == FloatKind::f32 ? blur<float>(x, sigma, truncate, adjoint, fn)
                                                  : blur<double>(x, sigma, truncate, adjoint, fn);
}

}  // namespace

void register_blur(py::module_& m) {
  m.def(
      "gaussian_blur",
      [](py::object x, py::object sigma, double truncate) {
        return dispatch(x, sigma, truncate, false, "gaussian_blur");
      },
      py::arg("x"), py::arg("sigma"), py::arg("truncate") = 4.0,
      "Gaussian blur over H and W of x (N, C, H, W); sigma is a number or (sigma_h, sigma_w).\n"
      "Equals scipy.ndimage.gaussian_filter(x, (0, 0, sigma_h, sigma_w), mode='reflect', truncate=truncate).");
  m.def(
      "gaussian_blur_adjoint",
      [](py::object x, py::object sigma, double truncate) {
        return dispatch(x, sigma, truncate, true, "gaussian_blur_adjoint");
      },
      py::arg("x"), py::arg("sigma"), py::arg("truncate") = 4.0,
      "The transpose of gaussian_blur as a linear map: <blur(x), y> == <x, gaussian_blur_adjoint(y)>.");
}

}  // namespace gradvis
