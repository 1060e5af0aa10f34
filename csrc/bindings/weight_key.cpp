// Immutable weights (weight_key.h) and the packed-weights cache's settings.
#include "bindings/weight_key.h"

#include <unordered_map>

#include "bindings/register.h"

namespace gradvis {
namespace {

// The array over a bytes object -> its token (touched with the GIL held only).
std::unordered_map<PyObject*, std::uint64_t>& registry() {
  static auto* r = new std::unordered_map<PyObject*, std::uint64_t>();  // never destroyed
  return *r;
}
std::uint64_t g_next_token = 0;

std::uint64_t token_of(PyObject* root) {
  auto& r = registry();
  auto it = r.find(root);
  if (it != r.end()) return it->second;
  const std::uint64_t token = ++g_next_token;
  // When the array goes, so do its token and whatever was kept from its weights
  // (a new array at its address gets a new token).
  py::cpp_function forget([root, token](py::handle wr) {
    auto& reg = registry();
    auto at = reg.find(root);
    if (at != reg.end() && at->second == token) reg.erase(at);
    drop_weight_token(token);
    wr.dec_ref();
  });
  PyObject* wr = PyWeakref_NewRef(root, forget.ptr());
  if (!wr) {  // not weakly referenceable (never so for an ndarray): no key
    PyErr_Clear();
    return 0;
  }
  r.emplace(root, token);
  return token;
}

}  // namespace

WeightKey immutable_key(const py::array& w) {
  if (w.writeable()) return {};
  PyObject* cur = w.ptr();
  for (int depth = 0; depth < 64; ++depth) {
    PyObject* base = py::detail::array_proxy(cur)->base;
    if (!base) return {};  // owns its data: it could be made writeable again
    if (PyBytes_CheckExact(base)) {
      const std::uint64_t token = token_of(cur);
      return token ? WeightKey{token, w.data()} : WeightKey{};
    }
    if (!py::isinstance<py::array>(base)) return {};  // a buffer whose bytes may change
    cur = base;
  }
  return {};
}

void register_weight_key(py::module_& m) {
  m.def(
      "weight_token",
      [](const py::array& w) { return immutable_key(w).token; }, py::arg("w"),
      "The token by which kernels keep what they prepare from the immutable array w (a read-only view\n"
      "of a bytes object, as Model.freeze makes them), without reading it on each call; 0 for any\n"
      "other array. Views of one such array share its token.");
  m.def(
      "set_packed_cache_limit",
      [](py::object nbytes) {
        set_packed_cache_limit(
            std::size_t(int_arg(nbytes, "set_packed_cache_limit", "nbytes", 0, std::int64_t(1) << 62)));
      },
      py::arg("nbytes"),
      "Limit the memory kept for immutable (frozen) weights packed for the convolution kernels (default\n"
      "512 MiB; at most half of it per layer). Lowering it frees the least recently used; 0 frees all\n"
      "and keeps none (the weights are then packed on every call, as for writeable weights).");
  m.def(
      "packed_cache_info",
      []() {
        const PackedCacheInfo i = packed_cache_info();
        py::dict d;
        d["limit"] = i.limit;
        d["bytes"] = i.bytes;
        d["entries"] = i.entries;
        return d;
      },
      "The packed-weights cache of frozen weights: {'limit': bytes allowed, 'bytes': bytes held,\n"
      "'entries': packed layers held}.");
}

}  // namespace gradvis
