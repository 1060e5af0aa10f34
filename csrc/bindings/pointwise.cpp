// Bindings for GELU, erf, the per-channel broadcast multiply, the residual add
// and layer normalization; float32 and float64, the dtype taken from x (forwards)
// or dout (backwards).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/register.h"
#include "bindings/elementwise.h"
#include "bindings/util.h"
#include "ops/layernorm.h"
#include "ops/pointwise.h"

namespace gradvis {

namespace {

using elementwise::binary;
using elementwise::check_same_shape;
using elementwise::is_f32;
using elementwise::unary;

bool tanh_form(const std::string& approximate, const char* fn) {
  if (approximate == "none") return false;
  if (approximate == "tanh") return true;
  throw py::value_error(cat(fn, ": approximate must be 'none' or 'tanh', got '", approximate, "'"));
}

// ---- channel scale ------------------------------------------------------------------
// x is (N, C, ...); s is (C,), (1, C) or (N, C).
struct ScaleGeom {
  index_t N, C, HW;
  bool per_sample;
};

ScaleGeom scale_geom(const py::array& x, const py::array& s, const char* fn, const char* xname) {
  if (x.ndim() < 2)
    throw py::value_error(cat(fn, ": ", xname, " must be (N, C, ...), got shape ", shape_str(x)));
  check_nonempty(x, fn, xname);
  ScaleGeom g{index_t(x.shape(0)), index_t(x.shape(1)), 1, false};
  for (py::ssize_t i = 2; i < x.ndim(); ++i) g.HW *= index_t(x.shape(i));
  const bool ok1 = s.ndim() == 1 && index_t(s.shape(0)) == g.C;
  const bool ok2 = s.ndim() == 2 && index_t(s.shape(1)) == g.C && (s.shape(0) == 1 || index_t(s.shape(0)) == g.N);
  if (!ok1 && !ok2)
    throw py::value_error(cat(fn, ": s must be (C,), (1, C) or (N, C) for ", xname, " of shape ", shape_str(x),
                              ", got shape ", shape_str(s)));
  g.per_sample = s.ndim() == 2 && s.shape(0) != 1;
  if (g.N == 1) g.per_sample = false;
  return g;
}

template <class T>
py::array scale_forward(const py::object& xo, const py::object& so) {
  const char* fn = "channel_scale_forward";
  auto x = as_array<T>(xo, fn, "x");
  auto s = as_array<T>(so, fn, "s");
  const ScaleGeom g = scale_geom(x, s, fn, "x");
  auto out = empty_like<T>(x);
  T* po = out.mutable_data();
  const T *px = x.data(), *ps = s.data();
  {
    py::gil_scoped_release nogil;
    channel_scale_forward_cpu(po, px, ps, g.N, g.C, g.HW, g.per_sample);
  }
  return out;
}

template <class T>
py::tuple scale_backward(const py::object& go, const py::object& xo, const py::object& so, bool input_grad,
                         bool scale_grad) {
  const char* fn = "channel_scale_backward";
  auto dout = as_array<T>(go, fn, "dout");
  auto x = as_array<T>(xo, fn, "x");
  auto s = as_array<T>(so, fn, "s");
  const ScaleGeom g = scale_geom(dout, s, fn, "dout");
  check_same_shape(dout, x, fn, "dout", "x");
  py::object dx = py::none(), ds = py::none();
  T* pdx = nullptr;
  T* pds = nullptr;
  if (input_grad) {
    auto a = empty_like<T>(x);
    pdx = a.mutable_data();
    dx = a;
  }
  if (scale_grad) {
    auto a = empty_like<T>(s);
    pds = a.mutable_data();
    ds = a;
  }
  const T *pg = dout.data(), *px = x.data(), *ps = s.data();
  {
    py::gil_scoped_release nogil;
    channel_scale_backward_cpu(pdx, pds, pg, px, ps, g.N, g.C, g.HW, g.per_sample);
  }
  return py::make_tuple(dx, ds);
}

// The gradient of a map of `shape` (N, C, ...) from its terms (channel_grad_cpu).
template <class T>
py::array channel_grad(const py::object& shape_o, const py::object& bo, const py::object& so,
                       const py::object& po, const py::object& ao, const py::object& preo, const py::object& masko,
                       const std::string& activation) {
  const char* fn = "channel_grad";
  GradAct act = GradAct::none;
  if (activation == "silu") act = GradAct::silu;
  else if (activation == "hardswish") act = GradAct::hardswish;
  else if (activation != "none")
    throw py::value_error(cat(fn, ": activation must be 'none', 'silu' or 'hardswish', got '", activation, "'"));
  std::vector<py::ssize_t> shape;
  for (std::int64_t d : int_values(shape_o, fn, "shape", "a sequence of ints")) {
    if (d <= 0) throw py::value_error(cat(fn, ": shape must have positive sizes, got ", py::repr(shape_o)));
    shape.push_back(py::ssize_t(d));
  }
  if (shape.size() < 2)
    throw py::value_error(cat(fn, ": shape must be (N, C, ...), got ", py::repr(shape_o)));
  const index_t N = index_t(shape[0]), C = index_t(shape[1]);
  index_t HW = 1;
  for (std::size_t i = 2; i < shape.size(); ++i) HW *= index_t(shape[i]);
  if (bo.is_none() && !so.is_none()) throw py::value_error(cat(fn, ": s scales base, and base is None"));
  if (bo.is_none() && po.is_none())
    throw py::value_error(cat(fn, ": give base (with or without s), pool, or both"));
  auto out = empty_array<T>(shape);   // (checks the size)
  // an argument of the map's shape (None: an empty array, not read)
  auto map_arg = [&](const py::object& o, const char* name) {
    py::array_t<T, py::array::c_style> a;
    if (o.is_none()) return a;
    a = as_array<T>(o, fn, name);
    if (shape_of(a) != shape)
      throw py::value_error(cat(fn, ": ", name, " must have shape ", shape_str(shape), ", got ", shape_str(a)));
    return a;
  };
  py::array_t<T, py::array::c_style> base = map_arg(bo, "base"), addend = map_arg(ao, "add"), sc, pool, pre;
  bool per_sample = false;
  if (!so.is_none()) {
    sc = as_array<T>(so, fn, "s");
    per_sample = scale_geom(base, sc, fn, "base").per_sample;
  }
  if (!po.is_none()) {
    pool = as_array<T>(po, fn, "pool");
    bool ok = pool.ndim() >= 2 && index_t(pool.shape(0)) == N && index_t(pool.shape(1)) == C;
    for (py::ssize_t i = 2; ok && i < pool.ndim(); ++i) ok = pool.shape(i) == 1;
    if (!ok)
      throw py::value_error(cat(fn, ": pool must be (N, C) or (N, C, 1, ...) = (", N, ", ", C, ", ...), got shape ",
                                shape_str(pool)));
  }
  if ((act != GradAct::none) != !preo.is_none())
    throw py::value_error(cat(fn, ": pre (the activation's input) is needed with activation '", activation,
                              "' and only then"));
  pre = map_arg(preo, "pre");
  const std::uint64_t* bits = nullptr;
  if (!masko.is_none()) {
    if (act != GradAct::none)
      throw py::value_error(cat(fn, ": mask goes with activation 'none' (the mask is the activation's backward)"));
    bits = mask_words(masko, fn, (N * C * HW + 63) / 64, [&] { return cat("shape ", shape_str(shape)); });
  }
  T* po_ = out.mutable_data();
  const T* pb = bo.is_none() ? nullptr : base.data();
  const T* ps = so.is_none() ? nullptr : sc.data();
  const T* pa = ao.is_none() ? nullptr : addend.data();
  const T* pp = po.is_none() ? nullptr : pool.data();
  const T* px = preo.is_none() ? nullptr : pre.data();
  {
    py::gil_scoped_release nogil;
    channel_grad_cpu<T>(po_, pb, ps, pp, pa, px, bits, N, C, HW, per_sample, act);
  }
  return out;
}

// ---- layer norm -----------------------------------------------------------------------
struct LnGeom {
  index_t outer = 1, R = 1, inner = 1;
  std::vector<py::ssize_t> stat_shape;   // x's shape without axes [begin, end)
};

LnGeom ln_geom(const py::array& x, std::int64_t begin, std::int64_t end, const char* fn, const char* xname) {
  check_nonempty(x, fn, xname);
  const std::int64_t nd = x.ndim();
  if (nd < 2) throw py::value_error(cat(fn, ": ", xname, " must have at least 2 axes, got shape ", shape_str(x)));
  if (end < 0) end = nd;
  if (begin < 1 || begin >= nd || end <= begin || end > nd)
    throw py::value_error(cat(fn, ": axes [begin, end) = [", begin, ", ", end, ") must lie in [1, ", nd, ") for ",
                              xname, " of shape ", shape_str(x)));
  LnGeom g;
  for (std::int64_t i = 0; i < nd; ++i) {
    const index_t d = index_t(x.shape(i));
    if (i < begin) g.outer *= d;
    else if (i < end) g.R *= d;
    else g.inner *= d;
    if (i < begin || i >= end) g.stat_shape.push_back(x.shape(i));
  }
  return g;
}

// weight or bias: None, or R elements shaped as x's normalized axes or flat (R,).
template <class T>
py::object ln_param(const py::object& p, const py::array& x, std::int64_t begin, std::int64_t end, index_t R,
                    const char* fn, const char* name) {
  if (p.is_none()) return p;
  auto a = as_array<T>(p, fn, name);
  if (end < 0) end = x.ndim();
  std::vector<py::ssize_t> want(x.shape() + begin, x.shape() + end);
  const bool flat = a.ndim() == 1 && index_t(a.shape(0)) == R;
  if (!flat && shape_of(a) != want)
    throw py::value_error(cat(fn, ": ", name, " must have shape ", shape_str(want), " or (", R, ",), got shape ",
                              shape_str(a)));
  return a;
}

template <class T>
const T* data_or_null(const py::object& a) {
  return a.is_none() ? nullptr : py::reinterpret_borrow<py::array_t<T>>(a).data();
}

template <class T>
py::tuple ln_forward(const py::object& xo, const py::object& wo, const py::object& bo, std::int64_t begin,
                     std::int64_t end, double eps) {
  const char* fn = "layernorm_forward";
  auto x = as_array<T>(xo, fn, "x");
  const LnGeom g = ln_geom(x, begin, end, fn, "x");
  const py::object w = ln_param<T>(wo, x, begin, end, g.R, fn, "weight");
  const py::object b = ln_param<T>(bo, x, begin, end, g.R, fn, "bias");
  if (!std::isfinite(eps) || eps < 0) throw py::value_error(cat(fn, ": eps must be finite and >= 0, got ", eps));
  auto out = empty_like<T>(x);
  auto mean = empty_array<T>(g.stat_shape);
  auto rstd = empty_array<T>(g.stat_shape);
  T *po = out.mutable_data(), *pm = mean.mutable_data(), *pr = rstd.mutable_data();
  const T* px = x.data();
  const T *pw = data_or_null<T>(w), *pb = data_or_null<T>(b);
  {
    py::gil_scoped_release nogil;
    layernorm_forward_cpu(po, pm, pr, px, pw, pb, g.outer, g.R, g.inner, eps);
  }
  return py::make_tuple(out, mean, rstd);
}

template <class T>
py::tuple ln_backward(const py::object& go, const py::object& xo, const py::object& mo, const py::object& ro,
                      const py::object& wo, std::int64_t begin, std::int64_t end, bool param_grads) {
  const char* fn = "layernorm_backward";
  auto dout = as_array<T>(go, fn, "dout");
  auto x = as_array<T>(xo, fn, "x");
  const LnGeom g = ln_geom(dout, begin, end, fn, "dout");
  check_same_shape(dout, x, fn, "dout", "x");
  auto mean = as_array<T>(mo, fn, "mean");
  auto rstd = as_array<T>(ro, fn, "rstd");
  if (shape_of(mean) != g.stat_shape)
    throw py::value_error(cat(fn, ": mean must have shape ", shape_str(g.stat_shape), ", got ", shape_str(mean)));
  if (shape_of(rstd) != g.stat_shape)
    throw py::value_error(cat(fn, ": rstd must have shape ", shape_str(g.stat_shape), ", got ", shape_str(rstd)));
  const py::object w = ln_param<T>(wo, x, begin, end, g.R, fn, "weight");
  auto dx = empty_like<T>(x);
  py::object dw = py::none(), db = py::none();
  T *pdw = nullptr, *pdb = nullptr;
  if (param_grads) {
    auto a = py::array_t<T>(std::vector<py::ssize_t>{py::ssize_t(g.R)});
    auto c = py::array_t<T>(std::vector<py::ssize_t>{py::ssize_t(g.R)});
    pdw = a.mutable_data();
    pdb = c.mutable_data();
    dw = a;
    db = c;
  }
  T* pdx = dx.mutable_data();
  const T *pg = dout.data(), *px = x.data(), *pm = mean.data(), *pr = rstd.data(), *pw = data_or_null<T>(w);
  {
    py::gil_scoped_release nogil;
    layernorm_backward_cpu(pdx, pdw, pdb, pg, px, pm, pr, pw, g.outer, g.R, g.inner);
  }
  return py::make_tuple(dx, dw, db);
}

std::int64_t axis_arg(const py::object& v, const char* fn, const char* name) {
  if (v.is_none()) return -1;
  return int_arg(v, fn, name, 1, 64);
}

}  // namespace

void register_pointwise(py::module_& m) {
  m.def(
      "gelu_forward",
      [](py::object x, std::string approximate) {
        const char* fn = "gelu_forward";
        const bool t = tanh_form(approximate, fn);
        auto k = [t](auto* o, const auto* i, index_t n) { gelu_forward_cpu(o, i, t, n); };
        return is_f32(x, fn, "x") ? unary<float>(x, fn, k) : unary<double>(x, fn, k);
      },
      py::arg("x"), py::arg("approximate") = "none",
      "GELU, any shape: x * Phi(x) (approximate='none') or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))\n"
      "(approximate='tanh'); Hendrycks & Gimpel 2016.");
  m.def(
      "gelu_backward",
      [](py::object dout, py::object x, std::string approximate) {
        const char* fn = "gelu_backward";
        const bool t = tanh_form(approximate, fn);
        auto k = [t](auto* d, const auto* g, const auto* i, index_t n) { gelu_backward_cpu(d, g, i, t, n); };
        return is_f32(dout, fn, "dout") ? binary<float>(dout, x, fn, "x", k) : binary<double>(dout, x, fn, "x", k);
      },
      py::arg("dout"), py::arg("x"), py::arg("approximate") = "none",
      "dout * gelu'(x), from the forward's input x.");
  m.def(
      "erf_forward",
      [](py::object x) {
        const char* fn = "erf_forward";
        auto k = [](auto* o, const auto* i, index_t n) { erf_forward_cpu(o, i, n); };
        return is_f32(x, fn, "x") ? unary<float>(x, fn, k) : unary<double>(x, fn, k);
      },
      py::arg("x"), "erf(x), any shape (float32: relative error about 1e-7).");
  m.def(
      "erf_backward",
      [](py::object dout, py::object x) {
        const char* fn = "erf_backward";
        auto k = [](auto* d, const auto* g, const auto* i, index_t n) { erf_backward_cpu(d, g, i, n); };
        return is_f32(dout, fn, "dout") ? binary<float>(dout, x, fn, "x", k) : binary<double>(dout, x, fn, "x", k);
      },
      py::arg("dout"), py::arg("x"), "dout * 2/sqrt(pi) * exp(-x^2).");
  m.def(
      "add_forward",
      [](py::object a, py::object b, bool relu) {
        const char* fn = "add_forward";
        auto k = [relu](auto* o, const auto* p, const auto* q, index_t n) { add_cpu(o, p, q, n, relu); };
        // binary() names its operands dout and x; the add's are a and b
        if (py::isinstance<py::array>(a) && py::isinstance<py::array>(b) &&
            shape_of(py::reinterpret_borrow<py::array>(a)) != shape_of(py::reinterpret_borrow<py::array>(b)))
          throw py::value_error(cat(fn, ": a shape ", shape_str(py::reinterpret_borrow<py::array>(a)),
                                    " does not match b shape ", shape_str(py::reinterpret_borrow<py::array>(b))));
        return is_f32(a, fn, "a") ? binary<float>(a, b, fn, "x", k) : binary<double>(a, b, fn, "x", k);
      },
      py::arg("a"), py::arg("b"), py::arg("relu") = false,
      "a + b of two arrays of one shape (b converted to a's dtype); relu=True gives max(a + b, 0)\n"
      "as relu_forward does (a residual connection and the ReLU after it in one pass).");
  m.def(
      "channel_scale_forward",
      [](py::object x, py::object s) {
        return is_f32(x, "channel_scale_forward", "x") ? scale_forward<float>(x, s) : scale_forward<double>(x, s);
      },
      py::arg("x"), py::arg("s"),
      "x (N, C, ...) times s[n, c] broadcast over the remaining axes; s is (C,), (1, C) or (N, C)\n"
      "(a squeeze-and-excitation gate, a layer scale).");
  m.def(
      "channel_scale_backward",
      [](py::object dout, py::object x, py::object s, bool input_grad, bool scale_grad) {
        return is_f32(dout, "channel_scale_backward", "dout")
                   ? scale_backward<float>(dout, x, s, input_grad, scale_grad)
                   : scale_backward<double>(dout, x, s, input_grad, scale_grad);
      },
      py::arg("dout"), py::arg("x"), py::arg("s"), py::arg("input_grad") = true, py::arg("scale_grad") = true,
      "(dx, ds) of channel_scale_forward: dx = dout * s broadcast, ds = the sum of dout * x over the axes\n"
      "s is broadcast along, shaped as s; either is None when not asked for.");
  m.def(
      "channel_grad",
      [](py::object shape, py::object base, py::object s, py::object pool, py::object add, py::object pre,
         py::object mask, const std::string& activation) {
        const py::object& first = !base.is_none() ? base : !pool.is_none() ? pool : pre;
        if (first.is_none()) throw py::value_error("channel_grad: give base (with or without s), pool, or both");
        return is_f32(first, "channel_grad", !base.is_none() ? "base" : !pool.is_none() ? "pool" : "pre")
                   ? channel_grad<float>(shape, base, s, pool, add, pre, mask, activation)
                   : channel_grad<double>(shape, base, s, pool, add, pre, mask, activation);
      },
      py::arg("shape"), py::arg("base") = py::none(), py::arg("s") = py::none(), py::arg("pool") = py::none(),
      py::arg("add") = py::none(), py::arg("pre") = py::none(), py::arg("mask") = py::none(),
      py::arg("activation") = "none",
      "The gradient of a map of `shape` (N, C, ...) from its terms, in one pass: g = base * s[n, c]\n"
      "(channel_scale_backward's dx; s (C,), (1, C) or (N, C); None: base) + pool[n, c] / (H W)\n"
      "(global_avg_pool_backward's dx; pool (N, C) or (N, C, 1, 1)), then + add (another reader's\n"
      "gradient), each term optional; with activation 'silu' or 'hardswish', g times\n"
      "the activation's derivative at pre (its input); with mask (activation_mask's bits of a ReLU or clamp\n"
      "of that shape), g where its bit is set, else 0. The bits of those ops, add_forward and\n"
      "silu_backward / hardswish_backward / activation_mask_backward in turn; the dtype is base's (else pool's).");
  m.def(
      "layernorm_forward",
      [](py::object x, py::object weight, py::object bias, py::object begin, py::object end, double eps) {
        const char* fn = "layernorm_forward";
        const std::int64_t b = axis_arg(begin, fn, "begin"), e = axis_arg(end, fn, "end");
        return is_f32(x, fn, "x") ? ln_forward<float>(x, weight, bias, b, e, eps)
                                  : ln_forward<double>(x, weight, bias, b, e, eps);
      },
      py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(), py::arg("begin") = 1,
      py::arg("end") = py::none(), py::arg("eps") = 1e-5,
      "Layer norm of x over its axes [begin, end) (end None: the last), Ba et al. 2016:\n"
      "(out, mean, rstd) with out = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + eps) (biased\n"
      "variance); mean and rstd have x's shape without the normalized axes. weight and bias: None or\n"
      "shaped as the normalized axes (or flat). ConvNeXt's channel norm of (N, C, H, W) is begin=1, end=2.");
  m.def(
      "layernorm_backward",
      [](py::object dout, py::object x, py::object mean, py::object rstd, py::object weight, py::object begin,
         py::object end, bool param_grads) {
        const char* fn = "layernorm_backward";
        const std::int64_t b = axis_arg(begin, fn, "begin"), e = axis_arg(end, fn, "end");
        return is_f32(dout, fn, "dout") ? ln_backward<float>(dout, x, mean, rstd, weight, b, e, param_grads)
                                        : ln_backward<double>(dout, x, mean, rstd, weight, b, e, param_grads);
      },
      py::arg("dout"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("weight") = py::none(),
      py::arg("begin") = 1, py::arg("end") = py::none(), py::arg("param_grads") = false,
      "(dx, dweight, dbias) of layernorm_forward from its input and statistics; dweight and dbias\n"
      "(flat, one per normalized element) are None unless param_grads.");
}

}  // namespace gradvis
