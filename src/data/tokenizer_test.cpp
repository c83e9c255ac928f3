// Tests of the GPT-2 tokenizer: known ids, round trips, bad ids, bad files, threads.
#include "cairn/data/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace cairn::data {
namespace {

namespace fs = std::filesystem;

const Tokenizer& Gpt2() {
  static std::unique_ptr<Tokenizer> tok = [] {
    auto r = Tokenizer::Open(std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2");
    EXPECT_TRUE(r.ok()) << r.status().ToString() << " (run scripts/install-deps.sh)";
    return r.ok() ? std::move(r).value() : nullptr;
  }();
  if (!tok) throw std::runtime_error("GPT-2 tokenizer files missing");
  return *tok;
}

using Ids = std::vector<int32_t>;

TEST(Tokenizer, KnownIds) {
  const Tokenizer& t = Gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.eot_id(), 50256);
  EXPECT_EQ(t.encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(t.encode(" the"), (Ids{262}));
  EXPECT_EQ(t.encode("\n\n"), (Ids{628}));
  EXPECT_EQ(t.encode("a\n\nb"), (Ids{64, 198, 198, 65}));
  EXPECT_EQ(t.encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(t.encode(""), Ids{});
  EXPECT_EQ(*t.decode({t.eot_id()}), "<|endoftext|>");
}

TEST(Tokenizer, DecodeInvertsEncode) {
  const Tokenizer& t = Gpt2();
  for (std::string s : {
           "In the beginning God created the heaven and the earth.\n",
           "  leading and trailing spaces  \n\n\t",
           "Ünïcödé: Привет, 世界! مرحبا ٣٤ 👩\u200d💻 e\u0301 \u3000x\u00a0y",
           "It's they're we've I'm you'll he'd IT'S",
           "",
           "\xEF\xBB\xBF"
           "bom",
       }) {
    auto d = t.decode(t.encode(s));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, s);
  }
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacter) {
  const Tokenizer& t = Gpt2();
  EXPECT_EQ(t.encode("a\xFF"
                     "b"),
            t.encode("a\xEF\xBF\xBD"
                     "b"));
  EXPECT_EQ(*t.decode(t.encode("x\xC3")), "x\xEF\xBF\xBD");
}

TEST(Tokenizer, RandomBytesRoundTripAfterSanitizing) {
  const Tokenizer& t = Gpt2();
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng() % 200, ' ');
    for (char& c : s) c = static_cast<char>(rng() % 4 ? 0x20 + rng() % 0x60 : rng() % 256);
    Ids ids = t.encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
    auto d = t.decode(ids);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(t.encode(*d), ids);  // the decoded text is the sanitized input
  }
}

TEST(Tokenizer, LongWordWithoutSpaces) {
  const Tokenizer& t = Gpt2();
  std::string s(200000, 'a');
  Ids ids = t.encode(s);
  EXPECT_EQ(*t.decode(ids), s);
  EXPECT_LE(ids.size(), s.size() / 4);
}

TEST(Tokenizer, BadIdIsNamed) {
  const Tokenizer& t = Gpt2();
  auto d = t.decode({15496, 50257});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("50257"), std::string::npos);
  EXPECT_NE(d.status().message().find("position 1"), std::string::npos);
  EXPECT_FALSE(t.decode({-1}).ok());
}

TEST(Tokenizer, ThreadsGetTheSameIds) {
  const Tokenizer& t = Gpt2();
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "And word " + std::to_string(i * 7919) + " was said.\n";
  Ids want = t.encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) threads.emplace_back([&, k] { got[k] = t.encode(text); });
  for (auto& th : threads) th.join();
  for (auto& g : got) EXPECT_EQ(g, want);
}

class TokenizerFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cairn_tok_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  Status Open() { return Tokenizer::Open(dir_.string()).status(); }
  fs::path dir_;
};

TEST_F(TokenizerFiles, MissingFilesAreNotFound) {
  Status s = Open();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("encoder.json"), std::string::npos);
}

TEST_F(TokenizerFiles, CorruptFilesAreNamed) {
  const std::string src = std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2/";
  fs::copy_file(src + "encoder.json", dir_ / "encoder.json");
  Write("vocab.bpe", "#version: 0.2\nĠ t\nĠ\n");
  Status s = Open();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("vocab.bpe"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("line 3"), std::string::npos) << s.ToString();

  Write("encoder.json", "{\"a\": 0, \"b\": ");
  s = Open();
  EXPECT_EQ(s.code(), StatusCode::kCorrupt);
  EXPECT_NE(s.message().find("encoder.json"), std::string::npos) << s.ToString();

  Write("encoder.json", "{\"a\": 0, \"b\": 5}");
  EXPECT_EQ(Open().code(), StatusCode::kCorrupt);
}

TEST(Tokenizer, ResolvesNames) {
  EXPECT_EQ(resolve_tokenizer_dir("/some/dir"), "/some/dir");
  ::setenv("CAIRN_TOKENIZER_DIR", "/from/env", 1);
  EXPECT_EQ(resolve_tokenizer_dir("gpt2"), "/from/env");
  EXPECT_EQ(resolve_tokenizer_dir(""), "/from/env");
  ::unsetenv("CAIRN_TOKENIZER_DIR");
  EXPECT_EQ(resolve_tokenizer_dir("gpt2"), std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2");
}

}  // namespace
}  // namespace cairn::data
