#include "cairn/ckpt/persist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "cairn/ckpt/shm_slot.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

using ::testing::HasSubstr;

class PersistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    name_ = "/cairn-persist-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    root_ = (fs::temp_directory_path() /
             ("cairn_persist_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
    for (int r = 0; r < 2; ++r)
      for (int i = 0; i < 2; ++i) {
        auto s = ShmSlot::Create(SlotName(r, i), 1 << 16);
        ASSERT_TRUE(s.ok());
        slots_[r][i] = std::move(s).value();
      }
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string SlotName(int rank, int i) const {
    return name_ + "-r" + std::to_string(rank) + "-" + std::to_string(i);
  }
  SlotPersisterOptions Options() {
    SlotPersisterOptions o;
    for (int r = 0; r < 2; ++r) o.slots[r] = {SlotName(r, 0), SlotName(r, 1)};
    o.poll_interval_s = 0.005;
    o.on_event = [this](const std::string& e, const nlohmann::json& j) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back({e, j});
    };
    return o;
  }
  // Rank r's part of step `step` (world 2): rank 0 holds "w", rank 1 holds "b".
  void Write(int rank, int slot, int64_t step, bool persist, int keep_last = 0,
             int keep_every = 0) {
    PersistTarget t{root_, rank, 2, keep_last, keep_every};
    nlohmann::json state = {{"step", step}, {"persist", to_json(t)}, {"partition", "dropped"}};
    std::vector<NamedTensor> part;
    if (rank == 0)
      part.push_back({"w", torch::full({3, 4}, float(step))});
    else
      part.push_back({"b", torch::full({5}, double(step), torch::kDouble)});
    ASSERT_TRUE(slots_[rank][slot]->write(step, part, state, 1, persist).ok());
  }
  bool WaitFor(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return done();
  }
  std::string name_, root_;
  std::unique_ptr<ShmSlot> slots_[2][2];
  std::mutex mu_;
  std::vector<std::pair<std::string, nlohmann::json>> events_;
};

// Both ranks request a persist; the background thread writes both parts, the second one
// commits: one manifest over both files, `latest` moved, the slots marked done.
TEST_F(PersistTest, BackgroundPersistCommitsWhenEveryPartIsDurable) {
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  Write(0, 0, 4, true);
  ASSERT_TRUE(WaitFor([&] { return slots_[0][0]->persist_state() == kPersistDone; }));
  EXPECT_EQ(read_latest_step(root_), -1);  // rank 1's part is missing: nothing committed
  EXPECT_FALSE(fs::exists(root_ + "/step-00000004"));
  Write(1, 1, 4, true);
  ASSERT_TRUE(WaitFor([&] { return slots_[1][1]->persist_state() == kPersistDone; }));
  EXPECT_EQ(read_latest_step(root_), 4);
  auto c = load_latest(root_, nullptr);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(torch::equal(c->tensors.at("w"), torch::full({3, 4}, 4.0f)));
  EXPECT_TRUE(torch::equal(c->tensors.at("b"), torch::full({5}, 4.0, torch::kDouble)));
  EXPECT_EQ(c->state["step"], 4);
  EXPECT_FALSE(c->state.contains("persist"));
  EXPECT_FALSE(c->state.contains("partition"));
  EXPECT_EQ(c->manifest["files"].size(), 2u);
  p->reset();
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(events_.size(), 2u);
  EXPECT_EQ(events_[0].first, "checkpoint_persisted");
  EXPECT_EQ(events_[0].second["committed"], false);
  EXPECT_EQ(events_[1].second["committed"], true);
  EXPECT_GT(events_[1].second["bytes"].get<int64_t>(), 0);
  EXPECT_TRUE(events_[1].second.contains("duration_ms"));
}

// While one part is written slowly the trainer fills two more slots, the newer step into the
// slot that held the older one: they are written oldest first all the same (an order sorted
// before the write wrote step 12 before 8, and with another rank's commit of 12 pruning its
// part of 8, step 8 was never committed).
TEST_F(PersistTest, SlotsFilledDuringASlowWriteGoOldestFirst) {
  auto third = ShmSlot::Create(SlotName(0, 2), 1 << 16);
  ASSERT_TRUE(third.ok());
  SlotPersisterOptions o = Options();
  o.slots[0].push_back(SlotName(0, 2));
  o.testing_write_delay_s = 1.0;
  auto write_third = [&](int64_t step, bool persist) {
    PersistTarget t{root_, 0, 2, 0, 0};
    nlohmann::json state = {{"step", step}, {"persist", to_json(t)}};
    std::vector<NamedTensor> part = {{"w", torch::full({3, 4}, float(step))}};
    ASSERT_TRUE((*third)->write(step, part, state, 1, persist).ok());
  };
  Write(0, 1, 5, false);
  write_third(6, false);
  Write(0, 0, 4, true);
  auto p = SlotPersister::Start(o);
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(WaitFor([&] { return slots_[0][0]->persist_state() == kPersistRunning; }));
  Write(0, 1, 12, true);  // the slot sorted before the third one gets the newer step
  write_third(8, true);
  ASSERT_TRUE(WaitFor([&] {
    return slots_[0][1]->persist_state() == kPersistDone &&
           (*third)->persist_state() == kPersistDone;
  }));
  p->reset();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> order;
  for (const auto& [event, fields] : events_)
    if (event == "checkpoint_persisted") order.push_back(fields["step"].get<int64_t>());
  EXPECT_EQ(order, (std::vector<int64_t>{4, 8, 12}));
}

// Retention after each commit: the newest keep_last, plus every keep_every-th step.
TEST_F(PersistTest, RetentionKeepsLastAndEveryNth) {
  for (int64_t step = 2; step <= 12; step += 2) {
    int slot = int(step / 2) % 2;
    for (int r = 0; r < 2; ++r) {
      Write(r, slot, step, false, /*keep_last=*/2, /*keep_every=*/4);
      PersistTarget t{root_, r, 2, 2, 4};
      auto snap = slots_[r][slot]->view();
      ASSERT_TRUE(snap.ok());
      std::vector<NamedTensor> part;
      for (auto& [n, v] : snap->tensors) part.push_back({n, v});
      auto info = persist_part(t, step, part, snap->state);
      ASSERT_TRUE(info.ok()) << info.status().ToString();
      EXPECT_EQ(info->committed, r == 1);
    }
  }
  EXPECT_EQ(list_steps(root_), (std::vector<int64_t>{4, 8, 10, 12}));
  EXPECT_EQ(read_latest_step(root_), 12);
}

// After a failure, the agent persists the newest step that every local rank holds, once.
TEST_F(PersistTest, PersistUnsavedWritesTheNewestCommonStepOnce) {
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  Write(0, 0, 6, false);
  Write(1, 0, 6, false);
  Write(0, 1, 7, false);  // rank 1 died before its save of step 7
  auto r = (*p)->persist_unsaved("worker_failed");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_FALSE(r->is_null());
  EXPECT_EQ((*r)["step"], 6);
  EXPECT_EQ((*r)["committed"], true);
  EXPECT_EQ(read_latest_step(root_), 6);
  auto again = (*p)->persist_unsaved("worker_failed");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->is_null());  // storage already holds it
}

// Queued after a failure: the slots of the newest common step become requests (a writer will
// not overwrite them) and the background thread commits the step.
TEST_F(PersistTest, QueueUnsavedHandsTheStepToTheThread) {
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  Write(0, 0, 8, false);
  Write(1, 1, 8, false);
  auto q = (*p)->queue_unsaved();
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  ASSERT_FALSE(q->is_null());
  EXPECT_EQ((*q)["step"], 8);
  ASSERT_TRUE(WaitFor([&] { return read_latest_step(root_) == 8; }));
  auto again = (*p)->queue_unsaved();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->is_null());  // on storage now
}

// A request made just before the persister stops is still written.
TEST_F(PersistTest, StopFlushesRequests) {
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  Write(0, 0, 9, true);
  Write(1, 0, 9, true);
  p->reset();
  EXPECT_EQ(read_latest_step(root_), 9);
}

// A claim left by a persister that died is taken over by the next one.
TEST_F(PersistTest, StaleClaimIsRequeued) {
  Write(0, 0, 3, true);
  Write(1, 0, 3, true);
  ASSERT_TRUE(slots_[0][0]->claim_persist());  // "dies" holding the claim
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(WaitFor([&] { return read_latest_step(root_) == 3; }));
  EXPECT_EQ(slots_[0][0]->persist_state(), kPersistDone);
}

// Storage that cannot be written: the slot is marked failed (the writer may reuse it) and the
// failure is reported; nothing is committed.
TEST_F(PersistTest, UnwritableStorageFailsTheSlotAndReports) {
  fs::create_directories(fs::path(root_).parent_path());
  { std::ofstream(root_) << "a file where the checkpoint directory should be"; }
  auto p = SlotPersister::Start(Options());
  ASSERT_TRUE(p.ok());
  Write(0, 0, 5, true);
  ASSERT_TRUE(WaitFor([&] { return slots_[0][0]->persist_state() == kPersistFailed; }));
  p->reset();
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].first, "checkpoint_persist_failed");
  EXPECT_EQ(events_[0].second["step"], 5);
  fs::remove(root_);
}

TEST(PersistTarget, BadTargetsAreRejected) {
  EXPECT_FALSE(persist_target_from({{"step", 1}}).ok());
  EXPECT_FALSE(
      persist_target_from({{"persist", {{"root", "relative"}, {"rank", 0}, {"world", 1}}}}).ok());
  EXPECT_FALSE(
      persist_target_from({{"persist", {{"root", "/x"}, {"rank", 2}, {"world", 2}}}}).ok());
  EXPECT_FALSE(persist_target_from({{"persist", {{"root", 7}, {"rank", 0}, {"world", 1}}}}).ok());
  auto t = persist_target_from({{"persist", {{"root", "/x"}, {"rank", 1}, {"world", 2}}}});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->keep_last, 3);
}

}  // namespace
}  // namespace cairn::ckpt
