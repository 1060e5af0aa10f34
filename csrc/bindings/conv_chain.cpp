// _core.ConvChain: forward convolutions run one after another in one call.
//
// A pass that keeps nothing for a backward pass (Model.forward with cache=False)
// runs runs of convolutions whose inputs are the outputs of the ones before
// (a MobileNet's 52 layers, its residual sums made by the convolutions). Called
// one by one, each layer cost its Python step, its binding's parsing and an output
// array, on caches its kernel had just filled: about 0.4 ms of MobileNetV2's 8.6
// ms forward pass at batch 1. The chain is built once from the graph's structure
// (slots, not arrays); each run takes the inputs and the current weights, checks
// every shape and dtype first (the same checks and kernels as conv2d_forward,
// conv2d_forward_act and conv2d_forward_add, so the same bits), allocates the
// outputs it returns, and then runs all layers without the GIL, the
// intermediates in one block where each takes memory freed by an earlier one
// after its last reader (ArenaPlan). Squeeze-and-excitation blocks run in
// the chain too: the global average pool, the sigmoid or hard sigmoid of the
// gate, and the convolution that reads the gated map, which applies the gate to
// its weights where the pass would (nn/fold.py's gate_fold) or else to its input
// (the Mul layer's channel_scale_forward): the same operations as the layers.
//
// A pass that keeps a lean cache (Model.forward before a backward pass of input
// gradients only) runs the same chains, built with `keep`: the masks of the
// ReLUs and clamps as activation_mask's bits, made from each layer's output as
// it is written, and the inputs of SiLU and HardSwish (conv2d_forward_act's
// pre), which run_kept returns beside the outputs; and with fold_gates off, as
// the layers with a cache apply a gate to the map, never to the weights.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/block_cache.h"
#include "bindings/conv_args.h"
#include "bindings/register.h"
#include "bindings/util.h"
#include "bindings/weight_key.h"
#include "ops/activation.h"
#include "ops/conv2d.h"
#include "ops/pointwise.h"
#include "ops/pool2d.h"

namespace gradvis {
namespace {

using namespace conv_args;

constexpr const char* kRun = "ConvChain.run";
constexpr const char* kNew = "ConvChain";

struct ChainLayer {
  enum Op { conv, gap, sigmoid, hardsigmoid } op = conv;
  int in = 0, res = -1;  // slots of the input and the residual operand (-1: none)
  int gate = -1;         // conv: the slot multiplied with `in` first (a per-channel gate, either operand)
  Conv2dParams p;
  bool has_act = false;  // act applies (conv2d_forward_act), else relu (conv2d_forward / _add)
  ConvAct act;
  bool relu = false;
  double alpha = 0, beta = 0;   // hardsigmoid
};

// What a chain built with `keep` returns beside its outputs: the mask of the
// slot `slot` as activation_mask's bits (relu: y > lo; clamp: lo < y < hi), made
// right after the layer that writes it, or the activation's input of conv layer
// `layer` (conv2d_forward_act's pre).
struct ChainKeep {
  bool bits = true;
  int slot = -1, layer = -1;
  double lo = 0, hi = 0;
  bool upper = false;
};

const std::vector<ChainKeep> kNoKeep;   // what run() makes of `keep`: nothing

// Whether g (shape gs) is a per-channel gate of a tensor of shape xs: (N or 1, C,
// 1, 1) with C > 1 and fewer values (elementwise.py's _is_gate).
bool is_gate(const std::array<index_t, 4>& gs, const std::array<index_t, 4>& xs) {
  return (gs[0] == 1 || gs[0] == xs[0]) && gs[1] == xs[1] && xs[1] > 1 && gs[2] == 1 && gs[3] == 1 &&
         gs[0] * gs[1] < xs[0] * xs[1] * xs[2] * xs[3];
}

// Where the intermediates lie in one block (the arena) of `total` bytes: each at
// the lowest offset where it fits beside those alive while it is written, so that
// a layer's output takes the memory its predecessors read and wrote a moment ago
// (still in cache) rather than a block last touched a pass before. With a block
// per slot (the output block cache's, reused by size), a layer's first write went
// to memory the rest of the pass had evicted: MobileNetV2's forward pass took 8.3
// ms that way and 7.9 with the arena (1 thread), its depthwise layers 10-44%
// faster each.
class ArenaPlan {
 public:
  static constexpr std::size_t kAlign = 64;
  // gap: bytes left free after each placement (AddressSanitizer's red zones)
  explicit ArenaPlan(std::size_t gap = 0) : gap_(gap) {}
  // Places `bytes` (> 0) for `owner`; returns its offset.
  std::size_t place(std::size_t bytes, int owner) {
    const std::size_t b = (bytes + gap_ + kAlign - 1) / kAlign * kAlign;
    std::size_t at = 0, cur = 0;   // live_ is sorted by offset
    for (; at < live_.size() && live_[at].off < cur + b; ++at) cur = std::max(cur, live_[at].off + live_[at].len);
    live_.insert(live_.begin() + std::ptrdiff_t(at), Live{cur, b, owner});
    total_ = std::max(total_, cur + b);
    return cur;
  }
  void release(int owner) {
    for (std::size_t j = 0; j < live_.size(); ++j)
      if (live_[j].owner == owner) return void(live_.erase(live_.begin() + std::ptrdiff_t(j)));
  }
  std::size_t total() const { return total_; }

 private:
  struct Live {
    std::size_t off, len;
    int owner;
  };
  std::size_t gap_;
  std::vector<Live> live_;
  std::size_t total_ = 0;
};

// Under AddressSanitizer (its runtime loaded: tools/sanitize.sh), the arena is
// poisoned but for the slots alive, each followed by a red zone, so that a kernel
// writing past its output or reading a slot after its last reader is reported as
// it would be with a block per slot. Weak: the bindings need not be instrumented.
extern "C" void __asan_poison_memory_region(void const volatile*, std::size_t) __attribute__((weak));
extern "C" void __asan_unpoison_memory_region(void const volatile*, std::size_t) __attribute__((weak));
inline bool asan_active() { return __asan_poison_memory_region != nullptr; }
inline void asan_poison(const void* p, std::size_t n, bool poison) {
  if (!asan_active() || n == 0) return;
  if (poison)
    __asan_poison_memory_region(p, n);
  else
    __asan_unpoison_memory_region(p, n);
}

// The arena's memory: a cached block when large (the same block pass after pass),
// else malloc's; under ASan poisoned until its slots are handed out.
class ArenaMemory {
 public:
  explicit ArenaMemory(std::size_t bytes) : size_(bytes) {
    if (bytes >= kCachedMinBytes) {
      block_ = block_acquire(bytes);
      base_ = block_->ptr;
    } else if (!(base_ = small_ = std::malloc(bytes ? bytes : 1))) {
      throw std::bad_alloc();
    }
    asan_poison(base_, size_, true);
  }
  ArenaMemory(const ArenaMemory&) = delete;
  ArenaMemory& operator=(const ArenaMemory&) = delete;
  ~ArenaMemory() {
    asan_poison(base_, size_, false);
    if (block_) block_release(block_);
    std::free(small_);
  }
  char* base() const { return static_cast<char*>(base_); }

 private:
  std::size_t size_;
  CachedBlock* block_ = nullptr;
  void* small_ = nullptr;
  void* base_ = nullptr;
};

class ConvChain {
 public:
  ConvChain(int n_inputs, const py::sequence& layers, const py::sequence& outputs, const py::sequence& keep,
            bool fold_gates)
      : n_in_(n_inputs), fold_gates_(fold_gates) {
    if (n_inputs < 1) throw py::value_error(cat(kNew, ": n_inputs must be >= 1, got ", n_inputs));
    if (py::len(layers) < 1) throw py::value_error(cat(kNew, ": layers is empty"));
    for (const py::handle& h : layers) {
      const auto t = py::reinterpret_borrow<py::sequence>(h);
      if (py::len(t) != 12)
        throw py::value_error(cat(kNew, ": each layer is (op, input slot, residual slot or -1, gate slot or -1, "
                                        "stride, padding, dilation, groups, activation or None, lo, hi, relu), "
                                        "got ", std::string(py::repr(h))));
      const int i = int(layers_.size()), slots = n_in_ + i;
      ChainLayer l;
      if (!py::isinstance<py::str>(t[0]) || !(t[8].is_none() || py::isinstance<py::str>(t[8])))
        throw py::type_error(cat(kNew, ": layer ", i, "'s op and activation must be strings (activation: or None), "
                                       "got ", std::string(py::repr(h))));
      const std::string op = py::cast<std::string>(t[0]);
      l.op = op == "conv" ? ChainLayer::conv : op == "gap" ? ChainLayer::gap : op == "sigmoid" ? ChainLayer::sigmoid
             : op == "hardsigmoid" ? ChainLayer::hardsigmoid
             : throw py::value_error(cat(kNew, ": op must be 'conv', 'gap', 'sigmoid' or 'hardsigmoid', got '",
                                         op, "'"));
      l.in = int(int_arg(t[1], kNew, "input slot", 0, slots - 1));
      l.res = int(int_arg(t[2], kNew, "residual slot", -1, slots - 1));
      l.gate = int(int_arg(t[3], kNew, "gate slot", -1, slots - 1));
      if (l.op == ChainLayer::conv) {
        l.p = parse_params(kNew, t[4], t[5], t[6], t[7]);
        if (!t[8].is_none()) {
          l.has_act = true;
          l.act = parse_act(kNew, py::cast<std::string>(t[8]), py::cast<double>(t[9]), py::cast<double>(t[10]));
          if (l.res >= 0)
            throw py::value_error(cat(kNew, ": layer ", i, " has both an activation and a residual"));
        }
        l.relu = py::cast<bool>(t[11]);
      } else {
        if (l.res >= 0 || l.gate >= 0)
          throw py::value_error(cat(kNew, ": layer ", i, " (", op, ") takes no residual or gate"));
        if (l.op == ChainLayer::hardsigmoid) {
          l.alpha = py::cast<double>(t[9]), l.beta = py::cast<double>(t[10]);
          if (!std::isfinite(l.alpha) || !std::isfinite(l.beta))
            throw py::value_error(cat(kNew, ": layer ", i, ": hardsigmoid's alpha and beta (lo, hi) must be "
                                            "finite, got ", l.alpha, ", ", l.beta));
        }
      }
      layers_.push_back(l);
    }
    const int slots = n_in_ + int(layers_.size());
    for (const py::handle& h : keep) {
      const auto t = py::reinterpret_borrow<py::sequence>(h);
      const bool ok = py::len(t) >= 2 && py::isinstance<py::str>(t[0]);
      const std::string what = ok ? py::cast<std::string>(t[0]) : std::string();
      ChainKeep k;
      if (what == "bits" && py::len(t) == 5 && py::isinstance<py::str>(t[2])) {
        k.slot = int(int_arg(t[1], kNew, "kept bits' slot", n_in_, slots - 1));
        const std::string act = py::cast<std::string>(t[2]);
        if (act != "relu" && act != "clamp")
          throw py::value_error(cat(kNew, ": kept bits' activation must be 'relu' or 'clamp', got '", act, "'"));
        const ConvAct a = parse_act(kNew, act, py::cast<double>(t[3]), py::cast<double>(t[4]));
        k.lo = a.lo, k.hi = a.hi, k.upper = a.kind == ConvAct::clamp;
      } else if (what == "pre" && py::len(t) == 2) {
        k.bits = false;
        k.layer = int(int_arg(t[1], kNew, "kept pre's layer", 0, int(layers_.size()) - 1));
        const ChainLayer& l = layers_[std::size_t(k.layer)];
        if (l.op != ChainLayer::conv || !l.has_act)
          throw py::value_error(cat(kNew, ": kept pre's layer ", k.layer, " is not a convolution with an activation"));
      } else {
        throw py::value_error(cat(kNew, ": each kept value is ('bits', slot, 'relu' or 'clamp', lo, hi) or ('pre', "
                                        "layer), got ", std::string(py::repr(h))));
      }
      keep_.push_back(k);
    }
    for (const py::handle& h : outputs) {
      const int o = int(int_arg(h, kNew, "output slot", n_in_, slots - 1));
      outputs_.push_back(o);
    }
    // the layer after which each intermediate slot is read no more (-1: an input,
    // or returned)
    last_.assign(std::size_t(slots), -1);
    for (int i = 0; i < int(layers_.size()); ++i) {
      const ChainLayer& l = layers_[std::size_t(i)];
      last_[std::size_t(l.in)] = i;
      if (l.res >= 0) last_[std::size_t(l.res)] = i;
      if (l.gate >= 0) last_[std::size_t(l.gate)] = i;
    }
    for (int s = 0; s < n_in_; ++s) last_[std::size_t(s)] = -1;
    for (int o : outputs_) last_[std::size_t(o)] = -1;
    // a slot nothing reads and nobody asked for is freed right after it is written
    for (int i = 0; i < int(layers_.size()); ++i)
      if (last_[std::size_t(n_in_ + i)] == -1 && std::find(outputs_.begin(), outputs_.end(), n_in_ + i) ==
                                                     outputs_.end())
        last_[std::size_t(n_in_ + i)] = i;
    frees_.resize(layers_.size());
    for (int s = n_in_; s < slots; ++s)
      if (last_[std::size_t(s)] >= 0) frees_[std::size_t(last_[std::size_t(s)])].push_back(s);
  }

  int n_inputs() const { return n_in_; }
  std::size_t size() const { return layers_.size(); }

  // run() returns the outputs; run_kept() also what `keep` asks for, and every
  // slot's shape.
  py::tuple run(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases) const {
    return run_any(inputs, weights, biases, false);
  }
  py::tuple run_kept(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases) const {
    return run_any(inputs, weights, biases, true);
  }

 private:
  py::tuple run_any(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases,
                    bool with_kept) const {
    if (int(py::len(inputs)) != n_in_)
      throw py::value_error(cat(kRun, ": expected ", n_in_, " inputs, got ", py::len(inputs)));
    if (py::len(weights) != layers_.size() || py::len(biases) != layers_.size())
      throw py::value_error(cat(kRun, ": expected ", layers_.size(), " weights and biases, got ", py::len(weights),
                                " and ", py::len(biases)));
    FloatKind k;
    primary_array(inputs[0], kRun, "inputs[0]", k);
    return k == FloatKind::f32 ? run_t<float>(inputs, weights, biases, with_kept)
                               : run_t<double>(inputs, weights, biases, with_kept);
  }

  // obj as an array of exactly T (a chain casts nothing: the layers one by one
  // would run a layer of another dtype, or a residual that casts, by other code)
  template <class T>
  static py::array_t<T, py::array::c_style> exact(const py::handle& obj, const std::string& name) {
    if (!py::isinstance<py::array>(obj) || !py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<T>()))
      throw py::type_error(cat(kRun, ": ", name, " must be a numpy array of ", dtype_name<T>(), ", got ",
                               std::string(py::str(py::type::of(obj)))));
    return as_array<T>(obj, kRun, name.c_str());
  }

  template <class T>
  py::tuple run_t(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases,
                  bool with_kept) const {
    const std::size_t L = layers_.size(), S = std::size_t(n_in_) + L;
    std::vector<py::array_t<T, py::array::c_style>> keep;   // the arrays read, alive until the end
    std::vector<std::array<index_t, 4>> shape(S);
    std::vector<const T*> wptr(L, nullptr), bptr(L, nullptr);
    std::vector<Conv2dShape> cs(L);
    std::vector<WeightKey> keys(L);
    // conv layers with a gate: (the gated operand's slot, the gate's slot, whether
    // the gate goes into the weights)
    struct Gated { int x = -1, g = -1; bool fold = false; };
    std::vector<Gated> gated(L);
    std::vector<T*> ptr(S, nullptr);
    for (int s = 0; s < n_in_; ++s) {
      keep.push_back(exact<T>(inputs[std::size_t(s)], cat("inputs[", s, "]")));
      const py::array_t<T, py::array::c_style> a = keep.back();
      check_ndim(a, 4, kRun, "an input", "(N, C, H, W)");
      check_nonempty(a, kRun, "an input");
      check_dims(a, kRun, "an input");
      shape[std::size_t(s)] = {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
      ptr[std::size_t(s)] = const_cast<T*>(a.data());
    }
    for (std::size_t i = 0; i < L; ++i) {
      const ChainLayer& l = layers_[i];
      const std::size_t o = std::size_t(n_in_) + i;
      if (l.op != ChainLayer::conv) {
        if (!weights[i].is_none() || !biases[i].is_none())
          throw py::value_error(cat(kRun, ": layer ", i, " takes no weights or bias"));
        const auto& x = shape[std::size_t(l.in)];
        shape[o] = l.op == ChainLayer::gap ? std::array<index_t, 4>{x[0], x[1], 1, 1} : x;
        continue;
      }
      const std::string wn = cat("weights[", i, "]");
      keep.push_back(exact<T>(weights[i], wn));
      const py::array_t<T, py::array::c_style> w = keep.back();   // keep grows below
      wptr[i] = w.data();
      check_ndim(w, 4, kRun, wn.c_str(), "(F, C/groups, KH, KW)");
      check_nonempty(w, kRun, wn.c_str());
      check_dims(w, kRun, wn.c_str());
      int xin = l.in;
      if (l.gate >= 0) {   // which operand is the gate, and where it goes
        const auto &a = shape[std::size_t(l.in)], &g = shape[std::size_t(l.gate)];
        Gated& gd = gated[i];
        if (is_gate(g, a))
          gd.x = l.in, gd.g = l.gate;
        else if (is_gate(a, g))
          gd.x = l.gate, gd.g = l.in;
        else
          throw py::value_error(cat(kRun, ": layer ", i, "'s two operands are not a map and its per-channel gate"));
        const auto &xs = shape[std::size_t(gd.x)], &gs = shape[std::size_t(gd.g)];
        // nn/fold.py's gate_fold: one image, and no more weights than the map has values
        gd.fold = fold_gates_ && xs[0] == 1 && gs[0] == 1 && w.shape(1) == xs[1] &&
                  index_t(w.size()) <= xs[0] * xs[1] * xs[2] * xs[3];
        xin = gd.x;
      }
      const auto& x = shape[std::size_t(xin)];
      const auto where = [&] {
        return cat("layer ", i, ": input shape (", x[0], ", ", x[1], ", ", x[2], ", ", x[3], "), w shape ",
                   shape_str(w));
      };
      cs[i] = make_shape(kRun, x[0], x[1], x[2], x[3], w.shape(0), w.shape(1), w.shape(2), w.shape(3), l.p, where);
      const Conv2dShape& s = cs[i];
      if (!biases[i].is_none()) {
        keep.push_back(exact<T>(biases[i], cat("biases[", i, "]")));
        if (keep.back().ndim() != 1 || keep.back().shape(0) != s.F)
          throw py::value_error(cat(kRun, ": biases[", i, "] must have shape (", s.F, ",), got ",
                                    shape_str(keep.back())));
        bptr[i] = keep.back().data();
      }
      shape[o] = {s.N, s.F, s.OH, s.OW};
      if (l.res >= 0 && shape[std::size_t(l.res)] != shape[o])
        throw py::value_error(cat(kRun, ": layer ", i, "'s residual does not have its output's shape; ", where()));
      // gated weights are a new array each pass: no key, as in the layers' pass
      if (!gated[i].fold) keys[i] = immutable_key(w);
    }
    // the outputs, then everything else without the GIL
    std::vector<py::array_t<T>> outs;
    for (int o : outputs_) {
      const auto& sh = shape[std::size_t(o)];
      if (ptr[std::size_t(o)] == nullptr) {
        outs.push_back(empty_array<T>({py::ssize_t(sh[0]), py::ssize_t(sh[1]), py::ssize_t(sh[2]),
                                       py::ssize_t(sh[3])}));
        ptr[std::size_t(o)] = outs.back().mutable_data();
      } else {   // the same slot asked for twice
        for (std::size_t j = 0, n = outs.size(); j < n; ++j)
          if (outs[j].data() == ptr[std::size_t(o)]) {
            outs.push_back(outs[j]);
            break;
          }
      }
    }
    // what `keep` asks for (run_kept): per layer, the bits made after it and the pre it writes
    std::vector<py::array> kept;
    std::vector<std::vector<std::pair<std::uint64_t*, const ChainKeep*>>> bits_after(L);
    std::vector<T*> pre(L, nullptr);
    for (const ChainKeep& kp : with_kept ? keep_ : kNoKeep) {
      if (kp.bits) {
        const auto& sh = shape[std::size_t(kp.slot)];
        py::array_t<std::uint64_t> b(py::ssize_t((sh[0] * sh[1] * sh[2] * sh[3] + 63) / 64));
        bits_after[std::size_t(kp.slot - n_in_)].emplace_back(b.mutable_data(), &kp);
        kept.push_back(b);
      } else {
        const auto& sh = shape[std::size_t(n_in_ + kp.layer)];
        auto a = empty_array<T>({py::ssize_t(sh[0]), py::ssize_t(sh[1]), py::ssize_t(sh[2]), py::ssize_t(sh[3])});
        pre[std::size_t(kp.layer)] = a.mutable_data();
        kept.push_back(a);
      }
    }
    // Layer i and the layer after it run as one when nothing but that layer reads
    // layer i's output, neither has a residual, gate or kept value, layer i is not
    // itself the second of such a pair, and one of the fused kernels takes their
    // shapes: a 1x1 layer and a stride-2 depthwise one (fuse 1,
    // conv2d_pw_dw_forward_cpu), or a stride-1 depthwise layer and a 1x1 one (fuse
    // 2, conv2d_dw_pw_forward_cpu). Layer i's output is then never written.
    std::vector<ConvAct> acts(L);
    for (std::size_t i = 0; i < L; ++i)
      acts[i] = layers_[i].has_act ? layers_[i].act : ConvAct{layers_[i].relu ? ConvAct::relu : ConvAct::none};
    std::vector<char> fuse(L, 0);
    for (std::size_t i = 0; i + 1 < L; ++i) {
      const ChainLayer &a = layers_[i], &b = layers_[i + 1];
      const int s = n_in_ + int(i);
      bool ok = (i == 0 || !fuse[i - 1]) && a.op == ChainLayer::conv && b.op == ChainLayer::conv && a.res < 0 &&
                b.res < 0 && gated[i].x < 0 && gated[i + 1].x < 0 && b.in == s && last_[std::size_t(s)] == int(i) + 1;
      for (const ChainKeep& kp : with_kept ? keep_ : kNoKeep)
        if (kp.bits ? kp.slot == s : (kp.layer == int(i) || kp.layer == int(i) + 1)) ok = false;
      if (ok && conv2d_pw_dw_takes<T>(cs[i], acts[i], cs[i + 1], acts[i + 1])) fuse[i] = 1;
      if (ok && conv2d_dw_pw_takes<T>(cs[i], acts[i], cs[i + 1], acts[i + 1])) fuse[i] = 2;
    }
    auto nbytes = [&](const std::array<index_t, 4>& sh) {
      return checked_output_bytes({py::ssize_t(sh[0]), py::ssize_t(sh[1]), py::ssize_t(sh[2]), py::ssize_t(sh[3])},
                                  sizeof(T), dtype_name<T>());
    };
    std::vector<std::size_t> bytes(S, 0), scratch_bytes(L, 0);
    for (std::size_t s = std::size_t(n_in_); s < S; ++s)
      if (ptr[s] == nullptr && !fuse[s - std::size_t(n_in_)]) bytes[s] = nbytes(shape[s]);
    for (std::size_t i = 0; i < L; ++i)
      if (gated[i].x >= 0)
        scratch_bytes[i] = gated[i].fold ? sizeof(T) * std::size_t(cs[i].F * cs[i].C / cs[i].p.groups * cs[i].KH *
                                                                     cs[i].KW)
                                         : nbytes(shape[std::size_t(gated[i].x)]);
    // the intermediates' and the gates' scratch offsets in the arena (owner -1 - i:
    // layer i's scratch, alive while it runs)
    ArenaPlan plan(asan_active() ? 64 : 0);
    std::vector<std::size_t> off(S, 0), scratch_off(L, 0);
    for (std::size_t i = 0; i < L; ++i) {
      const std::size_t o = std::size_t(n_in_) + i;
      if (ptr[o] == nullptr && !fuse[i]) off[o] = plan.place(bytes[o], int(o));
      if (scratch_bytes[i]) scratch_off[i] = plan.place(scratch_bytes[i], -1 - int(i));
      plan.release(-1 - int(i));
      if (fuse[i]) continue;   // what layer i last reads stays alive while the pair writes layer i + 1's output
      for (int s : frees_[i]) plan.release(s);
      if (i > 0 && fuse[i - 1])
        for (int s : frees_[i - 1]) plan.release(s);
    }
    {
      py::gil_scoped_release release;
      const ArenaMemory arena(plan.total());
      char* const base = arena.base();
      for (std::size_t i = 0; i < L; ++i) {
        const ChainLayer& l = layers_[i];
        const std::size_t o = std::size_t(n_in_) + i;
        if (ptr[o] == nullptr) {
          ptr[o] = reinterpret_cast<T*>(base + off[o]);
          asan_poison(ptr[o], bytes[o], false);
        }
        const auto& xs = shape[std::size_t(l.in)];
        const index_t n = xs[0] * xs[1] * xs[2] * xs[3];
        if (fuse[i]) {   // layer i + 1's output, from x
          if (ptr[o + 1] == nullptr) {
            ptr[o + 1] = reinterpret_cast<T*>(base + off[o + 1]);
            asan_poison(ptr[o + 1], bytes[o + 1], false);
          }
          (fuse[i] == 1 ? conv2d_pw_dw_forward_cpu<T> : conv2d_dw_pw_forward_cpu<T>)(
              ptr[o + 1], ptr[std::size_t(l.in)], wptr[i], bptr[i], acts[i], wptr[i + 1], bptr[i + 1], acts[i + 1],
              cs[i], cs[i + 1]);
        } else if (i > 0 && fuse[i - 1]) {
          // computed with layer i - 1
        } else if (l.op == ChainLayer::gap) {
          global_avg_pool_forward_cpu<T>(ptr[o], ptr[std::size_t(l.in)], xs[0] * xs[1], xs[2] * xs[3]);
        } else if (l.op == ChainLayer::sigmoid) {
          sigmoid_forward_cpu<T>(ptr[o], ptr[std::size_t(l.in)], n);
        } else if (l.op == ChainLayer::hardsigmoid) {
          hardsigmoid_forward_cpu<T>(ptr[o], ptr[std::size_t(l.in)], T(l.alpha), T(l.beta), n);
        } else {
          const T* x = ptr[std::size_t(l.in)];
          const T* w = wptr[i];
          if (gated[i].x >= 0) {   // the gated map, or the gated weights (N = F filters, C, KH KW)
            const Gated& gd = gated[i];
            const auto &gx = shape[std::size_t(gd.x)], &gg = shape[std::size_t(gd.g)];
            T* t = reinterpret_cast<T*>(base + scratch_off[i]);
            asan_poison(t, scratch_bytes[i], false);
            if (gd.fold) {
              channel_scale_forward_cpu<T>(t, w, ptr[std::size_t(gd.g)], cs[i].F, cs[i].C, cs[i].KH * cs[i].KW,
                                           false);
              w = t, x = ptr[std::size_t(gd.x)];
            } else {
              channel_scale_forward_cpu<T>(t, ptr[std::size_t(gd.x)], ptr[std::size_t(gd.g)], gx[0], gx[1],
                                           gx[2] * gx[3], gg[0] != 1 && gx[0] != 1);
              x = t;
            }
          }
          const WeightKeyScope key(keys[i]);
          if (l.res >= 0)
            conv2d_forward_add_cpu<T>(ptr[o], x, w, bptr[i], ptr[std::size_t(l.res)], cs[i], l.relu);
          else if (l.has_act)
            conv2d_forward_act_cpu<T>(ptr[o], pre[i], x, w, bptr[i], cs[i], l.act);
          else
            conv2d_forward_cpu<T>(ptr[o], x, w, bptr[i], cs[i], l.relu);
        }
        for (const auto& [b, kp] : bits_after[i]) {
          const auto& sh = shape[o];
          activation_mask_bits_cpu<T>(b, ptr[o], sh[0] * sh[1] * sh[2] * sh[3], kp->lo, kp->hi, kp->upper);
        }
        if (asan_active()) {
          if (scratch_bytes[i]) asan_poison(base + scratch_off[i], scratch_bytes[i], true);
          for (int s : frees_[i]) asan_poison(ptr[std::size_t(s)], bytes[std::size_t(s)], true);
        }
      }
    }
    py::tuple result(outs.size());
    for (std::size_t j = 0; j < outs.size(); ++j) result[j] = outs[j];
    if (!with_kept) return result;
    py::tuple kt(kept.size()), st(S);
    for (std::size_t j = 0; j < kept.size(); ++j) kt[j] = kept[j];
    for (std::size_t j = 0; j < S; ++j) st[j] = py::make_tuple(shape[j][0], shape[j][1], shape[j][2], shape[j][3]);
    return py::make_tuple(result, kt, st);
  }

  int n_in_;
  bool fold_gates_ = true;
  std::vector<ChainLayer> layers_;
  std::vector<ChainKeep> keep_;
  std::vector<int> outputs_;
  std::vector<int> last_;
  std::vector<std::vector<int>> frees_;   // per layer: the slots freed after it (last_ inverted)
};

}  // namespace

void register_conv_chain(py::module_& m) {
  py::class_<ConvChain>(m, "ConvChain",
                        "Forward convolutions (and squeeze-and-excitation steps) run one after another in one\n"
                        "call: Model.forward's passes that keep nothing for a backward pass.\n\n"
                        "ConvChain(n_inputs, layers, outputs). Slots 0 .. n_inputs - 1 are the inputs; layer i\n"
                        "writes slot n_inputs + i. Each layer is (op, input slot, residual slot or -1, gate slot\n"
                        "or -1, stride, padding, dilation, groups, activation, lo, hi, relu). op 'conv':\n"
                        "conv2d_forward (activation None), conv2d_forward_act (activation 'relu', 'clamp',\n"
                        "'hardswish' or 'silu', with lo, hi) or, with a residual slot, conv2d_forward_add; relu\n"
                        "as those functions take it; with a gate slot, of the input times a per-channel gate\n"
                        "((N or 1, C, 1, 1), either slot), applied to the weights at batch 1 when there are no\n"
                        "more weights than the map has values, else to the map. op 'gap': global_avg_pool_forward;\n"
                        "'sigmoid': sigmoid_forward; 'hardsigmoid': hardsigmoid_forward with alpha = lo,\n"
                        "beta = hi (their other fields are not read). outputs: the slots run() returns, in order.\n"
                        "keep: what run_kept() returns beside them (a lean cache's): ('bits', slot,\n"
                        "'relu' or 'clamp', lo, hi), the slot's activation_mask bits, made as soon as it is\n"
                        "written; ('pre', layer), the input of a conv layer's activation (conv2d_forward_act's\n"
                        "pre). fold_gates False applies every gate to the map, as the Mul layer does.")
      .def(py::init<int, const py::sequence&, const py::sequence&, const py::sequence&, bool>(),
           py::arg("n_inputs"), py::arg("layers"), py::arg("outputs"), py::arg("keep") = py::tuple(),
           py::arg("fold_gates") = true)
      .def("run", &ConvChain::run, py::arg("inputs"), py::arg("weights"), py::arg("biases"),
           "run(inputs, weights, biases) -> tuple of the output slots' arrays. inputs: n_inputs arrays\n"
           "(N, C, H, W); weights, biases: one per layer (None for a bias and for the layers that are\n"
           "not convolutions), all of the first input's\n"
           "dtype, float32 or float64 (nothing is cast: a TypeError names the array that is not).\n"
           "Every shape is checked before any layer runs; the values are those of the layers called\n"
           "one by one.")
      .def("run_kept", &ConvChain::run_kept, py::arg("inputs"), py::arg("weights"), py::arg("biases"),
           "run_kept(inputs, weights, biases) -> (outputs, kept, shapes): run()'s outputs, the values\n"
           "keep asks for, in its order, and every slot's shape (N, C, H, W).")
      .def_property_readonly("n_inputs", &ConvChain::n_inputs)
      .def("__len__", &ConvChain::size);
}

}  // namespace gradvis
