// plan_from: the parallel plan a job's keys give over a world (tests that need no trainer).
#include "cairn/train/options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cairn::train {
namespace {

using ::testing::HasSubstr;

// Pipeline keys: the default cut balances cost (the 50k head alone on the last stage), a cut by
// hand is taken as given; with parallel.pp_elastic a world that does not fit pp trains at the
// nearest pipeline size that fits (the cut recomputed), one that fits shrinks dp first.
TEST(PlanFrom, PipelineCutsAndElasticPipelineSizes) {
  model::ModelConfig m;
  m.n_layer = 4;
  m.n_head = 4;
  m.n_embd = 192;
  m.vocab_size = 50304;
  TrainOptions o;
  o.seq_len = 128;
  o.micro_batch_size = 2;
  o.global_batch_size = 16;
  o.pp = 2;
  auto plan = plan_from(o, m, 4);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->mesh.pp, 2);
  EXPECT_EQ(plan->mesh.dp, 2);                                // 4 ranks: dp 2
  EXPECT_EQ(plan->pipeline.cuts, (std::vector<int64_t>{4}));  // the head alone
  o.pp_layers = {3, 1};
  plan = plan_from(o, m, 2);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->pipeline.cuts, (std::vector<int64_t>{3}));
  EXPECT_THAT(plan->summary(), HasSubstr("pipeline 1f1b, blocks per stage [3, 1]"));
  // 3 ranks do not fit pp 2...
  EXPECT_THAT(plan_from(o, m, 3).status().message(), HasSubstr("does not divide the 3 ranks"));
  o.pp_elastic = true;  // ...unless the cut may be recomputed
  EXPECT_THAT(plan_from(o, m, 3).status().message(), HasSubstr("leave parallel.pp_layers out"));
  o.pp_layers.clear();
  plan = plan_from(o, m, 3);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->mesh.pp, 3);
  EXPECT_EQ(plan->pipeline.cuts.size(), 2u);
  plan = plan_from(o, m, 2);  // fits: dp shrinks, pp stays
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->mesh.pp, 2);
  EXPECT_EQ(plan->mesh.dp, 1);
  o.pp = 4;  // 5 ranks: pp 5 (a stage of the embedding or the head alone is allowed)
  plan = plan_from(o, m, 5);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->mesh.pp, 5);
  o.pp = 3;
  plan = plan_from(o, m, 7);  // 7: prime and above 4 + 2 blocks: pp 1, dp 7
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->mesh.pp, 1);
  EXPECT_EQ(plan->mesh.dp, 7);
}

}  // namespace
}  // namespace cairn::train
