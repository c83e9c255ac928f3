#include "cairn/ckpt/inspect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/digest.h"
#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("cairn_inspect_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static std::vector<NamedTensor> Model(float v) {
    return {{"model.w", torch::arange(24, torch::kFloat).view({6, 4}) * v},
            {"model.b", torch::full({3}, v, torch::kBFloat16)}};
  }
  std::string Save(const std::string& root, int64_t step, std::vector<NamedTensor> tensors) {
    auto r = save_checkpoint(root, step, tensors, {{"reason", "test"}, {"config_yaml", "a: 1\n"}});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->path : "";
  }
  // As `cairn ckpt inspect [--digest]`: with digest, verified and digested.
  static Result<CheckpointSummary> Inspect(const std::string& path, bool digest,
                                           std::vector<std::string>* skipped = nullptr) {
    InspectOptions o;
    o.verify = digest;
    auto s = inspect_checkpoint(path, o, skipped);
    if (!s.ok() || !digest) return s;
    CAIRN_ASSIGN_OR_RETURN(s->digest, checkpoint_model_digest(s->path));
    return s;
  }
  std::string root_;
};

// Rewrites the manifest of `dir` so that tensor `name` (2-D, one shard) is stored as two
// shards split after `rows` rows, both pointing into the same bytes of the same file.
void SplitIntoTwoShards(const std::string& dir, const std::string& name, int64_t rows) {
  auto manifest = nlohmann::json::parse(*core::read_file(dir + "/manifest.json"));
  const std::string data = *core::read_file(dir + "/rank-00000.bin");
  for (auto& t : manifest["tensors"]) {
    if (t["name"] != name) continue;
    auto one = t["shards"][0];
    const int64_t n0 = t["shape"][0], n1 = t["shape"][1];
    const int64_t row_bytes = one["bytes"].get<int64_t>() / n0;
    auto part = [&](int64_t begin, int64_t end) {
      auto s = one;
      s["slice"] = {{begin, end}, {0, n1}};
      s["offset"] = one["offset"].get<int64_t>() + begin * row_bytes;
      s["bytes"] = (end - begin) * row_bytes;
      s["xxh3"] = hex64(
          XXH3_64bits(data.data() + s["offset"].get<int64_t>(), size_t(s["bytes"].get<int64_t>())));
      return s;
    };
    t["shards"] = {part(rows, n0), part(0, rows)};
  }
  ASSERT_TRUE(core::write_file_atomic(dir + "/manifest.json", manifest.dump()).ok());
}

TEST_F(InspectTest, DigestDependsOnlyOnModelTensorContents) {
  auto base = Model(1.5f);
  const std::string a = Save(root_ + "/a", 3, base);

  auto reordered = base;
  std::reverse(reordered.begin(), reordered.end());
  reordered.push_back({"optim.w.exp_avg", torch::ones({6, 4})});
  reordered.push_back({"rng.cpu", torch::zeros({16}, torch::kByte)});
  const std::string b = Save(root_ + "/b", 9, reordered);
  SplitIntoTwoShards(b, "model.w", 2);
  ASSERT_TRUE(load_checkpoint(b).ok()) << "the split manifest must still load";

  auto da = Inspect(a, true), db = Inspect(b, true);
  ASSERT_TRUE(da.ok()) << da.status().ToString();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ(da->digest.rfind("xxh3-128:", 0), 0u);
  EXPECT_EQ(da->digest.size(), 9u + 32u);
  EXPECT_EQ(da->digest, db->digest);
  EXPECT_EQ(db->tensors[1].name, "model.w");
  EXPECT_EQ(db->tensors[1].shards, 2);

  auto changed = base;
  changed[0].tensor = changed[0].tensor.clone();
  changed[0].tensor[5][3] = 0.25f;
  EXPECT_NE(Inspect(Save(root_ + "/c", 3, changed), true)->digest, da->digest);
  auto renamed = base;
  renamed[1].name = "model.c";
  EXPECT_NE(Inspect(Save(root_ + "/d", 3, renamed), true)->digest, da->digest);
  auto widened = base;
  widened[1].tensor = widened[1].tensor.to(torch::kFloat);
  EXPECT_NE(Inspect(Save(root_ + "/e", 3, widened), true)->digest, da->digest);
  auto reshaped = base;
  reshaped[0].tensor = reshaped[0].tensor.view({4, 6});
  EXPECT_NE(Inspect(Save(root_ + "/f", 3, reshaped), true)->digest, da->digest);
}

TEST(ModelDigest, FollowsTheDocumentedFraming) {
  const torch::Tensor t = torch::tensor({1.0f, -2.0f, 3.5f}).view({3, 1});
  std::string bytes;
  auto u64 = [&](uint64_t v) { bytes.append(reinterpret_cast<const char*>(&v), 8); };
  auto text = [&](const std::string& s) {
    u64(s.size());
    bytes += s;
  };
  text("model.x");
  text("float32");
  u64(2);
  u64(3);
  u64(1);
  u64(12);
  bytes.append(static_cast<const char*>(t.data_ptr()), 12);
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  EXPECT_EQ(model_digest({{"model.x", t}, {"optim.x", t}}),
            "xxh3-128:" + hex64(h.high64) + hex64(h.low64));
  EXPECT_EQ(model_digest({{"model.x", t.t().contiguous().t()}}), model_digest({{"model.x", t}}))
      << "strides do not matter";
}

TEST_F(InspectTest, SummaryOfARootDescribesItsNewestStep) {
  Save(root_, 10, Model(1.0f));
  auto with_optim = Model(2.0f);
  with_optim.push_back({"optim.w.exp_avg", torch::ones({6, 4})});
  Save(root_, 20, with_optim);
  auto s = Inspect(root_, false);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->step, 20);
  EXPECT_EQ(s->root, root_);
  EXPECT_EQ(s->steps, (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(s->latest, "step-00000020");
  EXPECT_FALSE(s->verified);
  EXPECT_EQ(s->bytes, 96 + 6 + 96);
  const std::string text = format_summary(*s, false);
  EXPECT_THAT(text, AllOf(HasSubstr("format             cairn-checkpoint version 1"),
                          HasSubstr("steps              10 20"), HasSubstr("state.reason"),
                          HasSubstr("1 lines (--config prints them)"),
                          HasSubstr("model.w          float32   [6, 4]     96  1"),
                          HasSubstr("model.b          bfloat16  [3]         6  1"),
                          HasSubstr("tensors            3 (model 2, optim 1, other 0)"),
                          HasSubstr("parameters         27 in model.*")));
  EXPECT_THAT(format_summary(*s, true), HasSubstr("config_yaml:\n  a: 1\n"));
  EXPECT_EQ(text.find("digest"), std::string::npos);
}

TEST_F(InspectTest, BrokenCheckpointsGetTheLoadersErrors) {
  const std::string good = Save(root_, 10, Model(1.0f));
  const std::string bad = Save(root_, 20, Model(2.0f));
  const std::string data = bad + "/rank-00000.bin";

  // A flipped byte is invisible without reading, and a checksum mismatch with --verify.
  {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(70);
    f.put('\x7f');
  }
  EXPECT_TRUE(Inspect(bad, false).ok());
  auto r = Inspect(bad, true);
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr("checksum mismatch in tensor 'model.w'"));

  // A root falls back to the previous step and says why.
  std::vector<std::string> skipped;
  auto s = Inspect(root_, true, &skipped);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->step, 10);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("checksum mismatch"));

  fs::resize_file(data, 100);
  r = Inspect(bad, false);
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr("truncated"));
  fs::remove(data);
  EXPECT_THAT(Inspect(bad, false).status().message(), HasSubstr("data file is missing"));
  ASSERT_TRUE(core::write_file_atomic(good + "/manifest.json", "{\"format\": 1}").ok());
  EXPECT_THAT(Inspect(good, false).status().message(), HasSubstr("not a cairn checkpoint"));
  EXPECT_EQ(Inspect(root_, false).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Inspect(root_ + "/nothing", false).status().code(), StatusCode::kNotFound);
  fs::create_directories(root_ + "/empty");
  EXPECT_THAT(Inspect(root_ + "/empty", false).status().message(),
              HasSubstr("neither a manifest.json nor step-* directories"));
}

}  // namespace
}  // namespace cairn::ckpt
