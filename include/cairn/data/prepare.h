// Turning a text corpus into a training directory: train.bin and val.bin token files plus
// meta.json describing where they came from. What `cairn data prepare` runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "cairn/core/status.h"

namespace cairn::data {

struct PrepareOptions {
  std::string source = "-";        // recorded in meta.json: the input path, "-" for stdin
  std::string out_dir;             // created if missing; files in it are replaced atomically
  double val_fraction = 0.005;     // in (0, 0.5]: this last fraction of the tokens is val.bin
  std::string tokenizer = "gpt2";  // a name or directory, see resolve_tokenizer_dir
  int num_threads = 0;             // encoding threads; 0: one per hardware thread
  std::atomic<int64_t>* progress_bytes = nullptr;  // if set, advanced as text is encoded
};

struct PrepareStats {
  int64_t input_bytes = 0;
  uint64_t input_xxh3 = 0;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  int32_t vocab_size = 0;
  std::string tokenizer_dir;
  double encode_seconds = 0;  // tokenizing only
  double total_seconds = 0;   // including writing the files
};

// Encodes `text` and writes out_dir/{train.bin,val.bin,meta.json}, meta.json last. The ids of
// train.bin followed by val.bin are exactly the tokenizer's encoding of the whole text; val
// gets ceil(val_fraction * total) of them. Rejects (kInvalidArgument) an empty text, fewer
// than 2 tokens or a val_fraction outside (0, 0.5]; tokenizer errors pass through.
Result<PrepareStats> prepare_dataset(std::string_view text, const PrepareOptions& options);

}  // namespace cairn::data
