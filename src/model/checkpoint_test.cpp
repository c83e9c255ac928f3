#include "cairn/model/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace cairn::model {
namespace {

TEST(Checkpoint, GradientsEqualPlainRun) {
  torch::manual_seed(4);
  auto w1 = torch::randn({8, 8}).requires_grad_(true);
  auto w2 = torch::randn({8, 8}).requires_grad_(true);
  auto frozen = torch::randn({8});
  BlockFn block = [w1, w2, frozen](const torch::Tensor& x) {
    return x + torch::tanh(x.matmul(w1)).matmul(w2) * frozen;
  };
  auto x0 = torch::randn({3, 8});

  auto xa = x0.clone().requires_grad_(true);
  auto ya = block(block(xa));
  ya.pow(2).sum().backward();
  auto ga1 = w1.grad().clone(), ga2 = w2.grad().clone(), gxa = xa.grad().clone();
  w1.mutable_grad().zero_();
  w2.mutable_grad().zero_();

  auto xb = x0.clone().requires_grad_(true);
  auto yb = checkpoint(block, checkpoint(block, xb, {w1, w2}), {w1, w2});
  EXPECT_TRUE(yb.requires_grad());
  EXPECT_LT((ya - yb).abs().max().item<double>(), 1e-6);
  yb.pow(2).sum().backward();
  EXPECT_LT((w1.grad() - ga1).abs().max().item<double>(), 1e-6);
  EXPECT_LT((w2.grad() - ga2).abs().max().item<double>(), 1e-6);
  EXPECT_LT((xb.grad() - gxa).abs().max().item<double>(), 1e-6);
}

TEST(Checkpoint, ParametersOnlyStillGetGradients) {
  auto w = torch::randn({4, 4}).requires_grad_(true);
  BlockFn block = [w](const torch::Tensor& x) { return x.matmul(w); };
  auto x = torch::randn({2, 4});  // does not require grad
  checkpoint(block, x, {w}).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_TRUE(torch::allclose(w.grad(), x.sum(0).unsqueeze(1).expand({4, 4})));
}

TEST(Checkpoint, DetectsParameterChangedBeforeBackward) {
  auto w = torch::randn({4, 4}).requires_grad_(true);
  BlockFn block = [w](const torch::Tensor& x) { return x.matmul(w); };
  auto y = checkpoint(block, torch::randn({2, 4}), {w});
  {
    torch::NoGradGuard no_grad;
    w.add_(1.0);
  }
  EXPECT_THROW(y.sum().backward(), c10::Error);
}

}  // namespace
}  // namespace cairn::model
