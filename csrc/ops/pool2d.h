// 2-D max / average pooling and global average pooling over NCHW planes.
#pragma once

#include <cstdint>

#include "common.h"

namespace gradvis {

// One pooling geometry: input plane (H, W), window (kh, kw), stride, padding
// (top, bottom, left, right), the output plane (OH, OW) it gives, and the
// window's dilation (max pooling only: window row a, column b reads input row
// oh sh - pt + a dh, column ow sw - pl + b dw).
struct Pool2dShape {
  index_t N, C, H, W;
  index_t kh, kw, sh, sw;
  index_t pt, pb, pl, pr;
  index_t OH, OW;
  index_t dh = 1, dw = 1;
};

// x is (N,C,H,W); out and argmax are (N,C,OH,OW); argmax holds h*W+w within the plane.
template <class T>
void max_pool2d_forward_cpu(T* out, std::int64_t* argmax, const T* x, const Pool2dShape& s);

// dout and argmax are (N,C,OH,OW); dx is (N,C,H,W). Returns false (and skips
// them) when some argmax value lies outside [0, H*W).
template <class T>
bool max_pool2d_backward_cpu(T* dx, const T* dout, const std::int64_t* argmax, const Pool2dShape& s);

// x is (N,C,H,W), out is (N,C,OH,OW); PyTorch/ONNX divisor rules.
template <class T>
void avg_pool2d_forward_cpu(T* out, const T* x, const Pool2dShape& s, bool count_include_pad);

// dout is (N,C,OH,OW), dx is (N,C,H,W).
template <class T>
void avg_pool2d_backward_cpu(T* dx, const T* dout, const Pool2dShape& s, bool count_include_pad);

// x is (planes, HW) -> out (planes,)
template <class T>
void global_avg_pool_forward_cpu(T* out, const T* x, index_t planes, index_t HW);

// dout is (planes,) -> dx (planes, HW)
template <class T>
void global_avg_pool_backward_cpu(T* dx, const T* dout, index_t planes, index_t HW);

}  // namespace gradvis
