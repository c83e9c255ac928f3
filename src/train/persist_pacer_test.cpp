#include <gtest/gtest.h>

#include "train/persist_pacer_impl.h"

namespace cairn::train {
namespace {

TEST(PersistPacer, TheFirstPersistMayStartAtOnce) {
  PersistPacer p(0.2);
  EXPECT_TRUE(p.may_start(0));
  EXPECT_EQ(p.wait_s(0), 0);
}

TEST(PersistPacer, NoneStartsWhileOneIsInFlight) {
  PersistPacer p(1.0);
  p.requested(10);
  p.observe(true, 11);
  EXPECT_FALSE(p.may_start(11));
  EXPECT_FALSE(p.may_start(1000));
}

TEST(PersistPacer, ADutyOfAFifthWaitsFourTimesTheBusyTime) {
  PersistPacer p(0.2);
  p.requested(10);
  p.observe(true, 11);
  p.observe(false, 12);  // busy 2 s: the next one no sooner than 8 s after 12
  EXPECT_DOUBLE_EQ(p.last_busy_s(), 2);
  EXPECT_FALSE(p.may_start(19.9));
  EXPECT_NEAR(p.wait_s(16), 4, 1e-9);
  EXPECT_TRUE(p.may_start(20));
  EXPECT_EQ(p.wait_s(20), 0);
}

TEST(PersistPacer, DutyOneIsBackToBack) {
  PersistPacer p(1.0);
  p.requested(0);
  p.observe(false, 5);
  EXPECT_TRUE(p.may_start(5));
}

TEST(PersistPacer, EachPersistSetsTheNextGap) {
  PersistPacer p(0.5);
  p.requested(0);
  p.observe(false, 4);  // busy 4: gap 4
  EXPECT_FALSE(p.may_start(7));
  EXPECT_TRUE(p.may_start(8));
  p.requested(8);
  p.observe(false, 9);  // busy 1: gap 1
  EXPECT_FALSE(p.may_start(9.5));
  EXPECT_TRUE(p.may_start(10));
}

TEST(PersistPacer, AnEndSeenOnlyLaterCountsUpToThere) {
  PersistPacer p(0.5);
  p.requested(0);
  p.observe(true, 1);
  p.observe(true, 2);
  p.observe(false, 3);  // ended between 2 and 3: counted as busy 3
  EXPECT_DOUBLE_EQ(p.last_busy_s(), 3);
  EXPECT_FALSE(p.may_start(5.9));
  EXPECT_TRUE(p.may_start(6));
}

// A persist left pending by an earlier process (restarted from memory) is timed from when it
// is first seen, not from the clock's origin: it does not hold the next one back for long.
TEST(PersistPacer, APersistItDidNotAskForCountsFromWhenItIsSeen) {
  PersistPacer p(0.5);
  p.observe(true, 1000);
  EXPECT_FALSE(p.may_start(1000.5));
  EXPECT_DOUBLE_EQ(p.in_flight_for(1001), 1);
  p.observe(false, 1002);
  EXPECT_DOUBLE_EQ(p.last_busy_s(), 2);
  EXPECT_TRUE(p.may_start(1004));
  EXPECT_EQ(p.in_flight_for(1004), 0);
}

}  // namespace
}  // namespace cairn::train
