#include "cairn/train/schedule.h"

#include <gtest/gtest.h>

namespace cairn::train {
namespace {

TEST(Schedule, WarmupIsLinear) {
  EXPECT_DOUBLE_EQ(lr_at(0, 1.0, 0.1, 10, 100), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(4, 1.0, 0.1, 10, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(9, 1.0, 0.1, 10, 100), 1.0);
}

TEST(Schedule, CosineFromPeakToMin) {
  EXPECT_DOUBLE_EQ(lr_at(10, 1.0, 0.1, 10, 110), 1.0);
  EXPECT_NEAR(lr_at(60, 1.0, 0.1, 10, 110), 0.55, 1e-12);  // half way: mean of peak and min
  EXPECT_DOUBLE_EQ(lr_at(110, 1.0, 0.1, 10, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(500, 1.0, 0.1, 10, 110), 0.1);
  for (int64_t s = 10; s < 110; ++s)
    EXPECT_GE(lr_at(s, 1.0, 0.1, 10, 110), lr_at(s + 1, 1.0, 0.1, 10, 110));
}

TEST(Schedule, NoWarmup) { EXPECT_DOUBLE_EQ(lr_at(0, 2.0, 0.0, 0, 10), 2.0); }

}  // namespace
}  // namespace cairn::train
