#include "cairn/ckpt/orphans.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/persist.h"
#include "cairn/ckpt/shm_slot.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

// A pid that belonged to a process which has exited (and been reaped).
int dead_pid() {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return int(child);
}

class OrphansTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    char buf[32];
    std::snprintf(buf, sizeof(buf), "/cairn-%08x%04x", unsigned(::getpid()),
                  unsigned(++counter) & 0xffff);
    prefix_ = buf;
    root_ = (fs::temp_directory_path() /
             ("cairn_orphans_" + std::to_string(getpid()) + "_" + std::to_string(counter)))
                .string();
    fs::remove_all(root_);
  }
  void TearDown() override {
    for (int i = 0; i < 2; ++i) ::shm_unlink(Name(i).c_str());
    fs::remove_all(root_);
  }
  std::string Name(int i) const { return prefix_ + "-r0-" + std::to_string(i); }
  // A slot of rank 0 (world 1) holding step `step`, owned by `owner`; it outlives this object.
  void Make(int i, int64_t step, int owner) {
    auto s = ShmSlot::Create(Name(i), 1 << 16, /*unlink_on_close=*/false);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    PersistTarget t{root_, 0, 1, 0, 0};
    nlohmann::json state = {{"step", step}, {"persist", to_json(t)}};
    ASSERT_TRUE((*s)->write(step, {{"w", torch::full({3, 4}, float(step))}}, state, 1).ok());
    (*s)->set_owner(owner);
  }
  std::vector<SlotReport> Collect(bool dry_run = false, double min_idle_s = 0) {
    OrphanOptions o;
    o.dry_run = dry_run;
    o.min_idle_s = min_idle_s;
    o.only_prefix = prefix_;
    return collect_orphan_slots(o);
  }
  bool Exists(int i) const { return fs::exists("/dev/shm" + Name(i)); }
  std::string prefix_, root_;
};

TEST_F(OrphansTest, ADeadOwnersSlotIsPersistedThenRemoved) {
  Make(0, 7, dead_pid());
  auto r = Collect();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].removed) << r[0].detail;
  EXPECT_TRUE(r[0].persisted) << r[0].detail;
  EXPECT_EQ(r[0].step, 7);
  EXPECT_FALSE(Exists(0));
  auto c = load_latest(root_, nullptr);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->step, 7);
  EXPECT_TRUE(torch::equal(c->tensors.at("w"), torch::full({3, 4}, 7.0f)));
}

TEST_F(OrphansTest, ALiveOwnersSlotIsLeftAlone) {
  Make(0, 3, int(::getpid()));
  auto r = Collect();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].owner_alive);
  EXPECT_FALSE(r[0].removed);
  EXPECT_TRUE(Exists(0));
  EXPECT_EQ(newest_complete_step(root_), -1);
}

TEST_F(OrphansTest, WhatStorageHoldsIsRemovedWithoutWriting) {
  Make(0, 4, dead_pid());
  Make(1, 9, dead_pid());
  auto dry = Collect(/*dry_run=*/true);
  ASSERT_EQ(dry.size(), 2u);
  EXPECT_FALSE(dry[0].persisted) << "step 4 is older than the step 9 a real run writes first";
  EXPECT_TRUE(dry[1].persisted);
  auto r = Collect();
  ASSERT_EQ(r.size(), 2u);
  // The newest first: step 9 is written, step 4 then needs no write.
  EXPECT_TRUE(r[0].removed && r[1].removed);
  EXPECT_FALSE(r[0].persisted) << r[0].detail;
  EXPECT_TRUE(r[1].persisted) << r[1].detail;
  EXPECT_FALSE(Exists(0) || Exists(1));
  EXPECT_EQ(newest_complete_step(root_), 9);
  Make(0, 5, dead_pid());
  r = Collect();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].removed);
  EXPECT_FALSE(r[0].persisted) << "storage holds step 9, newer than 5";
  EXPECT_NE(r[0].detail.find("storage holds step 9"), std::string::npos) << r[0].detail;
}

TEST_F(OrphansTest, ADryRunChangesNothing) {
  Make(0, 2, dead_pid());
  auto r = Collect(/*dry_run=*/true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].removed && r[0].persisted);
  EXPECT_TRUE(Exists(0));
  EXPECT_EQ(newest_complete_step(root_), -1);
}

TEST_F(OrphansTest, ARecentOrphanIsLeftForItsRestart) {
  Make(0, 3, dead_pid());
  auto r = Collect(/*dry_run=*/false, /*min_idle_s=*/3600);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].removed);
  EXPECT_NE(r[0].detail.find("left for its restart"), std::string::npos) << r[0].detail;
  EXPECT_TRUE(Exists(0));
}

TEST_F(OrphansTest, ASlotThatFailsToPersistIsKept) {
  Make(0, 6, dead_pid());
  // The checkpoint directory's parent is a file: nothing can be written there.
  fs::create_directories(fs::path(root_).parent_path());
  {
    auto s = ShmSlot::Open(Name(0));
    ASSERT_TRUE(s.ok());
    PersistTarget t{root_ + "/file/ckpt", 0, 1, 0, 0};
    fs::create_directories(root_);
    std::FILE* f = std::fopen((root_ + "/file").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    nlohmann::json state = {{"step", 6}, {"persist", to_json(t)}};
    ASSERT_TRUE((*s)->write(6, {{"w", torch::ones({2})}}, state, 1).ok());
  }
  auto r = Collect();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].removed) << r[0].detail;
  EXPECT_TRUE(Exists(0));
  EXPECT_NE(r[0].detail.find("failed"), std::string::npos) << r[0].detail;
}

}  // namespace
}  // namespace cairn::ckpt
