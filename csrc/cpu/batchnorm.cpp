// Spatial batch norm over (N, C, HW), in memory order. A channel's planes lie
// C*HW apart; read channel by channel, many small planes (C*HW often a power
// of two) fall on the same cache sets and give the prefetcher short runs, so
// the second read of a channel misses the cache anyway. Instead every pass
// walks the tensor in memory order: the sums over blocks of images x channels
// fixed by the shape (each block's partial sums kept apart, then merged in
// block order, so results do not depend on the thread count), and the
// elementwise passes over runs of planes.
//
// Sums run in float vector lanes for a few thousand elements of a channel at a
// time and are then added into double (see batchnorm_kernels.inc). The
// variance is the second moment about a pivot near the mean, one read of x;
// a block whose pivot turns out far from its mean, compared to its spread, is
// read once more about that mean. Blocks merge as (count, mean, M2).
#include "ops/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/simd.h"

namespace gradvis {

namespace {

// The elements of one channel whose float sums a block lets pile up in a lane
// group before they go into double.
constexpr index_t kPiece = 4096;
constexpr index_t kMaxBlockChannels = 64;

template <class T>
struct BnKernels {
  // Block [n0, n1) x [c0, c1); t gets two sums per channel:
  // sum (x - pivot[c]) and sum (x - pivot[c])^2.
  void (*block_moments)(const T* x, const T* pivot, index_t n0, index_t n1, index_t c0, index_t c1, index_t C,
                        index_t HW, double* t);
  // sum g and sum g * (x - mu[c]); with dx, also dx = k[c] * g.
  void (*block_grad_sums)(const T* g, const T* x, const T* mu, T* dx, const T* k, index_t n0, index_t n1, index_t c0,
                          index_t c1, index_t C, index_t HW, double* t);
  // Planes [p0, p1): out = (x - m[c]) * s[c] + h[c], then max(., 0) when relu.
  void (*planes_affine)(T* out, const T* x, const T* m, const T* s, const T* h, bool relu, index_t p0, index_t p1,
                        index_t C, index_t HW);
  // Planes [p0, p1): dx = kd[c] * g + kx[c] * (x - mu[c]) + k0[c].
  void (*planes_grad_input)(T* dx, const T* g, const T* x, const T* mu, const T* kd, const T* kx, const T* k0,
                            index_t p0, index_t p1, index_t C, index_t HW);
};

}  // namespace

// The passes, compiled once per SIMD level (the library targets baseline x86-64).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GV_BN_WIDE 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,prefer-vector-width=512")
#define GV_BN_VEC_BYTES 64
namespace bn_avx512 {
#include "cpu/batchnorm_kernels.inc"
}
#undef GV_BN_VEC_BYTES
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define GV_BN_VEC_BYTES 32
namespace bn_avx2 {
#include "cpu/batchnorm_kernels.inc"
}
#undef GV_BN_VEC_BYTES
#pragma GCC pop_options
#endif
#define GV_BN_VEC_BYTES 16
namespace bn_base {
#include "cpu/batchnorm_kernels.inc"
}
#undef GV_BN_VEC_BYTES
#pragma GCC diagnostic pop

namespace {

template <class T>
const BnKernels<T>& kernels() {
#ifdef GV_BN_WIDE
  switch (cpu_level()) {
    case SimdLevel::avx512:
      return bn_avx512::kKernels<T>;
    case SimdLevel::avx2:
      return bn_avx2::kKernels<T>;
    default:
      break;
  }
#endif
  return bn_base::kKernels<T>;
}

constexpr index_t kSerialWork = 1 << 14;

// Blocks of images [bn*Nb, ..) x channels [bc*Cb, ..), fixed by the shape.
struct BnBlocks {
  index_t N, C, HW, Nb, nbn, Cb, nbc;

  BnBlocks(index_t N_, index_t C_, index_t HW_) : N(N_), C(C_), HW(HW_) {
    // Up to kPiece elements of a channel per block; at least 8 blocks when the
    // channels allow, for the threads to share; at most kMaxBlockChannels
    // channels, whose running vectors (8 KB of float) stay in L1.
    Nb = std::max<index_t>(1, std::min<index_t>(N, kPiece / HW));
    nbn = (N + Nb - 1) / Nb;
    const index_t want = std::min<index_t>(
        C, std::max<index_t>((8 + nbn - 1) / nbn, (C + kMaxBlockChannels - 1) / kMaxBlockChannels));
    Cb = (C + want - 1) / want;
    if (HW == 1) Cb = std::min(kMaxBlockChannels, (Cb + 15) / 16 * 16);  // whole vectors of a row
    nbc = (C + Cb - 1) / Cb;
  }
  index_t rows(index_t bn) const { return std::min(N, (bn + 1) * Nb) - bn * Nb; }
  // f(bn, n0, n1, c0, c1) for every block, in parallel.
  template <class F>
  void run(F&& f) const {
    auto one = [&](index_t j) {
      const index_t bn = j / nbc, bc = j % nbc;
      f(bn, bn * Nb, bn * Nb + rows(bn), bc * Cb, std::min(C, (bc + 1) * Cb));
    };
    if (N * C * HW < kSerialWork) {
      for (index_t j = 0; j < nbn * nbc; ++j) one(j);
    } else {
      parallel_for(nbn * nbc, one);
    }
  }
};

// f(p0, p1) over runs of the N*C planes, one per thread.
template <class F>
void for_planes(index_t N, index_t C, index_t HW, F&& f) {
  if (N * C * HW < kSerialWork) return f(index_t(0), N * C);
  parallel_chunks(N * C, [&](index_t b, index_t e, int) { f(b, e); });
}

// Per channel of block [n0, n1) x [c0, c1), the mean of 16 of its first
// elements into pv[c]: a pivot near the channel's mean, for the one-read
// variance. Spread over the first plane, or with planes under 16 elements,
// the first planes whole (read plane by plane, all channels at once: a
// channel's planes are C*HW apart). The block's start is read next anyway;
// samples from all its images would be cache misses.
template <class T>
void block_pivots(T* pv, const T* x, index_t n0, index_t n1, index_t c0, index_t c1, index_t C, index_t HW) {
  constexpr index_t J = 16;
  if (HW >= J) {
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x + (n0 * C + c) * HW;
      double s = 0;
      for (index_t j = 0, step = HW / J; j < J; ++j) s += p[j * step];
      pv[c] = T(s / double(J));
    }
    return;
  }
  const index_t planes = std::min(n1 - n0, (J + HW - 1) / HW);
  std::vector<double> s(c1 - c0, 0.0);
  for (index_t q = 0; q < planes; ++q) {
    const T* p = x + ((n0 + q) * C + c0) * HW;
    if (HW == 1) {  // (N, C) rows: one contiguous loop
      for (index_t c = 0; c < c1 - c0; ++c) s[c] += p[c];
    } else {
      for (index_t c = 0; c < c1 - c0; ++c)
        for (index_t i = 0; i < HW; ++i) s[c] += p[c * HW + i];
    }
  }
  for (index_t c = c0; c < c1; ++c) pv[c] = T(s[c - c0] / double(planes * HW));
}

// Moments about a pivot lose little to cancellation when the pivot is within a
// standard deviation of the mean (the relative rounding of the variance at
// most doubles): d = mean - pivot, v = variance.
inline bool pivot_ok(double d, double v) { return d * d <= v; }

// sum dout and sum dout * (x - mu) per channel into sg, sgx; with dx, also
// dx = dout * k.
template <class T>
void grad_sums(double* sg, double* sgx, T* dx, const T* k, const T* dout, const T* x, const T* mu, index_t N,
               index_t C, index_t HW) {
  const auto f = kernels<T>().block_grad_sums;
  const BnBlocks bl(N, C, HW);
  std::vector<double> t(2 * bl.nbn * C);
  bl.run([&](index_t bn, index_t n0, index_t n1, index_t c0, index_t c1) {
    f(dout, x, mu, dx, k, n0, n1, c0, c1, C, HW, t.data() + 2 * (bn * C + c0));
  });
  for (index_t c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (index_t bn = 0; bn < bl.nbn; ++bn) a += t[2 * (bn * C + c)], b += t[2 * (bn * C + c) + 1];
    sg[c] = a, sgx[c] = b;
  }
}

// out = x * scale[c] + shift[c] (dout * scale[c] for the input gradient), then
// max(., 0) when relu.
template <class T>
void scale_planes(T* out, const T* x, const std::vector<T>& scale, const std::vector<T>& shift, index_t N, index_t C,
                  index_t HW, bool relu = false) {
  const auto f = kernels<T>().planes_affine;
  const std::vector<T> zero(C, T(0));
  for_planes(N, C, HW, [&](index_t p0, index_t p1) {
    f(out, x, zero.data(), scale.data(), shift.empty() ? zero.data() : shift.data(), relu, p0, p1, C, HW);
  });
}

// Test mode: out = x * scale + shift, dx = dout * scale.
template <class T>
std::vector<T> running_scale(const T* gamma, const T* running_var, double eps, index_t C) {
  std::vector<T> s(C);
  for (index_t c = 0; c < C; ++c) s[c] = T(double(gamma[c]) / std::sqrt(double(running_var[c]) + eps));
  return s;
}

}  // namespace

template <class T>
void batchnorm_forward_train_cpu(T* out, T* mean, T* var, T* inv_std, const T* x, const T* gamma, const T* beta,
                                 double eps, index_t N, index_t C, index_t HW, bool relu) {
  const BnKernels<T>& k = kernels<T>();
  const BnBlocks bl(N, C, HW);
  std::vector<T> pivot(bl.nbn * C);
  std::vector<double> t(2 * bl.nbn * C);
  bl.run([&](index_t bn, index_t n0, index_t n1, index_t c0, index_t c1) {
    T* pv = pivot.data() + bn * C;
    double* tb = t.data() + 2 * bn * C;
    block_pivots(pv, x, n0, n1, c0, c1, C, HW);
    k.block_moments(x, pv, n0, n1, c0, c1, C, HW, tb + 2 * c0);
    const double nb = double(n1 - n0) * double(HW);
    for (index_t c = c0; c < c1; ++c) {
      const double d = tb[2 * c] / nb;
      if (pivot_ok(d, tb[2 * c + 1] / nb - d * d)) continue;
      pv[c] = T(double(pv[c]) + d);  // once more, about this block's mean
      k.block_moments(x, pv, n0, n1, c, c + 1, C, HW, tb + 2 * c);
    }
  });
  // out = (x - m) * s + h with m the mean rounded to T: x - m is exact for x
  // near the mean, so a large mean does not cost the output its low bits.
  std::vector<T> m(C), s(C), h(C);
  const double M = double(N) * double(HW);
  // Merging the blocks' (count, mean, M2) in order; the weights depend only on
  // the counts: 1/nb, nb/n and na*nb/n for block bn, with n = na + nb.
  std::vector<double> w(3 * bl.nbn);
  for (index_t bn = 0, na = 0; bn < bl.nbn; ++bn) {
    const double nb = double(bl.rows(bn)) * double(HW), n = double(na) + nb;
    w[3 * bn] = 1.0 / nb, w[3 * bn + 1] = nb / n, w[3 * bn + 2] = double(na) * nb / n;
    na += bl.rows(bn) * HW;
  }
  for (index_t c = 0; c < C; ++c) {
    double mu = 0, m2 = 0;
    for (index_t bn = 0; bn < bl.nbn; ++bn) {
      const double* tb = t.data() + 2 * (bn * C + c);
      const double d = tb[0] * w[3 * bn], mb = double(pivot[bn * C + c]) + d, delta = mb - mu;
      mu += delta * w[3 * bn + 1];
      m2 += (tb[1] - tb[0] * d) + delta * delta * w[3 * bn + 2];
    }
    const double v = m2 < 0 ? 0 : m2 / M;  // (a rounding below zero; NaN stays)
    const double is = 1.0 / std::sqrt(v + eps), sc = double(gamma[c]) * is;
    mean[c] = T(mu), var[c] = T(v), inv_std[c] = T(is);
    m[c] = T(mu), s[c] = T(sc), h[c] = T(double(beta[c]) - (mu - double(m[c])) * sc);
  }
  for_planes(N, C, HW, [&](index_t p0, index_t p1) {
    k.planes_affine(out, x, m.data(), s.data(), h.data(), relu, p0, p1, C, HW);
  });
}

template <class T>
void batchnorm_forward_test_cpu(T* out, const T* x, const T* gamma, const T* beta, const T* running_mean,
                                const T* running_var, double eps, index_t N, index_t C, index_t HW, bool relu) {
  const std::vector<T> scale = running_scale(gamma, running_var, eps, C);
  std::vector<T> shift(C);
  for (index_t c = 0; c < C; ++c) {
    const double s = double(gamma[c]) / std::sqrt(double(running_var[c]) + eps);
    shift[c] = T(double(beta[c]) - double(running_mean[c]) * s);
  }
  scale_planes(out, x, scale, shift, N, C, HW, relu);
}

// With xhat = (x - mean) * inv_std and M = N*HW:
//   dbeta = sum dout, dgamma = sum dout * xhat,
//   dx = gamma * inv_std * (dout - dbeta/M - xhat * dgamma/M).
template <class T>
void batchnorm_backward_train_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                  const T* mean, const T* inv_std, index_t N, index_t C, index_t HW) {
  const double M = double(N) * double(HW);
  std::vector<double> sg(C), sgx(C);
  grad_sums<T>(sg.data(), sgx.data(), nullptr, nullptr, dout, x, mean, N, C, HW);
  // dx = kd * dout + kx * (x - mean) + k0
  std::vector<T> kd(C), kx(C), k0(C);
  for (index_t c = 0; c < C; ++c) {
    const double is = inv_std[c], a = double(gamma[c]) * is;
    dbeta[c] = T(sg[c]);
    dgamma[c] = T(sgx[c] * is);
    kd[c] = T(a), kx[c] = T(-a * is * is * sgx[c] / M), k0[c] = T(-a * sg[c] / M);
  }
  const auto f = kernels<T>().planes_grad_input;
  for_planes(N, C, HW, [&](index_t p0, index_t p1) {
    f(dx, dout, x, mean, kd.data(), kx.data(), k0.data(), p0, p1, C, HW);
  });
}

template <class T>
void batchnorm_backward_test_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                 const T* running_mean, const T* running_var, double eps, index_t N, index_t C,
                                 index_t HW) {
  const std::vector<T> scale = running_scale(gamma, running_var, eps, C);
  std::vector<double> sg(C), sgx(C);
  grad_sums<T>(sg.data(), sgx.data(), dx, scale.data(), dout, x, running_mean, N, C, HW);
  for (index_t c = 0; c < C; ++c) {
    dbeta[c] = T(sg[c]);
    dgamma[c] = T(sgx[c] / std::sqrt(double(running_var[c]) + eps));
  }
}

template <class T>
void batchnorm_backward_test_input_cpu(T* dx, const T* dout, const T* gamma, const T* running_var, double eps,
                                       index_t N, index_t C, index_t HW) {
  scale_planes(dx, dout, running_scale(gamma, running_var, eps, C), {}, N, C, HW);
}

#define GRADVIS_INSTANTIATE(T)                                                                                    \
  template void batchnorm_forward_train_cpu<T>(T*, T*, T*, T*, const T*, const T*, const T*, double, index_t,    \
                                               index_t, index_t, bool);                                          \
  template void batchnorm_forward_test_cpu<T>(T*, const T*, const T*, const T*, const T*, const T*, double,      \
                                              index_t, index_t, index_t, bool);                                  \
  template void batchnorm_backward_train_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,    \
                                                index_t, index_t, index_t);                                      \
  template void batchnorm_backward_test_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,     \
                                               double, index_t, index_t, index_t);                               \
  template void batchnorm_backward_test_input_cpu<T>(T*, const T*, const T*, const T*, double, index_t, index_t, \
                                                     index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
