// GPT-2: learned positions, pre-LayerNorm blocks with biases, tanh-approximated GELU MLP,
// output head tied to the token embedding.
// Dimension keys: B batch, T sequence, C channels, H heads, D head size, F MLP width,
// V vocabulary.
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "model/arch_impl.h"
#include "model/layers_impl.h"

namespace cairn::model {
namespace {

class Gpt2Attention : public torch::nn::Module {
 public:
  Gpt2Attention(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp)
      : d_(c.head_dim()), tp_(std::move(tp)) {
    c_attn = register_module("c_attn", std::make_shared<Linear>(c.n_embd, 3 * c.n_embd, true));
    c_proj = register_module("c_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, true));
  }

  // x (B, T, C) -> (B, T, C). The head count is read from the projection's width, so that a
  // projection holding a tensor-parallel share of the heads (H' = H / tp) runs unchanged.
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1);
    auto qkv = tp_->linear(x, c_attn->weight, c_attn->bias);  // (B, T, 3 H' D)
    const int64_t W = qkv.size(2) / 3, H = W / d_;            // H' heads of d_
    auto parts = qkv.split(W, 2);                             // 3 x (B, T, H' D)
    auto q = parts[0].view({B, T, H, d_}).transpose(1, 2);    // (B, H', T, D)
    auto k = parts[1].view({B, T, H, d_}).transpose(1, 2);    // (B, H', T, D)
    auto v = parts[2].view({B, T, H, d_}).transpose(1, 2);    // (B, H', T, D)
    auto y = tp_->attention(q, k, v);                         // (B, H', T, D)
    return tp_->row(y.transpose(1, 2).reshape({B, T, W}), c_proj->weight, c_proj->bias);
  }

  std::shared_ptr<Linear> c_attn, c_proj;

 private:
  int64_t d_;  // head size
  std::shared_ptr<ParallelSeam> tp_;
};

class Gpt2Mlp : public torch::nn::Module {
 public:
  Gpt2Mlp(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp) : tp_(std::move(tp)) {
    c_fc = register_module("c_fc", std::make_shared<Linear>(c.n_embd, c.ffn_dim(), true));
    c_proj = register_module("c_proj", std::make_shared<Linear>(c.ffn_dim(), c.n_embd, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C) -> (B, T, F) -> (B, T, C)
    return tp_->row(torch::gelu(tp_->linear(x, c_fc->weight, c_fc->bias), "tanh"), c_proj->weight,
                    c_proj->bias);
  }
  std::shared_ptr<Linear> c_fc, c_proj;

 private:
  std::shared_ptr<ParallelSeam> tp_;
};

class Gpt2Block : public torch::nn::Module {
 public:
  Gpt2Block(const ModelConfig& c, std::shared_ptr<ParallelSeam> tp) : tp_(std::move(tp)) {
    ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.n_embd, c.norm_eps));
    attn = register_module("attn", std::make_shared<Gpt2Attention>(c, tp_));
    ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.n_embd, c.norm_eps));
    mlp = register_module("mlp", std::make_shared<Gpt2Mlp>(c, tp_));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (B, T, C) -> (B, T, C)
    auto h = x + attn->forward(tp_->enter(ln_1->forward(x)));
    return h + mlp->forward(tp_->enter(ln_2->forward(h)));
  }
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<Gpt2Attention> attn;
  std::shared_ptr<Gpt2Mlp> mlp;

 private:
  std::shared_ptr<ParallelSeam> tp_;
};

class Gpt2Model : public LanguageModel {
 public:
  Gpt2Model(const ModelConfig& c, const ModelPart& part) : LanguageModel(c) {
    {
      PlaceholderScope tied_table(!part.embedding && !part.head);
      wte_ = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
    }
    {
      PlaceholderScope positions(!part.embedding);
      wpe_ = register_module("wpe", std::make_shared<Embedding>(c.block_size, c.n_embd));
    }
    auto list = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.n_layer; ++i) {
      PlaceholderScope block(!part.holds_block(i));
      blocks_.push_back(std::make_shared<Gpt2Block>(c, seam_));
      list->push_back(blocks_.back());
    }
    PlaceholderScope head(!part.head);
    ln_f_ = register_module("ln_f", std::make_shared<LayerNorm>(c.n_embd, c.norm_eps));
  }

  torch::Tensor embed(const torch::Tensor& idx) override {  // idx (B, T) -> (B, T, C)
    check_idx(idx);
    auto pos = seam_->stream_positions(idx.size(1), idx.options());  // (T')
    if (TensorParallelHooks* tp = tensor_parallel())
      return tp->embed_tokens(idx, wte_->weight) + wpe_->forward(pos);
    return wte_->forward(idx) + wpe_->forward(pos);
  }

  torch::Tensor layer(int64_t i, const torch::Tensor& x) override {
    return blocks_.at(i)->forward(x);  // (B, T, C)
  }

  std::shared_ptr<torch::nn::Module> layer_module(int64_t i) override { return blocks_.at(i); }

  torch::Tensor final_norm(const torch::Tensor& x) override { return ln_f_->forward(x); }

  torch::Tensor head_weight() override { return wte_->weight; }  // (V, C)

 private:
  std::shared_ptr<Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<Gpt2Block>> blocks_;
  std::shared_ptr<LayerNorm> ln_f_;
};

}  // namespace

std::shared_ptr<LanguageModel> make_gpt2(const ModelConfig& config, const ModelPart& part) {
  return std::make_shared<Gpt2Model>(config, part);
}

}  // namespace cairn::model
