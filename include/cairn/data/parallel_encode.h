// Encoding large texts on several threads with exactly the ids of a one-thread encode.
//
// Text may be cut at position k when text[k-1] is "\n", the character before that "\n" is
// not white space and the character at k is not white space: the pattern then ends a piece
// after the "\n" whether or not the text continues. (A cut after "\n" that follows other
// white space is not safe: "a\n\n" alone ends in the piece "\n\n", which "a\n\nb" splits.)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "cairn/data/tokenizer.h"

namespace cairn::data {

// True if encode(text[0, k)) followed by encode(text[k, n)) equals encode(text), by the
// rule above. 0 < k < text.size() is required for true.
bool is_safe_split(std::string_view text, size_t k);

// The smallest safe split k >= from, or text.size() if there is none.
size_t next_safe_split(std::string_view text, size_t from);

struct ParallelEncodeOptions {
  int num_threads = 0;           // 0: one per hardware thread
  size_t chunk_bytes = 1 << 20;  // chunks are cut at the first safe split after this size
  std::atomic<int64_t>* progress_bytes = nullptr;  // if set, advanced as chunks finish
};

// Returns tok.encode(text), computed over chunks on up to num_threads threads.
std::vector<int32_t> encode_parallel(const Tokenizer& tok, std::string_view text,
                                     const ParallelEncodeOptions& options = {});

}  // namespace cairn::data
