// Text generation from a trained model: greedy (temperature 0) or sampled with top-k.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cairn/core/config.h"
#include "cairn/core/status.h"

namespace cairn::model {
class LanguageModel;
}

namespace cairn::train {

struct GenerateOptions {
  int64_t max_tokens = 100;
  double temperature = 0.8;  // 0 = greedy, deterministic
  int64_t top_k = 40;        // 0 = whole vocabulary
  uint64_t seed = 0;         // for sampling
  int64_t vocab_limit = 0;   // > 0: never emit ids >= this (padding rows of a padded vocab)
  int64_t stop_id = -1;      // stop after emitting this id (e.g. end-of-text); -1 = never
};

// Appends up to max_tokens ids to `prompt`; `on_token` sees each new id as it is produced.
// REQUIRES: prompt non-empty.
std::vector<int32_t> generate(model::LanguageModel& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options,
                              const std::function<void(int32_t)>& on_token = {});

struct LoadedModel {
  std::shared_ptr<model::LanguageModel> model;
  core::Config config;  // the job config saved with the checkpoint
  int64_t step = 0;
  std::string path;
};

// Rebuilds the model saved in a checkpoint (a checkpoint root or one step directory).
Result<LoadedModel> load_model(const std::string& ckpt_path);

}  // namespace cairn::train
