#include "cairn/core/proc.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cairn::core {
namespace {

TEST(Proc, ThisProcessIsAliveWithItsStartTime) {
  const uint64_t start = process_start_time(::getpid());
  EXPECT_GT(start, 0u);
  EXPECT_TRUE(process_alive(::getpid(), start));
  EXPECT_TRUE(process_alive(::getpid(), 0));
  EXPECT_FALSE(process_alive(::getpid(), start + 1)) << "another start time is another process";
}

TEST(Proc, AnExitedChildIsDeadEvenAsAZombie) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  const uint64_t start = process_start_time(child);
  // Not reaped yet: a zombie, which counts as dead.
  for (int i = 0; i < 200 && process_alive(child, start); ++i) ::usleep(10000);
  EXPECT_FALSE(process_alive(child, start));
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(process_alive(child, start));
  EXPECT_EQ(process_start_time(child), 0u);
}

TEST(Proc, AStoppedChildIsStoppedUntilContinued) {
  pid_t child = ::fork();
  if (child == 0) {
    for (;;) ::pause();
  }
  EXPECT_FALSE(process_stopped(child));
  ::kill(child, SIGSTOP);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, WUNTRACED), child);  // the stop has taken effect
  EXPECT_TRUE(process_stopped(child));
  ::kill(child, SIGCONT);
  for (int i = 0; i < 200 && process_stopped(child); ++i) ::usleep(10000);
  EXPECT_FALSE(process_stopped(child));
  ::kill(child, SIGKILL);
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(process_stopped(child)) << "no such process";
  EXPECT_FALSE(process_stopped(0));
}

TEST(Proc, NoSuchProcess) {
  EXPECT_FALSE(process_alive(0, 0));
  EXPECT_FALSE(process_alive(-5, 0));
  EXPECT_EQ(process_start_time(0), 0u);
}

TEST(Proc, OpenFilesLimitIsRaisedToTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  const int64_t now = raise_open_files_limit();
  rlimit after{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, after.rlim_max);
  EXPECT_GE(now, int64_t(before.rlim_cur == RLIM_INFINITY ? INT64_MAX : before.rlim_cur));
}

TEST(Proc, AvailableMemoryIsRead) {
  auto a = available_memory_bytes();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_GT(*a, int64_t(0));
}

TEST(Proc, ResidentMemoryGrowsWithTouchedPagesAndThePeakStays) {
  const int64_t before = resident_bytes(), peak_before = peak_resident_bytes();
  ASSERT_GT(before, 0);
  EXPECT_GE(peak_before, before);
  const size_t n = 64 << 20;  // mapped here, so no allocator's kept pages serve it
  void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  volatile char* p = static_cast<char*>(m);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;  // touched: resident
  const int64_t during = resident_bytes();
  EXPECT_GE(during, before + int64_t(n) * 9 / 10);
  ::munmap(m, n);
  EXPECT_LT(resident_bytes(), during - int64_t(n) / 2) << "unmapped pages leave";
  // The kernel batches its per-thread page counts, so both figures may lag by a few pages.
  EXPECT_GE(peak_resident_bytes(), during - (1 << 20)) << "the high-water mark keeps the peak";
}

// The file-backed part: this binary's and its libraries' pages, counted in the whole and not
// grown by anonymous memory.
TEST(Proc, FileBackedResidentMemoryIsPartOfTheWhole) {
  const int64_t file = file_resident_bytes();
  ASSERT_GT(file, 0) << "a process runs code from files";
  EXPECT_LE(file, resident_bytes());
  const size_t n = 32 << 20;
  void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  volatile char* p = static_cast<char*>(m);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  EXPECT_LT(file_resident_bytes(), file + int64_t(n) / 2) << "anonymous pages are not files'";
  ::munmap(m, n);
}

// Both read at once: shared memory this process touched counts in RssShmem and in the peak;
// the peak starts again from the resident memory once reset.
TEST(Proc, PeakAndSharedResidentMemoryAndTheirReset) {
  const size_t n = 64 << 20;
  void* s = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(s, MAP_FAILED);
  const PeakResident before = peak_and_shared_resident();
  std::memset(s, 1, n);
  const PeakResident touched = peak_and_shared_resident();
  EXPECT_GE(touched.shared, before.shared + int64_t(n) * 3 / 4);
  EXPECT_GE(touched.peak, touched.shared);
  EXPECT_EQ(touched.peak, peak_resident_bytes()) << "the same field as read alone";
  ::munmap(s, n);
  EXPECT_LE(peak_and_shared_resident().shared, touched.shared - int64_t(n) * 3 / 4);
  EXPECT_GE(peak_resident_bytes(), touched.peak - (1 << 20)) << "the high-water mark keeps it";
  ASSERT_TRUE(reset_peak_resident());
  EXPECT_LE(peak_resident_bytes(), touched.peak - int64_t(n) / 2) << "started again lower";
}

// The bracketed word of the kernel's file; anything else is "unknown" ("").
TEST(Proc, TransparentHugePageModeIsTheBracketedWord) {
  const std::string path = ::testing::TempDir() + "/thp_enabled";
  auto mode_of = [&](const char* text) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    EXPECT_NE(f, nullptr);
    std::fputs(text, f);
    std::fclose(f);
    return transparent_hugepage_mode(path);
  };
  EXPECT_EQ(mode_of("always [madvise] never\n"), "madvise");
  EXPECT_EQ(mode_of("always madvise [never]\n"), "never");
  EXPECT_EQ(mode_of("[always] madvise never\n"), "always");
  EXPECT_EQ(mode_of("always madvise never\n"), "") << "no bracket";
  EXPECT_EQ(mode_of("always [sometimes] never\n"), "") << "a word not known";
  EXPECT_EQ(mode_of("] always [madvise\n"), "") << "brackets the wrong way round";
  EXPECT_EQ(mode_of(""), "") << "empty";
  std::remove(path.c_str());
  EXPECT_EQ(transparent_hugepage_mode(path), "") << "missing";
  // This machine's own: one of the three words, or "" (a kernel without them).
  const std::string here = transparent_hugepage_mode();
  EXPECT_TRUE(here == "always" || here == "madvise" || here == "never" || here.empty()) << here;
}

}  // namespace
}  // namespace cairn::core
