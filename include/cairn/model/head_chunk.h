// How many rows (tokens) the fused head + loss computes at once: the one rule the model, the
// tensor-parallel head, the memory estimate and the planner's cost model share. Pure, no torch.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cairn::model {

// A chunk's float32 logits take at most this many bytes. Larger chunks pack the head's weight
// for fewer GEMMs (256 rows of a 50,304 vocabulary: 606 ms for head + loss, 512 rows: 555 ms
// here, bench/model_bench), at the price of a larger transient.
inline constexpr int64_t kHeadChunkBytes = int64_t(128) << 20;

// Rows per chunk for `vocab_rows` vocabulary rows on this rank: a multiple of 64, at least 64.
inline constexpr int64_t head_chunk_rows(int64_t vocab_rows) {
  const int64_t rows = kHeadChunkBytes / (4 * std::max<int64_t>(vocab_rows, 1));
  return std::max<int64_t>(64, rows / 64 * 64);
}

}  // namespace cairn::model
