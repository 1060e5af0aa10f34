// Internal to conv2d: Winograd F(4x4, 3x3) convolution for float32 3x3, stride 1,
// dilation 1, ungrouped layers (Lavin & Gray 2016). Each 6x6 input tile d and 3x3
// filter g give a 4x4 output tile Y = A^T [(G g G^T) . (B^T d B)] A, so the
// multiply-adds per output drop from 9 per channel pair to 36/16 = 2.25, done as
// 36 independent gemms (one per point of the 6x6 transform domain).
#pragma once

#include "cpu/gemm_kernels.h"
#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

// 3x3, stride 1, dilation 1, one group: the shapes Winograd F(4,3) handles.
inline bool winograd_eligible(const Conv2dShape& s) {
  return s.KH == 3 && s.KW == 3 && s.p.stride_h == 1 && s.p.stride_w == 1 && s.p.dilation_h == 1 &&
         s.p.dilation_w == 1 && s.p.groups == 1 && s.OH > 0 && s.OW > 0 && s.C > 0 && s.F > 0;
}

// Eligible and (unless forced) expected to be faster than the implicit gemm.
bool use_winograd(const Conv2dShape& s);

// out (N,F,OH,OW) = conv(x, W) + b (b may be null; max(., 0) when relu) for an eligible shape s, with W
// as in the implicit gemm: w's filters, or when `flipped` the transposed, flipped
// filters of the conv whose input gradient this is (w is then (C, F, 3, 3) in s's
// terms: W[f][c][kh][kw] = w[c][f][2-kh][2-kw]). MR x NR is the micro-kernel's tile.
template <int MR, int NR>
void winograd_forward(gemm_detail::ukernel_fn<float> kern, float* out, const float* x, const float* w, const float* b,
                      const Conv2dShape& s, bool flipped, bool relu);

// dw (F, C, 3, 3) and db (F) (db may be null) for an eligible shape s:
// dU[xi] = sum over tiles of (A dY A^T)[xi] (B^T X B)[xi]^T, then dw = G^T dU G.
void winograd_backward_weight(float* dw, float* db, const float* dout, const float* x, const Conv2dShape& s);

}  // namespace conv_detail
}  // namespace gradvis
