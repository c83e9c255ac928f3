// The tokenizer's first stage: UTF-8 decoding with replacement and the cutting of text into
// pieces by the GPT-2 pattern (see cairn/data/tokenizer.h for the exact rules).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::data::internal {

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// True for JavaScript's \s: TAB, LF, VT, FF, CR, U+FEFF, U+2028, U+2029 and every Zs.
bool is_js_space(char32_t c);

// Character classes for the pattern: \p{L}, \p{N}, \s, and everything else. Immutable after
// construction, so one instance may be shared by any number of threads.
class CharClassifier {
 public:
  CharClassifier();
  CharClass classify(char32_t c) const {
    return c < 0x10000 ? static_cast<CharClass>(bmp_[c]) : classify_slow(c);
  }

 private:
  static CharClass classify_slow(char32_t c);
  std::vector<uint8_t> bmp_;  // class of every code point below U+10000
};

constexpr char32_t kReplacementChar = 0xFFFD;

// Decodes one code point of `s` at `pos` (REQUIRES: pos < s.size()). Sets *len to the bytes
// consumed; an invalid sequence yields U+FFFD covering its maximal subpart, as WHATWG does.
char32_t decode_utf8(std::string_view s, size_t pos, size_t* len);

// Index of the first byte that is not part of well-formed UTF-8, or s.size() if none.
size_t find_invalid_utf8(std::string_view s);

// `s` with every maximal invalid subsequence replaced by EF BF BD (U+FFFD).
std::string sanitize_utf8(std::string_view s);

// Calls fn(std::string_view piece) for each piece of `text`, in order; the pieces
// concatenate to `text`. REQUIRES: text is well-formed UTF-8 (see sanitize_utf8).
template <typename Fn>
void for_each_piece(std::string_view text, const CharClassifier& cc, Fn&& fn);

// ---------------------------------------------------------------------------------------

namespace detail {
inline char32_t next_cp(std::string_view t, size_t i, size_t* len) {
  unsigned char b = static_cast<unsigned char>(t[i]);
  if (b < 0x80) {
    *len = 1;
    return b;
  }
  return decode_utf8(t, i, len);
}
}  // namespace detail

template <typename Fn>
void for_each_piece(std::string_view t, const CharClassifier& cc, Fn&& fn) {
  const size_t n = t.size();
  size_t i = 0;
  while (i < n) {
    size_t len;
    char32_t c = detail::next_cp(t, i, &len);
    // 's 't 're 've 'm 'll 'd, only where a match starts.
    if (c == '\'' && i + 1 < n) {
      char a = t[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        fn(t.substr(i, 2));
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        char b = t[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          fn(t.substr(i, 3));
          i += 3;
          continue;
        }
      }
    }
    CharClass cls = cc.classify(c);
    size_t j = i + len;
    if (c == ' ' && j < n) {  // " ?" joins a following letter, number or other run
      char32_t c2 = detail::next_cp(t, j, &len);
      CharClass cls2 = cc.classify(c2);
      if (cls2 != CharClass::kSpace) {
        cls = cls2;
        j += len;
      }
    }
    if (cls != CharClass::kSpace) {
      while (j < n) {
        char32_t d = detail::next_cp(t, j, &len);
        if (cc.classify(d) != cls) break;
        j += len;
      }
      fn(t.substr(i, j - i));
      i = j;
      continue;
    }
    // White space: \s+(?!\S) leaves the last white space before a non-space to the next
    // match; a single white space before a non-space is matched alone by \s+.
    size_t last = i;
    size_t k = j;
    while (k < n) {
      char32_t d = detail::next_cp(t, k, &len);
      if (cc.classify(d) != CharClass::kSpace) break;
      last = k;
      k += len;
    }
    size_t end = (k == n || last == i) ? k : last;
    fn(t.substr(i, end - i));
    i = end;
  }
}

}  // namespace cairn::data::internal
