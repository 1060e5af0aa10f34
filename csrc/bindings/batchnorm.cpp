// Bindings for spatial batch norm: x is (N, C, H, W) or (N, D).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <vector>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/batchnorm.h"

namespace gradvis {

namespace {

struct BnDims {
  index_t N, C, HW;
};

template <class T>
BnDims bn_dims(const py::array_t<T, py::array::c_style>& x, const char* fn, const char* name) {
  if (x.ndim() != 2 && x.ndim() != 4)
    throw py::value_error(cat(fn, ": ", name, " must be 2-D (N, D) or 4-D (N, C, H, W), got shape ", shape_str(x)));
  check_nonempty(x, fn, name);
  return {x.shape(0), x.shape(1), x.ndim() == 4 ? x.shape(2) * x.shape(3) : 1};
}

// A per-channel vector: 1-D of length C.
template <class T>
py::array_t<T, py::array::c_style> channel_arg(const py::handle& obj, index_t C, const char* fn, const char* name,
                                               const py::array& x) {
  auto a = as_array<T>(obj, fn, name);
  if (a.ndim() != 1 || a.shape(0) != C)
    throw py::value_error(cat(fn, ": ", name, " must have shape (", C, ",) for x of shape ", shape_str(x), ", got ",
                              shape_str(a)));
  return a;
}

void check_eps(double eps, const char* fn) {
  if (!(eps > 0) || !std::isfinite(eps)) throw py::value_error(cat(fn, ": eps must be positive and finite, got ", eps));
}

template <class T>
void check_var(const py::array_t<T, py::array::c_style>& v, const char* fn) {
  const T* p = v.data();
  for (py::ssize_t i = 0; i < v.size(); ++i)
    if (!(p[i] >= 0)) throw py::value_error(cat(fn, ": running_var must be non-negative, got ", p[i], " at ", i));
}

template <class T>
void check_same(const py::array& a, const py::array& b, const char* fn, const char* an, const char* bn) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
  if (!same)
    throw py::value_error(cat(fn, ": ", an, " shape ", shape_str(a), " does not match ", bn, " shape ", shape_str(b)));
}

template <class T>
py::tuple forward_train(const py::handle& xo, const py::handle& go, const py::handle& bo, double eps, bool relu) {
  const char* fn = "batchnorm_forward_train";
  auto x = as_array<T>(xo, fn, "x");
  const BnDims d = bn_dims(x, fn, "x");
  auto gamma = channel_arg<T>(go, d.C, fn, "gamma", x);
  auto beta = channel_arg<T>(bo, d.C, fn, "beta", x);
  check_eps(eps, fn);
  auto out = empty_like<T>(x);
  py::array_t<T> mean(d.C), var(d.C), inv_std(d.C);
  T *po = out.mutable_data(), *pm = mean.mutable_data(), *pv = var.mutable_data(), *pi = inv_std.mutable_data();
  const T *px = x.data(), *pg = gamma.data(), *pb = beta.data();
  {
    py::gil_scoped_release nogil;
    batchnorm_forward_train_cpu<T>(po, pm, pv, pi, px, pg, pb, eps, d.N, d.C, d.HW, relu);
  }
  return py::make_tuple(out, mean, var, inv_std);
}

template <class T>
py::array forward_test(const py::handle& xo, const py::handle& go, const py::handle& bo, const py::handle& rmo,
                       const py::handle& rvo, double eps, bool relu) {
  const char* fn = "batchnorm_forward_test";
  auto x = as_array<T>(xo, fn, "x");
  const BnDims d = bn_dims(x, fn, "x");
  auto gamma = channel_arg<T>(go, d.C, fn, "gamma", x);
  auto beta = channel_arg<T>(bo, d.C, fn, "beta", x);
  auto rm = channel_arg<T>(rmo, d.C, fn, "running_mean", x);
  auto rv = channel_arg<T>(rvo, d.C, fn, "running_var", x);
  check_eps(eps, fn);
  check_var(rv, fn);
  auto out = empty_like<T>(x);
  T* po = out.mutable_data();
  const T *px = x.data(), *pg = gamma.data(), *pb = beta.data(), *pm = rm.data(), *pv = rv.data();
  {
    py::gil_scoped_release nogil;
    batchnorm_forward_test_cpu<T>(po, px, pg, pb, pm, pv, eps, d.N, d.C, d.HW, relu);
  }
  return out;
}

template <class T>
py::tuple backward_train(const py::handle& douto, const py::handle& xo, const py::handle& go, const py::handle& mo,
                         const py::handle& io) {
  const char* fn = "batchnorm_backward_train";
  auto dout = as_array<T>(douto, fn, "dout");
  auto x = as_array<T>(xo, fn, "x");
  const BnDims d = bn_dims(x, fn, "x");
  check_same<T>(dout, x, fn, "dout", "x");
  auto gamma = channel_arg<T>(go, d.C, fn, "gamma", x);
  auto mean = channel_arg<T>(mo, d.C, fn, "mean", x);
  auto inv_std = channel_arg<T>(io, d.C, fn, "inv_std", x);
  auto dx = empty_like<T>(x);
  py::array_t<T> dgamma(d.C), dbeta(d.C);
  T *pdx = dx.mutable_data(), *pdg = dgamma.mutable_data(), *pdb = dbeta.mutable_data();
  const T *pg = dout.data(), *px = x.data(), *pgam = gamma.data(), *pm = mean.data(), *pi = inv_std.data();
  {
    py::gil_scoped_release nogil;
    batchnorm_backward_train_cpu<T>(pdx, pdg, pdb, pg, px, pgam, pm, pi, d.N, d.C, d.HW);
  }
  return py::make_tuple(dx, dgamma, dbeta);
}

template <class T>
py::tuple backward_test(const py::handle& douto, const py::handle& xo, const py::handle& go, const py::handle& rmo,
                        const py::handle& rvo, double eps) {
  const char* fn = "batchnorm_backward_test";
  auto dout = as_array<T>(douto, fn, "dout");
  auto x = as_array<T>(xo, fn, "x");
  const BnDims d = bn_dims(x, fn, "x");
  check_same<T>(dout, x, fn, "dout", "x");
  auto gamma = channel_arg<T>(go, d.C, fn, "gamma", x);
  auto rm = channel_arg<T>(rmo, d.C, fn, "running_mean", x);
  auto rv = channel_arg<T>(rvo, d.C, fn, "running_var", x);
  check_eps(eps, fn);
  check_var(rv, fn);
  auto dx = empty_like<T>(x);
  py::array_t<T> dgamma(d.C), dbeta(d.C);
  T *pdx = dx.mutable_data(), *pdg = dgamma.mutable_data(), *pdb = dbeta.mutable_data();
  const T *pg = dout.data(), *px = x.data(), *pgam = gamma.data(), *pm = rm.data(), *pv = rv.data();
  {
    py::gil_scoped_release nogil;
    batchnorm_backward_test_cpu<T>(pdx, pdg, pdb, pg, px, pgam, pm, pv, eps, d.N, d.C, d.HW);
  }
  return py::make_tuple(dx, dgamma, dbeta);
}

template <class T>
py::array backward_test_input(const py::handle& douto, const py::handle& go, const py::handle& rvo, double eps) {
  const char* fn = "batchnorm_backward_test_input";
  auto dout = as_array<T>(douto, fn, "dout");
  const BnDims d = bn_dims(dout, fn, "dout");
  auto gamma = channel_arg<T>(go, d.C, fn, "gamma", dout);
  auto rv = channel_arg<T>(rvo, d.C, fn, "running_var", dout);
  check_eps(eps, fn);
  check_var(rv, fn);
  auto dx = empty_like<T>(dout);
  T* pdx = dx.mutable_data();
  const T *pg = dout.data(), *pgam = gamma.data(), *pv = rv.data();
  {
    py::gil_scoped_release nogil;
    batchnorm_backward_test_input_cpu<T>(pdx, pg, pgam, pv, eps, d.N, d.C, d.HW);
  }
  return dx;
}

}  // namespace

void register_batchnorm(py::module_& m) {
  m.def(
      "batchnorm_forward_train",
      [](py::object x, py::object gamma, py::object beta, double eps, bool relu) {
        return float_kind(x, "batchnorm_forward_train", "x") == FloatKind::f32
                   ? forward_train<float>(x, gamma, beta, eps, relu)
                   : forward_train<double>(x, gamma, beta, eps, relu);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"), py::arg("relu") = false,
      "Batch norm with batch statistics per channel over (N, H, W). Returns (out, mean, var, inv_std);\n"
      "var is biased, inv_std = 1/sqrt(var + eps). x is (N, C, H, W) or (N, D). relu=True: out is\n"
      "max(batch norm, 0), written in the same pass.");
  m.def(
      "batchnorm_forward_test",
      [](py::object x, py::object gamma, py::object beta, py::object running_mean, py::object running_var,
         double eps, bool relu) -> py::array {
        return float_kind(x, "batchnorm_forward_test", "x") == FloatKind::f32
                   ? forward_test<float>(x, gamma, beta, running_mean, running_var, eps, relu)
                   : forward_test<double>(x, gamma, beta, running_mean, running_var, eps, relu);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
      py::arg("eps"), py::arg("relu") = false,
      "Batch norm with running statistics (relu=True: then max(., 0) in the same pass).");
  m.def(
      "batchnorm_backward_train",
      [](py::object dout, py::object x, py::object gamma, py::object mean, py::object inv_std) {
        return float_kind(dout, "batchnorm_backward_train", "dout") == FloatKind::f32
                   ? backward_train<float>(dout, x, gamma, mean, inv_std)
                   : backward_train<double>(dout, x, gamma, mean, inv_std);
      },
      py::arg("dout"), py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("inv_std"),
      "Gradient of batchnorm_forward_train through the batch statistics. Returns (dx, dgamma, dbeta).");
  m.def(
      "batchnorm_backward_test",
      [](py::object dout, py::object x, py::object gamma, py::object running_mean, py::object running_var,
         double eps) {
        return float_kind(dout, "batchnorm_backward_test", "dout") == FloatKind::f32
                   ? backward_test<float>(dout, x, gamma, running_mean, running_var, eps)
                   : backward_test<double>(dout, x, gamma, running_mean, running_var, eps);
      },
      py::arg("dout"), py::arg("x"), py::arg("gamma"), py::arg("running_mean"), py::arg("running_var"),
      py::arg("eps"), "Gradient of batchnorm_forward_test. Returns (dx, dgamma, dbeta).");
  m.def(
      "batchnorm_backward_test_input",
      [](py::object dout, py::object gamma, py::object running_var, double eps) -> py::array {
        return float_kind(dout, "batchnorm_backward_test_input", "dout") == FloatKind::f32
                   ? backward_test_input<float>(dout, gamma, running_var, eps)
                   : backward_test_input<double>(dout, gamma, running_var, eps);
      },
      py::arg("dout"), py::arg("gamma"), py::arg("running_var"), py::arg("eps"),
      "Only dx of batchnorm_backward_test: dout * gamma / sqrt(running_var + eps), one pass.");
}

}  // namespace gradvis
