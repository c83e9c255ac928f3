// What every architecture shares: logits, the fused loss, checkpointed blocks, parameter and
// FLOP counts, and deterministic construction. Dimension keys: B batch, T sequence,
// C channels, V vocabulary.
#include "cairn/model/language_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "cairn/model/attention.h"
#include "cairn/model/fused_cross_entropy.h"
#include "cairn/model/head_chunk.h"
#include "cairn/model/param_specs.h"
#include "model/arch_impl.h"

namespace cairn::model {

LanguageModel::LanguageModel(ModelConfig config)
    : config_(std::move(config)), checkpointed_(config_.n_layer, false) {}

torch::Tensor LanguageModel::forward(const torch::Tensor& idx) {
  if (seam_->hooks) return seam_->hooks->logits(hidden(idx), head_weight());  // (B, T, V)
  return torch::linear(hidden(idx), head_weight());                           // (B, T, V)
}

namespace {

// x W^T + b whose backward gives the input gradient only and keeps (x, gy) in the store. A
// projection without bias passes an empty tensor (autograd functions take no undefined input).
class DeferredLinearFn : public torch::autograd::Function<DeferredLinearFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               WeightGradStore* store) {
    ctx->save_for_backward({x, weight, bias});
    ctx->saved_data["store"] = reinterpret_cast<int64_t>(store);
    return torch::linear(x, weight, bias.numel() > 0 ? bias : torch::Tensor());
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &bias = saved[2];
    const torch::Tensor& gy = grads[0];  // (..., out)
    auto* store = reinterpret_cast<WeightGradStore*>(ctx->saved_data["store"].toInt());
    torch::Tensor gx;
    if (ctx->needs_input_grad(0))
      gx = torch::matmul(gy, weight.to(gy.scalar_type())).to(x.scalar_type());  // (..., in)
    store->push(x, gy.clone(), weight, bias.numel() > 0 ? bias : torch::Tensor());
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void WeightGradStore::push(torch::Tensor x, torch::Tensor gy, torch::Tensor weight,
                           torch::Tensor bias) {
  auto it =
      std::find_if(kept_.rbegin(), kept_.rend(), [&](const auto& k) { return k.first == key_; });
  std::vector<Entry>& list =
      it != kept_.rend() ? it->second : kept_.emplace_back(key_, std::vector<Entry>()).second;
  list.push_back({std::move(x), std::move(gy), std::move(weight), std::move(bias)});
}

void WeightGradStore::run(int64_t key) {
  auto it = std::find_if(kept_.begin(), kept_.end(), [&](const auto& k) { return k.first == key; });
  if (it == kept_.end()) return;  // a chunk without projections (the head or embedding alone)
  torch::NoGradGuard no_grad;
  for (Entry& e : it->second) {
    auto gy = e.gy.reshape({-1, e.gy.size(-1)}).to(torch::kFloat);  // (N, out)
    auto x = e.x.reshape({-1, e.x.size(-1)}).to(torch::kFloat);     // (N, in)
    auto add = [](torch::Tensor& p, const torch::Tensor& g) {
      if (p.mutable_grad().defined())
        p.mutable_grad().add_(g.to(p.scalar_type()));
      else
        p.mutable_grad() = g.to(p.scalar_type()).clone();
    };
    if (e.weight.requires_grad()) add(e.weight, gy.t().mm(x));  // (out, in)
    if (e.bias.defined() && e.bias.requires_grad()) add(e.bias, gy.sum(0));
  }
  kept_.erase(it);
}

size_t WeightGradStore::pending() const {
  size_t n = 0;
  for (const auto& k : kept_) n += k.second.size();
  return n;
}

torch::Tensor ParallelSeam::linear(const torch::Tensor& x, const torch::Tensor& weight,
                                   const torch::Tensor& bias) const {
  if (!weight_grads || !torch::GradMode::is_enabled()) return torch::linear(x, weight, bias);
  return DeferredLinearFn::apply(
      x, weight, bias.defined() ? bias : torch::empty({0}, weight.options()), weight_grads);
}

torch::Tensor ParallelSeam::row(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias) const {
  if (!hooks) return linear(x, weight, bias);
  auto y = hooks->leave(linear(x, weight, torch::Tensor()));
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
  const torch::Tensor& w = head_weight();
  return fused_linear_cross_entropy(h.reshape({-1, h.size(2)}), w, targets.reshape({-1}),
                                    head_chunk_rows(w.size(0)));
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

std::shared_ptr<LanguageModel> build_model_uninitialized(const ModelConfig& config,
                                                         const ModelPart& part) {
  const Status st = validate(config);
  TORCH_CHECK(st.ok(), "build_model: ", st.message());
  TORCH_CHECK(part.blocks.empty() || int64_t(part.blocks.size()) == config.n_layer,
              "build_model: a part of ", part.blocks.size(), " blocks for ", config.n_layer);
  return config.is_llama() ? make_llama(config, part) : make_gpt2(config, part);
}

std::shared_ptr<LanguageModel> build_model(const ModelConfig& config, uint64_t seed,
                                           const ModelPart& part) {
  auto model = build_model_uninitialized(config, part);
  init_parameters(*model, config, seed);
  return model;
}

void init_parameters(LanguageModel& model, const ModelConfig& config, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double resid_std = config.init_std / std::sqrt(2.0 * config.n_layer);
  torch::NoGradGuard no_grad;
  const std::vector<ParamSpec> specs = param_specs(config);
  torch::Tensor scratch;  // a placeholder's draws, so that the next parameter's are the same
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
      default: {
        const double std = spec->residual_out ? resid_std : config.init_std;
        if (p.numel() > 0) {
          p.normal_(0.0, std, gen);
        } else {
          if (!scratch.defined()) scratch = torch::empty({0});
          scratch.resize_(spec->shape).normal_(0.0, std, gen);
        }
      }
    }
  }
}

}  // namespace cairn::model
