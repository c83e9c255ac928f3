// The checkpoint format's dtype names ("float32", ...) for libtorch's scalar types.
#pragma once

#include <torch/types.h>

#include <string>

namespace cairn::ckpt {

// The manifest name of `t`; throws (TORCH_CHECK) for a type the format does not define.
std::string dtype_name(torch::ScalarType t);
// false for a name the format does not define.
bool parse_dtype(const std::string& name, torch::ScalarType* out);
// parse_dtype of a name parse_entries() already accepted.
torch::ScalarType torch_dtype(const std::string& name);

}  // namespace cairn::ckpt
