// Internal to conv2d: the two general paths that conv2d.cpp dispatches to when
// neither the depthwise kernels nor Winograd take a shape.
//   implicit gemm   (conv2d_implicit.cpp) forward and weight gradient, the column
//                   matrix packed straight from the image (conv2d_pack.h)
//   gemm + col2im   (conv2d_col2im.cpp) the input gradient of strided layers and
//                   of layers with few channels per group
#pragma once

#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

// out (N,F,OH,OW) = conv(x, W) + b (max(., 0) when relu), where W[f][k] (per group)
// is w's row f, or, when `flipped`, the transposed and flipped filters of the conv
// whose input gradient this is: W[c][(f,kh,kw)] = w[f][c][KH-1-kh][KW-1-kw].
// act (or null; relu is then ignored): applied to each tile after its last K
// block, its input copied to pre when pre is not null.
template <class T>
void implicit_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool flipped, bool relu,
                      const ConvAct* act = nullptr, T* pre = nullptr);

// dw (F,C/groups,KH,KW) and db (F) (db may be null).
template <class T>
void implicit_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s);

// dx (N,C,H,W) by a gemm per chunk of output positions and col2im.
template <class T>
void col2im_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct* act = nullptr,
                           const T* ref = nullptr);

}  // namespace conv_detail
}  // namespace gradvis
