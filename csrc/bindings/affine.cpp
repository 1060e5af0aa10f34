// _core.affine_forward / affine_backward: the fully connected layer on the gemm.
#include <limits>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/affine.h"

namespace gradvis {
namespace {

constexpr const char* kFwd = "affine_forward";
constexpr const char* kBwd = "affine_backward";

template <class T>
py::array forward_impl(const py::array& x_in, const py::handle& w_obj, const py::handle& b_obj) {
  auto x = as_array<T>(x_in, kFwd, "x");
  auto w = as_array<T>(w_obj, kFwd, "w");
  check_ndim(x, 2, kFwd, "x", "(N, D) (flatten the features first)");
  check_ndim(w, 2, kFwd, "w", "(D, M)");
  check_nonempty(x, kFwd, "x");
  check_nonempty(w, kFwd, "w");
  const index_t N = x.shape(0), D = x.shape(1), M = w.shape(1);
  if (w.shape(0) != D)
    throw py::value_error(cat(kFwd, ": w expects ", w.shape(0), " input features but x has ", D, "; x shape ",
                              shape_str(x), ", w shape ", shape_str(w)));
  py::array_t<T, py::array::c_style> b;
  const T* bp = nullptr;
  if (!b_obj.is_none()) {
    b = as_array<T>(b_obj, kFwd, "b");
    if (b.ndim() != 1 || b.shape(0) != M)
      throw py::value_error(cat(kFwd, ": b must have shape (", M, ",) (one per output), got shape ", shape_str(b),
                                "; w shape ", shape_str(w)));
    bp = b.data();
  }
  auto out = empty_array<T>({py::ssize_t(N), py::ssize_t(M)});
  T* op = out.mutable_data();
  const T* xp = x.data();
  const T* wp = w.data();
  {
    py::gil_scoped_release release;
    affine_forward_cpu<T>(op, xp, wp, bp, N, D, M);
  }
  return out;
}

template <class T>
py::tuple backward_impl(const py::array& d_in, const py::handle& x_obj, const py::handle& w_obj, bool input_grad,
                        bool param_grads) {
  auto dout = as_array<T>(d_in, kBwd, "dout");
  auto x = as_array<T>(x_obj, kBwd, "x");
  auto w = as_array<T>(w_obj, kBwd, "w");
  check_ndim(dout, 2, kBwd, "dout", "(N, M)");
  check_ndim(x, 2, kBwd, "x", "(N, D) (flatten the features first)");
  check_ndim(w, 2, kBwd, "w", "(D, M)");
  check_nonempty(dout, kBwd, "dout");
  check_nonempty(x, kBwd, "x");
  check_nonempty(w, kBwd, "w");
  const index_t N = x.shape(0), D = x.shape(1), M = w.shape(1);
  if (w.shape(0) != D)
    throw py::value_error(cat(kBwd, ": w expects ", w.shape(0), " input features but x has ", D, "; x shape ",
                              shape_str(x), ", w shape ", shape_str(w)));
  if (dout.shape(0) != N || dout.shape(1) != M)
    throw py::value_error(cat(kBwd, ": dout must have shape (", N, ", ", M, ") (the forward output), got ",
                              shape_str(dout), "; x shape ", shape_str(x), ", w shape ", shape_str(w)));
  py::array_t<T, py::array::c_style> dx, dw, db;
  T *dxp = nullptr, *dwp = nullptr, *dbp = nullptr;
  if (input_grad) {
    dx = empty_array<T>({py::ssize_t(N), py::ssize_t(D)});
    dxp = dx.mutable_data();
  }
  if (param_grads) {
    dw = empty_array<T>({py::ssize_t(D), py::ssize_t(M)});
    db = empty_array<T>({py::ssize_t(M)});
    dwp = dw.mutable_data();
    dbp = db.mutable_data();
  }
  const T* dp = dout.data();
  const T* xp = x.data();
  const T* wp = w.data();
  {
    py::gil_scoped_release release;
    affine_backward_cpu<T>(dxp, dwp, dbp, dp, xp, wp, N, D, M);
  }
  auto some = [](const py::array& a, bool made) -> py::object { return made ? py::object(a) : py::object(py::none()); };
  return py::make_tuple(some(dx, input_grad), some(dw, param_grads), some(db, param_grads));
}

}  // namespace

void register_affine(py::module_& m) {
  m.def(
      "affine_forward",
      [](const py::object& x, const py::object& w, const py::object& b) -> py::array {
        FloatKind k;
        py::array xa = primary_array(x, kFwd, "x", k);
        return k == FloatKind::f32 ? forward_impl<float>(xa, w, b) : forward_impl<double>(xa, w, b);
      },
      py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
      "Fully connected layer: x (N, D) @ w (D, M) + b (M,) -> (N, M), in x's dtype.");
  m.def(
      "affine_backward",
      [](const py::object& dout, const py::object& x, const py::object& w, bool input_grad,
         bool param_grads) -> py::tuple {
        FloatKind k;
        py::array da = primary_array(dout, kBwd, "dout", k);
        return k == FloatKind::f32 ? backward_impl<float>(da, x, w, input_grad, param_grads)
                                   : backward_impl<double>(da, x, w, input_grad, param_grads);
      },
      py::arg("dout"), py::arg("x"), py::arg("w"), py::arg("input_grad") = true, py::arg("param_grads") = true,
      "Gradients of affine_forward: dout (N, M), x (N, D), w (D, M) -> (dx (N, D), dw (D, M), db (M,)).\n"
      "input_grad=False / param_grads=False skip dx / (dw, db) (returned as None).");
}

}  // namespace gradvis
