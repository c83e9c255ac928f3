// BLAS thread count through the symbols OpenBLAS exports (looked up at run time, so that a
// build against another BLAS still links).
#include "cairn/core/blas_threads.h"

#include <dlfcn.h>

namespace cairn::core {

int blas_num_threads() {
  using Get = int (*)();
  auto get = reinterpret_cast<Get>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get ? get() : -1;
}

bool set_blas_num_threads(int n) {
  using Set = void (*)(int);
  auto set = reinterpret_cast<Set>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!set || n <= 0) return false;
  set(n);
  return true;
}

}  // namespace cairn::core
