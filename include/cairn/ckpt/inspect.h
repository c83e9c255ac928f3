// Looking into checkpoints from the shell: what a step directory holds (manifest, state,
// tensor table), its checksums verified on request. Torch-free: `cairn ckpt inspect` runs in
// the front binary; the model digest (digest.h) needs libtorch.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::ckpt {

struct TensorSummary {
  std::string name;
  std::string dtype;  // "float32", as in the manifest
  std::vector<int64_t> shape;
  int64_t bytes = 0;
  int64_t shards = 0;
};

struct CheckpointSummary {
  std::string path;            // the step directory described
  std::string root;            // the checkpoint root given, or empty for a step directory
  std::vector<int64_t> steps;  // step-<N> directories under root, ascending
  std::string latest;          // what root's `latest` names, or empty
  int format_version = 0;
  int64_t step = 0;
  double created = 0;  // unix seconds; 0 when the manifest does not say
  nlohmann::json mesh;
  nlohmann::json state;
  std::vector<std::string> files;  // data files, with their sizes below
  std::vector<int64_t> file_bytes;
  std::vector<TensorSummary> tensors;  // manifest order
  int64_t bytes = 0;                   // sum of tensor bytes
  bool verified = false;               // every shard's size and checksum was checked
  std::string digest;                  // model_digest() (digest.h), when the caller adds it
};

struct InspectOptions {
  bool verify = false;  // read every shard and check its checksum (as loading does)
};

// Describes `path`: a step directory, or a checkpoint root whose newest usable step is
// described (the one `latest` names, else the highest step-<N>; broken ones are skipped and
// their reasons appended to `skipped`). Always validates the manifest and checks that every
// data file exists with a valid header and is long enough for its shards; with
// options.verify also every checksum. Errors are the loader's: kNotFound when there is no
// checkpoint, kCorrupt / kUnsupported naming the file and the problem.
Result<CheckpointSummary> inspect_checkpoint(const std::string& path, const InspectOptions& options,
                                             std::vector<std::string>* skipped);

// The text `cairn ckpt inspect` prints: one "key  value" line per manifest field and state
// key (config_yaml only counted unless show_config), then a table of tensors, then, if
// computed, a line "digest  xxh3-128:<32 hex digits>".
std::string format_summary(const CheckpointSummary& summary, bool show_config);

}  // namespace cairn::ckpt
