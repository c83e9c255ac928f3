// The planner's pieces against hand-computed values (collective times, bytes per parameter by
// ZeRO stage, parameters per stage and tp rank, the bubble by schedule), cluster files' errors,
// and the search against brute force: on small cases every plan the engine accepts (each mesh,
// micro-batch size, schedule, ZeRO stage, sequence parallelism, cp kind and every subset of
// checkpointed blocks) is costed, and the search's best is the fastest that fits.
#include "cairn/planner/planner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <set>

#include "cairn/model/param_specs.h"
#include "cairn/parallel/pipeline_schedule.h"
#include "planner/cost_model_impl.h"
#include "planner/planner_testing_impl.h"

namespace cairn::planner {
namespace {

using parallel::ContextParallelKind;
using parallel::PipelineSchedule;
using testing::Tiny;
using testing::TwoNodes;

// The model's parameters, every tensor once (param_specs: the model's own list).
double ParamsOf(const Workload& w) {
  double held = 0;
  for (const model::ParamSpec& s : model::param_specs(w.model)) {
    double n = 1;
    for (int64_t d : s.shape) n *= double(d);
    held += n;
  }
  return held;
}

// Every layout of `world` devices that the search keeps, fastest first (no memory limit).
SearchOptions EveryLayout(int world) {
  SearchOptions o;
  o.world = world;
  o.top = 1000;
  o.memory_bytes = 1e30;
  return o;
}

TEST(Planner, CollectiveTimesAreTheRingAlgorithms) {
  const Link l{1e9, 1e-5};
  EXPECT_DOUBLE_EQ(allreduce_s(1e9, 4, l), 2 * 0.75 + 6 * 1e-5);
  EXPECT_DOUBLE_EQ(allgather_s(1e9, 4, l), 0.75 + 3 * 1e-5);
  EXPECT_DOUBLE_EQ(alltoall_s(1e9, 2, l), 0.5 + 1e-5);
  EXPECT_EQ(allreduce_s(1e9, 1, l), 0);
  const Cluster c = TwoNodes();
  EXPECT_EQ(&link_for(c, 2), &c.intra);
  EXPECT_EQ(&link_for(c, 4), &c.inter);
}

TEST(Planner, BytesPerParameterByZeroStage) {
  EXPECT_EQ(state_bytes_per_param(0, 4), 16);
  EXPECT_EQ(state_bytes_per_param(1, 4), 10);
  EXPECT_EQ(state_bytes_per_param(2, 4), 7);
  EXPECT_EQ(state_bytes_per_param(3, 4), 4);
  EXPECT_EQ(state_bytes_per_param(2, 1), 16);
}

TEST(Planner, ParametersPerStageAndTpRank) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Workload w = Tiny(arch);
    ModelShape shape(w);
    double all = 0, tied = 0;
    for (const model::ParamSpec& s : model::param_specs(w.model)) {
      double n = 1;
      for (int64_t d : s.shape) n *= double(d);
      all += n;
      if (arch == "gpt2" && s.role == model::ParamRole::kTokenEmbedding) tied = n;
    }
    const ModelShape::Held& h1 = shape.params(1);
    // GPT-2's tied table is held twice: on the first stage and on the last.
    EXPECT_DOUBLE_EQ(h1.block * 4 + h1.first + h1.last, all + tied) << arch;
    const double C = 64, F = double(w.model.ffn_dim()), V = 500;
    const ModelShape::Held& h2 = shape.params(2);
    if (arch == "gpt2") {
      // qkv and c_fc (+ biases) and both projections halved; 2 norms and 2 out-biases whole.
      EXPECT_DOUBLE_EQ(h2.block, (3 * C * C + 3 * C + C * C + C * F + F + F * C) / 2 + 6 * C);
      EXPECT_DOUBLE_EQ(h2.first, 250 * C + 64 * C);  // half the vocabulary rows, positions
    } else {
      // 4 query heads, 2 key/value heads of 16: q, k, v, o and the 3 MLP matrices halved.
      EXPECT_DOUBLE_EQ(h2.block, (C * C + 2 * C * 32 + C * C + 3 * C * F) / 2 + 2 * C);
      EXPECT_DOUBLE_EQ(h2.last, 250 * C + C);  // half the head's rows, the final norm
      // tp 4 > 2 key/value heads: each rank holds one whole key/value head (1/2 of k and v).
      EXPECT_DOUBLE_EQ(shape.params(4).block,
                       (C * C + C * C + 3 * C * F) / 4 + 2 * C * 32 / 2 + 2 * C);
    }
    (void)V;
  }
}

TEST(Planner, TheBubbleIsTheSchedulesFormula) {
  ModelShape shape(Tiny());
  for (auto [kind, p, m, v] : {std::make_tuple(PipelineSchedule::kOneFOneB, 4, 8, 1),
                               std::make_tuple(PipelineSchedule::kGPipe, 2, 4, 1),
                               std::make_tuple(PipelineSchedule::kInterleaved, 2, 4, 2)}) {
    const double f = parallel::schedule_bubble_formula({kind, p, m, v});
    EXPECT_NEAR(shape.pipe(kind, p, m, v).idle_per_busy, f / (1 - f), 1e-12)
        << parallel::schedule_name(kind);
  }
  // Long steps are simulated at 2 pp micro-batches and scaled: the same as simulating them.
  for (auto kind : {PipelineSchedule::kOneFOneB, PipelineSchedule::kGPipe,
                    PipelineSchedule::kInterleaved, PipelineSchedule::kZeroBubbleH1})
    for (auto [p, m] : {std::make_pair(2, 12), std::make_pair(4, 16), std::make_pair(3, 21)}) {
      const int v = kind == PipelineSchedule::kInterleaved ? 2 : 1;
      const parallel::ScheduleShape full{kind, p, m, v};
      auto run = parallel::simulate_schedule(full, parallel::pipeline_schedule(full));
      ASSERT_TRUE(run.ok());
      const ModelShape::Pipe& scaled = shape.pipe(kind, p, m, v);
      EXPECT_NEAR(scaled.idle_per_busy,
                  double(run->makespan - run->busy.front()) / double(run->busy.front()), 1e-12)
          << parallel::schedule_name(kind) << " p" << p << " m" << m;
      EXPECT_EQ(scaled.in_flight, run->peak_in_flight)
          << parallel::schedule_name(kind) << " p" << p << " m" << m;
    }
  // 1F1B keeps at most p - s micro-batches in flight on stage s; GPipe all m.
  EXPECT_EQ(shape.pipe(PipelineSchedule::kOneFOneB, 4, 8, 1).in_flight,
            (std::vector<int>{4, 3, 2, 1}));
  EXPECT_EQ(shape.pipe(PipelineSchedule::kGPipe, 2, 4, 1).in_flight, (std::vector<int>{4, 4}));
}

TEST(Planner, OneDeviceCostsItsParametersAndCompute) {
  const Workload w = Tiny();
  Cluster c = TwoNodes();
  Candidate one{parallel::Plan::data_parallel(1, 4), 8};
  const Cost k = estimate(w, c, one);
  const double held = ParamsOf(w);
  // GPT-2's tied table counts once: one stage holds both ends here (one tensor, as the model
  // builds it); the last stage of a pipeline holds its own copy.
  EXPECT_DOUBLE_EQ(k.param_bytes, 4 * held);
  EXPECT_DOUBLE_EQ(k.grad_bytes, 4 * held);
  EXPECT_DOUBLE_EQ(k.optimizer_bytes, 8 * held);
  const parallel::StageCosts sc = parallel::stage_costs(w.model, 64);
  EXPECT_NEAR(k.compute_s, 8 * 64 * (sc.embedding + 4 * sc.block + sc.head) / 0.5e12, 1e-15);
  EXPECT_EQ(k.tp_s + k.cp_s + k.dp_s + k.pp_s + k.bubble_s + k.recompute_s, 0);
  EXPECT_DOUBLE_EQ(k.tokens_per_s, 8 * 64 / k.step_s());
  // Checkpointing two blocks: their forward again, less activation memory.
  one.plan.layers[0].checkpoint = one.plan.layers[1].checkpoint = true;
  const Cost ck = estimate(w, c, one);
  EXPECT_NEAR(ck.recompute_s, 8 * 64 * 2 * sc.block / 3 / 0.5e12, 1e-15);
  EXPECT_LT(ck.activation_bytes, k.activation_bytes);
  EXPECT_NE(why_faster(k, ck).find("recompute 0 s against"), std::string::npos)
      << why_faster(k, ck);
}

// Every plan the engine accepts at `world` for w, costed: the fastest that fits `budget` (-1
// when none does), and the least memory any needs.
struct Brute {
  double best = -1, least_memory = -1;
  int checkpointed = 0;  // blocks checkpointed in the fastest
};
Brute BruteForce(const Workload& w, const Cluster& c, int world, double budget) {
  Brute out;
  const int64_t L = w.model.n_layer;
  for (int pp = 1; pp <= world; ++pp)
    for (int dp = 1; dp <= world; ++dp)
      for (int cp = 1; cp <= world; ++cp)
        for (int tp = 1; tp <= world; ++tp) {
          if (pp * dp * cp * tp != world || w.global_batch % dp) continue;
          if (c.devices_per_node % tp) continue;  // tp groups stay within a node
          for (int64_t mb = 1; mb <= w.global_batch / dp; ++mb) {
            if ((w.global_batch / dp) % mb) continue;
            const int m = int(w.global_batch / dp / mb);
            for (int s = 0; s < 4; ++s)
              for (int v = 1; v <= 2; ++v)
                for (int zero = 0; zero <= 3; ++zero)
                  for (int sp = 0; sp <= 1; ++sp)
                    for (auto kind : {ContextParallelKind::kRing, ContextParallelKind::kUlysses})
                      for (int mask = 0; mask < (1 << L); ++mask) {
                        const auto sched = PipelineSchedule(s);
                        if (pp == 1 && (s != 0 || v != 1)) continue;
                        if ((v == 2) != (sched == PipelineSchedule::kInterleaved)) continue;
                        if (cp == 1 && kind != ContextParallelKind::kRing) continue;
                        if (pp > 1 && !parallel::schedule_unfit({sched, pp, m, v}).empty())
                          continue;
                        if (cp > 1 && kind == ContextParallelKind::kRing && w.seq_len % (2 * cp))
                          continue;
                        Candidate cand{parallel::Plan::data_parallel(dp, L, zero), mb};
                        parallel::Plan& p = cand.plan;
                        p.mesh = comm::MeshShape{pp, dp, cp, tp};
                        for (int64_t b = 0; b < L; ++b) {
                          p.layers[size_t(b)].tp = tp;
                          p.layers[size_t(b)].sequence_parallel = sp == 1;
                          p.layers[size_t(b)].cp_kind = cp > 1 ? kind : ContextParallelKind::kNone;
                          p.layers[size_t(b)].checkpoint = (mask >> b) & 1;
                        }
                        if (pp > 1) {
                          p.pipeline.schedule = sched;
                          p.pipeline.virtual_stages = v;
                          if (pp * v > L + 2) continue;
                          p.pipeline.cuts = parallel::balanced_cuts(
                              L, pp * v, parallel::stage_costs(w.model, w.seq_len));
                        }
                        if (!p.validate(w.model, world).ok()) continue;
                        const Cost k = estimate(w, c, cand);
                        if (out.least_memory < 0 || k.memory_bytes() < out.least_memory)
                          out.least_memory = k.memory_bytes();
                        if (k.memory_bytes() > budget) continue;
                        if (out.best < 0 || k.step_s() < out.best) {
                          out.best = k.step_s();
                          out.checkpointed = __builtin_popcount(unsigned(mask));
                        }
                      }
          }
        }
  return out;
}

TEST(Planner, TheSearchFindsTheBruteForceOptimum) {
  Cluster c = TwoNodes();
  int binding = 0;  // cases where the budget made the optimum checkpoint blocks
  // With a measured time per micro-batch besides the time per token, a smaller micro-batch
  // costs time too: then a tight budget makes the optimum checkpoint blocks rather than shrink
  // its micro-batches or recompute every stage (ZeRO-3), which cost more.
  Workload timed = Tiny();
  timed.measured = MeasuredModel{};
  timed.measured->embedding = {1e-3, 0.1e-6, 0};
  timed.measured->embedding_forward = {0.5e-3, 0.05e-6, 0};
  timed.measured->block = {3e-3, 3e-6, 0};
  timed.measured->block_forward = {1e-3, 1e-6, 0};
  timed.measured->head = {3e-3, 6e-6, 0};
  timed.measured->head_forward = {1e-3, 4e-6, 0};
  for (const auto& [arch, w] : std::vector<std::pair<std::string, Workload>>{
           {"gpt2", Tiny()}, {"llama", Tiny("llama")}, {"gpt2 timed", timed}})
    for (int world : {2, 4}) {
      const Brute free = BruteForce(w, c, world, 1e30);
      ASSERT_GT(free.best, 0);
      // No limit; below what the unconstrained optimum needs (a little, and more); just above
      // the least any plan needs; below it (nothing fits).
      SearchOptions o;
      o.world = world;
      o.top = 3;
      o.memory_bytes = 1e30;
      auto unconstrained = search(w, c, o);
      ASSERT_TRUE(unconstrained.ok());
      const double free_memory = unconstrained->best.front().cost.memory_bytes();
      for (double budget : {1e30, 0.97 * free_memory, 0.9 * free_memory, 0.8 * free_memory,
                            1.02 * free.least_memory, 0.98 * free.least_memory}) {
        SCOPED_TRACE(arch + " world " + std::to_string(world) + " budget " +
                     std::to_string(budget / 1e6) + " MB");
        const Brute want = BruteForce(w, c, world, budget);
        o.memory_bytes = budget;
        auto got = search(w, c, o);
        if (want.best < 0) {
          ASSERT_FALSE(got.ok());
          EXPECT_NE(got.status().message().find("no layout of"), std::string::npos);
          continue;
        }
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        binding += want.checkpointed > 0;
        const Planned& top = got->best.front();
        EXPECT_NEAR(top.cost.step_s(), want.best, 1e-12 * want.best)
            << explain(top.candidate, top.cost);
        EXPECT_TRUE(top.candidate.plan.validate(w.model, world).ok());
        // The candidate costs, through the public estimate, what the search said.
        EXPECT_NEAR(estimate(w, c, top.candidate).step_s(), top.cost.step_s(), 1e-12 * want.best);
        EXPECT_LE(top.cost.memory_bytes(), budget);
        for (size_t i = 1; i < got->best.size(); ++i)
          EXPECT_LE(got->best[i - 1].cost.step_s(), got->best[i].cost.step_s());
      }
    }
  EXPECT_GT(binding, 0) << "no budget made checkpointing part of the optimum";
}

TEST(Planner, TheSearchKeepsAFixedMicroBatchAndTensorGroupsWithinANode) {
  Cluster c = TwoNodes();  // 2 devices per node
  SearchOptions o = EveryLayout(4);
  auto all = search(Tiny(), c, o);
  ASSERT_TRUE(all.ok());
  std::set<int64_t> sizes;
  for (const Planned& p : all->best) {
    EXPECT_LE(p.candidate.plan.mesh.tp, 2) << p.candidate.plan.summary() << " spans nodes";
    sizes.insert(p.candidate.micro_batch);
  }
  ASSERT_GT(sizes.size(), 1u) << "the test needs a choice of micro-batch sizes";
  o.micro_batch = *sizes.rbegin();
  auto fixed = search(Tiny(), c, o);
  ASSERT_TRUE(fixed.ok());
  for (const Planned& p : fixed->best) EXPECT_EQ(p.candidate.micro_batch, o.micro_batch);
  c.devices_per_node = 4;  // now tp 4 is one node's
  o.micro_batch = 0;
  auto wide = search(Tiny(), c, o);
  ASSERT_TRUE(wide.ok());
  bool tp4 = false;
  for (const Planned& p : wide->best) tp4 |= p.candidate.plan.mesh.tp == 4;
  EXPECT_TRUE(tp4);
}

TEST(Planner, PreferSimplerPutsTheFewestModelParallelRanksFirstWithinTheMargin) {
  const Workload w = Tiny();
  SearchOptions o = EveryLayout(4);
  auto all = search(w, TwoNodes(), o);
  ASSERT_TRUE(all.ok());
  const double fastest = all->best.front().cost.step_s();
  auto ranks = [](const Planned& p) {
    return p.candidate.plan.mesh.pp * p.candidate.plan.mesh.cp * p.candidate.plan.mesh.tp;
  };
  for (double margin : {0.02, 0.2, 1.0}) {
    // What the preference must pick: the fewest model-parallel ranks within the margin.
    int want = 1 << 30;
    for (const Planned& p : all->best)
      if (p.cost.step_s() <= fastest * (1 + margin)) want = std::min(want, ranks(p));
    o.prefer_simpler = margin;
    o.top = 3;
    auto got = search(w, TwoNodes(), o);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(got->best.size(), 3u);
    EXPECT_EQ(ranks(got->best.front()), want) << margin;
    EXPECT_LE(got->best.front().cost.step_s(), fastest * (1 + margin) * (1 + 1e-12));
    EXPECT_EQ(got->preferred_simpler, got->best.front().cost.step_s() > fastest * (1 + 1e-9));
  }
}

// The last layout with `pp` pipeline stages the every-layout search at `world` keeps.
Candidate KeptLayoutWithPp(const Workload& w, int world, int pp) {
  auto all = search(w, TwoNodes(), EveryLayout(world));
  EXPECT_TRUE(all.ok()) << all.status().ToString();
  const Planned* found = nullptr;
  if (all.ok())
    for (const Planned& p : all->best)
      if (p.candidate.plan.mesh.pp == pp) found = &p;
  EXPECT_NE(found, nullptr) << "no kept layout with pp=" << pp;
  return found ? found->candidate
               : Candidate{parallel::Plan::data_parallel(world, w.model.n_layer), 1};
}

// GPT-2's tied table: one tensor on a rank that holds both ends (above), a copy on each end
// of a pipeline: the first stage's embedding and the last stage's head.
TEST(Planner, APipelinesLastStageHoldsItsOwnCopyOfTheTiedTable) {
  const Workload w = Tiny();
  const Candidate pp2 = KeptLayoutWithPp(w, 2, 2);
  std::vector<Cost> stages;
  estimate_stages(w, TwoNodes(), pp2, &stages);
  ASSERT_EQ(stages.size(), 2u);
  const double held = ParamsOf(w);
  EXPECT_DOUBLE_EQ(stages[0].param_bytes + stages[1].param_bytes, 4 * (held + 500 * 64));
  EXPECT_GE(stages[1].param_bytes, 4 * 500 * 64) << "the head's table";
}

// Besides parameters, state and activations a rank holds the code a model profile measured
// and the heap its small allocations grew, and no idle huge-page block: the block cache holds
// no more than the most bytes live at once, so ZeRO-1's copy of this rank's shard adds nothing.
// Freed blocks under 2 MiB stay kept, though: backward's end holds its table-sized gradients
// beside the kept blocks of every activation (all small here), and ZeRO-2's staged gradients.
TEST(Planner, BuffersCountTheCodeAndTheHeapAndNoIdleBlock) {
  Workload w = Tiny();
  Cluster c = TwoNodes();
  Candidate dp{parallel::Plan::data_parallel(2, 4), 4};
  const Cost z0 = estimate(w, c, dp);
  dp.plan.zero_stage = 1;
  const Cost z1 = estimate(w, c, dp);
  dp.plan.zero_stage = 2;
  const Cost z2 = estimate(w, c, dp);
  // A rank's micro-batch: 4 sequences of 64 tokens.
  const double table = 4.0 * 500 * 64, input = 4.0 * 256 * 64, chunk = 4.0 * 256 * 500;
  // Forward's peak: the activations A, the head's kept table gradient and input gradient and,
  // beside them, its chunk of logits. Backward's end: three tables (the embedding's, the
  // head's, their sum: the chunk's block is over twice a table, so serves none) and A and the
  // input gradient kept, below forward's peak without ZeRO-2's staged gradients, above with.
  EXPECT_DOUBLE_EQ(z0.buffer_bytes, chunk);
  EXPECT_DOUBLE_EQ(z1.buffer_bytes, z0.buffer_bytes);
  EXPECT_DOUBLE_EQ(z2.buffer_bytes - z0.buffer_bytes,
                   (4 * ParamsOf(w) + 3 * table + input) - (table + input + chunk));
  EXPECT_LT(z1.memory_bytes(), z0.memory_bytes()) << "ZeRO-1 shards the optimizer's state";
  EXPECT_LT(z2.memory_bytes(), z0.memory_bytes()) << "ZeRO-2 its gradients besides";
  // Micro-batches of 2 sequences: the chunk of logits (128 rows) is twice a table, so its kept
  // block serves the tables' sum, and backward's end outgrows forward's peak by a table.
  const Cost halves = estimate(w, c, Candidate{parallel::Plan::data_parallel(2, 4), 2});
  EXPECT_DOUBLE_EQ(halves.buffer_bytes, 4.0 * 128 * 500 + table);
  // The code: its bytes, as measured (the times are the profile's, memory no other way).
  w.measured = MeasuredModel{};
  const Cost no_code = estimate(w, c, dp);
  w.measured->code_bytes = 3e6;
  EXPECT_DOUBLE_EQ(estimate(w, c, dp).buffer_bytes - no_code.buffer_bytes, 3e6);
  // And the heap the small allocations grow, besides.
  w.measured->heap_bytes = 5e6;
  EXPECT_DOUBLE_EQ(estimate(w, c, dp).buffer_bytes - no_code.buffer_bytes, 8e6);
  // A tied and an untied table. At backward's end a pipeline's first stage holds two
  // table-sized gradients of a tied table (the embedding's, the head's sent to it), one of an
  // untied one; the head's stage the same either way.
  std::vector<Cost> tied, untied;
  const Workload g = Tiny(), l = Tiny("llama");
  Candidate pp = KeptLayoutWithPp(g, 2, 2);
  pp.plan.zero_stage = 0;
  estimate_stages(g, c, pp, &tied);
  Candidate lpp = pp;
  lpp.plan.layers.resize(size_t(l.model.n_layer));
  estimate_stages(l, c, lpp, &untied);
  ASSERT_EQ(tied.size(), 2u);
  ASSERT_EQ(untied.size(), 2u);
  auto transient = [](const Cost& k) { return k.activation_bytes + k.buffer_bytes; };
  EXPECT_GE(transient(tied[0]), 2 * table);
  EXPECT_GE(transient(untied[0]), table);
  EXPECT_DOUBLE_EQ(tied[1].buffer_bytes, untied[1].buffer_bytes);
}

// A zero-bubble schedule hides the fill and drain of balanced stages, not the wait of a slow
// last stage (a large head) for one micro-batch's forward and backward through the stages
// before it, less its own last weight pass: there it waits as under 1F1B.
TEST(Planner, AZeroBubbleScheduleStillWaitsForTheStagesBeforeASlowOne) {
  Workload w = Tiny();
  w.measured = MeasuredModel{};
  w.measured->block = {0, 3e-6, 0};
  w.measured->block_forward = {0, 1e-6, 0};
  w.measured->embedding = {0, 20e-6, 0};
  w.measured->embedding_forward = {0, 10e-6, 0};
  w.measured->head = {0, 200e-6, 0};  // the head's stage is the slow one
  w.measured->head_forward = {0, 198e-6, 0};
  Candidate c = KeptLayoutWithPp(w, 2, 2);
  const Cluster cl = TwoNodes();
  const double m = double(w.global_batch / (c.micro_batch * c.plan.mesh.dp));
  c.plan.pipeline.schedule = PipelineSchedule::kOneFOneB;
  std::vector<Cost> one_f_one_b, zero_bubble;
  estimate_stages(w, cl, c, &one_f_one_b);
  c.plan.pipeline.schedule = PipelineSchedule::kZeroBubbleH1;
  estimate_stages(w, cl, c, &zero_bubble);
  ASSERT_EQ(zero_bubble.size(), 2u);
  const Cost& first = zero_bubble[0];
  const Cost& last = zero_bubble[1];
  ASSERT_GT(last.compute_s, 5 * first.compute_s);
  // Per token: the last stage's blocks and head, forward 1 + 198 of 3 + 200 us.
  const double blocks = double(w.model.n_layer - c.plan.pipeline.cuts.at(0));
  const double last_forward = last.compute_s * (blocks * 1 + 198) / (blocks * 3 + 200);
  const double want = first.compute_s / m - (last.compute_s - last_forward) / 2 / m;
  ASSERT_GT(want, 0);
  EXPECT_NEAR(last.bubble_s, want, 1e-9 * want);
  EXPECT_NEAR(one_f_one_b[1].bubble_s, first.compute_s / m, 1e-9 * first.compute_s);
  EXPECT_LT(last.bubble_s, one_f_one_b[1].bubble_s);
}

// A pipeline sends each micro-batch's activation forward and its gradient back per boundary;
// GPT-2's first and last stages also swap their gradients of the tied table after backward
// (LLaMA's head is its own).
TEST(Planner, APipelinesSendsAndTheTiedTablesExchange) {
  for (const std::string arch : {"gpt2", "llama"}) {
    const Workload w = Tiny(arch);
    const Candidate pp2 = KeptLayoutWithPp(w, 2, 2);
    ASSERT_EQ(pp2.plan.mesh.dp, 1);
    ASSERT_EQ(pp2.plan.pipeline.virtual_stages, 1);  // one boundary each way per micro-batch
    const Cluster c = TwoNodes();
    std::vector<Cost> stages;
    estimate_stages(w, c, pp2, &stages);
    ASSERT_EQ(stages.size(), 2u);
    const double m = double(w.global_batch / pp2.micro_batch);
    const double boundary = 4.0 * double(pp2.micro_batch * w.seq_len * w.model.n_embd);
    const Link& link = c.intra;  // the 2 stages within a node of 2 devices
    double want = m * 2 * (boundary / link.bandwidth + link.latency);
    if (arch == "gpt2") want += 4.0 * 500 * 64 / link.bandwidth + link.latency;  // the table
    for (const Cost& k : stages) EXPECT_NEAR(k.pp_s, want, 1e-9 * want) << arch;
  }
}

TEST(Planner, TheOptimizerStepCostsItsMeasuredTimePerParameterARankUpdates) {
  Workload w = Tiny();
  const double held = ParamsOf(w);
  const Cluster c = TwoNodes();
  const Candidate ddp{parallel::Plan::data_parallel(2, 4, 0), 4};
  const Candidate zero1{parallel::Plan::data_parallel(2, 4, 1), 4};
  EXPECT_EQ(estimate(w, c, ddp).optimizer_s, 0) << "FLOPs alone say nothing of memory traffic";
  w.measured = MeasuredModel{};
  w.measured->optimizer_per_param = 2e-9;
  const Cost k = estimate(w, c, ddp);
  EXPECT_DOUBLE_EQ(k.optimizer_s, 2e-9 * held);  // every rank updates every parameter
  EXPECT_DOUBLE_EQ(estimate(w, c, zero1).optimizer_s, 2e-9 * held / 2);  // its shard
  EXPECT_DOUBLE_EQ(k.step_s(), k.compute_s + k.dp_s + k.optimizer_s);
  EXPECT_NE(explain(ddp, k).find("optimizer"), std::string::npos);
}

// Data-parallel traffic by ZeRO stage, by hand: the gradients' all-reduce (ZeRO's reduce-scatter
// is one here) hidden behind backward by the cluster's overlap, ZeRO-1/2's all-gather of the
// updated parameters exposed after the step.
TEST(Planner, DataParallelTrafficByZeroStage) {
  const Workload w = Tiny();
  const double held = ParamsOf(w);
  Cluster c = TwoNodes();
  const Link& link = c.intra;
  const double ar = allreduce_s(4 * held, 2, link), ag = allgather_s(4 * held, 2, link);
  for (double overlap : {0.0, 0.5, 1.0}) {
    c.dp_overlap = overlap;
    EXPECT_DOUBLE_EQ(estimate(w, c, {parallel::Plan::data_parallel(2, 4, 0), 4}).dp_s,
                     (1 - overlap) * ar);
    for (int zero : {1, 2})
      EXPECT_DOUBLE_EQ(estimate(w, c, {parallel::Plan::data_parallel(2, 4, zero), 4}).dp_s,
                       (1 - overlap) * ar + ag)
          << zero;
  }
}

// Two devices on one core: a pipeline stage that waits gives the core to the other, so the
// step is the node's work (the stages' mean busy time at the shared speed) or a stage's own
// path at the full speed, whichever is longer; without a pipeline nothing changes.
TEST(Planner, RanksSharingCoresFillEachOthersBubbles) {
  const Workload w = Tiny();
  Cluster own = TwoNodes();
  Cluster shared = own;
  shared.cores_per_node = 1;
  const Candidate dp2{parallel::Plan::data_parallel(2, w.model.n_layer), 4};
  const Cost a = estimate(w, own, dp2), b = estimate(w, shared, dp2);
  EXPECT_NEAR(b.step_s(), a.step_s(), 1e-12 * a.step_s());
  EXPECT_NEAR(b.compute_s, a.compute_s / 2, 1e-15);
  EXPECT_NEAR(b.core_wait_s, a.compute_s / 2, 1e-15);

  const Candidate pp2 = KeptLayoutWithPp(w, 2, 2);
  std::vector<Cost> alone, sharing;
  estimate_stages(w, own, pp2, &alone);
  estimate_stages(w, shared, pp2, &sharing);
  ASSERT_EQ(alone.size(), 2u);
  ASSERT_EQ(sharing.size(), 2u);
  auto busy = [](const Cost& k) { return k.compute_s + k.recompute_s + k.tp_s + k.cp_s; };
  const double mean = (busy(alone[0]) + busy(alone[1])) / 2;
  for (size_t s = 0; s < 2; ++s) {
    const double own_path = (busy(alone[s]) + alone[s].bubble_s) / 2;
    EXPECT_NEAR(busy(sharing[s]) + sharing[s].bubble_s + sharing[s].core_wait_s,
                std::max(own_path, mean), 1e-12 * mean)
        << "stage " << s;
    EXPECT_NEAR(sharing[s].bubble_s, alone[s].bubble_s / 2, 1e-15) << "stage " << s;
  }
  EXPECT_LT(estimate(w, shared, pp2).step_s(), estimate(w, own, pp2).step_s());
}

TEST(Planner, ThePictureDrawsEachStagesTimeAndMemory) {
  const Workload w = Tiny();
  const Candidate pp2 = KeptLayoutWithPp(w, 4, 2);
  std::vector<Cost> stages;
  const Cost whole = estimate_stages(w, TwoNodes(), pp2, &stages);
  ASSERT_EQ(stages.size(), 2u);
  // The plan's cost is its slowest stage's time and its fullest stage's memory.
  EXPECT_DOUBLE_EQ(whole.step_s(), std::max(stages[0].step_s(), stages[1].step_s()));
  EXPECT_DOUBLE_EQ(whole.memory_bytes(),
                   std::max(stages[0].memory_bytes(), stages[1].memory_bytes()));
  const double budget = 2 * whole.memory_bytes();
  const std::string svg = plan_svg(pp2, stages, budget, "a <test> & plan");
  EXPECT_NE(svg.find("a &lt;test&gt; &amp; plan"), std::string::npos);
  EXPECT_EQ(svg.rfind("</svg>\n"), svg.size() - 7);
  // Each group's bars add up to its stage's share of the panel (380 wide): time against the
  // slowest stage, memory against the budget (the largest here).
  const std::regex group("<g class=\"(time|memory)\" data-stage=\"(\\d)\"[^>]*>([\\s\\S]*?)</g>");
  const std::regex rect("width=\"([0-9.]+)\"");
  int groups = 0;
  for (std::sregex_iterator g(svg.begin(), svg.end(), group), end; g != end; ++g, ++groups) {
    const std::string body = (*g)[3];
    double width = 0;
    for (std::sregex_iterator r(body.begin(), body.end(), rect); r != end; ++r)
      width += std::stod((*r)[1]);
    const Cost& k = stages[size_t(std::stoi((*g)[2]))];
    const double want =
        (*g)[1] == "time" ? 380 * k.step_s() / whole.step_s() : 380 * k.memory_bytes() / budget;
    EXPECT_NEAR(width, want, 0.05 * 7) << (*g)[1] << " stage " << (*g)[2];
  }
  EXPECT_EQ(groups, 4);
}

TEST(Planner, ClusterFilesNameWhatIsWrong) {
  const std::string good = R"({"name": "x", "nodes": 2, "devices_per_node": 8, "memory_gb": 80,
    "peak_tflops": 312, "efficiency": 0.4, "intra": {"gb_per_s": 300, "latency_us": 3},
    "inter": {"gb_per_s": 25, "latency_us": 10}})";
  auto c = cluster_from_json(good, "a.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->devices(), 16);
  EXPECT_DOUBLE_EQ(c->intra.bandwidth, 300e9);
  EXPECT_DOUBLE_EQ(c->inter.latency, 10e-6);
  EXPECT_DOUBLE_EQ(c->peak_flops, 312e12);
  auto error = [](const std::string& text) {
    auto r = cluster_from_json(text, "a.json");
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_NE(error("{"), "ok");
  EXPECT_NE(error(R"({"name": "x"})").find("a.json.nodes is missing"), std::string::npos);
  std::string bad = good;
  bad.replace(bad.find("\"efficiency\": 0.4"), 17, "\"efficiency\": 1.5");
  EXPECT_NE(error(bad).find("a.json.efficiency: 1.5 is outside [0.001, 1"), std::string::npos)
      << error(bad);
  bad = good;
  bad.replace(bad.find("\"latency_us\": 3"), 15, "\"latncy_us\": 3");
  EXPECT_NE(error(bad).find("a.json.intra.latncy_us: unknown key"), std::string::npos)
      << error(bad);
  bad = good;
  bad.replace(bad.find("\"nodes\": 2"), 10, "\"nodes\": 2.5");
  EXPECT_NE(error(bad).find("whole numbers"), std::string::npos) << error(bad);
  EXPECT_EQ(c->cores_per_node, 0) << "devices compute on their own unless told";
  bad = good;
  bad.replace(bad.find("\"nodes\": 2"), 10, "\"nodes\": 2, \"cores_per_node\": 1.5");
  EXPECT_NE(error(bad).find("a.json.cores_per_node: a whole number"), std::string::npos)
      << error(bad);
  std::string two = good;
  two.replace(two.find("\"nodes\": 2"), 10, "\"nodes\": 2, \"cores_per_node\": 2");
  ASSERT_EQ(error(two), "ok");
  EXPECT_EQ(cluster_from_json(two, "a.json")->cores_per_node, 2);
  // A measured profile names its overlap; one without was written before it was measured.
  std::string measured = good;
  measured.replace(measured.find("\"nodes\": 2"), 10, "\"nodes\": 2, \"measured\": {}");
  EXPECT_NE(error(measured).find("a.json: a measured profile without dp_overlap"),
            std::string::npos)
      << error(measured);
  measured.replace(measured.find("\"nodes\": 2"), 10, "\"nodes\": 2, \"dp_overlap\": 0.1");
  EXPECT_EQ(error(measured), "ok");
}

}  // namespace
}  // namespace cairn::planner
