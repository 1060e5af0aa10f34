// The input gradient of conv2d by gemm + col2im, for the layers where the flipped
// forward pass (conv2d.cpp) does not apply or pays less: strides above 1 and few
// channels per group. Items are (image, block of channels in every group), or,
// for a few planes (the RGB layer at batch 1), (image, band of input rows); per
// item and chunk of output positions, cols = W^T dout (a gemm), then col2im adds
// the columns into dx. Strided rows are added into column-phase-split planes
// first, so that the adds run over contiguous memory. Float32 ungrouped layers
// whose product takes AMX tiles form each image's columns there (amx_col2im:
// ResNet-50's stride-2 3x3 layers 1.1-1.3x faster on 1 thread, 1.3-1.5x on 2).
#include "cpu/conv2d_implicit.h"

#include "cpu/conv2d_pack.h"
#include "cpu/conv_amx.h"
#include "cpu/conv_epilogue.h"
#include "ops/gemm.h"

namespace gradvis {
namespace conv_detail {
namespace {

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

// Runs f(i) for i in [0, n) over the team (serially when nested or n == 1),
// rethrowing the first exception after the loop.
template <class F>
void for_each_item(index_t n, F&& f) {
  ErrorTrap trap;
  parallel_for(n, [&](index_t i) { trap.run([&] { f(i); }); });
  trap.rethrow();
}

// col2im: x[c][ih][iw] += cols[row][p - p0], for the channels [c0, c1) of the
// group, whose rows start at cols (row 0 is channel c0's first tap), and the
// input rows ih in [r0, r1).
template <class T>
void col2im_add(T* x, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0, index_t P,
                index_t r0, index_t r1) {
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
          if (ih >= r0 && ih < r1) {
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

// Column strides > 1: col2im into planes split by column phase, where each tap's
// run of positions is a contiguous add (the direct scatter was a scalar loop with
// stride_w). S[c - c0][ih][ph][j] collects x[c][ih][j * stride_w + ph - pad_left]
// (for the padded columns too); unsplit_planes adds it into x.
template <class T>
void col2im_add_split(T* S, index_t Wq, const T* cols, const Conv2dShape& s, index_t c0, index_t c1, index_t p0,
                      index_t P, index_t r0, index_t r1) {
  const auto& p = s.p;
  const index_t sw = p.stride_w, plane = s.H * sw * Wq;
  for (index_t c = c0; c < c1; ++c) {
    T* Sc = S + (c - c0) * plane;
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const T* src = cols + (((c - c0) * s.KH + kh) * s.KW + kw) * P;
        const index_t ph = (kw * p.dilation_w) % sw, j0 = (kw * p.dilation_w) / sw;
        index_t oh = p0 / s.OW, ow = p0 % s.OW;
        for (index_t q = 0; q < P;) {
          const index_t run = std::min(s.OW - ow, P - q);
          const index_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih >= r0 && ih < r1) {
            T* d = Sc + (ih * sw + ph) * Wq + j0 + ow;
            const T* a = src + q;
            for (index_t t = 0; t < run; ++t) d[t] += a[t];
          }
          q += run;
          ow = 0;
          ++oh;
        }
      }
  }
}

template <class T>
void unsplit_planes(T* x, const T* S, index_t Wq, const Conv2dShape& s, index_t c0, index_t c1, index_t r0,
                    index_t r1) {
  const index_t sw = s.p.stride_w, pl = s.p.pad_left;
  for (index_t c = c0; c < c1; ++c)
    for (index_t ih = r0; ih < r1; ++ih) {
      const T* Sr = S + ((c - c0) * s.H + ih) * sw * Wq;
      T* xr = x + (c * s.H + ih) * s.W;
      for (index_t ph = 0; ph < sw; ++ph) {  // iw = j * sw + ph - pl
        const index_t j0 = pl > ph ? (pl - ph + sw - 1) / sw : 0;
        const index_t last = s.W - 1 + pl - ph;  // j * sw <= last
        const index_t j1 = last >= 0 ? std::min(Wq, last / sw + 1) : 0;
        const T* a = Sr + ph * Wq;
        for (index_t j = j0; j < j1; ++j) xr[j * sw + ph - pl] += a[j];
      }
    }
}

// Adds columns (rows (c - c0) * KK + tap, chunks of output positions) into the
// input rows [t0, t1) of nc channel planes at xg: through column-phase-split
// planes where strides along the row exceed 1 (contiguous adds), else directly.
template <class T>
struct ColumnAdder {
  T* xg;
  const Conv2dShape& s;
  index_t t0, t1, Wq = 0;
  T* S = nullptr;
  ColumnAdder(T* xg_, const Conv2dShape& s_, index_t nc, index_t t0_, index_t t1_) : xg(xg_), s(s_), t0(t0_), t1(t1_) {
    // column phases of the padded row: iw + pad_left = j * stride_w + phase, j < Wq
    const index_t sw = s.p.stride_w;
    Wq = std::max(s.OW + ((s.KW - 1) * s.p.dilation_w) / sw, (s.W - 1 + s.p.pad_left) / sw + 1);
    // (one output per row: col2im_add, whatever the stride; likewise where the
    // split planes would be mostly padding)
    if (sw > 1 && s.OW > 1 && copy_is_modest(double(nc) * double(s.H) * double(sw) * double(Wq), s)) {
      const index_t row = sw * Wq;   // one input row of a channel's split plane
      S = scratch<T>(ScratchSlot::conv_dx_split, std::size_t(nc * s.H * row));
      for (index_t c = 0; c < nc; ++c) std::fill(S + (c * s.H + t0) * row, S + (c * s.H + t1) * row, T(0));
    }
  }
  void operator()(const T* cols, index_t c0, index_t c1, index_t p0, index_t pc) {
    if (S)
      col2im_add_split(S, Wq, cols, s, c0, c1, p0, pc, t0, t1);
    else
      col2im_add(xg, cols, s, c0, c1, p0, pc, t0, t1);
  }
  void finish(index_t c0, index_t c1) {
    if (S) unsplit_planes(xg, S, Wq, s, c0, c1, t0, t1);
  }
};

// ---- backward input: item = (image, block of channels [c0, c1) in every group,
// band of output rows [oh0, oh1)) ----
// The band's columns are added into dx's input rows [t0, t1), those its taps
// reach. zero: dx's planes are zeroed here first (a whole band), else the caller
// zeroed them and other bands add into the same planes.
template <class T>
void backward_input_block(T* dx, const T* dout, const T* w, const Conv2dShape& s, const Geometry& g, index_t n,
                          index_t c0, index_t c1, index_t P, index_t oh0, index_t oh1, bool zero) {
  const index_t nc = c1 - c0;
  const auto& pp = s.p;
  const index_t reach = (s.KH - 1) * pp.dilation_h;
  const index_t t0 = std::max<index_t>(0, oh0 * pp.stride_h - pp.pad_top);
  const index_t t1 = std::min(s.H, std::max(t0, (oh1 - 1) * pp.stride_h - pp.pad_top + reach + 1));
  const index_t q0 = oh0 * s.OW, q1 = oh1 * s.OW;
  for (index_t gi = 0; gi < g.G; ++gi) {
    T* xg = dx + (n * s.C + gi * g.Cg) * g.HW;
    const T* wg = w + gi * g.Fg * g.CK + c0 * g.KK;  // op(A) = rows c0*KK.. of W_g^T
    const T* dg = dout + (n * s.F + gi * g.Fg) * g.OHW;
    if (g.pointwise) {   // input row = output row
      gemm_cpu<T>(true, false, nc, q1 - q0, g.Fg, T(1), wg, g.CK, dg + q0, g.OHW, T(0), xg + c0 * g.HW + q0, g.HW);
      continue;
    }
    if (zero) std::fill(xg + c0 * g.HW, xg + c1 * g.HW, T(0));
    T* cols = scratch<T>(ScratchSlot::conv_cols, std::size_t(nc * g.KK * P));
    ColumnAdder<T> add(xg, s, nc, t0, t1);
    for (index_t p0 = q0; p0 < q1; p0 += P) {
      const index_t pc = std::min(P, q1 - p0);
      gemm_cpu<T>(true, false, nc * g.KK, pc, g.Fg, T(1), wg, g.CK, dg + p0, g.OHW, T(0), cols, pc);
      add(cols, c0, c1, p0, pc);
    }
    add.finish(c0, c1);
  }
}

// Float32, groups 1: the columns of each whole image as the input gradient of the
// 1x1 layer F -> C KH KW on the output's grid (on AMX tiles where amx_forward
// takes it), then added into place per block of channels. False, having written
// nothing the caller's path does not overwrite, where amx_forward declines.
bool amx_col2im(float* dx, const float* dout, const float* w, const Conv2dShape& s, const Geometry& g,
                const ConvAct* act, const float* ref) {
  const index_t CK = g.CK, OHW = g.OHW;
  float* cols = scratch<float>(ScratchSlot::conv_amx_sub, std::size_t(CK * OHW));
  const Conv2dShape t = conv2d_shape(1, s.F, s.OH, s.OW, CK, 1, 1, Conv2dParams{});
  const index_t blocks = std::min(s.C, team_size());
  for (index_t n = 0; n < s.N; ++n) {
    if (!amx_forward(cols, dout + n * s.F * OHW, w, nullptr, t, true, false, nullptr, nullptr)) return false;
    float* xn = dx + n * s.C * g.HW;
    for_each_item(blocks, [&](index_t k) {
      const index_t c0 = s.C * k / blocks, c1 = s.C * (k + 1) / blocks;
      std::fill(xn + c0 * g.HW, xn + c1 * g.HW, 0.f);
      ColumnAdder<float> add(xn, s, c1 - c0, 0, s.H);
      add(cols + c0 * g.KK * OHW, c0, c1, 0, OHW);
      add.finish(c0, c1);
      if (act) mask_inplace(xn + c0 * g.HW, ref + n * s.C * g.HW + c0 * g.HW, (c1 - c0) * g.HW, *act);
    });
  }
  return true;
}

}  // namespace

template <class T>
void col2im_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct* act,
                           const T* ref) {
  const Geometry g = geometry(s);
  const index_t nt = team_size();
  const index_t P = chunk_cols<T>(g, 1);
  // A few (image, channel) planes (the RGB layer at batch 1: 3 channels over 2
  // threads ran 1:2) go in kBands bands of output rows instead, whatever the
  // thread count: the even bands at once, then the odd ones, so that bands
  // running together never add into the same input rows (each band's taps reach
  // past its own rows by less than the next band's height). Every value of dx
  // gets its sums in the same order on any thread count.
  constexpr index_t kBands = 4;
  const index_t reach = (s.KH - 1) * s.p.dilation_h;
  const bool banded = s.N * g.Cg <= 4 && !g.pointwise && s.OH >= 4 * kBands &&
                      reach < (s.OH / kBands + 1) * s.p.stride_h;
  if (banded) {
    std::fill(dx, dx + s.N * s.C * g.HW, T(0));
    for (index_t parity = 0; parity < 2; ++parity)
      for_each_item(s.N * kBands / 2, [&](index_t i) {
        const index_t n = i / (kBands / 2), b = 2 * (i % (kBands / 2)) + parity;
        backward_input_block(dx, dout, w, s, g, n, 0, g.Cg, P, s.OH * b / kBands, s.OH * (b + 1) / kBands, false);
      });
    if (act) for_each_item(s.N * s.C, [&](index_t i) { mask_inplace(dx + i * g.HW, ref + i * g.HW, g.HW, *act); });
    return;
  }
  if constexpr (sizeof(T) == 4)
    if (g.G == 1 && !g.pointwise && conv_algo() != ConvAlgo::direct && amx_col2im(dx, dout, w, s, g, act, ref))
      return;
  const index_t blocks = std::min(g.Cg, (nt + s.N - 1) / s.N);
  for_each_item(s.N * blocks, [&](index_t i) {
    const index_t n = i / blocks, k = i % blocks;
    const index_t c0 = g.Cg * k / blocks, c1 = g.Cg * (k + 1) / blocks;
    backward_input_block(dx, dout, w, s, g, n, c0, c1, P, 0, s.OH, true);
    if (act)
      for (index_t gi = 0; gi < g.G; ++gi) {
        const index_t off = (n * s.C + gi * g.Cg + c0) * g.HW;
        mask_inplace(dx + off, ref + off, (c1 - c0) * g.HW, *act);
      }
  });
}

template void col2im_backward_input<float>(float*, const float*, const float*, const Conv2dShape&, const ConvAct*,
                                           const float*);
template void col2im_backward_input<double>(double*, const double*, const double*, const Conv2dShape&,
                                            const ConvAct*, const double*);

}  // namespace conv_detail
}  // namespace gradvis
