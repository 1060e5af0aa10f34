// Internal to conv2d: direct kernels for depthwise convolution (groups == C, F a
// multiple of C: each input channel feeds m = F/C filters), where im2col + gemm
// would run a 1-row gemm per channel, and for groups of few channels.
#pragma once

#include "ops/conv2d.h"

namespace gradvis {
namespace conv_detail {

inline bool is_depthwise(const Conv2dShape& s) { return s.p.groups > 1 && s.p.groups == s.C && s.F % s.C == 0; }

// Grouped convolutions with few channels per group (2 to 16 in, at most 16 out)
// run the same direct kernels, each group's input planes prepared once: the
// implicit gemm would run one small product per group.
inline bool is_few_channel_grouped(const Conv2dShape& s) {
  const index_t g = s.p.groups;
  return g > 1 && s.C / g >= 2 && s.C / g <= 16 && s.F / g <= 16;
}
inline bool is_direct_grouped(const Conv2dShape& s) { return is_depthwise(s) || is_few_channel_grouped(s); }

// What the forward kernels apply to each sum as they store it: nothing (none),
// ReLU (low, lo = 0) or a clamp to [lo, hi] (range: ReLU6, Clip). V::max(lo, v)
// and V::min(hi, v) give the bits of apply_act's loops (v < lo ? lo : v, then
// v > hi ? hi : v): a NaN passes, -0 stays -0.
template <class T>
struct DwClamp {
  enum Kind { none, low, range } kind = none;
  T lo = T(0), hi = T(0);
};

// act (or null): an activation applied to each item's output planes while they are
// in cache, their values before it copied to pre when pre is not null. flipped
// (glanes_flipped_takes(s), b null): the pass is the input gradient of a stride-1
// layer, w that layer's filters (s.F, s.C/groups, KH, KW), unflipped.
template <class T>
void depthwise_forward(T* out, const T* x, const T* w, const T* b, const Conv2dShape& s, bool relu,
                       const ConvAct* act = nullptr, T* pre = nullptr, bool flipped = false);
template <class T>
void depthwise_backward_input(T* dx, const T* dout, const T* w, const Conv2dShape& s,
                              const ConvAct* act = nullptr, const T* ref = nullptr);
template <class T>
void depthwise_backward_weight(T* dw, T* db, const T* dout, const T* x, const Conv2dShape& s);

// The geometry the kernels share (conv_depthwise_body.inc describes the layouts).
// Row lengths leave room for reads of whole vectors of up to kDwLanes values.
constexpr index_t kDwLanes = 16;
constexpr index_t kDwRows = 4;  // output rows of a forward block
struct DwPlan {
  index_t H, W, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw;
  index_t m, cg;     // filters and input channels per group
  index_t PS;        // values of one prepared plane (sw*Hp*Lp)
  index_t OWr;       // OW rounded up to kDwLanes
  index_t Hp, Lp;    // prepared x: sw phases of Hp rows of Lp values
  index_t Dh, Dl, padT, padL;  // prepared dout (input gradient)
  const index_t* taps;         // KH*KW offsets of tap (kh, kw) in the prepared x
  bool flat = false;           // rows of OW values (dw_plan's flat)
};
// flat: rows of OW values, not rounded up to kDwLanes (dw_fwd_plane_flat).
DwPlan dw_plan(const Conv2dShape& s, std::vector<index_t>& taps, bool flat = false);

// Small maps at stride 1: whether the forward pass runs over the flat index of the
// prepared rows (fewer vectors than row by row); groups of several channels take
// four filters at a time (dw_fwd_plane_flat).
bool dw_use_flat(const Conv2dShape& s, int lanes);

// Small maps, one filter per channel, at least half a vector of channels: the
// forward pass with channels in the vector lanes.
bool dw_use_lanes(const Conv2dShape& s, int lanes);
// The same for the forward pass, which at AVX2 float (avx2_float) also takes
// strided and 5x5-or-larger layers on maps of up to 784 outputs.
bool dw_use_lanes_fwd(const Conv2dShape& s, int lanes, bool avx2_float);

// One SIMD level's kernels (conv_depthwise_body.inc), for one T.
template <class T>
struct DwKernels {
  // padded: prep already holds the zeros around x (the same plan's earlier item on
  // this thread), so only x's values are copied in (dw_prepare_x)
  void (*fwd_plane)(T* out, const T* x, const T* w, const T* b, const DwPlan& g, const DwClamp<T>& clamp, T* prep,
                    bool padded);
  void (*dx_plane)(T* dx, const T* dout, const T* w, const DwPlan& g, T* dprep, index_t* toff, T* tw, T* row);
  // (padded: as fwd_plane's)
  void (*dw_channel)(T* dw, T* db, const T* x, index_t xs, const T* dout, index_t ds, index_t N, const DwPlan& g,
                     T* prep, T* dy, T* accv, bool padded);
  int lanes;
  // a flat plan (dw_use_flat); prep: dw_flat_prep_size, tmp: dw_flat_tmp_size values
  void (*fwd_flat)(T* out, const T* x, const T* w, const T* b, const DwPlan& g, const DwClamp<T>& clamp, T* prep,
                   T* tmp);
  // nc <= lanes channels in the vector lanes (dw_use_lanes); see dw_fwd_lanes.
  // have_w: wbuf already holds these channels' weights; padded: ibuf its zeros
  void (*fwd_lanes)(T* out, const T* x, const T* w, const T* b, index_t nc, const DwPlan& g, const DwClamp<T>& clamp,
                    T* ibuf, T* obuf, T* wbuf, bool have_w, bool padded);
  // the input gradient under the same conditions; see dw_dx_lanes
  void (*dx_lanes)(T* dx, const T* dout, const T* w, index_t nc, const DwPlan& g, T* gbuf, T* dbuf, T* wbuf);
  // the weight gradient of nc <= lanes channels over N images (dw_use_lanes_dw); see
  // dw_dw_lanes. ibuf: dw_lanes_hq * dw_lanes_wq * lanes values; dbuf: OH*OW*lanes;
  // tbuf: H*W*lanes; acc: (KH*KW + 1) * lanes
  void (*dw_lanes)(T* dw, T* db, const T* x, index_t xs, const T* dout, index_t ds, index_t N, index_t nc,
                   const DwPlan& g, T* ibuf, T* dbuf, T* tbuf, T* acc);
  // groups of several channels, a block of fv*lanes filters from f0 of one image
  // (dw_use_glanes); see dw_fwd_glanes. ibuf: dw_glanes_ibuf, obuf:
  // OH*OW*fv*lanes, wbuf: fv*(cg*KH*KW + 1)*lanes values
  void (*fwd_glanes)(T* out, const T* x, const T* w, const T* b, index_t f0, index_t F, const DwPlan& g,
                     const DwClamp<T>& clamp, T* ibuf, T* obuf, T* wbuf, bool have_w, bool padded, bool flipped,
                     int fv);
  // their weight gradient's sums, a block over images [n0, n1) and output rows
  // [oh0, oh1) (dw_use_glanes_dw); see dw_dw_glanes. acc: (cg*KH*KW + 1)*lanes
  // values, dbuf: OH*OW*lanes
  void (*dw_glanes)(T* acc, const T* x, index_t xs, const T* dout, index_t ds, index_t n0, index_t n1, index_t oh0,
                    index_t oh1, index_t f0, index_t F, const DwPlan& g, T* ibuf, T* dbuf);
  // their input gradient, a block of lanes input channels from c0 of one image
  // (dw_use_glanes_dx); see dw_dx_glanes. obuf: H*W*lanes, dbuf: 2*m*rows*cols
  // (dw_dx_pad), wbuf: m*KH*KW*lanes values; have_w: wbuf holds this block's
  // weights
  void (*dx_glanes)(T* dx, const T* dout, const T* w, index_t c0, index_t C, const DwPlan& g, T* obuf, T* dbuf,
                    T* wbuf, bool have_w);
  // conv2d_pw_dw_forward_cpu's steps (3x3, stride 2): an input row packed in
  // column-phase order, and an output row from the kept rows of the 1x1 layer's
  // output (see dw_ring_pack, dw_ring_row)
  void (*ring_pack)(T* xb, index_t XS, const T* x, index_t xs, index_t C, index_t W);
  void (*ring_row)(T* out, index_t os, const T* const* rows, const index_t* rstr, const index_t* p0, const T* w,
                   const T* b, index_t M, index_t W, index_t OW, index_t pl, const DwClamp<T>& clamp);
  // conv2d_dw_pw_forward_cpu's step (3x3, stride 1): two output rows from the 4
  // input rows they read (dw_ring_rows2; the last vector of a row reads up to
  // lanes - 1 values past the row's end)
  void (*ring_rows2)(T* out, index_t os, index_t os2, const T* const* rows, const index_t* rstr, const T* w,
                     const T* b, index_t M, index_t W, index_t OW, index_t pl, const DwClamp<T>& clamp);
};
// The kernels of the CPU's SIMD level (GRADVIS_SIMD).
template <class T>
const DwKernels<T>& dw_kernels();
inline index_t dw_flat_slack(const DwPlan& g) { return kDwLanes + (g.KW - 1) * g.dw + 1; }
// A flat forward's scratch: cg prepared planes with their slack, and one tmp plane
// (OH*Lp + kDwLanes values) per filter of a block (four where a group has cg > 1
// channels and four or more filters: dw_fwd_plane_flat).
inline index_t dw_flat_prep_size(const DwPlan& g) { return g.cg * (g.PS + dw_flat_slack(g)); }
inline index_t dw_flat_tmp_size(const DwPlan& g) {
  return (g.cg > 1 && g.m >= 4 ? 4 : 1) * (g.OH * g.Lp + kDwLanes);
}
// Small maps, one filter per channel, two or more blocks of lanes channels: the
// weight gradient with channels in the vector lanes (dw_dw_lanes).
bool dw_use_lanes_dw(const Conv2dShape& s, int lanes);
// Small maps at stride 1: whether the weight gradient runs over the flat index
// of the prepared rows (a 7x7 map fills 7 of a row's 16 lanes).
bool dw_use_flat_dw(const Conv2dShape& s);
// How many output-gradient planes the weight gradient keeps at once: filters go in
// blocks of four where a group has four or more (dw_dw_channel).
inline index_t dw_dw_planes(const DwPlan& g) { return g.m >= 4 ? 4 : 1; }
// A flat weight gradient's prepared plane (PS plus slack, zeroed) and dy (two
// halves of the flat index, each a whole number of kDwLanes).
inline index_t dw_flat_dw_half(const DwPlan& g) {
  return ((g.OH * g.Lp + 1) / 2 + kDwLanes - 1) / kDwLanes * kDwLanes;
}
inline index_t dw_flat_dw_plane(const DwPlan& g) { return g.PS + 2 * kDwLanes + (g.KW - 1) * g.dw + 1; }
// The padded extent the taps of dw_fwd_lanes reach (rows, columns).
inline index_t dw_lanes_hq(const DwPlan& g) { return (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1; }
inline index_t dw_lanes_wq(const DwPlan& g) { return (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1; }
// Groups of 2-16 channels whose filters fill the vector lanes (a group's filters a
// multiple of lanes, or half of them), on small maps: the forward pass with the
// filters in the lanes (dw_fwd_glanes).
bool dw_use_glanes(const Conv2dShape& s, int lanes);
// Whether depthwise_forward / depthwise_backward_weight run s with the lanes
// kernels at this process's SIMD level (groups of up to 32 channels included,
// which is_direct_grouped leaves to the gemm paths).
template <class T>
bool glanes_forward_takes(const Conv2dShape& s);
template <class T>
bool glanes_weight_takes(const Conv2dShape& s);
// ... and the forward s with depthwise_forward's flipped weights (one group a
// block of lanes filters)
template <class T>
bool glanes_flipped_takes(const Conv2dShape& s);
// The weight gradient the same way (1x1 and 3x3 kernels).
bool dw_use_glanes_dw(const Conv2dShape& s, int lanes);
// The input gradient with the input channels in the lanes (a group's channels a
// multiple of lanes, or half of them; dilation 1).
bool dw_use_glanes_dx(const Conv2dShape& s, int lanes);
template <class T>
bool glanes_input_takes(const Conv2dShape& s);
// dw_dx_glanes's padded output-gradient planes: rows [r0, r0 + rows) and columns
// [q0, q0 + cols) of dout's grid, which every phase's taps reach from the input
// positions (a = (ih + pt) / sh down to a - (KH - 1) / sh), zeros outside dout.
struct DwDxPad {
  index_t r0, rows, q0, cols;
};
inline DwDxPad dw_dx_pad(const DwPlan& g) {
  const index_t r0 = std::min<index_t>(0, g.pt / g.sh - (g.KH - 1) / g.sh);
  const index_t q0 = std::min<index_t>(0, g.pl / g.sw - (g.KW - 1) / g.sw);
  const index_t r1 = std::max<index_t>(g.OH, (g.H - 1 + g.pt) / g.sh + 1);
  const index_t q1 = std::max<index_t>(g.OW, (g.W - 1 + g.pl) / g.sw + 1);
  return {r0, r1 - r0, q0, q1 - q0};
}
inline bool dw_glanes_pair(const DwPlan& g, int lanes) { return 2 * g.m == lanes; }
// Filter vectors a lanes-forward block holds: 2 where a group has 32 or more
// filters filling whole pairs of vectors (ResNeXt-50's last stage: each broadcast
// input feeds both, and the group's input is copied once for both; 1024@7 and
// 1024@14 -> 7 at batch 1 5-7% faster on AMD Zen 4, AVX2 included). At AVX2 the
// 16-filter groups of 512@14 ran 5% slower with two (16 registers).
inline int dw_glanes_fv(const DwPlan& g, int lanes) { return g.m >= 32 && g.m % (2 * lanes) == 0 ? 2 : 1; }
inline index_t dw_glanes_ibuf(const DwPlan& g, int lanes) {
  return dw_lanes_hq(g) * dw_lanes_wq(g) * g.cg * (dw_glanes_pair(g, lanes) ? 2 : 1);
}
template <class T>
DwKernels<T> dw_kernels_scalar();
template <class T>
DwKernels<T> dw_kernels_avx2();
template <class T>
DwKernels<T> dw_kernels_avx512();

// Output columns ow whose input column iw = iw0 + ow*stride lies in [0, W): [lo, hi).
inline void valid_range(index_t iw0, index_t stride, index_t W, index_t n_out, index_t& lo, index_t& hi) {
  lo = iw0 >= 0 ? 0 : (-iw0 + stride - 1) / stride;
  hi = iw0 >= W ? 0 : (W - iw0 + stride - 1) / stride;
  if (lo > n_out) lo = n_out;
  if (hi > n_out) hi = n_out;
  if (hi < lo) hi = lo;
}

}  // namespace conv_detail
}  // namespace gradvis
