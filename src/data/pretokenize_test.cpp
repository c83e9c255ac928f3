// Tests of UTF-8 decoding with replacement and of the GPT-2 piece pattern.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pretokenize_impl.h"

namespace cairn::data::internal {
namespace {

std::vector<std::string> Pieces(std::string_view text) {
  static const CharClassifier cc;
  std::vector<std::string> out;
  for_each_piece(text, cc, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

using V = std::vector<std::string>;

TEST(Pretokenize, WordsTakeOneLeadingSpace) {
  EXPECT_EQ(Pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Pieces("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(Pieces("x 42 !?"), (V{"x", " 42", " !?"}));
  EXPECT_EQ(Pieces("abc123def"), (V{"abc", "123", "def"}));
  EXPECT_EQ(Pieces(""), V{});
}

TEST(Pretokenize, WhiteSpaceRuns) {
  // The last white space before a non-space starts the next match.
  EXPECT_EQ(Pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Pieces("a\nb"), (V{"a", "\n", "b"}));
  EXPECT_EQ(Pieces("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(Pieces("a \t b"), (V{"a", " \t", " b"}));
  EXPECT_EQ(Pieces("a\t\tb"), (V{"a", "\t", "\t", "b"}));
  // At the end of text a run stays whole.
  EXPECT_EQ(Pieces("a \n "), (V{"a", " \n "}));
  EXPECT_EQ(Pieces("   "), (V{"   "}));
  // NBSP, ideographic space and BOM are white space; a plain space does not join them.
  EXPECT_EQ(Pieces("a\xC2\xA0"
                   "b"),
            (V{"a", "\xC2\xA0", "b"}));
  EXPECT_EQ(Pieces("\xEF\xBB\xBFx"), (V{"\xEF\xBB\xBF", "x"}));
  EXPECT_EQ(Pieces("a \xE3\x80\x80"
                   "b"),
            (V{"a", " ", "\xE3\x80\x80", "b"}));
}

TEST(Pretokenize, Contractions) {
  EXPECT_EQ(Pieces("I'm don't we're they've I'll he'd it's"),
            (V{"I", "'m", " don", "'t", " we", "'re", " they", "'ve", " I", "'ll", " he", "'d",
               " it", "'s"}));
  // Case-sensitive, and only where a match starts.
  EXPECT_EQ(Pieces("IT'S"), (V{"IT", "'", "S"}));
  EXPECT_EQ(Pieces("''s"), (V{"''", "s"}));
  EXPECT_EQ(Pieces(" 's"), (V{" '", "s"}));
  EXPECT_EQ(Pieces("'"), (V{"'"}));
  EXPECT_EQ(Pieces("'l"), (V{"'", "l"}));
}

TEST(Pretokenize, UnicodeCategories) {
  // Letters of other scripts; combining marks are not letters.
  EXPECT_EQ(Pieces("Привет мир"), (V{"Привет", " мир"}));
  EXPECT_EQ(Pieces("e\xCC\x81t"), (V{"e", "\xCC\x81", "t"}));
  // Other scripts' digits and number-like characters are numbers.
  EXPECT_EQ(Pieces("x ٣٤ Ⅻ ½"), (V{"x", " ٣٤", " Ⅻ", " ½"}));
  // Emoji and joiners are "other" and form one run.
  EXPECT_EQ(Pieces("hi 👩\xE2\x80\x8D💻!"), (V{"hi", " 👩\xE2\x80\x8D💻!"}));
}

TEST(Utf8, DecodesLikeWhatwg) {
  // Each maximal invalid subpart becomes one U+FFFD.
  std::string s =
      "\xEF\xBB\xBF"
      "A\xFF\xC3(\xED\xA0\x80\xC0\xAF\xE2\x82\xF0\x9F\x98";
  std::vector<char32_t> got;
  for (size_t i = 0, len; i < s.size(); i += len) got.push_back(decode_utf8(s, i, &len));
  std::vector<char32_t> want = {0xFEFF, 'A',    0xFFFD, 0xFFFD, '(',    0xFFFD,
                                0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD};
  EXPECT_EQ(got, want);
}

TEST(Utf8, FindsAndReplacesInvalidBytes) {
  EXPECT_EQ(find_invalid_utf8("plain ascii text, long enough for words"), 39u);
  EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9 \xEF\xBF\xBD ok"), 12u);
  EXPECT_EQ(find_invalid_utf8("abcdefghij\x80"), 10u);
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(sanitize_utf8("a\xFF"
                          "b\xE2\x82"),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(CharClassifier, MatchesJavaScriptWhiteSpace) {
  CharClassifier cc;
  for (char32_t c : {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028,
                     0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF}) {
    EXPECT_EQ(cc.classify(c), CharClass::kSpace) << std::hex << uint32_t(c);
  }
  // Not white space in JavaScript, though some other languages say so.
  for (char32_t c : {0x1C, 0x1F, 0x85, 0x180E, 0x200B}) {
    EXPECT_NE(cc.classify(c), CharClass::kSpace) << std::hex << uint32_t(c);
  }
  EXPECT_EQ(cc.classify(U'ß'), CharClass::kLetter);
  EXPECT_EQ(cc.classify(0x1D400), CharClass::kLetter);  // mathematical bold A
  EXPECT_EQ(cc.classify(0x1F600), CharClass::kOther);   // emoji
  EXPECT_EQ(cc.classify(0x10107), CharClass::kNumber);  // Aegean number one
}

}  // namespace
}  // namespace cairn::data::internal
