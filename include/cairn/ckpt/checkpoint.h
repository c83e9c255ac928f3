// Checkpoints on storage in cairn's manifest format (DESIGN.md section 4):
//
//   <root>/step-<N>/manifest.json   format version, step, mesh, every tensor's name, dtype,
//                                   global shape and shards (slice, file, offset, bytes, xxh3)
//   <root>/step-<N>/rank-<R>.bin    magic + version header, then raw little-endian tensor bytes
//   <root>/latest                   "step-<N>", moved only after the step directory is durable
//
// A checkpoint is written into a temporary directory, fsynced and renamed, so it is either
// complete and verified or ignored. Loading verifies every checksum before returning anything,
// so a caller never sees a half-loaded state.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/ckpt/layout.h"
#include "cairn/core/status.h"

namespace cairn::ckpt {

struct NamedTensor {
  std::string name;
  torch::Tensor tensor;  // any dtype; saved contiguous on CPU
};

struct SaveInfo {
  std::string path;   // the step directory
  int64_t bytes = 0;  // data bytes written
  double seconds = 0;
};

// Writes step `step` under `root` (created if missing) and then moves `latest` to it.
// `state` is free-form JSON stored in the manifest (trainer position, config, ...).
Result<SaveInfo> save_checkpoint(const std::string& root, int64_t step,
                                 const std::vector<NamedTensor>& tensors,
                                 const nlohmann::json& state);

// Sharded writing: every rank writes its own part of step `step`, then any of them calls
// try_commit; the one that finds every part durable merges the manifest, renames the step
// directory into place and moves `latest`. A part lives in <root>/.parts-step-<N>/ until then.
//
// `slices` maps the name (key) of a tensor that is a piece of a larger one to
// {"shape": [global shape], "slice": [[begin, end], ...], "name": "<the larger tensor's name>"}
// ("name" defaults to the key: a rank holding several pieces of one tensor gives each its own
// key); other tensors are whole and must be written by exactly one rank (the shards of a tensor
// must cover it exactly once). A piece whose slice does not fit its tensor is kInvalidArgument.
Result<SaveInfo> write_rank_part(const std::string& root, int64_t step, int rank,
                                 const std::vector<NamedTensor>& tensors,
                                 const nlohmann::json& slices = nlohmann::json::object());
// true when this call committed step `step`; false when a part is missing or another caller
// commits it.
Result<bool> try_commit(const std::string& root, int64_t step, int world,
                        const nlohmann::json& state);

struct LoadedCheckpoint {
  std::string path;
  int64_t step = 0;
  int64_t bytes = 0;
  double seconds = 0;
  std::map<std::string, torch::Tensor> tensors;
  nlohmann::json state;
  nlohmann::json manifest;
};

// Loads and verifies one step directory.
Result<LoadedCheckpoint> load_checkpoint(const std::string& step_dir);
// Loads the newest complete, verified checkpoint under `root`: the one `latest` names, else
// the highest step-<N>. Broken ones are skipped; their reasons are appended to `skipped`.
// NotFound when there is none.
Result<LoadedCheckpoint> load_latest(const std::string& root, std::vector<std::string>* skipped);
// Accepts either a root (with step-* directories) or a step directory.
Result<LoadedCheckpoint> load_any(const std::string& path, std::vector<std::string>* skipped);
// Retention: removes all but the newest `keep_last` step directories (0 keeps all), except
// every step divisible by `keep_every` (when > 0) and the one `latest` names; also removes
// unfinished parts of steps older than `latest`.
Status prune_checkpoints(const std::string& root, int keep_last, int keep_every = 0);

}  // namespace cairn::ckpt
