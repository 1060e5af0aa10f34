// Depthwise convolution, direct: each (image, channel) plane is independent, so
// forward and backward-input run parallel over planes with no sharing, and
// backward-weight runs parallel over channels (each channel's filter is summed by
// one thread, in a fixed order). Inner loops run along an output row and are
// contiguous for stride 1, so the compiler vectorizes them.
#include <algorithm>
#include <cstring>

#include "cpu/conv_depthwise.h"
#include "cpu/gemm_kernels.h"

namespace gradvis {
namespace conv_detail {

// out (N,C,OH,OW), x (N,C,H,W), w (C,1,KH,KW), b (C) or null
template <class T>
void depthwise_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu) {
  const auto& p = s.p;
  const index_t HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW;
  parallel_for(s.N * s.C, [&](index_t nc) {
    const index_t c = nc % s.C;
    const T* xp = x + nc * HW;
    const T* wc = w + c * KK;
    T* op = out + nc * OHW;
    std::fill(op, op + OHW, b ? b[c] : T(0));
    for (index_t oh = 0; oh < s.OH; ++oh) {
      T* __restrict orow = op + oh * s.OW;
      for (index_t kh = 0; kh < s.KH; ++kh) {
        const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
        if (ih < 0 || ih >= s.H) continue;
        const T* __restrict xr = xp + ih * s.W;
        for (index_t kw = 0; kw < s.KW; ++kw) {
          const T wv = wc[kh * s.KW + kw];
          const index_t iw0 = kw * p.dilation_w - p.pad_left;
          index_t lo, hi;
          valid_range(iw0, p.stride_w, s.W, s.OW, lo, hi);
          if (p.stride_w == 1) {
            const T* __restrict xs = xr + (iw0 + lo);
            T* __restrict os = orow + lo;
            for (index_t i = 0; i < hi - lo; ++i) os[i] += wv * xs[i];
          } else {
            for (index_t ow = lo; ow < hi; ++ow) orow[ow] += wv * xr[iw0 + ow * p.stride_w];
          }
        }
      }
    }
    if (relu)
      for (index_t i = 0; i < OHW; ++i) op[i] = std::max(op[i], T(0));
  });
}

template <class T>
void depthwise_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s) {
  const auto& p = s.p;
  const index_t HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW;
  parallel_for(s.N * s.C, [&](index_t nc) {
    const index_t c = nc % s.C;
    const T* dp = dout + nc * OHW;
    const T* wc = w + c * KK;
    T* xp = dx + nc * HW;
    std::fill(xp, xp + HW, T(0));
    for (index_t oh = 0; oh < s.OH; ++oh) {
      const T* __restrict drow = dp + oh * s.OW;
      for (index_t kh = 0; kh < s.KH; ++kh) {
        const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
        if (ih < 0 || ih >= s.H) continue;
        T* __restrict xr = xp + ih * s.W;
        for (index_t kw = 0; kw < s.KW; ++kw) {
          const T wv = wc[kh * s.KW + kw];
          const index_t iw0 = kw * p.dilation_w - p.pad_left;
          index_t lo, hi;
          valid_range(iw0, p.stride_w, s.W, s.OW, lo, hi);
          if (p.stride_w == 1) {
            T* __restrict xs = xr + (iw0 + lo);
            const T* __restrict ds = drow + lo;
            for (index_t i = 0; i < hi - lo; ++i) xs[i] += wv * ds[i];
          } else {
            for (index_t ow = lo; ow < hi; ++ow) xr[iw0 + ow * p.stride_w] += wv * drow[ow];
          }
        }
      }
    }
  });
}

// Per channel: KH*KW running rows of length OW (elementwise products, which
// vectorize) summed once at the end, instead of a scalar dot product per row.
template <class T>
void depthwise_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  const auto& p = s.p;
  const index_t HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW;
  ErrorTrap trap;  // the scratch allocation may throw; not out of the OpenMP region
  parallel_for(s.C, [&](index_t c) { trap.run([&] {
    T* acc = scratch<T>(ScratchSlot::depthwise_acc, std::size_t(KK * s.OW));
    std::fill(acc, acc + KK * s.OW, T(0));
    T bias_sum = 0;
    for (index_t n = 0; n < s.N; ++n) {
      const T* dp = dout + (n * s.C + c) * OHW;
      const T* xp = x + (n * s.C + c) * HW;
      if (db)
        for (index_t i = 0; i < OHW; ++i) bias_sum += dp[i];
      for (index_t oh = 0; oh < s.OH; ++oh) {
        const T* __restrict drow = dp + oh * s.OW;
        for (index_t kh = 0; kh < s.KH; ++kh) {
          const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= s.H) continue;
          const T* __restrict xr = xp + ih * s.W;
          for (index_t kw = 0; kw < s.KW; ++kw) {
            T* __restrict a = acc + (kh * s.KW + kw) * s.OW;
            const index_t iw0 = kw * p.dilation_w - p.pad_left;
            index_t lo, hi;
            valid_range(iw0, p.stride_w, s.W, s.OW, lo, hi);
            if (p.stride_w == 1) {
              const T* __restrict xs = xr + (iw0 + lo);
              const T* __restrict ds = drow + lo;
              T* __restrict as = a + lo;
              for (index_t i = 0; i < hi - lo; ++i) as[i] += ds[i] * xs[i];
            } else {
              for (index_t ow = lo; ow < hi; ++ow) a[ow] += drow[ow] * xr[iw0 + ow * p.stride_w];
            }
          }
        }
      }
    }
    for (index_t k = 0; k < KK; ++k) {
      T sum = 0;
      for (index_t ow = 0; ow < s.OW; ++ow) sum += acc[k * s.OW + ow];
      dw[c * KK + k] = sum;
    }
    if (db) db[c] = bias_sum;
  }); });
  trap.rethrow();
}

template void depthwise_forward<float>(float*, const float*, const float*, const float*, const Conv2dShape&, bool);
template void depthwise_forward<double>(double*, const double*, const double*, const double*, const Conv2dShape&,
                                        bool);
template void depthwise_backward_input<float>(float*, const float*, const float*, const Conv2dShape&);
template void depthwise_backward_input<double>(double*, const double*, const double*, const Conv2dShape&);
template void depthwise_backward_weight<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void depthwise_backward_weight<double>(double*, double*, const double*, const double*,
                                                const Conv2dShape&);

}  // namespace conv_detail
}  // namespace gradvis
