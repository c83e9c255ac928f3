// libtorch's CPU allocator on the process's block cache (see block_cache_allocator.h).
#include "cairn/model/block_cache_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "cairn/core/block_cache.h"
#include "cairn/core/malloc_tuning.h"

namespace cairn::model {
namespace {

void release(void* p) { core::process_block_cache().deallocate(p); }
// Blocks below the cache's threshold come straight from malloc (block_cache.h): freed without
// the cache's lock and lookup, which most of a step's many small tensors would otherwise take.
void release_small(void* p) { std::free(p); }

class BlockCacheAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = core::process_block_cache().allocate(n);
    TORCH_CHECK(p != nullptr, "out of memory: could not allocate ", n, " bytes for a tensor");
    return {p, p, n < core::BlockCache::kMinBytes ? &release_small : &release,
            c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
};

std::atomic<bool> installed{false};

// A sanitizer must see every free: kept blocks would hide a tensor's use after free.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

}  // namespace

std::string install_block_cache_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    static BlockCacheAllocator* allocator = new BlockCacheAllocator();  // never destroyed
    // Above the default allocator's priority (0), so nothing registered later at 0 replaces it.
    c10::SetCPUAllocator(allocator, 1);
    installed = true;
  });
  return "tensors of at least " + std::to_string(core::BlockCache::kMinBytes >> 10) +
         " KiB freed in a step are kept to serve the next";
}

std::string use_training_allocator() {
  const core::AllocatorSetting glibc = core::keep_freed_memory();
  if (kSanitized) return glibc.description + "; no block cache under a sanitizer";
  if (core::malloc_defaults_requested()) return glibc.description;
  if (const char* d = std::getenv("CAIRN_BLOCK_CACHE"); d && std::strcmp(d, "0") == 0)
    return glibc.description + "; no block cache (CAIRN_BLOCK_CACHE=0)";
  return glibc.description + "; " + install_block_cache_allocator();
}

bool block_cache_allocator_installed() { return installed; }

}  // namespace cairn::model
