#include "bindings/register.h"

namespace gradvis {
void register_affine(pybind11::module_& m) { (void)m; }
}  // namespace gradvis
