// Element-wise activations: memory-speed loops, chunked over the threads only
// when the array is large enough to pay for the fork/join.
#include "ops/activation.h"

#include <cmath>
#include <type_traits>

#include "ops/pointwise.h"

namespace gradvis {

namespace {

constexpr index_t kSerialElems = 1 << 16;

template <class F>
void for_chunks(index_t n, F&& f) {
  if (n < kSerialElems)
    f(index_t(0), n, 0);
  else
    parallel_chunks(n, f);
}

// v clamped to [lo, hi]; a NaN falls through to v.
template <class T>
inline T clamp_nan(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// 1 / (1 + exp(-v)): exp overflows to inf for v < -88 (float), giving 0, not NaN.
template <class T>
inline T sigmoid1(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

}  // namespace

// NaN inputs propagate through every forward (as in PyTorch); the comparisons
// are written so that a NaN falls through to x.
template <class T>
void relu_forward_cpu(T* out, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) out[i] = x[i] < T(0) ? T(0) : x[i];
  });
}

template <class T>
void relu_backward_cpu(T* dx, const T* dout, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    // dout is loaded unconditionally: a conditional load keeps the loop
    // scalar and branchy (about 20x slower on random signs).
    for (index_t i = b; i < e; ++i) {
      const T g = dout[i];
      dx[i] = x[i] > T(0) ? g : T(0);
    }
  });
}

template <class T>
void clamp_forward_cpu(T* out, const T* x, T lo, T hi, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) out[i] = clamp_nan(x[i], lo, hi);
  });
}

template <class T>
void clamp_backward_cpu(T* dx, const T* dout, const T* x, T lo, T hi, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) {
      const T g = dout[i], v = x[i];
      dx[i] = ((v > lo) & (v < hi)) ? g : T(0);
    }
  });
}

template <class T>
void leaky_relu_forward_cpu(T* out, const T* x, T alpha, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) out[i] = x[i] > T(0) ? x[i] : x[i] * alpha;
  });
}

template <class T>
void leaky_relu_backward_cpu(T* dx, const T* dout, const T* x, T alpha, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) {
      const T g = dout[i];
      dx[i] = x[i] > T(0) ? g : g * alpha;
    }
  });
}

// float32 sigmoid, SiLU and hard swish run in SIMD lanes (ops/pointwise.h).
template <class T>
void sigmoid_forward_cpu(T* out, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    if constexpr (std::is_same<T, float>::value)
      sigmoid_forward_f32(out + b, x + b, e - b);
    else
      for (index_t i = b; i < e; ++i) out[i] = sigmoid1(x[i]);
  });
}

template <class T>
void sigmoid_backward_cpu(T* dx, const T* dout, const T* y, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) dx[i] = dout[i] * (T(1) - y[i]) * y[i];
  });
}

template <class T>
void tanh_forward_cpu(T* out, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) out[i] = std::tanh(x[i]);
  });
}

template <class T>
void tanh_backward_cpu(T* dx, const T* dout, const T* y, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) dx[i] = dout[i] * (T(1) - y[i] * y[i]);
  });
}

template <class T>
void hardsigmoid_forward_cpu(T* out, const T* x, T alpha, T beta, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) out[i] = clamp_nan(alpha * x[i] + beta, T(0), T(1));
  });
}

template <class T>
void hardsigmoid_backward_cpu(T* dx, const T* dout, const T* x, T alpha, T beta, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    for (index_t i = b; i < e; ++i) {
      const T g = dout[i], v = alpha * x[i] + beta;
      dx[i] = ((v > T(0)) & (v < T(1))) ? g * alpha : T(0);
    }
  });
}

// Written as PyTorch writes it, so float32 results agree to the last bit.
template <class T>
void hardswish_forward_cpu(T* out, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    if constexpr (std::is_same<T, float>::value)
      hardswish_forward_f32(out + b, x + b, e - b);
    else
      for (index_t i = b; i < e; ++i) out[i] = x[i] * clamp_nan(x[i] + T(3), T(0), T(6)) / T(6);
  });
}

template <class T>
void hardswish_backward_cpu(T* dx, const T* dout, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    if constexpr (std::is_same<T, float>::value) {
      hardswish_backward_f32(dx + b, dout + b, x + b, e - b);
    } else {
      for (index_t i = b; i < e; ++i) {
        const T g = dout[i], v = x[i];
        dx[i] = v < T(-3) ? T(0) : (v <= T(3) ? g * (v / T(3) + T(0.5)) : g);
      }
    }
  });
}

template <class T>
void silu_forward_cpu(T* out, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    if constexpr (std::is_same<T, float>::value)
      silu_forward_f32(out + b, x + b, e - b);
    else
      for (index_t i = b; i < e; ++i) out[i] = x[i] / (T(1) + std::exp(-x[i]));
  });
}

template <class T>
void silu_backward_cpu(T* dx, const T* dout, const T* x, index_t n) {
  for_chunks(n, [&](index_t b, index_t e, int) {
    if constexpr (std::is_same<T, float>::value) {
      silu_backward_f32(dx + b, dout + b, x + b, e - b);
    } else {
      for (index_t i = b; i < e; ++i) {
        const T s = sigmoid1(x[i]);
        dx[i] = dout[i] * s * (T(1) + x[i] * (T(1) - s));
      }
    }
  });
}

#define GRADVIS_INSTANTIATE(T)                                                          \
  template void relu_forward_cpu<T>(T*, const T*, index_t);                             \
  template void relu_backward_cpu<T>(T*, const T*, const T*, index_t);                  \
  template void clamp_forward_cpu<T>(T*, const T*, T, T, index_t);                      \
  template void clamp_backward_cpu<T>(T*, const T*, const T*, T, T, index_t);           \
  template void leaky_relu_forward_cpu<T>(T*, const T*, T, index_t);                    \
  template void leaky_relu_backward_cpu<T>(T*, const T*, const T*, T, index_t);        \
  template void sigmoid_forward_cpu<T>(T*, const T*, index_t);                          \
  template void sigmoid_backward_cpu<T>(T*, const T*, const T*, index_t);               \
  template void tanh_forward_cpu<T>(T*, const T*, index_t);                             \
  template void tanh_backward_cpu<T>(T*, const T*, const T*, index_t);                  \
  template void hardsigmoid_forward_cpu<T>(T*, const T*, T, T, index_t);                \
  template void hardsigmoid_backward_cpu<T>(T*, const T*, const T*, T, T, index_t);     \
  template void hardswish_forward_cpu<T>(T*, const T*, index_t);                        \
  template void hardswish_backward_cpu<T>(T*, const T*, const T*, index_t);             \
  template void silu_forward_cpu<T>(T*, const T*, index_t);                             \
  template void silu_backward_cpu<T>(T*, const T*, const T*, index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
