// Constructors of the concrete architectures behind LanguageModel. Parameters come out
// zero/one-filled; build_model() initializes them.
#pragma once

#include <memory>

#include "cairn/model/language_model.h"

namespace cairn::model {

// REQUIRES: validate(config).ok() and config.arch == "gpt2".
std::shared_ptr<LanguageModel> make_gpt2(const ModelConfig& config);
// REQUIRES: validate(config).ok() and config.arch == "llama".
std::shared_ptr<LanguageModel> make_llama(const ModelConfig& config);

}  // namespace cairn::model
