// Tests of the local sampler: permutation properties, determinism, sample contents, threads.
#include "cairn/data/local_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace cairn::data {
namespace {

namespace fs = std::filesystem;

class LocalSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() / ("cairn_sampler_" + std::to_string(::getpid()) + ".bin"))
                .string();
    std::vector<int32_t> ids(1001);
    for (int i = 0; i < 1001; ++i) ids[i] = i % 500;
    ASSERT_TRUE(write_token_file(path_, ids, 500).ok());
    auto f = TokenFile::Open(path_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    file_ = std::move(f).value();
  }
  void TearDown() override { fs::remove(path_); }
  std::string path_;
  std::unique_ptr<TokenFile> file_;
};

TEST(EpochPermutation, VisitsEveryIdOnce) {
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      auto p = epoch_permutation(n, 5, epoch);
      std::sort(p.begin(), p.end());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(p[i], i);
    }
  }
}

TEST(EpochPermutation, DependsOnSeedAndEpochOnly) {
  EXPECT_EQ(epoch_permutation(1000, 5, 2), epoch_permutation(1000, 5, 2));
  EXPECT_NE(epoch_permutation(1000, 5, 2), epoch_permutation(1000, 5, 3));
  EXPECT_NE(epoch_permutation(1000, 5, 2), epoch_permutation(1000, 6, 2));
  // Pinned: the order must not change between builds or machines.
  EXPECT_EQ(epoch_permutation(10, 42, 0), (std::vector<int64_t>{9, 6, 2, 0, 1, 4, 3, 8, 5, 7}));
  EXPECT_EQ(epoch_permutation(10, 42, 1), (std::vector<int64_t>{5, 4, 1, 3, 0, 2, 7, 8, 6, 9}));
}

TEST(BoundedDraw, IsUnbiasedAndInRange) {
  std::mt19937_64 rng(9);
  const uint64_t bound = 3;
  int counts[3] = {};
  for (int i = 0; i < 300000; ++i) {
    uint64_t v = bounded_draw(rng, bound);
    ASSERT_LT(v, bound);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, 100000, 1500);
  // A bound just above 2^63 rejects about half the raw draws; results stay in range.
  const uint64_t big = (uint64_t{1} << 63) + 12345;
  for (int i = 0; i < 1000; ++i) ASSERT_LT(bounded_draw(rng, big), big);
  EXPECT_EQ(bounded_draw(rng, 1), 0u);
}

TEST_F(LocalSamplerTest, SamplesAreShiftedWindows) {
  LocalSampler s(file_.get(), 100, 1);
  EXPECT_EQ(s.num_samples(), 10);  // (1001 - 1) / 100
  std::vector<int64_t> in(100), tg(100);
  s.fill(3, in.data(), tg.data());
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(in[i], (300 + i) % 500);
    EXPECT_EQ(tg[i], (301 + i) % 500);
  }
  s.fill(9, in.data(), tg.data());  // the last sample ends at the file's last token
  EXPECT_EQ(tg[99], 1000 % 500);
  EXPECT_THROW(s.fill(10, in.data(), tg.data()), std::out_of_range);
}

TEST_F(LocalSamplerTest, EpochsArePermutationsThatDiffer) {
  LocalSampler s(file_.get(), 10, 77);
  const int64_t n = s.num_samples();
  ASSERT_EQ(n, 100);
  std::vector<std::vector<int64_t>> epochs(4);
  for (int64_t g = 0; g < 4 * n; ++g) epochs[g / n].push_back(s.sample_id(g));
  for (auto& e : epochs) {
    auto sorted = e;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  EXPECT_EQ(epochs[2], epoch_permutation(n, 77, 2));
  // Going back to an old epoch gives the same order again.
  EXPECT_EQ(s.sample_id(5), epochs[0][5]);
}

TEST_F(LocalSamplerTest, SameSeedSameOrder) {
  LocalSampler a(file_.get(), 10, 123), b(file_.get(), 10, 123), c(file_.get(), 10, 124);
  std::vector<int64_t> va, vb, vc;
  for (int64_t g = 0; g < 300; ++g) {
    va.push_back(a.sample_id(g));
    vb.push_back(b.sample_id(g));
    vc.push_back(c.sample_id(g));
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
}

TEST_F(LocalSamplerTest, ThreadsAcrossEpochs) {
  LocalSampler s(file_.get(), 10, 3);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t g = t; g < 2000; g += 3) {
        int64_t want = epoch_permutation(100, 3, g / 100)[g % 100];
        bad[t] += s.sample_id(g) != want;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

TEST_F(LocalSamplerTest, BadArguments) {
  EXPECT_THROW(LocalSampler(file_.get(), 0, 1), std::invalid_argument);
  EXPECT_THROW(LocalSampler(file_.get(), 1001, 1), std::invalid_argument);
  EXPECT_NO_THROW(LocalSampler(file_.get(), 1000, 1));
  auto r = LocalSampler::Open(file_.get(), 5000, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("1001 tokens"), std::string::npos) << r.status().message();
  EXPECT_THROW(LocalSampler(file_.get(), 10, 1).sample_id(-1), std::out_of_range);
}

}  // namespace
}  // namespace cairn::data
