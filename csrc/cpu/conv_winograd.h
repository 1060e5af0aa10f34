// Internal to conv2d: Winograd F(4x4, 3x3) and F(2x2, 3x3) convolutions for float32
// 3x3, stride 1, dilation 1, ungrouped layers (Lavin & Gray 2016). Each 6x6 (4x4)
// input tile d and 3x3 filter g give a 4x4 (2x2) output tile
// Y = A^T [(G g G^T) . (B^T d B)] A, so the multiply-adds per output drop from 9 per
// channel pair to 36/16 = 2.25 (16/4 = 4), done as 36 (16) independent gemms, one
// per point of the transform domain. F(2x2) has 4x the tiles of F(4x4) on the same
// map: it keeps the gemms fed on small maps (8x8 and 4x4 at batch 1).
#pragma once

#include "cpu/gemm_kernels.h"
#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

// 3x3, stride 1, dilation 1, one group: the shapes Winograd handles.
inline bool winograd_eligible(const Conv2dShape& s) {
  return s.KH == 3 && s.KW == 3 && s.p.stride_h == 1 && s.p.stride_w == 1 && s.p.dilation_h == 1 &&
         s.p.dilation_w == 1 && s.p.groups == 1 && s.OH > 0 && s.OW > 0 && s.C > 0 && s.F > 0;
}

// The Winograd variant for s's forward pass (or its weight gradient): tm, the
// output tile size, 4 (F(4x4, 3x3)), 2 (F(2x2, 3x3)) or 0 for the implicit gemm; by
// the cost model unless set_conv_algo forces a choice. cached_only: it pays only
// with transformed filters kept across calls (when the cache is full they are
// transformed every call: the choice never depends on the cache's state).
struct WinogradChoice {
  int tm = 0;
  bool cached_only = false;
  explicit operator bool() const { return tm != 0; }
};
WinogradChoice winograd_choice(const Conv2dShape& s, bool weight_grad = false);

// The most bytes of transformed filters the choice lets a forward pass with few
// tiles stream from memory per call (a per-machine constant; SIZE_MAX: no cap).
std::size_t winograd_stream_limit();

// Output tiles of s for tile size tm.
inline index_t winograd_tiles(const Conv2dShape& s, index_t tm) {
  return s.N * ((s.OH + tm - 1) / tm) * ((s.OW + tm - 1) / tm);
}

// out (N,F,OH,OW) = conv(x, W) + b (b may be null; max(., 0) when relu) for an eligible shape s
// with c.tm x c.tm output tiles, with W
// as in the implicit gemm: w's filters, or when `flipped` the transposed, flipped
// filters of the conv whose input gradient this is (w is then (C, F, 3, 3) in s's
// terms: W[f][c][kh][kw] = w[c][f][2-kh][2-kw]). MR x NR is the micro-kernel's tile.
template <int MR, int NR>
void winograd_forward(gemm_detail::ukernel_fn<float> kern, WinogradChoice c, float* out, const float* x,
                      const float* w, const float* b, const Conv2dShape& s, bool flipped, bool relu);

// dw (F, C, 3, 3) and db (F) (db may be null) for an eligible shape s, tm x tm tiles:
// dU[xi] = sum over tiles of (A dY A^T)[xi] (B^T X B)[xi]^T, then dw = G^T dU G.
void winograd_backward_weight(index_t tm, float* dw, float* db, const float* dout, const float* x, const Conv2dShape& s);

}  // namespace conv_detail
}  // namespace gradvis
