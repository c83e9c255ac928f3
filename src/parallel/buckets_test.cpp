#include "cairn/parallel/buckets.h"

#include <gtest/gtest.h>

#include <random>

namespace cairn::parallel {
namespace {

TEST(Buckets, ReverseOrderAndPadding) {
  auto b = plan_buckets({10, 20, 30}, 40, 4);
  ASSERT_EQ(b.size(), 2u);
  ASSERT_EQ(b[0].slots.size(), 1u);
  EXPECT_EQ(b[0].slots[0].param, 2);
  EXPECT_EQ(b[0].numel, 32);  // 30 padded to a multiple of 4
  ASSERT_EQ(b[1].slots.size(), 2u);
  EXPECT_EQ(b[1].slots[0].param, 1);
  EXPECT_EQ(b[1].slots[1].param, 0);
  EXPECT_EQ(b[1].slots[1].offset, 20);
  EXPECT_EQ(b[1].numel, 32);
}

TEST(Buckets, EveryParameterOnceAndSlotsDisjoint) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> numels(1 + rng() % 30);
    for (auto& n : numels) n = 1 + rng() % 1000;
    int shards = 1 + int(rng() % 5);
    auto buckets = plan_buckets(numels, 1 + rng() % 3000, shards);
    std::vector<int> seen(numels.size(), 0);
    for (auto& b : buckets) {
      EXPECT_EQ(b.numel % shards, 0);
      int64_t end = 0;
      for (auto& s : b.slots) {
        EXPECT_EQ(s.offset, end);
        EXPECT_EQ(s.numel, numels[size_t(s.param)]);
        end = s.offset + s.numel;
        ++seen[size_t(s.param)];
      }
      EXPECT_LE(end, b.numel);
      EXPECT_LT(b.numel - end, shards);
    }
    for (int v : seen) EXPECT_EQ(v, 1);
  }
}

TEST(Buckets, SlotParts) {
  BucketSlot s{0, 10, 5};  // covers [10, 15)
  EXPECT_EQ(slot_part(s, 0, 10).end, 0);
  auto p = slot_part(s, 12, 20);
  EXPECT_EQ(p.begin, 2);
  EXPECT_EQ(p.end, 5);
  p = slot_part(s, 0, 13);
  EXPECT_EQ(p.begin, 0);
  EXPECT_EQ(p.end, 3);
}

}  // namespace
}  // namespace cairn::parallel
