// Separable Gaussian blur (scipy.ndimage.gaussian_filter, mode='reflect') and
// its exact adjoint. Work is split over image rows (planes*H), not planes, so
// a 1x3xHxW image keeps every thread busy.
//
// Along W the filter is a correlation of a reflect-padded row (vectorized over
// the row); the adjoint correlates the zero-padded row and folds the border
// back through the same reflection. Along H, and along W when the kernel is
// wider than the row, the 1-D operator is a small sparse matrix (CSR) whose
// rows have the reflected taps merged; the adjoint is its transpose. Each
// sparse row is applied to whole image rows, so those loops vectorize too.
#include "ops/blur.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gradvis {

std::vector<double> gaussian_kernel1d(double sigma, double truncate) {
  if (!(sigma > 1e-15)) return {1.0};  // scipy skips such axes
  const index_t r = static_cast<index_t>(truncate * sigma + 0.5);
  const double a = -0.5 / (sigma * sigma);
  std::vector<double> w(static_cast<std::size_t>(2 * r + 1));
  double sum = 0;
  for (index_t k = -r; k <= r; ++k) sum += (w[k + r] = std::exp(a * double(k) * double(k)));
  for (auto& v : w) v /= sum;
  return w;
}

namespace {

constexpr index_t kSerialWork = 1 << 14;

template <class F>
void for_rows(index_t rows, index_t work_per_row, F&& f) {
  if (rows * work_per_row < kSerialWork) {
    for (index_t g = 0; g < rows; ++g) f(g);
  } else {
    parallel_for(rows, f);
  }
}

// scipy 'reflect' (d c b a | a b c d | d c b a), periodic with period 2n so it
// holds for offsets of any size.
inline index_t reflect(index_t p, index_t n) {
  const index_t period = 2 * n;
  index_t m = p % period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

struct Csr {
  const index_t* start = nullptr;  // n + 1
  const index_t* src = nullptr;
  const double* w = nullptr;
};

// Scratch block for a CSR with n rows and E entries, in one slot.
inline void csr_block(ScratchSlot slot, index_t n, index_t E, index_t*& start, index_t*& src, double*& w) {
  const std::size_t bytes = sizeof(index_t) * std::size_t(n + 1 + E) + sizeof(double) * std::size_t(E);
  char* mem = static_cast<char*>(thread_scratch().get(slot, bytes));
  start = reinterpret_cast<index_t*>(mem);
  src = start + n + 1;
  w = reinterpret_cast<double*>(src + E);
}

// The filter along an axis of n points: out[i] = sum_k wt[k] * in[reflect(i - r + k)].
Csr build_csr(ScratchSlot slot, ScratchSlot tmp_slot, index_t n, const std::vector<double>& wt) {
  const index_t taps = index_t(wt.size()), r = (taps - 1) / 2;
  const index_t E = n * std::min(taps, n);
  index_t *start, *src;
  double* w;
  csr_block(slot, n, E, start, src, w);
  index_t* pos = scratch<index_t>(tmp_slot, n);  // where column j sits in the current row, or -1
  std::fill(pos, pos + n, index_t(-1));
  index_t e = 0;
  for (index_t i = 0; i < n; ++i) {
    start[i] = e;
    for (index_t k = 0; k < taps; ++k) {
      const index_t j = reflect(i - r + k, n);
      if (pos[j] < 0) {
        pos[j] = e;
        src[e] = j;
        w[e] = 0;
        ++e;
      }
      w[pos[j]] += wt[k];
    }
    for (index_t t = start[i]; t < e; ++t) pos[src[t]] = -1;
  }
  start[n] = e;
  return {start, src, w};
}

Csr transpose_csr(const Csr& a, index_t n, ScratchSlot slot) {
  const index_t E = a.start[n];
  index_t *start, *src;
  double* w;
  csr_block(slot, n, E, start, src, w);
  std::fill(start, start + n + 1, index_t(0));
  for (index_t t = 0; t < E; ++t) ++start[a.src[t] + 1];
  for (index_t j = 0; j < n; ++j) start[j + 1] += start[j];
  // Fill using start[j] as a cursor, then shift back.
  for (index_t i = 0; i < n; ++i)
    for (index_t t = a.start[i]; t < a.start[i + 1]; ++t) {
      const index_t dst = start[a.src[t]]++;
      src[dst] = i;
      w[dst] = a.w[t];
    }
  for (index_t j = n; j > 0; --j) start[j] = start[j - 1];
  start[0] = 0;
  return {start, src, w};
}

// out row = sum over the sparse row's entries of weight * in row src, with
// rows W elements apart.
template <class T>
void apply_rows(T* __restrict out, const T* __restrict in, const Csr& m, index_t i, index_t W) {
  const index_t b = m.start[i], e = m.start[i + 1];
  {
    const T w0 = T(m.w[b]);
    const T* s = in + m.src[b] * W;
    for (index_t x = 0; x < W; ++x) out[x] = w0 * s[x];
  }
  for (index_t t = b + 1; t < e; ++t) {
    const T wt = T(m.w[t]);
    const T* s = in + m.src[t] * W;
    for (index_t x = 0; x < W; ++x) out[x] += wt * s[x];
  }
}

// out[x] = sum over the sparse row x of weight * in[src]: a gather, used along
// W only when the kernel is wider than the row.
template <class T>
void apply_gather(T* __restrict out, const T* __restrict in, const Csr& m, index_t W) {
  for (index_t x = 0; x < W; ++x) {
    T s = 0;
    for (index_t t = m.start[x]; t < m.start[x + 1]; ++t) s += T(m.w[t]) * in[m.src[t]];
    out[x] = s;
  }
}

// out[x] = sum_{k=0}^{2r} wt[k] * pad[x + k] for x < len, wt symmetric.
template <class T>
void correlate_row(T* __restrict out, const T* __restrict pad, const T* wt, index_t r, index_t len) {
  const T c = wt[r];
  const T* mid = pad + r;
  for (index_t x = 0; x < len; ++x) out[x] = c * mid[x];
  for (index_t k = 0; k < r; ++k) {
    const T a = wt[k];
    const T* p0 = pad + k;
    const T* p1 = pad + 2 * r - k;
    for (index_t x = 0; x < len; ++x) out[x] += a * (p0[x] + p1[x]);
  }
}

}  // namespace

template <class T>
void gaussian_blur_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, const std::vector<double>& wh,
                       const std::vector<double>& ww, bool adjoint) {
  const bool do_v = wh.size() > 1, do_h = ww.size() > 1;
  const index_t rows = planes * H;
  if (!do_v && !do_h) {
    std::memcpy(out, x, sizeof(T) * std::size_t(rows * W));
    return;
  }
  // Plans, built on the calling thread and read by the team (ScratchSlot::blur_*).
  Csr vm, hm;
  if (do_v) {
    vm = build_csr(ScratchSlot::blur_v_plan, ScratchSlot::blur_plan_tmp, H, wh);
    if (adjoint) vm = transpose_csr(vm, H, ScratchSlot::blur_v_plan_t);
  }
  const index_t rw = (index_t(ww.size()) - 1) / 2;
  const bool h_sparse = do_h && 2 * rw + 1 > W;
  const index_t* reflect_idx = nullptr;  // padded position q -> column, q in [0, W + 2r)
  std::vector<T> wt_h;
  if (h_sparse) {
    hm = build_csr(ScratchSlot::blur_h_plan, ScratchSlot::blur_plan_tmp, W, ww);
    if (adjoint) hm = transpose_csr(hm, W, ScratchSlot::blur_h_plan_t);
  } else if (do_h) {
    index_t* idx = scratch<index_t>(ScratchSlot::blur_h_plan_t, W + 2 * rw);
    for (index_t q = 0; q < W + 2 * rw; ++q) idx[q] = reflect(q - rw, W);
    reflect_idx = idx;
    wt_h.assign(ww.begin(), ww.end());
  }

  // Along W first (rows are independent), into the intermediate image.
  T* mid = do_v ? scratch<T>(ScratchSlot::blur_mid, std::size_t(rows * W)) : out;
  if (do_h) {
    for_rows(rows, W * (2 * rw + 1), [&](index_t g) {
      const T* in = x + g * W;
      T* o = mid + g * W;
      if (h_sparse) {
        apply_gather(o, in, hm, W);
      } else if (!adjoint) {
        T* pad = scratch<T>(ScratchSlot::blur_row, W + 2 * rw);
        for (index_t q = 0; q < rw; ++q) pad[q] = in[reflect_idx[q]];
        std::memcpy(pad + rw, in, sizeof(T) * W);
        for (index_t q = W + rw; q < W + 2 * rw; ++q) pad[q] = in[reflect_idx[q]];
        correlate_row(o, pad, wt_h.data(), rw, W);
      } else {
        // Transpose of (gather into pad, correlate): correlate the zero-padded
        // row, then fold the padded cells back onto the columns they came from.
        T* ypad = scratch<T>(ScratchSlot::blur_row, W + 4 * rw);
        T* z = scratch<T>(ScratchSlot::blur_row2, W + 2 * rw);
        std::fill(ypad, ypad + 2 * rw, T(0));
        std::memcpy(ypad + 2 * rw, in, sizeof(T) * W);
        std::fill(ypad + 2 * rw + W, ypad + W + 4 * rw, T(0));
        correlate_row(z, ypad, wt_h.data(), rw, W + 2 * rw);
        std::memcpy(o, z + rw, sizeof(T) * W);
        for (index_t q = 0; q < rw; ++q) o[reflect_idx[q]] += z[q];
        for (index_t q = W + rw; q < W + 2 * rw; ++q) o[reflect_idx[q]] += z[q];
      }
    });
  }
  // Then along H: each output row is a short weighted sum of input rows.
  if (do_v) {
    const T* src = do_h ? mid : x;
    for_rows(rows, W * (vm.start[H] / H + 1), [&](index_t g) {
      const index_t p = g / H, i = g - p * H;
      apply_rows(out + g * W, src + p * H * W, vm, i, W);
    });
  }
}

template void gaussian_blur_cpu<float>(float*, const float*, index_t, index_t, index_t, const std::vector<double>&,
                                       const std::vector<double>&, bool);
template void gaussian_blur_cpu<double>(double*, const double*, index_t, index_t, index_t,
                                        const std::vector<double>&, const std::vector<double>&, bool);

}  // namespace gradvis
