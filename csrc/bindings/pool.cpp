#include "bindings/register.h"

namespace gradvis {
void register_pool(pybind11::module_& m) { (void)m; }
}  // namespace gradvis
