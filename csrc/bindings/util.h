// Helpers shared by the binding files: argument checking with messages that
// name the argument and its shape, dtype dispatch, and conversion of any
// array-like to a C-contiguous array of the kernel's dtype.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/block_cache.h"
#include "common.h"

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace gradvis {
namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

template <class... Args>
inline std::string cat(Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

// numpy's NPY_ARRAY_ALIGNED, passed to PyArray_FromAny through array_t's flags.
constexpr int kNpyAligned = 0x0100;

// The floating dtype a kernel runs in, taken from its primary input.
enum class FloatKind { f32, f64 };

inline FloatKind float_kind(const py::handle& obj, const char* fn, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(cat(fn, ": ", name, " must be a numpy array, got ", std::string(py::str(py::type::of(obj)))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  const auto k = a.dtype().kind();
  const auto sz = a.dtype().itemsize();
  if (k == 'f' && sz == 4) return FloatKind::f32;
  if (k == 'f' && sz == 8) return FloatKind::f64;
  throw py::type_error(cat(fn, ": ", name, " must be float32 or float64, got dtype ",
                           std::string(py::str(a.dtype())), " with shape ", shape_str(a)));
}

// The primary input: any array-like, which must hold float32 or float64.
inline py::array primary_array(const py::handle& obj, const char* fn, const char* name, FloatKind& kind) {
  py::array a;
  if (py::isinstance<py::array>(obj)) {
    a = py::reinterpret_borrow<py::array>(obj);
  } else {
    a = py::array::ensure(obj);
    if (!a) {
      PyErr_Clear();
      throw py::type_error(cat(fn, ": ", name, " must be an array of float32 or float64, got ",
                               std::string(py::str(py::type::of(obj)))));
    }
  }
  kind = float_kind(a, fn, name);
  return a;
}

// Any array-like -> C-contiguous, aligned array of T (copies only when needed:
// a view at an odd byte offset, np.frombuffer(buf, offset=1), is copied, as the
// SIMD kernels load whole elements). Integers convert; complex numbers are
// refused rather than silently dropping their imaginary part.
template <class T>
inline py::array_t<T, py::array::c_style> as_array(const py::handle& obj, const char* fn, const char* name) {
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    // already what the kernels read (every layer's arrays on every pass): taken as
    // is, without numpy's conversion machinery (a third of a small layer's call)
    constexpr int kReady = py::array::c_style | kNpyAligned;
    if ((a.flags() & kReady) == kReady && a.dtype().is(py::dtype::of<T>()))
      return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
    const auto k = a.dtype().kind();
    if (k == 'c' || k == 'O' || k == 'U' || k == 'S' || k == 'V' || k == 'M' || k == 'm')
      throw py::type_error(cat(fn, ": ", name, " has unsupported dtype ", std::string(py::str(a.dtype()))));
  }
  auto out = py::array_t<T, py::array::c_style | py::array::forcecast | kNpyAligned>::ensure(obj);
  if (!out) {
    PyErr_Clear();
    throw py::type_error(cat(fn, ": ", name, " cannot be converted to a numeric array"));
  }
  return out;
}

inline void check_ndim(const py::array& a, int ndim, const char* fn, const char* name, const char* layout) {
  if (a.ndim() != ndim)
    throw py::value_error(cat(fn, ": ", name, " must be ", ndim, "-D ", layout, ", got shape ", shape_str(a)));
}

inline void check_nonempty(const py::array& a, const char* fn, const char* name) {
  if (a.size() == 0) throw py::value_error(cat(fn, ": ", name, " is empty (shape ", shape_str(a), ")"));
}

// Integer arguments: a Python int or anything with __index__ (numpy integer
// scalars, 0-d integer arrays); floats, bools and strings are refused.
inline std::int64_t int_value(const py::handle& h, const py::handle& whole, const char* fn, const char* name,
                              const char* expect) {
  auto bad = [&]() {
    return py::type_error(cat(fn, ": ", name, " must be ", expect, ", got ", std::string(py::repr(whole))));
  };
  if (py::isinstance<py::float_>(h) || PyBool_Check(h.ptr()) || !PyIndex_Check(h.ptr())) throw bad();
  auto idx = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!idx) {
    PyErr_Clear();
    throw bad();
  }
  const long long v = PyLong_AsLongLong(idx.ptr());
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error(cat(fn, ": ", name, " is out of range: ", std::string(py::repr(whole))));
  }
  return std::int64_t(v);
}

// The values of a Python int or a tuple of 1 to 4 Python ints (what the layers
// pass on every call), without int_values' checks and allocations: their count,
// or 0 for anything else (int_values then decides). Overflowing ints give 0.
inline int exact_ints(const py::handle& obj, std::int64_t (&out)[4]) {
  PyObject* o = obj.ptr();
  auto one = [](PyObject* item, std::int64_t& v) {
    if (!PyLong_CheckExact(item)) return false;
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return false;
    }
    v = std::int64_t(x);
    return true;
  };
  if (PyLong_CheckExact(o)) return one(o, out[0]) ? 1 : 0;
  if (!PyTuple_CheckExact(o)) return 0;
  const Py_ssize_t n = PyTuple_GET_SIZE(o);
  if (n < 1 || n > 4) return 0;
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!one(PyTuple_GET_ITEM(o, i), out[i])) return 0;
  return int(n);
}

// An int, or a sequence of ints (the caller checks how many).
inline std::vector<std::int64_t> int_values(const py::handle& obj, const char* fn, const char* name,
                                            const char* expect) {
  std::int64_t fast[4];
  if (const int n = exact_ints(obj, fast)) return std::vector<std::int64_t>(fast, fast + n);
  const bool seq = py::isinstance<py::sequence>(obj) && !py::isinstance<py::str>(obj) &&
                   !(py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() == 0);
  if (!seq) return {int_value(obj, obj, fn, name, expect)};
  std::vector<std::int64_t> v;
  for (auto item : py::reinterpret_borrow<py::sequence>(obj)) v.push_back(int_value(item, obj, fn, name, expect));
  return v;
}

// One int in [lo, hi].
inline std::int64_t int_arg(const py::handle& obj, const char* fn, const char* name, std::int64_t lo,
                            std::int64_t hi) {
  const std::int64_t v = int_value(obj, obj, fn, name, "an int");
  if (v < lo || v > hi)
    throw py::value_error(cat(fn, ": ", name, " must be in [", lo, ", ", hi, "], got ", v));
  return v;
}

inline std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

// The bytes of an output of this shape, refused (ValueError naming the shape)
// when the count overflows or is above the memory limit (common.h).
inline std::size_t checked_output_bytes(const std::vector<py::ssize_t>& shape, std::size_t item,
                                        const char* dtype) {
  std::vector<std::int64_t> dims(shape.begin(), shape.end());
  std::size_t bytes = 0;
  if (!checked_bytes(dims.data(), int(dims.size()), item, bytes))
    throw py::value_error(cat("an output of shape ", shape_str(shape), " (", dtype,
                              ") is too large: its size overflows"));
  if (bytes > memory_limit())
    throw py::value_error(cat("an output of shape ", shape_str(shape), " (", dtype, ") needs ", bytes,
                              " bytes, more than the memory limit of ", memory_limit(),
                              " bytes (gradvis.set_memory_limit)"));
  return bytes;
}

template <class T>
inline const char* dtype_name() {
  if (std::is_same<T, float>::value) return "float32";
  if (std::is_same<T, double>::value) return "float64";
  if (std::is_same<T, std::int64_t>::value) return "int64";
  return "?";
}

// Allocate an uninitialized C-contiguous output, after checking its size (see
// checked_output_bytes). Large ones come from the output block cache
// (block_cache.h): the array's base is a capsule that returns the block to the
// cache when the array (and every view of it) is gone.
template <class T>
inline py::array_t<T> empty_array(std::vector<py::ssize_t> shape) {
  const std::size_t bytes = checked_output_bytes(shape, sizeof(T), dtype_name<T>());
  if (bytes < kCachedMinBytes) return py::array_t<T>(shape);
  CachedBlock* b = block_acquire(bytes);
  py::capsule owner;
  try {
    owner = py::capsule(b, [](void* p) { block_release(static_cast<CachedBlock*>(p)); });
  } catch (...) {
    block_release(b);
    throw;
  }
  return py::array_t<T>(shape, static_cast<T*>(b->ptr), owner);
}

// empty_array of a's shape.
template <class T>
inline py::array_t<T> empty_like(const py::array& a) {
  return empty_array<T>(shape_of(a));
}

// mask_obj as activation_mask's words for `words` words (what names the array it
// is for, in errors), kept alive by the caller's reference to mask_obj
template <class Where>
const std::uint64_t* mask_words(const py::handle& mask_obj, const char* fn, index_t words, Where&& what) {
  if (!py::isinstance<py::array>(mask_obj) ||
      !py::reinterpret_borrow<py::array>(mask_obj).dtype().is(py::dtype::of<std::uint64_t>()) ||
      !(py::reinterpret_borrow<py::array>(mask_obj).flags() & py::array::c_style))
    throw py::type_error(cat(fn, ": mask must be the uint64 array of activation_mask, got ",
                             std::string(py::str(py::type::of(mask_obj).attr("__name__"))),
                             py::isinstance<py::array>(mask_obj)
                                 ? cat(" of dtype ", std::string(py::str(mask_obj.attr("dtype"))))
                                 : std::string()));
  const auto mask = py::reinterpret_borrow<py::array>(mask_obj);
  if (mask.ndim() != 1 || index_t(mask.shape(0)) != words)
    throw py::value_error(cat(fn, ": mask must hold ", words, " words (activation_mask of ", what(), "), got shape ",
                              shape_str(mask)));
  return static_cast<const std::uint64_t*>(mask.data());
}

}  // namespace gradvis
