#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "cairn/elastic/flash_slots.h"
#include "train/flash_impl.h"

namespace cairn::train {
namespace {

using ::testing::HasSubstr;

std::vector<ckpt::NamedTensor> State(float v) { return {{"w", torch::full({64}, v)}}; }

// Saves alternate between the two slots and never overwrite one whose persist is pending; a
// save waits only when both are pending, and fails after its timeout when nobody persists.
TEST(FlashSlots, SaveWaitsOnlyWhenBothSlotsArePending) {
  std::string run = "/tmp/cairn_flash_test_" + std::to_string(getpid());
  FlashSlots f(run, 0);
  ASSERT_TRUE(f.save(1, State(1), {}, /*persist=*/true, 1.0).ok());
  ASSERT_TRUE(f.save(2, State(2), {}, /*persist=*/false, 1.0).ok());
  // Slot of step 1 is pending: step 3 goes over step 2 (memory-only), without waiting.
  auto s3 = f.save(3, State(3), {}, true, 1.0);
  ASSERT_TRUE(s3.ok());
  EXPECT_LT(s3->waited_s, 0.05);
  auto steps = f.ready_steps();
  EXPECT_THAT(steps, ::testing::UnorderedElementsAre(1, 3, -1));  // the third is not in use
  // Both pending and no persister: a bounded wait, then a clear error.
  auto timed_out = f.save(4, State(4), {}, true, 0.2);
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.status().code(), StatusCode::kTimeout);
  EXPECT_THAT(timed_out.status().message(), HasSubstr("still being persisted"));
  // A persister finishes step 1 a little later: the save waits for it and takes its slot.
  std::thread persister([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto slot = ckpt::ShmSlot::Open(elastic::flash_slot_name(run, 0, 0));
    ASSERT_TRUE(slot.ok());
    ASSERT_TRUE((*slot)->claim_persist());
    (*slot)->finish_persist(true);
  });
  auto s4 = f.save(4, State(4), {}, true, 5.0);
  persister.join();
  ASSERT_TRUE(s4.ok()) << s4.status().ToString();
  EXPECT_GT(s4->waited_s, 0.05);
  EXPECT_THAT(f.ready_steps(), ::testing::UnorderedElementsAre(4, 3, -1));
  EXPECT_TRUE(torch::equal(f.view(4)->tensors["w"], torch::full({64}, 4.0f)));
  // Waiting for a persist: done, failed, or nobody there.
  EXPECT_EQ(f.wait_persisted(4, 0.1).code(), StatusCode::kTimeout);
  auto slot3 = ckpt::ShmSlot::Open(elastic::flash_slot_name(run, 0, 1));
  ASSERT_TRUE(slot3.ok() && (*slot3)->claim_persist());
  (*slot3)->finish_persist(false);
  EXPECT_EQ(f.wait_persisted(3, 1.0).code(), StatusCode::kInternal);
  EXPECT_EQ(f.wait_persisted(9, 1.0).code(), StatusCode::kNotFound);
  EXPECT_EQ(elastic::unlink_flash_slots(run, {0}), 2);
}

// With three slots in use, a slot held by a persist leaves two for the saves: each save goes
// over the older of them, so the newest complete checkpoint is never the one being written.
TEST(FlashSlots, ThreeSlotsKeepTheNewestWhileOneIsPersisted) {
  std::string run = "/tmp/cairn_flash_test3_" + std::to_string(getpid());
  FlashSlots f(run, 0, 0, /*in_use=*/3);
  ASSERT_TRUE(f.save(1, State(1), {}, /*persist=*/true, 1.0).ok());
  for (int64_t step = 2; step <= 5; ++step) {
    auto s = f.save(step, State(float(step)), {}, false, 1.0);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_LT(s->waited_s, 0.05);
    // The pinned step 1, this step and the one before it are all complete.
    EXPECT_THAT(f.ready_steps(),
                ::testing::UnorderedElementsAre(1, step, step - 1 > 1 ? step - 1 : -1));
  }
  EXPECT_TRUE(torch::equal(f.view(4)->tensors["w"], torch::full({64}, 4.0f)));
  EXPECT_EQ(elastic::unlink_flash_slots(run, {0}), 3);
}

// prepare() makes the slots in use on its own thread: no free slot is reported until they are
// ready, then saves go into them without creating anything; stop_preparing() ends it early.
TEST(FlashSlots, PreparedSlotsAreAdoptedBySaves) {
  std::string run = "/tmp/cairn_flash_prep_" + std::to_string(getpid());
  {
    FlashSlots f(run, 0, 0, /*in_use=*/2);
    f.prepare(ckpt::ShmSlot::bytes_needed(State(1), {}));
    for (int i = 0; i < 500 && f.preparing(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_FALSE(f.preparing());
    EXPECT_TRUE(f.has_free_slot());
    auto s = f.save(1, State(1), {}, false, 1.0);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_THAT(f.ready_steps(), ::testing::UnorderedElementsAre(1, -1, -1));
  }
  EXPECT_EQ(elastic::unlink_flash_slots(run, {0}), 2);  // both made, none beyond those in use
  {
    FlashSlots f(run, 0, 0, /*in_use=*/3);
    f.prepare(int64_t(64) << 20);  // large enough to still be at work when stopped
    f.stop_preparing();
    EXPECT_FALSE(f.preparing());
  }
  elastic::unlink_flash_slots(run, {0});
}

}  // namespace
}  // namespace cairn::train
