// Tests of dataset preparation: files, metadata, the split, and rejected inputs.
#include "cairn/data/prepare.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cairn/core/fs.h"
#include "cairn/data/token_file.h"
#include "cairn/data/tokenizer.h"

namespace cairn::data {
namespace {

namespace fs = std::filesystem;

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cairn_prepare_test_" + std::to_string(::getpid()));
    opts_.out_dir = dir_.string();
    opts_.source = "test.txt";
    opts_.tokenizer = std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  PrepareOptions opts_;
};

TEST_F(PrepareTest, WritesTrainValAndMeta) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "And God said, Let there be light: and there was light.\n";
  opts_.val_fraction = 0.1;
  opts_.num_threads = 2;
  auto st = prepare_dataset(text, opts_);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto train = TokenFile::Open((dir_ / "train.bin").string());
  auto val = TokenFile::Open((dir_ / "val.bin").string());
  ASSERT_TRUE(train.ok() && val.ok());
  const int64_t total = (*train)->size() + (*val)->size();
  EXPECT_EQ((*val)->size(), (total + 9) / 10);
  EXPECT_EQ(st->train_tokens, (*train)->size());

  auto tok = Tokenizer::Open(opts_.tokenizer);
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> ids;
  for (const TokenFile* f : {train->get(), val->get()}) {
    for (int64_t i = 0; i < f->size(); ++i) ids.push_back(f->at(i));
  }
  EXPECT_EQ(ids, (*tok)->encode(text));
  EXPECT_EQ(*(*tok)->decode(ids), text);

  auto meta = nlohmann::json::parse(*core::read_file((dir_ / "meta.json").string()));
  EXPECT_EQ(meta["source"], "test.txt");
  EXPECT_EQ(meta["tokens"], total);
  EXPECT_EQ(meta["train"]["tokens"], (*train)->size());
  EXPECT_EQ(meta["val"]["tokens"], (*val)->size());
  EXPECT_EQ(meta["vocab_size"], 50257);
  EXPECT_EQ(meta["input_bytes"], static_cast<int64_t>(text.size()));
  EXPECT_EQ(meta["input_xxh3"].get<std::string>().size(), 16u);
}

TEST_F(PrepareTest, RejectsBadInput) {
  for (double f : {0.0, -0.1, 0.51, 1.0}) {
    opts_.val_fraction = f;
    auto st = prepare_dataset("some text here", opts_);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.status().message().find("(0, 0.5]"), std::string::npos);
  }
  opts_.val_fraction = 0.5;
  auto empty = prepare_dataset("", opts_);
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
  EXPECT_EQ(prepare_dataset("x", opts_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir_)) << "a rejected input must not create the output directory";
  EXPECT_TRUE(prepare_dataset("x y", opts_).ok());
  opts_.tokenizer = (dir_ / "no-such-tokenizer").string();
  EXPECT_EQ(prepare_dataset("x y", opts_).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace cairn::data
