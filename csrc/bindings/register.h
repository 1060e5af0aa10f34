// One registration function per binding file; module.cpp calls them all.
#pragma once
#include <pybind11/pybind11.h>

namespace gradvis {
void register_gemm(pybind11::module_& m);
void register_conv2d(pybind11::module_& m);
void register_conv_chain(pybind11::module_& m);
void register_affine(pybind11::module_& m);
void register_pool2d(pybind11::module_& m);
void register_activation(pybind11::module_& m);
void register_batchnorm(pybind11::module_& m);
void register_blur(pybind11::module_& m);
void register_resample(pybind11::module_& m);
void register_pointwise(pybind11::module_& m);
void register_weight_key(pybind11::module_& m);
}  // namespace gradvis
