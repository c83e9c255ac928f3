// Pipeline schedules: every kind, over pp 1-4 (and 8) and several micro-batch counts, is a
// complete deadlock-free program for every stage whose simulated bubble under unit costs is
// the schedule's formula and whose activations in flight are what it promises; the simulator
// catches a missing action, a backward before its forward and a deadlock.
#include "cairn/parallel/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace cairn::parallel {
namespace {

using K = PipelineSchedule;

ScheduleRun Simulate(const ScheduleShape& sh) {
  EXPECT_EQ(schedule_unfit(sh), "");
  auto r = simulate_schedule(sh, pipeline_schedule(sh));
  EXPECT_TRUE(r.ok()) << schedule_name(sh.kind) << " pp " << sh.stages << " m " << sh.micro_batches
                      << ": " << r.status().ToString();
  return r.ok() ? *r : ScheduleRun{};
}

TEST(PipelineSchedule, EveryKindMeetsItsBubbleFormulaAndMemoryPromise) {
  for (int p : {1, 2, 3, 4, 8})
    for (int m : {1, 2, 4, 5, 8, 16}) {
      SCOPED_TRACE("pp " + std::to_string(p) + ", " + std::to_string(m) + " micro-batches");
      // gpipe: the formula, and every micro-batch's activations held on every stage.
      ScheduleShape g{K::kGPipe, p, m};
      ScheduleRun gr = Simulate(g);
      EXPECT_NEAR(gr.bubble(), schedule_bubble_formula(g), 1e-12);
      for (int s = 0; s < p; ++s) EXPECT_EQ(gr.peak_in_flight[size_t(s)], m);
      // 1f1b: the same bubble, at most pp - s micro-batches in flight on stage s.
      ScheduleShape o{K::kOneFOneB, p, m};
      ScheduleRun orun = Simulate(o);
      EXPECT_NEAR(orun.bubble(), schedule_bubble_formula(o), 1e-12);
      for (int s = 0; s < p; ++s) EXPECT_EQ(orun.peak_in_flight[size_t(s)], std::min(p - s, m));
      // zb-h1: 1f1b's memory, a smaller bubble (the formula's when m >= pp).
      ScheduleShape z{K::kZeroBubbleH1, p, m};
      ScheduleRun zr = Simulate(z);
      for (int s = 0; s < p; ++s) EXPECT_EQ(zr.peak_in_flight[size_t(s)], std::min(p - s, m));
      EXPECT_LE(zr.makespan, orun.makespan);
      if (p > 1) EXPECT_LT(zr.bubble(), orun.bubble());
      if (m >= p) EXPECT_NEAR(zr.bubble(), schedule_bubble_formula(z), 1e-12);
      // interleaved: v times smaller bubble when m is a multiple of pp.
      if (p > 1 && m % p == 0)
        for (int v : {2, 3}) {
          ScheduleShape i{K::kInterleaved, p, m, v};
          ScheduleRun ir = Simulate(i);
          EXPECT_NEAR(ir.bubble(), schedule_bubble_formula(i), 1e-12) << "v " << v;
          EXPECT_LT(ir.bubble(), orun.bubble() + 1e-12);
        }
    }
}

TEST(PipelineSchedule, OneFOneBOnFourStagesIsTheTextbookOrder) {
  const auto progs = pipeline_schedule({K::kOneFOneB, 4, 6});
  auto text = [](const std::vector<PipeAction>& prog) {
    std::string t;
    for (const PipeAction& a : prog)
      t += std::string(pipe_op_name(a.op)) + std::to_string(a.micro) + " ";
    return t;
  };
  EXPECT_EQ(text(progs[0]), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(text(progs[3]), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  const auto zb = pipeline_schedule({K::kZeroBubbleH1, 2, 3});
  EXPECT_EQ(text(zb[0]), "F0 F1 BI0 W0 F2 BI1 W1 BI2 W2 ");
  EXPECT_EQ(text(zb[1]), "F0 BI0 F1 BI1 W0 F2 BI2 W1 W2 ");
}

TEST(PipelineSchedule, UnfitShapesAreNamed) {
  EXPECT_NE(schedule_unfit({K::kInterleaved, 4, 6, 2}).find("not a multiple of pp 4"),
            std::string::npos);
  EXPECT_NE(schedule_unfit({K::kInterleaved, 4, 8, 1}).find("at least 2 virtual stages"),
            std::string::npos);
  EXPECT_NE(schedule_unfit({K::kOneFOneB, 4, 8, 2}).find("interleaved schedule only"),
            std::string::npos);
  EXPECT_NE(schedule_unfit({K::kGPipe, 2, 0}).find("at least 1 micro-batch"), std::string::npos);
  EXPECT_FALSE(simulate_schedule({K::kGPipe, 0, 1}, {}).ok());
}

TEST(PipelineSchedule, TheSimulatorCatchesBrokenPrograms) {
  const ScheduleShape sh{K::kOneFOneB, 2, 2};
  auto progs = pipeline_schedule(sh);
  // A missing action.
  auto missing = progs;
  missing[1].pop_back();
  auto r = simulate_schedule(sh, missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("missing: B(micro 1, chunk 0) on stage 1"), std::string::npos)
      << r.status().ToString();
  // A backward before its forward on the same stage.
  auto early = progs;
  std::swap(early[1][0], early[1][1]);  // B0 before F0 on the last stage
  r = simulate_schedule(sh, early);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("a backward before its forward"), std::string::npos)
      << r.status().ToString();
  // A deadlock: stage 0 waits for B0's gradient before sending F1, stage 1 runs F1 first.
  std::vector<std::vector<PipeAction>> dead = {{{PipeOp::kForward, 0},
                                                {PipeOp::kBackward, 0},
                                                {PipeOp::kForward, 1},
                                                {PipeOp::kBackward, 1}},
                                               {{PipeOp::kForward, 0},
                                                {PipeOp::kForward, 1},
                                                {PipeOp::kBackward, 0},
                                                {PipeOp::kBackward, 1}}};
  r = simulate_schedule(sh, dead);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("deadlock"), std::string::npos) << r.status().ToString();
  // An action twice.
  auto twice = progs;
  twice[0].push_back(twice[0].front());
  EXPECT_NE(simulate_schedule(sh, twice).status().message().find("twice: F(micro 0"),
            std::string::npos);
}

TEST(StageCuts, BalanceTheCostCountingEmbeddingAndHead) {
  // Blocks alone: as even as the count allows, the extra blocks late.
  const StageCosts blocks{0, 1, 0};
  EXPECT_EQ(balanced_cuts(8, 4, blocks), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(balanced_cuts(13, 4, blocks), (std::vector<int64_t>{3, 6, 9}));  // 3, 3, 3, 4
  EXPECT_EQ(balanced_cuts(3, 1, blocks), (std::vector<int64_t>{}));
  // A head worth 2.5 blocks: the last stage gets fewer blocks.
  EXPECT_EQ(balanced_cuts(13, 4, StageCosts{0, 1, 2.5}), (std::vector<int64_t>{4, 8, 12}));
  // A head worth 20 blocks (the main config's 50k vocabulary over 4 blocks): alone on its stage.
  EXPECT_EQ(balanced_cuts(4, 2, StageCosts{0.1, 1, 20}), (std::vector<int64_t>{4}));
  EXPECT_EQ(balanced_cuts(4, 4, StageCosts{0.1, 1, 20}), (std::vector<int64_t>{1, 2, 4}));
  // Every cut balanced_cuts gives is the cheapest: brute force over all cuts of 7 into 3.
  const StageCosts c{0.7, 1, 1.9};
  auto worst = [&](const std::vector<int64_t>& cuts, int64_t n) {
    std::vector<int64_t> per = blocks_per_stage(cuts, n);
    double w = 0;
    for (size_t s = 0; s < per.size(); ++s)
      w = std::max(w, double(per[s]) * c.block + (s == 0 ? c.embedding : 0) +
                          (s + 1 == per.size() ? c.head : 0));
    return w;
  };
  double best = 1e9;
  for (int64_t a = 0; a <= 7; ++a)
    for (int64_t b = a + 1; b <= 7; ++b) best = std::min(best, worst({a, b}, 7));
  EXPECT_DOUBLE_EQ(worst(balanced_cuts(7, 3, c), 7), best);
  // Costs from a config: GPT-2 small-ish, 50k vocabulary.
  model::ModelConfig m;
  m.n_layer = 4;
  m.n_head = 4;
  m.n_embd = 192;
  m.vocab_size = 50304;
  const StageCosts g = stage_costs(m, 128);
  EXPECT_DOUBLE_EQ(g.block, 6.0 * (4 * 192 * 192 + 2 * 192 * 768) + 12.0 * 128 * 192);
  EXPECT_DOUBLE_EQ(g.head, 6.0 * 50304 * 192);
  EXPECT_GT(g.head, 19 * g.block);
  // Blocks per stage and back.
  EXPECT_EQ(blocks_per_stage({3, 7, 11}, 13), (std::vector<int64_t>{3, 4, 4, 2}));
  EXPECT_EQ(cuts_from_blocks({3, 4, 4, 2}), (std::vector<int64_t>{3, 7, 11}));
  EXPECT_EQ(blocks_per_stage({}, 5), (std::vector<int64_t>{5}));
}

}  // namespace
}  // namespace cairn::parallel
