#include "cairn/train/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace cairn::train {
namespace {

// Our AdamW must give the same parameters as libtorch's own AdamW (the same algorithm as
// torch.optim.AdamW) over several steps, with and without weight decay.
TEST(AdamW, MatchesTorchAdamW) {
  torch::manual_seed(0);
  auto w0 = torch::randn({8, 5});
  auto b0 = torch::randn({5});
  auto ours_w = w0.clone().requires_grad_(), ours_b = b0.clone().requires_grad_();
  auto ref_w = w0.clone().requires_grad_(), ref_b = b0.clone().requires_grad_();
  AdamW ours({{"layer.weight", ours_w}, {"layer.bias", ours_b}}, AdamW::default_decay,
             AdamWOptions{0.9, 0.95, 1e-8, 0.1});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{ref_w},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{ref_b},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-2));
  auto x = torch::randn({3, 8});
  for (int step = 0; step < 5; ++step) {
    ours.zero_grad();
    ref.zero_grad();
    (x.mm(ours_w) + ours_b).pow(2).sum().backward();
    (x.mm(ref_w) + ref_b).pow(2).sum().backward();
    ours.step(1e-2);
    ref.step();
  }
  EXPECT_TRUE(torch::allclose(ours_w, ref_w, 1e-6, 1e-7)) << (ours_w - ref_w).abs().max();
  EXPECT_TRUE(torch::allclose(ours_b, ref_b, 1e-6, 1e-7)) << (ours_b - ref_b).abs().max();
  EXPECT_EQ(ours.step_count(), 5);
}

TEST(AdamW, DecayRule) {
  EXPECT_TRUE(AdamW::default_decay("h.0.attn.c_attn.weight", torch::zeros({4, 4})));
  EXPECT_TRUE(AdamW::default_decay("wte.weight", torch::zeros({4, 4})));
  EXPECT_FALSE(AdamW::default_decay("wpe.weight", torch::zeros({4, 4})));
  EXPECT_FALSE(AdamW::default_decay("h.0.ln_1.weight", torch::zeros({4})));
  EXPECT_FALSE(AdamW::default_decay("h.0.attn.c_attn.bias", torch::zeros({12})));
}

TEST(AdamW, LoadStateChecksBeforeChanging) {
  auto p = torch::ones({2, 2}).requires_grad_();
  AdamW opt({{"p", p}}, AdamW::default_decay, {});
  p.mutable_grad() = torch::ones({2, 2});
  opt.step(0.1);
  auto saved = opt.state();
  std::map<std::string, torch::Tensor> m;
  for (auto& [k, v] : saved) m["optim." + k] = v.clone();
  AdamW fresh({{"p", p}}, AdamW::default_decay, {});
  std::map<std::string, torch::Tensor> bad = m;
  bad["optim.p.exp_avg"] = torch::zeros({3});
  EXPECT_FALSE(fresh.load_state(bad, "optim.", 1).ok());
  EXPECT_EQ(fresh.step_count(), 0);
  bad.erase("optim.p.exp_avg");
  EXPECT_FALSE(fresh.load_state(bad, "optim.", 1).ok());
  ASSERT_TRUE(fresh.load_state(m, "optim.", 1).ok());
  EXPECT_EQ(fresh.step_count(), 1);
  EXPECT_TRUE(torch::equal(fresh.state()[0].second, saved[0].second));
}

}  // namespace
}  // namespace cairn::train
