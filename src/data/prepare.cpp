// Corpus -> train.bin, val.bin and meta.json.
#include "cairn/data/prepare.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "cairn/core/fs.h"
#include "cairn/data/parallel_encode.h"
#include "cairn/data/token_file.h"
#include "cairn/data/tokenizer.h"

namespace cairn::data {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Result<PrepareStats> prepare_dataset(std::string_view text, const PrepareOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!(options.val_fraction > 0 && options.val_fraction <= 0.5)) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "val fraction %g is outside (0, 0.5]", options.val_fraction);
    return Status::InvalidArgument(buf);
  }
  if (text.empty()) return Status::InvalidArgument(options.source + ": input is empty");
  if (options.out_dir.empty()) return Status::InvalidArgument("no output directory given");

  PrepareStats stats;
  stats.tokenizer_dir = resolve_tokenizer_dir(options.tokenizer);
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, Tokenizer::Open(stats.tokenizer_dir));
  stats.vocab_size = tok->vocab_size();
  stats.input_bytes = static_cast<int64_t>(text.size());
  stats.input_xxh3 = XXH3_64bits(text.data(), text.size());

  const auto t_encode = std::chrono::steady_clock::now();
  ParallelEncodeOptions enc;
  enc.num_threads = options.num_threads;
  enc.progress_bytes = options.progress_bytes;
  std::vector<int32_t> ids = encode_parallel(*tok, text, enc);
  stats.encode_seconds = seconds_since(t_encode);
  const int64_t total = static_cast<int64_t>(ids.size());
  if (total < 2) {
    return Status::InvalidArgument(options.source + ": only " + std::to_string(total) +
                                   " token(s); need at least 2 to split into train and val");
  }
  stats.val_tokens = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(options.val_fraction * static_cast<double>(total))));
  stats.val_tokens = std::min(stats.val_tokens, total - 1);
  stats.train_tokens = total - stats.val_tokens;

  CAIRN_RETURN_IF_ERROR(core::make_dirs(options.out_dir));
  const std::string dir = options.out_dir + "/";
  std::vector<int32_t> val(ids.begin() + stats.train_tokens, ids.end());
  ids.resize(static_cast<size_t>(stats.train_tokens));
  CAIRN_RETURN_IF_ERROR(write_token_file(dir + "train.bin", ids, tok->vocab_size()));
  CAIRN_RETURN_IF_ERROR(write_token_file(dir + "val.bin", val, tok->vocab_size()));

  nlohmann::json meta = {
      {"format", "cairn-token-dataset"},
      {"version", 1},
      {"source", options.source},
      {"input_bytes", stats.input_bytes},
      {"input_xxh3", hex64(stats.input_xxh3)},
      {"tokenizer", options.tokenizer},
      {"tokenizer_dir", stats.tokenizer_dir},
      {"vocab_size", tok->vocab_size()},
      {"eot_id", tok->eot_id()},
      {"token_file_version", kTokenFileVersion},
      {"val_fraction", options.val_fraction},
      {"tokens", total},
      {"train", {{"file", "train.bin"}, {"tokens", stats.train_tokens}}},
      {"val", {{"file", "val.bin"}, {"tokens", stats.val_tokens}}},
  };
  CAIRN_RETURN_IF_ERROR(core::write_file_atomic(
      dir + "meta.json",
      meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  stats.total_seconds = seconds_since(t0);
  return stats;
}

}  // namespace cairn::data
