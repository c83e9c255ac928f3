// safetensors files (ckpt/safetensors.h) through decode_safetensors, which `cairn ckpt import`
// runs on a HuggingFace model.safetensors. What it accepts must encode again and decode to the
// same tensors and metadata.
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cairn/ckpt/safetensors.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = cairn::ckpt::decode_safetensors(bytes, "model.safetensors");
  if (!decoded.ok()) {
    const auto code = decoded.status().code();
    FUZZ_CHECK(code == cairn::StatusCode::kCorrupt || code == cairn::StatusCode::kUnsupported,
               decoded.status().ToString());
    return 0;
  }
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  int64_t total = 0;
  for (const auto& [name, t] : decoded->tensors) {
    FUZZ_CHECK(t.is_contiguous() && t.device().is_cpu(), name + ": not a contiguous CPU tensor");
    total += int64_t(t.nbytes());
    tensors.emplace_back(name, t);
  }
  FUZZ_CHECK(total <= int64_t(size), "more tensor bytes than the file holds");
  auto encoded = cairn::ckpt::encode_safetensors(tensors, decoded->metadata);
  FUZZ_CHECK(encoded.ok(), encoded.status().ToString());
  auto again = cairn::ckpt::decode_safetensors(*encoded, "again.safetensors");
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK(again->metadata == decoded->metadata, "metadata differs after a round trip");
  FUZZ_CHECK(again->tensors.size() == decoded->tensors.size(), "tensor count differs");
  for (const auto& [name, t] : decoded->tensors) {
    const auto it = again->tensors.find(name);
    FUZZ_CHECK(it != again->tensors.end(), name + ": lost in a round trip");
    const torch::Tensor& u = it->second;
    FUZZ_CHECK(u.scalar_type() == t.scalar_type() && u.sizes() == t.sizes(),
               name + ": dtype or shape differs after a round trip");
    FUZZ_CHECK(t.nbytes() == 0 || std::memcmp(u.data_ptr(), t.data_ptr(), t.nbytes()) == 0,
               name + ": bytes differ after a round trip");
  }
  return 0;
}
