// A cache of large memory blocks kept from one training step to the next. A step allocates and
// frees the same large tensors every time (the head's chunk of logits, table-sized gradients,
// activations); handed back to malloc, each freed block is split by the small allocations made
// meanwhile, the next request of that size no longer fits, and the heap grows by such blocks
// for several steps (the demo GPT-2's GPipe stage: 586 MB resident after its first step, 754 MB
// after its fourth). Kept here instead, a freed block serves the next request it fits, so the
// resident memory stops growing after the first step and follows the step's live bytes.
//
// Blocks of at least kMinBytes are kept; smaller ones go straight to malloc and free. A
// request takes the smallest free block of at least its size and at most twice it; otherwise
// a new block is mapped, and free blocks are handed back, least recently freed first, until
// the blocks held (live, kept and the new one) are no more than the most bytes ever live at
// once. So at a step's peak no kept block sits idle beside the live ones: the resident memory
// is what the step uses at once, which a cost model can count. A step that repeats itself
// stops allocating after its first run; a block that no later request fits (a gradient
// bucket freed after its reduction, a table-sized gradient at backward's end) is handed back
// when the next step's requests need room, and mapped again when asked for, in huge pages
// (see map_block).
//
// Each large block is an anonymous mapping of its own, not a piece of malloc's heap: a block
// handed back returns its pages to the kernel at once, where in the heap it stayed resident as
// a hole for small allocations to split. kMinBytes is low enough that a model-parallel rank's
// activations (a quarter of the demo's: 196 KB) are large: below 256 KiB they went to malloc,
// whose heap then grew by 0.4 to 16 MB during the steps depending on the layout, which no cost
// model sees; at 64 KiB it grew by 4.5 MB in each layout measured (dp=2, tp=2 x cp=2 Ulysses,
// dp=2 x tp=2 with sp, cp=4).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "cairn/core/mutex.h"

namespace cairn::core {

class BlockCache {
 public:
  static constexpr size_t kMinBytes = size_t(1) << 16;  // 64 KiB
  static constexpr size_t kAlignment = 64;
  // Blocks of this size or more are mapped in transparent huge pages and handed back first;
  // smaller kept blocks go only while the kept ones alone exceed the peak (see trim_for).
  static constexpr size_t kHugePageBytes = size_t(2) << 20;

  struct Stats {
    int64_t live_bytes = 0;       // large blocks handed out and not yet returned
    int64_t free_bytes = 0;       // large blocks kept for reuse
    int64_t peak_live_bytes = 0;  // the most live_bytes has been
    int64_t hits = 0;             // large requests served from kept blocks
    int64_t misses = 0;           // large requests that mapped a new block
    int64_t released = 0;         // kept blocks handed back to the kernel
    int64_t peak_held_bytes = 0;  // the most live_bytes + free_bytes has been
  };

  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache();  // hands every kept block back; live ones stay their holders'

  // At least `n` bytes aligned to kAlignment, or nullptr when no memory is left (n = 0 gives a
  // valid pointer, as malloc may).
  void* allocate(size_t n);
  // Returns a block from allocate (nullptr is ignored). A block of fewer than kMinBytes comes
  // straight from malloc and may be handed to free() instead.
  void deallocate(void* p);
  // Hands every kept free block back to the kernel.
  void release_free();
  // Whether freed blocks are kept (on by default). Off hands back the kept ones and frees the
  // others as they come: for a phase whose freed blocks are of sizes the steps do not ask for
  // (building a job: whole parameters before their slices or shards were taken), each of
  // which would otherwise serve a later request of down to half its size, and hold it in a
  // block twice as large for the job's life.
  void set_keeping(bool on);
  // Whether the blocks held, live and kept, are bounded by the peak of live bytes (on, the
  // default) or only the kept ones are (off: up to twice the peak, as the cache was first).
  // Off is for timing one part of a step alone (planner::profile_model): there the part's own
  // blocks set the peak, far below a step's, and held to it the part maps blocks again in
  // every repetition that a step keeps (the demo's head timed 21.5 ms + 770 us a token so,
  // against 13.9 ms + 681 us).
  void set_hold_to_peak(bool on);
  // Starts the peaks (peak_live_bytes, peak_held_bytes) again from what is held now: for a
  // phase whose blocks the steps after it do not ask for (the planner's profile in rank 0's
  // process), whose peak would otherwise let the cache keep that many bytes for the job's life.
  void reset_peaks();
  Stats stats() const;

 private:
  struct Kept {
    void* ptr;
    uint64_t freed_at;  // a counter, for least recently freed first
  };
  void trim_for(size_t n) CAIRN_REQUIRES(mu_);
  void release_free_locked() CAIRN_REQUIRES(mu_);

  mutable Mutex mu_;
  std::unordered_map<void*, size_t> live_ CAIRN_GUARDED_BY(mu_);  // large blocks out: their size
  std::multimap<size_t, Kept> free_ CAIRN_GUARDED_BY(mu_);        // kept blocks by size
  uint64_t clock_ CAIRN_GUARDED_BY(mu_) = 0;
  bool keeping_ CAIRN_GUARDED_BY(mu_) = true;
  bool hold_to_peak_ CAIRN_GUARDED_BY(mu_) = true;
  Stats stats_ CAIRN_GUARDED_BY(mu_);
};

// The process's cache, used by the tensor allocator training processes install
// (model::install_block_cache_allocator); never destroyed.
BlockCache& process_block_cache();

}  // namespace cairn::core
