// A content digest of a checkpoint's model that does not depend on how the checkpoint was
// laid out (shards, files, offsets, tensor order, optimizer state): `cairn ckpt inspect
// --digest`, and the check that two layouts of one job saved the same model.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>

#include "cairn/core/status.h"

namespace cairn::ckpt {

// A digest of the tensors named "model.*" (others are ignored): XXH3-128 over, for each such
// tensor in ascending name order, the little-endian u64 lengths and bytes of its name and of
// its dtype name ("float32"), u64 number of dimensions, i64 sizes, u64 byte count and its
// elements in contiguous row-major little-endian order. Returned as "xxh3-128:" + 32 lowercase
// hex digits (high 64 bits first). Equal for two checkpoints exactly when their model
// parameters have the same names, dtypes, shapes and values.
std::string model_digest(const std::map<std::string, torch::Tensor>& tensors);

// model_digest() of the step directory `step_dir`, loaded (every checksum verified) with
// load_checkpoint(); its errors.
Result<std::string> checkpoint_model_digest(const std::string& step_dir);

}  // namespace cairn::ckpt
