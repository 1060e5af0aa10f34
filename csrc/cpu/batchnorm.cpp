// Spatial batch norm, parallel over channels: each channel's statistics and
// gradient sums belong to one thread, so there is no reduction across threads.
// Sums run in double (float inputs included); the variance is two-pass.
#include "ops/batchnorm.h"

#include <cmath>

namespace gradvis {

namespace {

constexpr index_t kSerialWork = 1 << 14;

template <class F>
void for_channels(index_t C, index_t work_per_channel, F&& f) {
  if (C * work_per_channel < kSerialWork) {
    for (index_t c = 0; c < C; ++c) f(c);
  } else {
    parallel_for(C, f);
  }
}

template <class T>
inline double sum_row(const T* p, index_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t i = 0; i < n; ++i) s += p[i];
  return s;
}

template <class T>
inline double sum_sq_dev_row(const T* p, double mean, index_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t i = 0; i < n; ++i) {
    const double d = double(p[i]) - mean;
    s += d * d;
  }
  return s;
}

// out = x * scale + shift over channel c.
template <class T>
inline void affine_channel(T* out, const T* x, T scale, T shift, index_t N, index_t C, index_t HW, index_t c) {
  for (index_t n = 0; n < N; ++n) {
    const index_t off = (n * C + c) * HW;
    const T* p = x + off;
    T* o = out + off;
    for (index_t i = 0; i < HW; ++i) o[i] = p[i] * scale + shift;
  }
}

}  // namespace

template <class T>
void batchnorm_forward_train_cpu(T* out, T* mean, T* var, T* inv_std, const T* x, const T* gamma, const T* beta,
                                 double eps, index_t N, index_t C, index_t HW) {
  const double M = double(N) * double(HW);
  for_channels(C, N * HW, [&](index_t c) {
    double s = 0;
    for (index_t n = 0; n < N; ++n) s += sum_row(x + (n * C + c) * HW, HW);
    const double mu = s / M;
    double ss = 0;
    for (index_t n = 0; n < N; ++n) ss += sum_sq_dev_row(x + (n * C + c) * HW, mu, HW);
    const double v = ss / M;
    const double is = 1.0 / std::sqrt(v + eps);
    mean[c] = T(mu);
    var[c] = T(v);
    inv_std[c] = T(is);
    const double scale = double(gamma[c]) * is;
    affine_channel(out, x, T(scale), T(double(beta[c]) - mu * scale), N, C, HW, c);
  });
}

template <class T>
void batchnorm_forward_test_cpu(T* out, const T* x, const T* gamma, const T* beta, const T* running_mean,
                                const T* running_var, double eps, index_t N, index_t C, index_t HW) {
  for_channels(C, N * HW, [&](index_t c) {
    const double scale = double(gamma[c]) / std::sqrt(double(running_var[c]) + eps);
    affine_channel(out, x, T(scale), T(double(beta[c]) - double(running_mean[c]) * scale), N, C, HW, c);
  });
}

// With xhat = (x - mean) * inv_std and M = N*HW:
//   dbeta = sum dout, dgamma = sum dout * xhat,
//   dx = gamma * inv_std * (dout - dbeta/M - xhat * dgamma/M).
template <class T>
void batchnorm_backward_train_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                  const T* mean, const T* inv_std, index_t N, index_t C, index_t HW) {
  const double M = double(N) * double(HW);
  for_channels(C, N * HW, [&](index_t c) {
    const double mu = mean[c], is = inv_std[c];
    double sg = 0, sgx = 0;
    for (index_t n = 0; n < N; ++n) {
      const index_t off = (n * C + c) * HW;
      const T* g = dout + off;
      const T* p = x + off;
      double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (index_t i = 0; i < HW; ++i) {
        a += g[i];
        b += double(g[i]) * (double(p[i]) - mu);
      }
      sg += a;
      sgx += b;
    }
    dbeta[c] = T(sg);
    dgamma[c] = T(sgx * is);
    // dx = k * dout + k2 * (x - mean) + k0
    const double k = double(gamma[c]) * is;
    const T kd = T(k), kx = T(-k * is * is * sgx / M), k0 = T(-k * sg / M), muT = T(mu);
    for (index_t n = 0; n < N; ++n) {
      const index_t off = (n * C + c) * HW;
      const T* g = dout + off;
      const T* p = x + off;
      T* d = dx + off;
      for (index_t i = 0; i < HW; ++i) d[i] = kd * g[i] + kx * (p[i] - muT) + k0;
    }
  });
}

template <class T>
void batchnorm_backward_test_cpu(T* dx, T* dgamma, T* dbeta, const T* dout, const T* x, const T* gamma,
                                 const T* running_mean, const T* running_var, double eps, index_t N, index_t C,
                                 index_t HW) {
  for_channels(C, N * HW, [&](index_t c) {
    const double is = 1.0 / std::sqrt(double(running_var[c]) + eps);
    const double mu = running_mean[c];
    const T k = T(double(gamma[c]) * is);
    double sg = 0, sgx = 0;
    for (index_t n = 0; n < N; ++n) {
      const index_t off = (n * C + c) * HW;
      const T* g = dout + off;
      const T* p = x + off;
      T* d = dx + off;
      double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
      for (index_t i = 0; i < HW; ++i) {
        a += g[i];
        b += double(g[i]) * (double(p[i]) - mu);
        d[i] = k * g[i];
      }
      sg += a;
      sgx += b;
    }
    dbeta[c] = T(sg);
    dgamma[c] = T(sgx * is);
  });
}

#define GRADVIS_INSTANTIATE(T)                                                                                  \
  template void batchnorm_forward_train_cpu<T>(T*, T*, T*, T*, const T*, const T*, const T*, double, index_t,  \
                                               index_t, index_t);                                              \
  template void batchnorm_forward_test_cpu<T>(T*, const T*, const T*, const T*, const T*, const T*, double,    \
                                              index_t, index_t, index_t);                                      \
  template void batchnorm_backward_train_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,  \
                                                index_t, index_t, index_t);                                    \
  template void batchnorm_backward_test_cpu<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,   \
                                               double, index_t, index_t, index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
