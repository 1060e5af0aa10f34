// Bilinear resize and rotation of NCHW planes and their exact adjoints.
//
// The resize is separable: an output row is first interpolated between its two
// source rows (a contiguous, vectorizable loop over W), then gathered along W.
// Its adjoint runs per *input* row, so rows are independent and no thread
// writes where another does: the output-gradient rows that read input row r
// are combined with their weights (the transposed row map, built per call),
// then scattered along W through the transposed column taps. The rotation's
// four taps per pixel are tabulated once per call and shared by every plane;
// the forward gathers them per (plane, row), the adjoint scatters each plane in
// turn, planes in parallel.
#include "ops/resample.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace gradvis {

namespace {

// Below this much work (about 0.1 ms on one core) a call runs on the calling
// thread: a parallel region costs more than it saves, much more on a busy host.
constexpr index_t kSerialWork = index_t(1) << 17;

// Run f(begin, end) over [0, n) in one chunk per thread, or serially when the
// work (n * work_per_item) is small.
template <class F>
void for_chunks(index_t n, index_t work_per_item, F&& f) {
  if (n * work_per_item < kSerialWork) {
    f(index_t(0), n);
  } else {
    parallel_chunks(n, [&](index_t b, index_t e, int) { f(b, e); });
  }
}

// One output index's two sources and weights along an axis (half-pixel centres,
// sources clamped to the axis).
struct AxisTaps {
  std::vector<index_t> lo, hi;
  std::vector<double> wlo, whi;
};

AxisTaps axis_taps(index_t n_in, index_t n_out) {
  AxisTaps t;
  t.lo.resize(std::size_t(n_out));
  t.hi.resize(std::size_t(n_out));
  t.wlo.resize(std::size_t(n_out));
  t.whi.resize(std::size_t(n_out));
  const double ratio = double(n_in) / double(n_out);
  for (index_t o = 0; o < n_out; ++o) {
    double s = (double(o) + 0.5) * ratio - 0.5;
    s = std::min(std::max(s, 0.0), double(n_in - 1));
    const index_t lo = index_t(std::floor(s));
    const double f = s - double(lo);
    t.lo[o] = lo;
    t.hi[o] = std::min(lo + 1, n_in - 1);
    t.wlo[o] = 1.0 - f;
    t.whi[o] = f;
  }
  return t;
}

// The transpose of an axis map: for each input index r, the (output index,
// weight) pairs that read it, in CSR form.
struct AxisCsr {
  std::vector<index_t> start, src;
  std::vector<double> w;
};

AxisCsr transpose_taps(const AxisTaps& t, index_t n_in) {
  const index_t n_out = index_t(t.lo.size());
  AxisCsr c;
  c.start.assign(std::size_t(n_in + 1), 0);
  for (index_t o = 0; o < n_out; ++o) {
    ++c.start[t.lo[o] + 1];
    if (t.hi[o] != t.lo[o]) ++c.start[t.hi[o] + 1];
  }
  for (index_t r = 0; r < n_in; ++r) c.start[r + 1] += c.start[r];
  c.src.resize(std::size_t(c.start[n_in]));
  c.w.resize(std::size_t(c.start[n_in]));
  std::vector<index_t> fill(c.start.begin(), c.start.end() - 1);
  for (index_t o = 0; o < n_out; ++o) {
    if (t.hi[o] == t.lo[o]) {  // both taps on one source: one entry of weight 1
      c.src[fill[t.lo[o]]] = o;
      c.w[fill[t.lo[o]]++] = t.wlo[o] + t.whi[o];
    } else {
      c.src[fill[t.lo[o]]] = o;
      c.w[fill[t.lo[o]]++] = t.wlo[o];
      c.src[fill[t.hi[o]]] = o;
      c.w[fill[t.hi[o]]++] = t.whi[o];
    }
  }
  return c;
}

// Column taps in T for the inner loops.
template <class T>
struct ColTaps {
  std::vector<index_t> lo, hi;
  std::vector<T> wlo, whi;
  explicit ColTaps(const AxisTaps& t) : lo(t.lo), hi(t.hi), wlo(t.wlo.begin(), t.wlo.end()),
                                        whi(t.whi.begin(), t.whi.end()) {}
};

// floor(v) for |v| < 2^62 without a libm call (the baseline x86-64 build has no
// rounding instruction): the truncation, one less for negative non-integers.
inline double floor_small(double v) {
  const double t = double(std::int64_t(v));
  return t > v ? t - 1.0 : t;
}

// The rotation's four taps per output pixel, (flat source index, weight) with
// weight 0 (and index 0) for a tap outside the image, so the loops that apply
// them have no branches. Built once per call, in parallel over rows, and shared
// by every plane. The source position moves linearly along a row.
template <class T>
struct RotationTaps {
  std::vector<index_t> idx;
  std::vector<T> wt;
  RotationTaps(index_t H, index_t W, double degrees) : idx(std::size_t(4 * H * W)), wt(std::size_t(4 * H * W)) {
    const double a = degrees * 3.14159265358979323846 / 180.0;
    const double ca = std::cos(a), sa = std::sin(a);
    const double cy = double(H - 1) / 2.0, cx = double(W - 1) / 2.0;
    const double ymax = double(H - 1), xmax = double(W - 1);
    for_chunks(H, 8 * W, [&](index_t b, index_t e) {
      for (index_t i = b; i < e; ++i) {
        const double yy = double(i) - cy;
        index_t* id = idx.data() + 4 * i * W;
        T* w = wt.data() + 4 * i * W;
        for (index_t j = 0; j < W; ++j, id += 4, w += 4) {
          const double xx = double(j) - cx;
          const double xs = ca * xx - sa * yy + cx;
          const double ys = sa * xx + ca * yy + cy;
          const double x0 = floor_small(xs), y0 = floor_small(ys);
          const double fx = xs - x0, fy = ys - y0;
          const double w4[4] = {(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx};
          for (int k = 0; k < 4; ++k) {
            const double yi = y0 + (k >> 1), xi = x0 + (k & 1);
            const bool in = yi >= 0 && yi <= ymax && xi >= 0 && xi <= xmax;
            id[k] = in ? index_t(yi) * W + index_t(xi) : 0;
            w[k] = in ? T(w4[k]) : T(0);
          }
        }
      }
    });
  }
};

}  // namespace

template <class T>
void resize_bilinear_forward_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, index_t OH, index_t OW) {
  const AxisTaps ty = axis_taps(H, OH);
  const ColTaps<T> tx(axis_taps(W, OW));
  for_chunks(planes * OH, OW + W, [&](index_t b, index_t e) {
    std::vector<T> row(static_cast<std::size_t>(W));
    for (index_t g = b; g < e; ++g) {
      const index_t p = g / OH, i = g % OH;
      const T* r0 = x + (p * H + ty.lo[i]) * W;
      const T* r1 = x + (p * H + ty.hi[i]) * W;
      const T w0 = T(ty.wlo[i]), w1 = T(ty.whi[i]);
      T* rb = row.data();
      for (index_t k = 0; k < W; ++k) rb[k] = w0 * r0[k] + w1 * r1[k];
      T* o = out + g * OW;
      const index_t* lo = tx.lo.data();
      const index_t* hi = tx.hi.data();
      const T* wl = tx.wlo.data();
      const T* wh = tx.whi.data();
      for (index_t j = 0; j < OW; ++j) o[j] = wl[j] * rb[lo[j]] + wh[j] * rb[hi[j]];
    }
  });
}

template <class T>
void resize_bilinear_adjoint_cpu(T* dx, const T* dy, index_t planes, index_t H, index_t W, index_t OH, index_t OW) {
  const AxisCsr cy = transpose_taps(axis_taps(H, OH), H);
  const ColTaps<T> tx(axis_taps(W, OW));
  for_chunks(planes * H, OW + W, [&](index_t b, index_t e) {
    std::vector<T> u(static_cast<std::size_t>(OW));
    for (index_t g = b; g < e; ++g) {
      const index_t p = g / H, r = g % H;
      T* ub = u.data();
      std::fill(ub, ub + OW, T(0));
      for (index_t k = cy.start[r]; k < cy.start[r + 1]; ++k) {
        const T* src = dy + (p * OH + cy.src[k]) * OW;
        const T w = T(cy.w[k]);
        for (index_t j = 0; j < OW; ++j) ub[j] += w * src[j];
      }
      T* d = dx + g * W;
      std::fill(d, d + W, T(0));
      for (index_t j = 0; j < OW; ++j) {
        d[tx.lo[j]] += tx.wlo[j] * ub[j];
        d[tx.hi[j]] += tx.whi[j] * ub[j];
      }
    }
  });
}

template <class T>
void rotate_bilinear_forward_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, double degrees) {
  const RotationTaps<T> taps(H, W, degrees);
  const index_t plane = H * W;
  for_chunks(planes * H, 4 * W, [&](index_t b, index_t e) {
    for (index_t g = b; g < e; ++g) {
      const index_t p = g / H, i = g % H;
      const T* xp = x + p * plane;
      const index_t* id = taps.idx.data() + 4 * i * W;
      const T* w = taps.wt.data() + 4 * i * W;
      T* o = out + g * W;
      for (index_t j = 0; j < W; ++j, id += 4, w += 4)
        o[j] = w[0] * xp[id[0]] + w[1] * xp[id[1]] + w[2] * xp[id[2]] + w[3] * xp[id[3]];
    }
  });
}

template <class T>
void rotate_bilinear_adjoint_cpu(T* dx, const T* dy, index_t planes, index_t H, index_t W, double degrees) {
  const RotationTaps<T> taps(H, W, degrees);
  const index_t plane = H * W;
  for_chunks(planes, 5 * plane, [&](index_t b, index_t e) {
    for (index_t p = b; p < e; ++p) {
      T* d = dx + p * plane;
      const T* g = dy + p * plane;
      std::fill(d, d + plane, T(0));
      const index_t* id = taps.idx.data();
      const T* w = taps.wt.data();
      for (index_t q = 0; q < plane; ++q, id += 4, w += 4) {
        const T v = g[q];
        d[id[0]] += w[0] * v;
        d[id[1]] += w[1] * v;
        d[id[2]] += w[2] * v;
        d[id[3]] += w[3] * v;
      }
    }
  });
}

#define GRADVIS_RESAMPLE(T)                                                                                     \
  template void resize_bilinear_forward_cpu<T>(T*, const T*, index_t, index_t, index_t, index_t, index_t);  \
  template void resize_bilinear_adjoint_cpu<T>(T*, const T*, index_t, index_t, index_t, index_t, index_t);  \
  template void rotate_bilinear_forward_cpu<T>(T*, const T*, index_t, index_t, index_t, double);              \
  template void rotate_bilinear_adjoint_cpu<T>(T*, const T*, index_t, index_t, index_t, double);
GRADVIS_RESAMPLE(float)
GRADVIS_RESAMPLE(double)
#undef GRADVIS_RESAMPLE

}  // namespace gradvis
