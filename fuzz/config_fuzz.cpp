// A job config as `cairn train` reads it: YAML text and --set overrides through
// core::load_config_text, then the model keys' cross-checks. A config that loads must give every
// key back with its type, and its config.yaml (to_yaml, what a run directory keeps) must load
// back to the same values.
//
// Input: the YAML text, then each override after a NUL byte ("yaml\0train.lr=3e-4\0...").
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cairn/core/config.h"
#include "cairn/model/config.h"
#include "fuzz_check.h"

namespace {

using cairn::core::ConfigSpec;
using cairn::core::FieldType;

// model_spec() and, like config_test.cpp's fixture, keys of every other type: those the configs
// under configs/ set beside the model's (train_spec() itself lives with libtorch).
ConfigSpec FuzzSpec() {
  const int64_t kBig = int64_t(1) << 40;
  ConfigSpec s = cairn::model::model_spec();
  ConfigSpec t;
  t.add_int("train.micro_batch_size", 8, 1, 1 << 20, "sequences per micro-batch")
      .add_int("train.global_batch_size", 8, 1, 1 << 24, "sequences per step")
      .add_int("train.seq_len", 128, 1, 1 << 20, "tokens per sequence")
      .add_int("train.max_steps", 1000, 1, kBig, "steps")
      .add_float("train.lr", 1e-3, 0, 10, "peak learning rate")
      .add_float("train.min_lr", 1e-4, 0, 10, "final learning rate")
      .add_int("train.warmup_steps", 100, 0, kBig, "warmup")
      .add_float("train.weight_decay", 0.1, 0, 10, "weight decay")
      .add_float("train.eps", 1e-8, 1e-30, 1, "epsilon")
      .add_float("train.grad_clip", 1.0, 0, 1e9, "clipping")
      .add_int("train.eval_interval", 100, 0, kBig, "eval interval")
      .add_int("train.eval_batches", 20, 1, 1 << 20, "eval batches")
      .add_int("train.seed", 1337, 0, kBig, "seed")
      .add_bool("train.activation_checkpointing", false, "recompute")
      .add_string("train.precision", "fp32", {"fp32", "bf16"}, "precision")
      .add_string("train.device", "cpu", {}, "device")
      .add_required_string("data.path", "token directory")
      .add_string("data.tokenizer", "gpt2", {}, "tokenizer")
      .add_int("ckpt.persist_interval", 0, 0, kBig, "persist interval")
      .add_int("ckpt.memory_interval", 0, 0, kBig, "memory interval")
      .add_int_list("parallel.pp_layers", 0, 1 << 20, "blocks per stage")
      .add_string("parallel.order", "pp,dp,cp,tp", {}, "mesh order");
  return s.merge(t);
}

// `s` with bytes outside printable ASCII as \xNN.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), c >= 0x20 && c < 0x7f && c != '\\' ? "%c" : "\\x%02x", c);
    out += buf;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ConfigSpec spec = FuzzSpec();
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t at = 0;;) {
    const size_t nul = input.find('\0', at);
    parts.push_back(input.substr(at, nul == std::string::npos ? std::string::npos : nul - at));
    if (nul == std::string::npos) break;
    at = nul + 1;
  }
  const std::vector<std::string> overrides(parts.begin() + 1, parts.end());

  auto config = cairn::core::load_config_text(parts[0], spec, overrides, "fuzz.yaml");
  if (!config.ok()) {
    FUZZ_CHECK(!config.status().message().empty(), "an error without a message");
    return 0;
  }
  for (const auto& f : spec.fields()) {
    FUZZ_CHECK(config->has(f.key), "loaded config lacks " + f.key);
    switch (f.type) {
      case FieldType::kInt: {
        const int64_t v = config->get_int(f.key);
        FUZZ_CHECK(v >= f.min && v <= f.max, f.key + " out of its range");
        break;
      }
      case FieldType::kFloat: {
        const double v = config->get_float(f.key);
        FUZZ_CHECK(v >= f.min && v <= f.max, f.key + " out of its range");
        break;
      }
      case FieldType::kBool:
        (void)config->get_bool(f.key);
        break;
      case FieldType::kString:
        (void)config->get_string(f.key);
        break;
      case FieldType::kIntList:
        for (int64_t v : config->get_int_list(f.key))
          FUZZ_CHECK(v >= f.min && v <= f.max, f.key + " has an item out of its range");
        break;
    }
  }
  (void)cairn::model::model_config_from(*config);

  // The run directory's copy reads back as the same config.
  const std::string yaml = config->to_yaml();
  auto again = cairn::core::load_config_text(yaml, spec, {}, "config.yaml");
  FUZZ_CHECK(again.ok(),
             "to_yaml() does not load back: " + again.status().ToString() + "\n" + yaml);
  for (const auto& [key, value] : config->values()) {
    const auto it = again->values().find(key);
    FUZZ_CHECK(it != again->values().end() && it->second == value,
               key + ": '" + escaped(value) + "' loads back from to_yaml() as '" +
                   (it == again->values().end() ? "nothing" : escaped(it->second)) + "'");
  }
  return 0;
}
