// Tests of the merge table against a direct, string-based restatement of the reference
// encoder's merge loop, on a small hand-made vocabulary and on the GPT-2 one.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>

#include "bpe_impl.h"

namespace cairn::data::internal {
namespace {

using Words = std::vector<std::string>;

// The reference loop: ranks keyed by "left,right"; each round the lowest rank wins (the last
// pair with it decides which pair), then every occurrence is merged left to right.
Words ReferenceMerge(Words word, const std::unordered_map<std::string, int>& ranks) {
  while (word.size() > 1) {
    int best = -1;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks.find(word[i] + "," + word[i + 1]);
      if (it == ranks.end()) continue;
      if (best < 0 || it->second <= best) {
        best = it->second;
        best_pos = i;
      }
    }
    if (best < 0) break;
    const std::string first = word[best_pos], second = word[best_pos + 1];
    Words next;
    for (size_t i = 0; i < word.size();) {
      if (word[i] == first && i + 1 < word.size() && word[i + 1] == second) {
        next.push_back(first + second);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = std::move(next);
  }
  return word;
}

struct Vocab {
  std::unordered_map<std::string, int32_t> id_of;
  std::vector<std::string> text_of;
  std::unordered_map<std::string, int> ranks;
  std::unique_ptr<MergeTable> table;

  void Build(const std::string& bpe_text) {
    for (auto& [t, id] : id_of) {
      if (text_of.size() <= size_t(id)) text_of.resize(id + 1);
      text_of[id] = t;
    }
    std::istringstream in(bpe_text);
    std::string line, a, b;
    std::getline(in, line);
    for (int rank = 0; std::getline(in, line) && !line.empty(); ++rank) {
      std::istringstream ls(line);
      ls >> a >> b;
      ranks[a + "," + b] = rank;
    }
    auto t = MergeTable::Parse(bpe_text, [&](std::string_view s) {
      auto it = id_of.find(std::string(s));
      return it == id_of.end() ? int32_t{-1} : it->second;
    });
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    table = std::move(t).value();
  }
  Words Apply(const Words& word) const {
    std::vector<int32_t> ids;
    for (auto& w : word) ids.push_back(id_of.at(w));
    table->apply(&ids);
    Words out;
    for (int32_t id : ids) out.push_back(text_of.at(id));
    return out;
  }
};

Vocab SmallVocab() {
  Vocab v;
  int id = 0;
  for (const char* t : {"a", ",", "b", "a,", ",a", "a,a", "ab", "aa", "aaa", "aaaa"}) {
    v.id_of[t] = id++;
  }
  v.Build("#version: 0.2\na ,\n, a\na ,a\na b\na a\naa a\naa aa\n");
  return v;
}

TEST(MergeTable, SharedKeyGivesRankToAnotherPair) {
  Vocab v = SmallVocab();
  // ("a,", "a") is not a merge line, but its text "a,,a" is that of ("a", ",a").
  const MergeTable::Merge* m = v.table->find(v.id_of["a,"], v.id_of["a"]);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->rank, 2);
  EXPECT_EQ(m->merged, v.id_of["a,a"]);
  EXPECT_EQ(v.Apply({"a", ",", "a"}), (Words{"a,a"}));
}

TEST(MergeTable, TieGoesToTheRightmostPair) {
  Vocab v = SmallVocab();
  // Both pairs have rank 2; the reference merges the rightmost kind first.
  Words w = {"a,", "a", ",a"};
  EXPECT_EQ(ReferenceMerge(w, v.ranks), (Words{"a,", "a,a"}));
  EXPECT_EQ(v.Apply(w), (Words{"a,", "a,a"}));
}

TEST(MergeTable, MergesEveryOccurrenceLeftToRight) {
  Vocab v = SmallVocab();
  EXPECT_EQ(v.Apply({"a", "a", "a"}), (Words{"aaa"}));
  EXPECT_EQ(v.Apply({"a", "a", "a", "a"}), (Words{"aaaa"}));
  EXPECT_EQ(v.Apply({"a", "a", "a", "a", "a"}), (Words{"aa", "aaa"}));
  EXPECT_EQ(v.Apply({"b", "a", "b"}), (Words{"b", "ab"}));
  EXPECT_EQ(v.Apply({"b"}), (Words{"b"}));
  EXPECT_EQ(v.Apply({}), (Words{}));
}

TEST(MergeTable, RandomWordsMatchReferenceOnSmallVocab) {
  Vocab v = SmallVocab();
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {"a", ",", "b", "a,", ",a", "aa"};
  for (int trial = 0; trial < 20000; ++trial) {
    Words w(1 + rng() % 12);
    for (auto& s : w) s = alphabet[rng() % alphabet.size()];
    ASSERT_EQ(v.Apply(w), ReferenceMerge(w, v.ranks)) << "trial " << trial;
  }
}

TEST(MergeTable, RejectsMalformedLines) {
  auto id_of = [](std::string_view s) { return s.size() <= 2 ? int32_t(s.size()) : -1; };
  auto r = MergeTable::Parse("#version: 0.2\na b c\n", id_of);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();
  EXPECT_FALSE(MergeTable::Parse("no version\n", id_of).ok());
  EXPECT_FALSE(MergeTable::Parse("#version: 0.2\nab c\n", id_of).ok());  // "abc" unknown
}

// The GPT-2 vocabulary, where eleven comma pairs share keys with merge lines.
class Gpt2Merges : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2";
    std::ifstream enc(dir + "/encoder.json"), bpe(dir + "/vocab.bpe");
    ASSERT_TRUE(enc && bpe) << "missing " << dir << "; run scripts/install-deps.sh";
    auto j = nlohmann::json::parse(enc);
    vocab_ = new Vocab();
    for (auto it = j.begin(); it != j.end(); ++it) vocab_->id_of[it.key()] = it.value();
    std::stringstream ss;
    ss << bpe.rdbuf();
    vocab_->Build(ss.str());
  }
  static void TearDownTestSuite() { delete vocab_; }
  static Vocab* vocab_;
};
Vocab* Gpt2Merges::vocab_ = nullptr;

TEST_F(Gpt2Merges, RandomPunctuationAndLettersMatchReference) {
  ASSERT_NE(vocab_, nullptr);
  EXPECT_EQ(vocab_->table->num_merge_lines(), 50000);
  EXPECT_EQ(vocab_->table->size(), 50011u);
  std::mt19937 rng(11);
  const std::string chars = "\",.[]{}()'aeinst";
  for (int trial = 0; trial < 20000; ++trial) {
    Words w(1 + rng() % 24);
    for (auto& s : w) s = std::string(1, chars[rng() % chars.size()]);
    ASSERT_EQ(vocab_->Apply(w), ReferenceMerge(w, vocab_->ranks)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace cairn::data::internal
