// Large heap blocks kept for reuse (see block_cache.h).
#include "cairn/core/block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <utility>

namespace cairn::core {
namespace {

// Large blocks are mappings of their own, not malloc's: one handed back returns its pages to
// the kernel at once, and none of them sits in malloc's heap, where a block handed back
// would stay resident as a hole the small allocations split, and a kept one would pin the
// small blocks freed below it as holes too.
//
// A block of 2 MiB or more asks for transparent huge pages (where the kernel has them for
// madvise), which are faulted in 2 MiB at a time: mapping, writing and unmapping 84 MiB took
// 547 ms in 4 KiB pages and 9 ms in huge ones on the machine this was measured on (a virtual
// machine, whose page faults are dear). That is what lets the cache hand back the blocks no
// request is taking (trim_for) instead of keeping them for a request that may never come.
constexpr size_t kHugePage = BlockCache::kHugePageBytes;

void* map_block(size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (n >= kHugePage) ::madvise(p, n, MADV_HUGEPAGE);  // advice: its failure changes nothing
  return p;
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
  // Hold no more, live and kept, than the most ever live at once (this request counted as
  // live), so that at a step's peak no kept block sits idle beside the live ones: kept blocks
  // in huge pages go, least recently freed first, while they exceed it. Smaller blocks are
  // mapped again 4 KiB at a time, dearly (a context-parallel LLaMA rank mapped 14 blocks of
  // 96 KiB to 1 MiB again each step, 5% of its step time): they go, least recently freed first,
  // only while the kept blocks alone exceed that peak.
  const int64_t cap = std::max(stats_.peak_live_bytes, stats_.live_bytes + int64_t(n));
  auto before = [](const auto& a, const auto& b) {
    return std::pair(a.first < kHugePage, a.second.freed_at) <
           std::pair(b.first < kHugePage, b.second.freed_at);
  };
  while (!free_.empty()) {
    auto victim = free_.begin();
    for (auto it = std::next(free_.begin()); it != free_.end(); ++it)
      if (before(*it, *victim)) victim = it;
    const int64_t live = hold_to_peak_ && victim->first >= kHugePage ? stats_.live_bytes : 0;
    if (live + stats_.free_bytes + int64_t(n) <= cap) break;
    unmap_block(victim->second.ptr, victim->first);
    stats_.free_bytes -= int64_t(victim->first);
    ++stats_.released;
    free_.erase(victim);
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

void BlockCache::set_hold_to_peak(bool on) {
  MutexLock lock(mu_);
  hold_to_peak_ = on;
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

void BlockCache::reset_peaks() {
  MutexLock lock(mu_);
  stats_.peak_live_bytes = stats_.live_bytes;
  stats_.peak_held_bytes = stats_.live_bytes + stats_.free_bytes;
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
