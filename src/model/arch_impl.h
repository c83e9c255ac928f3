// Constructors of the concrete architectures behind LanguageModel. Parameters come out
// zero/one-filled (the part's; the rest are placeholders); build_model() initializes them.
#pragma once

#include <memory>

#include "cairn/model/language_model.h"

namespace cairn::model {

// REQUIRES: validate(config).ok() and config.arch == "gpt2".
std::shared_ptr<LanguageModel> make_gpt2(const ModelConfig& config, const ModelPart& part);
// REQUIRES: validate(config).ok() and config.arch == "llama".
std::shared_ptr<LanguageModel> make_llama(const ModelConfig& config, const ModelPart& part);

}  // namespace cairn::model
