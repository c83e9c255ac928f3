// Sampling loop and model loading for generation.
#include "cairn/train/generate.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/model/config.h"
#include "cairn/model/language_model.h"
#include "cairn/train/options.h"

namespace cairn::train {

std::vector<int32_t> generate(model::LanguageModel& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& o,
                              const std::function<void(int32_t)>& on_token) {
  TORCH_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  torch::NoGradGuard no_grad;
  model.eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const int64_t block = model.config().block_size;
  std::vector<int32_t> ids = prompt;
  for (int64_t n = 0; n < o.max_tokens; ++n) {
    int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - block);
    auto ctx = torch::tensor(std::vector<int64_t>(ids.begin() + start, ids.end()), torch::kLong)
                   .unsqueeze(0);                                            // (1, T)
    auto logits = model.forward(ctx).select(1, ctx.size(1) - 1).squeeze(0);  // (V)
    if (o.vocab_limit > 0 && o.vocab_limit < logits.size(0))
      logits = logits.slice(0, 0, o.vocab_limit);
    int64_t next;
    if (o.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / o.temperature;
      if (o.top_k > 0 && o.top_k < logits.size(0)) {
        auto kth = std::get<0>(logits.topk(o.top_k)).select(0, o.top_k - 1);
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      auto probs = torch::softmax(logits, 0);
      next = torch::multinomial(probs, 1, false, gen).item<int64_t>();
    }
    ids.push_back(int32_t(next));
    if (on_token) on_token(int32_t(next));
    if (next == o.stop_id) break;
  }
  return ids;
}

Result<LoadedModel> load_model(const std::string& ckpt_path) {
  std::vector<std::string> skipped;
  auto c = ckpt::load_any(ckpt_path, &skipped);
  for (auto& s : skipped) spdlog::warn("skipping broken checkpoint: {}", s);
  if (!c.ok()) return c.status();
  auto yaml = c->state.value("config_yaml", std::string());
  CAIRN_ASSIGN_OR_RETURN(core::Config config,
                         core::load_config_text(yaml, job_spec(), {}, c->path + " config"));
  CAIRN_ASSIGN_OR_RETURN(model::ModelConfig mcfg, model::model_config_from(config));
  auto m = model::build_model(mcfg, 0);
  auto params = m->named_parameters();
  for (auto& p : params) {
    auto it = c->tensors.find("model." + p.key());
    if (it == c->tensors.end() || !it->second.sizes().equals(p.value().sizes()))
      return Status::Corrupt(c->path + ": parameter '" + p.key() + "' is missing or misshapen");
  }
  torch::NoGradGuard no_grad;
  for (auto& p : params) p.value().copy_(c->tensors.at("model." + p.key()));
  return LoadedModel{m, std::move(config), c->step, c->path};
}

}  // namespace cairn::train
