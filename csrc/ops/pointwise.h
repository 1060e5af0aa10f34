// Smooth pointwise functions of transformer-era and mobile networks: GELU (the
// exact erf form and the tanh form; Hendrycks & Gimpel 2016, arXiv:1606.08415),
// erf, and the vectorized float32 sigmoid, SiLU and hard swish that the activation kernels
// use; and the per-channel broadcast multiply of a squeeze-and-excitation gate
// or a layer scale. float32 runs in SIMD lanes (AVX-512, AVX2 or baseline,
// chosen at run time); float64 calls the C library.
#pragma once

#include <cstdint>

#include "common.h"

namespace gradvis {

// All arrays are n contiguous elements of any shape.
// x * Phi(x), Phi the standard normal CDF; tanh_form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class T> void gelu_forward_cpu(T* out, const T* x, bool tanh_form, index_t n);
// dx = dout * d/dx gelu(x), from the input x.
template <class T> void gelu_backward_cpu(T* dx, const T* dout, const T* x, bool tanh_form, index_t n);
// erf(x); the backward: dx = dout * 2/sqrt(pi) exp(-x^2).
template <class T> void erf_forward_cpu(T* out, const T* x, index_t n);
template <class T> void erf_backward_cpu(T* dx, const T* dout, const T* x, index_t n);

// The float32 bodies of sigmoid_forward_cpu, silu_*_cpu and hardswish_*_cpu
// (ops/activation.h): serial over [0, n), callers split the work.
void sigmoid_forward_f32(float* out, const float* x, index_t n);
void silu_forward_f32(float* out, const float* x, index_t n);
void silu_backward_f32(float* dx, const float* dout, const float* x, index_t n);
void hardswish_forward_f32(float* out, const float* x, index_t n);
void hardswish_backward_f32(float* dx, const float* dout, const float* x, index_t n);
// o[i] = clamp(o[i], lo, hi) in place (NaN passes through; -0 stays -0), with
// pre[i] = o[i] before when pre is not null: a convolution's fused ReLU6 / clamp.
void clamp_inplace_f32(float* o, float* pre, index_t n, float lo, float hi);
// o[i] kept where ref[i] > 0 (mask_pos) or lo < ref[i] < hi (mask_range), else 0
// (NaN references give 0): the ReLU and clamp masks of a convolution's input gradient.
void mask_pos_f32(float* o, const float* ref, index_t n);
void mask_range_f32(float* o, const float* ref, index_t n, float lo, float hi);
// A ReLU's or clamp's backward mask kept as bits: element i of an array of n is
// bit i % 64 of bits[i / 64], set where y[i] > lo (and, when upper, y[i] < hi), the
// selections of mask_pos / mask_range (NaN gives 0); bits past n are 0. bits
// holds (n + 63) / 64 words. It is a 32nd of y's size (float32), so an input
// gradient that applies it reads far less than the activation's output.
template <class T>
void activation_mask_bits_cpu(std::uint64_t* bits, const T* y, index_t n, double lo, double hi, bool upper);
// o[i] kept where bit off + i of bits is set, else 0 (serial over [0, n)).
void mask_bits_f32(float* o, const std::uint64_t* bits, index_t off, index_t n);
// dx[i] = dout[i] where bit i of bits is set, else 0: relu_backward /
// clamp_backward from the activation's mask as bits.
template <class T>
void activation_mask_backward_cpu(T* dx, const T* dout, const std::uint64_t* bits, index_t n);
// o[i] = o[i] + ref[i], then v < 0 ? 0 : v when relu (NaN passes): add_cpu's
// values, a convolution's fused residual sum.
void add_ref_f32(float* o, const float* ref, index_t n, bool relu);

// x and out are (N, C, HW); s is (N, C) when per_sample, else (C,):
// out[n, c, :] = x[n, c, :] * s[n, c] (or s[c]).
template <class T>
void channel_scale_forward_cpu(T* out, const T* x, const T* s, index_t N, index_t C, index_t HW, bool per_sample);
// dx = dout * s (broadcast, as the forward; skipped when dx is null) and
// ds = sum over HW (and over N when not per_sample) of dout * x (skipped when ds
// is null). Sums over N are added in image order: no dependence on the threads.
template <class T>
void channel_scale_backward_cpu(T* dx, T* ds, const T* dout, const T* x, const T* s, index_t N, index_t C,
                                index_t HW, bool per_sample);

// The gradient of an (N, C, HW) map made in one pass from its terms: g = base *
// s[n, c] (s (N, C) when per_sample, else (C,); null: base itself) + pool[n, c] /
// HW, then + add[i] (a gradient from another reader), each term optional (null:
// absent); then, with act, times the activation's derivative at pre, or (act
// none, bits not null) kept where the mask's bit is set (activation_mask_backward's
// ReLU / clamp mask as bits), else 0. What a squeeze-and-excitation block's map
// receives from its gate's Mul and its global average pool, through the
// activation before them, or a residual block's output from its two readers,
// through its ReLU. The values of channel_scale_backward's dx,
// global_avg_pool_backward, add_cpu and silu_backward / hardswish_backward /
// activation_mask_backward in turn, bit for bit, without their arrays in between.
enum class GradAct { none = 0, silu = 1, hardswish = 2 };
template <class T>
void channel_grad_cpu(T* out, const T* base, const T* s, const T* pool, const T* add, const T* pre,
                      const std::uint64_t* bits, index_t N, index_t C, index_t HW, bool per_sample, GradAct act);

// out = a + b, n elements (a residual connection); with relu, max(a + b, 0) as
// relu_forward gives it (NaN and -0 kept), in the same pass.
template <class T> void add_cpu(T* out, const T* a, const T* b, index_t n, bool relu = false);

}  // namespace gradvis
