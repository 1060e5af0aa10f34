// 2-D convolution (cross-correlation, as in PyTorch), NCHW, float and double.
//   x is (N,C,H,W), w is (F,C/groups,KH,KW), b is (F) or null, out is (N,F,OH,OW)
//   OH = (H + pad_top + pad_bottom - dilation_h*(KH-1) - 1) / stride_h + 1, likewise OW.
// The kernels trust the shape (the binding validates it); outputs are fully
// written (never accumulated into), inputs are never modified.
#pragma once

#include <cstdint>

#include "common.h"

namespace gradvis {

struct Conv2dParams {
  index_t stride_h = 1, stride_w = 1;
  index_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  index_t dilation_h = 1, dilation_w = 1;
  index_t groups = 1;
};

struct Conv2dShape {
  index_t N = 0, C = 0, H = 0, W = 0;  // input
  index_t F = 0, KH = 0, KW = 0;       // filters (each sees C/groups channels)
  index_t OH = 0, OW = 0;              // output
  Conv2dParams p;
};

// Fills OH/OW from the rest (0 when the kernel does not fit the padded input).
inline Conv2dShape conv2d_shape(index_t N, index_t C, index_t H, index_t W, index_t F, index_t KH, index_t KW,
                                const Conv2dParams& p) {
  Conv2dShape s;
  s.N = N, s.C = C, s.H = H, s.W = W, s.F = F, s.KH = KH, s.KW = KW, s.p = p;
  s.OH = window_out_size(H, KH, p.stride_h, p.pad_top, p.pad_bottom, p.dilation_h);
  s.OW = window_out_size(W, KW, p.stride_w, p.pad_left, p.pad_right, p.dilation_w);
  return s;
}

// The algorithm the float32 convolutions may use (process-wide, default automatic;
// _core.set_conv_algorithm from Python):
//   automatic    Winograd F(4x4, 3x3) or F(2x2, 3x3) for 3x3 stride-1 ungrouped
//                layers where a cost model expects it to win (forward, input and
//                weight gradients), the implicit gemm elsewhere (large 1x1 layers
//                on AMX tiles where amx_enabled(), conv_amx.h)
//   direct       the implicit gemm only, never the AMX tile unit (float64 always
//                uses it)
//   winograd     Winograd F(4x4, 3x3) wherever the shape allows it
//   winograd2x2  Winograd F(2x2, 3x3) wherever the shape allows it
// Winograd's rounding differs from the direct sum's: relative errors of ~1e-6 of
// the output's scale instead of ~1e-7 (F(2x2): ~3e-7).
enum class ConvAlgo { automatic = 0, direct = 1, winograd = 2, winograd2x2 = 3 };
ConvAlgo conv_algo();
void set_conv_algo(ConvAlgo a);

// Winograd's transformed filters, kept across calls with the same weights (up to
// `limit` bytes, default 512 MiB; at most half of it per layer): for calls with few
// output tiles (small maps, small batches), where transforming the filters is a
// large part of a call. A layer whose transformed filters do not fit runs them
// through scratch memory, or, where Winograd pays only when they are kept (forward
// passes with few tiles), by the implicit gemm, whose rounding differs at ~1e-6.
// Setting the limit drops the least recently used entries above it (0: all).
// stream_limit: the most transformed-filter bytes a small-map layer's forward pass
// reads from memory per call (a per-machine choice; SIZE_MAX: no cap).
struct WinogradCacheInfo {
  std::size_t limit, bytes, entries, stream_limit;
};
void set_winograd_cache_limit(std::size_t bytes);
WinogradCacheInfo winograd_cache_info();

// out (N,F,OH,OW) = conv(x, w) + b, or max(conv(x, w) + b, 0) when relu (applied
// while the output tile is still in cache, instead of a separate pass)
template <class T>
void conv2d_forward_cpu(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu = false);

// The activation a convolution may apply as it writes its output (the layer that
// follows it in a graph, when nothing else reads the convolution): relu max(v, 0),
// clamp to [lo, hi] (ReLU6 is [0, 6]), hardswish v * clamp(v + 3, 0, 6) / 6, silu
// v / (1 + exp(-v)); the formulas of activation.cpp, so the values are the same
// bits as the separate layer's.
// Backward only (conv2d_backward_input_act_cpu): mask_pos and mask_range keep a
// gradient value where the reference array (the activation's output, in place of
// pre) is > 0 (ReLU), or within (lo, hi) (clamp), and write 0 elsewhere: the
// selections of relu_backward_cpu and clamp_backward_cpu.
// Forward only (conv2d_forward_add_cpu): add and add_relu add a reference array
// of the output's shape (a residual connection's other operand, in place of pre)
// and then, for add_relu, apply the ReLU: add_cpu's sum and comparison.
struct ConvAct {
  // mask_*: the backward of an activation, applied to an input gradient (its
  // reference array: the activation's output for mask_pos / mask_range, its
  // input for mask_silu / mask_hardswish)
  // mask_bits: a ReLU's or clamp's mask kept as bits (activation_mask_bits_cpu,
  // ops/pointwise.h): `bits` for the whole input gradient, whose first element is
  // at `base`; the reference pointer passed with it is the gradient itself, so
  // that ref - base is the element's index, and no values are read through it.
  enum Kind { none = 0, relu = 1, clamp = 2, hardswish = 3, silu = 4, mask_pos = 5, mask_range = 6,
              mask_silu = 7, mask_hardswish = 8, add = 9, add_relu = 10, mask_bits = 11 };
  Kind kind = none;
  double lo = 0, hi = 0;  // clamp's bounds
  const std::uint64_t* bits = nullptr;
  const void* base = nullptr;
  bool stream_pre = false;  // pre (the forward's activation input) written with streaming stores
};

// out = act(conv(x, w) + b); when pre is not null it receives conv(x, w) + b, the
// activation's input (what the backward of hardswish and silu reads). Applied to
// each output plane (depthwise) or tile while it is in cache.
template <class T>
void conv2d_forward_act_cpu(T* out, T* pre, const T* x, const T* w, const T* b, const Conv2dShape& s,
                            const ConvAct& act);

// out = conv(x, w) + b + res, then max(., 0) when relu: the bits of
// conv2d_forward_cpu followed by add_cpu (a residual connection after the
// convolution), the sum made as each output tile or plane is finished, in cache.
// res (N,F,OH,OW) is read only and must not overlap out.
template <class T>
void conv2d_forward_add_cpu(T* out, const T* x, const T* w, const T* b, const T* res, const Conv2dShape& s,
                            bool relu);

// A 1x1 layer and the depthwise layer that alone reads its output, in one pass:
//   out = a2(dwconv(a1(conv1x1(x, w1) + b1), w2) + b2)
// with the same bits as the two calls (conv2d_forward_act_cpu). s1: 1x1, stride 1,
// no padding, one group, at most 256 input channels; s2: the depthwise 3x3
// stride-2 layer on its output; activations none, ReLU, a clamp, SiLU or
// HardSwish; float32, maps of 2 MiB and more (conv2d_pw_dw_takes). Each thread
// keeps the 3 rows of the 1x1 layer's output that its next output row reads, so
// that map (MobileNetV2's 96@112: 4.8 MB) is never written out and read back.
template <class T>
bool conv2d_pw_dw_takes(const Conv2dShape& s1, const ConvAct& a1, const Conv2dShape& s2, const ConvAct& a2);
template <class T>
void conv2d_pw_dw_forward_cpu(T* out, const T* x, const T* w1, const T* b1, const ConvAct& a1, const T* w2,
                              const T* b2, const ConvAct& a2, const Conv2dShape& s1, const Conv2dShape& s2);

// A 3x3 stride-1 depthwise layer and the 1x1 layer that alone reads its output,
// in one pass:
//   out = a2(conv1x1(a1(dwconv(x, w1) + b1), w2) + b2)
// with the same bits as the two calls. s1: depthwise 3x3 on 2 channels or more,
// stride 1, no dilation, padding under 3; s2: 1x1, stride 1, no padding, one group, at most 256 input
// channels; activations as conv2d_pw_dw_forward_cpu's; float32, inputs of 1 MiB
// and more an image (conv2d_dw_pw_takes). Each thread computes a row of the
// depthwise layer's output for every channel and the 1x1 layer's row from it, so
// that map (MobileNetV2's 32@112: 1.6 MB) is never written out, read back and
// packed.
template <class T>
bool conv2d_dw_pw_takes(const Conv2dShape& s1, const ConvAct& a1, const Conv2dShape& s2, const ConvAct& a2);
template <class T>
void conv2d_dw_pw_forward_cpu(T* out, const T* x, const T* w1, const T* b1, const ConvAct& a1, const T* w2,
                              const T* b2, const ConvAct& a2, const Conv2dShape& s1, const Conv2dShape& s2);

// dx (N,C,H,W) = gradient of sum(dout * conv(x, w)) with respect to x
template <class T>
void conv2d_backward_input_cpu(T* dx, const T* dout, const T* w, const Conv2dShape& s);

// dx as conv2d_backward_input_cpu, then the backward of the activation (act.kind
// mask_pos or mask_range, with ref (N,C,H,W) its output, which is the
// convolution's input; mask_silu or mask_hardswish, with ref its input) applied
// to each block of dx while it is in cache: the gradient at the activation's
// input, without a separate pass.
template <class T>
void conv2d_backward_input_act_cpu(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct& act,
                                   const T* ref);

// dw (F,C/groups,KH,KW) and db (F) (db may be null) from dout (N,F,OH,OW) and x (N,C,H,W)
template <class T>
void conv2d_backward_weight_cpu(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s);

}  // namespace gradvis
