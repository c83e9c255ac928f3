#include "cairn/model/attention.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

namespace cairn::model {
namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

struct Grads {
  torch::Tensor out, dq, dk, dv;
};

template <typename Fn>
Grads run(Fn fn, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
          const torch::Tensor& go) {
  auto q = q0.clone().requires_grad_(true);
  auto k = k0.clone().requires_grad_(true);
  auto v = v0.clone().requires_grad_(true);
  auto out = fn(q, k, v);
  out.backward(go);
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// (B, H, K, T, D)
class CausalAttentionTest
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>> {};

TEST_P(CausalAttentionTest, MatchesNaiveInValueAndGradients) {
  auto [B, H, K, T, D] = GetParam();
  torch::manual_seed(1);
  auto q = torch::randn({B, H, T, D});
  auto k = torch::randn({B, K, T, D});
  auto v = torch::randn({B, K, T, D});
  auto go = torch::randn({B, H, T, D});
  auto fast = run(causal_attention, q, k, v, go);
  // Reference in float64, so the comparison measures the fp32 kernel's own error.
  auto ref = run(naive_causal_attention, q.to(torch::kDouble), k.to(torch::kDouble),
                 v.to(torch::kDouble), go.to(torch::kDouble));
  EXPECT_EQ(fast.out.sizes(), q.sizes());
  EXPECT_LT(max_diff(fast.out, ref.out.to(torch::kFloat)), 1e-5);
  EXPECT_LT(max_diff(fast.dq, ref.dq.to(torch::kFloat)), 1e-5);
  EXPECT_LT(max_diff(fast.dk, ref.dk.to(torch::kFloat)), 1e-5);
  EXPECT_LT(max_diff(fast.dv, ref.dv.to(torch::kFloat)), 1e-5);
  auto naive32 = run(naive_causal_attention, q, k, v, go);
  EXPECT_LT(max_diff(fast.out, naive32.out), 1e-5);
  EXPECT_LT(max_diff(fast.dk, naive32.dk), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CausalAttentionTest,
    ::testing::Values(std::make_tuple(1, 1, 1, 1, 8), std::make_tuple(2, 4, 4, 17, 16),
                      std::make_tuple(2, 4, 4, 64, 16), std::make_tuple(1, 4, 2, 65, 8),
                      std::make_tuple(2, 6, 2, 130, 8), std::make_tuple(1, 8, 1, 200, 32)));

TEST(CausalAttention, FutureKeysDoNotLeak) {
  torch::manual_seed(2);
  auto q = torch::randn({1, 2, 100, 8});
  auto k = torch::randn({1, 2, 100, 8});
  auto v = torch::randn({1, 2, 100, 8});
  auto k2 = k.clone(), v2 = v.clone();
  k2.narrow(2, 70, 30).normal_();
  v2.narrow(2, 70, 30).normal_();
  auto a = causal_attention(q, k, v), b = causal_attention(q, k2, v2);
  EXPECT_TRUE(torch::equal(a.narrow(2, 0, 70), b.narrow(2, 0, 70)));
  EXPECT_FALSE(torch::equal(a.narrow(2, 70, 30), b.narrow(2, 70, 30)));
}

TEST(CausalAttention, AcceptsNonContiguousInputs) {
  torch::manual_seed(3);
  auto qkv = torch::randn({2, 33, 3, 4, 8});  // (B, T, 3, H, D)
  auto q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2),
       v = qkv.select(2, 2).transpose(1, 2);
  EXPECT_LT(max_diff(causal_attention(q, k, v), naive_causal_attention(q, k, v)), 1e-5);
}

TEST(CausalAttention, RejectsBadShapes) {
  auto q = torch::randn({1, 4, 8, 8});
  EXPECT_THROW(causal_attention(q, torch::randn({1, 3, 8, 8}), torch::randn({1, 3, 8, 8})),
               c10::Error);
  EXPECT_THROW(causal_attention(q, torch::randn({1, 4, 9, 8}), torch::randn({1, 4, 9, 8})),
               c10::Error);
  EXPECT_THROW(causal_attention(q, q, torch::randn({1, 4, 8, 4})), c10::Error);
  EXPECT_THROW(causal_attention(q.view({4, 8, 8}), q, q), c10::Error);
}

TEST(CausalAttention, BFloat16CloseToFloat) {
  torch::manual_seed(5);
  auto q = torch::randn({1, 4, 70, 16}), k = torch::randn({1, 2, 70, 16}),
       v = torch::randn({1, 2, 70, 16});
  auto bf = [](const torch::Tensor& t) { return t.to(torch::kBFloat16); };
  auto out = causal_attention(bf(q), bf(k), bf(v));
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_LT(max_diff(out.to(torch::kFloat), naive_causal_attention(q, k, v)), 5e-2);
}

}  // namespace
}  // namespace cairn::model
