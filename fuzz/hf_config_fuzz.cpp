// A HuggingFace config.json as `cairn ckpt import` reads it: JSON, then model_config_from_hf.
// A config it accepts is one cairn's models can be built from (model::validate) and survives
// the export's config.json (hf_config_json) unchanged.
#include <cstdint>
#include <string>

#include "cairn/ckpt/hf.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = cairn::ckpt::model_config_from_hf(j, "config.json");
  if (!config.ok()) {
    const auto code = config.status().code();
    FUZZ_CHECK(
        code == cairn::StatusCode::kInvalidArgument || code == cairn::StatusCode::kUnsupported,
        config.status().ToString());
    FUZZ_CHECK(config.status().message().find("config.json") != std::string::npos,
               "error does not name the file: " + config.status().ToString());
    return 0;
  }
  const cairn::model::ModelConfig& c = config->model;
  FUZZ_CHECK(cairn::model::validate(c).ok(), cairn::model::validate(c).ToString());

  const auto exported = cairn::ckpt::hf_config_json(c, {});
  auto back = cairn::ckpt::model_config_from_hf(exported, "exported config.json");
  FUZZ_CHECK(back.ok(), back.status().ToString() + "\n" + exported.dump());
  const cairn::model::ModelConfig& b = back->model;
  FUZZ_CHECK(b.arch == c.arch && b.n_layer == c.n_layer && b.n_head == c.n_head &&
                 b.n_kv_head == c.n_kv_head && b.n_embd == c.n_embd &&
                 b.vocab_size == c.vocab_size && b.block_size == c.block_size &&
                 b.ffn_hidden == c.ffn_hidden && b.norm_eps == c.norm_eps &&
                 b.init_std == c.init_std && (!c.is_llama() || b.rope_theta == c.rope_theta),
             "the exported config.json reads back as another model: " + exported.dump());
  return 0;
}
