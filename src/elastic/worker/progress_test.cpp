#include "cairn/elastic/progress.h"

#include <gtest/gtest.h>
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

}  // namespace
}  // namespace cairn::elastic
