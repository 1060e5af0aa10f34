// Bilinear resize and rotation of NCHW planes and their exact adjoints.
//
// The resize is separable: an output row is first interpolated between its two
// source rows (a contiguous, vectorizable loop over W), then gathered along W.
// Its adjoint runs per *input* row, so rows are independent and no thread
// writes where another does: the output-gradient rows that read input row r
// are combined with their weights (the transposed row map, built per call),
// then scattered along W through the transposed column taps. The rotation's
// taps are computed per output pixel (no tables to read) and shared by every
// plane; its adjoint scatters each plane in turn, planes in parallel.
#include "ops/resample.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace gradvis {

namespace {

constexpr index_t kSerialWork = 1 << 14;

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

// The rotation's inverse map of output pixel (i, j): source position (ys, xs).
struct Rotation {
  double ca, sa, cy, cx;
  Rotation(index_t H, index_t W, double degrees) {
    const double a = degrees * 3.14159265358979323846 / 180.0;
    ca = std::cos(a);
    sa = std::sin(a);
    cy = double(H - 1) / 2.0;
    cx = double(W - 1) / 2.0;
  }
  // The four taps (flat index, weight) of output pixel (i, j); weight 0 marks a
  // tap outside the image. Returns how many taps are inside.
  template <class T>
  int taps(index_t i, index_t j, index_t H, index_t W, index_t* idx, T* wt) const {
    const double yy = double(i) - cy, xx = double(j) - cx;
    const double xs = ca * xx - sa * yy + cx;
    const double ys = sa * xx + ca * yy + cy;
    const double x0 = std::floor(xs), y0 = std::floor(ys);
    const double fx = xs - x0, fy = ys - y0;
    const double w4[4] = {(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx};
    int inside = 0;
    for (int k = 0; k < 4; ++k) {
      const double yi = y0 + (k >> 1), xi = x0 + (k & 1);
      if (yi >= 0 && yi <= double(H - 1) && xi >= 0 && xi <= double(W - 1)) {
        idx[inside] = index_t(yi) * W + index_t(xi);
        wt[inside++] = T(w4[k]);
      }
    }
    return inside;
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
  const Rotation rot(H, W, degrees);
  const index_t plane = H * W;
  for_chunks(H, W * (4 + planes), [&](index_t b, index_t e) {
    index_t idx[4];
    T wt[4];
    for (index_t i = b; i < e; ++i) {
      for (index_t j = 0; j < W; ++j) {
        const int n = rot.taps(i, j, H, W, idx, wt);
        const index_t o = i * W + j;
        for (index_t p = 0; p < planes; ++p) {
          const T* xp = x + p * plane;
          T s = T(0);
          for (int k = 0; k < n; ++k) s += wt[k] * xp[idx[k]];
          out[p * plane + o] = s;
        }
      }
    }
  });
}

template <class T>
void rotate_bilinear_adjoint_cpu(T* dx, const T* dy, index_t planes, index_t H, index_t W, double degrees) {
  const Rotation rot(H, W, degrees);
  const index_t plane = H * W;
  for_chunks(planes, plane * 5, [&](index_t b, index_t e) {
    index_t idx[4];
    T wt[4];
    for (index_t p = b; p < e; ++p) {
      T* d = dx + p * plane;
      const T* g = dy + p * plane;
      std::fill(d, d + plane, T(0));
      for (index_t i = 0; i < H; ++i) {
        for (index_t j = 0; j < W; ++j) {
          const int n = rot.taps(i, j, H, W, idx, wt);
          const T v = g[i * W + j];
          for (int k = 0; k < n; ++k) d[idx[k]] += wt[k] * v;
        }
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
