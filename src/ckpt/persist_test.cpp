#include "cairn/ckpt/persist.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "cairn/ckpt/shm_slot.h"

namespace cairn::ckpt {
namespace {

TEST(Persist, NewestSlotOnceThenNothingNewer) {
  std::string base = "/cairn-persist-test-" + std::to_string(getpid());
  std::string root = std::filesystem::temp_directory_path() / ("cairn_persist_" + std::to_string(getpid()));
  std::filesystem::remove_all(root);
  auto a = ShmSlot::Create(base + "-0", 1 << 16);
  auto b = ShmSlot::Create(base + "-1", 1 << 16);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->write(3, {{"model.w", torch::full({4}, 3.0f)}}, {{"step", 3}}).ok());
  ASSERT_TRUE((*b)->write(5, {{"model.w", torch::full({4}, 5.0f)}}, {{"step", 5}}).ok());
  std::vector<std::string> names = {base + "-0", base + "-1", base + "-missing"};

  auto p = persist_newest_slot(names, root);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->step, 5);
  auto loaded = load_latest(root, nullptr);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->step, 5);
  EXPECT_TRUE(torch::equal(loaded->tensors.at("model.w"), torch::full({4}, 5.0f)));
  EXPECT_EQ(loaded->state["persisted_from"], base + "-1");

  auto again = persist_newest_slot(names, root);  // storage already holds step 5
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  (*b)->clear();  // only step 3 left in memory: older than storage
  again = persist_newest_slot(names, root);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace cairn::ckpt
