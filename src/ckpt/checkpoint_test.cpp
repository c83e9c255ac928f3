#include "cairn/ckpt/checkpoint.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"
#include "ckpt/torch_dtype_impl.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("cairn_ckpt_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::vector<NamedTensor> State(float v) {
    return {{"w", torch::full({3, 5}, v)},
            {"b", torch::arange(7, torch::kLong)},
            {"h", torch::ones({4}, torch::kBFloat16) * v}};
  }
  std::string Save(int64_t step, float v) {
    auto r = save_checkpoint(root_, step, State(v), {{"tag", v}});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->path : "";
  }
  // Flips one bit of a file at `offset`.
  static void FlipBit(const std::string& path, int64_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(offset);
    char c;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(offset);
    f.write(&c, 1);
  }
  std::string root_;
};

// The torch-free format layer (dtype names and sizes) and libtorch's types agree.
TEST(CheckpointDtypes, NamesAndSizesMatchLibtorch) {
  for (torch::ScalarType t :
       {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kLong, torch::kInt,
        torch::kShort, torch::kByte, torch::kChar, torch::kBool}) {
    const std::string name = dtype_name(t);
    EXPECT_EQ(dtype_itemsize(name), int64_t(c10::elementSize(t))) << name;
    EXPECT_EQ(torch_dtype(name), t) << name;
  }
  EXPECT_EQ(dtype_itemsize("complex64"), 0);
  torch::ScalarType t;
  EXPECT_FALSE(parse_dtype("complex64", &t));
}

TEST_F(CheckpointTest, RoundTripIsExact) {
  std::string dir = Save(7, 1.5f);
  auto r = load_checkpoint(dir);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->step, 7);
  EXPECT_EQ(r->state["tag"].get<float>(), 1.5f);
  auto want = State(1.5f);
  ASSERT_EQ(r->tensors.size(), want.size());
  for (auto& nt : want) {
    ASSERT_TRUE(r->tensors.count(nt.name));
    EXPECT_TRUE(torch::equal(r->tensors[nt.name], nt.tensor)) << nt.name;
    EXPECT_EQ(r->tensors[nt.name].scalar_type(), nt.tensor.scalar_type());
  }
  auto latest = core::read_file(root_ + "/latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, "step-00000007\n");
}

TEST_F(CheckpointTest, LatestFollowsNewestAndPruneKeepsLast) {
  Save(1, 1);
  Save(2, 2);
  Save(3, 3);
  auto r = load_latest(root_, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step, 3);
  ASSERT_TRUE(prune_checkpoints(root_, 2).ok());
  EXPECT_EQ(list_steps(root_), (std::vector<int64_t>{2, 3}));
}

TEST_F(CheckpointTest, FlippedBitIsDetectedAndPreviousUsed) {
  Save(1, 1);
  std::string dir = Save(2, 2);
  FlipBit(dir + "/rank-00000.bin", 64 + 3);
  auto r = load_checkpoint(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr("checksum mismatch in tensor 'w'"));
  std::vector<std::string> skipped;
  auto prev = load_latest(root_, &skipped);
  ASSERT_TRUE(prev.ok());
  EXPECT_EQ(prev->step, 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("checksum"));
}

TEST_F(CheckpointTest, TruncatedDataFile) {
  Save(1, 1);
  std::string dir = Save(2, 2);
  fs::resize_file(dir + "/rank-00000.bin", 100);
  auto r = load_checkpoint(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("truncated"));
  EXPECT_EQ(load_latest(root_, nullptr)->step, 1);
}

TEST_F(CheckpointTest, MissingShardFile) {
  std::string dir = Save(2, 2);
  fs::remove(dir + "/rank-00000.bin");
  auto r = load_checkpoint(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("data file is missing"));
  EXPECT_EQ(load_latest(root_, nullptr).status().code(), StatusCode::kNotFound);
}

TEST_F(CheckpointTest, LinksInsideTheCheckpointDirectoryAreNotFollowed) {
  const std::string one = Save(1, 1);
  const std::string two = Save(2, 2);
  const std::string outside = root_ + "-outside";
  fs::remove_all(outside);
  fs::create_directories(outside);
  // A data file replaced by a link (to a valid one elsewhere): refused, the previous step used.
  fs::copy_file(two + "/rank-00000.bin", outside + "/rank-00000.bin");
  fs::remove(two + "/rank-00000.bin");
  fs::create_symlink(outside + "/rank-00000.bin", two + "/rank-00000.bin");
  std::vector<std::string> skipped;
  auto r = load_latest(root_, &skipped);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->step, 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("symbolic link"));
  // A newer step directory that is a link to a copy elsewhere: skipped, named.
  fs::copy(one, outside + "/step-00000009");
  fs::create_symlink(outside + "/step-00000009", root_ + "/step-00000009");
  skipped.clear();
  r = load_latest(root_, &skipped);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->step, 1);
  EXPECT_THAT(skipped, ::testing::Contains(HasSubstr("step-00000009 is a symbolic link")));
  // A link planted where a rank would write its part: refused, nothing written through it.
  fs::create_directories(outside + "/victim");
  fs::create_symlink(outside + "/victim", root_ + "/" + parts_dir_name(3));
  auto part = write_rank_part(root_, 3, 0, State(3), nlohmann::json::object());
  ASSERT_FALSE(part.ok());
  EXPECT_THAT(part.status().message(), HasSubstr("symbolic link"));
  EXPECT_TRUE(fs::is_empty(outside + "/victim"));
  // A manifest that is a link is not read either.
  fs::remove(two + "/manifest.json");
  fs::create_symlink(one + "/manifest.json", two + "/manifest.json");
  EXPECT_FALSE(load_checkpoint(two).ok());
  fs::remove_all(outside);
}

TEST_F(CheckpointTest, HalfWrittenDirectoryIsIgnored) {
  Save(1, 1);
  // A step directory without a manifest (as if the writer died before renaming it into place
  // on a file system without atomic rename), and a leftover temporary directory.
  fs::create_directories(root_ + "/step-00000005");
  std::ofstream(root_ + "/step-00000005/rank-00000.bin") << "partial";
  fs::create_directories(root_ + "/.tmp-step-00000006-1");
  std::vector<std::string> skipped;
  auto r = load_latest(root_, &skipped);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step, 1);  // `latest` names step 1: the uncommitted step 5 is not even tried
  EXPECT_TRUE(skipped.empty());
  // Without `latest` the newest directory is tried first and rejected.
  fs::remove(root_ + "/latest");
  r = load_latest(root_, &skipped);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step, 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("incomplete checkpoint"));
}

TEST_F(CheckpointTest, NewerManifestVersionIsRefused) {
  std::string dir = Save(1, 1);
  auto text = *core::read_file(dir + "/manifest.json");
  auto j = nlohmann::json::parse(text);
  j["format_version"] = kManifestVersion + 1;
  ASSERT_TRUE(core::write_file_atomic(dir + "/manifest.json", j.dump()).ok());
  auto r = load_checkpoint(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(r.status().message(), HasSubstr("newer than this cairn reads"));
}

TEST_F(CheckpointTest, GarbageManifestAndBadMagic) {
  std::string dir = Save(1, 1);
  ASSERT_TRUE(core::write_file_atomic(dir + "/manifest.json", "{not json").ok());
  EXPECT_THAT(load_checkpoint(dir).status().message(), HasSubstr("not valid JSON"));
  std::string dir2 = Save(2, 2);
  FlipBit(dir2 + "/rank-00000.bin", 0);
  EXPECT_THAT(load_checkpoint(dir2).status().message(), HasSubstr("bad magic"));
}

TEST_F(CheckpointTest, ManifestLyingAboutSizesIsCorrupt) {
  std::string dir = Save(1, 1);
  auto j = nlohmann::json::parse(*core::read_file(dir + "/manifest.json"));
  j["tensors"][0]["shards"][0]["bytes"] = 4;
  ASSERT_TRUE(core::write_file_atomic(dir + "/manifest.json", j.dump()).ok());
  EXPECT_THAT(load_checkpoint(dir).status().message(), HasSubstr("shard size or offset is wrong"));
  j["tensors"][0]["shards"][0]["file"] = "../../etc/passwd";
  ASSERT_TRUE(core::write_file_atomic(dir + "/manifest.json", j.dump()).ok());
  EXPECT_THAT(load_checkpoint(dir).status().message(), HasSubstr("bad file name"));
}

// Found by fuzz/ckpt_header_fuzz: a header's payload size was added to the header's 64 bytes,
// so a payload of 2^64 - 1 bytes wrapped round and passed as present in any file.
TEST(CheckpointFormat, DataHeaderWithAPayloadPastAnyFileIsTruncated) {
  const std::string path =
      (fs::temp_directory_path() / ("cairn_ckpt_header_" + std::to_string(getpid()) + ".bin"))
          .string();
  DataHeader h = make_data_header(0, 0);
  h.payload_bytes = ~uint64_t{0};
  std::string bytes(reinterpret_cast<const char*>(&h), sizeof(h));
  bytes += std::string(40, 'x');
  ASSERT_TRUE(core::write_file_atomic(path, bytes).ok());
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const Status s = check_data_header(fd, path);
  ::close(fd);
  fs::remove(path);
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_THAT(s.message(), HasSubstr("truncated: 104 bytes, header says 64 + a payload of "
                                     "18446744073709551615"));
}

// Found by fuzz/ckpt_manifest_fuzz: numbers that are fractions or past int64 were converted
// (undefined behaviour), and a shape's element count could overflow int64.
TEST(CheckpointFormat, ManifestNumbersThatDoNotFitAreCorrupt) {
  auto entries = [](nlohmann::json shape, nlohmann::json slice, nlohmann::json offset,
                    nlohmann::json bytes) {
    nlohmann::json j = {{"tensors",
                         {{{"name", "w"},
                           {"dtype", "float32"},
                           {"shape", shape},
                           {"shards",
                            {{{"slice", slice},
                              {"file", "rank-00000.bin"},
                              {"offset", offset},
                              {"bytes", bytes},
                              {"xxh3", "0"}}}}}}}};
    return parse_entries(j, "ckpt/step-00000001").status();
  };
  EXPECT_TRUE(entries({4}, {{0, 4}}, 64, 16).ok());
  for (const Status& s : {entries({4}, {{0, 4}}, 4.9e19, 16), entries({4}, {{0, 4}}, 64, 16.0),
                          entries({4.5}, {{0, 4}}, 64, 16), entries({4}, {{0, 4.0}}, 64, 16),
                          entries({4}, {{0, 4}}, nlohmann::json(uint64_t{1} << 63), 16)}) {
    EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.ToString();
  }
  const int64_t big = int64_t{1} << 40;
  Status s = entries({big, big}, {{0, big}, {0, big}}, 64, 0);
  EXPECT_THAT(s.message(), HasSubstr("shape too large"));
  s = entries({4}, {{0, 4}}, INT64_MAX - 8, 16);
  EXPECT_THAT(s.message(), HasSubstr("shard size or offset is wrong"));
}

// Shards that add up to the tensor's elements but share some leave others unread (they would
// keep torch::empty's garbage): corrupt, whichever dimension they split.
TEST(CheckpointFormat, OverlappingShardsAreCorrupt) {
  auto entries = [](nlohmann::json shape, std::vector<nlohmann::json> slices) {
    nlohmann::json shards = nlohmann::json::array();
    int64_t offset = 64;
    for (auto& slice : slices) {
      int64_t n = 4;
      for (auto& d : slice) n *= d[1].get<int64_t>() - d[0].get<int64_t>();
      shards.push_back({{"slice", slice},
                        {"file", "rank-00000.bin"},
                        {"offset", offset},
                        {"bytes", n},
                        {"xxh3", "0"}});
      offset += n;
    }
    nlohmann::json j = {
        {"tensors", {{{"name", "w"}, {"dtype", "float32"}, {"shape", shape}, {"shards", shards}}}}};
    return parse_entries(j, "ckpt/step-00000001").status();
  };
  EXPECT_TRUE(entries({4}, {{{2, 4}}, {{0, 2}}}).ok());
  EXPECT_TRUE(entries({4, 6}, {{{0, 2}, {0, 3}}, {{0, 2}, {3, 6}}, {{2, 4}, {0, 6}}}).ok());
  EXPECT_TRUE(entries({4}, {{{0, 4}}, {{2, 2}}}).ok()) << "an empty shard shares nothing";
  Status s = entries({4}, {{{0, 2}}, {{1, 3}}});
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_THAT(s.message(), HasSubstr("shards 0 and 1 overlap"));
  s = entries({4, 6}, {{{0, 4}, {0, 3}}, {{0, 2}, {2, 5}}, {{2, 4}, {3, 6}}});
  EXPECT_EQ(s.code(), StatusCode::kCorrupt) << "12 + 6 + 6 elements of 24, two sharing column 2";
  EXPECT_THAT(s.message(), HasSubstr("overlap"));
}

}  // namespace
}  // namespace cairn::ckpt

namespace cairn::ckpt {
namespace {

// Three ranks each write their rows of a sharded tensor (rank 0 also the whole ones); the
// step is committed once, by whichever rank finds every part, and loads as the global tensor.
TEST_F(CheckpointTest, ShardedPartsCommitOnceAndLoadWhole) {
  const int world = 3;
  auto global = torch::arange(9 * 4, torch::kFloat).reshape({9, 4});
  auto whole = torch::arange(5, torch::kLong);
  std::vector<Result<bool>> committed(world, Status::Internal("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      std::vector<NamedTensor> mine = {{"optim.w", global.narrow(0, 3 * r, 3).clone()}};
      if (r == 0) mine.push_back({"model.b", whole});
      nlohmann::json slices = {
          {"optim.w", {{"shape", {9, 4}}, {"slice", {{3 * r, 3 * r + 3}, {0, 4}}}}}};
      auto part = write_rank_part(root_, 5, r, mine, slices);
      ASSERT_TRUE(part.ok()) << part.status().ToString();
      committed[size_t(r)] = try_commit(root_, 5, world, {{"world_size", world}});
    });
  for (auto& t : threads) t.join();
  int commits = 0;
  for (auto& c : committed) {
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    commits += *c;
  }
  EXPECT_EQ(commits, 1);
  auto loaded = load_latest(root_, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->step, 5);
  EXPECT_TRUE(torch::equal(loaded->tensors.at("optim.w"), global));
  EXPECT_TRUE(torch::equal(loaded->tensors.at("model.b"), whole));
  EXPECT_EQ(loaded->manifest["mesh"]["world_size"], world);
  EXPECT_EQ(loaded->manifest["tensors"][0]["shards"].size(), 3u);
  EXPECT_FALSE(fs::exists(root_ + "/.parts-step-00000005"));
}

// Every rank writes its part and then tries to commit, all at once, many times over: exactly
// one commits each step, the others see the lock or the committed directory (never an error,
// never a second commit), and the committed step holds no lock file.
TEST_F(CheckpointTest, RanksCommittingAtOnceNeverFailNorCommitTwice) {
  const int world = 4;
  for (int64_t step = 1; step <= 40; ++step) {
    std::vector<Result<bool>> committed(world, Status::Internal("not run"));
    std::vector<NamedTensor> mine = {{"model.w", torch::ones({2})}};
    for (int r = 0; r < world; ++r) {
      nlohmann::json slices = {
          {"model.w", {{"shape", {2 * world}}, {"slice", {{2 * r, 2 * r + 2}}}}}};
      ASSERT_TRUE(write_rank_part(root_, step, r, mine, slices).ok());
    }
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        committed[size_t(r)] = try_commit(root_, step, world, nlohmann::json::object());
      });
    for (auto& t : threads) t.join();
    int commits = 0;
    for (auto& c : committed) {
      ASSERT_TRUE(c.ok()) << "step " << step << ": " << c.status().ToString();
      commits += *c;
    }
    ASSERT_EQ(commits, 1) << "step " << step;
    char name[32];
    std::snprintf(name, sizeof(name), "/step-%08lld", static_cast<long long>(step));
    ASSERT_TRUE(fs::exists(root_ + name)) << step;
    EXPECT_FALSE(fs::exists(root_ + name + "/commit.lock")) << step;
  }
}

// One rank may hold several pieces of a tensor (under their own keys, "name" naming the
// tensor); a piece whose slice does not fit it is refused before anything is written.
TEST_F(CheckpointTest, OneRankWritesSeveralPiecesOfATensorAndBadSlicesAreRefused) {
  auto global = torch::arange(6 * 2, torch::kFloat).reshape({6, 2});
  std::vector<NamedTensor> mine = {{"x@0", global.narrow(0, 0, 2)},
                                   {"x@4", global.narrow(0, 4, 2)}};
  nlohmann::json slices = {
      {"x@0", {{"name", "x"}, {"shape", {6, 2}}, {"slice", {{0, 2}, {0, 2}}}}},
      {"x@4", {{"name", "x"}, {"shape", {6, 2}}, {"slice", {{4, 6}, {0, 2}}}}}};
  ASSERT_TRUE(write_rank_part(root_, 3, 0, mine, slices).ok());
  ASSERT_TRUE(write_rank_part(root_, 3, 1, {{"x", global.narrow(0, 2, 2)}},
                              {{"x", {{"shape", {6, 2}}, {"slice", {{2, 4}, {0, 2}}}}}})
                  .ok());
  auto c = try_commit(root_, 3, 2, nlohmann::json::object());
  ASSERT_TRUE(c.ok() && *c) << c.status().ToString();
  auto loaded = load_latest(root_, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->tensors.at("x").equal(global));
  EXPECT_EQ(loaded->tensors.size(), 1u);
  for (nlohmann::json bad :
       {nlohmann::json{{"shape", {6, 2}}, {"slice", {{0, 3}, {0, 2}}}},
        nlohmann::json{{"shape", {6, 2}}, {"slice", {{5, 7}, {0, 2}}}},
        nlohmann::json{{"shape", {12}}, {"slice", {{0, 2}}}}, nlohmann::json{{"shape", {6, 2}}}}) {
    auto s = write_rank_part(root_, 4, 0, {{"x", global.narrow(0, 0, 2)}}, {{"x", bad}});
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad.dump();
    EXPECT_THAT(s.status().message(), HasSubstr("checkpoint piece 'x'")) << bad.dump();
  }
}

TEST_F(CheckpointTest, MissingPartIsNotCommittedAndCorruptShardIsCaught) {
  Save(1, 1);
  auto a = torch::ones({4, 2});
  nlohmann::json slices = {{"x", {{"shape", {8, 2}}, {"slice", {{0, 4}, {0, 2}}}}}};
  ASSERT_TRUE(write_rank_part(root_, 2, 0, {{"x", a}}, slices).ok());
  auto c = try_commit(root_, 2, 2, nlohmann::json::object());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(*c);  // rank 1 has not written its part
  EXPECT_EQ(load_latest(root_, nullptr)->step, 1);
  slices["x"]["slice"] = {{4, 8}, {0, 2}};
  ASSERT_TRUE(write_rank_part(root_, 2, 1, {{"x", a * 2}}, slices).ok());
  c = try_commit(root_, 2, 2, nlohmann::json::object());
  ASSERT_TRUE(c.ok() && *c);
  auto loaded = load_latest(root_, nullptr);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->step, 2);
  EXPECT_TRUE(torch::equal(loaded->tensors.at("x").narrow(0, 4, 4), a * 2));
  FlipBit(root_ + "/step-00000002/rank-00001.bin", 64 + 5);
  std::vector<std::string> skipped;
  EXPECT_EQ(load_latest(root_, &skipped)->step, 1);  // falls back to the previous good one
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("rank-00001.bin: checksum mismatch"));
}

}  // namespace
}  // namespace cairn::ckpt
