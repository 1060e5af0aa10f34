// The argument checks of the convolution bindings (conv2d.cpp, conv_chain.cpp):
// strides, padding, dilation and groups parsed once, the shape of a call with
// the checks every entry point shares, and the activation names.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "bindings/util.h"
#include "ops/conv2d.h"

namespace gradvis {
namespace conv_args {

// Sizes and hyperparameters past this are refused, so shape arithmetic cannot overflow.
constexpr std::int64_t kMaxParam = std::int64_t(1) << 31;

inline std::pair<std::int64_t, std::int64_t> checked_pair(const py::handle& obj, const char* fn, const char* name,
                                                   std::int64_t min_value) {
  auto v = int_values(obj, fn, name, "an int or a pair of ints");
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2)
    throw py::value_error(cat(fn, ": ", name, " must be an int or a pair of ints, got ", std::string(py::repr(obj))));
  if (v[0] < min_value || v[1] < min_value)
    throw py::value_error(cat(fn, ": ", name, " must be >= ", min_value, ", got (", v[0], ", ", v[1], ")"));
  if (v[0] > kMaxParam || v[1] > kMaxParam)
    throw py::value_error(cat(fn, ": ", name, " is too large: (", v[0], ", ", v[1], ")"));
  return {v[0], v[1]};
}

// (top, bottom, left, right); an int or (pad_h, pad_w) is symmetric.
inline std::vector<std::int64_t> checked_padding(const py::handle& obj, const char* fn) {
  const char* expect = "an int, (pad_h, pad_w) or (top, bottom, left, right)";
  auto v = int_values(obj, fn, "padding", expect);
  std::vector<std::int64_t> p;
  if (v.size() == 1)
    p = {v[0], v[0], v[0], v[0]};
  else if (v.size() == 2)
    p = {v[0], v[0], v[1], v[1]};
  else if (v.size() == 4)
    p = v;
  else
    throw py::value_error(cat(fn, ": padding must be ", expect, ", got ", std::string(py::repr(obj))));
  for (auto x : p) {
    if (x < 0) throw py::value_error(cat(fn, ": padding must be non-negative, got ", std::string(py::repr(obj))));
    if (x > kMaxParam) throw py::value_error(cat(fn, ": padding is too large: ", std::string(py::repr(obj))));
  }
  return p;
}

inline Conv2dParams parse_params(const char* fn, const py::handle& stride, const py::handle& padding,
                          const py::handle& dilation, const py::handle& groups) {
  Conv2dParams p;
  auto st = checked_pair(stride, fn, "stride", 1);
  auto dl = checked_pair(dilation, fn, "dilation", 1);
  const std::vector<std::int64_t> pad = checked_padding(padding, fn);
  if (!PyIndex_Check(groups.ptr()))
    throw py::type_error(cat(fn, ": groups must be an int, got ", std::string(py::repr(groups))));
  const auto gv = int_values(groups, fn, "groups", "an int");
  if (gv.size() != 1) throw py::type_error(cat(fn, ": groups must be an int, got ", std::string(py::repr(groups))));
  const std::int64_t g = gv[0];
  if (g < 1) throw py::value_error(cat(fn, ": groups must be >= 1, got ", g));
  p.stride_h = st.first, p.stride_w = st.second;
  p.dilation_h = dl.first, p.dilation_w = dl.second;
  p.pad_top = pad[0], p.pad_bottom = pad[1], p.pad_left = pad[2], p.pad_right = pad[3];
  p.groups = g;
  return p;
}

inline std::string params_str(const Conv2dParams& p) {
  return cat("stride=(", p.stride_h, ", ", p.stride_w, "), padding=(", p.pad_top, ", ", p.pad_bottom, ", ",
             p.pad_left, ", ", p.pad_right, "), dilation=(", p.dilation_h, ", ", p.dilation_w,
             "), groups=", p.groups);
}

inline void check_dims(const py::array& a, const char* fn, const char* name) {
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) > kMaxParam)
      throw py::value_error(cat(fn, ": ", name, " is too large, shape ", shape_str(a)));
}

// The shape of the convolution, with the checks every entry point shares.
// where() describes the arrays C, H, W came from (x itself or input_hw) for the
// messages; called only to build one (formatting it on every call was a fifth of
// a small layer's call).
template <class Where>
inline Conv2dShape make_shape(const char* fn, index_t N, index_t C, index_t H, index_t W, index_t F, index_t Cw,
                       index_t KH, index_t KW, const Conv2dParams& p, const Where& where) {
  if (F % p.groups)
    throw py::value_error(cat(fn, ": the number of filters F=", F, " is not divisible by groups=", p.groups, "; ",
                              where()));
  if (C % p.groups)
    throw py::value_error(cat(fn, ": the number of input channels C=", C, " is not divisible by groups=", p.groups,
                              "; ", where()));
  if (Cw * p.groups != C)
    throw py::value_error(cat(fn, ": w expects ", Cw, " input channels per group but x has ", C,
                              " channels (groups=", p.groups, "); ", where()));
  Conv2dShape s = conv2d_shape(N, C, H, W, F, KH, KW, p);
  if (s.OH < 1 || s.OW < 1)
    throw py::value_error(cat(fn, ": kernel (", KH, ", ", KW, ") with dilation (", p.dilation_h, ", ", p.dilation_w,
                              ") is larger than the padded input (", H + p.pad_top + p.pad_bottom, ", ",
                              W + p.pad_left + p.pad_right, "); ", params_str(p), "; ", where()));
  return s;
}

// fn names the caller in errors
inline ConvAct parse_act(const char* fn, const std::string& name, double lo, double hi) {
  ConvAct a;
  if (name == "none")
    a.kind = ConvAct::none;
  else if (name == "relu")
    a.kind = ConvAct::relu;
  else if (name == "clamp")
    a.kind = ConvAct::clamp;
  else if (name == "hardswish")
    a.kind = ConvAct::hardswish;
  else if (name == "silu")
    a.kind = ConvAct::silu;
  else
    throw py::value_error(cat(fn, ": activation must be 'none', 'relu', 'clamp', 'hardswish' or 'silu', got '",
                              name, "'"));
  if (a.kind == ConvAct::clamp) {
    if (std::isnan(lo) || std::isnan(hi) || !(lo <= hi))
      throw py::value_error(cat(fn, ": lo (", lo, ") and hi (", hi, ") must be numbers with lo <= hi"));
    a.lo = lo, a.hi = hi;
  }
  return a;
}

}  // namespace conv_args
}  // namespace gradvis
