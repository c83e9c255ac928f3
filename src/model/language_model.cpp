// What every architecture shares: logits, the fused loss, checkpointed blocks, parameter and
// FLOP counts, and deterministic construction. Dimension keys: B batch, T sequence,
// C channels, V vocabulary.
#include "cairn/model/language_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "cairn/model/attention.h"
#include "cairn/model/fused_cross_entropy.h"
#include "cairn/model/param_specs.h"
#include "model/arch_impl.h"

namespace cairn::model {

LanguageModel::LanguageModel(ModelConfig config)
    : config_(std::move(config)), checkpointed_(config_.n_layer, false) {}

torch::Tensor LanguageModel::forward(const torch::Tensor& idx) {
  if (seam_->hooks) return seam_->hooks->logits(hidden(idx), head_weight());  // (B, T, V)
  return torch::linear(hidden(idx), head_weight());                           // (B, T, V)
}

torch::Tensor ParallelSeam::row(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias) const {
  if (!hooks) return torch::linear(x, weight, bias);
  auto y = hooks->leave(torch::linear(x, weight));
  return bias.defined() ? y + bias : y;
}

torch::Tensor ParallelSeam::attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) const {
  return cp ? cp->attention(q, k, v) : causal_attention(q, k, v);
}

torch::Tensor ParallelSeam::sequence_positions(int64_t T,
                                               const torch::TensorOptions& options) const {
  auto o = options.dtype(torch::kLong);
  return cp ? cp->positions(T, o) : torch::arange(T, o);
}

torch::Tensor ParallelSeam::stream_positions(int64_t T, const torch::TensorOptions& options) const {
  auto seq = sequence_positions(T, options);  // (T)
  if (!hooks) return seq;
  auto mine = hooks->positions(T, options.dtype(torch::kLong));  // indices into the T, (T')
  return cp ? seq.index_select(0, mine) : mine;
}

void LanguageModel::set_tensor_parallel(std::shared_ptr<TensorParallelHooks> hooks) {
  hooks_ = std::move(hooks);
  seam_->hooks = hooks_.get();
}

void LanguageModel::set_context_parallel(std::shared_ptr<ContextParallelHooks> hooks) {
  cp_hooks_ = std::move(hooks);
  seam_->cp = cp_hooks_.get();
}

torch::Tensor LanguageModel::hidden(const torch::Tensor& idx) {
  return final_norm(blocks(0, config_.n_layer, embed(idx)));  // (B, T, C)
}

torch::Tensor LanguageModel::blocks(int64_t begin, int64_t end, const torch::Tensor& input) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= config_.n_layer, "LanguageModel::blocks: [",
              begin, ", ", end, ") is not a range of the ", config_.n_layer, " blocks");
  torch::Tensor x = input;
  const bool recording = torch::GradMode::is_enabled();
  for (int64_t i = begin; i < end; ++i) {
    if (recording && checkpointed_[i]) {
      // The closure runs again during backward: the model must outlive the graph.
      x = checkpoint([this, i](const torch::Tensor& t) { return layer(i, t); }, x,
                     layer_module(i)->parameters());
    } else {
      x = layer(i, x);
    }
  }
  return x;
}

torch::Tensor LanguageModel::loss(const torch::Tensor& idx, const torch::Tensor& targets) {
  TORCH_CHECK(targets.sizes() == idx.sizes(), "LanguageModel::loss: targets ", targets.sizes(),
              " must have the shape of idx ", idx.sizes());
  return head_loss(hidden(idx), targets);
}

torch::Tensor LanguageModel::head_loss(const torch::Tensor& h, const torch::Tensor& targets) {
  if (seam_->hooks) return seam_->hooks->head_loss(h, head_weight(), targets);
  return fused_linear_cross_entropy(h.reshape({-1, h.size(2)}), head_weight(),
                                    targets.reshape({-1}));
}

void LanguageModel::set_activation_checkpointing(bool on) {
  checkpointed_.assign(config_.n_layer, on);
}

void LanguageModel::set_activation_checkpointing(const std::vector<bool>& per_layer) {
  TORCH_CHECK(static_cast<int64_t>(per_layer.size()) == config_.n_layer,
              "set_activation_checkpointing: ", per_layer.size(), " flags for ", config_.n_layer,
              " layers");
  checkpointed_ = per_layer;
}

void LanguageModel::check_idx(const torch::Tensor& idx) const {
  TORCH_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kLong,
              "LanguageModel: idx must be (B, T) int64, got ", idx.scalar_type(), " ", idx.sizes());
  TORCH_CHECK(idx.size(1) >= 1 && idx.size(1) <= config_.block_size,
              "LanguageModel: sequence length T=", idx.size(1),
              " must be in [1, model.block_size=", config_.block_size, "]");
}

int64_t LanguageModel::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

double LanguageModel::flops_per_token(int64_t seq_len) const {
  const auto& c = config_;
  const double C = c.n_embd, F = c.ffn_dim(), KV = c.kv_heads() * c.head_dim();
  const double attn = c.is_llama() ? C * C + 2 * C * KV + C * C : 4 * C * C;
  const double mlp = (c.is_llama() ? 3 : 2) * C * F;
  const double n_matmul = c.n_layer * (attn + mlp) + c.vocab_size * C;
  return 6 * n_matmul + 12.0 * c.n_layer * seq_len * C;
}

std::shared_ptr<LanguageModel> build_model_uninitialized(const ModelConfig& config) {
  const Status st = validate(config);
  TORCH_CHECK(st.ok(), "build_model: ", st.message());
  return config.is_llama() ? make_llama(config) : make_gpt2(config);
}

std::shared_ptr<LanguageModel> build_model(const ModelConfig& config, uint64_t seed) {
  auto model = build_model_uninitialized(config);
  init_parameters(*model, config, seed);
  return model;
}

void init_parameters(LanguageModel& model, const ModelConfig& config, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double resid_std = config.init_std / std::sqrt(2.0 * config.n_layer);
  torch::NoGradGuard no_grad;
  const std::vector<ParamSpec> specs = param_specs(config);
  for (auto& item : model.named_parameters()) {
    auto& p = item.value();
    const ParamSpec* spec = find_spec(specs, item.key());
    TORCH_CHECK(spec, "init_parameters: no spec for parameter ", item.key());
    switch (spec->role) {
      case ParamRole::kNormBias:
      case ParamRole::kQkvBias:
      case ParamRole::kAttentionOutBias:
      case ParamRole::kMlpInBias:
      case ParamRole::kMlpOutBias:
        p.zero_();
        break;
      case ParamRole::kNormWeight:
        p.fill_(1.0);
        break;
      default:
        p.normal_(0.0, spec->residual_out ? resid_std : config.init_std, gen);
    }
  }
}

}  // namespace cairn::model
