// Bindings for the element-wise activations (any ndim), float32 and float64.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/register.h"
#include "bindings/elementwise.h"
#include "bindings/util.h"
#include "ops/activation.h"

namespace gradvis {

namespace {

using elementwise::binary;
using elementwise::is_f32;
using elementwise::unary;

void check_finite(double v, const char* fn, const char* name) {
  if (!std::isfinite(v)) throw py::value_error(cat(fn, ": ", name, " must be finite, got ", v));
}

void check_bounds(double lo, double hi, const char* fn) {
  check_finite(lo, fn, "lo");
  check_finite(hi, fn, "hi");
  if (lo > hi) throw py::value_error(cat(fn, ": lo must be <= hi, got lo=", lo, ", hi=", hi));
}

// The dtype dispatch: `kernel` is a generic lambda over (float*, ...) and
// (double*, ...); it runs in the dtype of x (forwards) or dout (backwards).
template <class K>
py::array unary_any(const py::object& x, const char* fn, K&& kernel) {
  if (is_f32(x, fn, "x")) return unary<float>(x, fn, kernel);
  return unary<double>(x, fn, kernel);
}

template <class K>
py::array binary_any(const py::object& dout, const py::object& x, const char* fn, const char* xname, K&& kernel) {
  if (is_f32(dout, fn, "dout")) return binary<float>(dout, x, fn, xname, kernel);
  return binary<double>(dout, x, fn, xname, kernel);
}

// Binds name_forward(x) and name_backward(dout, <second>) of an activation
// without parameters; `second` is "x", or "out" where the backward takes the
// forward's output. pybind11 copies the names and docs.
template <class Fwd, class Bwd>
void def_activation(py::module_& m, const std::string& name, const char* second, Fwd fwd, Bwd bwd,
                    const char* fwd_doc, const char* bwd_doc) {
  const std::string f = name + "_forward", b = name + "_backward";
  m.def(f.c_str(), [f, fwd](py::object x) { return unary_any(x, f.c_str(), fwd); }, py::arg("x"), fwd_doc);
  m.def(
      b.c_str(),
      [b, second, bwd](py::object dout, py::object y) { return binary_any(dout, y, b.c_str(), second, bwd); },
      py::arg("dout"), py::arg(second), bwd_doc);
}

}  // namespace

void register_activation(py::module_& m) {
  def_activation(
      m, "relu", "x", [](auto* o, const auto* i, index_t n) { relu_forward_cpu(o, i, n); },
      [](auto* d, const auto* g, const auto* i, index_t n) { relu_backward_cpu(d, g, i, n); },
      "max(x, 0), any shape.", "dout where x > 0, else 0.");
  m.def(
      "clamp_forward",
      [](py::object x, double lo, double hi) {
        const char* fn = "clamp_forward";
        check_bounds(lo, hi, fn);
        return unary_any(x, fn, [=](auto* o, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(o)>;
          clamp_forward_cpu(o, i, T(lo), T(hi), n);
        });
      },
      py::arg("x"), py::arg("lo"), py::arg("hi"), "min(max(x, lo), hi), any shape (ReLU6 is lo=0, hi=6).");
  m.def(
      "clamp_backward",
      [](py::object dout, py::object x, double lo, double hi) {
        const char* fn = "clamp_backward";
        check_bounds(lo, hi, fn);
        return binary_any(dout, x, fn, "x", [=](auto* d, const auto* g, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(d)>;
          clamp_backward_cpu(d, g, i, T(lo), T(hi), n);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("lo"), py::arg("hi"), "dout where lo < x < hi, else 0.");
  m.def(
      "leaky_relu_forward",
      [](py::object x, double alpha) {
        const char* fn = "leaky_relu_forward";
        check_finite(alpha, fn, "alpha");
        return unary_any(x, fn, [=](auto* o, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(o)>;
          leaky_relu_forward_cpu(o, i, T(alpha), n);
        });
      },
      py::arg("x"), py::arg("alpha"), "x where x > 0, else alpha*x.");
  m.def(
      "leaky_relu_backward",
      [](py::object dout, py::object x, double alpha) {
        const char* fn = "leaky_relu_backward";
        check_finite(alpha, fn, "alpha");
        return binary_any(dout, x, fn, "x", [=](auto* d, const auto* g, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(d)>;
          leaky_relu_backward_cpu(d, g, i, T(alpha), n);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("alpha"), "dout where x > 0, else alpha*dout.");

  def_activation(
      m, "sigmoid", "out", [](auto* o, const auto* i, index_t n) { sigmoid_forward_cpu(o, i, n); },
      [](auto* d, const auto* g, const auto* i, index_t n) { sigmoid_backward_cpu(d, g, i, n); },
      "1 / (1 + exp(-x)), any shape.", "dout * (1 - out) * out, from the forward's output out.");
  def_activation(
      m, "tanh", "out", [](auto* o, const auto* i, index_t n) { tanh_forward_cpu(o, i, n); },
      [](auto* d, const auto* g, const auto* i, index_t n) { tanh_backward_cpu(d, g, i, n); },
      "tanh(x), any shape.", "dout * (1 - out**2), from the forward's output out.");
  m.def(
      "hardsigmoid_forward",
      [](py::object x, double alpha, double beta) {
        const char* fn = "hardsigmoid_forward";
        check_finite(alpha, fn, "alpha");
        check_finite(beta, fn, "beta");
        return unary_any(x, fn, [=](auto* o, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(o)>;
          hardsigmoid_forward_cpu(o, i, T(alpha), T(beta), n);
        });
      },
      py::arg("x"), py::arg("alpha"), py::arg("beta"),
      "clamp(alpha*x + beta, 0, 1), any shape (PyTorch's Hardsigmoid: alpha=1/6, beta=0.5).");
  m.def(
      "hardsigmoid_backward",
      [](py::object dout, py::object x, double alpha, double beta) {
        const char* fn = "hardsigmoid_backward";
        check_finite(alpha, fn, "alpha");
        check_finite(beta, fn, "beta");
        return binary_any(dout, x, fn, "x", [=](auto* d, const auto* g, const auto* i, index_t n) {
          using T = std::remove_pointer_t<decltype(d)>;
          hardsigmoid_backward_cpu(d, g, i, T(alpha), T(beta), n);
        });
      },
      py::arg("dout"), py::arg("x"), py::arg("alpha"), py::arg("beta"),
      "alpha*dout where 0 < alpha*x + beta < 1, else 0.");
  def_activation(
      m, "hardswish", "x", [](auto* o, const auto* i, index_t n) { hardswish_forward_cpu(o, i, n); },
      [](auto* d, const auto* g, const auto* i, index_t n) { hardswish_backward_cpu(d, g, i, n); },
      "x * clamp(x + 3, 0, 6) / 6, any shape.", "0 where x < -3, dout*(x/3 + 1/2) where x <= 3, else dout.");
  def_activation(
      m, "silu", "x", [](auto* o, const auto* i, index_t n) { silu_forward_cpu(o, i, n); },
      [](auto* d, const auto* g, const auto* i, index_t n) { silu_backward_cpu(d, g, i, n); },
      "x * sigmoid(x) (SiLU, swish), any shape.", "dout * s * (1 + x*(1 - s)) with s = sigmoid(x).");
}

}  // namespace gradvis
