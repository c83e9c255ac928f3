// LLaMA: RMSNorm, rotary position embeddings (rotate-half convention), SwiGLU MLP,
// grouped-query attention, no biases, separate output head.
// Dimension keys: B batch, T sequence, C channels, H query heads, K key/value heads,
// D head size, F MLP width, V vocabulary.
#include <torch/torch.h>

#include <memory>
#include <utility>
#include <vector>

#include "model/arch_impl.h"
#include "model/layers_impl.h"

namespace cairn::model {
namespace {

// x (B, heads, T, D); cos, sin (T, D) -> x * cos + rotate_half(x) * sin, where
// rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// cos and sin of the rotation angles t * theta^(-2i/D) of the positions t (T), each (T, D) with
// the D/2 frequencies repeated; computed in float64 and rounded once to `options`.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const torch::Tensor& positions, int64_t D,
                                                    double theta,
                                                    const torch::TensorOptions& options) {
  auto f64 = torch::dtype(torch::kDouble);
  auto inv_freq = torch::pow(theta, torch::arange(0, D, 2, f64) / -double(D));  // (D/2)
  auto angles = torch::outer(positions.to(torch::kDouble), inv_freq);           // (T, D/2)
  angles = torch::cat({angles, angles}, 1);                                     // (T, D)
  return {angles.cos().to(options), angles.sin().to(options)};
}

class LlamaAttention : public torch::nn::Module {
 public:
  LlamaAttention(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp)
      : d_(c.head_dim()), theta_(c.rope_theta), tp_(std::move(tp)) {
    const int64_t H = c.n_head, K = c.kv_heads();
    wq = register_module("wq", std::make_shared<Linear>(c.n_embd, H * d_, false));
    wk = register_module("wk", std::make_shared<Linear>(c.n_embd, K * d_, false));
    wv = register_module("wv", std::make_shared<Linear>(c.n_embd, K * d_, false));
    wo = register_module("wo", std::make_shared<Linear>(H * d_, c.n_embd, false));
  }

  // x (B, T, C) -> (B, T, C), at the seam's sequence positions (0..T-1 in one process).
  torch::Tensor forward(const torch::Tensor& x) {
    // Head counts come from the projections' widths, so that projections holding a
    // tensor-parallel share of the heads (H' = H / tp, K' key/value heads) run unchanged.
    const int64_t B = x.size(0), T = x.size(1);
    const auto [cos, sin] =
        rope_tables(tp_->sequence_positions(T, x.options()), d_, theta_, x.options());  // (T, D)
    auto q = tp_->linear(x, wq->weight, {});  // (B, T, H' D)
    auto k = tp_->linear(x, wk->weight, {});  // (B, T, K' D)
    auto v = tp_->linear(x, wv->weight, {});
    const int64_t H = q.size(2) / d_, K = k.size(2) / d_;
    q = q.view({B, T, H, d_}).transpose(1, 2);  // (B, H', T, D)
    k = k.view({B, T, K, d_}).transpose(1, 2);  // (B, K', T, D)
    v = v.view({B, T, K, d_}).transpose(1, 2);  // (B, K', T, D)
    auto y = tp_->attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v);
    return tp_->row(y.transpose(1, 2).reshape({B, T, H * d_}), wo->weight, {});  // (B, T, C)
  }

  std::shared_ptr<Linear> wq, wk, wv, wo;

 private:
  int64_t d_;     // head size
  double theta_;  // RoPE base
  std::shared_ptr<ParallelSeam> tp_;
};

class LlamaFeedForward : public torch::nn::Module {
 public:
  LlamaFeedForward(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp) : tp_(std::move(tp)) {
    w1 = register_module("w1", std::make_shared<Linear>(c.n_embd, c.ffn_dim(), false));
    w2 = register_module("w2", std::make_shared<Linear>(c.ffn_dim(), c.n_embd, false));
    w3 = register_module("w3", std::make_shared<Linear>(c.n_embd, c.ffn_dim(), false));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C) -> (B, T, F) -> (B, T, C)
    return tp_->row(torch::silu(tp_->linear(x, w1->weight, {})) * tp_->linear(x, w3->weight, {}),
                    w2->weight, {});
  }
  std::shared_ptr<Linear> w1, w2, w3;

 private:
  std::shared_ptr<ParallelSeam> tp_;
};

class LlamaBlock : public torch::nn::Module {
 public:
  LlamaBlock(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp) : tp_(std::move(tp)) {
    attention_norm =
        register_module("attention_norm", std::make_shared<RMSNorm>(c.n_embd, c.norm_eps));
    attention = register_module("attention", std::make_shared<LlamaAttention>(c, tp_));
    ffn_norm = register_module("ffn_norm", std::make_shared<RMSNorm>(c.n_embd, c.norm_eps));
    feed_forward = register_module("feed_forward", std::make_shared<LlamaFeedForward>(c, tp_));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C) -> (B, T, C)
    auto h = x + attention->forward(tp_->enter(attention_norm->forward(x)));
    return h + feed_forward->forward(tp_->enter(ffn_norm->forward(h)));
  }
  std::shared_ptr<RMSNorm> attention_norm, ffn_norm;
  std::shared_ptr<LlamaAttention> attention;
  std::shared_ptr<LlamaFeedForward> feed_forward;

 private:
  std::shared_ptr<ParallelSeam> tp_;
};

class LlamaModel : public LanguageModel {
 public:
  LlamaModel(const ModelConfig& c, const ModelPart& part) : LanguageModel(c) {
    {
      PlaceholderScope embedding(!part.embedding);
      tok_embeddings_ =
          register_module("tok_embeddings", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
    }
    auto list = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) {
      PlaceholderScope block(!part.holds_block(i));
      blocks_.push_back(std::make_shared<LlamaBlock>(c, seam_));
      list->push_back(blocks_.back());
    }
    PlaceholderScope head(!part.head);
    norm_ = register_module("norm", std::make_shared<RMSNorm>(c.n_embd, c.norm_eps));
    output_ = register_module("output", std::make_shared<Linear>(c.n_embd, c.vocab_size, false));
  }

  torch::Tensor embed(const torch::Tensor& idx) override {  // idx (B, T) -> (B, T, C)
    check_idx(idx);
    if (TensorParallelHooks* tp = tensor_parallel())
      return tp->embed_tokens(idx, tok_embeddings_->weight);
    return tok_embeddings_->forward(idx);
  }

  torch::Tensor layer(int64_t i, const torch::Tensor& x) override {  // (B, T, C)
    return blocks_.at(i)->forward(x);
  }

  std::shared_ptr<torch::nn::Module> layer_module(int64_t i) override { return blocks_.at(i); }

  torch::Tensor final_norm(const torch::Tensor& x) override { return norm_->forward(x); }

  torch::Tensor head_weight() override { return output_->weight; }  // (V, C)

 private:
  std::shared_ptr<Embedding> tok_embeddings_;
  std::vector<std::shared_ptr<LlamaBlock>> blocks_;
  std::shared_ptr<RMSNorm> norm_;
  std::shared_ptr<Linear> output_;
};

}  // namespace

std::shared_ptr<LanguageModel> make_llama(const ModelConfig& config, const ModelPart& part) {
  return std::make_shared<LlamaModel>(config, part);
}

}  // namespace cairn::model
