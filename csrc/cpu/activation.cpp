// Element-wise activations: memory-speed loops, chunked over the threads only
// when the array is large enough to pay for the fork/join.
#include "ops/activation.h"

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
    for (index_t i = b; i < e; ++i) {
      const T v = x[i];
      out[i] = v < lo ? lo : (v > hi ? hi : v);
    }
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

#define GRADVIS_INSTANTIATE(T)                                                          \
  template void relu_forward_cpu<T>(T*, const T*, index_t);                             \
  template void relu_backward_cpu<T>(T*, const T*, const T*, index_t);                  \
  template void clamp_forward_cpu<T>(T*, const T*, T, T, index_t);                      \
  template void clamp_backward_cpu<T>(T*, const T*, const T*, T, T, index_t);           \
  template void leaky_relu_forward_cpu<T>(T*, const T*, T, index_t);                    \
  template void leaky_relu_backward_cpu<T>(T*, const T*, const T*, T, index_t);
GRADVIS_INSTANTIATE(float)
GRADVIS_INSTANTIATE(double)
#undef GRADVIS_INSTANTIATE

}  // namespace gradvis
