#include "cairn/model/fused_cross_entropy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace cairn::model {
namespace {

namespace F = torch::nn::functional;

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

struct Case {
  int64_t N, C, V, chunk;
  bool ignore_some;
};

class FusedCrossEntropyTest : public ::testing::TestWithParam<Case> {};

TEST_P(FusedCrossEntropyTest, MatchesTorchInValueAndGradients) {
  const Case c = GetParam();
  torch::manual_seed(7);
  auto h0 = torch::randn({c.N, c.C});
  auto w0 = torch::randn({c.V, c.C}) * 0.5;
  auto targets = torch::randint(0, c.V, {c.N}, torch::kLong);
  if (c.ignore_some) targets.index_put_({torch::arange(0, c.N, 3)}, -1);

  auto h1 = h0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
  auto fused = fused_linear_cross_entropy(h1, w1, targets, c.chunk);
  (fused * 2.5).backward();

  auto h2 = h0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
  auto ref =
      F::cross_entropy(h2.matmul(w2.t()), targets, F::CrossEntropyFuncOptions().ignore_index(-1));
  (ref * 2.5).backward();

  EXPECT_EQ(fused.dim(), 0);
  EXPECT_EQ(fused.scalar_type(), torch::kFloat);
  EXPECT_NEAR(fused.item<double>(), ref.item<double>(), 1e-5);
  EXPECT_LT(max_diff(h1.grad(), h2.grad()), 1e-5);
  EXPECT_LT(max_diff(w1.grad(), w2.grad()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedCrossEntropyTest,
                         ::testing::Values(Case{1, 4, 3, 256, false}, Case{50, 16, 97, 7, false},
                                           Case{64, 32, 1000, 64, false},
                                           Case{64, 32, 1000, 1, true},
                                           Case{300, 24, 500, 256, true},
                                           Case{40, 8, 50, 1000, true}));

TEST(FusedCrossEntropy, TiedWeightAccumulatesBothUses) {
  torch::manual_seed(8);
  auto w0 = torch::randn({40, 8});
  auto idx = torch::randint(0, 40, {30}, torch::kLong);
  auto targets = torch::randint(0, 40, {30}, torch::kLong);
  auto w1 = w0.clone().requires_grad_(true);
  auto h1 = torch::tanh(torch::embedding(w1, idx));
  fused_linear_cross_entropy(h1, w1, targets, 8).backward();
  auto w2 = w0.clone().requires_grad_(true);
  auto h2 = torch::tanh(torch::embedding(w2, idx));
  F::cross_entropy(h2.matmul(w2.t()), targets).backward();
  EXPECT_LT(max_diff(w1.grad(), w2.grad()), 1e-5);
}

TEST(FusedCrossEntropy, OnlyRequestedGradients) {
  auto h = torch::randn({10, 4}).requires_grad_(true);
  auto w = torch::randn({6, 4});
  auto targets = torch::randint(0, 6, {10}, torch::kLong);
  fused_linear_cross_entropy(h, w, targets).backward();
  EXPECT_TRUE(h.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  torch::NoGradGuard no_grad;
  auto loss = fused_linear_cross_entropy(h, w, targets);
  EXPECT_FALSE(loss.requires_grad());
}

TEST(FusedCrossEntropy, LargeLogitsStayFinite) {
  auto h = torch::full({4, 2}, 100.0);
  auto w = torch::tensor({{1.0f, 1.0f}, {-1.0f, -1.0f}, {0.5f, 0.0f}});
  auto targets = torch::tensor({1, 1, 0, 2}, torch::kLong);
  auto fused = fused_linear_cross_entropy(h, w, targets);
  auto ref = F::cross_entropy(h.matmul(w.t()), targets);
  EXPECT_TRUE(std::isfinite(fused.item<double>()));
  EXPECT_NEAR(fused.item<double>(), ref.item<double>(), 1e-3);
}

// Rows whose target probability is below float's range (logits 150 units apart) next to
// ordinary rows, in chunks of 2: each row's loss comes out exact, and the gradients too.
TEST(FusedCrossEntropy, ATargetWhoseProbabilityUnderflowsGetsItsExactLoss) {
  torch::manual_seed(3);
  auto h0 = torch::randn({6, 4});
  h0.index_put_({torch::tensor({1, 4})}, torch::full({2, 4}, 40.0));
  auto w0 = torch::randn({5, 4});
  w0[2] = torch::full({4}, 1.0);
  w0[3] = torch::full({4}, -1.0);
  auto targets = torch::tensor({0, 3, 2, 1, 3, 4}, torch::kLong);  // rows 1, 4: p ~ exp(-320)
  auto h1 = h0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
  auto fused = fused_linear_cross_entropy(h1, w1, targets, 2);
  fused.backward();
  auto h2 = h0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
  auto ref = F::cross_entropy(h2.to(torch::kDouble).matmul(w2.to(torch::kDouble).t()), targets);
  ref.backward();
  EXPECT_GT(ref.item<double>(), 50.0);
  EXPECT_NEAR(fused.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>());
  EXPECT_LT(max_diff(h1.grad(), h2.grad().to(torch::kFloat)), 1e-5);
  EXPECT_LT(max_diff(w1.grad(), w2.grad().to(torch::kFloat)), 1e-5);
}

TEST(FusedCrossEntropy, AllIgnoredIsNaNLikeTorch) {
  auto h = torch::randn({3, 4}), w = torch::randn({5, 4});
  auto targets = torch::full({3}, -1, torch::kLong);
  EXPECT_TRUE(std::isnan(fused_linear_cross_entropy(h, w, targets).item<double>()));
}

TEST(FusedCrossEntropy, RejectsBadArguments) {
  auto h = torch::randn({3, 4}), w = torch::randn({5, 4});
  EXPECT_THROW(fused_linear_cross_entropy(h, w, torch::tensor({0, 1, 5}, torch::kLong)),
               c10::Error);
  EXPECT_THROW(fused_linear_cross_entropy(h, w, torch::tensor({0, 1, -2}, torch::kLong)),
               c10::Error);
  EXPECT_THROW(fused_linear_cross_entropy(h, w, torch::tensor({0, 1}, torch::kLong)), c10::Error);
  EXPECT_THROW(
      fused_linear_cross_entropy(h, torch::randn({5, 3}), torch::tensor({0, 1, 2}, torch::kLong)),
      c10::Error);
  EXPECT_THROW(fused_linear_cross_entropy(h, w, torch::tensor({0, 1, 2}, torch::kLong), 0),
               c10::Error);
  EXPECT_THROW(fused_linear_cross_entropy(h, w, torch::tensor({0, 1, 2}, torch::kInt)), c10::Error);
}

TEST(FusedCrossEntropy, BFloat16InputsGiveFloatLossAndBFloat16Gradients) {
  torch::manual_seed(9);
  auto h = torch::randn({33, 16}), w = torch::randn({70, 16}) * 0.3;
  auto targets = torch::randint(0, 70, {33}, torch::kLong);
  auto hb = h.to(torch::kBFloat16).requires_grad_(true);
  auto wb = w.to(torch::kBFloat16).requires_grad_(true);
  auto loss = fused_linear_cross_entropy(hb, wb, targets, 8);
  loss.backward();
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  EXPECT_EQ(hb.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(wb.grad().scalar_type(), torch::kBFloat16);
  auto h32 = hb.detach().to(torch::kFloat).requires_grad_(true);
  auto w32 = wb.detach().to(torch::kFloat).requires_grad_(true);
  auto ref = torch::nn::functional::cross_entropy(h32.matmul(w32.t()), targets);
  ref.backward();
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 2e-2);
  EXPECT_LT(max_diff(hb.grad().to(torch::kFloat), h32.grad()), 1e-2);
  EXPECT_LT(max_diff(wb.grad().to(torch::kFloat), w32.grad()), 1e-2);
}

}  // namespace
}  // namespace cairn::model
