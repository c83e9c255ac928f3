// A plan's predictions checked against the steps that trained it: the median step time after
// the warmup and the fullest rank's peak, the errors as the planner's bench gives them, and
// no check before enough steps (or for a plan without predictions).
#include "cairn/train/auto_plan.h"

#include <gtest/gtest.h>

namespace cairn::train {
namespace {

TEST(PlanCheck, TheMedianStepAfterTheWarmupAgainstThePrediction) {
  AutoPlan plan;
  plan.step_s = 1.0;
  plan.memory_bytes = 950e6;
  // Steps 11..: three warm-up steps (slow), then 1.25 s and a slow one now and then.
  std::vector<double> steps = {9.0, 3.0, 2.0};
  for (int i = 0; i < kPlanCheckSteps - 1; ++i) {
    EXPECT_FALSE(check_plan(plan, steps, 11, 1e9, /*last=*/false)) << steps.size();
    steps.push_back(i % 5 == 4 ? 4.0 : 1.25);
  }
  steps.push_back(1.25);
  const auto c = check_plan(plan, steps, 11, 1e9, false);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->first_step, 14);
  EXPECT_EQ(c->last_step, 11 + 3 + kPlanCheckSteps - 1);
  EXPECT_DOUBLE_EQ(c->step_s, 1.25);
  EXPECT_NEAR(c->step_error(), -0.2, 1e-12);     // predicted 20% too fast
  EXPECT_NEAR(c->memory_error(), -0.05, 1e-12);  // 5% under
  const nlohmann::json j = c->to_json();
  EXPECT_NEAR(j.at("step_error").get<double>(), -0.2, 1e-12);
  EXPECT_DOUBLE_EQ(j.at("predicted_memory_bytes").get<double>(), 950e6);
  EXPECT_EQ(j.at("first_step"), 14);
}

TEST(PlanCheck, AShortStartIsCheckedAtItsLastStep) {
  AutoPlan plan;
  plan.step_s = 2.0;
  plan.memory_bytes = 1e9;
  // Two timed steps at the last one: too few to say anything.
  EXPECT_FALSE(check_plan(plan, {5, 5, 5, 2, 2}, 1, 8e8, /*last=*/true));
  // Four: their median (an even count: the mean of the middle two).
  const auto c = check_plan(plan, {5, 5, 5, 2.0, 2.4, 1.6, 3.0}, 1, 8e8, /*last=*/true);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->first_step, 4);
  EXPECT_EQ(c->last_step, 7);
  EXPECT_NEAR(c->step_s, 2.2, 1e-12);
  EXPECT_DOUBLE_EQ(c->memory_error(), 0.25);  // over-predicted: 1 GB for 0.8
  EXPECT_FALSE(check_plan(plan, {5, 5, 5, 2.0, 2.4, 1.6, 3.0}, 1, 8e8, /*last=*/false));
  // One rank's plan predicts nothing: nothing to check.
  EXPECT_FALSE(check_plan(AutoPlan{}, std::vector<double>(30, 1.0), 1, 8e8, true));
}

}  // namespace
}  // namespace cairn::train
