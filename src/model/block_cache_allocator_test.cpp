#include "cairn/model/block_cache_allocator.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cairn/core/block_cache.h"

namespace cairn::model {
namespace {

TEST(BlockCacheAllocator, TensorsComeFromTheBlockCacheOnceInstalled) {
  const std::string line = use_training_allocator();
  ASSERT_TRUE(block_cache_allocator_installed()) << line;
  EXPECT_NE(line.find("kept to serve the next"), std::string::npos) << line;
  core::BlockCache& cache = core::process_block_cache();
  const core::BlockCache::Stats before = cache.stats();
  const int64_t bytes = int64_t(4) << 20;
  void* first = nullptr;
  {
    auto t = torch::ones({bytes / 4}, torch::kFloat);
    first = t.data_ptr();
    EXPECT_GE(cache.stats().live_bytes, before.live_bytes + bytes);
    EXPECT_FLOAT_EQ(t.sum().item<float>(), float(bytes / 4));
  }
  // Freed, kept, and handed to the next tensor of that size (a step's repeat).
  EXPECT_GE(cache.stats().free_bytes, bytes);
  auto again = torch::empty({bytes / 4}, torch::kFloat);
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_GT(cache.stats().hits, before.hits);
  // Growing a tensor in place moves it to a block of the new size; the old one is kept.
  again.resize_({bytes / 2});
  EXPECT_NE(again.data_ptr(), first);
  // A second install is a no-op.
  install_block_cache_allocator();
  EXPECT_TRUE(block_cache_allocator_installed());
}

TEST(BlockCacheAllocator, AutogradRunsOnIt) {
  use_training_allocator();
  torch::manual_seed(0);
  auto w = torch::randn({512, 1024}, torch::requires_grad());
  auto x = torch::randn({256, 512});
  auto loss = torch::mm(x, w).tanh().sum();
  loss.backward();
  // The gradient matches the same product computed again.
  auto expect = torch::mm(x.t(), 1 - torch::mm(x, w.detach()).tanh().pow(2));
  EXPECT_TRUE(torch::allclose(w.grad(), expect, 1e-4, 1e-4));
}

}  // namespace
}  // namespace cairn::model
