// Bindings for max / average / global average pooling.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "bindings/register.h"
#include "bindings/util.h"
#include "ops/pool2d.h"

namespace gradvis {

namespace {

// Kernels, strides and paddings past this are refused, so shape arithmetic cannot overflow.
constexpr index_t kMaxGeometry = index_t(1) << 31;

std::pair<index_t, index_t> pool_pair(const py::handle& obj, const char* fn, const char* name, index_t min_value) {
  const auto v = int_values(obj, fn, name, "an int or a pair of ints");
  if (v.size() != 1 && v.size() != 2) throw py::value_error(cat(fn, ": ", name, " must be an int or a pair of ints"));
  const index_t a = v[0], b = v.size() == 2 ? v[1] : v[0];
  if (a < min_value || b < min_value)
    throw py::value_error(cat(fn, ": ", name, " must be >= ", min_value, ", got (", a, ", ", b, ")"));
  if (a > kMaxGeometry || b > kMaxGeometry)
    throw py::value_error(cat(fn, ": ", name, " is too large: (", a, ", ", b, ")"));
  return {a, b};
}

// (top, bottom, left, right) from an int, (pad_h, pad_w) or four values.
std::vector<index_t> pool_padding(const py::handle& obj, const char* fn) {
  auto v = int_values(obj, fn, "padding", "an int, (pad_h, pad_w) or (top, bottom, left, right)");
  if (v.size() == 1) v = {v[0], v[0], v[0], v[0]};
  else if (v.size() == 2) v = {v[0], v[0], v[1], v[1]};
  else if (v.size() != 4)
    throw py::value_error(cat(fn, ": padding must be an int, (pad_h, pad_w) or (top, bottom, left, right)"));
  for (auto p : v) {
    if (p < 0) throw py::value_error(cat(fn, ": padding must be non-negative, got ", p));
    if (p > kMaxGeometry) throw py::value_error(cat(fn, ": padding is too large: ", p));
  }
  return v;
}

// Whether every window along one axis reads at least one input cell: with a
// dilation a window's taps can all fall in the padding (PyTorch then returns
// indices outside the input).
bool every_window_real(index_t n, index_t k, index_t stride, index_t pad, index_t dilation, index_t out) {
  for (index_t o = 0; o < out; ++o) {
    const index_t start = o * stride - pad;  // taps [lo, hi) land inside [0, n)
    const index_t lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
    const index_t hi = start >= n ? 0 : std::min(k, (n - 1 - start) / dilation + 1);
    if (lo >= hi) return false;
  }
  return true;
}

// Checks every geometry argument once and returns the shape the kernels use.
Pool2dShape pool_shape(const char* fn, index_t N, index_t C, index_t H, index_t W, const py::handle& kernel,
                       const py::handle& stride, const py::handle& padding, bool ceil_mode,
                       const py::handle& dilation = py::int_(1)) {
  const auto k = pool_pair(kernel, fn, "kernel", 1);
  const auto st = pool_pair(stride, fn, "stride", 1);
  const auto p = pool_padding(padding, fn);
  const auto d = pool_pair(dilation, fn, "dilation", 1);
  Pool2dShape s{N, C, H, W, k.first, k.second, st.first, st.second, p[0], p[1], p[2], p[3], 0, 0, d.first, d.second};
  if (s.pt > s.kh / 2 || s.pb > s.kh / 2 || s.pl > s.kw / 2 || s.pr > s.kw / 2)
    throw py::value_error(cat(fn, ": padding (", s.pt, ", ", s.pb, ", ", s.pl, ", ", s.pr,
                              ") must be at most half the kernel (", s.kh, ", ", s.kw, ")"));
  // the window's extent, dilation included (both at most 2^62: no overflow)
  const index_t eh = (s.kh - 1) * s.dh + 1, ew = (s.kw - 1) * s.dw + 1;
  if (!ceil_mode && (eh > H + s.pt + s.pb || ew > W + s.pl + s.pr))
    throw py::value_error(cat(fn, ": kernel (", s.kh, ", ", s.kw, ")",
                              s.dh * s.dw > 1 ? cat(" with dilation (", s.dh, ", ", s.dw, ")") : std::string(),
                              " is larger than the padded input (", H + s.pt + s.pb, ", ", W + s.pl + s.pr, ")"));
  s.OH = window_out_size(H, s.kh, s.sh, s.pt, s.pb, s.dh, ceil_mode);
  s.OW = window_out_size(W, s.kw, s.sw, s.pl, s.pr, s.dw, ceil_mode);
  if (s.OH < 1 || s.OW < 1)
    throw py::value_error(cat(fn, ": output would be empty for input (", H, ", ", W, ") with kernel (", s.kh, ", ",
                              s.kw, "), stride (", s.sh, ", ", s.sw, ") and padding (", s.pt, ", ", s.pb, ", ", s.pl,
                              ", ", s.pr, ")"));
  if (!every_window_real(H, s.kh, s.sh, s.pt, s.dh, s.OH) || !every_window_real(W, s.kw, s.sw, s.pl, s.dw, s.OW))
    throw py::value_error(cat(fn, ": with dilation (", s.dh, ", ", s.dw, ") some windows of kernel (", s.kh, ", ",
                              s.kw, "), stride (", s.sh, ", ", s.sw, ") and padding (", s.pt, ", ", s.pb, ", ", s.pl,
                              ", ", s.pr, ") read only padding of the (", H, ", ", W, ") input"));
  return s;
}

void check_x4(const py::array& x, const char* fn, const char* name) {
  check_ndim(x, 4, fn, name, "(N, C, H, W)");
  check_nonempty(x, fn, name);
}

// input_hw: (H, W), or the whole input shape (N, C, H, W), which must then agree
// with dout's batch and channels.
std::pair<index_t, index_t> input_hw_arg(const py::handle& obj, const char* fn, const py::array& dout) {
  const auto v = int_values(obj, fn, "input_hw", "(H, W) or the input's shape (N, C, H, W)");
  if (v.size() != 4) return pool_pair(obj, fn, "input_hw", 1);
  if (v[0] != dout.shape(0) || v[1] != dout.shape(1))
    throw py::value_error(cat(fn, ": dout shape ", shape_str(dout), " does not match the input shape (", v[0], ", ",
                              v[1], ", ", v[2], ", ", v[3], "): batch and channels must agree"));
  return pool_pair(py::make_tuple(v[2], v[3]), fn, "input_hw", 1);
}

std::string hw_str(index_t a, index_t b) { return cat("(", a, ", ", b, ")"); }

template <class T>
py::tuple max_forward(const py::handle& xo, const py::handle& kernel, const py::handle& stride,
                      const py::handle& padding, bool ceil_mode, const py::handle& dilation) {
  const char* fn = "max_pool2d_forward";
  auto x = as_array<T>(xo, fn, "x");
  check_x4(x, fn, "x");
  const Pool2dShape s =
      pool_shape(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), kernel, stride, padding, ceil_mode, dilation);
  auto out = empty_array<T>({s.N, s.C, s.OH, s.OW});
  auto am = empty_array<std::int64_t>({s.N, s.C, s.OH, s.OW});
  T* po = out.mutable_data();
  std::int64_t* pa = am.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    max_pool2d_forward_cpu<T>(po, pa, px, s);
  }
  return py::make_tuple(out, am);
}

template <class T>
py::array max_backward(const py::handle& douto, const py::handle& argmaxo, const py::handle& input_hw) {
  const char* fn = "max_pool2d_backward";
  auto dout = as_array<T>(douto, fn, "dout");
  check_x4(dout, fn, "dout");
  if (!py::isinstance<py::array>(argmaxo) || (py::reinterpret_borrow<py::array>(argmaxo).dtype().kind() != 'i' &&
                                              py::reinterpret_borrow<py::array>(argmaxo).dtype().kind() != 'u'))
    throw py::type_error(cat(fn, ": argmax must be an integer numpy array (as returned by max_pool2d_forward)"));
  auto am = as_array<std::int64_t>(argmaxo, fn, "argmax");
  if (am.ndim() != 4 || am.shape(0) != dout.shape(0) || am.shape(1) != dout.shape(1) ||
      am.shape(2) != dout.shape(2) || am.shape(3) != dout.shape(3))
    throw py::value_error(cat(fn, ": argmax shape ", shape_str(am), " does not match dout shape ", shape_str(dout)));
  const auto hw = input_hw_arg(input_hw, fn, dout);
  Pool2dShape s{dout.shape(0), dout.shape(1), hw.first, hw.second, 1, 1, 1, 1, 0, 0, 0, 0, dout.shape(2), dout.shape(3)};
  auto dx = empty_array<T>({s.N, s.C, s.H, s.W});
  T* pdx = dx.mutable_data();
  const T* pg = dout.data();
  const std::int64_t* pa = am.data();
  bool ok;
  {
    py::gil_scoped_release nogil;
    ok = max_pool2d_backward_cpu<T>(pdx, pg, pa, s);
  }
  if (!ok)
    throw py::value_error(cat(fn, ": argmax has values outside [0, H*W) = [0, ", s.H * s.W, ") for input_hw ",
                              hw_str(s.H, s.W)));
  return dx;
}

template <class T>
py::array avg_forward(const py::handle& xo, const py::handle& kernel, const py::handle& stride,
                      const py::handle& padding, bool ceil_mode, bool count_include_pad) {
  const char* fn = "avg_pool2d_forward";
  auto x = as_array<T>(xo, fn, "x");
  check_x4(x, fn, "x");
  const Pool2dShape s = pool_shape(fn, x.shape(0), x.shape(1), x.shape(2), x.shape(3), kernel, stride, padding, ceil_mode);
  auto out = empty_array<T>({s.N, s.C, s.OH, s.OW});
  T* po = out.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    avg_pool2d_forward_cpu<T>(po, px, s, count_include_pad);
  }
  return out;
}

template <class T>
py::array avg_backward(const py::handle& douto, const py::handle& input_hw, const py::handle& kernel,
                       const py::handle& stride, const py::handle& padding, bool ceil_mode, bool count_include_pad) {
  const char* fn = "avg_pool2d_backward";
  auto dout = as_array<T>(douto, fn, "dout");
  check_x4(dout, fn, "dout");
  const auto hw = input_hw_arg(input_hw, fn, dout);
  const Pool2dShape s =
      pool_shape(fn, dout.shape(0), dout.shape(1), hw.first, hw.second, kernel, stride, padding, ceil_mode);
  if (dout.shape(2) != s.OH || dout.shape(3) != s.OW)
    throw py::value_error(cat(fn, ": dout shape ", shape_str(dout), " does not match the pooled output ",
                              hw_str(s.OH, s.OW), " of input_hw ", hw_str(s.H, s.W)));
  auto dx = empty_array<T>({s.N, s.C, s.H, s.W});
  T* pdx = dx.mutable_data();
  const T* pg = dout.data();
  {
    py::gil_scoped_release nogil;
    avg_pool2d_backward_cpu<T>(pdx, pg, s, count_include_pad);
  }
  return dx;
}

template <class T>
py::array gap_forward(const py::handle& xo) {
  const char* fn = "global_avg_pool_forward";
  auto x = as_array<T>(xo, fn, "x");
  check_x4(x, fn, "x");
  const index_t N = x.shape(0), C = x.shape(1), HW = x.shape(2) * x.shape(3);
  auto out = empty_array<T>({N, C, 1, 1});
  T* po = out.mutable_data();
  const T* px = x.data();
  {
    py::gil_scoped_release nogil;
    global_avg_pool_forward_cpu<T>(po, px, N * C, HW);
  }
  return out;
}

template <class T>
py::array gap_backward(const py::handle& douto, const py::handle& input_hw) {
  const char* fn = "global_avg_pool_backward";
  auto dout = as_array<T>(douto, fn, "dout");
  check_x4(dout, fn, "dout");
  if (dout.shape(2) != 1 || dout.shape(3) != 1)
    throw py::value_error(cat(fn, ": dout must be (N, C, 1, 1), got shape ", shape_str(dout)));
  const auto hw = input_hw_arg(input_hw, fn, dout);
  const index_t N = dout.shape(0), C = dout.shape(1);
  auto dx = empty_array<T>({N, C, hw.first, hw.second});
  T* pdx = dx.mutable_data();
  const T* pg = dout.data();
  {
    py::gil_scoped_release nogil;
    global_avg_pool_backward_cpu<T>(pdx, pg, N * C, hw.first * hw.second);
  }
  return dx;
}

}  // namespace

void register_pool2d(py::module_& m) {
  m.def(
      "max_pool2d_forward",
      [](py::object x, py::object kernel, py::object stride, py::object padding, bool ceil_mode,
         py::object dilation) {
        return float_kind(x, "max_pool2d_forward", "x") == FloatKind::f32
                   ? max_forward<float>(x, kernel, stride, padding, ceil_mode, dilation)
                   : max_forward<double>(x, kernel, stride, padding, ceil_mode, dilation);
      },
      py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding") = 0, py::arg("ceil_mode") = false,
      py::arg("dilation") = 1,
      "2-D max pooling of x (N,C,H,W). Returns (out, argmax); argmax is int64, h*W+w within the input plane.\n"
      "kernel, stride, dilation: int or (h, w); padding: int, (ph, pw) or (top, bottom, left, right).\n"
      "A dilated window's cell (a, b) reads row oh*stride_h - top + a*dilation_h (as PyTorch's MaxPool2d).");
  m.def(
      "max_pool2d_backward",
      [](py::object dout, py::object argmax, py::object input_hw) -> py::array {
        return float_kind(dout, "max_pool2d_backward", "dout") == FloatKind::f32
                   ? max_backward<float>(dout, argmax, input_hw)
                   : max_backward<double>(dout, argmax, input_hw);
      },
      py::arg("dout"), py::arg("argmax"), py::arg("input_hw"),
      "Gradient of max_pool2d_forward: scatters dout to argmax in a (N,C,H,W) zero array.\n"
      "input_hw: (H, W), or x's shape (N, C, H, W) (then dout's batch and channels are checked).");
  m.def(
      "avg_pool2d_forward",
      [](py::object x, py::object kernel, py::object stride, py::object padding, bool ceil_mode,
         bool count_include_pad) -> py::array {
        return float_kind(x, "avg_pool2d_forward", "x") == FloatKind::f32
                   ? avg_forward<float>(x, kernel, stride, padding, ceil_mode, count_include_pad)
                   : avg_forward<double>(x, kernel, stride, padding, ceil_mode, count_include_pad);
      },
      py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding") = 0, py::arg("ceil_mode") = false,
      py::arg("count_include_pad") = true, "2-D average pooling of x (N,C,H,W), PyTorch/ONNX divisor rules.");
  m.def(
      "avg_pool2d_backward",
      [](py::object dout, py::object input_hw, py::object kernel, py::object stride, py::object padding,
         bool ceil_mode, bool count_include_pad) -> py::array {
        return float_kind(dout, "avg_pool2d_backward", "dout") == FloatKind::f32
                   ? avg_backward<float>(dout, input_hw, kernel, stride, padding, ceil_mode, count_include_pad)
                   : avg_backward<double>(dout, input_hw, kernel, stride, padding, ceil_mode, count_include_pad);
      },
      py::arg("dout"), py::arg("input_hw"), py::arg("kernel"), py::arg("stride"), py::arg("padding") = 0,
      py::arg("ceil_mode") = false, py::arg("count_include_pad") = true, "Gradient of avg_pool2d_forward. input_hw: (H, W), or x's shape (N, C, H, W) (then dout's\n"
      "batch and channels are checked).");
  m.def(
      "global_avg_pool_forward",
      [](py::object x) -> py::array {
        return float_kind(x, "global_avg_pool_forward", "x") == FloatKind::f32 ? gap_forward<float>(x)
                                                                             : gap_forward<double>(x);
      },
      py::arg("x"), "Mean over H and W: (N,C,H,W) -> (N,C,1,1).");
  m.def(
      "global_avg_pool_backward",
      [](py::object dout, py::object input_hw) -> py::array {
        return float_kind(dout, "global_avg_pool_backward", "dout") == FloatKind::f32
                   ? gap_backward<float>(dout, input_hw)
                   : gap_backward<double>(dout, input_hw);
      },
      py::arg("dout"), py::arg("input_hw"), "Gradient of global_avg_pool_forward: (N,C,1,1) -> (N,C,H,W). input_hw: (H, W), or x's shape\n"
      "(N, C, H, W) (then dout's batch and channels are checked).");
}

}  // namespace gradvis
