// The AdamW update's two forms: the fused CPU kernel and the tensor operations used off the CPU
// (a GPU, untested here for want of one) give the same parameters and moments, with and without
// weight decay and clipping, over several steps.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "parallel/adamw_kernel_impl.h"

namespace cairn::parallel {
namespace {

TEST(AdamWKernel, TensorFormMatchesTheFusedKernel) {
  AdamHyper h;
  h.weight_decay = 0.1;
  for (bool decay : {false, true}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    const int64_t n = 1000;
    auto p1 = torch::randn({n}, gen), m1 = torch::zeros({n}), v1 = torch::zeros({n});
    auto p2 = p1.clone(), m2 = m1.clone(), v2 = v1.clone();
    for (int step = 1; step <= 5; ++step) {
      const auto g = torch::randn({n}, gen);
      const AdamCoeffs c = adam_coeffs(h, step, 3e-3, step == 3 ? 0.5f : 1.0f);
      adamw_update(p1.data_ptr<float>(), g.data_ptr<float>(), m1.data_ptr<float>(),
                   v1.data_ptr<float>(), n, c, decay);
      adamw_update_tensors(p2, g, m2, v2, c, decay);
    }
    EXPECT_TRUE(torch::allclose(m1, m2, 1e-6, 1e-7)) << decay;
    EXPECT_TRUE(torch::allclose(v1, v2, 1e-6, 1e-9)) << decay;
    EXPECT_TRUE(torch::allclose(p1, p2, 1e-6, 1e-7)) << decay;
    EXPECT_FALSE(torch::equal(p1, torch::randn({n}, at::make_generator<at::CPUGeneratorImpl>(7))))
        << "the parameters did not move";
  }
}

}  // namespace
}  // namespace cairn::parallel
