#include "bindings/register.h"

namespace gradvis {
void register_gemm(pybind11::module_& m) { (void)m; }
}  // namespace gradvis
