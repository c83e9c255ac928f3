// The trainer's checkpoints: in memory, persisted in the background and paced by storage,
// partitioned over ranks, and what a resume picks.
#include <set>

#include "train/trainer_testing_impl.h"

namespace cairn::train {
namespace {

// A run that loses its storage checkpoints resumes from its in-memory checkpoint and ends
// exactly where the uninterrupted run ends.
TEST_F(TrainerTest, ResumesFromSharedMemory) {
  auto cfg = Config("gpt2", {"ckpt.memory_interval=2"});
  auto straight = Trainer::Create(cfg, Run("mem_a"));
  ASSERT_TRUE(straight.ok());
  ASSERT_TRUE((*straight)->run().ok());
  auto first = Trainer::Create(cfg, Run("mem_b", false, 7));
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->run().ok());
  first->reset();
  // Storage lost: the in-memory copy of the last save (step 7) is still there.
  fs::remove_all(dir_ + "/mem_b/ckpt");
  auto second = Trainer::Create(cfg, Run("mem_b", true));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->step(), 7);
  ASSERT_TRUE((*second)->run().ok());
  auto a = Params(**straight), b = Params(**second);
  for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  std::ifstream events(dir_ + "/mem_b/events.jsonl");
  std::string all((std::istreambuf_iterator<char>(events)), {});
  EXPECT_NE(all.find("\"source\":\"memory\""), std::string::npos);
  EXPECT_NE(all.find("\"storage\":\"memory\""), std::string::npos);
  // Finished runs remove their slots.
  EXPECT_EQ(elastic::unlink_flash_slots(dir_ + "/mem_a", {0}) +
                elastic::unlink_flash_slots(dir_ + "/mem_b", {0}),
            0);
}

// ckpt.persist_interval: checkpoints reach storage through shared memory and this process's
// persister thread; retention keeps the newest keep_last plus every keep_every-th step; each
// save and persist is an event with its bytes and milliseconds.
TEST_F(TrainerTest, PersistsInTheBackgroundWithRetention) {
  auto cfg = Config("gpt2", {"ckpt.persist_interval=3", "ckpt.keep_last=2", "ckpt.keep_every=6",
                             "ckpt.persist_duty=1"});
  auto t = Trainer::Create(cfg, Run("persist"));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->run().ok());
  EXPECT_EQ(ckpt::list_steps(dir_ + "/persist/ckpt"), (std::vector<int64_t>{6, 12, 18, 20}));
  EXPECT_EQ(ckpt::read_latest_step(dir_ + "/persist/ckpt"), 20);
  std::ifstream events(dir_ + "/persist/events.jsonl");
  int saved = 0, persisted = 0;
  for (std::string line; std::getline(events, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "checkpoint_saved") {
      ++saved;
      EXPECT_GT(j["bytes"].get<int64_t>(), 0);
      EXPECT_GE(j["duration_ms"].get<double>(), 0);
      EXPECT_EQ(j["storage"], "memory");
    }
    if (j["event"] == "checkpoint_persisted") {
      ++persisted;
      EXPECT_EQ(j["committed"], true);  // one rank: its part completes the step
      EXPECT_GT(j["bytes"].get<int64_t>(), 0);
    }
  }
  EXPECT_EQ(saved, 7);  // steps 3, 6, ..., 18 and the end (20)
  EXPECT_EQ(persisted, 7);
  auto resumed = Trainer::Create(cfg, Run("persist", true));
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ((*resumed)->step(), 20);
}

// Storage sets the pace: with a persist asked for every step but at most a fifth of the time
// for storage writes, persists are deferred (at least four steps pass after one is seen done,
// since its busy time counts up to that step), training never waits for a slot, the steps
// ckpt.keep_every keeps are persisted all the same, and the end is persisted.
TEST_F(TrainerTest, PersistsArePacedByStorage) {
  auto cfg = Config("gpt2", {"ckpt.persist_interval=1", "ckpt.memory_interval=1",
                             "ckpt.keep_last=1", "ckpt.keep_every=5", "ckpt.persist_duty=0.2"});
  RunOptions run = Run("paced");
  run.testing.debug_slowdown_rank = 0;  // steps of some milliseconds: a persist spans one
  run.testing.debug_slowdown = 20;
  auto t = Trainer::Create(cfg, run);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->run().ok());
  EXPECT_EQ(ckpt::list_steps(dir_ + "/paced/ckpt"), (std::vector<int64_t>{5, 10, 15, 20}));
  std::ifstream events(dir_ + "/paced/events.jsonl");
  int deferred = 0;
  std::vector<int64_t> persisted;
  for (std::string line; std::getline(events, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "checkpoint_persist_deferred") {
      ++deferred;
      EXPECT_TRUE(j["reason"] == "ckpt.persist_duty" ||
                  j["reason"] == "the previous persist is still being written" ||
                  j["reason"] == "the in-memory slots are still being prepared")
          << j.dump();
    }
    if (j["event"] == "checkpoint_saved") {
      // Only the steps ckpt.keep_every keeps may wait for a slot (and only on slow storage).
      if (j["step"].get<int64_t>() % 5 != 0) EXPECT_LT(j.value("waited_ms", 0.0), 20.0) << j.dump();
      if (j["persist"] == true) persisted.push_back(j["step"].get<int64_t>());
    }
  }
  EXPECT_GE(deferred, 8) << "20 persists asked for, at most one in five steps' time may run";
  EXPECT_LE(persisted.size(), 12u);
  ASSERT_FALSE(persisted.empty());
  EXPECT_EQ(persisted.back(), 20);
}

// With no memory saves between persist intervals, a persist deferred because storage is still
// busy is paid from the slot of its step as soon as storage may start one, not at the next
// interval. Storage is made slow (0.3 s a part) so that a persist spans several intervals; of
// the many persists in 300 steps, those whose storage frees between two intervals are paid
// from their slot (one freeing exactly at an interval step is paid by that step's own save).
TEST_F(TrainerTest, DeferredPersistIsPaidFromItsSlotBetweenIntervals) {
  auto cfg =
      Config("gpt2", {"ckpt.persist_interval=5", "ckpt.memory_interval=0", "ckpt.keep_last=0",
                      "ckpt.persist_duty=0.9", "train.max_steps=300", "train.eval_interval=0"});
  RunOptions run = Run("owed");
  run.testing.slow_storage_s = 0.3;
  auto t = Trainer::Create(cfg, run);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->run().ok());
  std::ifstream events(dir_ + "/owed/events.jsonl");
  std::set<int64_t> deferred, paid;
  std::string trace;  // the checkpoint events, printed on failure
  for (std::string line; std::getline(events, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"].get<std::string>().rfind("checkpoint", 0) == 0) trace += line + "\n";
    if (j["event"] == "checkpoint_persist_deferred") deferred.insert(j["step"].get<int64_t>());
    if (j["event"] == "checkpoint_saved" && j["reason"] == "deferred") {
      const int64_t step = j["step"].get<int64_t>();
      EXPECT_TRUE(deferred.count(step)) << "paid a persist that was not deferred: " << j.dump();
      EXPECT_EQ(j["persist"], true);
      paid.insert(step);
    }
  }
  ASSERT_FALSE(deferred.empty()) << "a 0.3 s persist must outlast 5 steps:\n" << trace;
  ASSERT_FALSE(paid.empty()) << "no deferred persist was paid between intervals:\n" << trace;
  const std::vector<int64_t> on_storage = ckpt::list_steps(dir_ + "/owed/ckpt");
  for (int64_t step : paid)
    EXPECT_TRUE(std::count(on_storage.begin(), on_storage.end(), step)) << "step " << step;
  EXPECT_EQ(on_storage.back(), 300);
}

// Under an agent (which persists the newest step after a failure, holding its slot meanwhile)
// a rank writes three slots, as with interval persists; alone, without persists, two.
TEST_F(TrainerTest, ThreeSlotsWhenAnAgentPersists) {
  for (bool agent : {false, true}) {
    const std::string name = agent ? "agent" : "alone";
    auto cfg = Config("gpt2", {"ckpt.memory_interval=1", "train.max_steps=8"});
    RunOptions run = Run(name, /*resume=*/false, /*stop_after=*/4);  // the slots are kept
    run.agent_persists = agent;
    std::unique_ptr<ckpt::SlotPersister> persister;  // the agent's part, here
    if (agent) {
      ckpt::SlotPersisterOptions po;
      for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i)
        po.slots[0].push_back(elastic::flash_slot_name(run.run_dir, 0, i));
      auto p = ckpt::SlotPersister::Start(std::move(po));
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      persister = std::move(p).value();
    }
    auto t = Trainer::Create(cfg, run);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    ASSERT_TRUE((*t)->run().ok());
    persister.reset();
    EXPECT_EQ(elastic::unlink_flash_slots(run.run_dir, {0}), agent ? 3 : 2) << name;
    EXPECT_EQ(ckpt::list_steps(run.run_dir + "/ckpt").back(), 4) << name;
  }
}

// In-memory checkpoints at world 2 hold half of the state each; restoring puts it back
// together (mapping the other rank's slot, or by broadcast as across machines) and continues
// exactly like the uninterrupted run, for DDP, ZeRO-3 and tp2 (each rank's slices: pieces put
// back into their tensors); a tp2 checkpoint in memory also restores at dp2.
TEST_F(TrainerTest, PartitionedMemoryCheckpointsRestoreAtWorld2) {
  std::vector<std::string> base = {"train.micro_batch_size=2", "train.global_batch_size=8",
                                   "ckpt.memory_interval=2"};
  struct Variant {
    std::string keys;  // the layout
    bool map_peers;
    std::string resume_keys;  // the layout that resumes
  };
  for (Variant v : {Variant{"parallel.zero_stage=0", true, ""},
                    {"parallel.zero_stage=3", true, ""},
                    {"parallel.zero_stage=0", false, ""},
                    {"parallel.tp=2", true, ""},
                    {"parallel.tp=2", false, ""},
                    {"parallel.tp=2", true, "parallel.tp=1"}}) {
    const bool map_peers = v.map_peers;
    auto extra = base;
    extra.push_back(v.keys);
    auto cfg = Config("gpt2", extra);
    auto resume_extra = base;
    resume_extra.push_back(v.resume_keys.empty() ? v.keys : v.resume_keys);
    const std::string name = "part-" + v.keys.substr(9) + (map_peers ? "-map" : "-bcast") +
                             (v.resume_keys.empty() ? "" : "-to-" + v.resume_keys.substr(9));
    // Runs world 2 as threads; returns rank 0's parameters.
    auto run_world2 = [&](const std::string& run_name, bool resume, int64_t stop_after,
                          std::vector<int64_t>* first_steps) {
      auto store = c10::make_intrusive<c10d::HashStore>();
      std::vector<std::map<std::string, torch::Tensor>> params(2);
      std::vector<std::thread> threads;
      std::vector<std::string> errors(2);
      for (int r = 0; r < 2; ++r)
        threads.emplace_back([&, r] {
          auto group = comm::Group::Create(store, r, 2, {});
          auto run = Run(run_name, resume, stop_after);
          run.group = group.get();
          run.testing.read_peer_slots = map_peers;
          run.local_ranks = 2;  // one machine (the broadcast path is the test switch above)
          auto t = Trainer::Create(resume ? Config("gpt2", resume_extra) : cfg, run);
          if (!t.ok()) {
            errors[size_t(r)] = t.status().ToString();
            return;
          }
          if (first_steps) (*first_steps)[size_t(r)] = (*t)->step();
          auto s = (*t)->run();
          if (!s.ok()) errors[size_t(r)] = s.status().ToString();
          params[size_t(r)] = Params(**t);
        });
      for (auto& t : threads) t.join();
      for (auto& e : errors) EXPECT_EQ(e, "") << name;
      return params[0];
    };
    auto straight = run_world2(name + "a", false, 0, nullptr);
    run_world2(name + "b", false, 9, nullptr);
    fs::remove_all(dir_ + "/" + name + "b/ckpt");  // only memory is left
    std::vector<int64_t> first(2, -1);
    auto resumed = run_world2(name + "b", true, 0, &first);
    EXPECT_EQ(first, (std::vector<int64_t>{9, 9})) << name;
    for (auto& [k, t] : straight) {
      if (v.resume_keys.empty()) {
        EXPECT_TRUE(torch::equal(t, resumed.at(k))) << name << " " << k;
      } else {  // the last step trained in another layout: sums in another order
        const double diff = (t - resumed.at(k)).abs().max().item<double>();
        EXPECT_LE(diff, 1e-3 * t.abs().max().item<double>()) << name << " " << k;
      }
    }
    std::ifstream events(dir_ + "/" + name + "b/events.jsonl");
    std::string all((std::istreambuf_iterator<char>(events)), {});
    EXPECT_NE(all.find("\"source\":\"memory\""), std::string::npos) << name;
  }
}

// The model digest does not depend on the layout that saved the state: a tp2 run's in-memory
// checkpoint (slices) restored at dp2 and persisted from there without a step trained has the
// digest of the tp2 run's own storage checkpoint of that step.
TEST_F(TrainerTest, TheDigestOfAStateDoesNotDependOnTheLayoutThatSavedIt) {
  const std::vector<std::string> base = {"ckpt.memory_interval=1", "train.max_steps=10"};
  auto keys = base;
  keys.push_back("parallel.tp=2");
  auto world2 = [&](const std::vector<std::string>& k, bool resume) {
    auto store = c10::make_intrusive<c10d::HashStore>();
    std::vector<Status> got(2);
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r)
      threads.emplace_back([&, r] {
        auto group = comm::Group::Create(store, r, 2, {});
        auto run = Run("digest", resume, 5);
        run.group = group.get();
        run.local_ranks = 2;
        auto t = Trainer::Create(Config("gpt2", k), run);
        got[size_t(r)] = t.ok() ? (*t)->run().status() : t.status();
      });
    for (auto& t : threads) t.join();
    for (auto& s : got) EXPECT_TRUE(s.ok()) << s.ToString();
  };
  world2(keys, false);  // tp2, stopped after step 5: its slots hold step 5
  const std::string ckpt = dir_ + "/digest/ckpt";
  auto tp_saved = ckpt::load_latest(ckpt, nullptr);
  ASSERT_TRUE(tp_saved.ok()) << tp_saved.status().ToString();
  ASSERT_EQ(tp_saved->step, 5);
  EXPECT_EQ(tp_saved->manifest["mesh"]["tp"], 2);
  fs::remove_all(ckpt);  // memory is the only source: restored at dp2, persisted unchanged
  world2(base, true);
  auto dp_saved = ckpt::load_latest(ckpt, nullptr);
  ASSERT_TRUE(dp_saved.ok()) << dp_saved.status().ToString();
  ASSERT_EQ(dp_saved->step, 5);
  EXPECT_EQ(dp_saved->manifest["mesh"]["tp"], 1);
  EXPECT_EQ(ckpt::model_digest(dp_saved->tensors), ckpt::model_digest(tp_saved->tensors));
  ASSERT_EQ(dp_saved->tensors.size(), tp_saved->tensors.size());
  for (auto& [name, t] : tp_saved->tensors)  // the optimizer state and the RNG too
    EXPECT_TRUE(dp_saved->tensors.at(name).equal(t)) << name;
}

// A storage checkpoint newer than memory wins.
TEST_F(TrainerTest, NewerStorageCheckpointWinsOverMemory) {
  auto cfg = Config("gpt2", {"ckpt.memory_interval=2"});
  auto first = Trainer::Create(cfg, Run("mem_c", false, 7));
  ASSERT_TRUE(first.ok() && (*first)->run().ok());
  first->reset();
  // As if the last in-memory copy (step 7) were lost: memory holds step 6 only.
  for (int i = 0; i < 2; ++i) {
    auto slot = ckpt::ShmSlot::Open(elastic::flash_slot_name(dir_ + "/mem_c", 0, i));
    ASSERT_TRUE(slot.ok());
    if ((*slot)->ready_step() == 7) (*slot)->clear();
  }
  auto second = Trainer::Create(cfg, Run("mem_c", true));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->step(), 7);  // storage (step 7) is newer than memory (step 6)
  elastic::unlink_flash_slots(dir_ + "/mem_c", {0});
}

}  // namespace
}  // namespace cairn::train
