#include "cairn/elastic/progress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn/core/fs.h"

namespace cairn::elastic {
namespace {

TEST(Progress, WriterReportsReaderSees) {
  std::string run = "/tmp/cairn_progress_" + std::to_string(getpid());
  EXPECT_FALSE(read_progress(run, 3).has_value());
  {
    auto w = ProgressWriter::Open(run, 3);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_FALSE(read_progress(run, 3).has_value());  // opened, nothing reported yet
    double before = core::unix_time();
    (*w)->report(41);
    (*w)->report(42);
    auto p = read_progress(run, 3);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->step, 42);
    EXPECT_EQ(p->pid, getpid());
    EXPECT_GE(p->unix_time, before - 1e-3);
    EXPECT_FALSE(read_progress(run, 4).has_value());
  }
  // The segment outlives the writer (a hung or dead worker's last report stays readable).
  ASSERT_TRUE(read_progress(run, 3).has_value());
  EXPECT_NE(progress_name(run, 3), progress_name(run + "x", 3));
  EXPECT_EQ(unlink_progress(run, {3, 4}), 1);
  EXPECT_FALSE(read_progress(run, 3).has_value());
}

// A page its writer sized but never wrote (it died in between) reads as no report, and is not
// faulted in by the reader: on a full /dev/shm that would kill the reader (the agent) with
// SIGBUS. The writer allocates its page before it maps it.
TEST(Progress, AnUnwrittenPageIsNotTouched) {
  std::string run = "/tmp/cairn_progress_sparse_" + std::to_string(getpid());
  const std::string path = "/dev/shm" + progress_name(run, 0);
  int fd = ::shm_open(progress_name(run, 0).c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  EXPECT_FALSE(read_progress(run, 0).has_value());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0) << "the reader faulted the page in";
  {
    auto w = ProgressWriter::Open(run, 0);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_GE(int64_t(st.st_blocks) * 512, 4096);
    (*w)->report(7);
  }
  auto p = read_progress(run, 0);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->step, 7);
  EXPECT_EQ(unlink_progress(run, {0}), 1);
}

}  // namespace
}  // namespace cairn::elastic
