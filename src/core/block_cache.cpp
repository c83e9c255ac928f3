// Large heap blocks kept for reuse (see block_cache.h).
#include "cairn/core/block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>

namespace cairn::core {
namespace {

// Large blocks are mappings of their own, not malloc's: one handed back returns its pages to
// the kernel at once, and none of them sits in malloc's heap, where a block handed back
// would stay resident as a hole the small allocations split, and a kept one would pin the
// small blocks freed below it as holes too.
void* map_block(size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void unmap_block(void* p, size_t n) { ::munmap(p, n); }

}  // namespace

BlockCache::~BlockCache() { release_free(); }

void* BlockCache::allocate(size_t n) {
  if (n < kMinBytes) {
    void* p = nullptr;
    return ::posix_memalign(&p, kAlignment, n == 0 ? 1 : n) == 0 ? p : nullptr;
  }
  MutexLock lock(mu_);
  // The smallest kept block of at least n bytes, if it is at most 2n.
  auto it = free_.lower_bound(n);
  void* p = nullptr;
  size_t size = n;
  if (it != free_.end() && it->first / 2 <= n) {
    p = it->second.ptr;
    size = it->first;
    free_.erase(it);
    stats_.free_bytes -= int64_t(size);
    ++stats_.hits;
  } else {
    trim_for(n);
    p = map_block(n);
    if (p == nullptr) {
      // Hand back every kept block and try once more before failing.
      release_free_locked();
      p = map_block(n);
      if (p == nullptr) return nullptr;
    }
    ++stats_.misses;
  }
  live_.emplace(p, size);
  stats_.live_bytes += int64_t(size);
  if (stats_.live_bytes > stats_.peak_live_bytes) stats_.peak_live_bytes = stats_.live_bytes;
  stats_.peak_held_bytes = std::max(stats_.peak_held_bytes, stats_.live_bytes + stats_.free_bytes);
  return p;
}

void BlockCache::trim_for(size_t n) {
  // Keep no more free than the most ever live at once (this request counted as live).
  const int64_t cap = std::max(stats_.peak_live_bytes, stats_.live_bytes + int64_t(n));
  while (!free_.empty() && stats_.free_bytes + int64_t(n) > cap) {
    auto oldest = free_.begin();
    for (auto it = std::next(free_.begin()); it != free_.end(); ++it)
      if (it->second.freed_at < oldest->second.freed_at) oldest = it;
    unmap_block(oldest->second.ptr, oldest->first);
    stats_.free_bytes -= int64_t(oldest->first);
    ++stats_.released;
    free_.erase(oldest);
  }
}

void BlockCache::deallocate(void* p) {
  if (p == nullptr) return;
  {
    MutexLock lock(mu_);
    auto it = live_.find(p);
    if (it != live_.end()) {
      const size_t size = it->second;
      live_.erase(it);
      stats_.live_bytes -= int64_t(size);
      if (!keeping_) {
        unmap_block(p, size);
        return;
      }
      stats_.free_bytes += int64_t(size);
      free_.emplace(size, Kept{p, ++clock_});
      return;
    }
  }
  std::free(p);  // a small block
}

void BlockCache::set_keeping(bool on) {
  MutexLock lock(mu_);
  keeping_ = on;
  if (!on) release_free_locked();
}

void BlockCache::release_free() {
  MutexLock lock(mu_);
  release_free_locked();
}

void BlockCache::release_free_locked() {
  for (auto& [size, kept] : free_) {
    unmap_block(kept.ptr, size);
    ++stats_.released;
  }
  free_.clear();
  stats_.free_bytes = 0;
}

BlockCache::Stats BlockCache::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

BlockCache& process_block_cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors outlive statics
  return *cache;
}

}  // namespace cairn::core
