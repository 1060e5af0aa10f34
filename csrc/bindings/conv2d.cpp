// _core.conv2d_forward / conv2d_backward_input / conv2d_backward_weight.
// All validation happens here, once; the kernels trust the shapes.
#include <cmath>
#include <cstdint>
#include <limits>

#include "bindings/conv_args.h"
#include "bindings/register.h"
#include "bindings/util.h"
#include "bindings/weight_key.h"
#include "ops/conv2d.h"
#include "ops/pointwise.h"

namespace gradvis {

using namespace conv_args;

namespace {

// ---- forward ----
constexpr const char* kFwd = "conv2d_forward";

template <class T>
py::object forward_impl(const py::array& x_in, const py::handle& w_obj, const py::handle& b_obj,
                        const Conv2dParams& p, bool relu, const ConvAct* act = nullptr, bool return_pre = false,
                        const char* fn = kFwd, const py::handle& res_obj = py::none()) {
  auto x = as_array<T>(x_in, fn, "x");
  auto w = as_array<T>(w_obj, fn, "w");
  check_ndim(x, 4, fn, "x", "(N, C, H, W)");
  check_ndim(w, 4, fn, "w", "(F, C/groups, KH, KW)");
  check_nonempty(x, fn, "x");
  check_nonempty(w, fn, "w");
  check_dims(x, fn, "x");
  check_dims(w, fn, "w");
  const auto where = [&] { return cat("x shape ", shape_str(x), ", w shape ", shape_str(w)); };
  Conv2dShape s =
      make_shape(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(1), w.shape(2),
                 w.shape(3), p, where);
  py::array_t<T, py::array::c_style> b;
  const T* bp = nullptr;
  if (!b_obj.is_none()) {
    b = as_array<T>(b_obj, fn, "b");
    if (b.ndim() != 1 || b.shape(0) != s.F)
      throw py::value_error(cat(fn, ": b must have shape (", s.F, ",) (one per filter), got shape ",
                                shape_str(b), "; w shape ", shape_str(w)));
    bp = b.data();
  }
  const std::vector<py::ssize_t> oshape{py::ssize_t(s.N), py::ssize_t(s.F), py::ssize_t(s.OH), py::ssize_t(s.OW)};
  auto out = empty_array<T>(oshape);
  py::array_t<T, py::array::c_style> pre;
  T* op = out.mutable_data();
  T* pp = nullptr;
  if (return_pre) {
    pre = empty_array<T>(oshape);
    pp = pre.mutable_data();
  }
  const T* xp = x.data();
  const T* wp = w.data();
  const WeightKeyScope key(immutable_key(w));
  if (!res_obj.is_none()) {   // conv2d_forward_add
    auto res = as_array<T>(res_obj, fn, "residual");
    if (res.ndim() != 4 || res.shape(0) != s.N || res.shape(1) != s.F || res.shape(2) != s.OH ||
        res.shape(3) != s.OW)
      throw py::value_error(cat(fn, ": residual must have the output's shape (", s.N, ", ", s.F, ", ", s.OH, ", ",
                                s.OW, "), got ", shape_str(res), "; ", where()));
    const T* rp = res.data();
    py::gil_scoped_release release;
    conv2d_forward_add_cpu<T>(op, xp, wp, bp, rp, s, relu);
    return std::move(out);
  }
  {
    py::gil_scoped_release release;
    if (act)
      conv2d_forward_act_cpu<T>(op, pp, xp, wp, bp, s, *act);
    else
      conv2d_forward_cpu<T>(op, xp, wp, bp, s, relu);
  }
  if (return_pre) return py::make_tuple(out, pre);
  return std::move(out);
}

constexpr const char* kFwdAct = "conv2d_forward_act";
constexpr const char* kFwdAdd = "conv2d_forward_add";

// ---- backward input ----
constexpr const char* kBwdIn = "conv2d_backward_input";

constexpr const char* kBwdInAct = "conv2d_backward_input_act";

constexpr const char* kBwdInMask = "conv2d_backward_input_mask";

// act and ref_obj (conv2d_backward_input_act): the activation mask and its
// reference array, of dx's shape; for act mask_bits (conv2d_backward_input_mask)
// ref_obj is activation_mask's uint64 bits of the input's (N, C, H, W) values; fn
// names the caller in errors
template <class T>
py::array backward_input_impl(const py::array& d_in, const py::handle& w_obj, const py::handle& hw_obj,
                              const Conv2dParams& p, const ConvAct* act = nullptr,
                              const py::handle& ref_obj = py::none()) {
  const bool bits = act && act->kind == ConvAct::mask_bits;
  const char* fn = bits ? kBwdInMask : act ? kBwdInAct : kBwdIn;
  auto dout = as_array<T>(d_in, fn, "dout");
  auto w = as_array<T>(w_obj, fn, "w");
  check_ndim(dout, 4, fn, "dout", "(N, F, OH, OW)");
  check_ndim(w, 4, fn, "w", "(F, C/groups, KH, KW)");
  check_nonempty(dout, fn, "dout");
  check_nonempty(w, fn, "w");
  check_dims(dout, fn, "dout");
  check_dims(w, fn, "w");
  // input_hw: (H, W), or x's whole shape (N, C, H, W), checked against dout and w
  const auto full = int_values(hw_obj, fn, "input_hw", "(H, W) or the input's shape (N, C, H, W)");
  const bool whole = full.size() == 4;
  auto hw = whole ? checked_pair(py::make_tuple(full[2], full[3]), fn, "input_hw", 1)
                  : checked_pair(hw_obj, fn, "input_hw", 1);
  const index_t N = dout.shape(0), F = w.shape(0), C = w.shape(1) * p.groups;
  if (whole && (full[0] != N || full[1] != C))
    throw py::value_error(cat(fn, ": dout shape ", shape_str(dout), " and w shape ", shape_str(w), " (groups=",
                              p.groups, ") give dx of shape (", N, ", ", C, ", ", hw.first, ", ", hw.second,
                              "), not the input shape (", full[0], ", ", full[1], ", ", full[2], ", ", full[3], ")"));
  const auto where = [&] {
    return cat("dout shape ", shape_str(dout), ", w shape ", shape_str(w), ", input_hw (", hw.first, ", ", hw.second,
               ")");
  };
  if (F % p.groups)
    throw py::value_error(cat(fn, ": the number of filters F=", F, " is not divisible by groups=", p.groups,
                              "; ", where()));
  Conv2dShape s = make_shape(fn, N, C, hw.first, hw.second, F, w.shape(1), w.shape(2), w.shape(3), p, where);
  if (dout.shape(1) != s.F || dout.shape(2) != s.OH || dout.shape(3) != s.OW)
    throw py::value_error(cat(fn, ": dout must have shape (", N, ", ", s.F, ", ", s.OH, ", ", s.OW,
                              ") (the forward output for this input size and w), got ", shape_str(dout), "; ",
                              params_str(p), "; ", where()));
  auto dx = empty_array<T>({py::ssize_t(N), py::ssize_t(C), py::ssize_t(s.H), py::ssize_t(s.W)});
  T* dxp = dx.mutable_data();
  const T* dp = dout.data();
  const T* wp = w.data();
  const WeightKeyScope key(immutable_key(w));
  if (bits) {
    const index_t n = N * C * s.H * s.W;
    ConvAct a = *act;
    a.bits = mask_words(ref_obj, fn, (n + 63) / 64,
                        [&] { return cat("an input of shape (", N, ", ", C, ", ", s.H, ", ", s.W, ")"); });
    a.base = dxp;
    py::gil_scoped_release release;
    conv2d_backward_input_act_cpu<T>(dxp, dp, wp, s, a, dxp);   // dx stands for the reference (ConvAct)
    return dx;
  }
  if (act) {
    auto ref = as_array<T>(ref_obj, fn, "x");
    if (ref.ndim() != 4 || ref.shape(0) != N || ref.shape(1) != C || ref.shape(2) != s.H || ref.shape(3) != s.W)
      throw py::value_error(cat(fn, ": x must have dx's shape (", N, ", ", C, ", ", s.H, ", ", s.W, "), got ",
                                shape_str(ref)));
    const T* rp = ref.data();
    py::gil_scoped_release release;
    conv2d_backward_input_act_cpu<T>(dxp, dp, wp, s, *act, rp);
    return dx;
  }
  {
    py::gil_scoped_release release;
    conv2d_backward_input_cpu<T>(dxp, dp, wp, s);
  }
  return dx;
}

// ---- backward weight ----
constexpr const char* kBwdW = "conv2d_backward_weight";

template <class T>
py::tuple backward_weight_impl(const py::array& d_in, const py::handle& x_obj, const py::handle& khw_obj,
                               const Conv2dParams& p, bool bias) {
  auto dout = as_array<T>(d_in, kBwdW, "dout");
  auto x = as_array<T>(x_obj, kBwdW, "x");
  check_ndim(dout, 4, kBwdW, "dout", "(N, F, OH, OW)");
  check_ndim(x, 4, kBwdW, "x", "(N, C, H, W)");
  check_nonempty(dout, kBwdW, "dout");
  check_nonempty(x, kBwdW, "x");
  check_dims(dout, kBwdW, "dout");
  check_dims(x, kBwdW, "x");
  auto khw = checked_pair(khw_obj, kBwdW, "kernel_hw", 1);
  const index_t N = x.shape(0), C = x.shape(1), F = dout.shape(1);
  const auto where = [&] {
    return cat("dout shape ", shape_str(dout), ", x shape ", shape_str(x), ", kernel_hw (", khw.first, ", ",
               khw.second, ")");
  };
  if (C % p.groups)
    throw py::value_error(cat(kBwdW, ": the number of input channels C=", C, " is not divisible by groups=",
                              p.groups, "; ", where()));
  Conv2dShape s = make_shape(kBwdW, N, C, x.shape(2), x.shape(3), F, C / p.groups, khw.first, khw.second, p, where);
  if (dout.shape(0) != N || dout.shape(2) != s.OH || dout.shape(3) != s.OW)
    throw py::value_error(cat(kBwdW, ": dout must have shape (", N, ", ", F, ", ", s.OH, ", ", s.OW,
                              ") (the forward output for this x and kernel), got ", shape_str(dout), "; ",
                              params_str(p), "; ", where()));
  auto dw = empty_array<T>({py::ssize_t(F), py::ssize_t(C / p.groups), py::ssize_t(s.KH), py::ssize_t(s.KW)});
  py::object db = py::none();
  T* dbp = nullptr;
  if (bias) {
    auto dba = empty_array<T>({py::ssize_t(F)});
    dbp = dba.mutable_data();
    db = dba;
  }
  T* dwp = dw.mutable_data();
  const T* dp = dout.data();
  const T* xp = x.data();
  {
    py::gil_scoped_release release;
    conv2d_backward_weight_cpu<T>(dwp, dbp, dp, xp, s);
  }
  return py::make_tuple(dw, db);
}

}  // namespace

void register_conv2d(py::module_& m) {
  m.def(
      "conv2d_forward",
      [](const py::object& x, const py::object& w, const py::object& b, const py::object& stride,
         const py::object& padding, const py::object& dilation, const py::object& groups, bool relu) -> py::array {
        FloatKind k;
        py::array xa = primary_array(x, kFwd, "x", k);
        const Conv2dParams p = parse_params(kFwd, stride, padding, dilation, groups);
        return (k == FloatKind::f32 ? forward_impl<float>(xa, w, b, p, relu) : forward_impl<double>(xa, w, b, p, relu))
            .cast<py::array>();
      },
      py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("relu") = false,
      "2-D convolution (cross-correlation), NCHW.\n\n"
      "x (N, C, H, W) float32/float64; w (F, C/groups, KH, KW); b (F,) or None.\n"
      "stride, dilation: int or (h, w); padding: int, (ph, pw) or (top, bottom, left, right).\n"
      "relu: return max(conv + b, 0), applied as the output is written (no second pass).\n"
      "Returns out (N, F, OH, OW) in x's dtype.");
  m.def(
      kFwdAct,
      [](const py::object& x, const py::object& w, const py::object& b, const py::object& stride,
         const py::object& padding, const py::object& dilation, const py::object& groups,
         const std::string& activation, double lo, double hi, bool return_pre) -> py::object {
        FloatKind k;
        py::array xa = primary_array(x, kFwdAct, "x", k);
        const Conv2dParams p = parse_params(kFwdAct, stride, padding, dilation, groups);
        const ConvAct act = parse_act(kFwdAct, activation, lo, hi);
        return k == FloatKind::f32 ? forward_impl<float>(xa, w, b, p, false, &act, return_pre, kFwdAct)
                                   : forward_impl<double>(xa, w, b, p, false, &act, return_pre, kFwdAct);
      },
      py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("activation") = "none", py::arg("lo") = 0.0,
      py::arg("hi") = 0.0, py::arg("return_pre") = false,
      "conv2d_forward followed by an activation applied as the output is written.\n\n"
      "activation: 'none', 'relu', 'clamp' (to [lo, hi]; ReLU6 is 0, 6), 'hardswish' (x * clamp(x + 3, 0, 6) / 6)\n"
      "or 'silu' (x / (1 + exp(-x))), the same values as the separate activation.\n"
      "Returns out (N, F, OH, OW), or (out, pre) with return_pre, pre = conv + b (the activation's input).");
  m.def(
      kFwdAdd,
      [](const py::object& x, const py::object& w, const py::object& b, const py::object& residual,
         const py::object& stride, const py::object& padding, const py::object& dilation, const py::object& groups,
         bool relu) -> py::array {
        FloatKind k;
        py::array xa = primary_array(x, kFwdAdd, "x", k);
        const Conv2dParams p = parse_params(kFwdAdd, stride, padding, dilation, groups);
        if (residual.is_none()) throw py::type_error(cat(kFwdAdd, ": residual must be an array, got None"));
        return (k == FloatKind::f32 ? forward_impl<float>(xa, w, b, p, relu, nullptr, false, kFwdAdd, residual)
                                    : forward_impl<double>(xa, w, b, p, relu, nullptr, false, kFwdAdd, residual))
            .cast<py::array>();
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("residual"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("relu") = false,
      "conv2d_forward plus a tensor of the output's shape (a residual connection), then max(., 0) when relu:\n"
      "the values of conv2d_forward followed by add_forward(out, residual, relu), the sum made as each\n"
      "output tile is finished, in cache. residual (N, F, OH, OW) is cast to x's dtype.\n"
      "Returns out (N, F, OH, OW).");
  m.def(
      "conv2d_backward_input",
      [](const py::object& dout, const py::object& w, const py::object& input_hw, const py::object& stride,
         const py::object& padding, const py::object& dilation, const py::object& groups) -> py::array {
        FloatKind k;
        py::array da = primary_array(dout, kBwdIn, "dout", k);
        const Conv2dParams p = parse_params(kBwdIn, stride, padding, dilation, groups);
        return k == FloatKind::f32 ? backward_input_impl<float>(da, w, input_hw, p)
                                   : backward_input_impl<double>(da, w, input_hw, p);
      },
      py::arg("dout"), py::arg("w"), py::arg("input_hw"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1,
      "Gradient of conv2d_forward with respect to x: dout (N, F, OH, OW), w, input_hw = (H, W) -> dx (N, C, H, W).\n"
      "input_hw may be x's whole shape (N, C, H, W): then dout's batch and w's channels are checked against it.");
  m.def(
      kBwdInAct,
      [](const py::object& dout, const py::object& w, const py::object& x, const py::object& stride,
         const py::object& padding, const py::object& dilation, const py::object& groups,
         const std::string& activation, double lo, double hi) -> py::array {
        FloatKind k;
        py::array da = primary_array(dout, kBwdInAct, "dout", k);
        const Conv2dParams p = parse_params(kBwdInAct, stride, padding, dilation, groups);
        if (activation != "relu" && activation != "clamp" && activation != "silu" && activation != "hardswish")
          throw py::value_error(cat(kBwdInAct, ": activation must be 'relu', 'clamp', 'silu' or 'hardswish', got '",
                                    activation, "'"));
        ConvAct act = parse_act(kBwdInAct, activation, lo, hi);   // the mask of that activation
        act.kind = act.kind == ConvAct::relu    ? ConvAct::mask_pos
                   : act.kind == ConvAct::clamp ? ConvAct::mask_range
                   : act.kind == ConvAct::silu  ? ConvAct::mask_silu
                                                : ConvAct::mask_hardswish;
        if (!py::isinstance<py::array>(x))
          throw py::type_error(cat(kBwdInAct, ": x must be a numpy array, got ",
                                   std::string(py::str(py::type::of(x).attr("__name__")))));
        const py::object shape = x.attr("shape");
        return k == FloatKind::f32 ? backward_input_impl<float>(da, w, shape, p, &act, x)
                                   : backward_input_impl<double>(da, w, shape, p, &act, x);
      },
      py::arg("dout"), py::arg("w"), py::arg("x"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("activation") = "relu", py::arg("lo") = 0.0,
      py::arg("hi") = 0.0,
      "conv2d_backward_input followed by the backward of the activation before the convolution:\n"
      "for 'relu' and 'clamp' x is that activation's output, the convolution's input (N, C, H, W),\n"
      "and dx is kept where x > 0 ('relu') or lo < x < hi ('clamp', ReLU6 is (0, 6)), else 0; for\n"
      "'silu' and 'hardswish' x is the activation's input and dx is multiplied by the derivative\n"
      "there. Applied to each block of dx while it is in cache. The values are those of\n"
      "conv2d_backward_input followed by relu_backward / clamp_backward / silu_backward /\n"
      "hardswish_backward.");
  m.def(
      "activation_mask",
      [](const py::object& y, const std::string& activation, double lo, double hi) -> py::array {
        const char* fn = "activation_mask";
        FloatKind k;
        py::array ya = primary_array(y, fn, "y", k);
        if (activation != "relu" && activation != "clamp")
          throw py::value_error(cat(fn, ": activation must be 'relu' or 'clamp', got '", activation, "'"));
        const ConvAct a = parse_act(fn, activation, lo, hi);
        auto run = [&](auto tag) -> py::array {
          using T = decltype(tag);
          auto x = as_array<T>(ya, fn, "y");
          const index_t n = index_t(x.size());
          py::array_t<std::uint64_t> bits(py::ssize_t((n + 63) / 64));
          std::uint64_t* bp = bits.mutable_data();
          const T* xp = x.data();
          py::gil_scoped_release release;   // (relu: lo = 0, as parse_act leaves it)
          activation_mask_bits_cpu<T>(bp, xp, n, a.lo, a.hi, a.kind == ConvAct::clamp);
          return bits;
        };
        return k == FloatKind::f32 ? run(float{}) : run(double{});
      },
      py::arg("y"), py::arg("activation") = "relu", py::arg("lo") = 0.0, py::arg("hi") = 0.0,
      "The backward mask of a ReLU ('relu': y > 0) or clamp ('clamp': lo < y < hi; ReLU6 is (0, 6)) from\n"
      "its output y (any shape), as bits: element i (in C order) is bit i % 64 of word i // 64 of the\n"
      "returned uint64 array of (y.size + 63) // 64 words (a NaN gives 0). A 32nd of a float32 y's\n"
      "size: conv2d_backward_input_mask applies it in place of y.");
  m.def(
      "activation_mask_backward",
      [](const py::object& dout, const py::object& mask) -> py::array {
        const char* fn = "activation_mask_backward";
        FloatKind k;
        py::array da = primary_array(dout, fn, "dout", k);
        auto run = [&](auto tag) -> py::array {
          using T = decltype(tag);
          auto d = as_array<T>(da, fn, "dout");
          const index_t n = index_t(d.size()), words = (n + 63) / 64;
          const std::uint64_t* bp = mask_words(mask, fn, words, [&] { return cat("dout of shape ", shape_str(d)); });
          auto dx = empty_array<T>(shape_of(d));
          T* xp = dx.mutable_data();
          const T* dp = d.data();
          py::gil_scoped_release release;
          activation_mask_backward_cpu<T>(xp, dp, bp, n);
          return dx;
        };
        return k == FloatKind::f32 ? run(float{}) : run(double{});
      },
      py::arg("dout"), py::arg("mask"),
      "dout (any shape) where the mask's bit is set, else 0: relu_backward / clamp_backward with the\n"
      "activation's mask as activation_mask's bits (made from its output or input) instead of x.");
  m.def(
      kBwdInMask,
      [](const py::object& dout, const py::object& w, const py::object& mask, const py::object& input_shape,
         const py::object& stride, const py::object& padding, const py::object& dilation,
         const py::object& groups) -> py::array {
        FloatKind k;
        py::array da = primary_array(dout, kBwdInMask, "dout", k);
        const Conv2dParams p = parse_params(kBwdInMask, stride, padding, dilation, groups);
        const auto full = int_values(input_shape, kBwdInMask, "input_shape", "the input's shape (N, C, H, W)");
        if (full.size() != 4)
          throw py::value_error(cat(kBwdInMask, ": input_shape must be the input's shape (N, C, H, W), got ",
                                    full.size(), " values"));
        ConvAct act;
        act.kind = ConvAct::mask_bits;
        return k == FloatKind::f32 ? backward_input_impl<float>(da, w, input_shape, p, &act, mask)
                                   : backward_input_impl<double>(da, w, input_shape, p, &act, mask);
      },
      py::arg("dout"), py::arg("w"), py::arg("mask"), py::arg("input_shape"), py::arg("stride") = 1,
      py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1,
      "conv2d_backward_input_act for 'relu' or 'clamp' with the activation's mask as activation_mask's\n"
      "bits instead of its output: dx (input_shape, (N, C, H, W)) kept where the mask's bit is set,\n"
      "else 0; the same values as conv2d_backward_input_act with the array the mask was made from.");
  m.def(
      "conv2d_backward_weight",
      [](const py::object& dout, const py::object& x, const py::object& kernel_hw, const py::object& stride,
         const py::object& padding, const py::object& dilation, const py::object& groups, bool bias) -> py::tuple {
        FloatKind k;
        py::array da = primary_array(dout, kBwdW, "dout", k);
        const Conv2dParams p = parse_params(kBwdW, stride, padding, dilation, groups);
        return k == FloatKind::f32 ? backward_weight_impl<float>(da, x, kernel_hw, p, bias)
                                   : backward_weight_impl<double>(da, x, kernel_hw, p, bias);
      },
      py::arg("dout"), py::arg("x"), py::arg("kernel_hw"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("bias") = true,
      "Gradients of conv2d_forward with respect to w and b: dout (N, F, OH, OW), x (N, C, H, W),\n"
      "kernel_hw = (KH, KW) -> (dw (F, C/groups, KH, KW), db (F,) or None when bias=False).");
  m.def(
      "set_conv_algorithm",
      [](const std::string& name) {
        if (name == "auto")
          set_conv_algo(ConvAlgo::automatic);
        else if (name == "direct")
          set_conv_algo(ConvAlgo::direct);
        else if (name == "winograd")
          set_conv_algo(ConvAlgo::winograd);
        else if (name == "winograd2x2")
          set_conv_algo(ConvAlgo::winograd2x2);
        else
          throw py::value_error(
              "set_conv_algorithm: algorithm must be 'auto', 'direct', 'winograd' or 'winograd2x2', got '" + name +
              "'");
      },
      py::arg("name"),
      "Choose the float32 convolution algorithm for the whole process: 'auto' (Winograd F(4x4, 3x3) or\n"
      "F(2x2, 3x3) for 3x3 stride-1 layers where it is expected to be faster), 'direct' (never Winograd, nor the AMX tile unit: the float32 vector kernels only),\n"
      "'winograd' (F(4x4, 3x3) wherever the shape allows) or 'winograd2x2' (F(2x2, 3x3) likewise).");
  m.def(
      "get_conv_algorithm",
      []() -> std::string {
        switch (conv_algo()) {
          case ConvAlgo::direct:
            return "direct";
          case ConvAlgo::winograd:
            return "winograd";
          case ConvAlgo::winograd2x2:
            return "winograd2x2";
          default:
            return "auto";
        }
      },
      "The float32 convolution algorithm set by set_conv_algorithm.");
  m.def(
      "set_winograd_cache_limit",
      [](py::object nbytes) {
        set_winograd_cache_limit(
            std::size_t(int_arg(nbytes, "set_winograd_cache_limit", "nbytes", 0, std::int64_t(1) << 62)));
      },
      py::arg("nbytes"),
      "Limit the memory kept for Winograd's transformed filters (default 512 MiB; at most half of it per\n"
      "layer). They are kept for calls with few output tiles (small maps or batches), where transforming\n"
      "the filters again is a large part of each call. Lowering the limit frees the least recently used;\n"
      "0 frees all and keeps none (small-map layers then run the direct algorithm).");
  m.def(
      "winograd_cache_info",
      []() {
        const WinogradCacheInfo i = winograd_cache_info();
        py::dict d;
        d["limit"] = i.limit;
        d["bytes"] = i.bytes;
        d["entries"] = i.entries;
        if (i.stream_limit == std::numeric_limits<std::size_t>::max())
          d["stream_limit"] = py::none();
        else
          d["stream_limit"] = i.stream_limit;
        return d;
      },
      "The Winograd filter cache: {'limit': bytes allowed, 'bytes': bytes held, 'entries': layers held,\n"
      "'stream_limit': the most bytes of transformed filters a forward pass on a small map (16-31\n"
      "output tiles) reads from memory, else it runs F(2x2) or the direct algorithm; None: no cap, on\n"
      "CPUs where that stream costs little (AMD's)}.");
}

}  // namespace gradvis
