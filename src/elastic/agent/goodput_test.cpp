#include "cairn/elastic/goodput.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cairn::elastic {
namespace {

// 100 s of wall: steps 1-10 of 5 s each; a failure seen at t=56 after step 10 ended at t=55; the
// restart loads step 8 (0.5 s) and trains 9-10 again, the first of them ending at t=70.
TEST(Goodput, CountsEachStepOnceAndChargesRollbacksAndRestarts) {
  std::vector<StepRow> rows = {{7, -50, 5}};  // an earlier job's row: not counted
  for (int s = 1; s <= 10; ++s) rows.push_back({s, 5.0 + 5.0 * s, 5.0});
  rows.push_back({9, 70, 5});
  rows.push_back({10, 75, 5});
  std::vector<TimedEvent> ev = {
      {"worker_failed", 56, 0}, {"worker_failed", 56.2, 0}, {"checkpoint_loaded", 64, 500}};
  Goodput g = compute_goodput(rows, ev, 0, 100);
  EXPECT_DOUBLE_EQ(g.wall_s, 100);
  EXPECT_DOUBLE_EQ(g.productive_s, 50);  // 10 distinct steps of 5 s
  EXPECT_DOUBLE_EQ(g.lost_s, 10);        // steps 9 and 10 the first time
  EXPECT_EQ(g.failures, 1);              // two ranks, one failure
  EXPECT_DOUBLE_EQ(g.restart_s, 10);     // 55 (last step before) → 65 (first step after began)
  EXPECT_DOUBLE_EQ(g.load_s, 0.5);
  EXPECT_DOUBLE_EQ(g.other_s, 30);
  EXPECT_DOUBLE_EQ(g.goodput(), 0.5);
  EXPECT_THAT(g.ToString(), ::testing::HasSubstr("goodput 50.0%"));
}

TEST(Goodput, NoStepsNoFailures) {
  Goodput g = compute_goodput({}, {}, 10, 20);
  EXPECT_EQ(g.goodput(), 0);
  EXPECT_DOUBLE_EQ(g.other_s, 10);
  EXPECT_EQ(g.steps, 0);
}

}  // namespace
}  // namespace cairn::elastic
