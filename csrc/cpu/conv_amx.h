// Internal to conv2d: float32 1x1 convolutions on AMX tiles (conv_amx.cpp).
//
// The products run in bfloat16 on the tile unit with float32 sums, and still give
// float32 results: each operand is split exactly into three bfloat16 parts
// (x = hi + mid + lo, 8 significant bits each, 24 in all), and the six products
// of parts whose orders add up to at most 2 (hi.hi, hi.mid, mid.hi, hi.lo,
// mid.mid, lo.hi) are summed; the three left out are below float32's rounding
// (~2^-24 of each product). The sums are float32, as in the direct path. Splitting
// a number into three bfloat16 parts with float32 accumulation: Henry, Tang and
// Heinecke, "Leveraging the bfloat16 Artificial Intelligence Datatype For
// Higher-Precision Computations", ARITH 2019.
#pragma once

#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

// out (N,F,OH,OW) = conv(x, W) + b for a float32 layer, W as in implicit_forward
// (w's rows, or when `flipped` its transpose: the input gradient of a 1x1 layer),
// relu / act / pre as there: 1x1 unpadded ungrouped layers (strided ones through
// a copy of the positions they read), and, forward only, other ungrouped layers
// of 16+ channels through their column matrix. Returns false, having written
// nothing that the caller's own path does not overwrite, when the tile unit is not
// in use (amx_enabled), the shape is not one it takes or would not run faster on
// it, or an input or weight is not finite (the split needs finite numbers; the
// caller's path then gives IEEE results for infinities and NaNs).
bool amx_forward(float* out, const float* x, const float* w, const float* b, const Conv2dShape& s, bool flipped,
                 bool relu, const ConvAct* act, float* pre);

// Whether a layer's patches neither overlap nor leave the image (groups 1, no
// padding or dilation, strides at least the kernel's size, one above 1: strided
// 1x1 layers, ConvNeXt's 2x2 stride-2 downsampling, patch embeddings). Its input
// gradient is then the product of w transposed (C KH KW x F) with dout, each
// column one patch's gradient, written back into place.
inline bool is_patch_conv(const Conv2dShape& s) {
  const auto& p = s.p;
  return p.groups == 1 && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0 &&
         (s.KH == 1 || p.dilation_h == 1) && (s.KW == 1 || p.dilation_w == 1) && p.stride_h >= s.KH &&
         p.stride_w >= s.KW && (p.stride_h > 1 || p.stride_w > 1);
}

// dx (N,C,H,W) of a float32 strided 1x1 layer (is_patch_conv): the input gradient
// of the positions it reads on the tiles, scattered into dx with zeros elsewhere
// (AVX-512 permutes; 1.1x the generic path's scalar scatter), then act's mask with
// ref (as conv2d_backward_input_act; or none) over all of dx. False, having
// written nothing the caller's path does not overwrite, where amx_forward would
// be. Larger patches go through conv2d.cpp's generic path (whose scatter of 2x2
// patches was the faster one).
bool amx_strided_input_gradient(float* dx, const float* dout, const float* w, const Conv2dShape& s,
                                const ConvAct* act, const float* ref);

}  // namespace conv_detail
}  // namespace gradvis
