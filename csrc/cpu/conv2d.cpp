// conv2d: which algorithm runs a shape. The binding has checked the shape; here
// each entry point picks, in order:
//   direct         groups == C (F a multiple), or 2-16 channels per group: direct
//                  kernels vectorized along output rows, conv_depthwise.cpp
//   Winograd       float32 3x3 stride-1 layers where the cost model expects it to win
//                  (conv_winograd.cpp; forced or disabled by set_conv_algo)
//   implicit gemm  everything else (conv2d_implicit.cpp, packing in conv2d_pack.h);
//                  1x1 layers on small maps (7x7, 14x14 at batch 1) transposed, the
//                  positions in the tiles' rows and the filters in the vectors
// The input gradient of a stride-1 layer is the forward pass of dout with the
// flipped, transposed filters and "full" padding; strided layers and layers of
// few channels per group use gemm + col2im (conv2d_col2im.cpp).
// The choice is a function of the shape and the process-wide settings only, so
// equal calls give equal bits on any thread.
#include "ops/conv2d.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "cpu/conv2d_implicit.h"
#include "cpu/conv2d_pack.h"
#include "cpu/conv_amx.h"
#include "ops/affine.h"
#include "cpu/conv_depthwise.h"
#include "cpu/conv_epilogue.h"
#include "cpu/conv_winograd.h"
#include "cpu/gemm_kernels.h"
#include "cpu/simd.h"

namespace gradvis {
namespace {

// A 1x1 ungrouped layer with a stride above 1 (any padding; dilation does not
// matter for a 1x1 kernel).
inline bool is_strided_pointwise(const Conv2dShape& s) {
  return s.KH == 1 && s.KW == 1 && s.p.groups == 1 && (s.p.stride_h > 1 || s.p.stride_w > 1);
}

// Multiply-adds each thread should get at least: below it, a parallel region's
// start, barriers and split work cost more than the second core saves. Once 2^21,
// when the 3->32 first layer at 64x64, batch 1 (3.5M), was slower on 2 threads
// than on 1; with today's kernels (Intel Xeon, 2 threads) that layer runs its
// forward pass in 0.70x and its weight gradient in 0.60x the 1-thread time at
// 2^19, and no layer of 0.5-9.4M multiply-adds is slower on 2 threads.
constexpr double kConvGrain = double(1 << 19);

// The team for a convolution of this shape (one pass: N*F*OH*OW*C/groups*KH*KW
// multiply-adds).
// Depthwise layers have a grain of their own (conv_depthwise.cpp).
inline int conv_threads(const Conv2dShape& s) {
  if (conv_detail::is_direct_grouped(s)) return 1 << 30;
  const double macs = double(s.N) * double(s.F) * double(s.OH) * double(s.OW) * double(s.C / s.p.groups) *
                      double(s.KH) * double(s.KW);
  return grain_threads(macs, kConvGrain, index_t(1) << 30);
}

// out = conv(x, W) + b by Winograd (float32, eligible shapes the cost model picks)
// or the implicit gemm; `flipped` as in implicit_forward.
// act (or null): applied as each output tile is finished, its input kept in pre
// (Winograd: to each output plane afterwards).
template <class T>
void forward_any(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool flipped, bool relu,
                 const ConvAct* act = nullptr, T* pre = nullptr) {
  // A strided 1x1 layer reads only its output's grid of positions: copied once into
  // a dense (N, C, OH, OW) image, it runs as the 1x1 stride-1 layer on that image,
  // with its fuller, unpacked tiles. The implicit gemm's strided packing ran
  // ResNet-50's 256->512, 512->1024 and 1024->2048 downsampling layers 9-19%
  // slower at AVX-512 and 3-32% at AVX2 (AMD EPYC, 1 thread, copy included).
  // The tile unit has its own copy of the positions (conv_amx.cpp).
  if (!flipped && is_strided_pointwise(s) && !(sizeof(T) == 4 && amx_enabled() && conv_algo() != ConvAlgo::direct)) {
    const index_t planes = s.N * s.C, OHW = s.OH * s.OW;
    T* xs = scratch<T>(ScratchSlot::conv_amx_sub, std::size_t(planes * OHW));
    const auto& p = s.p;
    const SimdLevel level = cpu_level();
    parallel_for_nt(grain_threads(double(planes) * double(OHW), double(1 << 17), planes), planes, [&](index_t i) {
      for (index_t oh = 0; oh < s.OH; ++oh) {
        const index_t ih = oh * p.stride_h - p.pad_top;
        conv_detail::gather_row(xs + i * OHW + oh * s.OW, 1, ih >= 0 && ih < s.H ? x + (i * s.H + ih) * s.W : nullptr,
                                -p.pad_left, p.stride_w, s.W, s.OW, level);
      }
    });
    return forward_any(out, static_cast<const T*>(xs), w, b,
                       conv2d_shape(s.N, s.C, s.OH, s.OW, s.F, 1, 1, Conv2dParams{}), false, relu, act, pre);
  }
  if constexpr (sizeof(T) == 4) {
    if (const auto c = conv_detail::winograd_choice(s); c && act) {
      forward_any(out, x, w, b, s, flipped, false);  // the same Winograd call, then the activation
      const index_t planes = s.N * s.F, OHW = s.OH * s.OW;
      const double work = double(planes) * double(OHW) * (act->kind == ConvAct::silu ? 16.0 : 1.0);
      return parallel_for_nt(grain_threads(work, kConvGrain / 8, planes), planes, [&](index_t i) {
        conv_detail::apply_act(out + i * OHW, pre ? pre + i * OHW : nullptr, OHW, *act);
      });
    }
    if (const auto c = conv_detail::winograd_choice(s)) {
      return gemm_detail::with_ukernel<T>(
          [&](gemm_detail::ukernel_fn<T> kern, gemm_detail::ukernel_rows_fn<T>, auto MR, auto NR) {
            // At most 16 tiles (16x16 maps at batch 1): one-vector-wide gemm tiles.
            if (decltype(NR)::value == gemm_detail::kNR512_f32 && cpu_level() == SimdLevel::avx512 &&
                conv_detail::winograd_tiles(s, c.tm) <= gemm_detail::kNR512n_f32)
              return conv_detail::winograd_forward<gemm_detail::kMR512n, gemm_detail::kNR512n_f32>(
                  gemm_detail::ukernel_avx512_f32_narrow, c, out, x, w, b, s, flipped, relu);
            return conv_detail::winograd_forward<decltype(MR)::value, decltype(NR)::value>(kern, c, out, x, w, b,
                                                                                             s, flipped, relu);
          });
    }
  }
  conv_detail::implicit_forward(out, x, w, b, s, flipped, relu, act, pre);
}

// A 1x1 convolution of 1x1 maps at a batch of at most 4 (the squeeze-and-excitation
// layers of MobileNetV3, EfficientNet, RegNetY): a product of a few vectors with
// the (F, C) weights, which the gemm would compute in tiles of 32 columns with
// one used.
inline bool is_vector_product(const Conv2dShape& s) {
  const auto& p = s.p;
  return s.H == 1 && s.W == 1 && s.OH == 1 && s.OW == 1 && s.KH == 1 && s.KW == 1 && p.groups == 1 &&
         s.N <= kAffineFewRows && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

// out (N, F) = x (N, C) w^T + b, then relu or act (its input kept in pre).
template <class T>
void vector_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu,
                    const ConvAct* act = nullptr, T* pre = nullptr) {
  affine_rows_dot_cpu<T>(out, x, w, s.N, s.F, s.C);
  for (index_t n = 0; n < s.N; ++n) {
    T* o = out + n * s.F;
    if (b)
      for (index_t f = 0; f < s.F; ++f) o[f] += b[f];
    if (relu)
      for (index_t f = 0; f < s.F; ++f) o[f] = o[f] < T(0) ? T(0) : o[f];
    if (act) conv_detail::apply_act(o, pre ? pre + n * s.F : nullptr, s.F, *act);
  }
}

}  // namespace

template <class T>
void conv2d_forward_cpu(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu) {
  const TeamCap cap(conv_threads(s));
  if (is_vector_product(s)) return vector_forward(out, x, w, b, s, relu);
  if (conv_detail::is_direct_grouped(s) || conv_detail::glanes_forward_takes<T>(s))
    return conv_detail::depthwise_forward(out, x, w, b, s, relu);
  forward_any(out, x, w, b, s, false, relu);
}

template <class T>
void conv2d_forward_act_cpu(T* out, T* pre, const T* x, const T* w, const T* b, const Conv2dShape& s,
                            const ConvAct& act) {
  if (!pre && (act.kind == ConvAct::none || act.kind == ConvAct::relu))
    return conv2d_forward_cpu(out, x, w, b, s, act.kind == ConvAct::relu);
  const TeamCap cap(conv_threads(s));
  // A pre of a MiB or more (a SiLU's or HardSwish's input, kept for a backward
  // pass, which reads it long after this layer) goes around the caches: written
  // through them, each line was first read from memory, and the arrays evicted the
  // pass's own (EfficientNet-B0's 25 MB a pass; its forward + input gradient 2.4%
  // faster streamed).
  ConvAct a = act;
  a.stream_pre = pre && double(s.N) * double(s.F) * double(s.OH) * double(s.OW) * sizeof(T) >= double(1 << 20);
  if (is_vector_product(s)) return vector_forward(out, x, w, b, s, false, &a, pre);
  if (conv_detail::is_direct_grouped(s) || conv_detail::glanes_forward_takes<T>(s))
    return conv_detail::depthwise_forward(out, x, w, b, s, false, &a, pre);
  forward_any(out, x, w, b, s, false, false, &a, pre);
}

template <class T>
void conv2d_forward_add_cpu(T* out, const T* x, const T* w, const T* b, const T* res, const Conv2dShape& s,
                            bool relu) {
  if constexpr (sizeof(T) == 4) {
    // The tile unit's epilogue reads a reference in 32 x 32 blocks, short runs
    // from hundreds of rows: in a network pass (cold maps) that was slower than
    // one pass streaming the whole map after the convolution (ResNet-50's Add
    // 1.1-1.3x, Xeon with AMX). The same sum, in place.
    if (amx_enabled() && conv_algo() != ConvAlgo::direct) {
      conv2d_forward_cpu(out, x, w, b, s, false);
      return add_cpu(out, out, res, s.N * s.F * s.OH * s.OW, relu);
    }
  }
  ConvAct act;
  act.kind = relu ? ConvAct::add_relu : ConvAct::add;
  // (the kinds that read a reference never write through pre)
  conv2d_forward_act_cpu(out, const_cast<T*>(res), x, w, b, s, act);
}

namespace {

// act, ref: null, or the mask of conv2d_backward_input_act_cpu
template <class T>
void backward_input_any(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct* act, const T* ref) {
  const TeamCap cap(conv_threads(s));
  if (is_vector_product(s)) {  // dx (N, C) = dout (N, F) w (F, C), masked
    affine_rows_forward_cpu<T>(dx, dout, w, s.N, s.F, s.C);
    if (act) conv_detail::apply_act(dx, const_cast<T*>(ref), s.N * s.C, *act);
    return;
  }
  const auto& p = s.p;
  const index_t eh = p.dilation_h * (s.KH - 1), ew = p.dilation_w * (s.KW - 1);
  // Stride 1: dx is the convolution of dout with the flipped, transposed filters
  // and "full" padding (dilation*(K-1) - pad on each side), whose output is H x W:
  // the shape t of that forward pass.
  const bool full_pad_ok = p.stride_h == 1 && p.stride_w == 1 && p.pad_top <= eh && p.pad_bottom <= eh &&
                           p.pad_left <= ew && p.pad_right <= ew;
  Conv2dParams q = p;
  q.pad_top = eh - p.pad_top, q.pad_bottom = eh - p.pad_bottom;
  q.pad_left = ew - p.pad_left, q.pad_right = ew - p.pad_right;
  const Conv2dShape t = full_pad_ok ? conv2d_shape(s.N, s.F, s.OH, s.OW, s.C, s.KH, s.KW, q) : s;
  // The forward pass of the direct kernels with each group's filters transposed
  // and flipped, (C, Fg, KH, KW): wt[g,c][f][k] = w[g,f][c][KK-1-k], in a scratch
  // buffer (a fresh vector, past 128 KB, mapped and faulted in new pages each call).
  auto flipped_forward = [&]() {
    // (the lanes kernel lays the filters out flipped itself, where its blocks
    // hold one group)
    if (p.groups > 1 && conv_detail::glanes_flipped_takes<T>(t))
      return conv_detail::depthwise_forward(dx, dout, w, static_cast<const T*>(nullptr), t, false, act,
                                            const_cast<T*>(ref), true);
    const index_t Cg = s.C / p.groups, Fg = s.F / p.groups, KK = s.KH * s.KW;
    T* wt = scratch<T>(ScratchSlot::depthwise_flip, std::size_t(s.C * Fg * KK));
    // rows o = (gi Cg + c) Fg + f, split by group between threads (1024 channels
    // in groups of 32: 295K values, a third of the input gradient on one thread)
    const index_t rows = s.C * Fg;
    parallel_for_nt(grain_threads(double(rows) * double(KK), double(1 << 16), p.groups), p.groups, [&](index_t gi) {
      for (index_t c = 0; c < Cg; ++c)
        for (index_t f = 0; f < Fg; ++f) {
          const T* src = w + ((gi * Fg + f) * Cg + c) * KK;
          T* dst = wt + ((gi * Cg + c) * Fg + f) * KK;
          for (index_t k = 0; k < KK; ++k) dst[k] = src[KK - 1 - k];
        }
    });
    conv_detail::depthwise_forward(dx, dout, static_cast<const T*>(wt), static_cast<const T*>(nullptr), t, false,
                                   act, const_cast<T*>(ref));
  };
  // 2-16 channels per group: their own correlation kernel ran at half the
  // forward's speed or less (RegNetY's 440@7 groups of 8, 0.31 ms against the
  // forward's 0.10).
  if (conv_detail::is_few_channel_grouped(s) && full_pad_ok && conv_detail::is_direct_grouped(t))
    return flipped_forward();
  if (p.groups > 1 && full_pad_ok && conv_detail::glanes_forward_takes<T>(t)) return flipped_forward();
  // Depthwise at stride 1: 1.1-2.4x faster than the input-gradient kernels
  // (MobileNetV2's, EfficientNet-B0's and ConvNeXt-T's layers, 1 and 2 threads;
  // 7x7 at 14x14: 252 -> 108 us); with dilation those stayed ahead (0.9x).
  if (conv_detail::is_depthwise(s) && s.F == s.C && full_pad_ok && p.dilation_h == 1 && p.dilation_w == 1)
    return flipped_forward();
  // (groups of up to 32 channels, strided: the lanes kernel where it takes them)
  if (conv_detail::is_direct_grouped(s) || (p.groups > 1 && conv_detail::glanes_input_takes<T>(s)))
    return conv_detail::depthwise_backward_input(dx, dout, w, s, act, ref);
  // Few channels per group (the RGB layer) would leave most of the flipped gemm's
  // MR-row tiles empty: there gemm + col2im is cheaper.
  if (full_pad_ok && s.C / p.groups >= 16)
    return forward_any<T>(dx, dout, w, nullptr, t, true, false, act, const_cast<T*>(ref));
  if constexpr (sizeof(T) == 4)   // strided 1x1 layers on AMX tiles, where they take them
    if (conv_algo() != ConvAlgo::direct && conv_detail::amx_strided_input_gradient(dx, dout, w, s, act, ref)) return;
  const index_t CK = s.C * s.KH * s.KW;
  if (conv_detail::is_patch_conv(s) && CK >= 16 && conv_algo() != ConvAlgo::direct) {
    // The patches' gradients (N, C KH KW, OH, OW) as the input gradient of the
    // 1x1 layer F -> C KH KW on the output's grid, then put in place: the col2im
    // path's gemm ran 1.4-1.6x slower (ConvNeXt-T's 2x2 stride-2 layers, AVX-512
    // and AVX2, 1 thread).
    const index_t P = s.OH * s.OW, KK = s.KH * s.KW, planes = s.N * s.C;
    T* cols = scratch<T>(ScratchSlot::conv_amx_sub, std::size_t(s.N * CK * P));
    // patches that tile the whole image write every element
    const bool tiled = p.stride_h == s.KH && p.stride_w == s.KW && s.OH * s.KH == s.H && s.OW * s.KW == s.W;
    backward_input_any<T>(cols, dout, w, conv2d_shape(s.N, CK, s.OH, s.OW, s.F, 1, 1, Conv2dParams{}), nullptr,
                          nullptr);
    parallel_for_nt(grain_threads(double(planes) * double(s.H * s.W), double(1 << 17), planes), planes,
                    [&](index_t i) {
                      T* xp = dx + i * s.H * s.W;
                      const T* c = cols + i * KK * P;
                      if (!tiled) std::fill(xp, xp + s.H * s.W, T(0));
                      for (index_t kh = 0; kh < s.KH; ++kh)
                        for (index_t oh = 0; oh < s.OH; ++oh) {
                          T* __restrict xr = xp + (oh * p.stride_h + kh) * s.W;
                          const T* __restrict cr = c + kh * s.KW * P + oh * s.OW;
                          if (s.KW == 2 && p.stride_w == 2)
                            for (index_t ow = 0; ow < s.OW; ++ow) xr[2 * ow] = cr[ow], xr[2 * ow + 1] = cr[P + ow];
                          else
                            for (index_t ow = 0; ow < s.OW; ++ow)
                              for (index_t kw = 0; kw < s.KW; ++kw) xr[ow * p.stride_w + kw] = cr[kw * P + ow];
                        }
                      if (act) conv_detail::apply_act(xp, const_cast<T*>(ref) + i * s.H * s.W, s.H * s.W, *act);
                    });
    return;
  }
  conv_detail::col2im_backward_input(dx, dout, w, s, act, ref);
}

}  // namespace

template <class T>
void conv2d_backward_input_cpu(T* dx, const T* dout, const T* w, const Conv2dShape& s) {
  backward_input_any<T>(dx, dout, w, s, nullptr, nullptr);
}

template <class T>
void conv2d_backward_input_act_cpu(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct& act,
                                   const T* ref) {
  if (!conv_detail::is_mask(act.kind))
    throw std::invalid_argument("conv2d_backward_input_act_cpu: act must be one of the masks");
  backward_input_any<T>(dx, dout, w, s, &act, ref);
}

template <class T>
void conv2d_backward_weight_cpu(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  const TeamCap cap(conv_threads(s));
  if (conv_detail::is_direct_grouped(s) || conv_detail::glanes_weight_takes<T>(s))
    return conv_detail::depthwise_backward_weight(dw, db, dout, x, s);
  if constexpr (sizeof(T) == 4) {
    if (const auto c = conv_detail::winograd_choice(s, true))
      return conv_detail::winograd_backward_weight(c.tm, dw, db, dout, x, s);
  }
  conv_detail::implicit_backward_weight(dw, db, dout, x, s);
}

template void conv2d_forward_act_cpu<float>(float*, float*, const float*, const float*, const float*,
                                           const Conv2dShape&, const ConvAct&);
template void conv2d_forward_act_cpu<double>(double*, double*, const double*, const double*, const double*,
                                            const Conv2dShape&, const ConvAct&);
template void conv2d_forward_add_cpu<float>(float*, const float*, const float*, const float*, const float*,
                                           const Conv2dShape&, bool);
template void conv2d_forward_add_cpu<double>(double*, const double*, const double*, const double*, const double*,
                                            const Conv2dShape&, bool);
template void conv2d_forward_cpu<float>(float*, const float*, const float*, const float*, const Conv2dShape&, bool);
template void conv2d_forward_cpu<double>(double*, const double*, const double*, const double*, const Conv2dShape&,
                                     bool);
template void conv2d_backward_input_cpu<float>(float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_input_act_cpu<float>(float*, const float*, const float*, const Conv2dShape&,
                                                   const ConvAct&, const float*);
template void conv2d_backward_input_act_cpu<double>(double*, const double*, const double*, const Conv2dShape&,
                                                    const ConvAct&, const double*);
template void conv2d_backward_input_cpu<double>(double*, const double*, const double*, const Conv2dShape&);
template void conv2d_backward_weight_cpu<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void conv2d_backward_weight_cpu<double>(double*, double*, const double*, const double*, const Conv2dShape&);

}  // namespace gradvis
