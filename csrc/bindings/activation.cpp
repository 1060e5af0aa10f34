// Bindings for the element-wise activations (any ndim).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <vector>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/activation.h"

namespace gradvis {

namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) { return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()); }

void check_same_shape(const py::array& a, const py::array& b, const char* fn, const char* an, const char* bn) {
  if (shape_of(a) != shape_of(b))
    throw py::value_error(cat(fn, ": ", an, " shape ", shape_str(a), " does not match ", bn, " shape ", shape_str(b)));
}

void check_finite(double v, const char* fn, const char* name) {
  if (!std::isfinite(v)) throw py::value_error(cat(fn, ": ", name, " must be finite, got ", v));
}

void check_bounds(double lo, double hi, const char* fn) {
  check_finite(lo, fn, "lo");
  check_finite(hi, fn, "hi");
  if (lo > hi) throw py::value_error(cat(fn, ": lo must be <= hi, got lo=", lo, ", hi=", hi));
}

// y = op(x) for the unary forwards.
template <class T, class K>
py::array unary(const py::handle& xo, const char* fn, K&& kernel) {
  auto x = as_array<T>(xo, fn, "x");
  check_nonempty(x, fn, "x");
  py::array_t<T> out(shape_of(x));
  T* po = out.mutable_data();
  const T* px = x.data();
  const index_t n = x.size();
  {
    py::gil_scoped_release nogil;
    kernel(po, px, n);
  }
  return out;
}

// dx = op(dout, x) for the backwards.
template <class T, class K>
py::array binary(const py::handle& douto, const py::handle& xo, const char* fn, K&& kernel) {
  auto dout = as_array<T>(douto, fn, "dout");
  auto x = as_array<T>(xo, fn, "x");
  check_nonempty(dout, fn, "dout");
  check_same_shape(dout, x, fn, "dout", "x");
  py::array_t<T> dx(shape_of(x));
  T* pdx = dx.mutable_data();
  const T* pg = dout.data();
  const T* px = x.data();
  const index_t n = x.size();
  {
    py::gil_scoped_release nogil;
    kernel(pdx, pg, px, n);
  }
  return dx;
}

bool is_f32(const py::handle& a, const char* fn, const char* name) { return float_kind(a, fn, name) == FloatKind::f32; }

}  // namespace

void register_activation(py::module_& m) {
  m.def(
      "relu_forward",
      [](py::object x) -> py::array {
        const char* fn = "relu_forward";
        if (is_f32(x, fn, "x")) return unary<float>(x, fn, [](float* o, const float* i, index_t n) { relu_forward_cpu(o, i, n); });
        return unary<double>(x, fn, [](double* o, const double* i, index_t n) { relu_forward_cpu(o, i, n); });
      },
      py::arg("x"), "max(x, 0), any shape.");
  m.def(
      "relu_backward",
      [](py::object dout, py::object x) -> py::array {
        const char* fn = "relu_backward";
        if (is_f32(dout, fn, "dout"))
          return binary<float>(dout, x, fn, [](float* d, const float* g, const float* i, index_t n) { relu_backward_cpu(d, g, i, n); });
        return binary<double>(dout, x, fn, [](double* d, const double* g, const double* i, index_t n) { relu_backward_cpu(d, g, i, n); });
      },
      py::arg("dout"), py::arg("x"), "dout where x > 0, else 0.");
  m.def(
      "clamp_forward",
      [](py::object x, double lo, double hi) -> py::array {
        const char* fn = "clamp_forward";
        check_bounds(lo, hi, fn);
        if (is_f32(x, fn, "x"))
          return unary<float>(x, fn, [=](float* o, const float* i, index_t n) { clamp_forward_cpu(o, i, float(lo), float(hi), n); });
        return unary<double>(x, fn, [=](double* o, const double* i, index_t n) { clamp_forward_cpu(o, i, lo, hi, n); });
      },
      py::arg("x"), py::arg("lo"), py::arg("hi"), "min(max(x, lo), hi), any shape (ReLU6 is lo=0, hi=6).");
  m.def(
      "clamp_backward",
      [](py::object dout, py::object x, double lo, double hi) -> py::array {
        const char* fn = "clamp_backward";
        check_bounds(lo, hi, fn);
        if (is_f32(dout, fn, "dout"))
          return binary<float>(dout, x, fn, [=](float* d, const float* g, const float* i, index_t n) {
            clamp_backward_cpu(d, g, i, float(lo), float(hi), n);
          });
        return binary<double>(dout, x, fn, [=](double* d, const double* g, const double* i, index_t n) {
          clamp_backward_cpu(d, g, i, lo, hi, n);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("lo"), py::arg("hi"), "dout where lo < x < hi, else 0.");
  m.def(
      "leaky_relu_forward",
      [](py::object x, double alpha) -> py::array {
        const char* fn = "leaky_relu_forward";
        check_finite(alpha, fn, "alpha");
        if (is_f32(x, fn, "x"))
          return unary<float>(x, fn, [=](float* o, const float* i, index_t n) { leaky_relu_forward_cpu(o, i, float(alpha), n); });
        return unary<double>(x, fn, [=](double* o, const double* i, index_t n) { leaky_relu_forward_cpu(o, i, alpha, n); });
      },
      py::arg("x"), py::arg("alpha"), "x where x > 0, else alpha*x.");
  m.def(
      "leaky_relu_backward",
      [](py::object dout, py::object x, double alpha) -> py::array {
        const char* fn = "leaky_relu_backward";
        check_finite(alpha, fn, "alpha");
        if (is_f32(dout, fn, "dout"))
          return binary<float>(dout, x, fn, [=](float* d, const float* g, const float* i, index_t n) {
            leaky_relu_backward_cpu(d, g, i, float(alpha), n);
          });
        return binary<double>(dout, x, fn, [=](double* d, const double* g, const double* i, index_t n) {
          leaky_relu_backward_cpu(d, g, i, alpha, n);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("alpha"), "dout where x > 0, else alpha*dout.");
}

}  // namespace gradvis
