// conv2d on the packed gemm: per image and group, im2col a chunk of output
// columns into per-thread scratch (CK x P, CK = C/groups*KH*KW) and multiply.
// 1x1 stride-1 unpadded convs use the image as the column matrix directly;
// depthwise convs use the direct kernels in conv_depthwise.cpp.
//
// Threads: parallel over images when the batch splits evenly enough over the
// team (each thread runs its own serial gemms); otherwise (batch 1 is common)
// images run one after another and the gemm and im2col are parallel inside.
// No atomics: backward-input writes whole image planes per thread, and
// backward-weight sums per-thread partial filters in thread order.
#include "ops/conv2d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/conv_depthwise.h"
#include "cpu/gemm_kernels.h"
#include "ops/gemm.h"

namespace gradvis {
namespace {

constexpr int kColsSlot = 2;     // per-thread im2col buffer
constexpr int kPartialSlot = 3;  // calling thread: per-thread partial filter gradients

struct Geometry {
  index_t G, Cg, Fg, KK, CK, HW, OHW;
  bool pointwise;  // 1x1, stride 1, no padding: the image is its own column matrix
};

Geometry geometry(const Conv2dShape& s) {
  Geometry g;
  g.G = s.p.groups;
  g.Cg = s.C / g.G;
  g.Fg = s.F / g.G;
  g.KK = s.KH * s.KW;
  g.CK = g.Cg * g.KK;
  g.HW = s.H * s.W;
  g.OHW = s.OH * s.OW;
  g.pointwise = s.KH == 1 && s.KW == 1 && s.p.stride_h == 1 && s.p.stride_w == 1 && s.p.pad_top == 0 &&
                s.p.pad_bottom == 0 && s.p.pad_left == 0 && s.p.pad_right == 0;
  return g;
}

// Output columns per im2col chunk: the chunk (CK x P) should stay in L2 between
// being written and being packed by the gemm.
template <class T>
index_t chunk_cols(const Geometry& g) {
  const index_t budget = index_t(1) << 19;  // bytes
  index_t P = budget / (g.CK * index_t(sizeof(T)));
  P = std::max<index_t>(128, P / 64 * 64);
  return std::min(P, g.OHW);
}

bool batch_parallel(index_t N) {
  const index_t nt = in_parallel() ? 1 : max_threads();
  return nt > 1 && N >= nt && (N % nt == 0 || N >= 4 * nt);
}

// Walks the output positions [p0, p0+P) one output-image row (run) at a time:
// cols[row][p - p0] = x[c][ih][iw] (0 outside), for rows [r0, r1) of the group's CK.
template <class T>
void im2col_rows(T* cols, const T* x, const Conv2dShape& s, index_t r0, index_t r1, index_t p0, index_t P) {
  const auto& p = s.p;
  for (index_t row = r0; row < r1; ++row) {
    const index_t c = row / (s.KH * s.KW), kh = (row / s.KW) % s.KH, kw = row % s.KW;
    const T* xc = x + c * s.H * s.W;
    T* dst = cols + row * P;
    index_t oh = p0 / s.OW, ow = p0 % s.OW;
    for (index_t q = 0; q < P;) {
      const index_t run = std::min(s.OW - ow, P - q);
      T* d = dst + q;
      const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
      if (ih < 0 || ih >= s.H) {
        std::fill(d, d + run, T(0));
      } else {
        const T* xr = xc + ih * s.W;
        const index_t iw0 = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
        index_t lo, hi;
        conv_detail::valid_range(iw0, p.stride_w, s.W, run, lo, hi);
        std::fill(d, d + lo, T(0));
        if (p.stride_w == 1) {
          std::memcpy(d + lo, xr + iw0 + lo, std::size_t(hi - lo) * sizeof(T));
        } else {
          for (index_t t = lo; t < hi; ++t) d[t] = xr[iw0 + t * p.stride_w];
        }
        std::fill(d + hi, d + run, T(0));
      }
      q += run;
      ow = 0;
      ++oh;
    }
  }
}

// The adjoint: x[c][ih][iw] += cols[row][p - p0], for the channels [c0, c1) of the
// group (each channel's plane is written by one caller only).
template <class T>
void col2im_add(T* x, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0, index_t P) {
  const auto& p = s.p;
  for (index_t c = c0; c < c1; ++c) {
    T* xc = x + c * s.H * s.W;
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const T* src = cols + ((c * s.KH + kh) * s.KW + kw) * P;
        index_t oh = p0 / s.OW, ow = p0 % s.OW;
        for (index_t q = 0; q < P;) {
          const index_t run = std::min(s.OW - ow, P - q);
          const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih >= 0 && ih < s.H) {
            T* xr = xc + ih * s.W;
            const T* d = src + q;
            const index_t iw0 = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
            index_t lo, hi;
            conv_detail::valid_range(iw0, p.stride_w, s.W, run, lo, hi);
            if (p.stride_w == 1) {
              T* xs = xr + (iw0 + lo);
              const T* ds = d + lo;
              for (index_t t = 0; t < hi - lo; ++t) xs[t] += ds[t];
            } else {
              for (index_t t = lo; t < hi; ++t) xr[iw0 + t * p.stride_w] += d[t];
            }
          }
          q += run;
          ow = 0;
          ++oh;
        }
      }
  }
}

// Runs f(n) for every image: over the team when batch_parallel, else serially
// (the gemm and im2col inside then use the team).
template <class F>
void for_each_image(index_t N, bool par, F&& f) {
  if (!par) {
    for (index_t n = 0; n < N; ++n) f(n);
    return;
  }
  ErrorTrap trap;
  parallel_for(N, [&](index_t n) { trap.run([&] { f(n); }); });
  trap.rethrow();
}

// ---- forward ----
template <class T>
void forward_image(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, const Geometry& g,
                   index_t n) {
  for (index_t gi = 0; gi < g.G; ++gi) {
    const T* xg = x + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK;
    T* og = out + (n * s.F + gi * g.Fg) * g.OHW;
    if (g.pointwise) {
      gemm<T>(false, false, g.Fg, g.OHW, g.Cg, T(1), wg, g.CK, xg, g.HW, T(0), og, g.OHW);
      if (b)
        for (index_t f = 0; f < g.Fg; ++f) {
          T* o = og + f * g.OHW;
          const T bv = b[gi * g.Fg + f];
          for (index_t q = 0; q < g.OHW; ++q) o[q] += bv;
        }
      continue;
    }
    const index_t P = chunk_cols<T>(g);
    T* cols = scratch<T>(kColsSlot, std::size_t(g.CK * P));
    for (index_t p0 = 0; p0 < g.OHW; p0 += P) {
      const index_t pc = std::min(P, g.OHW - p0);
      parallel_chunks(g.CK, [&](index_t r0, index_t r1, int) { im2col_rows(cols, xg, s, r0, r1, p0, pc); });
      gemm<T>(false, false, g.Fg, pc, g.CK, T(1), wg, g.CK, cols, pc, T(0), og + p0, g.OHW);
      if (b)
        for (index_t f = 0; f < g.Fg; ++f) {
          T* o = og + f * g.OHW + p0;
          const T bv = b[gi * g.Fg + f];
          for (index_t q = 0; q < pc; ++q) o[q] += bv;
        }
    }
  }
}

// ---- backward input ----
template <class T>
void backward_input_image(T* dx, const T* dout, const T* w, const Conv2dShape& s, const Geometry& g, index_t n) {
  for (index_t gi = 0; gi < g.G; ++gi) {
    T* xg = dx + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK;
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW;
    if (g.pointwise) {
      gemm<T>(true, false, g.Cg, g.HW, g.Fg, T(1), wg, g.CK, dg, g.OHW, T(0), xg, g.HW);
      continue;
    }
    std::fill(xg, xg + g.Cg * g.HW, T(0));
    const index_t P = chunk_cols<T>(g);
    T* cols = scratch<T>(kColsSlot, std::size_t(g.CK * P));
    for (index_t p0 = 0; p0 < g.OHW; p0 += P) {
      const index_t pc = std::min(P, g.OHW - p0);
      gemm<T>(true, false, g.CK, pc, g.Fg, T(1), wg, g.CK, dg + p0, g.OHW, T(0), cols, pc);
      parallel_chunks(g.Cg, [&](index_t c0, index_t c1, int) { col2im_add(xg, cols, s, c0, c1, p0, pc); });
    }
  }
}

// ---- backward weight: dw (F, CK) += dout_n (per group) x cols_n^T ----
template <class T>
void backward_weight_image(T* dw, const T* dout, const T* x, const Conv2dShape& s, const Geometry& g, index_t n) {
  for (index_t gi = 0; gi < g.G; ++gi) {
    const T* xg = x + (n * s.C + gi * g.Cg) * g.HW;
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW;
    T* wg = dw + gi * g.Fg * g.CK;
    if (g.pointwise) {
      gemm<T>(false, true, g.Fg, g.Cg, g.HW, T(1), dg, g.OHW, xg, g.HW, T(1), wg, g.CK);
      continue;
    }
    const index_t P = chunk_cols<T>(g);
    T* cols = scratch<T>(kColsSlot, std::size_t(g.CK * P));
    for (index_t p0 = 0; p0 < g.OHW; p0 += P) {
      const index_t pc = std::min(P, g.OHW - p0);
      parallel_chunks(g.CK, [&](index_t r0, index_t r1, int) { im2col_rows(cols, xg, s, r0, r1, p0, pc); });
      gemm<T>(false, true, g.Fg, g.CK, pc, T(1), dg + p0, g.OHW, cols, pc, T(1), wg, g.CK);
    }
  }
}

}  // namespace

template <class T>
void conv2d_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_forward(out, x, w, b, s);
  const Geometry g = geometry(s);
  for_each_image(s.N, batch_parallel(s.N), [&](index_t n) { forward_image(out, x, w, b, s, g, n); });
}

template <class T>
void conv2d_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_backward_input(dx, dout, w, s);
  const Geometry g = geometry(s);
  for_each_image(s.N, batch_parallel(s.N), [&](index_t n) { backward_input_image(dx, dout, w, s, g, n); });
}

template <class T>
void conv2d_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_backward_weight(dw, db, dout, x, s);
  const Geometry g = geometry(s);
  const index_t wsize = s.F * g.CK;
  if (db) {
    // Bias gradient: one thread per filter, images and positions in a fixed order.
    parallel_for(s.F, [&](index_t f) {
      T sum = 0;
      for (index_t n = 0; n < s.N; ++n) {
        const T* d = dout + (n * s.F + f) * g.OHW;
        for (index_t q = 0; q < g.OHW; ++q) sum += d[q];
      }
      db[f] = sum;
    });
  }
  if (!batch_parallel(s.N)) {
    std::fill(dw, dw + wsize, T(0));
    for (index_t n = 0; n < s.N; ++n) backward_weight_image(dw, dout, x, s, g, n);
    return;
  }
  // Each thread sums its contiguous share of images into its own partial filter
  // gradient; the partials are then added in thread order (deterministic for a
  // given thread count).
  const int nt = max_threads();
  T* parts = scratch<T>(kPartialSlot, std::size_t(wsize) * std::size_t(nt));
  std::vector<char> used(std::size_t(nt), 0);
  ErrorTrap trap;
  parallel_chunks(s.N, [&](index_t n0, index_t n1, int t) {
    trap.run([&] {
      T* part = parts + std::size_t(t) * std::size_t(wsize);
      std::fill(part, part + wsize, T(0));
      for (index_t n = n0; n < n1; ++n) backward_weight_image(part, dout, x, s, g, n);
      used[std::size_t(t)] = 1;
    });
  });
  trap.rethrow();
  parallel_chunks(wsize, [&](index_t i0, index_t i1, int) {
    std::fill(dw + i0, dw + i1, T(0));
    for (int t = 0; t < nt; ++t) {
      if (!used[std::size_t(t)]) continue;
      const T* part = parts + std::size_t(t) * std::size_t(wsize);
      for (index_t i = i0; i < i1; ++i) dw[i] += part[i];
    }
  });
}

template void conv2d_forward<float>(float*, const float*, const float*, const float*, const Conv2dShape&);
template void conv2d_forward<double>(double*, const double*, const double*, const double*, const Conv2dShape&);
template void conv2d_backward_input<float>(float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_input<double>(double*, const double*, const double*, const Conv2dShape&);
template void conv2d_backward_weight<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_weight<double>(double*, double*, const double*, const double*, const Conv2dShape&);

}  // namespace gradvis
