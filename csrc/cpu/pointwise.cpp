// Pointwise kernels: GELU, erf, the float32 sigmoid and SiLU bodies, the
// per-channel broadcast multiply and the residual add. Every op splits its
// array into runs of whole 16-element blocks, one per thread, and uses a
// thread only for each `grain` elements: small maps stay on the calling thread.
#include "ops/pointwise.h"
#include "ops/activation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/simd.h"

namespace gradvis {

namespace {

// One SIMD level's float32 loops (pointwise_kernels.inc).
struct PwKernels {
  void (*gelu_f)(float*, const float*, index_t);
  void (*gelu_b)(float*, const float*, const float*, index_t);
  void (*gelu_tanh_f)(float*, const float*, index_t);
  void (*gelu_tanh_b)(float*, const float*, const float*, index_t);
  void (*erf_f)(float*, const float*, index_t);
  void (*erf_b)(float*, const float*, const float*, index_t);
  void (*sigmoid_f)(float*, const float*, index_t);
  void (*silu_f)(float*, const float*, index_t);
  void (*silu_b)(float*, const float*, const float*, index_t);
  void (*hardswish_f)(float*, const float*, index_t);
  void (*hardswish_b)(float*, const float*, const float*, index_t);
  void (*clamp_pre)(float*, float*, index_t, float, float);
  void (*mask_pos)(float*, const float*, index_t, float, float);
  void (*mask_range)(float*, const float*, index_t, float, float);
  void (*add_ref)(float*, const float*, index_t);
  void (*add_ref_relu)(float*, const float*, index_t);
  void (*bits_pos)(std::uint64_t*, const float*, index_t, float, float);
  void (*bits_range)(std::uint64_t*, const float*, index_t, float, float);
  void (*apply_bits)(float*, const float*, const std::uint64_t*, index_t, index_t);
};

}  // namespace

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GV_PW_WIDE 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,prefer-vector-width=512")
#define GV_PW_VEC_BYTES 64
namespace pw_avx512 {
#include "cpu/pointwise_kernels.inc"
}
#undef GV_PW_VEC_BYTES
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define GV_PW_VEC_BYTES 32
namespace pw_avx2 {
#include "cpu/pointwise_kernels.inc"
}
#undef GV_PW_VEC_BYTES
#pragma GCC pop_options
#endif
#define GV_PW_VEC_BYTES 16
namespace pw_base {
#include "cpu/pointwise_kernels.inc"
}
#undef GV_PW_VEC_BYTES
#pragma GCC diagnostic pop

namespace {

const PwKernels& kernels() {
#ifdef GV_PW_WIDE
  switch (cpu_level()) {
    case SimdLevel::avx512:
      return pw_avx512::kKernels;
    case SimdLevel::avx2:
      return pw_avx2::kKernels;
    default:
      break;
  }
#endif
  return pw_base::kKernels;
}

// Elements per thread: a transcendental op costs about 0.3-0.8 ns an element per
// thread, a copy-speed one 0.02-0.1 ns; a parallel region costs 1-3 us.
constexpr double kMathGrain = 16384;
constexpr double kCopyGrain = 32768;

// f(b, e) over runs of [0, n) that start at multiples of `block` (16; 64 for
// the mask bits, whose threads then write whole words), one per thread.
template <class F>
void split(index_t n, double grain, F&& f, index_t block = 16) {
  const index_t blocks = (n + block - 1) / block;
  const int nt = grain_threads(double(n), grain, blocks);
  if (nt <= 1) {
    if (n > 0) f(index_t(0), n);
    return;
  }
  team_run(nt, [&](index_t t, index_t nth) {
    const index_t b = std::min(n, blocks * t / nth * block), e = std::min(n, blocks * (t + 1) / nth * block);
    if (b < e) f(b, e);
  });
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;
constexpr double kTanhK = 0.79788456080286535588;   // sqrt(2 / pi)
constexpr double kTanhC = 0.044715;

}  // namespace

// float32: the vector loops; float64: the C library, one element at a time.
template <>
void gelu_forward_cpu<float>(float* out, const float* x, bool tanh_form, index_t n) {
  const auto f = tanh_form ? kernels().gelu_tanh_f : kernels().gelu_f;
  split(n, kMathGrain, [&](index_t b, index_t e) { f(out + b, x + b, e - b); });
}
template <>
void gelu_forward_cpu<double>(double* out, const double* x, bool tanh_form, index_t n) {
  split(n, kMathGrain, [&](index_t b, index_t e) {
    if (tanh_form) {
      for (index_t i = b; i < e; ++i) {   // 0.5 v (1 + tanh u) = v sigmoid(2u)
        const double v = x[i];
        out[i] = v / (1.0 + std::exp(-2.0 * kTanhK * (v + kTanhC * v * v * v)));
      }
    } else {
      for (index_t i = b; i < e; ++i) out[i] = x[i] * (0.5 * std::erfc(-x[i] * kInvSqrt2));
    }
  });
}

template <>
void gelu_backward_cpu<float>(float* dx, const float* dout, const float* x, bool tanh_form, index_t n) {
  const auto f = tanh_form ? kernels().gelu_tanh_b : kernels().gelu_b;
  split(n, kMathGrain, [&](index_t b, index_t e) { f(dx + b, dout + b, x + b, e - b); });
}
template <>
void gelu_backward_cpu<double>(double* dx, const double* dout, const double* x, bool tanh_form, index_t n) {
  split(n, kMathGrain, [&](index_t b, index_t e) {
    if (tanh_form) {
      for (index_t i = b; i < e; ++i) {   // s + 2 v s (1 - s) u', s = sigmoid(2u)
        const double v = x[i], u2 = 2.0 * kTanhK * (v + kTanhC * v * v * v);
        const double s = 1.0 / (1.0 + std::exp(-u2)), s_neg = 1.0 / (1.0 + std::exp(u2));
        dx[i] = dout[i] * (s + v * s * s_neg * 2.0 * kTanhK * (1.0 + 3.0 * kTanhC * v * v));
      }
    } else {
      for (index_t i = b; i < e; ++i) {
        const double v = x[i];
        dx[i] = dout[i] * (0.5 * std::erfc(-v * kInvSqrt2) + v * kInvSqrt2Pi * std::exp(-0.5 * v * v));
      }
    }
  });
}

template <>
void erf_forward_cpu<float>(float* out, const float* x, index_t n) {
  const auto f = kernels().erf_f;
  split(n, kMathGrain, [&](index_t b, index_t e) { f(out + b, x + b, e - b); });
}
template <>
void erf_forward_cpu<double>(double* out, const double* x, index_t n) {
  split(n, kMathGrain, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) out[i] = std::erf(x[i]);
  });
}

template <>
void erf_backward_cpu<float>(float* dx, const float* dout, const float* x, index_t n) {
  const auto f = kernels().erf_b;
  split(n, kMathGrain, [&](index_t b, index_t e) { f(dx + b, dout + b, x + b, e - b); });
}
template <>
void erf_backward_cpu<double>(double* dx, const double* dout, const double* x, index_t n) {
  split(n, kMathGrain, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) dx[i] = dout[i] * (kTwoOverSqrtPi * std::exp(-x[i] * x[i]));
  });
}

void sigmoid_forward_f32(float* out, const float* x, index_t n) { kernels().sigmoid_f(out, x, n); }
void silu_forward_f32(float* out, const float* x, index_t n) { kernels().silu_f(out, x, n); }
void silu_backward_f32(float* dx, const float* dout, const float* x, index_t n) {
  kernels().silu_b(dx, dout, x, n);
}
void hardswish_forward_f32(float* out, const float* x, index_t n) { kernels().hardswish_f(out, x, n); }
void clamp_inplace_f32(float* o, float* pre, index_t n, float lo, float hi) { kernels().clamp_pre(o, pre, n, lo, hi); }
void mask_pos_f32(float* o, const float* ref, index_t n) { kernels().mask_pos(o, ref, n, 0.f, 0.f); }
void mask_range_f32(float* o, const float* ref, index_t n, float lo, float hi) {
  kernels().mask_range(o, ref, n, lo, hi);
}
void add_ref_f32(float* o, const float* ref, index_t n, bool relu) {
  (relu ? kernels().add_ref_relu : kernels().add_ref)(o, ref, n);
}
void mask_bits_f32(float* o, const std::uint64_t* bits, index_t off, index_t n) {
  kernels().apply_bits(o, o, bits, off, n);
}

template <class T>
void activation_mask_backward_cpu(T* dx, const T* dout, const std::uint64_t* bits, index_t n) {
  split(n, kCopyGrain, [&](index_t b, index_t e) {
    if constexpr (sizeof(T) == 4) {
      kernels().apply_bits(dx + b, dout + b, bits, b, e - b);
    } else {
      for (index_t i = b; i < e; ++i) dx[i] = (bits[i >> 6] >> (i & 63)) & 1 ? dout[i] : T(0);
    }
  }, 64);
}
template void activation_mask_backward_cpu<float>(float*, const float*, const std::uint64_t*, index_t);
template void activation_mask_backward_cpu<double>(double*, const double*, const std::uint64_t*, index_t);

template <class T>
void activation_mask_bits_cpu(std::uint64_t* bits, const T* y, index_t n, double lo, double hi, bool upper) {
  split(n, kCopyGrain, [&](index_t b, index_t e) {   // words b / 64 .. (e + 63) / 64
    if constexpr (sizeof(T) == 4) {
      (upper ? kernels().bits_range : kernels().bits_pos)(bits + b / 64, y + b, e - b, float(lo), float(hi));
    } else {
      for (index_t w = b / 64; w < (e + 63) / 64; ++w) {
        std::uint64_t word = 0;
        for (index_t i = w * 64, j = 0; i < std::min(e, (w + 1) * 64); ++i, ++j)
          if (y[i] > T(lo) && (!upper || y[i] < T(hi))) word |= std::uint64_t(1) << j;
        bits[w] = word;
      }
    }
  }, 64);
}
template void activation_mask_bits_cpu<float>(std::uint64_t*, const float*, index_t, double, double, bool);
template void activation_mask_bits_cpu<double>(std::uint64_t*, const double*, index_t, double, double, bool);

void hardswish_backward_f32(float* dx, const float* dout, const float* x, index_t n) {
  kernels().hardswish_b(dx, dout, x, n);
}

namespace {

// sum of a[i] * b[i], in 16 lanes of T and then in double.
template <class T>
double dot(const T* a, const T* b, index_t n) {
  T lanes[16] = {};
  index_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) lanes[j] += a[i + j] * b[i + j];
  double s = 0;
  for (int j = 0; j < 16; ++j) s += double(lanes[j]);
  for (; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// dot(a, b, n), writing d[i] = a[i] * k on the way.
template <class T>
double dot_scale(T* d, const T* a, const T* b, T k, index_t n) {
  T lanes[16] = {};
  index_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) {
      lanes[j] += a[i + j] * b[i + j];
      d[i + j] = a[i + j] * k;
    }
  double s = 0;
  for (int j = 0; j < 16; ++j) s += double(lanes[j]);
  for (; i < n; ++i) {
    s += double(a[i]) * double(b[i]);
    d[i] = a[i] * k;
  }
  return s;
}

// f(p0, p1) over runs of the N*C planes of HW elements each.
template <class F>
void for_planes(index_t planes, index_t HW, F&& f) {
  const int nt = grain_threads(double(planes) * double(HW), kCopyGrain, planes);
  if (nt <= 1) return f(index_t(0), planes);
  team_run(nt, [&](index_t t, index_t nth) {
    const index_t b = planes * t / nth, e = planes * (t + 1) / nth;
    if (b < e) f(b, e);
  });
}

}  // namespace

template <class T>
void channel_scale_forward_cpu(T* out, const T* x, const T* s, index_t N, index_t C, index_t HW, bool per_sample) {
  if (HW == 1 && !per_sample) {
    // one value a plane (a gate folded into 1x1 weights, (F, C, 1, 1)): rows of C
    // times s, vectorized, where a plane at a time was a division and a multiply
    // per value (a twenty-fifth of EfficientNet-B0's forward pass)
    for_planes(N, C, [&](index_t n0, index_t n1) {
      for (index_t n = n0; n < n1; ++n) {
        T* __restrict o = out + n * C;
        const T* __restrict xp = x + n * C;
        for (index_t c = 0; c < C; ++c) o[c] = xp[c] * s[c];
      }
    });
    return;
  }
  for_planes(N * C, HW, [&](index_t p0, index_t p1) {
    for (index_t p = p0, c = p0 % C; p < p1; ++p, c = c + 1 == C ? 0 : c + 1) {
      const T k = s[per_sample ? p : c];
      T* o = out + p * HW;
      const T* xp = x + p * HW;
      for (index_t i = 0; i < HW; ++i) o[i] = xp[i] * k;
    }
  });
}

template <class T>
void channel_scale_backward_cpu(T* dx, T* ds, const T* dout, const T* x, const T* s, index_t N, index_t C,
                                index_t HW, bool per_sample) {
  // Per-plane sums; over images they are added below in image order.
  std::vector<double> sums(ds && !per_sample ? std::size_t(N * C) : 0);
  for_planes(N * C, HW, [&](index_t p0, index_t p1) {
    for (index_t p = p0; p < p1; ++p) {
      const T* g = dout + p * HW;
      const T k = s[per_sample ? p : p % C];
      if (dx && !ds) {
        T* d = dx + p * HW;
        for (index_t i = 0; i < HW; ++i) d[i] = g[i] * k;
      }
      if (ds) {   // with dx: one pass over dout
        const double v = dx ? dot_scale(dx + p * HW, g, x + p * HW, k, HW) : dot(g, x + p * HW, HW);
        if (per_sample)
          ds[p] = T(v);
        else
          sums[std::size_t(p)] = v;
      }
    }
  });
  if (ds && !per_sample) {
    for (index_t c = 0; c < C; ++c) {
      double v = 0;
      for (index_t n = 0; n < N; ++n) v += sums[std::size_t(n * C + c)];
      ds[c] = T(v);
    }
  }
}

template <class T>
void channel_grad_cpu(T* out, const T* base, const T* s, const T* pool, const T* add, const T* pre,
                      const std::uint64_t* bits, index_t N, index_t C, index_t HW, bool per_sample, GradAct act) {
  for_planes(N * C, HW, [&](index_t p0, index_t p1) {
    constexpr index_t kChunk = 1024;   // the sum before the activation's derivative, in L1
    T tmp[kChunk];
    for (index_t p = p0; p < p1; ++p) {
      const T k = s ? s[per_sample ? p : p % C] : T(0);
      const T v = pool ? static_cast<T>(double(pool[p]) / double(HW)) : T(0);   // global_avg_pool_backward's
      for (index_t i0 = 0; i0 < HW; i0 += kChunk) {
        const index_t len = std::min(kChunk, HW - i0), off = p * HW + i0;
        T* d = act == GradAct::none && !bits ? out + off : tmp;
        if (base) {   // each sum in a pass of its own: the terms rounded before it, as add_cpu reads them
          const T* b = base + off;
          if (s)
            for (index_t i = 0; i < len; ++i) d[i] = b[i] * k;
          else
            std::copy(b, b + len, d);
          if (pool)
            for (index_t i = 0; i < len; ++i) d[i] = d[i] + v;
        } else {
          std::fill(d, d + len, v);
        }
        if (add) {
          const T* a = add + off;
          for (index_t i = 0; i < len; ++i) d[i] = d[i] + a[i];
        }
        if (act == GradAct::silu)
          silu_backward_cpu<T>(out + off, tmp, pre + off, len);
        else if (act == GradAct::hardswish)
          hardswish_backward_cpu<T>(out + off, tmp, pre + off, len);
        else if (bits) {   // activation_mask_backward's selection
          if constexpr (sizeof(T) == 4) {
            kernels().apply_bits(out + off, tmp, bits, off, len);
          } else {
            for (index_t i = 0; i < len; ++i) {
              const index_t j = off + i;
              out[j] = (bits[j >> 6] >> (j & 63)) & 1 ? tmp[i] : T(0);
            }
          }
        }
      }
    }
  });
}

template <class T>
void add_cpu(T* out, const T* a, const T* b, index_t n, bool relu) {
  split(n, kCopyGrain, [&](index_t lo, index_t hi) {
    if (relu) {
      for (index_t i = lo; i < hi; ++i) {   // relu_forward's comparison: NaN and -0 fall through
        const T v = a[i] + b[i];
        out[i] = v < T(0) ? T(0) : v;
      }
    } else {
      for (index_t i = lo; i < hi; ++i) out[i] = a[i] + b[i];
    }
  });
}

#define GRADVIS_INSTANTIATE(T)                                                                          \
  template void channel_scale_forward_cpu<T>(T*, const T*, const T*, index_t, index_t, index_t, bool); \
  template void channel_scale_backward_cpu<T>(T*, T*, const T*, const T*, const T*, index_t, index_t,  \
                                              index_t, bool);                                          \
  template void channel_grad_cpu<T>(T*, const T*, const T*, const T*, const T*, const T*, const std::uint64_t*, \
                                    index_t, index_t, index_t, bool, GradAct);                                \
  template void add_cpu<T>(T*, const T*, const T*, index_t, bool);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
