// The BLAS library's own thread count. OpenBLAS runs GEMMs on threads of its own, whatever
// torch::set_num_threads says, so a process that means to use N cores must tell it too.
#pragma once

namespace cairn::core {

// The loaded BLAS's thread count (OpenBLAS: openblas_get_num_threads), or -1 when the BLAS
// in this process does not say.
int blas_num_threads();

// Sets it; false when the loaded BLAS has no such setting.
bool set_blas_num_threads(int n);

}  // namespace cairn::core
