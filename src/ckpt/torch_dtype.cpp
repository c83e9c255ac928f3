#include <utility>

#include "ckpt/torch_dtype_impl.h"

namespace cairn::ckpt {
namespace {
const std::pair<torch::ScalarType, const char*> kDtypes[] = {
    {torch::kFloat, "float32"},     {torch::kDouble, "float64"}, {torch::kHalf, "float16"},
    {torch::kBFloat16, "bfloat16"}, {torch::kLong, "int64"},     {torch::kInt, "int32"},
    {torch::kShort, "int16"},       {torch::kByte, "uint8"},     {torch::kChar, "int8"},
    {torch::kBool, "bool"},
};
}  // namespace

std::string dtype_name(torch::ScalarType t) {
  for (auto& [k, n] : kDtypes)
    if (k == t) return n;
  TORCH_CHECK(false, "checkpoint: unsupported dtype ", t);
}

bool parse_dtype(const std::string& name, torch::ScalarType* out) {
  for (auto& [k, n] : kDtypes)
    if (name == n) {
      *out = k;
      return true;
    }
  return false;
}

torch::ScalarType torch_dtype(const std::string& name) {
  torch::ScalarType t = torch::kFloat;
  TORCH_CHECK(parse_dtype(name, &t), "checkpoint: unknown dtype ", name);
  return t;
}

}  // namespace cairn::ckpt
