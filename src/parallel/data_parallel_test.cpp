#include "cairn/parallel/data_parallel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"

namespace cairn::parallel {
namespace {

bool Decay(const std::string&, const torch::Tensor& t) { return t.dim() >= 2; }

// A small MLP with a shared (tied) weight used twice, like a tied embedding.
struct Net {
  torch::Tensor w1, b1, w2;
  // A local generator: ranks run as threads and must not share the global one.
  explicit Net(uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    w1 = torch::randn({6, 5}, gen).requires_grad_();
    b1 = torch::randn({6}, gen).requires_grad_();
    w2 = torch::randn({6, 6}, gen).requires_grad_();
  }
  DataParallel::NamedParams named() { return {{"w1", w1}, {"b1", b1}, {"w2", w2}}; }
  torch::Tensor loss(const torch::Tensor& x) {
    auto h = torch::tanh(torch::addmm(b1, x, w1.t()));
    return (h.mm(w2).mm(w2.t())).pow(2).mean();
  }
};

// Full batch of 12 rows; step s uses rows of batch s.
torch::Tensor Batch(int step) {
  return torch::randn({12, 5}, at::make_generator<at::CPUGeneratorImpl>(100 + step));
}

// Reference: one process, torch::optim::AdamW, plain gradients.
std::vector<torch::Tensor> Reference(int steps, int accum) {
  Net net(1);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{net.w1, net.w2},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(
      std::vector<torch::Tensor>{net.b1},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(1e-2));
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto x = Batch(s);
    for (int a = 0; a < accum; ++a)
      (net.loss(x.narrow(0, a * 12 / accum, 12 / accum)) / accum).backward();
    opt.step();
  }
  return {net.w1.detach(), net.b1.detach(), net.w2.detach()};
}

// Runs `world` ranks as threads; rank r takes rows [r * 12 / world, ...) in `accum` micro-batches.
// With `flush`, gradients are reduced by flush_grads() after the first micro-batch and by
// finish_backward() for the rest (options.reduce_on_flush).
std::vector<std::vector<torch::Tensor>> RunData(int world, int accum, int zero_stage, int steps,
                                                bool flush = false) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::vector<torch::Tensor>> out(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      at::set_num_threads(1);
      auto group = world > 1 ? comm::Group::Create(store, r, world, {}) : nullptr;
      Net net(r == 0 ? 1 : 7);  // other ranks start different: broadcast must fix that
      DataParallelOptions o;
      o.zero_stage = zero_stage;
      o.bucket_bytes = 64;  // several buckets
      o.adam = {0.9, 0.95, 1e-8, 0.1};
      o.reduce_on_flush = flush;
      DataParallel dp(net.named(), Decay, group.get(), o);
      dp.broadcast_parameters();
      const int rows = 12 / world / accum;
      for (int s = 0; s < steps; ++s) {
        dp.zero_grad();
        auto x = Batch(s);
        for (int a = 0; a < accum; ++a) {
          dp.set_sync(a == accum - 1);
          (net.loss(x.narrow(0, (r * accum + a) * rows, rows)) / accum).backward();
          if (flush && a == 0) dp.flush_grads();
        }
        dp.finish_backward();
        dp.step(1e-2);
      }
      out[size_t(r)] = {net.w1.detach().clone(), net.b1.detach().clone(), net.w2.detach().clone()};
    });
  for (auto& t : threads) t.join();
  return out;
}

TEST(DataParallel, OneProcessMatchesTorchAdamW) {
  auto ref = Reference(5, 1);
  auto got = RunData(1, 1, 0, 5)[0];
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i], ref[i], 1e-5, 1e-6))
        << i << " " << (got[i] - ref[i]).abs().max();
}

TEST(DataParallel, WorldsAndZeroStagesMatchOneProcess) {
  auto ref = Reference(4, 1);
  for (int world : {2, 3})
    for (int stage : {0, 1, 2}) {
      auto got = RunData(world, 1, stage, 4);
      for (int r = 0; r < world; ++r)
        for (size_t i = 0; i < ref.size(); ++i) {
          EXPECT_TRUE(torch::allclose(got[size_t(r)][i], ref[i], 1e-5, 1e-6))
              << "world " << world << " stage " << stage << " rank " << r << " param " << i;
          EXPECT_TRUE(torch::equal(got[size_t(r)][i], got[0][i])) << "replicas diverged";
        }
    }
}

TEST(DataParallel, AccumulationWithSync) {
  auto ref = Reference(3, 2);
  for (int stage : {0, 1, 2}) {
    auto got = RunData(2, 2, stage, 3);
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_TRUE(torch::allclose(got[0][i], ref[i], 1e-5, 1e-6)) << "stage " << stage;
  }
}

// Reduced when the caller says (a pipeline's weight passes) rather than as autograd makes the
// gradients: the same training, ZeRO-2 included, whatever the flushes' points.
TEST(DataParallel, GradientsReducedOnFlushMatchOneProcess) {
  auto ref = Reference(3, 3);
  for (int stage : {0, 1, 2}) {
    auto got = RunData(2, 3, stage, 3, /*flush=*/true);
    for (int r = 0; r < 2; ++r)
      for (size_t i = 0; i < ref.size(); ++i)
        EXPECT_TRUE(torch::allclose(got[size_t(r)][i], ref[i], 1e-5, 1e-6))
            << "stage " << stage << " rank " << r << " param " << i;
  }
}

TEST(DataParallel, MemoryFollowsTheFormulas) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<MemoryReport> reports(3);  // per stage, world 2
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto group = comm::Group::Create(store, r, 2, {});
      for (int stage : {0, 1, 2}) {
        auto w =
            torch::randn({64, 64}, at::make_generator<at::CPUGeneratorImpl>(0)).requires_grad_();
        DataParallelOptions o;
        o.zero_stage = stage;
        DataParallel dp({{"w", w}}, Decay, group.get(), o);
        if (r == 0) reports[size_t(stage)] = dp.memory_report();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_DOUBLE_EQ(reports[0].total(), 16.0);             // 4 + 4 + 8
  EXPECT_DOUBLE_EQ(reports[1].total(), 4.0 + 4.0 + 4.0);  // 4 + 4 + 8 / 2
  EXPECT_DOUBLE_EQ(reports[2].total(), 4.0 + 2.0 + 4.0);  // 4 + 4 / 2 + 8 / 2
}

TEST(DataParallel, StateRoundTripAcrossStages) {
  // State gathered at ZeRO-1 world 2 loads into one process and gives the same next step.
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<DataParallel::NamedParams> states(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto group = comm::Group::Create(store, r, 2, {});
      Net net(1);
      DataParallelOptions o;
      o.zero_stage = 1;
      o.bucket_bytes = 64;
      DataParallel dp(net.named(), Decay, group.get(), o);
      dp.zero_grad();
      dp.set_sync(true);
      net.loss(Batch(0).narrow(0, r * 6, 6)).backward();
      dp.finish_backward();
      dp.step(1e-2);
      states[size_t(r)] = dp.gather_state();
    });
  for (auto& t : threads) t.join();
  ASSERT_EQ(states[0].size(), 6u);
  for (size_t i = 0; i < states[0].size(); ++i) {
    EXPECT_TRUE(torch::equal(states[0][i].second, states[1][i].second));
    EXPECT_GT(states[0][i].second.abs().sum().item<double>(), 0) << states[0][i].first;
  }
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : states[0]) m["optim." + k] = v;
  Net net(1);
  DataParallel one(net.named(), Decay, nullptr, {});
  std::map<std::string, torch::Tensor> bad = m;
  bad.erase("optim.w2.exp_avg");
  EXPECT_FALSE(one.load_state(bad, "optim.", 1).ok());
  ASSERT_TRUE(one.load_state(m, "optim.", 1).ok());
  auto again = one.gather_state();
  for (size_t i = 0; i < again.size(); ++i)
    EXPECT_TRUE(torch::equal(again[i].second, states[0][i].second));
  // And back into ZeRO-1 at world 2 (each rank keeps its shard of every bucket, padding
  // included): the gathered state is the same again.
  auto store2 = c10::make_intrusive<c10d::HashStore>();
  std::vector<DataParallel::NamedParams> reloaded(2);
  std::vector<std::thread> loaders;
  for (int r = 0; r < 2; ++r)
    loaders.emplace_back([&, r] {
      auto group = comm::Group::Create(store2, r, 2, {});
      Net net2(1);
      DataParallelOptions o;
      o.zero_stage = 1;
      o.bucket_bytes = 64;
      DataParallel dp(net2.named(), Decay, group.get(), o);
      EXPECT_TRUE(dp.load_state(m, "optim.", 1).ok());
      reloaded[size_t(r)] = dp.gather_state();
    });
  for (auto& t : loaders) t.join();
  for (int r = 0; r < 2; ++r)
    for (size_t i = 0; i < states[0].size(); ++i)
      EXPECT_TRUE(torch::equal(reloaded[size_t(r)][i].second, states[0][i].second))
          << "rank " << r << " " << states[0][i].first;
}

}  // namespace
}  // namespace cairn::parallel
