// Tests that safe cuts really are safe: chunked encoding equals whole-text encoding.
#include "cairn/data/parallel_encode.h"

#include <gtest/gtest.h>

#include <random>

namespace cairn::data {
namespace {

const Tokenizer& Gpt2() {
  static std::unique_ptr<Tokenizer> tok = [] {
    auto r = Tokenizer::Open(std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2");
    EXPECT_TRUE(r.ok()) << r.status().ToString() << " (run scripts/install-deps.sh)";
    return r.ok() ? std::move(r).value() : nullptr;
  }();
  if (!tok) throw std::runtime_error("GPT-2 tokenizer files missing");
  return *tok;
}

TEST(SafeSplit, Rule) {
  EXPECT_TRUE(is_safe_split("a\nb", 2));
  EXPECT_FALSE(is_safe_split("a\n\nb", 3));  // "\n" after white space
  EXPECT_FALSE(is_safe_split("a\n b", 2));   // white space after the cut
  EXPECT_FALSE(is_safe_split("a \nb", 3));
  EXPECT_FALSE(is_safe_split("a\n", 2));  // the end is not a cut
  EXPECT_FALSE(is_safe_split("\nb", 1));
  EXPECT_FALSE(is_safe_split("a\xC2\xA0\nb", 4));  // NBSP before the "\n"
  EXPECT_FALSE(
      is_safe_split("a\n\xE3\x80\x80"
                    "b",
                    2));  // ideographic space after it
  EXPECT_TRUE(is_safe_split("\xC3\xA9\n\xC3\xA9", 3));
  EXPECT_TRUE(is_safe_split("a\xA0\nb", 3));  // a lone A0 byte decodes to U+FFFD
  EXPECT_EQ(next_safe_split("ab\n\ncd\nef", 0), 7u);
  EXPECT_EQ(next_safe_split("ab\n\ncd\nef", 8), 9u);  // none: the end
}

TEST(SafeSplit, UnsafeCutWouldChangeIds) {
  // Why white space before the "\n" matters.
  const Tokenizer& t = Gpt2();
  std::vector<int32_t> whole = t.encode("a\n\nb"), cut = t.encode("a\n\n");
  auto rest = t.encode("b");
  cut.insert(cut.end(), rest.begin(), rest.end());
  EXPECT_NE(whole, cut);
}

TEST(ParallelEncode, MatchesWholeEncodeOnRandomText) {
  const Tokenizer& t = Gpt2();
  const std::vector<std::string> parts = {"\n",
                                          "\n",
                                          "\n\n",
                                          " ",
                                          "  ",
                                          "\t",
                                          "a",
                                          "The",
                                          " word",
                                          "'s",
                                          "'ll",
                                          "42",
                                          "!",
                                          ".",
                                          "\xC2\xA0",
                                          "\xE3\x80\x80",
                                          "\xE4\xB8\x96",
                                          "\xF0\x9F\x98\x80",
                                          "\xFF",
                                          "\xC3",
                                          "\r\n",
                                          "\xEF\xBB\xBF",
                                          "e\xCC\x81"};
  std::mt19937 rng(17);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = 1 + rng() % 300;
    for (int i = 0; i < n; ++i) text += parts[rng() % parts.size()];
    auto want = t.encode(text);
    for (size_t chunk : {size_t{1}, size_t{7}, size_t{64}}) {
      ParallelEncodeOptions o;
      o.num_threads = 3;
      o.chunk_bytes = chunk;
      std::atomic<int64_t> progress{0};
      o.progress_bytes = &progress;
      ASSERT_EQ(encode_parallel(t, text, o), want) << "trial " << trial << " chunk " << chunk;
      EXPECT_EQ(progress.load(), static_cast<int64_t>(text.size()));
    }
  }
}

TEST(ParallelEncode, EmptyText) { EXPECT_TRUE(encode_parallel(Gpt2(), "").empty()); }

}  // namespace
}  // namespace cairn::data
