#include "cairn/ckpt/digest.h"

#include <xxhash.h>

#include <memory>

#include "cairn/ckpt/checkpoint.h"
#include "ckpt/format_impl.h"
#include "ckpt/torch_dtype_impl.h"

namespace cairn::ckpt {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "model_digest hashes in-memory bytes as little-endian");

std::string model_digest(const std::map<std::string, torch::Tensor>& tensors) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  TORCH_CHECK(state, "model_digest: out of memory");
  XXH3_128bits_reset(state.get());
  auto put = [&](const void* p, size_t n) { XXH3_128bits_update(state.get(), p, n); };
  auto put_u64 = [&](uint64_t v) { put(&v, sizeof(v)); };
  auto put_text = [&](const std::string& s) {
    put_u64(s.size());
    put(s.data(), s.size());
  };
  for (auto& [name, tensor] : tensors) {
    if (name.compare(0, 6, "model.") != 0) continue;
    const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    put_text(name);
    put_text(dtype_name(t.scalar_type()));
    put_u64(uint64_t(t.dim()));
    for (int64_t d : t.sizes()) put(&d, sizeof(d));
    put_u64(t.nbytes());
    put(t.data_ptr(), t.nbytes());
  }
  const XXH128_hash_t h = XXH3_128bits_digest(state.get());
  return "xxh3-128:" + hex64(h.high64) + hex64(h.low64);
}

Result<std::string> checkpoint_model_digest(const std::string& step_dir) {
  CAIRN_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, load_checkpoint(step_dir));
  return model_digest(loaded.tensors);
}

}  // namespace cairn::ckpt
