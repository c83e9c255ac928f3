// The tokenizer's second stage: the merge table read from vocab.bpe and the merging of one
// piece's byte tokens into vocabulary ids, in the reference encoder's order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::data::internal {

// Immutable after Parse; safe to share between threads.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;    // lower merges first
    int32_t merged;  // id of left + right
  };

  // Builds the table from the text of vocab.bpe ("#version" line, then one "left right"
  // merge per line). `id_of` maps a token's text to its id, or -1 if it is not in the
  // vocabulary. A pair (a, b) gets the rank of the last merge line whose "left,right" text
  // equals "a,b", as in the reference; such a pair is kept when a, b and a+b are tokens.
  // Errors (kCorrupt) name the line.
  static Result<std::unique_ptr<MergeTable>> Parse(
      std::string_view vocab_bpe, const std::function<int32_t(std::string_view)>& id_of);

  const Merge* find(int32_t left, int32_t right) const {
    auto it = map_.find(key(left, right));
    return it == map_.end() ? nullptr : &it->second;
  }
  size_t size() const { return map_.size(); }
  int64_t num_merge_lines() const { return num_lines_; }

  // Merges `symbols` (ids) in place until no pair has a rank. Each round takes the lowest
  // rank present (ties: the pair furthest right decides which pair it is) and merges every
  // occurrence of that pair left to right, exactly like the reference encoder, in
  // O(n log n) for n symbols.
  void apply(std::vector<int32_t>* symbols) const;

 private:
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  std::unordered_map<uint64_t, Merge> map_;
  int64_t num_lines_ = 0;
};

}  // namespace cairn::data::internal
