// conv2d on the packed gemm: per image and group, im2col a chunk of output
// columns into per-thread scratch (CK x P, CK = C/groups*KH*KW) and multiply.
// 1x1 stride-1 unpadded convs use the image as the column matrix directly;
// depthwise convs use the direct kernels in conv_depthwise.cpp.
//
// Threads: the work is cut into independent items, one OpenMP loop per call,
// each item running its im2col and a serial gemm:
//   forward          (image, column chunk)   -> disjoint output columns
//   backward input   (image, channel block)  -> disjoint dx planes (col2im has no races)
//   backward weight  (image, column chunk)   -> per-thread partial dw, summed in thread order
// Column chunks / channel blocks are made small enough that batch 1 still gives
// every thread work; with fewer items than threads the gemm is parallel inside.
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
// being written and being packed by the gemm, and there should be at least
// `min_chunks` chunks per image so that a small batch still feeds every thread.
template <class T>
index_t chunk_cols(const Geometry& g, index_t min_chunks) {
  const index_t budget = index_t(1) << 19;  // bytes
  index_t P = budget / (g.CK * index_t(sizeof(T)));
  P = std::max<index_t>(128, P / 64 * 64);
  if (min_chunks > 1) P = std::min(P, std::max<index_t>(64, (g.OHW + min_chunks - 1) / min_chunks));
  return std::min(P, g.OHW);
}

index_t team_size() { return in_parallel() ? 1 : max_threads(); }

// Runs f(i) for i in [0, n) over the team (serially when nested or n == 1),
// rethrowing the first exception after the loop.
template <class F>
void for_each_item(index_t n, F&& f) {
  ErrorTrap trap;
  parallel_for(n, [&](index_t i) { trap.run([&] { f(i); }); });
  trap.rethrow();
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
// group, whose rows start at cols (row 0 is channel c0's first tap).
template <class T>
void col2im_add(T* x, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0, index_t P) {
  const auto& p = s.p;
  for (index_t c = c0; c < c1; ++c) {
    T* xc = x + c * s.H * s.W;
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const T* src = cols + (((c - c0) * s.KH + kh) * s.KW + kw) * P;
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

// ---- forward: item = (image, column chunk) ----
template <class T>
void forward_chunk(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, const Geometry& g, index_t n,
                   index_t p0, index_t pc) {
  for (index_t gi = 0; gi < g.G; ++gi) {
    const T* xg = x + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK;
    T* og = out + (n * s.F + gi * g.Fg) * g.OHW + p0;
    if (g.pointwise) {
      gemm<T>(false, false, g.Fg, pc, g.Cg, T(1), wg, g.CK, xg + p0, g.HW, T(0), og, g.OHW);
    } else {
      T* cols = scratch<T>(kColsSlot, std::size_t(g.CK * pc));
      im2col_rows(cols, xg, s, 0, g.CK, p0, pc);
      gemm<T>(false, false, g.Fg, pc, g.CK, T(1), wg, g.CK, cols, pc, T(0), og, g.OHW);
    }
    if (b)
      for (index_t f = 0; f < g.Fg; ++f) {
        T* o = og + f * g.OHW;
        const T bv = b[gi * g.Fg + f];
        for (index_t q = 0; q < pc; ++q) o[q] += bv;
      }
  }
}

// ---- backward input: item = (image, block of channels [c0, c1) in every group) ----
template <class T>
void backward_input_block(T* dx, const T* dout, const T* w, const Conv2dShape& s, const Geometry& g, index_t n,
                          index_t c0, index_t c1, index_t P) {
  const index_t nc = c1 - c0;
  for (index_t gi = 0; gi < g.G; ++gi) {
    T* xg = dx + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK + c0 * g.KK;  // op(A) = rows c0*KK.. of W_g^T
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW;
    if (g.pointwise) {
      gemm<T>(true, false, nc, g.HW, g.Fg, T(1), wg, g.CK, dg, g.OHW, T(0), xg + c0 * g.HW, g.HW);
      continue;
    }
    std::fill(xg + c0 * g.HW, xg + c1 * g.HW, T(0));
    T* cols = scratch<T>(kColsSlot, std::size_t(nc * g.KK * P));
    for (index_t p0 = 0; p0 < g.OHW; p0 += P) {
      const index_t pc = std::min(P, g.OHW - p0);
      gemm<T>(true, false, nc * g.KK, pc, g.Fg, T(1), wg, g.CK, dg + p0, g.OHW, T(0), cols, pc);
      col2im_add(xg, cols, s, c0, c1, p0, pc);
    }
  }
}

// ---- backward weight: item = (image, column chunk); dw (F, CK) += dout x cols^T ----
template <class T>
void backward_weight_chunk(T* dw, const T* dout, const T* x, const Conv2dShape& s, const Geometry& g, index_t n,
                           index_t p0, index_t pc) {
  for (index_t gi = 0; gi < g.G; ++gi) {
    const T* xg = x + (n * s.C + gi * g.Cg) * g.HW;
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW + p0;
    T* wg = dw + gi * g.Fg * g.CK;
    if (g.pointwise) {
      gemm<T>(false, true, g.Fg, g.Cg, pc, T(1), dg, g.OHW, xg + p0, g.HW, T(1), wg, g.CK);
    } else {
      T* cols = scratch<T>(kColsSlot, std::size_t(g.CK * pc));
      im2col_rows(cols, xg, s, 0, g.CK, p0, pc);
      gemm<T>(false, true, g.Fg, g.CK, pc, T(1), dg, g.OHW, cols, pc, T(1), wg, g.CK);
    }
  }
}

}  // namespace

template <class T>
void conv2d_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_forward(out, x, w, b, s);
  const Geometry g = geometry(s);
  const index_t nt = team_size();
  const index_t P = chunk_cols<T>(g, (nt + s.N - 1) / s.N);
  const index_t chunks = (g.OHW + P - 1) / P;
  for_each_item(s.N * chunks, [&](index_t i) {
    const index_t n = i / chunks, p0 = (i % chunks) * P;
    forward_chunk(out, x, w, b, s, g, n, p0, std::min(P, g.OHW - p0));
  });
}

template <class T>
void conv2d_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s) {
  if (conv_detail::is_depthwise(s)) return conv_detail::depthwise_backward_input(dx, dout, w, s);
  const Geometry g = geometry(s);
  const index_t nt = team_size();
  const index_t blocks = std::min(g.Cg, (nt + s.N - 1) / s.N);
  const index_t P = chunk_cols<T>(g, 1);
  for_each_item(s.N * blocks, [&](index_t i) {
    const index_t n = i / blocks, k = i % blocks;
    backward_input_block(dx, dout, w, s, g, n, g.Cg * k / blocks, g.Cg * (k + 1) / blocks, P);
  });
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
  const index_t nt = team_size();
  const index_t P = chunk_cols<T>(g, (nt + s.N - 1) / s.N);
  const index_t chunks = (g.OHW + P - 1) / P;
  const index_t items = s.N * chunks;
  if (nt == 1 || items < nt) {
    // Too few items to share: one after another, the gemm parallel inside.
    std::fill(dw, dw + wsize, T(0));
    for (index_t i = 0; i < items; ++i) {
      const index_t n = i / chunks, p0 = (i % chunks) * P;
      backward_weight_chunk(dw, dout, x, s, g, n, p0, std::min(P, g.OHW - p0));
    }
    return;
  }
  // Each thread sums a contiguous range of items into its own partial filter
  // gradient; the partials are then added in thread order (deterministic for a
  // given thread count).
  T* parts = scratch<T>(kPartialSlot, std::size_t(wsize) * std::size_t(nt));
  std::vector<char> used(std::size_t(nt), 0);
  ErrorTrap trap;
  parallel_chunks(items, [&](index_t i0, index_t i1, int t) {
    trap.run([&] {
      T* part = parts + std::size_t(t) * std::size_t(wsize);
      std::fill(part, part + wsize, T(0));
      for (index_t i = i0; i < i1; ++i) {
        const index_t n = i / chunks, p0 = (i % chunks) * P;
        backward_weight_chunk(part, dout, x, s, g, n, p0, std::min(P, g.OHW - p0));
      }
      used[std::size_t(t)] = 1;
    });
  });
  trap.rethrow();
  parallel_chunks(wsize, [&](index_t i0, index_t i1, int) {
    std::fill(dw + i0, dw + i1, T(0));
    for (index_t t = 0; t < nt; ++t) {
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
