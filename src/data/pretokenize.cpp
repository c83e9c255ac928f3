// UTF-8 decoding with WHATWG replacement and the character classes of the GPT-2 pattern.
#include <unicode/uchar.h>

#include <cstring>

#include "pretokenize_impl.h"

namespace cairn::data::internal {

bool is_js_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= '\t' && c <= '\r');
  if (c == 0xFEFF || c == 0x2028 || c == 0x2029) return true;
  return u_charType(static_cast<UChar32>(c)) == U_SPACE_SEPARATOR;
}

CharClass CharClassifier::classify_slow(char32_t c) {
  if (is_js_space(c)) return CharClass::kSpace;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return CharClass::kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return CharClass::kNumber;
    default:
      return CharClass::kOther;
  }
}

CharClassifier::CharClassifier() : bmp_(0x10000) {
  for (char32_t c = 0; c < 0x10000; ++c) bmp_[c] = static_cast<uint8_t>(classify_slow(c));
}

char32_t decode_utf8(std::string_view s, size_t pos, size_t* len) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char b = byte(pos);
  if (b < 0x80) {
    *len = 1;
    return b;
  }
  int need;
  char32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
    cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    cp = b & 0x0F;
    if (b == 0xE0) lo = 0xA0;  // no overlong forms
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    cp = b & 0x07;
    if (b == 0xF0) lo = 0x90;  // no overlong forms
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *len = 1;
    return kReplacementChar;
  }
  size_t i = pos + 1;
  for (int k = 0; k < need; ++k, ++i) {
    unsigned char lower = k == 0 ? lo : 0x80, upper = k == 0 ? hi : 0xBF;
    if (i >= s.size() || byte(i) < lower || byte(i) > upper) {
      *len = i - pos;  // the maximal subpart; the offending byte starts the next unit
      return kReplacementChar;
    }
    cp = (cp << 6) | (byte(i) & 0x3F);
  }
  *len = i - pos;
  return cp;
}

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // Eight ASCII bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    if (decode_utf8(s, i, &len) == kReplacementChar) {
      // U+FFFD itself (EF BF BD) is well-formed.
      if (!(len == 3 && s.compare(i, 3, "\xEF\xBF\xBD") == 0)) return i;
    }
    i += len;
  }
  return n;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  size_t i = 0;
  while (i < s.size()) {
    size_t bad = i + find_invalid_utf8(s.substr(i));
    out.append(s.data() + i, bad - i);
    if (bad == s.size()) break;
    size_t len;
    decode_utf8(s, bad, &len);
    out.append("\xEF\xBF\xBD");
    i = bad + len;
  }
  return out;
}

}  // namespace cairn::data::internal
