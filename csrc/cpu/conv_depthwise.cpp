// Depthwise convolution, direct: each (image, input channel) plane is independent,
// so forward and backward-input run parallel over planes with no sharing, and
// backward-weight runs parallel over channels (each channel's filters are summed
// by one thread, in a fixed order, so results do not depend on the thread count).
// The plane is first copied into a zero-padded, column-phase-split buffer that
// stays in cache (conv_depthwise_body.inc); the kernels then run along output rows
// in whole vectors, summing every tap in registers before one write.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "cpu/conv2d_pack.h"
#include "cpu/conv_depthwise.h"
#include "cpu/conv_epilogue.h"
#include "cpu/gemm_kernels.h"
#include "cpu/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GV_DW_SSE 1
#endif

namespace gradvis {
namespace conv_detail {

bool dw_use_flat(const Conv2dShape& s, int lanes) {
  if (s.p.stride_h != 1 || s.p.stride_w != 1) return false;
  const index_t L = lanes, Lp = s.OW + (s.KW - 1) * s.p.dilation_w;
  // the plane kernels' blocks: kDwRows rows (depthwise), 2 (groups of cg > 1)
  const index_t R = s.C == s.p.groups ? kDwRows : 2;
  const index_t rows = (s.OH + R - 1) / R * R * ((s.OW + L - 1) / L);
  const index_t flat = (s.OH * Lp + L - 1) / L;
  return 5 * flat < 4 * rows;
}

bool dw_use_flat_dw(const Conv2dShape& s) {
  if (s.p.stride_h != 1 || s.p.stride_w != 1) return false;
  const index_t OWr = (s.OW + kDwLanes - 1) / kDwLanes * kDwLanes;
  const index_t Lp = s.OW + (s.KW - 1) * s.p.dilation_w;
  return 4 * (OWr - s.OW) > OWr && Lp < OWr;   // more than a quarter of each row's lanes empty
}

bool dw_use_lanes(const Conv2dShape& s, int lanes) {
  return s.C == s.p.groups && s.F == s.C && s.OH * s.OW <= 256 && 2 * s.C >= lanes && lanes > 1;
}

// Whether a group's filters fill the lanes kernels' blocks: a multiple of the
// lanes (the block in one group), or half of them (two groups a block). Groups of
// 2-16 channels and filters, or of up to 32 in whole vectors of filters
// (ResNeXt-50's last stage, 32 a group: the gemm path ran them at 0.17-0.56x
// PyTorch, 1024@7 at batch 1 and 16).
bool dw_glanes_fits(const Conv2dShape& s, int lanes) {
  const index_t g = s.p.groups, cg = s.C / g, m = s.F / g;
  if (lanes < 8 || g < 2 || cg < 2) return false;
  if (m % lanes == 0) return cg <= 32 && m <= 32;
  return 2 * m == lanes && is_few_channel_grouped(s);
}

bool dw_use_glanes(const Conv2dShape& s, int lanes) {
  const index_t m = s.F / s.p.groups, P = s.OH * s.OW;
  if (!dw_glanes_fits(s, lanes)) return false;
  // Measured against the row kernels (Intel Xeon, AVX-512, 1 thread, 3x3): groups
  // of 16 filters 240 -> 189 us at 14x14 (ResNeXt-50's 512 channels, batch 1);
  // groups of 8 (pairs) 63 -> 38 us at 7x7 (RegNetY's 440), 58 -> 53 at 14x14 at
  // batch 1 but 2-6% slower at batch 16, even at 28x28, where the row kernels
  // fill 14 or 28 of 16 lanes.
  if (m % lanes == 0) return P <= 256;
  return P <= 100 || (s.N == 1 && P <= 256);
}

bool dw_use_glanes_dw(const Conv2dShape& s, int lanes) {
  // Against the row kernels, which keep each filter's sums in memory (1 thread):
  // 440@7 151 -> 45 us, 512@14 690 -> 222, RegNetY's 48@56 groups of 8 276 -> 175
  // (batch 16 4.7-5.0 -> 2.8-3.0 ms).
  return dw_glanes_fits(s, lanes) && s.KH == s.KW && (s.KH == 1 || s.KH == 3) && s.OH * s.OW <= 3136;
}

bool dw_use_glanes_dx(const Conv2dShape& s, int lanes) {
  const index_t g = s.p.groups, cg = s.C / g, m = s.F / g;
  if (lanes < 8 || g < 2 || s.p.dilation_h != 1 || s.p.dilation_w != 1 || m > 32) return false;
  return cg % lanes == 0 ? cg <= 32 : 2 * cg == lanes && is_few_channel_grouped(s);
}

// AVX2 float's forward pass also puts the channels in the lanes on maps of up to
// 784 outputs (28x28 at batch 1) for strided and 5x5-or-larger layers, whose plane
// kernels broadcast a weight for each multiply-add there (16 registers hold too
// few). 1 thread, alone: 144@56 stride 2 0.146 -> 0.114 ms, 72@56 stride 2 0.077
// -> 0.060, 5x5 144@56 stride 2 0.201 -> 0.166, 5x5 240@28 0.184 -> 0.169; 3x3 at
// stride 1 within 4% either way; at AVX-512 mostly slower (4-20%). Interleaved passes:
// MobileNetV2 8.79 -> 8.73 ms, MobileNetV3-L 7.87 -> 7.82; the same bits.
bool dw_use_lanes_fwd(const Conv2dShape& s, int lanes, bool avx2_float) {
  if (dw_use_lanes(s, lanes)) return true;
  return avx2_float && s.C == s.p.groups && s.F == s.C && s.OH * s.OW <= 784 && 2 * s.C >= lanes &&
         (s.p.stride_h > 1 || s.p.stride_w > 1 || s.KH * s.KW >= 25);
}

bool dw_use_lanes_dw(const Conv2dShape& s, int lanes) {
  return dw_use_lanes(s, lanes) && s.C >= 2 * lanes;
}

DwPlan dw_plan(const Conv2dShape& s, std::vector<index_t>& taps, bool flat) {
  const auto& p = s.p;
  DwPlan g;
  g.H = s.H, g.W = s.W, g.OH = s.OH, g.OW = s.OW, g.KH = s.KH, g.KW = s.KW;
  g.sh = p.stride_h, g.sw = p.stride_w, g.pt = p.pad_top, g.pl = p.pad_left, g.dh = p.dilation_h,
  g.dw = p.dilation_w, g.m = s.F / p.groups, g.cg = s.C / p.groups;
  g.OWr = flat ? s.OW : (s.OW + kDwLanes - 1) / kDwLanes * kDwLanes;
  g.Hp = ((s.OH + kDwRows - 1) / kDwRows * kDwRows - 1) * g.sh + (s.KH - 1) * g.dh + 1;
  g.Lp = g.OWr + (s.KW - 1) * g.dw / g.sw;
  g.PS = g.sw * g.Hp * g.Lp;
  g.padT = (s.KH - 1) * g.dh / g.sh, g.padL = (s.KW - 1) * g.dw / g.sw;
  g.Dh = g.padT + (g.pt + s.H - 1) / g.sh + 1;
  g.Dl = g.padL + (g.pl + s.W - 1) / g.sw + 1 + 2 * kDwLanes;
  taps.resize(std::size_t(s.KH * s.KW));
  for (index_t kh = 0; kh < s.KH; ++kh)
    for (index_t kw = 0; kw < s.KW; ++kw)
      taps[std::size_t(kh * s.KW + kw)] = ((kw * g.dw % g.sw) * g.Hp + kh * g.dh) * g.Lp + kw * g.dw / g.sw;
  g.taps = taps.data();
  g.flat = flat;
  return g;
}

namespace {

// The baseline path: SSE2 on x86-64 (multiply and add: no FMA there), else scalar.
#ifdef GV_DW_SSE
#define GV_TARGET
struct V128f {
  using T = float;
  using reg = __m128;
  static constexpr int W = 4;
  static inline reg zero() { return _mm_setzero_ps(); }
  static inline reg load(const float* p) { return _mm_loadu_ps(p); }
  static inline void store(float* p, reg r) { _mm_storeu_ps(p, r); }
  static inline reg set1(float x) { return _mm_set1_ps(x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
  static inline reg add(reg a, reg b) { return _mm_add_ps(a, b); }
  static inline reg max(reg a, reg b) { return _mm_max_ps(a, b); }
  static inline reg min(reg a, reg b) { return _mm_min_ps(a, b); }
  static inline void store_n(float* p, reg r, int n) {
    alignas(16) float t[4];
    _mm_store_ps(t, r);
    for (int i = 0; i < n; ++i) p[i] = t[i];
  }
  static inline float hsum(reg r) {
    alignas(16) float t[4];
    _mm_store_ps(t, r);
    return ((t[0] + t[1]) + t[2]) + t[3];
  }
};
struct V128d {
  using T = double;
  using reg = __m128d;
  static constexpr int W = 2;
  static inline reg zero() { return _mm_setzero_pd(); }
  static inline reg load(const double* p) { return _mm_loadu_pd(p); }
  static inline void store(double* p, reg r) { _mm_storeu_pd(p, r); }
  static inline reg set1(double x) { return _mm_set1_pd(x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm_add_pd(_mm_mul_pd(a, b), c); }
  static inline reg add(reg a, reg b) { return _mm_add_pd(a, b); }
  static inline reg max(reg a, reg b) { return _mm_max_pd(a, b); }
  static inline reg min(reg a, reg b) { return _mm_min_pd(a, b); }
  static inline void store_n(double* p, reg r, int n) {
    if (n > 0) _mm_storel_pd(p, r);
  }
  static inline double hsum(reg r) {
    alignas(16) double t[2];
    _mm_store_pd(t, r);
    return t[0] + t[1];
  }
};
template <class T>
using VBase = std::conditional_t<sizeof(T) == 4, V128f, V128d>;
#else
#define GV_TARGET
template <class T_>
struct V1 {
  using T = T_;
  using reg = T;
  static constexpr int W = 1;
  static inline reg zero() { return T(0); }
  static inline reg load(const T* p) { return *p; }
  static inline void store(T* p, reg r) { *p = r; }
  static inline reg set1(T x) { return x; }
  static inline reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static inline reg add(reg a, reg b) { return a + b; }
  static inline reg max(reg a, reg b) { return a > b ? a : b; }
  static inline reg min(reg a, reg b) { return a < b ? a : b; }
  static inline T hsum(reg r) { return r; }
  static inline void store_n(T* p, reg r, int n) {
    if (n > 0) *p = r;
  }
};
template <class T>
using VBase = V1<T>;
#endif

#include "cpu/conv_depthwise_body.inc"
#undef GV_TARGET

template <class T>
DwKernels<T> pick_kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (cpu_level() == SimdLevel::avx512) return dw_kernels_avx512<T>();
  if (cpu_level() == SimdLevel::avx2) return dw_kernels_avx2<T>();
#endif
  return dw_kernels_scalar<T>();
}

template <class T>
const DwKernels<T>& kernels() {
  static const DwKernels<T> k = pick_kernels<T>();
  return k;
}

// Each thread gets at least this many multiply-adds (about 10 us of work on one
// core): a parallel region costs a few microseconds, more when another process
// holds a core.
constexpr double kDwGrain = 1 << 18;

// The forward call whose prepared planes a thread's depthwise_prep scratch holds
// (dw_prepare_x's padded, dw_fwd_lanes's padded), and for the lanes kernel the
// block of channels whose weights its depthwise_w scratch holds: each call takes
// a new number, so what a call wrote is trusted only within that call.
struct PrepTag {
  std::uint64_t call = 0;
  const void* buf = nullptr;
  const void* wbuf = nullptr;
  index_t block = -1;
};
thread_local PrepTag tls_prep;
std::atomic<std::uint64_t> prep_calls{0};

}  // namespace

template <class T>
DwKernels<T> dw_kernels_scalar() {
  using V = VBase<T>;
  return {&dw_fwd_plane<V>, &dw_dx_plane<V>, &dw_dw_channel<V>, V::W, &dw_fwd_plane_flat<V>,
          &dw_fwd_lanes<V>, &dw_dx_lanes<V>, &dw_dw_lanes<V>, &dw_fwd_glanes<V>,
          &dw_dw_glanes<V>, &dw_dx_glanes<V>, &dw_ring_pack<V>, &dw_ring_row<V>,
          &dw_ring_rows2<V>};
}
template DwKernels<float> dw_kernels_scalar<float>();
template DwKernels<double> dw_kernels_scalar<double>();

template <class T>
const DwKernels<T>& dw_kernels() {
  return kernels<T>();
}
template const DwKernels<float>& dw_kernels<float>();
template const DwKernels<double>& dw_kernels<double>();

// out (N,F,OH,OW), x (N,C,H,W), w (F,cg,KH,KW), b (F) or null; G = groups, cg =
// C/G, m = F/G: item i = (n, group) reads cg input planes and writes m output planes
template <class T>
void depthwise_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu,
                       const ConvAct* act, T* pre, bool flipped) {
  if (flipped && !glanes_flipped_takes<T>(s))
    throw std::logic_error("depthwise_forward: flipped weights need the lanes kernel's one-group blocks");
  if (s.N == 0 || s.OH == 0 || s.OW == 0) return;
  // ReLU, and a clamp whose input is not kept, applied by the kernels' stores (a
  // pass over each plane after them was 8% of MobileNetV2's 144@56 layer)
  DwClamp<T> clamp;
  if (relu) clamp.kind = DwClamp<T>::low;
  if (act && act->kind == ConvAct::clamp && !pre) {
    clamp = {DwClamp<T>::range, T(act->lo), T(act->hi)};
    act = nullptr;
  }
  const auto& k = kernels<T>();
  const bool lanes = dw_use_lanes_fwd(s, k.lanes, sizeof(T) == 4 && k.lanes == 8),
             flat = !lanes && dw_use_flat(s, k.lanes);
  std::vector<index_t> taps;
  const DwPlan g = dw_plan(s, taps, flat);
  const index_t G = s.p.groups, HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW, items = s.N * G;
  const double work = double(s.N) * double(s.F) * double(OHW) * double(g.cg * KK + 1);
  ErrorTrap trap;  // the scratch allocation may throw; not out of the OpenMP region
  const std::uint64_t call = ++prep_calls;
  if (dw_use_glanes(s, k.lanes)) {
    // items: (block of k.lanes filters, image), the images of a block in turn (the
    // block's weights laid out once per thread)
    const int fv = dw_glanes_fv(g, k.lanes);
    const index_t L = k.lanes * fv, blocks = (s.F + L - 1) / L, nitems = s.N * blocks;
    parallel_for_nt(grain_threads(work, kDwGrain, nitems), nitems, [&](index_t i) { trap.run([&] {
      const index_t blk = i / s.N, n = i % s.N;
      T* ibuf = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(dw_glanes_ibuf(g, k.lanes)));
      T* obuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(OHW * L));
      T* wbuf = scratch<T>(ScratchSlot::depthwise_w, std::size_t((g.cg * KK + 1) * L));
      const bool same = tls_prep.call == call && tls_prep.buf == ibuf && tls_prep.wbuf == wbuf;
      const bool have_w = same && tls_prep.block == blk;
      tls_prep = {call, ibuf, wbuf, blk};
      T* on = out + n * s.F * OHW;
      k.fwd_glanes(on, x + n * s.C * HW, w, b, blk * L, s.F, g, clamp, ibuf, obuf, wbuf, have_w, same, flipped, fv);
      if (act) {
        const index_t f0 = blk * L, nf = std::min(L, s.F - f0);
        apply_act(on + f0 * OHW, pre ? pre + n * s.F * OHW + f0 * OHW : nullptr, nf * OHW, *act);
      }
    }); });
    return trap.rethrow();
  }
  if (lanes) {
    // items: (block of k.lanes channels, image), the images of a block in turn, so
    // that a thread lays out a block's weights in the lanes once for all of them
    // (per item, that cost 7% of a batch-16 7x7 layer at 7x7)
    const index_t L = k.lanes, blocks = (s.C + L - 1) / L, nitems = s.N * blocks;
    const std::size_t ib = std::size_t(dw_lanes_hq(g) * dw_lanes_wq(g) * L);
    // half the grain: 7x7 layers of MobileNet (960 channels, 0.08 ms) gain from a second thread
    parallel_for_nt(grain_threads(work, kDwGrain / 2, nitems), nitems, [&](index_t i) { trap.run([&] {
      const index_t blk = i / s.N, n = i % s.N, c0 = blk * L, nc = std::min(L, s.C - c0);
      T* ibuf = scratch<T>(ScratchSlot::depthwise_prep, ib);
      T* obuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(OHW * L));
      T* wbuf = scratch<T>(ScratchSlot::depthwise_w, std::size_t((KK + 1) * L));
      const bool same = tls_prep.call == call && tls_prep.buf == ibuf && tls_prep.wbuf == wbuf;
      const bool have_w = same && tls_prep.block == blk;
      tls_prep = {call, ibuf, wbuf, blk};
      T* o = out + (n * s.C + c0) * OHW;
      k.fwd_lanes(o, x + (n * s.C + c0) * HW, w + c0 * KK, b ? b + c0 : nullptr, nc, g, clamp, ibuf, obuf, wbuf,
                  have_w, same);
      if (act) apply_act(o, pre ? pre + (o - out) : nullptr, nc * OHW, *act);
    }); });
    return trap.rethrow();
  }
  parallel_for_nt(grain_threads(work, kDwGrain, items), items, [&](index_t i) { trap.run([&] {
    const index_t gi = i % G;
    T* o = out + i * g.m * OHW;
    const T* xi = x + i * g.cg * HW;
    const T* wi = w + gi * g.m * g.cg * KK;
    const T* bi = b ? b + gi * g.m : nullptr;
    if (flat) {
      T* prep = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(dw_flat_prep_size(g)));
      T* tmp = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(dw_flat_tmp_size(g)));
      k.fwd_flat(o, xi, wi, bi, g, clamp, prep, tmp);
    } else {
      T* prep = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(g.cg * g.PS));
      // the zeros around x are in place where this thread's last item was this call's
      const bool padded = tls_prep.call == call && tls_prep.buf == prep;
      tls_prep = {call, prep, nullptr, -1};
      k.fwd_plane(o, xi, wi, bi, g, clamp, prep, padded);
    }
    if (act) apply_act(out + i * g.m * OHW, pre ? pre + i * g.m * OHW : nullptr, g.m * OHW, *act);
  }); });
  trap.rethrow();
}

// dx (N,C,H,W) from dout (N,F,OH,OW) and w (F,cg,KH,KW)
template <class T>
void depthwise_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s, const ConvAct* act,
                              const T* ref) {
  const index_t G = s.p.groups, HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW, items = s.N * G;
  if (s.OH == 0 || s.OW == 0) {
    std::fill(dx, dx + s.N * s.C * HW, T(0));
    return;
  }
  std::vector<index_t> taps;
  const DwPlan g = dw_plan(s, taps);
  const auto& k = kernels<T>();
  const std::size_t dprep_n = std::size_t(g.m * g.Dh * g.Dl), ntaps = std::size_t(g.m * KK);
  const double work = double(s.N) * double(s.F) * double(OHW) * double(g.cg * KK) + double(s.N * s.C * HW);
  ErrorTrap trap;
  // items: (image, block of k.lanes channels), as the forward; on 7x7 outputs only
  // (at 14x14, stride 1, the read-modify-write per tap lost to the row kernels)
  if (dw_use_lanes(s, k.lanes) && s.OH * s.OW <= 64) {
    const index_t L = k.lanes, blocks = (s.C + L - 1) / L, nitems = s.N * blocks;
    const std::size_t gb = std::size_t(dw_lanes_hq(g) * dw_lanes_wq(g) * L);
    parallel_for_nt(grain_threads(work, kDwGrain / 2, nitems), nitems, [&](index_t i) { trap.run([&] {
      const index_t n = i / blocks, c0 = (i % blocks) * L, nc = std::min(L, s.C - c0);
      T* gbuf = scratch<T>(ScratchSlot::depthwise_prep, gb);
      T* dbuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(OHW * L));
      T* wbuf = scratch<T>(ScratchSlot::depthwise_w, std::size_t(KK * L));
      k.dx_lanes(dx + (n * s.C + c0) * HW, dout + (n * s.C + c0) * OHW, w + c0 * KK, nc, g, gbuf, dbuf, wbuf);
      if (act) mask_inplace(dx + (n * s.C + c0) * HW, ref + (n * s.C + c0) * HW, nc * HW, *act);
    }); });
    return trap.rethrow();
  }
  if (dw_use_glanes_dx(s, k.lanes)) {
    // items: (block of k.lanes input channels, image), the images of a block in
    // turn (the block's weights laid out once per thread: per item, a third of
    // 1024 at 14 -> 7 in groups of 32 at batch 16)
    const index_t L = k.lanes, blocks = (s.C + L - 1) / L, nitems = s.N * blocks;
    const std::uint64_t call = ++prep_calls;
    const DwDxPad pd = dw_dx_pad(g);
    parallel_for_nt(grain_threads(work, kDwGrain, nitems), nitems, [&](index_t i) { trap.run([&] {
      const index_t blk = i / s.N, n = i % s.N, c0 = blk * L, nc = std::min(L, s.C - c0);
      T* obuf = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(HW * L));
      T* dbuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(2 * g.m * pd.rows * pd.cols));
      T* wbuf = scratch<T>(ScratchSlot::depthwise_w, std::size_t(g.m * KK * L));
      const bool have_w = tls_prep.call == call && tls_prep.wbuf == wbuf && tls_prep.block == blk;
      tls_prep = {call, nullptr, wbuf, blk};
      k.dx_glanes(dx + n * s.C * HW, dout + n * s.F * OHW, w, c0, s.C, g, obuf, dbuf, wbuf, have_w);
      if (act) mask_inplace(dx + (n * s.C + c0) * HW, ref + (n * s.C + c0) * HW, nc * HW, *act);
    }); });
    return trap.rethrow();
  }
  parallel_for_nt(grain_threads(work, kDwGrain, items), items, [&](index_t i) { trap.run([&] {
    const index_t gi = i % G;
    T* dprep = scratch<T>(ScratchSlot::depthwise_prep, dprep_n);
    index_t* toff = scratch<index_t>(ScratchSlot::depthwise_taps, ntaps);
    T* tw = scratch<T>(ScratchSlot::depthwise_w, ntaps);
    T* row = scratch<T>(ScratchSlot::depthwise_row, std::size_t(8 * (g.Dl + 2 * kDwLanes)));
    k.dx_plane(dx + i * g.cg * HW, dout + i * g.m * OHW, w + gi * g.m * g.cg * KK, g, dprep, toff, tw, row);
    if (act) mask_inplace(dx + i * g.cg * HW, ref + i * g.cg * HW, g.cg * HW, *act);
  }); });
  trap.rethrow();
}

// dw (F,cg,KH,KW) and db (F) or null, from dout (N,F,OH,OW) and x (N,C,H,W):
// parallel over groups, each summed over the images by one thread
template <class T>
void depthwise_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s) {
  const index_t G = s.p.groups, HW = s.H * s.W, OHW = s.OH * s.OW, KK = s.KH * s.KW;
  if (s.N == 0 || OHW == 0) {
    std::fill(dw, dw + s.F * (s.C / G) * KK, T(0));
    if (db) std::fill(db, db + s.F, T(0));
    return;
  }
  const auto& k = kernels<T>();
  ErrorTrap trap;
  if (dw_use_lanes_dw(s, k.lanes)) {   // items: blocks of k.lanes channels, each over all images
    std::vector<index_t> taps;
    const DwPlan g = dw_plan(s, taps);
    const index_t L = k.lanes, blocks = (s.C + L - 1) / L;
    const double work = double(s.N) * double(s.F) * double(OHW) * double(KK + 2);
    parallel_for_nt(grain_threads(work, kDwGrain / 2, blocks), blocks, [&](index_t bi) { trap.run([&] {
      const index_t c0 = bi * L, nc = std::min(L, s.C - c0);
      T* ibuf = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(dw_lanes_hq(g) * dw_lanes_wq(g) * L));
      T* dbuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(OHW * L));
      T* tbuf = scratch<T>(ScratchSlot::depthwise_row, std::size_t(HW * L));
      T* acc = scratch<T>(ScratchSlot::depthwise_w, std::size_t((KK + 1) * L));
      k.dw_lanes(dw + c0 * KK, db ? db + c0 : nullptr, x + c0 * HW, s.C * HW, dout + c0 * OHW, s.F * OHW, s.N, nc,
                 g, ibuf, dbuf, tbuf, acc);
    }); });
    return trap.rethrow();
  }
  if (dw_use_glanes_dw(s, k.lanes)) {
    // items: (block of k.lanes filters, part); with fewer than 8 blocks each block's
    // sums go in two parts (the images' halves, or of one image its rows' halves),
    // added in that order at the end: a second thread has work at 3 blocks
    // (RegNetY's 48 channels), and the split depends on the shape only
    std::vector<index_t> taps;
    const DwPlan g = dw_plan(s, taps);
    const index_t L = k.lanes, blocks = (s.F + L - 1) / L, CK = g.cg * KK, an = (CK + 1) * L;
    const index_t parts = blocks < 8 && (s.N > 1 || s.OH > 1) ? 2 : 1, items = blocks * parts;
    T* sums = scratch<T>(ScratchSlot::depthwise_flip, std::size_t(items * an));
    const double work = double(s.N) * double(s.F) * double(OHW) * double(CK + 2);
    parallel_for_nt(grain_threads(work, kDwGrain, items), items, [&](index_t i) { trap.run([&] {
      const index_t bi = i / parts, part = i % parts;
      index_t n0 = 0, n1 = s.N, oh0 = 0, oh1 = s.OH;
      if (parts == 2 && s.N > 1) (part == 0 ? n1 : n0) = s.N / 2;
      if (parts == 2 && s.N == 1) (part == 0 ? oh1 : oh0) = s.OH / 2;
      T* ibuf = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(dw_glanes_ibuf(g, k.lanes)));
      T* dbuf = scratch<T>(ScratchSlot::depthwise_dy, std::size_t(OHW * L));
      k.dw_glanes(sums + i * an, x, s.C * HW, dout, s.F * OHW, n0, n1, oh0, oh1, bi * L, s.F, g, ibuf, dbuf);
    }); });
    trap.rethrow();
    // each block's parts added (first + second), then its (tap, filter) sums
    // transposed to dw's rows (element by element, strided, that was a fifth of
    // 1024@7's weight gradient in groups of 32)
    for (index_t bi = 0; bi < blocks; ++bi) {
      T* a = sums + bi * parts * an;
      if (parts == 2)
        for (index_t t = 0; t < an; ++t) a[t] += a[an + t];
      const index_t f0 = bi * L, nf = std::min(L, s.F - f0);
      transpose_block(dw + f0 * CK, CK, a, L, CK, nf);
      if (db) std::copy(a + CK * L, a + CK * L + nf, db + f0);
    }
    return;
  }
  std::vector<index_t> taps;
  const DwPlan g = dw_plan(s, taps, dw_use_flat_dw(s));
  const std::size_t dy_n = std::size_t(g.flat ? 2 * dw_flat_dw_half(g) : g.OH * g.OWr),
                    acc_n = std::size_t(g.m * (g.cg * KK + 1) * kDwLanes);
  const double work = double(s.N) * double(s.F) * double(OHW) * double(g.cg * KK + 2);
  const std::uint64_t call = ++prep_calls;
  parallel_for_nt(grain_threads(work, kDwGrain, G), G, [&](index_t gi) { trap.run([&] {
    T* prep = scratch<T>(ScratchSlot::depthwise_prep, std::size_t(g.cg * (g.flat ? dw_flat_dw_plane(g) : g.PS)));
    T* dy = scratch<T>(ScratchSlot::depthwise_dy, dy_n * std::size_t(dw_dw_planes(g)));
    T* accv = scratch<T>(ScratchSlot::depthwise_w, acc_n);
    // the zeros around x are in place where this thread's last group was this call's
    const bool padded = tls_prep.call == call && tls_prep.buf == prep;
    tls_prep = {call, prep, nullptr, -1};
    k.dw_channel(dw + gi * g.m * g.cg * KK, db ? db + gi * g.m : nullptr, x + gi * g.cg * HW, s.C * HW,
                 dout + gi * g.m * OHW, s.F * OHW, s.N, g, prep, dy, accv, padded);
  }); });
  trap.rethrow();
}

template <class T>
bool glanes_forward_takes(const Conv2dShape& s) {
  return dw_use_glanes(s, kernels<T>().lanes);
}
template <class T>
bool glanes_weight_takes(const Conv2dShape& s) {
  return dw_use_glanes_dw(s, kernels<T>().lanes);
}
template <class T>
bool glanes_flipped_takes(const Conv2dShape& s) {
  const int lanes = kernels<T>().lanes;
  return dw_use_glanes(s, lanes) && (s.F / s.p.groups) % lanes == 0;
}
template bool glanes_flipped_takes<float>(const Conv2dShape&);
template bool glanes_flipped_takes<double>(const Conv2dShape&);
template <class T>
bool glanes_input_takes(const Conv2dShape& s) {
  return dw_use_glanes_dx(s, kernels<T>().lanes);
}
template bool glanes_input_takes<float>(const Conv2dShape&);
template bool glanes_input_takes<double>(const Conv2dShape&);
template bool glanes_forward_takes<float>(const Conv2dShape&);
template bool glanes_forward_takes<double>(const Conv2dShape&);
template bool glanes_weight_takes<float>(const Conv2dShape&);
template bool glanes_weight_takes<double>(const Conv2dShape&);

template void depthwise_forward<float>(float*, const float*, const float*, const float*, const Conv2dShape&, bool,
                                       const ConvAct*, float*, bool);
template void depthwise_forward<double>(double*, const double*, const double*, const double*, const Conv2dShape&,
                                        bool, const ConvAct*, double*, bool);
template void depthwise_backward_input<float>(float*, const float*, const float*, const Conv2dShape&,
                                              const ConvAct*, const float*);
template void depthwise_backward_input<double>(double*, const double*, const double*, const Conv2dShape&,
                                               const ConvAct*, const double*);
template void depthwise_backward_weight<float>(float*, float*, const float*, const float*, const Conv2dShape&);
template void depthwise_backward_weight<double>(double*, double*, const double*, const double*,
                                                const Conv2dShape&);

}  // namespace conv_detail
}  // namespace gradvis
