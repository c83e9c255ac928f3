// The deterministic MicroBatchSource on its own: which micro-batches each rank gets, their
// share of the step's loss, padding and `last`, and the ids it records. (The dynamic source
// needs the master's shard service: tests/exactly_once_test.sh and streaming_test.sh.)
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "cairn/data/token_file.h"
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

}  // namespace
}  // namespace cairn::train
