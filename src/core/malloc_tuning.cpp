// glibc allocator settings for training processes (see malloc_tuning.h).
#include "cairn/core/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "cairn/core/block_cache.h"

namespace cairn::core {

AllocatorSetting keep_freed_memory() {
  for (const char* v :
       {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"})
    if (std::getenv(v) != nullptr) return {false, std::string("allocator left as set by ") + v};
  if (const char* t = std::getenv("GLIBC_TUNABLES"); t && std::strstr(t, "glibc.malloc."))
    return {false, "allocator left as set by GLIBC_TUNABLES"};
  if (malloc_defaults_requested())
    return {false, "allocator left at glibc's defaults (CAIRN_MALLOC_DEFAULTS=1)"};
  const bool mmap_ok = ::mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1;
  const bool trim_ok = ::mallopt(M_TRIM_THRESHOLD, 0x7fffffff) == 1;
  const bool arena_ok = ::mallopt(M_ARENA_MAX, 1) == 1;
  if (mmap_ok && trim_ok && arena_ok)
    return {true, "allocator keeps freed blocks below 1 GiB for reuse, in one arena"};
  return {false, "allocator settings refused by glibc (mmap threshold " +
                     std::string(mmap_ok ? "set" : "refused") + ", trim threshold " +
                     std::string(trim_ok ? "set" : "refused") + ", arena limit " +
                     std::string(arena_ok ? "set" : "refused") + ")"};
}

bool malloc_defaults_requested() {
  const char* d = std::getenv("CAIRN_MALLOC_DEFAULTS");
  return d != nullptr && std::strcmp(d, "1") == 0;
}

int64_t heap_bytes_in_use() {
  const struct mallinfo2 m = ::mallinfo2();
  // The block cache's large blocks are mappings of its own, outside malloc's counts: the ones
  // handed out count, the ones it keeps hold nothing.
  return int64_t(m.uordblks) + int64_t(m.hblkhd) + process_block_cache().stats().live_bytes;
}

int64_t heap_size_bytes() { return int64_t(::mallinfo2().arena); }

void return_free_heap() { ::malloc_trim(0); }

}  // namespace cairn::core
