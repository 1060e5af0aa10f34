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
// outputs it returns, and then runs all layers without the GIL, each
// intermediate freed after its last reader.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bindings/block_cache.h"
#include "bindings/conv_args.h"
#include "bindings/register.h"
#include "bindings/util.h"
#include "bindings/weight_key.h"
#include "ops/conv2d.h"

namespace gradvis {
namespace {

using namespace conv_args;

constexpr const char* kRun = "ConvChain.run";
constexpr const char* kNew = "ConvChain";

struct ChainLayer {
  int in = 0, res = -1;  // slots of the input and the residual operand (-1: none)
  Conv2dParams p;
  bool has_act = false;  // act applies (conv2d_forward_act), else relu (conv2d_forward / _add)
  ConvAct act;
  bool relu = false;
};

// Memory of one intermediate slot: a cached block (large) or malloc's (small).
struct SlotMemory {
  CachedBlock* block = nullptr;
  void* small = nullptr;
  void* acquire(std::size_t bytes) {
    if (bytes >= kCachedMinBytes) return (block = block_acquire(bytes))->ptr;
    small = std::malloc(bytes ? bytes : 1);
    if (!small) throw std::bad_alloc();
    return small;
  }
  void release() noexcept {
    if (block) block_release(block);
    std::free(small);
    block = nullptr, small = nullptr;
  }
  ~SlotMemory() { release(); }
};

class ConvChain {
 public:
  ConvChain(int n_inputs, const py::sequence& layers, const py::sequence& outputs) : n_in_(n_inputs) {
    if (n_inputs < 1) throw py::value_error(cat(kNew, ": n_inputs must be >= 1, got ", n_inputs));
    if (py::len(layers) < 1) throw py::value_error(cat(kNew, ": layers is empty"));
    for (const py::handle& h : layers) {
      const auto t = py::reinterpret_borrow<py::sequence>(h);
      if (py::len(t) != 10)
        throw py::value_error(cat(kNew, ": each layer is (input slot, residual slot or -1, stride, padding, "
                                        "dilation, groups, activation or None, lo, hi, relu), got ",
                                  std::string(py::repr(h))));
      const int i = int(layers_.size()), slots = n_in_ + i;
      ChainLayer l;
      l.in = int(int_arg(t[0], kNew, "input slot", 0, slots - 1));
      l.res = int(int_arg(t[1], kNew, "residual slot", -1, slots - 1));
      l.p = parse_params(kNew, t[2], t[3], t[4], t[5]);
      if (!t[6].is_none()) {
        l.has_act = true;
        l.act = parse_act(kNew, py::cast<std::string>(t[6]), py::cast<double>(t[7]), py::cast<double>(t[8]));
        if (l.res >= 0) throw py::value_error(cat(kNew, ": layer ", i, " has both an activation and a residual"));
      }
      l.relu = py::cast<bool>(t[9]);
      layers_.push_back(l);
    }
    const int slots = n_in_ + int(layers_.size());
    for (const py::handle& h : outputs) {
      const int o = int(int_arg(h, kNew, "output slot", n_in_, slots - 1));
      outputs_.push_back(o);
    }
    // the layer after which each intermediate slot is read no more (-1: an input,
    // or returned)
    last_.assign(std::size_t(slots), -1);
    for (int i = 0; i < int(layers_.size()); ++i) {
      last_[std::size_t(layers_[std::size_t(i)].in)] = i;
      if (layers_[std::size_t(i)].res >= 0) last_[std::size_t(layers_[std::size_t(i)].res)] = i;
    }
    for (int s = 0; s < n_in_; ++s) last_[std::size_t(s)] = -1;
    for (int o : outputs_) last_[std::size_t(o)] = -1;
    // a slot nothing reads and nobody asked for is freed right after it is written
    for (int i = 0; i < int(layers_.size()); ++i)
      if (last_[std::size_t(n_in_ + i)] == -1 && std::find(outputs_.begin(), outputs_.end(), n_in_ + i) ==
                                                     outputs_.end())
        last_[std::size_t(n_in_ + i)] = i;
  }

  int n_inputs() const { return n_in_; }
  std::size_t size() const { return layers_.size(); }

  py::tuple run(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases) const {
    if (int(py::len(inputs)) != n_in_)
      throw py::value_error(cat(kRun, ": expected ", n_in_, " inputs, got ", py::len(inputs)));
    if (py::len(weights) != layers_.size() || py::len(biases) != layers_.size())
      throw py::value_error(cat(kRun, ": expected ", layers_.size(), " weights and biases, got ", py::len(weights),
                                " and ", py::len(biases)));
    FloatKind k;
    primary_array(inputs[0], kRun, "inputs[0]", k);
    return k == FloatKind::f32 ? run_t<float>(inputs, weights, biases) : run_t<double>(inputs, weights, biases);
  }

 private:
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
  py::tuple run_t(const py::sequence& inputs, const py::sequence& weights, const py::sequence& biases) const {
    const std::size_t L = layers_.size(), S = std::size_t(n_in_) + L;
    std::vector<py::array_t<T, py::array::c_style>> ins, ws, bs;
    std::vector<const T*> bptr(L, nullptr);
    std::vector<std::array<index_t, 4>> shape(S);
    std::vector<Conv2dShape> cs(L);
    std::vector<WeightKey> keys(L);
    for (int s = 0; s < n_in_; ++s) {
      ins.push_back(exact<T>(inputs[std::size_t(s)], cat("inputs[", s, "]")));
      const auto& a = ins.back();
      check_ndim(a, 4, kRun, "an input", "(N, C, H, W)");
      check_nonempty(a, kRun, "an input");
      check_dims(a, kRun, "an input");
      shape[std::size_t(s)] = {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
    }
    for (std::size_t i = 0; i < L; ++i) {
      const ChainLayer& l = layers_[i];
      const std::string wn = cat("weights[", i, "]");
      ws.push_back(exact<T>(weights[i], wn));
      const auto& w = ws.back();
      check_ndim(w, 4, kRun, wn.c_str(), "(F, C/groups, KH, KW)");
      check_nonempty(w, kRun, wn.c_str());
      check_dims(w, kRun, wn.c_str());
      const auto& x = shape[std::size_t(l.in)];
      const auto where = [&] {
        return cat("layer ", i, ": input shape (", x[0], ", ", x[1], ", ", x[2], ", ", x[3], "), w shape ",
                   shape_str(w));
      };
      cs[i] = make_shape(kRun, x[0], x[1], x[2], x[3], w.shape(0), w.shape(1), w.shape(2), w.shape(3), l.p, where);
      const Conv2dShape& s = cs[i];
      if (!biases[i].is_none()) {
        bs.push_back(exact<T>(biases[i], cat("biases[", i, "]")));
        if (bs.back().ndim() != 1 || bs.back().shape(0) != s.F)
          throw py::value_error(cat(kRun, ": biases[", i, "] must have shape (", s.F, ",), got ",
                                    shape_str(bs.back())));
        bptr[i] = bs.back().data();
      }
      shape[std::size_t(n_in_) + i] = {s.N, s.F, s.OH, s.OW};
      if (l.res >= 0 && shape[std::size_t(l.res)] != shape[std::size_t(n_in_) + i])
        throw py::value_error(cat(kRun, ": layer ", i, "'s residual does not have its output's shape; ", where()));
      keys[i] = immutable_key(w);
    }
    // the outputs, then everything else without the GIL
    std::vector<T*> ptr(S, nullptr);
    for (int s = 0; s < n_in_; ++s) ptr[std::size_t(s)] = const_cast<T*>(ins[std::size_t(s)].data());
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
    std::vector<std::size_t> bytes(S, 0);
    for (std::size_t s = std::size_t(n_in_); s < S; ++s)
      if (ptr[s] == nullptr) bytes[s] = checked_output_bytes({py::ssize_t(shape[s][0]), py::ssize_t(shape[s][1]),
                                                               py::ssize_t(shape[s][2]), py::ssize_t(shape[s][3])},
                                                              sizeof(T), dtype_name<T>());
    {
      py::gil_scoped_release release;
      std::vector<SlotMemory> mem(S);
      for (std::size_t i = 0; i < L; ++i) {
        const ChainLayer& l = layers_[i];
        const std::size_t o = std::size_t(n_in_) + i;
        if (ptr[o] == nullptr) ptr[o] = static_cast<T*>(mem[o].acquire(bytes[o]));
        const T* x = ptr[std::size_t(l.in)];
        const T* w = ws[i].data();
        const T* b = bptr[i];
        const WeightKeyScope key(keys[i]);
        if (l.res >= 0)
          conv2d_forward_add_cpu<T>(ptr[o], x, w, b, ptr[std::size_t(l.res)], cs[i], l.relu);
        else if (l.has_act)
          conv2d_forward_act_cpu<T>(ptr[o], nullptr, x, w, b, cs[i], l.act);
        else
          conv2d_forward_cpu<T>(ptr[o], x, w, b, cs[i], l.relu);
        for (std::size_t s = std::size_t(n_in_); s <= o; ++s)
          if (last_[s] == int(i)) mem[s].release();
      }
    }
    py::tuple result(outs.size());
    for (std::size_t j = 0; j < outs.size(); ++j) result[j] = outs[j];
    return result;
  }

  int n_in_;
  std::vector<ChainLayer> layers_;
  std::vector<int> outputs_;
  std::vector<int> last_;
};

}  // namespace

void register_conv_chain(py::module_& m) {
  py::class_<ConvChain>(m, "ConvChain",
                        "Forward convolutions run one after another in one call (Model.forward's passes that\n"
                        "keep nothing for a backward pass).\n\n"
                        "ConvChain(n_inputs, layers, outputs). Slots 0 .. n_inputs - 1 are the inputs; layer i\n"
                        "writes slot n_inputs + i. Each layer is (input slot, residual slot or -1, stride,\n"
                        "padding, dilation, groups, activation, lo, hi, relu): conv2d_forward (activation None),\n"
                        "conv2d_forward_act (activation 'relu', 'clamp', 'hardswish' or 'silu', with lo, hi)\n"
                        "or, with a residual slot, conv2d_forward_add; relu as those functions take it.\n"
                        "outputs: the slots run() returns, in order.")
      .def(py::init<int, const py::sequence&, const py::sequence&>(), py::arg("n_inputs"), py::arg("layers"),
           py::arg("outputs"))
      .def("run", &ConvChain::run, py::arg("inputs"), py::arg("weights"), py::arg("biases"),
           "run(inputs, weights, biases) -> tuple of the output slots' arrays. inputs: n_inputs arrays\n"
           "(N, C, H, W); weights, biases: one per layer (a bias may be None), all of the first input's\n"
           "dtype, float32 or float64 (nothing is cast: a TypeError names the array that is not).\n"
           "Every shape is checked before any layer runs; the values are those of the layers called\n"
           "one by one.")
      .def_property_readonly("n_inputs", &ConvChain::n_inputs)
      .def("__len__", &ConvChain::size);
}

}  // namespace gradvis
