// The torch-free part of the checkpoint format (checkpoint.h): finding step directories and
// reading a manifest, without reading any tensor. `cairn ckpt inspect` uses only this, in the
// front binary that never loads libtorch.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::ckpt {

inline constexpr int kManifestVersion = 1;

// Reads and validates a manifest (format, version, structure) without reading data files.
Result<nlohmann::json> read_manifest(const std::string& step_dir);
// Step numbers of the step-<N> directories under root, ascending.
std::vector<int64_t> list_steps(const std::string& root);
// The step `latest` names, or -1.
int64_t read_latest_step(const std::string& root);

}  // namespace cairn::ckpt
