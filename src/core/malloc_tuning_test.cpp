#include "cairn/core/malloc_tuning.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "cairn/core/block_cache.h"
#include "cairn/core/proc.h"

namespace cairn::core {
namespace {

TEST(MallocTuning, UsersOwnSettingsAreLeftAlone) {
  ::setenv("MALLOC_TRIM_THRESHOLD_", "131072", 1);
  EXPECT_EQ(keep_freed_memory().description, "allocator left as set by MALLOC_TRIM_THRESHOLD_");
  EXPECT_FALSE(keep_freed_memory().keeps_freed);
  ::unsetenv("MALLOC_TRIM_THRESHOLD_");
  ::setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536", 1);
  EXPECT_EQ(keep_freed_memory().description, "allocator left as set by GLIBC_TUNABLES");
  ::setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2", 1);  // not the allocator's
  ::setenv("CAIRN_MALLOC_DEFAULTS", "1", 1);
  EXPECT_NE(keep_freed_memory().description.find("CAIRN_MALLOC_DEFAULTS=1"), std::string::npos);
  ::unsetenv("CAIRN_MALLOC_DEFAULTS");
  ::unsetenv("GLIBC_TUNABLES");
}

TEST(MallocTuning, FreedLargeBlocksStayInTheHeap) {
  const AllocatorSetting set = keep_freed_memory();
  ASSERT_TRUE(set.keeps_freed) << set.description;
  EXPECT_EQ(set.description, "allocator keeps freed blocks below 1 GiB for reuse, in one arena");
  // glibc's default maps a 64 MiB block on its own (hblkhd) and unmaps it when freed; now it
  // comes from the heap and stays there, free for the next one (fordblks).
  const size_t n = 64u << 20;
  const size_t mapped_before = ::mallinfo2().hblkhd;
  void* a = std::malloc(n);
  ASSERT_NE(a, nullptr);
  static_cast<volatile char*>(a)[0] = 1;
  EXPECT_LT(::mallinfo2().hblkhd, mapped_before + n);
  std::free(a);
  EXPECT_GE(::mallinfo2().fordblks, n);
}

// Touches every page of [p, p + n) through a volatile pointer (the compiler keeps the writes).
void touch(char* p, size_t n, char value) {
  volatile char* v = p;
  for (size_t i = 0; i < n; i += 4096) v[i] = value;
}

// In a fresh process (the test binary run again for this test alone): a block another thread
// freed serves this thread's next allocation, so the resident size does not grow twice. (With
// an arena per thread the other thread's 16 MiB stays in its own heap: +16 MiB here.)
TEST(MallocTuning, ThreadsShareOneArena) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (!keep_freed_memory().keeps_freed) std::_Exit(2);
        const size_t n = 16u << 20;
        std::thread([n] {
          char* p = static_cast<char*>(std::malloc(n));
          touch(p, n, 1);
          std::free(p);
        }).join();
        const int64_t before = resident_bytes();
        char* q = static_cast<char*>(std::malloc(n));
        touch(q, n, 3);
        const int64_t grew = resident_bytes() - before;
        std::fprintf(stderr, "resident grew by %lld bytes\n", static_cast<long long>(grew));
        std::free(q);
        std::_Exit(grew < int64_t(n / 4) ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "resident grew by");
}

TEST(HeapInUse, CountsWhatIsAllocatedUntilFreed) {
  const int64_t before = heap_bytes_in_use();
  const size_t n = 64 << 20;
  char* p = static_cast<char*>(std::malloc(n));
  std::memset(p, 1, n);
  EXPECT_GE(heap_bytes_in_use() - before, int64_t(n));
  std::free(p);
  EXPECT_LT(heap_bytes_in_use() - before, int64_t(n / 2));
}

// In a fresh process with the workers' settings: the heap's size grows by the small blocks
// allocated (and the holes between them) and does not shrink when they are freed.
TEST(HeapSize, GrowsWithSmallAllocationsAndKeepsTheirRoom) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (!keep_freed_memory().keeps_freed) std::_Exit(2);
        const int64_t before = heap_size_bytes();
        std::vector<void*> small;
        for (int i = 0; i < 1000; ++i) small.push_back(std::malloc(16 << 10));
        const int64_t grown = heap_size_bytes() - before;
        for (void* p : small) std::free(p);
        const int64_t kept = heap_size_bytes() - before;
        std::fprintf(stderr, "heap grew by %lld bytes, %lld after the frees\n",
                     static_cast<long long>(grown), static_cast<long long>(kept));
        std::_Exit(grown >= 1000 * (16 << 10) && kept == grown ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "heap grew by");
}

// The block cache's large blocks are mappings of their own: handed out they count, kept they
// do not.
TEST(HeapInUse, CountsTheBlockCachesBlocksHandedOut) {
  BlockCache& cache = process_block_cache();
  const int64_t before = heap_bytes_in_use();
  const size_t n = 8 << 20;
  void* p = cache.allocate(n);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(heap_bytes_in_use() - before, int64_t(n));
  cache.deallocate(p);
  EXPECT_LT(heap_bytes_in_use() - before, int64_t(n / 2));
  cache.release_free();
}

}  // namespace
}  // namespace cairn::core
