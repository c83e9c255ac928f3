#include "cairn/ui/progress.h"

#include <gtest/gtest.h>

namespace cairn::ui {
namespace {

TEST(Progress, FormatsAllFigures) {
  ProgressFigures f;
  f.step = 42;
  f.total = 1000;
  f.loss = 4.56789;
  f.lr = 3e-4;
  f.tokens_per_s = 12345.6;
  f.mfu = 0.123;
  f.eta_seconds = 3725;
  f.extra = "val 4.5000";
  EXPECT_EQ(format_progress(f),
            "step   42/1000 | loss 4.5679 | lr 3.00e-04 | 12346 tok/s | MFU 12.3% | ETA 1h02m"
            " | val 4.5000");
}

TEST(Progress, Durations) {
  EXPECT_EQ(format_duration(12.4), "12s");
  EXPECT_EQ(format_duration(245), "4m05s");
  EXPECT_EQ(format_duration(-1), "?");
}

}  // namespace
}  // namespace cairn::ui
