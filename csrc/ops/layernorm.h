// Layer normalization (Ba, Kiros & Hinton 2016, arXiv:1607.06450) over one
// axis group of a contiguous tensor viewed as (outer, R, inner): each of the
// outer * inner vectors of R elements (stride inner) is normalized to zero mean
// and unit (biased) variance, then scaled by w[r] and shifted by b[r].
// ConvNeXt's channel norm of (N, C, H, W) is (N, C, H*W); torch.nn.LayerNorm(C)
// over the last axis is (rows, C, 1).
#pragma once

#include "common.h"

namespace gradvis {

// x and out are (outer, R, inner); mean and rstd (outer, inner) get the mean and
// 1 / sqrt(var + eps); w and b are (R,), or null for no scale / no shift.
template <class T>
void layernorm_forward_cpu(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t outer, index_t R,
                           index_t inner, double eps);

// From the forward's mean and rstd: dx (outer, R, inner), and, when not null,
// dw = sum dout * xhat and db = sum dout over outer and inner (R,). Those sums
// run over blocks fixed by the shape, added in block order: no dependence on
// the thread count.
template <class T>
void layernorm_backward_cpu(T* dx, T* dw, T* db, const T* dout, const T* x, const T* mean, const T* rstd,
                            const T* w, index_t outer, index_t R, index_t inner);

}  // namespace gradvis
