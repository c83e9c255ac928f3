// The two MicroBatchSources on their own: which micro-batches each rank gets, their share of
// the step's loss, padding and `last`, and the ids they record. The dynamic source runs against
// a real master on 127.0.0.1 (in this process), its ranks as threads over a c10d::HashStore:
// the quota split by who asks first, every shard served once in the service's order, the ids
// recorded and completed per step, a rollback to a snapshot, the end of the data.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/core/json_lines.h"
#include "cairn/data/local_sampler.h"
#include "cairn/data/token_file.h"
#include "cairn/elastic/master_server.h"
#include "train/dynamic_data_impl.h"
#include "train/micro_batches_impl.h"

namespace fs = std::filesystem;

namespace cairn::train {
namespace {

class MicroBatchesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ =
        (fs::temp_directory_path() / ("cairn_micro_" + std::to_string(getpid()) + ".bin")).string();
    std::vector<int32_t> tokens;
    for (int i = 0; i < 4000; ++i) tokens.push_back(int32_t(i % 97));
    ASSERT_TRUE(data::write_token_file(path_, tokens, 97).ok());
    auto f = data::TokenFile::Open(path_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    file_ = std::move(f).value();
  }
  void TearDown() override { fs::remove(path_); }

  // A trainer's state as far as the deterministic source reads it: rank `rank` of `world`,
  // global batch `global` in micro-batches of 2 sequences of 8 tokens.
  std::unique_ptr<Trainer::Impl> Rank(int rank, int world, int64_t global) {
    auto m = std::make_unique<Trainer::Impl>();
    m->opt.micro_batch_size = 2;
    m->opt.global_batch_size = global;
    m->opt.seq_len = 8;
    m->opt.log_sample_ids = true;
    m->rank = rank;
    m->world = world;
    m->data_rank = rank;  // no model parallelism: the data-parallel coordinates are the world's
    m->data_world = world;
    m->sampler = std::make_unique<data::LocalSampler>(file_.get(), 8, 5);
    return m;
  }

  std::string path_;
  std::unique_ptr<data::TokenFile> file_;
};

TEST_F(MicroBatchesTest, AnEvenSplitGivesEachRankItsShareOfTheMean) {
  // 8 micro-batches over 2 ranks: 4 each, each 1/4 of the rank's mean, the 4th last.
  for (int r = 0; r < 2; ++r) {
    auto m = Rank(r, 2, 16);
    auto source = make_deterministic_batches(*m);
    ASSERT_TRUE(*source->begin_step(3));
    std::vector<MicroBatch> got;
    for (;;) {
      auto mb = source->next();
      ASSERT_TRUE(mb.ok());
      if (!*mb) break;
      got.push_back(**mb);
    }
    ASSERT_EQ(got.size(), 4u);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].divide_by, 4.0);
      EXPECT_EQ(got[i].multiply_by, 1.0);
      EXPECT_FALSE(got[i].padding);
      EXPECT_EQ(got[i].last, i == 3) << i;
      EXPECT_EQ(got[i].x.sizes(), (std::vector<int64_t>{2, 8}));
    }
    EXPECT_TRUE(source->end_step().ok());
  }
}

// 5 micro-batches over 3 ranks: ranks 0 and 1 run 2, rank 2 runs 1 and a zero-weight
// padding micro-batch; every sample of the global batch is trained exactly once, each real
// micro-batch weighing world / num_micro = 3/5, and the recorded ids are the step's in order.
TEST_F(MicroBatchesTest, AnUnevenWorldPadsTheShortRankAndCountsEverySampleOnce) {
  std::multiset<int64_t> seen;
  std::vector<int64_t> expected;
  for (int r = 0; r < 3; ++r) {
    auto m = Rank(r, 3, 10);
    for (int64_t i = 0; i < 10; ++i) expected.push_back(m->sampler->sample_id(7 * 10 + i));
    auto source = make_deterministic_batches(*m);
    ASSERT_TRUE(*source->begin_step(7));
    int real = 0, padding = 0;
    for (;;) {
      auto mb = source->next();
      ASSERT_TRUE(mb.ok());
      if (!*mb) break;
      if ((*mb)->padding) {
        ++padding;
        EXPECT_EQ((*mb)->multiply_by, 0.0);
        continue;
      }
      ++real;
      EXPECT_DOUBLE_EQ((*mb)->multiply_by, 3.0 / 5.0);
      EXPECT_EQ((*mb)->divide_by, 1.0);
    }
    EXPECT_EQ(real, r < 2 ? 2 : 1) << "rank " << r;
    EXPECT_EQ(padding, r < 2 ? 0 : 1) << "rank " << r;
    for (int64_t id : m->consumed) seen.insert(id);
    EXPECT_EQ(m->consumed.size(), size_t(real * 2));
  }
  expected.resize(10);
  EXPECT_EQ(seen, std::multiset<int64_t>(expected.begin(), expected.end()));
}

TEST_F(MicroBatchesTest, OneRankRecordsItsIdsInTheGlobalOrder) {
  auto m = Rank(0, 1, 6);
  auto source = make_deterministic_batches(*m);
  ASSERT_TRUE(*source->begin_step(2));
  int n = 0;
  for (auto mb = source->next(); mb.ok() && *mb; mb = source->next()) ++n;
  EXPECT_EQ(n, 3);
  auto record = source->record();
  ASSERT_TRUE(record.ok());
  ASSERT_TRUE(record->sample_ids.has_value());
  std::vector<int64_t> expected;
  for (int64_t i = 0; i < 6; ++i) expected.push_back(m->sampler->sample_id(2 * 6 + i));
  EXPECT_EQ(*record->sample_ids, expected);
  EXPECT_TRUE(record->micro_batches_per_rank.empty());
}

// ---- The dynamic source, against a real master ----

constexpr char kToken[] = "micro-batches-test-token";
constexpr int64_t kT = 8;  // train.seq_len
constexpr int64_t kB = 2;  // train.micro_batch_size: samples per shard
constexpr uint64_t kSeed = 11;

// What one rank got in one step.
struct RankStep {
  bool has_data = false;
  std::vector<MicroBatch> batches;  // in the order served, padding included
  std::vector<int64_t> ids;         // sample ids of the real micro-batches, read from their rows
  StepRecord record;
};

// Sets the order in which two ranks call next() within a step, so that their split is
// deterministic: by step, either they alternate (0, 1, 0, 1, ...) or one rank takes all it can
// before the other asks for its second (the other stands for a slower rank, still in its first
// forward pass). A rank with nothing left drops out of the turns.
class Turns {
 public:
  // first_drains(step): the rank that takes all it can first, or -1 to alternate.
  explicit Turns(std::function<int(int64_t)> first_drains)
      : first_drains_(std::move(first_drains)) {}

  // Calls `next` (true: it got a micro-batch) whenever it is `rank`'s turn, until it is false.
  void take(int64_t step, int rank, const std::function<bool()>& next) {
    std::unique_lock<std::mutex> lock(mu_);
    auto [it, fresh] = steps_.try_emplace(step);
    State& s = it->second;
    if (fresh) s.turn = std::max(0, first_drains_(step));
    const bool alternate = first_drains_(step) < 0;
    for (;;) {
      if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return s.turn == rank; }))
        throw std::runtime_error("rank " + std::to_string(rank) + " never got its turn");
      lock.unlock();
      const bool more = next();
      lock.lock();
      if (!more) s.done[rank] = true;
      if (!s.done[1 - rank] && (alternate || s.done[rank])) s.turn = 1 - rank;
      cv_.notify_all();
      if (!more) return;
    }
  }

 private:
  struct State {
    int turn = 0;
    bool done[2] = {false, false};
  };
  std::function<int(int64_t)> first_drains_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, State> steps_;
};

// The sample ids of a micro-batch's rows. Token i of the file is i, so sample s is the row
// s*T .. s*T+T-1 with targets one further; checks that each row is exactly that.
std::vector<int64_t> RowIds(const MicroBatch& mb) {
  std::vector<int64_t> ids;
  for (int64_t r = 0; r < mb.x.size(0); ++r) {
    const int64_t id = mb.x[r][0].item<int64_t>() / kT;
    EXPECT_TRUE(torch::equal(mb.x[r], torch::arange(id * kT, id * kT + kT, torch::kLong)))
        << mb.x[r];
    EXPECT_TRUE(torch::equal(mb.y[r], mb.x[r] + 1)) << mb.y[r];
    ids.push_back(id);
  }
  return ids;
}

// One step as the training loop runs it: begin, next until none (in `turns`' order when
// given), end, record.
Result<RankStep> RunStep(MicroBatchSource& source, int64_t step, int rank, Turns* turns) {
  RankStep out;
  CAIRN_ASSIGN_OR_RETURN(out.has_data, source.begin_step(step));
  if (!out.has_data) return out;
  Status failed = Status::Ok();
  auto take = [&]() -> bool {
    auto mb = source.next();
    if (!mb.ok()) failed = mb.status();
    if (!mb.ok() || !*mb) return false;
    out.batches.push_back(std::move(**mb));
    return true;
  };
  if (turns)
    turns->take(step, rank, take);
  else
    while (take()) {
    }
  CAIRN_RETURN_IF_ERROR(failed);
  CAIRN_RETURN_IF_ERROR(source.end_step());
  CAIRN_ASSIGN_OR_RETURN(out.record, source.record());
  for (const MicroBatch& mb : out.batches)
    if (!mb.padding)
      for (int64_t id : RowIds(mb)) out.ids.push_back(id);
  return out;
}

// The share of the job's mean loss a micro-batch carries once the gradient sync has averaged
// it over the world.
double Share(const MicroBatch& mb, int world) {
  return mb.multiply_by / mb.divide_by / double(world);
}

// Runs body(rank, group) for every rank of `world` on its own thread over one HashStore (no
// group at world 1, in this thread); returns each rank's error, empty when it had none.
std::vector<std::string> RunRanks(int world, const std::function<Status(int, comm::Group*)>& body) {
  std::vector<std::string> errors(static_cast<size_t>(world));
  auto run = [&](int r, c10::intrusive_ptr<c10d::Store> store) {
    try {
      comm::GroupOptions go;
      go.timeout = std::chrono::seconds(10);
      auto group = world > 1 ? comm::Group::Create(store, r, world, go) : nullptr;
      Status s = body(r, group.get());
      if (!s.ok()) errors[size_t(r)] = s.ToString();
    } catch (const std::exception& e) {
      errors[size_t(r)] = e.what();
    }
  };
  auto store = c10::make_intrusive<c10d::HashStore>();
  if (world == 1) {
    run(0, store);
    return errors;
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(run, r, store);
  for (auto& t : threads) t.join();
  return errors;
}

class DynamicBatchesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("cairn_dynamic_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    elastic::MasterServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.job_token = kToken;
    o.tick_interval_s = 0.02;
    o.shutdown_deadline_s = 0.5;
    auto s = elastic::MasterServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    master_ = std::move(s).value();
  }
  void TearDown() override {
    master_.reset();
    fs::remove_all(dir_);
  }

  // A train file of `num_samples` samples of kT tokens whose token i is i.
  void WriteTokens(int64_t num_samples) {
    std::vector<int32_t> tokens;
    for (int64_t i = 0; i < num_samples * kT + 1; ++i) tokens.push_back(int32_t(i));
    const std::string path = dir_ + "/train.bin";
    ASSERT_TRUE(data::write_token_file(path, tokens, int32_t(tokens.size())).ok());
    auto f = data::TokenFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    file_ = std::move(f).value();
  }

  // Rank `rank` of `world` as Trainer::open_data and resume_or_init leave it under
  // data.sharding: dynamic with nothing to resume: `quota` micro-batches of kB samples a step,
  // a client of the master's shard service put back to the dataset's start (collective).
  Result<std::unique_ptr<Trainer::Impl>> Rank(int rank, int world, comm::Group* group,
                                              int64_t quota, int64_t max_steps) {
    auto m = std::make_unique<Trainer::Impl>();
    m->opt.micro_batch_size = kB;
    m->opt.global_batch_size = quota * kB;
    m->opt.seq_len = kT;
    m->opt.max_steps = max_steps;
    m->opt.seed = kSeed;
    m->opt.log_sample_ids = true;
    m->rank = rank;
    m->world = world;
    m->data_rank = rank;  // no model parallelism: the data-parallel coordinates are the world's
    m->data_world = world;
    m->group = group;
    m->sampler = std::make_unique<data::LocalSampler>(file_.get(), kT, kSeed);
    CAIRN_ASSIGN_OR_RETURN(m->log, RunLog::Open(dir_ + "/run", rank == 0));
    DynamicDataOptions d;
    d.client.address = master_->address();
    d.client.job_token = kToken;
    d.dataset = "train.bin/test";
    d.num_samples = m->sampler->num_samples();
    d.micro_batch_size = kB;
    d.global_batch_size = quota * kB;
    d.max_steps = max_steps;
    d.seed = kSeed;
    d.rank = rank;
    d.world = world;
    CAIRN_ASSIGN_OR_RETURN(m->dynamic, DynamicData::Open(d));
    CAIRN_RETURN_IF_ERROR(m->dynamic->restore(nlohmann::json(), group));
    return m;
  }

  // Runs `steps` steps from step 0 on every rank of `world` (in `turns`' order when given);
  // steps[rank][step] is what the rank got.
  std::vector<std::vector<RankStep>> Train(int world, int64_t quota, int64_t max_steps,
                                           int64_t steps, Turns* turns) {
    std::vector<std::vector<RankStep>> got(static_cast<size_t>(world));
    auto errors = RunRanks(world, [&](int r, comm::Group* group) -> Status {
      CAIRN_ASSIGN_OR_RETURN(auto m, Rank(r, world, group, quota, max_steps));
      auto source = make_dynamic_batches(*m);
      for (int64_t s = 0; s < steps; ++s) {
        CAIRN_ASSIGN_OR_RETURN(RankStep step, RunStep(*source, s, r, turns));
        got[size_t(r)].push_back(std::move(step));
      }
      return Status::Ok();
    });
    for (int r = 0; r < world; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
    return got;
  }

  std::string dir_;
  std::unique_ptr<data::TokenFile> file_;
  std::unique_ptr<elastic::MasterServer> master_;
};

// World 1: every step is `quota` micro-batches, each a shard of kB consecutive samples, in the
// order the service documents (epoch_permutation of the shards); each carries 1/quota of the
// step's mean with `last` left to the loop; record() gives the ids served, and the master's
// snapshot as of a step holds exactly the shards that step and the earlier ones completed.
TEST_F(DynamicBatchesTest, OneRankTakesTheQuotaInTheServicesOrder) {
  WriteTokens(200);  // 100 shards
  std::vector<int64_t> shards;
  std::vector<std::vector<int64_t>> shards_by_step;
  auto errors = RunRanks(1, [&](int, comm::Group*) -> Status {
    CAIRN_ASSIGN_OR_RETURN(auto m, Rank(0, 1, nullptr, 4, 10));
    auto source = make_dynamic_batches(*m);
    for (int64_t s = 0; s < 5; ++s) {
      CAIRN_ASSIGN_OR_RETURN(RankStep step, RunStep(*source, s, 0, nullptr));
      EXPECT_TRUE(step.has_data);
      EXPECT_EQ(step.batches.size(), 4u) << "step " << s;
      double shares = 0;
      for (const MicroBatch& mb : step.batches) {
        EXPECT_FALSE(mb.padding);
        EXPECT_FALSE(mb.last.has_value());
        EXPECT_EQ(mb.divide_by, 4.0);
        EXPECT_EQ(mb.multiply_by, 1.0);
        EXPECT_EQ(mb.x.sizes(), (std::vector<int64_t>{kB, kT}));
        shares += Share(mb, 1);
      }
      EXPECT_DOUBLE_EQ(shares, 1.0);
      EXPECT_EQ(step.record.micro_batches_per_rank, (std::vector<int64_t>{4}));
      EXPECT_EQ(step.record.sample_ids, std::optional(step.ids));
      shards_by_step.emplace_back();
      for (size_t i = 0; i < step.ids.size(); i += 2) {
        EXPECT_EQ(step.ids[i] % kB, 0) << "a shard starts at index * shard_size";
        EXPECT_EQ(step.ids[i + 1], step.ids[i] + 1) << "a shard's samples are consecutive";
        shards.push_back(step.ids[i] / kB);
        shards_by_step.back().push_back(step.ids[i] / kB);
      }
    }
    // end_step reported each step's shards with that step's number (1-based).
    for (int64_t as_of : {int64_t(2), int64_t(5)}) {
      CAIRN_ASSIGN_OR_RETURN(nlohmann::json snap, m->dynamic->snapshot(as_of, nullptr));
      std::set<int64_t> expected;
      for (int64_t s = 0; s < as_of; ++s)
        expected.insert(shards_by_step[size_t(s)].begin(), shards_by_step[size_t(s)].end());
      auto done = snap.at("done").at("0").get<std::vector<int64_t>>();
      EXPECT_EQ(std::set<int64_t>(done.begin(), done.end()), expected) << "as of step " << as_of;
      EXPECT_EQ(done.size(), expected.size());
    }
    return Status::Ok();
  });
  EXPECT_EQ(errors[0], "");
  std::vector<int64_t> order = data::epoch_permutation(100, kSeed, 0);
  order.resize(20);
  EXPECT_EQ(shards, order);
}

// World 2, asking in turns: each rank takes half the quota; the step's shards are the next
// ones of the service's order, each served to one rank only, none again in a later step; both
// ranks record the same counts and ids (rank 0's, then rank 1's); the shares sum to the mean.
TEST_F(DynamicBatchesTest, TwoRanksAskingInTurnsSplitTheQuotaAndShareNoShard) {
  WriteTokens(200);
  Turns turns([](int64_t) { return -1; });
  auto got = Train(2, 6, 10, 4, &turns);
  ASSERT_EQ(got[0].size(), 4u);
  ASSERT_EQ(got[1].size(), 4u);
  std::vector<int64_t> order = data::epoch_permutation(100, kSeed, 0);
  std::multiset<int64_t> all;
  for (size_t s = 0; s < 4; ++s) {
    const RankStep &a = got[0][s], &b = got[1][s];
    EXPECT_EQ(a.batches.size(), 3u) << "step " << s;
    EXPECT_EQ(b.batches.size(), 3u) << "step " << s;
    double shares = 0;
    for (const auto* r : {&a, &b})
      for (const MicroBatch& mb : r->batches) {
        EXPECT_FALSE(mb.padding);
        shares += Share(mb, 2);
      }
    EXPECT_DOUBLE_EQ(shares, 1.0) << "step " << s;
    std::vector<int64_t> both = a.ids;
    both.insert(both.end(), b.ids.begin(), b.ids.end());
    for (const auto* r : {&a, &b}) {
      EXPECT_EQ(r->record.micro_batches_per_rank, (std::vector<int64_t>{3, 3}));
      EXPECT_EQ(r->record.sample_ids, std::optional(both));
    }
    std::set<int64_t> step_shards, expected(order.begin() + 6 * s, order.begin() + 6 * s + 6);
    for (int64_t id : both) step_shards.insert(id / kB);
    EXPECT_EQ(step_shards, expected) << "step " << s;
    all.insert(both.begin(), both.end());
  }
  EXPECT_EQ(all.size(), 48u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 48u) << "a sample served twice";
}

// World 2, quota 5: a rank still in its first micro-batch while the other finishes its own
// gets no more than that one; the faster takes the other four. Each real micro-batch weighs
// world / quota (the split is uneven), and the counts per rank are recorded.
TEST_F(DynamicBatchesTest, ASlowerRankTakesFewerMicroBatches) {
  WriteTokens(200);
  Turns turns([](int64_t step) { return step % 2 == 0 ? 0 : 1; });  // rank 1 slow, then 0
  auto got = Train(2, 5, 10, 2, &turns);
  ASSERT_EQ(got[0].size(), 2u);
  ASSERT_EQ(got[1].size(), 2u);
  const std::vector<int64_t> counts[2] = {{4, 1}, {1, 4}};
  std::set<int64_t> all;
  for (size_t s = 0; s < 2; ++s) {
    double shares = 0;
    std::vector<int64_t> both;
    for (size_t r = 0; r < 2; ++r) {
      const RankStep& step = got[r][s];
      EXPECT_EQ(int64_t(step.batches.size()), counts[s][r]) << "step " << s << " rank " << r;
      EXPECT_EQ(step.record.micro_batches_per_rank, counts[s]);
      for (const MicroBatch& mb : step.batches) {
        EXPECT_DOUBLE_EQ(mb.multiply_by, 2.0 / 5.0);
        EXPECT_EQ(mb.divide_by, 1.0);
        shares += Share(mb, 2);
      }
      both.insert(both.end(), step.ids.begin(), step.ids.end());
    }
    EXPECT_DOUBLE_EQ(shares, 1.0) << "step " << s;
    EXPECT_EQ(got[0][s].record.sample_ids, std::optional(both));
    EXPECT_EQ(got[1][s].record.sample_ids, std::optional(both));
    all.insert(both.begin(), both.end());
  }
  EXPECT_EQ(all.size(), 20u) << "2 steps of 5 shards of 2 samples, none twice";
}

// A checkpoint's snapshot as of step 1, restored after step 3 (a rollback): the two steps
// trained again serve exactly the samples steps 2 and 3 had served, and the next step new ones.
TEST_F(DynamicBatchesTest, ARollbackTrainsTheStepsAfterTheSnapshotOnceMore) {
  WriteTokens(200);
  std::vector<std::set<int64_t>> first(3), again(3);
  auto errors = RunRanks(1, [&](int, comm::Group*) -> Status {
    CAIRN_ASSIGN_OR_RETURN(auto m, Rank(0, 1, nullptr, 3, 10));
    auto source = make_dynamic_batches(*m);
    for (int64_t s = 0; s < 3; ++s) {
      CAIRN_ASSIGN_OR_RETURN(RankStep step, RunStep(*source, s, 0, nullptr));
      first[size_t(s)].insert(step.ids.begin(), step.ids.end());
    }
    CAIRN_ASSIGN_OR_RETURN(nlohmann::json snap, m->dynamic->snapshot(1, nullptr));
    CAIRN_RETURN_IF_ERROR(m->dynamic->restore(snap, nullptr));
    for (int64_t s = 1; s < 4; ++s) {
      CAIRN_ASSIGN_OR_RETURN(RankStep step, RunStep(*source, s, 0, nullptr));
      EXPECT_EQ(step.batches.size(), 3u);
      again[size_t(s - 1)].insert(step.ids.begin(), step.ids.end());
    }
    return Status::Ok();
  });
  EXPECT_EQ(errors[0], "");
  std::set<int64_t> before, replayed;
  for (int s : {1, 2}) {
    EXPECT_EQ(first[size_t(s)].size(), 6u);
    before.insert(first[size_t(s)].begin(), first[size_t(s)].end());
    replayed.insert(again[size_t(s - 1)].begin(), again[size_t(s - 1)].end());
  }
  EXPECT_EQ(replayed, before);
  EXPECT_EQ(again[2].size(), 6u);
  for (int64_t id : again[2])
    for (const auto& f : first) EXPECT_EQ(f.count(id), 0u) << "sample " << id << " again";
}

// 10 samples (5 shards), quota 3, two epochs: steps of 3, 3, 3 shards, then one shard left:
// the rank without one runs a zero-weight padding micro-batch marked last; after that no rank
// has data, begin_step says so on both and rank 0 logs data_end. Every sample trained once per
// epoch.
TEST_F(DynamicBatchesTest, TheEndOfTheLastEpochEndsTheStepsOnEveryRank) {
  WriteTokens(10);
  auto got = Train(2, 3, 1, 5, nullptr);  // max_steps 1: one epoch needed, one more for rollbacks
  ASSERT_EQ(got[0].size(), 5u);
  ASSERT_EQ(got[1].size(), 5u);
  std::multiset<int64_t> all;
  for (size_t s = 0; s < 4; ++s) {
    const int64_t expected = s < 3 ? 3 : 1;
    int64_t real = 0;
    double shares = 0;
    for (size_t r = 0; r < 2; ++r) {
      const RankStep& step = got[r][s];
      EXPECT_TRUE(step.has_data) << "step " << s << " rank " << r;
      ASSERT_FALSE(step.batches.empty()) << "every rank runs a micro-batch";
      EXPECT_EQ(step.record.micro_batches_per_rank.size(), 2u);
      if (step.batches[0].padding) {
        ASSERT_EQ(step.batches.size(), 1u);
        const MicroBatch& pad = step.batches[0];
        EXPECT_EQ(pad.multiply_by, 0.0);
        EXPECT_EQ(pad.last, std::optional<bool>(true));
        EXPECT_EQ(pad.x.sizes(), (std::vector<int64_t>{1, kT}));
        EXPECT_EQ(step.record.micro_batches_per_rank[r], 0);
      } else {
        EXPECT_EQ(step.record.micro_batches_per_rank[r], int64_t(step.batches.size()));
        for (const MicroBatch& mb : step.batches) shares += Share(mb, 2);
      }
      real += int64_t(step.ids.size()) / kB;
      all.insert(step.ids.begin(), step.ids.end());
    }
    EXPECT_EQ(real, expected) << "step " << s;
    if (s < 3) EXPECT_DOUBLE_EQ(shares, 1.0) << "step " << s;
    // Only the step of a single shard has a rank without one.
    EXPECT_EQ(int(got[0][s].batches[0].padding) + int(got[1][s].batches[0].padding), s < 3 ? 0 : 1)
        << "step " << s;
  }
  EXPECT_FALSE(got[0][4].has_data);
  EXPECT_FALSE(got[1][4].has_data);
  for (int64_t id = 0; id < 10; ++id) EXPECT_EQ(all.count(id), 2u) << "sample " << id;
  int ends = 0;
  for (const nlohmann::json& e : core::read_json_lines(dir_ + "/run/events.jsonl"))
    if (e.value("event", "") == "data_end") {
      ++ends;
      EXPECT_EQ(e.value("step", -1), 4);
    }
  EXPECT_EQ(ends, 1);
}

}  // namespace
}  // namespace cairn::train
