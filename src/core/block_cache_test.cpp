#include "cairn/core/block_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "cairn/core/malloc_tuning.h"
#include "cairn/core/proc.h"

namespace cairn::core {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

TEST(BlockCache, AFreedLargeBlockServesTheNextRequestItFits) {
  BlockCache cache;
  void* a = cache.allocate(8 * kMiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % BlockCache::kAlignment, 0u);
  std::memset(a, 1, 8 * kMiB);
  cache.deallocate(a);
  EXPECT_EQ(cache.stats().free_bytes, int64_t(8 * kMiB));
  EXPECT_EQ(cache.stats().live_bytes, 0);
  // Smaller but more than half: the same block, counted at its whole size.
  void* b = cache.allocate(5 * kMiB);
  EXPECT_EQ(b, a);
  EXPECT_EQ(cache.stats().live_bytes, int64_t(8 * kMiB));
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().misses, 1);
  cache.deallocate(b);
  // Half or less would waste more than it takes: a new block.
  void* c = cache.allocate(4 * kMiB - 1);
  EXPECT_NE(c, a);
  EXPECT_EQ(cache.stats().misses, 2);
  cache.deallocate(c);
}

TEST(BlockCache, TheSmallestFittingBlockIsTaken) {
  BlockCache cache;
  void* big = cache.allocate(16 * kMiB);
  void* mid = cache.allocate(10 * kMiB);
  cache.deallocate(big);
  cache.deallocate(mid);
  EXPECT_EQ(cache.allocate(9 * kMiB), mid);
  EXPECT_EQ(cache.allocate(9 * kMiB), big);
  EXPECT_EQ(cache.stats().live_bytes, int64_t(26 * kMiB));
}

TEST(BlockCache, SmallBlocksAreNotKept) {
  BlockCache cache;
  void* p = cache.allocate(BlockCache::kMinBytes - 1);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % BlockCache::kAlignment, 0u);
  EXPECT_EQ(cache.stats().live_bytes, 0);
  cache.deallocate(p);
  EXPECT_EQ(cache.stats().free_bytes, 0);
  void* z = cache.allocate(0);
  EXPECT_NE(z, nullptr);
  cache.deallocate(z);
  cache.deallocate(nullptr);
}

// The head's step of ARepeatedStepStopsAllocating with the activation asked for before the
// last chunk of logits, which then finds the logits' block handed back or kept depending on
// set_hold_to_peak.
void step_asking_for_the_activation_first(BlockCache& cache) {
  void* logits = cache.allocate(128 * kMiB);
  void* table = cache.allocate(38 * kMiB);
  cache.deallocate(logits);
  void* act = cache.allocate(3 * kMiB);
  void* last_chunk = cache.allocate(77 * kMiB);
  cache.deallocate(last_chunk);
  cache.deallocate(act);
  cache.deallocate(table);
}

// A step that repeats itself (the same sizes in the same order), each request fitting a block
// freed before it, allocates only in its first run; its kept blocks total what was live at
// once.
TEST(BlockCache, ARepeatedStepStopsAllocating) {
  BlockCache cache;
  auto step = [&] {
    void* logits = cache.allocate(128 * kMiB);
    void* table = cache.allocate(38 * kMiB);
    cache.deallocate(logits);
    void* last_chunk = cache.allocate(77 * kMiB);  // the last, shorter chunk of logits
    void* act = cache.allocate(3 * kMiB);
    cache.deallocate(act);
    cache.deallocate(last_chunk);
    cache.deallocate(table);
  };
  step();
  const BlockCache::Stats first = cache.stats();
  for (int i = 0; i < 5; ++i) step();
  const BlockCache::Stats after = cache.stats();
  EXPECT_EQ(after.misses, first.misses);
  EXPECT_EQ(after.released, 0);
  EXPECT_EQ(after.free_bytes, first.free_bytes);
  // The last chunk took the logits' block: counted at its size, beside the table and act.
  EXPECT_EQ(after.free_bytes, int64_t((128 + 38 + 3) * kMiB));
  EXPECT_EQ(after.peak_live_bytes, int64_t((128 + 38 + 3) * kMiB));
  EXPECT_EQ(after.peak_held_bytes, after.peak_live_bytes);
}

// The same step with the activation asked for before the last chunk: the logits' kept block
// would make the blocks held exceed the step's peak, so it is handed back, and the last chunk
// maps a block again. Every step then maps the same blocks again, and holds no more than what
// was live at once.
TEST(BlockCache, AStepThatWouldHoldMoreThanItsPeakMapsAgain) {
  BlockCache cache;
  auto step = [&] { step_asking_for_the_activation_first(cache); };
  step();
  step();
  std::vector<int64_t> mapped;
  for (int i = 0; i < 4; ++i) {
    const int64_t before = cache.stats().misses;
    step();
    mapped.push_back(cache.stats().misses - before);
    const BlockCache::Stats s = cache.stats();
    EXPECT_EQ(s.peak_live_bytes, int64_t((128 + 38) * kMiB)) << "step " << i;
    EXPECT_EQ(s.peak_held_bytes, s.peak_live_bytes) << "step " << i;
  }
  EXPECT_GT(mapped[0], 0);
  EXPECT_EQ(mapped, std::vector<int64_t>(4, mapped[0])) << "the same blocks each step";
}

// Requests that never repeat (growing sizes) do not pile up: the blocks held, live and kept,
// never exceed the most ever live at once.
TEST(BlockCache, KeptBlocksStayBoundedByThePeakLive) {
  BlockCache cache;
  for (size_t i = 0; i < 40; ++i) {
    void* p = cache.allocate((4 + 3 * i) * kMiB);
    void* q = cache.allocate((200 + 50 * i) * kMiB / 10);
    cache.deallocate(p);
    cache.deallocate(q);
    const BlockCache::Stats s = cache.stats();
    EXPECT_LE(s.live_bytes + s.free_bytes, s.peak_live_bytes) << "after round " << i;
  }
  EXPECT_GT(cache.stats().released, 0);
  cache.release_free();
  EXPECT_EQ(cache.stats().free_bytes, 0);
}

// ZeRO-2's pattern: backward frees the activations one by one and stages a gradient bucket
// that none of them fits; the bucket is freed once reduced, and the next forward's requests
// do not fit it. Kept beside them it would be idle at the next step's peak; it is handed back
// instead, and the blocks held never exceed what is live at the peak.
TEST(BlockCache, ABlockNoRequestFitsIsNotIdleAtThePeak) {
  BlockCache cache;
  for (int step = 0; step < 4; ++step) {
    std::vector<void*> acts;
    for (int i = 0; i < 20; ++i) acts.push_back(cache.allocate(4 * kMiB));  // forward: 80 MiB
    for (int i = 0; i < 10; ++i) cache.deallocate(acts[size_t(19 - i)]);
    void* bucket = cache.allocate(40 * kMiB);  // half-way through backward
    for (int i = 10; i < 20; ++i) cache.deallocate(acts[size_t(19 - i)]);
    cache.deallocate(bucket);
    const BlockCache::Stats s = cache.stats();
    EXPECT_EQ(s.peak_live_bytes, int64_t(80 * kMiB)) << "step " << step;
    EXPECT_EQ(s.peak_held_bytes, s.peak_live_bytes) << "step " << step;
  }
  EXPECT_GT(cache.stats().released, 0) << "the bucket's block, or activations' for it";
}

// A phase with a larger peak than the steps after it (rank 0's profile before training): the
// cache would go on holding up to that peak, a block no request fits kept beside the live
// ones; once its peaks start again, the steps hold no more than their own peak.
TEST(BlockCache, ResetPeaksBoundsTheStepsByTheirOwnPeak) {
  auto step = [](BlockCache& cache) {
    cache.deallocate(cache.allocate(8 * kMiB));
    void* small = cache.allocate(3 * kMiB);  // the 8 MiB block is more than twice it
    const BlockCache::Stats s = cache.stats();
    cache.deallocate(small);
    return s.live_bytes + s.free_bytes;
  };
  for (const bool reset : {false, true}) {
    BlockCache cache;
    std::vector<void*> phase;
    for (int i = 0; i < 10; ++i) phase.push_back(cache.allocate(20 * kMiB));
    for (void* p : phase) cache.deallocate(p);
    cache.release_free();
    EXPECT_EQ(cache.stats().peak_live_bytes, int64_t(200 * kMiB));
    if (reset) {
      cache.reset_peaks();
      EXPECT_EQ(cache.stats().peak_live_bytes, 0);
      EXPECT_EQ(cache.stats().peak_held_bytes, 0);
    }
    for (int i = 0; i < 3; ++i) {
      const int64_t held = step(cache);
      if (reset)
        EXPECT_EQ(held, int64_t(3 * kMiB)) << "step " << i << ": the 8 MiB block handed back";
      else
        EXPECT_EQ(held, int64_t(11 * kMiB)) << "step " << i << ": the profile's peak allows it";
    }
    if (reset) EXPECT_EQ(cache.stats().peak_held_bytes, int64_t(8 * kMiB));
  }
}

// Not holding to the peak (a part of a step timed alone), the step that maps blocks again
// when held to it (AStepThatWouldHoldMoreThanItsPeakMapsAgain) keeps them and stops
// allocating.
TEST(BlockCache, NotHoldingToThePeakKeepsWhatAStepWouldMapAgain) {
  BlockCache cache;
  cache.set_hold_to_peak(false);
  auto step = [&] { step_asking_for_the_activation_first(cache); };
  step();
  const int64_t misses = cache.stats().misses;
  for (int i = 0; i < 3; ++i) step();
  EXPECT_EQ(cache.stats().misses, misses);
  EXPECT_EQ(cache.stats().released, 0);
  // The last chunk takes the logits' kept block, as in ARepeatedStepStopsAllocating.
  EXPECT_EQ(cache.stats().peak_live_bytes, int64_t((128 + 38 + 3) * kMiB));
}

// Blocks below 2 MiB (mapped 4 KiB at a time, dearly) are handed back only while the kept ones
// alone exceed the peak: a request that fits none of them leaves them kept, beside it.
TEST(BlockCache, SmallBlocksGoOnlyWhenTheKeptOnesExceedThePeak) {
  BlockCache cache;
  constexpr size_t kKiB = 1024;
  std::vector<void*> acts;
  for (int i = 0; i < 10; ++i) acts.push_back(cache.allocate(256 * kKiB));  // 2.5 MiB live
  for (int i = 0; i < 5; ++i) cache.deallocate(acts[size_t(i)]);
  void* wider = cache.allocate(768 * kKiB);  // fits none of the five kept
  EXPECT_EQ(cache.stats().released, 0);
  EXPECT_EQ(cache.stats().free_bytes, int64_t(5 * 256 * kKiB));
  EXPECT_EQ(cache.stats().peak_held_bytes, int64_t((10 * 256 + 768) * kKiB));
  // Once kept blocks alone would exceed the peak, the least recently freed go.
  cache.deallocate(wider);
  for (int i = 5; i < 10; ++i) cache.deallocate(acts[size_t(i)]);
  void* large = cache.allocate(3 * kMiB);  // fits none: 3.25 MiB kept + 3 MiB > 3 MiB peak
  EXPECT_GT(cache.stats().released, 0);
  EXPECT_LE(cache.stats().free_bytes + int64_t(3 * kMiB), cache.stats().peak_live_bytes);
  cache.deallocate(large);
}

// While a job is built its freed blocks are of sizes no step asks for: with keeping off they go
// back to malloc, and a later request smaller than one of them takes a block of its own size.
TEST(BlockCache, NotKeepingHandsBackTheKeptBlocksAndEachFreedOne) {
  BlockCache cache;
  void* whole = cache.allocate(8 * kMiB);
  cache.deallocate(whole);
  EXPECT_EQ(cache.stats().free_bytes, int64_t(8 * kMiB));
  EXPECT_EQ(cache.stats().peak_held_bytes, int64_t(8 * kMiB));
  cache.set_keeping(false);
  EXPECT_EQ(cache.stats().free_bytes, 0) << "the kept block is handed back";
  EXPECT_EQ(cache.stats().released, 1);
  void* again = cache.allocate(8 * kMiB);
  cache.deallocate(again);
  EXPECT_EQ(cache.stats().free_bytes, 0) << "freed while not keeping: not kept";
  EXPECT_EQ(cache.stats().live_bytes, 0);
  cache.set_keeping(true);
  // A slice of the whole (5 of 8 MiB) gets a block of its size, not a kept 8 MiB one.
  void* slice = cache.allocate(5 * kMiB);
  EXPECT_EQ(cache.stats().live_bytes, int64_t(5 * kMiB));
  EXPECT_EQ(cache.stats().hits, 0);
  cache.deallocate(slice);
  EXPECT_EQ(cache.stats().free_bytes, int64_t(5 * kMiB)) << "kept again once building is over";
  EXPECT_EQ(cache.stats().peak_held_bytes, int64_t(8 * kMiB));
}

TEST(BlockCache, ThreadsShareIt) {
  BlockCache cache;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 200; ++i) {
        const size_t n = (size_t(1 + (i + t) % 3)) * 2 * kMiB;
        auto* p = static_cast<unsigned char*>(cache.allocate(n));
        ASSERT_NE(p, nullptr);
        p[0] = p[n - 1] = static_cast<unsigned char>(t);
        EXPECT_EQ(p[0], p[n - 1]);
        cache.deallocate(p);
      }
    });
  for (auto& th : threads) th.join();
  const BlockCache::Stats s = cache.stats();
  EXPECT_EQ(s.live_bytes, 0);
  EXPECT_EQ(s.hits + s.misses, 800);
  EXPECT_LE(s.free_bytes, 2 * s.peak_live_bytes);
}

// In a fresh process with the workers' allocator settings (malloc keeps every freed byte): kept
// blocks handed back give their pages to the kernel at once, below a small allocation made
// after them too. Were they pieces of malloc's heap, they would stay resident as its holes.
TEST(BlockCache, BlocksHandedBackLeaveTheResidentMemory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (!keep_freed_memory().keeps_freed) std::_Exit(2);
        BlockCache cache;
        const size_t n = 4 * kMiB;
        const size_t count = 16;
        std::vector<void*> blocks;
        for (size_t i = 0; i < count; ++i) {
          blocks.push_back(cache.allocate(n + i * kMiB / 8));  // sizes no request reuses
          std::memset(blocks.back(), 1, n);
        }
        void* small = std::malloc(1024);  // above them, were they in the heap
        for (void* b : blocks) cache.deallocate(b);
        const int64_t kept = resident_bytes();
        cache.release_free();
        const int64_t gone = kept - resident_bytes();
        std::fprintf(stderr, "handing back %zu MiB left %lld bytes resident\n", count * n / kMiB,
                     static_cast<long long>(int64_t(count * n) - gone));
        std::free(small);
        std::_Exit(gone > int64_t(count * n) * 3 / 4 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "handing back");
}

}  // namespace
}  // namespace cairn::core
